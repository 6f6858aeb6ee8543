//! The embedded SQLite store (the default: no other service needed).
//!
//! Timestamps are INTEGER unix milliseconds, JSON is TEXT. Writes run in `BEGIN IMMEDIATE`
//! transactions: SQLite allows one writer at a time, and taking the write lock up front makes
//! a waiting writer go through the busy timeout instead of failing with SQLITE_BUSY when a
//! deferred transaction tries to upgrade its read lock. That same lock is what makes the
//! per-room event `seq` (read-increment-insert) and the session compare-and-set race-free.
//!
//! The trait methods live in per-area modules (`rooms`, `sessions`, …) as inherent methods;
//! `tx` holds the steps several of them share inside one transaction (appending an event,
//! closing a connection, moving a session).

#[macro_use]
mod columns;
mod egress;
mod extras;
mod log;
mod participants;
mod reconcile;
mod rooms;
mod sessions;
mod tx;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::{
    AuditEntry, AuditRecord, EgressRecord, EgressUpdate, EventRecord, NewEgress, NewRoom,
    NewSession, ParticipantJoin, ParticipantLeave, ParticipantRecord, Reconciled, RoomRecord,
    RoomSpec, RoomStatus, RoomUpdate, SessionParticipantRecord, SessionRecord, SessionState, Store,
    StoreError, TrackEvent, TranscriptRecord, TranscriptSegment,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a writer waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// WAL lets readers run beside the single writer, so a few connections are worth having.
const FILE_POOL_SIZE: u32 = 8;

/// [`Store`] on an SQLite file (or an in-memory database for tests and throwaway runs).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating when missing, parent directory included) the database a URL names,
    /// e.g. `sqlite://./data/switchboard.db?mode=rwc` or `sqlite::memory:`, with WAL and
    /// foreign keys on, and applies the migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options =
            SqliteConnectOptions::from_str(url).map_err(|source| StoreError::Connect {
                target: "the SQLite database (bad URL)".to_owned(),
                source,
            })?;
        let options = options.foreign_keys(true).busy_timeout(BUSY_TIMEOUT);

        if is_memory_url(url) {
            // An in-memory database lives as long as one connection to it: keep exactly one,
            // forever, so every query sees the same data.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
            return Self::open_with(options, pool).await;
        }

        create_parent_dir(options.get_filename())?;
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable in WAL mode except for the last transactions on power loss,
            // and avoids an fsync per commit.
            .synchronous(SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new().max_connections(FILE_POOL_SIZE);
        Self::open_with(options, pool).await
    }

    /// Opens with explicit options (tests, special setups) and applies the migrations.
    pub async fn open_with(
        options: SqliteConnectOptions,
        pool_options: SqlitePoolOptions,
    ) -> Result<Self, StoreError> {
        let target = format!("the SQLite database {}", options.get_filename().display());
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect { target, source })?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// The connection pool, for code that needs SQLite directly (diagnostics, tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// `sqlite::memory:`, `sqlite://:memory:` and `?mode=memory` all name an in-memory database.
fn is_memory_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("sqlite:")
        .or_else(|| url.strip_prefix("SQLITE:"))
        .unwrap_or(url);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

fn create_parent_dir(file: &Path) -> Result<(), StoreError> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            }),
        _ => Ok(()),
    }
}

