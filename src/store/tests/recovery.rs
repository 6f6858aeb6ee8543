//! Recovery per node: a restarted node closes only its own (and pre-cluster) rows, and a
//! live node releases a dead node's rows once, however often and however many nodes try.

use std::sync::Arc;
use std::time::Duration;

use super::fixtures::{
    egress_update, events, join, kinds_of, new_egress, new_room, room_with_session, t,
};
use super::nodes::registration;
use crate::store::{EgressStatus, NodeLoad, Reconciled, SessionState, Store};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A room running on `node` with a LIVE session, one connection and an active egress, all
/// recorded by that node.
async fn live_room_on(store: &dyn Store, node: &str, room: &str) {
    room_with_session(store, room, &format!("se_{room}"), SessionState::Live).await;
    store
        .room_started(&crate::store::NewRoom {
            node_id: Some(node.to_owned()),
            ..new_room(room, &format!("RM_{room}"), t(6))
        })
        .await
        .expect("room started on its node");
    connect(store, node, room, &format!("PA_{room}")).await;
    store
        .create_egress(&crate::store::NewEgress {
            node_id: Some(node.to_owned()),
            ..new_egress(
                &format!("eg_{room}"),
                room,
                Some(&format!("se_{room}")),
                t(8),
            )
        })
        .await
        .expect("egress");
    store
        .update_egress(
            &format!("eg_{room}"),
            &egress_update(EgressStatus::Active, t(9)),
        )
        .await
        .expect("egress active");
}

async fn connect(store: &dyn Store, node: &str, room: &str, sid: &str) {
    store
        .participant_joined(&crate::store::ParticipantJoin {
            node_id: Some(node.to_owned()),
            ..join(room, sid, &format!("id_{sid}"), t(7))
        })
        .await
        .expect("join");
}

/// A room and a connection recorded before clustering (no node).
async fn legacy_connection(store: &dyn Store) {
    store
        .create_room(&super::fixtures::room_spec("legacy", t(0)))
        .await
        .expect("legacy room");
    store
        .participant_joined(&join("legacy", "PA_legacy", "old", t(7)))
        .await
        .expect("legacy join");
}

async fn open_sids(store: &dyn Store, room: &str) -> Vec<String> {
    let open = store
        .open_connections(room)
        .await
        .expect("open connections");
    open.into_iter().map(|c| c.sid).collect()
}

async fn session_state(store: &dyn Store, room: &str) -> SessionState {
    store
        .get_session(&format!("se_{room}"))
        .await
        .expect("session")
        .state
}

async fn egress_status(store: &dyn Store, room: &str) -> EgressStatus {
    store
        .get_egress(&format!("eg_{room}"))
        .await
        .expect("egress")
        .status
}

/// Node B's room must look exactly as B left it.
async fn assert_untouched(store: &dyn Store, room: &str) {
    assert_eq!(
        open_sids(store, room).await,
        [format!("PA_{room}")],
        "{room}"
    );
    assert_eq!(
        session_state(store, room).await,
        SessionState::Live,
        "{room}"
    );
    assert_eq!(
        egress_status(store, room).await,
        EgressStatus::Active,
        "{room}"
    );
}

pub async fn restart_reconciles_only_its_own_rows(store: Arc<dyn Store>) {
    live_room_on(&*store, "ND_a", "ra").await;
    live_room_on(&*store, "ND_b", "rb").await;
    // A connection of A's in a room B runs, and one written before clustering (no node).
    connect(&*store, "ND_a", "rb", "PA_rb_from_a").await;
    legacy_connection(&*store).await;
    let rb_events = events(&*store, "rb").await.len();

    let done = store
        .reconcile_after_restart("ND_a", t(100))
        .await
        .expect("reconcile A");
    assert_eq!(
        done,
        Reconciled {
            connections_closed: 3,
            sessions_moved: 1,
            egress_failed: 1,
            rooms_closed: 0,
        }
    );
    // A's own room is closed down as a restart does.
    assert!(open_sids(&*store, "ra").await.is_empty());
    assert_eq!(session_state(&*store, "ra").await, SessionState::Stopped);
    assert_eq!(egress_status(&*store, "ra").await, EgressStatus::Failed);
    let left = store.get_participant("PA_ra").await.expect("PA_ra");
    assert_eq!(left.leave_reason.as_deref(), Some("server_restart"));
    // Pre-cluster rows count as the restarting node's.
    assert!(open_sids(&*store, "legacy").await.is_empty());
    // B's room keeps everything B wrote; only A's connection in it is closed.
    assert_untouched(&*store, "rb").await;
    let rb_new = events(&*store, "rb").await.split_off(rb_events);
    assert_eq!(kinds_of(&rb_new), ["participant_left"]);
    assert_eq!(rb_new[0].payload["participant"]["sid"], "PA_rb_from_a");

    // Idempotent, and B's own restart then closes B's rows.
    let again = store
        .reconcile_after_restart("ND_a", t(101))
        .await
        .expect("again");
    assert_eq!(again, Reconciled::default());
    let b = store
        .reconcile_after_restart("ND_b", t(102))
        .await
        .expect("B");
    assert_eq!(
        (b.connections_closed, b.sessions_moved, b.egress_failed),
        (1, 1, 1)
    );
    assert_eq!(session_state(&*store, "rb").await, SessionState::Stopped);
}

