//! Broadcast sessions over the real `/v1` API (seeds 000 and 002): creation and its refusals,
//! the lifecycle driven by a host joining, live/end/cancel and egress reports, every illegal
//! transition, the concurrency of go-live, session participants and the event log.

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::api::{
    admin_token, assert_gapless, egress_status, eventually, grant_token, guest_token, host_token,
    id, is_ulid_id, kinds, leave, step, transitions, Api,
};
use support::{Client, Server};

/// A server and an admin client (roomCreate, roomList) for it.
fn setup() -> (Server, Api) {
    let server = Server::start();
    let api = Api::new(&server.http, Some(&admin_token("ops-room", "ops")));
    (server, api)
}

async fn create_room(api: &Api, room_id: &str) {
    let reply = api.post("/v1/rooms", &json!({ "room_id": room_id })).await;
    reply.expect(StatusCode::CREATED);
}

async fn create_session(api: &Api, room_id: &str) -> Value {
    let reply = api
        .post("/v1/sessions", &json!({ "room_id": room_id }))
        .await;
    reply.expect(StatusCode::CREATED)["session"].clone()
}

/// Every step that does not exist from `current` answers 409 with `current_state`.
async fn assert_refused(api: &Api, session_id: &str, current: &str, steps: &[&str]) {
    for step in steps {
        let reply = api
            .post_empty(&format!("/v1/sessions/{session_id}/{step}"))
            .await;
        reply.problem_saying(StatusCode::CONFLICT, &[session_id, current]);
        assert_eq!(
            reply.body["current_state"], current,
            "{step} from {current}: {}",
            reply.text
        );
    }
    assert_eq!(api.session(session_id).await["state"], current, "unchanged");
}

