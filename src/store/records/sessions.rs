//! Sessions: one broadcast lifecycle in a room (seed 002).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::convert::{from_millis, from_opt_millis, parse_column};

/// Where a session is in its lifecycle. Which moves are legal is decided by the caller
/// (`src/control/state.rs`); the store only compares and sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SessionState {
    Idle,
    Ready,
    Publishing,
    Live,
    Ending,
    Stopped,
    Cancelled,
}

impl SessionState {
    /// The value stored in the `state` column and used in JSON ("IDLE", "READY", …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "IDLE",
            Self::Ready => "READY",
            Self::Publishing => "PUBLISHING",
            Self::Live => "LIVE",
            Self::Ending => "ENDING",
            Self::Stopped => "STOPPED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Open = not finished (not STOPPED or CANCELLED); a room has at most one open session.
    pub fn is_open(self) -> bool {
        !matches!(self, Self::Stopped | Self::Cancelled)
    }

    /// The steps that end a session in this state when its room goes away or the server
    /// restarted: nothing went live yet → CANCELLED; a live broadcast winds down through
    /// ENDING to STOPPED. Empty for a finished session.
    pub(crate) fn closing_steps(self) -> &'static [SessionState] {
        match self {
            Self::Idle | Self::Ready | Self::Publishing => &[Self::Cancelled],
            Self::Live => &[Self::Ending, Self::Stopped],
            Self::Ending => &[Self::Stopped],
            Self::Stopped | Self::Cancelled => &[],
        }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SessionState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "IDLE" => Ok(Self::Idle),
            "READY" => Ok(Self::Ready),
            "PUBLISHING" => Ok(Self::Publishing),
            "LIVE" => Ok(Self::Live),
            "ENDING" => Ok(Self::Ending),
            "STOPPED" => Ok(Self::Stopped),
            "CANCELLED" => Ok(Self::Cancelled),
            other => Err(format!("unknown session state `{other}`")),
        }
    }
}

/// A session as the caller creates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSession {
    /// `se_<ULID>`, made by the caller.
    pub session_id: String,
    pub room_id: String,
    /// Defaults to the room's channel_id when `None`.
    pub channel_id: Option<String>,
    pub owner_identity: Option<String>,
    /// IDLE (API create) or READY (auto-created for a host).
    pub state: SessionState,
    pub at: DateTime<Utc>,
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub session_id: String,
    pub room_id: String,
    pub channel_id: Option<String>,
    pub owner_identity: Option<String>,
    pub state: SessionState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set when the session reaches STOPPED or CANCELLED.
    pub ended_at: Option<DateTime<Utc>>,
    /// 1 at creation, +1 on every transition.
    pub version: i64,
}

/// What [`Store::reconcile_after_restart`](crate::store::Store::reconcile_after_restart) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciled {
    pub connections_closed: u32,
    /// Sessions moved to a final state (one per session, however many steps it took).
    pub sessions_moved: u32,
    pub egress_failed: u32,
    /// Always 0: rooms stay active after a restart and the maintenance sweep closes the idle
    /// ones (kept so the report's shape does not change if that policy does).
    pub rooms_closed: u32,
}

/// A `sessions` row as both backends select it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SessionRow {
    session_id: String,
    room_id: String,
    channel_id: Option<String>,
    owner_identity: Option<String>,
    state: String,
    created_at: i64,
    updated_at: i64,
    ended_at: Option<i64>,
    version: i64,
}

impl TryFrom<SessionRow> for SessionRecord {
    type Error = sqlx::Error;

    fn try_from(row: SessionRow) -> Result<Self, Self::Error> {
        Ok(Self {
            state: parse_column(&row.state, "sessions.state")?,
            created_at: from_millis(row.created_at, "sessions.created_at")?,
            updated_at: from_millis(row.updated_at, "sessions.updated_at")?,
            ended_at: from_opt_millis(row.ended_at, "sessions.ended_at")?,
            session_id: row.session_id,
            room_id: row.room_id,
            channel_id: row.channel_id,
            owner_identity: row.owner_identity,
            version: row.version,
        })
    }
}
