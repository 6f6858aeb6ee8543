//! ICE-TCP against a running media plane on loopback: framing, a str0m client that connects
//! over TCP only, and clients that misbehave.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{frame_header, read_frame, MAX_FRAME};
use crate::{JoinOptions, Sfu, SfuConfig};

/// How long a test waits for something the server does at once (a loaded CI machine).
const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn frames_are_read_one_by_one_and_a_clean_end_is_none() {
    let bytes = [0, 2, 0xAA, 0xBB, 0, 1, 0xCC];
    let mut reader = &bytes[..];
    assert_eq!(
        read_frame(&mut reader).await.unwrap(),
        Some(vec![0xAA, 0xBB])
    );
    assert_eq!(read_frame(&mut reader).await.unwrap(), Some(vec![0xCC]));
    assert_eq!(read_frame(&mut reader).await.unwrap(), None);
}

#[tokio::test]
async fn empty_oversized_and_cut_short_frames_are_errors() {
    let empty = [0u8, 0];
    assert!(read_frame(&mut &empty[..]).await.is_err());
    let header = frame_header(MAX_FRAME + 1).unwrap();
    assert!(read_frame(&mut &header[..]).await.is_err());
    let cut = [0u8, 4, 1, 2];
    assert!(read_frame(&mut &cut[..]).await.is_err());
    let half_header = [0u8];
    assert_eq!(read_frame(&mut &half_header[..]).await.unwrap(), None);
    assert_eq!(frame_header(70_000), None);
}

fn start(max_tcp_connections: usize) -> Sfu {
    start_with(max_tcp_connections, max_tcp_connections)
}

fn start_with(max_tcp_connections: usize, tcp_connections_per_address: usize) -> Sfu {
    Sfu::start(&SfuConfig {
        tcp_port: Some(0),
        max_tcp_connections,
        tcp_connections_per_address,
        ..SfuConfig::default()
    })
    .expect("the media plane starts")
}

async fn write_frame(stream: &mut TcpStream, data: &[u8]) {
    stream
        .write_all(&frame_header(data.len()).unwrap())
        .await
        .unwrap();
    stream.write_all(data).await.unwrap();
}

/// Waits for the server to close `stream`: true when it did (EOF or reset) in time.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// A STUN binding request (RFC 8489) with a USERNAME no peer has.
fn stun_request(username: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    let mut msg = Vec::new();
    msg.extend_from_slice(&0x0001u16.to_be_bytes());
    msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    msg.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    msg.extend_from_slice(&[7u8; 12]);
    msg.extend_from_slice(&attrs);
    msg
}

#[tokio::test]
async fn a_client_connects_over_tcp_only() {
    let sfu = start(16);
    let server = sfu.tcp_addr().expect("ICE-TCP is on");
    let (handle, _events) = sfu
        .join(
            "room",
            "p1",
            "alice",
            JoinOptions {
                auto_subscribe: true,
                can_subscribe: true,
                can_publish: true,
                single_pc: false,
                dtls: Default::default(),
            },
        )
        .await
        .unwrap();

    let mut stream = TcpStream::connect(server).await.unwrap();
    let local = stream.local_addr().unwrap();
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(
        Candidate::builder()
            .tcp()
            .host(local)
            .tcptype(TcpType::Active)
            .build()
            .unwrap(),
    );
    let mut api = rtc.sdp_api();
    api.add_channel("_reliable".into());
    let (offer, pending) = api.apply().unwrap();
    let answer = handle.publisher_offer(offer.to_sdp_string()).await.unwrap();
    let port = format!(" {} typ host", server.port());
    assert!(
        answer
            .lines()
            .any(|l| l.contains(" tcp ") && l.contains(&port) && l.contains(" tcptype passive")),
        "the answer offers a passive TCP candidate on the ICE-TCP port: {answer}"
    );
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();

    let connected = tokio::time::timeout(
        PATIENCE,
        drive_until_open(&mut rtc, &mut stream, server, local),
    )
    .await
    .expect("ICE and DTLS complete over TCP in time");
    assert!(connected, "the server closed the connection");
    handle.leave().await;
    assert!(
        closed_by_server(&mut stream, PATIENCE).await,
        "a participant's leave closes its connections"
    );
}

