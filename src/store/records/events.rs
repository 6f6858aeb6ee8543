//! The event log (transactional outbox) and the audit log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::convert::{from_millis, parse_json};

/// The `kind` values of [`EventRecord`]s.
pub mod kinds {
    pub const ROOM_CREATED: &str = "room_created";
    pub const ROOM_STARTED: &str = "room_started";
    pub const ROOM_UPDATED: &str = "room_updated";
    pub const ROOM_FINISHED: &str = "room_finished";
    pub const PARTICIPANT_JOINED: &str = "participant_joined";
    pub const PARTICIPANT_LEFT: &str = "participant_left";
    pub const TRACK_PUBLISHED: &str = "track_published";
    pub const TRACK_UNPUBLISHED: &str = "track_unpublished";
    pub const SESSION_STATE_CHANGED: &str = "session_state_changed";
    pub const EGRESS_STARTED: &str = "egress_started";
    pub const EGRESS_UPDATED: &str = "egress_updated";
    pub const EGRESS_ENDED: &str = "egress_ended";
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Global order (the delivery cursor).
    pub id: i64,
    pub room_id: String,
    /// 1, 2, 3 … per room, without gaps.
    pub seq: i64,
    /// One of [`kinds`].
    pub kind: String,
    pub session_id: Option<String>,
    /// The changed record(s), e.g. `{"room": {...}}` or `{"session": {...}, "from": "READY",
    /// "to": "PUBLISHING", "reason": "..."}`.
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// An event about to be appended (inside the transaction of the change it records).
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    pub room_id: String,
    pub kind: &'static str,
    pub session_id: Option<String>,
    pub payload: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// An `events` row as both backends select it (payload as JSON text).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    id: i64,
    room_id: String,
    seq: i64,
    kind: String,
    session_id: Option<String>,
    payload: String,
    created_at: i64,
}

impl TryFrom<EventRow> for EventRecord {
    type Error = sqlx::Error;

    fn try_from(row: EventRow) -> Result<Self, Self::Error> {
        Ok(Self {
            payload: parse_json(&row.payload, "events.payload")?,
            created_at: from_millis(row.created_at, "events.created_at")?,
            id: row.id,
            room_id: row.room_id,
            seq: row.seq,
            kind: row.kind,
            session_id: row.session_id,
        })
    }
}

/// An administrative operation to remember (seed 001).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The API key or identity that acted.
    pub actor: String,
    pub action: String,
    pub target: String,
    pub remote_addr: Option<String>,
    /// `ok`, `denied` or `error`.
    pub outcome: String,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// A stored audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub remote_addr: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// An `audit_log` row as both backends select it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AuditRow {
    id: i64,
    actor: String,
    action: String,
    target: String,
    remote_addr: Option<String>,
    outcome: String,
    detail: Option<String>,
    at: i64,
}

impl TryFrom<AuditRow> for AuditRecord {
    type Error = sqlx::Error;

    fn try_from(row: AuditRow) -> Result<Self, Self::Error> {
        Ok(Self {
            at: from_millis(row.at, "audit_log.at")?,
            id: row.id,
            actor: row.actor,
            action: row.action,
            target: row.target,
            remote_addr: row.remote_addr,
            outcome: row.outcome,
            detail: row.detail,
        })
    }
}
