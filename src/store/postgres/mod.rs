//! The PostgreSQL store (production; several nodes can share one database).
//!
//! Columns are TIMESTAMPTZ and JSONB; see `dialect.rs` for how they cross the wire. This
//! module connects and provides what the queries need; the queries and the trait methods
//! are written once for both dialects in `store/queries/`, compiled here with PostgreSQL's
//! spelling and locks from `dialect.rs`.
//!
//! Concurrency: every write transaction first locks its room's row (`FOR NO KEY UPDATE`, or
//! the UPDATE of that row), then touches that room's sessions, connections and egress. One
//! lock order for all writers means concurrent writers of a room queue instead of
//! deadlocking, the per-room event `seq` is allocated race-free, and a session's
//! compare-and-set sees the committed state of the writer before it. Appending events also
//! takes a transaction-scoped advisory lock (`dialect::before_append`), so event ids become
//! visible in id order and a delivery cursor never skips an event that committed late.
//!
//! Tables are referenced unqualified, so the store works in whatever schema `search_path`
//! selects (the conformance tests give every test its own schema).

#[macro_use]
mod dialect;
// The queries and the `Store` implementation, written once for both dialects and compiled
// again here with this dialect's spelling and driver (see `store/queries/mod.rs`).
#[path = "../queries/mod.rs"]
#[allow(clippy::duplicate_mod)] // included by both dialects on purpose
mod queries;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::store::breaker::Breaker;
use crate::store::StoreError;

/// What `queries` implements the store on, and the driver's connection type.
type DialectStore = PostgresStore;
type Connection = sqlx::PgConnection;
/// The name [`Store::backend`](crate::store::Store::backend) reports.
const BACKEND: &str = "postgres";

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

const POOL_SIZE: u32 = 10;
/// Bounds how long a call waits for a connection when the server is unreachable or busy.
/// While the database is down every call that needs it fails after this long (the API with
/// 503), so it is short: a healthy pool of 10 hands out a connection in milliseconds.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// [`Store`] on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Fails calls at once while the database is unreachable (`breaker.rs`).
    breaker: Arc<Breaker>,
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
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // After an outage the idle connections are dead: each is pinged when handed out
            // and replaced if it fails, so the first calls after it do not fail on them.
            .test_before_acquire(true);
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
        Ok(Self {
            pool,
            breaker: Arc::default(),
        })
    }

    /// The connection pool, for code that needs PostgreSQL directly (diagnostics, tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
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

impl PostgresStore {
    /// Runs one store call through the breaker.
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.breaker.call(call).await
    }

    /// A write transaction (READ COMMITTED; writers serialise on their room's row lock).
    async fn write(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }
}
