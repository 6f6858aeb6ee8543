//! The probe controller: when the allocator wants more than the estimate, a short burst at
//! a higher rate (media topped up with padding) tests whether the link carries it.
//!
//! A probe's cluster is every packet sent while it runs, media and padding alike (the
//! padding only tops the media up to the target), plus padding sent after its end while
//! its result is awaited. Its result is the rate its later half arrived at: a shaper's
//! burst allowance (a token bucket, as tc's tbf and many access links have) lets the first
//! part through at the sender's rate, and only once it is spent does the link's own rate
//! show.

use std::time::{Duration, Instant};

use super::rate::MAX_BPS;
use super::Probe;

/// A probe asks for at least 200 kbit/s more than the estimate (LiveKit's floor): less
/// would drown in the acked rate's noise ...
const MIN_STEP_BPS: u64 = 200_000;
/// ... and 1.2 × what the allocator lacks, to leave a margin over the layer it wants ...
const STEP_FACTOR: f64 = 1.2;
/// ... but at most the estimate again (target ≤ 2 × estimate, libwebrtc's bound on
/// allocation probes): a bigger jump only builds a queue.
const MAX_STEP_OF_ESTIMATE: f64 = 1.0;
/// The first probe lasts 500 ms (its later half is what counts); each success makes the
/// next 1.5 × longer, up to 2 s. A success the link then disowns (overuse soon after) makes
/// the next one twice as long: a burst allowance absorbed it, a longer one spends it. A
/// probe that congested the link leaves the duration as it is.
/// (LiveKit allows 20 s; 2 s at 1.2 × the wanted step builds a measurable queue on any
/// link that cannot take it, and keeps the allocator's view of the link fresh.)
const FIRST_DURATION: Duration = Duration::from_millis(500);
const MAX_DURATION: Duration = Duration::from_secs(2);
const GROWTH: f64 = 1.5;
/// Overuse this soon after a success means the success was not real.
const DISOWNED_WITHIN: Duration = Duration::from_secs(3);
/// Probes start at least 3 s apart; after a probe that congested the link, 1.5 × further
/// apart each time, up to 12 s (LiveKit's rule; its cap is minutes, but our probes stop at
/// the first sign of overuse, so a failed one costs a short queue, and a link that widens
/// is found within 12 s).
const BASE_INTERVAL: Duration = Duration::from_secs(3);
const MAX_INTERVAL: Duration = Duration::from_secs(12);
/// A probe is judged once feedback named its last packet, or a second after it ended.
const RESULT_TIMEOUT: Duration = Duration::from_secs(1);
/// A result needs ≥ 80 % of the probe's packets received ...
const MIN_RECEIVED_SHARE: f64 = 0.8;
/// ... and at least 5 of them in its later half (a rate from fewer is noise).
const MIN_RECEIVED: u32 = 5;
/// A probe's later half received at under 90 % of the rate it was sent at saturated the
/// link: its result is 95 % of the receive rate (libwebrtc's margins). Otherwise it is the
/// lowest of the two rates and the probe's target (never more than was asked or sent).
const SATURATED: f64 = 0.9;
const SATURATED_SHARE: f64 = 0.95;

/// The outcome of a finished probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The link carried this rate (bits per second) without overuse.
    Success(u64),
    /// Overuse was seen while it ran, or too much of it was lost.
    Congested,
    /// Too few packets to tell.
    Inconclusive,
}

/// Counts of a set of a probe's packets: sent, and received as feedback reported them.
/// Times are microseconds: sends on the estimator's clock, arrivals on the receiver's.
#[derive(Default)]
struct Tally {
    sent: u32,
    sent_bytes: u64,
    /// The last packet's bytes: a rate over a span counts the packets after the first.
    last_sent_bytes: u64,
    first_send: Option<u64>,
    last_send: Option<u64>,
    received: u32,
    received_bytes: u64,
    /// The earliest arrival and its packet's bytes; the latest arrival.
    first_arrival: Option<(u64, u64)>,
    last_arrival: Option<u64>,
}

