//! Reads and writes of the event log, delivery cursors and the audit log.

/// Implements the log methods on `$store` (a dialect's store with a `pool` field and a
/// `room_exists` method).
macro_rules! impl_log_queries {
    ($store:ty) => {
        impl $store {
            pub(super) async fn list_events_impl(
                &self,
                room_id: &str,
                after_seq: i64,
                limit: u32,
            ) -> Result<Vec<$crate::store::EventRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::records::EventRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events WHERE room_id = ",
                    param!(1),
                    " AND seq > ",
                    param!(2),
                    " ORDER BY seq LIMIT ",
                    param!(3)
                ))
                .bind(room_id)
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                if rows.is_empty() && !self.room_exists(room_id).await? {
                    return Err($crate::store::StoreError::not_found(format!(
                        "room `{room_id}`"
                    )));
                }
                Ok($crate::store::records::all(rows)?)
            }

            pub(super) async fn events_after_impl(
                &self,
                after_id: i64,
                limit: u32,
            ) -> Result<Vec<$crate::store::EventRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::records::EventRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events WHERE id > ",
                    param!(1),
                    " ORDER BY id LIMIT ",
                    param!(2)
                ))
                .bind(after_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok($crate::store::records::all(rows)?)
            }

            pub(super) async fn delivery_cursor_impl(
                &self,
                sink: &str,
            ) -> Result<i64, $crate::store::StoreError> {
                let cursor: Option<i64> = sqlx::query_scalar(concat!(
                    "SELECT event_id FROM delivery_cursors WHERE sink = ",
                    param!(1)
                ))
                .bind(sink)
                .fetch_optional(&self.pool)
                .await?;
                Ok(cursor.unwrap_or(0))
            }

            pub(super) async fn set_delivery_cursor_impl(
                &self,
                sink: &str,
                event_id: i64,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(concat!(
                    "INSERT INTO delivery_cursors (sink, event_id, updated_at) VALUES (",
                    param!(1),
                    ", ",
                    param!(2),
                    ", ",
                    ts!(param!(3)),
                    ") ON CONFLICT (sink) DO UPDATE SET event_id = excluded.event_id, \
                     updated_at = excluded.updated_at"
                ))
                .bind(sink)
                .bind(event_id)
                .bind($crate::store::records::to_millis(chrono::Utc::now()))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            pub(super) async fn record_audit_impl(
                &self,
                entry: &$crate::store::AuditEntry,
            ) -> Result<$crate::store::AuditRecord, $crate::store::StoreError> {
                let row: $crate::store::records::AuditRow = sqlx::query_as(concat!(
                    "INSERT INTO audit_log (actor, action, target, remote_addr, outcome, \
                     detail, at) VALUES (",
                    param!(1),
                    ", ",
                    param!(2),
                    ", ",
                    param!(3),
                    ", ",
                    param!(4),
                    ", ",
                    param!(5),
                    ", ",
                    param!(6),
                    ", ",
                    ts!(param!(7)),
                    ") RETURNING ",
                    audit_columns!()
                ))
                .bind(&entry.actor)
                .bind(&entry.action)
                .bind(&entry.target)
                .bind(&entry.remote_addr)
                .bind(&entry.outcome)
                .bind(&entry.detail)
                .bind($crate::store::records::to_millis(entry.at))
                .fetch_one(&self.pool)
                .await?;
                Ok(row.try_into()?)
            }

            pub(super) async fn list_audit_impl(
                &self,
                limit: u32,
                before_id: Option<i64>,
            ) -> Result<Vec<$crate::store::AuditRecord>, $crate::store::StoreError> {
                // CAST gives the first parameter a type in PostgreSQL even when it is NULL.
                let rows: Vec<$crate::store::records::AuditRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    audit_columns!(),
                    " FROM audit_log WHERE CAST(",
                    param!(1),
                    " AS BIGINT) IS NULL OR id < ",
                    param!(1),
                    " ORDER BY id DESC LIMIT ",
                    param!(2)
                ))
                .bind(before_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok($crate::store::records::all(rows)?)
            }
        }
    };
}
