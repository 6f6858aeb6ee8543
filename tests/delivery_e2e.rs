//! Event delivery through the real server: a broadcast session's events reach a webhook
//! receiver (verified by livekit-server-sdk's WebhookReceiver) and NATS, in order.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use futures_util::StreamExt;
use serde_json::{json, Value};
use support::api::{admin_token, host_token, Api};
use support::{Client, Server};
use tokio::sync::Notify;

/// Webhooks as they arrived: (Authorization header, body).
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A webhook receiver on 127.0.0.1 that records every POST and answers 200.
async fn receiver() -> (String, Received, Arc<Notify>) {
    let received: Received = Arc::default();
    let arrived = Arc::new(Notify::new());
    let (store, notify) = (Arc::clone(&received), Arc::clone(&arrived));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (store, notify) = (Arc::clone(&store), Arc::clone(&notify));
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                store.lock().unwrap().push((auth, body));
                notify.notify_waiters();
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received, arrived)
}

/// Waits until a received webhook satisfies `done`, or fails after a deadline.
async fn until(
    received: &Received,
    arrived: &Notify,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let notified = arrived.notified();
        let bodies: Vec<Value> = received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| serde_json::from_str(body).expect("webhook bodies are JSON"))
            .collect();
        if done(&bodies) {
            return bodies;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            let kinds: Vec<&Value> = bodies.iter().map(|b| &b["event"]).collect();
            panic!("webhooks did not arrive in time; got {kinds:?}");
        }
    }
}

/// Verifies one webhook with LiveKit's Python `livekit-api` (in the interop venv that
/// scripts/interop-deps.sh makes); returns its parsed event.
fn python_sdk_verify(auth: &str, body: &str) -> Value {
    let root = env!("CARGO_MANIFEST_DIR");
    let python = format!("{root}/.venv-interop/bin/python");
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} is missing: run scripts/interop-deps.sh (scripts/test.sh does) to install \
         LiveKit's Python SDKs"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), body).unwrap();
    let out = std::process::Command::new(&python)
        .arg(format!("{root}/tests/interop/lk_webhook.py"))
        .args(["devkey", "secret", auth])
        .arg(file.path())
        .output()
        .expect("the interop venv's python runs");
    assert!(
        out.status.success(),
        "livekit-api refused our webhook: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("livekit-api's event prints as JSON")
}

/// Verifies one webhook with livekit-server-sdk's WebhookReceiver; returns its parsed event.
fn sdk_verify(auth: &str, body: &str) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/web/tests/support/lk-webhook.mjs"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), body).unwrap();
    let out = std::process::Command::new("node")
        .args([script, "devkey", "secret", auth])
        .arg(file.path())
        .output()
        .expect("node must be installed to verify webhooks with livekit-server-sdk");
    assert!(
        out.status.success(),
        "livekit-server-sdk refused our webhook: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the SDK prints the event")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broadcast_reaches_webhooks_and_nats_in_order() {
    let (url, received, arrived) = receiver().await;
    // A subject prefix of our own, so other tests' events never mix in.
    let prefix = format!("test.{}", ulid::Ulid::new().to_string().to_lowercase());
    let status_subject = format!("{prefix}.status");
    let nats = async_nats::connect("127.0.0.1:4222")
        .await
        .expect("NATS must run at 127.0.0.1:4222 (start it as README.md says)");
    let mut all = nats.subscribe(format!("{prefix}.>")).await.unwrap();
    // The server must know about the subscription before anything is published.
    nats.flush().await.unwrap();
    let mut server = Server::start_with(&[
        "--webhook-url",
        &url,
        "--nats-url",
        "nats://127.0.0.1:4222",
        "--nats-subject-prefix",
        &prefix,
        "--nats-session-subject",
        &status_subject,
    ]);
    let api = Api::new(&server.http, Some(&admin_token("stage", "backend")));
    api.post("/v1/rooms", &json!({ "room_id": "stage" }))
        .await
        .expect(reqwest::StatusCode::CREATED);
    let session = api
        .post("/v1/sessions", &json!({ "room_id": "stage" }))
        .await
        .expect(reqwest::StatusCode::CREATED)["session"]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut host, _) = Client::join(&server.ws, &host_token("stage", "hana")).await;
    host.leave().await;

    let bodies = until(&received, &arrived, |b| {
        b.iter().any(|e| e["event"] == "participant_left")
    })
    .await;
    let kinds: Vec<&str> = bodies
        .iter()
        .map(|b| b["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "room_created",
            "room_started",
            "session_state_changed",
            "session_state_changed",
            "participant_joined",
            "participant_left"
        ]
    );
    let seqs: Vec<i64> = bodies.iter().map(|b| b["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        [1, 2, 3, 4, 5, 6],
        "in the room's order, none missing"
    );
    assert_eq!(bodies[3]["session"]["to"], "READY");
    assert_eq!(bodies[3]["session"]["sessionId"], session.as_str());

    // Every one is accepted by LiveKit's own receiver, and it reads what we meant.
    let raw = received.lock().unwrap().clone();
    for (auth, body) in &raw {
        let event = sdk_verify(auth, body);
        assert_eq!(event["room"]["name"], "stage", "{event}");
    }
    let joined = sdk_verify(&raw[4].0, &raw[4].1);
    assert_eq!(joined["participant"]["identity"], "hana");
    // LiveKit's Python SDK takes the same webhooks.
    for (auth, body) in &raw {
        let event = python_sdk_verify(auth, body);
        assert_eq!(event["room"]["name"], "stage", "{event}");
    }
    let joined = python_sdk_verify(&raw[4].0, &raw[4].1);
    assert_eq!(joined["participant"]["identity"], "hana");

    // NATS saw the same events in the same order, and the session subject the state changes.
    let mut nats_kinds = Vec::new();
    let mut status = Vec::new();
    while nats_kinds.len() + status.len() < 6 + 2 {
        let Ok(message) = tokio::time::timeout(Duration::from_secs(10), all.next()).await else {
            panic!(
                "NATS messages did not arrive in time: events {nats_kinds:?}, status {status:?}"
            );
        };
        let message = message.expect("subscription open");
        let value: Value = serde_json::from_slice(&message.payload).unwrap();
        if message.subject.as_str() == status_subject {
            status.push(value);
        } else {
            nats_kinds.push(value["event"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(nats_kinds, kinds);
    assert_eq!(status.len(), 2);
    assert_eq!(status[1]["status"], "READY");
    assert_eq!(status[1]["is_live"], false);
    assert_eq!(status[1]["session_id"], session.as_str());
    assert!(server.stop().success());
}
