//! The registry side of admin operations: listing, room metadata and deletion, and acting
//! on one participant (remove, mute, change), plus routing server-originated data.

use std::sync::Arc;
use std::time::SystemTime;

use livekit_protocol as proto;
use proto::signal_response::Message as Resp;
use switchboard_sfu::ParticipantHandle;

use super::{announce, not_found, recipients, send_room_update, Rooms, SessionMsg};
use crate::admin::{AdminError, LiveRoom, ParticipantChange};
use crate::events::{LeaveReason, SignalEvent};
use crate::limits::{merge_attributes, SessionLimits};
use crate::outbox::Outbox;

impl Rooms {
    /// Every room, by name.
    pub fn live(&self) -> Vec<LiveRoom> {
        let rooms = self.lock();
        let mut live: Vec<LiveRoom> = rooms
            .iter()
            .map(|(name, state)| {
                LiveRoom::from_proto(Self::room_proto(name, state), state.created_at)
            })
            .collect();
        live.sort_by(|a, b| a.room_id.cmp(&b.room_id));
        live
    }

    pub fn live_room(&self, room: &str) -> Option<LiveRoom> {
        let rooms = self.lock();
        let state = rooms.get(room)?;
        Some(LiveRoom::from_proto(
            Self::room_proto(room, state),
            state.created_at,
        ))
    }

    /// Snapshots of every member, hidden ones included, in joining order.
    pub fn participants(&self, room: &str) -> Option<Vec<proto::ParticipantInfo>> {
        let rooms = self.lock();
        let mut infos: Vec<_> = rooms
            .get(room)?
            .members
            .values()
            .map(|m| m.info.clone())
            .collect();
        infos.sort_by(|a, b| (a.joined_at_ms, &a.identity).cmp(&(b.joined_at_ms, &b.identity)));
        Some(infos)
    }

    pub fn participant(&self, room: &str, identity: &str) -> Option<proto::ParticipantInfo> {
        let rooms = self.lock();
        Some(rooms.get(room)?.member_by_identity(identity)?.info.clone())
    }

    /// Replaces the room's metadata and sends every member a RoomUpdate.
    pub fn set_metadata(&self, room: &str, metadata: String) -> Result<proto::Room, AdminError> {
        let mut rooms = self.lock();
        let state = rooms.get_mut(room).ok_or_else(|| not_found(room))?;
        state.metadata = metadata;
        send_room_update(room, state);
        Ok(Self::room_proto(room, state))
    }

    /// Takes the room out of the registry and tells every member to leave (ROOM_DELETED).
    /// Joins are refused until [`Rooms::finish_delete`]. Returns the members' channels, which
    /// close once their sessions have recorded the leave.
    pub fn delete(&self, room: &str) -> Result<Vec<Outbox>, AdminError> {
        let mut rooms = self.lock();
        let state = rooms.remove(room).ok_or_else(|| not_found(room))?;
        self.deleting().insert(room.to_owned());
        Ok(state
            .members
            .into_values()
            .map(|member| {
                let _ = member.tx.send(SessionMsg::Leave(LeaveReason::RoomDeleted));
                member.tx
            })
            .collect())
    }

    /// Ends a deletion: records RoomFinished and lets the name be used again.
    pub fn finish_delete(&self, room: &str) {
        let _rooms = self.lock();
        self.deleting().remove(room);
        let _ = self.events.send(SignalEvent::RoomFinished {
            room_id: room.to_owned(),
            at: SystemTime::now(),
        });
    }

    /// Takes the room out of this node without finishing it: every member is told to leave
    /// for `reason` and nothing reports RoomFinished, since the room goes on elsewhere (its
    /// record is another node's now). Returns how many members were told.
    pub fn close_here(&self, room: &str, reason: LeaveReason) -> usize {
        let Some(state) = self.lock().remove(room) else {
            return 0;
        };
        for member in state.members.values() {
            let _ = member.tx.send(SessionMsg::Leave(reason));
        }
        state.members.len()
    }

    /// Ends one participant's session for `reason`; the others see it disconnected.
    pub fn remove(
        self: &Arc<Self>,
        room: &str,
        identity: &str,
        reason: LeaveReason,
    ) -> Result<(), AdminError> {
        let mut rooms = self.lock();
        let state = rooms.get_mut(room).ok_or_else(|| not_found(room))?;
        let sid = state.sid_of(room, identity)?;
        self.drop_member(room, state, &sid, Some(reason));
        Ok(())
    }

