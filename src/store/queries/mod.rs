//! The store's queries and the [`Store`](crate::store::Store) implementation, written once
//! for both dialects.
//!
//! `store/mod.rs` does not declare this folder: `sqlite/mod.rs` and `postgres/mod.rs` each
//! include it as their own `queries` (`#[path = "../queries/mod.rs"]`), so it is compiled
//! twice, as `sqlite::queries` and `postgres::queries`, and every query is type-checked
//! against each backend's sqlx driver. In each copy, the parent (`super`) provides:
//! - `DialectStore`, the store type the methods are implemented on, with its `pool`,
//!   `write()` (a write transaction) and `guarded()` (the call wrapper);
//! - `Connection`, the driver's connection type, and `BACKEND`, its name;
//! - `dialect`: the spelling macros (`ts!`, `ms!`, `json!`, `json_text!`, `greatest!`,
//!   `by_bytes!`, `lock_rows!`, `duration_secs!`) and hooks such as `before_append`.
//!
//! Placeholders are `$1`, `$2`, … in both dialects: sqlx's SQLite driver binds `$N` by its
//! number, like PostgreSQL does.
//!
//! The trait methods live in per-area modules (`rooms`, `sessions`, …) as inherent
//! `*_impl` methods; `store_impl` forwards the trait to them, and `tx` holds the steps
//! several of them share inside one transaction (locking the room, appending an event,
//! closing a connection, moving a session).

#[macro_use]
mod columns;
mod delivery_leases;
mod egress;
mod leases;
mod log;
mod nodes;
mod participants;
mod reconcile;
mod revocations;
mod rooms;
mod sessions;
mod store_impl;
mod transcripts;
mod tx;

use super::{dialect, Connection, DialectStore, BACKEND};
