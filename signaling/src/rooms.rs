//! The signaling view of rooms: who is in each room, what they publish, and fan-out of
//! participant updates. Not on the media path: a mutex here costs nothing per packet.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livekit_protocol as proto;
use proto::signal_response::Message as Resp;
use switchboard_sfu::ParticipantHandle;
use tokio::sync::mpsc;

use crate::admin::{AdminError, RoomSettings};
use crate::events::{LeaveReason, SignalEvent};
use crate::frame::SharedFrame;
use crate::ids;
use crate::outbox::Outbox;

/// A message from the room to one participant's session task.
#[derive(Debug, Clone)]
pub(crate) enum SessionMsg {
    /// Participants whose state changed (full snapshots): a ParticipantUpdate encoded once
    /// for every member it goes to.
    Update(SharedFrame),
    /// Another response encoded once for every member it goes to (RoomUpdate).
    Broadcast(SharedFrame),
    /// A response for this session only, sent as it is (Mute).
    Signal(Box<Resp>),
    /// An admin changed this participant's permissions: enforce them from now on.
    Permission(proto::ParticipantPermission),
    /// The server ends this participant's session.
    Leave(LeaveReason),
}

struct Member {
    info: proto::ParticipantInfo,
    tx: Outbox,
    /// Set once the media plane took the participant (admin mute, server-sent data).
    media: Option<ParticipantHandle>,
    /// The room's host (roomAdmin or role=host): the main publisher WHEP viewers watch.
    host: bool,
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
    /// The participant and publisher counts the members were last told (RoomUpdate), and
    /// whether a RoomUpdate with newer ones is on its way.
    counts_sent: (u32, u32),
    counts_due: bool,
}

impl RoomState {
    /// Participants and publishers, hidden ones (recorders, agents that asked) left out as
    /// everywhere else the room is shown.
    fn counts(&self) -> (u32, u32) {
        let visible = self.members.values().filter(|m| !is_hidden(&m.info));
        let (mut participants, mut publishers) = (0, 0);
        for member in visible {
            participants += 1;
            publishers += u32::from(member.info.is_publisher);
        }
        (participants, publishers)
    }

    fn member_by_identity(&self, identity: &str) -> Option<&Member> {
        self.members.values().find(|m| m.info.identity == identity)
    }

    fn sid_of(&self, room: &str, identity: &str) -> Result<String, AdminError> {
        self.member_by_identity(identity)
            .map(|m| m.info.sid.clone())
            .ok_or_else(|| AdminError::ParticipantNotFound {
                room: room.to_owned(),
                identity: identity.to_owned(),
            })
    }
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
    #[error("room {room} is being deleted; try again in a moment")]
    Deleting { room: String },
    #[error("this server has its maximum of {max} rooms open (max_rooms); try again later")]
    TooManyRooms { max: u32 },
}

pub(crate) struct Joined {
    pub room: proto::Room,
    pub others: Vec<proto::ParticipantInfo>,
    /// This join opened the room (its agents are dispatched now).
    pub started: bool,
}

/// Participant counts reach a room's members at most this often (RoomUpdate).
const COUNTS_INTERVAL: Duration = Duration::from_secs(2);

/// Every room this node hosts.
pub(crate) struct Rooms {
    inner: Mutex<HashMap<String, RoomState>>,
    /// Rooms deleted by an admin whose participants are still leaving; joins wait for the
    /// RoomFinished so that events stay in order. Always locked after `inner`.
    deleting: Mutex<HashSet<String>>,
    defaults: RoomDefaults,
    events: mpsc::UnboundedSender<SignalEvent>,
    /// Rooms this node may have open at once; 0 = no limit (set by the binary).
    max_rooms: AtomicU32,
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn not_found(room: &str) -> AdminError {
    AdminError::RoomNotFound {
        room: room.to_owned(),
    }
}

impl Rooms {
    pub fn new(defaults: RoomDefaults, events: mpsc::UnboundedSender<SignalEvent>) -> Self {
        Self {
            inner: Mutex::new(HashMap::new()),
            deleting: Mutex::new(HashSet::new()),
            defaults,
            events,
            max_rooms: AtomicU32::new(0),
        }
    }

    pub fn set_max_rooms(&self, max: u32) {
        self.max_rooms.store(max, Ordering::Relaxed);
    }

    pub fn max_rooms(&self) -> u32 {
        self.max_rooms.load(Ordering::Relaxed)
    }

    /// `Some(max)` when opening `room` would pass `max_rooms` (it is not open yet and the
    /// node is full).
    fn over_room_limit(&self, rooms: &HashMap<String, RoomState>, room: &str) -> Option<u32> {
        let max = self.max_rooms.load(Ordering::Relaxed);
        (max > 0 && !rooms.contains_key(room) && rooms.len() >= max as usize).then_some(max)
    }

