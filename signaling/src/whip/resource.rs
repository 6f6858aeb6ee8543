//! One WHIP or WHEP session: a participant of its room driven by HTTP instead of a
//! WebSocket, from its offer until DELETE, a lost connection or the room ending it.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use livekit_protocol as proto;
use switchboard_sfu::{ExpectedTrack, JoinOptions, ParticipantHandle, PeerEvent, TrackKind};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::sdp::Offer;
use super::{negotiation_problem, room_refusal, Problem};
use crate::events::{LeaveReason, SignalEvent};
use crate::rooms::SessionMsg;
use crate::session::{media_joined, participant_info};
use crate::token::Claims;
use crate::{ids, Signaling};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// WHIP: the client publishes.
    Publish,
    /// WHEP: the client watches.
    Play,
}

impl Kind {
    pub fn path(self) -> &'static str {
        match self {
            Kind::Publish => "whip",
            Kind::Play => "whep",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Publish => "WHIP",
            Kind::Play => "WHEP",
        }
    }
}

/// What changes over a session's life: the client's ICE ufrag and the ETag's version.
struct IceState {
    remote_ufrag: String,
    version: u32,
}

pub(crate) struct Resource {
    pub id: String,
    pub kind: Kind,
    pub room: String,
    pub identity: String,
    pub media: ParticipantHandle,
    ice: Mutex<IceState>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    ended: watch::Receiver<bool>,
}

impl Resource {
    fn ice(&self) -> std::sync::MutexGuard<'_, IceState> {
        // Plain data: still consistent after a panic elsewhere.
        self.ice.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes with every ICE restart (RFC 9725 §4.4).
    pub fn etag(&self) -> String {
        format!("\"{}.{}\"", self.id, self.ice().version)
    }

    pub fn remote_ufrag(&self) -> String {
        self.ice().remote_ufrag.clone()
    }

    pub fn restarted(&self, ufrag: &str) {
        let mut ice = self.ice();
        ice.remote_ufrag = ufrag.to_owned();
        ice.version += 1;
    }

    /// Ends the session (the participant leaves) and waits until its leave is recorded.
    pub async fn end(&self) {
        let stop = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|done| *done).await;
    }
}

fn mime(kind: TrackKind, codec: &str) -> String {
    match (kind, codec) {
        (TrackKind::Audio, c) => format!("audio/{c}"),
        (TrackKind::Video, "h264") => "video/H264".into(),
        (TrackKind::Video, c) => format!("video/{}", c.to_ascii_uppercase()),
    }
}

