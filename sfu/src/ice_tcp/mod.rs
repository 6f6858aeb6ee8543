//! ICE over TCP: passive host candidates on one port (RFC 6544), each connection carrying
//! STUN, DTLS, RTP and RTCP as RFC 4571 frames (a 16-bit length before each datagram).
//!
//! A client that cannot reach the workers' UDP ports (a firewall that drops UDP) connects
//! here instead. The front door (`front_door.rs`) accepts the connections of every worker on
//! one port, reads the first frame — the client's STUN binding request, whose USERNAME names
//! our peer — and hands the connection to the worker whose peer accepts it. From then on
//! the worker (`links.rs`) takes the connection's frames as datagrams from that peer, and
//! the peer's datagrams go back down it. UDP stays preferred: TCP host candidates carry a
//! lower ICE priority (type preference 90 against 126), so a client nominates them only when
//! no UDP pair works.
//!
//! Bounds, all for a client that opens connections and never uses them, or floods them:
//! - connections in all: [`crate::SfuConfig::max_tcp_connections`], and from one address (an
//!   IPv4 address, an IPv6 /64): [`crate::SfuConfig::tcp_connections_per_address`]; more are
//!   closed at accept;
//! - the first frame must arrive within [`FIRST_FRAME_TIMEOUT`], and be a STUN request some
//!   peer accepts;
//! - one peer takes at most [`LINKS_PER_PEER`] connections;
//! - a connection that brings no frame for [`IDLE_TIMEOUT`] is closed (ICE consent checks
//!   arrive every few seconds on a live one);
//! - frames over [`MAX_FRAME`] bytes close the connection (no datagram of ours is that long);
//! - each connection queues at most [`WRITE_QUEUE`] datagrams to send; more are dropped, as
//!   a full UDP socket buffer would, and a send stalled for [`WRITE_STALL_TIMEOUT`] closes it;
//! - a worker holds at most [`RECEIVE_QUEUE`] received frames of all its connections; a full
//!   queue stops reading, so TCP's own flow control slows the sender.

pub(crate) mod front_door;
pub(crate) mod links;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use str0m::net::Protocol;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Where a peer's datagrams go: a UDP address, or down the TCP connection from an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Route {
    Udp(SocketAddr),
    Tcp(SocketAddr),
}

impl Route {
    /// The route of a datagram str0m transmits.
    pub fn of(proto: Protocol, destination: SocketAddr) -> Route {
        match proto {
            Protocol::Udp => Route::Udp(destination),
            _ => Route::Tcp(destination),
        }
    }

    /// The benches' in-memory network routes by address alone.
    #[cfg(any(test, feature = "bench"))]
    pub fn addr(&self) -> SocketAddr {
        match self {
            Route::Udp(a) | Route::Tcp(a) => *a,
        }
    }
}

/// How long a new connection may take to send its first frame.
pub(crate) const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may go without a frame before it is closed. Browsers check
/// consent every ~5 s on the pair in use; a pair they dropped goes quiet.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections one peer may hold (a browser opens one per local interface it tries).
pub(crate) const LINKS_PER_PEER: usize = 8;
/// The longest frame taken: the UDP path reads datagrams into a buffer of this size too.
pub(crate) const MAX_FRAME: usize = 2048;
/// Datagrams waiting to be written to one connection (~300 KB of media).
pub(crate) const WRITE_QUEUE: usize = 256;
/// A connection whose writes made no progress this long is closed.
pub(crate) const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Received frames waiting for a worker, over all its connections.
pub(crate) const RECEIVE_QUEUE: usize = 1024;
/// Default for [`crate::SfuConfig::max_tcp_connections`].
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 4096;
/// Default for [`crate::SfuConfig::tcp_connections_per_address`].
pub const DEFAULT_TCP_CONNECTIONS_PER_ADDRESS: usize = 256;

/// Open connections per client address: an IPv4 address, or an IPv6 /64 (one host's share
/// of a network), as the HTTP server counts them.
#[derive(Debug)]
pub(crate) struct PerAddress {
    counts: Mutex<HashMap<IpAddr, usize>>,
    limit: usize,
}

impl PerAddress {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::new(HashMap::new()),
            limit,
        })
    }

    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::from(segments)
            }
        }
    }

    /// Counts a new connection from `ip`, if it is under the limit.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = Self::key(ip);
        // Plain counters: a panic elsewhere while holding the lock leaves them usable.
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(key).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            owner: Arc::clone(self),
            key,
        })
    }
}

/// A connection's place in its address's count, given back when the connection closes.
#[derive(Debug)]
pub(crate) struct AddressSlot {
    owner: Arc<PerAddress>,
    key: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Everything that counts a connection against the limits, released when it closes.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    pub _total: tokio::sync::OwnedSemaphorePermit,
    pub _address: AddressSlot,
}

/// Reads one RFC 4571 frame. `Ok(None)` at a clean end of the stream between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 || len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes (at most {MAX_FRAME} are taken)"),
        ));
    }
    let mut frame = vec![0u8; len];
    reader.read_exact(&mut frame).await?;
    Ok(Some(frame))
}

/// The length prefix written before a datagram.
pub(crate) fn frame_header(len: usize) -> Option<[u8; 2]> {
    u16::try_from(len).ok().map(u16::to_be_bytes)
}

/// A connection the front door accepted, on its way to the worker whose peer it is for.
#[derive(Debug)]
pub(crate) struct TcpHandoff {
    pub stream: std::net::TcpStream,
    pub remote: SocketAddr,
    /// The first frame, already read: a STUN binding request.
    pub first: Vec<u8>,
    /// Counts the connection against the limits until it closes.
    pub permit: ConnectionSlot,
}

#[cfg(test)]
mod tests;
