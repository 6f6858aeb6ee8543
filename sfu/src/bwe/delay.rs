//! Delay-based congestion detection, after GCC (draft-ietf-rmcat-gcc-02): packets grouped
//! into bursts by send time, the one-way delay gradient between consecutive groups, a
//! least-squares trend of the accumulated delay over the last groups, and a threshold that
//! adapts to the trend's usual size.
//!
//! Times are microseconds, each clock from its own origin (the sender's for send times, the
//! receiver's for arrivals): this runs for every packet every report names, and plain
//! integers cost a fraction of `Instant` arithmetic there.

/// Packets sent within 5 ms of a group's first packet form one group: our sends leave in
/// bursts (a worker turn, a frame), and only the spacing between bursts means anything.
const GROUP_SEND_SPAN_US: u64 = 5_000;
/// A packet arriving less than 5 ms after the group's last, having gained on the sender's
/// spacing, also joins it: the network bunched them (a queue draining), and a gradient
/// taken inside such a burst would read as a spurious negative one ...
const BURST_ARRIVAL_GAP_US: u64 = 5_000;
/// ... as long as the group spans at most 100 ms of arrivals.
const MAX_BURST_SPAN_US: u64 = 100_000;
/// A delay change of more than 3 s between two groups is a clock jump or a long silence,
/// not a queue: the trend starts over.
const RESET_JUMP_MS: f64 = 3000.0;

/// The trend is fitted over the last 20 groups (at least 100 ms, usually 0.2–0.5 s): enough
/// to average out jitter, few enough to see a queue building within a few hundred ms.
const WINDOW: usize = 20;
/// n·Σx² − (Σx)² at or below this (ms²) is no spread of arrivals at all, only rounding: no
/// slope. A real one (20 groups over even 1 ms) is orders of magnitude above it.
const MIN_SPREAD: f64 = 1e-6;
/// Exponential smoothing of the accumulated delay before the fit (GCC's 0.9).
const SMOOTHING: f64 = 0.9;
/// The slope (ms of delay per ms of arrival) is scaled by min(groups, 60) × 4 to compare
/// with a threshold in ms (GCC's gain): a young estimate counts for less.
const GAIN: f64 = 4.0;
const MAX_GAIN_SAMPLES: u32 = 60;
/// The threshold starts at GCC's 12.5 ms and adapts within [6, 600] ms.
const THRESHOLD_START_MS: f64 = 12.5;
const THRESHOLD_MIN_MS: f64 = 6.0;
const THRESHOLD_MAX_MS: f64 = 600.0;
/// The threshold follows the trend slowly up (0.0087 per ms) and faster down (0.039 per
/// ms), GCC's rates: a competing TCP flow's standing queue does not starve us, a building
/// queue still trips the detector.
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
/// A trend this far (15 ms) beyond the threshold leaves it alone: a sudden capacity drop
/// must not teach the detector to tolerate it.
const MAX_ADAPT_OFFSET_MS: f64 = 15.0;
/// At most 100 ms of elapsed time per adaptation step, so a pause cannot swing it.
const MAX_ADAPT_STEP_MS: f64 = 100.0;
/// Overuse must last 10 ms of send time across at least two groups: one late burst is
/// jitter, not a queue.
const OVERUSE_TIME_MS: f64 = 10.0;

/// What the detector makes of the delay trend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Usage {
    Normal,
    /// A queue is building: congestion.
    Overuse,
    /// A queue is draining.
    Underuse,
}

/// Microseconds: send times on the sender's clock, arrivals on the receiver's.
#[derive(Debug, Clone, Copy)]
struct Group {
    first_send: u64,
    last_send: u64,
    first_arrival: u64,
    last_arrival: u64,
}

/// Milliseconds from `b` to `a` (microseconds), negative when `a` is earlier.
fn signed_ms(a: u64, b: u64) -> f64 {
    (a as i64).wrapping_sub(b as i64) as f64 / 1000.0
}

pub(super) struct DelayDetector {
    current: Option<Group>,
    previous: Option<Group>,
    trend: Trendline,
}

impl DelayDetector {
    pub fn new() -> Self {
        Self {
            current: None,
            previous: None,
            trend: Trendline::new(),
        }
    }

    pub fn usage(&self) -> Usage {
        self.trend.usage
    }

