//! Cluster membership settings: this node's id (`--node-id`, `node_id`) and how often it
//! heartbeats, how long a silent node counts as alive, and how long it holds a room or a
//! sink's delivery without renewing its lease (`[cluster]`).
//!
//! Only the configured id is resolved here: resolving settings has no side effects, so the
//! id generated and kept in the data directory when none is configured is made at start
//! (`crate::cluster::identity`), checked with the same [`node_id`] rule.

use std::time::Duration;

use super::error::ConfigError;
use super::limits;
use super::sources::{self, Sources};
use super::ServeArgs;

pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(10);
/// Node ids end up in every row a node writes and in LiveKit's `ServerInfo.node_id`: short.
pub const MAX_NODE_ID_BYTES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The configured node id; `None` = generated once and kept in the data directory.
    pub node_id: Option<String>,
    /// How often this node records its heartbeat.
    pub heartbeat_interval: Duration,
    /// A node whose last heartbeat is older than this is dead.
    pub node_timeout: Duration,
    /// How long a room lease lasts without renewal (renewed every heartbeat). Defaults to
    /// `node_timeout`: a room is never free while its node still counts as alive, and is
    /// free when it is called dead (releasing it deletes its leases at the same time).
    pub room_lease_ttl: Duration,
    /// How long a sink's delivery lease lasts without renewal (renewed every third of it):
    /// how long a dead node's sinks wait for another node. Defaults to the node timeout,
    /// like the room lease TTL.
    pub delivery_lease_ttl: Duration,
    /// How long a drain waits for this node's rooms to empty; zero = no wait (the default,
    /// so a single node stops on SIGTERM as it always did, well within a container
    /// runtime's stop grace).
    pub drain_timeout: Duration,
}

/// A node id: 1 to 64 characters from `A-Z a-z 0-9 _ . -` (safe in URLs, logs, file names
/// and SQL literals alike).
pub fn node_id(input: &str) -> Result<String, String> {
    if input.is_empty() {
        return Err("a node id must not be empty".to_owned());
    }
    if input.len() > MAX_NODE_ID_BYTES {
        return Err(format!(
            "a node id has at most {MAX_NODE_ID_BYTES} characters, this one {}",
            input.len()
        ));
    }
    if !input
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err("a node id may only contain A-Z, a-z, 0-9, '_', '.' and '-'".to_owned());
    }
    Ok(input.to_owned())
}

pub(super) fn resolve(src: &Sources<'_>, args: &ServeArgs) -> Result<ClusterSettings, ConfigError> {
    let node_id = src.get(args.node_id.as_deref(), &sources::NODE_ID, node_id)?;
    let heartbeat_interval = src
        .get(
            args.cluster_heartbeat_interval.as_deref(),
            &sources::CLUSTER_HEARTBEAT_INTERVAL,
            limits::duration,
        )?
        .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL);
    let node_timeout = src
        .get(
            args.cluster_node_timeout.as_deref(),
            &sources::CLUSTER_NODE_TIMEOUT,
            limits::duration,
        )?
        .unwrap_or(DEFAULT_NODE_TIMEOUT);
    // One late heartbeat (a slow database, a busy host) must not make a node dead.
    if node_timeout < heartbeat_interval.saturating_mul(2) {
        return Err(ConfigError::NodeTimeoutTooShort {
            heartbeat_interval,
            node_timeout,
        });
    }
    let room_lease_ttl = src
        .get(
            args.cluster_room_lease_ttl.as_deref(),
            &sources::CLUSTER_ROOM_LEASE_TTL,
            limits::duration,
        )?
        .unwrap_or(node_timeout);
    if room_lease_ttl < heartbeat_interval.saturating_mul(2) || room_lease_ttl > node_timeout {
        return Err(ConfigError::RoomLeaseTtlOutOfRange {
            heartbeat_interval,
            node_timeout,
            ttl: room_lease_ttl,
        });
    }
    let delivery_lease_ttl = src
        .get(
            args.cluster_delivery_lease_ttl.as_deref(),
            &sources::CLUSTER_DELIVERY_LEASE_TTL,
            limits::duration,
        )?
        .unwrap_or(node_timeout);
    let drain_timeout = src
        .get(
            args.cluster_drain_timeout.as_deref(),
            &sources::CLUSTER_DRAIN_TIMEOUT,
            limits::duration,
        )?
        .unwrap_or(Duration::ZERO);
    Ok(ClusterSettings {
        node_id,
        heartbeat_interval,
        node_timeout,
        room_lease_ttl,
        delivery_lease_ttl,
        drain_timeout,
    })
}
