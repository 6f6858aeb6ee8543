//! Connections and session participants; tracks (events only).

use super::{tx, DialectStore};
use crate::store::error::is_foreign_key_violation;
use crate::store::outbox;
use crate::store::records::{
    all, found, same_connection, to_millis, ParticipantRow, SessionParticipantRow,
};
use crate::store::{
    kinds, ParticipantJoin, ParticipantLeave, ParticipantRecord, SessionParticipantRecord,
    StoreError, TrackEvent,
};

impl DialectStore {
    pub(super) async fn participant_joined_impl(
        &self,
        p: &ParticipantJoin,
    ) -> Result<ParticipantRecord, StoreError> {
        let mut tx = self.write().await?;
        tx::require_room(&mut tx, &p.room_id).await?;
        if let Some(session_id) = &p.session_id {
            let room_id: Option<String> =
                sqlx::query_scalar("SELECT room_id FROM sessions WHERE session_id = $1")
                    .bind(session_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            match room_id {
                None => return Err(StoreError::not_found(format!("session `{session_id}`"))),
                Some(room_id) if room_id != p.room_id => {
                    return Err(StoreError::conflict(format!(
                        "session `{session_id}` belongs to room `{room_id}`, not `{}`",
                        p.room_id
                    )))
                }
                Some(_) => {}
            }
        }

        let inserted: Option<ParticipantRow> = sqlx::query_as(concat!(
            "INSERT INTO connections (sid, room_id, identity, name, role, metadata, joined_at, \
                 session_id, node_id) \
             VALUES ($1, $2, $3, $4, $5, $6, ",
            ts!("$7"),
            ", $8, $9) \
             ON CONFLICT (sid) DO NOTHING \
             RETURNING ",
            connection_columns!()
        ))
        .bind(&p.sid)
        .bind(&p.room_id)
        .bind(&p.identity)
        .bind(&p.name)
        .bind(p.role.map(|r| r.as_str()))
        .bind(&p.metadata)
        .bind(to_millis(p.joined_at))
        .bind(&p.session_id)
        .bind(&p.node_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::not_found(format!("room `{}`", p.room_id))
            } else {
                e.into()
            }
        })?;

        let Some(row) = inserted else {
            // The sid is taken: a retried join is fine (and records nothing new), anything
            // else is a real clash.
            let existing: ParticipantRow = sqlx::query_as(concat!(
                "SELECT ",
                connection_columns!(),
                " FROM connections WHERE sid = $1"
            ))
            .bind(&p.sid)
            .fetch_one(&mut *tx)
            .await?;
            return same_connection(ParticipantRecord::try_from(existing)?, p);
        };
        let connection = ParticipantRecord::try_from(row)?;

        tx::touch_room(&mut tx, &p.room_id, to_millis(p.joined_at)).await?;
        let session_participant = match &p.session_id {
            Some(session_id) => {
                Some(tx::upsert_session_participant(&mut tx, session_id, &connection).await?)
            }
            None => None,
        };
        tx::append(
            &mut tx,
            outbox::participant(
                kinds::PARTICIPANT_JOINED,
                &connection,
                p.session_id.clone(),
                session_participant.as_ref(),
                p.joined_at,
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(connection)
    }

    pub(super) async fn participant_left_impl(
        &self,
        sid: &str,
        left: &ParticipantLeave,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        // A connection never changes rooms, so its room can be read before taking the lock.
        let room_id: Option<String> =
            sqlx::query_scalar("SELECT room_id FROM connections WHERE sid = $1")
                .bind(sid)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(room_id) = room_id else {
            return Err(StoreError::not_found(format!("participant `{sid}`")));
        };
        tx::require_room(&mut tx, &room_id).await?;
        let closed = tx::close_connection(
            &mut tx,
            sid,
            left.left_at,
            &left.reason,
            Some(&left.summary),
        )
        .await?;
        if closed.is_none() {
            tracing::debug!(sid, reason = %left.reason, "participant already left");
            return Ok(());
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn get_participant_impl(
        &self,
        sid: &str,
    ) -> Result<ParticipantRecord, StoreError> {
        let row: Option<ParticipantRow> = sqlx::query_as(concat!(
            "SELECT ",
            connection_columns!(),
            " FROM connections WHERE sid = $1"
        ))
        .bind(sid)
        .fetch_optional(&self.pool)
        .await?;
        found(row, || format!("participant `{sid}`"))
    }

    pub(super) async fn list_participants_impl(
        &self,
        room_id: &str,
    ) -> Result<Vec<ParticipantRecord>, StoreError> {
        let rows: Vec<ParticipantRow> = sqlx::query_as(concat!(
            "SELECT ",
            connection_columns!(),
            " FROM connections WHERE room_id = $1 ORDER BY joined_at, sid",
            by_bytes!()
        ))
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() && !self.room_exists(room_id).await? {
            return Err(StoreError::not_found(format!("room `{room_id}`")));
        }
        Ok(all(rows)?)
    }

    pub(super) async fn list_session_participants_impl(
        &self,
        session_id: &str,
    ) -> Result<Vec<SessionParticipantRecord>, StoreError> {
        let rows: Vec<SessionParticipantRow> = sqlx::query_as(concat!(
            "SELECT ",
            session_participant_columns!(),
            " FROM participants WHERE session_id = $1 ORDER BY joined_at, identity",
            by_bytes!()
        ))
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() && !self.session_exists(session_id).await? {
            return Err(StoreError::not_found(format!("session `{session_id}`")));
        }
        Ok(all(rows)?)
    }

    pub(super) async fn open_connections_impl(
        &self,
        room_id: &str,
    ) -> Result<Vec<ParticipantRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let open = tx::open_connections(&mut conn, room_id).await?;
        drop(conn);
        if open.is_empty() && !self.room_exists(room_id).await? {
            return Err(StoreError::not_found(format!("room `{room_id}`")));
        }
        Ok(open)
    }

    pub(super) async fn record_track_impl(&self, t: &TrackEvent) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        tx::require_room(&mut tx, &t.room_id).await?;
        let session = tx::open_session(&mut tx, &t.room_id).await?;
        tx::append(&mut tx, outbox::track(t, session.map(|s| s.session_id))).await?;
        tx.commit().await?;
        Ok(())
    }
}
