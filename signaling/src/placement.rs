//! Which node may open a room. The server installs a [`Placement`] (a room lease in its
//! store); signaling asks it before a join, WHIP/WHEP offer or admin call opens a room this
//! node does not have open yet, and refuses when another node owns the room. Plain types
//! only: how ownership is stored is the server's business.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::Signaling;

/// Why a room may not open on this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementRefused {
    /// Another node serves the room.
    #[error("{}", owned_elsewhere(room, node_id, url.as_deref()))]
    OwnedElsewhere {
        room: String,
        node_id: String,
        /// The owner's WebSocket URL, when known.
        url: Option<String>,
    },
    /// Ownership could not be checked (the database is unreachable).
    #[error("cannot check which node serves room {room} right now ({reason}); try again")]
    Unavailable { room: String, reason: String },
}

fn owned_elsewhere(room: &str, node_id: &str, url: Option<&str>) -> String {
    let at = url.map(|url| format!(" at {url}")).unwrap_or_default();
    format!(
        "room {room} is served by another node, {node_id}{at}; join it through that node \
         (routing between nodes is not supported yet)"
    )
}

/// The future a [`Placement`] answers with.
pub type Claim<'a> = Pin<Box<dyn Future<Output = Result<(), PlacementRefused>> + Send + 'a>>;

/// Decides whether this node may serve a room, taking it if so.
pub trait Placement: Send + Sync {
    /// Takes (or keeps) `room` for this node, or says which node has it.
    fn claim<'a>(&'a self, room: &'a str) -> Claim<'a>;
}

impl Signaling {
    /// Installs the placement asked before a room opens here; without one (a single node),
    /// every room may open. Set once, at start.
    pub fn set_placement(&self, placement: Arc<dyn Placement>) {
        if self.placement.set(placement).is_err() {
            tracing::warn!("a room placement was installed twice; the first one stays");
        }
    }

    /// Whether `room` is open on this node right now.
    pub fn room_is_open(&self, room: &str) -> bool {
        self.rooms.is_open(room)
    }

    /// Whether `room` may be served here: always when it is open on this node already (its
    /// lease is renewed elsewhere, and a database outage must not stop joins to a running
    /// room), otherwise as the placement says.
    pub async fn claim_room(&self, room: &str) -> Result<(), PlacementRefused> {
        if self.rooms.is_open(room) {
            return Ok(());
        }
        match self.placement.get() {
            Some(placement) => placement.claim(room).await,
            None => Ok(()),
        }
    }
}
