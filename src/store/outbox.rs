//! The events each kind of change appends, built the same way for both backends.
//!
//! Payloads carry the changed record(s) as the API serializes them, so a consumer of the log
//! (webhooks, NATS, replay) needs no second read to know what happened.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::records::NewEvent;
use super::{
    kinds, EgressRecord, ParticipantRecord, RoomRecord, SessionParticipantRecord, SessionRecord,
    SessionState, TrackEvent,
};

/// The reason recorded when the server reconciles what a crash left behind.
pub(crate) const SERVER_RESTART: &str = "server_restart";
/// The error of an egress that was running when the server went down.
pub(crate) const EGRESS_RESTART_ERROR: &str = "server restarted during egress";
/// The reason recorded when a live node closes what a dead node (no heartbeat within the
/// node timeout) left open.
pub(crate) const NODE_LOST: &str = "node_lost";
/// The error of an egress that was running on a node that died.
pub(crate) const EGRESS_NODE_LOST_ERROR: &str = "the node running the egress was lost";

fn to_json<T: Serialize>(value: &T) -> Value {
    // Invariant: records are plain structs with string keys, strings, numbers and
    // chrono/serde_json values; serializing them to a Value cannot fail.
    serde_json::to_value(value).expect("store records always serialize to JSON")
}

/// room_created / room_started / room_updated / room_finished: `{"room": {...}}`.
pub(crate) fn room(kind: &'static str, room: &RoomRecord, at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        room_id: room.room_id.clone(),
        kind,
        session_id: None,
        payload: json!({ "room": to_json(room) }),
        at,
    }
}

/// participant_joined / participant_left: `{"participant": {...}}` (the connection), plus
/// `"session_participant"` when the join was recorded in a session.
pub(crate) fn participant(
    kind: &'static str,
    connection: &ParticipantRecord,
    session_id: Option<String>,
    session_participant: Option<&SessionParticipantRecord>,
    at: DateTime<Utc>,
) -> NewEvent {
    let mut payload = json!({ "participant": to_json(connection) });
    if let Some(sp) = session_participant {
        payload["session_participant"] = to_json(sp);
    }
    NewEvent {
        room_id: connection.room_id.clone(),
        kind,
        session_id,
        payload,
        at,
    }
}

/// session_state_changed: `{"session": {...}, "from": "READY" | null, "to": "...",
/// "reason": "..." | null}`.
pub(crate) fn session_changed(
    session: &SessionRecord,
    from: Option<SessionState>,
    reason: Option<&str>,
    at: DateTime<Utc>,
) -> NewEvent {
    NewEvent {
        room_id: session.room_id.clone(),
        kind: kinds::SESSION_STATE_CHANGED,
        session_id: Some(session.session_id.clone()),
        payload: json!({
            "session": to_json(session),
            "from": from.map(SessionState::as_str),
            "to": session.state.as_str(),
            "reason": reason,
        }),
        at,
    }
}

/// egress_started / egress_updated / egress_ended: `{"egress": {...}}`.
pub(crate) fn egress(kind: &'static str, egress: &EgressRecord, at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        room_id: egress.room_id.clone(),
        kind,
        session_id: egress.session_id.clone(),
        payload: json!({ "egress": to_json(egress) }),
        at,
    }
}

/// The event kind for an egress that now has `egress.status`.
pub(crate) fn egress_kind(egress: &EgressRecord) -> &'static str {
    if egress.status.is_terminal() {
        kinds::EGRESS_ENDED
    } else {
        kinds::EGRESS_UPDATED
    }
}

/// track_published / track_unpublished: `{"track": {...}}`, in the room's open session.
pub(crate) fn track(track: &TrackEvent, session_id: Option<String>) -> NewEvent {
    NewEvent {
        room_id: track.room_id.clone(),
        kind: if track.published {
            kinds::TRACK_PUBLISHED
        } else {
            kinds::TRACK_UNPUBLISHED
        },
        session_id,
        payload: json!({ "track": to_json(track) }),
        at: track.at,
    }
}
