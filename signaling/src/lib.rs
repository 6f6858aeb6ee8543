//! LiveKit-compatible client signaling for Switchboard: JWT join tokens and the `/rtc`
//! WebSocket protocol (v0: a publisher and a subscriber PeerConnection per participant).
//!
//! Knows nothing of SQL: what happens in rooms is reported as [`SignalEvent`]s on a channel
//! that the server's session store consumes.

mod admin;
pub mod agents;
#[cfg(any(test, feature = "bench"))]
#[doc(hidden)]
pub mod bench;
mod credentials;
mod data;
mod ending;
pub mod events;
mod frame;
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod ids;
mod limits;
pub mod names;
mod outbox;
mod peer_events;
mod placement;
mod publish;
mod relay;
mod requests;
mod resume;
mod revocations;
mod room_signals;
mod rooms;
mod session;
mod subscribe;
pub mod token;
mod turn_rest;
mod v1;
mod websocket;
mod whip;

use std::sync::Arc;
use std::time::Duration;

use switchboard_sfu::Sfu;
use tokio::sync::{mpsc, watch};

pub use admin::{
    AdminError, EnsuredRoom, LiveRoom, ParticipantChange, RoomSettings, TranscriptionSegmentOut,
};
pub use events::{LeaveReason, SignalEvent};
pub use limits::{SessionLimits, TooLarge};
pub use names::{NameError, NameRules};
pub use placement::{Claim, Owner, Placement, PlacementRefused, Placing};
pub use relay::FORWARDED_BY;
pub use rooms::{JoinRefused, RoomDefaults};
pub use token::KeyStore;
pub use turn_rest::TurnRestSecret;

/// The version reported to clients. livekit-client keeps VP9/AV1 on the classic path only
/// for servers between 1.8.0 and 1.13.6, so we report a version in that range.
pub const PROTOCOL_SERVER_VERSION: &str = "1.9.0";

/// How signaling behaves.
#[derive(Debug, Clone)]
pub struct SignalingConfig {
    pub keys: KeyStore,
    pub rooms: RoomDefaults,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Identifies this node in ServerInfo.
    pub node_id: String,
    /// STUN/TURN servers clients are told about (JoinResponse, WHIP/WHEP `Link` headers).
    pub ice_servers: Vec<IceServer>,
    /// Longest room names and identities accepted (names.rs has the rule).
    pub names: NameRules,
    /// What one participant may send and hold (sizes, rates, tracks, queued output).
    pub limits: SessionLimits,
    /// Whether `/rtc/v1` (one PeerConnection per participant) is served; off, it answers
    /// 404 and the SDKs fall back to `/rtc`.
    pub single_pc: bool,
}

/// A STUN or TURN server for clients.
#[derive(Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:…`, `turn:…` or `turns:…` URL.
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
    /// A TURN server sharing this secret with us gets credentials minted per participant
    /// (`turn_rest.rs`) instead of `username` and `credential`.
    pub rest: Option<TurnRestSecret>,
}

/// Settings are logged: the credential never is.
impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("credential", &self.credential.as_ref().map(|_| "***"))
            .field("rest", &self.rest)
            .finish()
    }
}

impl IceServer {
    /// This server as `identity` is told about it at `now`: with credentials of its own
    /// when the TURN server shares a secret with us.
    pub fn for_participant(&self, identity: &str, now: std::time::SystemTime) -> IceServer {
        let mut server = self.clone();
        if let Some(secret) = server.rest.take() {
            let (username, credential) = secret.mint(identity, now);
            server.username = Some(username);
            server.credential = Some(credential);
        }
        server
    }

    /// The WHIP/WHEP `Link` header value for this server (RFC 9725 §4.6).
    pub fn link_header(&self) -> String {
        let mut link = format!("<{}>; rel=\"ice-server\"", self.url);
        if let (Some(user), Some(credential)) = (&self.username, &self.credential) {
            link.push_str(&format!(
                "; username=\"{user}\"; credential=\"{credential}\"; credential-type=\"password\""
            ));
        }
        link
    }
}

