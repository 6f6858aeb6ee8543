//! The estimator against a simulated link: made-up time, deterministic.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::probe::Outcome;
use super::ring::MAX_CAPACITY;
use super::{Estimator, Probe};

const MS: Duration = Duration::from_millis(1);
const MEDIA_BYTES: usize = 1200;
const PADDING_BYTES: usize = 300;
/// The receiver's clock runs this far ahead of ours: only differences may matter.
const RECEIVER_CLOCK_OFFSET: Duration = Duration::from_secs(1000);

/// One feedback message's results.
type Report = Vec<(u64, Option<Instant>)>;

/// The estimator driven with instants, as these tests think: sends on its own clock,
/// arrivals counted from its epoch too (the receiver's clock may start anywhere).
trait WithInstants {
    fn sent_at(&mut self, seq: u64, at: Instant, bytes: usize, probe: bool);
    fn feedback_at(&mut self, now: Instant, results: &[(u64, Option<Instant>)]);
}

impl WithInstants for Estimator {
    fn sent_at(&mut self, seq: u64, at: Instant, bytes: usize, probe: bool) {
        let sent_us = self.micros(at);
        self.on_sent(seq, sent_us, bytes, probe);
    }

    fn feedback_at(&mut self, now: Instant, results: &[(u64, Option<Instant>)]) {
        let results: Vec<_> = results
            .iter()
            .map(|&(seq, arrival)| (seq, arrival.map(|at| self.micros(at))))
            .collect();
        self.on_feedback(now, &results);
    }
}

/// A sender, a link (a propagation delay, optionally a bottleneck queue and loss) and a
/// receiver sending feedback every 50 ms, stepped 1 ms at a time.
struct Sim {
    est: Estimator,
    now: Instant,
    start: Instant,
    /// The bottleneck's rate; `None`: no queue.
    capacity_bps: Option<u64>,
    /// The bottleneck's burst allowance in bytes (a token bucket, as tc's tbf): after a
    /// quiet spell this much passes at once. 0: a plain queue.
    burst_bytes: f64,
    tokens: f64,
    delay: Duration,
    /// Loss in percent, by a fixed pseudo-random sequence.
    loss_percent: u64,
    rng: u64,
    queue_free: Instant,
    seq: u64,
    /// (seq, arrival in our clock, lost)
    in_flight: VecDeque<(u64, Instant, bool)>,
    next_feedback: Instant,
    /// Feedback messages on their way back, with when they arrive.
    feedback: VecDeque<(Instant, Report)>,
    next_media: Instant,
    /// What the allocator would like (probes are asked for when > 0).
    desired_bps: u64,
    probe: Option<(Instant, u64)>,
    next_padding: Instant,
    probes: Vec<(Duration, Probe)>,
    congested_at: Option<Duration>,
}

