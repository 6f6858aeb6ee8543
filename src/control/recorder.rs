//! The recorder: one task that applies signaling's events to the store, one at a time and in
//! the order they happened.
//!
//! Signaling hands events over on an unbounded channel and never waits for the database. The
//! recorder drains that channel into a queue of its own, bounded by the limit
//! `recorder_queue_bytes` (the events' strings and their fixed size), while it writes the oldest event. A write that fails because the
//! database is unreachable is retried (backoff up to [`MAX_BACKOFF`]) until it works, and
//! nothing behind it is written first, so an outage delays records and their webhooks but
//! loses and reorders none. When the queue is full, newer events are dropped and counted
//! (`switchboard_recorder_events_dropped_total`, and a warning): media and signaling go on,
//! and those records stay missing until the next restart's reconciliation closes what they
//! would have closed. A write the database refuses (not an outage) is tried [`ATTEMPTS`]
//! times, then logged and skipped, so one bad event cannot stall the rest.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use switchboard_signaling::SignalEvent;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Control;

/// Attempts for a write the database refused (not an outage) before it is skipped.
const ATTEMPTS: u32 = 3;

/// The longest wait between two attempts while the database is unreachable: after it is
/// back, recording resumes within this long.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How long shutdown waits for the queue to be written (the database may be down).
const STOP_GRACE: Duration = Duration::from_secs(5);

type Recording = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The wait after the `failures`-th unreachable-database failure in a row (1-based).
fn backoff(failures: u32) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    Duration::from_millis(100)
        .saturating_mul(factor)
        .min(MAX_BACKOFF)
}

/// What an event holds in memory: its fixed size and its strings (a join can carry
/// kilobytes of metadata and attributes).
fn footprint(event: &SignalEvent) -> usize {
    let strings: usize = match event {
        SignalEvent::RoomStarted { room_id, sid, .. } => room_id.len() + sid.len(),
        SignalEvent::RoomFinished { room_id, .. } => room_id.len(),
        SignalEvent::ParticipantJoined {
            room_id,
            sid,
            identity,
            name,
            metadata,
            attributes,
            ..
        } => {
            room_id.len()
                + sid.len()
                + identity.len()
                + name.len()
                + metadata.len()
                + attributes
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 3 * size_of::<usize>() * 2)
                    .sum::<usize>()
        }
        SignalEvent::ParticipantLeft {
            room_id,
            sid,
            identity,
            ..
        } => room_id.len() + sid.len() + identity.len(),
        SignalEvent::TrackPublished {
            room_id,
            participant_sid,
            identity,
            track_sid,
            source,
            ..
        } => {
            room_id.len() + participant_sid.len() + identity.len() + track_sid.len() + source.len()
        }
        SignalEvent::TrackUnpublished {
            room_id,
            participant_sid,
            identity,
            track_sid,
            ..
        } => room_id.len() + participant_sid.len() + identity.len() + track_sid.len(),
        #[allow(unreachable_patterns)]
        _ => 0,
    };
    size_of::<SignalEvent>() + strings
}

/// The recorder's queue: events received but not yet being written.
struct Queue {
    events: VecDeque<SignalEvent>,
    /// The footprint of the queued events.
    bytes: usize,
    /// `bytes` may not exceed this.
    capacity: usize,
    /// Dropped since the queue was last empty (for one warning per overflow, not per event).
    dropped: u64,
}

impl Queue {
    fn admit(&mut self, event: SignalEvent) {
        let size = footprint(&event);
        if self.bytes + size > self.capacity {
            if self.dropped == 0 {
                warn!(
                    capacity = self.capacity,
                    "the recorder's queue is full (the database is unreachable or slow): newer \
                     events are dropped and their records will be missing"
                );
            }
            self.dropped += 1;
            metrics::counter!("switchboard_recorder_events_dropped_total").increment(1);
            debug!(?event, "dropped an event: the recorder's queue is full");
            return;
        }
        self.bytes += size;
        self.events.push_back(event);
    }

    fn pop(&mut self) -> Option<SignalEvent> {
        let event = self.events.pop_front()?;
        self.bytes -= footprint(&event);
        Some(event)
    }

    fn depth(&self, writing: bool) -> usize {
        self.events.len() + usize::from(writing)
    }
}

/// Polls the write under way, or never resolves when there is none.
async fn finish(current: &mut Option<Recording>) {
    match current {
        Some(recording) => recording.await,
        None => std::future::pending().await,
    }
}

/// Resolves once `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

