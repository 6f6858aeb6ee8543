//! Delivery once with two nodes: two delivery instances with their own node ids and their
//! own store pools on one fresh PostgreSQL schema, sending to one webhook receiver (and to
//! the nats-server on 127.0.0.1:4222). Only the holder of a sink's lease delivers; the other
//! takes over when the holder dies (after the TTL) or stops (at once, it released). A
//! holder dying between a receiver's acceptance and its cursor write makes the one resend
//! the guarantee allows, recognisable by its id.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use super::support::{config, room_id, room_story, PgNodes, Received, Receiver, Running, WAIT};
use crate::config::{NatsSettings, DEFAULT_NATS_CLUSTER_PREFIX, DEFAULT_NATS_SESSION_SUBJECT};
use crate::delivery::{DeliveryConfig, EVENT_ID_HEADER};
use crate::store::{EventRecord, Store};

const NATS_URL: &str = "nats://127.0.0.1:4222";
/// Short, so a takeover after a kill takes seconds; renewed every third of it.
const TTL: Duration = Duration::from_secs(3);

fn node_config(receiver: &Receiver) -> DeliveryConfig {
    DeliveryConfig {
        webhook_urls: vec![receiver.url.clone()],
        lease_ttl: TTL,
        ..config()
    }
}

/// The event id a webhook carries, from its header, checked against its body.
fn event_id(request: &Received) -> i64 {
    let header = request
        .headers
        .get(EVENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .expect("every webhook names its event")
        .to_owned();
    assert_eq!(
        request.json()["id"],
        header.as_str(),
        "header and body agree"
    );
    header
        .strip_prefix("EV_")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not an EV_ id: {header}"))
}

fn ids(requests: &[Received]) -> Vec<i64> {
    requests.iter().map(event_id).collect()
}

fn log_ids(log: &[EventRecord]) -> Vec<i64> {
    log.iter().map(|e| e.id).collect()
}

async fn all_events(store: &dyn Store) -> Vec<EventRecord> {
    store.events_after(0, 1000).await.expect("read event log")
}

/// Each room's seqs, in the order they arrived, are 1, 2, 3 … without gaps.
fn assert_per_room_order(bodies: &[Value]) {
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for body in bodies {
        let room = body["roomId"].as_str().expect("roomId").to_owned();
        let seq = body["seq"].as_i64().expect("seq");
        let previous = last.insert(room, seq).unwrap_or(0);
        assert_eq!(seq, previous + 1, "per-room order: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_each_event_once_in_order() {
    PgNodes::run(|a, b, _| async move {
        let mut receiver = Receiver::start(&[]).await;
        let nats = async_nats::connect(NATS_URL).await.unwrap_or_else(|err| {
            panic!("this test needs nats-server listening on {NATS_URL}: {err}")
        });
        let prefix = format!("switchboard.events.test{}", ulid::Ulid::new());
        let mut published = nats
            .subscribe(format!("{prefix}.>"))
            .await
            .expect("subscribe");
        nats.flush().await.expect("subscription in place");
        let with_nats = |receiver: &Receiver| DeliveryConfig {
            nats: Some(NatsSettings {
                url: NATS_URL.to_owned(),
                subject_prefix: prefix.clone(),
                session_subject: DEFAULT_NATS_SESSION_SUBJECT.to_owned(),
                cluster_prefix: DEFAULT_NATS_CLUSTER_PREFIX.to_owned(),
            }),
            ..node_config(receiver)
        };
        let node_a = Running::start_as(&a, with_nats(&receiver), "ND_a");
        let node_b = Running::start_as(&b, with_nats(&receiver), "ND_b");

        // Both nodes write events (each its own rooms), interleaved in the shared log.
        let (room_a, room_b) = (room_id("ro_on_a"), room_id("ro_on_b"));
        tokio::join!(
            room_story(a.as_ref(), &room_a),
            room_story(b.as_ref(), &room_b),
        );
        node_a.wake.notify_waiters();
        node_b.wake.notify_waiters();
        let log = all_events(a.as_ref()).await;
        assert!(log.len() >= 24, "the stories wrote {} events", log.len());

        let received = receiver.take(log.len()).await;
        let mut messages = Vec::new();
        for _ in &log {
            let message = tokio::time::timeout(WAIT, published.next())
                .await
                .expect("a NATS message arrives in time")
                .expect("subscription open");
            messages.push(message);
        }
        // One node held each sink throughout: it never changed hands.
        for sink in [format!("webhook:{}", receiver.url), "nats".to_owned()] {
            let lease = b.delivery_lease(&sink).await.expect("lease").expect("row");
            assert_eq!(lease.generation, 1, "{sink}: {lease:?}");
        }
        tokio::join!(node_a.stop(), node_b.stop());

        // Every event once, in log order (hence per room in seq order), on both sinks.
        assert_eq!(ids(&received), log_ids(&log), "webhooks");
        let bodies: Vec<Value> = received.iter().map(Received::json).collect();
        assert_per_room_order(&bodies);
        assert!(receiver.rest().is_empty(), "no webhook twice");
        let nats_ids: Vec<i64> = messages
            .iter()
            .map(|m| {
                let body: Value = serde_json::from_slice(&m.payload).expect("JSON");
                let id = body["id"].as_i64().expect("id");
                let header = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID));
                assert_eq!(
                    header.map(|v| v.as_str().to_owned()),
                    Some(format!("EV_{id}")),
                    "the message id JetStream deduplicates by"
                );
                id
            })
            .collect();
        assert_eq!(nats_ids, log_ids(&log), "NATS");
        // Whatever the server routed to us before our flush is in the subscription now.
        nats.flush().await.expect("flush");
        assert!(
            published.next().now_or_never().is_none(),
            "no NATS message twice"
        );

        let last = log.last().expect("events").id;
        for sink in [format!("webhook:{}", receiver.url), "nats".to_owned()] {
            assert_eq!(
                b.delivery_cursor(&sink).await.expect("cursor"),
                last,
                "{sink}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_is_taken_over_after_the_ttl_without_loss_or_duplicates() {
    PgNodes::run(|a, b, _| async move {
        let mut receiver = Receiver::start(&[]).await;
        let sink = format!("webhook:{}", receiver.url);
        room_story(a.as_ref(), &room_id("ro_kill")).await;
        let log = all_events(a.as_ref()).await;
        // The third event is received but never answered: A is killed while it waits.
        let held = log[2].id;
        let _never = receiver.hold(held);

        let node_a = Running::start_as(&a, node_config(&receiver), "ND_a");
        let first = receiver.take(3).await;
        assert_eq!(ids(&first), log_ids(&log[..3]));
        // A stores each cursor before it sends the next event, so with the third one
        // unanswered the cursor is exactly the second: the stop falls between deliveries.
        assert_eq!(a.delivery_cursor(&sink).await.expect("cursor"), log[1].id);

        // B stands by while A holds the lease.
        let node_b = Running::start_as(&b, node_config(&receiver), "ND_b");
        let held_by_a = b.delivery_lease(&sink).await.expect("lease").expect("row");
        assert_eq!(
            (held_by_a.node_id.as_str(), held_by_a.generation),
            ("ND_a", 1)
        );

        node_a.abort().await;
        let a_lease = b.delivery_lease(&sink).await.expect("lease").expect("row");
        assert_eq!(a_lease.node_id, "ND_a", "a killed node releases nothing");

        // B resends the unanswered event once A's lease has run out, then the rest.
        let resent = receiver.next().await;
        assert!(
            Utc::now() >= a_lease.expires_at,
            "taken over only after A's lease expired at {}",
            a_lease.expires_at
        );
        assert_eq!(event_id(&resent), held);
        let rest = receiver.take(log.len() - 3).await;
        assert_eq!(ids(&rest), log_ids(&log[3..]));
        node_b.stop().await;
        assert!(receiver.rest().is_empty(), "nothing more, nothing twice");

        // What receivers accepted (a 2xx answer): every event exactly once, in order. The
        // held request got no answer: it is not a delivery, and its resend carries the same
        // id, so a receiver that did act on it can tell.
        let accepted: Vec<i64> = ids(&first[..2])
            .into_iter()
            .chain([event_id(&resent)])
            .chain(ids(&rest))
            .collect();
        assert_eq!(accepted, log_ids(&log));
        let mut bodies: Vec<Value> = first[..2].iter().map(Received::json).collect();
        bodies.push(resent.json());
        bodies.extend(rest.iter().map(Received::json));
        assert_per_room_order(&bodies);

        let lease = b.delivery_lease(&sink).await.expect("lease").expect("row");
        assert_eq!((lease.node_id.as_str(), lease.generation), ("ND_b", 2));
        assert_eq!(
            b.delivery_cursor(&sink).await.expect("cursor"),
            log.last().expect("events").id
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_holder_releases_and_the_other_node_carries_on() {
    PgNodes::run(|a, b, _| async move {
        let mut receiver = Receiver::start(&[]).await;
        let sink = format!("webhook:{}", receiver.url);
        // A long TTL: B can only take over this soon because A released.
        let long = DeliveryConfig {
            lease_ttl: Duration::from_secs(600),
            ..node_config(&receiver)
        };
        let node_a = Running::start_as(&a, long.clone(), "ND_a");
        room_story(a.as_ref(), &room_id("ro_before")).await;
        node_a.wake.notify_waiters();
        let before = all_events(a.as_ref()).await;
        let first = receiver.take(before.len()).await;
        assert_eq!(ids(&first), log_ids(&before));

        // B tries every 300 ms (a third of its own short TTL), but A's lease lasts 600 s:
        // B gets the sink within this test's wait only because A releases it.
        let node_b = Running::start_as(
            &b,
            DeliveryConfig {
                lease_ttl: Duration::from_millis(900),
                ..long
            },
            "ND_b",
        );
        node_a.stop().await;
        // Read right after the stop: A's released row, or B's already (B may have tried in
        // between; it could only succeed because A released, its TTL being 600 s).
        let row = b.delivery_lease(&sink).await.expect("lease").expect("row");
        match (row.node_id.as_str(), row.generation) {
            ("ND_a", 1) => assert!(row.expires_at < Utc::now(), "released on stop"),
            ("ND_b", 2) => {}
            other => panic!("after A's stop the lease is A's released one or B's: {other:?}"),
        }

        room_story(b.as_ref(), &room_id("ro_after")).await;
        node_b.wake.notify_waiters();
        let all = all_events(b.as_ref()).await;
        let after = receiver.take(all.len() - before.len()).await;
        assert_eq!(
            ids(&after),
            log_ids(&all[before.len()..]),
            "resumed after A's cursor"
        );
        node_b.stop().await;
        assert!(receiver.rest().is_empty(), "nothing twice");
        let lease = b.delivery_lease(&sink).await.expect("lease").expect("row");
        assert_eq!((lease.node_id.as_str(), lease.generation), ("ND_b", 2));
    })
    .await;
}

/// The one case the guarantee leaves: the receiver accepted an event, and the node died
/// before its cursor write committed. The test holds the sink's lease row locked (as a slow
/// database would), so A's fenced write cannot commit, lets the receiver accept the third
/// event, waits until A's write is blocked on that lock, and kills A. B then sends the
/// third event again, with the same id: the receiver can tell, and drop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_killed_between_acceptance_and_cursor_write_resends_that_event_with_its_id() {
    PgNodes::run(|a, b, options| async move {
        let mut receiver = Receiver::start(&[]).await;
        let sink = format!("webhook:{}", receiver.url);
        room_story(a.as_ref(), &room_id("ro_dup")).await;
        let log = all_events(a.as_ref()).await;
        let third = log[2].id;
        let accept = receiver.hold(third);

        // A longer lease than the other tests': while the test holds the row locked, A's
        // renewals wait too, and on a loaded machine A must not give the lease up (by its
        // own clock) before its cursor write is seen waiting. B takes over within WAIT.
        let patient = DeliveryConfig {
            lease_ttl: Duration::from_secs(10),
            ..node_config(&receiver)
        };
        let node_a = Running::start_as(&a, patient.clone(), "ND_a");
        let first = receiver.take(3).await;
        assert_eq!(ids(&first), log_ids(&log[..3]));
        let node_b = Running::start_as(&b, patient, "ND_b");

        let mut lock = PgConnection::connect_with(&options)
            .await
            .expect("a connection of the test's own");
        let locker: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut lock)
            .await
            .expect("pid");
        sqlx::query("BEGIN")
            .execute(&mut lock)
            .await
            .expect("begin");
        sqlx::query("SELECT 1 FROM delivery_leases WHERE sink = $1 FOR UPDATE")
            .bind(&sink)
            .execute(&mut lock)
            .await
            .expect("lock the lease row");
        accept.notify_one();
        // No event to await inside PostgreSQL: poll, bounded, until A's fenced write (its
        // own query text) waits on the lock this connection holds.
        let blocked = async {
            loop {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE $1 = ANY(pg_blocking_pids(pid)) \
                       AND query LIKE 'SELECT generation FROM delivery_leases%'",
                )
                .bind(locker)
                .fetch_one(&mut lock)
                .await
                .expect("pg_stat_activity");
                if waiting > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(WAIT, blocked)
            .await
            .expect("A's cursor write waits on the lock");
        node_a.abort().await;
        // Its connections go as a dead process's would.
        tokio::time::timeout(WAIT, a.close())
            .await
            .expect("A's pool closes");
        sqlx::query("ROLLBACK")
            .execute(&mut lock)
            .await
            .expect("unlock");
        assert_eq!(
            b.delivery_cursor(&sink).await.expect("cursor"),
            log[1].id,
            "the accepted third event's cursor never committed"
        );

        // B, once A's lease expired, sends the third event again, then the rest.
        let again = receiver.next().await;
        let rest = receiver.take(log.len() - 3).await;
        node_b.stop().await;
        assert!(receiver.rest().is_empty(), "nothing more");
        assert_eq!(event_id(&again), third, "the one resend");
        assert_eq!(
            again.json()["id"],
            first[2].json()["id"],
            "with the same id"
        );
        assert_eq!(again.json()["seq"], first[2].json()["seq"]);
        assert_eq!(ids(&rest), log_ids(&log[3..]));
        // Dropping what was seen before, by id, leaves every event once, in order.
        let mut seen = std::collections::BTreeSet::new();
        let deduplicated: Vec<i64> = first
            .iter()
            .chain([&again])
            .chain(&rest)
            .map(event_id)
            .filter(|id| seen.insert(*id))
            .collect();
        assert_eq!(deduplicated, log_ids(&log));
        assert_eq!(
            b.delivery_cursor(&sink).await.expect("cursor"),
            log.last().expect("events").id
        );
    })
    .await;
}
