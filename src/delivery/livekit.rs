//! Webhook bodies: our [`EventRecord`]s as LiveKit's protojson `WebhookEvent`.
//!
//! The LiveKit part is built with livekit-protocol's prost types and serialized by their
//! pbjson impls, so field names (camelCase), enum names (`ACTIVE`, `EGRESS_COMPLETE`), int64
//! as strings and omitted defaults are exactly what LiveKit's receivers parse. Switchboard's
//! own fields (`roomId`, `seq`, `sessionId`, `session`) are added at the top level, where
//! `livekit-server-sdk`'s `WebhookReceiver` ignores them (it parses with
//! `ignoreUnknownFields`).
//!
//! Payloads are read leniently (missing fields stay empty) rather than deserialized into the
//! store's record types: a webhook with a field missing is better than a sink stuck on an
//! event it cannot encode, since a failed event is retried forever.

use chrono::{DateTime, Utc};
use livekit_protocol as lk;
use serde_json::{json, Map, Value};

use crate::store::{kinds, EventRecord};

use super::DeliveryError;

/// The webhook body of an event: UTF-8 JSON, whose SHA-256 goes into the signature.
pub(super) fn webhook_body(event: &EventRecord) -> Result<Vec<u8>, DeliveryError> {
    let encode = |err: serde_json::Error| DeliveryError::Encode {
        event_id: event.id,
        reason: err.to_string(),
    };
    let mut body = match serde_json::to_value(webhook_event(event)).map_err(encode)? {
        Value::Object(map) => map,
        // pbjson serializes a message as a JSON object; anything else is a bug there.
        other => {
            return Err(DeliveryError::Encode {
                event_id: event.id,
                reason: format!("WebhookEvent serialized as {other}"),
            })
        }
    };
    extra_fields(event, &mut body);
    serde_json::to_vec(&body).map_err(encode)
}

/// The LiveKit part of the body.
fn webhook_event(event: &EventRecord) -> lk::WebhookEvent {
    let p = &event.payload;
    let mut out = lk::WebhookEvent {
        // Our extra kinds (room_created, room_updated, session_state_changed) pass through
        // under their own names; the SDK keeps `event` as a plain string.
        event: event.kind.clone(),
        room: Some(room(event)),
        id: format!("EV_{}", event.id),
        created_at: event.created_at.timestamp(),
        ..Default::default()
    };
    match event.kind.as_str() {
        kinds::PARTICIPANT_JOINED | kinds::PARTICIPANT_LEFT => {
            let left = event.kind == kinds::PARTICIPANT_LEFT;
            out.participant = p.get("participant").map(|v| participant(v, left));
        }
        kinds::TRACK_PUBLISHED | kinds::TRACK_UNPUBLISHED => {
            if let Some(track) = p.get("track") {
                out.participant = Some(lk::ParticipantInfo {
                    sid: text(track, "participant_sid"),
                    identity: text(track, "identity"),
                    state: lk::participant_info::State::Active as i32,
                    ..Default::default()
                });
                out.track = Some(track_info(track));
            }
        }
        kinds::EGRESS_STARTED | kinds::EGRESS_UPDATED | kinds::EGRESS_ENDED => {
            out.egress_info = p.get("egress").map(|v| egress(event, v));
        }
        _ => {}
    }
    out
}

/// `room` is in every webhook (receivers key on `room.name`); the full record only where the
/// payload carries one (room events). Switchboard's room id is LiveKit's room name.
fn room(event: &EventRecord) -> lk::Room {
    let mut room = lk::Room {
        name: event.room_id.clone(),
        ..Default::default()
    };
    if let Some(r) = event.payload.get("room") {
        room.sid = text(r, "sid");
        room.metadata = text(r, "metadata");
        room.empty_timeout = number(r, "empty_timeout_secs");
        room.max_participants = number(r, "max_participants");
        if let Some(created) = time(r, "created_at") {
            room.creation_time = created.timestamp();
            room.creation_time_ms = created.timestamp_millis();
        }
    }
    room
}

