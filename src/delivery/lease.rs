//! The delivery lease of one sink, as its delivery loop sees it: waiting until this node
//! holds it, and keeping it while delivering.
//!
//! Only the holder delivers, so every sink has one ordered stream cluster-wide. The keeper
//! runs beside the delivery (in one `select!`) and ends it when the lease is lost, which
//! includes the local deadline passing without a successful renewal: the node cannot know
//! that it still holds the lease then, and another node may take it over from that instant
//! (clocks agreeing), so a delivery under way is dropped rather than sent beside the new
//! holder's.

use std::fmt;
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{chain, or_stop, DeliveryConfig};
use crate::store::{DeliveryLeaseOutcome, Store};

/// One uninterrupted hold of a sink's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tenure {
    /// The store's generation: cursor writes name it, and a renewal that comes back with
    /// another one means the lease lapsed in between.
    pub generation: i64,
    /// Until when the lease certainly holds by this node's clock: the TTL counted from
    /// before the call that took or renewed it.
    pub valid_until: Instant,
}

/// Why a node stopped delivering to a sink before being told to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Lost {
    /// A renewal found another node holding the lease.
    TakenBy(String),
    /// A renewal was granted, but in a new generation: the lease had lapsed meanwhile (and
    /// possibly been held elsewhere), so what this node remembers may be stale.
    Lapsed,
    /// No renewal went through before the lease ran out.
    Expired,
    /// The store refused the cursor write: the lease is not this node's any more.
    Fenced,
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::TakenBy(node) => write!(f, "node {node} holds the delivery lease"),
            Lost::Lapsed => f.write_str("the delivery lease lapsed before its renewal"),
            Lost::Expired => f.write_str("the delivery lease could not be renewed in time"),
            Lost::Fenced => f.write_str("the store refused the cursor of a lost lease"),
        }
    }
}

/// How often a standby node tries to take the lease, and a holder renews it.
pub(super) fn renew_every(config: &DeliveryConfig) -> std::time::Duration {
    config.lease_ttl / 3
}

/// Waits until this node holds `sink`'s lease; None when stopped first. Tries every third
/// of the TTL while another node holds it, sooner (with backoff) after a store error.
pub(super) async fn acquire(
    store: &Arc<dyn Store>,
    sink: &str,
    shown: &str,
    config: &DeliveryConfig,
    wake: &Notify,
    stop: &mut watch::Receiver<bool>,
) -> Option<Tenure> {
    let every = renew_every(config);
    let mut failures = 0;
    let mut told: Option<String> = None;
    loop {
        let sent = Instant::now();
        let attempt =
            store.acquire_delivery_lease(sink, &config.node_id, Utc::now(), config.lease_ttl);
        // Registered before the attempt: a write that lands while it runs still wakes us.
        let written = wake.notified();
        tokio::pin!(written);
        written.as_mut().enable();
        let (wait, wake_early) = match or_stop(stop, attempt).await? {
            Ok(DeliveryLeaseOutcome::Granted { generation, .. }) => {
                return Some(Tenure {
                    generation,
                    valid_until: sent + config.lease_ttl,
                })
            }
            Ok(DeliveryLeaseOutcome::HeldBy(holder)) => {
                failures = 0;
                if told.as_deref() != Some(holder.node_id.as_str()) {
                    info!(sink = %shown, holder = %holder.node_id, "another node delivers to this sink; standing by");
                    told = Some(holder.node_id);
                }
                (every, false)
            }
            Err(err) => {
                failures += 1;
                let delay = config.retry.delay(failures).min(every);
                warn!(sink = %shown, retry_in = ?delay, error = %chain(&err), "cannot take the delivery lease");
                (delay, true)
            }
        };
        // After a failure (the database was unreachable), this node's next write shows the
        // database is back: try again then rather than sleep out the backoff. A standing-by
        // node is not woken by writes, or every event would cost it a lease query.
        let pause = async {
            if wake_early {
                tokio::select! {
                    _ = &mut written => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            } else {
                tokio::time::sleep(wait).await;
            }
        };
        or_stop(stop, pause).await?;
    }
}

/// Renews the lease every third of the TTL for as long as it is held; returns only when it
/// is lost. A failed renewal is retried (with backoff, at least every third of the TTL)
/// until the lease runs out by this node's clock.
pub(super) async fn keep(
    store: &Arc<dyn Store>,
    sink: &str,
    shown: &str,
    config: &DeliveryConfig,
    tenure: Tenure,
) -> Lost {
    let every = renew_every(config);
    let mut valid_until = tenure.valid_until;
    let mut next = Instant::now() + every;
    let mut failures = 0;
    loop {
        tokio::time::sleep_until(next.min(valid_until)).await;
        if Instant::now() >= valid_until {
            return Lost::Expired;
        }
        let sent = Instant::now();
        let renewal =
            store.acquire_delivery_lease(sink, &config.node_id, Utc::now(), config.lease_ttl);
        match tokio::time::timeout_at(valid_until, renewal).await {
            Err(_) => return Lost::Expired,
            Ok(Ok(DeliveryLeaseOutcome::Granted { generation, .. }))
                if generation == tenure.generation =>
            {
                failures = 0;
                valid_until = sent + config.lease_ttl;
                next = sent + every;
            }
            Ok(Ok(DeliveryLeaseOutcome::Granted { .. })) => return Lost::Lapsed,
            Ok(Ok(DeliveryLeaseOutcome::HeldBy(holder))) => return Lost::TakenBy(holder.node_id),
            Ok(Err(err)) => {
                failures += 1;
                let delay = config.retry.delay(failures).min(every);
                warn!(sink = %shown, retry_in = ?delay, error = %chain(&err), "cannot renew the delivery lease");
                next = Instant::now() + delay;
            }
        }
    }
}

/// Gives the lease up after a graceful stop, so another node takes over at its next try
/// instead of after the TTL. Bounded: shutdown must not wait on a slow database, and an
/// unreleased lease only delays the takeover.
pub(super) async fn release(
    store: &Arc<dyn Store>,
    sink: &str,
    shown: &str,
    config: &DeliveryConfig,
    tenure: Tenure,
) {
    let release = store.release_delivery_lease(sink, &config.node_id, tenure.generation);
    match tokio::time::timeout(config.stop_grace, release).await {
        Ok(Ok(_)) => info!(sink = %shown, "delivery lease released"),
        Ok(Err(err)) => {
            warn!(sink = %shown, error = %chain(&err), "cannot release the delivery lease; it expires on its own")
        }
        Err(_) => {
            warn!(sink = %shown, "releasing the delivery lease timed out; it expires on its own")
        }
    }
}