pub async fn releasing_a_dead_node_closes_its_rows_once(store: Arc<dyn Store>) {
    store
        .register_node(&registration("ND_a", 0))
        .await
        .expect("a");
    store
        .register_node(&registration("ND_b", 0))
        .await
        .expect("b");
    live_room_on(&*store, "ND_a", "ra").await;
    live_room_on(&*store, "ND_b", "rb").await;
    legacy_connection(&*store).await;

    // Within the timeout A is alive: nothing is released.
    let early = store
        .release_node("ND_a", t(10), TIMEOUT)
        .await
        .expect("early");
    assert_eq!(early, Reconciled::default());
    assert_eq!(open_sids(&*store, "ra").await, ["PA_ra"]);

    // B keeps heartbeating, A does not.
    store
        .node_heartbeat("ND_b", NodeLoad::default(), t(30))
        .await
        .expect("b heartbeat");
    let done = store
        .release_node("ND_a", t(30), TIMEOUT)
        .await
        .expect("release");
    assert_eq!(
        done,
        Reconciled {
            connections_closed: 1,
            sessions_moved: 1,
            egress_failed: 1,
            rooms_closed: 0,
        }
    );
    assert!(open_sids(&*store, "ra").await.is_empty());
    let left = store.get_participant("PA_ra").await.expect("PA_ra");
    assert_eq!(left.leave_reason.as_deref(), Some("node_lost"));
    assert_eq!(session_state(&*store, "ra").await, SessionState::Stopped);
    let egress = store.get_egress("eg_ra").await.expect("egress");
    assert_eq!(egress.status, EgressStatus::Failed);
    assert_eq!(
        egress.error.as_deref(),
        Some("the node running the egress was lost")
    );
    let ra_events = events(&*store, "ra").await;
    let last = ra_events.last().expect("events");
    assert_eq!(last.payload["reason"], "node_lost", "{last:?}");
    super::fixtures::assert_gapless(&ra_events);
    // Other nodes' rows, and rows from before clustering, are not a dead node's.
    assert_untouched(&*store, "rb").await;
    assert_eq!(open_sids(&*store, "legacy").await, ["PA_legacy"]);
    let listed = store.list_nodes(t(30), TIMEOUT).await.expect("nodes");
    let a = listed.iter().find(|n| n.node_id == "ND_a").expect("A");
    assert_eq!((a.alive, a.released_at), (false, Some(t(30))));

    // Twice is a no-op; a live node is never released.
    let all_before = super::fixtures::all_events(&*store).await.len();
    let twice = store
        .release_node("ND_a", t(31), TIMEOUT)
        .await
        .expect("twice");
    assert_eq!(twice, Reconciled::default());
    let live = store
        .release_node("ND_b", t(31), TIMEOUT)
        .await
        .expect("live B");
    assert_eq!(live, Reconciled::default());
    let unknown = store
        .release_node("ND_x", t(31), TIMEOUT)
        .await
        .expect("unknown");
    assert_eq!(unknown, Reconciled::default());
    assert_eq!(super::fixtures::all_events(&*store).await.len(), all_before);
    assert_untouched(&*store, "rb").await;

    // A comes back: registered again, its new rows are its own until it dies again.
    store
        .register_node(&registration("ND_a", 40))
        .await
        .expect("a back");
    connect(&*store, "ND_a", "ra", "PA_ra_2").await;
    let back = store
        .release_node("ND_a", t(45), TIMEOUT)
        .await
        .expect("back");
    assert_eq!(back, Reconciled::default());
    assert_eq!(open_sids(&*store, "ra").await, ["PA_ra_2"]);
    let later = store
        .release_node("ND_a", t(51), TIMEOUT)
        .await
        .expect("dead again");
    assert_eq!(later.connections_closed, 1);
}

pub async fn concurrent_releases_close_everything_once(store: Arc<dyn Store>) {
    store
        .register_node(&registration("ND_dead", 0))
        .await
        .expect("dead");
    let rooms = ["c1", "c2", "c3", "c4"];
    for room in rooms {
        live_room_on(&*store, "ND_dead", room).await;
    }
    // Two live nodes notice at once.
    let (first, second) = tokio::join!(
        store.release_node("ND_dead", t(60), TIMEOUT),
        store.release_node("ND_dead", t(60), TIMEOUT),
    );
    let (first, second) = (first.expect("first"), second.expect("second"));
    assert_eq!(first.connections_closed + second.connections_closed, 4);
    assert_eq!(first.sessions_moved + second.sessions_moved, 4);
    assert_eq!(first.egress_failed + second.egress_failed, 4);
    for room in rooms {
        let log = events(&*store, room).await;
        super::fixtures::assert_gapless(&log);
        let left = kinds_of(&log)
            .iter()
            .filter(|k| **k == "participant_left")
            .count();
        assert_eq!(left, 1, "{room}: {:?}", kinds_of(&log));
        assert_eq!(session_state(&*store, room).await, SessionState::Stopped);
    }
}
