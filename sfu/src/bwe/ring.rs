//! What we know of each packet sent to the peer until its feedback arrives: a ring indexed
//! by the transport-wide sequence number's low bits, 16 bytes an entry.
//!
//! The ring starts small and doubles when it would overwrite an entry feedback has not
//! reported yet (the feedback is slower than the ring is long), up to [`MAX_CAPACITY`];
//! there it overwrites the oldest entries, whose feedback would come too late to be of use.
//! A peer that never sends feedback (it accepted the extension and ignores it) never makes
//! it grow. Steady state allocates nothing.

use super::probe::ProbeWindow;

/// 256 entries (4 KiB): a quarter second of a 10 Mbit/s stream of 1200-byte packets, more
/// than twice the 50–100 ms between two feedback messages of a browser.
const INITIAL_CAPACITY: usize = 256;
/// 8192 entries (128 KiB): 4 s at 20 Mbit/s (the highest estimate) of 1200-byte packets.
/// Feedback older than that no longer describes the link.
pub(super) const MAX_CAPACITY: usize = 8192;

/// An unreported entry older than this (what the ring at its largest holds at 20 Mbit/s)
/// is given up when its slot is needed (the receiver skipped it, or its feedback was lost):
/// only younger ones make the ring grow.
const LAG_US: u64 = 4_000_000;

const VALID: u8 = 1;
const PROBE: u8 = 2;
const RESENT: u8 = 4;
/// Feedback named the packet (lost or received).
const REPORTED: u8 = 8;
/// Feedback reported the packet received.
const RECEIVED: u8 = 16;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Microseconds on the estimator's clock (see [`super::Estimator::micros`]).
    sent_us: u64,
    /// The sequence number's low 32 bits: tells a live entry from a stale one.
    seq_tag: u32,
    bytes: u16,
    cluster: u8,
    flags: u8,
}

/// A packet feedback names, as the ring knew it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reported {
    /// When it was sent: microseconds on the estimator's clock.
    pub sent_us: u64,
    pub bytes: u16,
    /// The probe cluster it was sent in, 0 for none.
    pub cluster: u8,
    pub resent: bool,
    /// The first report about this packet (an earlier one may have called it lost).
    pub first: bool,
}

/// Everything a send touches sits together here (the ring's header and the probe window),
/// apart from the slot itself: with 100 subscribers each packet's record is a cache miss
/// per subscriber, and the probe controller's state a line further on was another one.
pub(super) struct SendRing {
    slots: Vec<Slot>,
    /// The highest sequence number sent, to rebuild full numbers from tags when growing.
    highest: u64,
    /// Feedback has named a packet: only then is lagging feedback worth a bigger ring.
    heard: bool,
    /// The probe cluster sending now, if any (a copy of the probe controller's).
    probe: Option<ProbeWindow>,
}

impl SendRing {
    pub fn new() -> Self {
        Self {
            slots: vec![Slot::default(); INITIAL_CAPACITY],
            highest: 0,
            heard: false,
            probe: None,
        }
    }

    /// The probe cluster packets are sent in from now on (`None`: none).
    pub fn set_probe(&mut self, window: Option<ProbeWindow>) {
        self.probe = window;
    }

    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn index(&self, seq: u64) -> usize {
        (seq as usize) & (self.slots.len() - 1)
    }

    /// Records a packet sent at `sent_us` (`padding`: sent to probe); returns the probe
    /// cluster it belongs to, 0 for none.
    #[inline]
    pub fn insert(&mut self, seq: u64, sent_us: u64, bytes: usize, padding: bool) -> u8 {
        let cluster = self.probe.map_or(0, |w| w.cluster_for(sent_us, padding));
        let occupant = self.slots[self.index(seq)];
        if self.heard
            && occupant.flags & (VALID | REPORTED) == VALID
            && occupant.seq_tag != seq as u32
            && sent_us.saturating_sub(occupant.sent_us) < LAG_US
            && self.slots.len() < MAX_CAPACITY
        {
            self.grow();
        }
        self.highest = self.highest.max(seq);
        let index = self.index(seq);
        self.slots[index] = Slot {
            sent_us,
            seq_tag: seq as u32,
            bytes: bytes.min(usize::from(u16::MAX)) as u16,
            cluster,
            flags: VALID | if padding { PROBE } else { 0 },
        };
        cluster
    }

