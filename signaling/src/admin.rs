//! Server-side administration of live rooms, as LiveKit's RoomService does it: what the HTTP
//! API calls to create, inspect, change and close rooms and to act on participants.
//!
//! Everything here acts on this node's registry and reaches clients through their signaling
//! sessions (RoomUpdate, Mute, ParticipantUpdate, LeaveRequest) or through the media plane's
//! data channels (server-originated DataPackets).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use livekit_protocol as proto;
use prost::Message as _;

use crate::events::LeaveReason;
use crate::limits::TooLarge;
use crate::names::NameRules;
use crate::token::{self, Claims, TokenError};
use crate::Signaling;

/// How long [`Signaling::delete_room`] waits for the sessions to record their leaves
/// before it records RoomFinished anyway.
const DELETE_GRACE: Duration = Duration::from_secs(5);

/// Limits and metadata of a room created through the API. A zero timeout or limit means
/// "the node's default" for a new room and "unchanged" for an existing one; `None` metadata
/// leaves it as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomSettings {
    /// How long the room stays open with nobody in it (before the first join too).
    pub empty_timeout: Duration,
    /// 0 = the node's default.
    pub max_participants: u32,
    pub metadata: Option<String>,
    /// The agents dispatched when this call opens the room (LiveKit's
    /// `CreateRoomRequest.agents`); none: an automatic agent, if a worker takes those.
    pub agents: Vec<crate::token::RoomAgentDispatch>,
}

/// What [`Signaling::ensure_room`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct EnsuredRoom {
    pub room: proto::Room,
    /// False when the room was already open (its settings were updated).
    pub created: bool,
}

/// A room open on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRoom {
    pub room_id: String,
    /// LiveKit's `RM_…` sid of this incarnation of the room.
    pub sid: String,
    pub metadata: String,
    /// Every participant, hidden ones included.
    pub num_participants: u32,
    pub num_publishers: u32,
    pub created_at: SystemTime,
    pub empty_timeout: Duration,
    pub max_participants: u32,
}

impl LiveRoom {
    pub(crate) fn from_proto(room: proto::Room, created_at: SystemTime) -> Self {
        LiveRoom {
            room_id: room.name,
            sid: room.sid,
            metadata: room.metadata,
            num_participants: room.num_participants,
            num_publishers: room.num_publishers,
            created_at,
            empty_timeout: Duration::from_secs(room.empty_timeout.into()),
            max_participants: room.max_participants,
        }
    }
}

/// An admin's change to a participant; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParticipantChange {
    pub metadata: Option<String>,
    pub name: Option<String>,
    /// Merged into the current attributes; an empty value deletes the key (LiveKit's rule).
    pub attributes: Option<HashMap<String, String>>,
    /// Replaces the permission; the session enforces it from then on.
    pub permission: Option<proto::ParticipantPermission>,
}

/// One speech-to-text segment to relay to a room as LiveKit's transcription packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TranscriptionSegmentOut {
    /// Whose speech this is.
    pub participant_identity: String,
    /// The transcribed track; `None` picks the participant's first audio track, if any
    /// (livekit-client attaches the segment to the publication with this sid).
    pub track_sid: Option<String>,
    pub segment_id: String,
    pub text: String,
    pub language: String,
    pub is_final: bool,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Why an admin operation could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("room {room:?} is not open on this server (it was never created, or it has closed)")]
    RoomNotFound { room: String },
    #[error("nobody with identity {identity:?} is connected to room {room:?}")]
    ParticipantNotFound { room: String, identity: String },
    #[error("{identity:?} publishes no track {track_sid:?} in room {room:?}")]
    TrackNotFound {
        room: String,
        identity: String,
        track_sid: String,
    },
    #[error("nobody publishes a track {track_sid:?} in room {room:?}")]
    NoSuchTrack { room: String, track_sid: String },
    #[error("room {room:?} is being deleted; try again in a moment")]
    RoomClosing { room: String },
    #[error("this server has its maximum of {max} rooms open (max_rooms); try again later")]
    TooManyRooms { max: u32 },
    #[error("the data packet is {size} bytes; at most {max} can be sent")]
    PayloadTooLarge { size: usize, max: usize },
    #[error("the room metadata is {size} bytes; at most {max} are allowed")]
    RoomMetadataTooLarge { size: usize, max: usize },
    /// A participant's metadata, name or attributes over their limits.
    #[error(transparent)]
    ParticipantTooLarge(#[from] TooLarge),
}

