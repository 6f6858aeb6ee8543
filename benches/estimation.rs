//! What bandwidth estimation costs the media worker, in process: 100 subscribers of one
//! publisher's VP8 track (1200-byte packets, 274 a second as in the load tester's S1), each
//! subscriber a str0m peer that takes what it is sent and sends its transport-wide feedback
//! back every 50 ms, on a clock the rig hands in. Only the worker's turns are counted: the
//! publisher's packets and the subscribers' datagrams. Estimation on (the subscribers'
//! PCs negotiate transport-wide feedback, our send path stamps and records every packet,
//! the reports feed the estimator) against off (none of it).
//!
//! The load tester measures the same on loopback, where the kernel's share and a shared
//! host's noise swamp a few per cent; here nothing but the worker's code is timed, and under
//! `valgrind --tool=callgrind` its instructions are counted exactly:
//!
//!     cargo bench --bench estimation                 # both, timed
//!     cargo bench --bench estimation -- on           # one of them (for callgrind)

use std::time::Duration;

use switchboard_sfu::bench::ForwardRig;

const SUBSCRIBERS: usize = 100;
/// S1's packet rate: 2.5 Mbit/s of 1200-byte payloads.
const INTERVAL: Duration = Duration::from_micros(3_650);
/// Packets before measuring: the estimate settles, the probes are over.
const WARM_UP: usize = 1_000;
const MEASURED: usize = 3_000;

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut results = Vec::new();
    for (name, estimation) in [("off", false), ("on", true)] {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        let mut rig =
            ForwardRig::with_estimation(SUBSCRIBERS, estimation).expect("connect the bench rig");
        rig.forward_with_feedback(WARM_UP, INTERVAL);
        let run = rig.forward_with_feedback(MEASURED, INTERVAL);
        let forwarded = run.packets * SUBSCRIBERS as u64;
        assert!(
            rig.sent_rtp() >= forwarded,
            "every packet reached every subscriber"
        );
        let per_packet = run.worker.as_secs_f64() * 1e6 / forwarded as f64;
        println!(
            "estimation {name}: {per_packet:.3} µs of worker time per forwarded packet \
             ({} packets × {SUBSCRIBERS} subscribers, {} datagrams back)",
            run.packets, run.replies
        );
        results.push(per_packet);
    }
    if let [off, on] = results[..] {
        println!("on ÷ off: {:.3}", on / off);
    }
}
