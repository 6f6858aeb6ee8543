//! Rooms through the API: create, update, delete, and the admin operations on the people in
//! them. The record is written first, then the live room is told.

use std::time::Duration;

use serde::Deserialize;
use switchboard_signaling::{ParticipantChange, PlacementRefused, Placing, RoomSettings};
use tracing::info;

use super::{new_id, now, Control, ControlError};
use crate::store::{NewRoom, RoomRecord, RoomSpec, RoomStatus, RoomUpdate};

/// How long a deleted room may take to be recorded closed by the signaling event loop.
const DELETE_SETTLE: Duration = Duration::from_secs(5);

/// The body of `POST /v1/rooms`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomOptions {
    /// A caller-chosen id (`[A-Za-z0-9_-]{1,64}`); `ro_<ULID>` when absent.
    #[serde(default)]
    pub room_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub metadata: Option<String>,
    #[serde(default)]
    pub empty_timeout_secs: Option<u32>,
    #[serde(default)]
    pub max_participants: Option<u32>,
    #[serde(default)]
    pub channel_id: Option<String>,
    #[serde(default)]
    pub guest_access: bool,
    /// Agents to dispatch when the room opens (Twirp `CreateRoom`'s `agents`; not part of
    /// the `/v1` API).
    #[serde(skip)]
    pub agents: Vec<switchboard_signaling::token::RoomAgentDispatch>,
}

impl Control {
    /// A room id is the LiveKit room name, under the one naming rule (signaling's names.rs).
    pub fn check_room_id(&self, room_id: &str) -> Result<(), ControlError> {
        self.signaling
            .names()
            .check_room(room_id)
            .map_err(|e| ControlError::BadRequest(e.to_string()))
    }

    /// A participant identity from the API (path, body), under the same rule as tokens'.
    pub fn check_identity(&self, identity: &str) -> Result<(), ControlError> {
        self.signaling
            .names()
            .check_identity(identity)
            .map_err(|e| ControlError::BadRequest(e.to_string()))
    }

    /// Makes a recorded room known to signaling, so its limits apply from the first join and
    /// it closes after its empty timeout if nobody comes. When that opened it, the record
    /// gets its `RM_` sid now (signaling's RoomStarted for it then changes nothing), so the
    /// caller sees the room as it is.
    async fn open_live(
        &self,
        room: RoomRecord,
        agents: Vec<switchboard_signaling::token::RoomAgentDispatch>,
    ) -> Result<RoomRecord, ControlError> {
        // The room opens here only if no other node serves it; one that does keeps it
        // (its record is the same from every node).
        match self
            .signaling
            .claim_room(&room.room_id, Placing::Here)
            .await
        {
            Ok(()) => {}
            Err(PlacementRefused::OwnedElsewhere { .. }) => return Ok(room),
            Err(
                refused
                @ (PlacementRefused::Unavailable { .. } | PlacementRefused::Draining { .. }),
            ) => {
                return Err(ControlError::Busy {
                    detail: refused.to_string(),
                    retry_after_secs: 5,
                })
            }
        }
        let ensured = self
            .signaling
            .ensure_room(
                &room.room_id,
                RoomSettings {
                    empty_timeout: Duration::from_secs(u64::from(room.empty_timeout_secs)),
                    max_participants: room.max_participants,
                    metadata: room.metadata.clone(),
                    agents,
                },
            )
            .map_err(ControlError::from)?;
        if !ensured.created && room.sid.is_some() {
            return Ok(room);
        }
        let started = self
            .store
            .room_started(&NewRoom {
                room_id: room.room_id.clone(),
                sid: ensured.room.sid.clone(),
                name: None,
                metadata: None,
                empty_timeout_secs: room.empty_timeout_secs,
                max_participants: room.max_participants,
                // The time signaling opened it, so its own RoomStarted for this room writes
                // exactly this again and the store records no second event.
                started_at: chrono::DateTime::from_timestamp_millis(ensured.room.creation_time_ms)
                    .unwrap_or_else(now),
                node_id: Some(self.node_id.clone()),
            })
            .await?;
        self.written();
        Ok(started)
    }

    /// Creates a room (or returns the existing one, `created = false`) and makes it known to
    /// signaling, so its limits apply from the first join.
    pub async fn create_room(
        &self,
        options: RoomOptions,
    ) -> Result<(RoomRecord, bool), ControlError> {
        let room_id = options.room_id.clone().unwrap_or_else(|| new_id("ro"));
        self.check_room_id(&room_id)?;
        if let Some(metadata) = &options.metadata {
            self.signaling.check_room_metadata(metadata)?;
        }
        if let Some(channel) = &options.channel_id {
            let ulid = channel.strip_prefix("ch_").map(ulid::Ulid::from_string);
            if !matches!(ulid, Some(Ok(_))) {
                return Err(ControlError::BadRequest(format!(
                    "channel id {channel:?} is not valid: expected ch_<ULID>"
                )));
            }
        }
        // Before the record is written, so a refused room leaves none behind.
        self.signaling.check_room_limit(&room_id)?;
        let spec = RoomSpec {
            room_id,
            name: options.name,
            metadata: options.metadata,
            empty_timeout_secs: options
                .empty_timeout_secs
                .unwrap_or(self.default_empty_timeout_secs),
            max_participants: options
                .max_participants
                .unwrap_or(self.default_max_participants),
            channel_id: options.channel_id,
            guest_access: options.guest_access,
            at: now(),
        };
        let (room, created) = self.store.create_room(&spec).await?;
        self.written();
        let room = self.open_live(room, options.agents).await?;
        Ok((room, created))
    }

