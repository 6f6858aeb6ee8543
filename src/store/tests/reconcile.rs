//! Crash recovery: what reconcile_after_restart closes, moves and fails, with its events.

use std::sync::Arc;

use serde_json::json;

use super::fixtures::{
    egress_update, events, join, join_in, kinds_of, new_egress, room_spec, room_with_session, t,
};
use crate::store::{EgressStatus, Reconciled, RoomStatus, SessionState, Store};

pub async fn reconcile_after_restart_applies_every_rule(store: Arc<dyn Store>) {
    // live: a LIVE session with its host connected and an active egress.
    room_with_session(&*store, "live", "se_live", SessionState::Live).await;
    store
        .participant_joined(&join_in("live", "PA_host", "host", "se_live", t(10)))
        .await
        .expect("host");
    store
        .participant_joined(&join("live", "PA_view", "viewer", t(11)))
        .await
        .expect("viewer");
    store
        .create_egress(&new_egress("eg_live", "live", Some("se_live"), t(10)))
        .await
        .expect("egress");
    store
        .update_egress("eg_live", &egress_update(EgressStatus::Active, t(11)))
        .await
        .expect("active");
    // A finished egress of that room stays as it is.
    store
        .create_egress(&new_egress("eg_done", "live", None, t(5)))
        .await
        .expect("egress 2");
    store
        .update_egress("eg_done", &egress_update(EgressStatus::Complete, t(6)))
        .await
        .expect("complete");
    // publishing: the egress was starting.
    room_with_session(&*store, "publishing", "se_pub", SessionState::Publishing).await;
    store
        .create_egress(&new_egress("eg_pub", "publishing", Some("se_pub"), t(10)))
        .await
        .expect("egress");
    // ending: waiting for the egress to finish.
    room_with_session(&*store, "ending", "se_end", SessionState::Ending).await;
    store
        .create_egress(&new_egress("eg_end", "ending", Some("se_end"), t(10)))
        .await
        .expect("egress");
    store
        .update_egress("eg_end", &egress_update(EgressStatus::Ending, t(11)))
        .await
        .expect("ending");
    // ready: the host is connected, nothing was live.
    room_with_session(&*store, "ready", "se_ready", SessionState::Ready).await;
    store
        .participant_joined(&join_in("ready", "PA_r", "host", "se_ready", t(10)))
        .await
        .expect("host");
    // idle: nothing to do at all.
    room_with_session(&*store, "idle", "se_idle", SessionState::Idle).await;
    store
        .create_room(&room_spec("empty", t(0)))
        .await
        .expect("empty");

    let counts: Vec<(String, usize)> = {
        let mut counts = Vec::new();
        for room in ["live", "publishing", "ending", "ready", "idle", "empty"] {
            counts.push((room.to_owned(), events(&*store, room).await.len()));
        }
        counts
    };

    let done = store
        .reconcile_after_restart("ND_a", t(100))
        .await
        .expect("reconcile");
    assert_eq!(
        done,
        Reconciled {
            connections_closed: 3,
            sessions_moved: 3,
            egress_failed: 3,
            rooms_closed: 0,
        }
    );

    let state = |id: &'static str| {
        let store = Arc::clone(&store);
        async move { store.get_session(id).await.expect("session").state }
    };
    assert_eq!(state("se_live").await, SessionState::Stopped);
    assert_eq!(state("se_pub").await, SessionState::Cancelled);
    assert_eq!(state("se_end").await, SessionState::Stopped);
    assert_eq!(
        state("se_ready").await,
        SessionState::Ready,
        "waits for its host"
    );
    assert_eq!(state("se_idle").await, SessionState::Idle);
    assert_eq!(
        store.get_session("se_live").await.expect("get").ended_at,
        Some(t(100))
    );

    for id in ["eg_live", "eg_pub", "eg_end"] {
        let egress = store.get_egress(id).await.expect("egress");
        assert_eq!(egress.status, EgressStatus::Failed, "{id}");
        assert_eq!(
            egress.error.as_deref(),
            Some("server restarted during egress")
        );
        assert_eq!(egress.ended_at, Some(t(100)));
    }
    assert_eq!(
        store.get_egress("eg_done").await.expect("done").status,
        EgressStatus::Complete
    );

    for room in ["live", "ready"] {
        assert!(store.open_connections(room).await.expect("open").is_empty());
        for c in store.list_participants(room).await.expect("list") {
            assert_eq!(c.left_at, Some(t(100)));
            assert_eq!(c.leave_reason.as_deref(), Some("server_restart"));
        }
    }
    let host = &store
        .list_session_participants("se_ready")
        .await
        .expect("participants")[0];
    assert_eq!(host.leave_reason.as_deref(), Some("server_restart"));
    assert_eq!(host.left_at, Some(t(100)));

    // Rooms stay active: the idle sweep closes them later.
    for room in store.list_rooms(None).await.expect("rooms") {
        assert_eq!(room.status, RoomStatus::Active, "{}", room.room_id);
    }

    let new_events = |room: &'static str| {
        let store = Arc::clone(&store);
        let before = counts
            .iter()
            .find(|(r, _)| r == room)
            .map(|(_, n)| *n)
            .expect("counted");
        async move { events(&*store, room).await.split_off(before) }
    };
    let live = new_events("live").await;
    assert_eq!(
        kinds_of(&live),
        [
            "participant_left",
            "participant_left",
            "egress_ended",
            "session_state_changed",
            "session_state_changed",
        ]
    );
    assert_eq!(live[3].payload["to"], json!("ENDING"));
    assert_eq!(live[4].payload["to"], json!("STOPPED"));
    assert_eq!(live[4].payload["reason"], json!("server_restart"));
    assert_eq!(live[2].payload["egress"]["status"], json!("failed"));
    let publishing = new_events("publishing").await;
    assert_eq!(
        kinds_of(&publishing),
        ["egress_ended", "session_state_changed"]
    );
    assert_eq!(publishing[1].payload["to"], json!("CANCELLED"));
    let ending = new_events("ending").await;
    assert_eq!(kinds_of(&ending), ["egress_ended", "session_state_changed"]);
    assert_eq!(ending[1].payload["to"], json!("STOPPED"));
    assert_eq!(kinds_of(&new_events("ready").await), ["participant_left"]);
    assert!(new_events("idle").await.is_empty());
    assert!(new_events("empty").await.is_empty());
    for room in ["live", "publishing", "ending", "ready"] {
        super::fixtures::assert_gapless(&events(&*store, room).await);
    }

    // A second run finds nothing left to do.
    let again = store
        .reconcile_after_restart("ND_a", t(200))
        .await
        .expect("again");
    assert_eq!(again, Reconciled::default());
}
