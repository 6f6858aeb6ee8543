//! Recovery per node: closing what a node left open when it went away, one transaction per
//! room. Two callers: the node itself when it starts again after a crash
//! (`reconcile_after_restart`), and a live node once the dead node's heartbeat is older than
//! the node timeout (`release_node`). Both close the same things the same way and differ in
//! whose rows they take, the reasons they record, and the guard.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{tx, Connection, DialectStore};
use crate::store::outbox::{
    self, EGRESS_NODE_LOST_ERROR, EGRESS_RESTART_ERROR, NODE_LOST, SERVER_RESTART,
};
use crate::store::records::{all, to_millis, EgressRow};
use crate::store::{EgressRecord, Reconciled, SessionState, StoreError};

/// Whose rows one recovery closes, and how it says why.
struct Recovery<'a> {
    node_id: &'a str,
    /// Rows with no node (written before clustering) count as this node's too.
    legacy: bool,
    /// Only while the node's heartbeat is older than this (a dead node's release).
    dead_before: Option<DateTime<Utc>>,
    reason: &'static str,
    egress_error: &'static str,
}

/// A row of the node being recovered: `$1` is its node id, `$2` whether rows without a node
/// (from before clustering) count as its own.
macro_rules! owned {
    ($column:literal) => {
        concat!("(", $column, " = $1 OR ($2 AND ", $column, " IS NULL))")
    };
}

impl DialectStore {
    pub(super) async fn reconcile_after_restart_impl(
        &self,
        node_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Reconciled, StoreError> {
        // Rows from before clustering have no node; whichever node starts first after the
        // upgrade closes them, as every node did before (at an upgrade every node restarts).
        let recovery = Recovery {
            node_id,
            legacy: true,
            dead_before: None,
            reason: SERVER_RESTART,
            egress_error: EGRESS_RESTART_ERROR,
        };
        let done = self.recover(&recovery, at).await?;
        if done != Reconciled::default() {
            tracing::info!(?done, "reconciled the state a previous run left open");
        }
        Ok(done)
    }

    pub(super) async fn release_node_impl(
        &self,
        node_id: &str,
        at: DateTime<Utc>,
        timeout: Duration,
    ) -> Result<Reconciled, StoreError> {
        let timeout = chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        let dead_before = at
            .checked_sub_signed(timeout)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let recovery = Recovery {
            node_id,
            legacy: false,
            dead_before: Some(dead_before),
            reason: NODE_LOST,
            egress_error: EGRESS_NODE_LOST_ERROR,
        };
        let done = self.recover(&recovery, at).await?;
        // Remembered so live nodes stop looking at it until it heartbeats again. Guarded
        // like the rest: a node that came back in the meantime is not marked.
        sqlx::query(concat!(
            "UPDATE nodes SET released_at = ",
            ts!("$1"),
            " WHERE node_id = $2 AND released_at IS NULL AND heartbeat_at < ",
            ts!("$3")
        ))
        .bind(to_millis(at))
        .bind(node_id)
        .bind(to_millis(dead_before))
        .execute(&self.pool)
        .await?;
        // Its rooms are free at once rather than when their leases run out. Same guard: a
        // node that came back keeps its leases (and would take them again at its renewal).
        sqlx::query(concat!(
            "DELETE FROM room_leases WHERE node_id = $1 AND EXISTS ( \
                 SELECT 1 FROM nodes WHERE node_id = $1 AND heartbeat_at < ",
            ts!("$2"),
            ")"
        ))
        .bind(node_id)
        .bind(to_millis(dead_before))
        .execute(&self.pool)
        .await?;
        if done != Reconciled::default() {
            tracing::info!(node_id, ?done, "released the records of a lost node");
        }
        Ok(done)
    }

    /// Closes, room by room, the node's open connections and unfinished egress, ends the
    /// open sessions of the rooms it ran, and leaves those rooms on no node (they stay
    /// active; the next join places them again, the idle sweep closes them otherwise).
    async fn recover(&self, r: &Recovery<'_>, at: DateTime<Utc>) -> Result<Reconciled, StoreError> {
        let rooms: Vec<String> = sqlx::query_scalar(concat!(
            "SELECT room_id FROM ( \
                 SELECT room_id FROM connections WHERE left_at IS NULL AND ",
            owned!("node_id"),
            " UNION SELECT s.room_id FROM sessions s JOIN rooms r ON r.room_id = s.room_id \
                 WHERE s.state IN ('PUBLISHING', 'LIVE', 'ENDING') AND ",
            owned!("r.node_id"),
            " UNION SELECT room_id FROM egress \
                 WHERE status IN ('starting', 'active', 'ending') AND ",
            owned!("node_id"),
            " UNION SELECT room_id FROM rooms WHERE node_id = $1 \
             ) AS unfinished ORDER BY room_id",
            by_bytes!()
        ))
        .bind(r.node_id)
        .bind(r.legacy)
        .fetch_all(&self.pool)
        .await?;

        let mut done = Reconciled::default();
        for room_id in rooms {
            let mut tx = self.write().await?;
            tx::require_room(&mut tx, &room_id).await?;
            // Checked again under the room lock, room by room: a node that registered or
            // heartbeated since the list was read is alive, and its rows are its own again.
            if let Some(dead_before) = r.dead_before {
                if !still_dead(&mut tx, r.node_id, dead_before).await? {
                    tx.rollback().await?;
                    break;
                }
            }
            recover_room(&mut tx, r, &room_id, at, &mut done).await?;
            tx.commit().await?;
        }
        Ok(done)
    }
}

/// Whether the node's last heartbeat is still before `dead_before`, locking its row so a
/// registration or heartbeat waits for this transaction (the room lock is always taken
/// first, and heartbeats take no room lock, so this adds no deadlock).
async fn still_dead(
    conn: &mut Connection,
    node_id: &str,
    dead_before: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let found: Option<String> = sqlx::query_scalar(concat!(
        "SELECT node_id FROM nodes WHERE node_id = $1 AND heartbeat_at < ",
        ts!("$2"),
        lock_rows!()
    ))
    .bind(node_id)
    .bind(to_millis(dead_before))
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some())
}

