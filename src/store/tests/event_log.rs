//! The event log: every change writes its events, failures write none, per-room seqs have
//! no gaps under concurrency, replay and delivery reads, delivery cursors.

use std::sync::Arc;

use serde_json::json;

use super::fixtures::{
    all_events, assert_gapless, egress_update, events, join, join_in, kinds_of, leave, new_egress,
    new_room, new_session, room_spec, t,
};
use crate::store::{EgressStatus, RoomUpdate, SessionState, Store, StoreError, TrackEvent};

/// One pass through a room's life, checking the events each step appends.
pub async fn every_change_appends_its_events(store: Arc<dyn Store>) {
    let (room, created) = store
        .create_room(&room_spec("lobby", t(0)))
        .await
        .expect("create_room");
    assert!(created);
    store
        .room_started(&new_room("lobby", "RM_1", t(1)))
        .await
        .expect("room_started");
    store
        .update_room(
            "lobby",
            &RoomUpdate {
                metadata: Some("topic".to_owned()),
                name: None,
                guest_access: Some(true),
                max_participants: None,
                at: t(2),
            },
        )
        .await
        .expect("update_room");
    store
        .create_session(&new_session("se_1", "lobby", SessionState::Ready, t(3)))
        .await
        .expect("create_session");
    store
        .participant_joined(&join_in("lobby", "PA_1", "alice", "se_1", t(4)))
        .await
        .expect("join");
    store
        .record_track(&TrackEvent {
            room_id: "lobby".to_owned(),
            participant_sid: "PA_1".to_owned(),
            identity: "alice".to_owned(),
            track_sid: "TR_1".to_owned(),
            kind: "audio".to_owned(),
            source: "microphone".to_owned(),
            published: true,
            at: t(5),
        })
        .await
        .expect("track");
    store
        .transition_session(
            "se_1",
            SessionState::Ready,
            SessionState::Publishing,
            "go live",
            t(6),
        )
        .await
        .expect("publishing");
    store
        .create_egress(&new_egress("eg_1", "lobby", Some("se_1"), t(6)))
        .await
        .expect("egress");
    store
        .update_egress("eg_1", &egress_update(EgressStatus::Active, t(7)))
        .await
        .expect("egress active");
    store
        .transition_session(
            "se_1",
            SessionState::Publishing,
            SessionState::Live,
            "egress active",
            t(7),
        )
        .await
        .expect("live");
    store
        .update_egress("eg_1", &egress_update(EgressStatus::Complete, t(8)))
        .await
        .expect("egress complete");
    store
        .participant_left("PA_1", &leave(t(9), "CLIENT_INITIATED"))
        .await
        .expect("leave");
    store
        .room_finished("lobby", t(10), "ROOM_DELETED")
        .await
        .expect("finish");

    let log = events(&*store, "lobby").await;
    assert_eq!(
        kinds_of(&log),
        [
            "room_created",
            "room_started",
            "room_updated",
            "session_state_changed",
            "participant_joined",
            "track_published",
            "session_state_changed",
            "egress_started",
            "egress_updated",
            "session_state_changed",
            "egress_ended",
            "participant_left",
            // room_finished ends the LIVE session in two steps.
            "session_state_changed",
            "session_state_changed",
            "room_finished",
        ]
    );
    assert_gapless(&log);
    assert_eq!(
        log[0].payload["room"],
        serde_json::to_value(&room).expect("json")
    );
    assert_eq!(log[1].payload["room"]["sid"], json!("RM_1"));
    assert_eq!(log[2].payload["room"]["guest_access"], json!(true));
    assert_eq!(log[2].payload["room"]["metadata"], json!("topic"));
    assert_eq!(log[7].payload["egress"]["status"], json!("starting"));
    assert_eq!(log[7].session_id.as_deref(), Some("se_1"));
    assert_eq!(log[10].payload["egress"]["status"], json!("complete"));
    assert_eq!(log[12].payload["to"], json!("ENDING"));
    assert_eq!(log[12].payload["reason"], json!("ROOM_DELETED"));
    assert_eq!(log[13].payload["to"], json!("STOPPED"));
    assert_eq!(log[14].payload["room"]["status"], json!("closed"));
    assert!(log.iter().all(|e| e.room_id == "lobby"));
}

