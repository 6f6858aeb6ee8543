//! Backend-specific checks of issue 3's schema: migration 0002 upgrades a database that holds
//! issue 2's data, a change and its events share one transaction (an injected failure of
//! the event insert undoes the change), and delivery state survives a reopen.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use super::fixtures::{all_events, join_in, leave, room_with_session, t};
use super::harness::PgSchema;
use crate::store::{PostgresStore, RoomStatus, SessionState, SqliteStore, Store, StoreError};

/// A migrations folder holding only 0001 of `dialect`, to build an issue-2 database.
fn first_migration_only(dialect: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect)
        .join("0001_rooms_participants.sql");
    std::fs::copy(&source, dir.path().join("0001_rooms_participants.sql"))
        .expect("copy migration 0001");
    dir
}

// Issue 2's rows: an active room with a closed and an open connection, and a closed room.
const ISSUE_2_ROWS: [&str; 4] = [
    "INSERT INTO rooms (room_id, sid, name, metadata, status, created_at, last_active_at, \
         closed_at, empty_timeout_secs, max_participants) \
     VALUES ('lobby', 'RM_1', 'Lobby', NULL, 'active', {t0}, {t0}, NULL, 300, 0), \
            ('gone', 'RM_2', NULL, NULL, 'closed', {t0}, {t0}, {t0}, 60, 5)",
    "INSERT INTO participants (sid, room_id, identity, name, role, metadata, joined_at, \
         left_at, leave_reason, bytes_in, bytes_out, packets_in, packets_out, packets_lost, \
         rtt_ms) \
     VALUES ('PA_1', 'lobby', 'alice', 'Alice', 'host', NULL, {t0}, {t1}, 'CLIENT_INITIATED', \
             10, 20, 1, 2, 0, 15)",
    "INSERT INTO participants (sid, room_id, identity, name, role, metadata, joined_at) \
     VALUES ('PA_2', 'lobby', 'bob', '', NULL, NULL, {t1})",
    "SELECT 1",
];

fn issue_2_rows(t0: &str, t1: &str) -> Vec<String> {
    ISSUE_2_ROWS
        .iter()
        .map(|sql| sql.replace("{t0}", t0).replace("{t1}", t1))
        .collect()
}

/// What an upgraded store must show of the issue-2 rows, and that it works on top of them.
async fn check_upgraded(store: Arc<dyn Store>) {
    let lobby = store.get_room("lobby").await.expect("lobby kept");
    assert_eq!(lobby.sid.as_deref(), Some("RM_1"));
    assert_eq!(lobby.name.as_deref(), Some("Lobby"));
    assert_eq!((lobby.channel_id, lobby.guest_access), (None, false));
    assert_eq!(lobby.created_at, t(0));
    let gone = store.get_room("gone").await.expect("gone kept");
    assert_eq!(gone.status, RoomStatus::Closed);
    assert_eq!(gone.max_participants, 5);

    let connections = store.list_participants("lobby").await.expect("connections");
    assert_eq!(connections.len(), 2);
    assert_eq!(connections[0].sid, "PA_1");
    let summary = connections[0].summary.expect("summary kept");
    assert_eq!((summary.bytes_in, summary.rtt_ms), (10, Some(15)));
    assert_eq!(connections[1].left_at, None);

    // Bob, still connected, joins the first session; the log starts at seq 1.
    store
        .create_session(&super::fixtures::new_session(
            "se_1",
            "lobby",
            SessionState::Ready,
            t(5),
        ))
        .await
        .expect("create_session on an upgraded database");
    let people = store
        .list_session_participants("se_1")
        .await
        .expect("people");
    assert_eq!(people.len(), 1);
    assert_eq!(people[0].sid, "PA_2");
    let log = all_events(&*store).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].seq, 1);
    store
        .room_finished("lobby", t(9), "ROOM_DELETED")
        .await
        .expect("finish");
}

