//! Tests of the pure parts: backoff, the hole-in-ids rule and the message shapes.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::delivery::{livekit, nats, webhook, GapWait, RetryPolicy, SigningKey};
use crate::store::EventRecord;

fn event(id: i64, kind: &str, payload: Value) -> EventRecord {
    EventRecord {
        id,
        room_id: "ro_demo".to_owned(),
        seq: id + 10,
        kind: kind.to_owned(),
        session_id: None,
        payload,
        created_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
    }
}

#[test]
fn retry_delay_doubles_up_to_the_cap() {
    let retry = RetryPolicy::default();
    let delays: Vec<u64> = (1..=10)
        .map(|n| retry.delay(n).as_millis() as u64)
        .collect();
    assert_eq!(
        delays,
        [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
    );
    assert_eq!(retry.delay(u32::MAX), Duration::from_secs(30));
}

#[test]
fn gap_wait_delivers_contiguous_events_and_waits_out_a_hole() {
    let grace = Duration::from_secs(5);
    let start = Instant::now();
    let mut gap = GapWait::default();
    let batch = [
        event(1, "room_started", json!({})),
        event(2, "room_updated", json!({})),
    ];
    assert_eq!(gap.ready(0, &batch, start, grace), 2);
    assert_eq!(gap.ready(2, &[], start, grace), 0);

    // 4 is visible before 3: wait, unless 3 never shows up.
    let batch = [
        event(4, "room_updated", json!({})),
        event(5, "room_updated", json!({})),
    ];
    assert_eq!(gap.ready(2, &batch, start, grace), 0);
    assert_eq!(
        gap.ready(2, &batch, start + Duration::from_secs(4), grace),
        0
    );
    assert_eq!(gap.ready(2, &batch, start + grace, grace), 1);
    assert_eq!(gap.ready(4, &batch[1..], start + grace, grace), 1);

    // A hole that fills in time is no hole.
    let later = start + Duration::from_secs(60);
    let batch = [event(7, "room_updated", json!({}))];
    assert_eq!(gap.ready(5, &batch, later, grace), 0);
    let batch = [
        event(6, "room_updated", json!({})),
        event(7, "room_updated", json!({})),
    ];
    assert_eq!(gap.ready(5, &batch, later, grace), 2);
}

#[test]
fn webhook_body_is_livekit_protojson_with_our_fields() {
    let participant = event(
        3,
        "participant_left",
        json!({"participant": {
            "sid": "PA_1", "identity": "alice", "name": "Alice", "metadata": "m",
            "joined_at": "2023-11-14T22:13:20.250Z", "leave_reason": "DUPLICATE_IDENTITY"
        }}),
    );
    let body: Value =
        serde_json::from_slice(&livekit::webhook_body(&participant).unwrap()).unwrap();
    assert_eq!(
        body,
        json!({
            "event": "participant_left",
            "id": "EV_3",
            "createdAt": "1700000000",
            "room": {"name": "ro_demo"},
            "participant": {
                "sid": "PA_1", "identity": "alice", "name": "Alice", "metadata": "m",
                "state": "DISCONNECTED", "joinedAt": "1700000000", "joinedAtMs": "1700000000250",
                "disconnectReason": "DUPLICATE_IDENTITY"
            },
            "roomId": "ro_demo",
            "seq": 13
        })
    );

    // Our own media timeouts are LiveKit's CONNECTION_TIMEOUT in a webhook.
    for ours in ["media_connect_timeout", "media_departure_timeout"] {
        let timed_out = event(
            3,
            "participant_left",
            json!({"participant": {"sid": "PA_2", "identity": "ghost", "leave_reason": ours}}),
        );
        let body: Value =
            serde_json::from_slice(&livekit::webhook_body(&timed_out).unwrap()).unwrap();
        assert_eq!(
            body["participant"]["disconnectReason"], "CONNECTION_TIMEOUT",
            "{ours}"
        );
    }

    // A room whose lease another node took: the client was told MIGRATION, so is the hook.
    let moved = event(
        3,
        "participant_left",
        json!({"participant": {"sid": "PA_3", "identity": "mover", "leave_reason": "room_lease_lost"}}),
    );
    let body: Value = serde_json::from_slice(&livekit::webhook_body(&moved).unwrap()).unwrap();
    assert_eq!(body["participant"]["disconnectReason"], "MIGRATION");

    let mut session = event(
        4,
        "session_state_changed",
        json!({"session": {"session_id": "se_1", "state": "LIVE", "owner_identity": "host"},
               "from": "PUBLISHING", "to": "LIVE", "reason": "egress active"}),
    );
    session.session_id = Some("se_1".to_owned());
    let body: Value = serde_json::from_slice(&livekit::webhook_body(&session).unwrap()).unwrap();
    assert_eq!(body["event"], "session_state_changed");
    assert_eq!(body["sessionId"], "se_1");
    assert_eq!(
        body["session"],
        json!({"sessionId": "se_1", "roomId": "ro_demo", "state": "LIVE",
               "from": "PUBLISHING", "to": "LIVE", "reason": "egress active"})
    );

    let track = event(
        5,
        "track_published",
        json!({"track": {"participant_sid": "PA_1", "identity": "alice", "track_sid": "TR_1",
                         "kind": "video", "source": "screen_share", "published": true}}),
    );
    let body: Value = serde_json::from_slice(&livekit::webhook_body(&track).unwrap()).unwrap();
    assert_eq!(
        body["track"],
        json!({"sid": "TR_1", "type": "VIDEO", "source": "SCREEN_SHARE"})
    );
    assert_eq!(
        body["participant"],
        json!({"sid": "PA_1", "identity": "alice", "state": "ACTIVE"})
    );

    let egress = event(
        6,
        "egress_ended",
        json!({"egress": {"egress_id": "eg_1", "status": "failed", "error": "boom",
                          "started_at": "2023-11-14T22:13:20Z"}}),
    );
    let body: Value = serde_json::from_slice(&livekit::webhook_body(&egress).unwrap()).unwrap();
    assert_eq!(
        body["egressInfo"],
        json!({"egressId": "eg_1", "roomId": "ro_demo", "roomName": "ro_demo",
               "status": "EGRESS_FAILED", "startedAt": "1700000000000000000", "error": "boom"})
    );
}

#[test]
fn webhook_signature_has_livekit_claims() {
    let key = SigningKey {
        api_key: "k".to_owned(),
        api_secret: "s".repeat(32),
    };
    let body = br#"{"event":"room_started"}"#;
    let token = webhook::sign(&key, body).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["k"]);
    let claims: Value = jsonwebtoken::decode(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(key.api_secret.as_bytes()),
        &validation,
    )
    .expect("token verifies")
    .claims;
    // sha256 of the body, base64 standard with padding (computed independently).
    assert_eq!(
        claims["sha256"],
        "w9NV0uLHjSON8P7eonnkKXDHY4ICORefbHDCviKIgX8="
    );
    let (nbf, exp) = (
        claims["nbf"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - nbf, 300);
    assert!((nbf - Utc::now().timestamp()).abs() < 60);
}

#[test]
fn nats_messages_have_the_record_and_the_stream_status_shape() {
    let mut changed = event(
        7,
        "session_state_changed",
        json!({"session": {"session_id": "se_1", "state": "LIVE", "owner_identity": "host"},
               "from": "PUBLISHING", "to": "LIVE", "reason": "egress active"}),
    );
    changed.session_id = Some("se_1".to_owned());
    let message = nats::event_message(&changed).unwrap();
    assert_eq!(message["event"], "session_state_changed");
    assert_eq!(message["kind"], "session_state_changed");
    assert_eq!(message["id"], 7);
    assert_eq!(message["seq"], 17);
    assert_eq!(message["payload"]["to"], "LIVE");
    assert_eq!(
        nats::stream_status(&changed),
        Some(json!({
            "session_id": "se_1", "room_id": "ro_demo", "owner_identity": "host",
            "status": "LIVE", "from": "PUBLISHING", "is_live": true, "seq": 17,
            "at": "2023-11-14T22:13:20Z"
        }))
    );
    assert_eq!(
        nats::stream_status(&event(8, "room_started", json!({}))),
        None
    );
    // Stable per event, and distinct per message, for JetStream's duplicate window.
    assert_eq!(
        nats::message_ids(&changed),
        ("EV_7".to_owned(), "EV_7.status".to_owned())
    );
}