/// Refused changes leave the log as it was.
pub async fn failed_changes_append_nothing(store: Arc<dyn Store>) {
    store
        .create_room(&room_spec("lobby", t(0)))
        .await
        .expect("create");
    store
        .create_session(&new_session("se_1", "lobby", SessionState::Ready, t(1)))
        .await
        .expect("session");
    store
        .participant_joined(&join("lobby", "PA_1", "alice", t(2)))
        .await
        .expect("join");
    store
        .create_egress(&new_egress("eg_1", "lobby", Some("se_1"), t(3)))
        .await
        .expect("egress");
    store
        .update_egress("eg_1", &egress_update(EgressStatus::Failed, t(4)))
        .await
        .expect("egress failed");
    let before = all_events(&*store).await;

    let failures: Vec<StoreError> = vec![
        store
            .participant_joined(&join("lobby", "PA_1", "mallory", t(5)))
            .await
            .expect_err("sid clash"),
        store
            .create_session(&new_session("se_2", "lobby", SessionState::Idle, t(5)))
            .await
            .expect_err("second open session"),
        store
            .transition_session("se_1", SessionState::Idle, SessionState::Ready, "x", t(5))
            .await
            .expect_err("stale from"),
        store
            .update_egress("eg_1", &egress_update(EgressStatus::Active, t(5)))
            .await
            .expect_err("terminal egress"),
        store
            .create_egress(&new_egress("eg_1", "lobby", None, t(5)))
            .await
            .expect_err("egress id taken"),
        store
            .update_room(
                "nowhere",
                &RoomUpdate {
                    metadata: None,
                    name: None,
                    guest_access: None,
                    max_participants: None,
                    at: t(5),
                },
            )
            .await
            .expect_err("unknown room"),
        store
            .participant_left("PA_ghost", &leave(t(5), "CLIENT_INITIATED"))
            .await
            .expect_err("unknown sid"),
    ];
    assert_eq!(failures.len(), 7);
    assert_eq!(all_events(&*store).await, before);
    // No-op writes append nothing either.
    store
        .create_room(&room_spec("lobby", t(6)))
        .await
        .expect("create again");
    store
        .participant_joined(&join("lobby", "PA_1", "alice", t(6)))
        .await
        .expect("retried join");
    store
        .room_finished("lobby", t(7), "ROOM_DELETED")
        .await
        .expect("finish");
    let after_finish = all_events(&*store).await;
    store
        .room_finished("lobby", t(8), "ROOM_DELETED")
        .await
        .expect("finish again");
    assert_eq!(all_events(&*store).await, after_finish);
}

