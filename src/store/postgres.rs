//! The PostgreSQL store (production; several nodes can share one database).
//!
//! Columns are TIMESTAMPTZ, but sqlx is built without its chrono feature, so timestamps
//! cross the wire as unix milliseconds: written as `epoch + ms * 1 millisecond` and read as
//! `FLOOR(EXTRACT(EPOCH FROM col) * 1000)`. Both are exact for millisecond values, which is
//! the precision the records promise in both backends.
//!
//! Tables are referenced unqualified, so the store works in whatever schema `search_path`
//! selects (the conformance tests give every test its own schema).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::error::is_foreign_key_violation;
use super::records::{
    all, found, same_connection, to_db_count, to_millis, ParticipantRow, RoomRow,
};
use super::{
    NewRoom, ParticipantJoin, ParticipantLeave, ParticipantRecord, RoomRecord, RoomStatus, Store,
    StoreError,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

const POOL_SIZE: u32 = 10;
/// Bounds how long a call waits for a connection when the server is unreachable or busy.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

// Column lists shared by SELECT and RETURNING clauses; macros because `concat!` needs
// literals. Timestamps are converted to unix milliseconds (see the module docs).
macro_rules! room_columns {
    () => {
        "room_id, sid, name, metadata, status, \
         FLOOR(EXTRACT(EPOCH FROM created_at) * 1000)::BIGINT AS created_at, \
         FLOOR(EXTRACT(EPOCH FROM last_active_at) * 1000)::BIGINT AS last_active_at, \
         FLOOR(EXTRACT(EPOCH FROM closed_at) * 1000)::BIGINT AS closed_at, \
         empty_timeout_secs, max_participants"
    };
}

macro_rules! participant_columns {
    () => {
        "sid, room_id, identity, name, role, metadata, \
         FLOOR(EXTRACT(EPOCH FROM joined_at) * 1000)::BIGINT AS joined_at, \
         FLOOR(EXTRACT(EPOCH FROM left_at) * 1000)::BIGINT AS left_at, \
         leave_reason, bytes_in, bytes_out, packets_in, packets_out, packets_lost, rtt_ms"
    };
}

/// [`Store`] on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `postgres://…` / `postgresql://…` and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(|source| StoreError::Connect {
            target: "the PostgreSQL database (bad URL)".to_owned(),
            source,
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT);
        Self::connect_with(options, pool).await
    }

    /// Connects with explicit options (e.g. a `search_path`) and applies the migrations.
    pub async fn connect_with(
        options: PgConnectOptions,
        pool_options: PgPoolOptions,
    ) -> Result<Self, StoreError> {
        let target = describe(&options);
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect { target, source })?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// The connection pool, for code that needs PostgreSQL directly (diagnostics, tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn room_exists(&self, room_id: &str) -> Result<bool, StoreError> {
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }
}

