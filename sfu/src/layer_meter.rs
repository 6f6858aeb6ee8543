//! What one layer of a published track sends: its bitrate and, when its packets carry
//! temporal layer ids (VP8's TID, VP9's), the bitrate and frame rate of each temporal layer,
//! which make the finer steps of a subscriber's ladder (`allocator::Step`).

use std::time::{Duration, Instant};

use crate::allocator::Step;
use crate::published_track::{Quality, LAYER_IDLE};

/// A layer's bitrate is measured over windows of this length.
const BITRATE_WINDOW: Duration = Duration::from_secs(1);
/// Temporal layers told apart; higher ids count with the highest (VP8's TID has 2 bits,
/// and publishers send at most 3: L1T3).
pub(crate) const TEMPORAL_LAYERS: usize = 4;

/// Where a packet sits among its layer's temporal layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Temporal {
    /// Its temporal layer id.
    pub id: u8,
    /// It starts a frame (of that temporal layer).
    pub frame_start: bool,
}

/// Bits per second of a stream, and of each of its temporal layers, measured over windows
/// of `BITRATE_WINDOW`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BitrateMeter {
    window_start: Instant,
    window_bytes: u64,
    /// Over the last full window; 0 until one has passed.
    pub bitrate: u64,
    pub last_packet: Option<Instant>,
    temporal_bytes: [u64; TEMPORAL_LAYERS],
    temporal_frames: [u32; TEMPORAL_LAYERS],
    /// Per temporal layer over the last full window: bits and frames per second.
    temporal_bitrate: [u64; TEMPORAL_LAYERS],
    temporal_fps: [u32; TEMPORAL_LAYERS],
    /// The highest temporal id seen in the last full window (0: none, or no temporal layers).
    max_temporal: u8,
}

