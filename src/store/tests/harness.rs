//! Fixtures that give each test a store of its own.
//!
//! SQLite: a file in a fresh temp directory. PostgreSQL: a fresh schema `t_<ulid>` in the
//! shared test database with `search_path` pointing at it, so tests running in parallel (and
//! other people's runs) never see each other's rows, and migrations run inside that schema.
//! The schema is dropped afterwards even when the test panics.
//!
//! The PostgreSQL tests fail, never skip, when the server cannot be reached: a green run must
//! mean both stores were tested.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use tokio::task::JoinError;

use crate::store::{PostgresStore, SqliteStore, Store};

pub const POSTGRES_URL_ENV: &str = "SWITCHBOARD_TEST_POSTGRES_URL";
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The PostgreSQL server the tests use (env override, else the local `test` database).
pub fn postgres_url() -> String {
    std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// Runs `test` against a store on a fresh SQLite file.
pub async fn run_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("create a temp dir for the SQLite store");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("store.db").display()
    );
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&url)
            .await
            .expect("open the SQLite store"),
    );
    let outcome = tokio::spawn(test(Arc::clone(&store))).await;
    store.close().await;
    drop(dir);
    rethrow(outcome);
}

/// Runs `test` against a PostgreSQL store in a schema of its own, dropped afterwards.
pub async fn run_postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let schema = PgSchema::create().await;
    // Few connections per test: many tests run at once against one server.
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .acquire_timeout(Duration::from_secs(30));
    let opened = PostgresStore::connect_with(schema.store_options(), pool).await;
    let store: Arc<dyn Store> = match opened {
        Ok(store) => Arc::new(store),
        Err(e) => {
            schema.drop_schema().await;
            panic!("open the PostgreSQL store in its test schema: {e}");
        }
    };
    // Run the test in its own task so a panic comes back here and the schema still goes.
    let outcome = tokio::spawn(test(Arc::clone(&store))).await;
    store.close().await;
    schema.drop_schema().await;
    rethrow(outcome);
}

fn rethrow(outcome: Result<(), JoinError>) {
    match outcome {
        Ok(()) => {}
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the test task did not finish: {e}"),
    }
}

/// A throwaway schema in the test database.
pub struct PgSchema {
    options: PgConnectOptions,
    pub name: String,
}

impl PgSchema {
    /// Creates `t_<ulid>`; panics with directions when PostgreSQL cannot be reached.
    pub async fn create() -> Self {
        let options = PgConnectOptions::from_str(&postgres_url())
            .unwrap_or_else(|e| panic!("{POSTGRES_URL_ENV} is not a PostgreSQL URL: {e}"));
        let mut admin = admin_connection(&options).await;
        // Lower case, because PostgreSQL folds unquoted identifiers.
        let name = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("create test schema {name}: {e}"));
        let _ = admin.close().await;
        Self { options, name }
    }

    /// Connect options whose sessions see only this schema.
    pub fn store_options(&self) -> PgConnectOptions {
        self.options
            .clone()
            .options([("search_path", self.name.as_str())])
    }

    pub async fn drop_schema(self) {
        let mut admin = admin_connection(&self.options).await;
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("drop test schema {}: {e}", self.name));
        let _ = admin.close().await;
    }
}

async fn admin_connection(options: &PgConnectOptions) -> PgConnection {
    PgConnection::connect_with(options)
        .await
        .unwrap_or_else(|e| {
            // Host, port and database only: the URL may carry a password.
            panic!(
                "cannot connect to PostgreSQL at {}:{} (database `{}`) for the store tests: {e}. \
             These tests never skip: start PostgreSQL there or set {POSTGRES_URL_ENV}.",
                options.get_host(),
                options.get_port(),
                options.get_database().unwrap_or("(default)"),
            )
        })
}
