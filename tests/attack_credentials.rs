//! Attacks on credentials, names and egress against the real binary (issue 17, items 4, 6,
//! 7 and 11): a removed host keeps trying with its token on every surface, before and after
//! a restart; an egress flood; room names and identities built to break URLs, paths, SQL and
//! logs; a log-forging egress directory; a symbolic link planted in the egress directory.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::api::{
    admin_token, eventually, grant_token, host_token, http_client, id, rtc_validate, Api,
};
use support::{now_secs, Client, Server, DEV_KEY, DEV_SECRET};

/// A room name that would be a path traversal, an SQL injection and a quoting bug at once.
const BAD_ROOM: &str = "../x'\";--";

/// What every entry says about [`BAD_ROOM`] (the one rule's message).
fn bad_room_message() -> String {
    format!("room name {BAD_ROOM:?} is not valid: use 1 to 64 letters, digits, '_' or '-'")
}

/// POST /whip with `token` and an offer that would be inspected only after the token.
async fn whip(server: &Server, token: &str) -> (StatusCode, Value) {
    let reply = http_client()
        .post(format!("{}/whip", server.http))
        .bearer_auth(token)
        .header(CONTENT_TYPE, "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .expect("POST /whip");
    let status = reply.status();
    (status, reply.json().await.unwrap_or(Value::Null))
}

/// A Twirp call with a JSON body: (status, `{code, msg}`).
async fn twirp(server: &Server, token: &str, method: &str, body: &Value) -> (StatusCode, Value) {
    let reply = http_client()
        .post(format!("{}/twirp/{method}", server.http))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("Twirp call");
    let status = reply.status();
    (status, reply.json().await.unwrap_or(Value::Null))
}

/// Hand-signed dev-key join claims with an explicit issue time.
fn join_token_issued_at(room: &str, identity: &str, iat: u64) -> String {
    support::sign(
        &json!({
            "iss": DEV_KEY,
            "sub": identity,
            "iat": iat,
            "nbf": iat,
            "exp": now_secs() + 3600,
            "video": { "room": room, "roomJoin": true },
        }),
        DEV_SECRET,
    )
}

/// Everything a removed host and a removed guest might still try, asserting each is refused
/// as revoked; `operator` (not bound to the host) still works.
async fn assert_revoked_everywhere(server: &Server, host: &str, guest: &str, session_id: &str) {
    let as_host = Api::new(&server.http, Some(host));
    let removed = ["removed from room stage"];
    as_host
        .patch("/v1/rooms/stage", &json!({ "metadata": "taken over" }))
        .await
        .problem_saying(StatusCode::FORBIDDEN, &removed);
    as_host
        .post("/v1/rooms/stage/tokens", &json!({ "identity": "hana" }))
        .await
        .problem_saying(StatusCode::FORBIDDEN, &removed);
    as_host
        .post(
            "/v1/rooms/stage/tokens",
            &json!({ "identity": "hana-2", "admin": true }),
        )
        .await
        .problem_saying(StatusCode::FORBIDDEN, &removed);
    let (status, body) = twirp(
        server,
        host,
        "livekit.RoomService/UpdateRoomMetadata",
        &json!({ "room": "stage", "metadata": "taken over" }),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "Twirp: {body}");
    assert_eq!(body["code"], "permission_denied", "{body}");
    assert!(
        body["msg"]
            .as_str()
            .unwrap_or_default()
            .contains(removed[0]),
        "{body}"
    );
    let (status, body) = twirp(
        server,
        host,
        "livekit.RoomService/ListParticipants",
        &json!({ "room": "stage" }),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "Twirp: {body}");
    Api::new(&server.http, Some(guest))
        .get(&format!("/v1/sessions/{session_id}/transcripts"))
        .await
        .problem_saying(StatusCode::FORBIDDEN, &removed);
    for token in [host, guest] {
        let (status, text) = rtc_validate(server, token).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "/rtc/validate: {text}");
        assert!(text.contains(removed[0]), "{text}");
        let (status, body) = whip(server, token).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "WHIP: {body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(removed[0]),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_host_and_guest_are_refused_on_every_surface_even_after_a_restart() {
    let mut server = Server::start();
    let operator = admin_token("stage", "ops");
    let api = Api::new(&server.http, Some(&operator));
    let host = host_token("stage", "hana");
    let guest = support::api::guest_token("stage", "gus");
    let (mut host_client, _) = Client::join(&server.ws, &host).await;
    let (mut guest_client, _) = Client::join(&server.ws, &guest).await;
    let session = api.open_session_reaches("stage", "READY").await;
    let session_id = id(&session, "session_id");

    // Before the removal, the host's token administers the room and the guest's reads.
    let as_host = Api::new(&server.http, Some(&host));
    as_host
        .patch("/v1/rooms/stage", &json!({ "metadata": "mine" }))
        .await
        .expect(StatusCode::OK);
    let (status, body) = twirp(
        &server,
        &host,
        "livekit.RoomService/ListParticipants",
        &json!({ "room": "stage" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    Api::new(&server.http, Some(&guest))
        .get(&format!("/v1/sessions/{session_id}/transcripts"))
        .await
        .expect(StatusCode::OK);
    // A token the host minted for itself before being removed is revoked with the rest.
    let minted = as_host
        .post("/v1/rooms/stage/tokens", &json!({ "identity": "hana" }))
        .await
        .expect(StatusCode::OK)["token"]
        .as_str()
        .expect("token")
        .to_owned();

    let before = now_secs();
    api.delete("/v1/rooms/stage/participants/hana")
        .await
        .expect(StatusCode::NO_CONTENT);
    api.delete("/v1/rooms/stage/participants/gus")
        .await
        .expect(StatusCode::NO_CONTENT);
    let after = now_secs();
    host_client.expect_close().await;
    guest_client.expect_close().await;

    assert_revoked_everywhere(&server, &host, &guest, &session_id).await;
    let (status, text) = rtc_validate(&server, &minted).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "self-minted token: {text}");
    // A token dated before the removal is refused; one issued after it (the operator
    // letting them back in) is not. The removal happened in [before, after].
    let (status, _) =
        rtc_validate(&server, &join_token_issued_at("stage", "hana", before - 1)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, text) =
        rtc_validate(&server, &join_token_issued_at("stage", "hana", after + 1)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a token issued after the removal: {text}"
    );
    // Tokens not bound to the removed identity keep working.
    api.patch("/v1/rooms/stage", &json!({ "metadata": "ops" }))
        .await
        .expect(StatusCode::OK);
    let backend = grant_token("backend", json!({ "roomCreate": true, "roomList": true }));
    Api::new(&server.http, Some(&backend))
        .get("/v1/rooms/stage")
        .await
        .expect(StatusCode::OK);

    // The revocation is in the store: a restarted server refuses the same tokens.
    server.stop();
    server.restart(&[]);
    let api = Api::new(&server.http, Some(&operator));
    api.get("/v1/rooms/stage").await.expect(StatusCode::OK);
    assert_revoked_everywhere(&server, &host, &guest, &session_id).await;
}

/// Threads of the server process, from /proc.
fn threads(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads line")
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn an_egress_flood_beyond_max_egress_is_refused_and_threads_stay_bounded() {
    const MAX: usize = 4;
    const FLOOD: usize = 60;
    let egress_dir = tempfile::tempdir().expect("egress dir");
    let server = Server::start_with(&[
        "--limit",
        &format!("max_egress={MAX}"),
        "--egress-dir",
        egress_dir.path().to_str().expect("utf-8 path"),
    ]);
    let api = Api::new(&server.http, Some(&admin_token("flood", "ops")));
    let (_host, _) = Client::join(&server.ws, &host_token("flood", "hana")).await;
    api.room_recorded("flood").await;
    let pid = server.pid();
    let baseline = threads(pid);

    // Sample the thread count all through the flood.
    let peak = Arc::new(AtomicU32::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (Arc::clone(&peak), Arc::clone(&sampling));
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(threads(pid), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let replies = futures_util::future::join_all((0..FLOOD).map(|i| {
        let api = api.clone();
        async move {
            api.post(
                "/v1/egress",
                &json!({ "room_id": "flood", "output": { "type": "file", "directory": format!("d{i:02}") } }),
            )
            .await
        }
    }))
    .await;
    sampling.store(false, Ordering::Relaxed);
    sampler.join().expect("sampler");

    let mut started = Vec::new();
    for reply in &replies {
        if reply.status == StatusCode::CREATED {
            started.push(id(&reply.body["egress"], "egress_id"));
            continue;
        }
        reply.problem_saying(StatusCode::SERVICE_UNAVAILABLE, &["max_egress", "4"]);
        assert!(
            reply.headers.contains_key("retry-after"),
            "a 503 says when to retry: {:?}",
            reply.headers
        );
    }
    let peak = peak.load(Ordering::Relaxed);
    eprintln!("threads: {baseline} before, {peak} at most during {FLOOD} egress starts");
    assert_eq!(started.len(), MAX, "exactly max_egress start");
    assert!(
        peak <= baseline + MAX as u32 + 12,
        "threads went from {baseline} to {peak} for {FLOOD} egress starts (max_egress {MAX})"
    );
    // A directory for each started egress only.
    let dirs = entries(egress_dir.path());
    assert_eq!(dirs.len(), MAX, "directories: {dirs:?}");

    // Twirp says the same, with Twirp's code for it.
    let (status, body) = twirp(
        &server,
        &admin_token("flood", "ops"),
        "livekit.Egress/StartRoomCompositeEgress",
        &json!({ "room_name": "flood", "file_outputs": [{ "filepath": "tw/x.webm" }] }),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "unavailable", "{body}");
    assert!(
        body["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("max_egress"),
        "{body}"
    );
    assert!(!egress_dir.path().join("tw").exists());

    // A stopped egress gives its slot back.
    api.post_empty(&format!("/v1/egress/{}/stop", started[0]))
        .await
        .expect(StatusCode::OK);
    eventually("a slot frees after a stop", || async {
        let reply = api
            .post(
                "/v1/egress",
                &json!({ "room_id": "flood", "output": { "type": "file", "directory": "again" } }),
            )
            .await;
        (reply.status == StatusCode::CREATED)
            .then_some(())
            .ok_or(format!("{} {}", reply.status, reply.text))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_room_names_and_identities_are_refused_at_every_entry_with_the_same_message() {
    let server = Server::start();
    let operator = admin_token("stage", "ops");
    let api = Api::new(&server.http, Some(&operator));
    let long_identity = "x".repeat(20 * 1024);
    let expected_room = bad_room_message();

    // A join token naming the room: /rtc/validate, the /rtc upgrade, WHIP and WHEP.
    let bad_room_token = support::sign(&support::join_claims(BAD_ROOM, "mallory"), DEV_SECRET);
    let (status, text) = rtc_validate(&server, &bad_room_token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains(&expected_room), "{text}");
    assert!(
        Client::connect(&support::rtc_url(&server.ws, &bad_room_token, ""))
            .await
            .is_err(),
        "the upgrade is refused"
    );
    for path in ["whip", "whep"] {
        let reply = http_client()
            .post(format!("{}/{path}", server.http))
            .bearer_auth(&bad_room_token)
            .header(CONTENT_TYPE, "application/sdp")
            .body("v=0\r\n")
            .send()
            .await
            .expect("POST");
        assert_eq!(reply.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = reply.json().await.expect("problem");
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(&expected_room),
            "{path}: {body}"
        );
    }
    // A 20 KB identity and one with a newline, in a token.
    for identity in [long_identity.as_str(), "mallory\nINFO forged"] {
        let token = support::sign(&support::join_claims("stage", identity), DEV_SECRET);
        let (status, text) = rtc_validate(&server, &token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(
            text.contains("identity") && text.contains("is not valid"),
            "{text}"
        );
        assert!(
            text.len() < 400,
            "the refusal does not echo the identity: {text}"
        );
        let (status, _) = whip(&server, &token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    // /v1: paths and bodies.
    let encoded = "..%2Fx'%22%3B--";
    api.get(&format!("/v1/rooms/{encoded}"))
        .await
        .problem_saying(StatusCode::BAD_REQUEST, &[&expected_room]);
    api.post("/v1/rooms", &json!({ "room_id": BAD_ROOM }))
        .await
        .problem_saying(StatusCode::BAD_REQUEST, &[&expected_room]);
    api.post(
        &format!("/v1/rooms/{encoded}/tokens"),
        &json!({ "identity": "ann" }),
    )
    .await
    .problem_saying(StatusCode::BAD_REQUEST, &[&expected_room]);
    api.post("/v1/egress", &json!({ "room_id": BAD_ROOM }))
        .await
        .problem_saying(StatusCode::BAD_REQUEST, &[&expected_room]);
    Api::new(&server.http, None)
        .get(&format!("/v1/rooms/{encoded}/guest-token"))
        .await
        .problem_saying(StatusCode::BAD_REQUEST, &[&expected_room]);
    let identity_words = ["identity", "is not valid", "20480 bytes"];
    api.post("/v1/rooms", &json!({ "room_id": "stage" }))
        .await
        .expect(StatusCode::CREATED);
    api.post(
        "/v1/rooms/stage/tokens",
        &json!({ "identity": long_identity }),
    )
    .await
    .problem_saying(StatusCode::BAD_REQUEST, &identity_words);
    api.delete("/v1/rooms/stage/participants/mallory%0AINFO%20forged")
        .await
        .problem_saying(
            StatusCode::BAD_REQUEST,
            &["identity", r#""mallory\nINFO forged""#],
        );
    api.post(
        "/v1/sessions",
        &json!({ "room_id": "stage", "owner_identity": long_identity }),
    )
    .await
    .problem_saying(StatusCode::BAD_REQUEST, &identity_words);

    // Twirp.
    for (method, body) in [
        (
            "livekit.RoomService/CreateRoom",
            json!({ "name": BAD_ROOM }),
        ),
        (
            "livekit.RoomService/ListParticipants",
            json!({ "room": BAD_ROOM }),
        ),
        (
            "livekit.Egress/StartRoomCompositeEgress",
            json!({ "room_name": BAD_ROOM, "file_outputs": [{ "filepath": "x.webm" }] }),
        ),
    ] {
        let (status, reply) = twirp(&server, &operator, method, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method}: {reply}");
        assert_eq!(reply["code"], "invalid_argument", "{method}: {reply}");
        assert!(
            reply["msg"]
                .as_str()
                .unwrap_or_default()
                .contains(&expected_room),
            "{method}: {reply}"
        );
    }
    for method in ["RemoveParticipant", "GetParticipant", "UpdateParticipant"] {
        let (status, reply) = twirp(
            &server,
            &operator,
            &format!("livekit.RoomService/{method}"),
            &json!({ "room": "stage", "identity": long_identity }),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method}: {reply}");
        let msg = reply["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains("20480 bytes") && msg.len() < 400,
            "{method}: {reply}"
        );
    }

    // The CLI will not mint what the server refuses.
    let mut cmd = support::command();
    cmd.args([
        "token",
        "create",
        "--dev",
        "--room",
        BAD_ROOM,
        "--identity",
        "ann",
    ]);
    let (status, _, stderr) = support::run_with_timeout(cmd, std::time::Duration::from_secs(20));
    assert!(!status.success());
    assert!(stderr.contains(&expected_room), "{stderr}");

    // Nothing was created and the forged line is nowhere in the log.
    api.get("/v1/rooms").await.expect(StatusCode::OK);
    let log = server.stderr_text();
    assert!(
        !log.lines().any(|l| l.starts_with("INFO forged")),
        "a forged log line:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_forging_egress_directory_is_refused() {
    let server = Server::start();
    let api = Api::new(&server.http, Some(&admin_token("studio", "ops")));
    let (_host, _) = Client::join(&server.ws, &host_token("studio", "hana")).await;
    api.room_recorded("studio").await;
    let forged = "rec\n2026-01-01T00:00:00Z  INFO switchboard: forged admin login";
    api.post(
        "/v1/egress",
        &json!({ "room_id": "studio", "output": { "type": "file", "directory": forged } }),
    )
    .await
    .problem_saying(StatusCode::BAD_REQUEST, &["control characters"]);
    let (status, reply) = twirp(
        &server,
        &admin_token("studio", "ops"),
        "livekit.Egress/StartRoomCompositeEgress",
        &json!({ "room_name": "studio", "file_outputs": [{ "filepath": format!("{forged}/x.webm") }] }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["code"], "invalid_argument", "{reply}");
    let log = server.stderr_text();
    assert!(!log.contains("forged admin login"), "{log}");
    let listed = api.get("/v1/egress?room_id=studio").await;
    assert_eq!(listed.expect(StatusCode::OK)["egress"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_inside_the_egress_directory_is_not_followed() {
    let egress_dir = tempfile::tempdir().expect("egress dir");
    let outside = tempfile::tempdir().expect("outside");
    std::os::unix::fs::symlink(outside.path(), egress_dir.path().join("escape"))
        .expect("plant the link");
    let server = Server::start_with(&[
        "--egress-dir",
        egress_dir.path().to_str().expect("utf-8 path"),
    ]);
    let api = Api::new(&server.http, Some(&admin_token("studio", "ops")));
    let (_host, _) = Client::join(&server.ws, &host_token("studio", "hana")).await;
    api.room_recorded("studio").await;

    for directory in ["escape", "escape/deeper"] {
        let reply = api
            .post(
                "/v1/egress",
                &json!({ "room_id": "studio", "output": { "type": "file", "directory": directory } }),
            )
            .await;
        let egress = reply.expect(StatusCode::CREATED)["egress"].clone();
        assert_eq!(egress["status"], "failed", "{directory}: {egress}");
        let error = egress["error"].as_str().unwrap_or_default();
        assert!(error.contains("symbolic link"), "{directory}: {error}");
    }
    assert_eq!(
        entries(outside.path()),
        Vec::<String>::new(),
        "nothing was created through the link"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removal_on_one_node_revokes_the_token_on_another_sharing_the_database() {
    let db = support::postgres::TestDatabase::direct("revoke").await;
    let node_a = Server::start_with(&["--database-url", &db.url]);
    let node_b = Server::start_with(&["--database-url", &db.url]);
    let host = host_token("stage", "hana");
    let (mut client, _) =
        support::cluster::host_removed_on_a_after_b_took_her_token(&node_a, &node_b).await;
    client.expect_close().await;

    // Node B refuses the token: a join it would relay is refused by node A, and B itself
    // learns of the removal from the database (every 5 s) — its own API answers with it.
    // Polled gently: /rtc has a per-address request limit.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (status, text) = rtc_validate(&node_b, &host).await;
        let patched = Api::new(&node_b.http, Some(&host))
            .patch("/v1/rooms/stage", &json!({ "metadata": "taken over" }))
            .await;
        if status == StatusCode::FORBIDDEN
            && text.contains("removed from room stage")
            && patched.status == StatusCode::FORBIDDEN
            && patched.text.contains("removed from room stage")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node B still answers {status} {text} 15 s after the removal on node A"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Api::new(&node_b.http, Some(&host))
        .patch("/v1/rooms/stage", &json!({ "metadata": "taken over" }))
        .await
        .problem_saying(StatusCode::FORBIDDEN, &["removed from room stage"]);
}
