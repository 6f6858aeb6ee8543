//! The tokio front: one UDP listener, an optional TLS listener (`crate::tls`), one UDP
//! socket per allocation, one task that owns the core. Relay sockets are read by a task
//! each and feed the core through a bounded queue; TLS connections feed it through another.
//! Sends never wait (`try_send_to`, `TlsLink::send`): a full socket buffer or connection
//! queue drops the message, as the network would, instead of stalling every other client
//! behind it.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::core::{AllocationId, Client, ClientTransport, ConnectionId, Output, TurnCore};
use crate::tls::{self, ConnectionCount, TlsEvent, TlsLink};
use crate::{TurnAuth, TurnConfig, TurnError};

/// The listener reads whole datagrams: one buffer for the whole server.
const LISTENER_BUFFER: usize = 65_536;
/// A relay socket's buffer. WebRTC keeps datagrams under the path MTU (DTLS fragments its
/// handshake to fit), so larger peer datagrams are dropped; a per-allocation 64 KiB buffer
/// would cost 64 MB at a thousand allocations.
const RELAY_BUFFER: usize = 4096;
/// Ports tried per allocation before answering 508, so a range exhausted by other
/// processes costs a bounded number of `bind` calls.
const BIND_ATTEMPTS: usize = 128;
/// How often allocations, permissions and channels are swept for expiry.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Events from all TLS connections waiting for the core. When it is full a connection
/// stops reading until there is room (TCP pushes back on that client).
const TLS_EVENT_QUEUE: usize = 1024;

/// A running TURN server. Dropping it stops the server too, without waiting.
#[derive(Debug)]
pub struct TurnServer {
    local_addr: SocketAddr,
    tls_local_addr: Option<SocketAddr>,
    allocations: Arc<AtomicUsize>,
    tls_connections: Option<ConnectionCount>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TurnServer {
    /// The UDP listener's address (with the port chosen when the configured one was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TLS listener's address, if one was configured.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_local_addr
    }

    /// Allocations alive, over every transport (for metrics).
    pub fn allocation_count(&self) -> usize {
        self.allocations.load(Ordering::Relaxed)
    }

    /// TLS connections open, handshaking included (0 without a TLS listener).
    pub fn tls_connection_count(&self) -> usize {
        self.tls_connections
            .as_ref()
            .map_or(0, ConnectionCount::get)
    }

    /// Stops the server and waits until every socket is closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "TURN server task failed");
            }
        }
    }
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds the listeners and starts serving on the current tokio runtime.
pub async fn start(
    mut config: TurnConfig,
    auth: Arc<dyn TurnAuth>,
) -> Result<TurnServer, TurnError> {
    validate(&config)?;
    // The core needs none of it (and should not hold the private key).
    let tls_config = config.tls.take();
    // Certificate errors first: nothing is bound yet.
    let rustls_config = match &tls_config {
        Some(tls) => Some(tls::server_config(&tls.certificate)?),
        None => None,
    };
    let listener = UdpSocket::bind(config.listen)
        .await
        .map_err(|source| TurnError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| TurnError::Bind {
        addr: config.listen,
        source,
    })?;
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| TurnError::Random)?;
    let relay_ip = config.relay_ip;
    let ports = RelayPorts::new(config.relay_ports.clone());
    let (peer_tx, peer_rx) = mpsc::channel(config.peer_queue);
    let mut tls_local_addr = None;
    let mut tls_front = None;
    if let (Some(tls), Some(rustls_config)) = (tls_config, rustls_config) {
        let bind_err = |source| TurnError::Bind {
            addr: tls.listen,
            source,
        };
        let tcp = TcpListener::bind(tls.listen).await.map_err(bind_err)?;
        tls_local_addr = Some(tcp.local_addr().map_err(bind_err)?);
        let (tx, rx) = mpsc::channel(TLS_EVENT_QUEUE);
        let acceptor = tls::spawn_acceptor(tcp, rustls_config, tls.limits, tx);
        tls_front = Some(TlsFront {
            count: acceptor.connection_count(),
            acceptor: acceptor.task,
            rx,
            links: HashMap::new(),
        });
    }
    let tls_connections = tls_front.as_ref().map(|t| t.count.clone());
    let allocations = Arc::new(AtomicUsize::new(0));
    // The core refuses peers that are our own listener: give it the real port.
    let core_config = TurnConfig {
        listen: local_addr,
        ..config
    };
    let core = TurnCore::new(core_config, auth, &key, Instant::now());
    let driver = Driver {
        core,
        listener,
        relay_ip,
        relays: HashMap::new(),
        ports,
        peer_tx,
        allocations: allocations.clone(),
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(driver.run(peer_rx, tls_front, stop_rx));
    tracing::info!(%local_addr, tls = ?tls_local_addr, "TURN server listening");
    Ok(TurnServer {
        local_addr,
        tls_local_addr,
        allocations,
        tls_connections,
        stop: Some(stop_tx),
        task: Some(task),
    })
}

