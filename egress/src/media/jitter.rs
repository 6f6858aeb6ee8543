//! A small reorder buffer keyed by extended sequence number.
//!
//! Packets come out strictly in sequence order. A missing packet is waited for until the
//! packet after the hole has itself waited `max_delay` (a NACKed retransmission arrives about
//! one round trip late) or the buffer is full; then the hole is reported as [`Released::Lost`]
//! so the depacketizer can drop the damaged frame and wait for a keyframe.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::RtpPacketIn;

/// What [`JitterBuffer::pop`] hands out, in sequence order.
#[derive(Debug, Clone)]
pub enum Released {
    Packet(RtpPacketIn),
    /// `count` packets starting at extended sequence number `first` were given up on.
    Lost {
        first: u64,
        count: u64,
    },
}

/// Counters for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub released: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Arrived after their slot had been released or given up on.
    pub too_late: u64,
}

#[derive(Debug)]
pub struct JitterBuffer {
    max_delay: Duration,
    capacity: usize,
    packets: BTreeMap<u64, (RtpPacketIn, Instant)>,
    /// The next sequence number to release; `None` until the first release.
    next: Option<u64>,
    stats: JitterStats,
}

impl JitterBuffer {
    /// `capacity` is clamped to at least 1 so a full buffer always has a head to release.
    pub fn new(max_delay: Duration, capacity: usize) -> Self {
        Self {
            max_delay,
            capacity: capacity.max(1),
            packets: BTreeMap::new(),
            next: None,
            stats: JitterStats::default(),
        }
    }

    /// Buffers `packet`, received at `now`. Duplicates and packets older than what was already
    /// released are dropped (and counted).
    pub fn push(&mut self, packet: RtpPacketIn, now: Instant) {
        if self.next.is_some_and(|next| packet.seq < next) {
            self.stats.too_late += 1;
            return;
        }
        if self.packets.contains_key(&packet.seq) {
            self.stats.duplicates += 1;
            return;
        }
        self.packets.insert(packet.seq, (packet, now));
    }

    /// The next packet or given-up gap, if one is due at `now`. Call until `None`.
    pub fn pop(&mut self, now: Instant) -> Option<Released> {
        let (&head_seq, _) = self.packets.iter().next()?;
        if self.next == Some(head_seq) {
            return self.release_head();
        }
        let overdue = self.packets.len() >= self.capacity
            || self
                .waiting_since()
                .is_some_and(|since| now.saturating_duration_since(since) >= self.max_delay);
        if !overdue {
            return None;
        }
        match self.next {
            Some(next) => {
                self.next = Some(head_seq);
                let count = head_seq - next;
                self.stats.lost += count;
                Some(Released::Lost { first: next, count })
            }
            // At the start of a stream an earlier packet may still be on its way, so the
            // first one waits like a packet after a hole would.
            None => self.release_head(),
        }
    }

    /// When `pop` may next have something to release, given nothing else arrives: the time to
    /// arm a timer for. `None` when the buffer is empty.
    pub fn next_deadline(&self) -> Option<Instant> {
        let (&seq, &(_, arrived)) = self.packets.iter().next()?;
        if self.next == Some(seq) || self.packets.len() >= self.capacity {
            // Releasable already: the deadline has passed.
            return Some(arrived);
        }
        Some(self.waiting_since()? + self.max_delay)
    }

    /// The hole (or the stream start) has been waited on since the first packet after it
    /// arrived, which need not be the lowest-numbered one.
    fn waiting_since(&self) -> Option<Instant> {
        self.packets.values().map(|&(_, arrived)| arrived).min()
    }

    /// Everything `pop` would release now, in order; with `flush`, everything held (the end
    /// of the stream).
    pub fn release(&mut self, now: Instant, flush: bool) -> Vec<Released> {
        let mut out = if flush { self.flush() } else { Vec::new() };
        while let Some(released) = self.pop(now) {
            out.push(released);
        }
        out
    }

