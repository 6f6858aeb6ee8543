//! The behaviour every store must have. Each function gets a fresh, empty store; the macro in
//! `mod.rs` runs it against SQLite and PostgreSQL.

use std::sync::Arc;

use chrono::Duration;

use super::fixtures::{assert_not_found, join, leave, new_room, room_ids, sids, start, t};
use crate::store::{ParticipantRecord, ParticipantRole, RoomRecord, RoomStatus, Store, StoreError};

pub async fn health_answers(store: Arc<dyn Store>) {
    store.health().await.expect("health");
}

pub async fn room_started_inserts_an_active_room(store: Arc<dyn Store>) {
    let mut room = new_room("lobby", "RM_one", t(5));
    room.name = Some("The Lobby".to_owned());
    room.metadata = Some(r#"{"topic":"hello"}"#.to_owned());
    room.max_participants = 10;
    let record = store.room_started(&room).await.expect("room_started");
    let expected = RoomRecord {
        room_id: "lobby".to_owned(),
        sid: Some("RM_one".to_owned()),
        name: Some("The Lobby".to_owned()),
        metadata: Some(r#"{"topic":"hello"}"#.to_owned()),
        status: RoomStatus::Active,
        created_at: t(5),
        last_active_at: t(5),
        closed_at: None,
        empty_timeout_secs: 300,
        max_participants: 10,
        channel_id: None,
        guest_access: false,
    };
    assert_eq!(record, expected);
    assert_eq!(store.get_room("lobby").await.expect("get_room"), expected);
}

pub async fn room_started_is_idempotent(store: Arc<dyn Store>) {
    let room = new_room("lobby", "RM_one", t(0));
    let first = store.room_started(&room).await.expect("first start");
    let second = store.room_started(&room).await.expect("second start");
    assert_eq!(first, second);
    let rooms = store.list_rooms(None).await.expect("list_rooms");
    assert_eq!(rooms, vec![first]);
}

pub async fn room_started_keeps_name_and_metadata_when_absent(store: Arc<dyn Store>) {
    let mut room = new_room("lobby", "RM_one", t(0));
    room.name = Some("Lobby".to_owned());
    room.metadata = Some("m1".to_owned());
    store.room_started(&room).await.expect("start");

    // The SFU restarts rooms without knowing name or metadata: they must survive.
    let again = store
        .room_started(&new_room("lobby", "RM_one", t(1)))
        .await
        .expect("restart");
    assert_eq!(again.name.as_deref(), Some("Lobby"));
    assert_eq!(again.metadata.as_deref(), Some("m1"));

    let mut update = new_room("lobby", "RM_one", t(2));
    update.metadata = Some("m2".to_owned());
    update.empty_timeout_secs = 60;
    update.max_participants = 4;
    let updated = store.room_started(&update).await.expect("update");
    assert_eq!(updated.metadata.as_deref(), Some("m2"));
    assert_eq!(updated.name.as_deref(), Some("Lobby"));
    assert_eq!(updated.empty_timeout_secs, 60);
    assert_eq!(updated.max_participants, 4);
}

pub async fn room_status_transitions(store: Arc<dyn Store>) {
    store
        .room_started(&new_room("lobby", "RM_one", t(0)))
        .await
        .expect("start");
    store
        .room_finished("lobby", t(10), "ROOM_CLOSED")
        .await
        .expect("finish");

    let closed = store.get_room("lobby").await.expect("get closed");
    assert_eq!(closed.status, RoomStatus::Closed);
    assert_eq!(closed.closed_at, Some(t(10)));
    assert_eq!(closed.last_active_at, t(10));
    assert_eq!(closed.sid.as_deref(), Some("RM_one"));

    // A closed room that gets a new first join becomes active again as a new incarnation.
    let reopened = store
        .room_started(&new_room("lobby", "RM_two", t(20)))
        .await
        .expect("restart");
    assert_eq!(reopened.status, RoomStatus::Active);
    assert_eq!(reopened.closed_at, None);
    assert_eq!(reopened.sid.as_deref(), Some("RM_two"));
    assert_eq!(
        reopened.created_at,
        t(0),
        "created_at is set only on first insert"
    );
    assert_eq!(reopened.last_active_at, t(20));
    assert_eq!(store.get_room("lobby").await.expect("get"), reopened);
}

pub async fn room_finished_twice_keeps_the_first_close(store: Arc<dyn Store>) {
    start(&*store, "lobby").await;
    store
        .room_finished("lobby", t(10), "ROOM_CLOSED")
        .await
        .expect("finish");
    store
        .room_finished("lobby", t(30), "ROOM_CLOSED")
        .await
        .expect("finish again");
    let room = store.get_room("lobby").await.expect("get");
    assert_eq!(room.status, RoomStatus::Closed);
    assert_eq!(room.closed_at, Some(t(10)));
}

pub async fn room_finished_of_unknown_room_is_not_found(store: Arc<dyn Store>) {
    assert_not_found(
        store.room_finished("nowhere", t(1), "ROOM_CLOSED").await,
        "room `nowhere`",
    );
}

pub async fn get_room_of_unknown_room_is_not_found(store: Arc<dyn Store>) {
    assert_not_found(store.get_room("nowhere").await, "room `nowhere`");
}

pub async fn list_rooms_filters_by_status_and_orders_by_creation(store: Arc<dyn Store>) {
    // Inserted out of creation order, with a tie broken by room_id (byte order: B < a).
    for (room_id, at) in [("c", t(3)), ("a", t(1)), ("b", t(2)), ("B", t(1))] {
        store
            .room_started(&new_room(room_id, &format!("RM_{room_id}"), at))
            .await
            .expect("start");
    }
    store
        .room_finished("b", t(5), "ROOM_CLOSED")
        .await
        .expect("finish b");

    let all = store.list_rooms(None).await.expect("all");
    assert_eq!(room_ids(&all), ["B", "a", "b", "c"]);
    let active = store
        .list_rooms(Some(RoomStatus::Active))
        .await
        .expect("active");
    assert_eq!(room_ids(&active), ["B", "a", "c"]);
    let closed = store
        .list_rooms(Some(RoomStatus::Closed))
        .await
        .expect("closed");
    assert_eq!(room_ids(&closed), ["b"]);
}

pub async fn participant_join_and_leave_round_trip(store: Arc<dyn Store>) {
    start(&*store, "lobby").await;
    let mut p = join("lobby", "PA_1", "alice", t(1));
    p.role = Some(ParticipantRole::Host);
    p.metadata = Some(r#"{"color":"blue"}"#.to_owned());
    let joined = store.participant_joined(&p).await.expect("join");
    let expected_joined = ParticipantRecord {
        sid: "PA_1".to_owned(),
        room_id: "lobby".to_owned(),
        identity: "alice".to_owned(),
        name: "alice (display)".to_owned(),
        role: Some(ParticipantRole::Host),
        metadata: Some(r#"{"color":"blue"}"#.to_owned()),
        joined_at: t(1),
        left_at: None,
        leave_reason: None,
        summary: None,
    };
    assert_eq!(joined, expected_joined);
    assert_eq!(
        store.get_participant("PA_1").await.expect("get"),
        expected_joined
    );

    let left = leave(t(61), "CLIENT_INITIATED");
    store.participant_left("PA_1", &left).await.expect("leave");
    let stored = store
        .get_participant("PA_1")
        .await
        .expect("get after leave");
    assert_eq!(
        stored,
        ParticipantRecord {
            left_at: Some(t(61)),
            leave_reason: Some("CLIENT_INITIATED".to_owned()),
            summary: Some(left.summary),
            ..expected_joined
        }
    );
}

pub async fn rejoin_with_same_identity_keeps_both_rows(store: Arc<dyn Store>) {
    start(&*store, "lobby").await;
    store
        .participant_joined(&join("lobby", "PA_1", "alice", t(1)))
        .await
        .expect("first join");
    // The second connection evicts the first (duplicate identity), then lives on.
    store
        .participant_joined(&join("lobby", "PA_2", "alice", t(5)))
        .await
        .expect("rejoin");
    let mut evicted = leave(t(5), "DUPLICATE_IDENTITY");
    evicted.summary.rtt_ms = None;
    store
        .participant_left("PA_1", &evicted)
        .await
        .expect("evict");

    let rows = store.list_participants("lobby").await.expect("list");
    assert_eq!(sids(&rows), ["PA_1", "PA_2"]);
    assert!(rows.iter().all(|p| p.identity == "alice"));
    assert_eq!(rows[0].leave_reason.as_deref(), Some("DUPLICATE_IDENTITY"));
    assert_eq!(rows[0].left_at, Some(t(5)));
    assert_eq!(rows[0].summary, Some(evicted.summary));
    assert_eq!(rows[1].left_at, None);
    assert_eq!(rows[1].summary, None);
}

pub async fn list_participants_orders_by_joined_at(store: Arc<dyn Store>) {
    start(&*store, "lobby").await;
    start(&*store, "other").await;
    // Recorded out of order; PA_b and PA_a tie on joined_at and order by sid.
    for (sid, identity, at) in [
        ("PA_c", "carol", t(30)),
        ("PA_b", "bob", t(10)),
        ("PA_d", "dave", t(20)),
        ("PA_a", "ann", t(10)),
    ] {
        store
            .participant_joined(&join("lobby", sid, identity, at))
            .await
            .expect("join");
    }
    store
        .participant_joined(&join("other", "PA_x", "xavier", t(0)))
        .await
        .expect("join other");

    let rows = store.list_participants("lobby").await.expect("list");
    assert_eq!(sids(&rows), ["PA_a", "PA_b", "PA_d", "PA_c"]);
    let other = store.list_participants("other").await.expect("list other");
    assert_eq!(sids(&other), ["PA_x"]);
}

pub async fn list_participants_of_unknown_or_empty_room(store: Arc<dyn Store>) {
    start(&*store, "empty").await;
    let rows = store.list_participants("empty").await.expect("list empty");
    assert!(rows.is_empty());
    assert_not_found(store.list_participants("nowhere").await, "room `nowhere`");
}

pub async fn participant_left_of_unknown_sid_is_not_found(store: Arc<dyn Store>) {
    start(&*store, "lobby").await;
    assert_not_found(
        store
            .participant_left("PA_ghost", &leave(t(1), "CLIENT_INITIATED"))
            .await,
        "participant `PA_ghost`",
    );
}

pub async fn second_leave_keeps_the_first(store: Arc<dyn Store>) {
    start(&*store, "lobby").await;
    store
        .participant_joined(&join("lobby", "PA_1", "alice", t(1)))
        .await
        .expect("join");
    let first = leave(t(2), "PARTICIPANT_REMOVED");
    store.participant_left("PA_1", &first).await.expect("leave");
    let mut second = leave(t(3), "SIGNAL_CLOSED");
    second.summary.bytes_in = 1;
    store
        .participant_left("PA_1", &second)
        .await
        .expect("a second leave is accepted");

    let stored = store.get_participant("PA_1").await.expect("get");
    assert_eq!(stored.left_at, Some(t(2)));
    assert_eq!(stored.leave_reason.as_deref(), Some("PARTICIPANT_REMOVED"));
    assert_eq!(stored.summary, Some(first.summary));
}

pub async fn join_to_unknown_room_is_not_found(store: Arc<dyn Store>) {
    assert_not_found(
        store
            .participant_joined(&join("nowhere", "PA_1", "alice", t(1)))
            .await,
        "room `nowhere`",
    );
    assert_not_found(store.get_participant("PA_1").await, "participant `PA_1`");
}

pub async fn join_retry_is_idempotent_and_sid_clash_is_a_conflict(store: Arc<dyn Store>) {
    start(&*store, "lobby").await;
    start(&*store, "other").await;
    let p = join("lobby", "PA_1", "alice", t(1));
    let first = store.participant_joined(&p).await.expect("join");
    // A retry (even with a later timestamp) returns the stored connection unchanged.
    let mut retry = p.clone();
    retry.joined_at = t(2);
    let again = store.participant_joined(&retry).await.expect("retry");
    assert_eq!(again, first);

    for clash in [
        join("lobby", "PA_1", "mallory", t(3)),
        join("other", "PA_1", "alice", t(3)),
    ] {
        match store.participant_joined(&clash).await {
            Err(e @ StoreError::Conflict { .. }) => {
                assert!(e.to_string().contains("PA_1"), "message: {e}")
            }
            other => panic!("expected Conflict, got {other:?}"),
        }
    }
    let rows = store.list_participants("lobby").await.expect("list");
    assert_eq!(rows, vec![first]);
}

pub async fn joins_and_leaves_bump_room_last_active_at(store: Arc<dyn Store>) {
    start(&*store, "lobby").await;
    store
        .participant_joined(&join("lobby", "PA_1", "alice", t(10)))
        .await
        .expect("join");
    assert_eq!(
        store.get_room("lobby").await.expect("get").last_active_at,
        t(10)
    );
    store
        .participant_left("PA_1", &leave(t(20), "CLIENT_INITIATED"))
        .await
        .expect("leave");
    assert_eq!(
        store.get_room("lobby").await.expect("get").last_active_at,
        t(20)
    );
    // An event that arrives late never moves last_active_at backwards.
    store
        .participant_joined(&join("lobby", "PA_0", "bob", t(15)))
        .await
        .expect("late join");
    assert_eq!(
        store.get_room("lobby").await.expect("get").last_active_at,
        t(20)
    );
}

pub async fn timestamps_are_truncated_to_milliseconds(store: Arc<dyn Store>) {
    let precise = t(0) + Duration::nanoseconds(123_456_789);
    let truncated = t(0) + Duration::milliseconds(123);
    let room = store
        .room_started(&new_room("lobby", "RM_1", precise))
        .await
        .expect("start");
    assert_eq!(room.created_at, truncated);
    let p = store
        .participant_joined(&join("lobby", "PA_1", "alice", precise))
        .await
        .expect("join");
    assert_eq!(p.joined_at, truncated);
    assert_eq!(
        store.get_participant("PA_1").await.expect("get").joined_at,
        truncated
    );
}

pub async fn left_at_before_joined_at_is_clamped(store: Arc<dyn Store>) {
    start(&*store, "lobby").await;
    store
        .participant_joined(&join("lobby", "PA_1", "alice", t(10)))
        .await
        .expect("join");
    // A clock that stepped backwards must not produce a leave before the join.
    store
        .participant_left("PA_1", &leave(t(5), "CLIENT_INITIATED"))
        .await
        .expect("leave");
    let stored = store.get_participant("PA_1").await.expect("get");
    assert_eq!(stored.left_at, Some(t(10)));
}

pub async fn counters_saturate_at_i64_max(store: Arc<dyn Store>) {
    start(&*store, "lobby").await;
    store
        .participant_joined(&join("lobby", "PA_1", "alice", t(1)))
        .await
        .expect("join");
    let mut left = leave(t(2), "SERVER_SHUTDOWN");
    left.summary.bytes_out = u64::MAX;
    left.summary.rtt_ms = Some(u32::MAX);
    store.participant_left("PA_1", &left).await.expect("leave");
    let summary = store
        .get_participant("PA_1")
        .await
        .expect("get")
        .summary
        .expect("summary");
    assert_eq!(summary.bytes_out, i64::MAX as u64);
    assert_eq!(summary.bytes_in, left.summary.bytes_in);
    assert_eq!(summary.rtt_ms, Some(u32::MAX));
}

pub async fn concurrent_joins_and_leaves_are_all_recorded(store: Arc<dyn Store>) {
    start(&*store, "lobby").await;
    const N: i64 = 24;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let sid = format!("PA_{i:02}");
                store
                    .participant_joined(&join("lobby", &sid, &format!("user{i}"), t(i)))
                    .await
                    .expect("concurrent join");
                store
                    .participant_left(&sid, &leave(t(i + 100), "CLIENT_INITIATED"))
                    .await
                    .expect("concurrent leave");
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let rows = store.list_participants("lobby").await.expect("list");
    assert_eq!(rows.len(), N as usize);
    assert!(rows.iter().all(|p| p.left_at.is_some()));
    let expected: Vec<String> = (0..N).map(|i| format!("PA_{i:02}")).collect();
    assert_eq!(sids(&rows), expected);
    assert_eq!(
        store.get_room("lobby").await.expect("get").last_active_at,
        t(N - 1 + 100)
    );
}

pub async fn get_participant_of_unknown_sid_is_not_found(store: Arc<dyn Store>) {
    assert_not_found(
        store.get_participant("PA_none").await,
        "participant `PA_none`",
    );
}
