//! SignalRequest frames and data-channel packets from a joined client.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchboard_signaling::fuzzing::signal_request(data);
});
