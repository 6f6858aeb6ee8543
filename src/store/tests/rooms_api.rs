//! Rooms as the API and the maintenance sweep use them: create, update, finish with a
//! session and people inside, idle detection.

use std::sync::Arc;

use serde_json::json;

use super::fixtures::{
    assert_not_found, events, join, join_in, kinds_of, new_room, room_spec, room_with_session, t,
};
use crate::store::{RoomStatus, RoomUpdate, SessionState, Store};

pub async fn create_room_creates_returns_and_reopens(store: Arc<dyn Store>) {
    let mut spec = room_spec("lobby", t(0));
    spec.metadata = Some("m".to_owned());
    spec.guest_access = true;
    spec.max_participants = 8;
    let (room, created) = store.create_room(&spec).await.expect("create");
    assert!(created);
    assert_eq!(room.sid, None, "no RM_ sid before the first join");
    assert_eq!(room.status, RoomStatus::Active);
    assert_eq!(room.channel_id.as_deref(), Some("ch_01TEST"));
    assert!(room.guest_access);
    assert_eq!(room.max_participants, 8);
    assert_eq!((room.created_at, room.last_active_at), (t(0), t(0)));
    assert_eq!(store.get_room("lobby").await.expect("get"), room);

    // The existing room comes back unchanged, with no event.
    let mut other = room_spec("lobby", t(5));
    other.name = Some("ignored".to_owned());
    let (same, created) = store.create_room(&other).await.expect("again");
    assert!(!created);
    assert_eq!(same, room);
    assert_eq!(kinds_of(&events(&*store, "lobby").await), ["room_created"]);

    // The SFU's first join gives it a sid.
    let started = store
        .room_started(&new_room("lobby", "RM_1", t(6)))
        .await
        .expect("start");
    assert_eq!(started.sid.as_deref(), Some("RM_1"));
    assert_eq!(started.channel_id.as_deref(), Some("ch_01TEST"), "kept");
    assert!(started.guest_access, "kept");

    // A closed room is reopened as a new incarnation with the spec's settings.
    store
        .room_finished("lobby", t(10), "ROOM_DELETED")
        .await
        .expect("finish");
    let mut reopen = room_spec("lobby", t(20));
    reopen.channel_id = None;
    reopen.name = None;
    let (reopened, created) = store.create_room(&reopen).await.expect("reopen");
    assert!(created);
    assert_eq!(reopened.status, RoomStatus::Active);
    assert_eq!(reopened.closed_at, None);
    assert_eq!(reopened.sid, None);
    assert_eq!(reopened.channel_id, None);
    assert_eq!(reopened.name, None);
    assert!(!reopened.guest_access);
    assert_eq!(reopened.created_at, t(0), "the first creation stays");
    assert_eq!(reopened.last_active_at, t(20));
    assert_eq!(
        kinds_of(&events(&*store, "lobby").await),
        [
            "room_created",
            "room_started",
            "room_finished",
            "room_created"
        ]
    );
}

pub async fn room_started_records_only_changes(store: Arc<dyn Store>) {
    let room = new_room("lobby", "RM_1", t(0));
    store.room_started(&room).await.expect("start");
    store.room_started(&room).await.expect("identical repeat");
    assert_eq!(kinds_of(&events(&*store, "lobby").await), ["room_started"]);
    store
        .room_started(&new_room("lobby", "RM_2", t(1)))
        .await
        .expect("new incarnation");
    let log = events(&*store, "lobby").await;
    assert_eq!(kinds_of(&log), ["room_started", "room_started"]);
    assert_eq!(log[1].payload["room"]["sid"], json!("RM_2"));
}

pub async fn update_room_changes_only_given_fields(store: Arc<dyn Store>) {
    let mut spec = room_spec("lobby", t(0));
    spec.metadata = Some("old".to_owned());
    store.create_room(&spec).await.expect("create");
    let updated = store
        .update_room(
            "lobby",
            &RoomUpdate {
                metadata: Some("new".to_owned()),
                name: None,
                guest_access: None,
                max_participants: Some(3),
                at: t(4),
            },
        )
        .await
        .expect("update");
    assert_eq!(updated.metadata.as_deref(), Some("new"));
    assert_eq!(updated.name.as_deref(), Some("lobby room"));
    assert_eq!(updated.max_participants, 3);
    assert!(!updated.guest_access);
    assert_eq!(store.get_room("lobby").await.expect("get"), updated);
    let last = events(&*store, "lobby").await.pop().expect("event");
    assert_eq!(last.kind, "room_updated");
    assert_eq!(last.created_at, t(4));
    assert_eq!(last.payload["room"]["metadata"], json!("new"));

    let nothing = RoomUpdate {
        metadata: None,
        name: None,
        guest_access: None,
        max_participants: None,
        at: t(5),
    };
    assert_not_found(
        store.update_room("nowhere", &nothing).await,
        "room `nowhere`",
    );
}

