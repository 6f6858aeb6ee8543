//! Crash recovery: closes what a dead server left open, one transaction per room.

use chrono::{DateTime, Utc};

use super::{tx, DialectStore};
use crate::store::outbox::{self, EGRESS_RESTART_ERROR, SERVER_RESTART};
use crate::store::records::{all, to_millis, EgressRow};
use crate::store::{EgressRecord, Reconciled, SessionState, StoreError};

impl DialectStore {
    pub(super) async fn reconcile_after_restart_impl(
        &self,
        at: DateTime<Utc>,
    ) -> Result<Reconciled, StoreError> {
        let rooms: Vec<String> = sqlx::query_scalar(concat!(
            "SELECT room_id FROM ( \
                 SELECT room_id FROM connections WHERE left_at IS NULL \
                 UNION SELECT room_id FROM sessions \
                     WHERE state IN ('PUBLISHING', 'LIVE', 'ENDING') \
                 UNION SELECT room_id FROM egress \
                     WHERE status IN ('starting', 'active', 'ending') \
             ) AS unfinished ORDER BY room_id",
            by_bytes!()
        ))
        .fetch_all(&self.pool)
        .await?;

        let mut done = Reconciled::default();
        for room_id in rooms {
            let mut tx = self.write().await?;
            tx::require_room(&mut tx, &room_id).await?;
            // Nobody is connected to a server that just started.
            for connection in tx::open_connections(&mut tx, &room_id).await? {
                if tx::close_connection(&mut tx, &connection.sid, at, SERVER_RESTART, None)
                    .await?
                    .is_some()
                {
                    done.connections_closed += 1;
                }
            }
            // Egress ran inside the old process: it is gone.
            let rows: Vec<EgressRow> = sqlx::query_as(concat!(
                "UPDATE egress SET status = 'failed', error = $1, updated_at = ",
                ts!("$2"),
                ", ended_at = ",
                ts!("$2"),
                " WHERE room_id = $3 AND status IN ('starting', 'active', 'ending') \
                 RETURNING ",
                egress_columns!()
            ))
            .bind(EGRESS_RESTART_ERROR)
            .bind(to_millis(at))
            .bind(&room_id)
            .fetch_all(&mut *tx)
            .await?;
            let mut failed: Vec<EgressRecord> = all(rows)?;
            // RETURNING has no defined order; events go out in creation order.
            failed.sort_by(|a, b| (a.created_at, &a.egress_id).cmp(&(b.created_at, &b.egress_id)));
            for egress in &failed {
                tx::append(
                    &mut tx,
                    outbox::egress(outbox::egress_kind(egress), egress, at),
                )
                .await?;
            }
            done.egress_failed += u32::try_from(failed.len()).unwrap_or(u32::MAX);
            // A session whose egress died moves on; IDLE/READY sessions wait for their host.
            if let Some(session) = tx::open_session(&mut tx, &room_id).await? {
                if matches!(
                    session.state,
                    SessionState::Publishing | SessionState::Live | SessionState::Ending
                ) {
                    tx::end_session(&mut tx, &session, SERVER_RESTART, at).await?;
                    done.sessions_moved += 1;
                }
            }
            tx.commit().await?;
        }
        if done != Reconciled::default() {
            tracing::info!(?done, "reconciled the state a previous run left open");
        }
        Ok(done)
    }
}
