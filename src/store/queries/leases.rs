//! Placement by lease: one row per room in `room_leases`, taken and renewed by one
//! conditional upsert, so nodes racing for a room never both get it.
//!
//! PostgreSQL: `ON CONFLICT DO UPDATE … WHERE` locks the conflicting row before it checks
//! the condition, and keeps the lock when the condition fails; reading the holder afterwards
//! in the same transaction therefore sees the row that refused us, not a later one. SQLite:
//! every write transaction holds the single write lock.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Connection, DialectStore};
use crate::store::records::{to_millis, LeaseRow};
use crate::store::{LeaseOutcome, RoomLease, StoreError};

/// Attempts at taking a lease whose holder vanished between the upsert and the read (only
/// possible if a row is deleted under us; each attempt is one upsert).
const ATTEMPTS: usize = 3;

impl DialectStore {
    pub(super) async fn acquire_room_lease_impl(
        &self,
        room_id: &str,
        node_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        let expires = expiry(now, ttl);
        for _ in 0..ATTEMPTS {
            let mut tx = self.write().await?;
            if let Some(expires_at) = take(&mut tx, room_id, node_id, now, expires).await? {
                tx.commit().await?;
                return Ok(LeaseOutcome::Granted { expires_at });
            }
            let holder = lease(&mut tx, room_id).await?;
            tx.commit().await?;
            if let Some(holder) = holder {
                return Ok(LeaseOutcome::HeldBy(holder));
            }
        }
        Err(StoreError::Conflict {
            what: format!("the lease of room `{room_id}` kept changing hands"),
        })
    }

    pub(super) async fn renew_room_leases_impl(
        &self,
        node_id: &str,
        room_ids: &[String],
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<Vec<String>, StoreError> {
        if room_ids.is_empty() {
            return Ok(Vec::new());
        }
        let expires = expiry(now, ttl);
        // Rows locked in one order by every renewer, so two renewals cannot deadlock.
        let mut sorted: Vec<&String> = room_ids.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut held_elsewhere = Vec::new();
        let mut tx = self.write().await?;
        for room_id in sorted {
            if take(&mut tx, room_id, node_id, now, expires)
                .await?
                .is_none()
            {
                held_elsewhere.push(room_id.as_str());
            }
        }
        tx.commit().await?;
        Ok(room_ids
            .iter()
            .filter(|room| held_elsewhere.contains(&room.as_str()))
            .cloned()
            .collect())
    }

    pub(super) async fn release_room_lease_impl(
        &self,
        room_id: &str,
        node_id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM room_leases WHERE room_id = $1 AND node_id = $2")
            .bind(room_id)
            .bind(node_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn room_owner_impl(
        &self,
        room_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<RoomLease>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let found = lease(&mut conn, room_id).await?;
        Ok(found.filter(|lease| lease.expires_at > now))
    }
}

/// `now + ttl`, saturating.
pub(super) fn expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    now.checked_add_signed(ttl)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The one conditional upsert: takes the room for `node_id` when it has no lease, its lease
/// expired at or before `now`, or `node_id` holds it already (the expiry then only moves
/// forward). The lease's expiry when taken, `None` when another node holds it.
async fn take(
    conn: &mut Connection,
    room_id: &str,
    node_id: &str,
    now: DateTime<Utc>,
    expires: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let expires_at: Option<i64> = sqlx::query_scalar(concat!(
        "INSERT INTO room_leases (room_id, node_id, acquired_at, expires_at) VALUES ($1, $2, ",
        ts!("$3"),
        ", ",
        ts!("$4"),
        ") ON CONFLICT (room_id) DO UPDATE SET \
             node_id = excluded.node_id, \
             acquired_at = CASE WHEN room_leases.node_id = excluded.node_id \
                 THEN room_leases.acquired_at ELSE excluded.acquired_at END, \
             expires_at = CASE WHEN room_leases.node_id = excluded.node_id \
                 THEN ",
        greatest!(),
        "(room_leases.expires_at, excluded.expires_at) ELSE excluded.expires_at END \
         WHERE room_leases.node_id = excluded.node_id \
             OR room_leases.expires_at <= excluded.acquired_at \
         RETURNING ",
        ms!("expires_at")
    ))
    .bind(room_id)
    .bind(node_id)
    .bind(to_millis(now))
    .bind(to_millis(expires))
    .fetch_optional(conn)
    .await?;
    expires_at
        .map(|ms| crate::store::records::from_millis(ms, "room_leases.expires_at"))
        .transpose()
        .map_err(StoreError::from)
}

/// The room's lease row, expired or not, with its holder's URLs if known.
async fn lease(conn: &mut Connection, room_id: &str) -> Result<Option<RoomLease>, StoreError> {
    let row: Option<LeaseRow> = sqlx::query_as(concat!(
        "SELECT room_id, node_id, ",
        ms!("expires_at"),
        ", (SELECT public_url FROM nodes WHERE nodes.node_id = room_leases.node_id) \
             AS public_url, \
           (SELECT http_url FROM nodes WHERE nodes.node_id = room_leases.node_id) \
             AS http_url \
         FROM room_leases WHERE room_id = $1"
    ))
    .bind(room_id)
    .fetch_optional(conn)
    .await?;
    row.map(LeaseRow::into_lease)
        .transpose()
        .map_err(StoreError::from)
}