/// Joins the room and the media plane, applies the offer, and starts the session's task.
pub(crate) async fn open(
    sig: &Arc<Signaling>,
    kind: Kind,
    claims: Claims,
    options: JoinOptions,
    offer: &Offer,
    sdp: &str,
    preferred: Option<String>,
) -> Result<(Arc<Resource>, String), Problem> {
    let room = claims.video.room.clone();
    let sid = ids::participant_sid();
    let mut info = participant_info(&sid, &claims);
    match kind {
        // Ingress is LiveKit's kind for media that enters through WHIP or RTMP.
        Kind::Publish => info.kind = proto::participant_info::Kind::Ingress as i32,
        // Viewers are not shown to the room (they are recorded like anyone else).
        Kind::Play => {
            if let Some(permission) = info.permission.as_mut() {
                permission.hidden = true;
            }
        }
    }
    let (room_tx, room_rx) = crate::outbox::channel(sig.limits.signal_queue_bytes);
    sig.rooms
        .join(&room, info.clone(), room_tx)
        .map_err(room_refusal)?;
    let (media, peer_events) = match sig.sfu.join(&room, &sid, &claims.sub, options).await {
        Ok(joined) => joined,
        Err(e) => {
            sig.rooms.leave(&room, &sid);
            return Err(negotiation_problem(e));
        }
    };
    media_joined(sig, &room, &info, &claims, &media);
    let answer = match kind {
        Kind::Publish => {
            announce_tracks(sig, &room, &sid, &claims.sub, &media, offer);
            media.publisher_offer(sdp.to_owned()).await
        }
        Kind::Play => media.viewer_offer(sdp.to_owned()).await,
    };
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            sig.rooms.leave(&room, &sid);
            let stats = media.leave().await;
            let _ = sig.events.send(SignalEvent::ParticipantLeft {
                room_id: room.clone(),
                sid: sid.clone(),
                identity: claims.sub.clone(),
                reason: LeaveReason::JoinFailure,
                stats,
                at: SystemTime::now(),
            });
            return Err(negotiation_problem(e));
        }
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let (ended_tx, ended_rx) = watch::channel(false);
    let resource = Arc::new(Resource {
        id: ids::new_sid(match kind {
            Kind::Publish => "WHIP_",
            Kind::Play => "WHEP_",
        }),
        kind,
        room: room.clone(),
        identity: claims.sub.clone(),
        media: media.clone(),
        ice: Mutex::new(IceState {
            remote_ufrag: offer.ice_ufrag.clone().unwrap_or_default(),
            version: 1,
        }),
        stop: Mutex::new(Some(stop_tx)),
        ended: ended_rx,
    });
    let task = Task {
        sig: Arc::clone(sig),
        resource: Arc::clone(&resource),
        sid,
        preferred,
        viewing: None,
    };
    info!(%room, identity = %claims.sub, id = %resource.id, "{} session started", kind.name());
    tokio::spawn(task.run(peer_events, room_rx, stop_rx, ended_tx));
    Ok((resource, answer))
}

/// A WHIP offer announces its tracks itself: each sending m-line becomes a track of the
/// room (the LiveKit protocol's AddTrackRequest, done by the server).
fn announce_tracks(
    sig: &Signaling,
    room: &str,
    sid: &str,
    identity: &str,
    media: &ParticipantHandle,
    offer: &Offer,
) {
    for m in offer.media.iter().filter(|m| m.sends()) {
        let Some(codec) = m.supported_codec() else {
            continue;
        };
        let track_sid = ids::track_sid();
        // Announced by mid: WHIP clients' msid lines vary (or are missing), mids never do.
        let cid = m.mid.clone();
        let (track_type, source, name) = match m.kind {
            TrackKind::Audio => (
                proto::TrackType::Audio,
                proto::TrackSource::Microphone,
                "whip-audio",
            ),
            TrackKind::Video => (
                proto::TrackType::Video,
                proto::TrackSource::Camera,
                "whip-video",
            ),
        };
        let _ = media.expect_track(ExpectedTrack {
            cid: cid.clone(),
            codec_cids: Vec::new(),
            sid: track_sid.clone(),
            kind: m.kind,
            codec: Some(codec.to_owned()),
            screen: false,
            layers: Vec::new(),
        });
        let mime_type = mime(m.kind, codec);
        let track = proto::TrackInfo {
            sid: track_sid.clone(),
            r#type: track_type as i32,
            name: name.into(),
            source: source as i32,
            mime_type: mime_type.clone(),
            codecs: vec![proto::SimulcastCodecInfo {
                mime_type,
                cid,
                ..Default::default()
            }],
            ..Default::default()
        };
        sig.rooms.update(room, sid, move |info| {
            info.tracks.push(track);
            info.is_publisher = true;
            info.state = proto::participant_info::State::Active as i32;
        });
        let _ = sig.events.send(SignalEvent::TrackPublished {
            room_id: room.to_owned(),
            participant_sid: sid.to_owned(),
            identity: identity.to_owned(),
            track_sid,
            kind: match m.kind {
                TrackKind::Audio => "audio",
                TrackKind::Video => "video",
            },
            source: source.as_str_name().to_owned(),
            at: SystemTime::now(),
        });
    }
}

