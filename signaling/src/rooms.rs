//! The signaling view of rooms: who is in each room, what they publish, and fan-out of
//! participant updates. Not on the media path: a mutex here costs nothing per packet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livekit_protocol as proto;
use tokio::sync::mpsc;

use crate::events::{LeaveReason, SignalEvent};
use crate::ids;

/// A message from the room to one participant's session task.
#[derive(Debug, Clone)]
pub(crate) enum SessionMsg {
    /// Participants whose state changed (full snapshots).
    Update(Vec<proto::ParticipantInfo>),
    /// The server ends this participant's session.
    Leave(LeaveReason),
}

struct Member {
    info: proto::ParticipantInfo,
    tx: mpsc::UnboundedSender<SessionMsg>,
}

struct RoomState {
    sid: String,
    created_at: SystemTime,
    empty_timeout: Duration,
    max_participants: u32,
    metadata: String,
    members: HashMap<String, Member>,
    /// Bumped whenever the room changes between empty and occupied, so a stale close timer
    /// can tell it lost the race.
    generation: u64,
}

/// Room defaults from configuration.
#[derive(Debug, Clone, Copy)]
pub struct RoomDefaults {
    pub empty_timeout: Duration,
    pub max_participants: u32,
}

/// Why a join was refused by the room.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinRefused {
    #[error("room {room} is full ({max} participants)")]
    Full { room: String, max: u32 },
}

pub(crate) struct Joined {
    pub room: proto::Room,
    pub others: Vec<proto::ParticipantInfo>,
}

