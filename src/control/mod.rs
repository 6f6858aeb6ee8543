//! Session control: rooms, broadcast sessions, participants and egress records, kept in the
//! store and driven by what happens in the media plane and by the `/v1` API.
//!
//! Signaling reports joins, leaves and room lifecycle as [`SignalEvent`]s; [`Control`] turns
//! them into records (each with its event in the same transaction) and moves sessions along
//! their state machine ([`state`]). The HTTP API calls the same `Control` for admin
//! operations, so every path that changes a session goes through one place.

mod egress;
mod errors;
mod maintenance;
mod recorder;
mod rooms;
mod sessions;
mod signal_events;
pub mod state;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use switchboard_signaling::Signaling;
use tokio::sync::Notify;

pub use egress::{EgressRequest, EgressRuntime, OutputRequest};
pub use errors::ControlError;
pub use rooms::RoomOptions;
pub use sessions::{EgressReport, LiveOptions, TranscriptInput};

use crate::store::Store;

/// A prefixed ULID, as the seeds name things: `ro_…`, `se_…`, `ch_…`, `eg_…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}

pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// The session-control service shared by the signaling event loop and the HTTP API.
pub struct Control {
    pub store: Arc<dyn Store>,
    pub signaling: Arc<Signaling>,
    /// Wakes event delivery (webhooks, NATS) after a write appended events.
    pub delivery_wake: Arc<Notify>,
    /// Room defaults for rooms created through the API.
    pub default_empty_timeout_secs: u32,
    pub default_max_participants: u32,
    /// Recordings and restreams running in this process.
    pub egress: EgressRuntime,
    /// This node's cluster-unique id: what it records as the owner of the rooms,
    /// connections and egress it serves.
    pub node_id: String,
    /// Where removals' revocations go to reach the other nodes at once (NATS, when
    /// configured; src/cluster/bus.rs). Set once at start.
    pub revocation_bus: std::sync::OnceLock<crate::cluster::bus::RevocationSender>,
}

impl Control {
    pub fn new(
        store: Arc<dyn Store>,
        signaling: Arc<Signaling>,
        default_empty_timeout_secs: u32,
        default_max_participants: u32,
        egress: EgressRuntime,
        node_id: String,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            signaling,
            delivery_wake: Arc::new(Notify::new()),
            default_empty_timeout_secs,
            default_max_participants,
            egress,
            node_id,
            revocation_bus: std::sync::OnceLock::new(),
        })
    }

    /// Called after every successful write: new events may be waiting for delivery.
    fn written(&self) {
        self.delivery_wake.notify_waiters();
    }
}
