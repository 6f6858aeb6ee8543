//! The cluster bus: what one node must tell the others at once goes over NATS, when NATS is
//! configured. Today that is revocations: a participant removed on one node has its token
//! refused on every node within a NATS round trip, instead of at the next poll of the store
//! (every 5 s, src/control/maintenance.rs). The store stays the truth and the poll stays as
//! the fallback: a message lost here (NATS down, queue full, a node not subscribed yet) is
//! picked up from the store a few seconds later.
//!
//! Subject: `<nats.cluster_prefix>.revocations`, JSON
//! `{"node_id", "room_id", "identity", "revoked_at"}` (Unix seconds). Every node subscribes
//! and applies what other nodes sent; its own messages come back to it and are skipped.
//!
//! Bounded both ways: a removal only puts the revocation on a bounded queue (never waits for
//! NATS; a full queue drops it with a warning), each publish is bounded by a timeout, and a
//! message that does not parse or names an invalid room or identity is logged and dropped.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectOptions, Event, ServerAddr};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use switchboard_signaling::{NameRules, Signaling};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::{redact_url, NatsSettings};

/// Revocations waiting to be published; more than this at once (NATS stuck) are dropped.
const QUEUE: usize = 256;

/// How long one publish may take before it is given up (the store poll covers it).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long connecting to NATS may take per attempt (it keeps trying in the background).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A removal's revocation, to tell the other nodes.
#[derive(Debug, Clone)]
pub struct Revoked {
    pub room_id: String,
    pub identity: String,
    /// Unix seconds: tokens issued at or before are refused.
    pub at: u64,
}

/// The message on the wire.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct RevocationMessage {
    node_id: String,
    room_id: String,
    identity: String,
    revoked_at: u64,
}

/// Where revocations to tell the other nodes are queued.
pub type RevocationSender = mpsc::Sender<Revoked>;

pub fn revocations_subject(settings: &NatsSettings) -> String {
    format!("{}.revocations", settings.cluster_prefix)
}

