//! What is specific to one backend: URL dispatch, SQLite files and pragmas, PostgreSQL
//! connection errors and schemas.

use chrono::DateTime;

use super::harness::{postgres_url, PgSchema};
use crate::store::{migrate, open_store, NewRoom, SqliteStore, Store, StoreError};

fn room(room_id: &str) -> NewRoom {
    NewRoom {
        room_id: room_id.to_owned(),
        sid: format!("RM_{room_id}"),
        name: None,
        metadata: None,
        empty_timeout_secs: 300,
        max_participants: 0,
        started_at: DateTime::from_timestamp_millis(1_700_000_000_000).expect("in range"),
        node_id: None,
    }
}

#[tokio::test]
async fn sqlite_open_creates_parent_directories_with_wal_and_foreign_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir
        .path()
        .join("data")
        .join("nested")
        .join("switchboard.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let store = SqliteStore::open(&url).await.expect("open");
    assert!(file.exists(), "database file created at {}", file.display());

    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .expect("journal_mode");
    assert_eq!(journal, "wal");
    let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(store.pool())
        .await
        .expect("foreign_keys");
    assert_eq!(foreign_keys, 1);
    store.close().await;
}

/// The queries are written once with PostgreSQL's `$N` placeholders (`store/queries/`):
/// SQLite must bind them by number, not in the order they first appear.
#[tokio::test]
async fn sqlite_binds_dollar_placeholders_by_number() {
    let store = SqliteStore::open("sqlite::memory:").await.expect("open");
    let (second, first, second_again): (String, i64, String) = sqlx::query_as("SELECT $2, $1, $2")
        .bind(7_i64)
        .bind("two")
        .fetch_one(store.pool())
        .await
        .expect("select");
    assert_eq!(
        (second.as_str(), first, second_again.as_str()),
        ("two", 7, "two")
    );
    store.close().await;
}

#[tokio::test]
async fn sqlite_file_keeps_data_across_reopen_and_migrate_is_idempotent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("sb.db").display());
    // No `mode=rwc`: the store creates the file anyway.
    migrate(&url).await.expect("first migrate");
    migrate(&url).await.expect("second migrate");

    let store = open_store(&url).await.expect("open");
    assert_eq!(store.backend(), "sqlite");
    store.room_started(&room("lobby")).await.expect("start");
    store.close().await;

    let reopened = open_store(&url).await.expect("reopen");
    let rooms = reopened.list_rooms(None).await.expect("list");
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].room_id, "lobby");
    reopened.close().await;
}

#[tokio::test]
async fn sqlite_memory_url_is_one_shared_database() {
    let store = open_store("sqlite::memory:").await.expect("open memory");
    store.room_started(&room("lobby")).await.expect("start");
    // Several reads in a row must all see the same in-memory database.
    for _ in 0..3 {
        let got = store.get_room("lobby").await.expect("get");
        assert_eq!(got.room_id, "lobby");
    }
    store.health().await.expect("health");
    store.close().await;

    // A second memory store is a different, empty database.
    let other = open_store("sqlite::memory:").await.expect("open second");
    assert!(other.list_rooms(None).await.expect("list").is_empty());
    other.close().await;
}

#[tokio::test]
async fn open_store_rejects_unknown_schemes() {
    for (url, scheme) in [
        ("mysql://root@localhost/db", "mysql"),
        ("just-a-path.db", "(none)"),
    ] {
        match open_store(url).await {
            Err(e @ StoreError::UnsupportedUrl { .. }) => {
                let message = e.to_string();
                assert!(message.contains(scheme), "{message}");
                assert!(message.contains("sqlite://"), "{message}");
            }
            Err(other) => panic!("{url}: expected UnsupportedUrl, got {other}"),
            Ok(_) => panic!("{url}: expected UnsupportedUrl, got a store"),
        }
    }
}

#[tokio::test]
async fn open_store_opens_postgres_and_postgresql_urls() {
    let schema = PgSchema::create().await;
    let base = postgres_url();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!(
        "{base}{separator}options=-c%20search_path%3D{}",
        schema.name
    );
    let alternative = url.replacen("postgres://", "postgresql://", 1);

    let outcome = async move {
        let store = open_store(&url).await.expect("open postgres://");
        assert_eq!(store.backend(), "postgres");
        store.room_started(&room("lobby")).await.expect("start");
        store.close().await;

        migrate(&alternative).await.expect("migrate postgresql://");
        let store = open_store(&alternative).await.expect("open postgresql://");
        let rooms = store.list_rooms(None).await.expect("list");
        assert_eq!(rooms.len(), 1, "same schema, same rows");
        store.close().await;
    };
    // Catch a failure so the schema is dropped either way.
    let result = tokio::spawn(outcome).await;
    schema.drop_schema().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn postgres_connect_error_names_the_server_but_not_the_password() {
    // Port 1 on loopback refuses at once.
    let url = "postgres://postgres:s3cret-pw@127.0.0.1:1/test";
    match open_store(url).await {
        Err(e @ StoreError::Connect { .. }) => {
            let message = e.to_string();
            assert!(message.contains("127.0.0.1:1"), "{message}");
            assert!(message.contains("`test`"), "{message}");
            assert!(!message.contains("s3cret-pw"), "password leaked: {message}");
        }
        Err(other) => panic!("expected Connect, got {other}"),
        Ok(_) => panic!("expected Connect, got a store"),
    }
}