/// room_finished ends the open session by its state, and closes the open connections.
pub async fn room_finished_ends_the_session_and_connections(store: Arc<dyn Store>) {
    let cases = [
        (SessionState::Idle, vec!["CANCELLED"]),
        (SessionState::Ready, vec!["CANCELLED"]),
        (SessionState::Publishing, vec!["CANCELLED"]),
        (SessionState::Live, vec!["ENDING", "STOPPED"]),
        (SessionState::Ending, vec!["STOPPED"]),
    ];
    for (i, (state, steps)) in cases.into_iter().enumerate() {
        let room = format!("room{i}");
        let session = format!("se_{i}");
        room_with_session(&*store, &room, &session, state).await;
        store
            .participant_joined(&join_in(
                &room,
                &format!("PA_{i}a"),
                "host",
                &session,
                t(10),
            ))
            .await
            .expect("host joins");
        store
            .participant_joined(&join(&room, &format!("PA_{i}b"), "viewer", t(11)))
            .await
            .expect("viewer joins");
        let before = events(&*store, &room).await.len();

        store
            .room_finished(&room, t(30), "ROOM_DELETED")
            .await
            .expect("finish");
        let ended = store.get_session(&session).await.expect("get");
        assert_eq!(ended.state.as_str(), *steps.last().expect("a step"));
        assert_eq!(ended.ended_at, Some(t(30)));
        assert_eq!(store.open_session(&room).await.expect("open"), None);

        for connection in store.list_participants(&room).await.expect("list") {
            assert_eq!(connection.left_at, Some(t(30)));
            assert_eq!(connection.leave_reason.as_deref(), Some("ROOM_DELETED"));
            assert_eq!(connection.summary, None, "nothing was measured");
        }
        let host = &store
            .list_session_participants(&session)
            .await
            .expect("participants")[0];
        assert_eq!(host.left_at, Some(t(30)));
        assert_eq!(host.leave_reason.as_deref(), Some("ROOM_DELETED"));

        let log = events(&*store, &room).await;
        let new = &log[before..];
        let mut expected = vec!["participant_left", "participant_left"];
        expected.extend(steps.iter().map(|_| "session_state_changed"));
        expected.push("room_finished");
        assert_eq!(kinds_of(new), expected, "{state}");
        let tos: Vec<&str> = new
            .iter()
            .filter(|e| e.kind == "session_state_changed")
            .map(|e| e.payload["to"].as_str().expect("to"))
            .collect();
        assert_eq!(tos, steps, "{state}");
        let room_record = store.get_room(&room).await.expect("room");
        assert_eq!(room_record.status, RoomStatus::Closed);
        assert_eq!(room_record.closed_at, Some(t(30)));
    }
}

pub async fn idle_rooms_are_empty_and_past_their_timeout(store: Arc<dyn Store>) {
    // empty_timeout 300 s everywhere; last activity decides.
    let mut spec = room_spec("fresh", t(1000));
    store.create_room(&spec).await.expect("fresh");
    spec.room_id = "old".to_owned();
    spec.at = t(0);
    store.create_room(&spec).await.expect("old");
    spec.room_id = "boundary".to_owned();
    spec.at = t(700);
    store.create_room(&spec).await.expect("boundary");
    spec.room_id = "short".to_owned();
    spec.at = t(950);
    spec.empty_timeout_secs = 10;
    store.create_room(&spec).await.expect("short");
    spec.room_id = "occupied".to_owned();
    spec.at = t(0);
    spec.empty_timeout_secs = 300;
    store.create_room(&spec).await.expect("occupied");
    store
        .participant_joined(&join("occupied", "PA_1", "alice", t(1)))
        .await
        .expect("join");
    spec.room_id = "left".to_owned();
    store.create_room(&spec).await.expect("left");
    store
        .participant_joined(&join("left", "PA_2", "bob", t(1)))
        .await
        .expect("join");
    store
        .participant_left("PA_2", &super::fixtures::leave(t(2), "CLIENT_INITIATED"))
        .await
        .expect("leave");
    spec.room_id = "closed".to_owned();
    store.create_room(&spec).await.expect("closed");
    store
        .room_finished("closed", t(3), "ROOM_DELETED")
        .await
        .expect("finish");

    let idle: Vec<String> = store
        .idle_rooms(t(1000))
        .await
        .expect("idle")
        .into_iter()
        .map(|r| r.room_id)
        .collect();
    // "boundary" is exactly 300 s old: not yet past its timeout.
    assert_eq!(
        idle,
        ["left", "old", "short"],
        "ordered by created_at, room_id"
    );
}
