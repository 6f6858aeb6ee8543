//! Inputs and records of the session store, and the conversion from database rows.
//!
//! Both backends decode rows into the same private row structs (timestamps as unix
//! milliseconds, counters as i64), so the mapping to the public records lives here once and
//! the two stores cannot drift apart in how they interpret a column.
//!
//! Timestamps are kept with millisecond precision in both backends: finer parts of a
//! `DateTime` given to the store are truncated, and records come back truncated.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Lifecycle of a room record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomStatus {
    Active,
    Closed,
}

impl RoomStatus {
    /// The value stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Closed => "closed",
        }
    }
}

impl fmt::Display for RoomStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RoomStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "closed" => Ok(Self::Closed),
            other => Err(format!("unknown room status `{other}`")),
        }
    }
}

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

/// A room as the SFU starts it (first join, or an API create).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoom {
    /// The LiveKit room name.
    pub room_id: String,
    /// LiveKit's `RM_…` id of this incarnation of the room.
    pub sid: String,
    /// Display name; `None` keeps the stored one.
    pub name: Option<String>,
    /// Room metadata; `None` keeps the stored one.
    pub metadata: Option<String>,
    /// Seconds an empty room stays open.
    pub empty_timeout_secs: u32,
    /// 0 = unlimited.
    pub max_participants: u32,
    /// When the room started; becomes `created_at` on first insert and `last_active_at`.
    pub started_at: DateTime<Utc>,
}

/// A stored room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRecord {
    pub room_id: String,
    pub sid: String,
    pub name: Option<String>,
    pub metadata: Option<String>,
    pub status: RoomStatus,
    pub created_at: DateTime<Utc>,
    pub last_active_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub empty_timeout_secs: u32,
    pub max_participants: u32,
}

/// One participant connection as it joins.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// Traffic of one connection over its lifetime, written when it leaves.
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Present once the connection has left.
    pub summary: Option<ParticipantSummary>,
}

// ---- conversions shared by both backends ----

/// Unix milliseconds as stored; sub-millisecond parts are dropped (see the module docs).
pub(crate) fn to_millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn from_millis(ms: i64, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| {
        decode_error(format!(
            "{column} = {ms} is not a valid unix millisecond timestamp"
        ))
    })
}

/// Counters are u64 in Rust and signed 64-bit in both databases. They saturate rather than
/// fail the write: losing a leave record over a counter beyond 2^63 would be worse than
/// clipping it, and no real connection gets there.
pub(crate) fn to_db_count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_db_count(value: i64, column: &str) -> Result<u64, sqlx::Error> {
    u64::try_from(value).map_err(|_| decode_error(format!("{column} = {value} is negative")))
}

fn from_db_u32(value: i64, column: &str) -> Result<u32, sqlx::Error> {
    u32::try_from(value).map_err(|_| decode_error(format!("{column} = {value} is out of range")))
}

fn decode_error(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

/// A `rooms` row as both backends select it (timestamps as unix milliseconds).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RoomRow {
    room_id: String,
    sid: String,
    name: Option<String>,
    metadata: Option<String>,
    status: String,
    created_at: i64,
    last_active_at: i64,
    closed_at: Option<i64>,
    empty_timeout_secs: i64,
    max_participants: i64,
}

impl TryFrom<RoomRow> for RoomRecord {
    type Error = sqlx::Error;

    fn try_from(row: RoomRow) -> Result<Self, Self::Error> {
        Ok(Self {
            status: row.status.parse().map_err(decode_error)?,
            created_at: from_millis(row.created_at, "rooms.created_at")?,
            last_active_at: from_millis(row.last_active_at, "rooms.last_active_at")?,
            closed_at: row
                .closed_at
                .map(|ms| from_millis(ms, "rooms.closed_at"))
                .transpose()?,
            empty_timeout_secs: from_db_u32(row.empty_timeout_secs, "rooms.empty_timeout_secs")?,
            max_participants: from_db_u32(row.max_participants, "rooms.max_participants")?,
            room_id: row.room_id,
            sid: row.sid,
            name: row.name,
            metadata: row.metadata,
        })
    }
}

/// A `participants` row as both backends select it.
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
    /// a NULL counter in a left row (which our writes never produce) reads as no summary.
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
            bytes_in: from_db_count(bytes_in, "participants.bytes_in")?,
            bytes_out: from_db_count(bytes_out, "participants.bytes_out")?,
            packets_in: from_db_count(packets_in, "participants.packets_in")?,
            packets_out: from_db_count(packets_out, "participants.packets_out")?,
            packets_lost: from_db_count(lost, "participants.packets_lost")?,
            rtt_ms: self
                .rtt_ms
                .map(|v| from_db_u32(v, "participants.rtt_ms"))
                .transpose()?,
        }))
    }
}

impl TryFrom<ParticipantRow> for ParticipantRecord {
    type Error = sqlx::Error;

    fn try_from(row: ParticipantRow) -> Result<Self, Self::Error> {
        let summary = row.summary()?;
        Ok(Self {
            role: row
                .role
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(decode_error)?,
            joined_at: from_millis(row.joined_at, "participants.joined_at")?,
            left_at: row
                .left_at
                .map(|ms| from_millis(ms, "participants.left_at"))
                .transpose()?,
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

/// Converts an optional row into a record, or NotFound naming `what`.
pub(crate) fn found<R, T>(
    row: Option<R>,
    what: impl FnOnce() -> String,
) -> Result<T, super::StoreError>
where
    T: TryFrom<R, Error = sqlx::Error>,
{
    match row {
        Some(row) => Ok(T::try_from(row)?),
        None => Err(super::StoreError::not_found(what())),
    }
}

/// Converts a list of rows into records.
pub(crate) fn all<R, T>(rows: Vec<R>) -> Result<Vec<T>, sqlx::Error>
where
    T: TryFrom<R, Error = sqlx::Error>,
{
    rows.into_iter().map(T::try_from).collect()
}

/// Decides a join whose sid is already stored: the same room and identity is a retry and
/// gets the stored row back; anything else means two connections claim one sid.
pub(crate) fn same_connection(
    existing: ParticipantRecord,
    p: &ParticipantJoin,
) -> Result<ParticipantRecord, super::StoreError> {
    if existing.room_id == p.room_id && existing.identity == p.identity {
        Ok(existing)
    } else {
        Err(super::StoreError::conflict(format!(
            "participant sid `{}` is already recorded for identity `{}` in room `{}`",
            p.sid, existing.identity, existing.room_id
        )))
    }
}
