//! Delivery once: one lease per sink in `delivery_leases`, taken and renewed by one
//! conditional upsert (as room leases are, see `leases.rs`), and the cursor write fenced by
//! it.
//!
//! The fence is a transaction that first locks the sink's lease row and checks that the
//! writer holds it, unexpired, in the generation it was granted, and only then stores the
//! cursor. A takeover (the upsert) needs the same row lock, so it either commits before the
//! check (which then refuses) or waits for the cursor write to commit (and the new holder
//! reads the cursor after its takeover, so it sees that write). SQLite: every write
//! transaction holds the single write lock.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::leases::expiry;
use super::DialectStore;
use crate::store::records::{from_millis, to_millis, DeliveryLeaseRow};
use crate::store::{DeliveryLease, DeliveryLeaseOutcome, StoreError};

impl DialectStore {
    pub(super) async fn acquire_delivery_lease_impl(
        &self,
        sink: &str,
        node_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<DeliveryLeaseOutcome, StoreError> {
        let mut tx = self.write().await?;
        // A renewal is the same node on an unexpired lease; anything else the WHERE lets
        // through (free, expired, released) is a new tenure with a new generation.
        let granted: Option<(i64, i64)> = sqlx::query_as(concat!(
            "INSERT INTO delivery_leases (sink, node_id, generation, acquired_at, expires_at) \
             VALUES ($1, $2, 1, ",
            ts!("$3"),
            ", ",
            ts!("$4"),
            ") ON CONFLICT (sink) DO UPDATE SET \
                 generation = CASE WHEN delivery_leases.node_id = excluded.node_id \
                         AND delivery_leases.expires_at > excluded.acquired_at \
                     THEN delivery_leases.generation ELSE delivery_leases.generation + 1 END, \
                 acquired_at = CASE WHEN delivery_leases.node_id = excluded.node_id \
                         AND delivery_leases.expires_at > excluded.acquired_at \
                     THEN delivery_leases.acquired_at ELSE excluded.acquired_at END, \
                 expires_at = CASE WHEN delivery_leases.node_id = excluded.node_id \
                         AND delivery_leases.expires_at > excluded.acquired_at \
                     THEN ",
            greatest!(),
            "(delivery_leases.expires_at, excluded.expires_at) ELSE excluded.expires_at END, \
                 node_id = excluded.node_id \
             WHERE delivery_leases.node_id = excluded.node_id \
                 OR delivery_leases.expires_at <= excluded.acquired_at \
             RETURNING generation, ",
            ms!("expires_at")
        ))
        .bind(sink)
        .bind(node_id)
        .bind(to_millis(now))
        .bind(to_millis(expiry(now, ttl)))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((generation, expires_at)) = granted {
            tx.commit().await?;
            return Ok(DeliveryLeaseOutcome::Granted {
                generation,
                expires_at: from_millis(expires_at, "delivery_leases.expires_at")?,
            });
        }
        // PostgreSQL keeps the lock on the row that refused us, so this reads that holder.
        let holder = lease(&mut tx, sink).await?;
        tx.commit().await?;
        holder
            .map(DeliveryLeaseOutcome::HeldBy)
            .ok_or_else(|| StoreError::Conflict {
                what: format!("the delivery lease of `{sink}` vanished while it was refused"),
            })
    }

    pub(super) async fn release_delivery_lease_impl(
        &self,
        sink: &str,
        node_id: &str,
        generation: i64,
    ) -> Result<bool, StoreError> {
        // The epoch, not a delete: the generation must keep counting across holders.
        let done = sqlx::query(concat!(
            "UPDATE delivery_leases SET expires_at = ",
            ts!("$4"),
            " WHERE sink = $1 AND node_id = $2 AND generation = $3 AND expires_at > ",
            ts!("$4")
        ))
        .bind(sink)
        .bind(node_id)
        .bind(generation)
        .bind(0_i64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn delivery_lease_impl(
        &self,
        sink: &str,
    ) -> Result<Option<DeliveryLease>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        lease(&mut conn, sink).await
    }

    pub(super) async fn set_delivery_cursor_fenced_impl(
        &self,
        sink: &str,
        node_id: &str,
        generation: i64,
        event_id: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let held: Option<i64> = sqlx::query_scalar(concat!(
            "SELECT generation FROM delivery_leases \
             WHERE sink = $1 AND node_id = $2 AND generation = $3 AND expires_at > ",
            ts!("$4"),
            lock_rows!()
        ))
        .bind(sink)
        .bind(node_id)
        .bind(generation)
        .bind(to_millis(now))
        .fetch_optional(&mut *tx)
        .await?;
        if held.is_none() {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(concat!(
            "INSERT INTO delivery_cursors (sink, event_id, updated_at) VALUES ($1, $2, ",
            ts!("$3"),
            ") ON CONFLICT (sink) DO UPDATE SET event_id = excluded.event_id, \
             updated_at = excluded.updated_at"
        ))
        .bind(sink)
        .bind(event_id)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// The sink's lease row, expired or not.
async fn lease(
    conn: &mut super::Connection,
    sink: &str,
) -> Result<Option<DeliveryLease>, StoreError> {
    let row: Option<DeliveryLeaseRow> = sqlx::query_as(concat!(
        "SELECT sink, node_id, generation, ",
        ms!("expires_at"),
        " FROM delivery_leases WHERE sink = $1"
    ))
    .bind(sink)
    .fetch_optional(conn)
    .await?;
    row.map(DeliveryLeaseRow::into_lease)
        .transpose()
        .map_err(StoreError::from)
}