    /// Releases everything held, gaps included, at the end of the stream.
    pub fn flush(&mut self) -> Vec<Released> {
        let mut out = Vec::with_capacity(self.packets.len());
        while let Some((seq, (packet, _))) = self.packets.pop_first() {
            if let Some(next) = self.next.filter(|&next| next < seq) {
                self.stats.lost += seq - next;
                out.push(Released::Lost {
                    first: next,
                    count: seq - next,
                });
            }
            self.next = Some(seq + 1);
            self.stats.released += 1;
            out.push(Released::Packet(packet));
        }
        out
    }

    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    fn release_head(&mut self) -> Option<Released> {
        let (seq, (packet, _)) = self.packets.pop_first()?;
        self.next = Some(seq + 1);
        self.stats.released += 1;
        Some(Released::Packet(packet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u64) -> RtpPacketIn {
        RtpPacketIn {
            seq,
            timestamp: seq as u32 * 3000,
            marker: true,
            payload: vec![seq as u8],
        }
    }

    fn drain(jb: &mut JitterBuffer, now: Instant) -> Vec<String> {
        std::iter::from_fn(|| jb.pop(now))
            .map(|r| match r {
                Released::Packet(p) => format!("{}", p.seq),
                Released::Lost { first, count } => format!("lost {first}+{count}"),
            })
            .collect()
    }

    const DELAY: Duration = Duration::from_millis(100);

    #[test]
    fn first_packet_waits_so_an_earlier_one_can_overtake() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(DELAY, 64);
        jb.push(pkt(11), t0);
        assert!(drain(&mut jb, t0).is_empty());
        jb.push(pkt(10), t0 + Duration::from_millis(5));
        assert_eq!(drain(&mut jb, t0 + DELAY), ["10", "11"]);
    }

    #[test]
    fn reorders_adjacent_packets() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(DELAY, 64);
        jb.push(pkt(1), t0);
        assert_eq!(drain(&mut jb, t0 + DELAY), ["1"]);
        let t1 = t0 + DELAY;
        jb.push(pkt(3), t1);
        assert!(drain(&mut jb, t1).is_empty());
        jb.push(pkt(2), t1 + Duration::from_millis(1));
        assert_eq!(drain(&mut jb, t1 + Duration::from_millis(1)), ["2", "3"]);
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn gives_up_a_gap_after_max_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(DELAY, 64);
        jb.push(pkt(1), t0);
        drain(&mut jb, t0 + DELAY);
        let t1 = t0 + DELAY;
        jb.push(pkt(4), t1);
        jb.push(pkt(5), t1 + Duration::from_millis(20));
        assert!(drain(&mut jb, t1 + DELAY - Duration::from_millis(1)).is_empty());
        assert_eq!(jb.next_deadline(), Some(t1 + DELAY));
        assert_eq!(drain(&mut jb, t1 + DELAY), ["lost 2+2", "4", "5"]);
        // The retransmission of 2 comes too late now.
        jb.push(pkt(2), t1 + DELAY);
        assert!(jb.is_empty());
        assert_eq!(jb.stats().too_late, 1);
        assert_eq!(jb.stats().lost, 2);
    }

    #[test]
    fn a_late_retransmission_within_the_delay_fills_the_gap() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(DELAY, 64);
        jb.push(pkt(1), t0);
        drain(&mut jb, t0 + DELAY);
        let t1 = t0 + DELAY;
        jb.push(pkt(3), t1);
        jb.push(pkt(4), t1);
        jb.push(pkt(2), t1 + Duration::from_millis(90));
        assert_eq!(
            drain(&mut jb, t1 + Duration::from_millis(90)),
            ["2", "3", "4"]
        );
    }

    #[test]
    fn full_buffer_gives_up_the_gap_at_once() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_secs(10), 3);
        jb.push(pkt(0), t0);
        jb.push(pkt(1), t0);
        jb.push(pkt(2), t0);
        assert_eq!(drain(&mut jb, t0), ["0", "1", "2"]);
        jb.push(pkt(4), t0);
        jb.push(pkt(5), t0);
        assert!(drain(&mut jb, t0).is_empty());
        jb.push(pkt(6), t0);
        assert_eq!(drain(&mut jb, t0), ["lost 3+1", "4", "5", "6"]);
    }

    #[test]
    fn drops_duplicates() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(DELAY, 64);
        jb.push(pkt(7), t0);
        jb.push(pkt(7), t0);
        assert_eq!(jb.len(), 1);
        assert_eq!(drain(&mut jb, t0 + DELAY), ["7"]);
        jb.push(pkt(7), t0 + DELAY);
        assert!(jb.is_empty());
        assert_eq!(jb.stats().duplicates, 1);
        assert_eq!(jb.stats().too_late, 1);
    }

    #[test]
    fn flush_releases_everything_with_gaps() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(DELAY, 64);
        jb.push(pkt(1), t0);
        drain(&mut jb, t0 + DELAY);
        for seq in [5, 3, 2] {
            jb.push(pkt(seq), t0 + DELAY);
        }
        let out: Vec<String> = jb
            .flush()
            .into_iter()
            .map(|r| match r {
                Released::Packet(p) => format!("{}", p.seq),
                Released::Lost { first, count } => format!("lost {first}+{count}"),
            })
            .collect();
        assert_eq!(out, ["2", "3", "lost 4+1", "5"]);
        assert!(jb.is_empty());
    }

    #[test]
    fn extended_sequence_numbers_past_16_bits_keep_their_order() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(DELAY, 64);
        for seq in [65_534, 65_536, 65_535, 65_537] {
            jb.push(pkt(seq), t0);
        }
        assert_eq!(
            drain(&mut jb, t0 + DELAY),
            ["65534", "65535", "65536", "65537"]
        );
    }
}
