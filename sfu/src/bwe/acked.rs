//! The acknowledged bitrate: what the receiver got over the last half second, by its own
//! arrival clock.
//!
//! Arrivals are microseconds on the receiver's clock (from any origin).

use std::collections::VecDeque;

/// Half a second: long enough to hold several feedback messages and smooth out a frame's
/// burst, short enough that a capacity drop shows within one decrease.
const WINDOW_US: u64 = 500_000;
/// No rate until arrivals span 150 ms: a single feedback message's packets (50–100 ms) can
/// be one frame's burst and read several times the real rate.
const MIN_SPAN_US: u64 = 150_000;
/// Arrivals within 5 ms of a bucket's first share it: a frame's burst is one entry, not one
/// per packet (this runs for every packet every report names). The rate stays exact (the
/// bucket keeps its first and last arrival and its first packet's bytes); only the window's
/// edge moves by whole buckets, so it may hold up to 5 ms more than half a second.
const BUCKET_US: u64 = 5_000;
/// A bound on the window's buckets (a hostile receiver's reordered arrivals all land in
/// the newest bucket, so this is never reached by arrivals alone: 500 ms / 5 ms is 100).
const MAX_BUCKETS: usize = 256;

/// Arrivals in microseconds on the receiver's clock.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    first: u64,
    last: u64,
    bytes: u64,
    /// The first packet's bytes: a rate over a span counts the packets after the first.
    first_bytes: u64,
}

pub(super) struct AckedRate {
    /// Buckets by arrival, non-decreasing.
    window: VecDeque<Bucket>,
    bytes: u64,
}

impl AckedRate {
    pub fn new() -> Self {
        Self {
            window: VecDeque::new(),
            bytes: 0,
        }
    }

    #[inline]
    pub fn on_received(&mut self, arrival: u64, bytes: u16) {
        let bytes = u64::from(bytes);
        self.bytes += bytes;
        if let Some(back) = self.window.back_mut() {
            // A reordered arrival counts at the latest arrival so far: the window stays
            // sorted.
            if arrival < back.first + BUCKET_US {
                back.last = back.last.max(arrival);
                back.bytes += bytes;
                return;
            }
        }
        self.window.push_back(Bucket {
            first: arrival,
            last: arrival,
            bytes,
            first_bytes: bytes,
        });
        while let Some(oldest) = self.window.front() {
            if arrival.saturating_sub(oldest.first) <= WINDOW_US && self.window.len() <= MAX_BUCKETS
            {
                break;
            }
            self.bytes -= oldest.bytes;
            self.window.pop_front();
        }
    }

    /// Forgets everything (nothing arrived for long: the old rate no longer holds).
    pub fn clear(&mut self) {
        self.window.clear();
        self.bytes = 0;
    }

    /// Bits per second: the bytes after the first arrival over the span of arrivals.
    pub fn rate(&self) -> Option<u64> {
        let (first, last) = (self.window.front()?, self.window.back()?);
        let span = last.last.saturating_sub(first.first);
        if span < MIN_SPAN_US {
            return None;
        }
        let bits = (self.bytes - first.first_bytes) * 8;
        Some(bits * 1_000_000 / span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_the_arrival_rate_over_the_last_half_second() {
        let ms = |ms: u64| ms * 1_000;
        let mut acked = AckedRate::new();
        // 1000 bytes every 10 ms: 800 kbit/s.
        for i in 0..10 {
            acked.on_received(ms(10 * i), 1000);
        }
        assert_eq!(acked.rate(), None, "90 ms is too short a span");
        for i in 10..100 {
            acked.on_received(ms(10 * i), 1000);
        }
        assert_eq!(acked.rate(), Some(800_000));
        // Then 1000 bytes every 20 ms: the window forgets the faster part.
        for i in 0..30 {
            acked.on_received(ms(990 + 20 * (i + 1)), 1000);
        }
        assert_eq!(acked.rate(), Some(400_000));
        acked.clear();
        assert_eq!(acked.rate(), None);
    }

    #[test]
    fn a_frames_burst_is_one_bucket_and_the_rate_stays_exact() {
        let mut acked = AckedRate::new();
        // 25 frames 20 ms apart, each five 1000-byte packets 200 µs apart.
        for frame in 0..25u64 {
            for k in 0..5u64 {
                acked.on_received(20_000 * frame + 200 * k, 1000);
            }
        }
        assert_eq!(acked.window.len(), 25, "one bucket per frame");
        let span_us = 20_000 * 24 + 200 * 4;
        let bits_after_first = (25 * 5 - 1) * 1000 * 8;
        assert_eq!(acked.rate(), Some(bits_after_first * 1_000_000 / span_us));
        // A late, reordered packet counts in the newest bucket, not before it.
        acked.on_received(100_000, 1000);
        assert_eq!(acked.window.len(), 25);
        assert_eq!(
            acked.rate(),
            Some((bits_after_first + 8000) * 1_000_000 / span_us)
        );
    }
}
