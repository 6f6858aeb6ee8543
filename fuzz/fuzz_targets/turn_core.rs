//! The embedded TURN server's core: raw and properly signed client messages, peer
//! datagrams, relay sockets bound or not, connections closing and time passing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchboard_fuzz::turn_core(data);
});
