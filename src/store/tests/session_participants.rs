//! Session participants (one row per person per session), open connections and tracks.

use std::sync::Arc;

use serde_json::json;

use super::fixtures::{
    assert_conflict, assert_not_found, events, join, join_in, kinds_of, leave_with, room_spec,
    room_with_session, summary, t,
};
use crate::store::{ParticipantRole, ParticipantSummary, SessionState, Store, TrackEvent};

pub async fn rejoin_updates_the_session_participant(store: Arc<dyn Store>) {
    room_with_session(&*store, "lobby", "se_1", SessionState::Ready).await;
    let mut first = join_in("lobby", "PA_1", "alice", "se_1", t(10));
    first.role = Some(ParticipantRole::Guest);
    store.participant_joined(&first).await.expect("join");
    let row = &store.list_session_participants("se_1").await.expect("list")[0];
    assert_eq!((row.sid.as_str(), row.connections), ("PA_1", 1));
    assert_eq!(row.joined_at, t(10));
    assert_eq!(row.role, Some(ParticipantRole::Guest));
    assert_eq!(row.summary, ParticipantSummary::default());
    assert_eq!(row.room_id, "lobby");

    store
        .participant_left(
            "PA_1",
            &leave_with(t(20), "SIGNAL_CLOSED", summary(1000, Some(30))),
        )
        .await
        .expect("leave");
    let row = &store.list_session_participants("se_1").await.expect("list")[0];
    assert_eq!(row.left_at, Some(t(20)));
    assert_eq!(row.leave_reason.as_deref(), Some("SIGNAL_CLOSED"));
    assert_eq!(row.summary, summary(1000, Some(30)));

    // The rejoin keeps joined_at, takes the new sid and profile, clears the leave.
    let mut again = join_in("lobby", "PA_2", "alice", "se_1", t(30));
    again.name = "Alice Again".to_owned();
    again.role = Some(ParticipantRole::Host);
    again.metadata = Some("m".to_owned());
    store.participant_joined(&again).await.expect("rejoin");
    let row = &store.list_session_participants("se_1").await.expect("list")[0];
    assert_eq!((row.sid.as_str(), row.connections), ("PA_2", 2));
    assert_eq!(row.joined_at, t(10));
    assert_eq!((row.left_at, row.leave_reason.as_deref()), (None, None));
    assert_eq!(row.name, "Alice Again");
    assert_eq!(row.role, Some(ParticipantRole::Host));
    assert_eq!(row.metadata.as_deref(), Some("m"));

    // The second leave adds to the totals; rtt is the latest measured one.
    store
        .participant_left(
            "PA_2",
            &leave_with(t(40), "CLIENT_INITIATED", summary(500, None)),
        )
        .await
        .expect("leave again");
    let rows = store.list_session_participants("se_1").await.expect("list");
    assert_eq!(rows.len(), 1, "one row per person per session");
    let row = &rows[0];
    assert_eq!(row.left_at, Some(t(40)));
    assert_eq!(row.leave_reason.as_deref(), Some("CLIENT_INITIATED"));
    assert_eq!(
        row.summary,
        ParticipantSummary {
            bytes_in: 1500,
            bytes_out: 3000,
            packets_in: 150,
            packets_out: 300,
            packets_lost: 2,
            rtt_ms: Some(30),
        }
    );
    // The connection rows keep their own history.
    assert_eq!(
        store.list_participants("lobby").await.expect("list").len(),
        2
    );
}

pub async fn late_leave_of_a_replaced_connection_keeps_the_person_present(store: Arc<dyn Store>) {
    room_with_session(&*store, "lobby", "se_1", SessionState::Ready).await;
    store
        .participant_joined(&join_in("lobby", "PA_1", "alice", "se_1", t(10)))
        .await
        .expect("join");
    // Duplicate identity: the new connection arrives before the old one's leave.
    store
        .participant_joined(&join_in("lobby", "PA_2", "alice", "se_1", t(11)))
        .await
        .expect("second connection");
    store
        .participant_left(
            "PA_1",
            &leave_with(t(11), "DUPLICATE_IDENTITY", summary(100, Some(9))),
        )
        .await
        .expect("old leaves");
    let row = &store.list_session_participants("se_1").await.expect("list")[0];
    assert_eq!(row.sid, "PA_2");
    assert_eq!(row.left_at, None, "alice is still here on PA_2");
    assert_eq!(row.connections, 2);
    assert_eq!(
        row.summary,
        summary(100, Some(9)),
        "PA_1's traffic still counts"
    );
}

pub async fn join_checks_the_session(store: Arc<dyn Store>) {
    room_with_session(&*store, "a", "se_a", SessionState::Ready).await;
    store
        .create_room(&room_spec("b", t(0)))
        .await
        .expect("create b");
    let before = events(&*store, "b").await;
    assert_not_found(
        store
            .participant_joined(&join_in("b", "PA_1", "alice", "se_none", t(5)))
            .await,
        "session `se_none`",
    );
    assert_conflict(
        store
            .participant_joined(&join_in("b", "PA_1", "alice", "se_a", t(5)))
            .await,
        "se_a",
    );
    assert_eq!(
        events(&*store, "b").await,
        before,
        "failed joins write no event"
    );
    assert_not_found(store.get_participant("PA_1").await, "participant `PA_1`");
}

