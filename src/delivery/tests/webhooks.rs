//! Webhook delivery against a real HTTP receiver, events written through the real store,
//! signatures checked by the real livekit-server-sdk.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::Value;

use super::support::{
    config, require_livekit_sdk, room_id, room_story, verify_with_sdk, Receiver, Running, TestStore,
};
use crate::delivery::DeliveryConfig;
use crate::store::{RoomSpec, Store};

fn webhook_config(receiver: &Receiver) -> DeliveryConfig {
    DeliveryConfig {
        webhook_urls: vec![receiver.url.clone()],
        ..config()
    }
}

/// `EV_<id>` of a webhook body.
fn event_id(body: &Value) -> i64 {
    body["id"]
        .as_str()
        .and_then(|id| id.strip_prefix("EV_"))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("webhook without an EV_ id: {body}"))
}

/// One more event (room_created of a new room) through a real store method.
async fn another_room(store: &dyn Store) {
    store
        .create_room(&RoomSpec {
            room_id: room_id("ro_more"),
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_arrive_in_order_and_verify_with_the_livekit_sdk() {
    require_livekit_sdk();
    let db = TestStore::new().await;
    let mut receiver = Receiver::start(&[]).await;
    let running = Running::start(&db.store, webhook_config(&receiver));

    // Two rooms written concurrently, so their events interleave in the log.
    let (room_a, room_b) = (room_id("ro_a"), room_id("ro_b"));
    tokio::join!(
        room_story(db.store.as_ref(), &room_a),
        room_story(db.store.as_ref(), &room_b)
    );
    running.wake.notify_waiters();
    let log = db.all_events().await;
    assert!(log.len() >= 24, "the stories wrote {} events", log.len());

    let received = receiver.take(log.len()).await;
    running.stop().await;

    let bodies: Vec<Value> = received.iter().map(|r| r.json()).collect();
    let ids: Vec<i64> = bodies.iter().map(event_id).collect();
    let log_ids: Vec<i64> = log.iter().map(|e| e.id).collect();
    assert_eq!(ids, log_ids, "every event once, in log order");
    let mut last_seq: BTreeMap<String, i64> = BTreeMap::new();
    for (body, event) in bodies.iter().zip(&log) {
        let room = body["roomId"].as_str().expect("roomId").to_owned();
        assert_eq!(room, event.room_id);
        assert_eq!(body["room"]["name"], event.room_id.as_str());
        let seq = body["seq"].as_i64().expect("seq");
        let previous = last_seq.insert(room, seq).unwrap_or(0);
        assert_eq!(seq, previous + 1, "per-room seq without gaps: {body}");
        assert_eq!(body["event"], event.kind.as_str());
        assert_eq!(
            body["createdAt"],
            event.created_at.timestamp().to_string().as_str()
        );
    }
    for request in &received {
        let content_type = request.headers.get("content-type").map(|v| v.to_str().ok());
        assert_eq!(content_type, Some(Some("application/webhook+json")));
        assert!(!request.authorization().starts_with("Bearer"));
    }

    // Every webhook passes LiveKit's own verification and parses as a WebhookEvent.
    let webhooks: Vec<(&str, &[u8])> = received
        .iter()
        .map(|r| (r.authorization(), r.body.as_ref()))
        .collect();
    let parsed: Vec<Value> = verify_with_sdk(&webhooks)
        .into_iter()
        .map(|result| result.unwrap_or_else(|reason| panic!("SDK rejected a webhook: {reason}")))
        .collect();
    for (sdk, ours) in parsed.iter().zip(&bodies) {
        assert_eq!(sdk["event"], ours["event"]);
        assert_eq!(sdk["id"], ours["id"]);
        // int64 goes as a string both ways (protojson); the SDK parsed ours.
        assert_eq!(sdk["createdAt"], ours["createdAt"]);
        assert_eq!(sdk["room"]["name"], ours["room"]["name"]);
    }
    let by_event = |name: &str| {
        parsed
            .iter()
            .find(|e| e["event"] == name && e["room"]["name"] == room_a.as_str())
            .unwrap_or_else(|| panic!("no {name} webhook for {room_a}"))
    };
    let joined = by_event("participant_joined");
    assert_eq!(joined["participant"]["identity"], "host");
    assert_eq!(joined["participant"]["state"], "ACTIVE");
    let left = by_event("participant_left");
    assert_eq!(left["participant"]["state"], "DISCONNECTED");
    assert_eq!(left["participant"]["disconnectReason"], "CLIENT_INITIATED");
    let track = by_event("track_published");
    assert_eq!(track["track"]["type"], "VIDEO");
    assert_eq!(track["track"]["source"], "CAMERA");
    assert_eq!(
        by_event("egress_ended")["egressInfo"]["status"],
        "EGRESS_COMPLETE"
    );
    let started = by_event("room_started");
    assert_eq!(started["room"]["emptyTimeout"], 60);
    assert_eq!(started["room"]["maxParticipants"], 10);
    assert!(started["room"]["sid"]
        .as_str()
        .is_some_and(|sid| sid.starts_with("RM_")));

    // Our session fields ride along in the raw body.
    let live = bodies
        .iter()
        .find(|b| b["event"] == "session_state_changed" && b["session"]["to"] == "LIVE")
        .expect("a session went live");
    assert_eq!(live["session"]["from"], "PUBLISHING");
    assert_eq!(live["session"]["state"], "LIVE");
    assert!(live["session"]["sessionId"]
        .as_str()
        .is_some_and(|s| s.starts_with("se_")));

    // The verification is real: a body changed after signing is rejected.
    let (auth, body) = webhooks[0];
    let mut tampered = body.to_vec();
    let position = tampered
        .windows(4)
        .position(|w| w == b"EV_1")
        .expect("body holds its id");
    tampered[position + 3] = b'9';
    let result = verify_with_sdk(&[(auth, &tampered)]).remove(0);
    let reason = result.expect_err("a tampered body must fail verification");
    assert!(reason.contains("sha256"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_the_event_again_and_later_events_in_order() {
    let db = TestStore::new().await;
    let mut receiver = Receiver::start(&[
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::INTERNAL_SERVER_ERROR,
    ])
    .await;
    let running = Running::start(&db.store, webhook_config(&receiver));

    let room = room_id("ro_retry");
    room_story(db.store.as_ref(), &room).await;
    running.wake.notify_waiters();
    let log = db.all_events().await;

    let received = receiver.take(log.len() + 2).await;
    running.stop().await;
    let ids: Vec<i64> = received.iter().map(|r| event_id(&r.json())).collect();
    let first = log[0].id;
    let mut expected = vec![first, first];
    expected.extend(log.iter().map(|e| e.id));
    assert_eq!(
        ids, expected,
        "the first event three times, then the rest in order"
    );
    // Each attempt is signed anew, and all of them verify.
    let webhooks: Vec<(&str, &[u8])> = received[..3]
        .iter()
        .map(|r| (r.authorization(), r.body.as_ref()))
        .collect();
    for result in verify_with_sdk(&webhooks) {
        result.unwrap_or_else(|reason| panic!("SDK rejected a retried webhook: {reason}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sink_resumes_after_its_cursor() {
    let db = TestStore::new().await;
    let room = room_id("ro_restart");
    let mut receiver = Receiver::start(&[]).await;
    let sink = format!("webhook:{}", receiver.url);
    let first = Running::start(&db.store, webhook_config(&receiver));

    room_story(db.store.as_ref(), &room).await;
    first.wake.notify_waiters();
    let delivered = db.all_events().await;
    let received = receiver.take(delivered.len()).await;
    let last_delivered = delivered.last().expect("events").id;
    assert_eq!(
        event_id(&received.last().expect("webhooks").json()),
        last_delivered
    );

    // The next event fails for as long as this run lasts. Its first attempt comes after the
    // cursor of the previous one was stored (the loop stores, then reads on), so stopping
    // now leaves the cursor exactly at `last_delivered`.
    receiver.answer_always(StatusCode::SERVICE_UNAVAILABLE);
    another_room(db.store.as_ref()).await;
    first.wake.notify_waiters();
    let failing = receiver.next().await;
    assert_eq!(event_id(&failing.json()), last_delivered + 1);
    first.stop().await;
    assert_eq!(
        db.store.delivery_cursor(&sink).await.unwrap(),
        last_delivered
    );

    // A new sink over the same store: the undelivered event first, nothing delivered before
    // it again, then new events.
    receiver.answer_always(StatusCode::OK);
    let second = Running::start(&db.store, webhook_config(&receiver));
    let resent = receiver.next().await;
    assert_eq!(event_id(&resent.json()), last_delivered + 1);
    another_room(db.store.as_ref()).await;
    second.wake.notify_waiters();
    let next = receiver.next().await.json();
    assert_eq!(event_id(&next), last_delivered + 2);
    assert_eq!(next["event"], "room_created");
    second.stop().await;
    assert_eq!(
        db.store.delivery_cursor(&sink).await.unwrap(),
        last_delivered + 2
    );
}
