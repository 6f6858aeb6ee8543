//! Per-subscriber rewriting of sequence numbers and timestamps, so that what a subscriber
//! receives on one m-line is one continuous stream even when the source switches (a
//! simulcast layer change or a republished track).

use std::time::Instant;

/// Output numbering of one forwarded stream.
#[derive(Debug, Default)]
pub(crate) struct Rewriter {
    source: Option<u32>,
    seq_offset: i64,
    ts_offset: u32,
    last_out_seq: u64,
    last_out_ts: u32,
    last_at: Option<Instant>,
    /// After padding was numbered in, source packets at or below this number are late and
    /// dropped: placed by the new offset, they would take numbers already sent.
    floor: Option<u64>,
}

impl Rewriter {
    /// Maps an incoming packet of `ssrc` (extended sequence number `seq`, RTP time `ts`)
    /// to the outgoing numbering. Returns `None` for a packet that predates the point
    /// where this subscriber started on that source (it cannot be placed in order).
    pub(crate) fn rewrite(
        &mut self,
        ssrc: u32,
        seq: u64,
        ts: u32,
        arrival: Instant,
        clock_rate: u32,
    ) -> Option<(u64, u32)> {
        if self.source != Some(ssrc) {
            self.switch_to(ssrc, seq, ts, arrival, clock_rate);
        } else if self.floor.is_some_and(|floor| seq <= floor) {
            return None;
        }
        let out_seq = i64::try_from(seq).ok()? + self.seq_offset;
        if out_seq < 1 {
            return None;
        }
        let out_seq = out_seq as u64;
        let out_ts = ts.wrapping_add(self.ts_offset);
        if out_seq > self.last_out_seq {
            self.last_out_seq = out_seq;
            self.last_out_ts = out_ts;
            self.last_at = Some(arrival);
        }
        Some((out_seq, out_ts))
    }

    /// Numbers a padding packet in after the last packet sent: the next number, the last
    /// packet's time. `None` before anything was sent.
    pub(crate) fn pad(&mut self) -> Option<(u64, u32)> {
        self.source?;
        self.seq_offset += 1;
        self.last_out_seq += 1;
        let last_source_seq = (self.last_out_seq as i64 - self.seq_offset) as u64;
        self.floor = Some(last_source_seq);
        Some((self.last_out_seq, self.last_out_ts))
    }

    /// Makes the next packet continue right after the last one sent, whatever its own
    /// number (after a mute, so the subscriber sees no gap to NACK).
    pub(crate) fn resync(&mut self) {
        self.source = None;
    }

    /// Maps an RTP time of the current source into the outgoing numbering (for the
    /// source's sender reports).
    pub(crate) fn map_timestamp(&self, ts: u32) -> u32 {
        ts.wrapping_add(self.ts_offset)
    }

    /// The source the numbering currently follows.
    pub(crate) fn source(&self) -> Option<u32> {
        self.source
    }

    fn switch_to(&mut self, ssrc: u32, seq: u64, ts: u32, arrival: Instant, clock_rate: u32) {
        // The first packet out is number 1, so the SRTP rollover counter starts at 0 as the
        // receiver expects; later sources continue right after the last packet sent.
        let next_seq = self.last_out_seq + 1;
        self.seq_offset = next_seq as i64 - seq as i64;
        self.ts_offset = match self.last_at {
            None => 0,
            Some(last) => {
                // Advance the clock by the wall time between the two sources' packets, and
                // by at least one tick so the new frame never shares the old one's time.
                let elapsed = arrival.saturating_duration_since(last);
                let ticks =
                    (elapsed.as_micros() as u64 * u64::from(clock_rate) / 1_000_000).max(1) as u32;
                self.last_out_ts.wrapping_add(ticks).wrapping_sub(ts)
            }
        };
        self.source = Some(ssrc);
        self.floor = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn first_source_starts_at_one_and_keeps_gaps() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        assert_eq!(r.rewrite(7, 5000, 900, t0, 90_000), Some((1, 900)));
        assert_eq!(r.rewrite(7, 5001, 900, t0, 90_000), Some((2, 900)));
        // A loss stays a gap, so the subscriber can NACK it.
        assert_eq!(r.rewrite(7, 5003, 3900, t0, 90_000), Some((4, 3900)));
        // A late packet fills the gap.
        assert_eq!(r.rewrite(7, 5002, 900, t0, 90_000), Some((3, 900)));
        // Older than where this subscriber started: dropped.
        assert_eq!(r.rewrite(7, 4999, 0, t0, 90_000), None);
    }

    #[test]
    fn source_switch_is_continuous() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        r.rewrite(1, 100, 10_000, t0, 90_000);
        r.rewrite(1, 101, 13_000, t0, 90_000);
        let t1 = t0 + Duration::from_millis(33);
        let (seq, ts) = r.rewrite(2, 40_000, 777, t1, 90_000).unwrap();
        assert_eq!(seq, 3);
        assert_eq!(ts, 13_000 + 2970);
        let (seq, ts) = r.rewrite(2, 40_001, 777 + 3000, t1, 90_000).unwrap();
        assert_eq!((seq, ts), (4, 13_000 + 2970 + 3000));
    }

    #[test]
    fn padding_takes_the_next_number_and_late_packets_cannot_reuse_one() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        assert_eq!(r.pad(), None, "nothing sent yet");
        r.rewrite(7, 100, 900, t0, 90_000);
        r.rewrite(7, 102, 3900, t0, 90_000);
        assert_eq!(r.pad(), Some((4, 3900)));
        assert_eq!(r.pad(), Some((5, 3900)));
        // 101 came late: its number (2) stays a gap rather than anything sent twice.
        assert_eq!(r.rewrite(7, 101, 900, t0, 90_000), None);
        assert_eq!(r.rewrite(7, 102, 3900, t0, 90_000), None);
        assert_eq!(r.rewrite(7, 103, 6900, t0, 90_000), Some((6, 6900)));
    }

    #[test]
    fn immediate_switch_still_advances_time() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        r.rewrite(1, 10, 50, t0, 48_000);
        let (_, ts) = r.rewrite(2, 10, 50, t0, 48_000).unwrap();
        assert_eq!(ts, 51);
    }
}
