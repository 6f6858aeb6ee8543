//! Admin operations that reach the media plane, against a real in-process server: muting a
//! track (the SFU stops forwarding it: checked with real RTP between real WebRTC peers) and
//! server-originated data and transcriptions (received on real data channels).

mod support;

use std::time::Duration;

use livekit_protocol as proto;
use proto::data_packet::Value;
use support::{Req, Resp, Server};
use switchboard_signaling::{AdminError, TranscriptionSegmentOut};

fn room_not_found(room: &str) -> AdminError {
    AdminError::RoomNotFound { room: room.into() }
}

fn participant_not_found(room: &str, identity: &str) -> AdminError {
    AdminError::ParticipantNotFound {
        room: room.into(),
        identity: identity.into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn muting_a_track_stops_its_media_and_tells_its_publisher_and_everyone() {
    let server = Server::start().await;
    let (mut bob, _) = server.join("studio", "bob").await;
    let (mut ann, _) = server.join("studio", "ann").await;
    let track = ann.add_audio_track("mic-1").await;
    // Ann sends Opus every 20 ms from here on, whatever she is told: the server must stop it.
    let _ann_media = ann.connect_publisher(Some("mic-1")).await;
    let bob_media = bob.accept_subscriber().await;
    bob_media.wait_beyond(5).await;
    let ann_sid = ann.sid.clone();

    let info = server
        .sig
        .mute_track("studio", "ann", &track, true)
        .unwrap();
    assert!(info.muted && info.sid == track);
    // Ann's client is told to mute before it sees its own update (livekit-client would
    // otherwise "correct" the server from its local state).
    let muted = |p: &proto::ParticipantInfo| p.tracks.iter().any(|t| t.sid == track && t.muted);
    let mute = ann
        .expect("Mute", |r| match r {
            Resp::Mute(m) => Some(m.clone()),
            Resp::Update(u) if u.participants.iter().any(|p| p.sid == ann_sid && muted(p)) => {
                panic!("ann's update came before the Mute request: {u:?}")
            }
            _ => None,
        })
        .await;
    assert_eq!(
        mute,
        proto::MuteTrackRequest {
            sid: track.clone(),
            muted: true
        }
    );
    ann.expect_participant("own track muted", &ann_sid, muted)
        .await;
    bob.expect_participant("ann's track muted", &ann_sid, muted)
        .await;
    // The media plane no longer forwards it: after what was in flight, nothing reaches Bob
    // while Ann keeps sending (25 frames would arrive in this window).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let frozen = bob_media.received();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        bob_media.received(),
        frozen,
        "muted audio still reached bob"
    );

    // livekit-client acknowledges with its own MuteTrackRequest; then the admin unmutes.
    ann.send(Req::Mute(mute)).await;
    // Its session handles frames in order: a ping answered means the acknowledgement was
    // applied, so it cannot land after the unmute and mute the track again.
    ann.assert_alive().await;
    server
        .sig
        .mute_track("studio", "ann", &track, false)
        .unwrap();
    let unmute = ann
        .expect("unmute", |r| match r {
            Resp::Mute(m) if !m.muted => Some(m.sid.clone()),
            _ => None,
        })
        .await;
    assert_eq!(unmute, track);
    bob.expect_participant("ann's track unmuted", &ann_sid, |p| {
        p.tracks.iter().any(|t| !t.muted)
    })
    .await;
    bob_media.wait_beyond(frozen).await;
    bob.assert_alive().await;

    assert_eq!(
        server.sig.mute_track("studio", "ann", "TR_unknown", true),
        Err(AdminError::TrackNotFound {
            room: "studio".into(),
            identity: "ann".into(),
            track_sid: "TR_unknown".into()
        })
    );
    assert_eq!(
        server.sig.mute_track("studio", "bob", &track, true),
        Err(AdminError::TrackNotFound {
            room: "studio".into(),
            identity: "bob".into(),
            track_sid: track.clone()
        }),
        "a track of someone else"
    );
    assert_eq!(
        server.sig.mute_track("studio", "zed", &track, true),
        Err(participant_not_found("studio", "zed"))
    );
    assert_eq!(
        server.sig.mute_track("nowhere", "ann", &track, true),
        Err(room_not_found("nowhere"))
    );
}

fn user(packet: &proto::DataPacket) -> &proto::UserPacket {
    match &packet.value {
        Some(Value::User(user)) => user,
        other => panic!("not a user packet: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_data_reaches_only_its_destinations_with_no_sender() {
    let server = Server::start().await;
    let (mut ann, _) = server.join("ops", "ann").await;
    let (mut bob, _) = server.join("ops", "bob").await;
    let (mut cat, _) = server.join("ops", "cat").await;
    let mut ann_data = ann.open_data().await;
    let mut bob_data = bob.open_data().await;
    let mut cat_data = cat.open_data().await;

    let targets = vec!["ann".to_owned(), "bob".to_owned()];
    server
        .sig
        .send_data(
            "ops",
            b"for ann and bob".to_vec(),
            true,
            Some("alerts".into()),
            targets,
        )
        .unwrap();
    for data in [&mut ann_data, &mut bob_data] {
        let (label, packet) = data.next().await;
        assert_eq!(label, "_reliable");
        assert_eq!(
            (
                packet.participant_identity.as_str(),
                packet.participant_sid.as_str()
            ),
            ("", "")
        );
        let user = user(&packet);
        assert_eq!(user.payload, b"for ann and bob");
        assert_eq!(user.topic.as_deref(), Some("alerts"));
    }
    // Then one to everyone: on the ordered channel, it is the first thing Cat receives.
    server
        .sig
        .send_data("ops", b"everyone".to_vec(), true, None, Vec::new())
        .unwrap();
    for data in [&mut cat_data, &mut ann_data, &mut bob_data] {
        let (_, packet) = data.next().await;
        assert_eq!(user(&packet).payload, b"everyone");
        assert_eq!(user(&packet).topic, None);
    }
    // Lossy data goes on the lossy channel.
    server
        .sig
        .send_data(
            "ops",
            b"fast".to_vec(),
            false,
            Some("cursor".into()),
            vec!["cat".into()],
        )
        .unwrap();
    let (label, packet) = cat_data.next().await;
    assert_eq!(
        (label.as_str(), user(&packet).payload.as_slice()),
        ("_lossy", b"fast".as_slice())
    );

    for client in [&mut ann, &mut bob, &mut cat] {
        client.assert_alive().await;
    }
    assert_eq!(
        server
            .sig
            .send_data("nowhere", b"x".to_vec(), true, None, Vec::new()),
        Err(room_not_found("nowhere"))
    );
    assert!(matches!(
        server
            .sig
            .send_data("ops", vec![0; 70_000], true, None, Vec::new()),
        Err(AdminError::PayloadTooLarge { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn transcriptions_reach_everyone_as_livekit_transcription_packets() {
    let server = Server::start().await;
    let (mut ann, _) = server.join("talk", "ann").await;
    let track = ann.add_audio_track("mic").await;
    let (mut bob, _) = server.join("talk", "bob").await;
    let mut ann_data = ann.open_data().await;
    let mut bob_data = bob.open_data().await;

    let segment = TranscriptionSegmentOut {
        participant_identity: "ann".into(),
        track_sid: None,
        segment_id: "utt-1".into(),
        text: "hello everyone".into(),
        language: "en".into(),
        is_final: true,
        start_ms: 1_000,
        end_ms: 2_500,
    };
    server
        .sig
        .send_transcription("talk", segment.clone())
        .unwrap();
    for data in [&mut ann_data, &mut bob_data] {
        let (label, packet) = data.next().await;
        assert_eq!(label, "_reliable");
        let Some(Value::Transcription(t)) = packet.value else {
            panic!("not a transcription: {packet:?}");
        };
        assert_eq!(t.transcribed_participant_identity, "ann");
        assert_eq!(
            t.track_id, track,
            "the speaker's audio track, found by the server"
        );
        assert_eq!(
            t.segments,
            vec![proto::TranscriptionSegment {
                id: "utt-1".into(),
                text: "hello everyone".into(),
                start_time: 1_000,
                end_time: 2_500,
                r#final: true,
                language: "en".into(),
            }]
        );
    }
    // An explicit track sid is relayed as given.
    let explicit = TranscriptionSegmentOut {
        track_sid: Some("TR_given".into()),
        is_final: false,
        ..segment.clone()
    };
    server.sig.send_transcription("talk", explicit).unwrap();
    let (_, packet) = bob_data.next().await;
    let Some(Value::Transcription(t)) = packet.value else {
        panic!("not a transcription: {packet:?}");
    };
    assert_eq!(
        (t.track_id.as_str(), t.segments[0].r#final),
        ("TR_given", false)
    );
    ann.assert_alive().await;
    assert_eq!(
        server.sig.send_transcription("nowhere", segment),
        Err(room_not_found("nowhere"))
    );
}
