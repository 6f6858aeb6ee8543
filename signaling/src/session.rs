//! One participant's signaling session: a WebSocket speaking LiveKit's v0 protocol, from the
//! JoinResponse to the leave.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use livekit_protocol as proto;
use prost::Message as _;
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;
use switchboard_sfu::{ParticipantHandle, PeerEvent, PeerRole};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::ending::{protocol_error, Ending, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_UNSUPPORTED};
use crate::events::{LeaveReason, SignalEvent};
use crate::frame::SharedFrame;
use crate::limits::{Bucket, SIGNAL_BURST_SECS};
use crate::outbox::{self, Inbox};
use crate::resume::{Resume, ResumeSlot, Step};
use crate::rooms::SessionMsg;
use crate::token::Claims;
use crate::websocket::{self, CloseFrame, Message, SignalSocket};
use crate::{ids, publish, requests, subscribe, Signaling};

pub(crate) struct Session {
    pub sig: Arc<Signaling>,
    pub room: String,
    pub sid: String,
    pub identity: String,
    pub claims: Claims,
    pub media: ParticipantHandle,
    pub(crate) next_offer_id: u32,
    pub(crate) last_heard: Instant,
    pub(crate) verified_at: Instant,
    /// A media packet of ours reached the server (for the join latency, once).
    pub(crate) published_media: bool,
    /// Signaling requests from the client (`signal_requests_per_second`).
    requests: Bucket,
    /// DataPackets and their bytes (`data_packets_per_second`, `data_bytes_per_second`).
    pub(crate) data_packets: Bucket,
    pub(crate) data_bytes: Bucket,
    /// Where a reconnect's new socket arrives (`resume.rs`).
    pub(crate) resume: Arc<ResumeSlot>,
    /// Responses for the client held while it is away.
    pub(crate) held: VecDeque<Resp>,
    /// When the client is next sent a fresh join token.
    pub(crate) next_token_refresh: tokio::time::Instant,
    /// The media plane lost a peer: the session ends as a media failure at this instant
    /// unless the client says it is leaving first (`MEDIA_CLOSE_GRACE`).
    pub(crate) media_lost_until: Option<tokio::time::Instant>,
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The participant's own info as LiveKit clients expect it in the JoinResponse.
// `recorder` is deprecated upstream but still part of the permission clients read.
#[allow(deprecated)]
pub(crate) fn participant_info(sid: &str, claims: &Claims) -> proto::ParticipantInfo {
    let video = &claims.video;
    let now = now_ms();
    proto::ParticipantInfo {
        sid: sid.to_owned(),
        identity: claims.sub.clone(),
        name: claims.name.clone().unwrap_or_default(),
        metadata: claims.metadata.clone().unwrap_or_default(),
        attributes: claims
            .attributes
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        state: proto::participant_info::State::Joined as i32,
        kind: if claims.is_agent() {
            proto::participant_info::Kind::Agent as i32
        } else {
            proto::participant_info::Kind::Standard as i32
        },
        joined_at: now / 1000,
        joined_at_ms: now,
        version: 1,
        permission: Some(proto::ParticipantPermission {
            can_subscribe: video.can_subscribe(),
            can_publish: video.can_publish(),
            can_publish_data: video.can_publish_data(),
            hidden: video.hidden,
            recorder: video.recorder,
            can_update_metadata: video.can_update_own_metadata.unwrap_or(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A participant the media plane took: its handle is kept for admin operations, a host is
/// marked (WHEP viewers watch it), and the join is reported.
pub(crate) fn media_joined(
    sig: &Signaling,
    room: &str,
    info: &proto::ParticipantInfo,
    claims: &Claims,
    media: &ParticipantHandle,
) {
    sig.rooms.attach_media(room, &info.sid, media.clone());
    let attributes = claims.attributes.clone().unwrap_or_default();
    let host = claims.video.room_admin || attributes.get("role").is_some_and(|r| r == "host");
    if host {
        sig.rooms.mark_host(room, &info.sid);
    }
    let _ = sig.events.send(SignalEvent::ParticipantJoined {
        room_id: room.to_owned(),
        sid: info.sid.clone(),
        identity: claims.sub.clone(),
        name: info.name.clone(),
        metadata: info.metadata.clone(),
        attributes,
        host,
        at: SystemTime::now(),
    });
}

/// Encodes and sends one SignalResponse.
async fn send(ws: &mut SignalSocket, message: Resp) -> Result<(), crate::websocket::Error> {
    ws.send(SharedFrame::encode(message).bytes()).await
}

/// Options from the `/rtc` query string.
#[derive(Debug, Clone)]
pub(crate) struct JoinParams {
    pub auto_subscribe: bool,
    pub reconnect: bool,
    /// With `reconnect`: the participant sid to resume, and why the client reconnects.
    pub sid: Option<String>,
    pub reconnect_reason: Option<String>,
    /// When the token was verified: the start of the join latency ops see.
    pub verified_at: Instant,
    /// Signaling v1: one PeerConnection, the client always offering.
    pub single_pc: bool,
    /// The first offer, carried in a v1 join; answered right after the JoinResponse.
    pub offer: Option<proto::SessionDescription>,
}

/// Records one stage of a join in `switchboard_join_latency_seconds`, measured from the
/// token's verification.
pub(crate) fn join_latency(stage: &'static str, verified_at: Instant) {
    metrics::histogram!("switchboard_join_latency_seconds", "stage" => stage)
        .record(verified_at.elapsed().as_secs_f64());
}

/// Runs a joined participant until it leaves. The token was verified before the upgrade.
pub(crate) async fn run(sig: Arc<Signaling>, ws: SignalSocket, claims: Claims, join: JoinParams) {
    // Dropped last, after the leave was reported: shutdown waits for it.
    let _live = sig.track_session();
    let mut ws = ws;
    if join.reconnect {
        let resume = Box::new(Resume {
            ws,
            reason: join.reconnect_reason.clone(),
        });
        let room = &claims.video.room;
        ws = match join.sid.as_deref() {
            Some(sid) => match sig.resumables.offer(sid, room, &claims.sub, resume) {
                // The waiting session has the socket now.
                Ok(()) => return,
                Err(resume) => resume.ws,
            },
            None => resume.ws,
        };
        // Nothing to resume (unknown or ended sid, another room or identity): ask the
        // client to rejoin from scratch, which it does at once.
        crate::resume::not_resumable();
        let leave = proto::LeaveRequest {
            can_reconnect: true,
            reason: proto::DisconnectReason::StateMismatch as i32,
            action: proto::leave_request::Action::Reconnect as i32,
            ..Default::default()
        };
        let _ = send(&mut ws, Resp::Leave(leave)).await;
        ws.close(None).await;
        return;
    }
    let room = claims.video.room.clone();
    let sid = ids::participant_sid();
    let info = participant_info(&sid, &claims);
    ws.set_write_timeout(sig.limits.signal_write_timeout);
    let (room_tx, mut room_rx) = outbox::channel(sig.limits.signal_queue_bytes);
    let joined = match sig.rooms.join(&room, info.clone(), room_tx) {
        Ok(joined) => joined,
        Err(refused) => {
            let frame = CloseFrame {
                code: 1008.into(),
                reason: refused.to_string().into(),
            };
            ws.close(Some(frame)).await;
            return;
        }
    };
    if joined.started {
        let configured = claims
            .room_config
            .as_ref()
            .map(|c| c.agents.as_slice())
            .unwrap_or_default();
        crate::agents::room_started(&sig, &joined.room, configured);
    }
    let options = switchboard_sfu::JoinOptions {
        auto_subscribe: join.auto_subscribe,
        can_subscribe: claims.video.can_subscribe(),
        can_publish: claims.video.can_publish(),
        single_pc: join.single_pc,
        dtls: switchboard_sfu::DtlsPeers::Ecdsa,
    };
    let (media, mut peer_events) = match sig.sfu.join(&room, &sid, &claims.sub, options).await {
        Ok(joined) => joined,
        Err(e) => {
            warn!(%room, %sid, "media plane refused the participant: {e}");
            sig.rooms.leave(&room, &sid);
            let frame = CloseFrame {
                code: 1011.into(),
                reason: "the media server could not take this participant".into(),
            };
            ws.close(Some(frame)).await;
            return;
        }
    };
    media_joined(&sig, &room, &info, &claims, &media);
    let signaling = if join.single_pc { "v1" } else { "v0" };
    info!(%room, %sid, identity = %claims.sub, signaling, "participant joined");
    let resume = sig.resumables.register(&sid, &room, &claims.sub);
    let mut session = Session {
        sig: Arc::clone(&sig),
        room,
        sid,
        identity: claims.sub.clone(),
        claims,
        media,
        next_offer_id: 0,
        last_heard: Instant::now(),
        verified_at: join.verified_at,
        published_media: false,
        requests: {
            let rate = f64::from(sig.limits.signal_requests_per_second);
            Bucket::new(rate, rate * SIGNAL_BURST_SECS)
        },
        data_packets: {
            let rate = f64::from(sig.limits.data_packets_per_second);
            Bucket::new(rate, rate)
        },
        data_bytes: {
            // A burst always fits the largest packet allowed.
            let rate = sig.limits.data_bytes_per_second as f64;
            Bucket::new(rate, rate.max(sig.limits.max_data_packet_bytes as f64))
        },
        resume,
        held: VecDeque::new(),
        next_token_refresh: tokio::time::Instant::now() + sig.limits.token_refresh_interval,
        media_lost_until: None,
    };
    let response = proto::JoinResponse {
        room: Some(joined.room),
        participant: Some(info),
        other_participants: joined.others,
        server_version: sig.server_version.clone(),
        subscriber_primary: false,
        ice_servers: session.ice_servers(),
        ping_interval: sig.ping_interval.as_secs() as i32,
        ping_timeout: sig.ping_timeout.as_secs() as i32,
        server_info: Some(session.server_info()),
        ..Default::default()
    };
    let mut step = match send(&mut ws, Resp::Join(response)).await {
        Err(e) => Step::End(Ending::send_failed(&e)),
        Ok(()) => {
            join_latency("join_response", join.verified_at);
            match join.offer {
                Some(offer) => match session.answer(&mut ws, offer).await {
                    Ok(()) => session.serve(&mut ws, &mut room_rx, &mut peer_events).await,
                    Err(ending) => Step::End(ending),
                },
                None => session.serve(&mut ws, &mut room_rx, &mut peer_events).await,
            }
        }
    };
    // A lost socket may be replaced by the client's reconnect (`resume.rs`), any number of
    // times; the session ends when one is not.
    let ending = loop {
        let resume = match step {
            Step::End(ending) if ending.resumable() => {
                match session.park(&mut room_rx, &mut peer_events, ending).await {
                    Ok(resume) => resume,
                    Err(ending) => break ending,
                }
            }
            Step::End(ending) => break ending,
            Step::Resume(resume) => resume,
        };
        // The old socket, if still open, is closed by dropping it: the client left it.
        ws = resume.ws;
        step = match session.resumed(&mut ws, resume.reason.as_deref()).await {
            Ok(()) => session.serve(&mut ws, &mut room_rx, &mut peer_events).await,
            Err(ending) => Step::End(ending),
        };
    };
    session.finish(&mut ws, ending).await;
}

impl Session {
    /// Serves the client on `ws` until the session ends, or the socket is lost or replaced.
    async fn serve(
        &mut self,
        ws: &mut SignalSocket,
        room_rx: &mut Inbox,
        peer_events: &mut mpsc::UnboundedReceiver<PeerEvent>,
    ) -> Step {
        match self.serve_socket(ws, room_rx, peer_events).await {
            Ok(resume) => Step::Resume(resume),
            Err(ending) => Step::End(ending),
        }
    }

    async fn serve_socket(
        &mut self,
        ws: &mut SignalSocket,
        room_rx: &mut Inbox,
        peer_events: &mut mpsc::UnboundedReceiver<PeerEvent>,
    ) -> Result<Box<Resume>, Ending> {
        let mut shutdown = self.sig.shutdown.subscribe();
        let slot = Arc::clone(&self.resume);
        loop {
            let silence_deadline =
                tokio::time::Instant::from_std(self.last_heard + self.sig.ping_timeout);
            tokio::select! {
                frame = ws.recv() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(e)) if websocket::is_too_big(&e) => {
                            return Err(protocol_error(CLOSE_TOO_BIG, &format!("a message larger than {} bytes was sent; signaling messages are far smaller", websocket::MAX_MESSAGE)));
                        }
                        Some(Err(_)) | None => return Err(self.socket_closed()),
                    };
                    self.last_heard = Instant::now();
                    if let Some(ending) = self.handle_frame(ws, frame).await {
                        return Err(ending);
                    }
                }
                // The client reconnected while this socket still looked open to us.
                resume = slot.wait() => return Ok(resume),
                Some(msg) = room_rx.recv() => match msg {
                    SessionMsg::Update(frame) | SessionMsg::Broadcast(frame) => {
                        if let Err(e) = ws.send(frame.bytes()).await {
                            return Err(Ending::send_failed(&e));
                        }
                    }
                    SessionMsg::Signal(response) => {
                        if let Err(e) = send(ws, *response).await {
                            return Err(Ending::send_failed(&e));
                        }
                    }
                    SessionMsg::Permission(permission) => {
                        publish::apply_permission(&mut self.claims.video, &permission);
                    }
                    SessionMsg::Leave(LeaveReason::SlowClient) => {
                        return Err(Ending { reason: LeaveReason::SlowClient, ..Ending::signal_closed() });
                    }
                    SessionMsg::Leave(reason) => {
                        return Err(Ending { reason, notify: true, close: None });
                    }
                },
                Some(event) = peer_events.recv() => {
                    if let Some(response) = self.peer_event(event)? {
                        self.reply(ws, response).await?;
                    }
                }
                _ = shutdown.changed() => {
                    return Err(Ending { reason: LeaveReason::ServerShutdown, notify: true, close: None });
                }
                _ = tokio::time::sleep_until(self.next_token_refresh) => self.refresh_token(ws).await?,
                _ = sleep_until_some(self.media_lost_until) => {
                    return Err(Ending { reason: LeaveReason::MediaFailure, notify: true, close: None });
                }
                _ = tokio::time::sleep_until(silence_deadline) => {
                    return Err(Ending {
                        reason: LeaveReason::PingTimeout,
                        notify: true,
                        close: Some(CloseFrame { code: 1000.into(), reason: "no ping from the client within ping_timeout".into() }),
                    });
                }
            }
        }
    }

    async fn handle_frame(&mut self, ws: &mut SignalSocket, frame: Message) -> Option<Ending> {
        let bytes = match frame {
            Message::Binary(_) if !self.requests.take(1.0, Instant::now()) => {
                let rate = self.sig.limits.signal_requests_per_second;
                return Some(Ending {
                    reason: LeaveReason::SignalRateLimited,
                    ..protocol_error(
                        CLOSE_POLICY,
                        &format!("more than {rate} signaling requests per second; slow down"),
                    )
                });
            }
            Message::Binary(bytes) => bytes,
            Message::Close(_) => return Some(self.socket_closed()),
            // Raw frames are only ever sent; tungstenite reads whole messages.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return None,
            Message::Text(_) => {
                return Some(protocol_error(
                    CLOSE_UNSUPPORTED,
                    "text frames are not supported: send binary protobuf SignalRequest frames",
                ))
            }
        };
        let request = match proto::SignalRequest::decode(bytes.as_ref()) {
            Ok(request) => request,
            Err(e) => {
                return Some(protocol_error(
                    CLOSE_UNSUPPORTED,
                    &format!("malformed SignalRequest frame ({} bytes): {e}", bytes.len()),
                ))
            }
        };
        let message = request.message?;
        self.handle_request(ws, message).await.err()
    }

    async fn handle_request(&mut self, ws: &mut SignalSocket, message: Req) -> Result<(), Ending> {
        match message {
            Req::Offer(offer) => self.answer(ws, offer).await?,
            Req::Answer(answer) => {
                if let Err(e) = self.media.subscriber_answer(answer.sdp).await {
                    return Err(protocol_error(
                        CLOSE_UNSUPPORTED,
                        &format!("subscriber answer refused: {e}"),
                    ));
                }
            }
            Req::Trickle(trickle) => self.trickle(&trickle),
            Req::AddTrack(request) => {
                let response = publish::add_track(self, request);
                self.reply(ws, response).await?;
            }
            Req::Mute(mute) => publish::mute(self, &mute),
            Req::Subscription(update) => subscribe::update_subscription(self, update),
            Req::TrackSetting(update) => subscribe::update_track_settings(self, update),
            Req::Leave(leave) => {
                debug!(sid = %self.sid, ?leave, "leave requested");
                return Err(Ending {
                    reason: LeaveReason::ClientInitiated,
                    notify: false,
                    close: None,
                });
            }
            Req::Ping(timestamp) => self.reply(ws, Resp::Pong(timestamp)).await?,
            Req::PingReq(ping) => {
                let pong = proto::Pong {
                    last_ping_timestamp: ping.timestamp,
                    timestamp: now_ms(),
                };
                self.reply(ws, Resp::PongResp(pong)).await?;
            }
            Req::SyncState(sync) => self.sync_state(sync),
            Req::UpdateMetadata(update) => {
                if let Some(refusal) = publish::update_own_metadata(self, update) {
                    self.reply(ws, refusal).await?;
                }
            }
            // Beyond publishing and subscribing (`requests.rs`).
            other => {
                if let Some(answer) = requests::handle(self, other)? {
                    self.reply(ws, answer).await?;
                }
            }
        }
        Ok(())
    }

    /// The client's socket closed. After its media connection closed too, the client has
    /// left (it cannot resume without a PeerConnection); otherwise it may come back.
    fn socket_closed(&self) -> Ending {
        if self.media_lost_until.is_some() {
            Ending {
                reason: LeaveReason::ClientInitiated,
                ..Ending::signal_closed()
            }
        } else {
            Ending::signal_closed()
        }
    }

    /// Answers the client's offer (on its publisher PC, or its one PC in v1).
    async fn answer(
        &mut self,
        ws: &mut SignalSocket,
        offer: proto::SessionDescription,
    ) -> Result<(), Ending> {
        match self.media.offer(offer.sdp).await {
            Ok(answer) => {
                let answer = proto::SessionDescription {
                    r#type: "answer".into(),
                    sdp: answer.sdp,
                    id: offer.id,
                    mid_to_track_id: answer.mid_to_track.into_iter().collect(),
                };
                self.reply(ws, Resp::Answer(answer)).await
            }
            Err(e) => Err(protocol_error(
                CLOSE_UNSUPPORTED,
                &format!("publisher offer refused: {e}"),
            )),
        }
    }

    pub(crate) async fn reply(&self, ws: &mut SignalSocket, message: Resp) -> Result<(), Ending> {
        send(ws, message).await.map_err(|e| Ending::send_failed(&e))
    }

    fn trickle(&self, trickle: &proto::TrickleRequest) {
        match trickle_candidate(trickle) {
            Ok(Some((role, candidate))) => {
                let _ = self.media.remote_candidate(role, candidate);
            }
            Ok(None) => {}
            Err(e) => debug!(sid = %self.sid, "ignored an unreadable trickle candidate: {e}"),
        }
    }

    /// The STUN/TURN servers this participant is told about, with credentials of its own.
    pub(crate) fn ice_servers(&self) -> Vec<proto::IceServer> {
        let now = SystemTime::now();
        self.sig
            .ice_servers
            .iter()
            .map(|server| server.for_participant(&self.identity, now))
            .map(|server| proto::IceServer {
                urls: vec![server.url.clone()],
                username: server.username.clone().unwrap_or_default(),
                credential: server.credential.clone().unwrap_or_default(),
            })
            .collect()
    }

    pub(crate) fn server_info(&self) -> proto::ServerInfo {
        proto::ServerInfo {
            edition: proto::server_info::Edition::Standard as i32,
            version: self.sig.server_version.clone(),
            protocol: 16,
            node_id: self.sig.node_id.clone(),
            ..Default::default()
        }
    }

    /// Leaves the room and the media plane, records it, and closes the socket.
    async fn finish(self, ws: &mut SignalSocket, ending: Ending) {
        // From here a reconnect naming this sid rejoins from scratch.
        self.sig.resumables.unregister(&self.sid);
        self.sig.rooms.leave(&self.room, &self.sid);
        let stats = self.media.leave().await;
        if ending.notify {
            let reconnect = ending.reason.asks_reconnect();
            let leave = proto::LeaveRequest {
                can_reconnect: reconnect,
                reason: ending.reason.to_proto() as i32,
                action: if reconnect {
                    proto::leave_request::Action::Reconnect as i32
                } else {
                    proto::leave_request::Action::Disconnect as i32
                },
                ..Default::default()
            };
            let _ = send(ws, Resp::Leave(leave)).await;
        }
        // After a write that timed out the socket is mid-frame: a close frame would be
        // garbage, and would wait on the same full buffer. Dropping it closes the connection.
        if ending.reason != LeaveReason::SlowClient {
            ws.close(ending.close).await;
        }
        // An evicted duplicate was already removed from the room by its replacement (so
        // `leave` found nothing), but it still left and is recorded as such.
        let _ = self.sig.events.send(SignalEvent::ParticipantLeft {
            room_id: self.room.clone(),
            sid: self.sid.clone(),
            identity: self.identity.clone(),
            reason: ending.reason,
            stats,
            at: SystemTime::now(),
        });
        info!(room = %self.room, sid = %self.sid, reason = ending.reason.as_str(), "participant left");
    }
}

/// The peer and `candidate:…` line a TrickleRequest names; `None` for the empty candidate
/// that marks the end of gathering.
pub(crate) fn trickle_candidate(
    trickle: &proto::TrickleRequest,
) -> Result<Option<(PeerRole, String)>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct CandidateInit {
        candidate: String,
    }
    let role = if trickle.target == proto::SignalTarget::Subscriber as i32 {
        PeerRole::Subscriber
    } else {
        PeerRole::Publisher
    };
    let init = serde_json::from_str::<CandidateInit>(&trickle.candidate_init)?;
    Ok((!init.candidate.is_empty()).then_some((role, init.candidate)))
}
