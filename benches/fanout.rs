//! Signaling fan-out of participant updates: the cost of one join into a room of 50 and of
//! 500 participants — the room registry telling every member (one update, encoded once and
//! shared) and the newcomer's JoinResponse, which lists all members. The newcomer leaves
//! again between iterations, untimed. A join must cost O(members), not O(members²): the
//! messages and bytes per join are printed before the timings (and checked by the unit test
//! in signaling/src/bench.rs).
//!
//! Run: `cargo bench --bench fanout`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchboard_signaling::bench::FanoutRoom;

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("join_fanout");
    group.measurement_time(Duration::from_secs(5));
    for members in [50, 500] {
        let mut room = FanoutRoom::new(members);
        let cost = room.join_one();
        room.leave_newcomer();
        println!(
            "join into a room of {members}: {} messages, {} bytes to all sessions",
            cost.messages, cost.bytes
        );
        group.throughput(Throughput::Elements(members as u64));
        group.bench_function(BenchmarkId::from_parameter(members), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    std::hint::black_box(room.join_one());
                    timed += start.elapsed();
                    room.leave_newcomer();
                }
                timed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
