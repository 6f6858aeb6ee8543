//! Switchboard's embedded TURN server: the subset of RFC 8656 that browsers use, over UDP
//! and over TLS ("turns:"), relaying to peers over UDP.
//!
//! Why our own server rather than a TURN server crate: none of them had all of what an SFU
//! exposed to the internet needs at once: a credential hook for the TURN REST usernames
//! signaling mints (`EXPIRY:IDENTITY`), a per-identity allocation quota answered with 486,
//! peer filtering answered with 403, and request state that a stranger cannot grow. The wire
//! format comes from `stun-types`/`turn-types`; the state machine and the policies are here.
//!
//! Two layers:
//! - [`core::TurnCore`], sans-IO like str0m: datagrams and the current time go in, datagrams
//!   to send and relay sockets to open or close come out. No sockets, no clock reads, so
//!   every rule (auth, quota, expiry, peer policy) is tested with time handed in.
//! - [`start`], the tokio front: one UDP listener, an optional TLS listener ([`TlsConfig`]),
//!   one UDP relay socket per allocation, and one task that owns the core.
//!
//! Bounded by construction: allocations (in total and per identity), permissions and
//! channels per allocation are capped by [`Limits`]; nonces are stateless (a MAC over a
//! timestamp and the client's address), so unauthenticated requests store nothing. TLS
//! connections are capped in total and per IP, timed out in the handshake and when idle,
//! and buffer a bounded number of bytes each ([`TlsLimits`]).

pub mod core;
mod nonce;
pub mod policy;
mod server;
mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime};

pub use policy::{Cidr, PeerPolicy};
pub use server::{start, TurnServer};
pub use tls::{TlsCertificate, TlsConfig, TlsLimits, MIN_BUFFERED_BYTES};

/// Looks up the password of a TURN username. Implemented by the embedder: Switchboard
/// recomputes TURN REST passwords from its shared secret.
pub trait TurnAuth: Send + Sync + 'static {
    /// `Some((identity, password))` if `username` may use the server at `now`; `None` if the
    /// username is unknown, malformed or expired, which the client gets as 401.
    ///
    /// The identity is what quotas count: every allocation made with a username of the same
    /// identity counts against that identity's quota.
    fn password(&self, username: &str, now: SystemTime) -> Option<(String, String)>;
}

/// Caps and timers. Every table a client can grow has a cap here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Allocation lifetime when the client asks for none or for less (RFC 8656: 600 s).
    pub default_lifetime: Duration,
    /// Longest lifetime a client gets, whatever it asks (RFC 8656: 3600 s).
    pub max_lifetime: Duration,
    /// Allocations on the whole server (508 beyond). Each holds one UDP socket.
    pub max_allocations: usize,
    /// Allocations per identity (486 beyond).
    pub max_allocations_per_identity: usize,
    /// Peer IP addresses with a permission, per allocation (508 beyond).
    pub max_permissions_per_allocation: usize,
    /// Channels per allocation (508 beyond).
    pub max_channels_per_allocation: usize,
    /// How long a nonce is accepted before the client gets 438 and a new one.
    pub nonce_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            max_allocations: 1000,
            // A participant has two PeerConnections (v0), each of which may allocate on an
            // IPv4 and an IPv6 server address and again after an ICE restart.
            max_allocations_per_identity: 10,
            max_permissions_per_allocation: 32,
            max_channels_per_allocation: 32,
            nonce_lifetime: Duration::from_secs(600),
        }
    }
}

/// Permission lifetime, fixed by RFC 8656 §9.
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel binding lifetime, fixed by RFC 8656 §12.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);

/// What the server needs to run.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// The UDP listener clients talk to (e.g. `0.0.0.0:3478`).
    pub listen: SocketAddr,
    /// The local address relay sockets bind to. Must not be unspecified unless
    /// `relay_public_ip` is set: it is what clients are told to give their peers.
    pub relay_ip: IpAddr,
    /// The address peers reach relay sockets at, when it differs from `relay_ip` (a host
    /// behind 1:1 NAT). The port is always the relay socket's own.
    pub relay_public_ip: Option<IpAddr>,
    /// Relay sockets bind in this port range; `None` takes ephemeral ports (tests).
    pub relay_ports: Option<RangeInclusive<u16>>,
    /// The REALM of long-term credentials.
    pub realm: String,
    pub limits: Limits,
    pub peers: PeerPolicy,
    /// Datagrams from relay sockets waiting for the core. Beyond this they are dropped, as a
    /// congested UDP path would.
    pub peer_queue: usize,
    /// TURN over TLS ("turns:...?transport=tcp"); `None` serves UDP only.
    pub tls: Option<TlsConfig>,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 3478)),
            relay_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            relay_public_ip: None,
            relay_ports: None,
            realm: "switchboard".to_owned(),
            limits: Limits::default(),
            peers: PeerPolicy::default(),
            peer_queue: 1024,
            tls: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("invalid TURN configuration: {0}")]
    Config(String),
    #[error("cannot bind the TURN listener on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the TURN nonce key: the system random generator failed")]
    Random,
    #[error("cannot read the TURN TLS {what} from PEM: {source}")]
    Pem {
        what: &'static str,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the TURN TLS certificate or key was refused: {0}")]
    Tls(rustls::Error),
}