impl Signaling {
    /// Opens `room_id` before anyone joins (or updates its settings when it is open). It
    /// closes after its empty timeout if nobody comes, with a RoomFinished event. A room it
    /// creates is reported with RoomStarted (its `RM_` sid), as a first join would. Call it
    /// inside the Tokio runtime (it starts the close timer).
    pub fn ensure_room(
        self: &Arc<Self>,
        room_id: &str,
        settings: RoomSettings,
    ) -> Result<EnsuredRoom, AdminError> {
        if let Some(metadata) = &settings.metadata {
            self.check_room_metadata(metadata)?;
        }
        let agents = settings.agents.clone();
        let (room, created) = self.rooms.ensure(room_id, settings)?;
        if created {
            // A room opened through the API starts here, not at its first join.
            crate::agents::room_started(self, &room, &agents);
        }
        Ok(EnsuredRoom { room, created })
    }

    /// Rooms this node may have open at once (`max_rooms`); 0 = no limit. A join, WHIP
    /// publish or admin call that would open one more is refused.
    pub fn set_max_rooms(&self, max: u32) {
        self.rooms.set_max_rooms(max);
    }

    /// Refused when `room_id` is not open and the node has `max_rooms` open: checked before
    /// a room's record is written, so a refused creation leaves nothing behind.
    pub fn check_room_limit(&self, room_id: &str) -> Result<(), AdminError> {
        self.rooms
            .check_room_limit(room_id)
            .map_err(|_| AdminError::TooManyRooms {
                max: self.rooms.max_rooms(),
            })
    }

    /// Every room open on this node, by name.
    pub fn live_rooms(&self) -> Vec<LiveRoom> {
        self.rooms.live()
    }

    pub fn live_room(&self, room_id: &str) -> Option<LiveRoom> {
        self.rooms.live_room(room_id)
    }

    /// Current snapshots of the room's participants, hidden ones included; `None` when the
    /// room is not open.
    pub fn participants(&self, room_id: &str) -> Option<Vec<proto::ParticipantInfo>> {
        self.rooms.participants(room_id)
    }

    pub fn participant(&self, room_id: &str, identity: &str) -> Option<proto::ParticipantInfo> {
        self.rooms.participant(room_id, identity)
    }

    /// Replaces the room's metadata; every participant gets a RoomUpdate.
    pub fn update_room_metadata(
        &self,
        room_id: &str,
        metadata: String,
    ) -> Result<proto::Room, AdminError> {
        self.check_room_metadata(&metadata)?;
        self.rooms.set_metadata(room_id, metadata)
    }

    /// Refuses room metadata over `max_room_metadata_bytes` (for callers that record it
    /// before it reaches the live room).
    pub fn check_room_metadata(&self, metadata: &str) -> Result<(), AdminError> {
        let max = self.limits.max_room_metadata_bytes;
        if metadata.len() > max {
            return Err(AdminError::RoomMetadataTooLarge {
                size: metadata.len(),
                max,
            });
        }
        Ok(())
    }

    /// Closes the room now: every participant gets LeaveRequest{ROOM_DELETED, DISCONNECT}.
    /// Returns once their leaves are recorded (at most a few seconds) and RoomFinished is
    /// emitted; joins to the room are refused meanwhile.
    pub async fn delete_room(&self, room_id: &str) -> Result<(), AdminError> {
        let members = self.rooms.delete(room_id)?;
        let _ = tokio::time::timeout(DELETE_GRACE, async {
            for member in &members {
                member.closed().await;
            }
        })
        .await;
        self.rooms.finish_delete(room_id);
        Ok(())
    }

