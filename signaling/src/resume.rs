//! Resuming a participant on a new signaling connection, as livekit-client does after a
//! network blip (`/rtc?reconnect=1&sid=…`).
//!
//! A session whose WebSocket closes or goes silent (no ping within `ping_timeout`) does not
//! leave at once: it waits up to the departure timeout (`peer_departure_timeout`, 20 s by
//! default) for the client to come back. The participant keeps its sid, its place in the
//! room, its tracks, subscriptions and PeerConnections meanwhile; the others see nothing but
//! a gap in its media. A reconnect naming the sid, with a token for the same room and
//! identity, hands its socket to the waiting session (or to a live one, whose old socket
//! the client has given up on), which answers with a ReconnectResponse, sends what it held
//! back, and restarts ICE on the subscriber PC (the client restarts its publisher PC
//! itself). A reconnect that names no such session gets a LeaveRequest with the reconnect
//! action, and the client rejoins from scratch at once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use livekit_protocol as proto;
use proto::signal_response::Message as Resp;
use switchboard_sfu::PeerEvent;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info};

use crate::ending::Ending;
use crate::events::LeaveReason;
use crate::outbox::Inbox;
use crate::session::Session;
use crate::subscribe;
use crate::websocket::SignalSocket;

/// Responses held for a session waiting to be resumed. Offers are never dropped (at most one
/// is outstanding: the media plane waits for its answer); past this, older updates (speakers,
/// connection quality, stream states) are, newer ones being what the client needs.
const HELD_RESPONSES: usize = 64;

/// A new signaling connection for an existing participant.
pub(crate) struct Resume {
    pub ws: SignalSocket,
    /// The client's `reconnect_reason` (LiveKit's ReconnectReason), for the logs.
    pub reason: Option<String>,
}

/// Where a resume waits for its session. A newer one replaces an older one not yet taken
/// (the client gave up on that connection).
#[derive(Default)]
pub(crate) struct ResumeSlot {
    waiting: Mutex<Option<Box<Resume>>>,
    ready: Notify,
}

impl ResumeSlot {
    fn put(&self, resume: Box<Resume>) {
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = Some(resume);
        self.ready.notify_one();
    }

    /// The next resume, waiting for one.
    pub(crate) async fn wait(&self) -> Box<Resume> {
        loop {
            if let Some(resume) = self
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                return resume;
            }
            // `notify_one` keeps a permit when nobody waits: a put between the check and
            // here is not lost.
            self.ready.notified().await;
        }
    }
}

struct Entry {
    room: String,
    identity: String,
    slot: Arc<ResumeSlot>,
}

/// The sessions of this node that a reconnect may resume, by participant sid.
#[derive(Default)]
pub(crate) struct Resumables(Mutex<HashMap<String, Entry>>);

impl Resumables {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a joined session resumable; its resumes arrive in the returned slot.
    pub(crate) fn register(&self, sid: &str, room: &str, identity: &str) -> Arc<ResumeSlot> {
        let slot = Arc::new(ResumeSlot::default());
        self.lock().insert(
            sid.to_owned(),
            Entry {
                room: room.to_owned(),
                identity: identity.to_owned(),
                slot: Arc::clone(&slot),
            },
        );
        slot
    }

    /// The session is ending: reconnects naming it now rejoin from scratch.
    pub(crate) fn unregister(&self, sid: &str) {
        self.lock().remove(sid);
    }

    /// Hands `resume` to the session of `sid` when the token's room and identity are that
    /// session's; gives it back otherwise.
    pub(crate) fn offer(
        &self,
        sid: &str,
        room: &str,
        identity: &str,
        resume: Box<Resume>,
    ) -> Result<(), Box<Resume>> {
        let entries = self.lock();
        match entries.get(sid) {
            Some(entry) if entry.room == room && entry.identity == identity => {
                entry.slot.put(resume);
                Ok(())
            }
            _ => Err(resume),
        }
    }
}

/// How a session goes on after its socket was lost or replaced.
pub(crate) enum Step {
    End(Ending),
    Resume(Box<Resume>),
}

impl Ending {
    /// The socket is gone but the participant may come back on another.
    pub(crate) fn resumable(&self) -> bool {
        matches!(
            self.reason,
            LeaveReason::SignalClosed | LeaveReason::PingTimeout
        )
    }
}

