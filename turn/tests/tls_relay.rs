//! TURN over TLS on loopback: an independent TURN client (`turn-client-proto`'s TCP
//! client, which frames the stream itself) over a tokio-rustls connection allocates,
//! relays to a UDP peer and back, and loses its allocation when the connection closes.
//! Then the connection limits: the handshake timeout, the idle timeout, a malformed
//! stream and the per-IP cap.
//!
//! tests/data/cert.pem and key.pem are a self-signed P-256 certificate for 127.0.0.1,
//! generated once with:
//! `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650
//! -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost
//! -addext basicConstraints=critical,CA:FALSE -keyout key.pem -out cert.pem`
//! (CA:FALSE because webpki refuses a CA certificate as a server's own).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use switchboard_turn::{
    start, PeerPolicy, TlsCertificate, TlsConfig, TlsLimits, TurnAuth, TurnConfig, TurnServer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use turn_client_proto::api::{
    TurnClientApi, TurnConfig as ClientConfig, TurnEvent, TurnPollRet as PollRet, TurnRecvRet,
};
use turn_client_proto::stun::agent::Transmit;
use turn_client_proto::stun::Instant;
use turn_client_proto::tcp::TurnClientTcp;
use turn_client_proto::types::{TransportType, TurnCredentials};

const CERT: &[u8] = include_bytes!("data/cert.pem");
const KEY: &[u8] = include_bytes!("data/key.pem");

struct OneUser;

impl TurnAuth for OneUser {
    fn password(&self, username: &str, _now: SystemTime) -> Option<(String, String)> {
        (username == "alice").then(|| ("alice".to_owned(), "secret".to_owned()))
    }
}

fn loopback() -> IpAddr {
    "127.0.0.1".parse().expect("ip")
}

async fn server(limits: TlsLimits) -> TurnServer {
    let certificate = TlsCertificate::Pem {
        chain: CERT.to_vec(),
        key: KEY.to_vec(),
    };
    let config = TurnConfig {
        listen: SocketAddr::new(loopback(), 0),
        relay_ip: loopback(),
        peers: PeerPolicy {
            allow_loopback: true,
            ..PeerPolicy::default()
        },
        tls: Some(TlsConfig {
            limits,
            ..TlsConfig::new(SocketAddr::new(loopback(), 0), certificate)
        }),
        ..TurnConfig::default()
    };
    start(config, Arc::new(OneUser))
        .await
        .expect("server starts")
}

/// A TLS connection that trusts the test certificate only.
async fn connect(server: SocketAddr) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(CERT).expect("test certificate"))
        .expect("trusted");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(server).await.expect("connect");
    let name = ServerName::IpAddress(loopback().into());
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

/// Polls `cond` every 10 ms for up to 5 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the server closed `stream` within `within` (EOF or an error, not a timeout).
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// The sans-IO client and its TLS stream, pumped by hand.
struct Client {
    turn: TurnClientTcp,
    stream: TlsStream<TcpStream>,
    base: std::time::Instant,
}

enum Got {
    Event(TurnEvent),
    Peer(SocketAddr, Vec<u8>),
}

impl Client {
    async fn new(server: SocketAddr) -> Self {
        let stream = connect(server).await;
        let local = stream.get_ref().0.local_addr().expect("local address");
        let turn = TurnClientTcp::allocate(
            local,
            server,
            ClientConfig::new(TurnCredentials::new("alice", "secret")),
        );
        Self {
            turn,
            stream,
            base: std::time::Instant::now(),
        }
    }

    fn now(&self) -> Instant {
        Instant::from_std(self.base)
    }

