//! Sessions: creation rules, the compare-and-set transition and its concurrency, reads.

use std::sync::Arc;

use serde_json::json;

use super::fixtures::{
    all_events, assert_conflict, assert_not_found, assert_state_conflict, events, join, kinds_of,
    new_session, room_spec, room_with_session, t,
};
use crate::store::{kinds, SessionState, Store, StoreError};

use SessionState::*;

pub async fn create_session_records_it_with_an_event(store: Arc<dyn Store>) {
    store
        .create_room(&room_spec("lobby", t(0)))
        .await
        .expect("create_room");
    let session = store
        .create_session(&new_session("se_1", "lobby", Idle, t(1)))
        .await
        .expect("create_session");
    assert_eq!(session.session_id, "se_1");
    assert_eq!(session.room_id, "lobby");
    assert_eq!(
        session.channel_id.as_deref(),
        Some("ch_01TEST"),
        "defaults to the room's channel"
    );
    assert_eq!(session.owner_identity.as_deref(), Some("host"));
    assert_eq!(session.state, Idle);
    assert_eq!((session.created_at, session.updated_at), (t(1), t(1)));
    assert_eq!(session.ended_at, None);
    assert_eq!(session.version, 1);
    assert_eq!(store.get_session("se_1").await.expect("get"), session);
    assert_eq!(
        store.open_session("lobby").await.expect("open"),
        Some(session.clone())
    );

    let log = events(&*store, "lobby").await;
    assert_eq!(kinds_of(&log), ["room_created", "session_state_changed"]);
    let event = &log[1];
    assert_eq!(event.session_id.as_deref(), Some("se_1"));
    assert_eq!(event.created_at, t(1));
    assert_eq!(event.payload["from"], json!(null));
    assert_eq!(event.payload["to"], json!("IDLE"));
    assert_eq!(event.payload["session"]["state"], json!("IDLE"));
    assert_eq!(event.payload["session"]["session_id"], json!("se_1"));

    // An explicit channel wins over the room's.
    store
        .transition_session("se_1", Idle, Cancelled, "test", t(2))
        .await
        .expect("cancel");
    let mut second = new_session("se_2", "lobby", Ready, t(3));
    second.channel_id = Some("ch_OTHER".to_owned());
    let second = store.create_session(&second).await.expect("second");
    assert_eq!(second.channel_id.as_deref(), Some("ch_OTHER"));
    assert_eq!(second.state, Ready);
}

pub async fn create_session_refuses_unknown_closed_and_busy_rooms(store: Arc<dyn Store>) {
    assert_not_found(
        store
            .create_session(&new_session("se_x", "nowhere", Idle, t(1)))
            .await,
        "room `nowhere`",
    );

    store
        .create_room(&room_spec("closed", t(0)))
        .await
        .expect("create");
    store
        .room_finished("closed", t(1), "ROOM_DELETED")
        .await
        .expect("finish");
    match store
        .create_session(&new_session("se_c", "closed", Idle, t(2)))
        .await
    {
        Err(StoreError::RoomNotActive { room_id }) => assert_eq!(room_id, "closed"),
        other => panic!("expected RoomNotActive, got {other:?}"),
    }

    room_with_session(&*store, "busy", "se_1", Live).await;
    let before = all_events(&*store).await;
    assert_conflict(
        store
            .create_session(&new_session("se_2", "busy", Idle, t(9)))
            .await,
        "se_1",
    );
    // The id of an existing (finished) session cannot be reused either.
    store
        .create_room(&room_spec("other", t(0)))
        .await
        .expect("create other");
    let mut reused = new_session("se_1", "other", Idle, t(9));
    reused.owner_identity = None;
    assert_conflict(store.create_session(&reused).await, "se_1");
    // Failed creations write nothing: the log is as it was, except room_created of "other".
    let after = all_events(&*store).await;
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(
        after.last().map(|e| e.kind.as_str()),
        Some(kinds::ROOM_CREATED)
    );
    assert_not_found(store.get_session("se_2").await, "session `se_2`");
}

