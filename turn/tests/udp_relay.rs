//! The server over real loopback UDP sockets, driven by an independent TURN client
//! (`turn-client-proto`): allocate, permit a peer, relay both ways with Send/Data
//! indications, then over a channel with ChannelData.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use switchboard_turn::{start, PeerPolicy, TurnAuth, TurnConfig};
use tokio::net::UdpSocket;
use turn_client_proto::api::{
    TurnClientApi, TurnConfig as ClientConfig, TurnEvent, TurnPollRet as PollRet, TurnRecvRet,
};
use turn_client_proto::stun::agent::Transmit;
use turn_client_proto::stun::Instant;
use turn_client_proto::types::{TransportType, TurnCredentials};
use turn_client_proto::udp::TurnClientUdp;

struct OneUser;

impl TurnAuth for OneUser {
    fn password(&self, username: &str, _now: SystemTime) -> Option<(String, String)> {
        (username == "alice").then(|| ("alice".to_owned(), "secret".to_owned()))
    }
}

/// The client and its socket, pumped by hand: the client is sans-IO too.
struct Client {
    turn: TurnClientUdp,
    socket: UdpSocket,
    base: std::time::Instant,
}

enum Got {
    Event(TurnEvent),
    Peer(SocketAddr, Vec<u8>),
}

impl Client {
    fn now(&self) -> Instant {
        Instant::from_std(self.base)
    }

    async fn flush(&mut self) {
        while let Some(t) = self.turn.poll_transmit(self.now()) {
            self.socket
                .send_to(t.data.as_ref(), t.to)
                .await
                .expect("send to the server");
        }
    }