    /// Closes the room on this node only, because another node owns it now (its lease was
    /// lost): participants get LeaveRequest{MIGRATION, RECONNECT} (livekit-client rejoins),
    /// their leaves are recorded as `room_lease_lost`, the media plane drops the room as
    /// they go, and no RoomFinished is reported (the room's record is the new owner's).
    /// Returns how many participants were told.
    pub fn close_room_moved(&self, room_id: &str) -> usize {
        self.rooms.close_here(room_id, LeaveReason::LeaseLost)
    }

    /// Disconnects the participant (LeaveRequest PARTICIPANT_REMOVED) and revokes the tokens
    /// it holds: any token for this room and identity issued at or before the returned time
    /// (Unix seconds) is refused from now on. Persist that time and feed it back through
    /// [`Signaling::revoke`] after a restart.
    pub fn remove_participant(&self, room_id: &str, identity: &str) -> Result<u64, AdminError> {
        if self.rooms.participant(room_id, identity).is_none() {
            return Err(match self.rooms.live_room(room_id) {
                None => AdminError::RoomNotFound {
                    room: room_id.to_owned(),
                },
                Some(_) => AdminError::ParticipantNotFound {
                    room: room_id.to_owned(),
                    identity: identity.to_owned(),
                },
            });
        }
        // Revoke first, so that the removed client cannot rejoin in between.
        let at = token::now_secs();
        self.revoke(room_id, identity, at);
        match self
            .rooms
            .remove(room_id, identity, LeaveReason::ParticipantRemoved)
        {
            // It left on its own meanwhile: the revocation still stands.
            Ok(()) | Err(AdminError::ParticipantNotFound { .. }) => Ok(at),
            Err(e) => Err(e),
        }
    }

    /// Refuses joins to `room_id` as `identity` with tokens issued (`iat`, else `nbf`) at or
    /// before `at_unix_secs`, and tokens that say neither. Keeps the latest time given.
    pub fn revoke(&self, room_id: &str, identity: &str, at_unix_secs: u64) {
        self.revocations.revoke(room_id, identity, at_unix_secs);
    }

    /// The one check of a token for every surface (`/rtc`, `/rtc/validate`, WHIP/WHEP, the
    /// `/v1` API, Twirp): signature, time, the naming rule for its room and identity, and the
    /// revocations. Grants are the caller's to check ([`Signaling::verify_join`] for joins).
    ///
    /// A revoked token is refused as a whole, whatever it is used for: its `room` and `sub`
    /// say whose it is. Tokens bound to no room or no identity (a backend's `roomCreate` or
    /// `roomList` token) are never revoked by removing a participant.
    pub fn verify(&self, raw_token: &str) -> Result<Claims, TokenError> {
        let claims = token::verify(raw_token, &self.keys)?;
        if !claims.video.room.is_empty() {
            self.names.check_room(&claims.video.room)?;
        }
        if !claims.sub.is_empty() {
            self.names.check_identity(&claims.sub)?;
        }
        if self.revocations.refuses(&claims) {
            return Err(TokenError::Revoked {
                room: claims.video.room,
            });
        }
        Ok(claims)
    }

    /// [`Signaling::verify`], then the grants a join needs: `roomJoin`, a room, an identity.
    pub fn verify_join(&self, raw_token: &str) -> Result<Claims, TokenError> {
        crate::token::require_join_grants(self.verify(raw_token)?)
    }

    /// The naming rule for room names and identities, with this node's limits.
    pub fn names(&self) -> NameRules {
        self.names
    }

    /// Mutes or unmutes a published track from the server: the media plane stops (resumes)
    /// forwarding it, the publisher's client is told to mute it locally, and everyone sees
    /// the new state. Returns the track as it is now.
    pub fn mute_track(
        &self,
        room_id: &str,
        identity: &str,
        track_sid: &str,
        muted: bool,
    ) -> Result<proto::TrackInfo, AdminError> {
        self.rooms.mute(room_id, identity, track_sid, muted)
    }

