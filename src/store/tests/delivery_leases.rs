//! Delivery once: a sink's delivery lease (grant, renewal, refusal, takeover after expiry,
//! release) and the cursor write it fences.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;

use super::fixtures::t;
use super::harness::PgSchema;
use crate::store::{DeliveryLease, DeliveryLeaseOutcome, PostgresStore, SqliteStore, Store};

const TTL: Duration = Duration::from_secs(15);
const HOOK: &str = "webhook:https://example.test/hook";

async fn acquire(
    store: &dyn Store,
    sink: &str,
    node: &str,
    at: DateTime<Utc>,
) -> DeliveryLeaseOutcome {
    store
        .acquire_delivery_lease(sink, node, at, TTL)
        .await
        .unwrap_or_else(|e| panic!("{node} acquires {sink}: {e}"))
}

fn granted(generation: i64, until: DateTime<Utc>) -> DeliveryLeaseOutcome {
    DeliveryLeaseOutcome::Granted {
        generation,
        expires_at: until,
    }
}

fn held_by(node: &str, generation: i64, until: DateTime<Utc>) -> DeliveryLeaseOutcome {
    DeliveryLeaseOutcome::HeldBy(DeliveryLease {
        sink: HOOK.into(),
        node_id: node.into(),
        generation,
        expires_at: until,
    })
}

async fn write(
    store: &dyn Store,
    node: &str,
    generation: i64,
    cursor: i64,
    at: DateTime<Utc>,
) -> bool {
    store
        .set_delivery_cursor_fenced(HOOK, node, generation, cursor, at)
        .await
        .unwrap_or_else(|e| panic!("{node} writes cursor {cursor}: {e}"))
}

pub async fn delivery_leases_grant_renew_refuse_expire_and_release(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(store.delivery_lease(HOOK).await.expect("none"), None);
    assert_eq!(acquire(store, HOOK, "ND_a", t(0)).await, granted(1, t(15)));
    // Another node is refused and told who holds it, in which generation, until when.
    assert_eq!(
        acquire(store, HOOK, "ND_b", t(5)).await,
        held_by("ND_a", 1, t(15))
    );
    // Sinks are independent.
    assert_eq!(
        acquire(store, "nats", "ND_b", t(5)).await,
        granted(1, t(20))
    );

    // The holder renews in the same generation; a late call never moves the expiry back.
    assert_eq!(acquire(store, HOOK, "ND_a", t(10)).await, granted(1, t(25)));
    assert_eq!(acquire(store, HOOK, "ND_a", t(8)).await, granted(1, t(25)));
    assert_eq!(
        acquire(store, HOOK, "ND_b", t(24)).await,
        held_by("ND_a", 1, t(25))
    );

    // Expired at t(25): taken over in a new generation; the old holder is refused.
    assert_eq!(acquire(store, HOOK, "ND_b", t(25)).await, granted(2, t(40)));
    assert_eq!(
        acquire(store, HOOK, "ND_a", t(26)).await,
        held_by("ND_b", 2, t(40))
    );

    // Only the holder of the current generation releases; the lease is then free at once.
    assert!(!store
        .release_delivery_lease(HOOK, "ND_a", 1)
        .await
        .expect("a"));
    assert!(!store
        .release_delivery_lease(HOOK, "ND_b", 1)
        .await
        .expect("old"));
    assert!(store
        .release_delivery_lease(HOOK, "ND_b", 2)
        .await
        .expect("b"));
    assert!(!store
        .release_delivery_lease(HOOK, "ND_b", 2)
        .await
        .expect("again"));
    let released = store
        .delivery_lease(HOOK)
        .await
        .expect("row")
        .expect("kept");
    assert_eq!(
        (released.node_id.as_str(), released.generation),
        ("ND_b", 2)
    );
    assert!(released.expires_at < t(0), "released: expired long ago");
    assert_eq!(acquire(store, HOOK, "ND_a", t(30)).await, granted(3, t(45)));

    // A holder that let its lease lapse gets it back, but as a new tenure: whatever it
    // remembered from the old one may be stale.
    assert_eq!(acquire(store, HOOK, "ND_a", t(45)).await, granted(4, t(60)));
    assert_eq!(
        store.delivery_lease(HOOK).await.expect("row"),
        Some(DeliveryLease {
            sink: HOOK.into(),
            node_id: "ND_a".into(),
            generation: 4,
            expires_at: t(60),
        })
    );
    assert!(
        store.events_after(0, 10).await.expect("log").is_empty(),
        "no events"
    );
}

