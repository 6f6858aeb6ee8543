//! Rooms: what the SFU and the API create, and the stored record.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::convert::{decode_error, from_db_u32, from_millis, from_opt_millis};

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

/// A room as the SFU starts it (first join).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The node the room runs on (`None` only for callers outside a server, such as tests of
    /// rows written before clustering).
    #[serde(default)]
    pub node_id: Option<String>,
}

/// A room created through the API (before anyone joins, so without an `RM_` sid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSpec {
    /// `ro_<ULID>` or a caller-chosen `[A-Za-z0-9_-]{1,64}` (checked by the caller).
    pub room_id: String,
    pub name: Option<String>,
    pub metadata: Option<String>,
    pub empty_timeout_secs: u32,
    /// 0 = unlimited.
    pub max_participants: u32,
    /// `ch_<ULID>` of the parent channel, if any.
    pub channel_id: Option<String>,
    pub guest_access: bool,
    pub at: DateTime<Utc>,
}

/// A partial change of a room's settings; `None` keeps the stored value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomUpdate {
    pub metadata: Option<String>,
    pub name: Option<String>,
    pub guest_access: Option<bool>,
    pub max_participants: Option<u32>,
    pub at: DateTime<Utc>,
}

/// A stored room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRecord {
    pub room_id: String,
    /// LiveKit's `RM_…` id; `None` for a room created through the API that nobody joined yet.
    pub sid: Option<String>,
    pub name: Option<String>,
    pub metadata: Option<String>,
    pub status: RoomStatus,
    pub created_at: DateTime<Utc>,
    pub last_active_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub empty_timeout_secs: u32,
    pub max_participants: u32,
    pub channel_id: Option<String>,
    pub guest_access: bool,
}

/// A `rooms` row as both backends select it (timestamps as unix milliseconds).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RoomRow {
    room_id: String,
    sid: Option<String>,
    name: Option<String>,
    metadata: Option<String>,
    status: String,
    created_at: i64,
    last_active_at: i64,
    closed_at: Option<i64>,
    empty_timeout_secs: i64,
    max_participants: i64,
    channel_id: Option<String>,
    guest_access: bool,
}

impl TryFrom<RoomRow> for RoomRecord {
    type Error = sqlx::Error;

    fn try_from(row: RoomRow) -> Result<Self, Self::Error> {
        Ok(Self {
            status: row.status.parse().map_err(decode_error)?,
            created_at: from_millis(row.created_at, "rooms.created_at")?,
            last_active_at: from_millis(row.last_active_at, "rooms.last_active_at")?,
            closed_at: from_opt_millis(row.closed_at, "rooms.closed_at")?,
            empty_timeout_secs: from_db_u32(row.empty_timeout_secs, "rooms.empty_timeout_secs")?,
            max_participants: from_db_u32(row.max_participants, "rooms.max_participants")?,
            room_id: row.room_id,
            sid: row.sid,
            name: row.name,
            metadata: row.metadata,
            channel_id: row.channel_id,
            guest_access: row.guest_access,
        })
    }
}