pub async fn joins_and_leaves_write_events(store: Arc<dyn Store>) {
    room_with_session(&*store, "lobby", "se_1", SessionState::Ready).await;
    let joined = store
        .participant_joined(&join_in("lobby", "PA_1", "alice", "se_1", t(10)))
        .await
        .expect("join");
    // A retried join changes nothing and records nothing.
    store
        .participant_joined(&join_in("lobby", "PA_1", "alice", "se_1", t(11)))
        .await
        .expect("retry");
    store
        .participant_joined(&join("lobby", "PA_2", "bob", t(12)))
        .await
        .expect("join outside the session");
    store
        .participant_left(
            "PA_1",
            &leave_with(t(20), "CLIENT_INITIATED", summary(10, None)),
        )
        .await
        .expect("leave");
    store
        .participant_left(
            "PA_1",
            &leave_with(t(21), "SIGNAL_CLOSED", summary(10, None)),
        )
        .await
        .expect("second leave is a no-op");

    let log = events(&*store, "lobby").await;
    let tail = &log[log.len() - 3..];
    assert_eq!(
        kinds_of(tail),
        [
            "participant_joined",
            "participant_joined",
            "participant_left"
        ]
    );
    assert_eq!(tail[0].session_id.as_deref(), Some("se_1"));
    assert_eq!(tail[0].payload["participant"]["sid"], json!("PA_1"));
    assert_eq!(
        tail[0].payload["participant"],
        serde_json::to_value(&joined).expect("json")
    );
    assert_eq!(
        tail[0].payload["session_participant"]["connections"],
        json!(1)
    );
    assert_eq!(tail[0].created_at, t(10));
    assert_eq!(tail[1].session_id, None);
    assert_eq!(tail[2].session_id.as_deref(), Some("se_1"));
    assert_eq!(
        tail[2].payload["participant"]["leave_reason"],
        json!("CLIENT_INITIATED")
    );
}

pub async fn list_session_participants_orders_and_checks(store: Arc<dyn Store>) {
    room_with_session(&*store, "lobby", "se_1", SessionState::Ready).await;
    for (sid, identity, at) in [("PA_3", "carol", 3), ("PA_2", "bob", 1), ("PA_1", "Bea", 1)] {
        store
            .participant_joined(&join_in("lobby", sid, identity, "se_1", t(at)))
            .await
            .expect("join");
    }
    let identities: Vec<String> = store
        .list_session_participants("se_1")
        .await
        .expect("list")
        .into_iter()
        .map(|p| p.identity)
        .collect();
    assert_eq!(
        identities,
        ["Bea", "bob", "carol"],
        "joined_at, then identity bytes"
    );
    assert_not_found(
        store.list_session_participants("se_none").await,
        "session `se_none`",
    );
}

pub async fn open_connections_lists_who_is_still_here(store: Arc<dyn Store>) {
    store
        .create_room(&room_spec("lobby", t(0)))
        .await
        .expect("create");
    assert!(store
        .open_connections("lobby")
        .await
        .expect("empty")
        .is_empty());
    for (sid, identity, at) in [
        ("PA_c", "carol", 3),
        ("PA_a", "alice", 1),
        ("PA_b", "bob", 2),
    ] {
        store
            .participant_joined(&join("lobby", sid, identity, t(at)))
            .await
            .expect("join");
    }
    store
        .participant_left(
            "PA_a",
            &leave_with(t(5), "CLIENT_INITIATED", summary(1, None)),
        )
        .await
        .expect("leave");
    let open: Vec<String> = store
        .open_connections("lobby")
        .await
        .expect("open")
        .into_iter()
        .map(|p| p.sid)
        .collect();
    assert_eq!(open, ["PA_b", "PA_c"]);
    assert_not_found(store.open_connections("nowhere").await, "room `nowhere`");
}

pub async fn tracks_are_recorded_as_events(store: Arc<dyn Store>) {
    room_with_session(&*store, "lobby", "se_1", SessionState::Ready).await;
    let mut track = TrackEvent {
        room_id: "lobby".to_owned(),
        participant_sid: "PA_1".to_owned(),
        identity: "alice".to_owned(),
        track_sid: "TR_1".to_owned(),
        kind: "video".to_owned(),
        source: "camera".to_owned(),
        published: true,
        at: t(7),
    };
    store.record_track(&track).await.expect("published");
    track.published = false;
    track.at = t(8);
    store.record_track(&track).await.expect("unpublished");

    let log = events(&*store, "lobby").await;
    let tail = &log[log.len() - 2..];
    assert_eq!(kinds_of(tail), ["track_published", "track_unpublished"]);
    assert_eq!(tail[0].session_id.as_deref(), Some("se_1"));
    assert_eq!(tail[0].payload["track"]["track_sid"], json!("TR_1"));
    assert_eq!(tail[1].created_at, t(8));

    track.room_id = "nowhere".to_owned();
    assert_not_found(store.record_track(&track).await, "room `nowhere`");
}
