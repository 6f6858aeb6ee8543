//! Reads and writes of the event log, delivery cursors and the audit log.

use chrono::Utc;

use super::DialectStore;
use crate::store::records::{all, to_millis, AuditRow, EventRow};
use crate::store::{AuditEntry, AuditRecord, EventRecord, StoreError};

impl DialectStore {
    pub(super) async fn list_events_impl(
        &self,
        room_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE room_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(room_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() && !self.room_exists(room_id).await? {
            return Err(StoreError::not_found(format!("room `{room_id}`")));
        }
        Ok(all(rows)?)
    }

    pub(super) async fn events_after_impl(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(all(rows)?)
    }

    pub(super) async fn delivery_cursor_impl(&self, sink: &str) -> Result<i64, StoreError> {
        let cursor: Option<i64> =
            sqlx::query_scalar("SELECT event_id FROM delivery_cursors WHERE sink = $1")
                .bind(sink)
                .fetch_optional(&self.pool)
                .await?;
        Ok(cursor.unwrap_or(0))
    }

    pub(super) async fn set_delivery_cursor_impl(
        &self,
        sink: &str,
        event_id: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO delivery_cursors (sink, event_id, updated_at) VALUES ($1, $2, ",
            ts!("$3"),
            ") ON CONFLICT (sink) DO UPDATE SET event_id = excluded.event_id, \
             updated_at = excluded.updated_at"
        ))
        .bind(sink)
        .bind(event_id)
        .bind(to_millis(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn record_audit_impl(
        &self,
        entry: &AuditEntry,
    ) -> Result<AuditRecord, StoreError> {
        let row: AuditRow = sqlx::query_as(concat!(
            "INSERT INTO audit_log (actor, action, target, remote_addr, outcome, detail, at) \
             VALUES ($1, $2, $3, $4, $5, $6, ",
            ts!("$7"),
            ") RETURNING ",
            audit_columns!()
        ))
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(&entry.remote_addr)
        .bind(&entry.outcome)
        .bind(&entry.detail)
        .bind(to_millis(entry.at))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_into()?)
    }

    pub(super) async fn list_audit_impl(
        &self,
        limit: u32,
        before_id: Option<i64>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        // CAST gives the first parameter a type in PostgreSQL even when it is NULL.
        let rows: Vec<AuditRow> = sqlx::query_as(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_log WHERE CAST($1 AS BIGINT) IS NULL OR id < $1 \
             ORDER BY id DESC LIMIT $2"
        ))
        .bind(before_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(all(rows)?)
    }
}
