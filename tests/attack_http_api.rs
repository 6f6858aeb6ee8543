//! Issue 17, items 9 and the HTTP part of 10: which pages may call the API (CORS), a
//! development server on a public address, lists too big for one response and too many
//! rooms, against the real binary. Connections, timeouts and request rates are in
//! attack_http.rs.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::header::{ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_ORIGIN, ORIGIN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::api::{admin_token, grant_token, http_client, Api};
use support::{command, run_with_timeout, Client, Server};

async fn with_origin(
    server: &Server,
    method: Method,
    path: &str,
    origin: &str,
) -> reqwest::Response {
    let mut request = http_client()
        .request(method.clone(), format!("{}{path}", server.http))
        .header(ORIGIN, origin);
    if method == Method::OPTIONS {
        request = request
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            );
    }
    if method == Method::POST {
        request = request.json(&json!({ "room_id": "cors-room", "name": "Eve" }));
    }
    request.send().await.expect("request")
}

fn acao(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(ACCESS_CONTROL_ALLOW_ORIGIN)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn cors_allows_only_listed_origins_and_never_credentials() {
    let server = Server::start_with(&["--cors-origin", "https://app.example"]);
    for (origin, allowed) in [
        ("https://evil.example", false),
        ("https://app.example", true),
        ("http://localhost:5173", true), // loopback, in development mode
        ("http://127.0.0.1:9999", true),
    ] {
        for method in [Method::GET, Method::OPTIONS] {
            let response = with_origin(&server, method.clone(), "/v1/rooms", origin).await;
            let expected = allowed.then(|| origin.to_owned());
            assert_eq!(acao(&response), expected, "{method} from {origin}");
            assert!(
                !response
                    .headers()
                    .contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS),
                "{method} from {origin}: never credentials mode"
            );
        }
    }
    // A preflight from an allowed origin lets the page send its bearer token.
    let preflight = with_origin(&server, Method::OPTIONS, "/whip", "https://app.example").await;
    let allowed_headers = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );

    // /v1/dev/token: pages from other origins are refused, listed and loopback ones served.
    let evil = with_origin(
        &server,
        Method::POST,
        "/v1/dev/token",
        "https://evil.example",
    )
    .await;
    assert_eq!(evil.status(), StatusCode::FORBIDDEN);
    let body: Value = evil.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("evil.example"),
        "{body}"
    );
    for origin in ["https://app.example", "http://localhost:5173"] {
        let ok = with_origin(&server, Method::POST, "/v1/dev/token", origin).await;
        assert_eq!(ok.status(), StatusCode::OK, "from {origin}");
    }
    // Without an Origin (curl, the CLI) it is not a browser's cross-site call.
    let plain = Api::new(&server.http, None)
        .post("/v1/dev/token", &json!({ "room_id": "cors-room" }))
        .await;
    plain.expect(StatusCode::OK);
}

