//! Cluster membership: registering, heartbeats, states and liveness.

use std::sync::Arc;
use std::time::Duration;

use super::fixtures::{assert_not_found, t};
use crate::store::{NodeLoad, NodeRecord, NodeRegistration, NodeState, Store};

const TIMEOUT: Duration = Duration::from_secs(10);

pub fn registration(node_id: &str, at_secs: i64) -> NodeRegistration {
    NodeRegistration {
        node_id: node_id.to_owned(),
        http_url: format!("http://{node_id}.test:7880"),
        public_url: format!("ws://{node_id}.test:7880"),
        max_rooms: 100,
        started_at: t(at_secs),
    }
}

async fn node(store: &dyn Store, node_id: &str, now_secs: i64) -> NodeRecord {
    store
        .list_nodes(t(now_secs), TIMEOUT)
        .await
        .expect("list_nodes")
        .into_iter()
        .find(|n| n.node_id == node_id)
        .unwrap_or_else(|| panic!("node {node_id} is listed"))
}

pub async fn nodes_register_heartbeat_and_list(store: Arc<dyn Store>) {
    assert!(store
        .list_nodes(t(0), TIMEOUT)
        .await
        .expect("empty")
        .is_empty());
    store
        .register_node(&registration("ND_b", 1))
        .await
        .expect("b");
    store
        .register_node(&registration("ND_a", 0))
        .await
        .expect("a");

    let listed = store.list_nodes(t(5), TIMEOUT).await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(ids, ["ND_a", "ND_b"], "ordered by node id");
    let a = &listed[0];
    assert_eq!(a.http_url, "http://ND_a.test:7880");
    assert_eq!(a.public_url, "ws://ND_a.test:7880");
    assert_eq!(a.max_rooms, 100);
    assert_eq!(a.load, NodeLoad::default());
    assert_eq!(a.state, NodeState::Active);
    assert_eq!((a.started_at, a.heartbeat_at), (t(0), t(0)));
    assert_eq!(a.released_at, None);
    assert!(listed.iter().all(|n| n.alive), "{listed:#?}");

    // A heartbeats with its load; B falls silent and is dead once past the timeout.
    let load = NodeLoad {
        rooms: 3,
        participants: 17,
    };
    store
        .node_heartbeat("ND_a", load, t(20))
        .await
        .expect("heartbeat");
    let a = node(&*store, "ND_a", 20).await;
    assert_eq!((a.load, a.heartbeat_at, a.alive), (load, t(20), true));
    assert!(
        !node(&*store, "ND_b", 20).await.alive,
        "20 s without heartbeat"
    );
    assert!(
        node(&*store, "ND_b", 11).await.alive,
        "exactly at the timeout"
    );
    assert!(!node(&*store, "ND_b", 12).await.alive);

    // A late heartbeat never moves heartbeat_at back.
    store
        .node_heartbeat("ND_a", NodeLoad::default(), t(15))
        .await
        .expect("late heartbeat");
    assert_eq!(node(&*store, "ND_a", 20).await.heartbeat_at, t(20));

    // Draining is alive; stopped is not, however fresh its heartbeat.
    store
        .set_node_state("ND_a", NodeState::Draining, t(21))
        .await
        .expect("draining");
    let a = node(&*store, "ND_a", 21).await;
    assert_eq!(
        (a.state, a.alive, a.heartbeat_at),
        (NodeState::Draining, true, t(21))
    );
    store
        .set_node_state("ND_a", NodeState::Stopped, t(22))
        .await
        .expect("stopped");
    let a = node(&*store, "ND_a", 22).await;
    assert_eq!((a.state, a.alive), (NodeState::Stopped, false));

    // Registering again (a restart) replaces the row: active, no load, new start.
    store
        .register_node(&NodeRegistration {
            http_url: "http://elsewhere.test:7880".to_owned(),
            ..registration("ND_a", 30)
        })
        .await
        .expect("again");
    let a = node(&*store, "ND_a", 30).await;
    assert_eq!(a.state, NodeState::Active);
    assert_eq!(a.load, NodeLoad::default());
    assert_eq!((a.started_at, a.heartbeat_at), (t(30), t(30)));
    assert_eq!(a.http_url, "http://elsewhere.test:7880");
    assert!(a.alive);

    assert_not_found(
        store
            .node_heartbeat("ND_nobody", NodeLoad::default(), t(1))
            .await,
        "ND_nobody",
    );
    assert_not_found(
        store
            .set_node_state("ND_nobody", NodeState::Stopped, t(1))
            .await,
        "ND_nobody",
    );
}
