//! Builders and assertions shared by the conformance tests.

use chrono::{DateTime, Utc};

use crate::store::{
    EgressStatus, EgressUpdate, EventRecord, NewEgress, NewRoom, NewSession, ParticipantJoin,
    ParticipantLeave, ParticipantRecord, ParticipantSummary, RoomRecord, RoomSpec, SessionState,
    Store, StoreError,
};

/// A fixed instant plus `secs`, with millisecond precision (what the stores keep).
pub fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + secs * 1000).expect("in range")
}

pub fn new_room(room_id: &str, sid: &str, at: DateTime<Utc>) -> NewRoom {
    NewRoom {
        room_id: room_id.to_owned(),
        sid: sid.to_owned(),
        name: None,
        metadata: None,
        empty_timeout_secs: 300,
        max_participants: 0,
        started_at: at,
        node_id: None,
    }
}

pub fn join(room_id: &str, sid: &str, identity: &str, at: DateTime<Utc>) -> ParticipantJoin {
    ParticipantJoin {
        room_id: room_id.to_owned(),
        sid: sid.to_owned(),
        identity: identity.to_owned(),
        name: format!("{identity} (display)"),
        role: None,
        metadata: None,
        joined_at: at,
        node_id: None,
        session_id: None,
    }
}

pub fn leave(at: DateTime<Utc>, reason: &str) -> ParticipantLeave {
    ParticipantLeave {
        left_at: at,
        reason: reason.to_owned(),
        summary: ParticipantSummary {
            bytes_in: 1_234_567,
            bytes_out: 7_654_321,
            packets_in: 1_000,
            packets_out: 2_000,
            packets_lost: 7,
            rtt_ms: Some(42),
        },
    }
}

pub async fn start(store: &dyn Store, room_id: &str) -> RoomRecord {
    store
        .room_started(&new_room(room_id, &format!("RM_{room_id}"), t(0)))
        .await
        .expect("room_started")
}

pub fn sids(records: &[ParticipantRecord]) -> Vec<&str> {
    records.iter().map(|p| p.sid.as_str()).collect()
}

pub fn room_ids(records: &[RoomRecord]) -> Vec<&str> {
    records.iter().map(|r| r.room_id.as_str()).collect()
}

pub fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, mentions: &str) {
    match result {
        Err(e @ StoreError::NotFound { .. }) => assert!(
            e.to_string().contains(mentions),
            "NotFound message `{e}` should mention `{mentions}`"
        ),
        other => panic!("expected NotFound for {mentions}, got {other:?}"),
    }
}

pub fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, mentions: &str) {
    match result {
        Err(e @ StoreError::Conflict { .. }) => assert!(
            e.to_string().contains(mentions),
            "Conflict message `{e}` should mention `{mentions}`"
        ),
        other => panic!("expected Conflict mentioning {mentions}, got {other:?}"),
    }
}

pub fn assert_state_conflict<T: std::fmt::Debug>(
    result: Result<T, StoreError>,
    session_id: &str,
    expected: SessionState,
) {
    match result {
        Err(StoreError::StateConflict {
            session_id: got,
            current,
        }) => {
            assert_eq!(got, session_id);
            assert_eq!(current, expected, "StateConflict reports the current state");
        }
        other => panic!("expected StateConflict({expected}), got {other:?}"),
    }
}

/// A room as the API creates it (no sid yet).
pub fn room_spec(room_id: &str, at: DateTime<Utc>) -> RoomSpec {
    RoomSpec {
        room_id: room_id.to_owned(),
        name: Some(format!("{room_id} room")),
        metadata: None,
        empty_timeout_secs: 300,
        max_participants: 0,
        channel_id: Some("ch_01TEST".to_owned()),
        guest_access: false,
        at,
    }
}

pub fn new_session(
    session_id: &str,
    room_id: &str,
    state: SessionState,
    at: DateTime<Utc>,
) -> NewSession {
    NewSession {
        session_id: session_id.to_owned(),
        room_id: room_id.to_owned(),
        channel_id: None,
        owner_identity: Some("host".to_owned()),
        state,
        at,
    }
}

/// A join recorded in a session.
pub fn join_in(
    room_id: &str,
    sid: &str,
    identity: &str,
    session_id: &str,
    at: DateTime<Utc>,
) -> ParticipantJoin {
    ParticipantJoin {
        session_id: Some(session_id.to_owned()),
        ..join(room_id, sid, identity, at)
    }
}

pub fn summary(bytes: u64, rtt_ms: Option<u32>) -> ParticipantSummary {
    ParticipantSummary {
        bytes_in: bytes,
        bytes_out: 2 * bytes,
        packets_in: bytes / 10,
        packets_out: bytes / 5,
        packets_lost: 1,
        rtt_ms,
    }
}

pub fn leave_with(
    at: DateTime<Utc>,
    reason: &str,
    summary: ParticipantSummary,
) -> ParticipantLeave {
    ParticipantLeave {
        left_at: at,
        reason: reason.to_owned(),
        summary,
    }
}

pub fn new_egress(
    egress_id: &str,
    room_id: &str,
    session_id: Option<&str>,
    at: DateTime<Utc>,
) -> NewEgress {
    NewEgress {
        egress_id: egress_id.to_owned(),
        session_id: session_id.map(str::to_owned),
        room_id: room_id.to_owned(),
        kind: "room".to_owned(),
        output: serde_json::json!({"rtmp": "rtmp://example.test/live/key"}),
        at,
        node_id: None,
    }
}

pub fn egress_update(status: EgressStatus, at: DateTime<Utc>) -> EgressUpdate {
    EgressUpdate {
        status,
        error: None,
        output: None,
        at,
    }
}

/// Every event of a room, in seq order.
pub async fn events(store: &dyn Store, room_id: &str) -> Vec<EventRecord> {
    store
        .list_events(room_id, 0, 1000)
        .await
        .expect("list_events")
}

/// Every event of every room, in id order.
pub async fn all_events(store: &dyn Store) -> Vec<EventRecord> {
    store.events_after(0, 100_000).await.expect("events_after")
}

pub fn kinds_of(events: &[EventRecord]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

/// Seqs are 1..=n without gaps and ids strictly increase with them.
pub fn assert_gapless(events: &[EventRecord]) {
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(seqs, expected, "per-room seqs are 1..=n");
    assert!(
        events.windows(2).all(|w| w[0].id < w[1].id),
        "ids grow with seq: {events:?}"
    );
}

/// A created room with an open session in `state` (walked there through the states).
pub async fn room_with_session(
    store: &dyn Store,
    room_id: &str,
    session_id: &str,
    state: SessionState,
) {
    store
        .create_room(&room_spec(room_id, t(0)))
        .await
        .expect("create_room");
    store
        .create_session(&new_session(session_id, room_id, SessionState::Idle, t(1)))
        .await
        .expect("create_session");
    let path = [
        SessionState::Idle,
        SessionState::Ready,
        SessionState::Publishing,
        SessionState::Live,
        SessionState::Ending,
    ];
    let target = path
        .iter()
        .position(|s| *s == state)
        .expect("an open state on the happy path");
    for (i, pair) in path[..=target].windows(2).enumerate() {
        store
            .transition_session(session_id, pair[0], pair[1], "test", t(2 + i as i64))
            .await
            .expect("walk the session");
    }
}
