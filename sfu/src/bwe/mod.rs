//! Send-side bandwidth estimation for one subscriber peer connection, from transport-wide
//! congestion control feedback (TWCC): a GCC-lite estimator and a probe controller.
//!
//! Sans-IO and deterministic: every time is handed in, nothing reads a clock. Steady state
//! allocates nothing per packet (a ring of send records, a bounded window of arrivals).
//!
//! - [`ring`]: what was sent, by transport-wide sequence number.
//! - [`acked`]: the rate the receiver acknowledged over the last 500 ms.
//! - [`delay`]: 5 ms send groups, the delay gradient's trend, an adaptive threshold.
//! - [`rate`]: the delay-based rate (AIMD: 85 % of acked on overuse, +8 %/s otherwise).
//! - [`loss`]: the loss-based cap (> 10 % loss cuts, < 2 % lets it rise).
//! - [`probe`]: when and how hard to probe, and what a probe showed.
//!
//! The estimate is the delay-based rate, capped by the loss-based one, in
//! [50 kbit/s, 20 Mbit/s].

// Wired in by the worker in the next step.

mod acked;
mod delay;
mod loss;
mod probe;
mod rate;
mod ring;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use acked::AckedRate;
use delay::{DelayDetector, Usage};
use loss::LossControl;
use probe::{Outcome, ProbeControl};
use rate::{Aimd, MAX_BPS, MIN_BPS};
use ring::SendRing;

/// Without arrivals for this long (by our clock, between feedback messages), the acked rate
/// is forgotten rather than trusted: the sender went quiet, or the link died.
const ACKED_STALE: Duration = Duration::from_secs(1);
/// A probe's queue drains within this after it is judged; overuse later is the link's own.
const PROBE_DRAIN: Duration = Duration::from_secs(1);

/// A probe to run now: media topped up with padding to `target_bps` for `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe {
    pub target_bps: u64,
    pub duration: Duration,
    /// Its cluster id (1–255, wrapping): informational, the estimator tracks it itself.
    pub cluster: u8,
}

/// The estimator for one subscriber peer connection.
///
/// Its clock for sends is microseconds from `epoch`, which every estimator of a worker
/// shares, so the worker reads the time once per packet however many subscribers it goes
/// to (`on_sent`'s `sent_us`). Arrivals are microseconds on the receiver's clock, as its
/// feedback gives them (any origin; only differences count).
pub(crate) struct Estimator {
    ring: SendRing,
    epoch: Instant,
    acked: AckedRate,
    delay: DelayDetector,
    rate: Aimd,
    loss: LossControl,
    probe: ProbeControl,
    feedback_seen: bool,
    highest_reported: Option<u64>,
    /// When (our clock) the last feedback with a received packet arrived.
    last_arrivals: Option<Instant>,
    /// Outcomes of finished probes, for tests and logs: the last one.
    last_probe: Option<Outcome>,
    /// From a probe's start until it is judged and the overuse it caused has passed: what
    /// the link carried before it (the acknowledged rate then, at most the estimate then).
    /// Overuse the probe's padding causes cuts the estimate no lower: the media alone went
    /// through.
    before_probe: Option<u64>,
    /// When the last probe was judged.
    probe_judged: Option<Instant>,
    /// The feedback message being read: whether it showed overuse, and received packets.
    reading: Reading,
}

#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    overuse: bool,
    any_received: bool,
}

impl Estimator {
    /// `initial_bps` bits per second until feedback says more; send times are microseconds
    /// from `epoch`.
    pub fn new(initial_bps: u64, epoch: Instant) -> Self {
        Self {
            ring: SendRing::new(),
            epoch,
            acked: AckedRate::new(),
            delay: DelayDetector::new(),
            rate: Aimd::new(initial_bps),
            loss: LossControl::new(),
            probe: ProbeControl::new(),
            feedback_seen: false,
            highest_reported: None,
            last_arrivals: None,
            last_probe: None,
            before_probe: None,
            probe_judged: None,
            reading: Reading::default(),
        }
    }

    /// `at` on the send clock: microseconds from the epoch (0 before it).
    pub fn micros(&self, at: Instant) -> u64 {
        micros_since(self.epoch, at)
    }

    /// A packet left with transport-wide sequence number `seq` (extended) at `sent_us` (see
    /// [`Estimator::micros`]), `bytes` on the wire; `probe`: padding sent to probe.
    #[inline]
    pub fn on_sent(&mut self, seq: u64, sent_us: u64, bytes: usize, probe: bool) {
        let cluster = self.ring.insert(seq, sent_us, bytes, probe);
        if cluster != 0 {
            self.probe.on_sent(cluster, seq, sent_us, bytes);
        }
    }

    /// A packet went again under the same transport-wide number (a NACK answer): its
    /// arrival says nothing of the delay.
    pub fn on_resent(&mut self, seq: u64) {
        self.ring.mark_resent(seq);
    }

    /// One TWCC feedback message: each reported number with its arrival (microseconds on
    /// the receiver's clock) or `None` if lost. `now`: when it arrived here.
    #[cfg(test)]
    pub fn on_feedback(&mut self, now: Instant, results: &[(u64, Option<u64>)]) {
        for &(seq, arrival) in results {
            self.on_reported(seq, arrival);
        }
        self.end_feedback(now);
    }