    /// Runs the client until it reports an event or peer data (5 s at most).
    async fn next(&mut self) -> Got {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 2048];
        loop {
            // The client paces its requests: it says when it wants to be polled again.
            let wake = match self.turn.poll(self.now()) {
                PollRet::WaitUntil(at) => at.saturating_duration_since(self.now()),
                PollRet::Closed => panic!("the client gave up"),
                _ => Duration::ZERO,
            };
            self.flush().await;
            if let Some(event) = self.turn.poll_event() {
                return Got::Event(event);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server answered in time"
            );
            let wake = wake.clamp(Duration::from_millis(1), Duration::from_millis(100));
            let Ok(received) = tokio::time::timeout(wake, self.socket.recv_from(&mut buf)).await
            else {
                continue;
            };
            let (n, from) = received.expect("receive");
            let local = self.socket.local_addr().expect("local address");
            let transmit = Transmit::new(&buf[..n], TransportType::Udp, from, local);
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
        self.socket
            .send_to(&transmit.data, transmit.to)
            .await
            .expect("send");
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
async fn a_client_relays_to_a_peer_with_indications_and_with_a_channel() {
    let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
    let config = TurnConfig {
        listen: SocketAddr::new(loopback, 0),
        relay_ip: loopback,
        peers: PeerPolicy {
            allow_loopback: true,
            ..PeerPolicy::default()
        },
        ..TurnConfig::default()
    };
    let server = start(config, Arc::new(OneUser))
        .await
        .expect("server starts");
    let socket = UdpSocket::bind((loopback, 0)).await.expect("client socket");
    let local = socket.local_addr().expect("local address");
    let turn = TurnClientUdp::allocate(
        local,
        server.local_addr(),
        ClientConfig::new(TurnCredentials::new("alice", "secret")),
    );
    let mut client = Client {
        turn,
        socket,
        base: std::time::Instant::now(),
    };

    let relayed = match client.next().await {
        Got::Event(TurnEvent::AllocationCreated(TransportType::Udp, relayed)) => relayed,
        Got::Event(other) => panic!("expected an allocation, got {other:?}"),
        Got::Peer(..) => panic!("expected an allocation, got peer data"),
    };
    assert_eq!(relayed.ip(), loopback);

    let peer = UdpSocket::bind((loopback, 0)).await.expect("peer socket");
    let peer_addr = peer.local_addr().expect("peer address");
    let now = client.now();
    client
        .turn
        .create_permission(TransportType::Udp, loopback, now)
        .expect("permission request");
    match client.next().await {
        Got::Event(TurnEvent::PermissionCreated(TransportType::Udp, ip)) => {
            assert_eq!(ip, loopback)
        }
        Got::Event(other) => panic!("expected a permission, got {other:?}"),
        Got::Peer(..) => panic!("expected a permission, got peer data"),
    }

    // Send indication out, Data indication back.
    client.send(peer_addr, b"ping over Send").await;
    let (data, from) = peer_receives(&peer).await;
    assert_eq!((data.as_slice(), from), (&b"ping over Send"[..], relayed));
    peer.send_to(b"pong as Data", relayed)
        .await
        .expect("peer sends");
    match client.next().await {
        Got::Peer(from, data) => {
            assert_eq!((from, data.as_slice()), (peer_addr, &b"pong as Data"[..]))
        }
        Got::Event(other) => panic!("expected peer data, got {other:?}"),
    }

    // A channel: ChannelData both ways.
    let now = client.now();
    client
        .turn
        .bind_channel(TransportType::Udp, peer_addr, now)
        .expect("channel request");
    match client.next().await {
        Got::Event(TurnEvent::ChannelCreated(TransportType::Udp, addr)) => {
            assert_eq!(addr, peer_addr)
        }
        Got::Event(other) => panic!("expected a channel, got {other:?}"),
        Got::Peer(..) => panic!("expected a channel, got peer data"),
    }
    client.send(peer_addr, b"ping over a channel").await;
    let (data, from) = peer_receives(&peer).await;
    assert_eq!(
        (data.as_slice(), from),
        (&b"ping over a channel"[..], relayed)
    );
    peer.send_to(b"pong as ChannelData", relayed)
        .await
        .expect("peer sends");
    let mut raw = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.socket.recv_from(&mut raw))
        .await
        .expect("relayed in time")
        .expect("receive");
    // Checked on the wire: 0x4000-0x4fff is a channel number, then the length.
    assert!(
        (0x40..=0x4f).contains(&raw[0]),
        "ChannelData, not an indication: {:02x?}",
        &raw[..4]
    );
    assert_eq!(&raw[4..n], b"pong as ChannelData");
    let local = client.socket.local_addr().expect("local address");
    let transmit = Transmit::new(&raw[..n], TransportType::Udp, server.local_addr(), local);
    match client.turn.recv(transmit, client.now()) {
        TurnRecvRet::PeerData(data) => assert_eq!(data.peer, peer_addr),
        other => panic!("the client did not take the ChannelData: {other:?}"),
    }

    server.shutdown().await;
}

#[tokio::test]
async fn a_denied_peer_is_refused_and_shutdown_closes_the_listener() {
    let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
    let config = TurnConfig {
        listen: SocketAddr::new(loopback, 0),
        relay_ip: loopback,
        ..TurnConfig::default()
    };
    let server = start(config, Arc::new(OneUser))
        .await
        .expect("server starts");
    let server_addr = server.local_addr();
    let socket = UdpSocket::bind((loopback, 0)).await.expect("client socket");
    let local = socket.local_addr().expect("local address");
    let turn = TurnClientUdp::allocate(
        local,
        server_addr,
        ClientConfig::new(TurnCredentials::new("alice", "secret")),
    );
    let mut client = Client {
        turn,
        socket,
        base: std::time::Instant::now(),
    };
    assert!(matches!(
        client.next().await,
        Got::Event(TurnEvent::AllocationCreated(..))
    ));
    let now = client.now();
    client
        .turn
        .create_permission(TransportType::Udp, loopback, now)
        .expect("permission request");
    match client.next().await {
        Got::Event(TurnEvent::PermissionCreateFailed(TransportType::Udp, ip)) => {
            assert_eq!(ip, loopback)
        }
        Got::Event(other) => panic!("expected a refusal, got {other:?}"),
        Got::Peer(..) => panic!("expected a refusal, got peer data"),
    }
    server.shutdown().await;
    // The port is free again: the listener socket was closed.
    UdpSocket::bind(server_addr)
        .await
        .expect("listener port released");
}