#[tokio::test(flavor = "multi_thread")]
async fn creating_a_session_follows_seed_000() {
    let (server, api) = setup();
    create_room(&api, "show").await;

    let session = create_session(&api, "show").await;
    let session_id = id(&session, "session_id");
    assert!(is_ulid_id(&session_id, "se_"), "{session_id}");
    assert_eq!(session["state"], "IDLE");
    assert_eq!(session["room_id"], "show");
    assert_eq!(session["version"], 1);
    assert!(session["ended_at"].is_null());
    assert_eq!(
        api.session(&session_id).await,
        session,
        "GET returns the same"
    );

    // One open session per room: the refusal names the open one.
    let reply = api
        .post("/v1/sessions", &json!({ "room_id": "show" }))
        .await;
    reply.problem_saying(StatusCode::CONFLICT, &[&session_id, "show"]);

    let reply = api
        .post("/v1/sessions", &json!({ "room_id": "nowhere" }))
        .await;
    reply.problem_saying(StatusCode::NOT_FOUND, &["nowhere"]);

    create_room(&api, "closed-show").await;
    api.delete("/v1/rooms/closed-show")
        .await
        .expect(StatusCode::NO_CONTENT);
    let reply = api
        .post("/v1/sessions", &json!({ "room_id": "closed-show" }))
        .await;
    reply.problem_saying(
        StatusCode::PRECONDITION_FAILED,
        &["closed-show", "not active"],
    );

    api.post("/v1/sessions", &json!({}))
        .await
        .bad_body(&["room_id"]);
    api.post(
        "/v1/sessions",
        &json!({ "room_id": "show", "colour": "red" }),
    )
    .await
    .bad_body(&["colour"]);

    // roomAdmin for another room is not enough; none at all is 401.
    let other = api.as_caller(Some(&host_token("elsewhere", "eve")));
    other
        .post("/v1/sessions", &json!({ "room_id": "show" }))
        .await
        .problem_saying(StatusCode::FORBIDDEN, &["roomAdmin"]);
    other
        .get(&format!("/v1/sessions/{session_id}"))
        .await
        .problem_saying(StatusCode::FORBIDDEN, &["roomList"]);
    let anonymous = api.as_caller(None);
    anonymous
        .post("/v1/sessions", &json!({ "room_id": "show" }))
        .await
        .problem_saying(StatusCode::UNAUTHORIZED, &["Authorization"]);
    // roomAdmin for this very room is.
    let host = api.as_caller(Some(&host_token("show", "host")));
    host.get(&format!("/v1/sessions/{session_id}"))
        .await
        .expect(StatusCode::OK);

    api.get("/v1/sessions/se_unknown")
        .await
        .problem_saying(StatusCode::NOT_FOUND, &["se_unknown"]);
    api.get("/v1/sessions")
        .await
        .problem_saying(StatusCode::BAD_REQUEST, &["room_id"]);
    api.get("/v1/sessions?room_id=nowhere")
        .await
        .problem_saying(StatusCode::NOT_FOUND, &["nowhere"]);
    api.assert_documented().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broadcast_walks_its_lifecycle_and_reopens_for_the_host() {
    let (server, api) = setup();
    create_room(&api, "studio").await;
    let first = create_session(&api, "studio").await;
    let s1 = id(&first, "session_id");
    assert_refused(&api, &s1, "IDLE", &["live", "end"]).await;

    // The host joins: READY.
    let (mut host, join) = Client::join(&server.ws, &host_token("studio", "hana")).await;
    let host_sid = join.participant.unwrap().sid;
    api.session_reaches(&s1, "READY").await;
    assert_refused(&api, &s1, "READY", &["end"]).await;

    // Go live: PUBLISHING with an egress starting.
    let body = step(&api, &s1, "live").await;
    assert_eq!(body["session"]["state"], "PUBLISHING");
    let egress = &body["egress"];
    let egress_id = id(egress, "egress_id");
    assert!(is_ulid_id(&egress_id, "eg_"), "{egress_id}");
    assert_eq!(egress["status"], "starting");
    assert_eq!(egress["session_id"], s1.as_str());
    assert_eq!(egress["room_id"], "studio");
    assert_refused(&api, &s1, "PUBLISHING", &["live", "end"]).await;

    // The egress reports active: LIVE.
    let active = egress_status(&api, &egress_id, json!({ "status": "active" })).await;
    assert_eq!(active["status"], "active");
    assert!(active["started_at"].is_string(), "{active}");
    let live = api.session(&s1).await;
    assert_eq!(live["state"], "LIVE");
    assert_refused(&api, &s1, "LIVE", &["live", "cancel"]).await;

    // End: ENDING, and the egress is asked to stop.
    let body = step(&api, &s1, "end").await;
    assert_eq!(body["session"]["state"], "ENDING");
    let reply = api.get(&format!("/v1/egress/{egress_id}")).await;
    assert_eq!(reply.expect(StatusCode::OK)["egress"]["status"], "ending");
    assert_refused(&api, &s1, "ENDING", &["live", "end", "cancel"]).await;

    // The egress completes: STOPPED, and since the host is still here a new READY session.
    let done = egress_status(&api, &egress_id, json!({ "status": "complete" })).await;
    assert_eq!(done["status"], "complete");
    assert!(done["ended_at"].is_string(), "{done}");
    let stopped = api.session(&s1).await;
    assert_eq!(stopped["state"], "STOPPED");
    assert!(stopped["ended_at"].is_string());
    assert!(stopped["version"].as_i64().unwrap() > first["version"].as_i64().unwrap());
    assert_refused(&api, &s1, "STOPPED", &["live", "end", "cancel"]).await;
    let sessions = api.sessions_of("studio").await;
    assert_eq!(sessions.len(), 2, "{sessions:#?}");
    assert_eq!(sessions[1]["session_id"], s1.as_str(), "newest first");
    let s2 = id(&sessions[0], "session_id");
    assert_eq!(sessions[0]["state"], "READY");
    assert_eq!(sessions[0]["room_id"], "studio");
    assert_eq!(sessions[0]["owner_identity"], "hana");

    // A finished egress does not change again; unknown ones are 404.
    api.post(
        &format!("/v1/egress/{egress_id}/status"),
        &json!({ "status": "active" }),
    )
    .await
    .problem(StatusCode::CONFLICT);
    api.post("/v1/egress/eg_nope/status", &json!({ "status": "active" }))
        .await
        .problem_saying(StatusCode::NOT_FOUND, &["eg_nope"]);
    api.post(
        &format!("/v1/egress/{egress_id}/status"),
        &json!({ "status": "exploded" }),
    )
    .await
    .bad_body(&["exploded"]);
    api.post_empty("/v1/sessions/se_nope/live")
        .await
        .problem_saying(StatusCode::NOT_FOUND, &["se_nope"]);
    let listed = api.get(&format!("/v1/egress?session_id={s1}")).await;
    let listed = listed.expect(StatusCode::OK)["egress"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["egress_id"], egress_id.as_str());

    // The host leaves; the whole story is in the room's log, in order.
    leave(&mut host).await;
    let events = eventually("the host's leave in the log", || async {
        let events = api.all_events("studio").await;
        match events.last() {
            Some(last) if last["kind"] == "participant_left" => Ok(events),
            _ => Err(format!("{:?}", kinds(&events))),
        }
    })
    .await;
    assert_gapless(&events);
    assert_eq!(
        kinds(&events),
        [
            "room_created",
            "room_started",          // open on the media server, with its RM_ sid
            "session_state_changed", // → IDLE
            "session_state_changed", // IDLE → READY
            "participant_joined",
            "session_state_changed", // READY → PUBLISHING
            "egress_started",
            "egress_updated",        // active
            "session_state_changed", // PUBLISHING → LIVE
            "session_state_changed", // LIVE → ENDING
            "egress_updated",        // ending
            "egress_ended",          // complete
            "session_state_changed", // ENDING → STOPPED
            "session_state_changed", // → READY (the next session)
            "participant_left",
        ]
    );
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        transitions(&events, &s1),
        pairs(&[
            ("-", "IDLE"),
            ("IDLE", "READY"),
            ("READY", "PUBLISHING"),
            ("PUBLISHING", "LIVE"),
            ("LIVE", "ENDING"),
            ("ENDING", "STOPPED"),
        ])
    );
    assert_eq!(transitions(&events, &s2), pairs(&[("-", "READY")]));
    let joined = &events[4];
    assert_eq!(joined["session_id"], s1.as_str());
    assert_eq!(joined["payload"]["participant"]["identity"], "hana");
    assert_eq!(joined["payload"]["participant"]["sid"], host_sid.as_str());
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids ascend: {ids:?}");
    for e in &events {
        assert_eq!(e["room_id"], "studio");
        assert!(e["created_at"].is_string(), "{e}");
    }
    api.assert_documented().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_joining_a_room_without_a_session_gets_a_ready_one() {
    let (server, api) = setup();
    // A guest alone opens nothing.
    let (_guest, _) = Client::join(&server.ws, &guest_token("walk-in", "gus")).await;
    api.room_recorded("walk-in").await;
    // The host joins: a READY session owned by the host, with the guest attached.
    let (_host, _) = Client::join(&server.ws, &host_token("walk-in", "hugo")).await;
    let session = api.open_session_reaches("walk-in", "READY").await;
    assert_eq!(session["owner_identity"], "hugo");
    let sessions = api.sessions_of("walk-in").await;
    assert_eq!(
        sessions.len(),
        1,
        "the guest alone created no session: {sessions:#?}"
    );
    let session_id = id(&session, "session_id");
    let people = eventually("both people in the session", || async {
        let rows = api.session_participants(&session_id).await;
        (rows.len() == 2)
            .then_some(rows.clone())
            .ok_or(format!("{rows:#?}"))
    })
    .await;
    let roles: Vec<(&str, &str)> = people
        .iter()
        .map(|p| {
            (
                p["identity"].as_str().unwrap(),
                p["role"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert!(roles.contains(&("hugo", "host")), "{roles:?}");
    assert!(roles.contains(&("gus", "guest")), "{roles:?}");
    let events = api.all_events("walk-in").await;
    assert_gapless(&events);
    assert_eq!(kinds(&events)[0], "room_started", "a room opened by a join");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_is_allowed_until_the_session_is_live() {
    let (server, api) = setup();
    // IDLE → CANCELLED.
    create_room(&api, "c-idle").await;
    let idle = id(&create_session(&api, "c-idle").await, "session_id");
    let body = step(&api, &idle, "cancel").await;
    assert_eq!(body["session"]["state"], "CANCELLED");
    assert!(body["session"]["ended_at"].is_string());
    assert_refused(&api, &idle, "CANCELLED", &["live", "end", "cancel"]).await;

    // READY → CANCELLED; a cancelled session is not replaced, even with the host here.
    let (_h1, _) = Client::join(&server.ws, &host_token("c-ready", "h1")).await;
    let ready = id(
        &api.open_session_reaches("c-ready", "READY").await,
        "session_id",
    );
    assert_eq!(
        step(&api, &ready, "cancel").await["session"]["state"],
        "CANCELLED"
    );
    assert_eq!(api.sessions_of("c-ready").await.len(), 1);

    // PUBLISHING → CANCELLED, and its egress failed with a reason.
    let (_h2, _) = Client::join(&server.ws, &host_token("c-pub", "h2")).await;
    let publishing = id(
        &api.open_session_reaches("c-pub", "READY").await,
        "session_id",
    );
    let egress_id = id(
        &step(&api, &publishing, "live").await["egress"],
        "egress_id",
    );
    assert_eq!(
        step(&api, &publishing, "cancel").await["session"]["state"],
        "CANCELLED"
    );
    let egress = api.get(&format!("/v1/egress/{egress_id}")).await;
    let egress = &egress.expect(StatusCode::OK)["egress"];
    assert_eq!(egress["status"], "failed");
    assert!(
        egress["error"].as_str().is_some_and(|e| !e.is_empty()),
        "a failed egress says why: {egress}"
    );
    assert_refused(&api, &publishing, "CANCELLED", &["live", "end", "cancel"]).await;
    let events = api.all_events("c-pub").await;
    assert_gapless(&events);
    assert_eq!(
        transitions(&events, &publishing).last().unwrap(),
        &("PUBLISHING".to_owned(), "CANCELLED".to_owned())
    );
    api.assert_documented().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_go_live_has_exactly_one_winner() {
    let (server, api) = setup();
    for round in 0..5 {
        let room = format!("race-{round}");
        let (_host, _) = Client::join(&server.ws, &host_token(&room, "host")).await;
        let session_id = id(
            &api.open_session_reaches(&room, "READY").await,
            "session_id",
        );
        let path = format!("/v1/sessions/{session_id}/live");
        let replies = futures_util::future::join_all((0..10).map(|_| api.post_empty(&path))).await;
        let winners = replies
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .count();
        assert_eq!(
            winners,
            1,
            "round {round}: {:?}",
            replies.iter().map(|r| r.status).collect::<Vec<_>>()
        );
        for loser in replies.iter().filter(|r| r.status != StatusCode::OK) {
            loser.problem(StatusCode::CONFLICT);
            assert_eq!(loser.body["current_state"], "PUBLISHING", "{}", loser.text);
        }
        let egress = api
            .get(&format!("/v1/egress?session_id={session_id}"))
            .await;
        let egress = egress.expect(StatusCode::OK)["egress"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(egress, 1, "round {round}: one egress for one winner");
        let events = api.all_events(&room).await;
        assert_gapless(&events);
        let to_publishing = transitions(&events, &session_id)
            .iter()
            .filter(|(_, to)| to == "PUBLISHING")
            .count();
        assert_eq!(to_publishing, 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_egress_ends_a_live_session() {
    let (server, api) = setup();
    let (_host, _) = Client::join(&server.ws, &host_token("fragile", "fay")).await;
    let s1 = id(
        &api.open_session_reaches("fragile", "READY").await,
        "session_id",
    );
    let egress_id = id(&step(&api, &s1, "live").await["egress"], "egress_id");
    egress_status(&api, &egress_id, json!({ "status": "active" })).await;
    api.session_reaches(&s1, "LIVE").await;

    let failed = egress_status(
        &api,
        &egress_id,
        json!({ "status": "failed", "error": "encoder crashed" }),
    )
    .await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"], "encoder crashed");
    assert_eq!(api.session(&s1).await["state"], "STOPPED");
    let events = api.all_events("fragile").await;
    assert_gapless(&events);
    let steps: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "session_state_changed" && e["session_id"] == s1.as_str())
        .collect();
    let tail: Vec<(&str, &str)> = steps[steps.len() - 2..]
        .iter()
        .map(|e| {
            (
                e["payload"]["from"].as_str().unwrap(),
                e["payload"]["to"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(tail, [("LIVE", "ENDING"), ("ENDING", "STOPPED")]);
    for e in &steps[steps.len() - 2..] {
        let reason = e["payload"]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("encoder crashed"), "reason {reason:?}");
    }
    // The host is still here: the next session is READY.
    let next = api.open_session_reaches("fragile", "READY").await;
    assert_ne!(next["session_id"], s1.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn session_participants_keep_one_row_per_identity() {
    let (server, api) = setup();
    let (_host, _) = Client::join(&server.ws, &host_token("meetup", "hal")).await;
    let session_id = id(
        &api.open_session_reaches("meetup", "READY").await,
        "session_id",
    );
    let guest = guest_token("meetup", "gia");
    let (mut first, join) = Client::join(&server.ws, &guest).await;
    let first_sid = join.participant.unwrap().sid;
    let row_of = |rows: &[Value], who: &str| rows.iter().find(|r| r["identity"] == who).cloned();
    let before = eventually("gia's row", || async {
        let rows = api.session_participants(&session_id).await;
        row_of(&rows, "gia").ok_or(format!("{rows:#?}"))
    })
    .await;
    assert_eq!(before["sid"], first_sid.as_str());
    assert_eq!(before["connections"], 1);
    assert!(before["left_at"].is_null());

    leave(&mut first).await;
    let left = eventually("gia's leave", || async {
        let rows = api.session_participants(&session_id).await;
        match row_of(&rows, "gia") {
            Some(r) if r["left_at"].is_string() => Ok(r),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(left["leave_reason"], "CLIENT_INITIATED");

    // Same identity, new connection: still one row, two connections, first joined_at.
    let (_second, join) = Client::join(&server.ws, &guest_token("meetup", "gia")).await;
    let second_sid = join.participant.unwrap().sid;
    assert_ne!(second_sid, first_sid);
    let after = eventually("gia's rejoin", || async {
        let rows = api.session_participants(&session_id).await;
        match row_of(&rows, "gia") {
            Some(r) if r["connections"] == 2 => Ok(rows),
            _ => Err(format!("{rows:#?}")),
        }
    })
    .await;
    assert_eq!(after.len(), 2, "one row per identity: {after:#?}");
    let gia = row_of(&after, "gia").unwrap();
    assert_eq!(
        gia["joined_at"], before["joined_at"],
        "the first join is kept"
    );
    assert_eq!(gia["sid"], second_sid.as_str());
    assert!(
        gia["left_at"].is_null() && gia["leave_reason"].is_null(),
        "{gia}"
    );
    assert_eq!(row_of(&after, "hal").unwrap()["role"], "host");

    api.get("/v1/sessions/se_nope/participants")
        .await
        .problem_saying(StatusCode::NOT_FOUND, &["se_nope"]);
    api.as_caller(Some(&guest))
        .get(&format!("/v1/sessions/{session_id}/participants"))
        .await
        .problem(StatusCode::FORBIDDEN);
    api.assert_documented().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_log_pages_with_after_and_limit() {
    let (server, api) = setup();
    create_room(&api, "pager").await;
    let s = id(&create_session(&api, "pager").await, "session_id");
    let (_host, _) = Client::join(&server.ws, &host_token("pager", "pat")).await;
    api.session_reaches(&s, "READY").await;
    let egress_id = id(&step(&api, &s, "live").await["egress"], "egress_id");
    egress_status(&api, &egress_id, json!({ "status": "active" })).await;
    let all = eventually("the host's join in the log", || async {
        let all = api.all_events("pager").await;
        (all.len() >= 7)
            .then_some(all.clone())
            .ok_or(format!("{:?}", kinds(&all)))
    })
    .await;
    assert_gapless(&all);

    // Pages of two, following next_after, give back the same log.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let reply = api
            .get(&format!("/v1/rooms/pager/events?after={after}&limit=2"))
            .await;
        let body = reply.expect(StatusCode::OK).clone();
        let page = body["events"].as_array().unwrap().clone();
        assert!(page.len() <= 2);
        if page.is_empty() {
            assert_eq!(body["next_after"], after, "an empty page keeps the cursor");
            break;
        }
        assert_eq!(body["next_after"], page.last().unwrap()["seq"]);
        after = body["next_after"].as_i64().unwrap();
        paged.extend(page);
    }
    assert_eq!(paged, all);
    let tail = api.get("/v1/rooms/pager/events?after=5").await;
    let tail = tail.expect(StatusCode::OK)["events"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(tail.as_slice(), &all[5..]);

    for (query, says) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("after=-1", "after"),
    ] {
        api.get(&format!("/v1/rooms/pager/events?{query}"))
            .await
            .problem_saying(StatusCode::BAD_REQUEST, &[says]);
    }
    api.get("/v1/rooms/pager/events?limit=1000")
        .await
        .expect(StatusCode::OK);
    api.get("/v1/rooms/nowhere/events")
        .await
        .problem_saying(StatusCode::NOT_FOUND, &["nowhere"]);
    api.as_caller(Some(&grant_token(
        "x",
        json!({ "room": "pager", "roomJoin": true }),
    )))
    .get("/v1/rooms/pager/events")
    .await
    .problem(StatusCode::FORBIDDEN);
    api.assert_documented().await;
    // A query that does not parse is a problem document too, not axum's plain text.
    for (query, says) in [("limit=-5", "limit"), ("after=soon", "after")] {
        api.get(&format!("/v1/rooms/pager/events?{query}"))
            .await
            .problem_saying(StatusCode::BAD_REQUEST, &[says]);
    }
}
