//! Egress records and their status reports.

use super::{tx, Connection, DialectStore};
use crate::store::error::{is_foreign_key_violation, is_unique_violation};
use crate::store::outbox;
use crate::store::records::{all, found, to_millis, EgressRow};
use crate::store::{kinds, EgressRecord, EgressUpdate, NewEgress, StoreError};

impl DialectStore {
    pub(super) async fn create_egress_impl(
        &self,
        e: &NewEgress,
    ) -> Result<EgressRecord, StoreError> {
        let mut tx = self.write().await?;
        tx::require_room(&mut tx, &e.room_id).await?;
        if let Some(session_id) = &e.session_id {
            check_session_room(&mut tx, session_id, &e.room_id).await?;
        }
        let row: EgressRow = sqlx::query_as(concat!(
            "INSERT INTO egress (egress_id, session_id, room_id, kind, status, output, error, \
                 created_at, updated_at, started_at, ended_at, node_id) \
             VALUES ($1, $2, $3, $4, 'starting', ",
            json!("$5"),
            ", NULL, ",
            ts!("$6"),
            ", ",
            ts!("$6"),
            ", NULL, NULL, $7) RETURNING ",
            egress_columns!()
        ))
        .bind(&e.egress_id)
        .bind(&e.session_id)
        .bind(&e.room_id)
        .bind(&e.kind)
        .bind(e.output.to_string())
        .bind(to_millis(e.at))
        .bind(&e.node_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(|err| {
            if is_unique_violation(&err) {
                StoreError::conflict(format!("egress `{}` already exists", e.egress_id))
            } else if is_foreign_key_violation(&err) {
                StoreError::not_found(format!("room `{}`", e.room_id))
            } else {
                err.into()
            }
        })?;
        let egress = EgressRecord::try_from(row)?;
        tx::append(
            &mut tx,
            outbox::egress(kinds::EGRESS_STARTED, &egress, e.at),
        )
        .await?;
        tx.commit().await?;
        Ok(egress)
    }

    pub(super) async fn update_egress_impl(
        &self,
        egress_id: &str,
        u: &EgressUpdate,
    ) -> Result<EgressRecord, StoreError> {
        let mut tx = self.write().await?;
        // An egress never changes rooms, so its room can be read before taking the lock;
        // the status is read again after it.
        let room_id: Option<String> =
            sqlx::query_scalar("SELECT room_id FROM egress WHERE egress_id = $1")
                .bind(egress_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(room_id) = room_id else {
            return Err(StoreError::not_found(format!("egress `{egress_id}`")));
        };
        tx::require_room(&mut tx, &room_id).await?;
        let current: Option<EgressRow> = sqlx::query_as(concat!(
            "SELECT ",
            egress_columns!(),
            " FROM egress WHERE egress_id = $1"
        ))
        .bind(egress_id)
        .fetch_optional(&mut *tx)
        .await?;
        let current: EgressRecord = found(current, || format!("egress `{egress_id}`"))?;
        if current.status.is_terminal() {
            return Err(StoreError::conflict(format!(
                "egress `{egress_id}` is already {} and cannot change",
                current.status
            )));
        }
        let row: EgressRow = sqlx::query_as(concat!(
            "UPDATE egress SET status = $1, error = COALESCE($2, error), \
                 output = COALESCE(",
            json!("$3"),
            ", output), updated_at = ",
            ts!("$4"),
            ", started_at = CASE WHEN $1 = 'active' THEN COALESCE(started_at, ",
            ts!("$4"),
            ") ELSE started_at END, \
                 ended_at = CASE WHEN $1 IN ('complete', 'failed') THEN ",
            ts!("$4"),
            " ELSE ended_at END \
             WHERE egress_id = $5 RETURNING ",
            egress_columns!()
        ))
        .bind(u.status.as_str())
        .bind(&u.error)
        .bind(u.output.as_ref().map(|o| o.to_string()))
        .bind(to_millis(u.at))
        .bind(egress_id)
        .fetch_one(&mut *tx)
        .await?;
        let egress = EgressRecord::try_from(row)?;
        tx::append(
            &mut tx,
            outbox::egress(outbox::egress_kind(&egress), &egress, u.at),
        )
        .await?;
        tx.commit().await?;
        Ok(egress)
    }

    pub(super) async fn get_egress_impl(
        &self,
        egress_id: &str,
    ) -> Result<EgressRecord, StoreError> {
        let row: Option<EgressRow> = sqlx::query_as(concat!(
            "SELECT ",
            egress_columns!(),
            " FROM egress WHERE egress_id = $1"
        ))
        .bind(egress_id)
        .fetch_optional(&self.pool)
        .await?;
        found(row, || format!("egress `{egress_id}`"))
    }

    pub(super) async fn list_egress_impl(
        &self,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<EgressRecord>, StoreError> {
        let rows: Vec<EgressRow> = sqlx::query_as(concat!(
            "SELECT ",
            egress_columns!(),
            " FROM egress WHERE (CAST($1 AS TEXT) IS NULL OR room_id = $1) \
                 AND (CAST($2 AS TEXT) IS NULL OR session_id = $2) \
             ORDER BY created_at DESC, egress_id",
            by_bytes!(),
            " DESC"
        ))
        .bind(room_id)
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(all(rows)?)
    }
}

/// NotFound for an unknown session, Conflict for a session of another room.
async fn check_session_room(
    conn: &mut Connection,
    session_id: &str,
    room_id: &str,
) -> Result<(), StoreError> {
    let owner: Option<String> =
        sqlx::query_scalar("SELECT room_id FROM sessions WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(conn)
            .await?;
    match owner {
        None => Err(StoreError::not_found(format!("session `{session_id}`"))),
        Some(owner) if owner != room_id => Err(StoreError::conflict(format!(
            "session `{session_id}` belongs to room `{owner}`, not `{room_id}`"
        ))),
        Some(_) => Ok(()),
    }
}
