//! One session's queue of what the room tells it: bounded, and coalescing.
//!
//! A participant's state is sent as a full snapshot, so an unsent snapshot is worthless once
//! a newer one exists: the queue keeps at most one pending ParticipantUpdate per participant
//! (and one RoomUpdate), the newer replacing the older and moving behind whatever was queued
//! before it, so causal order holds. N changes in a room then cost a slow reader at most one
//! snapshot per participant, not N. Everything else (mute requests, permissions) is kept in
//! order, and what waits is counted in encoded bytes: past the limit the session is told to
//! leave as a slow client ([`LeaveReason::SlowClient`]) and the queue is emptied.
//!
//! A leave always gets through and goes first: nothing sent after it would be read.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use prost::Message as _;
use tokio::sync::{watch, Notify};

use crate::events::LeaveReason;
use crate::frame::SharedFrame;
use crate::rooms::SessionMsg;

/// What a coalesced entry stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Participant(String),
    Room,
}

#[derive(Default)]
struct State {
    next_seq: u64,
    queue: BTreeMap<u64, (Option<Key>, SessionMsg, usize)>,
    keyed: HashMap<Key, u64>,
    bytes: usize,
    leave: Option<LeaveReason>,
    /// The leave was handed to the session.
    leaving: bool,
}

struct Shared {
    state: Mutex<State>,
    ready: Notify,
    /// Closed once the receiving session is gone (what [`Outbox::closed`] waits for).
    alive: watch::Sender<()>,
    max_bytes: usize,
}

/// The room's end of a session's queue.
#[derive(Clone)]
pub(crate) struct Outbox(Arc<Shared>);

/// The session's end.
pub(crate) struct Inbox {
    shared: Arc<Shared>,
    _alive: watch::Receiver<()>,
}

/// The session that would read the message is gone.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Gone;

/// Nothing is queued right now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Empty;

/// A queue that lets at most `max_bytes` of encoded output wait.
pub(crate) fn channel(max_bytes: usize) -> (Outbox, Inbox) {
    let (alive, alive_rx) = watch::channel(());
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        ready: Notify::new(),
        alive,
        max_bytes,
    });
    (
        Outbox(Arc::clone(&shared)),
        Inbox {
            shared,
            _alive: alive_rx,
        },
    )
}

fn cost(msg: &SessionMsg) -> usize {
    match msg {
        SessionMsg::Update(frame) | SessionMsg::Broadcast(frame) => frame.len(),
        SessionMsg::Signal(response) => livekit_protocol::SignalResponse {
            message: Some((**response).clone()),
        }
        .encoded_len(),
        // Small and bounded by what an admin does; counted so nothing is free.
        SessionMsg::Permission(_) | SessionMsg::Leave(_) => 64,
    }
}

impl State {
    /// Takes a pending leave. Whatever is still queued will never be sent, and nothing
    /// pushed from now on.
    fn take_leave(&mut self) -> Option<LeaveReason> {
        let reason = self.leave.take()?;
        self.leaving = true;
        self.queue.clear();
        self.keyed.clear();
        self.bytes = 0;
        Some(reason)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data: a panic elsewhere while holding it leaves a usable queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Outbox {
    /// Queues `msg` in order; a Leave goes ahead of everything.
    pub(crate) fn send(&self, msg: SessionMsg) -> Result<(), Gone> {
        self.push(None, msg)
    }

    /// Queues a ParticipantUpdate about `sid`, replacing an unsent one about it.
    pub(crate) fn update(&self, sid: &str, frame: SharedFrame) -> Result<(), Gone> {
        self.push(
            Some(Key::Participant(sid.to_owned())),
            SessionMsg::Update(frame),
        )
    }

    /// Queues a RoomUpdate, replacing an unsent one.
    pub(crate) fn room_update(&self, frame: SharedFrame) -> Result<(), Gone> {
        self.push(Some(Key::Room), SessionMsg::Broadcast(frame))
    }

    fn push(&self, key: Option<Key>, msg: SessionMsg) -> Result<(), Gone> {
        if self.0.alive.is_closed() {
            return Err(Gone);
        }
        let mut state = self.0.lock();
        if state.leaving {
            return Ok(());
        }
        if let SessionMsg::Leave(reason) = msg {
            state.leave.get_or_insert(reason);
        } else if state.leave.is_some() {
            // The session is leaving: nothing more will be read.
            return Ok(());
        } else {
            let size = cost(&msg);
            if let Some(old) = key.as_ref().and_then(|k| state.keyed.remove(k)) {
                if let Some((_, _, old_size)) = state.queue.remove(&old) {
                    state.bytes -= old_size;
                }
            }
            let seq = state.next_seq;
            state.next_seq += 1;
            if let Some(key) = &key {
                state.keyed.insert(key.clone(), seq);
            }
            state.queue.insert(seq, (key, msg, size));
            state.bytes += size;
            if state.bytes > self.0.max_bytes {
                metrics::counter!("switchboard_signal_slow_clients_total").increment(1);
                state.queue.clear();
                state.keyed.clear();
                state.bytes = 0;
                state.leave = Some(LeaveReason::SlowClient);
            }
        }
        drop(state);
        self.0.ready.notify_one();
        Ok(())
    }

    /// Waits until the session reading this queue has ended.
    pub(crate) async fn closed(&self) {
        self.0.alive.closed().await;
    }
}

impl Inbox {
    /// The next message, waiting for one.
    pub(crate) async fn recv(&mut self) -> Option<SessionMsg> {
        loop {
            if let Ok(msg) = self.try_recv() {
                return Some(msg);
            }
            // `notify_one` keeps a permit when nobody waits: a push between the check and
            // here is not lost.
            self.shared.ready.notified().await;
        }
    }

    /// The next message if one is queued.
    pub(crate) fn try_recv(&mut self) -> Result<SessionMsg, Empty> {
        let mut state = self.shared.lock();
        if let Some(reason) = state.take_leave() {
            return Ok(SessionMsg::Leave(reason));
        }
        let (_, (key, msg, size)) = state.queue.pop_first().ok_or(Empty)?;
        if let Some(key) = key {
            state.keyed.remove(&key);
        }
        state.bytes -= size;
        Ok(msg)
    }

    /// Waits until a leave is queued, and takes it; everything else stays queued (a session
    /// waiting for its client to resume, `resume.rs`).
    pub(crate) async fn leave_requested(&mut self) -> LeaveReason {
        loop {
            if let Some(reason) = self.shared.lock().take_leave() {
                return reason;
            }
            self.shared.ready.notified().await;
        }
    }

    /// Encoded bytes waiting.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.shared.lock().bytes
    }
}

#[cfg(test)]
mod tests;
