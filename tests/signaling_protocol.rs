//! The `/rtc` WebSocket (LiveKit v0 signaling) against the real binary: join, participant
//! updates, ping, publishing, mute, leave, duplicate identities, and broken clients (resume: tests/resume.rs).

mod support;

// The str0m WebRTC peer of signaling's tests; it speaks through this harness's `Client`.
#[allow(dead_code)]
#[path = "../signaling/tests/support/peer.rs"]
mod peer;

use livekit_protocol as proto;
use proto::participant_info::State;
use support::{assert_sid, state, Client, Event, Req, Resp, Server, WAIT};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

fn version(text: &str) -> (u32, u32, u32) {
    let mut parts = text.split('.').map(|p| {
        p.parse::<u32>()
            .unwrap_or_else(|_| panic!("server version {text:?} is not x.y.z"))
    });
    let v = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    assert!(
        parts.next().is_none(),
        "server version {text:?} is not x.y.z"
    );
    v
}

fn audio_track(cid: &str) -> Req {
    Req::AddTrack(proto::AddTrackRequest {
        cid: cid.to_owned(),
        name: "microphone".to_owned(),
        r#type: proto::TrackType::Audio as i32,
        source: proto::TrackSource::Microphone as i32,
        ..Default::default()
    })
}

fn video_track(cid: &str) -> Req {
    Req::AddTrack(proto::AddTrackRequest {
        cid: cid.to_owned(),
        name: "camera".to_owned(),
        r#type: proto::TrackType::Video as i32,
        source: proto::TrackSource::Camera as i32,
        width: 640,
        height: 360,
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn join_response_describes_participant_room_and_server() {
    let server = Server::start();
    let (mut alice, join) = server
        .join("standup", "alice", &["--name", "Alice Liddell"])
        .await;

    let me = join
        .participant
        .as_ref()
        .expect("participant in JoinResponse");
    assert_sid(&me.sid, "PA_");
    assert_eq!(me.identity, "alice");
    assert_eq!(me.name, "Alice Liddell");
    let permission = me.permission.as_ref().expect("permission must be present");
    assert!(permission.can_publish, "default tokens may publish");
    assert!(permission.can_subscribe, "default tokens may subscribe");
    assert!(permission.can_publish_data, "publishers may send data");

    let room = join.room.as_ref().expect("room in JoinResponse");
    assert_eq!(room.name, "standup", "room name is the room id");
    assert_sid(&room.sid, "RM_");
    assert!(join.other_participants.is_empty(), "alone in a new room");

    let info = join.server_info.as_ref().expect("server_info");
    let v = version(&info.version);
    assert!(
        ((1, 8, 0)..=(1, 13, 6)).contains(&v),
        "server_info.version {} must be within 1.8.0..=1.13.6",
        info.version
    );
    assert!(
        join.ping_interval > 0,
        "ping_interval {}",
        join.ping_interval
    );
    assert!(join.ping_timeout > 0, "ping_timeout {}", join.ping_timeout);
    assert!(
        join.ping_timeout > join.ping_interval,
        "a timeout shorter than the interval would drop every client"
    );
    assert!(
        !join.subscriber_primary,
        "v0 clients start on the publisher PC"
    );
    alice.assert_alive().await;

    // A second connection to the same room sees the same room sid.
    let (_bob, bob_join) = server.join("standup", "bob", &["--no-publish"]).await;
    assert_eq!(bob_join.room.as_ref().unwrap().sid, room.sid);
    let bob = bob_join.participant.as_ref().unwrap();
    let permission = bob.permission.as_ref().expect("permission must be present");
    assert!(
        !permission.can_publish,
        "--no-publish token → can_publish false"
    );
    assert!(permission.can_subscribe);
    assert_ne!(bob.sid, me.sid);
}

#[tokio::test(flavor = "multi_thread")]
async fn participants_see_each_other_join_and_leave() {
    let server = Server::start();
    let (mut alice, alice_join) = server.join("room-a", "alice", &[]).await;
    let alice_sid = alice_join.participant.unwrap().sid;
    let (mut bob, bob_join) = server.join("room-a", "bob", &["--name", "Bob"]).await;
    let bob_sid = bob_join.participant.as_ref().unwrap().sid.clone();

    let listed: Vec<_> = bob_join
        .other_participants
        .iter()
        .map(|p| (p.sid.as_str(), p.identity.as_str()))
        .collect();
    assert_eq!(listed, [(alice_sid.as_str(), "alice")]);

    let joined = alice
        .expect_participant("bob's arrival", &bob_sid, |_| true)
        .await;
    assert_eq!(joined.identity, "bob");
    assert_eq!(joined.name, "Bob");
    assert!(
        matches!(state(&joined), State::Joined | State::Active),
        "a newcomer is JOINED or ACTIVE, not {:?}",
        state(&joined)
    );

    bob.leave().await;
    let left = alice
        .expect_participant("bob's departure", &bob_sid, |p| {
            state(p) == State::Disconnected
        })
        .await;
    assert!(
        left.version > joined.version,
        "versions must grow: joined at {}, left at {}",
        joined.version,
        left.version
    );
    // The server ends bob's session after his leave.
    assert!(matches!(
        bob.next_event().await,
        Event::Closed(_) | Event::Ended(_)
    ));
    alice.assert_alive().await;
}

/// Metadata of `len` bytes that a truncated or misassembled message would not reproduce.
fn long_metadata(who: &str, len: usize) -> String {
    let mut text = format!("{who}:");
    let mut i = 0u32;
    while text.len() < len {
        text.push_str(&format!("{i:05},"));
        i += 1;
    }
    text.truncate(len);
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_larger_than_a_frame_arrive_whole() {
    // The server sends messages over 4 KiB in fragments (signaling/src/websocket.rs); the
    // JoinResponse and the ParticipantUpdate here are 10–20 KiB.
    let server = Server::start();
    let alice_metadata = long_metadata("alice", 12_000);
    let (mut alice, _) = server
        .join("big", "alice", &["--metadata", &alice_metadata])
        .await;
    let bob_metadata = long_metadata("bob", 9_000);
    let (mut bob, bob_join) = server
        .join("big", "bob", &["--metadata", &bob_metadata])
        .await;

    let listed: Vec<_> = bob_join
        .other_participants
        .iter()
        .map(|p| (p.identity.as_str(), p.metadata.as_str()))
        .collect();
    assert_eq!(listed, [("alice", alice_metadata.as_str())]);
    assert_eq!(
        bob_join.participant.as_ref().map(|p| p.metadata.as_str()),
        Some(bob_metadata.as_str())
    );

    let bob_sid = bob_join.participant.as_ref().unwrap().sid.clone();
    let seen = alice
        .expect_participant("bob's arrival", &bob_sid, |_| true)
        .await;
    assert_eq!(seen.metadata, bob_metadata);
    // Small messages still flow both ways after the fragmented ones.
    alice.assert_alive().await;
    bob.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_and_ping_req_are_answered() {
    let server = Server::start();
    let (mut alice, _) = server.join("pings", "alice", &[]).await;
    for value in [1_i64, -7, 1_700_000_000_123] {
        alice.send(Req::Ping(value)).await;
        let pong = alice
            .expect("pong", |r| match r {
                Resp::Pong(v) => Some(*v),
                _ => None,
            })
            .await;
        assert_eq!(pong, value);
    }
    alice
        .send(Req::PingReq(proto::Ping {
            timestamp: 1_234_567_890_123,
            rtt: 42,
        }))
        .await;
    let pong = alice
        .expect("pong_resp", |r| match r {
            Resp::PongResp(p) => Some(*p),
            _ => None,
        })
        .await;
    assert_eq!(pong.last_ping_timestamp, 1_234_567_890_123);
    assert!(pong.timestamp > 1_600_000_000_000, "server time in ms");
}

#[tokio::test(flavor = "multi_thread")]
async fn published_and_muted_tracks_reach_the_other_participant() {
    let server = Server::start();
    let (mut alice, alice_join) = server.join("tracks", "alice", &[]).await;
    let alice_sid = alice_join.participant.unwrap().sid;
    let (mut bob, _) = server.join("tracks", "bob", &[]).await;

    alice.send(audio_track("mic-1")).await;
    let published = alice
        .expect("TrackPublishedResponse", |r| match r {
            Resp::TrackPublished(t) => Some(t.clone()),
            _ => None,
        })
        .await;
    assert_eq!(published.cid, "mic-1");
    let track = published
        .track
        .expect("TrackInfo in TrackPublishedResponse");
    assert_sid(&track.sid, "TR_");
    assert_eq!(track.r#type, proto::TrackType::Audio as i32);
    assert_eq!(track.mime_type, "audio/opus");
    assert_eq!(
        track.codecs.first().map(|c| c.mime_type.as_str()),
        Some("audio/opus")
    );
    assert!(!track.muted);

    let seen = bob
        .expect_participant("alice's track", &alice_sid, |p| {
            p.tracks.iter().any(|t| t.sid == track.sid)
        })
        .await;
    let remote = seen.tracks.iter().find(|t| t.sid == track.sid).unwrap();
    assert!(!remote.muted);
    assert_eq!(remote.source, proto::TrackSource::Microphone as i32);

    alice
        .send(Req::Mute(proto::MuteTrackRequest {
            sid: track.sid.clone(),
            muted: true,
        }))
        .await;
    let muted = bob
        .expect("an update for alice", |r| match r {
            Resp::Update(u) => u.participants.iter().find(|p| p.sid == alice_sid).cloned(),
            _ => None,
        })
        .await;
    let remote = muted
        .tracks
        .iter()
        .find(|t| t.sid == track.sid)
        .expect("the track is still published");
    assert!(remote.muted, "the next update must show the track muted");
    assert!(muted.version > seen.version);

    alice
        .send(Req::Mute(proto::MuteTrackRequest {
            sid: track.sid.clone(),
            muted: false,
        }))
        .await;
    bob.expect_participant("the unmute", &alice_sid, |p| {
        p.tracks.iter().any(|t| t.sid == track.sid && !t.muted)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publishers_audio_and_video_reach_a_subscriber_in_one_offer() {
    let server = Server::start();
    let (mut bob, _) = server.join("one-offer", "bob", &[]).await;
    let (mut alice, _) = server.join("one-offer", "alice", &[]).await;
    alice.send(audio_track("mic-1")).await;
    alice.send(video_track("cam-1")).await;
    for _ in 0..2 {
        alice
            .expect("TrackPublishedResponse", |r| match r {
                Resp::TrackPublished(_) => Some(()),
                _ => None,
            })
            .await;
    }
    let _alice_media = alice
        .connect_publisher_with_video(Some("mic-1"), Some("cam-1"))
        .await;

    // Both m-lines came in one answer, so bob gets both tracks in his first offer: one SDP
    // round trip per publish, not one per track.
    let offer = bob
        .expect("bob's subscriber offer", |r| match r {
            Resp::Offer(o) => Some(o.sdp.clone()),
            _ => None,
        })
        .await;
    let audio = offer.lines().filter(|l| l.starts_with("m=audio")).count();
    let video = offer.lines().filter(|l| l.starts_with("m=video")).count();
    assert_eq!((audio, video), (1, 1), "bob's first offer:\n{offer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_without_publish_permission_cannot_add_tracks() {
    let server = Server::start();
    let (mut viewer, join) = server.join("no-pub", "viewer", &["--no-publish"]).await;
    assert!(!join.participant.unwrap().permission.unwrap().can_publish);

    viewer.send(audio_track("mic-1")).await;
    let refusal = viewer
        .expect("a refusal", |r| match r {
            Resp::RequestResponse(rr) => Some(rr.clone()),
            Resp::TrackPublished(t) => panic!("a no-publish token published a track: {t:?}"),
            _ => None,
        })
        .await;
    assert_eq!(
        refusal.reason,
        proto::request_response::Reason::NotAllowed as i32
    );
    assert!(
        refusal.message.contains("publish"),
        "the message says why: {:?}",
        refusal.message
    );
    viewer.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unparsable_offer_closes_only_that_connection() {
    let server = Server::start();
    let (mut alice, _) = server.join("offers", "alice", &[]).await;
    let (mut bob, bob_join) = server.join("offers", "bob", &[]).await;
    let bob_sid = bob_join.participant.unwrap().sid;

    bob.send(Req::Offer(proto::SessionDescription {
        r#type: "offer".into(),
        sdp: "this is not SDP\r\nm=nonsense\r\n".into(),
        id: 1,
        ..Default::default()
    }))
    .await;
    let close = bob
        .expect_close()
        .await
        .expect("a close frame with a reason");
    assert!(
        close.reason.to_lowercase().contains("offer"),
        "the close reason mentions the offer: {:?}",
        close.reason
    );

    alice
        .expect_participant("bob leaving", &bob_sid, |p| state(p) == State::Disconnected)
        .await;
    alice.assert_alive().await;
}

/// Bob sends `frames` into a room he shares with Alice. Returns the close frame Bob got,
/// after checking that Alice saw him leave and is still served.
async fn bad_input_closes_only_the_sender(room: &str, frames: Vec<Message>) -> CloseFrame {
    let server = Server::start();
    let (mut alice, _) = server.join(room, "alice", &[]).await;
    let (mut bob, bob_join) = server.join(room, "bob", &[]).await;
    let bob_sid = bob_join.participant.unwrap().sid;

    for frame in frames {
        bob.send_raw(frame).await;
    }
    let close = bob.expect_close().await.expect("a close frame");

    alice
        .expect_participant("bob leaving", &bob_sid, |p| state(p) == State::Disconnected)
        .await;
    alice.assert_alive().await;
    close
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_binary_frame_closes_with_1003_and_spares_the_room() {
    // Field 1 (offer) announced with 200 bytes, followed by four: not a SignalRequest.
    let garbage = vec![0x0a, 0xc8, 0x01, 0xde, 0xad, 0xbe, 0xef];
    assert!(
        <proto::SignalRequest as prost::Message>::decode(garbage.as_slice()).is_err(),
        "the test's garbage must really be malformed"
    );
    let close =
        bad_input_closes_only_the_sender("garbage", vec![Message::Binary(garbage.into())]).await;
    assert_eq!(close.code, CloseCode::Unsupported, "close code 1003");
    assert!(
        close.reason.contains("malformed"),
        "the reason says the frame was malformed: {:?}",
        close.reason
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_one_mib_closes_with_1009_and_spares_the_room() {
    // Two fragments of 600 KiB: each frame is acceptable, the message they make is not.
    let part = vec![0u8; 600 * 1024];
    let first = Frame::message(part.clone(), OpCode::Data(Data::Binary), false);
    let second = Frame::message(part, OpCode::Data(Data::Continue), true);
    let frames = vec![Message::Frame(first), Message::Frame(second)];
    let close = bad_input_closes_only_the_sender("oversize", frames).await;
    assert_eq!(close.code, CloseCode::Size, "close code 1009");
    assert!(
        close.reason.contains("larger than"),
        "the reason says the message was too large: {:?}",
        close.reason
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_text_frame_closes_with_a_reason_and_spares_the_room() {
    let text = Message::Text(r#"{"ping": 1}"#.into());
    let close = bad_input_closes_only_the_sender("texts", vec![text]).await;
    assert!(!close.reason.is_empty(), "a text frame gets a close reason");
    assert_ne!(close.code, CloseCode::Normal, "not a normal closure");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_identity_evicts_the_older_connection() {
    let server = Server::start();
    let (mut watcher, _) = server.join("dupes", "watcher", &[]).await;
    let (mut old, old_join) = server.join("dupes", "alice", &[]).await;
    let old_sid = old_join.participant.unwrap().sid;
    watcher
        .expect_participant("alice's first connection", &old_sid, |_| true)
        .await;

    let (mut new, new_join) = server.join("dupes", "alice", &[]).await;
    let new_sid = new_join.participant.as_ref().unwrap().sid.clone();
    assert_ne!(new_sid, old_sid);
    assert!(
        new_join.other_participants.iter().all(|p| p.sid != old_sid),
        "the replaced connection must not be listed to its replacement"
    );
    assert!(new_join
        .other_participants
        .iter()
        .any(|p| p.identity == "watcher"));

    let leave = old
        .expect("a LeaveRequest", |r| match r {
            Resp::Leave(l) => Some(l.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        leave.reason,
        proto::DisconnectReason::DuplicateIdentity as i32
    );
    assert_eq!(
        leave.action,
        proto::leave_request::Action::Disconnect as i32
    );
    assert!(matches!(
        old.next_event().await,
        Event::Closed(_) | Event::Ended(_)
    ));

    watcher
        .expect_participant("the old connection gone", &old_sid, |p| {
            state(p) == State::Disconnected
        })
        .await;
    let joined = watcher
        .expect_participant("the new connection", &new_sid, |_| true)
        .await;
    assert_eq!(joined.identity, "alice");
    assert_ne!(state(&joined), State::Disconnected);
    new.assert_alive().await;
    watcher.assert_alive().await;
}
