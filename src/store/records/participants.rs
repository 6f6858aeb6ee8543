//! Participants: one row per connection (`connections`, keyed by LiveKit's `PA_` sid) and one
//! row per person per session (`participants`, keyed by session and identity).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::convert::{from_db_count, from_db_u32, from_millis, from_opt_millis, parse_column};
use crate::store::StoreError;

/// A participant's role in a room: host = may administer the room (a token with `roomAdmin`
/// for it, or a `role` attribute), guest = everyone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParticipantRole {
    Host,
    Guest,
}

impl ParticipantRole {
    /// The value stored in the `role` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Guest => "guest",
        }
    }
}

impl fmt::Display for ParticipantRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ParticipantRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "host" => Ok(Self::Host),
            "guest" => Ok(Self::Guest),
            other => Err(format!("unknown participant role `{other}`")),
        }
    }
}

/// One participant connection as it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantJoin {
    pub room_id: String,
    /// LiveKit's `PA_…` id of this connection; a rejoin gets a new one.
    pub sid: String,
    pub identity: String,
    /// Display name; may be empty, as in LiveKit.
    pub name: String,
    pub role: Option<ParticipantRole>,
    pub metadata: Option<String>,
    pub joined_at: DateTime<Utc>,
    /// The room's open session at join time; the person is then recorded as its participant.
    pub session_id: Option<String>,
    /// The node the connection is served by (see [`NewRoom::node_id`](super::NewRoom)).
    #[serde(default)]
    pub node_id: Option<String>,
}

/// Traffic of one connection over its lifetime, written when it leaves (and, for a session
/// participant, the totals over its connections).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantSummary {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub packets_lost: u64,
    /// Round-trip time in milliseconds, when the transport measured one.
    pub rtt_ms: Option<u32>,
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantLeave {
    /// Clamped to the join time if the clock stepped backwards in between.
    pub left_at: DateTime<Utc>,
    /// LiveKit's DisconnectReason name (`CLIENT_INITIATED`, `DUPLICATE_IDENTITY`,
    /// `SERVER_SHUTDOWN`, `ROOM_DELETED`, `PARTICIPANT_REMOVED`, `SIGNAL_CLOSED`,
    /// `JOIN_FAILURE`, …). Kept as text so new reasons need no migration.
    pub reason: String,
    pub summary: ParticipantSummary,
}

/// A stored participant connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantRecord {
    pub sid: String,
    pub room_id: String,
    pub identity: String,
    pub name: String,
    pub role: Option<ParticipantRole>,
    pub metadata: Option<String>,
    pub joined_at: DateTime<Utc>,
    pub left_at: Option<DateTime<Utc>>,
    pub leave_reason: Option<String>,
    /// Present once the connection has left with a measured summary (a connection closed by
    /// the store itself, e.g. at room close or restart, has none).
    pub summary: Option<ParticipantSummary>,
}

/// One person in one session, across their connections (rejoins update the row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionParticipantRecord {
    pub session_id: String,
    pub room_id: String,
    pub identity: String,
    /// The current (latest) connection.
    pub sid: String,
    pub name: String,
    pub role: Option<ParticipantRole>,
    pub metadata: Option<String>,
    /// The first join in this session.
    pub joined_at: DateTime<Utc>,
    pub left_at: Option<DateTime<Utc>>,
    pub leave_reason: Option<String>,
    /// How many connections this person made in this session.
    pub connections: u32,
    /// Totals over the connections that have left so far (rtt_ms = the latest measured).
    pub summary: ParticipantSummary,
}

/// A track published or unpublished; recorded only as an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackEvent {
    pub room_id: String,
    pub participant_sid: String,
    pub identity: String,
    pub track_sid: String,
    /// `audio` or `video`.
    pub kind: String,
    pub source: String,
    pub published: bool,
    pub at: DateTime<Utc>,
}

fn parse_role(role: Option<&str>, column: &str) -> Result<Option<ParticipantRole>, sqlx::Error> {
    role.map(|r| parse_column(r, column)).transpose()
}

/// A `connections` row as both backends select it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ParticipantRow {
    sid: String,
    room_id: String,
    identity: String,
    name: String,
    role: Option<String>,
    metadata: Option<String>,
    joined_at: i64,
    left_at: Option<i64>,
    leave_reason: Option<String>,
    bytes_in: Option<i64>,
    bytes_out: Option<i64>,
    packets_in: Option<i64>,
    packets_out: Option<i64>,
    packets_lost: Option<i64>,
    rtt_ms: Option<i64>,
}