/// Connects to NATS (in the background: a NATS server that is down at start delays the bus,
/// never the node) and starts the publisher and the subscriber. They run until `stop`.
pub async fn start(
    settings: &NatsSettings,
    node_id: String,
    signaling: Arc<Signaling>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(RevocationSender, Vec<JoinHandle<()>>)> {
    let servers = settings
        .url
        .split(',')
        .map(|url| url.trim().parse::<ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| anyhow::anyhow!("invalid NATS server URL: {err}"))?;
    crate::delivery::install_crypto_provider();
    let shown = redact_url(&settings.url);
    let options = ConnectOptions::new()
        .name(format!("switchboard-cluster-{node_id}"))
        .connection_timeout(CONNECT_TIMEOUT)
        .retry_on_initial_connect()
        .event_callback(move |event| {
            let shown = shown.clone();
            async move {
                match event {
                    Event::Disconnected => warn!(
                        server = %shown,
                        "cluster bus: NATS connection lost; revocations reach other nodes \
                         through the store meanwhile"
                    ),
                    Event::Connected => info!(server = %shown, "cluster bus: NATS connected"),
                    other => debug!(server = %shown, "cluster bus: NATS: {other}"),
                }
            }
        });
    let client = async_nats::connect_with_options(servers, options)
        .await
        .map_err(|err| anyhow::anyhow!("cannot set up the NATS connection: {err}"))?;
    let subject = revocations_subject(settings);
    let subscriber = client
        .subscribe(subject.clone())
        .await
        .map_err(|err| anyhow::anyhow!("cannot subscribe to {subject}: {err}"))?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let publisher = tokio::spawn(publish_loop(
        client,
        subject,
        node_id.clone(),
        rx,
        stop.clone(),
    ));
    let listener = tokio::spawn(listen_loop(subscriber, node_id, signaling, stop));
    Ok((tx, vec![publisher, listener]))
}

/// Queues a revocation for the other nodes; never waits. A full queue drops it (logged):
/// the other nodes then read it from the store at their next poll.
pub fn announce(sender: &RevocationSender, revoked: Revoked) {
    if let Err(e) = sender.try_send(revoked) {
        warn!(
            "cluster bus: revocation not sent over NATS ({e}); other nodes read it from the \
             store within seconds"
        );
    }
}

async fn publish_loop(
    client: async_nats::Client,
    subject: String,
    node_id: String,
    mut rx: mpsc::Receiver<Revoked>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let revoked = tokio::select! {
            next = rx.recv() => match next {
                Some(revoked) => revoked,
                None => return,
            },
            _ = stop.changed() => return,
        };
        let message = RevocationMessage {
            node_id: node_id.clone(),
            room_id: revoked.room_id,
            identity: revoked.identity,
            revoked_at: revoked.at,
        };
        let payload = match serde_json::to_vec(&message) {
            Ok(payload) => payload,
            Err(e) => {
                warn!("cluster bus: cannot encode a revocation: {e}");
                continue;
            }
        };
        // Flushed, so the message leaves now rather than with the client's next batch.
        let sent = tokio::time::timeout(PUBLISH_TIMEOUT, async {
            client.publish(subject.clone(), payload.into()).await?;
            client.flush().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .await;
        match sent {
            Ok(Ok(())) => {
                debug!(room = %message.room_id, identity = %message.identity, "revocation sent")
            }
            Ok(Err(e)) => {
                warn!("cluster bus: publishing a revocation failed (the store has it): {e}")
            }
            Err(_) => warn!("cluster bus: publishing a revocation timed out (the store has it)"),
        }
    }
}

async fn listen_loop(
    mut subscriber: async_nats::Subscriber,
    node_id: String,
    signaling: Arc<Signaling>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let message = tokio::select! {
            next = subscriber.next() => match next {
                Some(message) => message,
                None => {
                    warn!("cluster bus: the revocation subscription ended");
                    return;
                }
            },
            _ = stop.changed() => return,
        };
        match parse(&message.payload, signaling.names()) {
            Ok(revocation) if revocation.node_id == node_id => {}
            Ok(revocation) => {
                signaling.revoke(
                    &revocation.room_id,
                    &revocation.identity,
                    revocation.revoked_at,
                );
                info!(
                    room = %revocation.room_id,
                    identity = %revocation.identity,
                    from = %revocation.node_id,
                    "revocation applied from another node"
                );
            }
            Err(reason) => warn!(
                subject = %message.subject,
                bytes = message.payload.len(),
                "cluster bus: dropped a message that is not a revocation: {reason}"
            ),
        }
    }
}

/// A revocation message, checked: JSON of the right shape, naming a valid room and identity.
fn parse(payload: &[u8], names: NameRules) -> Result<RevocationMessage, String> {
    let message: RevocationMessage = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    names
        .check_room(&message.room_id)
        .map_err(|e| e.to_string())?;
    names
        .check_identity(&message.identity)
        .map_err(|e| e.to_string())?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: NameRules = NameRules {
        max_room_name_bytes: 64,
        max_identity_bytes: 64,
    };

    #[test]
    fn a_revocation_round_trips_and_garbage_is_refused_not_panicked_on() {
        let message = RevocationMessage {
            node_id: "node-a".into(),
            room_id: "stage".into(),
            identity: "mallory".into(),
            revoked_at: 1_700_000_000,
        };
        let bytes = serde_json::to_vec(&message).expect("encodes");
        assert_eq!(parse(&bytes, NAMES), Ok(message));
        for garbage in [
            &b""[..],
            b"\xff\xfe",
            b"null",
            b"[]",
            b"{\"node_id\":\"a\"}",
            b"{\"node_id\":\"a\",\"room_id\":\"r\",\"identity\":\"i\",\"revoked_at\":-1}",
            b"{\"node_id\":\"a\",\"room_id\":\"a/b\",\"identity\":\"i\",\"revoked_at\":1}",
            b"{\"node_id\":\"a\",\"room_id\":\"r\",\"identity\":\"\",\"revoked_at\":1}",
        ] {
            assert!(
                parse(garbage, NAMES).is_err(),
                "{:?}",
                String::from_utf8_lossy(garbage)
            );
        }
    }
}