    /// A packet sent at `sent` arrived at `arrival` (microseconds, each on its own clock;
    /// packets come in send order). Returns the detector's verdict when a group completed
    /// and moved it.
    pub fn on_packet(&mut self, sent: u64, arrival: u64) -> Option<Usage> {
        let Some(mut current) = self.current else {
            self.current = Some(Group {
                first_send: sent,
                last_send: sent,
                first_arrival: arrival,
                last_arrival: arrival,
            });
            return None;
        };
        if sent < current.last_send {
            // Reported late, out of send order: no sample.
            return None;
        }
        if Self::belongs(&current, sent, arrival) {
            current.last_send = sent;
            current.last_arrival = current.last_arrival.max(arrival);
            self.current = Some(current);
            return None;
        }
        let verdict = self.previous.and_then(|previous| {
            let send_delta = signed_ms(current.last_send, previous.last_send);
            let arrival_delta = signed_ms(current.last_arrival, previous.last_arrival);
            if arrival_delta < 0.0 {
                // Whole groups reordered: no sample.
                None
            } else if (arrival_delta - send_delta).abs() > RESET_JUMP_MS {
                self.trend = Trendline::new();
                None
            } else {
                Some(
                    self.trend
                        .update(send_delta, arrival_delta, current.last_arrival),
                )
            }
        });
        self.previous = Some(current);
        self.current = Some(Group {
            first_send: sent,
            last_send: sent,
            first_arrival: arrival,
            last_arrival: arrival,
        });
        verdict
    }

    fn belongs(group: &Group, sent: u64, arrival: u64) -> bool {
        if sent.saturating_sub(group.first_send) <= GROUP_SEND_SPAN_US {
            return true;
        }
        let arrival_gap = arrival.saturating_sub(group.last_arrival);
        let send_gap = sent.saturating_sub(group.last_send);
        arrival_gap < BURST_ARRIVAL_GAP_US
            && arrival_gap < send_gap
            && arrival.saturating_sub(group.first_arrival) <= MAX_BURST_SPAN_US
    }
}

/// Sums over the trend's window: of x, y, x², xy.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    x: f64,
    y: f64,
    xx: f64,
    xy: f64,
}

impl Sums {
    fn add(&mut self, x: f64, y: f64) {
        self.x += x;
        self.y += y;
        self.xx += x * x;
        self.xy += x * y;
    }

    fn remove(&mut self, x: f64, y: f64) {
        self.x -= x;
        self.y -= y;
        self.xx -= x * x;
        self.xy -= x * y;
    }
}

struct Trendline {
    /// (arrival ms since the first group, smoothed accumulated delay ms), oldest at `next`
    /// once full.
    history: [(f64, f64); WINDOW],
    len: usize,
    next: usize,
    /// The window's sums (x taken from `base`): the slope without a pass over the window,
    /// as this runs once per group. Summed afresh whenever `next` wraps, so rounding never
    /// accumulates and x − `base` stays small.
    sums: Sums,
    base: f64,
    /// The first sample's arrival (microseconds).
    origin: Option<u64>,
    accumulated: f64,
    smoothed: f64,
    samples: u32,
    threshold: f64,
    /// Arrival ms of the last threshold adaptation.
    adapted_at: Option<f64>,
    previous_trend: f64,
    overuse_ms: f64,
    overuse_count: u32,
    usage: Usage,
}

impl Trendline {
    fn new() -> Self {
        Self {
            history: [(0.0, 0.0); WINDOW],
            len: 0,
            next: 0,
            sums: Sums::default(),
            base: 0.0,
            origin: None,
            accumulated: 0.0,
            smoothed: 0.0,
            samples: 0,
            threshold: THRESHOLD_START_MS,
            adapted_at: None,
            previous_trend: 0.0,
            overuse_ms: 0.0,
            overuse_count: 0,
            usage: Usage::Normal,
        }
    }

    fn update(&mut self, send_delta: f64, arrival_delta: f64, arrival: u64) -> Usage {
        let origin = *self.origin.get_or_insert(arrival);
        let x = signed_ms(arrival, origin);
        self.samples = (self.samples + 1).min(MAX_GAIN_SAMPLES);
        self.accumulated += arrival_delta - send_delta;
        self.smoothed = SMOOTHING * self.smoothed + (1.0 - SMOOTHING) * self.accumulated;
        self.push(x, self.smoothed);
        let trend = if self.len == WINDOW {
            self.slope().unwrap_or(self.previous_trend)
        } else {
            self.previous_trend
        };
        self.detect(trend, send_delta, x);
        self.usage
    }

