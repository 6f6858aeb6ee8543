//! The Matroska/WebM and Ogg Opus writers fed arbitrary frames and timestamps.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchboard_fuzz::containers(data);
});
