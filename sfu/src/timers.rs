//! The deadlines a worker's peers asked to be woken at, in an indexed min-heap.
//!
//! A worker owns hundreds of peers but only a few are due at any moment. Scanning every peer
//! on every loop turn (once for the next deadline, once for the due ones) made each packet
//! cost O(peers); with the heap a turn costs O(log peers) per peer that is actually due.
//! The heap is indexed by peer (`pos`), so a peer's deadline is moved in place: there is
//! exactly one entry per scheduled peer and no stale entries to skip or compact.

use std::time::Instant;

use crate::api::PeerRole;
use crate::participant::Slot;

/// Marks a peer that has no entry in the heap.
const ABSENT: usize = usize::MAX;

/// A peer's key: two per participant slot.
pub(crate) fn key(slot: Slot, role: PeerRole) -> usize {
    slot * 2
        + match role {
            PeerRole::Publisher => 0,
            PeerRole::Subscriber => 1,
        }
}

fn unkey(key: usize) -> (Slot, PeerRole) {
    let role = if key & 1 == 0 {
        PeerRole::Publisher
    } else {
        PeerRole::Subscriber
    };
    (key / 2, role)
}

#[derive(Default)]
pub(crate) struct Timers {
    /// Min-heap on the deadline: (deadline, peer key).
    heap: Vec<(Instant, usize)>,
    /// Peer key → its index in `heap`, or [`ABSENT`].
    pos: Vec<usize>,
}

impl Timers {
    /// Sets (or moves) the deadline of a peer.
    pub fn set(&mut self, slot: Slot, role: PeerRole, at: Instant) {
        let key = key(slot, role);
        self.make_room(key);
        match self.pos[key] {
            ABSENT => {
                self.heap.push((at, key));
                let last = self.heap.len() - 1;
                self.pos[key] = last;
                self.sift_up(last);
            }
            index => {
                let old = self.heap[index].0;
                self.heap[index].0 = at;
                if at < old {
                    self.sift_up(index);
                } else if at > old {
                    self.sift_down(index);
                }
            }
        }
    }

    fn make_room(&mut self, key: usize) {
        if key >= self.pos.len() {
            self.pos.resize(key + 1, ABSENT);
        }
    }

    /// Forgets a peer's deadline (it closed, or its participant left).
    pub fn clear(&mut self, slot: Slot, role: PeerRole) {
        let key = key(slot, role);
        let Some(&index) = self.pos.get(key) else {
            return;
        };
        if index != ABSENT {
            self.remove_at(index);
        }
    }

    /// The earliest deadline, if any peer has one.
    pub fn next(&self) -> Option<Instant> {
        self.heap.first().map(|(at, _)| *at)
    }

    /// Moves every peer whose deadline has passed at `now` into `due`, earliest first. A due
    /// peer has no deadline until it sets a new one.
    pub fn take_due(&mut self, now: Instant, due: &mut Vec<(Slot, PeerRole)>) {
        while let Some(&(at, key)) = self.heap.first() {
            if at > now {
                break;
            }
            self.remove_at(0);
            due.push(unkey(key));
        }
    }

    /// Number of peers with a deadline.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    fn remove_at(&mut self, index: usize) {
        let last = self.heap.len() - 1;
        self.swap(index, last);
        let Some((_, key)) = self.heap.pop() else {
            return;
        };
        self.pos[key] = ABSENT;
        if index < self.heap.len() {
            self.sift_down(index);
            self.sift_up(index);
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a].1] = a;
        self.pos[self.heap[b].1] = b;
    }

    fn sift_up(&mut self, mut index: usize) {
        while index > 0 {
            let parent = (index - 1) / 2;
            if self.heap[index].0 >= self.heap[parent].0 {
                break;
            }
            self.swap(index, parent);
            index = parent;
        }
    }

    fn sift_down(&mut self, mut index: usize) {
        loop {
            let left = 2 * index + 1;
            let right = left + 1;
            let mut smallest = index;
            if left < self.heap.len() && self.heap[left].0 < self.heap[smallest].0 {
                smallest = left;
            }
            if right < self.heap.len() && self.heap[right].0 < self.heap[smallest].0 {
                smallest = right;
            }
            if smallest == index {
                return;
            }
            self.swap(index, smallest);
            index = smallest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn due(timers: &mut Timers, now: Instant) -> Vec<(Slot, PeerRole)> {
        let mut due = Vec::new();
        timers.take_due(now, &mut due);
        due
    }

    #[test]
    fn takes_due_peers_in_deadline_order_and_moves_deadlines_in_place() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut timers = Timers::default();
        timers.set(3, PeerRole::Subscriber, ms(30));
        timers.set(0, PeerRole::Publisher, ms(10));
        timers.set(1, PeerRole::Subscriber, ms(20));
        timers.set(2, PeerRole::Publisher, ms(40));
        // Moving a deadline keeps one entry per peer.
        timers.set(2, PeerRole::Publisher, ms(5));
        timers.set(0, PeerRole::Publisher, ms(50));
        assert_eq!(timers.len(), 4);
        assert_eq!(timers.next(), Some(ms(5)));
        timers.clear(1, PeerRole::Subscriber);
        timers.clear(1, PeerRole::Subscriber);
        timers.clear(40, PeerRole::Publisher);
        assert_eq!(due(&mut timers, ms(4)), vec![]);
        assert_eq!(
            due(&mut timers, ms(35)),
            vec![(2, PeerRole::Publisher), (3, PeerRole::Subscriber)]
        );
        assert_eq!(due(&mut timers, ms(35)), vec![]);
        assert_eq!(timers.next(), Some(ms(50)));
        assert_eq!(due(&mut timers, ms(50)), vec![(0, PeerRole::Publisher)]);
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn matches_a_sorted_reference_under_random_updates() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let mut reference: Vec<Option<Instant>> = vec![None; 64];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..5000 {
            let key = (next() % 64) as usize;
            let (slot, role) = unkey(key);
            match next() % 10 {
                0 | 1 => {
                    timers.clear(slot, role);
                    reference[key] = None;
                }
                _ => {
                    let at = t0 + Duration::from_micros(next() % 1000);
                    timers.set(slot, role, at);
                    reference[key] = Some(at);
                }
            }
            let expected = reference.iter().flatten().min().copied();
            assert_eq!(timers.next(), expected);
        }
        let now = t0 + Duration::from_micros(500);
        let mut taken: Vec<usize> = due(&mut timers, now)
            .into_iter()
            .map(|(slot, role)| key(slot, role))
            .collect();
        let mut expected: Vec<usize> = (0..64)
            .filter(|k| reference[*k].is_some_and(|at| at <= now))
            .collect();
        let count = taken.len();
        taken.sort_unstable();
        taken.dedup();
        assert_eq!(count, taken.len(), "a peer was taken twice");
        expected.sort_unstable();
        assert_eq!(taken, expected);
    }
}