impl Sim {
    fn new(initial_bps: u64) -> Self {
        let start = Instant::now();
        Self {
            est: Estimator::new(initial_bps, start),
            now: start,
            start,
            capacity_bps: None,
            burst_bytes: 0.0,
            tokens: 0.0,
            delay: 30 * MS,
            loss_percent: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            queue_free: start,
            seq: 0,
            in_flight: VecDeque::new(),
            next_feedback: start + 50 * MS,
            feedback: VecDeque::new(),
            next_media: start,
            desired_bps: 0,
            probe: None,
            next_padding: start,
            probes: Vec::new(),
            congested_at: None,
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn lost(&mut self) -> bool {
        // xorshift64: a fixed, reproducible sequence.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % 100 < self.loss_percent
    }

    fn send(&mut self, at: Instant, bytes: usize, probe: bool) {
        self.est.sent_at(self.seq, at, bytes, probe);
        let lost = self.lost();
        let arrival = match self.capacity_bps {
            Some(capacity) if !lost => {
                let start = at.max(self.queue_free);
                let byte_rate = capacity as f64 / 8.0;
                let refill = start
                    .saturating_duration_since(self.queue_free)
                    .as_secs_f64();
                self.tokens = (self.tokens + refill * byte_rate).min(self.burst_bytes);
                let wait = if self.tokens >= bytes as f64 {
                    self.tokens -= bytes as f64;
                    0.0
                } else {
                    let wait = (bytes as f64 - self.tokens) / byte_rate;
                    self.tokens = 0.0;
                    wait
                };
                self.queue_free = start + Duration::from_secs_f64(wait);
                self.queue_free + self.delay
            }
            _ => at + self.delay,
        };
        self.in_flight.push_back((self.seq, arrival, lost));
        self.seq += 1;
    }

    /// Runs for `length`, sending media at `media_bps(estimate)`; returns the estimate
    /// every 100 ms (time, estimate, acked).
    fn run(
        &mut self,
        length: Duration,
        media_bps: impl Fn(u64) -> u64,
    ) -> Vec<(Duration, u64, Option<u64>)> {
        let end = self.now + length;
        let mut samples = Vec::new();
        let mut next_sample = self.now + 100 * MS;
        while self.now < end {
            self.now += MS;
            let now = self.now;
            while self.feedback.front().is_some_and(|(at, _)| *at <= now) {
                let (_, results) = self.feedback.pop_front().unwrap();
                self.est.feedback_at(now, &results);
            }
            if self.est.congested() && self.congested_at.is_none() {
                self.congested_at = Some(self.elapsed());
            }
            if now >= self.next_feedback {
                self.next_feedback += 50 * MS;
                let mut results = Vec::new();
                while self
                    .in_flight
                    .front()
                    .is_some_and(|(_, arrival, _)| *arrival <= now)
                {
                    let (seq, arrival, lost) = self.in_flight.pop_front().unwrap();
                    results.push((seq, (!lost).then_some(arrival + RECEIVER_CLOCK_OFFSET)));
                }
                self.feedback.push_back((now + 20 * MS, results));
            }
            let media = media_bps(self.est.estimate());
            if self.probe.is_some_and(|(until, _)| now >= until) {
                self.probe = None;
            }
            if self.desired_bps > 0 && self.probe.is_none() {
                if let Some(probe) = self.est.probe_due(now, self.desired_bps) {
                    self.probes.push((self.elapsed(), probe));
                    let padding = probe.target_bps.saturating_sub(media);
                    self.probe = Some((now + probe.duration, padding));
                    self.next_padding = now;
                }
            }
            loop {
                let padding_at = self
                    .probe
                    .map(|_| self.next_padding)
                    .filter(|at| *at <= now);
                let media_at = Some(self.next_media).filter(|at| *at <= now);
                match (media_at, padding_at) {
                    (Some(m), p) if p.is_none_or(|p| m <= p) => {
                        self.send(m, MEDIA_BYTES, false);
                        self.next_media =
                            m + Duration::from_secs_f64((MEDIA_BYTES * 8) as f64 / media as f64);
                    }
                    (_, Some(p)) => {
                        self.send(p, PADDING_BYTES, true);
                        let rate = self.probe.unwrap().1.max(1);
                        self.next_padding =
                            p + Duration::from_secs_f64((PADDING_BYTES * 8) as f64 / rate as f64);
                    }
                    _ => break,
                }
            }
            if now >= next_sample {
                next_sample += 100 * MS;
                samples.push((
                    self.elapsed(),
                    self.est.estimate(),
                    self.est.acked_bitrate(),
                ));
            }
        }
        samples
    }
}

#[test]
fn a_clean_link_lets_the_estimate_grow_to_the_send_rate_but_not_past_1_5_times_acked() {
    let mut sim = Sim::new(1_000_000);
    let samples = sim.run(Duration::from_secs(10), |_| 2_000_000);
    let (_, last, acked) = *samples.last().unwrap();
    let acked = acked.unwrap();
    assert!(acked.abs_diff(2_000_000) < 100_000, "acked {acked}");
    assert!(last >= 1_900_000, "after 10 s: {last}");
    let reached = samples.iter().find(|s| s.1 >= 1_800_000).unwrap().0;
    println!("clean link: 1.8 Mbit/s at {reached:?}, {last} after 10 s (acked {acked})");
    assert!(sim.congested_at.is_none());
    for &(t, estimate, acked) in &samples {
        if let Some(acked) = acked {
            assert!(
                estimate <= acked * 3 / 2 + 10_000,
                "{t:?}: {estimate} over 1.5 × {acked}"
            );
        }
    }
    // It never goes down on a clean link: at once to 80 % of what arrives, then up.
    let per_second: Vec<u64> = samples.iter().step_by(10).map(|s| s.1).collect();
    assert!(
        per_second.windows(2).all(|w| w[1] >= w[0]),
        "{per_second:?}"
    );
    assert!(per_second.last() > per_second.get(1), "{per_second:?}");
}

#[test]
fn an_application_limited_sender_does_not_grow_the_estimate_past_what_it_sends() {
    let mut sim = Sim::new(100_000);
    let samples = sim.run(Duration::from_secs(20), |_| 300_000);
    let max = samples.iter().map(|s| s.1).max().unwrap();
    assert!((300_000..=460_000).contains(&max), "max {max}");
    let mut sim = Sim::new(1_000_000);
    let samples = sim.run(Duration::from_secs(5), |_| 300_000);
    assert!(
        samples.iter().all(|s| s.1 == 1_000_000),
        "held, neither grown nor cut"
    );
}

#[test]
fn a_bottleneck_is_detected_and_the_estimate_settles_near_its_capacity() {
    // Open loop: 1.5 Mbit/s into 500 kbit/s, whatever the estimate.
    let mut sim = Sim::new(1_000_000);
    sim.capacity_bps = Some(500_000);
    let samples = sim.run(Duration::from_secs(10), |_| 1_500_000);
    let congested = sim.congested_at.expect("overuse detected");
    assert!(
        congested < Duration::from_millis(800),
        "overuse after {congested:?}"
    );
    // From the sample after the last one out of ±30 % on, every one is within.
    let settled = samples
        .iter()
        .rposition(|s| s.1.abs_diff(500_000) > 150_000)
        .map_or(Duration::ZERO, |i| {
            samples.get(i + 1).map_or(Duration::MAX, |s| s.0)
        });
    assert!(
        settled <= Duration::from_secs(2),
        "within ±30 % from {settled:?}"
    );
    println!(
        "open loop: overuse at {congested:?}, within ±30 % from {settled:?}, final {}",
        samples.last().unwrap().1
    );

    // Closed loop: the sender follows the estimate (up to 1.5 Mbit/s).
    let mut sim = Sim::new(1_000_000);
    sim.capacity_bps = Some(500_000);
    let samples = sim.run(Duration::from_secs(30), |estimate| estimate.min(1_500_000));
    let tail: Vec<u64> = samples[100..].iter().map(|s| s.1).collect();
    let mean = tail.iter().sum::<u64>() / tail.len() as u64;
    assert!(
        mean.abs_diff(500_000) <= 150_000,
        "mean {mean} over the last 20 s"
    );
    assert!(
        tail.iter().all(|e| e.abs_diff(500_000) <= 250_000),
        "{tail:?}"
    );
    // The queue stays short: the last packet sent waits well under a second.
    let queued = sim.queue_free.saturating_duration_since(sim.now);
    assert!(queued < Duration::from_millis(400), "queue {queued:?}");
    println!(
        "closed loop: mean {mean} (min {}, max {}), queue at the end {queued:?}",
        tail.iter().min().unwrap(),
        tail.iter().max().unwrap()
    );
}

#[test]
fn heavy_loss_brings_the_estimate_down_and_light_loss_does_not() {
    let mut sim = Sim::new(1_000_000);
    sim.loss_percent = 20;
    let samples = sim.run(Duration::from_secs(5), |_| 1_000_000);
    let last = samples.last().unwrap().1;
    // Cut, but not below 80 % of the 800 kbit/s that still arrives.
    assert!(
        (620_000..750_000).contains(&last),
        "after 5 s of 20 % loss: {last}"
    );
    println!("20 % loss: {} after 1 s, {last} after 5 s", samples[9].1);
    assert!(sim.congested_at.is_none(), "loss alone is no delay overuse");

    let mut sim = Sim::new(1_000_000);
    sim.loss_percent = 1;
    let samples = sim.run(Duration::from_secs(5), |_| 1_000_000);
    assert!(
        samples.iter().all(|s| s.1 >= 1_000_000),
        "1 % loss: never cut"
    );
}

#[test]
fn probes_wait_for_feedback_a_shortfall_and_their_interval() {
    let t0 = Instant::now();
    let mut est = Estimator::new(1_000_000, t0);
    assert_eq!(est.probe_due(t0, 3_000_000), None, "no feedback yet");
    est.on_feedback(t0, &[]);
    assert_eq!(est.probe_due(t0, 1_000_000), None, "nothing lacking");
    let probe = est.probe_due(t0, 3_000_000).unwrap();
    // 1.2 × 2 Mbit/s lacking, at most the estimate again: 2 Mbit/s.
    assert_eq!(
        probe,
        Probe {
            target_bps: 2_000_000,
            duration: 500 * MS,
            cluster: 1
        }
    );
    assert_eq!(est.probe_due(t0 + 100 * MS, 3_000_000), None, "one runs");
    // It sent nothing: judged a second after its end, inconclusive, the schedule as it was.
    assert_eq!(est.probe_due(t0 + 1600 * MS, 3_000_000), None, "3 s apart");
    assert_eq!(est.last_probe, Some(Outcome::Inconclusive));
    assert_eq!(est.probe_due(t0 + 2999 * MS, 3_000_000), None);
    let probe = est.probe_due(t0 + 3000 * MS, 1_100_000).unwrap();
    // 1.2 × 100 kbit/s lacking is under the 200 kbit/s floor.
    assert_eq!(
        probe,
        Probe {
            target_bps: 1_200_000,
            duration: 500 * MS,
            cluster: 2
        }
    );
}

#[test]
fn a_successful_probe_raises_the_estimate_and_lengthens_the_next_one() {
    let mut sim = Sim::new(1_000_000);
    sim.capacity_bps = Some(5_000_000);
    sim.desired_bps = 3_000_000;
    let samples = sim.run(Duration::from_millis(900), |_| 1_000_000);
    assert_eq!(sim.probes[0].1.target_bps, 2_000_000);
    assert_eq!(
        sim.est.last_probe.map(|o| matches!(o, Outcome::Success(_))),
        Some(true)
    );
    let raised = samples.last().unwrap().1;
    assert!(
        raised >= 1_800_000,
        "after the probe: {raised} ({:?})",
        sim.est.last_probe
    );
    println!(
        "probe to 2 Mbit/s: {:?}, estimate {raised}",
        sim.est.last_probe
    );
    assert_eq!(sim.est.probe.duration(), 750 * MS);
    sim.run(Duration::from_secs(4), |_| 1_000_000);
    let gap = sim.probes[1].0 - sim.probes[0].0;
    assert!(
        gap >= Duration::from_secs(3) && gap < Duration::from_millis(3100),
        "{gap:?}"
    );
    assert_eq!(sim.probes[1].1.duration, 750 * MS);
    // The estimate is above what is wanted: no probe. (3 s pass, so the narrowing below
    // cannot disown the last success.)
    sim.run(Duration::from_secs(2), |_| 1_000_000);
    assert_eq!(sim.probes.len(), 2);

    // The link narrows to 1.2 Mbit/s (the step in serialization delay reads as one overuse,
    // and the estimate drops to 85 % of the acknowledged 1 Mbit/s): the next probe, past the
    // link's capacity, congests it.
    sim.capacity_bps = Some(1_200_000);
    sim.run(Duration::from_millis(4300), |_| 1_000_000);
    assert_eq!(sim.probes.len(), 3, "{:?}", sim.probes);
    assert!(sim.probes[2].1.target_bps > 1_200_000);
    assert_eq!(sim.est.last_probe, Some(Outcome::Congested));
    assert_eq!(sim.est.probe.interval(), 4500 * MS);
    assert_eq!(sim.est.probe.duration(), 1125 * MS);
    let estimate = sim.est.estimate();
    assert!(
        estimate < 1_200_000,
        "not raised by the congesting probe: {estimate}"
    );
    sim.run(Duration::from_secs(3), |_| 1_000_000);
    let gap = sim.probes[3].0 - sim.probes[2].0;
    assert!(gap >= 4500 * MS && gap < 4600 * MS, "{gap:?}");
    assert_eq!(sim.probes[3].1.duration, 1125 * MS);
}

/// tc's tbf in the browser tests: a 500 kbit/s link with a 16 KB burst allowance. A short
/// probe fits in the allowance and arrives at the sender's rate; only its later half, once
/// the allowance is spent, shows the link.
#[test]
fn a_burst_allowance_does_not_pass_for_capacity() {
    let mut sim = Sim::new(300_000);
    sim.capacity_bps = Some(500_000);
    sim.burst_bytes = 16_000.0;
    sim.desired_bps = 2_500_000;
    let mut highest = 0;
    for _ in 0..30 {
        // An allocator: 180p, or 360p when the estimate allows it.
        let samples = sim.run(Duration::from_secs(1), |estimate| {
            if estimate >= 500_000 {
                450_000
            } else {
                150_000
            }
        });
        highest = highest.max(samples.iter().map(|s| s.1).max().unwrap());
    }
    println!(
        "probes {:?}, last {:?}, highest estimate {highest}",
        sim.probes, sim.est.last_probe
    );
    assert!(
        highest < 650_000,
        "the estimate stays near the 500 kbit/s link: it reached {highest}"
    );
    // Congesting probes spread out: at most one every 3 s, further apart after each.
    assert!(sim.probes.len() <= 8, "{:?}", sim.probes);
}

/// Media at 460 kbit/s fills most of a 500 kbit/s link; a probe for more congests it. The
/// overuse is the probe's padding: the estimate stays above the media, which went through.
#[test]
fn a_congesting_probe_cuts_the_estimate_no_lower_than_what_went_through_before_it() {
    let mut sim = Sim::new(600_000);
    sim.capacity_bps = Some(500_000);
    sim.run(Duration::from_secs(3), |_| 460_000);
    sim.desired_bps = 2_000_000;
    let samples = sim.run(Duration::from_secs(4), |_| 460_000);
    assert!(!sim.probes.is_empty());
    assert_eq!(sim.est.last_probe, Some(Outcome::Congested));
    let lowest = samples.iter().map(|s| s.1).min().unwrap();
    println!("probes {:?}, lowest estimate {lowest}", sim.probes);
    assert!(lowest >= 440_000, "cut below the media: {lowest}");
}

#[test]
fn retransmissions_are_no_delay_sample() {
    for resent in [false, true] {
        let t0 = Instant::now();
        let mut est = Estimator::new(1_000_000, t0);
        let mut congested = false;
        for i in 0..300u64 {
            let sent = t0 + 10 * MS * i as u32;
            est.sent_at(i, sent, 1000, false);
            // From the 100th packet on, each waits 3 ms longer than the one before.
            let queued = if i < 100 { 0 } else { 3 * (i - 100) };
            let arrival = sent + 40 * MS + Duration::from_millis(queued);
            if resent && i >= 100 {
                est.on_resent(i);
            }
            est.feedback_at(arrival + 10 * MS, &[(i, Some(arrival))]);
            congested |= est.congested();
        }
        assert_eq!(congested, !resent);
    }
}

#[test]
fn memory_stays_bounded_without_feedback_and_stale_feedback_is_ignored() {
    let t0 = Instant::now();
    // A peer that never sends feedback: the ring never grows.
    let mut silent = Estimator::new(1_000_000, t0);
    for seq in 0..100_000u64 {
        silent.sent_at(seq, t0 + Duration::from_micros(100 * seq), 1200, false);
    }
    assert!(silent.ring.capacity() < MAX_CAPACITY / 8);
    // One whose feedback lags: it grows to its bound, no further.
    let mut est = Estimator::new(1_000_000, t0);
    est.sent_at(0, t0, 1200, false);
    est.feedback_at(t0, &[(0, None)]);
    for seq in 1..100_000u64 {
        est.sent_at(seq, t0 + Duration::from_micros(100 * seq), 1200, false);
    }
    assert_eq!(est.ring.capacity(), MAX_CAPACITY);
    let now = t0 + Duration::from_secs(10);
    // Numbers long overwritten, and numbers never sent, say nothing.
    let stale: Vec<_> = (1..1000u64)
        .chain(200_000..200_010)
        .map(|s| (s, None))
        .collect();
    est.feedback_at(now, &stale);
    assert_eq!(est.highest_reported, Some(0));
    assert_eq!(est.estimate(), 1_000_000);
    // Recent ones count.
    let recent: Vec<_> = (98_000..100_000u64)
        .map(|s| (s, Some(now + Duration::from_micros(100 * (s - 98_000)))))
        .collect();
    est.feedback_at(now, &recent);
    assert_eq!(est.highest_reported, Some(99_999));
    let acked = est.acked_bitrate().unwrap();
    assert!(acked.abs_diff(96_000_000) < 1_000_000, "{acked}");
}