/// Concurrent writers of one room get seqs 1..=n exactly.
pub async fn concurrent_writers_get_gapless_seqs(store: Arc<dyn Store>) {
    store
        .room_started(&new_room("lobby", "RM_1", t(0)))
        .await
        .expect("start");
    store
        .room_started(&new_room("other", "RM_2", t(0)))
        .await
        .expect("start other");
    store
        .create_session(&new_session("se_1", "lobby", SessionState::Ready, t(0)))
        .await
        .expect("session");
    const N: i64 = 20;
    let tasks: Vec<_> = (0..N)
        .flat_map(|i| {
            let store_a = Arc::clone(&store);
            let store_b = Arc::clone(&store);
            [
                tokio::spawn(async move {
                    store_a
                        .participant_joined(&join_in(
                            "lobby",
                            &format!("PA_{i}"),
                            &format!("user{i}"),
                            "se_1",
                            t(i),
                        ))
                        .await
                        .map(|_| ())
                }),
                tokio::spawn(async move {
                    store_b
                        .participant_joined(&join("other", &format!("PB_{i}"), "bob", t(i)))
                        .await
                        .map(|_| ())
                }),
            ]
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("concurrent join");
    }

    let lobby = events(&*store, "lobby").await;
    assert_eq!(
        lobby.len() as i64,
        2 + N,
        "room_started + session + N joins"
    );
    assert_gapless(&lobby);
    let other = events(&*store, "other").await;
    assert_eq!(other.len() as i64, 1 + N);
    assert_gapless(&other);
    assert_eq!(
        store
            .list_session_participants("se_1")
            .await
            .expect("list")
            .len() as i64,
        N
    );
    // Globally, ids are unique and ascending across both rooms.
    let global = all_events(&*store).await;
    assert_eq!(global.len(), lobby.len() + other.len());
    assert!(global.windows(2).all(|w| w[0].id < w[1].id));
}

pub async fn list_events_replays_after_a_seq(store: Arc<dyn Store>) {
    store
        .room_started(&new_room("lobby", "RM_1", t(0)))
        .await
        .expect("start");
    for i in 0..9 {
        store
            .participant_joined(&join("lobby", &format!("PA_{i}"), "alice", t(i)))
            .await
            .expect("join");
    }
    let page = store.list_events("lobby", 0, 4).await.expect("first page");
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    let page = store.list_events("lobby", 4, 4).await.expect("second page");
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6, 7, 8]);
    let page = store.list_events("lobby", 8, 4).await.expect("last page");
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [9, 10]);
    assert!(store
        .list_events("lobby", 10, 4)
        .await
        .expect("end")
        .is_empty());
    assert!(store
        .list_events("lobby", 0, 0)
        .await
        .expect("limit 0")
        .is_empty());
    assert_eq!(page[1].payload["participant"]["sid"], json!("PA_8"));
    match store.list_events("nowhere", 0, 10).await {
        Err(StoreError::NotFound { what }) => assert!(what.contains("nowhere")),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

pub async fn events_after_pages_across_rooms(store: Arc<dyn Store>) {
    assert!(store.events_after(0, 10).await.expect("empty").is_empty());
    for (i, room) in ["a", "b", "a", "c", "b", "a"].into_iter().enumerate() {
        store
            .room_started(&new_room(room, &format!("RM_{i}"), t(i as i64)))
            .await
            .expect("start");
    }
    let all = all_events(&*store).await;
    assert_eq!(all.len(), 6);
    let rooms: Vec<&str> = all.iter().map(|e| e.room_id.as_str()).collect();
    assert_eq!(
        rooms,
        ["a", "b", "a", "c", "b", "a"],
        "global order is commit order"
    );
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 1, 2, 1, 2, 3]);

    let mut cursor = 0;
    let mut seen = Vec::new();
    loop {
        let page = store.events_after(cursor, 4).await.expect("page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        cursor = page.last().expect("non-empty").id;
        seen.extend(page);
    }
    assert_eq!(seen, all);
}

pub async fn delivery_cursors_are_kept_per_sink(store: Arc<dyn Store>) {
    assert_eq!(store.delivery_cursor("nats").await.expect("unknown"), 0);
    store
        .set_delivery_cursor("nats", 42)
        .await
        .expect("set nats");
    store
        .set_delivery_cursor("webhook:https://example.test/hook", 7)
        .await
        .expect("set webhook");
    store
        .set_delivery_cursor("nats", 43)
        .await
        .expect("advance");
    assert_eq!(store.delivery_cursor("nats").await.expect("nats"), 43);
    assert_eq!(
        store
            .delivery_cursor("webhook:https://example.test/hook")
            .await
            .expect("webhook"),
        7
    );
    assert!(
        all_events(&*store).await.is_empty(),
        "cursors are not events"
    );
}
