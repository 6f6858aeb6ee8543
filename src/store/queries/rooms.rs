//! Rooms: create (API), start (SFU), update, finish, reads and the idle sweep's query.

use chrono::{DateTime, Utc};

use super::{tx, DialectStore};
use crate::store::outbox;
use crate::store::records::{all, found, to_millis, RoomRow};
use crate::store::{kinds, NewRoom, RoomRecord, RoomSpec, RoomStatus, RoomUpdate, StoreError};

impl DialectStore {
    pub(super) async fn create_room_impl(
        &self,
        spec: &RoomSpec,
    ) -> Result<(RoomRecord, bool), StoreError> {
        let mut tx = self.write().await?;
        // Insert-if-absent first: two PostgreSQL nodes creating one new room cannot both
        // insert, and the loser waits for the winner's commit and then sees the row below.
        let inserted: Option<RoomRow> = sqlx::query_as(concat!(
            "INSERT INTO rooms (room_id, sid, name, metadata, status, created_at, \
                 last_active_at, closed_at, empty_timeout_secs, max_participants, \
                 channel_id, guest_access) \
             VALUES ($1, NULL, $2, $3, 'active', ",
            ts!("$4"),
            ", ",
            ts!("$4"),
            ", NULL, $5, $6, $7, $8) \
             ON CONFLICT (room_id) DO NOTHING RETURNING ",
            room_columns!()
        ))
        .bind(&spec.room_id)
        .bind(&spec.name)
        .bind(&spec.metadata)
        .bind(to_millis(spec.at))
        .bind(i64::from(spec.empty_timeout_secs))
        .bind(i64::from(spec.max_participants))
        .bind(&spec.channel_id)
        .bind(spec.guest_access)
        .fetch_optional(&mut *tx)
        .await?;
        let row = match inserted {
            Some(row) => row,
            None => {
                let existing = tx::require_room(&mut tx, &spec.room_id).await?;
                if existing.status == RoomStatus::Active {
                    return Ok((existing, false));
                }
                // A closed room comes back as a new incarnation: no sid until someone joins,
                // settings from the spec, created_at kept (it is the room's first creation).
                sqlx::query_as(concat!(
                    "UPDATE rooms SET status = 'active', closed_at = NULL, sid = NULL, \
                         name = $1, metadata = $2, empty_timeout_secs = $3, \
                         max_participants = $4, channel_id = $5, guest_access = $6, \
                         last_active_at = ",
                    greatest!(),
                    "(last_active_at, ",
                    ts!("$7"),
                    ") WHERE room_id = $8 RETURNING ",
                    room_columns!()
                ))
                .bind(&spec.name)
                .bind(&spec.metadata)
                .bind(i64::from(spec.empty_timeout_secs))
                .bind(i64::from(spec.max_participants))
                .bind(&spec.channel_id)
                .bind(spec.guest_access)
                .bind(to_millis(spec.at))
                .bind(&spec.room_id)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        let room = RoomRecord::try_from(row)?;
        tx::append(&mut tx, outbox::room(kinds::ROOM_CREATED, &room, spec.at)).await?;
        tx.commit().await?;
        Ok((room, true))
    }

    pub(super) async fn room_started_impl(&self, room: &NewRoom) -> Result<RoomRecord, StoreError> {
        let mut tx = self.write().await?;
        let before = tx::lock_room(&mut tx, &room.room_id).await?;
        // One statement, so concurrent first starts of one room on several nodes cannot
        // interleave (the row does not exist yet, so there was nothing to lock above).
        let row: RoomRow = sqlx::query_as(concat!(
            "INSERT INTO rooms (room_id, sid, name, metadata, status, created_at, \
                 last_active_at, closed_at, empty_timeout_secs, max_participants, node_id) \
             VALUES ($1, $2, $3, $4, 'active', ",
            ts!("$5"),
            ", ",
            ts!("$5"),
            ", NULL, $6, $7, $8) \
             ON CONFLICT (room_id) DO UPDATE SET \
                 sid = excluded.sid, \
                 name = COALESCE(excluded.name, rooms.name), \
                 metadata = COALESCE(excluded.metadata, rooms.metadata), \
                 status = 'active', \
                 closed_at = NULL, \
                 last_active_at = ",
            greatest!(),
            "(rooms.last_active_at, excluded.last_active_at), \
                 empty_timeout_secs = excluded.empty_timeout_secs, \
                 max_participants = excluded.max_participants, \
                 node_id = excluded.node_id \
             RETURNING ",
            room_columns!()
        ))
        .bind(&room.room_id)
        .bind(&room.sid)
        .bind(&room.name)
        .bind(&room.metadata)
        .bind(to_millis(room.started_at))
        .bind(i64::from(room.empty_timeout_secs))
        .bind(i64::from(room.max_participants))
        .bind(&room.node_id)
        .fetch_one(&mut *tx)
        .await?;
        let record = RoomRecord::try_from(row)?;
        // An identical repeat (the SFU replaying its event) changes nothing and records
        // nothing; anything else is a change the log must show.
        if before.as_ref() != Some(&record) {
            tx::append(
                &mut tx,
                outbox::room(kinds::ROOM_STARTED, &record, room.started_at),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(record)
    }

    pub(super) async fn update_room_impl(
        &self,
        room_id: &str,
        update: &RoomUpdate,
    ) -> Result<RoomRecord, StoreError> {
        let mut tx = self.write().await?;
        // On PostgreSQL the UPDATE takes the room's row lock, first, like every writer.
        let row: Option<RoomRow> = sqlx::query_as(concat!(
            "UPDATE rooms SET metadata = COALESCE($1, metadata), name = COALESCE($2, name), \
                 guest_access = COALESCE($3, guest_access), \
                 max_participants = COALESCE($4, max_participants) \
             WHERE room_id = $5 RETURNING ",
            room_columns!()
        ))
        .bind(&update.metadata)
        .bind(&update.name)
        .bind(update.guest_access)
        .bind(update.max_participants.map(i64::from))
        .bind(room_id)
        .fetch_optional(&mut *tx)
        .await?;
        let room: RoomRecord = found(row, || format!("room `{room_id}`"))?;
        tx::append(&mut tx, outbox::room(kinds::ROOM_UPDATED, &room, update.at)).await?;
        tx.commit().await?;
        Ok(room)
    }

    pub(super) async fn room_finished_impl(
        &self,
        room_id: &str,
        at: DateTime<Utc>,
        reason_for_open: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        let room = tx::require_room(&mut tx, room_id).await?;
        if room.status == RoomStatus::Closed {
            // Already closed: the first closed_at and its events stand.
            return Ok(());
        }
        // People leave first, then the session ends, then the room: the order a consumer
        // of the log would see if everyone had been told to leave one by one.
        for connection in tx::open_connections(&mut tx, room_id).await? {
            tx::close_connection(&mut tx, &connection.sid, at, reason_for_open, None).await?;
        }
        if let Some(session) = tx::open_session(&mut tx, room_id).await? {
            tx::end_session(&mut tx, &session, reason_for_open, at).await?;
        }
        // The greatest of created_at and `at` keeps closed_at from preceding created_at if
        // the clock stepped backwards.
        let row: RoomRow = sqlx::query_as(concat!(
            // A closed room runs on no node.
            "UPDATE rooms SET status = 'closed', node_id = NULL, closed_at = ",
            greatest!(),
            "(created_at, ",
            ts!("$1"),
            "), last_active_at = ",
            greatest!(),
            "(last_active_at, ",
            ts!("$1"),
            ") WHERE room_id = $2 RETURNING ",
            room_columns!()
        ))
        .bind(to_millis(at))
        .bind(room_id)
        .fetch_one(&mut *tx)
        .await?;
        let closed = RoomRecord::try_from(row)?;
        tx::append(&mut tx, outbox::room(kinds::ROOM_FINISHED, &closed, at)).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn get_room_impl(&self, room_id: &str) -> Result<RoomRecord, StoreError> {
        let row: Option<RoomRow> = sqlx::query_as(concat!(
            "SELECT ",
            room_columns!(),
            " FROM rooms WHERE room_id = $1"
        ))
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        found(row, || format!("room `{room_id}`"))
    }

    pub(super) async fn list_rooms_impl(
        &self,
        status: Option<RoomStatus>,
    ) -> Result<Vec<RoomRecord>, StoreError> {
        // CAST gives the parameter a type in PostgreSQL even when it is NULL.
        let rows: Vec<RoomRow> = sqlx::query_as(concat!(
            "SELECT ",
            room_columns!(),
            " FROM rooms WHERE CAST($1 AS TEXT) IS NULL OR status = $1 \
             ORDER BY created_at, room_id",
            by_bytes!()
        ))
        .bind(status.map(RoomStatus::as_str))
        .fetch_all(&self.pool)
        .await?;
        Ok(all(rows)?)
    }

    pub(super) async fn list_rooms_page_impl(
        &self,
        status: Option<RoomStatus>,
        after: Option<(DateTime<Utc>, String)>,
        limit: u32,
    ) -> Result<Vec<RoomRecord>, StoreError> {
        let (after_at, after_id) = match after {
            Some((at, id)) => (Some(to_millis(at)), Some(id)),
            None => (None, None),
        };
        let rows: Vec<RoomRow> = sqlx::query_as(concat!(
            "SELECT ",
            room_columns!(),
            " FROM rooms WHERE (CAST($1 AS TEXT) IS NULL OR status = $1) \
               AND (CAST($2 AS BIGINT) IS NULL OR (created_at, room_id",
            by_bytes!(),
            ") > (",
            ts!("CAST($2 AS BIGINT)"),
            ", CAST($3 AS TEXT)",
            by_bytes!(),
            ")) ORDER BY created_at, room_id",
            by_bytes!(),
            " LIMIT $4"
        ))
        .bind(status.map(RoomStatus::as_str))
        .bind(after_at)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(all(rows)?)
    }

    pub(super) async fn idle_rooms_impl(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<RoomRecord>, StoreError> {
        let rows: Vec<RoomRow> = sqlx::query_as(concat!(
            "SELECT ",
            room_columns!(),
            " FROM rooms AS r WHERE status = 'active' AND last_active_at + ",
            duration_secs!("empty_timeout_secs"),
            " < ",
            ts!("$1"),
            " AND NOT EXISTS (SELECT 1 FROM connections AS c \
                     WHERE c.room_id = r.room_id AND c.left_at IS NULL) \
             ORDER BY created_at, room_id",
            by_bytes!()
        ))
        .bind(to_millis(now))
        .fetch_all(&self.pool)
        .await?;
        Ok(all(rows)?)
    }

    pub(super) async fn room_exists(&self, room_id: &str) -> Result<bool, StoreError> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT room_id FROM rooms WHERE room_id = $1")
                .bind(room_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }
}
