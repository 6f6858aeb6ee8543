//! Cluster membership: what a node says about itself, and the stored row with the liveness
//! a reader computes from it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::convert::{from_db_u32, from_millis, from_opt_millis, parse_column};

/// What a node declares about itself. Liveness is not a state: it is computed from
/// `heartbeat_at` by whoever reads the row ([`NodeRecord::alive`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Serving and taking new rooms.
    Active,
    /// Shutting down: serving what it has, taking nothing new.
    Draining,
    /// Shut down cleanly.
    Stopped,
}

impl NodeState {
    /// The value stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Draining => "draining",
            Self::Stopped => "stopped",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "draining" => Ok(Self::Draining),
            "stopped" => Ok(Self::Stopped),
            other => Err(format!("unknown node state `{other}`")),
        }
    }
}

/// A node registering itself at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistration {
    pub node_id: String,
    /// Where its HTTP API is reached (`http://host:port`).
    pub http_url: String,
    /// The WebSocket URL clients are given.
    pub public_url: String,
    /// Rooms it may hold at once.
    pub max_rooms: u32,
    pub started_at: DateTime<Utc>,
}

/// A node's load, sent with every heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    pub rooms: u32,
    pub participants: u32,
}

/// A stored node, with its liveness as of the read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: String,
    pub http_url: String,
    pub public_url: String,
    pub max_rooms: u32,
    pub load: NodeLoad,
    pub state: NodeState,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// When a live node closed the records this one left open (it had stopped
    /// heartbeating); `None` while it has not been, and again after it registers.
    pub released_at: Option<DateTime<Utc>>,
    /// Not stopped, and its last heartbeat is within the reader's timeout.
    pub alive: bool,
}

impl NodeRecord {
    /// Whether a node that heartbeated at `heartbeat_at` is alive at `now`: it is not
    /// stopped and its heartbeat is at most `timeout` old.
    pub fn is_alive(
        state: NodeState,
        heartbeat_at: DateTime<Utc>,
        now: DateTime<Utc>,
        timeout: std::time::Duration,
    ) -> bool {
        let timeout = chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        state != NodeState::Stopped && now.signed_duration_since(heartbeat_at) <= timeout
    }
}

/// A `nodes` row as both backends select it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct NodeRow {
    node_id: String,
    http_url: String,
    public_url: String,
    max_rooms: i64,
    rooms: i64,
    participants: i64,
    state: String,
    started_at: i64,
    heartbeat_at: i64,
    released_at: Option<i64>,
}

impl NodeRow {
    /// The record, with liveness judged at `now` against `timeout`.
    pub(crate) fn into_record(
        self,
        now: DateTime<Utc>,
        timeout: std::time::Duration,
    ) -> Result<NodeRecord, sqlx::Error> {
        let state: NodeState = parse_column(&self.state, "nodes.state")?;
        let heartbeat_at = from_millis(self.heartbeat_at, "nodes.heartbeat_at")?;
        Ok(NodeRecord {
            max_rooms: from_db_u32(self.max_rooms, "nodes.max_rooms")?,
            load: NodeLoad {
                rooms: from_db_u32(self.rooms, "nodes.rooms")?,
                participants: from_db_u32(self.participants, "nodes.participants")?,
            },
            started_at: from_millis(self.started_at, "nodes.started_at")?,
            released_at: from_opt_millis(self.released_at, "nodes.released_at")?,
            alive: NodeRecord::is_alive(state, heartbeat_at, now, timeout),
            state,
            heartbeat_at,
            node_id: self.node_id,
            http_url: self.http_url,
            public_url: self.public_url,
        })
    }
}