impl Tally {
    fn on_sent(&mut self, at: u64, bytes: u64) {
        self.sent += 1;
        self.sent_bytes += bytes;
        self.last_sent_bytes = bytes;
        self.first_send.get_or_insert(at);
        self.last_send = Some(at);
    }

    fn on_received(&mut self, arrival: u64, bytes: u64) {
        self.received += 1;
        self.received_bytes += bytes;
        if self.first_arrival.is_none_or(|(first, _)| arrival < first) {
            self.first_arrival = Some((arrival, bytes));
        }
        self.last_arrival = Some(self.last_arrival.map_or(arrival, |l| l.max(arrival)));
    }

    /// (sent, received) bits per second, if both spans are measurable.
    fn rates(&self) -> Option<(f64, f64)> {
        let seconds = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e6;
        let send_span = seconds(self.first_send?, self.last_send?);
        let (first_arrival, first_bytes) = self.first_arrival?;
        let receive_span = seconds(first_arrival, self.last_arrival?);
        if send_span <= 0.0 || receive_span <= 0.0 {
            return None;
        }
        Some((
            (self.sent_bytes - self.last_sent_bytes) as f64 * 8.0 / send_span,
            (self.received_bytes - first_bytes) as f64 * 8.0 / receive_span,
        ))
    }
}

/// When a probe cluster sends: packets in it (and padding sent after it ended, for the
/// feedback still due) count towards its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProbeWindow {
    pub id: u8,
    /// Microseconds on the estimator's clock.
    pub start_us: u64,
    pub end_us: u64,
}

impl ProbeWindow {
    /// The cluster a packet sent at `sent_us` belongs to, 0 for none.
    pub fn cluster_for(&self, sent_us: u64, padding: bool) -> u8 {
        if sent_us >= self.start_us && (sent_us < self.end_us || padding) {
            self.id
        } else {
            0
        }
    }
}

struct Cluster {
    id: u8,
    /// When it started and ends, as the estimator's clock reads them (µs), and as instants.
    start_us: u64,
    /// Packets sent from here on are its later half.
    middle_us: u64,
    end_us: u64,
    end: Instant,
    target_bps: u64,
    last_seq: u64,
    all: Tally,
    later: Tally,
    overuse: bool,
}

pub(super) struct ProbeControl {
    last_id: u8,
    interval: Duration,
    duration: Duration,
    last_start: Option<Instant>,
    running: Option<Cluster>,
    /// When the last successful probe was judged: overuse soon after disowns it.
    last_success: Option<Instant>,
}

impl ProbeControl {
    pub fn new() -> Self {
        Self {
            last_id: 0,
            interval: BASE_INTERVAL,
            duration: FIRST_DURATION,
            last_start: None,
            running: None,
            last_success: None,
        }
    }

    #[cfg(test)]
    pub fn interval(&self) -> Duration {
        self.interval
    }

    #[cfg(test)]
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Whether a probe runs or awaits its result.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Starts a probe if one is due (see [`super::Estimator::probe_due`]).
    pub fn due(&mut self, now: Instant, now_us: u64, estimate: u64, desired: u64) -> Option<Probe> {
        if desired <= estimate || self.running.is_some() {
            return None;
        }
        if self
            .last_start
            .is_some_and(|last| now.saturating_duration_since(last) < self.interval)
        {
            return None;
        }
        let lacking = (desired - estimate) as f64 * STEP_FACTOR;
        let step = (lacking.min(estimate as f64 * MAX_STEP_OF_ESTIMATE) as u64).max(MIN_STEP_BPS);
        let target = (estimate + step).min(MAX_BPS);
        if target <= estimate {
            return None;
        }
        self.last_id = self.last_id.checked_add(1).unwrap_or(1);
        self.last_start = Some(now);
        self.running = Some(Cluster {
            id: self.last_id,
            start_us: now_us,
            middle_us: now_us + self.duration.as_micros() as u64 / 2,
            end_us: now_us + self.duration.as_micros() as u64,
            end: now + self.duration,
            target_bps: target,
            last_seq: 0,
            all: Tally::default(),
            later: Tally::default(),
            overuse: false,
        });
        Some(Probe {
            target_bps: target,
            duration: self.duration,
            cluster: self.last_id,
        })
    }

