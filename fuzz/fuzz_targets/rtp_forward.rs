//! The forward path: keyframe detection, rewriting, the SRTP packet, history and NACKs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchboard_sfu::fuzzing::rtp_forward(data);
});