    async fn write(&mut self, data: &[u8]) {
        self.stream.write_all(data).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// Runs the client until it reports an event or peer data (5 s at most).
    async fn next(&mut self) -> Got {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 4096];
        loop {
            let wake = match self.turn.poll(self.now()) {
                PollRet::WaitUntil(at) => at.saturating_duration_since(self.now()),
                PollRet::Closed => panic!("the client gave up"),
                _ => Duration::ZERO,
            };
            while let Some(t) = self.turn.poll_transmit(self.now()) {
                let data = t.data.as_ref().to_vec();
                self.write(&data).await;
            }
            if let Some(event) = self.turn.poll_event() {
                return Got::Event(event);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server answered in time"
            );
            let wake = wake.clamp(Duration::from_millis(1), Duration::from_millis(100));
            let Ok(read) = tokio::time::timeout(wake, self.stream.read(&mut buf)).await else {
                continue;
            };
            let n = read.expect("read");
            assert!(n > 0, "the server closed the connection");
            let (local, remote) = (self.turn.local_addr(), self.turn.remote_addr());
            let transmit = Transmit::new(&buf[..n], TransportType::Tcp, remote, local);
            match self.turn.recv(transmit, self.now()) {
                TurnRecvRet::PeerData(data) => return Got::Peer(data.peer, data.data().to_vec()),
                TurnRecvRet::Handled | TurnRecvRet::Ignored(_) | TurnRecvRet::PeerIcmp { .. } => {}
            }
        }
    }

    async fn send(&mut self, peer: SocketAddr, data: &[u8]) {
        let now = self.now();
        let transmit = self
            .turn
            .send_to(TransportType::Udp, peer, data.to_vec(), now)
            .expect("a permission for the peer")
            .expect("something to send")
            .build();
        let data: &[u8] = &transmit.data;
        let data = data.to_vec();
        self.write(&data).await;
    }
}

async fn peer_receives(peer: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
        .await
        .expect("the relay delivered in time")
        .expect("receive");
    (buf[..n].to_vec(), from)
}