    /// Subscribes `identity` to the tracks `track_sids`, or unsubscribes it, on its behalf.
    pub fn update_subscriptions(
        &self,
        room_id: &str,
        identity: &str,
        track_sids: Vec<String>,
        subscribe: bool,
    ) -> Result<(), AdminError> {
        self.rooms
            .subscribe_for(room_id, identity, track_sids, subscribe)
    }

    /// Changes a participant's metadata, name, attributes or permission. Everyone is told,
    /// the participant too (livekit-client applies it to its local participant).
    pub fn update_participant(
        &self,
        room_id: &str,
        identity: &str,
        change: ParticipantChange,
    ) -> Result<proto::ParticipantInfo, AdminError> {
        self.rooms.change(room_id, identity, change, &self.limits)
    }

    /// Sends a user DataPacket from the server (no sender identity) to everyone in the room,
    /// or to `destination_identities` only.
    pub fn send_data(
        &self,
        room_id: &str,
        payload: Vec<u8>,
        reliable: bool,
        topic: Option<String>,
        destination_identities: Vec<String>,
    ) -> Result<(), AdminError> {
        let kind = if reliable {
            proto::data_packet::Kind::Reliable
        } else {
            proto::data_packet::Kind::Lossy
        };
        // `kind` and the UserPacket's destinations are deprecated upstream but still read by
        // older clients; LiveKit's SendData fills them the same way.
        #[allow(deprecated)]
        let packet = proto::DataPacket {
            kind: kind as i32,
            destination_identities: destination_identities.clone(),
            value: Some(proto::data_packet::Value::User(proto::UserPacket {
                payload,
                topic,
                destination_identities: destination_identities.clone(),
                ..Default::default()
            })),
            ..Default::default()
        };
        self.deliver(room_id, &destination_identities, reliable, &packet)
    }

    /// Relays a transcription segment to everyone in the room as LiveKit's Transcription
    /// packet, on the reliable channel; livekit-client raises TranscriptionReceived.
    pub fn send_transcription(
        &self,
        room_id: &str,
        segment: TranscriptionSegmentOut,
    ) -> Result<(), AdminError> {
        let track_id = segment.track_sid.unwrap_or_else(|| {
            self.rooms
                .participant(room_id, &segment.participant_identity)
                .and_then(|p| {
                    p.tracks
                        .into_iter()
                        .find(|t| t.r#type == proto::TrackType::Audio as i32)
                        .map(|t| t.sid)
                })
                .unwrap_or_default()
        });
        let packet = proto::DataPacket {
            value: Some(proto::data_packet::Value::Transcription(
                proto::Transcription {
                    transcribed_participant_identity: segment.participant_identity,
                    track_id,
                    segments: vec![proto::TranscriptionSegment {
                        id: segment.segment_id,
                        text: segment.text,
                        start_time: segment.start_ms,
                        end_time: segment.end_ms,
                        r#final: segment.is_final,
                        language: segment.language,
                    }],
                },
            )),
            ..Default::default()
        };
        self.deliver(room_id, &[], true, &packet)
    }

    fn deliver(
        &self,
        room_id: &str,
        identities: &[String],
        reliable: bool,
        packet: &proto::DataPacket,
    ) -> Result<(), AdminError> {
        let bytes = packet.encode_to_vec();
        let max = self.limits.max_data_packet_bytes;
        if bytes.len() > max {
            return Err(AdminError::PayloadTooLarge {
                size: bytes.len(),
                max,
            });
        }
        // Nobody has reached the media plane yet: nobody could receive it.
        let Some((media, to)) = self.rooms.data_route(room_id, identities)? else {
            return Ok(());
        };
        if !to.is_empty() {
            let _ = media.send_data(to, reliable, Arc::from(bytes));
        }
        Ok(())
    }
}
