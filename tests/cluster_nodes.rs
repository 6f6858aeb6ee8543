//! Two real nodes on one PostgreSQL database: each registers and heartbeats, a node killed
//! with `kill -9` and started again (same data directory, so the same generated node id)
//! recovers only its own records, a node that stays dead has its records released by the
//! live one, and a node that stops cleanly is recorded as stopped. (Rooms, leases and joins
//! through other nodes: tests/cluster_routing.rs.)

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::{PgPool, Row as _};
use support::api::{admin_token, Api};
use support::cluster::{reader, start, until_another_node_has_rooms, TIMING};
use support::postgres::TestDatabase;
use support::Server;

fn restart_args(db: &TestDatabase) -> Vec<&str> {
    let mut args = vec!["--database-url", db.url.as_str()];
    args.extend(TIMING);
    args
}

/// identity → (node_id, leave_reason, still open) of every connection.
async fn connections(pool: &PgPool) -> BTreeMap<String, (Option<String>, Option<String>, bool)> {
    let rows = sqlx::query(
        "SELECT identity, node_id, leave_reason, left_at IS NULL AS open FROM connections",
    )
    .fetch_all(pool)
    .await
    .expect("read connections");
    rows.iter()
        .map(|r| {
            (
                r.get::<String, _>("identity"),
                (r.get("node_id"), r.get("leave_reason"), r.get("open")),
            )
        })
        .collect()
}

/// Polls the database until `check` accepts what it holds (at most `limit`).
async fn until<T>(
    pool: &PgPool,
    limit: Duration,
    what: &str,
    check: impl Fn(&BTreeMap<String, (Option<String>, Option<String>, bool)>) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let now = connections(pool).await;
        if let Some(found) = check(&now) {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {limit:?}; connections: {now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET /v1/nodes` through `server`: (the answering node's id, node_id → node).
async fn nodes(server: &Server, token: &str) -> (String, BTreeMap<String, Value>) {
    let reply = Api::new(&server.http, Some(token)).get("/v1/nodes").await;
    let body = reply.expect(StatusCode::OK);
    let listed = body["nodes"]
        .as_array()
        .expect("a node list")
        .iter()
        .map(|n| {
            (
                n["node_id"].as_str().expect("node_id").to_owned(),
                n.clone(),
            )
        })
        .collect();
    (body["node_id"].as_str().expect("own id").to_owned(), listed)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_node_recovers_only_its_own_records_and_a_dead_one_is_released() {
    let db = TestDatabase::direct("cluster").await;
    let pool = reader(&db).await;
    let token = admin_token("ops-room", "ops");
    let mut node_a = start(&db, &[]);
    let mut node_b = start(&db, &["--node-id", "node-b"]);

    let (_alice, _) = node_a.join("room-a", "alice", &[]).await;
    // New rooms go to the least-loaded node: once A's heartbeat counts alice's room, B is
    // the emptier one and bob's room opens on B, where he joins.
    until_another_node_has_rooms(&node_b, &token, "node-b", 1).await;
    let (mut bob, _) = node_b.join("room-b", "bob", &[]).await;
    let a_id = until(
        &pool,
        Duration::from_secs(10),
        "both joins recorded",
        |c| match (c.get("alice"), c.get("bob")) {
            (Some((Some(a), None, true)), Some((Some(b), None, true))) if b == "node-b" => {
                Some(a.clone())
            }
            _ => None,
        },
    )
    .await;
    assert!(a_id.starts_with("ND_"), "a generated node id: {a_id}");

    // Both nodes are members, alive, and every node gives the same list.
    let (answered_by, listed) = nodes(&node_b, &token).await;
    assert_eq!(answered_by, "node-b");
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        [&a_id, &"node-b".to_owned()]
    );
    for node in listed.values() {
        assert_eq!(node["alive"], true, "{node}");
        assert_eq!(node["state"], "active", "{node}");
    }
    assert_eq!(listed["node-b"]["public_url"], node_b.ws.as_str());
    let (answered_by, from_a) = nodes(&node_a, &token).await;
    assert_eq!(answered_by, a_id);
    assert_eq!(
        from_a.keys().collect::<Vec<_>>(),
        listed.keys().collect::<Vec<_>>()
    );
    let a_started = listed[&a_id]["started_at"].clone();

    // A crashes and comes back on the same data directory: the same node, which closes its
    // own stale connection before it serves and leaves B's alone.
    node_a.kill9();
    node_a.restart(&restart_args(&db));
    let now = connections(&pool).await;
    assert_eq!(
        now["alice"],
        (Some(a_id.clone()), Some("server_restart".to_owned()), false),
        "{now:#?}"
    );
    assert_eq!(
        now["bob"],
        (Some("node-b".to_owned()), None, true),
        "{now:#?}"
    );
    bob.assert_alive().await;
    let (answered_by, listed) = nodes(&node_a, &token).await;
    assert_eq!(answered_by, a_id, "the restarted node kept its id");
    assert_eq!(listed.len(), 2, "{listed:#?}");
    assert_eq!(listed[&a_id]["alive"], true);
    assert_ne!(listed[&a_id]["started_at"], a_started, "registered again");
    assert_eq!(listed["node-b"]["alive"], true);

    // A dies for good with someone connected: B notices the silence and releases it.
    let (_carol, _) = node_a.join("room-a", "carol", &[]).await;
    until(
        &pool,
        Duration::from_secs(10),
        "carol's join recorded",
        |c| c.get("carol").filter(|(_, _, open)| *open).map(drop),
    )
    .await;
    node_a.kill9();
    let carol = until(
        &pool,
        Duration::from_secs(20),
        "the dead node's connection released",
        |c| c.get("carol").filter(|(_, _, open)| !*open).cloned(),
    )
    .await;
    assert_eq!(
        carol,
        (Some(a_id.clone()), Some("node_lost".to_owned()), false)
    );
    let now = connections(&pool).await;
    assert_eq!(
        now["bob"],
        (Some("node-b".to_owned()), None, true),
        "{now:#?}"
    );
    bob.assert_alive().await;
    let (_, listed) = nodes(&node_b, &token).await;
    assert_eq!(listed[&a_id]["alive"], false, "{listed:#?}");
    assert!(listed[&a_id]["released_at"].is_string(), "{listed:#?}");
    assert_eq!(listed["node-b"]["alive"], true);

    // A clean shutdown says so.
    drop(bob);
    assert!(node_b.stop().success(), "node B exits cleanly");
    let state: String = sqlx::query_scalar("SELECT state FROM nodes WHERE node_id = 'node-b'")
        .fetch_one(&pool)
        .await
        .expect("node B's row");
    assert_eq!(state, "stopped");
    pool.close().await;
}
