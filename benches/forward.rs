//! The forwarding hot path in process, without sockets: one SRTP-protected RTP packet (VP8,
//! 1200-byte payload) in from a publisher, one SRTP-protected packet out per subscriber, for
//! N = 1, 10 and 100 subscribers. Each iteration is one turn of the media worker's loop
//! woken by that datagram (demultiplexing, SRTP decryption, layer choice, rewriting, one
//! `write_rtp` per subscriber, str0m's timeouts, SRTP encryption), with the datagrams going
//! to a counting sink instead of a socket.
//!
//! Throughput is reported in subscriber packets, so `time / N` is the cost of one forwarded
//! packet. `1_sub_500_idle` adds 500 participants of other rooms on the same worker that
//! never connect: the cost of a packet must not grow with the worker's population. The
//! `_single_pc` cases are the same with signaling v1 subscribers (one PeerConnection each,
//! `sfu/src/single_pc.rs`).
//!
//! Run: `cargo bench --bench forward`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchboard_sfu::bench::ForwardRig;

fn forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward_vp8_1200B");
    group.measurement_time(Duration::from_secs(5));
    for (subscribers, idle, single_pc, name) in [
        (1, 0, false, "1_sub"),
        (10, 0, false, "10_subs"),
        (100, 0, false, "100_subs"),
        (1, 500, false, "1_sub_500_idle"),
        (10, 0, true, "10_subs_single_pc"),
        (100, 0, true, "100_subs_single_pc"),
    ] {
        let mut rig = if single_pc {
            ForwardRig::single_pc(subscribers)
        } else {
            ForwardRig::new(subscribers, idle)
        }
        .expect("connect the bench rig");
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let datagrams = rig.prepare(iters as usize);
                let (before, _) = rig.sent();
                let start = Instant::now();
                for datagram in &datagrams {
                    rig.forward(datagram);
                }
                let elapsed = start.elapsed();
                let (after, _) = rig.sent();
                // Every packet reached every subscriber (RTCP may add a few datagrams).
                assert!(
                    after - before >= iters * subscribers as u64,
                    "{} datagrams out for {iters} packets to {subscribers} subscribers",
                    after - before
                );
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
