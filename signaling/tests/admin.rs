//! Admin operations against a real in-process server: real WebSocket clients (and, for data,
//! real WebRTC data channels) check what each operation makes them receive, and that the
//! participants it does not concern carry on.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use livekit_protocol as proto;
use support::{token, Client, Req, Resp, Server};
use switchboard_signaling::{
    AdminError, LeaveReason, ParticipantChange, RoomSettings, SignalEvent,
};

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
async fn a_room_created_through_the_api_is_open_before_anyone_joins_and_applies_its_settings() {
    let mut server = Server::start().await;
    let settings = RoomSettings {
        empty_timeout: Duration::from_secs(600),
        max_participants: 1,
        metadata: Some("{\"topic\":\"launch\"}".into()),
        ..Default::default()
    };
    let ensured = server.sig.ensure_room("launch", settings.clone()).unwrap();
    assert!(ensured.created);
    assert_eq!(ensured.room.metadata, "{\"topic\":\"launch\"}");
    let live = server.sig.live_room("launch").expect("the room is open");
    assert_eq!(
        (live.sid.as_str(), live.num_participants),
        (ensured.room.sid.as_str(), 0)
    );
    assert_eq!(live.max_participants, 1);
    assert_eq!(server.sig.participants("launch"), Some(Vec::new()));

    // The host's token (roomAdmin) joins the very room the API made, with its metadata.
    let host_token = token("launch", "host", |c| c.video.room_admin = true);
    let (mut host, join) = Client::join(&server, &host_token).await;
    let room = join.room.unwrap();
    assert_eq!(
        (room.sid, room.metadata),
        (ensured.room.sid.clone(), ensured.room.metadata.clone())
    );
    // Its limit applies: a second participant is refused.
    let (status, body) = server.validate(&token("launch", "guest", |_| {})).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("full"), "{body}");

    // The room was reported as started (with the sid the join saw) once, at creation, and
    // the join is reported, as a host.
    let (host_flag, attributes) = server
        .event("ParticipantJoined", |e| match e {
            SignalEvent::ParticipantJoined {
                identity,
                host,
                attributes,
                ..
            } if identity == "host" => Some((*host, attributes.clone())),
            _ => None,
        })
        .await;
    assert!(host_flag && attributes.is_empty());
    assert!(
        !server
            .drain_events()
            .iter()
            .any(|e| matches!(e, SignalEvent::RoomStarted { .. })),
        "RoomStarted came before the join, once"
    );

    // Creating it again updates the open room; its participants see the new metadata.
    let again = RoomSettings {
        metadata: Some("v2".into()),
        ..settings
    };
    let ensured_again = server.sig.ensure_room("launch", again).unwrap();
    assert!(!ensured_again.created);
    assert_eq!(ensured_again.room.sid, ensured.room.sid);
    let update = host
        .expect("RoomUpdate", |r| match r {
            Resp::RoomUpdate(u) => u.room.clone(),
            _ => None,
        })
        .await;
    assert_eq!(update.metadata, "v2");
    host.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_room_nobody_joins_closes_after_its_empty_timeout() {
    let mut server = Server::start().await;
    let settings = RoomSettings {
        empty_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    server.sig.ensure_room("ghost", settings).unwrap();
    assert!(server.sig.live_rooms().iter().any(|r| r.room_id == "ghost"));
    server
        .event("RoomFinished", |e| match e {
            SignalEvent::RoomFinished { room_id, .. } if room_id == "ghost" => Some(()),
            _ => None,
        })
        .await;
    assert!(server.sig.live_room("ghost").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_are_told_by_role_attribute_and_listings_show_hidden_participants() {
    let mut server = Server::start().await;
    let with_role = token("panel", "moderator", |c| {
        c.attributes = Some([("role".to_owned(), "host".to_owned())].into());
    });
    let (_moderator, _) = Client::join(&server, &with_role).await;
    let (mut guest, _) = server.join("panel", "guest").await;
    let hidden = token("panel", "recorder", |c| c.video.hidden = true);
    let (_recorder, _) = Client::join(&server, &hidden).await;

    let mut joined = HashMap::new();
    while joined.len() < 3 {
        let (identity, host, role) = server
            .event("ParticipantJoined", |e| match e {
                SignalEvent::ParticipantJoined {
                    identity,
                    host,
                    attributes,
                    ..
                } => Some((identity.clone(), *host, attributes.get("role").cloned())),
                _ => None,
            })
            .await;
        joined.insert(identity, (host, role));
    }
    assert_eq!(joined["moderator"], (true, Some("host".into())));
    assert_eq!(joined["guest"], (false, None));
    assert_eq!(joined["recorder"], (false, None));

    let identities: Vec<String> = server
        .sig
        .participants("panel")
        .unwrap()
        .into_iter()
        .map(|p| p.identity)
        .collect();
    assert_eq!(
        identities.len(),
        3,
        "admins see the hidden one too: {identities:?}"
    );
    assert!(identities.contains(&"recorder".to_owned()));
    assert!(server.sig.participant("panel", "recorder").is_some());
    assert!(server.sig.participant("panel", "nobody").is_none());
    assert!(server.sig.participants("elsewhere").is_none());
    let live = server.sig.live_room("panel").unwrap();
    assert_eq!((live.num_participants, live.num_publishers), (3, 0));
    guest.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn room_metadata_updates_reach_every_participant() {
    let server = Server::start().await;
    let (mut ann, _) = server.join("news", "ann").await;
    let (mut bob, _) = server.join("news", "bob").await;
    let (mut other, _) = server.join("sports", "cat").await;

    let room = server
        .sig
        .update_room_metadata("news", "breaking".into())
        .unwrap();
    assert_eq!(
        (room.name.as_str(), room.metadata.as_str()),
        ("news", "breaking")
    );
    assert_eq!(room.num_participants, 2);
    for client in [&mut ann, &mut bob] {
        let update = client
            .expect("RoomUpdate", |r| match r {
                Resp::RoomUpdate(u) => u.room.clone(),
                _ => None,
            })
            .await;
        assert_eq!(
            (update.sid.as_str(), update.metadata.as_str()),
            (room.sid.as_str(), "breaking")
        );
    }
    other.assert_alive().await;
    assert_eq!(
        server.sig.update_room_metadata("nowhere", "x".into()),
        Err(room_not_found("nowhere"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_room_disconnects_everyone_and_finishes_it() {
    let mut server = Server::start().await;
    let (mut ann, _) = server.join("doomed", "ann").await;
    let (mut bob, _) = server.join("doomed", "bob").await;
    let (mut cat, _) = server.join("safe", "cat").await;
    server.drain_events();

    server.sig.delete_room("doomed").await.unwrap();
    assert!(
        server.sig.live_room("doomed").is_none(),
        "gone from the registry at once"
    );
    for client in [&mut ann, &mut bob] {
        let leave = client.expect_leave().await;
        assert_eq!(leave.reason, proto::DisconnectReason::RoomDeleted as i32);
        assert_eq!(
            leave.action,
            proto::leave_request::Action::Disconnect as i32
        );
    }
    // Both leaves are recorded before the room's end.
    let events = server.drain_events();
    let left: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            SignalEvent::ParticipantLeft {
                identity, reason, ..
            } => Some((identity.as_str(), *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(left.len(), 2, "{events:?}");
    assert!(left
        .iter()
        .all(|(_, reason)| *reason == LeaveReason::RoomDeleted));
    assert!(
        matches!(events.last(), Some(SignalEvent::RoomFinished { room_id, .. }) if room_id == "doomed"),
        "{events:?}"
    );

    cat.assert_alive().await;
    assert!(server.sig.live_room("safe").is_some());
    // The name can be used again: a new join opens a new room.
    let (_again, join) = server.join("doomed", "ann").await;
    assert_eq!(join.other_participants.len(), 0);
    assert_eq!(
        server.sig.delete_room("nowhere").await,
        Err(room_not_found("nowhere"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_participant_is_disconnected_and_its_token_no_longer_joins() {
    let server = Server::start().await;
    let ann_token = token("stage", "ann", |_| {});
    let (mut ann, _) = Client::join(&server, &ann_token).await;
    let (mut bob, _) = server.join("stage", "bob").await;
    let ann_sid = ann.sid.clone();

    let revoked_at = server.sig.remove_participant("stage", "ann").unwrap();
    let leave = ann.expect_leave().await;
    assert_eq!(
        leave.reason,
        proto::DisconnectReason::ParticipantRemoved as i32
    );
    assert_eq!(
        leave.action,
        proto::leave_request::Action::Disconnect as i32
    );
    let gone = bob
        .expect_participant("ann disconnected", &ann_sid, |p| {
            p.state == proto::participant_info::State::Disconnected as i32
        })
        .await;
    assert_eq!(
        gone.disconnect_reason,
        proto::DisconnectReason::ParticipantRemoved as i32
    );
    assert!(server.sig.participant("stage", "ann").is_none());

    // Ann's token is refused, with a message the client shows; so is the upgrade itself.
    let (status, body) = server.validate(&ann_token).await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        "you were removed from room stage; ask for a new token"
    );
    let url = format!("ws://{}/rtc?access_token={ann_token}", server.addr);
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    // Her tokens for other rooms and other people's tokens still work.
    assert_eq!(server.validate(&token("lobby", "ann", |_| {})).await.0, 200);
    assert_eq!(server.validate(&token("stage", "cat", |_| {})).await.0, 200);
    // A token issued after the removal joins again.
    let fresh = token("stage", "ann", |c| c.iat = Some(revoked_at + 1));
    assert_eq!(server.validate(&fresh).await, (200, "success".to_owned()));
    let (_ann_again, join) = Client::join(&server, &fresh).await;
    assert_eq!(join.other_participants.len(), 1);
    bob.assert_alive().await;

    assert_eq!(
        server.sig.remove_participant("stage", "nobody"),
        Err(participant_not_found("stage", "nobody"))
    );
    assert_eq!(
        server.sig.remove_participant("nowhere", "ann"),
        Err(room_not_found("nowhere"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn revocations_loaded_at_start_refuse_older_tokens() {
    let server = Server::start().await;
    let old = token("stage", "mallory", |_| {});
    let now = switchboard_signaling::token::now_secs();
    server.sig.revoke("stage", "mallory", now);
    assert_eq!(server.validate(&old).await.0, 403);
    // A token that says neither iat nor nbf cannot be dated: refused.
    let undated = token("stage", "mallory", |c| c.nbf = None);
    assert_eq!(server.validate(&undated).await.0, 403);
    let later = token("stage", "mallory", |c| c.iat = Some(now + 1));
    assert_eq!(server.validate(&later).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn participant_updates_reach_everyone_and_the_participant_itself() {
    let server = Server::start().await;
    let with_attrs = token("forum", "ann", |c| {
        c.attributes = Some(
            [
                ("seat".to_owned(), "1".to_owned()),
                ("mood".to_owned(), "calm".to_owned()),
            ]
            .into(),
        );
    });
    let (mut ann, _) = Client::join(&server, &with_attrs).await;
    let (mut bob, _) = server.join("forum", "bob").await;
    let ann_sid = ann.sid.clone();
    let change = ParticipantChange {
        metadata: Some("speaker".into()),
        name: Some("Ann A.".into()),
        // Merged: "seat" changes, "mood" is deleted by its empty value, "hand" is added.
        attributes: Some(HashMap::from([
            ("seat".to_owned(), "2".to_owned()),
            ("mood".to_owned(), String::new()),
            ("hand".to_owned(), "up".to_owned()),
        ])),
        permission: Some(proto::ParticipantPermission {
            can_subscribe: true,
            can_publish: false,
            can_publish_data: true,
            ..Default::default()
        }),
    };
    let info = server
        .sig
        .update_participant("forum", "ann", change)
        .unwrap();
    let expected_attrs = HashMap::from([
        ("seat".to_owned(), "2".to_owned()),
        ("hand".to_owned(), "up".to_owned()),
    ]);
    assert_eq!(
        (info.metadata.as_str(), info.name.as_str()),
        ("speaker", "Ann A.")
    );
    assert_eq!(info.attributes, expected_attrs);
    for client in [&mut ann, &mut bob] {
        let seen = client
            .expect_participant("ann's update", &ann_sid, |p| p.version == info.version)
            .await;
        assert_eq!(seen, info);
    }
    // The new permission is enforced: Ann may no longer publish.
    ann.send(Req::AddTrack(proto::AddTrackRequest {
        cid: "cam".into(),
        r#type: proto::TrackType::Video as i32,
        ..Default::default()
    }))
    .await;
    let refusal = ann
        .expect("refusal", |r| match r {
            Resp::RequestResponse(r) => Some(r.clone()),
            Resp::TrackPublished(t) => panic!("published without permission: {t:?}"),
            _ => None,
        })
        .await;
    assert!(refusal.message.contains("canPublish"), "{refusal:?}");
    bob.assert_alive().await;
    assert_eq!(
        server
            .sig
            .update_participant("forum", "zed", ParticipantChange::default()),
        Err(participant_not_found("forum", "zed"))
    );
    assert_eq!(
        server
            .sig
            .update_participant("nowhere", "ann", ParticipantChange::default()),
        Err(room_not_found("nowhere"))
    );
}
