//! NATS delivery against the real nats-server on 127.0.0.1:4222 (a missing server fails the
//! test: `apt-get install nats-server` and start it).

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use super::support::{config, room_id, room_story, Receiver, Running, TestStore, WAIT};
use crate::config::{NatsSettings, DEFAULT_NATS_CLUSTER_PREFIX, DEFAULT_NATS_SESSION_SUBJECT};
use crate::delivery::DeliveryConfig;

const NATS_URL: &str = "nats://127.0.0.1:4222";

async fn subscriber_client() -> async_nats::Client {
    let options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5));
    async_nats::connect_with_options(NATS_URL, options)
        .await
        .unwrap_or_else(|err| {
            panic!("the NATS tests need nats-server listening on {NATS_URL}: {err}")
        })
}

async fn next_json(subscriber: &mut async_nats::Subscriber) -> (String, Value) {
    let message = tokio::time::timeout(WAIT, subscriber.next())
        .await
        .expect("a NATS message arrives in time")
        .expect("subscription open");
    let payload = serde_json::from_slice(&message.payload).expect("JSON payload");
    (message.subject.to_string(), payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_published_in_order_with_session_status() {
    let client = subscriber_client().await;
    // A prefix of its own, so concurrent runs on the same server do not see each other's
    // events; the session subject is the shared default, so those are filtered by room.
    let prefix = format!("switchboard.events.test{}", ulid::Ulid::new());
    let mut events = client
        .subscribe(format!("{prefix}.>"))
        .await
        .expect("subscribe to events");
    let mut statuses = client
        .subscribe(DEFAULT_NATS_SESSION_SUBJECT)
        .await
        .expect("subscribe to stream status");
    // The subscriptions are in place on the server before anything is published.
    client.flush().await.expect("flush subscriptions");

    let db = TestStore::new().await;
    let running = Running::start(
        &db.store,
        DeliveryConfig {
            nats: Some(NatsSettings {
                url: NATS_URL.to_owned(),
                subject_prefix: prefix.clone(),
                session_subject: DEFAULT_NATS_SESSION_SUBJECT.to_owned(),
                cluster_prefix: DEFAULT_NATS_CLUSTER_PREFIX.to_owned(),
            }),
            ..config()
        },
    );
    let room = room_id("ro_nats");
    let session_id = room_story(db.store.as_ref(), &room).await;
    running.wake.notify_waiters();
    let log = db.all_events().await;

    for event in &log {
        let (subject, message) = next_json(&mut events).await;
        assert_eq!(subject, format!("{prefix}.{}", event.kind));
        assert_eq!(message["id"], event.id, "in log order: {message}");
        assert_eq!(message["event"], event.kind.as_str());
        assert_eq!(message["kind"], event.kind.as_str());
        assert_eq!(message["room_id"], event.room_id.as_str());
        assert_eq!(message["seq"], event.seq);
        assert_eq!(message["payload"], event.payload);
        assert_eq!(
            message["created_at"],
            serde_json::to_value(event.created_at).unwrap()
        );
    }

    let changes: Vec<_> = log
        .iter()
        .filter(|e| e.kind == "session_state_changed")
        .collect();
    assert!(
        changes.len() >= 4,
        "READY, PUBLISHING, LIVE, ENDING, STOPPED"
    );
    let mut seen = Vec::new();
    while seen.len() < changes.len() {
        let (_, status) = next_json(&mut statuses).await;
        if status["room_id"] == room.as_str() {
            seen.push(status);
        }
    }
    for (status, event) in seen.iter().zip(&changes) {
        assert_eq!(status["session_id"], session_id.as_str());
        assert_eq!(status["owner_identity"], "host");
        assert_eq!(status["seq"], event.seq);
        assert_eq!(status["status"], event.payload["to"]);
        assert_eq!(status["from"], event.payload["from"]);
        assert_eq!(status["is_live"], event.payload["to"] == "LIVE");
    }
    let transitions: Vec<(Value, Value, bool)> = seen
        .iter()
        .map(|s| (s["from"].clone(), s["status"].clone(), s["is_live"] == true))
        .collect();
    let live = transitions.iter().filter(|t| t.2).count();
    assert_eq!(live, 1, "exactly one LIVE status: {transitions:?}");
    assert_eq!(
        seen[0]["from"],
        Value::Null,
        "created READY: {transitions:?}"
    );
    assert_eq!(seen[0]["status"], "READY");

    running.stop().await;
    assert_eq!(
        db.store.delivery_cursor("nats").await.unwrap(),
        log.last().expect("events").id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_nats_server_holds_up_nothing_and_stops_cleanly() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let db = TestStore::new().await;
    let mut receiver = Receiver::start(&[]).await;
    let running = Running::start(
        &db.store,
        DeliveryConfig {
            webhook_urls: vec![receiver.url.clone()],
            nats: Some(NatsSettings {
                url: format!("nats://127.0.0.1:{port}"),
                subject_prefix: "switchboard.events".to_owned(),
                session_subject: DEFAULT_NATS_SESSION_SUBJECT.to_owned(),
                cluster_prefix: DEFAULT_NATS_CLUSTER_PREFIX.to_owned(),
            }),
            timeout: Duration::from_millis(500),
            ..config()
        },
    );
    room_story(db.store.as_ref(), &room_id("ro_down")).await;
    running.wake.notify_waiters();
    let log = db.all_events().await;

    // The webhook sink delivers everything while NATS deliveries keep failing.
    let received = receiver.take(log.len()).await;
    assert_eq!(
        received.last().map(|r| r.json()["id"].clone()),
        Some(format!("EV_{}", log.last().expect("events").id).into())
    );
    // Stopping mid-retry ends both tasks (a panic or hang fails here); NATS moved no cursor.
    running.stop().await;
    assert_eq!(db.store.delivery_cursor("nats").await.unwrap(), 0);
}

/// A nats-server of the test's own (the shared one on 4222 must not be killed), on a fixed
/// port so it can be restarted at the same address.
struct OwnNats {
    child: std::process::Child,
}

impl OwnNats {
    async fn start(port: u16) -> Self {
        OwnNats::start_with(port, &[]).await
    }

    async fn start_with(port: u16, extra: &[&str]) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect(
                "the NATS tests need the nats-server binary on PATH (apt-get install nats-server)",
            );
        let stderr = child.stderr.take().expect("piped stderr");
        // Ready when it says so: no guessing with sleeps. The reader thread keeps draining
        // the log afterwards so the server never blocks on a full pipe.
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Server is ready") {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        tokio::time::timeout(WAIT, ready_rx)
            .await
            .expect("nats-server starts in time")
            .expect("nats-server reports that it is ready");
        OwnNats { child }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One more event (room_created of a new room) through a real store method.
async fn another_room(store: &dyn crate::store::Store) -> String {
    let room = room_id("ro_nats_loss");
    store
        .create_room(&crate::store::RoomSpec {
            room_id: room.clone(),
            name: None,
            metadata: None,
            empty_timeout_secs: 60,
            max_participants: 0,
            channel_id: None,
            guest_access: false,
            at: chrono::Utc::now(),
        })
        .await
        .expect("create_room");
    room
}

async fn subscribe(url: &str, subject: &str) -> (async_nats::Client, async_nats::Subscriber) {
    let client = async_nats::connect(url)
        .await
        .expect("connect to own nats-server");
    let subscriber = client
        .subscribe(subject.to_owned())
        .await
        .expect("subscribe");
    client.flush().await.expect("flush subscription");
    (client, subscriber)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_survives_losing_the_nats_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let prefix = format!("switchboard.events.test{}", ulid::Ulid::new());
    let server = OwnNats::start(port).await;
    let (_client, mut before) = subscribe(&url, &format!("{prefix}.>")).await;

    let db = TestStore::new().await;
    let running = Running::start(
        &db.store,
        DeliveryConfig {
            nats: Some(NatsSettings {
                url: url.clone(),
                subject_prefix: prefix.clone(),
                session_subject: DEFAULT_NATS_SESSION_SUBJECT.to_owned(),
                cluster_prefix: DEFAULT_NATS_CLUSTER_PREFIX.to_owned(),
            }),
            timeout: Duration::from_millis(500),
            ..config()
        },
    );
    let first = another_room(db.store.as_ref()).await;
    running.wake.notify_waiters();
    let (_, message) = next_json(&mut before).await;
    assert_eq!(message["room_id"], first.as_str());

    // The server goes away; an event written meanwhile waits for it to come back.
    server.kill();
    let second = another_room(db.store.as_ref()).await;
    running.wake.notify_waiters();
    let _server = OwnNats::start(port).await;
    let (_client, mut after) = subscribe(&url, &format!("{prefix}.>")).await;
    let third = another_room(db.store.as_ref()).await;
    running.wake.notify_waiters();

    // The second event may have gone out before this subscription existed (NATS keeps
    // nothing for absent subscribers); the third comes after it, in order.
    let (_, message) = next_json(&mut after).await;
    let message = if message["room_id"] == second.as_str() {
        next_json(&mut after).await.1
    } else {
        message
    };
    assert_eq!(message["room_id"], third.as_str());
    running.stop().await;
    let log = db.all_events().await;
    assert_eq!(log.len(), 3);
    assert_eq!(db.store.delivery_cursor("nats").await.unwrap(), log[2].id);
}

/// JetStream's reply to an API request, failing on an error reply.
async fn jetstream_api(client: &async_nats::Client, subject: &str, request: Value) -> Value {
    let reply = tokio::time::timeout(
        WAIT,
        client.request(subject.to_owned(), request.to_string().into()),
    )
    .await
    .expect("JetStream answers in time")
    .unwrap_or_else(|err| panic!("{subject}: {err}"));
    let reply: Value = serde_json::from_slice(&reply.payload).expect("JSON reply");
    assert!(reply.get("error").is_none(), "{subject}: {reply}");
    reply
}

/// A resend (here: every event, after the cursor was set back) carries the same
/// `Nats-Msg-Id`, so a JetStream stream capturing the subjects stores each event once.
/// Core subscribers do see the resend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_drops_a_resend_by_its_message_id() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let store_dir = tempfile::tempdir().expect("JetStream dir");
    let dir = store_dir.path().to_str().expect("UTF-8 path");
    let _server = OwnNats::start_with(port, &["-js", "-sd", dir]).await;
    let url = format!("nats://127.0.0.1:{port}");
    let prefix = format!("switchboard.events.test{}", ulid::Ulid::new());
    let (client, mut core) = subscribe(&url, &format!("{prefix}.>")).await;
    jetstream_api(
        &client,
        "$JS.API.STREAM.CREATE.EVENTS",
        serde_json::json!({
            "name": "EVENTS",
            "subjects": [format!("{prefix}.>")],
            "storage": "memory",
            "duplicate_window": 120_000_000_000_i64,
        }),
    )
    .await;

    let db = TestStore::new().await;
    let config = DeliveryConfig {
        nats: Some(NatsSettings {
            url: url.clone(),
            subject_prefix: prefix.clone(),
            session_subject: DEFAULT_NATS_SESSION_SUBJECT.to_owned(),
            cluster_prefix: DEFAULT_NATS_CLUSTER_PREFIX.to_owned(),
        }),
        ..config()
    };
    for _ in 0..3 {
        another_room(db.store.as_ref()).await;
    }
    for round in ["first", "resend"] {
        let running = Running::start(&db.store, config.clone());
        for _ in 0..3 {
            next_json(&mut core).await;
        }
        running.stop().await;
        assert_eq!(
            db.store.delivery_cursor("nats").await.unwrap(),
            3,
            "{round}"
        );
        // As if the next holder had not seen the cursor writes: everything goes again.
        db.store
            .set_delivery_cursor("nats", 0)
            .await
            .expect("reset");
    }
    let info = jetstream_api(&client, "$JS.API.STREAM.INFO.EVENTS", Value::Null).await;
    assert_eq!(
        info["state"]["messages"], 3,
        "each event stored once: {info}"
    );
}
