//! Access tokens: parsing, signature, time and grant checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchboard_signaling::fuzzing::token(data);
});