/// Runs the client until its data channel opens; false if the connection closed first.
async fn drive_until_open(
    rtc: &mut Rtc,
    stream: &mut TcpStream,
    server: SocketAddr,
    local: SocketAddr,
) -> bool {
    loop {
        let timeout = loop {
            match rtc.poll_output().unwrap() {
                Output::Timeout(at) => break at,
                Output::Transmit(t) => {
                    assert_eq!(t.proto, Protocol::Tcp);
                    write_frame(stream, &t.contents).await;
                }
                Output::Event(Event::ChannelOpen(..)) => return true,
                Output::Event(_) => {}
            }
        };
        let wait = timeout.saturating_duration_since(Instant::now());
        tokio::select! {
            frame = read_frame(stream) => {
                let Ok(Some(frame)) = frame else { return false };
                rtc.handle_input(Input::Receive(
                    Instant::now(),
                    Receive {
                        proto: Protocol::Tcp,
                        source: server,
                        destination: local,
                        contents: frame.as_slice().try_into().unwrap(),
                    },
                ))
                .unwrap();
            }
            _ = tokio::time::sleep(wait) => {
                rtc.handle_input(Input::Timeout(Instant::now())).unwrap();
            }
        }
    }
}

#[tokio::test]
async fn connections_that_are_not_ice_are_closed() {
    let sfu = start(16);
    let server = sfu.tcp_addr().unwrap();

    let mut not_stun = TcpStream::connect(server).await.unwrap();
    write_frame(&mut not_stun, b"GET / HTTP/1.1").await;
    assert!(closed_by_server(&mut not_stun, PATIENCE).await, "not STUN");

    let mut unknown = TcpStream::connect(server).await.unwrap();
    write_frame(&mut unknown, &stun_request("nobody:here")).await;
    assert!(
        closed_by_server(&mut unknown, PATIENCE).await,
        "no peer's ufrag"
    );

    let mut oversized = TcpStream::connect(server).await.unwrap();
    oversized
        .write_all(&frame_header(MAX_FRAME + 1).unwrap())
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut oversized, PATIENCE).await,
        "a frame over the limit"
    );

    let mut silent = TcpStream::connect(server).await.unwrap();
    assert!(
        !closed_by_server(&mut silent, Duration::from_secs(1)).await,
        "a new connection has a while to speak"
    );
    assert!(
        closed_by_server(&mut silent, super::FIRST_FRAME_TIMEOUT + PATIENCE).await,
        "a connection that never speaks is closed"
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let sfu = start(2);
    let server = sfu.tcp_addr().unwrap();
    let mut first = TcpStream::connect(server).await.unwrap();
    let mut second = TcpStream::connect(server).await.unwrap();
    let mut third = TcpStream::connect(server).await.unwrap();
    assert!(
        closed_by_server(&mut third, PATIENCE).await,
        "the third connection is over the limit of two"
    );
    assert!(!closed_by_server(&mut first, Duration::from_millis(200)).await);
    assert!(!closed_by_server(&mut second, Duration::from_millis(200)).await);
    // A closed connection gives its place back.
    drop(first);
    let mut fourth = TcpStream::connect(server).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    // The front door may see the close after the new connection: retry until it does.
    while closed_by_server(&mut fourth, Duration::from_millis(300)).await {
        assert!(
            Instant::now() < deadline,
            "the freed place is never given back"
        );
        fourth = TcpStream::connect(server).await.unwrap();
    }
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let sfu = start_with(16, 2);
    let server = sfu.tcp_addr().unwrap();
    let mut first = TcpStream::connect(server).await.unwrap();
    let mut second = TcpStream::connect(server).await.unwrap();
    let mut third = TcpStream::connect(server).await.unwrap();
    assert!(
        closed_by_server(&mut third, PATIENCE).await,
        "a third connection from 127.0.0.1 is over its address's limit of two"
    );
    assert!(!closed_by_server(&mut first, Duration::from_millis(200)).await);
    assert!(!closed_by_server(&mut second, Duration::from_millis(200)).await);
    // Another address still gets in (127.0.0.2 is loopback too, a different address).
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = other.connect(server).await.unwrap();
    assert!(
        !closed_by_server(&mut other, Duration::from_millis(300)).await,
        "another address has its own count"
    );
}

#[test]
fn ipv6_addresses_count_per_64() {
    let per = super::PerAddress::new(1);
    let a: std::net::IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let b: std::net::IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
    let c: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
    let held = per.take(a).expect("the first of its /64");
    assert!(per.take(b).is_none(), "the same /64 is one address");
    assert!(per.take(c).is_some(), "another /64 is another");
    drop(held);
    assert!(
        per.take(b).is_some(),
        "a closed connection gives its place back"
    );
}
