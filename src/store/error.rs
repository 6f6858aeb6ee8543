//! Errors of the session store.
//!
//! Messages are written for the person reading a log line or an API error: they name the
//! thing that is missing or conflicting. Connection errors never repeat the database URL,
//! because it may carry a password.

use std::path::PathBuf;

use super::SessionState;

/// What can go wrong in a [`Store`](super::Store) call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The addressed record does not exist; `what` names it, e.g. "room `lobby`".
    #[error("{what} not found")]
    NotFound { what: String },

    /// The write contradicts a record that already exists.
    #[error("conflict: {what}")]
    Conflict { what: String },

    /// The room exists but is closed, so it cannot take the change (an HTTP 412).
    #[error("room `{room_id}` is not active")]
    RoomNotActive { room_id: String },

    /// A compare-and-set transition found the session in another state than expected (an
    /// HTTP 409 that reports the current state).
    #[error("session `{session_id}` is {current}, not in the expected state")]
    StateConflict {
        session_id: String,
        current: SessionState,
    },

    /// Any other failure reported by the database or the driver.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// The database is unreachable: it did not answer in time, or it failed to moments ago
    /// (see `breaker.rs`).
    #[error("the database is unreachable: {reason}")]
    Unavailable { reason: String },

    /// Applying the versioned migrations failed (e.g. an applied migration was edited).
    #[error("could not apply database migrations: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),

    /// The database could not be opened or reached; `target` describes it without secrets.
    #[error("could not open {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },

    /// The database URL names no backend we have.
    #[error(
        "unsupported database URL scheme `{scheme}`: use sqlite://PATH, sqlite::memory: \
         or postgres://USER@HOST/DATABASE"
    )]
    UnsupportedUrl { scheme: String },

    /// The directory for an SQLite file could not be created.
    #[error("could not create the database directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }

    pub(crate) fn conflict(what: impl Into<String>) -> Self {
        Self::Conflict { what: what.into() }
    }

    /// True for [`StoreError::NotFound`], so callers can map it to 404 without matching.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// True for [`StoreError::Conflict`] (an HTTP 409).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// True when the database could not be reached or dropped the connection (it is down,
    /// restarting, or out of connections): the same call is worth repeating later, unlike a
    /// write the database refused. The recorder retries these until the database is back;
    /// the API answers them with 503.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Database(error) | Self::Connect { source: error, .. } => is_unavailable(error),
            Self::Unavailable { .. } => true,
            _ => false,
        }
    }
}

/// See [`StoreError::is_unavailable`].
fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exceptions; 57P01-03: the server is shutting down or
        // starting; 53300: too many connections.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// True when a statement failed on a unique index (e.g. a second open session in a room).
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// True when a statement failed because a referenced row (e.g. the room) does not exist.
pub(crate) fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}
