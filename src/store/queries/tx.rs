//! Steps shared by several writes, each run inside the caller's write transaction after it
//! has locked the room (so they see and change one consistent state, and their events
//! commit or vanish with the change). On PostgreSQL the room lock is a row lock, taken
//! first by every writer of a room so concurrent writers queue instead of deadlocking; on
//! SQLite the transaction already holds the database's single write lock.

use chrono::{DateTime, Utc};

use super::{dialect, Connection};
use crate::store::error::is_unique_violation;
use crate::store::outbox;
use crate::store::records::{
    to_db_count, to_millis, ConnectionRow, NewEvent, ParticipantRow, RoomRow,
    SessionParticipantRow, SessionRow,
};
use crate::store::{
    kinds, ParticipantRecord, ParticipantSummary, RoomRecord, SessionParticipantRecord,
    SessionRecord, SessionState, StoreError,
};

/// Adds a bound value to a counter column, saturating at i64::MAX instead of failing with
/// an overflow (counters are clipped the same way when first written).
macro_rules! saturating_add {
    ($column:literal, $param:literal) => {
        concat!(
            $column,
            " = CASE WHEN ",
            $column,
            " > 9223372036854775807 - ",
            $param,
            " THEN 9223372036854775807 ELSE ",
            $column,
            " + ",
            $param,
            " END"
        )
    };
}

/// Locks the room for this transaction and returns it (`None` when there is no such room).
/// Every writer of a room takes this lock first (see the module docs).
pub(super) async fn lock_room(
    conn: &mut Connection,
    room_id: &str,
) -> Result<Option<RoomRecord>, StoreError> {
    let row: Option<RoomRow> = sqlx::query_as(concat!(
        "SELECT ",
        room_columns!(),
        " FROM rooms WHERE room_id = $1",
        lock_rows!()
    ))
    .bind(room_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(RoomRecord::try_from).transpose()?)
}

/// Locks the room, or NotFound.
pub(super) async fn require_room(
    conn: &mut Connection,
    room_id: &str,
) -> Result<RoomRecord, StoreError> {
    lock_room(conn, room_id)
        .await?
        .ok_or_else(|| StoreError::not_found(format!("room `{room_id}`")))
}

/// Appends an event with the room's next seq. The increment and the insert are in the
/// caller's transaction, so a failed change leaves neither a gap nor an event behind.
pub(super) async fn append(conn: &mut Connection, event: NewEvent) -> Result<(), StoreError> {
    dialect::before_append(&mut *conn).await?;
    let seq: Option<i64> = sqlx::query_scalar(
        "UPDATE rooms SET last_event_seq = last_event_seq + 1 WHERE room_id = $1 \
         RETURNING last_event_seq",
    )
    .bind(&event.room_id)
    .fetch_optional(&mut *conn)
    .await?;
    let seq = seq.ok_or_else(|| StoreError::not_found(format!("room `{}`", event.room_id)))?;
    sqlx::query(concat!(
        "INSERT INTO events (room_id, seq, kind, session_id, payload, created_at) \
         VALUES ($1, $2, $3, $4, ",
        json!("$5"),
        ", ",
        ts!("$6"),
        ")"
    ))
    .bind(&event.room_id)
    .bind(seq)
    .bind(event.kind)
    .bind(&event.session_id)
    .bind(event.payload.to_string())
    .bind(to_millis(event.at))
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves `last_active_at` forward (never back: events may arrive late).
pub(super) async fn touch_room(
    conn: &mut Connection,
    room_id: &str,
    at_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "UPDATE rooms SET last_active_at = ",
        greatest!(),
        "(last_active_at, ",
        ts!("$1"),
        ") WHERE room_id = $2"
    ))
    .bind(at_ms)
    .bind(room_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The room's open session, if any.
pub(super) async fn open_session(
    conn: &mut Connection,
    room_id: &str,
) -> Result<Option<SessionRecord>, StoreError> {
    let row: Option<SessionRow> = sqlx::query_as(concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE room_id = $1 \
         AND state IN ('IDLE', 'READY', 'PUBLISHING', 'LIVE', 'ENDING')"
    ))
    .bind(room_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(SessionRecord::try_from).transpose()?)
}

