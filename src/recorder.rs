//! Writes what signaling reports (rooms, joins, leaves) to the session store, in the order
//! it happened. A failed write is retried a few times before it is logged and skipped, so a
//! database hiccup never stalls signaling.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use switchboard_signaling::SignalEvent;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::store::{
    NewRoom, ParticipantJoin, ParticipantLeave, ParticipantRole, ParticipantSummary, Store,
    StoreError,
};

const ATTEMPTS: u32 = 3;

fn utc(at: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(at)
}

/// Applies one event to the store.
pub async fn apply(store: &dyn Store, event: &SignalEvent) -> Result<(), StoreError> {
    match event {
        SignalEvent::RoomStarted {
            room_id,
            sid,
            empty_timeout_secs,
            max_participants,
            at,
        } => {
            store
                .room_started(&NewRoom {
                    room_id: room_id.clone(),
                    sid: sid.clone(),
                    name: None,
                    metadata: None,
                    empty_timeout_secs: *empty_timeout_secs,
                    max_participants: *max_participants,
                    started_at: utc(*at),
                })
                .await?;
        }
        SignalEvent::RoomFinished { room_id, at } => store.room_finished(room_id, utc(*at)).await?,
        SignalEvent::ParticipantJoined {
            room_id,
            sid,
            identity,
            name,
            metadata,
            admin,
            at,
        } => {
            store
                .participant_joined(&ParticipantJoin {
                    room_id: room_id.clone(),
                    sid: sid.clone(),
                    identity: identity.clone(),
                    name: name.clone(),
                    role: Some(if *admin {
                        ParticipantRole::Host
                    } else {
                        ParticipantRole::Guest
                    }),
                    metadata: (!metadata.is_empty()).then(|| metadata.clone()),
                    joined_at: utc(*at),
                })
                .await?;
        }
        SignalEvent::ParticipantLeft {
            sid,
            reason,
            stats,
            at,
            ..
        } => {
            store
                .participant_left(
                    sid,
                    &ParticipantLeave {
                        left_at: utc(*at),
                        reason: reason.as_str().to_owned(),
                        summary: ParticipantSummary {
                            bytes_in: stats.bytes_in,
                            bytes_out: stats.bytes_out,
                            packets_in: stats.packets_in,
                            packets_out: stats.packets_out,
                            packets_lost: stats.packets_lost,
                            rtt_ms: stats.rtt_ms,
                        },
                    },
                )
                .await?;
        }
        // Tracks are recorded once the event log exists (issue 3).
        SignalEvent::TrackPublished { .. } | SignalEvent::TrackUnpublished { .. } => {}
    }
    Ok(())
}

async fn apply_with_retry(store: &dyn Store, event: &SignalEvent) {
    for attempt in 1..=ATTEMPTS {
        match apply(store, event).await {
            Ok(()) => return,
            Err(e) if attempt < ATTEMPTS => {
                debug!(attempt, "store write failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            Err(e) => warn!(?event, "could not record an event: {e}"),
        }
    }
}

/// Records events until `stop` turns true, then records whatever is still queued.
pub async fn run(
    store: Arc<dyn Store>,
    mut events: mpsc::UnboundedReceiver<SignalEvent>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => apply_with_retry(store.as_ref(), &event).await,
                None => return,
            },
            _ = stop.changed() => break,
        }
    }
    while let Ok(event) = events.try_recv() {
        apply_with_retry(store.as_ref(), &event).await;
    }
}
