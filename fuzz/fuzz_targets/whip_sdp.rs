//! WHIP/WHEP offers (inspection, then the media worker's answer) and PATCH sdpfrags.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchboard_signaling::fuzzing::whip(data);
});
