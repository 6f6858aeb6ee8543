//! Egress records (the recording itself is issue 5).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::convert::{from_millis, from_opt_millis, parse_column, parse_json};

/// Lifecycle of an egress; complete and failed are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressStatus {
    Starting,
    Active,
    Ending,
    Complete,
    Failed,
}

impl EgressStatus {
    /// The value stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Active => "active",
            Self::Ending => "ending",
            Self::Complete => "complete",
            Self::Failed => "failed",
        }
    }

    /// Complete or failed: the record is not changed again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Complete | Self::Failed)
    }
}

impl fmt::Display for EgressStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EgressStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "starting" => Ok(Self::Starting),
            "active" => Ok(Self::Active),
            "ending" => Ok(Self::Ending),
            "complete" => Ok(Self::Complete),
            "failed" => Ok(Self::Failed),
            other => Err(format!("unknown egress status `{other}`")),
        }
    }
}

/// An egress as it is requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEgress {
    /// `eg_<ULID>`.
    pub egress_id: String,
    pub session_id: Option<String>,
    pub room_id: String,
    /// `room`, `track`, `rtp`, …
    pub kind: String,
    /// Where the output goes (URLs, file names, …).
    pub output: serde_json::Value,
    pub at: DateTime<Utc>,
    /// The node that runs (or accepted) the egress (see [`NewRoom::node_id`](super::NewRoom)).
    #[serde(default)]
    pub node_id: Option<String>,
}

/// A status report for an egress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressUpdate {
    pub status: EgressStatus,
    /// Replaces the stored error when `Some`.
    pub error: Option<String>,
    /// Replaces the stored output when `Some`.
    pub output: Option<serde_json::Value>,
    pub at: DateTime<Utc>,
}

/// A stored egress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRecord {
    pub egress_id: String,
    pub session_id: Option<String>,
    pub room_id: String,
    pub kind: String,
    pub status: EgressStatus,
    pub output: serde_json::Value,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When it first became active.
    pub started_at: Option<DateTime<Utc>>,
    /// When it became complete or failed.
    pub ended_at: Option<DateTime<Utc>>,
}

/// An `egress` row as both backends select it (output as JSON text).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EgressRow {
    egress_id: String,
    session_id: Option<String>,
    room_id: String,
    kind: String,
    status: String,
    output: String,
    error: Option<String>,
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    ended_at: Option<i64>,
}

impl TryFrom<EgressRow> for EgressRecord {
    type Error = sqlx::Error;

    fn try_from(row: EgressRow) -> Result<Self, Self::Error> {
        Ok(Self {
            status: parse_column(&row.status, "egress.status")?,
            output: parse_json(&row.output, "egress.output")?,
            created_at: from_millis(row.created_at, "egress.created_at")?,
            updated_at: from_millis(row.updated_at, "egress.updated_at")?,
            started_at: from_opt_millis(row.started_at, "egress.started_at")?,
            ended_at: from_opt_millis(row.ended_at, "egress.ended_at")?,
            egress_id: row.egress_id,
            session_id: row.session_id,
            room_id: row.room_id,
            kind: row.kind,
            error: row.error,
        })
    }
}