    /// Would `room` open (or is it open already)?
    pub fn check_room_limit(&self, room: &str) -> Result<(), JoinRefused> {
        match self.over_room_limit(&self.lock(), room) {
            Some(max) => Err(JoinRefused::TooManyRooms { max }),
            None => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, RoomState>> {
        // A panic while holding this lock leaves plain data behind, still consistent
        // enough to serve the remaining participants.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deleting(&self) -> MutexGuard<'_, HashSet<String>> {
        self.deleting.lock().unwrap_or_else(|e| e.into_inner())
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

    /// The room as its members are shown it: hidden participants not counted (the
    /// server APIs count everyone).
    fn room_for_members(name: &str, room: &RoomState) -> proto::Room {
        let (num_participants, num_publishers) = room.counts();
        proto::Room {
            num_participants,
            num_publishers,
            ..Self::room_proto(name, room)
        }
    }

    fn new_state(&self, empty_timeout: Duration, max: u32, metadata: String) -> RoomState {
        RoomState {
            sid: ids::room_sid(),
            created_at: SystemTime::now(),
            empty_timeout,
            max_participants: max,
            metadata,
            members: HashMap::new(),
            generation: 0,
            counts_sent: (0, 0),
            counts_due: false,
        }
    }

    /// Whether `room` is open on this node.
    pub fn is_open(&self, room: &str) -> bool {
        self.lock().contains_key(room)
    }

    /// True when a participant could join `room` right now (used before the WebSocket
    /// upgrade so a full room is refused with a readable error).
    pub fn check_capacity(&self, room: &str, identity: &str) -> Result<(), JoinRefused> {
        let rooms = self.lock();
        if self.deleting().contains(room) {
            return Err(JoinRefused::Deleting {
                room: room.to_owned(),
            });
        }
        if let Some(max) = self.over_room_limit(&rooms, room) {
            return Err(JoinRefused::TooManyRooms { max });
        }
        let Some(state) = rooms.get(room) else {
            return Ok(());
        };
        let replacing = state.member_by_identity(identity).is_some();
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
        self: &Arc<Self>,
        room: &str,
        info: proto::ParticipantInfo,
        tx: Outbox,
    ) -> Result<Joined, JoinRefused> {
        let mut rooms = self.lock();
        if self.deleting().contains(room) {
            return Err(JoinRefused::Deleting {
                room: room.to_owned(),
            });
        }
        if let Some(max) = self.over_room_limit(&rooms, room) {
            return Err(JoinRefused::TooManyRooms { max });
        }
        let started = !rooms.contains_key(room);
        let state = rooms.entry(room.to_owned()).or_insert_with(|| {
            let defaults = self.defaults;
            let state = self.new_state(
                defaults.empty_timeout,
                defaults.max_participants,
                String::new(),
            );
            let _ = self.events.send(SignalEvent::RoomStarted {
                room_id: room.to_owned(),
                sid: state.sid.clone(),
                empty_timeout_secs: state.empty_timeout.as_secs() as u32,
                max_participants: state.max_participants,
                at: state.created_at,
            });
            state
        });
        let duplicate = state
            .member_by_identity(&info.identity)
            .map(|m| m.info.sid.clone());
        if let Some(old) = duplicate {
            if let Some(member) = state.members.remove(&old) {
                let _ = member
                    .tx
                    .send(SessionMsg::Leave(LeaveReason::DuplicateIdentity));
                let mut gone = member.info;
                gone.state = proto::participant_info::State::Disconnected as i32;
                gone.version += 1;
                broadcast(state, &gone);
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
            broadcast(state, &info);
        }
        let member = Member {
            info,
            tx,
            media: None,
            host: false,
        };
        state.members.insert(member.info.sid.clone(), member);
        if state.members.len() == 1 {
            // A first member learns the counts from its JoinResponse.
            state.counts_sent = state.counts();
        }
        self.counts_changed(room, state);
        Ok(Joined {
            room: Self::room_for_members(room, state),
            others,
            started,
        })
    }

    /// Creates `room` with `settings` if it does not exist (emitting RoomStarted with its
    /// sid, as a first join would) and closes it after its empty timeout unless someone joins. On an existing room,
    /// non-zero limits and a given metadata replace the current ones (LiveKit's CreateRoom).
    /// Returns the room and whether it was created.
    pub fn ensure(
        self: &Arc<Self>,
        room: &str,
        settings: RoomSettings,
    ) -> Result<(proto::Room, bool), AdminError> {
        let mut rooms = self.lock();
        if self.deleting().contains(room) {
            return Err(AdminError::RoomClosing {
                room: room.to_owned(),
            });
        }
        if let Some(max) = self.over_room_limit(&rooms, room) {
            return Err(AdminError::TooManyRooms { max });
        }
        let created = !rooms.contains_key(room);
        if created {
            let or_default = |t: Duration| if t.is_zero() { None } else { Some(t) };
            let timeout = or_default(settings.empty_timeout).unwrap_or(self.defaults.empty_timeout);
            let max = match settings.max_participants {
                0 => self.defaults.max_participants,
                max => max,
            };
            let metadata = settings.metadata.clone().unwrap_or_default();
            let state = self.new_state(timeout, max, metadata);
            let _ = self.events.send(SignalEvent::RoomStarted {
                room_id: room.to_owned(),
                sid: state.sid.clone(),
                empty_timeout_secs: timeout.as_secs() as u32,
                max_participants: max,
                at: state.created_at,
            });
            rooms.insert(room.to_owned(), state);
        }
        let Some(state) = rooms.get_mut(room) else {
            return Err(not_found(room));
        };
        if !created {
            if !settings.empty_timeout.is_zero() {
                state.empty_timeout = settings.empty_timeout;
            }
            if settings.max_participants > 0 {
                state.max_participants = settings.max_participants;
            }
            if let Some(metadata) = settings.metadata.filter(|m| *m != state.metadata) {
                state.metadata = metadata;
                send_room_update(room, state);
            }
        }
        if state.members.is_empty() {
            // (Re)start the close timer with the room's current timeout.
            state.generation += 1;
            self.schedule_close(room, state);
        }
        Ok((Self::room_proto(room, state), created))
    }

    /// Remembers the media handle of a member that the media plane has taken.
    pub fn attach_media(&self, room: &str, sid: &str, media: ParticipantHandle) {
        let mut rooms = self.lock();
        if let Some(member) = rooms.get_mut(room).and_then(|s| s.members.get_mut(sid)) {
            member.media = Some(media);
        }
    }

    /// Changes a participant's info, bumps its version and tells everyone (a hidden one only
    /// hears about itself). Returns the new snapshot, or `None` if it is no longer in the room.
    pub fn update(
        self: &Arc<Self>,
        room: &str,
        sid: &str,
        change: impl FnOnce(&mut proto::ParticipantInfo),
    ) -> Option<proto::ParticipantInfo> {
        self.try_update(room, sid, |info| {
            change(info);
            Ok::<(), std::convert::Infallible>(())
        })
        .and_then(Result::ok)
    }

    /// Like [`Rooms::update`], for a change that may refuse (a limit): then nothing changes
    /// and nobody is told. `None` if the participant is no longer in the room.
    pub fn try_update<E>(
        self: &Arc<Self>,
        room: &str,
        sid: &str,
        change: impl FnOnce(&mut proto::ParticipantInfo) -> Result<(), E>,
    ) -> Option<Result<proto::ParticipantInfo, E>> {
        let mut rooms = self.lock();
        let state = rooms.get_mut(room)?;
        let member = state.members.get_mut(sid)?;
        let mut info = member.info.clone();
        if let Err(e) = change(&mut info) {
            return Some(Err(e));
        }
        info.version += 1;
        member.info = info.clone();
        announce(state, &info);
        self.counts_changed(room, state);
        Some(Ok(info))
    }

    /// Marks a member as the room's host.
    pub fn mark_host(&self, room: &str, sid: &str) {
        let mut rooms = self.lock();
        if let Some(member) = rooms.get_mut(room).and_then(|s| s.members.get_mut(sid)) {
            member.host = true;
        }
    }

    /// The publisher a viewer watches: `preferred` (an identity) when it is in the room,
    /// else the host if it publishes, else the earliest publisher to have joined. Returns
    /// its sid.
    pub fn main_publisher(&self, room: &str, preferred: Option<&str>) -> Option<String> {
        let rooms = self.lock();
        let state = rooms.get(room)?;
        if let Some(identity) = preferred {
            return state
                .member_by_identity(identity)
                .map(|m| m.info.sid.clone());
        }
        state
            .members
            .values()
            .filter(|m| !m.info.tracks.is_empty())
            .min_by_key(|m| (!m.host, m.info.joined_at_ms, m.info.sid.clone()))
            .map(|m| m.info.sid.clone())
    }

    /// Resolves identities to sids of current members (for addressed data messages).
    pub fn sids_for(&self, room: &str, identities: &[String], exclude: &str) -> Vec<String> {
        let rooms = self.lock();
        let Some(state) = rooms.get(room) else {
            return Vec::new();
        };
        recipients(state, identities, exclude)
    }

    /// Removes a participant if it is still a member; tells the others it disconnected and
    /// schedules the room's close when it became empty. Returns false when it was already
    /// gone (evicted by a newer connection, or removed by an admin).
    pub fn leave(self: &Arc<Self>, room: &str, sid: &str) -> bool {
        let mut rooms = self.lock();
        let Some(state) = rooms.get_mut(room) else {
            return false;
        };
        self.drop_member(room, state, sid, None)
    }

    /// Takes `sid` out of `state`: its session is told to leave when `reason` is given,
    /// the others see it disconnected, and an emptied room starts its close timer.
    fn drop_member(
        self: &Arc<Self>,
        room: &str,
        state: &mut RoomState,
        sid: &str,
        reason: Option<LeaveReason>,
    ) -> bool {
        let Some(member) = state.members.remove(sid) else {
            return false;
        };
        let mut gone = member.info;
        if let Some(reason) = reason {
            let _ = member.tx.send(SessionMsg::Leave(reason));
            gone.disconnect_reason = reason.to_proto() as i32;
        }
        gone.state = proto::participant_info::State::Disconnected as i32;
        gone.version += 1;
        if !is_hidden(&gone) {
            broadcast(state, &gone);
        }
        if state.members.is_empty() {
            state.generation += 1;
            self.schedule_close(room, state);
        } else {
            self.counts_changed(room, state);
        }
        true
    }

    /// The room's counts changed: its members get a RoomUpdate with them once
    /// [`COUNTS_INTERVAL`] has passed, with whatever changed meanwhile (LiveKit batches these
    /// too). A join thus costs each member one ParticipantUpdate, not also a RoomUpdate.
    fn counts_changed(self: &Arc<Self>, room: &str, state: &mut RoomState) {
        if state.counts_due || state.counts() == state.counts_sent {
            return;
        }
        state.counts_due = true;
        let (rooms, room, sid) = (Arc::clone(self), room.to_owned(), state.sid.clone());
        tokio::spawn(async move {
            tokio::time::sleep(COUNTS_INTERVAL).await;
            let mut all = rooms.lock();
            let Some(state) = all.get_mut(&room).filter(|s| s.sid == sid) else {
                return;
            };
            state.counts_due = false;
            if state.counts() != state.counts_sent {
                send_room_update(&room, state);
            }
        });
    }

    fn schedule_close(self: &Arc<Self>, room: &str, state: &RoomState) {
        let (sid, generation, timeout) = (state.sid.clone(), state.generation, state.empty_timeout);
        let rooms = Arc::clone(self);
        let room = room.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            rooms.close_if_still_empty(&room, &sid, generation);
        });
    }

    fn close_if_still_empty(&self, room: &str, sid: &str, generation: u64) {
        let mut rooms = self.lock();
        // The sid tells a recreated room of the same name from the one this timer was for.
        let still_empty = rooms
            .get(room)
            .is_some_and(|s| s.members.is_empty() && s.sid == sid && s.generation == generation);
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

fn recipients(state: &RoomState, identities: &[String], exclude: &str) -> Vec<String> {
    state
        .members
        .values()
        .filter(|m| m.info.sid != exclude)
        .filter(|m| identities.is_empty() || identities.contains(&m.info.identity))
        .map(|m| m.info.sid.clone())
        .collect()
}

/// Tells every member about `info`: one encoding, queued to each session where it replaces
/// an unsent older snapshot of the same participant.
fn broadcast(state: &RoomState, info: &proto::ParticipantInfo) {
    // The first join and the last leave tell nobody: no need to encode for them.
    if state.members.is_empty() {
        return;
    }
    let frame = update_frame(vec![info.clone()]);
    for member in state.members.values() {
        let _ = member.tx.update(&info.sid, frame.clone());
    }
}

fn update_frame(participants: Vec<proto::ParticipantInfo>) -> SharedFrame {
    SharedFrame::encode(Resp::Update(proto::ParticipantUpdate { participants }))
}

/// Tells the room about a changed participant: everyone, or only itself when it is hidden
/// (as LiveKit does).
fn announce(state: &RoomState, info: &proto::ParticipantInfo) {
    if !is_hidden(info) {
        broadcast(state, info);
    } else if let Some(member) = state.members.get(&info.sid) {
        let _ = member
            .tx
            .update(&info.sid, update_frame(vec![info.clone()]));
    }
}

/// Sends every member a RoomUpdate (as they are shown the room).
fn send_room_update(room: &str, state: &mut RoomState) {
    let info = Rooms::room_for_members(room, state);
    state.counts_sent = (info.num_participants, info.num_publishers);
    if state.members.is_empty() {
        return;
    }
    let frame = SharedFrame::encode(Resp::RoomUpdate(proto::RoomUpdate { room: Some(info) }));
    for member in state.members.values() {
        let _ = member.tx.room_update(frame.clone());
    }
}

mod admin;

#[cfg(test)]
mod tests;
