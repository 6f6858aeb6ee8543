//! Conversions between records and database values, shared by both backends.
//!
//! Both backends decode rows into the same private row structs (timestamps as unix
//! milliseconds, counters as i64), so the mapping to the public records lives here once and
//! the two stores cannot drift apart in how they interpret a column.

use chrono::{DateTime, Utc};

use crate::store::StoreError;

/// Unix milliseconds as stored; sub-millisecond parts are dropped (see the module docs).
pub(crate) fn to_millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| {
        decode_error(format!(
            "{column} = {ms} is not a valid unix millisecond timestamp"
        ))
    })
}

pub(crate) fn from_opt_millis(
    ms: Option<i64>,
    column: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    ms.map(|ms| from_millis(ms, column)).transpose()
}

/// Counters are u64 in Rust and signed 64-bit in both databases. They saturate rather than
/// fail the write: losing a leave record over a counter beyond 2^63 would be worse than
/// clipping it, and no real connection gets there.
pub(crate) fn to_db_count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn from_db_count(value: i64, column: &str) -> Result<u64, sqlx::Error> {
    u64::try_from(value).map_err(|_| decode_error(format!("{column} = {value} is negative")))
}

pub(crate) fn from_db_u32(value: i64, column: &str) -> Result<u32, sqlx::Error> {
    u32::try_from(value).map_err(|_| decode_error(format!("{column} = {value} is out of range")))
}

pub(crate) fn decode_error(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

/// Parses a column holding one of our enums (stored as text).
pub(crate) fn parse_column<T>(value: &str, column: &str) -> Result<T, sqlx::Error>
where
    T: std::str::FromStr<Err = String>,
{
    value
        .parse()
        .map_err(|e: String| decode_error(format!("{column}: {e}")))
}

/// JSON kept as text in SQLite and read back as text from PostgreSQL's JSONB.
pub(crate) fn parse_json(value: &str, column: &str) -> Result<serde_json::Value, sqlx::Error> {
    serde_json::from_str(value)
        .map_err(|e| decode_error(format!("{column} is not valid JSON: {e}")))
}

/// Converts an optional row into a record, or NotFound naming `what`.
pub(crate) fn found<R, T>(row: Option<R>, what: impl FnOnce() -> String) -> Result<T, StoreError>
where
    T: TryFrom<R, Error = sqlx::Error>,
{
    match row {
        Some(row) => Ok(T::try_from(row)?),
        None => Err(StoreError::not_found(what())),
    }
}

/// Converts a list of rows into records.
pub(crate) fn all<R, T>(rows: Vec<R>) -> Result<Vec<T>, sqlx::Error>
where
    T: TryFrom<R, Error = sqlx::Error>,
{
    rows.into_iter().map(T::try_from).collect()
}
