//! What one node must act on at once because of another: a removal on one node refuses the
//! revoked token on the other within a NATS round trip (not at the store's 5 s poll), and a
//! room whose lease another node took closes here, its participants told to reconnect,
//! while its record stays open for the new owner; a NATS server that is down delays
//! neither the node's start nor a removal. Real nodes, real PostgreSQL, real NATS (each
//! test on subjects of its own).

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use livekit_protocol as proto;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row as _;
use support::api::{
    admin_token, eventually, guest_token, host_token, rtc_validate, rtc_validate_with, Api,
};
use support::cluster::{host_removed_on_a_after_b_took_her_token, reader};
use support::postgres::TestDatabase;
use support::{now_secs, Client, Resp, Server};

const NATS: &str = "nats://127.0.0.1:4222";

/// `validate` answered by `server` itself, not relayed to the room's node: marked as already
/// relayed once (`X-Switchboard-Forwarded-By`), it is judged by what this node knows.
async fn validate_here(server: &Server, token: &str) -> (StatusCode, String) {
    rtc_validate_with(server, token, &[("x-switchboard-forwarded-by", "test")]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removal_refuses_the_token_on_another_node_at_once_over_nats() {
    let db = TestDatabase::direct("bus").await;
    let nats = async_nats::connect("127.0.0.1:4222")
        .await
        .expect("NATS must run at 127.0.0.1:4222 (start it as README.md says)");
    let prefix = format!(
        "test.cluster.{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let subject = format!("{prefix}.revocations");
    // The nodes' events go to NATS too: to subjects of this test's own.
    let events = format!("{prefix}.events");
    let mut seen = nats.subscribe(subject.clone()).await.expect("subscribe");
    nats.flush().await.expect("flush");
    let node = |id: &'static str| {
        Server::start_with(&[
            "--database-url",
            &db.url,
            "--node-id",
            id,
            "--nats-url",
            NATS,
            "--nats-cluster-prefix",
            &prefix,
            "--nats-subject-prefix",
            &events,
            // Node B is polled often below; /rtc's per-address limit is not what is tested.
            "--limit",
            "rtc_requests_per_minute=100000",
        ])
    };
    let node_a = node("node-a");
    let node_b = node("node-b");

    // A revocation sent from here shows node B's subscription is live (it connects in the
    // background). Sent again until B applies it: one sent before B subscribed is lost, as
    // NATS messages are.
    let revoke_from_here = |identity: &str| {
        json!({
            "node_id": "test", "room_id": "probe", "identity": identity,
            "revoked_at": now_secs(),
        })
        .to_string()
    };
    let refused_by_b = |identity: &'static str| {
        let token = host_token("probe", identity);
        let node_b = &node_b;
        async move {
            let (status, text) = validate_here(node_b, &token).await;
            (status == StatusCode::FORBIDDEN && text.contains("removed from room probe"))
                .then_some(())
                .ok_or(format!("{status} {text}"))
        }
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        nats.publish(subject.clone(), revoke_from_here("probe").into())
            .await
            .expect("publish the probe");
        nats.flush().await.expect("flush");
        match refused_by_b("probe").await {
            Ok(()) => break,
            Err(last) => assert!(
                Instant::now() < deadline,
                "node B never applied a revocation from NATS: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Garbage on the subject is dropped, not fatal: B still applies the revocation sent
    // after it (NATS keeps one publisher's order).
    nats.publish(subject.clone(), "not a revocation".into())
        .await
        .expect("publish garbage");
    nats.publish(subject.clone(), revoke_from_here("probe-2").into())
        .await
        .expect("publish the second probe");
    nats.flush().await.expect("flush");
    eventually(
        "node B applies the revocation sent after the garbage",
        || refused_by_b("probe-2"),
    )
    .await;
    eventually("node B logs the garbage it dropped", || async {
        node_b
            .stderr_text()
            .contains("dropped a message that is not a revocation")
            .then_some(())
            .ok_or_else(|| "not logged yet".to_owned())
    })
    .await;

    let host = host_token("stage", "hana");
    let (mut client, removed) = host_removed_on_a_after_b_took_her_token(&node_a, &node_b).await;
    // Well before the store poll (every 5 s) could have told node B. Asked of node B itself:
    // a plain validate would be relayed to node A, which knows.
    let bound = Duration::from_secs(1);
    loop {
        let (status, text) = validate_here(&node_b, &host).await;
        if status == StatusCode::FORBIDDEN && text.contains("removed from room stage") {
            break;
        }
        assert!(
            removed.elapsed() < bound,
            "node B still answers {status} {text} {bound:?} after the removal on node A"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = removed.elapsed();
    client.expect_close().await;

    // It went over NATS, from node A.
    let from_a = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(message) = seen.next().await {
            let Ok(value) = serde_json::from_slice::<Value>(&message.payload) else {
                continue;
            };
            if value["room_id"] == "stage" {
                return value;
            }
        }
        panic!("the subscription ended");
    })
    .await
    .expect("node A published the revocation");
    assert_eq!(from_a["node_id"], "node-a", "{from_a}");
    assert_eq!(from_a["identity"], "hana", "{from_a}");
    eprintln!("node B refused the revoked token {took:?} after the removal on node A");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_room_whose_lease_another_node_took_closes_here_and_its_record_stays_open() {
    let db = TestDatabase::direct("lease_lost").await;
    let pool = reader(&db).await;
    let node_a = Server::start_with(&[
        "--database-url",
        &db.url,
        "--node-id",
        "node-a",
        "--cluster-heartbeat-interval",
        "1s",
        "--cluster-node-timeout",
        "3s",
    ]);
    let (mut alice, _) = Client::join(&node_a.ws, &guest_token("stage", "alice")).await;
    let (mut bob, _) = Client::join(&node_a.ws, &guest_token("lobby", "bob")).await;
    let lease_of = |room: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query("SELECT node_id FROM room_leases WHERE room_id = $1")
                .bind(room)
                .fetch_optional(&pool)
                .await
                .expect("read the lease")
                .map(|row| row.get::<String, _>("node_id"))
        }
    };
    assert_eq!(lease_of("stage").await.as_deref(), Some("node-a"));

    // Node A's lease lapsed (as if it had been cut off from the database for a TTL) and
    // node B took the room, as acquire_room_lease does: one conditional write.
    let taken = sqlx::query(
        "UPDATE room_leases SET node_id = 'node-b', acquired_at = now(), \
         expires_at = now() + interval '1 hour' WHERE room_id = 'stage' AND node_id = 'node-a'",
    )
    .execute(&pool)
    .await
    .expect("take the lease as node B");
    assert_eq!(taken.rows_affected(), 1);

    // At A's next renewal (every second) alice is told to reconnect, as livekit-client
    // does on LeaveRequest{action: RECONNECT}.
    let leave = alice
        .expect("a leave", |response| match response {
            Resp::Leave(leave) => Some(leave.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        leave.action,
        proto::leave_request::Action::Reconnect as i32,
        "{leave:?}"
    );
    assert!(leave.can_reconnect, "{leave:?}");
    assert_eq!(
        leave.reason,
        proto::DisconnectReason::Migration as i32,
        "{leave:?}"
    );
    alice.expect_close().await;
    // The other room on A goes on.
    bob.assert_alive().await;

    // Her connection is recorded as left for that reason; the room's record stays open
    // (node B uses it) and node B keeps the lease.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = sqlx::query(
            "SELECT leave_reason FROM connections WHERE identity = 'alice' AND left_at IS NOT NULL",
        )
        .fetch_optional(&pool)
        .await
        .expect("read connections");
        if let Some(row) = row {
            assert_eq!(
                row.get::<Option<String>, _>("leave_reason").as_deref(),
                Some("room_lease_lost")
            );
            break;
        }
        assert!(Instant::now() < deadline, "alice's leave was not recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status: String = sqlx::query("SELECT status FROM rooms WHERE room_id = 'stage'")
        .fetch_one(&pool)
        .await
        .expect("the room's record")
        .get("status");
    assert_eq!(status, "active", "the room's record is node B's now");
    assert_eq!(lease_of("stage").await.as_deref(), Some("node-b"));

    // A rejoin through node A is not served there: node A would relay it to the owner, which
    // this test made up (no `nodes` row, so no URL to reach it), and says so.
    let (status, text) = rtc_validate(&node_a, &guest_token("stage", "alice")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(text.contains("node-b"), "{text}");
    assert!(
        node_a
            .stderr_text()
            .contains("another node took the lease of a room open here"),
        "node A says why"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nats_server_that_is_down_neither_stops_the_node_nor_delays_a_removal() {
    // A port nothing listens on: the node starts anyway (the bus connects in the
    // background) and a removal answers at once (the revocation is queued, not awaited).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!("nats://{}", closed.local_addr().expect("its address"));
    drop(closed);
    let db = TestDatabase::direct("bus_down").await;
    let node = Server::start_with(&["--database-url", &db.url, "--nats-url", &url]);
    let operator = admin_token("stage", "ops");
    let host = host_token("stage", "hana");
    let (mut client, _) = Client::join(&node.ws, &host).await;
    let asked = Instant::now();
    Api::new(&node.http, Some(&operator))
        .delete("/v1/rooms/stage/participants/hana")
        .await
        .expect(StatusCode::NO_CONTENT);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "the removal took {:?}",
        asked.elapsed()
    );
    client.expect_close().await;
    let (status, text) = rtc_validate(&node, &host).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
}
