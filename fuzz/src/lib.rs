//! Switchboard's fuzz targets, as functions: `fuzz_targets/*.rs` hand libFuzzer's input to
//! them, and `tests/corpus.rs` replays the kept corpus through them on a stable toolchain.
//!
//! The entry points of the server's crates live in their hidden `fuzzing` modules (feature
//! `fuzz`); the egress media code and the TURN core are public, so their harnesses are here.

mod containers;
mod depacketize;
pub mod seeds;
pub mod turn_core;

pub use containers::containers;
pub use depacketize::depacketize;
pub use turn_core::turn_core;

/// Every target: its name (the directory under `corpus/`) and its function.
pub const TARGETS: [(&str, fn(&[u8])); 8] = [
    (
        "signal_request",
        switchboard_signaling::fuzzing::signal_request,
    ),
    ("token", switchboard_signaling::fuzzing::token),
    ("whip_sdp", switchboard_signaling::fuzzing::whip),
    ("rtp_forward", switchboard_sfu::fuzzing::rtp_forward),
    ("forward", switchboard_sfu::fuzzing::forward),
    ("depacketize", depacketize),
    ("containers", containers),
    ("turn_core", turn_core),
];
