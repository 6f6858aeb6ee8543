//! Issue 17, item 5: the HTTP surface attacked as a client on the open internet would,
//! against the real binary. Half-sent request heads and bodies, idle and flooding connections
//! from one address (a second loopback address, 127.0.0.2, shows the rest of the world is
//! still served), request floods on /rtc, /whip and /v1, oversized heads and bodies. CORS,
//! development mode, pagination and room counts are in attack_http_api.rs.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::api::{admin_token, grant_token, http_client, Api};
use support::{Client, Server, WAIT};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

const OTHER_CLIENT: &str = "127.0.0.2";

fn addr(server: &Server) -> SocketAddr {
    server
        .http
        .trim_start_matches("http://")
        .parse()
        .expect("the server's address")
}

/// A TCP connection to the server from `from` (a loopback address of this machine).
async fn connect_from(server: &Server, from: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from.parse().expect("address"), 0))
        .expect("bind the client address");
    tokio::time::timeout(WAIT, socket.connect(addr(server)))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Reads until the server closes the connection (or `limit` passes: `None`); returns what
/// was read.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Waits, for all of them at once and at most `within`, for the server to close each
/// connection. Returns those still open (kept, so the server goes on holding them), how many
/// were closed, and the text of one refusal.
async fn closed_within(
    streams: Vec<TcpStream>,
    within: Duration,
) -> (Vec<TcpStream>, usize, String) {
    let mut readers = tokio::task::JoinSet::new();
    for mut stream in streams {
        readers.spawn(async move {
            let seen = read_until_closed(&mut stream, within).await;
            (stream, seen)
        });
    }
    let (mut open, mut closed, mut refusal) = (Vec::new(), 0, String::new());
    while let Some(done) = readers.join_next().await {
        match done.expect("reader task") {
            (stream, None) => open.push(stream),
            (_, Some(seen)) => {
                closed += 1;
                if !seen.is_empty() {
                    refusal = String::from_utf8_lossy(&seen).into_owned();
                }
            }
        }
    }
    (open, closed, refusal)
}

/// File descriptors the server process has open.
fn open_fds(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .expect("read the server's /proc fd directory")
        .count()
}

/// A client whose connections come from `from`.
fn client_from(from: &str) -> reqwest::Client {
    let _ = http_client(); // installs the TLS crypto provider reqwest needs
    reqwest::Client::builder()
        .timeout(WAIT)
        .local_address(from.parse::<IpAddr>().expect("address"))
        .build()
        .expect("HTTP client")
}

async fn healthz_from(server: &Server, from: &str) -> StatusCode {
    client_from(from)
        .get(format!("{}/healthz", server.http))
        .send()
        .await
        .expect("GET /healthz")
        .status()
}