impl BitrateMeter {
    pub fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            window_bytes: 0,
            bitrate: 0,
            last_packet: None,
            temporal_bytes: [0; TEMPORAL_LAYERS],
            temporal_frames: [0; TEMPORAL_LAYERS],
            temporal_bitrate: [0; TEMPORAL_LAYERS],
            temporal_fps: [0; TEMPORAL_LAYERS],
            max_temporal: 0,
        }
    }

    pub fn record(&mut self, bytes: usize, now: Instant, temporal: Option<Temporal>) {
        self.last_packet = Some(now);
        self.window_bytes += bytes as u64;
        let tid = temporal.map_or(0, |t| usize::from(t.id).min(TEMPORAL_LAYERS - 1));
        self.temporal_bytes[tid] += bytes as u64;
        if temporal.is_some_and(|t| t.frame_start) {
            self.temporal_frames[tid] += 1;
        }
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= BITRATE_WINDOW {
            let micros = elapsed.as_micros().max(1) as u64;
            self.bitrate = self.window_bytes * 8 * 1_000_000 / micros;
            self.max_temporal = 0;
            for t in 0..TEMPORAL_LAYERS {
                self.temporal_bitrate[t] = self.temporal_bytes[t] * 8 * 1_000_000 / micros;
                self.temporal_fps[t] =
                    (u64::from(self.temporal_frames[t]) * 1_000_000 / micros) as u32;
                if self.temporal_bytes[t] > 0 {
                    self.max_temporal = t as u8;
                }
            }
            self.window_start = now;
            self.window_bytes = 0;
            self.temporal_bytes = [0; TEMPORAL_LAYERS];
            self.temporal_frames = [0; TEMPORAL_LAYERS];
        }
    }

    pub fn active(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|last| now.saturating_duration_since(last) < LAYER_IDLE)
    }

    /// The highest temporal layer sent (0 for a stream without temporal layers).
    #[cfg(test)]
    pub fn max_temporal(&self) -> u8 {
        self.max_temporal
    }

    /// Bits per second of temporal layers 0 to `temporal` together.
    pub fn bitrate_up_to(&self, temporal: u8) -> u64 {
        if temporal >= self.max_temporal {
            return self.bitrate;
        }
        self.temporal_bitrate[..=usize::from(temporal)].iter().sum()
    }

    /// Frames per second of temporal layers 0 to `temporal` together.
    pub fn fps_up_to(&self, temporal: u8) -> u32 {
        let top = usize::from(temporal).min(TEMPORAL_LAYERS - 1);
        self.temporal_fps[..=top].iter().sum()
    }

    /// The lowest temporal layer that gives about `fps` frames per second, 10 % short
    /// still serving (as for sizes: a measured 14.5 fps is the 15 fps layer); the top one if
    /// none does. `None` for a stream without temporal layers.
    pub fn temporal_for_fps(&self, fps: u32) -> Option<u8> {
        if self.max_temporal == 0 {
            return None;
        }
        let enough = |t: u8| u64::from(self.fps_up_to(t)) * 10 >= u64::from(fps) * 9;
        Some(
            (0..=self.max_temporal)
                .find(|&t| enough(t))
                .unwrap_or(self.max_temporal),
        )
    }

    /// The steps of this layer: one per temporal layer sent, each costing `below` (what
    /// the layers it needs send, for SVC) plus its own temporal layers up to the step's.
    /// Steps below the top one that give fewer than `min_fps` frames per second are left
    /// out.
    pub fn steps(
        &self,
        quality: Quality,
        below: &[&BitrateMeter],
        min_fps: u32,
    ) -> Vec<(Step, u64)> {
        (0..=self.max_temporal)
            .filter(|&t| t == self.max_temporal || self.fps_up_to(t) >= min_fps)
            .map(|temporal| {
                let rate = self.bitrate_up_to(temporal)
                    + below.iter().map(|m| m.bitrate_up_to(temporal)).sum::<u64>();
                (Step { quality, temporal }, rate)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One second of the usual three-layer pattern at 30 fps (T0 T2 T1 T2 …), one packet
    /// per frame: T0 frames 3,000 bytes, T1 2,000, T2 1,000.
    fn l1t3(meter: &mut BitrateMeter, t0: Instant) {
        for frame in 0..=30u64 {
            let id = match frame % 4 {
                0 => 0,
                2 => 1,
                _ => 2,
            };
            let bytes = [3000, 2000, 1000][usize::from(id)];
            let at = t0 + Duration::from_micros(frame * 1_000_000 / 30);
            let temporal = Temporal {
                id,
                frame_start: true,
            };
            meter.record(bytes, at, Some(temporal));
        }
    }

    #[test]
    fn temporal_layers_are_measured_apart() {
        let t0 = Instant::now();
        let mut meter = BitrateMeter::new(t0);
        l1t3(&mut meter, t0);
        assert_eq!(meter.max_temporal(), 2);
        // Frames 0 to 30 in one second (frame 30 closes the window): 8 T0 frames (0, 4, …
        // 28), 8 T1 (2, 6, … 30), 15 T2.
        assert_eq!(meter.fps_up_to(0), 8);
        assert_eq!(meter.fps_up_to(1), 16);
        assert_eq!(meter.fps_up_to(2), 31);
        assert_eq!(meter.bitrate_up_to(0), 8 * 3000 * 8);
        assert_eq!(meter.bitrate_up_to(1), (8 * 3000 + 8 * 2000) * 8);
        assert_eq!(meter.bitrate_up_to(2), meter.bitrate);
        assert_eq!(meter.temporal_for_fps(15), Some(1));
        assert_eq!(
            meter.temporal_for_fps(17),
            Some(1),
            "16 fps is 10 % short of 17"
        );
        assert_eq!(meter.temporal_for_fps(18), Some(2));
        assert_eq!(meter.temporal_for_fps(5), Some(0));
        assert_eq!(meter.temporal_for_fps(60), Some(2));
        let steps = meter.steps(1, &[], 0);
        let temporal: Vec<u8> = steps.iter().map(|(s, _)| s.temporal).collect();
        assert_eq!(temporal, vec![0, 1, 2]);
        assert!(
            steps.windows(2).all(|w| w[0].1 < w[1].1),
            "each step costs more"
        );
        // Too few frames for a step: only the ones with enough, and the top one.
        let temporal: Vec<u8> = meter
            .steps(1, &[], 15)
            .iter()
            .map(|(s, _)| s.temporal)
            .collect();
        assert_eq!(temporal, vec![1, 2]);
    }

    #[test]
    fn a_stream_without_temporal_layers_is_one_step() {
        let t0 = Instant::now();
        let mut meter = BitrateMeter::new(t0);
        for i in 0..=10u64 {
            meter.record(1000, t0 + Duration::from_millis(i * 100), None);
        }
        assert_eq!(meter.steps(0, &[], 15), vec![(Step::spatial(0), 88_000)]);
        assert_eq!(meter.temporal_for_fps(15), None);
    }
}