/// The room's open connections, oldest first.
pub(super) async fn open_connections(
    conn: &mut Connection,
    room_id: &str,
) -> Result<Vec<ParticipantRecord>, StoreError> {
    let rows: Vec<ParticipantRow> = sqlx::query_as(concat!(
        "SELECT ",
        connection_columns!(),
        " FROM connections WHERE room_id = $1 AND left_at IS NULL ORDER BY joined_at, sid",
        by_bytes!()
    ))
    .bind(room_id)
    .fetch_all(conn)
    .await?;
    Ok(crate::store::records::all(rows)?)
}

/// Records a connection as a participant of a session: the first connection inserts the
/// row, a later one (rejoin) keeps joined_at and the totals, takes the new sid and profile,
/// clears the leave and counts the connection.
pub(super) async fn upsert_session_participant(
    conn: &mut Connection,
    session_id: &str,
    c: &ParticipantRecord,
) -> Result<SessionParticipantRecord, StoreError> {
    let row: SessionParticipantRow = sqlx::query_as(concat!(
        "INSERT INTO participants (session_id, room_id, identity, sid, name, role, metadata, \
             joined_at, connections) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, ",
        ts!("$8"),
        ", 1) \
         ON CONFLICT (session_id, identity) DO UPDATE SET \
             sid = excluded.sid, name = excluded.name, role = excluded.role, \
             metadata = excluded.metadata, left_at = NULL, leave_reason = NULL, \
             connections = participants.connections + 1 \
         RETURNING ",
        session_participant_columns!()
    ))
    .bind(session_id)
    .bind(&c.room_id)
    .bind(&c.identity)
    .bind(&c.sid)
    .bind(&c.name)
    .bind(c.role.map(|r| r.as_str()))
    .bind(&c.metadata)
    .bind(to_millis(c.joined_at))
    .fetch_one(conn)
    .await?;
    Ok(row.try_into()?)
}

/// Closes an open connection with `reason` (and its measured summary, when there is one),
/// closes the session participants whose current connection it is, adds the summary to the
/// totals of its session's participant, bumps the room and appends participant_left.
/// `None` when the connection had already left. The caller holds the room lock.
pub(super) async fn close_connection(
    conn: &mut Connection,
    sid: &str,
    at: DateTime<Utc>,
    reason: &str,
    summary: Option<&ParticipantSummary>,
) -> Result<Option<ParticipantRecord>, StoreError> {
    let count = |f: fn(&ParticipantSummary) -> u64| summary.map(|s| to_db_count(f(s)));
    // `left_at IS NULL` makes the first leave win; the greatest of joined_at and `at` keeps
    // left_at from preceding joined_at if the clock stepped backwards.
    let row: Option<ConnectionRow> = sqlx::query_as(concat!(
        "UPDATE connections SET left_at = ",
        greatest!(),
        "(joined_at, ",
        ts!("$1"),
        "), leave_reason = $2, bytes_in = $3, bytes_out = $4, packets_in = $5, \
             packets_out = $6, packets_lost = $7, rtt_ms = $8 \
         WHERE sid = $9 AND left_at IS NULL \
         RETURNING ",
        connection_columns!(),
        ", session_id"
    ))
    .bind(to_millis(at))
    .bind(reason)
    .bind(count(|s| s.bytes_in))
    .bind(count(|s| s.bytes_out))
    .bind(count(|s| s.packets_in))
    .bind(count(|s| s.packets_out))
    .bind(count(|s| s.packets_lost))
    .bind(summary.and_then(|s| s.rtt_ms).map(i64::from))
    .bind(sid)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let session_id = row.session_id;
    let record = ParticipantRecord::try_from(row.connection)?;
    let left_ms = to_millis(record.left_at.unwrap_or(at));

    // Rows whose current connection this is are closed; the connection's own session
    // participant gets the traffic even if a newer connection (a rejoin) has taken over.
    let zero = ParticipantSummary::default();
    let s = summary.unwrap_or(&zero);
    sqlx::query(concat!(
        "UPDATE participants SET \
             left_at = CASE WHEN sid = $1 AND left_at IS NULL \
                 THEN ",
        greatest!(),
        "(joined_at, ",
        ts!("$2"),
        ") ELSE left_at END, \
             leave_reason = CASE WHEN sid = $1 AND left_at IS NULL \
                 THEN $3 ELSE leave_reason END, ",
        saturating_add!("bytes_in", "$4"),
        ", ",
        saturating_add!("bytes_out", "$5"),
        ", ",
        saturating_add!("packets_in", "$6"),
        ", ",
        saturating_add!("packets_out", "$7"),
        ", ",
        saturating_add!("packets_lost", "$8"),
        ", rtt_ms = COALESCE($9, rtt_ms) \
         WHERE (sid = $1 AND left_at IS NULL) OR (session_id = $10 AND identity = $11)"
    ))
    .bind(sid)
    .bind(left_ms)
    .bind(reason)
    .bind(to_db_count(s.bytes_in))
    .bind(to_db_count(s.bytes_out))
    .bind(to_db_count(s.packets_in))
    .bind(to_db_count(s.packets_out))
    .bind(to_db_count(s.packets_lost))
    .bind(s.rtt_ms.map(i64::from))
    .bind(&session_id)
    .bind(&record.identity)
    .execute(&mut *conn)
    .await?;

    touch_room(&mut *conn, &record.room_id, left_ms).await?;
    append(
        conn,
        outbox::participant(kinds::PARTICIPANT_LEFT, &record, session_id, None, at),
    )
    .await?;
    Ok(Some(record))
}

