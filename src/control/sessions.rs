//! Broadcast sessions (seed 002): creation, the live/end/cancel requests, egress reports that
//! move a session on, and transcripts.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use switchboard_signaling::TranscriptionSegmentOut;
use tracing::{info, warn};

use super::state::{self, Trigger};
use super::{new_id, now, Control, ControlError};
use crate::store::{
    EgressRecord, EgressStatus, EgressUpdate, NewEgress, NewSession, ParticipantRole,
    SessionRecord, SessionState, TranscriptRecord, TranscriptSegment,
};

/// Options of `POST /v1/sessions/{id}/live`: where the room egress writes.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveOptions {
    /// The room recording goes to this subdirectory of the server's egress directory.
    #[serde(default)]
    pub directory: Option<String>,
    /// An egress worker outside this process records the session and reports through
    /// `POST /v1/egress/{id}/status`; nothing is recorded here.
    #[serde(default)]
    pub external: bool,
    /// External egress only: a free-form description of its output, stored on the egress.
    #[serde(default)]
    pub output: Option<serde_json::Value>,
}

/// An egress worker's status report (`POST /v1/egress/{id}/status`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressReport {
    pub status: EgressStatus,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub output: Option<serde_json::Value>,
}

/// A transcript segment from a speech-to-text worker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscriptInput {
    pub segment_id: String,
    pub participant_identity: String,
    pub text: String,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default, rename = "final")]
    pub is_final: bool,
    pub start_ms: i64,
    pub end_ms: i64,
    /// The transcribed track, when the worker knows it.
    #[serde(default)]
    pub track_sid: Option<String>,
}

