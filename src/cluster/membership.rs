//! This node's row in the store's `nodes` table: registered at start, a heartbeat with its
//! load (and the renewal of its room leases) every `heartbeat_interval`, its state at
//! shutdown; and the release of nodes that stopped heartbeating for longer than
//! `node_timeout`.
//!
//! Both loops run on tasks of their own and only talk to the database: nothing here is on
//! the path of media or signaling. Each call is bounded by a timeout; a failure is logged
//! and the next tick tries again, so a database outage never stops the node. The release
//! has a task of its own so a long release never delays this node's own heartbeat (which
//! would make the others call it dead).
//!
//! A node releases others only after its own heartbeats have succeeded for a whole node
//! timeout. After a database outage every node's heartbeat is stale; without that wait, the
//! first node back would release all the others before their next heartbeat landed. The
//! same wait keeps a node that just started from releasing nodes that are starting too.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_signaling::Signaling;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::control::now;
use crate::store::{NodeLoad, NodeRegistration, NodeState, Store, StoreError};

pub struct Membership {
    store: Arc<dyn Store>,
    signaling: Arc<Signaling>,
    registration: NodeRegistration,
    heartbeat_interval: Duration,
    node_timeout: Duration,
    /// How long a room lease lasts; renewed with every heartbeat.
    room_lease_ttl: Duration,
    /// How this node's own heartbeats have been going.
    health: Health,
}

/// Since when every heartbeat of this node has succeeded (`None` after a failure).
#[derive(Default)]
struct Health(Mutex<Option<Instant>>);

impl Health {
    fn since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // Never held across an await; a poisoned lock only means a panic elsewhere while
        // this Option was set, and any value of it is still valid.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, ok: bool, now: Instant) {
        let mut since = self.since();
        match (ok, *since) {
            (true, None) => *since = Some(now),
            (false, _) => *since = None,
            (true, Some(_)) => {}
        }
    }

    /// Every heartbeat has succeeded for at least `span` before `now`.
    fn steady_for(&self, span: Duration, now: Instant) -> bool {
        self.since()
            .is_some_and(|since| now.saturating_duration_since(since) >= span)
    }
}

impl Membership {
    pub fn new(
        store: Arc<dyn Store>,
        signaling: Arc<Signaling>,
        registration: NodeRegistration,
        heartbeat_interval: Duration,
        node_timeout: Duration,
        room_lease_ttl: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            signaling,
            registration,
            heartbeat_interval,
            node_timeout,
            room_lease_ttl,
            health: Health::default(),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.registration.node_id
    }

    /// Registers this node (before it reconciles and serves: from then on, a live node
    /// releasing it finds a fresh heartbeat and leaves its rows alone).
    pub async fn register(&self) -> Result<(), StoreError> {
        self.store.register_node(&self.registration).await?;
        info!(node_id = %self.node_id(), "registered in the cluster");
        Ok(())
    }

    /// Records this node's own state (draining at shutdown, stopped at its end), within a
    /// heartbeat interval; a failure is only logged, shutdown goes on.
    pub async fn set_state(&self, state: NodeState) {
        let call = self.store.set_node_state(self.node_id(), state, now());
        match tokio::time::timeout(self.heartbeat_interval, call).await {
            Ok(Ok(())) => info!(node_id = %self.node_id(), %state, "node state recorded"),
            Ok(Err(e)) => warn!("recording node state {state} failed: {e}"),
            Err(_) => warn!("recording node state {state} timed out"),
        }
    }

    /// The load signaling sees right now.
    fn load(&self) -> NodeLoad {
        let rooms = self.signaling.live_rooms();
        NodeLoad {
            rooms: u32::try_from(rooms.len()).unwrap_or(u32::MAX),
            participants: rooms
                .iter()
                .fold(0u32, |sum, room| sum.saturating_add(room.num_participants)),
        }
    }

    async fn heartbeat(&self) -> Result<(), StoreError> {
        let load = self.load();
        match self.store.node_heartbeat(self.node_id(), load, now()).await {
            // The row went away (an operator cleaned the table): register again.
            Err(StoreError::NotFound { .. }) => self.register().await,
            other => other,
        }
    }

