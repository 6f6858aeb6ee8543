//! How SQLite spells what the queries written once for both dialects (`store/queries/`)
//! need, and its no-op hooks where PostgreSQL has to do more. Macros, because `concat!`
//! needs literals.
//!
//! Timestamps are INTEGER unix milliseconds and JSON is TEXT, so most spellings are the
//! bare value. The PostgreSQL twin of this file is `postgres/dialect.rs`: a spelling added
//! here must be added there.

use super::Connection;
use crate::store::StoreError;

/// A bound unix-millisecond parameter as a stored timestamp: the integer itself.
macro_rules! ts {
    ($param:expr) => {
        $param
    };
}

/// A timestamp column read as unix milliseconds: the column itself.
macro_rules! ms {
    ($column:literal) => {
        $column
    };
}

/// A JSON column read as text: the column itself.
macro_rules! json_text {
    ($column:literal) => {
        $column
    };
}

/// A bound JSON text parameter as a stored JSON value: the text itself.
macro_rules! json {
    ($param:literal) => {
        $param
    };
}

/// A column holding seconds as something a timestamp can be moved by (milliseconds).
macro_rules! duration_secs {
    ($column:literal) => {
        concat!("(", $column, " * 1000)")
    };
}

/// The larger of its arguments (SQLite's MAX with two arguments is scalar, not aggregate).
macro_rules! greatest {
    () => {
        "MAX"
    };
}

/// Text compared by bytes: SQLite's default collation, spelled out.
macro_rules! by_bytes {
    () => {
        " COLLATE BINARY"
    };
}

/// Locks the rows a SELECT reads for the rest of the transaction: nothing to add, every
/// write transaction already holds SQLite's single write lock (`BEGIN IMMEDIATE`).
macro_rules! lock_rows {
    () => {
        ""
    };
}

/// Runs before an event is appended. Nothing to do: with one writer at a time, event ids
/// already commit in the order they are handed out.
pub(super) async fn before_append(_conn: &mut Connection) -> Result<(), StoreError> {
    Ok(())
}
