//! A fixed amount of forwarding work, to count its instructions with callgrind: on a shared,
//! noisy machine an instruction count is repeatable where a timing is not (benches/README.md).
//!
//! Builds the forward bench's rig (one publisher, N connected subscribers, peers in memory),
//! then feeds the worker P publisher packets, one loop turn each.
//!
//! ```text
//! cargo build --release --example forward_instructions
//! valgrind --tool=callgrind --toggle-collect='switchboard_sfu::bench::ForwardRig::forward' \
//!     target/release/examples/forward_instructions 100 300
//! ```
//!
//! Instructions per forwarded packet = callgrind's `Collected` ÷ (N × P).

use anyhow::Context as _;
use switchboard_sfu::bench::ForwardRig;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let subscribers: usize = match args.next() {
        Some(a) => a.parse().context("subscribers: a number")?,
        None => 100,
    };
    let packets: usize = match args.next() {
        Some(a) => a.parse().context("packets: a number")?,
        None => 300,
    };
    let mut rig =
        ForwardRig::new(subscribers, 0).map_err(|e| anyhow::anyhow!("connect the rig: {e}"))?;
    let datagrams = rig.prepare(packets);
    let (before, _) = rig.sent();
    for datagram in &datagrams {
        rig.forward(datagram);
    }
    let (after, _) = rig.sent();
    println!(
        "{packets} publisher packets to {subscribers} subscribers: {} datagrams out",
        after - before
    );
    Ok(())
}
