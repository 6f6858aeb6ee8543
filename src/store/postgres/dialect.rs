//! How PostgreSQL spells what the queries written once for both dialects (`store/queries/`)
//! need, and its hooks where it has to do more than SQLite. Macros, because `concat!` needs
//! literals.
//!
//! sqlx is built without its chrono feature, so timestamps cross the wire as unix
//! milliseconds: written with `ts!("$n")` and read as `FLOOR(EXTRACT(EPOCH FROM col) *
//! 1000)`. Both are exact for millisecond values. JSONB crosses as text. The SQLite twin of
//! this file is `sqlite/dialect.rs`: a spelling added here must be added there.

use super::Connection;
use crate::store::StoreError;

/// A bound unix-millisecond parameter as TIMESTAMPTZ.
macro_rules! ts {
    ($param:expr) => {
        concat!(
            "(TIMESTAMPTZ 'epoch' + ",
            $param,
            " * INTERVAL '1 millisecond')"
        )
    };
}

/// A TIMESTAMPTZ column as unix milliseconds, named like the column.
macro_rules! ms {
    ($column:literal) => {
        concat!(
            "FLOOR(EXTRACT(EPOCH FROM ",
            $column,
            ") * 1000)::BIGINT AS ",
            $column
        )
    };
}

/// A JSONB column as text, named like the column.
macro_rules! json_text {
    ($column:literal) => {
        concat!($column, "::TEXT AS ", $column)
    };
}

/// A bound JSON text parameter as JSONB.
macro_rules! json {
    ($param:literal) => {
        concat!($param, "::JSONB")
    };
}

/// A column holding seconds as an INTERVAL, to move a TIMESTAMPTZ by.
macro_rules! duration_secs {
    ($column:literal) => {
        concat!("(", $column, " * INTERVAL '1 second')")
    };
}

/// The larger of its arguments.
macro_rules! greatest {
    () => {
        "GREATEST"
    };
}

/// Text compared by bytes, as SQLite does, so both stores sort ties alike (the database's
/// default collation may follow a locale).
macro_rules! by_bytes {
    () => {
        " COLLATE \"C\""
    };
}

/// Locks the rows a SELECT reads until the transaction ends. `NO KEY UPDATE` still lets
/// other transactions insert rows that reference them (their foreign key check only needs
/// `KEY SHARE`).
macro_rules! lock_rows {
    () => {
        " FOR NO KEY UPDATE"
    };
}

/// Runs before an event is appended, after the room lock.
///
/// Identity values are handed out at insert time, but transactions commit in their own
/// order; a reader of `id > cursor` could then pass over an id that commits later. The
/// advisory lock (per schema, held until commit) makes appending transactions take turns,
/// so ids commit in order. It is taken after the room lock, and no transaction takes a room
/// lock after it, so it adds no deadlock.
pub(super) async fn before_append(conn: &mut Connection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.events'))")
        .execute(conn)
        .await?;
    Ok(())
}
