//! Event delivery from the store's transactional outbox (the event log) to webhooks and NATS.
//!
//! Every sink (each webhook URL is one, named `webhook:<url>`; NATS is `nats`) runs as its
//! own task (`run.rs`). Nodes sharing one database share the log, the cursors and one
//! delivery lease per sink (`lease.rs`): only the node holding a sink's lease delivers to
//! it, the others stand by and take over when the lease expires or is released. The holder
//! reads the sink's cursor, loads the events after it in id order, delivers them one by one
//! and stores the cursor after each success; the store refuses that write unless the lease
//! is still the node's, and a refused write or a failed renewal stops the node's delivery at
//! once. So delivery is in order (per room, and globally), survives restarts and takeovers
//! without re-sending what was delivered and acknowledged, and is at-least-once across
//! crashes: an event delivered just before a crash (or a lost lease), whose cursor was not
//! stored yet, is sent again, with the same id (`EV_<id>`), by the next holder. A failing
//! delivery is retried with exponential backoff forever: an event is never skipped while
//! the log holds it, and one slow or broken sink does not hold up the others. When caught
//! up a sink sleeps until a writer wakes it (the `wake` notify) or a poll tick, and every
//! sink stops promptly when `stop` turns true, releasing its lease.

mod lease;
mod livekit;
mod nats;
mod run;
mod webhook;

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) use webhook::EVENT_ID_HEADER;

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{redact_url, NatsSettings, Settings, DEFAULT_NODE_TIMEOUT};
use crate::store::{EventRecord, Store};

/// Events loaded per query.
const BATCH: u32 = 100;

/// The API key and secret that sign webhooks.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SigningKey {
    pub api_key: String,
    pub api_secret: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("api_key", &self.api_key)
            .field("api_secret", &"…")
            .finish()
    }
}

/// Exponential backoff of a failing delivery: `initial`, doubling up to `max`, forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th failure in a row (1-based).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// What [`spawn`] delivers where.
#[derive(Clone)]
pub struct DeliveryConfig {
    /// One webhook sink per URL.
    pub webhook_urls: Vec<String>,
    pub webhook_key: SigningKey,
    /// A NATS sink when set.
    pub nats: Option<NatsSettings>,
    pub retry: RetryPolicy,
    /// Limit of one webhook request, NATS connect or flush.
    pub timeout: Duration,
    /// How often a caught-up sink looks for events nobody woke it for.
    pub poll_interval: Duration,
    /// How long a hole in the event ids is waited for before delivery moves past it. With
    /// PostgreSQL, ids are taken when a transaction inserts its event and become visible
    /// when it commits, so a later id can be seen first; the hole fills within a
    /// transaction's lifetime, or never (a rolled-back insert).
    pub gap_grace: Duration,
    /// How long a delivery under way may still finish once `stop` turns true.
    pub stop_grace: Duration,
    /// This node's id: the holder named in the sinks' delivery leases.
    pub node_id: String,
    /// How long a delivery lease lasts without renewal; renewed every third of it.
    pub lease_ttl: Duration,
}

impl DeliveryConfig {
    /// The delivery configured in `settings` for node `node_id`, with the default timings.
    pub fn from_settings(settings: &Settings, node_id: &str) -> Result<Self, DeliveryError> {
        let api_key = &settings.webhooks.api_key;
        let webhook_key = match settings.keys.get(api_key) {
            Some(secret) => SigningKey {
                api_key: api_key.clone(),
                api_secret: secret.clone(),
            },
            None if settings.webhooks.urls.is_empty() => SigningKey::default(),
            None => {
                return Err(DeliveryError::UnknownKey {
                    key: api_key.clone(),
                })
            }
        };
        Ok(DeliveryConfig {
            webhook_urls: settings.webhooks.urls.clone(),
            webhook_key,
            nats: settings.nats.clone(),
            node_id: node_id.to_owned(),
            lease_ttl: settings.cluster.delivery_lease_ttl,
            ..DeliveryConfig::default()
        })
    }
}

impl Default for DeliveryConfig {
    /// No sinks, default timings, and a placeholder node id (a server always sets its own).
    fn default() -> Self {
        DeliveryConfig {
            webhook_urls: Vec::new(),
            webhook_key: SigningKey::default(),
            nats: None,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            gap_grace: Duration::from_secs(5),
            stop_grace: Duration::from_secs(2),
            node_id: "ND_local".to_owned(),
            lease_ttl: DEFAULT_NODE_TIMEOUT,
        }
    }
}

