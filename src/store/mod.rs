// The read side (get/list) is served by the /v1 rooms API that issue 3 adds.
#![allow(dead_code)]
//! Session store: the durable record of rooms and participant connections.
//!
//! One [`Store`] trait with two implementations that behave the same (a conformance test
//! suite in `src/store/tests/` runs every test against both):
//! - [`SqliteStore`], the embedded default (`sqlite://./data/switchboard.db?mode=rwc`);
//! - [`PostgresStore`], for production and for several nodes sharing one database.
//!
//! Both apply the versioned migrations in `migrations/<dialect>/` when they open, so a
//! fresh database is usable at once and `switchboard migrate` is the same code path.
//!
//! The trait grows with issue 3 (sessions, egress, the event log); new methods go here and in
//! both implementations, and new tables go into a new numbered migration per dialect.

mod error;
mod postgres;
mod records;
mod sqlite;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use error::StoreError;
pub use postgres::PostgresStore;
// Part of the store's API for its callers; unused until the server is wired to it.
#[allow(unused_imports)]
pub use records::{
    NewRoom, ParticipantJoin, ParticipantLeave, ParticipantRecord, ParticipantRole,
    ParticipantSummary, RoomRecord, RoomStatus,
};
pub use sqlite::SqliteStore;

/// The session store. Every method is one atomic change or one consistent read.
///
/// Writes are idempotent where the SFU may repeat them (a room started twice, a join retried
/// with the same sid, a second leave), because its events can be replayed after errors.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is ("sqlite" or "postgres"), for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Checks that the database answers (`SELECT 1`).
    async fn health(&self) -> Result<(), StoreError>;

    /// Closes the connection pool, waiting for running queries. Later calls fail.
    async fn close(&self);

    /// Records that a room started: inserts it, or marks an existing one active again with
    /// the new sid, limits and `last_active_at`. `created_at` is set only on first insert;
    /// `name`/`metadata` of `None` keep the stored values. Calling it twice is harmless.
    async fn room_started(&self, room: &NewRoom) -> Result<RoomRecord, StoreError>;

    /// Marks a room closed at `at`. NotFound for an unknown room; closing a closed room keeps
    /// the first `closed_at`.
    async fn room_finished(&self, room_id: &str, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// One room, or NotFound.
    async fn get_room(&self, room_id: &str) -> Result<RoomRecord, StoreError>;

    /// Rooms ordered by `created_at` (then `room_id`), optionally only those in `status`.
    async fn list_rooms(&self, status: Option<RoomStatus>) -> Result<Vec<RoomRecord>, StoreError>;

    /// Records a participant connection and bumps the room's `last_active_at`.
    /// NotFound when the room was never started. Retrying with the same sid, room and
    /// identity returns the stored row; the same sid for another room or identity is a
    /// Conflict. A rejoin (new sid, same identity) adds a row and keeps the old one.
    async fn participant_joined(
        &self,
        p: &ParticipantJoin,
    ) -> Result<ParticipantRecord, StoreError>;

    /// Records that a connection left, with its reason and traffic summary, and bumps the
    /// room's `last_active_at`. NotFound for an unknown sid. A second leave for the same sid
    /// is ignored: the first reason is the true one (e.g. DUPLICATE_IDENTITY before the
    /// socket's SIGNAL_CLOSED).
    async fn participant_left(&self, sid: &str, left: &ParticipantLeave) -> Result<(), StoreError>;

    /// One participant connection by sid, or NotFound.
    async fn get_participant(&self, sid: &str) -> Result<ParticipantRecord, StoreError>;

    /// All connections ever made to a room, ordered by `joined_at` (then sid).
    /// NotFound when the room does not exist; an empty list when nobody joined yet.
    async fn list_participants(&self, room_id: &str) -> Result<Vec<ParticipantRecord>, StoreError>;
}

/// The backend a database URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

fn backend_for(database_url: &str) -> Result<Backend, StoreError> {
    // Only the scheme is inspected (and echoed in errors): the rest may hold a password.
    let scheme = database_url
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("sqlite") => Ok(Backend::Sqlite),
        Some("postgres" | "postgresql") => Ok(Backend::Postgres),
        Some(other) => Err(StoreError::UnsupportedUrl {
            scheme: other.to_owned(),
        }),
        None => Err(StoreError::UnsupportedUrl {
            scheme: "(none)".to_owned(),
        }),
    }
}

/// Opens the store a URL names (`sqlite:…`, `postgres://…` or `postgresql://…`) and brings
/// its schema up to date.
pub async fn open_store(database_url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> = match backend_for(database_url)? {
        Backend::Sqlite => Arc::new(SqliteStore::open(database_url).await?),
        Backend::Postgres => Arc::new(PostgresStore::connect(database_url).await?),
    };
    tracing::info!(backend = store.backend(), "session store ready");
    Ok(store)
}

/// Applies pending migrations to the database a URL names and closes it again
/// (`switchboard migrate`).
pub async fn migrate(database_url: &str) -> Result<(), StoreError> {
    let store = open_store(database_url).await?;
    store.close().await;
    Ok(())
}