#[tokio::test]
async fn a_tls_client_relays_to_a_udp_peer_and_its_allocation_ends_with_the_connection() {
    let server = server(TlsLimits::default()).await;
    let tls_addr = server.tls_local_addr().expect("a TLS listener");
    let mut client = Client::new(tls_addr).await;

    let relayed = match client.next().await {
        Got::Event(TurnEvent::AllocationCreated(TransportType::Udp, relayed)) => relayed,
        Got::Event(other) => panic!("expected an allocation, got {other:?}"),
        Got::Peer(..) => panic!("expected an allocation, got peer data"),
    };
    assert_eq!(relayed.ip(), loopback());
    assert_eq!(server.allocation_count(), 1);
    assert_eq!(server.tls_connection_count(), 1);

    let peer = UdpSocket::bind((loopback(), 0)).await.expect("peer socket");
    let peer_addr = peer.local_addr().expect("peer address");
    let now = client.now();
    client
        .turn
        .create_permission(TransportType::Udp, loopback(), now)
        .expect("permission request");
    assert!(matches!(
        client.next().await,
        Got::Event(TurnEvent::PermissionCreated(TransportType::Udp, _))
    ));

    // Send indication out, Data indication back down the TLS connection.
    client.send(peer_addr, b"ping over Send").await;
    assert_eq!(
        peer_receives(&peer).await,
        (b"ping over Send".to_vec(), relayed)
    );
    peer.send_to(b"pong as Data", relayed)
        .await
        .expect("peer sends");
    match client.next().await {
        Got::Peer(from, data) => {
            assert_eq!((from, data.as_slice()), (peer_addr, &b"pong as Data"[..]))
        }
        Got::Event(other) => panic!("expected peer data, got {other:?}"),
    }

    // A channel. This client does not pad ChannelData on streams (RFC 8656 §12.5 says it
    // must), so its payloads here are multiples of 4, where no padding is due.
    let now = client.now();
    client
        .turn
        .bind_channel(TransportType::Udp, peer_addr, now)
        .expect("channel request");
    assert!(matches!(
        client.next().await,
        Got::Event(TurnEvent::ChannelCreated(TransportType::Udp, _))
    ));
    client.send(peer_addr, b"ping over a channel.").await;
    assert_eq!(
        peer_receives(&peer).await,
        (b"ping over a channel.".to_vec(), relayed)
    );
    peer.send_to(b"pong as ChannelData.", relayed)
        .await
        .expect("peer sends");
    match client.next().await {
        Got::Peer(from, data) => {
            assert_eq!(
                (from, data.as_slice()),
                (peer_addr, &b"pong as ChannelData."[..])
            )
        }
        Got::Event(other) => panic!("expected peer data, got {other:?}"),
    }
    // Our padding, checked on the wire: 5 bytes of data, 3 of padding.
    peer.send_to(b"odd!!", relayed).await.expect("peer sends");
    let mut raw = Vec::new();
    let mut buf = [0u8; 64];
    while raw.len() < 12 {
        let n = tokio::time::timeout(Duration::from_secs(5), client.stream.read(&mut buf))
            .await
            .expect("relayed in time")
            .expect("read");
        assert!(n > 0, "closed");
        raw.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&raw[2..], &[0, 5, b'o', b'd', b'd', b'!', b'!', 0, 0, 0]);
    assert!((0x40..=0x4f).contains(&raw[0]), "a channel number");

    // Closing the connection ends the allocation at once, long before its lifetime.
    client.stream.shutdown().await.expect("close");
    drop(client);
    eventually("the allocation ends with its connection", || {
        server.allocation_count() == 0 && server.tls_connection_count() == 0
    })
    .await;
    let mut rebound = None;
    eventually("the relay port is released", || {
        rebound = std::net::UdpSocket::bind(relayed).ok();
        rebound.is_some()
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_never_completes_its_handshake_is_closed() {
    let server = server(TlsLimits {
        handshake_timeout: Duration::from_millis(300),
        ..TlsLimits::default()
    })
    .await;
    let tls_addr = server.tls_local_addr().expect("a TLS listener");
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(tls_addr).await.expect("connect");
    eventually("the connection is counted", || {
        server.tls_connection_count() == 1
    })
    .await;
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before the timeout"
    );
    eventually("its place is free", || server.tls_connection_count() == 0).await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_or_malformed_tls_client_is_closed() {
    let server = server(TlsLimits {
        idle_timeout: Duration::from_millis(300),
        ..TlsLimits::default()
    })
    .await;
    let tls_addr = server.tls_local_addr().expect("a TLS listener");
    let mut idle = connect(tls_addr).await;
    let started = std::time::Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before the idle timeout"
    );
    // Neither STUN nor ChannelData: closed at once, not after the idle timeout.
    let mut garbage = connect(tls_addr).await;
    garbage.write_all(&[0xff; 32]).await.expect("write garbage");
    garbage.flush().await.expect("flush");
    assert!(closed_within(&mut garbage, Duration::from_millis(200)).await);
    // A message longer than the connection buffer: closed from its header.
    let mut oversize = connect(tls_addr).await;
    let mut header = vec![0x00, 0x01, 0xff, 0xfc, 0x21, 0x12, 0xa4, 0x42];
    header.extend_from_slice(&[0; 12]);
    oversize.write_all(&header).await.expect("write header");
    oversize.flush().await.expect("flush");
    assert!(closed_within(&mut oversize, Duration::from_millis(200)).await);
    eventually("no connection left", || server.tls_connection_count() == 0).await;
    server.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_per_ip_cap_are_closed() {
    let server = server(TlsLimits {
        max_connections_per_ip: 2,
        ..TlsLimits::default()
    })
    .await;
    let tls_addr = server.tls_local_addr().expect("a TLS listener");
    let mut first = TcpStream::connect(tls_addr).await.expect("connect");
    let _second = TcpStream::connect(tls_addr).await.expect("connect");
    eventually("two connections", || server.tls_connection_count() == 2).await;
    let mut third = TcpStream::connect(tls_addr).await.expect("connect");
    assert!(
        closed_within(&mut third, Duration::from_secs(5)).await,
        "the third is closed"
    );
    assert!(
        !closed_within(&mut first, Duration::from_millis(200)).await,
        "the first stays (its handshake timeout is 10 s)"
    );
    assert_eq!(server.tls_connection_count(), 2);
    // A place freed is a place to take.
    drop(first);
    eventually("one connection", || server.tls_connection_count() == 1).await;
    let mut fourth = TcpStream::connect(tls_addr).await.expect("connect");
    assert!(!closed_within(&mut fourth, Duration::from_millis(200)).await);
    // And TLS clients still get through up to the cap.
    assert_eq!(server.tls_connection_count(), 2);
    server.shutdown().await;
}