#[tokio::test]
async fn cors_in_development_mode_defaults_to_own_and_loopback_origins() {
    let server = Server::start();
    let own = server.http.clone();
    for (origin, allowed) in [
        (own.as_str(), true),
        ("http://localhost:3000", true),
        ("https://evil.example", false),
        ("http://localhost.evil.example", false),
    ] {
        let response = with_origin(&server, Method::GET, "/healthz", origin).await;
        assert_eq!(
            acao(&response),
            allowed.then(|| origin.to_owned()),
            "{origin}"
        );
        assert!(!response
            .headers()
            .contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }
    let evil = with_origin(
        &server,
        Method::POST,
        "/v1/dev/token",
        "https://evil.example",
    )
    .await;
    assert_eq!(evil.status(), StatusCode::FORBIDDEN);
    let own_page = with_origin(&server, Method::POST, "/v1/dev/token", &own).await;
    assert_eq!(own_page.status(), StatusCode::OK);
}

/// Production mode (no `--dev`): any origin may read answers, never with credentials.
#[tokio::test]
async fn cors_in_production_is_any_origin_without_credentials() {
    use std::io::BufRead as _;
    let data = tempfile::tempdir().unwrap();
    let mut child = command()
        .args(["serve", "--http-addr", "127.0.0.1:0", "--rtc-port", "0"])
        .args(["--rtc-tcp-port", "0"])
        .args(["--api-key", "prodkey", "--api-secret", &"s".repeat(40)])
        .arg("--data-dir")
        .arg(data.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start switchboard serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a ready line");
    let base = line
        .trim()
        .strip_prefix("switchboard ready ")
        .expect("the ready line")
        .to_owned();
    let client = http_client();
    let response = client
        .get(format!("{base}/v1/rooms"))
        .header(ORIGIN, "https://anywhere.example")
        .send()
        .await
        .unwrap();
    let allowed = acao(&response);
    let credentials = response
        .headers()
        .contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS);
    let dev_token = client
        .post(format!("{base}/v1/dev/token"))
        .json(&json!({ "room_id": "r" }))
        .send()
        .await
        .unwrap()
        .status();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(allowed.as_deref(), Some("*"));
    assert!(!credentials, "never credentials mode");
    assert_eq!(
        dev_token,
        StatusCode::NOT_FOUND,
        "no dev tokens outside --dev"
    );
}

#[test]
fn dev_mode_refuses_a_public_address_unless_told() {
    let data = tempfile::tempdir().unwrap();
    for addresses in [
        ["--http-addr", "0.0.0.0:0", "--rtc-ip", "127.0.0.1"],
        ["--http-addr", "127.0.0.1:0", "--rtc-ip", "0.0.0.0"],
    ] {
        let mut cmd = command();
        cmd.args([
            "serve",
            "--dev",
            "--rtc-port",
            "0",
            "--rtc-tcp-port",
            "0",
            "--node-ip",
            "127.0.0.1",
        ])
        .args(addresses)
        .arg("--data-dir")
        .arg(data.path());
        let (status, stdout, stderr) = run_with_timeout(cmd, Duration::from_secs(20));
        assert!(
            !status.success(),
            "{addresses:?} with --dev must not start: {stdout}"
        );
        assert!(!stdout.contains("ready"), "{stdout}");
        assert!(stderr.contains("--dev-allow-public"), "{stderr}");
        assert!(stderr.contains("0.0.0.0"), "{stderr}");
    }
}

#[tokio::test]
async fn room_lists_are_paginated_without_dupes_or_gaps() {
    let server = Server::start();
    let api = Api::new(&server.http, Some(&admin_token("pages", "admin")));
    let mut created = BTreeSet::new();
    for i in 0..27 {
        let id = format!("page-{i:02}");
        api.post("/v1/rooms", &json!({ "room_id": id }))
            .await
            .expect(StatusCode::CREATED);
        created.insert(id);
    }
    let mut seen = BTreeSet::new();
    let mut pages = 0;
    let mut path = "/v1/rooms?limit=10".to_owned();
    loop {
        let body = api.get(&path).await.expect(StatusCode::OK).clone();
        let rooms = body["rooms"].as_array().unwrap();
        assert!(rooms.len() <= 10);
        for room in rooms {
            let id = room["room_id"].as_str().unwrap().to_owned();
            assert!(seen.insert(id.clone()), "{id} listed twice");
        }
        pages += 1;
        match body["next_page_token"].as_str() {
            Some(token) => path = format!("/v1/rooms?limit=10&page_token={token}"),
            None => break,
        }
        assert!(pages < 10, "the pages never end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "every room exactly once");
    // The default page and the bounds.
    let all = api.get("/v1/rooms").await.expect(StatusCode::OK).clone();
    assert_eq!(all["rooms"].as_array().unwrap().len(), 27);
    assert!(all["next_page_token"].is_null());
    api.get("/v1/rooms?limit=100000")
        .await
        .problem_saying(StatusCode::BAD_REQUEST, &["limit"]);
    api.get("/v1/rooms?page_token=garbage!")
        .await
        .problem_saying(StatusCode::BAD_REQUEST, &["page_token"]);

    // Participants of a room, by identity.
    let mut clients = Vec::new();
    for name in ["carol", "alice", "bob"] {
        clients.push(server.join("page-00", name, &[]).await.0);
    }
    let first = api
        .get("/v1/rooms/page-00/participants?limit=2")
        .await
        .expect(StatusCode::OK)
        .clone();
    let names: Vec<&str> = first["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    let token = first["next_page_token"].as_str().expect("a second page");
    let second = api
        .get(&format!(
            "/v1/rooms/page-00/participants?limit=2&page_token={token}"
        ))
        .await
        .expect(StatusCode::OK)
        .clone();
    assert_eq!(second["participants"][0]["identity"], "carol");
    assert!(second["next_page_token"].is_null());
}

#[tokio::test]
async fn session_lists_are_paginated_and_the_cli_walks_every_page() {
    let server = Server::start();
    let api = Api::new(&server.http, Some(&admin_token("show", "admin")));
    api.post("/v1/rooms", &json!({ "room_id": "show" }))
        .await
        .expect(StatusCode::CREATED);
    let mut created = BTreeSet::new();
    for _ in 0..5 {
        let session = api
            .post("/v1/sessions", &json!({ "room_id": "show" }))
            .await
            .expect(StatusCode::CREATED)
            .clone();
        let id = session["session"]["session_id"]
            .as_str()
            .unwrap()
            .to_owned();
        api.post_empty(&format!("/v1/sessions/{id}/cancel"))
            .await
            .expect(StatusCode::OK);
        created.insert(id);
    }
    let mut seen = BTreeSet::new();
    let mut path = "/v1/sessions?room_id=show&limit=2".to_owned();
    let mut pages = 0;
    loop {
        let body = api.get(&path).await.expect(StatusCode::OK).clone();
        for session in body["sessions"].as_array().unwrap() {
            let id = session["session_id"].as_str().unwrap().to_owned();
            assert!(seen.insert(id.clone()), "{id} listed twice");
        }
        pages += 1;
        match body["next_page_token"].as_str() {
            Some(token) => path = format!("/v1/sessions?room_id=show&limit=2&page_token={token}"),
            None => break,
        }
    }
    assert_eq!((pages, &seen), (3, &created));

    // A session's transcripts, in order.
    let session = api
        .post("/v1/sessions", &json!({ "room_id": "show" }))
        .await
        .expect(StatusCode::CREATED)
        .clone();
    let id = session["session"]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/sessions/{id}/transcripts");
    for i in 0..5 {
        let segment = json!({
            "segment_id": format!("seg-{i}"), "participant_identity": "host",
            "text": format!("line {i}"), "final": true,
            "start_ms": i * 1000, "end_ms": i * 1000 + 900,
        });
        api.post(&path, &segment).await.expect(StatusCode::OK);
    }
    let mut texts = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let body = api
            .get(&format!("{path}{query}"))
            .await
            .expect(StatusCode::OK)
            .clone();
        let segments = body["segments"].as_array().unwrap();
        assert!(segments.len() <= 2);
        texts.extend(
            segments
                .iter()
                .map(|s| s["text"].as_str().unwrap().to_owned()),
        );
        match body["next_page_token"].as_str() {
            Some(token) => query = format!("?limit=2&page_token={token}"),
            None => break,
        }
    }
    assert_eq!(texts, ["line 0", "line 1", "line 2", "line 3", "line 4"]);

    // More rooms than the CLI's page of 500: `rooms list` shows them all.
    for i in 0..520 {
        api.post("/v1/rooms", &json!({ "room_id": format!("many-{i:03}") }))
            .await
            .expect(StatusCode::CREATED);
    }
    let mut cmd = command();
    cmd.args(["rooms", "list", "--dev", "--json", "--url", &server.http]);
    let (status, stdout, stderr) = run_with_timeout(cmd, Duration::from_secs(30));
    assert!(status.success(), "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).expect("JSON from rooms list --json");
    let ids: BTreeSet<&str> = listed["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 521, "520 rooms and \"show\", each once");
}

#[tokio::test]
async fn rooms_beyond_max_rooms_are_refused() {
    let server = Server::start_with(&["--limit", "max_rooms=2"]);
    let api = Api::new(&server.http, Some(&admin_token("cap-a", "admin")));
    for id in ["cap-a", "cap-b"] {
        api.post("/v1/rooms", &json!({ "room_id": id }))
            .await
            .expect(StatusCode::CREATED);
    }
    api.post("/v1/rooms", &json!({ "room_id": "cap-c" }))
        .await
        .problem_saying(StatusCode::SERVICE_UNAVAILABLE, &["max_rooms"]);
    // Nothing was recorded for the refused room.
    api.get("/v1/rooms/cap-c")
        .await
        .problem(StatusCode::NOT_FOUND);
    // An open room still takes joins; a join that would open a third is refused with text.
    let (_alice, _) = server.join("cap-a", "alice", &[]).await;
    let token = grant_token("bob", json!({ "room": "cap-d", "roomJoin": true }));
    match Client::connect(&support::rtc_url(&server.ws, &token, "")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(body.contains("max_rooms"), "{body}");
        }
        Err(e) => panic!("expected a 503 refusal of the join, got {e}"),
        Ok(_) => panic!("a join opening a room over max_rooms must be refused"),
    }
}