pub async fn one_open_session_per_room_even_when_created_concurrently(store: Arc<dyn Store>) {
    store
        .create_room(&room_spec("lobby", t(0)))
        .await
        .expect("create_room");
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .create_session(&new_session(&format!("se_{i}"), "lobby", Ready, t(1)))
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => created += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("expected Ok or Conflict, got {e}"),
        }
    }
    assert_eq!(created, 1, "exactly one session may be open");
    assert_eq!(store.list_sessions("lobby").await.expect("list").len(), 1);
    assert_eq!(
        kinds_of(&events(&*store, "lobby").await),
        ["room_created", "session_state_changed"]
    );
}

pub async fn transition_is_a_compare_and_set(store: Arc<dyn Store>) {
    room_with_session(&*store, "lobby", "se_1", Idle).await;
    let ready = store
        .transition_session("se_1", Idle, Ready, "host joined", t(5))
        .await
        .expect("IDLE -> READY");
    assert_eq!(ready.state, Ready);
    assert_eq!(ready.version, 2);
    assert_eq!(ready.updated_at, t(5));
    assert_eq!(ready.created_at, t(1));
    assert_eq!(ready.ended_at, None);

    // A stale `from` is refused with the current state, and writes nothing.
    let before = events(&*store, "lobby").await;
    assert_state_conflict(
        store
            .transition_session("se_1", Idle, Publishing, "stale", t(6))
            .await,
        "se_1",
        Ready,
    );
    assert_eq!(events(&*store, "lobby").await, before);
    assert_eq!(store.get_session("se_1").await.expect("get"), ready);
    assert_not_found(
        store
            .transition_session("se_nope", Idle, Ready, "x", t(6))
            .await,
        "session `se_nope`",
    );

    let log = events(&*store, "lobby").await;
    let last = log.last().expect("event");
    assert_eq!(last.kind, "session_state_changed");
    assert_eq!(last.session_id.as_deref(), Some("se_1"));
    assert_eq!(last.payload["from"], json!("IDLE"));
    assert_eq!(last.payload["to"], json!("READY"));
    assert_eq!(last.payload["reason"], json!("host joined"));
    assert_eq!(last.payload["session"]["version"], json!(2));
}

pub async fn finished_sessions_get_ended_at(store: Arc<dyn Store>) {
    room_with_session(&*store, "a", "se_a", Ending).await;
    let stopped = store
        .transition_session("se_a", Ending, Stopped, "egress ended", t(20))
        .await
        .expect("ENDING -> STOPPED");
    assert_eq!(stopped.ended_at, Some(t(20)));
    assert!(!stopped.state.is_open());
    assert_eq!(stopped.version, 6, "created at 1, then 5 transitions");
    assert_eq!(store.open_session("a").await.expect("open"), None);

    room_with_session(&*store, "b", "se_b", Publishing).await;
    let cancelled = store
        .transition_session("se_b", Publishing, Cancelled, "user cancelled", t(21))
        .await
        .expect("PUBLISHING -> CANCELLED");
    assert_eq!(cancelled.ended_at, Some(t(21)));

    // With the old one finished, the room takes a new session (seed 002's recreation).
    let next = store
        .create_session(&new_session("se_a2", "a", Ready, t(22)))
        .await
        .expect("new session after STOPPED");
    assert_eq!(next.state, Ready);
    let listed: Vec<String> = store
        .list_sessions("a")
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(listed, ["se_a2", "se_a"], "newest first");

    // Re-opening a finished session while another is open breaks the one-open rule.
    let before = events(&*store, "a").await;
    assert_conflict(
        store
            .transition_session("se_a", Stopped, Ready, "resurrect", t(23))
            .await,
        "se_a",
    );
    assert_eq!(events(&*store, "a").await, before);
    assert_eq!(store.get_session("se_a").await.expect("get"), stopped);
}