    /// Doubles the ring, moving every live entry to its slot under the new mask.
    fn grow(&mut self) {
        let mut slots = vec![Slot::default(); self.slots.len() * 2];
        let mask = slots.len() - 1;
        for slot in self.slots.iter().filter(|s| s.flags & VALID != 0) {
            // Every live entry is within 2^32 of the highest number sent.
            let back = (self.highest as u32).wrapping_sub(slot.seq_tag);
            let seq = self.highest.wrapping_sub(u64::from(back));
            slots[(seq as usize) & mask] = *slot;
        }
        self.slots = slots;
    }

    fn live(&mut self, seq: u64) -> Option<&mut Slot> {
        let index = self.index(seq);
        let slot = &mut self.slots[index];
        (slot.flags & VALID != 0 && slot.seq_tag == seq as u32 && seq <= self.highest)
            .then_some(slot)
    }

    pub fn mark_resent(&mut self, seq: u64) {
        if let Some(slot) = self.live(seq) {
            slot.flags |= RESENT;
        }
    }

    /// Feedback names `seq`: what we sent, unless the packet is unknown, stale, or was
    /// already reported received (a duplicate report).
    #[inline]
    pub fn report(&mut self, seq: u64, received: bool) -> Option<Reported> {
        let slot = self.live(seq)?;
        if slot.flags & RECEIVED != 0 || (!received && slot.flags & REPORTED != 0) {
            return None;
        }
        let first = slot.flags & REPORTED == 0;
        slot.flags |= REPORTED | if received { RECEIVED } else { 0 };
        let reported = Reported {
            sent_us: slot.sent_us,
            bytes: slot.bytes,
            cluster: slot.cluster,
            resent: slot.flags & RESENT != 0,
            first,
        };
        self.heard = true;
        Some(reported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_once_and_stale_or_unknown_numbers_are_not() {
        let mut ring = SendRing::new();
        for seq in 0..10u64 {
            ring.insert(seq, 1_000 * seq, 1000 + seq as usize, false);
        }
        let got = ring.report(3, true).unwrap();
        assert_eq!((got.sent_us, got.bytes, got.first), (3_000, 1003, true));
        assert_eq!(ring.report(3, true), None, "a duplicate report");
        assert_eq!(ring.report(10, true), None, "never sent");
        // Lost first, received later: reported again, but not as a first report.
        assert!(ring.report(4, false).unwrap().first);
        assert_eq!(ring.report(4, false), None);
        assert!(!ring.report(4, true).unwrap().first);
        ring.mark_resent(5);
        assert!(ring.report(5, true).unwrap().resent);
        // Overwritten by a number one ring later: the old one is stale.
        for seq in 0..10u64 {
            ring.report(seq, true);
        }
        let cap = ring.capacity() as u64;
        for seq in 10..cap + 8 {
            ring.insert(seq, 0, 100, false);
            ring.report(seq, true);
        }
        assert_eq!(
            ring.capacity() as u64,
            cap,
            "reported entries never force growth"
        );
        assert_eq!(ring.report(6, true), None);
    }

    #[test]
    fn grows_while_feedback_lags_and_keeps_the_entries() {
        let mut ring = SendRing::new();
        ring.set_probe(Some(ProbeWindow {
            id: 7,
            start_us: 0,
            end_us: 1_000_000,
        }));
        for seq in 0..3000u64 {
            ring.insert(seq, 0, 500, seq % 2 == 0);
        }
        assert_eq!(
            ring.capacity(),
            INITIAL_CAPACITY,
            "no feedback yet: no growth"
        );
        ring.report(2999, true);
        for seq in 3000..6000u64 {
            ring.insert(seq, 0, 500, seq % 2 == 0);
        }
        assert_eq!(ring.capacity(), 4096);
        let first = ring.report(3000, true).unwrap();
        assert_eq!((first.bytes, first.cluster), (500, 7));
        assert!(ring.report(5999, false).is_some());
        for seq in 3000..100_000u64 {
            ring.insert(seq, 0, 500, false);
        }
        assert_eq!(ring.capacity(), MAX_CAPACITY);
        assert_eq!(ring.report(100_000 - MAX_CAPACITY as u64 - 1, true), None);
        assert!(ring.report(100_000 - MAX_CAPACITY as u64, true).is_some());
    }
}
