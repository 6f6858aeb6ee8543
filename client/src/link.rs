//! A simulated bottleneck in front of a peer's socket: what a capped access link does to
//! the datagrams coming down it. A token bucket, as tc's tbf: tokens (bytes) accrue at the
//! link's rate up to a burst allowance; a datagram leaves after the ones before it, once
//! the tokens for it are there; one that would wait longer than the queue allows is
//! dropped (tail drop). The peer sees the delay grow and then loss, and its
//! transport-wide feedback tells the server so, as a real link's would.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A link's rate in bits per second, shared by every bottleneck made from the same cap: a
/// run steps it for all of them at once (the load tester's `--subscriber-cap-step`).
#[derive(Debug, Clone)]
pub struct LinkRate(Arc<AtomicU64>);

impl LinkRate {
    pub fn new(bps: u64) -> Self {
        Self(Arc::new(AtomicU64::new(bps)))
    }

    /// Changes the rate of every link sharing it, from their next datagram on.
    pub fn set(&self, bps: u64) {
        self.0.store(bps, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A downlink's capacity.
#[derive(Debug, Clone)]
pub struct LinkCap {
    /// Bits per second.
    pub rate: LinkRate,
    /// The longest a datagram may wait in the queue before it is dropped instead.
    pub queue: Duration,
    /// Bytes that may pass at once after a quiet spell (tbf's `burst`); 0: none.
    pub burst: u32,
}

/// The datagrams on their way through one peer's bottleneck.
#[derive(Debug)]
pub(crate) struct Bottleneck {
    cap: LinkCap,
    /// When the link finishes sending what it holds.
    busy_until: Option<Instant>,
    /// Tokens (bytes) in the bucket at `tokens_at`.
    tokens: f64,
    tokens_at: Option<Instant>,
    /// (leaves at, source, datagram), in the order they leave. Bounded by the queue's
    /// duration at the link's rate.
    queue: VecDeque<(Instant, SocketAddr, Vec<u8>)>,
    pub dropped: u64,
}

impl Bottleneck {
    pub fn new(cap: LinkCap) -> Self {
        Self {
            tokens: f64::from(cap.burst),
            cap,
            busy_until: None,
            tokens_at: None,
            queue: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Takes in a datagram arriving at `now`; returns when it leaves, or `None` when the
    /// queue is full and it is dropped.
    pub fn admit(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) -> Option<Instant> {
        let start = self.busy_until.map_or(now, |busy| busy.max(now));
        let byte_rate = self.cap.rate.get().max(1) as f64 / 8.0;
        let refill = self
            .tokens_at
            .map_or(0.0, |at| start.saturating_duration_since(at).as_secs_f64());
        let tokens = (self.tokens + refill * byte_rate).min(f64::from(self.cap.burst));
        let size = datagram.len() as f64;
        let wait = ((size - tokens) / byte_rate).max(0.0);
        let leaves = start + Duration::from_secs_f64(wait);
        if leaves.saturating_duration_since(now) > self.cap.queue {
            self.dropped += 1;
            return None;
        }
        self.tokens = (tokens - size).max(0.0);
        self.tokens_at = Some(leaves);
        self.busy_until = Some(leaves);
        self.queue.push_back((leaves, source, datagram.to_vec()));
        Some(leaves)
    }

    /// The next datagram that has left by `now`.
    pub fn release(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        if self.queue.front()?.0 > now {
            return None;
        }
        self.queue
            .pop_front()
            .map(|(_, source, datagram)| (source, datagram))
    }

    /// When the next datagram leaves.
    pub fn next_departure(&self) -> Option<Instant> {
        self.queue.front().map(|(leaves, _, _)| *leaves)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> SocketAddr {
        "127.0.0.1:9".parse().expect("an address")
    }

    #[test]
    fn datagrams_leave_at_the_links_rate_and_overflow_is_dropped() {
        // 800 kbit/s: a 1,000-byte datagram takes 10 ms. A 35 ms queue, no burst allowance.
        let mut link = Bottleneck::new(LinkCap {
            rate: LinkRate::new(800_000),
            queue: Duration::from_millis(35),
            burst: 0,
        });
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let datagram = [0u8; 1000];
        assert_eq!(link.admit(t0, source(), &datagram), Some(ms(10)));
        assert_eq!(link.admit(t0, source(), &datagram), Some(ms(20)));
        assert_eq!(link.admit(t0, source(), &datagram), Some(ms(30)));
        // Would leave after 40 ms, over the 35 ms allowed: dropped.
        assert_eq!(link.admit(t0, source(), &datagram), None);
        assert_eq!(link.dropped, 1);
        assert!(link.release(ms(9)).is_none());
        assert!(link.release(ms(10)).is_some());
        assert_eq!(link.next_departure(), Some(ms(20)));
        // The link drains: later datagrams start when it is free again, or at once.
        assert_eq!(link.admit(ms(25), source(), &datagram), Some(ms(40)));
        assert_eq!(link.admit(ms(100), source(), &datagram), Some(ms(110)));
        let mut left = 0;
        while link.release(ms(200)).is_some() {
            left += 1;
        }
        assert_eq!(left, 4);
        assert_eq!(link.next_departure(), None);
    }

    #[test]
    fn a_burst_allowance_passes_at_once_after_a_quiet_spell() {
        // 800 kbit/s with 3,000 bytes of allowance: three datagrams at once, then the rate.
        let mut link = Bottleneck::new(LinkCap {
            rate: LinkRate::new(800_000),
            queue: Duration::from_millis(25),
            burst: 3000,
        });
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let datagram = [0u8; 1000];
        for _ in 0..3 {
            assert_eq!(link.admit(t0, source(), &datagram), Some(t0));
        }
        assert_eq!(link.admit(t0, source(), &datagram), Some(ms(10)));
        // 100 ms quiet: the bucket is full again (not fuller).
        for _ in 0..3 {
            assert_eq!(link.admit(ms(110), source(), &datagram), Some(ms(110)));
        }
        assert_eq!(link.admit(ms(110), source(), &datagram), Some(ms(120)));
    }

    #[test]
    fn a_rate_step_applies_to_every_link_sharing_it_from_the_next_datagram() {
        let rate = LinkRate::new(800_000);
        let cap = LinkCap {
            rate: rate.clone(),
            queue: Duration::from_secs(1),
            burst: 0,
        };
        let (mut a, mut b) = (Bottleneck::new(cap.clone()), Bottleneck::new(cap));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let datagram = [0u8; 1000];
        assert_eq!(a.admit(t0, source(), &datagram), Some(ms(10)));
        rate.set(400_000);
        assert_eq!(a.admit(t0, source(), &datagram), Some(ms(30)));
        assert_eq!(b.admit(t0, source(), &datagram), Some(ms(20)));
    }
}