fn validate(config: &TurnConfig) -> Result<(), TurnError> {
    let bad = |what: &str| Err(TurnError::Config(what.to_owned()));
    if config.realm.is_empty() || stun_types::attribute::Realm::new(&config.realm).is_err() {
        return bad("realm must be 1 to 763 bytes");
    }
    let limits = &config.limits;
    if limits.default_lifetime.is_zero() || limits.default_lifetime > limits.max_lifetime {
        return bad("default_lifetime must be positive and at most max_lifetime");
    }
    if limits.max_lifetime.as_secs() > u64::from(u32::MAX) {
        return bad("max_lifetime must fit in 32 bits of seconds");
    }
    if limits.nonce_lifetime.is_zero() {
        return bad("nonce_lifetime must be positive");
    }
    if config.relay_ip.is_unspecified() && config.relay_public_ip.is_none() {
        return bad("relay_ip is unspecified: set relay_public_ip to the address peers reach");
    }
    if let Some(range) = &config.relay_ports {
        if range.is_empty() || *range.start() == 0 {
            return bad("relay_ports must be a non-empty range of non-zero ports");
        }
    }
    if config.peer_queue == 0 {
        return bad("peer_queue must be positive");
    }
    if let Some(tls) = &config.tls {
        tls::validate(tls)?;
    }
    Ok(())
}

/// A datagram a relay socket received, on its way to the core.
struct PeerDatagram {
    allocation: AllocationId,
    from: SocketAddr,
    data: Vec<u8>,
}

struct Relay {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
    port: u16,
}

struct Driver {
    core: TurnCore,
    listener: UdpSocket,
    relay_ip: IpAddr,
    /// One per allocation the core holds, so bounded by `max_allocations`.
    relays: HashMap<AllocationId, Relay>,
    ports: RelayPorts,
    peer_tx: mpsc::Sender<PeerDatagram>,
    /// What `TurnServer::allocation_count` reads, updated after every input.
    allocations: Arc<AtomicUsize>,
}

/// The driver's side of the TLS listener.
struct TlsFront {
    acceptor: JoinHandle<()>,
    count: ConnectionCount,
    rx: mpsc::Receiver<TlsEvent>,
    /// Open connections that completed their handshake: bounded by `max_connections`.
    links: HashMap<ConnectionId, TlsLink>,
}

