//! Rooms over the real `/v1` API: create (and its refusals), list, get with the people in it,
//! metadata updates that reach them, delete, the participant operations (list, remove, mute)
//! and host tokens that create their room on demand.

mod support;

use livekit_protocol as proto;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::api::{
    admin_token, grant_token, guest_token, host_token, http_client, is_ulid_id, kinds, Api,
};
use support::{Client, Req, Resp, Server};

fn setup() -> (Server, Api) {
    let server = Server::start();
    let api = Api::new(&server.http, Some(&admin_token("ops-room", "ops")));
    (server, api)
}

fn room_of(reply: &Value) -> Value {
    reply["room"].clone()
}

fn identities(participants: &Value) -> Vec<String> {
    participants
        .as_array()
        .expect("participants array")
        .iter()
        .map(|p| p["identity"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_are_created_and_refused_with_reasons() {
    let (_server, api) = setup();
    let channel = "ch_01jcpz7g8m9kn2q1w3y4x5z6a7";
    let spec = json!({
        "room_id": "town-hall",
        "name": "Town hall",
        "metadata": "{\"topic\":\"budget\"}",
        "empty_timeout_secs": 120,
        "max_participants": 8,
        "channel_id": channel,
        "guest_access": true,
    });
    let created = room_of(
        api.post("/v1/rooms", &spec)
            .await
            .expect(StatusCode::CREATED),
    );
    assert_eq!(created["room_id"], "town-hall");
    assert_eq!(created["name"], "Town hall");
    assert_eq!(created["metadata"], "{\"topic\":\"budget\"}");
    assert_eq!(created["status"], "active");
    assert_eq!(created["empty_timeout_secs"], 120);
    assert_eq!(created["max_participants"], 8);
    assert_eq!(created["channel_id"], channel);
    assert_eq!(created["guest_access"], true);
    // Open on the media server at once (LiveKit's CreateRoom), so it has its RM_ sid.
    assert!(
        created["sid"]
            .as_str()
            .is_some_and(|sid| sid.starts_with("RM_")),
        "an open room has its sid: {created}"
    );
    assert!(created["closed_at"].is_null());
    assert_eq!(created["participants"], json!([]));

    // Again: 200 with the room as it is, unchanged.
    let again = json!({ "room_id": "town-hall", "name": "Other" });
    let existing = room_of(api.post("/v1/rooms", &again).await.expect(StatusCode::OK));
    assert_eq!(existing, created);

    // No id: ro_<ULID>.
    let generated = room_of(
        api.post("/v1/rooms", &json!({}))
            .await
            .expect(StatusCode::CREATED),
    );
    let generated = generated["room_id"].as_str().unwrap();
    assert!(
        is_ulid_id(generated, "ro_"),
        "{generated:?} is not ro_<ULID>"
    );

    for bad in ["bad.room", "has space", "ü", &"x".repeat(65), ""] {
        api.post("/v1/rooms", &json!({ "room_id": bad }))
            .await
            .problem_saying(StatusCode::BAD_REQUEST, &["room name", "is not valid"]);
    }
    api.post(
        "/v1/rooms",
        &json!({ "room_id": "chan-room", "channel_id": "chan-1" }),
    )
    .await
    .problem_saying(StatusCode::BAD_REQUEST, &["channel id", "chan-1"]);
    assert_eq!(
        api.get("/v1/rooms/chan-room").await.status,
        StatusCode::NOT_FOUND,
        "a refused create leaves nothing behind"
    );
    api.post("/v1/rooms", &json!({ "room_id": "x", "colour": "red" }))
        .await
        .bad_body(&["colour"]);
    api.post("/v1/rooms", &json!({ "room_id": 7 }))
        .await
        .bad_body(&["room_id"]);

    // 401 without a (valid) token, 403 without roomCreate.
    let client = http_client();
    let raw = client
        .post(format!("{}/v1/rooms", api.base))
        .header("content-type", "application/json")
        .body("{not json")
        .bearer_auth(admin_token("ops-room", "ops"))
        .send()
        .await
        .unwrap();
    assert!(raw.status().is_client_error());
    assert!(raw.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/problem+json"));
    api.as_caller(None)
        .post("/v1/rooms", &spec)
        .await
        .problem_saying(StatusCode::UNAUTHORIZED, &["Authorization"]);
    api.as_caller(Some("not-a-jwt"))
        .post("/v1/rooms", &spec)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    let forged = support::sign(
        &support::jwt_payload(&admin_token("ops-room", "ops")),
        "not-the-secret",
    );
    api.as_caller(Some(&forged))
        .post("/v1/rooms", &spec)
        .await
        .problem_saying(StatusCode::UNAUTHORIZED, &["signature"]);
    for (who, token) in [
        (
            "a lister",
            grant_token("lister", json!({ "roomList": true })),
        ),
        ("a room admin", host_token("town-hall", "host")),
        ("a guest", guest_token("town-hall", "guest")),
    ] {
        let reply = api.as_caller(Some(&token)).post("/v1/rooms", &spec).await;
        let detail = reply.problem_saying(StatusCode::FORBIDDEN, &["roomCreate"]);
        assert!(!detail.contains("Bearer"), "{who}: {detail}");
    }
    api.assert_documented().await;
    // A channel id is ch_<ULID> (seed 002), not anything that starts with ch_.
    for (room, bad) in [
        ("chan-a", "ch_"),
        ("chan-b", "ch_not a ulid"),
        ("chan-c", "ch_123"),
    ] {
        api.post("/v1/rooms", &json!({ "room_id": room, "channel_id": bad }))
            .await
            .problem_saying(StatusCode::BAD_REQUEST, &["channel id"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_are_listed_by_status() {
    let (_server, api) = setup();
    for room in ["open-1", "open-2", "gone"] {
        api.post("/v1/rooms", &json!({ "room_id": room }))
            .await
            .expect(StatusCode::CREATED);
    }
    api.delete("/v1/rooms/gone")
        .await
        .expect(StatusCode::NO_CONTENT);
    let ids = |body: &Value| -> Vec<String> {
        body["rooms"]
            .as_array()
            .expect("rooms array")
            .iter()
            .map(|r| r["room_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = ids(api.get("/v1/rooms").await.expect(StatusCode::OK));
    for room in ["open-1", "open-2", "gone"] {
        assert!(all.contains(&room.to_owned()), "{all:?}");
    }
    let active = api.get("/v1/rooms?status=active").await;
    let active = ids(active.expect(StatusCode::OK));
    assert!(active.contains(&"open-1".to_owned()) && active.contains(&"open-2".to_owned()));
    assert!(!active.contains(&"gone".to_owned()), "{active:?}");
    let closed = ids(api
        .get("/v1/rooms?status=closed")
        .await
        .expect(StatusCode::OK));
    assert_eq!(closed, ["gone"]);

    api.get("/v1/rooms?status=open")
        .await
        .problem_saying(StatusCode::BAD_REQUEST, &["open", "active or closed"]);
    api.as_caller(Some(&host_token("open-1", "host")))
        .get("/v1/rooms")
        .await
        .problem_saying(StatusCode::FORBIDDEN, &["roomList"]);
    api.as_caller(None)
        .get("/v1/rooms")
        .await
        .problem(StatusCode::UNAUTHORIZED);
    api.get("/v1/rooms/never")
        .await
        .problem_saying(StatusCode::NOT_FOUND, &["never"]);
    api.assert_documented().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_room_shows_who_is_in_it_and_metadata_reaches_them() {
    let (server, api) = setup();
    api.post(
        "/v1/rooms",
        &json!({ "room_id": "salon", "metadata": "v1" }),
    )
    .await
    .expect(StatusCode::CREATED);
    let (mut ann, join) = Client::join(&server.ws, &guest_token("salon", "ann")).await;
    assert_eq!(join.room.as_ref().unwrap().metadata, "v1");
    let room_sid = join.room.unwrap().sid;

    let room = room_of(api.get("/v1/rooms/salon").await.expect(StatusCode::OK));
    assert_eq!(identities(&room["participants"]), ["ann"]);
    // Signaling only, no media: JOINED, as LiveKit reports it before the PeerConnection is up.
    assert_eq!(room["participants"][0]["state"], "JOINED", "{room}");
    let listed = api.get("/v1/rooms/salon/participants").await;
    assert_eq!(
        identities(&listed.expect(StatusCode::OK)["participants"]),
        ["ann"]
    );
    // roomAdmin for the room reads it too; a plain member does not.
    api.as_caller(Some(&host_token("salon", "host")))
        .get("/v1/rooms/salon/participants")
        .await
        .expect(StatusCode::OK);
    api.as_caller(Some(&guest_token("salon", "ann")))
        .get("/v1/rooms/salon")
        .await
        .problem(StatusCode::FORBIDDEN);
    api.get("/v1/rooms/never/participants")
        .await
        .problem_saying(StatusCode::NOT_FOUND, &["never"]);

    let patched = api
        .patch(
            "/v1/rooms/salon",
            &json!({ "metadata": "v2", "name": "Salon" }),
        )
        .await;
    let patched = room_of(patched.expect(StatusCode::OK));
    assert_eq!(patched["metadata"], "v2");
    assert_eq!(patched["name"], "Salon");
    let update = ann
        .expect("RoomUpdate", |r| match r {
            Resp::RoomUpdate(u) => u.room.clone(),
            _ => None,
        })
        .await;
    assert_eq!(update.metadata, "v2");
    assert_eq!(update.name, "salon");
    assert_eq!(
        room_of(api.get("/v1/rooms/salon").await.expect(StatusCode::OK))["metadata"],
        "v2"
    );
    let events = api.all_events("salon").await;
    assert!(
        kinds(&events).contains(&"room_updated".to_owned()),
        "{:?}",
        kinds(&events)
    );

    api.patch("/v1/rooms/never", &json!({ "metadata": "x" }))
        .await
        .problem_saying(StatusCode::NOT_FOUND, &["never"]);
    api.patch("/v1/rooms/salon", &json!({ "topic": "x" }))
        .await
        .bad_body(&["topic"]);
    api.as_caller(Some(&host_token("elsewhere", "eve")))
        .patch("/v1/rooms/salon", &json!({ "metadata": "x" }))
        .await
        .problem_saying(StatusCode::FORBIDDEN, &["roomAdmin"]);
    api.assert_documented().await;
    // Once someone joined, the room record carries the live room's sid.
    let room = room_of(api.get("/v1/rooms/salon").await.expect(StatusCode::OK));
    assert_eq!(room["sid"], room_sid.as_str(), "{room}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_room_sends_everyone_away_and_cancels_its_session() {
    let (server, api) = setup();
    api.post("/v1/rooms", &json!({ "room_id": "doomed" }))
        .await
        .expect(StatusCode::CREATED);
    let session = api
        .post("/v1/sessions", &json!({ "room_id": "doomed" }))
        .await;
    let session_id = session.expect(StatusCode::CREATED)["session"]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut bea, _) = Client::join(&server.ws, &guest_token("doomed", "bea")).await;

    api.as_caller(Some(&host_token("doomed", "host")))
        .delete("/v1/rooms/doomed")
        .await
        .problem_saying(StatusCode::FORBIDDEN, &["roomCreate"]);
    api.delete("/v1/rooms/doomed")
        .await
        .expect(StatusCode::NO_CONTENT);
    let leave = bea
        .expect("LeaveRequest", |r| match r {
            Resp::Leave(l) => Some(l.clone()),
            _ => None,
        })
        .await;
    assert_eq!(leave.reason, proto::DisconnectReason::RoomDeleted as i32);

    let room = room_of(api.get("/v1/rooms/doomed").await.expect(StatusCode::OK));
    assert_eq!(room["status"], "closed");
    assert!(room["closed_at"].is_string());
    assert_eq!(room["participants"], json!([]));
    let session = api.session(&session_id).await;
    assert_eq!(session["state"], "CANCELLED", "not live: cancelled");
    assert!(session["ended_at"].is_string());
    let events = api.all_events("doomed").await;
    assert_eq!(
        kinds(&events).last().unwrap(),
        "room_finished",
        "{:?}",
        kinds(&events)
    );
    let left = events
        .iter()
        .find(|e| e["kind"] == "participant_left")
        .expect("bea's leave is recorded");
    assert_eq!(left["payload"]["participant"]["identity"], "bea");
    assert_eq!(
        left["payload"]["participant"]["leave_reason"],
        "ROOM_DELETED"
    );

    // Deleting it again changes nothing; an unknown room is 404.
    api.delete("/v1/rooms/doomed")
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(api.all_events("doomed").await, events, "no new events");
    api.delete("/v1/rooms/never")
        .await
        .problem_saying(StatusCode::NOT_FOUND, &["never"]);
    api.assert_documented().await;
}

/// A live session winds down (STOPPED), its egress fails, and although the host was there
/// until the end no new session opens in a closed room.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_room_stops_its_live_session() {
    let (server, api) = setup();
    let (mut host, _) = Client::join(&server.ws, &host_token("doomed-live", "hal")).await;
    let open = api.open_session_reaches("doomed-live", "READY").await;
    let live_id = open["session_id"].as_str().unwrap().to_owned();
    let live = api
        .post(
            &format!("/v1/sessions/{live_id}/live"),
            &json!({ "external": true }),
        )
        .await;
    let egress_id = live.expect(StatusCode::OK)["egress"]["egress_id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.post(
        &format!("/v1/egress/{egress_id}/status"),
        &json!({ "status": "active" }),
    )
    .await
    .expect(StatusCode::OK);
    api.delete("/v1/rooms/doomed-live")
        .await
        .expect(StatusCode::NO_CONTENT);
    host.expect("LeaveRequest", |r| match r {
        Resp::Leave(l) => Some(l.reason),
        _ => None,
    })
    .await;
    assert_eq!(api.session(&live_id).await["state"], "STOPPED");
    let egress = api.get(&format!("/v1/egress/{egress_id}")).await;
    let egress = egress.expect(StatusCode::OK)["egress"].clone();
    assert_eq!(egress["status"], "failed", "{egress}");
    let steps = support::api::transitions(&api.all_events("doomed-live").await, &live_id);
    let tail: Vec<(&str, &str)> = steps[steps.len() - 2..]
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(tail, [("LIVE", "ENDING"), ("ENDING", "STOPPED")]);
    assert_eq!(
        api.sessions_of("doomed-live").await.len(),
        1,
        "no new session"
    );
    api.assert_documented().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_participant_cannot_come_back_with_its_token() {
    let (server, api) = setup();
    let token = guest_token("club", "mallory");
    let (mut mallory, _) = Client::join(&server.ws, &token).await;
    let (_other, _) = Client::join(&server.ws, &guest_token("club", "olga")).await;
    api.room_recorded("club").await;

    api.as_caller(Some(&host_token("elsewhere", "eve")))
        .delete("/v1/rooms/club/participants/mallory")
        .await
        .problem(StatusCode::FORBIDDEN);
    // roomAdmin for this room is enough.
    api.as_caller(Some(&host_token("club", "host")))
        .delete("/v1/rooms/club/participants/mallory")
        .await
        .expect(StatusCode::NO_CONTENT);
    let leave = mallory
        .expect("LeaveRequest", |r| match r {
            Resp::Leave(l) => Some(l.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        leave.reason,
        proto::DisconnectReason::ParticipantRemoved as i32
    );

    let validate = http_client()
        .get(format!("{}/rtc/validate", server.http))
        .query(&[("access_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        validate.status(),
        StatusCode::FORBIDDEN,
        "the old token is revoked"
    );
    let participants = api.get("/v1/rooms/club/participants").await;
    assert_eq!(
        identities(&participants.expect(StatusCode::OK)["participants"]),
        ["olga"]
    );

    api.delete("/v1/rooms/club/participants/nobody")
        .await
        .problem_saying(StatusCode::NOT_FOUND, &["nobody"]);
    api.delete("/v1/rooms/never/participants/mallory")
        .await
        .problem_saying(StatusCode::NOT_FOUND, &["never"]);
    api.assert_documented().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn muting_a_track_reaches_its_publisher() {
    let (server, api) = setup();
    let (mut alice, _) = Client::join(&server.ws, &guest_token("radio", "alice")).await;
    alice
        .send(Req::AddTrack(proto::AddTrackRequest {
            cid: "mic-1".into(),
            name: "microphone".into(),
            r#type: proto::TrackType::Audio as i32,
            source: proto::TrackSource::Microphone as i32,
            ..Default::default()
        }))
        .await;
    let track = alice
        .expect("TrackPublished", |r| match r {
            Resp::TrackPublished(t) => t.track.clone(),
            _ => None,
        })
        .await;
    let path = format!(
        "/v1/rooms/radio/participants/alice/tracks/{}/mute",
        track.sid
    );

    let muted = api.post(&path, &json!({ "muted": true })).await;
    let muted = muted.expect(StatusCode::OK)["track"].clone();
    assert_eq!(muted["sid"], track.sid.as_str());
    assert_eq!(muted["muted"], true);
    let request = alice
        .expect("Mute", |r| match r {
            Resp::Mute(m) => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!(request.sid, track.sid);
    assert!(request.muted);
    // The room was opened by alice's join, and is recorded just after it.
    let room = api.room_recorded("radio").await;
    assert_eq!(
        room["participants"][0]["tracks"][0]["muted"], true,
        "{room}"
    );

    api.post(&path, &json!({ "muted": false }))
        .await
        .expect(StatusCode::OK);
    let request = alice
        .expect("Mute (unmute)", |r| match r {
            Resp::Mute(m) => Some(m.clone()),
            _ => None,
        })
        .await;
    assert!(!request.muted);

    api.post(
        "/v1/rooms/radio/participants/alice/tracks/TR_nope/mute",
        &json!({ "muted": true }),
    )
    .await
    .problem_saying(StatusCode::NOT_FOUND, &["TR_nope"]);
    api.post(
        &format!("/v1/rooms/radio/participants/bob/tracks/{}/mute", track.sid),
        &json!({ "muted": true }),
    )
    .await
    .problem_saying(StatusCode::NOT_FOUND, &["bob"]);
    api.post(&path, &json!({})).await.bad_body(&["muted"]);
    api.as_caller(Some(&guest_token("radio", "alice")))
        .post(&path, &json!({ "muted": true }))
        .await
        .problem(StatusCode::FORBIDDEN);
    api.assert_documented().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_tokens_create_their_room_on_demand() {
    let (server, api) = setup();
    api.get("/v1/rooms/green-room")
        .await
        .problem(StatusCode::NOT_FOUND);
    let minted = api
        .post(
            "/v1/rooms/green-room/tokens",
            &json!({ "identity": "hana", "admin": true, "name": "Hana" }),
        )
        .await;
    let minted = minted.expect(StatusCode::OK).clone();
    assert_eq!(minted["room_id"], "green-room");
    assert_eq!(minted["identity"], "hana");
    // The room exists before the token is used.
    let room = room_of(api.get("/v1/rooms/green-room").await.expect(StatusCode::OK));
    assert_eq!(room["status"], "active");
    let events = api.all_events("green-room").await;
    assert_eq!(kinds(&events), ["room_created", "room_started"]);

    let claims = support::jwt_payload(minted["token"].as_str().unwrap());
    assert_eq!(claims["video"]["roomAdmin"], true);
    let (_hana, join) = Client::join(&server.ws, minted["token"].as_str().unwrap()).await;
    assert_eq!(join.participant.unwrap().name, "Hana");

    // A closed room is opened again when a host token is asked for.
    api.delete("/v1/rooms/green-room")
        .await
        .expect(StatusCode::NO_CONTENT);
    api.post(
        "/v1/rooms/green-room/tokens",
        &json!({ "identity": "hana" }),
    )
    .await
    .expect(StatusCode::OK);
    let room = room_of(api.get("/v1/rooms/green-room").await.expect(StatusCode::OK));
    assert_eq!(room["status"], "active");

    api.as_caller(Some(&grant_token("lister", json!({ "roomList": true }))))
        .post("/v1/rooms/other/tokens", &json!({ "identity": "x" }))
        .await
        .problem_saying(StatusCode::FORBIDDEN, &["roomAdmin"]);
    api.post("/v1/rooms/green-room/tokens", &json!({ "identity": " " }))
        .await
        .problem_saying(StatusCode::BAD_REQUEST, &["identity"]);
    api.post(
        "/v1/rooms/green-room/tokens",
        &json!({ "identity": "x", "ttl_secs": 999_999 }),
    )
    .await
    .problem_saying(StatusCode::BAD_REQUEST, &["ttl_secs"]);
    assert_eq!(
        api.get("/v1/rooms/other").await.status,
        StatusCode::NOT_FOUND,
        "a refused request creates nothing"
    );
    api.assert_documented().await;
}