    /// A host's backend asked for a token for `room_id`: the room exists (and is active)
    /// before the token is returned (seed 002's lazy creation).
    pub async fn ensure_room(&self, room_id: &str) -> Result<RoomRecord, ControlError> {
        let existing = self.store.get_room(room_id).await;
        match existing {
            Ok(room) if room.status == RoomStatus::Active => self.open_live(room, Vec::new()).await,
            Err(e) if !e.is_not_found() => Err(e.into()),
            Ok(_) | Err(_) => {
                let (room, _) = self
                    .create_room(RoomOptions {
                        room_id: Some(room_id.to_owned()),
                        ..Default::default()
                    })
                    .await?;
                Ok(room)
            }
        }
    }

    /// Updates a room's record and tells the people in it about new metadata.
    pub async fn update_room(
        &self,
        room_id: &str,
        update: RoomUpdate,
    ) -> Result<RoomRecord, ControlError> {
        if let Some(metadata) = &update.metadata {
            // Checked before the record is written, so a refused update changes nothing.
            self.signaling.check_room_metadata(metadata)?;
        }
        let metadata = update.metadata.clone();
        let limit = update.max_participants;
        let room = self.store.update_room(room_id, &update).await?;
        self.written();
        if let Some(metadata) = metadata {
            // Not live on this node (nobody joined yet): the record is all there is.
            let _ = self.signaling.update_room_metadata(room_id, metadata);
        }
        if limit.is_some() && self.signaling.live_room(room_id).is_some() {
            self.open_live(room.clone(), Vec::new()).await?;
        }
        Ok(room)
    }

    /// Closes a room: everyone in it is told to leave (ROOM_DELETED) and its open session
    /// ends.
    pub async fn delete_room(&self, room_id: &str) -> Result<(), ControlError> {
        let room = self.store.get_room(room_id).await?;
        if self.signaling.delete_room(room_id).await.is_ok() {
            // Signaling reported every leave and then RoomFinished, in that order, to the
            // event loop, which records them in that order: wait for it to get there, so the
            // log keeps the true order and the caller sees the room closed.
            let deadline = tokio::time::Instant::now() + DELETE_SETTLE;
            while tokio::time::Instant::now() < deadline {
                if self.store.get_room(room_id).await?.status == RoomStatus::Closed {
                    info!(room_id, "room deleted");
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Not open on this node (or the event loop is stuck): close the record here.
        self.close_open_session(&room.room_id, "room deleted")
            .await?;
        self.store
            .room_finished(&room.room_id, now(), "ROOM_DELETED")
            .await?;
        self.written();
        info!(room_id, "room deleted");
        Ok(())
    }

    /// Removes a participant; its current token can no longer join this room.
    pub async fn remove_participant(
        &self,
        room_id: &str,
        identity: &str,
    ) -> Result<(), ControlError> {
        self.check_room_id(room_id)?;
        self.check_identity(identity)?;
        let revoked_at = self
            .signaling
            .remove_participant(room_id, identity)
            .map_err(ControlError::from)?;
        // Other nodes hear of it at once (the store poll is the fallback).
        if let Some(bus) = self.revocation_bus.get() {
            crate::cluster::bus::announce(
                bus,
                crate::cluster::bus::Revoked {
                    room_id: room_id.to_owned(),
                    identity: identity.to_owned(),
                    at: revoked_at,
                },
            );
        }
        let revoked_at = chrono::DateTime::<chrono::Utc>::from_timestamp(revoked_at as i64, 0)
            .unwrap_or_else(now);
        self.store
            .revoke_identity(room_id, identity, revoked_at)
            .await?;
        Ok(())
    }

    /// Mutes or unmutes a published track of a participant.
    pub fn mute_track(
        &self,
        room_id: &str,
        identity: &str,
        track_sid: &str,
        muted: bool,
    ) -> Result<livekit_protocol::TrackInfo, ControlError> {
        self.check_room_id(room_id)?;
        self.check_identity(identity)?;
        self.signaling
            .mute_track(room_id, identity, track_sid, muted)
            .map_err(ControlError::from)
    }

    /// Subscribes a live participant to tracks, or unsubscribes it, on its behalf.
    pub fn update_subscriptions(
        &self,
        room_id: &str,
        identity: &str,
        track_sids: Vec<String>,
        subscribe: bool,
    ) -> Result<(), ControlError> {
        self.check_room_id(room_id)?;
        self.check_identity(identity)?;
        self.signaling
            .update_subscriptions(room_id, identity, track_sids, subscribe)
            .map_err(ControlError::from)
    }

    /// Changes a live participant's metadata, name, attributes or permissions.
    pub fn update_participant(
        &self,
        room_id: &str,
        identity: &str,
        change: ParticipantChange,
    ) -> Result<livekit_protocol::ParticipantInfo, ControlError> {
        self.check_room_id(room_id)?;
        self.check_identity(identity)?;
        self.signaling
            .update_participant(room_id, identity, change)
            .map_err(ControlError::from)
    }
}