/// The next TLS event, or never without a TLS listener.
async fn next_tls_event(tls: &mut Option<TlsFront>) -> Option<TlsEvent> {
    match tls {
        Some(tls) => tls.rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Driver {
    async fn run(
        mut self,
        mut peer_rx: mpsc::Receiver<PeerDatagram>,
        mut tls: Option<TlsFront>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut buf = vec![0u8; LISTENER_BUFFER];
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // A send or a dropped `TurnServer`: stop either way.
                _ = &mut stop => break,
                received = self.listener.recv_from(&mut buf) => match received {
                    Ok((n, from)) => {
                        let data = buf.get(..n).unwrap_or_default();
                        let from = Client::udp(from);
                        self.core.handle_client(Instant::now(), SystemTime::now(), from, data);
                    }
                    // ICMP errors surface here on some platforms; the socket itself is fine.
                    Err(e) => tracing::debug!(error = %e, "TURN listener receive error"),
                },
                Some(p) = peer_rx.recv() => {
                    self.core.handle_peer(Instant::now(), p.allocation, p.from, &p.data);
                }
                Some(event) = next_tls_event(&mut tls) => self.handle_tls(&mut tls, event),
                _ = sweep.tick() => self.core.handle_timeout(Instant::now()),
            }
            self.flush(&tls);
        }
        for (_, relay) in self.relays.drain() {
            relay.reader.abort();
        }
        if let Some(tls) = tls {
            // Dropping the queue's receiver stops the accept task, which closes every
            // connection before it ends; wait for it so the port is free on return.
            drop(tls.rx);
            if let Err(e) = tls.acceptor.await {
                tracing::warn!(error = %e, "TURN TLS accept task failed");
            }
        }
        tracing::info!("TURN server stopped");
    }

    fn handle_tls(&mut self, tls: &mut Option<TlsFront>, event: TlsEvent) {
        let Some(tls) = tls else {
            return;
        };
        match event {
            TlsEvent::Opened { client, link } => {
                if let ClientTransport::Tls(id) = client.transport {
                    tls.links.insert(id, link);
                }
            }
            TlsEvent::Message { client, data } => {
                self.core
                    .handle_client(Instant::now(), SystemTime::now(), client, &data);
            }
            TlsEvent::Closed { client } => {
                if let ClientTransport::Tls(id) = client.transport {
                    tls.links.remove(&id);
                }
                self.core.connection_closed(client);
            }
        }
    }

    /// Carries out what the core asked for.
    fn flush(&mut self, tls: &Option<TlsFront>) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::ToClient { to, data } => match to.transport {
                    ClientTransport::Udp => {
                        if let Err(e) = self.listener.try_send_to(&data, to.addr) {
                            tracing::trace!(%to, error = %e, "TURN send to client dropped");
                        }
                    }
                    ClientTransport::Tls(id) => {
                        let link = tls.as_ref().and_then(|tls| tls.links.get(&id));
                        // A connection that closed meanwhile has no link: nothing to do.
                        if link.is_some_and(|link| !link.send(data)) {
                            tracing::trace!(%to, "TURN send to a slow TLS client dropped");
                        }
                    }
                },
                Output::ToPeer {
                    allocation,
                    to,
                    data,
                } => {
                    if let Some(relay) = self.relays.get(&allocation) {
                        if let Err(e) = relay.socket.try_send_to(&data, to) {
                            tracing::trace!(%to, error = %e, "TURN send to peer dropped");
                        }
                    }
                }
                Output::BindRelay { allocation } => {
                    let local = self.bind_relay(allocation);
                    self.core.relay_bound(Instant::now(), allocation, local);
                }
                Output::ReleaseRelay { allocation } => {
                    if let Some(relay) = self.relays.remove(&allocation) {
                        relay.reader.abort();
                        self.ports.release(relay.port);
                    }
                }
            }
        }
        self.allocations
            .store(self.core.allocation_count(), Ordering::Relaxed);
    }

    /// Binds a relay socket in the port range and starts its reader.
    fn bind_relay(&mut self, allocation: AllocationId) -> Option<SocketAddr> {
        for port in self.ports.candidates() {
            match bind_udp(SocketAddr::new(self.relay_ip, port)) {
                Ok(socket) => {
                    let local = match socket.local_addr() {
                        Ok(local) => local,
                        Err(e) => {
                            tracing::warn!(error = %e, "TURN relay socket has no address");
                            return None;
                        }
                    };
                    let socket = Arc::new(socket);
                    let reader =
                        tokio::spawn(read_relay(socket.clone(), allocation, self.peer_tx.clone()));
                    self.ports.take(local.port());
                    self.relays.insert(
                        allocation,
                        Relay {
                            socket,
                            reader,
                            port: local.port(),
                        },
                    );
                    return Some(local);
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => {
                    tracing::warn!(error = %e, ip = %self.relay_ip, port, "TURN relay socket not bound");
                    return None;
                }
            }
        }
        None
    }
}

