//! Egress over the real `/v1` API, the paths that need no media: refused requests, an
//! unwritable output directory (the egress fails at once and its session is told), and
//! stopping twice. Recording real media is tested with browsers in web/tests/egress.test.mjs.

mod support;

use reqwest::StatusCode;
use serde_json::json;
use support::api::{admin_token, eventually, grant_token, host_token, id, kinds, Api};
use support::{Client, Server};

#[tokio::test(flavor = "multi_thread")]
async fn bad_egress_requests_are_refused_with_a_reason() {
    let server = Server::start();
    let api = Api::new(&server.http, Some(&admin_token("studio", "ops")));
    let (_host, _) = Client::join(&server.ws, &host_token("studio", "hana")).await;

    api.post(
        "/v1/egress",
        &json!({ "room_id": "studio", "output": { "type": "file", "directory": "../etc" } }),
    )
    .await
    .problem_saying(StatusCode::BAD_REQUEST, &["../etc", "egress directory"]);
    api.post(
        "/v1/egress",
        &json!({ "room_id": "studio", "output": { "type": "file", "directory": "/tmp" } }),
    )
    .await
    .problem_saying(StatusCode::BAD_REQUEST, &["relative"]);
    api.post(
        "/v1/egress",
        &json!({ "room_id": "studio", "output": { "type": "rtp", "host": "127.0.0.1", "port": 5004 } }),
    )
    .await
    .problem_saying(StatusCode::BAD_REQUEST, &["track_sid"]);
    api.post(
        "/v1/egress",
        &json!({ "room_id": "studio", "track_sid": "TR_missing" }),
    )
    .await
    .problem_saying(StatusCode::NOT_FOUND, &["TR_missing", "studio"]);
    api.post(
        "/v1/egress",
        &json!({ "room_id": "studio", "output": { "type": "ftp" } }),
    )
    .await
    .bad_body(&["ftp"]);
    api.post_empty("/v1/egress/eg_nope/stop")
        .await
        .problem_saying(StatusCode::NOT_FOUND, &["eg_nope"]);
    // Another room's admin may not record this one.
    let other_admin = grant_token("eve", json!({ "room": "other", "roomAdmin": true }));
    Api::new(&server.http, Some(&other_admin))
        .post("/v1/egress", &json!({ "room_id": "studio" }))
        .await
        .problem_saying(StatusCode::FORBIDDEN, &["roomRecord"]);
    // Nothing was recorded by the refusals.
    let listed = api.get("/v1/egress?room_id=studio").await;
    assert_eq!(listed.expect(StatusCode::OK)["egress"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_directory_fails_the_egress_and_the_session_is_told() {
    // A path under a regular file can never be created, whoever runs the test.
    let blocker = tempfile::NamedTempFile::new().expect("temp file");
    let egress_dir = blocker.path().join("recordings");
    let server = Server::start_with(&["--egress-dir", egress_dir.to_str().expect("utf-8 path")]);
    let api = Api::new(&server.http, Some(&admin_token("stage", "ops")));
    let (_host, _) = Client::join(&server.ws, &host_token("stage", "hana")).await;
    let session = api.open_session_reaches("stage", "READY").await;
    let session_id = id(&session, "session_id");

    let live = api
        .post_empty(&format!("/v1/sessions/{session_id}/live"))
        .await;
    let body = live.expect(StatusCode::OK).clone();
    let egress = &body["egress"];
    assert_eq!(egress["status"], "failed", "{body}");
    let error = egress["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("not writable") && error.contains("recordings"),
        "the error names the directory and the problem: {error}"
    );
    // The session did not stay PUBLISHING waiting for media that can never be written.
    assert_eq!(body["session"]["state"], "CANCELLED", "{body}");
    let events = api.all_events("stage").await;
    let kinds = kinds(&events);
    assert!(
        kinds.iter().any(|k| k == "egress_started") && kinds.iter().any(|k| k == "egress_ended"),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_twice_is_harmless_and_an_egress_without_media_fails_clearly() {
    let server = Server::start();
    let api = Api::new(&server.http, Some(&admin_token("quiet", "ops")));
    let (_host, _) = Client::join(&server.ws, &host_token("quiet", "hana")).await;
    // The egress record refers to the room's, which the join records just after it.
    api.room_recorded("quiet").await;
    let started = api.post("/v1/egress", &json!({ "room_id": "quiet" })).await;
    let egress_id = id(&started.expect(StatusCode::CREATED)["egress"], "egress_id");
    let first = api
        .post_empty(&format!("/v1/egress/{egress_id}/stop"))
        .await;
    let status = first.expect(StatusCode::OK)["egress"]["status"].clone();
    assert!(
        status == "ending" || status == "failed",
        "a stopped egress is ending or already ended: {status}"
    );
    let ended = eventually("the egress ends", || async {
        let reply = api.get(&format!("/v1/egress/{egress_id}")).await;
        let egress = reply.expect(StatusCode::OK)["egress"].clone();
        (egress["status"] == "failed")
            .then_some(egress.clone())
            .ok_or(format!("{egress}"))
    })
    .await;
    assert!(
        ended["error"]
            .as_str()
            .is_some_and(|e| e.contains("no media")),
        "{ended}"
    );
    let again = api
        .post_empty(&format!("/v1/egress/{egress_id}/stop"))
        .await;
    assert_eq!(again.expect(StatusCode::OK)["egress"], ended);
}