impl Session {
    /// Waits for the client to resume, up to the departure timeout. Meanwhile the room's
    /// updates wait in the session's queue (bounded, coalesced); media-plane events that
    /// need no socket are handled, those for the client held. `cause` is how the socket was
    /// lost: the recorded reason if the client does not come back.
    pub(crate) async fn park(
        &mut self,
        room_rx: &mut Inbox,
        peer_events: &mut mpsc::UnboundedReceiver<PeerEvent>,
        cause: Ending,
    ) -> Result<Box<Resume>, Ending> {
        let timeout = self.sig.limits.departure_timeout;
        info!(
            sid = %self.sid,
            reason = cause.reason.as_str(),
            "signaling lost; waiting {}s for the client to resume",
            timeout.as_secs()
        );
        let deadline = tokio::time::Instant::now() + timeout;
        let slot = Arc::clone(&self.resume);
        let mut shutdown = self.sig.shutdown.subscribe();
        let quiet = |reason| Ending {
            reason,
            notify: false,
            close: None,
        };
        if *shutdown.borrow() {
            return Err(quiet(LeaveReason::ServerShutdown));
        }
        loop {
            tokio::select! {
                resume = slot.wait() => return Ok(resume),
                reason = room_rx.leave_requested() => return Err(quiet(reason)),
                Some(event) = peer_events.recv() => match self.peer_event(event) {
                    // Its socket gone and now its PeerConnection closed: the client is not
                    // coming back to this session (a resume keeps its PeerConnections).
                    _ if self.media_lost_until.is_some() => {
                        return Err(quiet(LeaveReason::ClientInitiated));
                    }
                    Ok(Some(response)) => self.hold(response),
                    Ok(None) => {}
                    Err(ending) => return Err(quiet(ending.reason)),
                },
                _ = shutdown.changed() => return Err(quiet(LeaveReason::ServerShutdown)),
                _ = tokio::time::sleep_until(deadline) => {
                    info!(sid = %self.sid, "not resumed within the departure timeout");
                    return Err(quiet(cause.reason));
                }
            }
        }
    }

    fn hold(&mut self, response: Resp) {
        if self.held.len() >= HELD_RESPONSES {
            match self.held.iter().position(|r| !matches!(r, Resp::Offer(_))) {
                Some(oldest) => {
                    self.held.remove(oldest);
                }
                None => return,
            }
        }
        self.held.push_back(response);
    }

    /// Takes over the client's new socket: the ReconnectResponse, what was held back, and an
    /// ICE restart of the subscriber PC.
    pub(crate) async fn resumed(
        &mut self,
        ws: &mut SignalSocket,
        resume_reason: Option<&str>,
    ) -> Result<(), Ending> {
        info!(sid = %self.sid, reason = ?resume_reason, "participant resumed");
        metrics::counter!("switchboard_signal_resumes_total", "outcome" => "resumed").increment(1);
        self.last_heard = std::time::Instant::now();
        let response = proto::ReconnectResponse {
            ice_servers: self.ice_servers(),
            server_info: Some(self.server_info()),
            ..Default::default()
        };
        self.reply(ws, Resp::Reconnect(response)).await?;
        // The token the client resumed with may be about to expire: the next resume needs
        // a fresh one.
        self.refresh_token(ws).await?;
        let held: VecDeque<Resp> = std::mem::take(&mut self.held);
        for response in held {
            self.reply(ws, response).await?;
        }
        // Its address may have changed, and its subscriber PC may have given up on the old
        // pair: new credentials make it check again from wherever it is now.
        if let Err(e) = self.media.restart_subscriber_ice() {
            debug!(sid = %self.sid, "no subscriber ICE restart: {e}");
        }
        Ok(())
    }
}

impl Session {
    /// Sends the client a fresh join token with its current grants, and schedules the next.
    pub(crate) async fn refresh_token(&mut self, ws: &mut SignalSocket) -> Result<(), Ending> {
        self.next_token_refresh =
            tokio::time::Instant::now() + self.sig.limits.token_refresh_interval;
        // A key removed since the join signs nothing more; the client keeps the token it has.
        let Some(secret) = self.sig.keys.secret(&self.claims.iss) else {
            return Ok(());
        };
        let claims = self.claims.refreshed(crate::token::now_secs());
        match crate::token::issue(&self.claims.iss, secret, &claims) {
            Ok(token) => self.reply(ws, Resp::RefreshToken(token)).await,
            Err(e) => {
                debug!(sid = %self.sid, "no refreshed token: {e}");
                Ok(())
            }
        }
    }

    /// What a resumed client believes: its subscriptions and the tracks it has disabled are
    /// applied again (they may have changed while it was away); the rest (its SDPs, the
    /// tracks it published, its data channels) is what this server kept for it.
    pub(crate) fn sync_state(&self, sync: proto::SyncState) {
        debug!(
            sid = %self.sid,
            published = sync.publish_tracks.len(),
            disabled = sync.track_sids_disabled.len(),
            "sync state"
        );
        if let Some(subscription) = sync.subscription {
            subscribe::update_subscription(self, subscription);
        }
        if !sync.track_sids_disabled.is_empty() {
            subscribe::update_track_settings(
                self,
                proto::UpdateTrackSettings {
                    track_sids: sync.track_sids_disabled,
                    disabled: true,
                    ..Default::default()
                },
            );
        }
    }
}

/// Counts a reconnect nobody was waiting for (the client rejoins).
pub(crate) fn not_resumable() {
    metrics::counter!("switchboard_signal_resumes_total", "outcome" => "rejoin").increment(1);
}
