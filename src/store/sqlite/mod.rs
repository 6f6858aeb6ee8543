//! The embedded SQLite store (the default: no other service needed).
//!
//! Timestamps are INTEGER unix milliseconds, JSON is TEXT. Writes run in `BEGIN IMMEDIATE`
//! transactions: SQLite allows one writer at a time, and taking the write lock up front makes
//! a waiting writer go through the busy timeout instead of failing with SQLITE_BUSY when a
//! deferred transaction tries to upgrade its read lock. That same lock is what makes the
//! per-room event `seq` (read-increment-insert) and the session compare-and-set race-free.
//!
//! This module opens the database and provides what the queries need; the queries and the
//! trait methods are written once for both dialects in `store/queries/`, compiled here with
//! SQLite's spelling from `dialect.rs`.

#[macro_use]
mod dialect;
// The queries and the `Store` implementation, written once for both dialects and compiled
// again here with this dialect's spelling and driver (see `store/queries/mod.rs`).
#[path = "../queries/mod.rs"]
#[allow(clippy::duplicate_mod)] // included by both dialects on purpose
mod queries;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use crate::store::StoreError;

/// What `queries` implements the store on, and the driver's connection type.
type DialectStore = SqliteStore;
type Connection = sqlx::SqliteConnection;
/// The name [`Store::backend`](crate::store::Store::backend) reports.
const BACKEND: &str = "sqlite";

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

impl SqliteStore {
    /// Runs one store call. A file on the local disk has no outage to fail fast through,
    /// unlike PostgreSQL's server (`breaker.rs`).
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        call.await
    }
}
