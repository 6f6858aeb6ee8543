//! The sans-IO TURN server: client messages and the time go in, [`Output`]s come out.
//!
//! A client is a [`Client`]: its address and the transport it came over (the listener's
//! UDP socket, or one TLS connection). Over TLS the caller frames the stream and hands in
//! whole messages; when the connection closes it calls [`TurnCore::connection_closed`].
//!
//! The caller owns the sockets and the clock (like str0m). After each call it drains
//! [`TurnCore::poll_output`]; every call queues at most a couple of outputs, so the queue
//! never grows beyond what one input produced. It calls [`TurnCore::handle_timeout`] about
//! once a second to let allocations, permissions and channels expire; expiry is also checked
//! on every packet, so the sweep only frees memory and sockets.

mod allocation;
mod reply;
mod requests;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use stun_types::message::{Message, MessageClass, StunParseError};
use turn_types::channel::ChannelData;

use crate::nonce::Nonces;
use crate::{TurnAuth, TurnConfig};
use allocation::Allocation;

/// Names an allocation between the core and its caller (the relay socket it owns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AllocationId(u64);

/// Names one TLS connection. The caller never reuses one while the server runs, so a late
/// message of a closed connection cannot reach an allocation of a newer one from the same
/// address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

/// The transport of a client's 5-tuple (RFC 8656 §2: the allocation is keyed by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientTransport {
    /// Datagrams on the UDP listener.
    Udp,
    /// One TLS-over-TCP connection on the TLS listener.
    Tls(ConnectionId),
}

/// A client: its address and the transport it speaks over. With the listener addresses
/// fixed, this is the 5-tuple an allocation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client {
    pub transport: ClientTransport,
    pub addr: SocketAddr,
}

impl Client {
    pub fn udp(addr: SocketAddr) -> Self {
        Self {
            transport: ClientTransport::Udp,
            addr,
        }
    }

    pub fn tls(connection: ConnectionId, addr: SocketAddr) -> Self {
        Self {
            transport: ClientTransport::Tls(connection),
            addr,
        }
    }

    /// Over a stream, ChannelData is padded to 4 bytes (RFC 8656 §12.5).
    fn is_stream(&self) -> bool {
        matches!(self.transport, ClientTransport::Tls(_))
    }
}

