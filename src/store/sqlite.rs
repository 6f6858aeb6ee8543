//! The embedded SQLite store (the default: no other service needed).
//!
//! Timestamps are INTEGER unix milliseconds. Writes run in `BEGIN IMMEDIATE` transactions:
//! SQLite allows one writer at a time, and taking the write lock up front makes a waiting
//! writer go through the busy timeout instead of failing with SQLITE_BUSY when a deferred
//! transaction tries to upgrade its read lock.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::error::is_foreign_key_violation;
use super::records::{
    all, found, same_connection, to_db_count, to_millis, ParticipantRow, RoomRow,
};
use super::{
    NewRoom, ParticipantJoin, ParticipantLeave, ParticipantRecord, RoomRecord, RoomStatus, Store,
    StoreError,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a writer waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// WAL lets readers run beside the single writer, so a few connections are worth having.
const FILE_POOL_SIZE: u32 = 8;

// `concat!` needs literals, so the participant column list is a macro: the same list is
// used in SELECT and RETURNING clauses.
macro_rules! participant_columns {
    () => {
        "sid, room_id, identity, name, role, metadata, joined_at, left_at, leave_reason, \
         bytes_in, bytes_out, packets_in, packets_out, packets_lost, rtt_ms"
    };
}

macro_rules! room_columns {
    () => {
        "room_id, sid, name, metadata, status, created_at, last_active_at, closed_at, \
         empty_timeout_secs, max_participants"
    };
}

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

    async fn room_started(&self, room: &NewRoom) -> Result<RoomRecord, StoreError> {
        let at = to_millis(room.started_at);
        let row: RoomRow = sqlx::query_as(concat!(
            "INSERT INTO rooms (room_id, sid, name, metadata, status, created_at, \
                 last_active_at, closed_at, empty_timeout_secs, max_participants) \
             VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?5, NULL, ?6, ?7) \
             ON CONFLICT (room_id) DO UPDATE SET \
                 sid = excluded.sid, \
                 name = COALESCE(excluded.name, rooms.name), \
                 metadata = COALESCE(excluded.metadata, rooms.metadata), \
                 status = 'active', \
                 closed_at = NULL, \
                 last_active_at = MAX(rooms.last_active_at, excluded.last_active_at), \
                 empty_timeout_secs = excluded.empty_timeout_secs, \
                 max_participants = excluded.max_participants \
             RETURNING ",
            room_columns!()
        ))
        .bind(&room.room_id)
        .bind(&room.sid)
        .bind(&room.name)
        .bind(&room.metadata)
        .bind(at)
        .bind(i64::from(room.empty_timeout_secs))
        .bind(i64::from(room.max_participants))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_into()?)
    }

    async fn room_finished(&self, room_id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        // Only an active room changes, so a repeated finish keeps the first closed_at.
        // MAX(created_at, …) keeps closed_at from preceding created_at if the clock stepped.
        let done = sqlx::query(
            "UPDATE rooms SET status = 'closed', closed_at = MAX(created_at, ?1), \
                 last_active_at = MAX(last_active_at, ?1) \
             WHERE room_id = ?2 AND status = 'active'",
        )
        .bind(to_millis(at))
        .bind(room_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 && !self.room_exists(room_id).await? {
            return Err(StoreError::not_found(format!("room `{room_id}`")));
        }
        Ok(())
    }

    async fn get_room(&self, room_id: &str) -> Result<RoomRecord, StoreError> {
        let row: Option<RoomRow> = sqlx::query_as(concat!(
            "SELECT ",
            room_columns!(),
            " FROM rooms WHERE room_id = ?"
        ))
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        found(row, || format!("room `{room_id}`"))
    }

    async fn list_rooms(&self, status: Option<RoomStatus>) -> Result<Vec<RoomRecord>, StoreError> {
        let rows: Vec<RoomRow> = sqlx::query_as(concat!(
            "SELECT ",
            room_columns!(),
            " FROM rooms WHERE ?1 IS NULL OR status = ?1 ORDER BY created_at, room_id"
        ))
        .bind(status.map(RoomStatus::as_str))
        .fetch_all(&self.pool)
        .await?;
        Ok(all(rows)?)
    }

    async fn participant_joined(
        &self,
        p: &ParticipantJoin,
    ) -> Result<ParticipantRecord, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let inserted: Option<ParticipantRow> = sqlx::query_as(concat!(
            "INSERT INTO participants (sid, room_id, identity, name, role, metadata, joined_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (sid) DO NOTHING \
             RETURNING ",
            participant_columns!()
        ))
        .bind(&p.sid)
        .bind(&p.room_id)
        .bind(&p.identity)
        .bind(&p.name)
        .bind(p.role.map(|r| r.as_str()))
        .bind(&p.metadata)
        .bind(to_millis(p.joined_at))
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::not_found(format!("room `{}`", p.room_id))
            } else {
                e.into()
            }
        })?;

        let Some(row) = inserted else {
            // The sid is taken: a retried join is fine, anything else is a real clash.
            let existing: ParticipantRow = sqlx::query_as(concat!(
                "SELECT ",
                participant_columns!(),
                " FROM participants WHERE sid = ?"
            ))
            .bind(&p.sid)
            .fetch_one(&mut *tx)
            .await?;
            let existing = ParticipantRecord::try_from(existing)?;
            return same_connection(existing, p);
        };

        sqlx::query("UPDATE rooms SET last_active_at = MAX(last_active_at, ?) WHERE room_id = ?")
            .bind(to_millis(p.joined_at))
            .bind(&p.room_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.try_into()?)
    }

    async fn participant_left(&self, sid: &str, left: &ParticipantLeave) -> Result<(), StoreError> {
        let s = &left.summary;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // `left_at IS NULL` makes the first leave win; MAX(joined_at, …) keeps left_at from
        // preceding joined_at if the clock stepped backwards.
        let updated: Option<(String, i64)> = sqlx::query_as(
            "UPDATE participants SET left_at = MAX(joined_at, ?), leave_reason = ?, \
                 bytes_in = ?, bytes_out = ?, packets_in = ?, packets_out = ?, \
                 packets_lost = ?, rtt_ms = ? \
             WHERE sid = ? AND left_at IS NULL \
             RETURNING room_id, left_at",
        )
        .bind(to_millis(left.left_at))
        .bind(&left.reason)
        .bind(to_db_count(s.bytes_in))
        .bind(to_db_count(s.bytes_out))
        .bind(to_db_count(s.packets_in))
        .bind(to_db_count(s.packets_out))
        .bind(to_db_count(s.packets_lost))
        .bind(s.rtt_ms.map(i64::from))
        .bind(sid)
        .fetch_optional(&mut *tx)
        .await?;

        let Some((room_id, left_at)) = updated else {
            let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM participants WHERE sid = ?")
                .bind(sid)
                .fetch_optional(&mut *tx)
                .await?;
            return match known {
                Some(_) => {
                    tracing::debug!(sid, reason = %left.reason, "participant already left");
                    Ok(())
                }
                None => Err(StoreError::not_found(format!("participant `{sid}`"))),
            };
        };

        sqlx::query("UPDATE rooms SET last_active_at = MAX(last_active_at, ?) WHERE room_id = ?")
            .bind(left_at)
            .bind(&room_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_participant(&self, sid: &str) -> Result<ParticipantRecord, StoreError> {
        let row: Option<ParticipantRow> = sqlx::query_as(concat!(
            "SELECT ",
            participant_columns!(),
            " FROM participants WHERE sid = ?"
        ))
        .bind(sid)
        .fetch_optional(&self.pool)
        .await?;
        found(row, || format!("participant `{sid}`"))
    }

    async fn list_participants(&self, room_id: &str) -> Result<Vec<ParticipantRecord>, StoreError> {
        let rows: Vec<ParticipantRow> = sqlx::query_as(concat!(
            "SELECT ",
            participant_columns!(),
            " FROM participants WHERE room_id = ? ORDER BY joined_at, sid"
        ))
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() && !self.room_exists(room_id).await? {
            return Err(StoreError::not_found(format!("room `{room_id}`")));
        }
        Ok(all(rows)?)
    }
}

impl SqliteStore {
    async fn room_exists(&self, room_id: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM rooms WHERE room_id = ?")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }
}