    /// Server-side mute: the media plane stops (or resumes) forwarding, the publisher is told
    /// with a Mute response, then everyone sees the new state.
    pub fn mute(
        &self,
        room: &str,
        identity: &str,
        track_sid: &str,
        muted: bool,
    ) -> Result<proto::TrackInfo, AdminError> {
        let mut rooms = self.lock();
        let state = rooms.get_mut(room).ok_or_else(|| not_found(room))?;
        let sid = state.sid_of(room, identity)?;
        let Some(member) = state.members.get_mut(&sid) else {
            return Err(not_found(room));
        };
        let Some(track) = member.info.tracks.iter_mut().find(|t| t.sid == track_sid) else {
            return Err(AdminError::TrackNotFound {
                room: room.to_owned(),
                identity: identity.to_owned(),
                track_sid: track_sid.to_owned(),
            });
        };
        track.muted = muted;
        let track = track.clone();
        if let Some(media) = &member.media {
            let _ = media.set_track_muted(track_sid.to_owned(), muted);
        }
        // Before the update: livekit-client reconciles its own mute state from updates of
        // itself and would otherwise undo the mute.
        let request = proto::MuteTrackRequest {
            sid: track_sid.to_owned(),
            muted,
        };
        let _ = member
            .tx
            .send(SessionMsg::Signal(Box::new(Resp::Mute(request))));
        member.info.version += 1;
        let info = member.info.clone();
        announce(state, &info);
        Ok(track)
    }

    /// Subscribes a participant to tracks of the room, or unsubscribes it, for it (RoomService
    /// UpdateSubscriptions). Tracks are named by sid; a sid that no one here publishes is an
    /// error, and nothing changes.
    pub fn subscribe_for(
        &self,
        room: &str,
        identity: &str,
        track_sids: Vec<String>,
        subscribe: bool,
    ) -> Result<(), AdminError> {
        let rooms = self.lock();
        let state = rooms.get(room).ok_or_else(|| not_found(room))?;
        let sid = state.sid_of(room, identity)?;
        if let Some(missing) = track_sids.iter().find(|t| {
            !state
                .members
                .values()
                .any(|m| m.info.tracks.iter().any(|track| track.sid == **t))
        }) {
            return Err(AdminError::NoSuchTrack {
                room: room.to_owned(),
                track_sid: missing.clone(),
            });
        }
        if let Some(media) = state.members.get(&sid).and_then(|m| m.media.as_ref()) {
            let _ = media.subscribe(track_sids, subscribe);
        }
        Ok(())
    }

    /// Applies an admin's change to a participant; everyone hears of it, the participant too.
    /// A change that would take it over `limits` is refused whole.
    pub fn change(
        &self,
        room: &str,
        identity: &str,
        change: ParticipantChange,
        limits: &SessionLimits,
    ) -> Result<proto::ParticipantInfo, AdminError> {
        let mut rooms = self.lock();
        let state = rooms.get_mut(room).ok_or_else(|| not_found(room))?;
        let sid = state.sid_of(room, identity)?;
        let Some(member) = state.members.get_mut(&sid) else {
            return Err(not_found(room));
        };
        let mut info = member.info.clone();
        if let Some(metadata) = change.metadata {
            limits.check_metadata(&metadata)?;
            info.metadata = metadata;
        }
        if let Some(name) = change.name {
            limits.check_name(&name)?;
            info.name = name;
        }
        if let Some(attributes) = change.attributes {
            merge_attributes(&mut info.attributes, attributes);
            limits.check_attributes(&info.attributes)?;
        }
        if let Some(permission) = change.permission {
            let _ = member.tx.send(SessionMsg::Permission(permission.clone()));
            info.permission = Some(permission);
        }
        info.version += 1;
        member.info = info.clone();
        announce(state, &info);
        Ok(info)
    }

    /// A media handle of the room's worker and the sids of `identities` (everyone when
    /// empty); `None` when no member has reached the media plane yet.
    pub fn data_route(
        &self,
        room: &str,
        identities: &[String],
    ) -> Result<Option<(ParticipantHandle, Vec<String>)>, AdminError> {
        let rooms = self.lock();
        let state = rooms.get(room).ok_or_else(|| not_found(room))?;
        let media = state.members.values().find_map(|m| m.media.clone());
        Ok(media.map(|media| (media, recipients(state, identities, ""))))
    }
}
