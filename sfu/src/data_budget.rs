//! A bound on the data-channel messages a participant has waiting between its media worker
//! and its signaling session.
//!
//! The worker hands every message to the session ([`PeerEvent::Data`](crate::PeerEvent)),
//! which checks, rate-limits and relays it. A healthy session takes them as fast as the
//! worker decrypts them, but while it is blocked writing to a slow WebSocket (up to its write
//! timeout) a client flooding its data channel would otherwise pile messages up without
//! bound. Each message carries its share of the budget and gives it back when signaling drops
//! it, so the count is exact without the session doing anything.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes one participant may have waiting (`data_queue_bytes`) unless configured:
/// two seconds of the default data rate (docs/configuration.md).
pub const DEFAULT_DATA_QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// The worker's side: what is waiting, and how much may.
#[derive(Debug)]
pub(crate) struct DataBudget {
    waiting: Arc<AtomicUsize>,
    max: usize,
}

impl DataBudget {
    pub fn new(max: usize) -> Self {
        DataBudget {
            waiting: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// The message as a payload holding its share of the budget, or `None` if it does not
    /// fit (the caller drops it). A message larger than the whole budget never fits.
    pub fn admit(&self, bytes: Vec<u8>) -> Option<DataPayload> {
        let len = bytes.len();
        let admitted = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                waiting.checked_add(len).filter(|total| *total <= self.max)
            })
            .is_ok();
        admitted.then(|| DataPayload {
            bytes,
            budget: Some(Arc::clone(&self.waiting)),
        })
    }

    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

/// A data-channel message's bytes. Dropping it gives its bytes back to the sender's budget;
/// a clone holds none (only the original was admitted).
pub struct DataPayload {
    bytes: Vec<u8>,
    budget: Option<Arc<AtomicUsize>>,
}

impl DataPayload {
    /// A payload outside any budget (tests, fuzzing).
    pub fn unbudgeted(bytes: Vec<u8>) -> Self {
        DataPayload {
            bytes,
            budget: None,
        }
    }
}

impl Deref for DataPayload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for DataPayload {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.fetch_sub(self.bytes.len(), Ordering::AcqRel);
        }
    }
}

impl Clone for DataPayload {
    fn clone(&self) -> Self {
        DataPayload::unbudgeted(self.bytes.clone())
    }
}

impl PartialEq for DataPayload {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for DataPayload {}

impl fmt::Debug for DataPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataPayload({} bytes)", self.bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_past_the_budget_are_refused_until_earlier_ones_are_dropped() {
        let budget = DataBudget::new(1000);
        let first = budget.admit(vec![1; 600]).expect("fits");
        let second = budget.admit(vec![2; 400]).expect("fits exactly");
        assert_eq!(budget.waiting(), 1000);
        assert!(budget.admit(vec![3; 1]).is_none(), "the budget is full");
        drop(first);
        assert_eq!(budget.waiting(), 400);
        let third = budget.admit(vec![4; 600]).expect("fits again");
        assert_eq!(&third[..3], &[4, 4, 4]);
        drop((second, third));
        assert_eq!(budget.waiting(), 0);
        assert!(
            budget.admit(vec![0; 1001]).is_none(),
            "larger than the budget"
        );
        assert_eq!(budget.waiting(), 0, "a refusal takes nothing");
    }

    #[test]
    fn a_clone_gives_nothing_back() {
        let budget = DataBudget::new(100);
        let original = budget.admit(vec![7; 60]).expect("fits");
        let copy = original.clone();
        assert_eq!(copy, original);
        drop(copy);
        assert_eq!(
            budget.waiting(),
            60,
            "only the admitted original holds budget"
        );
        drop(original);
        assert_eq!(budget.waiting(), 0);
    }
}