    /// The running probe's id, start and end: what decides which cluster a packet sent
    /// belongs to (kept beside the send ring, `ring.rs`).
    pub fn window(&self) -> Option<ProbeWindow> {
        self.running.as_ref().map(|c| ProbeWindow {
            id: c.id,
            start_us: c.start_us,
            end_us: c.end_us,
        })
    }

    pub fn on_sent(&mut self, cluster: u8, seq: u64, sent_us: u64, bytes: usize) {
        let Some(c) = self.running.as_mut().filter(|c| c.id == cluster) else {
            return;
        };
        c.all.on_sent(sent_us, bytes as u64);
        if sent_us >= c.middle_us {
            c.later.on_sent(sent_us, bytes as u64);
        }
        c.last_seq = seq;
    }

    /// Feedback reported a packet of `cluster`, sent at `sent_us` (the estimator's clock),
    /// received for the first time at `arrival_us` (the receiver's).
    pub fn on_received(&mut self, cluster: u8, sent_us: u64, arrival_us: u64, bytes: u16) {
        let Some(c) = self.running.as_mut().filter(|c| c.id == cluster) else {
            return;
        };
        c.all.on_received(arrival_us, u64::from(bytes));
        if sent_us >= c.middle_us {
            c.later.on_received(arrival_us, u64::from(bytes));
        }
    }

    /// The delay detector saw overuse at `now`: the running probe congested the link, or the
    /// last success was not real (the next probe is longer and further off).
    pub fn on_overuse(&mut self, now: Instant) {
        if let Some(c) = &mut self.running {
            c.overuse = true;
            return;
        }
        if self
            .last_success
            .take()
            .is_some_and(|at| now.saturating_duration_since(at) < DISOWNED_WITHIN)
        {
            self.duration = (self.duration * 2).min(MAX_DURATION);
            self.interval = self.interval.mul_f64(GROWTH).min(MAX_INTERVAL);
        }
    }

    /// Judges the running probe if it is over and its feedback is in (or late); adjusts
    /// the schedule to the outcome.
    pub fn poll(&mut self, now: Instant, highest_reported: Option<u64>) -> Option<Outcome> {
        let c = self.running.as_ref()?;
        let fed_back = c.all.sent > 0 && highest_reported.is_some_and(|h| h >= c.last_seq);
        if now < c.end || !(fed_back || now >= c.end + RESULT_TIMEOUT) {
            return None;
        }
        let outcome = Self::judge(c);
        self.running = None;
        match outcome {
            Outcome::Success(_) => {
                self.duration = self.duration.mul_f64(GROWTH).min(MAX_DURATION);
                self.interval = BASE_INTERVAL;
                self.last_success = Some(now);
            }
            // The duration stays: one that congested the link was long enough to tell.
            Outcome::Congested => {
                self.interval = self.interval.mul_f64(GROWTH).min(MAX_INTERVAL);
            }
            Outcome::Inconclusive => {}
        }
        Some(outcome)
    }

    fn judge(c: &Cluster) -> Outcome {
        if c.overuse {
            return Outcome::Congested;
        }
        if c.later.received < MIN_RECEIVED || c.later.sent < MIN_RECEIVED {
            return Outcome::Inconclusive;
        }
        if f64::from(c.all.received) < MIN_RECEIVED_SHARE * f64::from(c.all.sent) {
            return Outcome::Congested;
        }
        let Some((sent_rate, received_rate)) = c.later.rates() else {
            return Outcome::Inconclusive;
        };
        let result = if received_rate < SATURATED * sent_rate {
            SATURATED_SHARE * received_rate
        } else {
            received_rate.min(sent_rate)
        };
        Outcome::Success((result as u64).min(c.target_bps))
    }
}