impl Control {
    /// Moves a session by `trigger`, if that transition exists from its current state.
    pub(crate) async fn transition(
        &self,
        session_id: &str,
        trigger: Trigger,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<SessionRecord, ControlError> {
        let session = self.store.get_session(session_id).await?;
        let Some(to) = state::next(session.state, trigger) else {
            return Err(ControlError::IllegalTransition {
                session_id: session_id.to_owned(),
                current: session.state,
                requested: trigger.describe(),
            });
        };
        let moved = self
            .store
            .transition_session(session_id, session.state, to, reason, at)
            .await;
        self.written();
        match moved {
            Ok(record) => {
                info!(session_id, from = %session.state, to = %to, reason, "session moved");
                Ok(record)
            }
            // Someone else moved it first: report the state it is in now.
            Err(crate::store::StoreError::StateConflict { current, .. }) => {
                Err(ControlError::IllegalTransition {
                    session_id: session_id.to_owned(),
                    current,
                    requested: trigger.describe(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Ends a room's open session through the state machine (cancelled before it went live,
    /// stopped after), before the room itself closes.
    pub(crate) async fn close_open_session(
        &self,
        room_id: &str,
        reason: &str,
    ) -> Result<(), ControlError> {
        // Another path (the API and signaling's RoomFinished both close a deleted room) may
        // move the session at the same time: re-read and carry on from wherever it is.
        for _ in 0..4 {
            let Some(session) = self.store.open_session(room_id).await? else {
                return Ok(());
            };
            let at = now();
            let mut raced = false;
            for &trigger in state::closing_triggers(session.state) {
                match self
                    .transition(&session.session_id, trigger, reason, at)
                    .await
                {
                    Ok(_) => {}
                    Err(ControlError::IllegalTransition { .. }) => {
                        raced = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(egress) = self.running_egress(&session.session_id).await? {
                // A recording in this process is stopped: it finalizes its file and
                // reports complete; anything else has nobody left to end it.
                let running_here = self.stop_runner(&egress.egress_id);
                let update = if running_here {
                    EgressUpdate {
                        status: EgressStatus::Ending,
                        error: None,
                        output: None,
                        at,
                    }
                } else {
                    EgressUpdate {
                        status: EgressStatus::Failed,
                        error: Some(format!("{reason} while recording")),
                        output: None,
                        at,
                    }
                };
                match self.store.update_egress(&egress.egress_id, &update).await {
                    // Ended meanwhile by the other path: nothing left to do.
                    Ok(_) | Err(crate::store::StoreError::Conflict { .. }) => self.written(),
                    Err(e) => return Err(e.into()),
                }
            }
            if !raced {
                return Ok(());
            }
        }
        Ok(())
    }

    /// `POST /v1/sessions`: a new IDLE session for an active room (seed 000).
    pub async fn create_session(
        &self,
        room_id: &str,
        owner_identity: Option<String>,
    ) -> Result<SessionRecord, ControlError> {
        if let Some(owner) = &owner_identity {
            self.check_identity(owner)?;
        }
        let room = self.store.get_room(room_id).await?;
        if room.status != crate::store::RoomStatus::Active {
            return Err(ControlError::RoomNotActive {
                room_id: room_id.to_owned(),
            });
        }
        let created = self
            .store
            .create_session(&NewSession {
                session_id: new_id("se"),
                room_id: room_id.to_owned(),
                channel_id: room.channel_id.clone(),
                owner_identity,
                state: SessionState::Idle,
                at: now(),
            })
            .await;
        self.written();
        match created {
            Ok(session) => Ok(session),
            Err(e) if e.is_conflict() => {
                let open = self.store.open_session(room_id).await?;
                Err(ControlError::Conflict(match open {
                    Some(s) => format!(
                        "room {room_id} already has an open session {} ({})",
                        s.session_id, s.state
                    ),
                    None => format!("room {room_id} already has an open session"),
                }))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `POST /v1/sessions/{id}/live`: READY → PUBLISHING, with a room egress starting.
    pub async fn go_live(
        &self,
        session_id: &str,
        options: LiveOptions,
    ) -> Result<(SessionRecord, EgressRecord), ControlError> {
        let at = now();
        if !options.external && options.output.is_some() {
            return Err(ControlError::BadRequest(
                "`output` describes an external egress (with \"external\": true); the built-in recorder takes `directory`".into(),
            ));
        }
        if !options.external {
            // A bad directory is the caller's mistake: refuse before the session moves.
            self.egress.check_directory(options.directory.as_deref())?;
        }
        let session = self
            .transition(session_id, Trigger::LiveRequested, "live requested", at)
            .await?;
        let egress = if options.external {
            let created = self
                .store
                .create_egress(&NewEgress {
                    egress_id: new_id("eg"),
                    session_id: Some(session_id.to_owned()),
                    room_id: session.room_id.clone(),
                    kind: "room".into(),
                    output: options.output.unwrap_or(serde_json::Value::Null),
                    at,
                    node_id: Some(self.node_id.clone()),
                })
                .await;
            self.written();
            created.map_err(ControlError::from)
        } else {
            let request = super::EgressRequest {
                room_id: session.room_id.clone(),
                track_sid: None,
                output: super::OutputRequest::File {
                    directory: options.directory,
                },
            };
            self.start_egress(request, Some(session_id.to_owned()))
                .await
        };
        match egress {
            Ok(egress) => {
                // A failed start closed the session already; show it as it is now.
                let session = self.store.get_session(session_id).await?;
                Ok((session, egress))
            }
            Err(e) => {
                // Without an egress record the session can never go live: undo the step.
                let _ = self
                    .transition(
                        session_id,
                        Trigger::Cancel,
                        "egress could not be recorded",
                        now(),
                    )
                    .await;
                Err(e)
            }
        }
    }

    /// The egress of a session, if it has one that has not ended.
    async fn running_egress(&self, session_id: &str) -> Result<Option<EgressRecord>, ControlError> {
        Ok(self
            .store
            .list_egress(None, Some(session_id))
            .await?
            .into_iter()
            .find(|e| !e.status.is_terminal()))
    }

    /// `POST /v1/sessions/{id}/end`: LIVE → ENDING; the egress is asked to stop.
    pub async fn end_session(&self, session_id: &str) -> Result<SessionRecord, ControlError> {
        let at = now();
        let session = self
            .transition(session_id, Trigger::EndRequested, "end requested", at)
            .await?;
        if let Some(egress) = self.running_egress(session_id).await? {
            if egress.status != EgressStatus::Ending {
                self.store
                    .update_egress(
                        &egress.egress_id,
                        &EgressUpdate {
                            status: EgressStatus::Ending,
                            error: None,
                            output: None,
                            at,
                        },
                    )
                    .await?;
                self.written();
            }
            // The recorder finalizes its file and reports complete: then STOPPED.
            self.stop_runner(&egress.egress_id);
        }
        Ok(session)
    }

    /// `POST /v1/sessions/{id}/cancel`: IDLE/READY/PUBLISHING → CANCELLED.
    pub async fn cancel_session(&self, session_id: &str) -> Result<SessionRecord, ControlError> {
        let at = now();
        let session = self
            .transition(session_id, Trigger::Cancel, "cancel requested", at)
            .await?;
        if let Some(egress) = self.running_egress(session_id).await? {
            self.store
                .update_egress(
                    &egress.egress_id,
                    &EgressUpdate {
                        status: EgressStatus::Failed,
                        error: Some("the session was cancelled".into()),
                        output: None,
                        at,
                    },
                )
                .await?;
            self.written();
            self.stop_runner(&egress.egress_id);
        }
        Ok(session)
    }

    /// An egress reported its status; its session follows (PUBLISHING → LIVE on active;
    /// to STOPPED or CANCELLED when it ended), and a new READY session opens for a host who
    /// is still in the room.
    pub async fn egress_reported(
        &self,
        egress_id: &str,
        report: EgressReport,
    ) -> Result<EgressRecord, ControlError> {
        let at = now();
        let egress = self
            .store
            .update_egress(
                egress_id,
                &EgressUpdate {
                    status: report.status,
                    error: report.error.clone(),
                    output: report.output,
                    at,
                },
            )
            .await?;
        self.written();
        let Some(session_id) = egress.session_id.clone() else {
            return Ok(egress);
        };
        let session = self.store.get_session(&session_id).await?;
        match (egress.status, session.state) {
            (EgressStatus::Active, SessionState::Publishing) => {
                self.transition(&session_id, Trigger::EgressActive, "egress active", at)
                    .await?;
            }
            (EgressStatus::Complete | EgressStatus::Failed, state) if state.is_open() => {
                let reason = match (egress.status, &report.error) {
                    (EgressStatus::Failed, Some(error)) => format!("egress failed: {error}"),
                    (EgressStatus::Failed, None) => "egress failed".to_owned(),
                    _ => "egress complete".to_owned(),
                };
                let mut current = state;
                for &trigger in state::closing_triggers(state) {
                    match self.transition(&session_id, trigger, &reason, at).await {
                        Ok(moved) => current = moved.state,
                        Err(e) => {
                            warn!(
                                session_id,
                                "could not close the session after its egress: {e}"
                            );
                            break;
                        }
                    }
                }
                if current == SessionState::Stopped {
                    self.reopen_for_host(&session).await?;
                }
            }
            _ => {}
        }
        Ok(egress)
    }

    /// After a session stopped: if its room's host is still connected, a new READY session
    /// for the same room lets them go live again without rejoining (seed 002).
    async fn reopen_for_host(&self, stopped: &SessionRecord) -> Result<(), ControlError> {
        let connections = self.store.open_connections(&stopped.room_id).await?;
        let Some(host) = connections
            .iter()
            .find(|c| c.role == Some(ParticipantRole::Host))
        else {
            return Ok(());
        };
        let created = self
            .store
            .create_session(&NewSession {
                session_id: new_id("se"),
                room_id: stopped.room_id.clone(),
                channel_id: stopped.channel_id.clone(),
                owner_identity: Some(host.identity.clone()),
                state: SessionState::Ready,
                at: now(),
            })
            .await;
        self.written();
        match created {
            Ok(_) => Ok(()),
            // Someone already opened one: nothing to do.
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores a transcript segment and, when it changed, relays it to the room as LiveKit's
    /// transcription packet.
    pub async fn add_transcript(
        &self,
        session_id: &str,
        input: TranscriptInput,
    ) -> Result<TranscriptRecord, ControlError> {
        if input.segment_id.trim().is_empty() || input.participant_identity.trim().is_empty() {
            return Err(ControlError::BadRequest(
                "segment_id and participant_identity must not be empty".into(),
            ));
        }
        self.check_identity(&input.participant_identity)?;
        if input.start_ms < 0 || input.end_ms < input.start_ms {
            return Err(ControlError::BadRequest(format!(
                "start_ms {} and end_ms {} must satisfy 0 <= start_ms <= end_ms",
                input.start_ms, input.end_ms
            )));
        }
        let session = self.store.get_session(session_id).await?;
        let (record, changed) = self
            .store
            .upsert_transcript(&TranscriptSegment {
                session_id: session_id.to_owned(),
                segment_id: input.segment_id.clone(),
                participant_identity: input.participant_identity.clone(),
                text: input.text.clone(),
                language: input.language.clone(),
                is_final: input.is_final,
                start_ms: input.start_ms,
                end_ms: input.end_ms,
                at: now(),
            })
            .await?;
        if changed {
            let relayed = self.signaling.send_transcription(
                &session.room_id,
                TranscriptionSegmentOut {
                    participant_identity: input.participant_identity,
                    track_sid: input.track_sid,
                    segment_id: input.segment_id,
                    text: input.text,
                    language: input.language.unwrap_or_default(),
                    is_final: input.is_final,
                    start_ms: u64::try_from(input.start_ms).unwrap_or(0),
                    end_ms: u64::try_from(input.end_ms).unwrap_or(0),
                },
            );
            if let Err(e) = relayed {
                // Stored either way; the room may simply have nobody in it right now.
                info!(session_id, "transcript stored but not relayed: {e}");
            }
        }
        Ok(record)
    }
}
