//! Which node may open a room. The server installs a [`Placement`] (a room lease in its
//! store); signaling asks it before a join, WHIP/WHEP offer or admin call opens a room this
//! node does not have open yet. When another node serves the room, a join is relayed to it
//! (`relay.rs`) and a WHIP/WHEP offer redirected. Plain types only: how ownership is stored
//! is the server's business.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::Signaling;

/// The node serving a room, as far as this node can reach and name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node_id: String,
    /// Its WebSocket URL for clients (`ws://host:port`), when known.
    pub public_url: Option<String>,
    /// Its HTTP URL for other nodes (`http://host:port`), when known.
    pub http_url: Option<String>,
}

impl Owner {
    /// The client-facing HTTP(S) base URL (`ws` → `http`, `wss` → `https`), for redirects.
    pub fn public_http_url(&self) -> Option<String> {
        let url = self.public_url.as_deref()?;
        if let Some(rest) = url.strip_prefix("wss://") {
            Some(format!("https://{}", rest.trim_end_matches('/')))
        } else {
            url.strip_prefix("ws://")
                .map(|rest| format!("http://{}", rest.trim_end_matches('/')))
        }
    }
}

/// Why a room may not open on this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementRefused {
    /// Another node serves the room (or was just chosen to).
    #[error("{}", owned_elsewhere(room, owner))]
    OwnedElsewhere { room: String, owner: Owner },
    /// This node is draining (shutting down once its rooms are empty): it opens no new
    /// room, and no other node could take this one; rooms open on it already go on.
    #[error(
        "this node ({node_id}) is draining and opens no new room; join room {room} through \
         another node"
    )]
    Draining { room: String, node_id: String },
    /// Ownership could not be checked (the database is unreachable).
    #[error("cannot check which node serves room {room} right now ({reason}); try again")]
    Unavailable { room: String, reason: String },
}

fn owned_elsewhere(room: &str, owner: &Owner) -> String {
    let at = owner
        .public_url
        .as_deref()
        .map(|url| format!(" at {url}"))
        .unwrap_or_default();
    format!(
        "room {room} is served by another node, {}{at}",
        owner.node_id
    )
}

/// Where a room nobody serves yet may be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placing {
    /// On this node: admin calls, and requests another node already relayed here.
    Here,
    /// On the node the placement picks (the least loaded): a client's own join or offer.
    Anywhere,
    /// As `Anywhere`, but never on this node: it is draining.
    Elsewhere,
}

/// The future a [`Placement`] answers with.
pub type Claim<'a> = Pin<Box<dyn Future<Output = Result<(), PlacementRefused>> + Send + 'a>>;

/// Decides whether this node may serve a room, taking it if so.
pub trait Placement: Send + Sync {
    /// Takes (or keeps) `room` for this node, or says which node has it. With
    /// [`Placing::Anywhere`] a room nobody serves may be given to another node.
    fn claim<'a>(&'a self, room: &'a str, placing: Placing) -> Claim<'a>;
}

impl Signaling {
    /// Installs the placement asked before a room opens here; without one (a single node),
    /// every room may open. Set once, at start.
    pub fn set_placement(&self, placement: Arc<dyn Placement>) {
        if self.placement.set(placement).is_err() {
            tracing::warn!("a room placement was installed twice; the first one stays");
        }
    }

    /// From now on no new room opens on this node (drain); rooms open here go on, joins and
    /// reconnects to them included. There is no way back but a restart.
    pub fn set_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether `room` is open on this node right now.
    pub fn room_is_open(&self, room: &str) -> bool {
        self.rooms.is_open(room)
    }

    /// Whether `room` may be served here: always when it is open on this node already (its
    /// lease is renewed elsewhere, and a database outage must not stop joins to a running
    /// room), otherwise as the placement says.
    pub async fn claim_room(&self, room: &str, placing: Placing) -> Result<(), PlacementRefused> {
        if self.rooms.is_open(room) {
            return Ok(());
        }
        let draining = || PlacementRefused::Draining {
            room: room.to_owned(),
            node_id: self.node_id.clone(),
        };
        // A draining node places a client's new room on another node, never here.
        let placing = match (self.is_draining(), placing) {
            (false, placing) => placing,
            (true, Placing::Anywhere | Placing::Elsewhere) => Placing::Elsewhere,
            (true, Placing::Here) => return Err(draining()),
        };
        match self.placement.get() {
            Some(placement) => placement.claim(room, placing).await,
            None if placing == Placing::Elsewhere => Err(draining()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(public_url: Option<&str>) -> Owner {
        Owner {
            node_id: "node-a".into(),
            public_url: public_url.map(str::to_owned),
            http_url: None,
        }
    }

    #[test]
    fn the_public_http_url_follows_the_websocket_scheme() {
        assert_eq!(
            owner(Some("ws://10.0.0.1:7880"))
                .public_http_url()
                .as_deref(),
            Some("http://10.0.0.1:7880")
        );
        assert_eq!(
            owner(Some("wss://sfu.example.com/"))
                .public_http_url()
                .as_deref(),
            Some("https://sfu.example.com")
        );
        assert_eq!(owner(Some("tcp://x")).public_http_url(), None);
        assert_eq!(owner(None).public_http_url(), None);
    }
}
