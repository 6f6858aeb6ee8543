//! Per-subscriber rewriting of sequence numbers and timestamps, so that what a subscriber
//! receives on one m-line is one continuous stream even when the source switches (a
//! simulcast layer change or a republished track), padding is added (probes) or packets are
//! left out (an SVC stream's upper layers).

use std::collections::VecDeque;
use std::time::Instant;

/// How many runs of padding or of left-out packets a late packet can reach back across:
/// each run is remembered with the offset packets before it had, so a packet the publisher
/// resent (or that arrived out of order) still gets the number its place was left at. A
/// second of a probe's padding at a frame end every 50 ms is 20 runs; an SVC stream whose
/// top layer is left out makes one run per picture, 30 a second.
const REMEMBERED_RUNS: usize = 64;

/// Output numbering of one forwarded stream.
#[derive(Debug, Default)]
pub(crate) struct Rewriter {
    source: Option<u32>,
    seq_offset: i64,
    ts_offset: u32,
    last_out_seq: u64,
    last_out_ts: u32,
    last_at: Option<Instant>,
    /// The highest source number forwarded or left out.
    highest_in: u64,
    /// Runs of padding numbered in and of packets left out since the source started,
    /// oldest first: (the highest source number before the run, or the last one it left
    /// out; the offset packets up to it had). A late packet at or below a run's number
    /// takes that older offset: placed by the current one it would take a number already
    /// sent, or leave one unused.
    runs: VecDeque<(u64, i64)>,
    /// Late packets at or below this number reach back past the runs remembered: dropped.
    forgotten: Option<u64>,
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
        } else if self.forgotten.is_some_and(|below| seq <= below) {
            return None;
        }
        let offset = self
            .runs
            .iter()
            .rev()
            .take_while(|&&(highest, _)| seq <= highest)
            .last()
            .map_or(self.seq_offset, |&(_, offset)| offset);
        let out_seq = i64::try_from(seq).ok()? + offset;
        if out_seq < 1 {
            return None;
        }
        let out_seq = out_seq as u64;
        let out_ts = ts.wrapping_add(self.ts_offset);
        self.highest_in = self.highest_in.max(seq);
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
        match self.runs.back() {
            // Padding right after padding (or after packets left out): the same run.
            Some(&(highest, _)) if highest == self.highest_in => {}
            _ => self.remember_run(self.highest_in),
        }
        self.seq_offset += 1;
        // After the numbers of every source packet seen, sent or still missing.
        let next = (self.highest_in as i64 + self.seq_offset) as u64;
        self.last_out_seq = self.last_out_seq.max(next);
        Some((next, self.last_out_ts))
    }

    /// Leaves out packet `seq` of source `ssrc` (a layer this subscriber does not get):
    /// the packets after it close up, so the subscriber sees no gap to ask about. A packet
    /// older than the newest one seen keeps its number unused: the ones after it are out.
    pub(crate) fn skip(&mut self, ssrc: u32, seq: u64) {
        if self.source != Some(ssrc) || seq <= self.highest_in {
            return;
        }
        match self.runs.back_mut() {
            // Right after the packets this run left out, or its padding: the same run.
            Some((highest, _)) if *highest == self.highest_in && seq == self.highest_in + 1 => {
                *highest = seq;
            }
            _ => self.remember_run(seq),
        }
        self.seq_offset -= 1;
        self.highest_in = seq;
    }

    fn remember_run(&mut self, highest: u64) {
        if self.runs.len() == REMEMBERED_RUNS {
            self.forgotten = self.runs.pop_front().map(|(highest, _)| highest);
        }
        self.runs.push_back((highest, self.seq_offset));
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
        self.highest_in = seq;
        self.runs.clear();
        self.forgotten = None;
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
    fn padding_takes_the_next_number_and_late_packets_still_fill_their_own_gap() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        assert_eq!(r.pad(), None, "nothing sent yet");
        r.rewrite(7, 100, 900, t0, 90_000);
        r.rewrite(7, 102, 3900, t0, 90_000);
        assert_eq!(r.pad(), Some((4, 3900)));
        assert_eq!(r.pad(), Some((5, 3900)));
        assert_eq!(r.rewrite(7, 103, 6900, t0, 90_000), Some((6, 6900)));
        assert_eq!(r.rewrite(7, 105, 9900, t0, 90_000), Some((8, 9900)));
        assert_eq!(r.pad(), Some((9, 9900)));
        assert_eq!(r.rewrite(7, 106, 9900, t0, 90_000), Some((10, 9900)));
        // 101 and 104 came late (a resend from the publisher): each takes the number left
        // for it before the padding, never one the padding or a later packet took.
        assert_eq!(r.rewrite(7, 101, 900, t0, 90_000), Some((2, 900)));
        assert_eq!(r.rewrite(7, 104, 6900, t0, 90_000), Some((7, 6900)));
    }

    #[test]
    fn late_packets_older_than_the_padding_runs_remembered_are_dropped() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        r.rewrite(7, 1000, 0, t0, 90_000);
        for i in 0..REMEMBERED_RUNS as u64 + 1 {
            r.rewrite(7, 1002 + 2 * i, 0, t0, 90_000);
            r.pad();
        }
        assert_eq!(r.runs.len(), REMEMBERED_RUNS, "bounded");
        assert_eq!(r.rewrite(7, 1001, 0, t0, 90_000), None);
        // Within the runs remembered: placed in its gap.
        let newest = 1002 + 2 * REMEMBERED_RUNS as u64;
        let (before, _) = r.rewrite(7, newest - 1, 0, t0, 90_000).unwrap();
        let (at, _) = r.rewrite(7, newest + 1, 0, t0, 90_000).unwrap();
        assert_eq!(at - before, 3, "one padding packet between, none reused");
    }

    #[test]
    fn left_out_packets_close_up_and_late_ones_keep_their_place() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        let out = |r: &mut Rewriter, seq| r.rewrite(7, seq, 0, t0, 90_000).map(|(s, _)| s);
        assert_eq!(out(&mut r, 100), Some(1));
        r.skip(7, 101);
        r.skip(7, 102);
        assert_eq!(out(&mut r, 103), Some(2), "101 and 102 left no gap");
        // 104 is still on its way when 105 is left out: its number waits for it.
        r.skip(7, 105);
        assert_eq!(out(&mut r, 106), Some(4));
        assert_eq!(out(&mut r, 104), Some(3));
        assert_eq!(r.pad().map(|(s, _)| s), Some(5));
        r.skip(7, 107);
        assert_eq!(out(&mut r, 108), Some(6));
        // A resent copy of a packet already sent keeps its number.
        assert_eq!(out(&mut r, 106), Some(4));
        // Late, another source's, or older than what was sent: nothing moves.
        r.skip(7, 99);
        r.skip(8, 109);
        assert_eq!(out(&mut r, 109), Some(7));
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
