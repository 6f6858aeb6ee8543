//! Leases: which node owns a room (placement) or delivers to a sink (delivery once), and
//! what an attempt to take one gives.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::convert::from_millis;

/// A room's current (unexpired) lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomLease {
    pub room_id: String,
    pub node_id: String,
    pub expires_at: DateTime<Utc>,
    /// The owner's WebSocket URL for clients, when its `nodes` row is known.
    pub public_url: Option<String>,
    /// The owner's HTTP URL for other nodes (relayed signaling, forwarded calls), when its
    /// `nodes` row is known.
    pub http_url: Option<String>,
}

/// What [`Store::acquire_room_lease`](crate::store::Store::acquire_room_lease) got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseOutcome {
    /// The room is this node's until `expires_at` (taken, taken over, or renewed).
    Granted { expires_at: DateTime<Utc> },
    /// Another node holds an unexpired lease.
    HeldBy(RoomLease),
}

/// A `room_leases` row joined with its owner's URLs.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LeaseRow {
    room_id: String,
    node_id: String,
    expires_at: i64,
    public_url: Option<String>,
    http_url: Option<String>,
}

impl LeaseRow {
    pub(crate) fn into_lease(self) -> Result<RoomLease, sqlx::Error> {
        Ok(RoomLease {
            expires_at: from_millis(self.expires_at, "room_leases.expires_at")?,
            room_id: self.room_id,
            node_id: self.node_id,
            public_url: self.public_url,
            http_url: self.http_url,
        })
    }
}

/// A sink's delivery lease row (expired or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryLease {
    pub sink: String,
    pub node_id: String,
    /// Goes up by one each time the lease changes hands (or its holder takes it back after it
    /// expired); a holder's cursor writes name it, so a stale holder's are refused.
    pub generation: i64,
    pub expires_at: DateTime<Utc>,
}

/// What [`Store::acquire_delivery_lease`](crate::store::Store::acquire_delivery_lease) got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryLeaseOutcome {
    /// The sink is this node's until `expires_at`; `generation` is unchanged by a renewal
    /// and new when the lease was taken.
    Granted {
        generation: i64,
        expires_at: DateTime<Utc>,
    },
    /// Another node holds an unexpired lease.
    HeldBy(DeliveryLease),
}

/// A `delivery_leases` row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DeliveryLeaseRow {
    sink: String,
    node_id: String,
    generation: i64,
    expires_at: i64,
}

impl DeliveryLeaseRow {
    pub(crate) fn into_lease(self) -> Result<DeliveryLease, sqlx::Error> {
        Ok(DeliveryLease {
            expires_at: from_millis(self.expires_at, "delivery_leases.expires_at")?,
            sink: self.sink,
            node_id: self.node_id,
            generation: self.generation,
        })
    }
}