#[tokio::test]
async fn a_request_head_sent_slowly_is_cut_off_at_the_header_timeout() {
    let server = Server::start_with(&["--limit", "http_header_timeout=1s"]);
    let stream = connect_from(&server, "127.0.0.1").await;
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    writer
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send half a head");
    // Keep trickling header lines, so it is the head's deadline that ends it, not idleness.
    let trickle = tokio::spawn(async move {
        for i in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let line = format!("X-Slow-{i}: y\r\n");
            if writer.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    // Meanwhile the server answers others.
    assert_eq!(healthz_from(&server, "127.0.0.1").await, StatusCode::OK);
    let mut buf = [0u8; 256];
    let ended = tokio::time::timeout(WAIT, reader.read(&mut buf)).await;
    let elapsed = started.elapsed();
    trickle.abort();
    assert!(
        matches!(ended, Ok(Ok(0)) | Ok(Err(_))),
        "the server must close a connection whose head never ends: {ended:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "a head still incomplete at the 1 s header timeout is cut off then, took {elapsed:?}"
    );
}

#[tokio::test]
async fn idle_connections_are_closed_but_websockets_are_not() {
    let server = Server::start_with(&[
        "--limit",
        "http_idle_timeout=1s",
        "--limit",
        "http_header_timeout=1s",
    ]);
    // A connection that never sends anything.
    let mut silent = connect_from(&server, "127.0.0.1").await;
    let started = Instant::now();
    let closed = read_until_closed(&mut silent, WAIT).await;
    let elapsed = started.elapsed();
    assert!(
        closed.is_some() && elapsed < Duration::from_secs(3),
        "a silent connection must be closed after the 1 s idle timeout, took {elapsed:?}"
    );
    // A keep-alive connection after its request.
    let mut kept = connect_from(&server, "127.0.0.1").await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let seen = read_until_closed(&mut kept, WAIT)
        .await
        .expect("a kept-alive connection left idle is closed");
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // A joined participant's WebSocket outlives both timeouts several times over.
    let (mut client, _) = server.join("idle-room", "alice", &[]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    client.assert_alive().await;
}

#[tokio::test]
async fn a_body_sent_slowly_gets_408() {
    let server = Server::start_with(&["--limit", "http_body_timeout=1s"]);
    let token = admin_token("slow-body", "admin");
    let mut stream = connect_from(&server, "127.0.0.1").await;
    let head = format!(
        "POST /v1/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"room_id\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let seen = read_until_closed(&mut stream, WAIT)
        .await
        .expect("the server answers a body that never completes");
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(text.contains("http_body_timeout"), "{text}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "408 after the 1 s body timeout, took {elapsed:?}"
    );
}

#[tokio::test]
async fn a_connection_flood_from_one_address_is_capped_and_others_are_served() {
    let server = Server::start_with(&["--limit", "http_connections_per_address=20"]);
    // The soft open-file limit was raised to the hard one at start.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(
        numbers[0], numbers[1],
        "soft limit raised to the hard one: {line}"
    );

    let baseline = open_fds(&server);
    let mut flood = Vec::new();
    for _ in 0..60 {
        flood.push(connect_from(&server, "127.0.0.1").await);
    }
    // The ones over the cap are answered 503 and closed at once; 20 stay open.
    let (flood, refused, refusal) = closed_within(flood, Duration::from_secs(2)).await;
    assert_eq!(
        refused, 40,
        "all but 20 of 60 connections from one address are closed"
    );
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal:?}");
    assert!(
        refusal.contains("http_connections_per_address"),
        "{refusal}"
    );
    let held = open_fds(&server) - baseline;
    assert!(held <= 22, "the flood holds {held} descriptors, not ~20");

    // Another address is served, and the flooding address gets nothing more.
    assert_eq!(healthz_from(&server, OTHER_CLIENT).await, StatusCode::OK);
    let mut one_more = connect_from(&server, "127.0.0.1").await;
    assert!(read_until_closed(&mut one_more, WAIT).await.is_some());

    // Its places come back when it closes them.
    drop(flood);
    support::api::eventually("the flooding address is served again", || async {
        match client_from("127.0.0.1")
            .get(format!("{}/healthz", server.http))
            .send()
            .await
        {
            Ok(reply) if reply.status() == StatusCode::OK => Ok(()),
            Ok(reply) => Err(format!("{}", reply.status())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
}

/// The observed attack with the production defaults: 1,100 idle connections from one
/// address took every descriptor and /healthz stopped answering.
#[tokio::test]
async fn eleven_hundred_idle_connections_from_one_address_leave_the_node_serving() {
    let server = Server::start();
    let baseline = open_fds(&server);
    let mut flood = Vec::new();
    for _ in 0..1100 {
        flood.push(connect_from(&server, "127.0.0.1").await);
    }
    // Wait until the refused ones are closed: then the server holds only the admitted.
    let (flood, _, _) = closed_within(flood, Duration::from_secs(2)).await;
    let open = flood.len();
    assert_eq!(
        open, 256,
        "http_connections_per_address (256) are kept, the rest closed"
    );
    let held = open_fds(&server) - baseline;
    assert!(held <= 260, "the flood holds {held} descriptors");
    assert_eq!(healthz_from(&server, OTHER_CLIENT).await, StatusCode::OK);
    eprintln!("1,100 connections from one address: {open} kept open, {held} descriptors held");
}

#[tokio::test]
async fn the_node_wide_connection_cap_holds_across_addresses() {
    let server = Server::start_with(&[
        "--limit",
        "http_max_connections=30",
        "--limit",
        "http_connections_per_address=1000",
    ]);
    let baseline = open_fds(&server);
    let mut held = Vec::new();
    for i in 0..40 {
        let from = format!("127.0.1.{}", 1 + i % 8);
        held.push(connect_from(&server, &from).await);
    }
    let (held, refused, _) = closed_within(held, Duration::from_secs(2)).await;
    assert_eq!(held.len(), 30);
    assert_eq!(
        refused, 10,
        "the 10 connections over the node's 30 are closed"
    );
    assert!(open_fds(&server) - baseline <= 32);
    let mut more = connect_from(&server, OTHER_CLIENT).await;
    let seen = read_until_closed(&mut more, WAIT)
        .await
        .expect("refused while the node is full");
    assert!(
        String::from_utf8_lossy(&seen).contains("maximum of 30 connections"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
}

#[tokio::test]
async fn request_floods_get_429_with_retry_after_per_address() {
    let server = Server::start_with(&[
        "--limit",
        "api_requests_per_minute=5",
        "--limit",
        "rtc_requests_per_minute=3",
        "--limit",
        "whip_requests_per_minute=2",
    ]);
    let local = client_from("127.0.0.1");
    let get = |path: &str| local.get(format!("{}{path}", server.http)).send();
    for _ in 0..5 {
        let status = get("/v1/rooms").await.unwrap().status();
        assert_ne!(status, StatusCode::TOO_MANY_REQUESTS);
    }
    let limited = get("/v1/rooms").await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(limited.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/problem+json"));
    let body: Value = limited.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("api_requests_per_minute"),
        "{body}"
    );
    // Twirp shares the API budget.
    let twirp = local
        .post(format!(
            "{}/twirp/livekit.RoomService/ListRooms",
            server.http
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(twirp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(twirp.headers().contains_key(RETRY_AFTER));
    let body: Value = twirp.json().await.unwrap();
    assert_eq!(
        body["code"], "resource_exhausted",
        "Twirp's error shape: {body}"
    );
    assert!(body["msg"]
        .as_str()
        .unwrap()
        .contains("api_requests_per_minute"));
    // Another address has its own budget; /healthz is never limited.
    let other = client_from(OTHER_CLIENT);
    let status = other
        .get(format!("{}/v1/rooms", server.http))
        .send()
        .await
        .unwrap()
        .status();
    assert_ne!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);

    // /rtc: the same, as text (what livekit-client shows).
    for _ in 0..3 {
        let status = get("/rtc/validate?access_token=x").await.unwrap().status();
        assert_ne!(status, StatusCode::TOO_MANY_REQUESTS);
    }
    let rtc = get("/rtc/validate?access_token=x").await.unwrap();
    assert_eq!(rtc.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(rtc.headers().contains_key(RETRY_AFTER));
    assert!(rtc.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(rtc
        .text()
        .await
        .unwrap()
        .contains("rtc_requests_per_minute"));
    let token = grant_token("flood", json!({ "room": "flood", "roomJoin": true }));
    let upgrade = Client::connect(&support::rtc_url(&server.ws, &token, "")).await;
    match upgrade {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 429)
        }
        Err(e) => panic!("expected a 429 refusal of the upgrade, got {e}"),
        Ok(_) => panic!("the upgrade must be refused with 429"),
    }

    // /whip and /whep.
    for _ in 0..2 {
        let status = local
            .post(format!("{}/whip", server.http))
            .header(CONTENT_TYPE, "application/sdp")
            .body("v=0\r\n")
            .send()
            .await
            .unwrap()
            .status();
        assert_ne!(status, StatusCode::TOO_MANY_REQUESTS);
    }
    let whep = local
        .post(format!("{}/whep", server.http))
        .header(CONTENT_TYPE, "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(whep.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(whep.headers().contains_key(RETRY_AFTER));
    let body: Value = whep.json().await.unwrap();
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("whip_requests_per_minute"));
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_naming_it() {
    let server = Server::start_with(&["--limit", "http_request_body_bytes=1KiB"]);
    let api = Api::new(&server.http, Some(&admin_token("big", "admin")));
    let big = json!({ "room_id": "big", "metadata": "x".repeat(2048) });
    api.post("/v1/rooms", &big).await.problem_saying(
        StatusCode::PAYLOAD_TOO_LARGE,
        &["1024", "http_request_body_bytes"],
    );
    // Without a Content-Length (chunked), it is cut off while being read.
    let token = admin_token("big", "admin");
    let mut stream = connect_from(&server, "127.0.0.1").await;
    let chunk = format!(
        "{{\"room_id\":\"big\",\"metadata\":\"{}\"}}",
        "y".repeat(3000)
    );
    let request = format!(
        "POST /v1/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("http_request_body_bytes"), "{text}");
    // A WHIP offer too.
    let whip = http_client()
        .post(format!("{}/whip", server.http))
        .header(CONTENT_TYPE, "application/sdp")
        .body("a".repeat(4096))
        .send()
        .await
        .unwrap();
    assert_eq!(whip.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Twirp callers get Twirp's error shape.
    let twirp = http_client()
        .post(format!(
            "{}/twirp/livekit.RoomService/CreateRoom",
            server.http
        ))
        .bearer_auth(admin_token("big", "admin"))
        .json(&json!({ "name": "big", "metadata": "x".repeat(2048) }))
        .send()
        .await
        .unwrap();
    assert_eq!(twirp.status(), StatusCode::BAD_REQUEST);
    let body: Value = twirp.json().await.unwrap();
    assert_eq!(body["code"], "invalid_argument", "{body}");
    assert!(body["msg"]
        .as_str()
        .unwrap()
        .contains("http_request_body_bytes"));
    // The room was never created.
    api.get("/v1/rooms/big")
        .await
        .problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_request_head_over_the_limit_is_refused() {
    let server = Server::start_with(&["--limit", "http_header_bytes=8KiB"]);
    let mut stream = connect_from(&server, "127.0.0.1").await;
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "z".repeat(20 * 1024)
    );
    // The server may close before taking all of it; what it answered is what counts.
    let _ = stream.write_all(request.as_bytes()).await;
    let seen = read_until_closed(&mut stream, WAIT)
        .await
        .expect("the connection is closed");
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 431"), "{text:?}");
    assert_eq!(healthz_from(&server, "127.0.0.1").await, StatusCode::OK);
}
