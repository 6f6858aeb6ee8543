//! Drain: a node asked to stop (SIGTERM/SIGINT, or `POST /v1/node/drain`, which
//! `switchboard drain` calls) records `draining`, opens no new room (signaling refuses to
//! claim one: `PlacementRefused::Draining`), keeps serving the rooms it has — joins and
//! reconnects to them included — and stops once nobody is left on it, after
//! `cluster.drain_timeout` at the latest, or at once on a second SIGTERM/SIGINT. Then the
//! single-node shutdown runs: whoever is left is told to leave, with its grace.
//!
//! `cluster.drain_timeout` is 0 by default: no wait, so a single node stops on SIGTERM as it
//! always did, well within a container runtime's stop grace (Docker kills after 10 s).

use std::sync::Arc;
use std::time::Duration;

use switchboard_signaling::Signaling;
use tokio::sync::watch;
use tracing::info;

use super::Membership;
use crate::store::NodeState;

/// A drain asked for through the API, and how long a drain may wait.
pub struct Drain {
    requested: watch::Sender<bool>,
    timeout: Duration,
}

impl Drain {
    pub fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            requested: watch::channel(false).0,
            timeout,
        })
    }

    /// Asks the node to drain; false when it was asked already.
    pub fn request(&self) -> bool {
        !self.requested.send_replace(true)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn requested(&self) {
        let mut requested = self.requested.subscribe();
        // The sender lives in `self`: wait_for cannot see it dropped while borrowed.
        let _ = requested.wait_for(|asked| *asked).await;
    }
}

/// SIGTERM and SIGINT, installed once at start so that none is missed between the first
/// (which starts a drain) and the second (which ends it).
pub struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next SIGTERM or SIGINT.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Waits for a stop (signal or drain request), drains, then tells whoever is left to leave
/// (`grace`). Returns once the HTTP server may stop.
pub async fn until_stopped(
    mut signals: StopSignals,
    drain: Arc<Drain>,
    membership: Arc<Membership>,
    signaling: Arc<Signaling>,
    grace: Duration,
) {
    let cause = tokio::select! {
        () = signals.next() => "a stop signal",
        () = drain.requested() => "a drain request",
    };
    signaling.set_draining();
    membership.set_state(NodeState::Draining).await;
    let timeout = drain.timeout();
    let participants = signaling.participant_count();
    if !timeout.is_zero() && participants > 0 {
        info!(
            participants,
            ?timeout,
            "draining after {cause}: no new room opens here; stopping once the rooms here are \
             empty, after the drain timeout at the latest, or at the next SIGTERM/SIGINT"
        );
        tokio::select! {
            () = signaling.until_no_participants() => info!("drained: nobody is left on this node"),
            () = tokio::time::sleep(timeout) => info!("the drain timeout has passed"),
            () = signals.next() => info!("a second stop signal ends the drain"),
        }
    }
    info!("shutting down: telling participants to leave");
    signaling.shutdown(grace).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_drain_request_is_seen_once_and_wakes_the_waiter() {
        let drain = Drain::new(Duration::from_secs(30));
        let waiter = {
            let drain = Arc::clone(&drain);
            tokio::spawn(async move { drain.requested().await })
        };
        assert!(drain.request(), "the first request starts the drain");
        assert!(!drain.request(), "a second one changes nothing");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes")
            .expect("the waiter ran");
        // Asked before anyone waits: a later waiter returns at once.
        tokio::time::timeout(Duration::from_secs(5), drain.requested())
            .await
            .expect("already requested");
        assert_eq!(drain.timeout(), Duration::from_secs(30));
    }
}
