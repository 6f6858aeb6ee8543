//! The delay-based rate: additive-increase, multiplicative-decrease driven by the delay
//! detector's verdict and bounded by what the receiver acknowledged.

use std::time::{Duration, Instant};

use super::delay::Usage;

/// The lowest estimate: audio and the smallest video layer still fit, and feedback keeps
/// flowing so the estimate can recover.
pub(super) const MIN_BPS: u64 = 50_000;
/// The highest estimate: beyond any layer set a subscriber receives.
pub(super) const MAX_BPS: u64 = 20_000_000;
/// On overuse the rate drops to 85 % of the acknowledged rate (GCC's β): under what the
/// link just carried, so the queue drains.
const BETA: f64 = 0.85;
/// Far from the link's known capacity the rate grows by 8 % per second (GCC's rate):
/// doubling in 9 s, slow enough that a queue shows before it grows large.
const INCREASE_PER_SECOND: f64 = 1.08;
/// Near it (within [`NEAR_CAPACITY`]), additively: about one 1200-byte packet per 200 ms
/// response time.
const ADDITIVE_BPS_PER_SECOND: f64 = 48_000.0;
/// "Near" is from 90 % of the rate acknowledged at the last overuse ...
const NEAR_CAPACITY: f64 = 0.9;
/// ... and that knowledge is dropped once the rate is half again above it (the link grew).
const FORGET_CAPACITY: f64 = 1.5;
/// Never more than 1.5 × the acknowledged rate + 10 kbit/s (GCC's bound): we cannot claim
/// what was never tried. The headroom lets a tiny rate grow.
const ACKED_FACTOR: f64 = 1.5;
const ACKED_HEADROOM_BPS: f64 = 10_000.0;
/// A gap between feedback messages counts for at most one second of growth.
const MAX_STEP: Duration = Duration::from_secs(1);

pub(super) struct Aimd {
    estimate: f64,
    last_update: Option<Instant>,
    /// The acknowledged rate at overuse, smoothed: the link's capacity as last seen.
    capacity: Option<f64>,
}

impl Aimd {
    pub fn new(initial_bps: u64) -> Self {
        Self {
            estimate: initial_bps.clamp(MIN_BPS, MAX_BPS) as f64,
            last_update: None,
            capacity: None,
        }
    }

    pub fn estimate(&self) -> u64 {
        self.estimate as u64
    }

    /// A probe showed the link carries `bps`.
    pub fn raise_to(&mut self, bps: u64) {
        self.estimate = self.estimate.max(bps.min(MAX_BPS) as f64);
    }

    pub fn update(&mut self, now: Instant, usage: Usage, acked: Option<u64>) {
        let step = self
            .last_update
            .replace(now)
            .map_or(Duration::ZERO, |last| {
                now.saturating_duration_since(last).min(MAX_STEP)
            })
            .as_secs_f64();
        let acked = acked.map(|a| a as f64);
        match usage {
            Usage::Overuse => {
                let target = BETA * acked.unwrap_or(self.estimate);
                self.estimate = self.estimate.min(target);
                if let Some(acked) = acked {
                    self.capacity = Some(match self.capacity {
                        Some(c) if (acked - c).abs() < 0.3 * c => 0.8 * c + 0.2 * acked,
                        _ => acked,
                    });
                }
            }
            // A queue drains: wait for it, neither up nor down.
            Usage::Underuse => {}
            // Without an acknowledged rate, nothing says the link carries more: hold.
            Usage::Normal if acked.is_none() => {}
            Usage::Normal => {
                let near = self
                    .capacity
                    .is_some_and(|c| self.estimate >= NEAR_CAPACITY * c);
                let grown = if near {
                    self.estimate + ADDITIVE_BPS_PER_SECOND * step
                } else {
                    self.estimate * INCREASE_PER_SECOND.powf(step)
                };
                let limit = acked.map_or(f64::MAX, |a| ACKED_FACTOR * a + ACKED_HEADROOM_BPS);
                // The bound stops growth; it never pulls the rate down by itself.
                self.estimate = grown.min(limit.max(self.estimate));
                if self
                    .capacity
                    .is_some_and(|c| self.estimate > FORGET_CAPACITY * c)
                {
                    self.capacity = None;
                }
            }
        }
        self.estimate = self.estimate.clamp(MIN_BPS as f64, MAX_BPS as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_8_percent_a_second_bounded_by_acked_and_drops_to_85_percent_of_acked() {
        let t0 = Instant::now();
        let mut aimd = Aimd::new(1_000_000);
        aimd.update(t0, Usage::Normal, Some(2_000_000));
        assert_eq!(aimd.estimate(), 1_000_000, "no time passed");
        aimd.update(t0 + Duration::from_millis(500), Usage::Normal, None);
        assert_eq!(aimd.estimate(), 1_000_000, "nothing acknowledged: hold");
        aimd.update(
            t0 + Duration::from_millis(1500),
            Usage::Normal,
            Some(2_000_000),
        );
        assert_eq!(aimd.estimate(), 1_080_000);
        // 600 kbit/s acknowledged: bounded at 910 kbit/s, but not pulled down to it.
        aimd.update(t0 + Duration::from_secs(2), Usage::Normal, Some(600_000));
        assert_eq!(aimd.estimate(), 1_080_000);
        aimd.update(t0 + Duration::from_secs(3), Usage::Overuse, Some(600_000));
        assert_eq!(aimd.estimate(), 510_000);
        aimd.update(t0 + Duration::from_secs(4), Usage::Underuse, Some(600_000));
        assert_eq!(aimd.estimate(), 510_000);
        // Near the capacity seen at overuse (600 kbit/s): additive.
        aimd.update(t0 + Duration::from_secs(5), Usage::Normal, Some(600_000));
        assert_eq!(aimd.estimate(), 550_800, "510 000 × 1.08");
        aimd.update(t0 + Duration::from_secs(6), Usage::Normal, Some(600_000));
        assert_eq!(aimd.estimate(), 598_800, "+48 000");
        aimd.update(t0 + Duration::from_secs(7), Usage::Overuse, Some(20_000));
        assert_eq!(aimd.estimate(), MIN_BPS);
    }
}