/// Compare-and-set of a session's state, with its event. `None` when the session is not in
/// `from` (or does not exist). Conflict when `to` is open and the room already has another
/// open session. The caller holds the room lock, so the compare sees the committed state.
pub(super) async fn move_session(
    conn: &mut Connection,
    session_id: &str,
    from: SessionState,
    to: SessionState,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<Option<SessionRecord>, StoreError> {
    let row: Option<SessionRow> = sqlx::query_as(concat!(
        "UPDATE sessions SET state = $1, version = version + 1, updated_at = ",
        ts!("$2"),
        ", ended_at = CASE WHEN $1 IN ('STOPPED', 'CANCELLED') THEN ",
        ts!("$2"),
        " ELSE NULL END \
         WHERE session_id = $3 AND state = $4 \
         RETURNING ",
        session_columns!()
    ))
    .bind(to.as_str())
    .bind(to_millis(at))
    .bind(session_id)
    .bind(from.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| open_session_conflict(e, session_id))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let session = SessionRecord::try_from(row)?;
    append(
        conn,
        outbox::session_changed(&session, Some(from), Some(reason), at),
    )
    .await?;
    Ok(Some(session))
}

/// Ends an open session the way a closing room or a restart does (see
/// [`SessionState::closing_steps`]), one event per step.
pub(super) async fn end_session(
    conn: &mut Connection,
    session: &SessionRecord,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut state = session.state;
    for &step in state.closing_steps() {
        // Invariant: the caller holds the room lock and read `session` after taking it, so
        // the compare-and-set cannot miss; treat a miss as a conflict all the same.
        if move_session(&mut *conn, &session.session_id, state, step, reason, at)
            .await?
            .is_none()
        {
            return Err(StoreError::conflict(format!(
                "session `{}` changed while it was being ended",
                session.session_id
            )));
        }
        state = step;
    }
    Ok(())
}

/// The partial unique index allows one open session per room.
pub(super) fn open_session_conflict(e: sqlx::Error, session_id: &str) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::conflict(format!(
            "session `{session_id}` cannot be opened: its room already has an open session \
             (or the id is taken)"
        ))
    } else {
        e.into()
    }
}
