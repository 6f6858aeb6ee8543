//! The egress depacketizers (VP8, VP9, H.264, Opus) behind the jitter buffer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchboard_fuzz::depacketize(data);
});
