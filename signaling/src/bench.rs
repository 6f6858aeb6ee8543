//! **Not public API.** A room registry with N members whose sessions are plain channels, for
//! the criterion bench of participant-update fan-out (`benches/fanout.rs`, feature `bench`)
//! and the unit test that joins must not cost quadratically. It may change at any time.

use std::sync::Arc;
use std::time::Duration;

use livekit_protocol as proto;
use proto::signal_response::Message as Resp;
use tokio::sync::mpsc;

use crate::events::SignalEvent;
use crate::frame::SharedFrame;
use crate::outbox::{self, Inbox};
use crate::rooms::{Rooms, SessionMsg};
use crate::RoomDefaults;

const ROOM: &str = "fanout";

/// What one join sent to every session of the room, encoded as the sessions send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinCost {
    /// SignalResponses: the newcomer's JoinResponse and one update per other member.
    pub messages: u64,
    /// Their protobuf bytes.
    pub bytes: u64,
}

/// A participant snapshot the size of a real one (identity, name, metadata, permissions).
fn info(n: usize) -> proto::ParticipantInfo {
    proto::ParticipantInfo {
        sid: format!("PA_bench{n:07}"),
        identity: format!("participant-{n}"),
        name: format!("Participant {n}"),
        metadata: r#"{"role":"viewer"}"#.into(),
        state: proto::participant_info::State::Joined as i32,
        joined_at: 1_700_000_000,
        joined_at_ms: 1_700_000_000_000,
        version: 1,
        permission: Some(proto::ParticipantPermission {
            can_subscribe: true,
            can_publish: true,
            can_publish_data: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn encoded(message: Resp) -> u64 {
    SharedFrame::encode(message).len() as u64
}

/// A room of `participants` members, and a newcomer that joins and leaves.
pub struct FanoutRoom {
    /// Never driven: the room's deferred RoomUpdate (participant counts, sent 2 s after a
    /// change) is scheduled on it and never sent, so a join's own cost is what is measured.
    runtime: tokio::runtime::Runtime,
    rooms: Arc<Rooms>,
    sessions: Vec<Inbox>,
    newcomer: Option<(String, Inbox)>,
    next: usize,
    _events: mpsc::UnboundedReceiver<SignalEvent>,
}

impl FanoutRoom {
    pub fn new(participants: usize) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        let defaults = RoomDefaults {
            empty_timeout: Duration::from_secs(300),
            max_participants: 0,
        };
        let rooms = Arc::new(Rooms::new(defaults, events_tx));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            // Building a current-thread runtime only fails when the OS refuses a timer.
            .expect("a tokio runtime for the bench");
        let entered = runtime.enter();
        let mut sessions = Vec::with_capacity(participants);
        for n in 0..participants {
            let (tx, rx) = outbox::channel(usize::MAX);
            if rooms.join(ROOM, info(n), tx).is_ok() {
                sessions.push(rx);
            }
        }
        drop(entered);
        let mut room = FanoutRoom {
            runtime,
            rooms,
            sessions,
            newcomer: None,
            next: participants,
            _events: events,
        };
        room.drain();
        room
    }

    /// Everything queued for the sessions, encoded as they would send it.
    fn drain(&mut self) -> JoinCost {
        let mut cost = JoinCost {
            messages: 0,
            bytes: 0,
        };
        for session in &mut self.sessions {
            while let Ok(message) = session.try_recv() {
                let bytes = match message {
                    SessionMsg::Update(frame) | SessionMsg::Broadcast(frame) => frame.len() as u64,
                    SessionMsg::Signal(response) => encoded(*response),
                    SessionMsg::Permission(_) | SessionMsg::Leave(_) => continue,
                };
                cost.messages += 1;
                cost.bytes += bytes;
            }
        }
        cost
    }

    /// A new participant joins: the room tells every member, and the newcomer gets its
    /// JoinResponse listing them all. Returns what was sent.
    pub fn join_one(&mut self) -> JoinCost {
        let me = info(self.next);
        self.next += 1;
        let (tx, rx) = outbox::channel(usize::MAX);
        let _inside = self.runtime.enter();
        let Ok(joined) = self.rooms.join(ROOM, me.clone(), tx) else {
            return self.drain();
        };
        let sid = me.sid.clone();
        let response = proto::JoinResponse {
            room: Some(joined.room),
            participant: Some(me),
            other_participants: joined.others,
            ..Default::default()
        };
        let mut cost = self.drain();
        cost.messages += 1;
        cost.bytes += encoded(Resp::Join(response));
        self.newcomer = Some((sid, rx));
        cost
    }

    /// The last newcomer leaves again (the members are told; not part of a join's cost).
    pub fn leave_newcomer(&mut self) {
        if let Some((sid, _rx)) = self.newcomer.take() {
            let _inside = self.runtime.enter();
            self.rooms.leave(ROOM, &sid);
        }
        self.drain();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_costs_linearly_in_the_room_size_in_messages_and_bytes() {
        let small = FanoutRoom::new(50).join_one();
        let mut room = FanoutRoom::new(500);
        let large = room.join_one();
        // One update per member plus the newcomer's JoinResponse.
        assert_eq!(small.messages, 51);
        assert_eq!(large.messages, 501);
        // 10× the members: about 10× the bytes (a quadratic fan-out would be about 100×).
        let ratio = large.bytes as f64 / small.bytes as f64;
        assert!(
            (8.0..12.0).contains(&ratio),
            "bytes per join: {} with 50 members, {} with 500 (×{ratio:.1})",
            small.bytes,
            large.bytes
        );
        // Steady state: joining again after a leave costs the same.
        room.leave_newcomer();
        assert_eq!(room.join_one(), large);
    }
}
