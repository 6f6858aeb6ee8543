//! Sessions: create (attaching the people already in the room), compare-and-set
//! transitions, reads.

use chrono::{DateTime, Utc};

use super::{tx, DialectStore};
use crate::store::error::is_foreign_key_violation;
use crate::store::outbox;
use crate::store::records::{all, found, to_millis, SessionRow};
use crate::store::{NewSession, RoomStatus, SessionRecord, SessionState, StoreError};

impl DialectStore {
    pub(super) async fn create_session_impl(
        &self,
        s: &NewSession,
    ) -> Result<SessionRecord, StoreError> {
        let mut tx = self.write().await?;
        // The room lock serialises session creation per room, so the check below is exact.
        let room = tx::require_room(&mut tx, &s.room_id).await?;
        if room.status != RoomStatus::Active {
            return Err(StoreError::RoomNotActive {
                room_id: s.room_id.clone(),
            });
        }
        // Checked first for a message that names the open session; the partial unique index
        // stays the final word (see `open_session_conflict`).
        if let Some(open) = tx::open_session(&mut tx, &s.room_id).await? {
            return Err(StoreError::conflict(format!(
                "room `{}` already has an open session `{}` ({})",
                s.room_id, open.session_id, open.state
            )));
        }
        let at = to_millis(s.at);
        let row: SessionRow = sqlx::query_as(concat!(
            "INSERT INTO sessions (session_id, room_id, channel_id, owner_identity, state, \
                 created_at, updated_at, ended_at, version) \
             VALUES ($1, $2, $3, $4, $5, ",
            ts!("$6"),
            ", ",
            ts!("$6"),
            ", ",
            ts!("$7"),
            ", 1) RETURNING ",
            session_columns!()
        ))
        .bind(&s.session_id)
        .bind(&s.room_id)
        .bind(s.channel_id.as_ref().or(room.channel_id.as_ref()))
        .bind(&s.owner_identity)
        .bind(s.state.as_str())
        .bind(at)
        .bind((!s.state.is_open()).then_some(at))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::not_found(format!("room `{}`", s.room_id))
            } else {
                tx::open_session_conflict(e, &s.session_id)
            }
        })?;
        let session = SessionRecord::try_from(row)?;

        // The people already in the room belong to the new session.
        for connection in tx::open_connections(&mut tx, &s.room_id).await? {
            tx::upsert_session_participant(&mut tx, &session.session_id, &connection).await?;
        }
        sqlx::query(
            "UPDATE connections SET session_id = $1 WHERE room_id = $2 AND left_at IS NULL",
        )
        .bind(&session.session_id)
        .bind(&s.room_id)
        .execute(&mut *tx)
        .await?;

        tx::append(&mut tx, outbox::session_changed(&session, None, None, s.at)).await?;
        tx.commit().await?;
        Ok(session)
    }

    pub(super) async fn get_session_impl(
        &self,
        session_id: &str,
    ) -> Result<SessionRecord, StoreError> {
        let row: Option<SessionRow> = sqlx::query_as(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE session_id = $1"
        ))
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await?;
        found(row, || format!("session `{session_id}`"))
    }

    pub(super) async fn list_sessions_impl(
        &self,
        room_id: &str,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let rows: Vec<SessionRow> = sqlx::query_as(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE room_id = $1 ORDER BY created_at DESC, session_id",
            by_bytes!(),
            " DESC"
        ))
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() && !self.room_exists(room_id).await? {
            return Err(StoreError::not_found(format!("room `{room_id}`")));
        }
        Ok(all(rows)?)
    }

    pub(super) async fn open_session_impl(
        &self,
        room_id: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let open = tx::open_session(&mut conn, room_id).await?;
        drop(conn);
        if open.is_none() && !self.room_exists(room_id).await? {
            return Err(StoreError::not_found(format!("room `{room_id}`")));
        }
        Ok(open)
    }

    pub(super) async fn transition_session_impl(
        &self,
        session_id: &str,
        from: SessionState,
        to: SessionState,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<SessionRecord, StoreError> {
        let mut tx = self.write().await?;
        // A session never changes rooms, so its room can be read before taking the lock.
        let room_id: Option<String> =
            sqlx::query_scalar("SELECT room_id FROM sessions WHERE session_id = $1")
                .bind(session_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(room_id) = room_id else {
            return Err(StoreError::not_found(format!("session `{session_id}`")));
        };
        tx::require_room(&mut tx, &room_id).await?;
        if let Some(session) = tx::move_session(&mut tx, session_id, from, to, reason, at).await? {
            tx.commit().await?;
            return Ok(session);
        }
        let current: String =
            sqlx::query_scalar("SELECT state FROM sessions WHERE session_id = $1")
                .bind(session_id)
                .fetch_one(&mut *tx)
                .await?;
        Err(StoreError::StateConflict {
            session_id: session_id.to_owned(),
            current: current
                .parse()
                .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
        })
    }

    pub(super) async fn session_exists(&self, session_id: &str) -> Result<bool, StoreError> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT session_id FROM sessions WHERE session_id = $1")
                .bind(session_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }
}
