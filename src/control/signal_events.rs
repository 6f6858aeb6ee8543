//! Turning what signaling reports into records and moving sessions along when a host joins.
//! The recorder (`recorder.rs`) calls this for each event, in order.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use switchboard_signaling::SignalEvent;

use super::state::Trigger;
use super::{new_id, Control, ControlError};
use crate::store::{
    NewRoom, NewSession, ParticipantJoin, ParticipantLeave, ParticipantRole, ParticipantSummary,
    SessionState, TrackEvent,
};

fn utc(at: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(at)
}

impl Control {
    /// Records one signaling event.
    pub async fn apply_signal_event(&self, event: &SignalEvent) -> Result<(), ControlError> {
        match event {
            SignalEvent::RoomStarted {
                room_id,
                sid,
                empty_timeout_secs,
                max_participants,
                at,
            } => {
                // A room opened through the API was recorded with this sid already.
                let known = self.store.get_room(room_id).await.ok();
                if known.is_some_and(|r| r.sid.as_deref() == Some(sid.as_str())) {
                    return Ok(());
                }
                self.store
                    .room_started(&NewRoom {
                        room_id: room_id.clone(),
                        sid: sid.clone(),
                        name: None,
                        metadata: None,
                        empty_timeout_secs: *empty_timeout_secs,
                        max_participants: *max_participants,
                        started_at: utc(*at),
                        node_id: Some(self.node_id.clone()),
                    })
                    .await?;
            }
            SignalEvent::RoomFinished { room_id, at } => {
                self.close_open_session(room_id, "room closed").await?;
                self.store
                    .room_finished(room_id, utc(*at), "ROOM_CLOSED")
                    .await?;
                // The room is free for any node now, unless a join opened it here again since
                // (events are recorded after the fact). If this fails, the lease runs out.
                if !self.signaling.room_is_open(room_id) {
                    if let Err(e) = self.store.release_room_lease(room_id, &self.node_id).await {
                        tracing::warn!(room = %room_id, "releasing the room's lease failed: {e}");
                    }
                }
            }
            SignalEvent::ParticipantJoined {
                room_id,
                sid,
                identity,
                name,
                metadata,
                host,
                at,
                ..
            } => {
                let at = utc(*at);
                let session_id = if *host {
                    Some(self.host_joined(room_id, identity, at).await?)
                } else {
                    self.store
                        .open_session(room_id)
                        .await?
                        .map(|s| s.session_id)
                };
                self.store
                    .participant_joined(&ParticipantJoin {
                        room_id: room_id.clone(),
                        session_id,
                        sid: sid.clone(),
                        identity: identity.clone(),
                        name: name.clone(),
                        role: Some(if *host {
                            ParticipantRole::Host
                        } else {
                            ParticipantRole::Guest
                        }),
                        metadata: (!metadata.is_empty()).then(|| metadata.clone()),
                        joined_at: at,
                        node_id: Some(self.node_id.clone()),
                    })
                    .await?;
            }
            SignalEvent::ParticipantLeft {
                sid,
                reason,
                stats,
                at,
                ..
            } => {
                self.store
                    .participant_left(
                        sid,
                        &ParticipantLeave {
                            left_at: utc(*at),
                            reason: reason.as_str().to_owned(),
                            summary: ParticipantSummary {
                                bytes_in: stats.bytes_in,
                                bytes_out: stats.bytes_out,
                                packets_in: stats.packets_in,
                                packets_out: stats.packets_out,
                                packets_lost: stats.packets_lost,
                                rtt_ms: stats.rtt_ms,
                            },
                        },
                    )
                    .await?;
            }
            SignalEvent::TrackPublished {
                room_id,
                participant_sid,
                identity,
                track_sid,
                kind,
                source,
                at,
            } => {
                self.store
                    .record_track(&TrackEvent {
                        room_id: room_id.clone(),
                        participant_sid: participant_sid.clone(),
                        identity: identity.clone(),
                        track_sid: track_sid.clone(),
                        kind: (*kind).to_owned(),
                        source: source.clone(),
                        published: true,
                        at: utc(*at),
                    })
                    .await?;
            }
            SignalEvent::TrackUnpublished {
                room_id,
                participant_sid,
                identity,
                track_sid,
                at,
            } => {
                self.store
                    .record_track(&TrackEvent {
                        room_id: room_id.clone(),
                        participant_sid: participant_sid.clone(),
                        identity: identity.clone(),
                        track_sid: track_sid.clone(),
                        kind: String::new(),
                        source: String::new(),
                        published: false,
                        at: utc(*at),
                    })
                    .await?;
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
        self.written();
        Ok(())
    }

    /// A host joined: the room's open session becomes READY, or a READY session is created
    /// for it. Returns the session the host joins.
    async fn host_joined(
        &self,
        room_id: &str,
        identity: &str,
        at: DateTime<Utc>,
    ) -> Result<String, ControlError> {
        // Two hosts joining at once race to create the session; the loser finds it.
        for _ in 0..3 {
            match self.store.open_session(room_id).await? {
                Some(session) if session.state == SessionState::Idle => {
                    match self
                        .transition(&session.session_id, Trigger::HostJoined, "host joined", at)
                        .await
                    {
                        Ok(_) | Err(ControlError::IllegalTransition { .. }) => {
                            return Ok(session.session_id)
                        }
                        Err(e) => return Err(e),
                    }
                }
                Some(session) => return Ok(session.session_id),
                None => {
                    let created = self
                        .store
                        .create_session(&NewSession {
                            session_id: new_id("se"),
                            room_id: room_id.to_owned(),
                            channel_id: None,
                            owner_identity: Some(identity.to_owned()),
                            state: SessionState::Ready,
                            at,
                        })
                        .await;
                    match created {
                        Ok(session) => return Ok(session.session_id),
                        Err(e) if e.is_conflict() => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(ControlError::Conflict(format!(
            "room {room_id}: could not settle its open session"
        )))
    }
}
