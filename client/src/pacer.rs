//! A sender-side pacer for synthetic video, as browsers have one.
//!
//! libwebrtc does not put a frame's packets on the wire at once: its pacer spreads them at a
//! multiple (2.5 by default) of the target bitrate, so a 40 KB keyframe at 2.5 Mbit/s takes
//! ~50 ms to leave. Without it every frame reaches the SFU as a burst and the measured
//! latency is the SFU's queueing behind that burst, which no browser would cause. A factor
//! of 0 turns pacing off (each frame leaves as one burst): the stress case.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::media::OutPacket;

/// libwebrtc's default pacing factor.
pub const DEFAULT_PACING_FACTOR: f64 = 2.5;

/// How late a release may run and still send at the full rate afterwards: timers wake up to
/// a millisecond late, and that time is made up instead of lost.
const CATCH_UP: Duration = Duration::from_millis(2);

/// One packet waiting for its turn, with what its RTP header needs.
pub(crate) struct Queued {
    pub seq: u64,
    pub rtp_time: u32,
    pub packet: OutPacket,
}

pub(crate) struct Pacer {
    /// Bits per second the queue drains at.
    rate_bps: f64,
    queue: VecDeque<Queued>,
    /// When the next packet may leave.
    next_at: Option<Instant>,
}

impl Pacer {
    /// A pacer for a stream of `bitrate_bps` at `factor` × that rate; `None` when pacing is
    /// off.
    pub fn new(bitrate_bps: u32, factor: f64) -> Option<Self> {
        (factor > 0.0 && bitrate_bps > 0).then(|| Self {
            rate_bps: f64::from(bitrate_bps) * factor,
            queue: VecDeque::new(),
            next_at: None,
        })
    }

    pub fn push(&mut self, seq: u64, rtp_time: u32, packet: OutPacket) {
        self.queue.push_back(Queued {
            seq,
            rtp_time,
            packet,
        });
    }

    /// The packets whose turn has come by `now`, in order.
    pub fn release(&mut self, now: Instant) -> Vec<Queued> {
        let mut out = Vec::new();
        while !self.queue.is_empty() {
            let at = match self.next_at {
                Some(at) => at.max(now.checked_sub(CATCH_UP).unwrap_or(now)),
                None => now,
            };
            if at > now {
                self.next_at = Some(at);
                break;
            }
            let Some(queued) = self.queue.pop_front() else {
                break;
            };
            let bits = (queued.packet.payload.len() * 8) as f64;
            self.next_at = Some(at + Duration::from_secs_f64(bits / self.rate_bps));
            out.push(queued);
        }
        out
    }

    /// When [`Pacer::release`] has something again; `None` when the queue is empty.
    pub fn next_due(&self) -> Option<Instant> {
        if self.queue.is_empty() {
            None
        } else {
            self.next_at
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(len: usize) -> OutPacket {
        OutPacket {
            payload: vec![0; len],
            marker: false,
        }
    }

    #[test]
    fn a_frame_leaves_at_the_paced_rate_not_at_once() {
        // 1 Mbit/s × 2.5: a 1250-byte packet every 4 ms.
        let mut pacer = Pacer::new(1_000_000, 2.5).expect("pacing on");
        for seq in 0..5 {
            pacer.push(seq, 0, packet(1250));
        }
        let t0 = Instant::now();
        let first = pacer.release(t0);
        assert_eq!(first.len(), 1, "one packet now");
        assert_eq!(pacer.next_due(), Some(t0 + Duration::from_millis(4)));
        assert!(pacer.release(t0 + Duration::from_millis(3)).is_empty());
        let second = pacer.release(t0 + Duration::from_millis(5));
        assert_eq!(second.iter().map(|q| q.seq).collect::<Vec<_>>(), vec![1]);
        // Woken 2 ms late for the third: it goes, and the fourth keeps its own slot.
        let third = pacer.release(t0 + Duration::from_millis(10));
        assert_eq!(third.iter().map(|q| q.seq).collect::<Vec<_>>(), vec![2]);
        assert_eq!(pacer.next_due(), Some(t0 + Duration::from_millis(12)));
        assert_eq!(pacer.release(t0 + Duration::from_millis(13)).len(), 1);
        assert_eq!(pacer.release(t0 + Duration::from_millis(16)).len(), 1);
        assert_eq!(pacer.next_due(), None);
    }

    #[test]
    fn small_packets_due_by_now_leave_together_in_order() {
        // 125 bytes at 2.5 Mbit/s: one every 0.4 ms, so a 1 ms timer tick releases two.
        let mut pacer = Pacer::new(1_000_000, 2.5).expect("pacing on");
        for seq in 0..4 {
            pacer.push(seq, 0, packet(125));
        }
        let t0 = Instant::now();
        assert_eq!(pacer.release(t0).len(), 1);
        let tick = pacer.release(t0 + Duration::from_millis(1));
        assert_eq!(tick.iter().map(|q| q.seq).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn an_idle_pacer_builds_no_burst_credit() {
        let mut pacer = Pacer::new(1_000_000, 2.5).expect("pacing on");
        pacer.push(0, 0, packet(1250));
        let t0 = Instant::now();
        assert_eq!(pacer.release(t0).len(), 1);
        for seq in 1..4 {
            pacer.push(seq, 0, packet(1250));
        }
        // A second later only the catch-up window's worth goes at once, not the whole idle
        // second's.
        let burst = pacer.release(t0 + Duration::from_secs(1));
        assert_eq!(burst.len(), 1);
    }

    #[test]
    fn a_factor_of_zero_means_no_pacer() {
        assert!(Pacer::new(1_000_000, 0.0).is_none());
    }
}
