//! Resume (issue 19): a participant whose signaling connection is lost keeps its sid, tracks
//! and place in the room for the departure timeout, and a reconnect naming its sid takes the
//! session over (`/rtc?reconnect=1&sid=…`, as livekit-client sends it). Against the real
//! binary, over real WebSockets.

mod support;

use std::time::{Duration, Instant};

use livekit_protocol as proto;
use proto::participant_info::State;
use serde_json::json;
use support::api::{admin_token, grant_token, Api};
use support::{rtc_url, state, Client, Event, Req, Resp, Server};

/// A reconnect of `token`'s participant `sid`; returns the first message.
async fn reconnect(server: &Server, token: &str, sid: &str) -> (Client, Resp) {
    let url = rtc_url(
        &server.ws,
        token,
        &format!("&reconnect=1&sid={sid}&reconnect_reason=1"),
    );
    let mut client = Client::connect(&url).await.expect("upgrade for the resume");
    match client.next_event().await {
        Event::Response(first) => (client, first),
        other => panic!("the resume got no response: {other:?}"),
    }
}

/// Reads `watcher`'s updates until `sid` shows `metadata`; fails if any update in between
/// says `sid` left.
async fn sees_metadata_without_leaving(watcher: &mut Client, sid: &str, metadata: &str) {
    watcher
        .expect("the metadata update", |r| {
            let Resp::Update(update) = r else {
                return None;
            };
            let mine = update.participants.iter().find(|p| p.sid == sid)?;
            assert_ne!(
                state(mine),
                State::Disconnected,
                "the others never see a resumed participant leave"
            );
            (mine.metadata == metadata).then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_connection_is_resumed_with_the_same_sid_and_nobody_sees_it_leave() {
    let server = Server::start();
    let room = "resume-lost";
    let token = grant_token(
        "alice",
        json!({ "room": room, "roomJoin": true, "canUpdateOwnMetadata": true }),
    );
    let (alice, join) = Client::join(&server.ws, &token).await;
    let sid = join.participant.unwrap().sid;
    let (mut bob, _) = server.join(room, "bob", &[]).await;

    // The connection dies without a close (a network blip, as the server sees it).
    drop(alice);
    let (mut alice, first) = reconnect(&server, &token, &sid).await;
    assert!(
        matches!(first, Resp::Reconnect(_)),
        "the first message of a resume is a ReconnectResponse: {first:?}"
    );
    alice.assert_alive().await;
    alice
        .send(Req::UpdateMetadata(proto::UpdateParticipantMetadata {
            metadata: "back".into(),
            ..Default::default()
        }))
        .await;
    sees_metadata_without_leaving(&mut bob, &sid, "back").await;

    // One participant, joined once, still there: the records agree.
    let api = Api::new(&server.http, Some(&admin_token(room, "admin")));
    let events = api.all_events(room).await;
    let joins = events
        .iter()
        .filter(|e| e["kind"] == "participant_joined")
        .filter(|e| e["payload"]["participant"]["identity"] == "alice")
        .count();
    let leaves = events
        .iter()
        .filter(|e| e["kind"] == "participant_left")
        .count();
    assert_eq!((joins, leaves), (1, 0), "{events:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reconnect_takes_over_a_connection_that_still_looks_open() {
    let server = Server::start();
    let room = "resume-open";
    let token = support::token(room, "alice", &[]);
    let (mut old, join) = Client::join(&server.ws, &token).await;
    let sid = join.participant.unwrap().sid;

    let (mut new, first) = reconnect(&server, &token, &sid).await;
    assert!(matches!(first, Resp::Reconnect(_)), "{first:?}");
    new.assert_alive().await;
    assert!(
        matches!(old.next_event().await, Event::Closed(_) | Event::Ended(_)),
        "the connection the client left is closed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reconnect_that_names_no_session_of_its_token_is_told_to_rejoin() {
    let server = Server::start();
    let room = "resume-refused";
    let token = support::token(room, "alice", &[]);
    let (mut alice, join) = Client::join(&server.ws, &token).await;
    let sid = join.participant.unwrap().sid;

    let mallory = support::token(room, "mallory", &[]);
    for (token, sid, what) in [
        (token.as_str(), "PA_unknown", "an unknown sid"),
        (mallory.as_str(), sid.as_str(), "another identity's sid"),
    ] {
        let (_, first) = reconnect(&server, token, sid).await;
        match first {
            Resp::Leave(leave) => {
                assert_eq!(
                    leave.action,
                    proto::leave_request::Action::Reconnect as i32,
                    "{what}: the client is told to reconnect from scratch"
                );
                assert!(leave.can_reconnect, "{what}");
            }
            other => panic!("{what}: expected a LeaveRequest, got {other:?}"),
        }
    }
    alice.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_does_not_come_back_leaves_after_the_departure_timeout() {
    let departure = Duration::from_secs(2);
    let server = Server::start_with(&["--limit", "peer_departure_timeout=2s"]);
    let room = "resume-late";
    let token = support::token(room, "alice", &[]);
    let (alice, join) = Client::join(&server.ws, &token).await;
    let sid = join.participant.unwrap().sid;
    let (mut bob, _) = server.join(room, "bob", &[]).await;

    let lost = Instant::now();
    drop(alice);
    bob.expect_participant("alice's departure", &sid, |p| {
        state(p) == State::Disconnected
    })
    .await;
    let waited = lost.elapsed();
    assert!(
        waited >= departure,
        "alice was kept for the departure timeout, not {waited:?}"
    );
    let api = Api::new(&server.http, Some(&admin_token(room, "admin")));
    assert_eq!(
        api.leave_reason(room, "alice").await,
        "SIGNAL_CLOSE",
        "the record says the signaling connection closed"
    );
    let (_, first) = reconnect(&server, &token, &sid).await;
    assert!(
        matches!(first, Resp::Leave(ref l) if l.action == proto::leave_request::Action::Reconnect as i32),
        "too late to resume: rejoin ({first:?})"
    );
}

/// Waits for a RefreshToken and returns the token.
async fn refreshed_token(client: &mut Client) -> String {
    client
        .expect("a RefreshToken", |r| match r {
            Resp::RefreshToken(token) => Some(token.clone()),
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connected_client_gets_fresh_tokens_it_can_resume_with() {
    let server = Server::start_with(&["--limit", "token_refresh_interval=1s"]);
    let room = "resume-token";
    let token = support::token(room, "alice", &["--ttl", "30s"]);
    let (mut alice, join) = Client::join(&server.ws, &token).await;
    let sid = join.participant.unwrap().sid;

    let fresh = refreshed_token(&mut alice).await;
    let (old, new) = (support::jwt_payload(&token), support::jwt_payload(&fresh));
    assert_eq!(new["sub"], "alice");
    assert_eq!(new["video"]["room"], room);
    assert!(
        new["exp"].as_u64() > old["exp"].as_u64(),
        "the fresh token lives longer: {old} → {new}"
    );

    // The fresh token resumes the session, and the resume brings another one at once.
    drop(alice);
    let (mut alice, first) = reconnect(&server, &fresh, &sid).await;
    assert!(matches!(first, Resp::Reconnect(_)), "{first:?}");
    let after_resume = refreshed_token(&mut alice).await;
    assert_eq!(support::jwt_payload(&after_resume)["sub"], "alice");
    alice.assert_alive().await;
}