/// Names the database for error messages without the password the URL may hold.
fn describe(options: &PgConnectOptions) -> String {
    let database = options.get_database().unwrap_or(options.get_username());
    format!(
        "the PostgreSQL database `{database}` at {}:{} as user `{}`",
        options.get_host(),
        options.get_port(),
        options.get_username()
    )
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn health(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn room_started(&self, room: &NewRoom) -> Result<RoomRecord, StoreError> {
        // One statement, so concurrent starts of one room on several nodes cannot interleave.
        let row: RoomRow = sqlx::query_as(concat!(
            "INSERT INTO rooms (room_id, sid, name, metadata, status, created_at, \
                 last_active_at, closed_at, empty_timeout_secs, max_participants) \
             VALUES ($1, $2, $3, $4, 'active', \
                 TIMESTAMPTZ 'epoch' + $5 * INTERVAL '1 millisecond', \
                 TIMESTAMPTZ 'epoch' + $5 * INTERVAL '1 millisecond', NULL, $6, $7) \
             ON CONFLICT (room_id) DO UPDATE SET \
                 sid = EXCLUDED.sid, \
                 name = COALESCE(EXCLUDED.name, rooms.name), \
                 metadata = COALESCE(EXCLUDED.metadata, rooms.metadata), \
                 status = 'active', \
                 closed_at = NULL, \
                 last_active_at = GREATEST(rooms.last_active_at, EXCLUDED.last_active_at), \
                 empty_timeout_secs = EXCLUDED.empty_timeout_secs, \
                 max_participants = EXCLUDED.max_participants \
             RETURNING ",
            room_columns!()
        ))
        .bind(&room.room_id)
        .bind(&room.sid)
        .bind(&room.name)
        .bind(&room.metadata)
        .bind(to_millis(room.started_at))
        .bind(i64::from(room.empty_timeout_secs))
        .bind(i64::from(room.max_participants))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_into()?)
    }

    async fn room_finished(&self, room_id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        // Only an active room changes, so a repeated finish keeps the first closed_at.
        // GREATEST(created_at, …) keeps closed_at from preceding created_at if the clock
        // stepped backwards.
        let done = sqlx::query(
            "UPDATE rooms SET status = 'closed', \
                 closed_at = GREATEST(created_at, \
                     TIMESTAMPTZ 'epoch' + $1 * INTERVAL '1 millisecond'), \
                 last_active_at = GREATEST(last_active_at, \
                     TIMESTAMPTZ 'epoch' + $1 * INTERVAL '1 millisecond') \
             WHERE room_id = $2 AND status = 'active'",
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
            " FROM rooms WHERE room_id = $1"
        ))
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        found(row, || format!("room `{room_id}`"))
    }

    async fn list_rooms(&self, status: Option<RoomStatus>) -> Result<Vec<RoomRecord>, StoreError> {
        // COLLATE "C" sorts ties by bytes, as SQLite does, so both stores list alike.
        let rows: Vec<RoomRow> = sqlx::query_as(concat!(
            "SELECT ",
            room_columns!(),
            " FROM rooms WHERE $1::TEXT IS NULL OR status = $1 ORDER BY created_at, room_id COLLATE \"C\""
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
        let mut tx = self.pool.begin().await?;
        let inserted: Option<ParticipantRow> = sqlx::query_as(concat!(
            "INSERT INTO participants (sid, room_id, identity, name, role, metadata, joined_at) \
             VALUES ($1, $2, $3, $4, $5, $6, \
                 TIMESTAMPTZ 'epoch' + $7 * INTERVAL '1 millisecond') \
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
                " FROM participants WHERE sid = $1"
            ))
            .bind(&p.sid)
            .fetch_one(&mut *tx)
            .await?;
            let existing = ParticipantRecord::try_from(existing)?;
            return same_connection(existing, p);
        };

        // The FK check took a KEY SHARE lock on the room row; this UPDATE (no key change)
        // takes NO KEY UPDATE, which does not conflict with it, so concurrent joins to one
        // room queue on the row instead of deadlocking.
        sqlx::query(
            "UPDATE rooms SET last_active_at = GREATEST(last_active_at, \
                 TIMESTAMPTZ 'epoch' + $1 * INTERVAL '1 millisecond') \
             WHERE room_id = $2",
        )
        .bind(to_millis(p.joined_at))
        .bind(&p.room_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.try_into()?)
    }

    async fn participant_left(&self, sid: &str, left: &ParticipantLeave) -> Result<(), StoreError> {
        let s = &left.summary;
        let mut tx = self.pool.begin().await?;
        // `left_at IS NULL` makes the first leave win; GREATEST(joined_at, …) keeps left_at
        // from preceding joined_at if the clock stepped backwards.
        let updated: Option<(String, i64)> = sqlx::query_as(
            "UPDATE participants SET \
                 left_at = GREATEST(joined_at, \
                     TIMESTAMPTZ 'epoch' + $1 * INTERVAL '1 millisecond'), \
                 leave_reason = $2, bytes_in = $3, bytes_out = $4, packets_in = $5, \
                 packets_out = $6, packets_lost = $7, rtt_ms = $8 \
             WHERE sid = $9 AND left_at IS NULL \
             RETURNING room_id, FLOOR(EXTRACT(EPOCH FROM left_at) * 1000)::BIGINT",
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
            let known: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM participants WHERE sid = $1")
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

        sqlx::query(
            "UPDATE rooms SET last_active_at = GREATEST(last_active_at, \
                 TIMESTAMPTZ 'epoch' + $1 * INTERVAL '1 millisecond') \
             WHERE room_id = $2",
        )
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
            " FROM participants WHERE sid = $1"
        ))
        .bind(sid)
        .fetch_optional(&self.pool)
        .await?;
        found(row, || format!("participant `{sid}`"))
    }

    async fn list_participants(&self, room_id: &str) -> Result<Vec<ParticipantRecord>, StoreError> {
        // COLLATE "C" sorts ties by bytes, as SQLite does, so both stores list alike.
        let rows: Vec<ParticipantRow> = sqlx::query_as(concat!(
            "SELECT ",
            participant_columns!(),
            " FROM participants WHERE room_id = $1 ORDER BY joined_at, sid COLLATE \"C\""
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