pub async fn fenced_cursor_writes_need_the_current_lease(store: Arc<dyn Store>) {
    let store = &*store;
    // Nobody holds the sink: nothing is written.
    assert!(!write(store, "ND_a", 1, 5, t(0)).await);
    assert_eq!(store.delivery_cursor(HOOK).await.expect("cursor"), 0);

    assert_eq!(acquire(store, HOOK, "ND_a", t(0)).await, granted(1, t(15)));
    assert!(write(store, "ND_a", 1, 5, t(1)).await);
    assert_eq!(store.delivery_cursor(HOOK).await.expect("cursor"), 5);
    // Not the holder, not its generation, or past its expiry: refused.
    assert!(!write(store, "ND_b", 1, 6, t(2)).await);
    assert!(!write(store, "ND_a", 2, 6, t(2)).await);
    assert!(!write(store, "ND_a", 1, 6, t(15)).await);
    assert_eq!(store.delivery_cursor(HOOK).await.expect("cursor"), 5);

    // A was paused past its lease; B took over and moved on. A, waking up, can move the
    // cursor neither back nor forward.
    assert_eq!(acquire(store, HOOK, "ND_b", t(16)).await, granted(2, t(31)));
    assert!(write(store, "ND_b", 2, 9, t(17)).await);
    assert!(!write(store, "ND_a", 1, 7, t(17)).await);
    assert!(!write(store, "ND_a", 1, 12, t(17)).await);
    assert_eq!(store.delivery_cursor(HOOK).await.expect("cursor"), 9);
    // Nor after taking the lease again: that is a new generation, its old one stays refused.
    assert!(store
        .release_delivery_lease(HOOK, "ND_b", 2)
        .await
        .expect("release"));
    assert!(!write(store, "ND_b", 2, 10, t(18)).await);
    assert_eq!(acquire(store, HOOK, "ND_a", t(18)).await, granted(3, t(33)));
    assert!(!write(store, "ND_a", 1, 7, t(19)).await);
    assert!(write(store, "ND_a", 3, 10, t(19)).await);
    assert_eq!(store.delivery_cursor(HOOK).await.expect("cursor"), 10);
    // Other sinks' cursors are untouched.
    assert_eq!(store.delivery_cursor("nats").await.expect("nats"), 0);
}

/// Two stores on one database (two nodes) take the same `SINKS` sinks at once, in opposite
/// orders. Every sink ends with exactly one holder, in generation 1, and every refusal names
/// it.
async fn race(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    const SINKS: usize = 50;
    let sinks: Vec<String> = (0..SINKS).map(|i| format!("webhook:race/{i:02}")).collect();
    let now = Utc::now();
    let mut tasks = Vec::new();
    for i in 0..SINKS {
        for (store, node, sink) in [
            (&a, "ND_a", sinks[i].clone()),
            (&b, "ND_b", sinks[SINKS - 1 - i].clone()),
        ] {
            let store = Arc::clone(store);
            tasks.push(tokio::spawn(async move {
                let got = store
                    .acquire_delivery_lease(&sink, node, now, TTL)
                    .await
                    .unwrap_or_else(|e| panic!("{node} acquires {sink}: {e}"));
                (sink, node, got)
            }));
        }
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task"));
    }
    for sink in &sinks {
        let holder = a.delivery_lease(sink).await.expect("lease").expect("row");
        assert_eq!(holder.generation, 1, "{sink}");
        let mine: Vec<_> = outcomes.iter().filter(|(s, _, _)| s == sink).collect();
        assert_eq!(mine.len(), 2);
        let granted: Vec<&str> = mine
            .iter()
            .filter(|(_, _, got)| matches!(got, DeliveryLeaseOutcome::Granted { .. }))
            .map(|(_, node, _)| *node)
            .collect();
        assert_eq!(granted, [holder.node_id.as_str()], "{sink}: one holder");
        for (_, node, got) in mine {
            if let DeliveryLeaseOutcome::HeldBy(lease) = got {
                assert_ne!(*node, holder.node_id, "{sink}");
                assert_eq!(lease, &holder, "{sink}: the refusal names the holder");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_nodes_racing_for_50_sinks_give_each_one_holder() {
    let schema = PgSchema::create().await;
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..2 {
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
    let outcome = tokio::spawn(race(Arc::clone(&stores[0]), Arc::clone(&stores[1]))).await;
    for store in &stores {
        store.close().await;
    }
    schema.drop_schema().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_stores_racing_for_50_sinks_give_each_one_holder() {
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