fn participant(v: &Value, left: bool) -> lk::ParticipantInfo {
    use lk::participant_info::State;
    let state = if left {
        State::Disconnected
    } else {
        State::Active
    };
    let mut info = lk::ParticipantInfo {
        sid: text(v, "sid"),
        identity: text(v, "identity"),
        name: text(v, "name"),
        metadata: text(v, "metadata"),
        state: state as i32,
        ..Default::default()
    };
    if let Some(joined) = time(v, "joined_at") {
        info.joined_at = joined.timestamp();
        info.joined_at_ms = joined.timestamp_millis();
    }
    if left {
        // Our leave reasons are LiveKit's DisconnectReason names, except our own: the media
        // timeouts are LiveKit's CONNECTION_TIMEOUT, a lost lease its MIGRATION; others
        // ("server_restart") stay UNKNOWN_REASON here.
        info.disconnect_reason = v
            .get("leave_reason")
            .and_then(Value::as_str)
            .and_then(|name| match name {
                "media_connect_timeout" | "media_departure_timeout" => {
                    Some(lk::DisconnectReason::ConnectionTimeout)
                }
                // The room moved to another node, as the client was told.
                "room_lease_lost" => Some(lk::DisconnectReason::Migration),
                other => lk::DisconnectReason::from_str_name(other),
            })
            .map_or(0, |reason| reason as i32);
    }
    info
}

fn track_info(v: &Value) -> lk::TrackInfo {
    let kind = match v.get("kind").and_then(Value::as_str) {
        Some("video") => lk::TrackType::Video,
        Some("data") => lk::TrackType::Data,
        _ => lk::TrackType::Audio,
    };
    // Sources are stored in whatever case the client sent ("camera", "MICROPHONE"); LiveKit
    // names are upper case.
    let source = v
        .get("source")
        .and_then(Value::as_str)
        .and_then(|s| lk::TrackSource::from_str_name(&s.to_ascii_uppercase()))
        .unwrap_or(lk::TrackSource::Unknown);
    lk::TrackInfo {
        sid: text(v, "track_sid"),
        r#type: kind as i32,
        source: source as i32,
        ..Default::default()
    }
}

fn egress(event: &EventRecord, v: &Value) -> lk::EgressInfo {
    use lk::EgressStatus as S;
    let status = match v.get("status").and_then(Value::as_str) {
        Some("active") => S::EgressActive,
        Some("ending") => S::EgressEnding,
        Some("complete") => S::EgressComplete,
        Some("failed") => S::EgressFailed,
        _ => S::EgressStarting,
    };
    // LiveKit's egress times are unix nanoseconds.
    let nanos = |key| time(v, key).map_or(0, |t| t.timestamp_millis() * 1_000_000);
    lk::EgressInfo {
        egress_id: text(v, "egress_id"),
        // A Switchboard room id is both the room's id and its LiveKit name.
        room_id: event.room_id.clone(),
        room_name: event.room_id.clone(),
        status: status as i32,
        started_at: nanos("started_at"),
        ended_at: nanos("ended_at"),
        updated_at: nanos("updated_at"),
        error: text(v, "error"),
        ..Default::default()
    }
}

/// Switchboard's fields, which LiveKit's receivers ignore and our users read.
fn extra_fields(event: &EventRecord, body: &mut Map<String, Value>) {
    body.insert("roomId".to_owned(), json!(event.room_id));
    body.insert("seq".to_owned(), json!(event.seq));
    if let Some(session_id) = &event.session_id {
        body.insert("sessionId".to_owned(), json!(session_id));
    }
    if event.kind == kinds::SESSION_STATE_CHANGED {
        let p = &event.payload;
        let session = p.get("session").unwrap_or(&Value::Null);
        let session_id = session
            .get("session_id")
            .cloned()
            .or_else(|| event.session_id.clone().map(Value::String))
            .unwrap_or(Value::Null);
        body.insert(
            "session".to_owned(),
            json!({
                "sessionId": session_id,
                "roomId": event.room_id,
                "state": session.get("state").or_else(|| p.get("to")),
                "from": p.get("from"),
                "to": p.get("to"),
                "reason": p.get("reason"),
            }),
        );
    }
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn number(v: &Value, key: &str) -> u32 {
    v.get(key)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// Record timestamps are serialized by chrono as RFC 3339.
fn time(v: &Value, key: &str) -> Option<DateTime<Utc>> {
    v.get(key)?.as_str()?.parse().ok()
}
