//! Placement by lease: grant, renewal, refusal, takeover after expiry, release, and two
//! store instances (two nodes) racing for the same rooms.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;

use super::fixtures::{assert_not_found, t};
use super::harness::PgSchema;
use super::nodes::registration;
use crate::store::{LeaseOutcome, PostgresStore, RoomLease, SqliteStore, Store};

const TTL: Duration = Duration::from_secs(15);
const NODE_TIMEOUT: Duration = Duration::from_secs(10);

async fn acquire(store: &dyn Store, room: &str, node: &str, at: DateTime<Utc>) -> LeaseOutcome {
    store
        .acquire_room_lease(room, node, at, TTL)
        .await
        .unwrap_or_else(|e| panic!("{node} acquires {room}: {e}"))
}

async fn owner(store: &dyn Store, room: &str, at: DateTime<Utc>) -> Option<String> {
    store
        .room_owner(room, at)
        .await
        .expect("room_owner")
        .map(|lease| lease.node_id)
}

fn granted(until: DateTime<Utc>) -> LeaseOutcome {
    LeaseOutcome::Granted { expires_at: until }
}

pub async fn leases_grant_renew_refuse_expire_and_release(store: Arc<dyn Store>) {
    let store = &*store;
    store
        .register_node(&registration("ND_a", 0))
        .await
        .expect("register a");
    // The room is not recorded: a lease comes before the join that creates it.
    assert_eq!(acquire(store, "r1", "ND_a", t(0)).await, granted(t(15)));
    assert_not_found(store.get_room("r1").await, "r1");
    let lease = store.room_owner("r1", t(1)).await.expect("owner");
    assert_eq!(
        lease,
        Some(RoomLease {
            room_id: "r1".into(),
            node_id: "ND_a".into(),
            expires_at: t(15),
            public_url: Some("ws://ND_a.test:7880".into()),
            http_url: Some("http://ND_a.test:7880".into()),
        })
    );

    // Another node is refused and told who holds it, until when, and where it is.
    let refused = acquire(store, "r1", "ND_b", t(5)).await;
    assert_eq!(refused, LeaseOutcome::HeldBy(lease.clone().expect("lease")));

    // The holder renews; a late call never moves the expiry back.
    assert_eq!(acquire(store, "r1", "ND_a", t(10)).await, granted(t(25)));
    assert_eq!(acquire(store, "r1", "ND_a", t(8)).await, granted(t(25)));
    assert!(matches!(
        acquire(store, "r1", "ND_b", t(24)).await,
        LeaseOutcome::HeldBy(RoomLease { ref node_id, .. }) if node_id == "ND_a"
    ));

    // Expired at t(25): taken over; an unregistered holder has no known URL.
    assert_eq!(acquire(store, "r1", "ND_b", t(25)).await, granted(t(40)));
    let taken = store.room_owner("r1", t(26)).await.expect("owner");
    assert_eq!(taken.as_ref().map(|l| l.node_id.as_str()), Some("ND_b"));
    assert_eq!(taken.and_then(|l| l.public_url), None);
    assert_eq!(owner(store, "r1", t(40)).await, None, "expired at t(40)");

    // Only the holder releases; then anyone takes it at once.
    assert!(!store.release_room_lease("r1", "ND_a").await.expect("a"));
    assert_eq!(owner(store, "r1", t(30)).await.as_deref(), Some("ND_b"));
    assert!(store.release_room_lease("r1", "ND_b").await.expect("b"));
    assert!(!store.release_room_lease("r1", "ND_b").await.expect("again"));
    assert_eq!(owner(store, "r1", t(30)).await, None);
    assert_eq!(acquire(store, "r1", "ND_a", t(30)).await, granted(t(45)));
}

pub async fn renewal_reports_the_rooms_another_node_took(store: Arc<dyn Store>) {
    let store = &*store;
    for room in ["r1", "r2", "r3"] {
        assert_eq!(acquire(store, room, "ND_a", t(0)).await, granted(t(15)));
    }
    // A was cut off: its leases ran out and B took r2.
    assert_eq!(acquire(store, "r2", "ND_b", t(16)).await, granted(t(31)));
    let rooms: Vec<String> = ["r3", "r2", "r1", "r4", "r3"].map(String::from).into();
    let lost = store
        .renew_room_leases("ND_a", &rooms, t(17), TTL)
        .await
        .expect("renew");
    assert_eq!(lost, ["r2"]);
    // Expired but untaken leases, and rooms without one, are A's again.
    for room in ["r1", "r3", "r4"] {
        assert_eq!(owner(store, room, t(31)).await.as_deref(), Some("ND_a"));
    }
    assert_eq!(owner(store, "r2", t(30)).await.as_deref(), Some("ND_b"));
    let none = store
        .renew_room_leases("ND_a", &[], t(18), TTL)
        .await
        .expect("renew nothing");
    assert!(none.is_empty());
}