impl ParticipantRow {
    /// The summary columns are written together at leave, so they are all set or all NULL;
    /// a NULL counter in a left row reads as no summary.
    fn summary(&self) -> Result<Option<ParticipantSummary>, sqlx::Error> {
        let (Some(bytes_in), Some(bytes_out), Some(packets_in), Some(packets_out), Some(lost)) = (
            self.bytes_in,
            self.bytes_out,
            self.packets_in,
            self.packets_out,
            self.packets_lost,
        ) else {
            return Ok(None);
        };
        Ok(Some(ParticipantSummary {
            bytes_in: from_db_count(bytes_in, "connections.bytes_in")?,
            bytes_out: from_db_count(bytes_out, "connections.bytes_out")?,
            packets_in: from_db_count(packets_in, "connections.packets_in")?,
            packets_out: from_db_count(packets_out, "connections.packets_out")?,
            packets_lost: from_db_count(lost, "connections.packets_lost")?,
            rtt_ms: self
                .rtt_ms
                .map(|v| from_db_u32(v, "connections.rtt_ms"))
                .transpose()?,
        }))
    }
}

impl TryFrom<ParticipantRow> for ParticipantRecord {
    type Error = sqlx::Error;

    fn try_from(row: ParticipantRow) -> Result<Self, Self::Error> {
        let summary = row.summary()?;
        Ok(Self {
            role: parse_role(row.role.as_deref(), "connections.role")?,
            joined_at: from_millis(row.joined_at, "connections.joined_at")?,
            left_at: from_opt_millis(row.left_at, "connections.left_at")?,
            summary,
            sid: row.sid,
            room_id: row.room_id,
            identity: row.identity,
            name: row.name,
            metadata: row.metadata,
            leave_reason: row.leave_reason,
        })
    }
}

/// A `connections` row together with the session it belongs to.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ConnectionRow {
    #[sqlx(flatten)]
    pub connection: ParticipantRow,
    pub session_id: Option<String>,
}

/// A `participants` (session participant) row as both backends select it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SessionParticipantRow {
    session_id: String,
    room_id: String,
    identity: String,
    sid: String,
    name: String,
    role: Option<String>,
    metadata: Option<String>,
    joined_at: i64,
    left_at: Option<i64>,
    leave_reason: Option<String>,
    connections: i64,
    bytes_in: i64,
    bytes_out: i64,
    packets_in: i64,
    packets_out: i64,
    packets_lost: i64,
    rtt_ms: Option<i64>,
}

impl TryFrom<SessionParticipantRow> for SessionParticipantRecord {
    type Error = sqlx::Error;

    fn try_from(row: SessionParticipantRow) -> Result<Self, Self::Error> {
        Ok(Self {
            role: parse_role(row.role.as_deref(), "participants.role")?,
            joined_at: from_millis(row.joined_at, "participants.joined_at")?,
            left_at: from_opt_millis(row.left_at, "participants.left_at")?,
            connections: from_db_u32(row.connections, "participants.connections")?,
            summary: ParticipantSummary {
                bytes_in: from_db_count(row.bytes_in, "participants.bytes_in")?,
                bytes_out: from_db_count(row.bytes_out, "participants.bytes_out")?,
                packets_in: from_db_count(row.packets_in, "participants.packets_in")?,
                packets_out: from_db_count(row.packets_out, "participants.packets_out")?,
                packets_lost: from_db_count(row.packets_lost, "participants.packets_lost")?,
                rtt_ms: row
                    .rtt_ms
                    .map(|v| from_db_u32(v, "participants.rtt_ms"))
                    .transpose()?,
            },
            session_id: row.session_id,
            room_id: row.room_id,
            identity: row.identity,
            sid: row.sid,
            name: row.name,
            metadata: row.metadata,
            leave_reason: row.leave_reason,
        })
    }
}

/// Decides a join whose sid is already stored: the same room and identity is a retry and
/// gets the stored row back; anything else means two connections claim one sid.
pub(crate) fn same_connection(
    existing: ParticipantRecord,
    p: &ParticipantJoin,
) -> Result<ParticipantRecord, StoreError> {
    if existing.room_id == p.room_id && existing.identity == p.identity {
        Ok(existing)
    } else {
        Err(StoreError::conflict(format!(
            "participant sid `{}` is already recorded for identity `{}` in room `{}`",
            p.sid, existing.identity, existing.room_id
        )))
    }
}
