//! Signaling v1's `join_request` query parameter: base64, the wrapper, gzip, the JoinRequest.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchboard_signaling::fuzzing::join_request(data);
});
