//! Attacks on media liveness and on the SDP a client sends, against the real binary (issue 17,
//! items 3, 8 and the m-line part of 10):
//!
//! - a WHIP or WHEP session whose ICE never connects, a WHIP publisher that connected and
//!   went silent, and a LiveKit client that never connects its media or whose media goes
//!   silent while its signaling keeps pinging are all ended: the
//!   participant leaves with a reason, `/v1` lists nobody, the event log says why, and the
//!   WHIP/WHEP resource is gone (DELETE → 404);
//! - an SDP the parser rejects is refused with a message that names the line, never with a
//!   memory address (WHIP 400 body and WebSocket close reason alike);
//! - an offer with 1,000 m-lines is refused before it is parsed, naming the limit.
//!
//! The deadlines are made short with `--limit` so the tests take seconds, not minutes.

mod support;

// The str0m WebRTC peer of signaling's tests; it speaks through this harness's `Client`.
#[allow(dead_code)]
#[path = "../signaling/tests/support/peer.rs"]
mod peer;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use livekit_protocol as proto;
use reqwest::StatusCode;
use serde_json::Value;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use support::api::{admin_token, guest_token, http_client, Api};
use support::{Client, Event as Signal, Req, Resp, Server, WAIT};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const DEPARTURE_TIMEOUT: Duration = Duration::from_secs(2);
/// str0m's ICE-lite agent calls a pair dead after 15 s without a consent check; the
/// departure clock starts then.
const ICE_SILENCE: Duration = Duration::from_secs(15);
/// The worker looks at deadlines every 250 ms; then signaling, the recorder and our polling.
const MARGIN: Duration = Duration::from_secs(3);

fn server() -> Server {
    Server::start_with(&[
        "--limit",
        "ice_connect_timeout=3s",
        "--limit",
        "peer_departure_timeout=2s",
        // The candidate flood sends 200 PATCHes; the per-address rate is not what it tests.
        "--limit",
        "whip_requests_per_minute=100000",
    ])
}

/// A str0m peer on a loopback UDP socket, as a WHIP/WHEP client would be.
struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
}

impl Peer {
    async fn new() -> Peer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
        let local = socket.local_addr().expect("UDP address");
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").expect("host candidate"));
        Peer { rtc, socket, local }
    }

    /// An offer of `lines` m-lines in `direction` (sendonly: WHIP; recvonly: WHEP).
    fn offer(&mut self, direction: Direction) -> (String, SdpPendingOffer) {
        let mut api = self.rtc.sdp_api();
        api.add_media(MediaKind::Audio, direction, None, None, None);
        api.add_media(MediaKind::Video, direction, None, None, None);
        let (offer, pending) = api.apply().expect("an offer");
        (offer.to_sdp_string(), pending)
    }

    /// Drives ICE/DTLS until `stop` fires (or is dropped); reports DTLS up on `connected`.
    async fn drive(mut self, connected: oneshot::Sender<()>, mut stop: oneshot::Receiver<()>) {
        let mut connected = Some(connected);
        let mut buf = vec![0u8; 2000];
        loop {
            let timeout = loop {
                match self.rtc.poll_output().expect("client peer output") {
                    Output::Timeout(at) => break at,
                    Output::Transmit(t) => {
                        let _ = self.socket.send_to(&t.contents, t.destination).await;
                    }
                    Output::Event(Event::Connected) => {
                        if let Some(tx) = connected.take() {
                            let _ = tx.send(());
                        }
                    }
                    Output::Event(_) => {}
                }
            };
            let sleep = timeout.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = &mut stop => return,
                received = self.socket.recv_from(&mut buf) => {
                    let (len, source) = received.expect("UDP receive");
                    let Ok(contents) = buf[..len].try_into() else { continue };
                    let input = Input::Receive(
                        Instant::now(),
                        Receive { proto: Protocol::Udp, source, destination: self.local, contents },
                    );
                    self.rtc.handle_input(input).expect("client peer input");
                }
                _ = tokio::time::sleep(sleep) => {
                    self.rtc.handle_input(Input::Timeout(Instant::now())).expect("client timeout");
                }
            }
        }
    }
}