impl Control {
    /// Records signaling events until `stop` turns true, then, for at most [`STOP_GRACE`],
    /// whatever is queued. `capacity` bounds the queue's bytes (see the module docs).
    pub async fn run_signal_events(
        self: Arc<Self>,
        mut events: mpsc::UnboundedReceiver<SignalEvent>,
        capacity: usize,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut queue = Queue {
            events: VecDeque::new(),
            bytes: 0,
            capacity,
            dropped: 0,
        };
        let mut current: Option<Recording> = None;
        let depth = metrics::gauge!("switchboard_recorder_queue_depth");
        let mut open = true;
        while open {
            if current.is_none() {
                current = queue
                    .pop()
                    .map(|event| Box::pin(Arc::clone(&self).record(event)) as Recording);
            }
            if current.is_none() && queue.dropped > 0 {
                warn!(
                    dropped = queue.dropped,
                    "the recorder caught up; events dropped while its queue was full have no records"
                );
                queue.dropped = 0;
            }
            depth.set(queue.depth(current.is_some()) as f64);
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => break,
                () = finish(&mut current) => current = None,
                event = events.recv() => match event {
                    Some(event) => queue.admit(event),
                    None => open = false,
                },
            }
        }
        let rest = async {
            loop {
                while let Ok(event) = events.try_recv() {
                    queue.admit(event);
                }
                if let Some(recording) = current.take() {
                    recording.await;
                }
                match queue.pop() {
                    Some(event) => current = Some(Box::pin(Arc::clone(&self).record(event))),
                    None => return,
                }
            }
        };
        if tokio::time::timeout(STOP_GRACE, rest).await.is_err() {
            warn!(
                unrecorded = queue.depth(current.is_some()),
                "stopping with events the database did not take in {STOP_GRACE:?}; their records are \
                 closed by the next start's reconciliation"
            );
        }
        depth.set(0.0);
    }

    /// Writes one event: retried until the database takes it while it is unreachable; a
    /// write it refuses is tried [`ATTEMPTS`] times, then skipped.
    async fn record(self: Arc<Self>, event: SignalEvent) {
        let mut refused = 0;
        let mut unreachable = 0;
        let mut since: Option<Instant> = None;
        loop {
            match self.apply_signal_event(&event).await {
                Ok(()) => {
                    if let Some(since) = since {
                        info!(
                            attempts = unreachable + 1,
                            waited = ?since.elapsed(),
                            "the database is back: recording again"
                        );
                    }
                    return;
                }
                Err(e) if e.is_unavailable() => {
                    unreachable += 1;
                    if since.is_none() {
                        since = Some(Instant::now());
                        warn!(
                            "the database is unreachable; events are queued until it is back: {e}"
                        );
                    } else {
                        debug!(attempt = unreachable, "recording still failing: {e}");
                    }
                    tokio::time::sleep(backoff(unreachable)).await;
                }
                Err(e) if refused + 1 < ATTEMPTS => {
                    refused += 1;
                    debug!(attempt = refused, "recording failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(refused))).await;
                }
                Err(e) => {
                    warn!(?event, "could not record an event, skipped: {e}");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(room: &str) -> SignalEvent {
        SignalEvent::RoomFinished {
            room_id: room.to_owned(),
            at: std::time::SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_full_queue_drops_newer_events_keeps_order_and_frees_its_bytes() {
        let one = footprint(&finished("a"));
        let mut queue = Queue {
            events: VecDeque::new(),
            bytes: 0,
            capacity: 2 * one,
            dropped: 0,
        };
        for room in ["a", "b", "c"] {
            queue.admit(finished(room));
        }
        assert_eq!(queue.dropped, 1);
        assert_eq!(queue.pop(), Some(finished("a")));
        queue.admit(finished("d"));
        assert_eq!(queue.pop(), Some(finished("b")));
        assert_eq!(queue.pop(), Some(finished("d")));
        assert_eq!((queue.pop(), queue.bytes), (None, 0));
    }

    #[test]
    fn a_join_counts_its_metadata_and_attributes() {
        let join = |metadata: &str| SignalEvent::ParticipantJoined {
            room_id: "r".into(),
            sid: "PA_x".into(),
            identity: "i".into(),
            name: String::new(),
            metadata: metadata.to_owned(),
            attributes: [("k".to_owned(), "v".repeat(1000))].into(),
            host: false,
            at: std::time::SystemTime::UNIX_EPOCH,
        };
        assert!(footprint(&join(&"m".repeat(10_000))) >= footprint(&join("")) + 10_000);
        assert!(footprint(&join("")) > size_of::<SignalEvent>() + 1000);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(5), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