/// Shared state of every signaling session on this node.
pub struct Signaling {
    pub(crate) keys: KeyStore,
    pub(crate) rooms: Arc<rooms::Rooms>,
    pub(crate) sfu: Arc<Sfu>,
    pub(crate) events: mpsc::UnboundedSender<SignalEvent>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) ping_interval: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) server_version: String,
    pub(crate) node_id: String,
    pub(crate) ice_servers: Vec<IceServer>,
    /// Tokens refused since their participant was removed.
    pub(crate) revocations: revocations::Revocations,
    pub(crate) names: NameRules,
    pub(crate) limits: SessionLimits,
    pub(crate) single_pc: bool,
    /// Session tasks still running (joined or not), so shutdown can wait for their records.
    live_sessions: watch::Sender<usize>,
    /// WHIP and WHEP sessions, by resource id.
    pub(crate) whip: whip::Resources,
    /// LiveKit sessions a reconnect may resume (`resume.rs`).
    pub(crate) resumables: resume::Resumables,
    /// LiveKit Agents workers and their dispatches (`agents/`).
    pub(crate) agents: agents::Agents,
    /// Which node may open a room (`placement.rs`); unset on a single node.
    pub(crate) placement: std::sync::OnceLock<Arc<dyn Placement>>,
    /// This node is draining: no new room opens here (`placement.rs`).
    pub(crate) draining: std::sync::atomic::AtomicBool,
}

/// Counts a running session task from its start until it has reported its leave.
pub(crate) struct SessionGuard(watch::Sender<usize>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Signaling {
    /// Creates the signaling layer over a running media plane. Room and participant events
    /// arrive on the returned receiver, in order.
    pub fn new(
        config: SignalingConfig,
        sfu: Arc<Sfu>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<SignalEvent>) {
        let (events, events_rx) = mpsc::unbounded_channel();
        let (shutdown, _) = watch::channel(false);
        let sig = Signaling {
            keys: config.keys,
            rooms: Arc::new(rooms::Rooms::new(config.rooms, events.clone())),
            sfu,
            events,
            shutdown,
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            server_version: PROTOCOL_SERVER_VERSION.to_owned(),
            node_id: config.node_id,
            ice_servers: config.ice_servers,
            revocations: Default::default(),
            names: config.names,
            limits: config.limits,
            single_pc: config.single_pc,
            live_sessions: watch::channel(0).0,
            whip: Default::default(),
            resumables: Default::default(),
            agents: Default::default(),
            placement: Default::default(),
            draining: Default::default(),
        };
        (Arc::new(sig), events_rx)
    }

    /// Routes `/rtc`, `/rtc/validate`, the refused `/rtc/v1` paths, and WHIP/WHEP
    /// (`/whip`, `/whep` and their session resources).
    pub fn router(self: &Arc<Self>) -> axum::Router {
        http::router(Arc::clone(self))
            .merge(whip::router(Arc::clone(self)))
            .merge(agents::router(Arc::clone(self)))
    }

    /// The API keys tokens are checked against.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// Participants connected to this node.
    pub fn participant_count(&self) -> usize {
        self.rooms.participant_count()
    }

    pub(crate) fn track_session(&self) -> SessionGuard {
        self.live_sessions.send_modify(|n| *n += 1);
        SessionGuard(self.live_sessions.clone())
    }

    /// Waits until no participant is on this node any more: no session task is running
    /// and no room has a member. Leaves are awaited as they happen; the member count is
    /// looked at again at least every second, since a WHIP/WHEP session is not a task.
    pub async fn until_no_participants(&self) {
        let mut live = self.live_sessions.subscribe();
        loop {
            if *live.borrow_and_update() == 0 && self.rooms.participant_count() == 0 {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), live.changed()).await;
        }
    }

    /// Tells every participant the server is shutting down and waits (up to `grace`) until
    /// every session has ended and reported its leave on the event channel.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.shutdown.send(true);
        self.rooms.evict_all(LeaveReason::ServerShutdown);
        let mut live = self.live_sessions.subscribe();
        let _ = tokio::time::timeout(grace, live.wait_for(|n| *n == 0)).await;
    }
}