/// `POST /whip` or `/whep` with an offer: (status, Location, body).
async fn post_offer(
    server: &Server,
    path: &str,
    token: &str,
    sdp: &str,
) -> (StatusCode, String, String) {
    let response = http_client()
        .post(format!("{}{path}", server.http))
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(sdp.to_owned())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !status.is_success() {
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            kind, "application/problem+json",
            "error bodies are problems"
        );
    }
    (status, location, response.text().await.expect("body"))
}

async fn delete_status(server: &Server, location: &str, token: &str) -> StatusCode {
    http_client()
        .delete(format!("{}{location}", server.http))
        .bearer_auth(token)
        .send()
        .await
        .expect("DELETE the resource")
        .status()
}

/// Identities `/v1` lists as live in the room.
async fn live_identities(api: &Api, room: &str) -> Vec<String> {
    let reply = api.get(&format!("/v1/rooms/{room}/participants")).await;
    reply.expect(StatusCode::OK)["participants"]
        .as_array()
        .expect("participants array")
        .iter()
        .map(|p| p["identity"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Polls until `identity` is no longer live in the room; returns how long that took from
/// `since`. Panics if it is still there at `since + limit`.
async fn gone_within(
    api: &Api,
    room: &str,
    identity: &str,
    since: Instant,
    limit: Duration,
) -> Duration {
    loop {
        if !live_identities(api, room)
            .await
            .iter()
            .any(|i| i == identity)
        {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "{identity} is still in room {room} {:?} after it should have been ended",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A WHIP or WHEP session whose client never answers a connectivity check.
async fn never_connects(path: &str, direction: Direction) {
    let server = server();
    let room = format!("ghost-{}", &path[1..]);
    let api = Api::new(&server.http, Some(&admin_token(&room, "admin")));
    let token = guest_token(&room, "ghost");
    let mut peer = Peer::new().await;
    let (offer, _pending) = peer.offer(direction);
    let (status, location, body) = post_offer(&server, path, &token, &offer).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let created = Instant::now();
    assert!(
        body.lines()
            .any(|l| l.contains(" tcp ") && l.contains(" tcptype passive")),
        "WHIP/WHEP answers offer an ICE-TCP candidate too: {body}"
    );
    assert!(
        live_identities(&api, &room)
            .await
            .contains(&"ghost".to_owned()),
        "the session joined its room"
    );
    // The peer is never driven: no STUN, no DTLS reach the server.
    let took = gone_within(&api, &room, "ghost", created, CONNECT_TIMEOUT + MARGIN).await;
    eprintln!("{path} session without ICE ended {took:?} after its offer was answered");
    assert!(
        took + Duration::from_millis(500) >= CONNECT_TIMEOUT,
        "ended after {took:?}, before ice_connect_timeout"
    );
    assert_eq!(
        api.leave_reason(&room, "ghost").await,
        "media_connect_timeout"
    );
    assert_eq!(
        delete_status(&server, &location, &token).await,
        StatusCode::NOT_FOUND,
        "the resource ended with its session"
    );
    drop(peer);
}

#[tokio::test]
async fn a_whip_session_that_never_connects_is_ended_at_ice_connect_timeout() {
    never_connects("/whip", Direction::SendOnly).await;
}

#[tokio::test]
async fn a_whep_session_that_never_connects_is_ended_at_ice_connect_timeout() {
    never_connects("/whep", Direction::RecvOnly).await;
}

#[tokio::test]
async fn a_whip_publisher_that_goes_silent_is_ended_after_the_departure_timeout() {
    let server = server();
    let room = "silent-whip";
    let api = Api::new(&server.http, Some(&admin_token(room, "admin")));
    let token = guest_token(room, "encoder");
    let mut peer = Peer::new().await;
    let (offer, pending) = peer.offer(Direction::SendOnly);
    let (status, location, answer) = post_offer(&server, "/whip", &token, &offer).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let created = Instant::now();
    let answer = SdpAnswer::from_sdp_string(&answer).expect("parse the answer");
    peer.rtc
        .sdp_api()
        .accept_answer(pending, answer)
        .expect("accept the answer");
    let (connected_tx, connected) = oneshot::channel();
    let (stop, stopped) = oneshot::channel();
    let driver = tokio::spawn(peer.drive(connected_tx, stopped));
    tokio::time::timeout(WAIT, connected)
        .await
        .expect("ICE and DTLS did not connect")
        .expect("the client peer stopped");
    // Connected, it outlives ice_connect_timeout.
    while created.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(1) {
        assert!(
            live_identities(&api, room)
                .await
                .contains(&"encoder".to_owned()),
            "a connected publisher was ended {:?} after its offer",
            created.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Then the encoder vanishes without a DELETE: no more consent checks, no media.
    let _ = stop.send(());
    driver.await.expect("the driver ends");
    let silent = Instant::now();
    let limit = ICE_SILENCE + DEPARTURE_TIMEOUT + MARGIN;
    let took = gone_within(&api, room, "encoder", silent, limit).await;
    eprintln!("silent WHIP publisher ended {took:?} after its last packet");
    assert!(
        took >= DEPARTURE_TIMEOUT,
        "ended {took:?} after going silent"
    );
    assert_eq!(
        api.leave_reason(room, "encoder").await,
        "media_departure_timeout"
    );
    assert_eq!(
        delete_status(&server, &location, &token).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_livekit_client_that_never_connects_media_is_ended_at_ice_connect_timeout() {
    let server = server();
    let room = "ghost-rtc";
    let api = Api::new(&server.http, Some(&admin_token(room, "admin")));
    let (mut client, _join) = server.join(room, "lurker", &[]).await;
    let joined = Instant::now();
    // Signaling stays alive (ping answered) but no PeerConnection is ever offered.
    client.assert_alive().await;
    let leave = client
        .expect("a LeaveRequest", |r| match r {
            Resp::Leave(leave) => Some(leave.clone()),
            _ => None,
        })
        .await;
    let took = joined.elapsed();
    eprintln!("LiveKit client without media told to leave {took:?} after joining");
    assert!(
        took + Duration::from_millis(500) >= CONNECT_TIMEOUT && took <= CONNECT_TIMEOUT + MARGIN,
        "LeaveRequest after {took:?}"
    );
    assert_eq!(
        leave.reason,
        proto::DisconnectReason::ConnectionTimeout as i32
    );
    assert_eq!(
        leave.action,
        proto::leave_request::Action::Disconnect as i32
    );
    assert_eq!(
        api.leave_reason(room, "lurker").await,
        "media_connect_timeout"
    );
    assert!(live_identities(&api, room).await.is_empty());
}

/// Keeps a LiveKit client's signaling alive (pings) until `until`, returning the first
/// LeaveRequest the server sends, if any.
async fn ping_until(client: &mut Client, until: Instant) -> Option<proto::LeaveRequest> {
    let mut next_ping = Instant::now();
    while Instant::now() < until {
        if Instant::now() >= next_ping {
            client.send(Req::Ping(support::now_secs() as i64)).await;
            next_ping = Instant::now() + Duration::from_secs(2);
        }
        let wait = until
            .min(next_ping)
            .saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, client.next_event()).await {
            Err(_) => {}
            Ok(Signal::Response(Resp::Leave(leave))) => return Some(leave),
            Ok(Signal::Response(_)) => {}
            Ok(other) => panic!("the connection ended without a LeaveRequest: {other:?}"),
        }
    }
    None
}

#[tokio::test]
async fn a_livekit_client_whose_media_goes_silent_is_ended_after_the_departure_timeout() {
    let server = server();
    let room = "silent-rtc";
    let api = Api::new(&server.http, Some(&admin_token(room, "admin")));
    let (mut client, _join) = server.join(room, "dropout", &[]).await;
    let joined = Instant::now();
    // The publisher PC connects (ICE, DTLS, both data channels open).
    let media = client.open_data().await;
    let early = ping_until(
        &mut client,
        joined + CONNECT_TIMEOUT + Duration::from_secs(1),
    )
    .await;
    assert_eq!(early, None, "a connected client was ended");
    // Its media vanishes; its signaling keeps pinging.
    drop(media);
    let silent = Instant::now();
    let limit = ICE_SILENCE + DEPARTURE_TIMEOUT + MARGIN;
    let leave = ping_until(&mut client, silent + limit)
        .await
        .unwrap_or_else(|| panic!("no LeaveRequest {limit:?} after the media went silent"));
    let took = silent.elapsed();
    eprintln!("LiveKit client without media for {took:?} told to leave");
    assert!(
        took >= DEPARTURE_TIMEOUT,
        "ended {took:?} after going silent"
    );
    assert_eq!(
        leave.reason,
        proto::DisconnectReason::ConnectionTimeout as i32
    );
    assert_eq!(
        api.leave_reason(room, "dropout").await,
        "media_departure_timeout"
    );
}

/// A valid offer with one line str0m cannot parse, after `v=0` (WHIP's own reading skips it).
fn offer_with_garbage_line(offer: &str) -> String {
    offer.replacen("v=0\r\n", "v=0\r\nthis is not sdp\r\n", 1)
}

fn assert_no_internals(text: &str) {
    assert!(!text.contains("0x"), "an address leaked: {text}");
    assert!(
        !text.contains("PointerOffset"),
        "parser internals leaked: {text}"
    );
}

#[tokio::test]
async fn an_unparsable_whip_offer_is_refused_with_the_line_not_an_address() {
    let server = server();
    let room = "garbage-sdp";
    let mut peer = Peer::new().await;
    let (offer, _pending) = peer.offer(Direction::SendOnly);
    let token = guest_token(room, "typo");
    let (status, _, body) =
        post_offer(&server, "/whip", &token, &offer_with_garbage_line(&offer)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_no_internals(&body);
    let detail = serde_json::from_str::<Value>(&body).expect("problem JSON")["detail"]
        .as_str()
        .expect("detail")
        .to_owned();
    eprintln!("WHIP 400 detail: {detail}");
    assert!(detail.contains("line 2"), "{detail}");
    assert!(detail.contains("this is not sdp"), "{detail}");
}

#[tokio::test]
async fn an_unparsable_livekit_offer_closes_with_the_line_not_an_address() {
    let server = server();
    let (mut client, _join) = server.join("garbage-rtc", "scribbler", &[]).await;
    client
        .send(Req::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            sdp: "garbage\r\n".into(),
            id: 1,
            ..Default::default()
        }))
        .await;
    let close = client.expect_close().await.expect("a close frame");
    let reason = close.reason.to_string();
    assert_no_internals(&reason);
    eprintln!("close reason: {reason}");
    assert!(reason.contains("line 1"), "{reason}");
}

/// An offer with `n` audio m-lines, each sendonly Opus with its own mid.
fn offer_with_lines(n: usize) -> String {
    let mut sdp = String::from(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef0123456789\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\n",
    );
    let mids: Vec<String> = (0..n).map(|mid| mid.to_string()).collect();
    sdp.push_str(&format!("a=group:BUNDLE {}\r\n", mids.join(" ")));
    for mid in 0..n {
        sdp.push_str(&format!(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\na=sendonly\r\n\
a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n"
        ));
    }
    sdp
}

#[tokio::test]
async fn an_offer_with_a_thousand_media_sections_is_refused_naming_the_limit() {
    let server = server();
    let room = "many-lines";
    let api = Api::new(&server.http, Some(&admin_token(room, "admin")));
    let token = guest_token(room, "hoarder");
    let started = Instant::now();
    let (status, _, body) = post_offer(&server, "/whip", &token, &offer_with_lines(1000)).await;
    eprintln!("1000 m-lines: {status} after {:?}", started.elapsed());
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    for words in ["1000", "32", "max_media_sections"] {
        assert!(body.contains(words), "{words:?} missing from {body}");
    }
    let (status, _, body) = post_offer(&server, "/whep", &token, &offer_with_lines(1000)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("1000"), "{body}");

    // A LiveKit publisher offer the same: the close reason names the count and the limit.
    let (mut client, _join) = server.join(room, "lk-hoarder", &[]).await;
    client
        .send(Req::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            sdp: offer_with_lines(1000),
            id: 1,
            ..Default::default()
        }))
        .await;
    let close = client.expect_close().await.expect("a close frame");
    let reason = close.reason.to_string();
    assert!(reason.contains("1000") && reason.contains("32"), "{reason}");
    // The WHIP/WHEP offers were refused before joining: the room never saw them. Its log is
    // written after the join (asynchronously), so first wait for the LiveKit client's join,
    // which came after the refused offers.
    api.room_recorded(room).await;
    let joined = |events: &[Value], identity: &str| {
        events.iter().any(|e| {
            e["kind"] == "participant_joined" && e["payload"]["participant"]["identity"] == identity
        })
    };
    let events = support::api::eventually("lk-hoarder's join to be recorded", || async {
        let events = api.all_events(room).await;
        if joined(&events, "lk-hoarder") {
            Ok(events)
        } else {
            Err(format!("{} events", events.len()))
        }
    })
    .await;
    let joined_hoarder = joined(&events, "hoarder");
    assert!(!joined_hoarder, "a refused offer joined the room");
}

/// `n` distinct host candidates (unreachable addresses), as `a=candidate:` lines.
fn candidate_lines(n: usize, first: usize) -> String {
    (first..first + n)
        .map(|i| {
            format!(
                "a=candidate:{i} 1 udp 2130706431 10.{}.{}.{} {} typ host\r\n",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255,
                1024 + i % 60000
            )
        })
        .collect()
}

async fn patch_status(
    server: &Server,
    location: &str,
    token: &str,
    body: String,
) -> (StatusCode, String) {
    let response = http_client()
        .patch(format!("{}{location}", server.http))
        .bearer_auth(token)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .body(body)
        .send()
        .await
        .expect("PATCH the resource");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn candidate_floods_are_refused_or_ignored_and_the_worker_stays_responsive() {
    let server = server();
    let room = "candidates";
    let token = guest_token(room, "flooder");
    let mut peer = Peer::new().await;
    let (offer, _pending) = peer.offer(Direction::SendOnly);

    // An offer carrying 1,000 candidates is refused before it is parsed.
    let stuffed = format!("{offer}{}", candidate_lines(1000, 0));
    let (status, _, body) = post_offer(&server, "/whip", &token, &stuffed).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // 1,000 and the offer's own host candidate.
    for words in ["1001", "64", "max_remote_candidates"] {
        assert!(body.contains(words), "{words:?} missing from {body}");
    }

    // A session, then one fragment of 1,000 candidates: refused whole.
    let (status, location, body) = post_offer(&server, "/whip", &token, &offer).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = patch_status(&server, &location, &token, candidate_lines(1000, 0)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("max_remote_candidates"), "{body}");

    // Fragments under the bound, 200 of them (12,800 candidates): accepted, and those past
    // the per-session bound cost the worker nothing. Each remote candidate costs str0m a pass
    // over those it has, so taking them all kept the worker from anything else for seconds.
    for n in 0..200 {
        let (status, body) =
            patch_status(&server, &location, &token, candidate_lines(64, n * 64)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    // The leave queues behind every candidate the PATCHes handed the worker.
    let started = Instant::now();
    assert_eq!(
        delete_status(&server, &location, &token).await,
        StatusCode::OK
    );
    let took = started.elapsed();
    eprintln!("DELETE after 12,800 trickled candidates took {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "the worker was busy for {took:?}"
    );
}