pub async fn concurrent_transitions_from_one_state_have_one_winner(store: Arc<dyn Store>) {
    for round in 0..20 {
        let room = format!("room{round}");
        let session = format!("se_{round}");
        room_with_session(&*store, &room, &session, Ready).await;
        let before = events(&*store, &room).await.len();
        let racers: Vec<_> = [Publishing, Cancelled]
            .into_iter()
            .map(|to| {
                let store = Arc::clone(&store);
                let session = session.clone();
                tokio::spawn(async move {
                    (
                        to,
                        store
                            .transition_session(&session, Ready, to, "race", t(50))
                            .await,
                    )
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for racer in racers {
            match racer.await.expect("task") {
                (to, Ok(record)) => {
                    assert_eq!(record.state, to);
                    winners.push(to);
                }
                (_, Err(StoreError::StateConflict { current, .. })) => losers.push(current),
                (_, Err(e)) => panic!("round {round}: unexpected error {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one wins");
        assert_eq!(
            losers, winners,
            "round {round}: the loser sees the winner's state"
        );
        let stored = store.get_session(&session).await.expect("get");
        assert_eq!(stored.state, winners[0]);
        assert_eq!(stored.version, 3);
        let log = events(&*store, &room).await;
        assert_eq!(
            log.len(),
            before + 1,
            "round {round}: one event for one change"
        );
    }
}

pub async fn session_reads_of_unknown_rooms_and_sessions(store: Arc<dyn Store>) {
    assert_not_found(store.get_session("se_none").await, "session `se_none`");
    assert_not_found(store.list_sessions("nowhere").await, "room `nowhere`");
    assert_not_found(store.open_session("nowhere").await, "room `nowhere`");
    store
        .create_room(&room_spec("empty", t(0)))
        .await
        .expect("create");
    assert!(store.list_sessions("empty").await.expect("list").is_empty());
    assert_eq!(store.open_session("empty").await.expect("open"), None);
}

pub async fn create_session_attaches_open_connections(store: Arc<dyn Store>) {
    store
        .create_room(&room_spec("lobby", t(0)))
        .await
        .expect("create_room");
    for (sid, identity, at) in [
        ("PA_b", "bob", 2),
        ("PA_a", "alice", 1),
        ("PA_c", "carol", 3),
    ] {
        store
            .participant_joined(&join("lobby", sid, identity, t(at)))
            .await
            .expect("join");
    }
    store
        .participant_left("PA_c", &super::fixtures::leave(t(4), "CLIENT_INITIATED"))
        .await
        .expect("carol leaves");

    store
        .create_session(&new_session("se_1", "lobby", Ready, t(10)))
        .await
        .expect("create_session");
    let people = store.list_session_participants("se_1").await.expect("list");
    let who: Vec<(&str, &str, u32)> = people
        .iter()
        .map(|p| (p.identity.as_str(), p.sid.as_str(), p.connections))
        .collect();
    assert_eq!(
        who,
        [("alice", "PA_a", 1), ("bob", "PA_b", 1)],
        "the open connections, by joined_at"
    );
    assert_eq!(people[0].joined_at, t(1));
    assert_eq!(people[0].left_at, None);
    assert_eq!(people[0].name, "alice (display)");

    // Leaving later closes the attached participant and names the session in its event.
    store
        .participant_left("PA_a", &super::fixtures::leave(t(20), "CLIENT_INITIATED"))
        .await
        .expect("alice leaves");
    let alice = &store.list_session_participants("se_1").await.expect("list")[0];
    assert_eq!(alice.left_at, Some(t(20)));
    assert_eq!(alice.leave_reason.as_deref(), Some("CLIENT_INITIATED"));
    let last = events(&*store, "lobby").await.pop().expect("event");
    assert_eq!(last.kind, "participant_left");
    assert_eq!(last.session_id.as_deref(), Some("se_1"));
}