impl SqliteStore {
    /// A write transaction that holds SQLite's write lock from its first statement.
    async fn write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn health(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn create_room(&self, spec: &RoomSpec) -> Result<(RoomRecord, bool), StoreError> {
        self.create_room_impl(spec).await
    }

    async fn room_started(&self, room: &NewRoom) -> Result<RoomRecord, StoreError> {
        self.room_started_impl(room).await
    }

    async fn update_room(
        &self,
        room_id: &str,
        update: &RoomUpdate,
    ) -> Result<RoomRecord, StoreError> {
        self.update_room_impl(room_id, update).await
    }

    async fn room_finished(
        &self,
        room_id: &str,
        at: DateTime<Utc>,
        reason_for_open: &str,
    ) -> Result<(), StoreError> {
        self.room_finished_impl(room_id, at, reason_for_open).await
    }

    async fn get_room(&self, room_id: &str) -> Result<RoomRecord, StoreError> {
        self.get_room_impl(room_id).await
    }

    async fn list_rooms(&self, status: Option<RoomStatus>) -> Result<Vec<RoomRecord>, StoreError> {
        self.list_rooms_impl(status).await
    }

    async fn idle_rooms(&self, now: DateTime<Utc>) -> Result<Vec<RoomRecord>, StoreError> {
        self.idle_rooms_impl(now).await
    }

    async fn create_session(&self, s: &NewSession) -> Result<SessionRecord, StoreError> {
        self.create_session_impl(s).await
    }

    async fn get_session(&self, session_id: &str) -> Result<SessionRecord, StoreError> {
        self.get_session_impl(session_id).await
    }

    async fn list_sessions(&self, room_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.list_sessions_impl(room_id).await
    }

    async fn open_session(&self, room_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.open_session_impl(room_id).await
    }

    async fn transition_session(
        &self,
        session_id: &str,
        from: SessionState,
        to: SessionState,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<SessionRecord, StoreError> {
        self.transition_session_impl(session_id, from, to, reason, at)
            .await
    }

    async fn participant_joined(
        &self,
        p: &ParticipantJoin,
    ) -> Result<ParticipantRecord, StoreError> {
        self.participant_joined_impl(p).await
    }

    async fn participant_left(&self, sid: &str, left: &ParticipantLeave) -> Result<(), StoreError> {
        self.participant_left_impl(sid, left).await
    }

    async fn get_participant(&self, sid: &str) -> Result<ParticipantRecord, StoreError> {
        self.get_participant_impl(sid).await
    }

    async fn list_participants(&self, room_id: &str) -> Result<Vec<ParticipantRecord>, StoreError> {
        self.list_participants_impl(room_id).await
    }

    async fn list_session_participants(
        &self,
        session_id: &str,
    ) -> Result<Vec<SessionParticipantRecord>, StoreError> {
        self.list_session_participants_impl(session_id).await
    }

    async fn open_connections(&self, room_id: &str) -> Result<Vec<ParticipantRecord>, StoreError> {
        self.open_connections_impl(room_id).await
    }

    async fn record_track(&self, t: &TrackEvent) -> Result<(), StoreError> {
        self.record_track_impl(t).await
    }

    async fn create_egress(&self, e: &NewEgress) -> Result<EgressRecord, StoreError> {
        self.create_egress_impl(e).await
    }

    async fn update_egress(
        &self,
        egress_id: &str,
        u: &EgressUpdate,
    ) -> Result<EgressRecord, StoreError> {
        self.update_egress_impl(egress_id, u).await
    }

    async fn get_egress(&self, egress_id: &str) -> Result<EgressRecord, StoreError> {
        self.get_egress_impl(egress_id).await
    }

    async fn list_egress(
        &self,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<EgressRecord>, StoreError> {
        self.list_egress_impl(room_id, session_id).await
    }

    async fn list_events(
        &self,
        room_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.list_events_impl(room_id, after_seq, limit).await
    }

    async fn events_after(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.events_after_impl(after_id, limit).await
    }

    async fn delivery_cursor(&self, sink: &str) -> Result<i64, StoreError> {
        self.delivery_cursor_impl(sink).await
    }

    async fn set_delivery_cursor(&self, sink: &str, event_id: i64) -> Result<(), StoreError> {
        self.set_delivery_cursor_impl(sink, event_id).await
    }

    async fn record_audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
        self.record_audit_impl(entry).await
    }

    async fn list_audit(
        &self,
        limit: u32,
        before_id: Option<i64>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.list_audit_impl(limit, before_id).await
    }

    async fn upsert_transcript(
        &self,
        t: &TranscriptSegment,
    ) -> Result<(TranscriptRecord, bool), StoreError> {
        self.upsert_transcript_impl(t).await
    }

    async fn list_transcripts(
        &self,
        session_id: &str,
    ) -> Result<Vec<TranscriptRecord>, StoreError> {
        self.list_transcripts_impl(session_id).await
    }

    async fn revoke_identity(
        &self,
        room_id: &str,
        identity: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.revoke_identity_impl(room_id, identity, at).await
    }

    async fn list_revocations(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, String, DateTime<Utc>)>, StoreError> {
        self.list_revocations_impl(since).await
    }

    async fn reconcile_after_restart(&self, at: DateTime<Utc>) -> Result<Reconciled, StoreError> {
        self.reconcile_after_restart_impl(at).await
    }
}