impl From<SocketAddr> for Client {
    fn from(addr: SocketAddr) -> Self {
        Self::udp(addr)
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.transport {
            ClientTransport::Udp => write!(f, "udp:{}", self.addr),
            ClientTransport::Tls(ConnectionId(id)) => write!(f, "tls#{id}:{}", self.addr),
        }
    }
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `data` to the client: from the UDP listener, or down its TLS connection (one
    /// whole, already framed message).
    ToClient { to: Client, data: Vec<u8> },
    /// Send `data` from the allocation's relay socket to the peer at `to`.
    ToPeer {
        allocation: AllocationId,
        to: SocketAddr,
        data: Vec<u8>,
    },
    /// Open a relay socket for a new allocation, then call [`TurnCore::relay_bound`].
    BindRelay { allocation: AllocationId },
    /// The allocation ended: close its relay socket.
    ReleaseRelay { allocation: AllocationId },
}

/// The TURN state machine of one listener.
pub struct TurnCore {
    config: TurnConfig,
    auth: Arc<dyn TurnAuth>,
    nonces: Nonces,
    /// By client 5-tuple (address and transport, the listeners being fixed).
    allocations: HashMap<Client, Allocation>,
    by_id: HashMap<AllocationId, Client>,
    /// Allocations per identity; an entry goes when its count reaches zero, so this is
    /// never larger than `allocations`.
    per_identity: HashMap<String, usize>,
    next_id: u64,
    out: VecDeque<Output>,
}

impl TurnCore {
    /// `nonce_key` must be secret and random per process; `now` is any instant before the
    /// first call (nonce timestamps count from it).
    pub fn new(
        config: TurnConfig,
        auth: Arc<dyn TurnAuth>,
        nonce_key: &[u8; 32],
        now: Instant,
    ) -> Self {
        let nonces = Nonces::new(nonce_key, now, config.limits.nonce_lifetime);
        Self {
            config,
            auth,
            nonces,
            allocations: HashMap::new(),
            by_id: HashMap::new(),
            per_identity: HashMap::new(),
            next_id: 0,
            out: VecDeque::new(),
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Allocations alive (including one whose relay is being bound).
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// A datagram from a client on the UDP listener, or one whole message from a TLS
    /// connection. `wall` is the wall-clock time credentials are checked against; `now`
    /// drives every timer.
    pub fn handle_client(&mut self, now: Instant, wall: SystemTime, from: Client, data: &[u8]) {
        // RFC 8656 §12: the top two bits tell STUN (00) from ChannelData (01).
        match data.first().map(|b| b >> 6) {
            Some(0) => match Message::from_bytes(data) {
                Ok(msg) => match msg.class() {
                    MessageClass::Request => self.handle_request(now, wall, from, &msg),
                    MessageClass::Indication if msg.has_method(turn_types::message::SEND) => {
                        self.handle_send(now, from, &msg)
                    }
                    // Responses, and indications we do not take: nothing to answer.
                    _ => {}
                },
                Err(e) => log_drop(from, "unparseable STUN message", Some(e)),
            },
            Some(1) => self.handle_channel_data(now, from, data),
            _ => log_drop(from, "neither STUN nor ChannelData", None),
        }
    }

    /// ChannelData from a client: relay the payload to the channel's peer.
    fn handle_channel_data(&mut self, now: Instant, from: Client, data: &[u8]) {
        let cd = match ChannelData::parse(data) {
            Ok(cd) => cd,
            Err(e) => return log_drop(from, "bad ChannelData", Some(e)),
        };
        let Some(alloc) = self.allocations.get(&from) else {
            return log_drop(from, "ChannelData without an allocation", None);
        };
        let Some(peer) = alloc.channel_peer(cd.id(), now) else {
            return log_drop(from, "ChannelData on an unbound channel", None);
        };
        if alloc.expires <= now || alloc.relay.is_none() || !alloc.has_permission(peer.ip(), now) {
            return log_drop(from, "ChannelData without a permission", None);
        }
        if !self.peer_allowed(peer) {
            return log_drop(from, "ChannelData to a denied peer", None);
        }
        self.out.push_back(Output::ToPeer {
            allocation: alloc.id,
            to: peer,
            data: cd.data().to_vec(),
        });
    }

    /// A datagram that reached an allocation's relay socket from `from`.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        allocation: AllocationId,
        from: SocketAddr,
        data: &[u8],
    ) {
        let Some(client) = self.by_id.get(&allocation).copied() else {
            return;
        };
        let Some(alloc) = self.allocations.get(&client) else {
            return;
        };
        // Only peers the client opened a permission to may reach it (RFC 8656 §9); the
        // policy is checked again in case the allow-list changed under a live permission.
        if alloc.expires <= now || !alloc.has_permission(from.ip(), now) || !self.peer_allowed(from)
        {
            return;
        }
        let data = match alloc.channel_of(from, now) {
            Some(channel) => reply::channel_data(channel, data, client.is_stream()),
            None => reply::data_indication(from, data).ok(),
        };
        match data {
            Some(data) => self.out.push_back(Output::ToClient { to: client, data }),
            None => tracing::trace!(%from, "peer datagram too large to relay"),
        }
    }

    /// The caller bound (or failed to bind) the relay socket asked for by
    /// [`Output::BindRelay`]. `local` is the socket's local address, `None` if no socket
    /// could be bound (the client gets 508).
    pub fn relay_bound(
        &mut self,
        now: Instant,
        allocation: AllocationId,
        local: Option<SocketAddr>,
    ) {
        let Some(client) = self.by_id.get(&allocation).copied() else {
            // The allocation went while its socket was being bound.
            if local.is_some() {
                self.out.push_back(Output::ReleaseRelay { allocation });
            }
            return;
        };
        let relay = local.map(|local| {
            SocketAddr::new(
                self.config.relay_public_ip.unwrap_or(local.ip()),
                local.port(),
            )
        });
        match relay {
            Some(relay) => {
                if let Some(alloc) = self.allocations.get_mut(&client) {
                    alloc.relay = Some(relay);
                }
                self.answer_allocate(now, client);
            }
            None => {
                tracing::warn!(%client, "no TURN relay port available");
                if let Some(alloc) = self.remove(client) {
                    let reply = reply::Reply::error(
                        turn_types::message::ALLOCATE,
                        alloc.txid,
                        stun_types::attribute::ErrorCode::INSUFFICIENT_CAPACITY,
                    );
                    self.send(client, reply, Some(&alloc.key));
                }
            }
        }
    }

    /// A TLS connection closed: its allocation, if any, ends now (RFC 8656: an allocation
    /// made over a stream lives no longer than its connection). Also frees its quota.
    pub fn connection_closed(&mut self, client: Client) {
        if self.remove(client).is_some() {
            tracing::debug!(%client, "TURN allocation ended with its connection");
        }
    }

    /// Ends expired allocations and forgets expired permissions and channels.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<Client> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(client, _)| *client)
            .collect();
        for client in expired {
            tracing::debug!(%client, "TURN allocation expired");
            self.remove(client);
        }
        for alloc in self.allocations.values_mut() {
            alloc.expire(now);
        }
    }

    /// Whether relaying to or from `peer` is allowed: the policy, and never our own
    /// listener (a loop through ourselves).
    fn peer_allowed(&self, peer: SocketAddr) -> bool {
        let listen = self.config.listen;
        let is_listener = peer.port() == listen.port()
            && (listen.ip().is_unspecified() || same_ip(listen.ip(), peer.ip()));
        !is_listener && self.config.peers.allows(peer.ip())
    }

    /// Removes an allocation and releases its relay socket.
    fn remove(&mut self, client: Client) -> Option<Allocation> {
        let alloc = self.allocations.remove(&client)?;
        self.by_id.remove(&alloc.id);
        if let Some(n) = self.per_identity.get_mut(&alloc.identity) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_identity.remove(&alloc.identity);
            }
        }
        self.out.push_back(Output::ReleaseRelay {
            allocation: alloc.id,
        });
        Some(alloc)
    }

    fn send(
        &mut self,
        to: Client,
        reply: reply::Reply,
        key: Option<&stun_types::message::IntegrityKey>,
    ) {
        match reply.finish(key) {
            Ok(data) => self.out.push_back(Output::ToClient { to, data }),
            Err(e) => tracing::warn!(error = %e, "TURN reply not built"),
        }
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// Bad input loses nothing but itself; logged at trace level since anyone can send it.
fn log_drop(from: Client, what: &str, err: Option<StunParseError>) {
    match err {
        Some(e) => tracing::trace!(%from, error = %e, "TURN: dropped {what}"),
        None => tracing::trace!(%from, "TURN: dropped {what}"),
    }
}
