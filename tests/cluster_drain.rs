//! Drain: a node asked to stop (SIGTERM, or `switchboard drain`) is `draining` in
//! `GET /v1/nodes`, opens no new room, keeps serving the rooms it has (a new participant can
//! still join one) and stops once they are empty; `cluster.drain_timeout` or a second
//! SIGTERM ends the drain, and whoever is left is told to leave. Real processes on a real
//! PostgreSQL database.

mod support;

use std::time::{Duration, Instant};

use livekit_protocol as proto;
use reqwest::StatusCode;
use sqlx::postgres::PgPoolOptions;
use sqlx::Row as _;
use support::api::{admin_token, eventually, guest_token, rtc_validate, Api};
use support::postgres::TestDatabase;
use support::{Client, Resp, Server};

fn start(db: &TestDatabase, drain_timeout: &str) -> Server {
    Server::start_with(&[
        "--database-url",
        &db.url,
        "--cluster-heartbeat-interval",
        "1s",
        "--cluster-node-timeout",
        "6s",
        "--cluster-drain-timeout",
        drain_timeout,
    ])
}

/// Waits until `GET /v1/nodes` through `server` shows it `draining`.
async fn until_draining(server: &Server, token: &str) {
    let api = Api::new(&server.http, Some(token));
    eventually("the node is listed as draining", || async {
        let body = api.get("/v1/nodes").await.expect(StatusCode::OK).clone();
        let own = body["node_id"].clone();
        let node = body["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["node_id"] == own)
            .cloned()
            .unwrap_or_default();
        if node["state"] == "draining" {
            Ok(())
        } else {
            Err(node.to_string())
        }
    })
    .await;
}

/// The LeaveRequest the server sends `client`.
async fn leave_of(client: &mut Client) -> proto::LeaveRequest {
    client
        .expect("a leave", |response| match response {
            Resp::Leave(leave) => Some(leave.clone()),
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_the_node_until_its_rooms_are_empty() {
    let db = TestDatabase::direct("drain").await;
    let mut node = start(&db, "60s");
    let operator = admin_token("stage", "ops");
    let (mut alice, _) = Client::join(&node.ws, &guest_token("stage", "alice")).await;

    node.terminate();
    until_draining(&node, &operator).await;
    // No new room opens here...
    let (status, text) = rtc_validate(&node, &guest_token("fresh", "dan")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(text.contains("draining"), "{text}");
    // ...but the open one goes on: someone else can still join it.
    let (mut bob, _) = Client::join(&node.ws, &guest_token("stage", "bob")).await;
    bob.assert_alive().await;
    alice.assert_alive().await;

    // Once both have left, the node stops on its own, long before the drain timeout.
    alice.leave().await;
    bob.leave().await;
    let left = Instant::now();
    let status = node.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    assert!(left.elapsed() < Duration::from_secs(15));

    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .expect("connect");
    let reasons: Vec<String> =
        sqlx::query("SELECT leave_reason FROM connections ORDER BY identity")
            .fetch_all(&pool)
            .await
            .expect("connections")
            .iter()
            .map(|r| {
                r.get::<Option<String>, _>("leave_reason")
                    .unwrap_or_default()
            })
            .collect();
    assert_eq!(
        reasons,
        ["CLIENT_INITIATED", "CLIENT_INITIATED"],
        "nobody was sent away"
    );
    let state: String = sqlx::query("SELECT state FROM nodes")
        .fetch_one(&pool)
        .await
        .expect("the node")
        .get("state");
    assert_eq!(state, "stopped");
}

#[tokio::test(flavor = "multi_thread")]
async fn switchboard_drain_ends_at_the_drain_timeout() {
    let db = TestDatabase::direct("drain_cli").await;
    let mut node = start(&db, "2s");
    let operator = admin_token("stage", "ops");
    let (mut alice, _) = Client::join(&node.ws, &guest_token("stage", "alice")).await;

    let mut cli = support::command();
    cli.args([
        "drain",
        "--url",
        &node.http,
        "--dev",
        "--json",
        "--wait",
        "--wait-timeout",
        "30s",
    ]);
    let asked = Instant::now();
    let drain = tokio::task::spawn_blocking(move || {
        support::run_with_timeout(cli, Duration::from_secs(40))
    });
    until_draining(&node, &operator).await;

    // The drain timeout passes with alice still there: she is told to leave, the node
    // stops, and `drain --wait` returns once it has.
    let leave = leave_of(&mut alice).await;
    assert_eq!(
        leave.reason,
        proto::DisconnectReason::ServerShutdown as i32,
        "{leave:?}"
    );
    assert!(
        asked.elapsed() >= Duration::from_millis(1500),
        "the node waited for the drain timeout first ({:?})",
        asked.elapsed()
    );
    let (status, stdout, stderr) = drain.await.expect("the drain command ran");
    assert!(status.success(), "{status}: {stdout} {stderr}");
    let answer: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(answer["state"], "draining", "{answer}");
    assert_eq!(answer["participants"], 1, "{answer}");
    assert_eq!(answer["drain_timeout_secs"], 2, "{answer}");
    assert!(stderr.contains("stopped"), "{stderr}");
    let status = node.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_ends_the_drain_at_once() {
    let db = TestDatabase::direct("drain_twice").await;
    let mut node = start(&db, "10m");
    let operator = admin_token("stage", "ops");
    let (mut alice, _) = Client::join(&node.ws, &guest_token("stage", "alice")).await;

    // Without the grants of a deployment admin, no drain.
    Api::new(&node.http, Some(&guest_token("stage", "alice")))
        .post_empty("/v1/node/drain")
        .await
        .problem(StatusCode::FORBIDDEN);

    node.terminate();
    until_draining(&node, &operator).await;
    alice.assert_alive().await;
    node.terminate();
    let leave = leave_of(&mut alice).await;
    assert_eq!(
        leave.reason,
        proto::DisconnectReason::ServerShutdown as i32,
        "{leave:?}"
    );
    let status = node.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}");
}