#[tokio::test]
async fn sqlite_migration_0002_upgrades_issue_2_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("sb.db").display());
    let options = SqliteConnectOptions::from_str(&url)
        .expect("url")
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("open");
    let first = first_migration_only("sqlite");
    Migrator::new(first.path())
        .await
        .expect("migrator")
        .run(&pool)
        .await
        .expect("apply 0001");
    let (t0, t1) = (t(0).timestamp_millis(), t(1).timestamp_millis());
    for sql in issue_2_rows(&t0.to_string(), &t1.to_string()) {
        sqlx::query(&sql).execute(&pool).await.expect("issue-2 row");
    }
    pool.close().await;

    let store = SqliteStore::open(&url).await.expect("upgrade to 0002");
    let broken: Vec<(String, i64, String, i64)> = sqlx::query_as("PRAGMA foreign_key_check")
        .fetch_all(store.pool())
        .await
        .expect("foreign_key_check");
    assert!(broken.is_empty(), "dangling references: {broken:?}");
    let connections_sql: String =
        sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'connections'")
            .fetch_one(store.pool())
            .await
            .expect("schema");
    assert!(
        connections_sql.contains("REFERENCES \"rooms\"")
            || connections_sql.contains("REFERENCES rooms"),
        "the rename pointed the foreign key at rooms: {connections_sql}"
    );
    let store: Arc<dyn Store> = Arc::new(store);
    check_upgraded(Arc::clone(&store)).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migration_0002_upgrades_issue_2_data() {
    let schema = PgSchema::create().await;
    let options = schema.store_options();
    let outcome = tokio::spawn(async move {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .expect("connect");
        let first = first_migration_only("postgres");
        Migrator::new(first.path())
            .await
            .expect("migrator")
            .run(&pool)
            .await
            .expect("apply 0001");
        let ts = |secs: i64| {
            format!(
                "(TIMESTAMPTZ 'epoch' + {} * INTERVAL '1 millisecond')",
                t(secs).timestamp_millis()
            )
        };
        for sql in issue_2_rows(&ts(0), &ts(1)) {
            sqlx::query(&sql).execute(&pool).await.expect("issue-2 row");
        }
        pool.close().await;
        let store = PostgresStore::connect_with(
            options,
            PgPoolOptions::new()
                .max_connections(3)
                .acquire_timeout(Duration::from_secs(30)),
        )
        .await
        .expect("upgrade to 0002");
        let store: Arc<dyn Store> = Arc::new(store);
        check_upgraded(Arc::clone(&store)).await;
        store.close().await;
    })
    .await;
    schema.drop_schema().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Sets up a LIVE session with a connected host, then makes the event insert of `kind`
/// fail; the change that appends it must leave no trace, and work once the failure is gone.
async fn failing_event_undoes_the_change(
    store: Arc<dyn Store>,
    fail: impl std::future::Future<Output = ()>,
    heal: impl std::future::Future<Output = ()>,
) {
    room_with_session(&*store, "lobby", "se_1", SessionState::Live).await;
    store
        .participant_joined(&join_in("lobby", "PA_1", "alice", "se_1", t(10)))
        .await
        .expect("join");
    let session = store.get_session("se_1").await.expect("session");
    let people = store
        .list_session_participants("se_1")
        .await
        .expect("people");
    let before = all_events(&*store).await;

    fail.await;
    // room_finished writes several rows and events before its last one fails.
    match store.room_finished("lobby", t(20), "ROOM_DELETED").await {
        Err(StoreError::Database(_)) => {}
        other => panic!("expected the injected database error, got {other:?}"),
    }
    assert_eq!(all_events(&*store).await, before, "no event survived");
    assert_eq!(
        store.get_room("lobby").await.expect("room").status,
        RoomStatus::Active
    );
    assert_eq!(store.get_session("se_1").await.expect("session"), session);
    assert_eq!(
        store
            .list_session_participants("se_1")
            .await
            .expect("people"),
        people
    );
    assert_eq!(
        store.open_connections("lobby").await.expect("open").len(),
        1
    );

    heal.await;
    store
        .participant_left("PA_1", &leave(t(21), "CLIENT_INITIATED"))
        .await
        .expect("leave once healed");
    store
        .room_finished("lobby", t(22), "ROOM_DELETED")
        .await
        .expect("finish once healed");
    let after = all_events(&*store).await;
    super::fixtures::assert_gapless(&after);
    assert_eq!(after.last().map(|e| e.kind.as_str()), Some("room_finished"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_change_and_events_share_one_transaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("sb.db").display());
    let store = SqliteStore::open(&url).await.expect("open");
    let pool = store.pool().clone();
    let heal_pool = pool.clone();
    let store: Arc<dyn Store> = Arc::new(store);
    failing_event_undoes_the_change(
        Arc::clone(&store),
        async move {
            sqlx::query(
                "CREATE TRIGGER fail_room_finished BEFORE INSERT ON events \
                 WHEN NEW.kind = 'room_finished' \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
            )
            .execute(&pool)
            .await
            .expect("install trigger");
        },
        async move {
            sqlx::query("DROP TRIGGER fail_room_finished")
                .execute(&heal_pool)
                .await
                .expect("drop trigger");
        },
    )
    .await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_change_and_events_share_one_transaction() {
    let schema = PgSchema::create().await;
    let options = schema.store_options();
    let outcome = tokio::spawn(async move {
        let store = PostgresStore::connect_with(
            options,
            PgPoolOptions::new()
                .max_connections(3)
                .acquire_timeout(Duration::from_secs(30)),
        )
        .await
        .expect("open");
        let pool = store.pool().clone();
        let heal_pool = pool.clone();
        let store: Arc<dyn Store> = Arc::new(store);
        failing_event_undoes_the_change(
            Arc::clone(&store),
            async move {
                sqlx::query(
                    "CREATE FUNCTION fail_room_finished() RETURNS trigger AS $$ \
                     BEGIN IF NEW.kind = 'room_finished' THEN \
                         RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END \
                     $$ LANGUAGE plpgsql",
                )
                .execute(&pool)
                .await
                .expect("install function");
                sqlx::query(
                    "CREATE TRIGGER fail_room_finished BEFORE INSERT ON events \
                     FOR EACH ROW EXECUTE FUNCTION fail_room_finished()",
                )
                .execute(&pool)
                .await
                .expect("install trigger");
            },
            async move {
                sqlx::query("DROP TRIGGER fail_room_finished ON events")
                    .execute(&heal_pool)
                    .await
                    .expect("drop trigger");
            },
        )
        .await;
        store.close().await;
    })
    .await;
    schema.drop_schema().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn sqlite_delivery_cursors_and_events_survive_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("sb.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.expect("open"));
    room_with_session(&*store, "lobby", "se_1", SessionState::Ready).await;
    let log = all_events(&*store).await;
    let cursor = log[1].id;
    store
        .set_delivery_cursor("webhook:https://example.test/hook", cursor)
        .await
        .expect("set");
    store.close().await;

    let reopened: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.expect("reopen"));
    let kept = reopened
        .delivery_cursor("webhook:https://example.test/hook")
        .await
        .expect("cursor");
    assert_eq!(kept, cursor);
    // Delivery resumes right after the cursor, and new events continue the room's seqs.
    let pending = reopened.events_after(kept, 100).await.expect("pending");
    assert_eq!(pending, log[2..].to_vec());
    reopened
        .transition_session(
            "se_1",
            SessionState::Ready,
            SessionState::Cancelled,
            "x",
            t(9),
        )
        .await
        .expect("transition");
    let after = all_events(&*reopened).await;
    super::fixtures::assert_gapless(&after);
    assert!(after.last().expect("event").id > log.last().expect("event").id);
    reopened.close().await;
}