/// `bind` is one system call: done in place so the allocation is answered in the same turn.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

async fn read_relay(
    socket: Arc<UdpSocket>,
    allocation: AllocationId,
    tx: mpsc::Sender<PeerDatagram>,
) {
    // One byte more than we relay: a datagram that fills the buffer was truncated.
    let mut buf = vec![0u8; RELAY_BUFFER + 1];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) if n <= RELAY_BUFFER => {
                let data = buf.get(..n).unwrap_or_default().to_vec();
                match tx.try_send(PeerDatagram {
                    allocation,
                    from,
                    data,
                }) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::trace!(%from, "TURN relay queue full, datagram dropped");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Ok((_, from)) => tracing::trace!(%from, "oversize peer datagram dropped"),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => {
                // Not a per-datagram error: the socket is unusable. The allocation lives on
                // without inbound data until it expires or is refreshed away.
                tracing::warn!(error = %e, "TURN relay socket failed");
                return;
            }
        }
    }
}

/// Which relay ports are ours, and where to look for the next one. Ports are handed out
/// round-robin so a port just released is not reused at once (late packets of the old
/// allocation would reach the new one).
struct RelayPorts {
    range: Option<RangeInclusive<u16>>,
    next: u16,
    in_use: HashSet<u16>,
}

impl RelayPorts {
    fn new(range: Option<RangeInclusive<u16>>) -> Self {
        let next = range.as_ref().map_or(0, |r| *r.start());
        Self {
            range,
            next,
            in_use: HashSet::new(),
        }
    }

    /// Ports to try, at most `BIND_ATTEMPTS`; `[0]` (ephemeral) without a range.
    fn candidates(&self) -> Vec<u16> {
        let Some(range) = &self.range else {
            return vec![0];
        };
        let (start, end) = (u32::from(*range.start()), u32::from(*range.end()));
        let len = end - start + 1;
        let first = u32::from(self.next).clamp(start, end) - start;
        (0..len)
            .map(|i| (start + (first + i) % len) as u16)
            .filter(|p| !self.in_use.contains(p))
            .take(BIND_ATTEMPTS)
            .collect()
    }

    fn take(&mut self, port: u16) {
        if let Some(range) = &self.range {
            self.in_use.insert(port);
            self.next = if port >= *range.end() {
                *range.start()
            } else {
                port + 1
            };
        }
    }

    fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_ports_go_round_robin_and_skip_ours() {
        let mut ports = RelayPorts::new(Some(50_000..=50_003));
        assert_eq!(ports.candidates(), vec![50_000, 50_001, 50_002, 50_003]);
        ports.take(50_000);
        ports.take(50_001);
        assert_eq!(ports.candidates(), vec![50_002, 50_003]);
        ports.release(50_000);
        assert_eq!(ports.candidates(), vec![50_002, 50_003, 50_000]);
        ports.take(50_003);
        assert_eq!(
            ports.candidates(),
            vec![50_000, 50_002],
            "wraps after the end"
        );
        assert_eq!(RelayPorts::new(None).candidates(), vec![0]);
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        let ok = TurnConfig::default();
        assert!(validate(&ok).is_ok());
        let unspecified = TurnConfig {
            relay_ip: "0.0.0.0".parse().expect("ip"),
            ..TurnConfig::default()
        };
        let err = validate(&unspecified).expect_err("unspecified relay address");
        assert!(err.to_string().contains("relay_public_ip"), "{err}");
        let mut lifetimes = TurnConfig::default();
        lifetimes.limits.default_lifetime = Duration::from_secs(7200);
        assert!(validate(&lifetimes).is_err());
        let ports = TurnConfig {
            relay_ports: Some(0..=10),
            ..TurnConfig::default()
        };
        assert!(validate(&ports).is_err());
    }
}