struct Task {
    sig: Arc<Signaling>,
    resource: Arc<Resource>,
    sid: String,
    /// WHEP `?participant=`: the identity to watch instead of the room's main publisher.
    preferred: Option<String>,
    /// The publisher sid the viewer receives now.
    viewing: Option<String>,
}

impl Task {
    /// A viewer follows the room's main publisher as people come, go and publish.
    fn follow_main_publisher(&mut self) {
        let main = self
            .sig
            .rooms
            .main_publisher(&self.resource.room, self.preferred.as_deref())
            .filter(|s| *s != self.sid);
        if main != self.viewing {
            debug!(viewer = %self.sid, ?main, "viewer switches publisher");
            self.viewing = main.clone();
            let _ = self.resource.media.view(main);
        }
    }

    async fn run(
        mut self,
        mut peer_events: mpsc::UnboundedReceiver<PeerEvent>,
        mut room_rx: crate::outbox::Inbox,
        mut stop: oneshot::Receiver<()>,
        ended: watch::Sender<bool>,
    ) {
        let _live = self.sig.track_session();
        if self.resource.kind == Kind::Play {
            self.follow_main_publisher();
        }
        let mut shutdown = self.sig.shutdown.subscribe();
        let reason = loop {
            tokio::select! {
                _ = &mut stop => break LeaveReason::ClientInitiated,
                _ = shutdown.changed() => break LeaveReason::ServerShutdown,
                Some(msg) = room_rx.recv() => match msg {
                    SessionMsg::Update(_) if self.resource.kind == Kind::Play => {
                        self.follow_main_publisher();
                    }
                    SessionMsg::Leave(reason) => break reason,
                    _ => {}
                },
                Some(event) = peer_events.recv() => match event {
                    PeerEvent::TrackUnpublished { sid } => self.track_unpublished(&sid),
                    PeerEvent::MediaDisconnected { reason, .. } => {
                        info!(id = %self.resource.id, "media connection lost: {reason}");
                        break LeaveReason::MediaFailure;
                    }
                    // No client holds a WHIP/WHEP session open but its media: without it
                    // the session is a ghost in its room, so it ends (a later DELETE: 404).
                    PeerEvent::MediaTimedOut { cause } => {
                        info!(id = %self.resource.id, "{}", cause.describe());
                        break LeaveReason::from(cause);
                    }
                    _ => {}
                },
                else => break LeaveReason::SignalClosed,
            }
        };
        let room = self.resource.room.clone();
        self.sig.rooms.leave(&room, &self.sid);
        self.sig.whip.remove(&self.resource.id);
        let stats = self.resource.media.leave().await;
        let _ = self.sig.events.send(SignalEvent::ParticipantLeft {
            room_id: room.clone(),
            sid: self.sid.clone(),
            identity: self.resource.identity.clone(),
            reason,
            stats,
            at: SystemTime::now(),
        });
        if matches!(
            reason,
            LeaveReason::MediaFailure
                | LeaveReason::MediaConnectTimeout
                | LeaveReason::MediaDepartureTimeout
        ) {
            warn!(%room, id = %self.resource.id, reason = reason.as_str(), "{} session ended: no media connection", self.resource.kind.name());
        } else {
            info!(%room, id = %self.resource.id, reason = reason.as_str(), "{} session ended", self.resource.kind.name());
        }
        let _ = ended.send(true);
    }

    fn track_unpublished(&self, track_sid: &str) {
        let sid = track_sid.to_owned();
        self.sig
            .rooms
            .update(&self.resource.room, &self.sid, move |info| {
                info.tracks.retain(|t| t.sid != sid);
            });
        let _ = self.sig.events.send(SignalEvent::TrackUnpublished {
            room_id: self.resource.room.clone(),
            participant_sid: self.sid.clone(),
            identity: self.resource.identity.clone(),
            track_sid: track_sid.to_owned(),
            at: SystemTime::now(),
        });
    }
}
