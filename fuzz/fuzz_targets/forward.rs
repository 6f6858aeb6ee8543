//! The whole forward path of a media worker connected in memory (one publisher, two
//! subscribers): SRTP, RTP parsing, the keyframe gate, rewriting, the send path and NACKs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchboard_sfu::fuzzing::forward(data);
});
