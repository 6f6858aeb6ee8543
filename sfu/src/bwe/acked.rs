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
/// A bound on the window's entries (20 Mbit/s of 300-byte padding in 500 ms is ~4200).
const MAX_ENTRIES: usize = 8192;

pub(super) struct AckedRate {
    /// (arrival µs, bytes), arrivals non-decreasing.
    window: VecDeque<(u64, u32)>,
    bytes: u64,
}

impl AckedRate {
    pub fn new() -> Self {
        Self {
            window: VecDeque::new(),
            bytes: 0,
        }
    }

    pub fn on_received(&mut self, arrival: u64, bytes: u16) {
        // A reordered arrival counts at the latest arrival so far: the window stays sorted.
        let arrival = self
            .window
            .back()
            .map_or(arrival, |&(last, _)| arrival.max(last));
        self.window.push_back((arrival, u32::from(bytes)));
        self.bytes += u64::from(bytes);
        while let Some(&(oldest, bytes)) = self.window.front() {
            if arrival.saturating_sub(oldest) <= WINDOW_US && self.window.len() <= MAX_ENTRIES {
                break;
            }
            self.window.pop_front();
            self.bytes -= u64::from(bytes);
        }
    }

    /// Forgets everything (nothing arrived for long: the old rate no longer holds).
    pub fn clear(&mut self) {
        self.window.clear();
        self.bytes = 0;
    }

    /// Bits per second: the bytes after the first arrival over the span of arrivals.
    pub fn rate(&self) -> Option<u64> {
        let (&(first, first_bytes), &(last, _)) = (self.window.front()?, self.window.back()?);
        let span = last.saturating_sub(first);
        if span < MIN_SPAN_US {
            return None;
        }
        let bits = (self.bytes - u64::from(first_bytes)) * 8;
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
}
