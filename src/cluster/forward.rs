//! Admin calls about one room, answered by the node that runs it: live state (participants,
//! tracks) exists only in the memory of the node holding the room's lease, so a call that
//! reads or changes it is relayed to that node's `http_url` as it came (method, path, query,
//! headers, body), and its answer relayed back.
//!
//! One hop at most: a relayed request carries [`FORWARDED_BY`], and a node answers such a
//! request itself, whatever its lease says, so two nodes that disagree about a lease for a
//! moment cannot bounce a request between them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use tracing::debug;

use crate::control::now;
use crate::store::{RoomLease, Store};

/// Marks a request one node relayed to another, naming the relaying node. Shared with the
/// `/rtc` relay, so a request is relayed once whichever way it went first.
pub use switchboard_signaling::FORWARDED_BY;

/// How long a relayed call may take, connection included.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// A dead owner refuses connections at once; an unreachable one (a partition) should not
/// hold the caller for the whole timeout before it hears so.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a caller refused because the owner is unreachable should wait: about a
/// heartbeat, after which the owner may be back or its lease released.
pub const RETRY_AFTER_SECS: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(
        "room {room:?} is served by node {node_id} at {url}, which did not answer ({reason}); \
         its lease runs until {expires_at}, after which another node can serve the room"
    )]
    Unreachable {
        room: String,
        node_id: String,
        url: String,
        reason: String,
        expires_at: String,
    },
    #[error(
        "room {room:?} is served by node {node_id}, whose HTTP address is not registered; \
         its lease runs until {expires_at}"
    )]
    NoAddress {
        room: String,
        node_id: String,
        expires_at: String,
    },
    #[error("cannot build the HTTP client for relaying requests to other nodes: {0}")]
    Client(String),
}

/// A request to relay.
pub struct Outgoing<'a> {
    pub method: Method,
    /// Path and query, as the caller sent them.
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
}

/// The owner's answer, as far as it is relayed.
#[derive(Debug)]
pub struct Relayed {
    pub status: StatusCode,
    /// Content-Type and Retry-After, when the owner sent them.
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Finds a room's owner and relays requests to it.
pub struct Forwarder {
    store: Arc<dyn Store>,
    node_id: String,
    client: reqwest::Client,
    lookup_timeout: Duration,
}

/// Headers that describe one connection, not the request; hyper and reqwest set their own.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

impl Forwarder {
    /// `lookup_timeout` bounds the store lookup of a room's owner (the lease TTL: a lookup
    /// never waits longer than a lease lasts).
    pub fn new(
        store: Arc<dyn Store>,
        node_id: String,
        lookup_timeout: Duration,
    ) -> Result<Arc<Self>, ForwardError> {
        let client = reqwest::Client::builder()
            .timeout(FORWARD_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // A node's answer is relayed as it is, redirects included.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ForwardError::Client(e.to_string()))?;
        Ok(Arc::new(Self {
            store,
            node_id,
            client,
            lookup_timeout,
        }))
    }

    /// Whether another node relayed this request here (then it is answered here).
    pub fn was_forwarded(headers: &HeaderMap) -> bool {
        headers.contains_key(FORWARDED_BY)
    }

    /// The lease of `room` when another node holds it unexpired. `None` when nobody does,
    /// this node does, or the store cannot tell (then the caller answers locally, as a
    /// single node would).
    pub async fn owner_elsewhere(&self, room: &str) -> Option<RoomLease> {
        let lookup = self.store.room_owner(room, now());
        match tokio::time::timeout(self.lookup_timeout, lookup).await {
            Ok(Ok(Some(lease))) if lease.node_id != self.node_id => Some(lease),
            Ok(Ok(_)) => None,
            Ok(Err(e)) => {
                debug!(room, "looking up the room's owner failed: {e}");
                None
            }
            Err(_) => {
                debug!(room, "looking up the room's owner timed out");
                None
            }
        }
    }

    /// Relays `request` to the holder of `lease` and returns its answer, whatever its status.
    pub async fn forward(
        &self,
        lease: &RoomLease,
        request: Outgoing<'_>,
    ) -> Result<Relayed, ForwardError> {
        let expires_at = lease.expires_at.to_rfc3339();
        let Some(base) = lease.http_url.as_deref() else {
            return Err(ForwardError::NoAddress {
                room: lease.room_id.clone(),
                node_id: lease.node_id.clone(),
                expires_at,
            });
        };
        let url = format!("{}{}", base.trim_end_matches('/'), request.path_and_query);
        let mut headers = request.headers.clone();
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
        let own = HeaderValue::from_str(&self.node_id)
            // Node ids are checked at start to be 1-64 of [A-Za-z0-9_.-]: a valid value.
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        headers.insert(HeaderName::from_static(FORWARDED_BY), own);
        let unreachable = |reason: String| ForwardError::Unreachable {
            room: lease.room_id.clone(),
            node_id: lease.node_id.clone(),
            url: base.to_owned(),
            reason,
            expires_at: expires_at.clone(),
        };
        let response = self
            .client
            .request(request.method, &url)
            .headers(headers)
            .body(request.body)
            .send()
            .await
            .map_err(|e| unreachable(describe(&e)))?;
        let status = response.status();
        let mut relayed = HeaderMap::new();
        for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
            if let Some(value) = response.headers().get(&name) {
                relayed.insert(name, value.clone());
            }
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| unreachable(describe(&e)))?;
        Ok(Relayed {
            status,
            headers: relayed,
            body,
        })
    }
}

/// reqwest's own message ("error sending request") hides the cause a person needs.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", FORWARD_TIMEOUT.as_secs());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
