//! Several real nodes on one PostgreSQL database (tests/cluster_*.rs): short membership
//! timing, and a reader pool of the test's own on what the nodes wrote.

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use reqwest::StatusCode;

use super::api::{admin_token, host_token, rtc_validate, Api};
use super::postgres::TestDatabase;
use super::{Client, Server};

/// Short membership timing so a dead node is noticed within seconds. The timeout leaves a
/// restart (well under a second here) plenty of room before the live node would release.
pub const TIMING: [&str; 4] = [
    "--cluster-heartbeat-interval",
    "1s",
    "--cluster-node-timeout",
    "6s",
];

/// A node on `db` with [`TIMING`] and `node_args`.
pub fn start(db: &TestDatabase, node_args: &[&str]) -> Server {
    let mut args = vec!["--database-url", db.url.as_str()];
    args.extend(TIMING);
    args.extend(node_args);
    Server::start_with(&args)
}

/// A small pool of the test's own, to read what the nodes wrote.
pub async fn reader(db: &TestDatabase) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await
        .expect("connect to the test database")
}

/// The node holding `room`'s lease, if any row is there.
pub async fn lease_holder(pool: &PgPool, room: &str) -> Option<String> {
    sqlx::query_scalar("SELECT node_id FROM room_leases WHERE room_id = $1")
        .bind(room)
        .fetch_optional(pool)
        .await
        .expect("read room_leases")
}

/// Waits until `server`'s `GET /v1/nodes` shows a node other than `except` with `rooms`
/// rooms open (its heartbeat counted them). New rooms go to the least-loaded node, so a test
/// that wants a room on a given node waits for the others' load first.
pub async fn until_another_node_has_rooms(server: &Server, token: &str, except: &str, rooms: u64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let reply = super::api::Api::new(&server.http, Some(token))
            .get("/v1/nodes")
            .await;
        let body = reply.expect(reqwest::StatusCode::OK);
        let counted = body["nodes"].as_array().is_some_and(|nodes| {
            nodes
                .iter()
                .any(|n| n["node_id"] != except && n["rooms"].as_u64() == Some(rooms))
        });
        if counted {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "another node's heartbeat counts {rooms} room(s): {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Joins hana as host of room `stage` on node `a`; checks that node `b` takes her token
/// (relaying the question to `a`, which serves the room); then removes her through `a`'s
/// API. Her client (its socket about to be closed) and when she was removed: what node
/// `b` knows of the removal, and when, is each test's own question.
pub async fn host_removed_on_a_after_b_took_her_token(
    a: &Server,
    b: &Server,
) -> (Client, std::time::Instant) {
    let host = host_token("stage", "hana");
    let (client, _) = Client::join(&a.ws, &host).await;
    let (status, text) = rtc_validate(b, &host).await;
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::OK, "success"),
        "node B takes the token at first, relayed to node A: {text}"
    );
    Api::new(&a.http, Some(&admin_token("stage", "ops")))
        .delete("/v1/rooms/stage/participants/hana")
        .await
        .expect(StatusCode::NO_CONTENT);
    (client, std::time::Instant::now())
}