    fn push(&mut self, x: f64, y: f64) {
        if self.len == WINDOW {
            let (old_x, old_y) = self.history[self.next];
            self.sums.remove(old_x - self.base, old_y);
        }
        self.history[self.next] = (x, y);
        self.sums.add(x - self.base, y);
        self.next = (self.next + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
        if self.next == 0 {
            self.base = x;
            self.sums = Sums::default();
            for &(x, y) in &self.history[..self.len] {
                self.sums.add(x - self.base, y);
            }
        }
    }

    /// Least-squares slope of the smoothed delay over arrival time.
    fn slope(&self) -> Option<f64> {
        let n = self.len as f64;
        let Sums { x, y, xx, xy } = self.sums;
        let den = n * xx - x * x;
        // Zero when every x is the same, up to rounding.
        (den > MIN_SPREAD).then(|| (n * xy - x * y) / den)
    }

    fn detect(&mut self, trend: f64, send_delta: f64, x: f64) {
        if self.samples < 2 {
            self.usage = Usage::Normal;
            return;
        }
        let modified = f64::from(self.samples) * trend * GAIN;
        if modified > self.threshold {
            self.overuse_ms += if self.overuse_count == 0 {
                // Assume half the time since the previous group was already over.
                send_delta / 2.0
            } else {
                send_delta
            };
            self.overuse_count += 1;
            if self.overuse_ms > OVERUSE_TIME_MS
                && self.overuse_count > 1
                && trend >= self.previous_trend
            {
                self.overuse_ms = 0.0;
                self.overuse_count = 0;
                self.usage = Usage::Overuse;
            }
        } else {
            self.overuse_ms = 0.0;
            self.overuse_count = 0;
            self.usage = if modified < -self.threshold {
                Usage::Underuse
            } else {
                Usage::Normal
            };
        }
        self.previous_trend = trend;
        self.adapt_threshold(modified, x);
    }

    fn adapt_threshold(&mut self, modified: f64, x: f64) {
        let last = self.adapted_at.replace(x).unwrap_or(x);
        let size = modified.abs();
        if size > self.threshold + MAX_ADAPT_OFFSET_MS {
            return;
        }
        let k = if size < self.threshold { K_DOWN } else { K_UP };
        let step = (x - last).clamp(0.0, MAX_ADAPT_STEP_MS);
        self.threshold = (self.threshold + k * (size - self.threshold) * step)
            .clamp(THRESHOLD_MIN_MS, THRESHOLD_MAX_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds packets 10 ms apart whose delay starts at `base_ms` and grows by `growth_ms` per
    /// packet; the verdicts.
    fn run(
        detector: &mut DelayDetector,
        (from, to): (u64, u64),
        (base_ms, growth_ms): (f64, f64),
    ) -> Vec<Usage> {
        (from..to)
            .filter_map(|i| {
                let sent = 10_000 * i;
                let delay = base_ms + growth_ms * (i - from) as f64;
                let arrival = sent + (delay * 1000.0) as u64;
                detector.on_packet(sent, arrival)
            })
            .collect()
    }

    #[test]
    fn steady_delay_is_normal_a_growing_one_overuse_a_shrinking_one_underuse() {
        let mut detector = DelayDetector::new();
        let steady = run(&mut detector, (0, 200), (50.0, 0.0));
        assert!(steady.iter().all(|&u| u == Usage::Normal));
        assert_eq!(
            steady.len(),
            198,
            "one verdict per group after the first two"
        );
        // A queue building by 2 ms per 10 ms sent.
        let building = run(&mut detector, (200, 260), (50.0, 2.0));
        let first = building
            .iter()
            .position(|&u| u == Usage::Overuse)
            .expect("overuse");
        assert!(first < 15, "seen after {first} groups");
        assert_eq!(detector.usage(), Usage::Overuse);
        // Draining: arrivals come closer than sends.
        let draining = run(&mut detector, (260, 300), (170.0, -4.0));
        assert!(draining.contains(&Usage::Underuse));
    }

    #[test]
    fn a_burst_is_one_group_and_jitter_is_not_overuse() {
        let mut detector = DelayDetector::new();
        // Five packets per 2 ms burst, bursts every 20 ms, ±3 ms alternating jitter.
        let mut verdicts = Vec::new();
        for burst in 0..300u64 {
            for k in 0..5u64 {
                let sent = 20_000 * burst + 400 * k;
                let jitter = if burst % 2 == 0 { 3_000 } else { 0 };
                let arrival = sent + 40_000 + jitter;
                verdicts.extend(detector.on_packet(sent, arrival));
            }
        }
        assert_eq!(verdicts.len(), 298);
        assert!(verdicts.iter().all(|&u| u != Usage::Overuse));
    }

    #[test]
    fn the_running_slope_is_the_least_squares_fit_of_the_window() {
        let mut trend = Trendline::new();
        let mut points = Vec::new();
        for i in 0..500u32 {
            // Far from 0 (hours into a call), unevenly spaced, noisy.
            let x = 3_600_000.0 + f64::from(i) * 7.3 + f64::from(i % 3);
            let y = f64::from((i * 37) % 11) * 0.5 + f64::from(i) * 0.01;
            trend.push(x, y);
            points.push((x, y));
            if points.len() < WINDOW {
                continue;
            }
            let window = &points[points.len() - WINDOW..];
            let n = WINDOW as f64;
            let mean_x = window.iter().map(|p| p.0).sum::<f64>() / n;
            let mean_y = window.iter().map(|p| p.1).sum::<f64>() / n;
            let num: f64 = window.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
            let den: f64 = window.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
            let fitted = num / den;
            let slope = trend.slope().expect("a spread of arrivals");
            assert!(
                (slope - fitted).abs() < 1e-9,
                "point {i}: {slope} against {fitted}"
            );
        }
        // No spread: no slope.
        let mut flat = Trendline::new();
        for i in 0..WINDOW {
            flat.push(5_000.0, i as f64);
        }
        assert_eq!(flat.slope(), None);
    }
}