pub async fn releasing_a_dead_node_frees_its_leases(store: Arc<dyn Store>) {
    let store = &*store;
    for node in ["ND_a", "ND_b"] {
        store
            .register_node(&registration(node, 0))
            .await
            .expect("register");
    }
    let long = Duration::from_secs(600);
    for (room, node) in [("r1", "ND_a"), ("r2", "ND_b")] {
        let got = store
            .acquire_room_lease(room, node, t(0), long)
            .await
            .expect("acquire");
        assert_eq!(got, granted(t(600)));
    }
    // Still alive at t(5): nothing is released.
    store
        .release_node("ND_a", t(5), NODE_TIMEOUT)
        .await
        .expect("release live a");
    assert_eq!(owner(store, "r1", t(6)).await.as_deref(), Some("ND_a"));
    // B heartbeats; A is dead past the timeout: its lease goes long before it would expire.
    store
        .node_heartbeat("ND_b", Default::default(), t(29))
        .await
        .expect("b beats");
    store
        .release_node("ND_a", t(30), NODE_TIMEOUT)
        .await
        .expect("release dead a");
    assert_eq!(owner(store, "r1", t(31)).await, None);
    assert_eq!(owner(store, "r2", t(31)).await.as_deref(), Some("ND_b"));
    assert_eq!(acquire(store, "r1", "ND_b", t(31)).await, granted(t(46)));
}

/// Two stores on one database (two nodes) each try to take the same `ROOMS` rooms at once,
/// in opposite orders so that their attempts interleave. Every room ends with exactly one
/// owner, and every answer agrees with it.
async fn race(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    const ROOMS: usize = 100;
    let rooms: Vec<String> = (0..ROOMS).map(|i| format!("race_{i:03}")).collect();
    let now = Utc::now();
    let mut tasks = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        for (store, node) in [(&a, "ND_a"), (&b, "ND_b")] {
            // B walks the rooms backwards.
            let room = if node == "ND_a" {
                room.clone()
            } else {
                rooms[ROOMS - 1 - i].clone()
            };
            let store = Arc::clone(store);
            tasks.push(tokio::spawn(async move {
                let got = store
                    .acquire_room_lease(&room, node, now, TTL)
                    .await
                    .unwrap_or_else(|e| panic!("{node} acquires {room}: {e}"));
                (room, node, got)
            }));
        }
    }
    let mut winners: std::collections::HashMap<String, Vec<&str>> = Default::default();
    let mut outcomes = Vec::new();
    for task in tasks {
        let (room, node, got) = task.await.expect("task");
        if matches!(got, LeaseOutcome::Granted { .. }) {
            winners.entry(room.clone()).or_default().push(node);
        }
        outcomes.push((room, node, got));
    }
    for room in &rooms {
        let won = winners.get(room).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(won.len(), 1, "{room} granted to {won:?}");
        let final_owner = owner(&*a, room, now).await;
        assert_eq!(final_owner.as_deref(), Some(won[0]), "{room}");
        assert_eq!(
            owner(&*b, room, now).await,
            final_owner,
            "{room} seen from B"
        );
    }
    for (room, node, got) in outcomes {
        let winner = winners[&room][0];
        match got {
            LeaseOutcome::Granted { .. } => assert_eq!(node, winner),
            LeaseOutcome::HeldBy(lease) => {
                assert_ne!(node, winner, "{node} was refused {room} yet owns it");
                assert_eq!(lease.node_id, winner, "{room}");
            }
        }
    }
    let a_won = winners.values().filter(|w| w[0] == "ND_a").count();
    eprintln!("race: ND_a took {a_won} rooms, ND_b {}", ROOMS - a_won);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_nodes_racing_for_100_rooms_give_each_one_owner() {
    let schema = PgSchema::create().await;
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..2 {
        // A pool per node, as two processes would have.
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30));
        match PostgresStore::connect_with(schema.store_options(), pool).await {
            Ok(store) => stores.push(Arc::new(store)),
            Err(e) => {
                schema.drop_schema().await;
                panic!("open a PostgreSQL store: {e}");
            }
        }
    }
    let (a, b) = (Arc::clone(&stores[0]), Arc::clone(&stores[1]));
    let outcome = tokio::spawn(race(a, b)).await;
    for store in &stores {
        store.close().await;
    }
    schema.drop_schema().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_stores_on_one_file_racing_for_100_rooms_give_each_one_owner() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("store.db").display()
    );
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.expect("open a"));
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.expect("open b"));
    race(Arc::clone(&a), Arc::clone(&b)).await;
    a.close().await;
    b.close().await;
}
