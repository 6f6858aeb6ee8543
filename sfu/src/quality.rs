//! Connection quality: a score per participant from the loss, round-trip time and jitter
//! its streams report (both ways), every 5 s, sent to its room as LiveKit's
//! `ConnectionQualityUpdate` when its rating changes.

use std::time::Duration;

use crate::api::{ConnectionQuality, PeerEvent};
use crate::worker::Worker;

/// How often ratings are worked out (str0m reports stream stats as often).
pub(crate) const QUALITY_INTERVAL: Duration = Duration::from_secs(5);
/// How much a percent of loss costs: video suffers more from it than Opus.
const LOSS_WEIGHT_AUDIO: f64 = 8.0;
const LOSS_WEIGHT_VIDEO: f64 = 10.0;
/// A score rises slowly and falls fast, and never below this (a bad moment is not a lost
/// connection).
const RISE: f64 = 0.4;
const FALL: f64 = 0.8;
const FLOOR: f64 = 30.0;
/// A participant with a paused track is at best this good.
const PAUSED_SCORE: f64 = 30.0;

/// One stream's report: loss (0 … 1), round-trip time, jitter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamReport {
    pub loss: f64,
    pub rtt: Option<Duration>,
    pub jitter: Duration,
    pub video: bool,
}

/// What 0 … 100 a report is worth, in the manner of an E-model MOS: delay costs little
/// until it is long, loss costs in proportion.
fn score(report: &StreamReport) -> f64 {
    let rtt_ms = report.rtt.map_or(0.0, |r| r.as_secs_f64() * 1000.0);
    let delay = rtt_ms / 2.0 + 2.0 * report.jitter.as_secs_f64() * 1000.0;
    let delay_cost = if delay > 160.0 {
        (delay - 120.0) / 10.0
    } else {
        delay / 40.0
    };
    let weight = if report.video {
        LOSS_WEIGHT_VIDEO
    } else {
        LOSS_WEIGHT_AUDIO
    };
    (100.0 - delay_cost - report.loss * 100.0 * weight).clamp(0.0, 100.0)
}

fn rating(score: f64) -> ConnectionQuality {
    match score {
        s if s > 80.0 => ConnectionQuality::Excellent,
        s if s > 40.0 => ConnectionQuality::Good,
        s if s > 20.0 => ConnectionQuality::Poor,
        _ => ConnectionQuality::Lost,
    }
}

/// A participant's score over the current interval, and what was last sent.
#[derive(Debug)]
pub(crate) struct QualityMeter {
    worst: Option<f64>,
    smoothed: f64,
    reported: Option<ConnectionQuality>,
}

impl Default for QualityMeter {
    fn default() -> Self {
        Self {
            worst: None,
            smoothed: 100.0,
            reported: None,
        }
    }
}

impl QualityMeter {
    pub fn report(&mut self, report: StreamReport) {
        let score = score(&report);
        self.worst = Some(self.worst.map_or(score, |w| w.min(score)));
    }

    /// Ends an interval: the new rating and score, if the rating changed (or was never
    /// sent).
    pub fn interval(&mut self, paused: bool) -> Option<(ConnectionQuality, u8)> {
        let mut score = self.worst.take().unwrap_or(self.smoothed);
        if paused {
            score = score.min(PAUSED_SCORE);
        }
        let factor = if score > self.smoothed { RISE } else { FALL };
        self.smoothed = (self.smoothed + (score - self.smoothed) * factor).max(FLOOR);
        if paused {
            self.smoothed = self.smoothed.min(PAUSED_SCORE);
        }
        let rated = rating(self.smoothed);
        if self.reported == Some(rated) {
            return None;
        }
        self.reported = Some(rated);
        Some((rated, self.smoothed.round() as u8))
    }
}

impl Worker {
    /// Ends a quality interval: each room hears the ratings of its members that changed.
    pub(crate) fn rate_connections(&mut self) {
        self.tell_rooms(
            |part| {
                let paused = part.down_tracks.iter().flatten().any(|d| d.paused);
                let (quality, score) = part.quality.interval(paused)?;
                Some((part.key.clone(), quality, score))
            },
            |updates| PeerEvent::ConnectionQuality { updates },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(loss: f64, rtt_ms: u64, jitter_ms: u64) -> StreamReport {
        StreamReport {
            loss,
            rtt: Some(Duration::from_millis(rtt_ms)),
            jitter: Duration::from_millis(jitter_ms),
            video: true,
        }
    }

    #[test]
    fn a_clean_link_is_excellent_and_loss_brings_it_down_fast_and_back_slowly() {
        let mut meter = QualityMeter::default();
        meter.report(report(0.0, 20, 2));
        assert_eq!(
            meter.interval(false).map(|r| r.0),
            Some(ConnectionQuality::Excellent)
        );
        assert_eq!(meter.interval(false), None, "unchanged: nothing to send");
        // 5 % video loss: 50 points.
        meter.report(report(0.05, 20, 2));
        assert_eq!(
            meter.interval(false).map(|r| r.0),
            Some(ConnectionQuality::Good)
        );
        meter.report(report(0.0, 20, 2));
        // 0.4 of the way back up: still good (76), then excellent (85).
        assert_eq!(meter.interval(false), None);
        meter.report(report(0.0, 20, 2));
        assert_eq!(
            meter.interval(false).map(|r| r.0),
            Some(ConnectionQuality::Excellent)
        );
    }

    #[test]
    fn long_delays_cost_and_a_paused_track_makes_it_poor() {
        assert!(score(&report(0.0, 600, 40)) < 80.0);
        assert!(score(&report(0.0, 40, 5)) > 98.0);
        let mut meter = QualityMeter::default();
        meter.report(report(0.0, 20, 2));
        assert_eq!(
            meter.interval(true).map(|r| r.0),
            Some(ConnectionQuality::Poor)
        );
    }
}