/// Every room this node hosts.
pub(crate) struct Rooms {
    inner: Mutex<HashMap<String, RoomState>>,
    defaults: RoomDefaults,
    events: mpsc::UnboundedSender<SignalEvent>,
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Rooms {
    pub fn new(defaults: RoomDefaults, events: mpsc::UnboundedSender<SignalEvent>) -> Self {
        Self {
            inner: Mutex::new(HashMap::new()),
            defaults,
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, RoomState>> {
        // A panic while holding this lock leaves plain data behind, still consistent
        // enough to serve the remaining participants.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn room_proto(name: &str, room: &RoomState) -> proto::Room {
        proto::Room {
            sid: room.sid.clone(),
            name: name.to_owned(),
            empty_timeout: room.empty_timeout.as_secs() as u32,
            max_participants: room.max_participants,
            creation_time: unix_secs(room.created_at),
            creation_time_ms: unix_millis(room.created_at),
            metadata: room.metadata.clone(),
            num_participants: room.members.len() as u32,
            num_publishers: room
                .members
                .values()
                .filter(|m| m.info.is_publisher)
                .count() as u32,
            ..Default::default()
        }
    }

    /// True when a participant could join `room` right now (used before the WebSocket
    /// upgrade so a full room is refused with a readable error).
    pub fn check_capacity(&self, room: &str, identity: &str) -> Result<(), JoinRefused> {
        let rooms = self.lock();
        let Some(state) = rooms.get(room) else {
            return Ok(());
        };
        let replacing = state.members.values().any(|m| m.info.identity == identity);
        if state.max_participants > 0
            && !replacing
            && state.members.len() as u32 >= state.max_participants
        {
            return Err(JoinRefused::Full {
                room: room.to_owned(),
                max: state.max_participants,
            });
        }
        Ok(())
    }

    /// Adds a participant, creating the room on first use. An older connection with the same
    /// identity is told to leave (DUPLICATE_IDENTITY) and replaced.
    pub fn join(
        &self,
        room: &str,
        info: proto::ParticipantInfo,
        tx: mpsc::UnboundedSender<SessionMsg>,
    ) -> Result<Joined, JoinRefused> {
        let now = SystemTime::now();
        let mut rooms = self.lock();
        let state = rooms.entry(room.to_owned()).or_insert_with(|| {
            let state = RoomState {
                sid: ids::room_sid(),
                created_at: now,
                empty_timeout: self.defaults.empty_timeout,
                max_participants: self.defaults.max_participants,
                metadata: String::new(),
                members: HashMap::new(),
                generation: 0,
            };
            let _ = self.events.send(SignalEvent::RoomStarted {
                room_id: room.to_owned(),
                sid: state.sid.clone(),
                empty_timeout_secs: state.empty_timeout.as_secs() as u32,
                max_participants: state.max_participants,
                at: now,
            });
            state
        });
        let duplicate = state
            .members
            .iter()
            .find(|(_, m)| m.info.identity == info.identity)
            .map(|(sid, _)| sid.clone());
        if let Some(old) = duplicate {
            if let Some(member) = state.members.remove(&old) {
                let _ = member
                    .tx
                    .send(SessionMsg::Leave(LeaveReason::DuplicateIdentity));
                let mut gone = member.info;
                gone.state = proto::participant_info::State::Disconnected as i32;
                gone.version += 1;
                broadcast(state, &[gone]);
            }
        }
        if state.max_participants > 0 && state.members.len() as u32 >= state.max_participants {
            return Err(JoinRefused::Full {
                room: room.to_owned(),
                max: state.max_participants,
            });
        }
        if state.members.is_empty() {
            state.generation += 1;
        }
        let others: Vec<proto::ParticipantInfo> = state
            .members
            .values()
            .filter(|m| !is_hidden(&m.info))
            .map(|m| m.info.clone())
            .collect();
        if !is_hidden(&info) {
            broadcast(state, std::slice::from_ref(&info));
        }
        state.members.insert(info.sid.clone(), Member { info, tx });
        Ok(Joined {
            room: Self::room_proto(room, state),
            others,
        })
    }

    /// Changes a participant's info, bumps its version and tells everyone else.
    /// Returns the new snapshot, or `None` if it is no longer in the room.
    pub fn update(
        &self,
        room: &str,
        sid: &str,
        change: impl FnOnce(&mut proto::ParticipantInfo),
    ) -> Option<proto::ParticipantInfo> {
        let mut rooms = self.lock();
        let state = rooms.get_mut(room)?;
        let member = state.members.get_mut(sid)?;
        change(&mut member.info);
        member.info.version += 1;
        let info = member.info.clone();
        if !is_hidden(&info) {
            broadcast(state, std::slice::from_ref(&info));
        }
        Some(info)
    }

    /// Resolves identities to sids of current members (for addressed data messages).
    pub fn sids_for(&self, room: &str, identities: &[String], exclude: &str) -> Vec<String> {
        let rooms = self.lock();
        let Some(state) = rooms.get(room) else {
            return Vec::new();
        };
        state
            .members
            .values()
            .filter(|m| m.info.sid != exclude)
            .filter(|m| identities.is_empty() || identities.contains(&m.info.identity))
            .map(|m| m.info.sid.clone())
            .collect()
    }

    /// Removes a participant if it is still a member; tells the others it disconnected and
    /// schedules the room's close when it became empty. Returns false when it was already
    /// gone (evicted by a newer connection, or removed by an admin).
    pub fn leave(self: &Arc<Self>, room: &str, sid: &str) -> bool {
        let mut rooms = self.lock();
        let Some(state) = rooms.get_mut(room) else {
            return false;
        };
        let Some(member) = state.members.remove(sid) else {
            return false;
        };
        let mut gone = member.info;
        gone.state = proto::participant_info::State::Disconnected as i32;
        gone.version += 1;
        if !is_hidden(&gone) {
            broadcast(state, &[gone]);
        }
        if state.members.is_empty() {
            state.generation += 1;
            let generation = state.generation;
            let timeout = state.empty_timeout;
            let rooms = Arc::clone(self);
            let room = room.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                rooms.close_if_still_empty(&room, generation);
            });
        }
        true
    }

    fn close_if_still_empty(&self, room: &str, generation: u64) {
        let mut rooms = self.lock();
        let still_empty = rooms
            .get(room)
            .is_some_and(|s| s.members.is_empty() && s.generation == generation);
        if still_empty {
            rooms.remove(room);
            let _ = self.events.send(SignalEvent::RoomFinished {
                room_id: room.to_owned(),
                at: SystemTime::now(),
            });
        }
    }

    /// Tells every participant of every room to leave for `reason`.
    pub fn evict_all(&self, reason: LeaveReason) {
        let rooms = self.lock();
        for member in rooms.values().flat_map(|r| r.members.values()) {
            let _ = member.tx.send(SessionMsg::Leave(reason));
        }
    }

    /// Number of participants on this node.
    pub fn participant_count(&self) -> usize {
        self.lock().values().map(|r| r.members.len()).sum()
    }
}

fn is_hidden(info: &proto::ParticipantInfo) -> bool {
    info.permission.as_ref().is_some_and(|p| p.hidden)
}

fn broadcast(state: &RoomState, infos: &[proto::ParticipantInfo]) {
    for member in state.members.values() {
        let _ = member.tx.send(SessionMsg::Update(infos.to_vec()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_protocol::participant_info::State;

    fn info(sid: &str, identity: &str) -> proto::ParticipantInfo {
        proto::ParticipantInfo {
            sid: sid.into(),
            identity: identity.into(),
            version: 1,
            ..Default::default()
        }
    }

    fn rooms(timeout_secs: u64, max: u32) -> (Arc<Rooms>, mpsc::UnboundedReceiver<SignalEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let defaults = RoomDefaults {
            empty_timeout: Duration::from_secs(timeout_secs),
            max_participants: max,
        };
        (Arc::new(Rooms::new(defaults, tx)), rx)
    }

    fn finished(events: &mut mpsc::UnboundedReceiver<SignalEvent>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(event) = events.try_recv() {
            if let SignalEvent::RoomFinished { room_id, .. } = event {
                out.push(room_id);
            }
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_room_closes_after_its_timeout_unless_someone_returns() {
        let (rooms, mut events) = rooms(300, 0);
        let (tx, _rx) = mpsc::unbounded_channel();
        rooms.join("a", info("PA_1", "ann"), tx.clone()).unwrap();
        rooms.join("b", info("PA_2", "bob"), tx.clone()).unwrap();
        assert!(rooms.leave("a", "PA_1"));
        assert!(rooms.leave("b", "PA_2"));
        tokio::time::sleep(Duration::from_secs(200)).await;
        // Someone comes back to "b" before its timeout: only "a" closes.
        rooms.join("b", info("PA_3", "bob"), tx).unwrap();
        tokio::time::sleep(Duration::from_secs(150)).await;
        assert_eq!(finished(&mut events), vec!["a".to_owned()]);
        assert_eq!(rooms.participant_count(), 1);
        assert!(
            !rooms.leave("a", "PA_1"),
            "a closed room has no members left"
        );
    }

    #[tokio::test]
    async fn a_duplicate_identity_replaces_the_older_connection() {
        let (rooms, _events) = rooms(300, 0);
        let (old_tx, mut old_rx) = mpsc::unbounded_channel();
        let (other_tx, mut other_rx) = mpsc::unbounded_channel();
        rooms.join("r", info("PA_old", "ann"), old_tx).unwrap();
        rooms.join("r", info("PA_oth", "cat"), other_tx).unwrap();
        let (new_tx, _new_rx) = mpsc::unbounded_channel();
        let joined = rooms.join("r", info("PA_new", "ann"), new_tx).unwrap();
        assert_eq!(joined.others.len(), 1, "the newcomer sees only cat");
        let mut told_to_leave = false;
        while let Ok(msg) = old_rx.try_recv() {
            told_to_leave |= matches!(msg, SessionMsg::Leave(LeaveReason::DuplicateIdentity));
        }
        assert!(told_to_leave);
        let mut states = Vec::new();
        while let Ok(SessionMsg::Update(infos)) = other_rx.try_recv() {
            states.extend(infos.into_iter().map(|i| (i.sid, i.state)));
        }
        assert!(states.contains(&("PA_old".into(), State::Disconnected as i32)));
        assert!(states.iter().any(|(sid, _)| sid == "PA_new"));
        assert!(
            !rooms.leave("r", "PA_old"),
            "the evicted one is already gone"
        );
    }

    #[tokio::test]
    async fn a_full_room_refuses_newcomers_but_not_a_returning_identity() {
        let (rooms, _events) = rooms(300, 1);
        let (tx, _rx) = mpsc::unbounded_channel();
        rooms.join("r", info("PA_1", "ann"), tx.clone()).unwrap();
        assert_eq!(
            rooms.check_capacity("r", "bob"),
            Err(JoinRefused::Full {
                room: "r".into(),
                max: 1
            })
        );
        assert!(rooms.join("r", info("PA_2", "bob"), tx.clone()).is_err());
        assert!(rooms.check_capacity("r", "ann").is_ok());
        assert!(rooms.join("r", info("PA_3", "ann"), tx).is_ok());
    }

    #[tokio::test]
    async fn hidden_participants_are_not_announced() {
        let (rooms, _events) = rooms(300, 0);
        let (tx, mut rx) = mpsc::unbounded_channel();
        rooms.join("r", info("PA_1", "ann"), tx).unwrap();
        let mut hidden = info("PA_2", "recorder");
        hidden.permission = Some(proto::ParticipantPermission {
            hidden: true,
            ..Default::default()
        });
        let (htx, _hrx) = mpsc::unbounded_channel();
        let joined = rooms.join("r", hidden, htx).unwrap();
        assert_eq!(joined.others.len(), 1);
        assert!(
            rx.try_recv().is_err(),
            "ann hears nothing about the hidden one"
        );
        rooms.leave("r", "PA_2");
        assert!(rx.try_recv().is_err());
    }
}
