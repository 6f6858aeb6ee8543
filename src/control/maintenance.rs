//! Keeping the records true over time: reconciling what a crash left behind, and closing
//! rooms that stayed empty past their `empty_timeout`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::{now, Control, ControlError};
use crate::store::Reconciled;

/// Revocations older than this cannot matter: no token we mint lives that long.
const REVOCATION_HORIZON: chrono::Duration = chrono::Duration::days(30);

/// How often revocations recorded by other nodes sharing the database are picked up.
const REVOCATION_POLL: Duration = Duration::from_secs(5);

/// Re-read this much before the newest revocation seen, so one committed late with an
/// earlier time is not missed (applying one twice changes nothing).
const REVOCATION_OVERLAP: chrono::Duration = chrono::Duration::seconds(30);

impl Control {
    /// Run once at start, after registering the node and before serving: participants the
    /// crash left "joined" on this node are closed, its stuck sessions and egress move on
    /// (other nodes' records are theirs), and removed identities stay removed.
    pub async fn recover_after_restart(&self) -> Result<Reconciled, ControlError> {
        let at = now();
        let reconciled = self
            .store
            .reconcile_after_restart(&self.node_id, at)
            .await?;
        if reconciled != Reconciled::default() {
            info!(?reconciled, "reconciled state left by the previous run");
        }
        for (room_id, identity, revoked_at) in
            self.store.list_revocations(at - REVOCATION_HORIZON).await?
        {
            self.signaling
                .revoke(&room_id, &identity, revoked_at.timestamp().max(0) as u64);
        }
        self.written();
        Ok(reconciled)
    }

    /// Closes rooms the store still calls active although nobody is in them and they have
    /// been idle longer than their empty_timeout (e.g. after a restart, or created through the
    /// API and never joined). Rooms live on this node are left to signaling's own timer.
    pub async fn sweep_idle_rooms(&self) -> Result<u32, ControlError> {
        let live: Vec<String> = self
            .signaling
            .live_rooms()
            .into_iter()
            .map(|r| r.room_id)
            .collect();
        let mut closed = 0;
        for room in self.store.idle_rooms(now()).await? {
            if live.contains(&room.room_id) {
                continue;
            }
            self.close_open_session(&room.room_id, "room idle past its empty_timeout")
                .await?;
            self.store
                .room_finished(&room.room_id, now(), "ROOM_CLOSED")
                .await?;
            closed += 1;
            info!(room_id = %room.room_id, "closed an idle room");
        }
        if closed > 0 {
            self.written();
        }
        Ok(closed)
    }

    /// Applies revocations other nodes recorded since `since` (a removal there must refuse
    /// the token here too); returns the newest time seen.
    pub async fn refresh_revocations(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<chrono::DateTime<chrono::Utc>, ControlError> {
        let mut newest = since;
        for (room_id, identity, revoked_at) in self.store.list_revocations(since).await? {
            self.signaling
                .revoke(&room_id, &identity, revoked_at.timestamp().max(0) as u64);
            newest = newest.max(revoked_at);
        }
        Ok(newest)
    }

    /// Sweeps idle rooms every `interval` and picks up other nodes' revocations every few
    /// seconds, until `stop` turns true.
    pub async fn run_maintenance(
        self: Arc<Self>,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        let mut revocations = tokio::time::interval(REVOCATION_POLL);
        // recover_after_restart loaded everything older.
        let mut newest = now() - REVOCATION_OVERLAP;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(e) = self.sweep_idle_rooms().await {
                        warn!("idle-room sweep failed: {e}");
                    }
                }
                _ = revocations.tick() => {
                    match self.refresh_revocations(newest - REVOCATION_OVERLAP).await {
                        Ok(seen) => newest = newest.max(seen),
                        Err(e) => warn!("reading revocations failed: {e}"),
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }
}
