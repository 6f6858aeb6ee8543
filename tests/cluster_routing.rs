//! Three real nodes on one PostgreSQL database, and clients that reach whichever node they
//! like: a new room is placed on the least-loaded node, joins through the other nodes are
//! relayed to it, WHIP is redirected to it, token endpoints name it; when it dies the
//! relayed clients are closed at once, and a join that arrives meanwhile waits until the
//! dead node's lease is gone and the room opens again on a live node.

mod support;

use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use support::api::{admin_token, grant_token, Api};
use support::cluster::{lease_holder, reader};
use support::postgres::TestDatabase;
use support::Server;

/// A 4 s node timeout (so lease) instead of the shared 6 s: the failover part waits for it.
fn start(db: &TestDatabase, node_id: &str) -> Server {
    let timing = [
        "--cluster-heartbeat-interval",
        "1s",
        "--cluster-node-timeout",
        "4s",
    ];
    let mut args = vec!["--database-url", db.url.as_str(), "--node-id", node_id];
    args.extend(timing);
    Server::start_with(&args)
}

/// The node `identity`'s open connection is recorded on, once the recorder wrote it
/// (records are written after the join, by the node's event loop).
async fn recorded_on(pool: &PgPool, identity: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let nodes: Vec<String> = sqlx::query_scalar(
            "SELECT node_id FROM connections WHERE identity = $1 AND left_at IS NULL",
        )
        .bind(identity)
        .fetch_all(pool)
        .await
        .expect("read connections");
        match nodes.as_slice() {
            [] => {}
            [node] => return node.clone(),
            more => panic!("{identity} has {} open connections: {more:?}", more.len()),
        }
        assert!(Instant::now() < deadline, "{identity}'s join recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// No redirects followed: the test looks at them.
fn plain_http() -> reqwest::Client {
    support::api::http_client();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// A one-line WHIP offer (one sendonly Opus m-line), enough to reach placement; with
/// `recvonly`, a WHEP offer.
fn whip_offer() -> String {
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef0123456789\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=group:BUNDLE 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n"
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn joins_through_any_node_meet_on_the_room_node_and_move_on_when_it_dies() {
    let db = TestDatabase::direct("routing").await;
    let pool = reader(&db).await;
    let mut node_a = start(&db, "node-a");
    let node_b = start(&db, "node-b");
    let node_c = start(&db, "node-c");

    // Alice joins a new room through B. Every node is empty, so the least-loaded one is
    // node-a (ties go by node id): the room is placed there and her signaling relayed.
    let (mut alice, joined) = node_b.join("stage", "alice", &[]).await;
    let served_by = joined.server_info.as_ref().map(|s| s.node_id.as_str());
    assert_eq!(
        served_by,
        Some("node-a"),
        "alice is served by the room's node"
    );
    assert_eq!(
        lease_holder(&pool, "stage").await.as_deref(),
        Some("node-a")
    );
    let alice_sid = joined.participant.as_ref().expect("alice").sid.clone();

    // Bob joins through C and meets her on node-a.
    let (_bob, joined) = node_c.join("stage", "bob", &[]).await;
    let served_by = joined.server_info.as_ref().map(|s| s.node_id.as_str());
    assert_eq!(served_by, Some("node-a"));
    assert!(
        joined.other_participants.iter().any(|p| p.sid == alice_sid),
        "bob sees alice: {:?}",
        joined.other_participants
    );
    let bob_sid = joined.participant.as_ref().expect("bob").sid.clone();
    alice
        .expect_participant("bob joining", &bob_sid, |_| true)
        .await;
    alice.assert_alive().await;
    assert_eq!(recorded_on(&pool, "alice").await, "node-a");
    assert_eq!(recorded_on(&pool, "bob").await, "node-a");

    // validate is relayed too: the owner's answer, whatever node is asked.
    let http = plain_http();
    let token = support::token("stage", "carol", &[]);
    let reply = http
        .get(format!("{}/rtc/validate", node_c.http))
        .query(&[("access_token", token.as_str())])
        .send()
        .await
        .expect("validate through C");
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(reply.text().await.expect("body"), "success");

    // The token endpoints name the room's node.
    let issued = Api::new(&node_c.http, Some(&admin_token("stage", "ops")))
        .post("/v1/rooms/stage/tokens", &json!({ "identity": "dave" }))
        .await;
    assert_eq!(issued.expect(StatusCode::OK)["url"], node_a.ws.as_str());

    // WHIP through C is redirected to node-a, and the redirected offer is served there.
    let publisher = grant_token(
        "erin",
        json!({ "room": "stage", "roomJoin": true, "canPublish": true }),
    );
    let offer = |base: &str| {
        http.post(format!("{base}/whip"))
            .header(AUTHORIZATION, format!("Bearer {publisher}"))
            .header(CONTENT_TYPE, "application/sdp")
            .body(whip_offer())
            .send()
    };
    let reply = offer(&node_c.http).await.expect("POST /whip through C");
    assert_eq!(reply.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = reply
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(location, format!("{}/whip", node_a.http));
    let reply = offer(&node_a.http).await.expect("POST /whip on node-a");
    assert_eq!(
        reply.status(),
        StatusCode::CREATED,
        "served where redirected"
    );
    assert_eq!(recorded_on(&pool, "erin").await, "node-a");
    // WHEP through B likewise.
    let viewer = grant_token("finn", json!({ "room": "stage", "roomJoin": true }));
    let reply = http
        .post(format!("{}/whep", node_b.http))
        .header(AUTHORIZATION, format!("Bearer {viewer}"))
        .header(CONTENT_TYPE, "application/sdp")
        .body(whip_offer().replace("a=sendonly", "a=recvonly"))
        .send()
        .await
        .expect("POST /whep through B");
    assert_eq!(reply.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        reply.headers().get(LOCATION).and_then(|v| v.to_str().ok()),
        Some(format!("{}/whep", node_a.http).as_str())
    );

    // node-a dies: the relays close both clients at once (livekit-client would reconnect).
    node_a.kill9();
    let killed = Instant::now();
    alice.until_gone().await;
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "alice's relay closed {:?} after the kill",
        killed.elapsed()
    );

    // Joining again through B: node-a cannot be reached, so the join waits (asking again
    // every 500 ms) until node-a's lease lapses and the room opens on a live node, then is
    // served on that same attempt.
    let url = support::rtc_url(&node_b.ws, &support::token("stage", "alice", &[]), "");
    let rejoin = tokio_tungstenite::connect_async(&url).await;
    let rejoined_after = killed.elapsed();
    if let Err(e) = rejoin {
        panic!("the join through B after node-a's death failed: {e}");
    }
    eprintln!("the room was served again {rejoined_after:?} after its node's kill");
    assert!(
        rejoined_after < Duration::from_secs(8),
        "within the 4 s lease plus a heartbeat: {rejoined_after:?}"
    );
    let (mut alice, joined) = node_c.join("stage", "alice", &[]).await;
    let new_node = joined
        .server_info
        .as_ref()
        .map(|s| s.node_id.clone())
        .expect("server info");
    assert!(
        new_node == "node-b" || new_node == "node-c",
        "a live node: {new_node}"
    );
    assert_eq!(
        lease_holder(&pool, "stage").await.as_deref(),
        Some(new_node.as_str())
    );
    alice.assert_alive().await;
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_racing_to_place_100_rooms_give_each_room_one_node() {
    let db = TestDatabase::direct("race").await;
    let pool = reader(&db).await;
    let node_a = start(&db, "node-a");
    let node_b = start(&db, "node-b");
    let token = |room: &str, identity: &str| {
        support::sign(&support::join_claims(room, identity), support::DEV_SECRET)
    };
    // Every room is joined through both nodes at the same moment: each node places the new
    // room (the least-loaded node, or itself), and the two placements race for one lease.
    let rooms: Vec<String> = (0..100).map(|i| format!("race-{i}")).collect();
    let joins = rooms.iter().map(|room| {
        let (via_a, via_b) = (token(room, "ann"), token(room, "bo"));
        let (node_a, node_b) = (&node_a, &node_b);
        async move {
            let (a, b) = tokio::join!(
                support::Client::join(&node_a.ws, &via_a),
                support::Client::join(&node_b.ws, &via_b),
            );
            let served_by = |join: &livekit_protocol::JoinResponse| {
                join.server_info
                    .as_ref()
                    .map(|s| s.node_id.clone())
                    .expect("server info")
            };
            (room.clone(), served_by(&a.1), served_by(&b.1), a.0, b.0)
        }
    });
    let joined = futures_util::future::join_all(joins).await;
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
    for (room, via_a, via_b, _ann, _bo) in &joined {
        assert_eq!(via_a, via_b, "{room}: both joins are served by one node");
        assert_eq!(
            lease_holder(&pool, room).await.as_deref(),
            Some(via_a.as_str()),
            "{room}: the lease names the node serving it"
        );
        *per_node.entry(via_a.clone()).or_default() += 1;
    }
    eprintln!("rooms per node after the race: {per_node:?}");
    pool.close().await;
}