/// One room's part of a recovery, inside its transaction (the room is locked).
async fn recover_room(
    conn: &mut Connection,
    r: &Recovery<'_>,
    room_id: &str,
    at: DateTime<Utc>,
    done: &mut Reconciled,
) -> Result<(), StoreError> {
    // Nobody is connected to a node that went away.
    let sids: Vec<String> = sqlx::query_scalar(concat!(
        "SELECT sid FROM connections WHERE room_id = $3 AND left_at IS NULL AND ",
        owned!("node_id"),
        " ORDER BY joined_at, sid",
        by_bytes!()
    ))
    .bind(r.node_id)
    .bind(r.legacy)
    .bind(room_id)
    .fetch_all(&mut *conn)
    .await?;
    for sid in sids {
        if tx::close_connection(&mut *conn, &sid, at, r.reason, None)
            .await?
            .is_some()
        {
            done.connections_closed += 1;
        }
    }
    // Egress ran inside the process that went away: it is gone.
    let rows: Vec<EgressRow> = sqlx::query_as(concat!(
        "UPDATE egress SET status = 'failed', error = $4, updated_at = ",
        ts!("$5"),
        ", ended_at = ",
        ts!("$5"),
        " WHERE room_id = $3 AND status IN ('starting', 'active', 'ending') AND ",
        owned!("node_id"),
        " RETURNING ",
        egress_columns!()
    ))
    .bind(r.node_id)
    .bind(r.legacy)
    .bind(room_id)
    .bind(r.egress_error)
    .bind(to_millis(at))
    .fetch_all(&mut *conn)
    .await?;
    let mut failed: Vec<EgressRecord> = all(rows)?;
    // RETURNING has no defined order; events go out in creation order.
    failed.sort_by(|a, b| (a.created_at, &a.egress_id).cmp(&(b.created_at, &b.egress_id)));
    for egress in &failed {
        tx::append(
            &mut *conn,
            outbox::egress(outbox::egress_kind(egress), egress, at),
        )
        .await?;
    }
    done.egress_failed += u32::try_from(failed.len()).unwrap_or(u32::MAX);

    // The room's session is the node's to end only if the room ran there.
    let room_node: Option<Option<String>> =
        sqlx::query_scalar("SELECT node_id FROM rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&mut *conn)
            .await?;
    let room_node = room_node.flatten();
    let owns_room = match &room_node {
        Some(node) => node == r.node_id,
        None => r.legacy,
    };
    if owns_room {
        // A session whose egress died moves on; IDLE/READY sessions wait for their host.
        if let Some(session) = tx::open_session(&mut *conn, room_id).await? {
            if matches!(
                session.state,
                SessionState::Publishing | SessionState::Live | SessionState::Ending
            ) {
                tx::end_session(&mut *conn, &session, r.reason, at).await?;
                done.sessions_moved += 1;
            }
        }
    }
    if room_node.as_deref() == Some(r.node_id) {
        // The room runs nowhere now; the next join places it again.
        sqlx::query("UPDATE rooms SET node_id = NULL WHERE room_id = $1")
            .bind(room_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
