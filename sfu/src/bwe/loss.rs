//! The loss-based bound: heavy loss caps the estimate below what it was, light loss lets
//! the cap rise again until it no longer binds.

use std::time::{Duration, Instant};

/// Loss is judged over at least 20 reported packets, however many feedback messages that
/// takes: one lost packet of a five-packet message is no 20 % loss.
const MIN_PACKETS: u32 = 20;
/// Above 10 % loss the rate is cut to (1 − loss/2) × itself (GCC's loss controller) ...
const HIGH_LOSS: f64 = 0.10;
/// ... at most every 300 ms, so the sender's reaction shows in the feedback before the next
/// cut (about one round trip and a feedback interval).
const MIN_DECREASE_INTERVAL: Duration = Duration::from_millis(300);
/// Below 2 % the cap grows by 8 % a second; in between it holds (a lossy radio link at a
/// steady rate should neither starve nor push on).
const LOW_LOSS: f64 = 0.02;
const INCREASE_PER_SECOND: f64 = 1.08;
/// Growth per evaluation counts at most one second.
const MAX_STEP: Duration = Duration::from_secs(1);

pub(super) struct LossControl {
    received: u32,
    lost: u32,
    /// The loss-based cap, if loss set one that still binds.
    cap: Option<f64>,
    last_decrease: Option<Instant>,
    last_evaluation: Option<Instant>,
    /// The loss fraction of the last evaluated interval.
    last_loss: Option<f64>,
}

impl LossControl {
    pub fn new() -> Self {
        Self {
            received: 0,
            lost: 0,
            cap: None,
            last_decrease: None,
            last_evaluation: None,
            last_loss: None,
        }
    }

    /// Feedback named a packet for the first time.
    pub fn on_reported(&mut self, received: bool) {
        if received {
            self.received += 1;
        } else {
            self.lost += 1;
        }
    }

    pub fn cap(&self) -> Option<u64> {
        self.cap.map(|c| c as u64)
    }

    pub fn last_loss(&self) -> Option<f64> {
        self.last_loss
    }

    /// A probe showed the link carries `bps`: a cap below it no longer holds.
    pub fn lift_to(&mut self, bps: u64) {
        if let Some(cap) = &mut self.cap {
            *cap = cap.max(bps as f64);
        }
    }

    /// After a feedback message: judges the loss of the packets reported since the last
    /// judgement, if there are enough. `current` is the combined estimate, `delay` the
    /// delay-based one (a cap above it is dropped).
    pub fn evaluate(&mut self, now: Instant, current: u64, delay: u64) {
        let total = self.received + self.lost;
        if total < MIN_PACKETS {
            return;
        }
        let loss = f64::from(self.lost) / f64::from(total);
        self.received = 0;
        self.lost = 0;
        self.last_loss = Some(loss);
        let step = self
            .last_evaluation
            .replace(now)
            .map_or(Duration::ZERO, |last| {
                now.saturating_duration_since(last).min(MAX_STEP)
            });
        if loss > HIGH_LOSS {
            let due = self
                .last_decrease
                .is_none_or(|last| now.saturating_duration_since(last) >= MIN_DECREASE_INTERVAL);
            if due {
                self.cap = Some(current as f64 * (1.0 - 0.5 * loss));
                self.last_decrease = Some(now);
            }
        } else if loss < LOW_LOSS {
            if let Some(cap) = &mut self.cap {
                *cap *= INCREASE_PER_SECOND.powf(step.as_secs_f64());
                if *cap >= delay as f64 {
                    self.cap = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(loss: &mut LossControl, received: u32, lost: u32) {
        (0..received).for_each(|_| loss.on_reported(true));
        (0..lost).for_each(|_| loss.on_reported(false));
    }

    #[test]
    fn heavy_loss_cuts_light_loss_lifts_and_few_packets_wait() {
        let t0 = Instant::now();
        let mut loss = LossControl::new();
        report(&mut loss, 8, 2);
        loss.evaluate(t0, 1_000_000, 1_000_000);
        assert_eq!(
            (loss.cap(), loss.last_loss()),
            (None, None),
            "10 packets: wait"
        );
        report(&mut loss, 8, 2);
        loss.evaluate(t0, 1_000_000, 1_000_000);
        assert_eq!(
            loss.cap(),
            Some(900_000),
            "20 % loss over 20 packets: × 0.9"
        );
        // 40 % within 300 ms: no second cut yet.
        report(&mut loss, 12, 8);
        loss.evaluate(t0 + Duration::from_millis(100), 900_000, 1_000_000);
        assert_eq!(loss.cap(), Some(900_000));
        // 5 %: hold.
        report(&mut loss, 19, 1);
        loss.evaluate(t0 + Duration::from_millis(600), 900_000, 1_000_000);
        assert_eq!(loss.cap(), Some(900_000));
        // No loss for a second: 8 % more; then the cap passes the delay rate and goes.
        report(&mut loss, 20, 0);
        loss.evaluate(t0 + Duration::from_millis(1600), 900_000, 1_000_000);
        assert!(
            loss.cap().unwrap().abs_diff(972_000) <= 1,
            "{:?}",
            loss.cap()
        );
        report(&mut loss, 20, 0);
        loss.evaluate(t0 + Duration::from_secs(4), 972_000, 1_000_000);
        assert_eq!(loss.cap(), None);
    }
}
