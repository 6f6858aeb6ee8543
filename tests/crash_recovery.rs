//! A crash in the middle of a live broadcast: `kill -9` the server while a host and a guest
//! are connected and the session is LIVE, start it again on the same data directory, and
//! check what the reconciliation on start made of the records and the event log.

mod support;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::Row as _;
use support::api::{
    admin_token, assert_gapless, eventually, guest_token, host_token, id, kinds, transitions, Api,
};
use support::{open_db, Client, Server};

const ROOM: &str = "broadcast";

/// Brings a session in `ROOM` to LIVE with a host and a guest connected; returns the
/// session id, the egress id and the two connected clients.
async fn go_live(server: &Server, api: &Api) -> (String, String, Vec<Client>) {
    api.post("/v1/rooms", &json!({ "room_id": ROOM }))
        .await
        .expect(StatusCode::CREATED);
    let created = api.post("/v1/sessions", &json!({ "room_id": ROOM })).await;
    let session_id = id(
        &created.expect(StatusCode::CREATED)["session"],
        "session_id",
    );
    let (host, _) = Client::join(&server.ws, &host_token(ROOM, "hana")).await;
    api.session_reaches(&session_id, "READY").await;
    let (guest, _) = Client::join(&server.ws, &guest_token(ROOM, "gabe")).await;
    eventually("both people in the session", || async {
        let rows = api.session_participants(&session_id).await;
        (rows.len() == 2).then_some(()).ok_or(format!("{rows:#?}"))
    })
    .await;
    let live = api
        .post(
            &format!("/v1/sessions/{session_id}/live"),
            &json!({ "external": true }),
        )
        .await;
    let egress_id = id(&live.expect(StatusCode::OK)["egress"], "egress_id");
    api.post(
        &format!("/v1/egress/{egress_id}/status"),
        &json!({ "status": "active" }),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(api.session(&session_id).await["state"], "LIVE");
    (session_id, egress_id, vec![host, guest])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_mid_broadcast_is_reconciled_on_restart() {
    let mut server = Server::start();
    let token = admin_token("ops-room", "ops");
    let api = Api::new(&server.http, Some(&token));
    let (session_id, egress_id, clients) = go_live(&server, &api).await;
    let before = api.all_events(ROOM).await;
    assert_gapless(&before);
    assert_eq!(
        kinds(&before)
            .iter()
            .filter(|k| *k == "participant_joined")
            .count(),
        2,
        "{:?}",
        kinds(&before)
    );

    server.kill9();
    drop(clients);
    server.restart(&[]);
    let api = Api::new(&server.http, Some(&token));
    assert_eq!(
        api.as_caller(None).get("/readyz").await.status,
        StatusCode::OK
    );

    // The connections the crash left open are closed, as a server restart.
    let people = api.session_participants(&session_id).await;
    assert_eq!(people.len(), 2, "{people:#?}");
    for person in &people {
        assert!(person["left_at"].is_string(), "{person}");
        assert_eq!(person["leave_reason"], "server_restart", "{person}");
    }
    let pool = open_db(&server).await;
    let rows = sqlx::query(
        "SELECT identity, left_at, leave_reason FROM connections WHERE room_id = ? \
         ORDER BY joined_at",
    )
    .bind(ROOM)
    .fetch_all(&pool)
    .await
    .expect("query connections");
    let connections: Vec<(String, Option<i64>, Option<String>)> = rows
        .iter()
        .map(|r| (r.get("identity"), r.get("left_at"), r.get("leave_reason")))
        .collect();
    assert_eq!(connections.len(), 2, "{connections:?}");
    for (identity, left_at, reason) in &connections {
        assert!(left_at.is_some(), "{identity} has no left_at");
        assert_eq!(reason.as_deref(), Some("server_restart"), "{identity}");
    }
    pool.close().await;

    // The live session wound down; its egress died with the server.
    let session = api.session(&session_id).await;
    assert_eq!(session["state"], "STOPPED");
    assert!(session["ended_at"].is_string());
    let egress = api.get(&format!("/v1/egress/{egress_id}")).await;
    let egress = egress.expect(StatusCode::OK)["egress"].clone();
    assert_eq!(egress["status"], "failed");
    assert!(
        egress["error"].as_str().is_some_and(|e| !e.is_empty()),
        "a failed egress says why: {egress}"
    );
    assert!(egress["ended_at"].is_string(), "{egress}");

    // Nothing before the crash was lost; what recovery did follows, without gaps.
    let after = api.all_events(ROOM).await;
    assert_gapless(&after);
    assert!(after.len() > before.len());
    assert_eq!(
        &after[..before.len()],
        before.as_slice(),
        "the log before the crash is kept"
    );
    let recovery = &after[before.len()..];
    let mut recovered_kinds = kinds(recovery);
    recovered_kinds.sort();
    assert_eq!(
        recovered_kinds,
        [
            "egress_ended",
            "participant_left",
            "participant_left",
            "session_state_changed",
            "session_state_changed",
        ]
    );
    let steps = transitions(recovery, &session_id);
    assert_eq!(
        steps,
        [
            ("LIVE".to_owned(), "ENDING".to_owned()),
            ("ENDING".to_owned(), "STOPPED".to_owned())
        ]
    );
    for event in recovery {
        match event["kind"].as_str().unwrap() {
            "session_state_changed" => {
                assert_eq!(event["payload"]["reason"], "server_restart", "{event}")
            }
            "participant_left" => assert_eq!(
                event["payload"]["participant"]["leave_reason"], "server_restart",
                "{event}"
            ),
            "egress_ended" => assert_eq!(event["payload"]["egress"]["status"], "failed"),
            _ => {}
        }
    }

    // The room is still there, and with nobody connected no new session was opened.
    let room = api.get(&format!("/v1/rooms/{ROOM}")).await;
    assert_eq!(room.expect(StatusCode::OK)["room"]["status"], "active");
    let sessions = api.sessions_of(ROOM).await;
    assert_eq!(sessions.len(), 1, "no new session: {sessions:#?}");

    // A second crash with nothing open changes nothing: recovery is idempotent.
    server.kill9();
    server.restart(&[]);
    let api = Api::new(&server.http, Some(&token));
    assert_eq!(api.all_events(ROOM).await, after);

    // And the room works: the host comes back and gets a fresh READY session.
    let (_host, _) = Client::join(&server.ws, &host_token(ROOM, "hana")).await;
    let next = api.open_session_reaches(ROOM, "READY").await;
    assert_ne!(next["session_id"], session_id.as_str());
    assert_eq!(next["owner_identity"], "hana");
    assert_gapless(&api.all_events(ROOM).await);
}