    /// One packet a feedback message names, in the message's order; the message ends with
    /// [`Estimator::end_feedback`]. (The reader feeds them here one by one, without
    /// collecting them first.)
    #[inline]
    pub fn on_reported(&mut self, seq: u64, arrival_us: Option<u64>) {
        let Some(sent) = self.ring.report(seq, arrival_us.is_some()) else {
            return;
        };
        self.highest_reported = Some(self.highest_reported.map_or(seq, |h| h.max(seq)));
        if sent.first {
            self.loss.on_reported(arrival_us.is_some());
        }
        let Some(arrival_us) = arrival_us else {
            return;
        };
        self.reading.any_received = true;
        self.acked.on_received(arrival_us, sent.bytes);
        if sent.cluster != 0 {
            self.probe
                .on_received(sent.cluster, sent.sent_us, arrival_us, sent.bytes);
        }
        if !sent.resent && self.delay.on_packet(sent.sent_us, arrival_us) == Some(Usage::Overuse) {
            self.reading.overuse = true;
        }
    }

    /// The feedback message whose packets [`Estimator::on_reported`] took is over: the
    /// estimate moves.
    pub fn end_feedback(&mut self, now: Instant) {
        let Reading {
            overuse,
            any_received,
        } = std::mem::take(&mut self.reading);
        self.feedback_seen = true;
        if any_received {
            self.last_arrivals = Some(now);
        } else if self
            .last_arrivals
            .is_some_and(|last| now.saturating_duration_since(last) > ACKED_STALE)
        {
            self.acked.clear();
        }
        // Overuse seen at any group of this message counts, even if the last group
        // already looked normal again.
        let usage = if overuse {
            Usage::Overuse
        } else {
            self.delay.usage()
        };
        if usage == Usage::Overuse {
            self.probe.on_overuse(now);
        }
        self.rate.update(now, usage, self.acked.rate());
        if usage == Usage::Overuse {
            if let Some(before) = self.before_probe {
                self.rate.raise_to(before);
            }
        }
        let drained = usage != Usage::Overuse
            || self
                .probe_judged
                .is_some_and(|at| now.saturating_duration_since(at) > PROBE_DRAIN);
        if drained && !self.probe.is_running() {
            // The probe is judged and the queue it built has drained (or the link itself
            // is congested).
            self.before_probe = None;
        }
        self.loss
            .evaluate(now, self.estimate(), self.rate.estimate());
        self.finish_probe(now);
    }

    /// The current estimate, bits per second.
    pub fn estimate(&self) -> u64 {
        let delay = self.rate.estimate();
        let capped = self.loss.cap().map_or(delay, |cap| cap.min(delay));
        // What the link delivered in the last half second it can carry: loss cuts stop at
        // 80 % of it. Without this floor, the burst of loss when a link narrows (a queue
        // overflowing) cut the estimate to a fraction of what still got through, and
        // paused video the narrowed link carried fine.
        let delivered = self.acked.rate().map_or(0, |r| r * 4 / 5);
        capped.max(delivered).clamp(MIN_BPS, MAX_BPS)
    }

    /// Whether a probe has been judged on this link.
    pub fn probed(&self) -> bool {
        self.last_probe.is_some()
    }

    /// The acknowledged (received) bitrate over the last 500 ms of arrivals, if known.
    pub fn acked_bitrate(&self) -> Option<u64> {
        self.acked.rate()
    }

    /// The share of packets lost in the last interval feedback was judged over.
    pub fn loss(&self) -> Option<f64> {
        self.loss.last_loss()
    }

    /// Whether the delay detector currently sees overuse (congestion).
    pub fn congested(&self) -> bool {
        self.delay.usage() == Usage::Overuse
    }

    /// A probe to run now, if one is due: only once feedback arrived, only when
    /// `desired_bps` (what the allocator wants) exceeds the estimate, at least 3 s after the
    /// last probe started (1.5 × longer after each congesting probe, up to 60 s), never
    /// while one runs or awaits its result. Target: estimate + max(1.2 × the shortfall
    /// (at most the estimate again), 200 kbit/s). Duration: 500 ms, × 1.5 after each
    /// success and × 2 after a success that overuse disowned within 3 s, up to 2 s (a
    /// congesting probe leaves it). A success raises the estimate to the probe's result
    /// (its later half's receive rate, never above its send rate or its target).
    pub fn probe_due(&mut self, now: Instant, desired_bps: u64) -> Option<Probe> {
        if !self.feedback_seen {
            return None;
        }
        self.finish_probe(now);
        let now_us = self.micros(now);
        let probe = self.probe.due(now, now_us, self.estimate(), desired_bps)?;
        self.ring.set_probe(self.probe.window());
        self.before_probe = self.acked.rate().map(|acked| acked.min(self.estimate()));
        Some(probe)
    }

    fn finish_probe(&mut self, now: Instant) {
        let Some(outcome) = self.probe.poll(now, self.highest_reported) else {
            return;
        };
        self.ring.set_probe(self.probe.window());
        self.probe_judged = Some(now);
        if let Outcome::Success(bps) = outcome {
            self.rate.raise_to(bps);
            self.loss.lift_to(bps);
        }
        self.last_probe = Some(outcome);
    }
}

/// Microseconds from `epoch` to `at` (0 if `at` is earlier).
pub(crate) fn micros_since(epoch: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(epoch).as_micros() as u64
}