/// URLs may carry credentials, so they are redacted.
impl fmt::Debug for DeliveryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.webhook_urls.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("DeliveryConfig")
            .field("webhook_urls", &urls)
            .field("webhook_key", &self.webhook_key)
            .field("nats", &self.nats)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("poll_interval", &self.poll_interval)
            .field("gap_grace", &self.gap_grace)
            .field("stop_grace", &self.stop_grace)
            .field("node_id", &self.node_id)
            .field("lease_ttl", &self.lease_ttl)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("webhook signing key \"{key}\" is not a configured API key")]
    UnknownKey { key: String },
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("request failed")]
    Request(#[source] reqwest::Error),
    #[error("receiver answered HTTP {status}: {body:?}")]
    Status { status: u16, body: String },
    #[error("cannot sign the webhook")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("cannot encode event {event_id}: {reason}")]
    Encode { event_id: i64, reason: String },
    #[error("NATS: {0}")]
    Nats(String),
}

/// Starts one task per configured sink (none if nothing is configured). Writers call
/// `wake.notify_waiters()` after appending events; the tasks end when `stop` turns true
/// (or its sender is dropped), after the delivery under way has finished or had
/// `stop_grace` to; an unfinished one is retried after a restart.
pub fn spawn(
    store: Arc<dyn Store>,
    config: DeliveryConfig,
    wake: Arc<Notify>,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let timings = Arc::new(config.clone());
    let mut tasks = Vec::new();
    for url in &config.webhook_urls {
        let sink =
            webhook::WebhookSink::new(url.clone(), config.webhook_key.clone(), config.timeout);
        tasks.push(tokio::spawn(run::run_sink(
            sink,
            Arc::clone(&store),
            Arc::clone(&timings),
            Arc::clone(&wake),
            stop.clone(),
        )));
    }
    if let Some(nats) = &config.nats {
        let sink = nats::NatsSink::new(nats.clone(), config.timeout);
        tasks.push(tokio::spawn(run::run_sink(
            sink, store, timings, wake, stop,
        )));
    }
    tasks
}

/// One destination of events.
trait Sink: Send + 'static {
    /// The name its cursor is stored under.
    fn name(&self) -> &str;

    /// Delivers one event; an error means "not delivered, try again".
    fn deliver(
        &mut self,
        event: &EventRecord,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// Runs one delivery attempt. If `stop` turns true meanwhile, the attempt gets `grace` to
/// finish: a receiver that already has the event then gets its answer recorded (and no
/// duplicate after the restart), while a hung one cannot hold up shutdown. None when stopped
/// before the attempt started or before it finished.
async fn attempt_or_stop<F: Future>(
    stop: &mut watch::Receiver<bool>,
    attempt: F,
    grace: Duration,
) -> Option<F::Output> {
    if *stop.borrow() {
        return None;
    }
    tokio::pin!(attempt);
    tokio::select! {
        biased;
        out = &mut attempt => Some(out),
        _ = stopped(stop) => tokio::time::timeout(grace, attempt).await.ok(),
    }
}

/// Resolves once `stop` is true or its sender is gone. (The guard `wait_for` returns is
/// dropped here: it must not live across an await of the caller.)
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Runs `fut` unless `stop` turns true (or its sender is dropped) first.
async fn or_stop<F: Future>(stop: &mut watch::Receiver<bool>, fut: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        _ = stopped(stop) => None,
        out = fut => Some(out),
    }
}

/// Tracks a hole in the event ids right after the cursor (see
/// [`DeliveryConfig::gap_grace`]).
#[derive(Debug, Default)]
struct GapWait {
    /// The cursor the hole follows, and when it was first seen.
    since: Option<(i64, Instant)>,
}

impl GapWait {
    /// How many events of `batch` (ids ascending, all above `cursor`) may be delivered now:
    /// those that follow the cursor without a hole; after a hole, none until it is
    /// `grace` old, then the first event past it.
    fn ready(
        &mut self,
        cursor: i64,
        batch: &[EventRecord],
        now: Instant,
        grace: Duration,
    ) -> usize {
        let mut last = cursor;
        let contiguous = batch
            .iter()
            .take_while(|event| {
                let next = event.id == last + 1;
                last = event.id;
                next
            })
            .count();
        if contiguous > 0 || batch.is_empty() {
            self.since = None;
            return contiguous;
        }
        match self.since {
            Some((at_cursor, first_seen)) if at_cursor == cursor => {
                if now.duration_since(first_seen) >= grace {
                    self.since = None;
                    1
                } else {
                    0
                }
            }
            _ => {
                self.since = Some((cursor, now));
                0
            }
        }
    }
}

/// An error with its causes, e.g. "request failed: error sending request: connection
/// refused": the top-level message alone rarely says what to fix.
fn chain(err: &dyn StdError) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some errors repeat their cause in their own message.
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// reqwest and async-nats use rustls' process-wide crypto provider; this makes it aws-lc-rs
/// (see Cargo.toml). An error means a provider is installed already, which is as good.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