    /// Renews the leases of the rooms open on this node. A room whose lease another node
    /// took (this node could not renew it for a whole TTL, e.g. cut off from the database)
    /// is closed here: its participants are told to reconnect, which brings them to the
    /// owner; its record stays open, since the owner uses it.
    async fn renew_leases(&self) -> Result<(), StoreError> {
        let rooms: Vec<String> = self
            .signaling
            .live_rooms()
            .into_iter()
            .map(|room| room.room_id)
            .collect();
        let lost = self
            .store
            .renew_room_leases(self.node_id(), &rooms, now(), self.room_lease_ttl)
            .await?;
        for room in lost {
            let told = self.signaling.close_room_moved(&room);
            warn!(
                room,
                node_id = %self.node_id(),
                participants = told,
                "another node took the lease of a room open here: closed it here, its \
                 participants were told to reconnect"
            );
        }
        Ok(())
    }

    /// Heartbeats, and renews this node's room leases, every `heartbeat_interval` until
    /// `stop` turns true.
    pub async fn run_heartbeat(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let bound = self.heartbeat_interval;
        every(self.heartbeat_interval, stop, || async {
            let beat = bounded(bound, "heartbeat", self.heartbeat()).await;
            self.health.record(beat, Instant::now());
            bounded(bound, "renewing room leases", self.renew_leases()).await;
        })
        .await;
    }

    /// Releases every other node whose heartbeat is older than the node timeout and that
    /// no node released yet.
    async fn release_dead(&self) -> Result<(), StoreError> {
        // Only once this node's own heartbeats have gone through for a whole timeout: a
        // silence it sees in others is then theirs, not the database's.
        if !self.health.steady_for(self.node_timeout, Instant::now()) {
            return Ok(());
        }
        let at = now();
        let nodes = self.store.list_nodes(at, self.node_timeout).await?;
        let timeout =
            chrono::Duration::from_std(self.node_timeout).unwrap_or(chrono::Duration::MAX);
        for node in nodes {
            let silent = at.signed_duration_since(node.heartbeat_at) > timeout;
            if node.node_id == self.node_id() || !silent || node.released_at.is_some() {
                continue;
            }
            debug!(node_id = %node.node_id, "releasing a node without heartbeat");
            let released = self
                .store
                .release_node(&node.node_id, at, self.node_timeout)
                .await?;
            if released.connections_closed + released.sessions_moved + released.egress_failed > 0 {
                info!(node_id = %node.node_id, ?released, "released a lost node's records");
            }
        }
        Ok(())
    }

    /// Looks for dead nodes every heartbeat interval until `stop` turns true. A release cut
    /// short (timeout, error, stop) rolls back its current room and is picked up on a later
    /// tick: releasing is idempotent.
    pub async fn run_release(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let bound = self.node_timeout;
        every(self.heartbeat_interval, stop, || async {
            bounded(bound, "releasing dead nodes", self.release_dead()).await;
        })
        .await;
    }
}

/// Runs `work` every `interval` until `stop` turns true; a stop also cuts a run short, so
/// shutdown never waits for the database here.
async fn every<Fut: Future<Output = ()>>(
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    mut work: impl FnMut() -> Fut,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        tokio::select! {
            () = work() => {}
            _ = stop.changed() => return,
        }
    }
}

/// Runs one store call for at most `limit`; a failure is logged (the next tick retries).
/// Whether it succeeded.
async fn bounded(
    limit: Duration,
    what: &str,
    call: impl Future<Output = Result<(), StoreError>>,
) -> bool {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            warn!("{what} failed (retrying): {e}");
            false
        }
        Err(_) => {
            warn!("{what} timed out (retrying)");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_waits_for_a_whole_timeout_of_own_heartbeats() {
        let health = Health::default();
        let timeout = Duration::from_secs(10);
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert!(!health.steady_for(timeout, at(0)), "no heartbeat yet");
        health.record(true, at(0));
        health.record(true, at(9));
        assert!(!health.steady_for(timeout, at(9)));
        assert!(
            health.steady_for(timeout, at(10)),
            "10 s of good heartbeats"
        );
        // One failure (a database outage) starts the wait again.
        health.record(false, at(11));
        assert!(!health.steady_for(timeout, at(11)));
        health.record(true, at(12));
        assert!(!health.steady_for(timeout, at(21)));
        assert!(health.steady_for(timeout, at(22)));
    }
}
