//! The delivery loop of one sink: hold the sink's lease (see `lease.rs`), read the cursor,
//! deliver the events after it one by one, store the cursor after each (fenced by the
//! lease), and start over when the lease is lost.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::lease::{self, Lost, Tenure};
use super::{attempt_or_stop, chain, or_stop, stopped, DeliveryConfig, GapWait, Sink, BATCH};
use crate::config::redact_url;
use crate::store::{EventRecord, Store};

/// How a stretch of delivery under one tenure ended.
enum Ended {
    Stopped,
    Lost(Lost),
}

/// The delivery loop of one sink; see the module docs of `delivery`.
pub(super) async fn run_sink<S: Sink>(
    mut sink: S,
    store: Arc<dyn Store>,
    config: Arc<DeliveryConfig>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let name = sink.name().to_owned();
    let shown = redact_url(&name);
    loop {
        let Some(tenure) = lease::acquire(&store, &name, &shown, &config, &wake, &mut stop).await
        else {
            return;
        };
        info!(sink = %shown, generation = tenure.generation, "this node holds the delivery lease");
        let ended = {
            let keeper = lease::keep(&store, &name, &shown, &config, tenure);
            let work = deliver_while_held(
                &mut sink, &store, &name, &shown, &config, &wake, &mut stop, tenure,
            );
            // Keeper first: once the lease is gone, nothing more may go out, not even the
            // delivery that would have completed in the same poll.
            tokio::select! {
                biased;
                lost = keeper => Ended::Lost(lost),
                ended = work => ended,
            }
        };
        match ended {
            Ended::Stopped => {
                lease::release(&store, &name, &shown, &config, tenure).await;
                return;
            }
            Ended::Lost(why) => {
                warn!(sink = %shown, reason = %why, "delivery stopped: the lease is lost; delivering again once this node holds it");
            }
        }
    }
}

/// Delivers from the stored cursor on for as long as the caller keeps the lease; returns
/// when stopped or when the store refuses a cursor write.
#[allow(clippy::too_many_arguments)] // the loop's whole context, borrowed from run_sink
async fn deliver_while_held<S: Sink>(
    sink: &mut S,
    store: &Arc<dyn Store>,
    name: &str,
    shown: &str,
    config: &DeliveryConfig,
    wake: &Notify,
    stop: &mut watch::Receiver<bool>,
    tenure: Tenure,
) -> Ended {
    // Read after taking the lease, so it includes the previous holder's last write.
    let mut failures = 0;
    let mut cursor = loop {
        match or_stop(stop, store.delivery_cursor(name)).await {
            None => return Ended::Stopped,
            Some(Ok(cursor)) => break cursor,
            Some(Err(err)) => {
                failures += 1;
                let delay = config.retry.delay(failures);
                warn!(sink = %shown, retry_in = ?delay, error = %chain(&err), "cannot read the delivery cursor");
                if or_stop(stop, tokio::time::sleep(delay)).await.is_none() {
                    return Ended::Stopped;
                }
            }
        }
    };
    info!(sink = %shown, cursor, "event delivery started");
    let save = |cursor: i64| {
        store.set_delivery_cursor_fenced(
            name,
            &config.node_id,
            tenure.generation,
            cursor,
            Utc::now(),
        )
    };
    let mut saved = cursor;
    let mut gap = GapWait::default();
    let mut failures = 0;
    loop {
        // Registered before the log is read: writers use notify_waiters, which wakes only
        // registered waiters, and an event appended after the read must still wake us.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        if saved != cursor {
            // The last save failed; until this one works, a takeover would re-send events.
            match save(cursor).await {
                Ok(true) => saved = cursor,
                Ok(false) => return Ended::Lost(Lost::Fenced),
                Err(err) => {
                    warn!(sink = %shown, cursor, error = %chain(&err), "cannot save the delivery cursor")
                }
            }
        }
        let batch = match or_stop(stop, store.events_after(cursor, BATCH)).await {
            None => return Ended::Stopped,
            Some(Ok(batch)) => {
                failures = 0;
                batch
            }
            Some(Err(err)) => {
                failures += 1;
                let delay = config.retry.delay(failures);
                warn!(sink = %shown, retry_in = ?delay, error = %chain(&err), "cannot read the event log");
                // A write that succeeds means the database is back: read again at once
                // instead of sleeping out a backoff that grew during the outage.
                tokio::select! {
                    biased;
                    _ = stopped(stop) => return Ended::Stopped,
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };
        let ready = gap.ready(cursor, &batch, Instant::now(), config.gap_grace);
        if ready == 0 && !batch.is_empty() {
            debug!(sink = %shown, cursor, next = batch[0].id, "waiting for a hole in the event ids to fill");
        }
        for event in &batch[..ready] {
            if !deliver_until_ok(sink, event, config, stop, shown).await {
                return Ended::Stopped;
            }
            cursor = event.id;
            // Not raced with `stop`: the event is delivered, and a quick save now spares
            // the receiver a duplicate from the next holder.
            match save(cursor).await {
                Ok(true) => saved = cursor,
                Ok(false) => return Ended::Lost(Lost::Fenced),
                Err(err) => {
                    warn!(sink = %shown, cursor, error = %chain(&err), "cannot save the delivery cursor")
                }
            }
        }
        if ready > 0 {
            continue;
        }
        tokio::select! {
            biased;
            _ = stopped(stop) => return Ended::Stopped,
            _ = &mut notified => {}
            _ = tokio::time::sleep(config.poll_interval) => {}
        }
    }
}

/// Delivers one event, retrying with backoff until it works. False when stopped first.
async fn deliver_until_ok<S: Sink>(
    sink: &mut S,
    event: &EventRecord,
    config: &DeliveryConfig,
    stop: &mut watch::Receiver<bool>,
    shown: &str,
) -> bool {
    let mut failures = 0;
    loop {
        match attempt_or_stop(stop, sink.deliver(event), config.stop_grace).await {
            None => return false,
            Some(Ok(())) => {
                if failures > 0 {
                    info!(sink = %shown, event_id = event.id, attempts = failures + 1, "event delivered after retries");
                }
                return true;
            }
            Some(Err(err)) => {
                failures += 1;
                let delay = config.retry.delay(failures);
                warn!(
                    sink = %shown,
                    event_id = event.id,
                    kind = %event.kind,
                    attempt = failures,
                    retry_in = ?delay,
                    error = %chain(&err),
                    "event delivery failed"
                );
                if or_stop(stop, tokio::time::sleep(delay)).await.is_none() {
                    return false;
                }
            }
        }
    }
}
