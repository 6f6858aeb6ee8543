//! What the media loop knows about each participant — its two PeerConnections, the tracks
//! it receives (publishing is in `publish.rs`) — and how it reacts to str0m.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use livekit_protocol as proto;
use prost::Message as _;
use str0m::change::{SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::media::MediaKind;
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpPacket, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::driver::Loop;
use crate::media::read_stamp;
use crate::publish::Source;
use crate::tcp::{TcpLink, Transmitted};
use crate::{ClientError, DriverStats, ParticipantEvent, TrackKind, TrackStats, Transport};

/// A client peer in RTP mode (we write and read packets, never frames) with the codecs the
/// synthetic media uses. Full ICE: the server is ICE-lite, so we are the controlling agent.
/// DTLS set up once per process (`switchboard-dtls`), so a peer costs microseconds to make.
pub(crate) fn new_rtc(now: Instant) -> Rtc {
    str0m::RtcConfig::new()
        .set_crypto_provider(switchboard_dtls::provider())
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .set_stats_interval(None)
        .build(now)
}

/// Which of LiveKit's two v0 PeerConnections a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Publisher,
    Subscriber,
}

pub(crate) struct PeerSlot {
    pub part: usize,
    pub role: Role,
    /// Distinguishes this occupant of the slot from earlier ones in stale timers.
    pub gen: u64,
    pub rtc: Rtc,
    pub socket: PeerSocket,
    /// The local candidate's address: where str0m is told datagrams arrive.
    pub local: SocketAddr,
    /// The deadline str0m last asked for (the one armed in the heap).
    pub timeout: Instant,
    pub connected: bool,
    /// Incoming datagrams wait here first when the peer's downlink is capped.
    pub bottleneck: Option<crate::link::Bottleneck>,
}

/// How a peer reaches the server: the one transport its single local candidate is on.
pub(crate) enum PeerSocket {
    Udp {
        /// Reads (readiness comes from the runtime).
        socket: Arc<UdpSocket>,
        /// Writes: the same socket, non-blocking, outside the runtime. tokio's `try_send_to`
        /// refuses (`WouldBlock`) until the reactor has seen the socket writable, which it
        /// has not in the loop turn that created the socket; the subscriber PC sends its
        /// first ICE check in exactly that turn, and losing it cost a 250 ms STUN
        /// retransmit per join.
        sender: std::net::UdpSocket,
    },
    /// ICE-TCP (`tcp.rs`): connected at the first transmit.
    Tcp(TcpLink),
}

/// Receive buffer each client UDP socket asks for.
const PEER_RECV_BUFFER: usize = 1024 * 1024;

impl PeerSocket {
    /// A peer's socket for `transport` at `bind`, the local candidate's address, and the
    /// candidate: a UDP socket's, or an active TCP candidate whose connection opens at the
    /// peer's first transmit.
    pub fn open(
        transport: Transport,
        bind: IpAddr,
    ) -> Result<(PeerSocket, SocketAddr, Candidate), ClientError> {
        if transport == Transport::Tcp {
            let (local, candidate) = crate::tcp::tcp_candidate(bind)?;
            return Ok((PeerSocket::Tcp(TcpLink::new(bind)), local, candidate));
        }
        let std_socket = std::net::UdpSocket::bind(SocketAddr::new(bind, 0))?;
        std_socket.set_nonblocking(true)?;
        // A thread serves many peers; while it works on one (a renegotiation in a big room),
        // the others' datagrams wait in their sockets. The default buffer (~90 datagrams)
        // overflowed in S4 and lost DTLS and SCTP flights (retransmitted a second later).
        // Best effort: the kernel caps it at net.core.rmem_max.
        let _ = socket2::SockRef::from(&std_socket).set_recv_buffer_size(PEER_RECV_BUFFER);
        let local = std_socket.local_addr()?;
        // Sends go through a duplicate of the descriptor: see `PeerSocket::Udp`.
        let sender = std_socket.try_clone()?;
        let socket = Arc::new(UdpSocket::from_std(std_socket)?);
        let candidate = Candidate::host(local, "udp")
            .map_err(|e| ClientError::Rtc(format!("host candidate {local}: {e}")))?;
        Ok((PeerSocket::Udp { socket, sender }, local, candidate))
    }
}

impl PeerSlot {
    /// Feeds one received datagram, which came over `proto`, to str0m.
    pub fn receive(&mut self, now: Instant, proto: Protocol, source: SocketAddr, datagram: &[u8]) {
        let Ok(contents) = datagram.try_into() else {
            return; // Not STUN, DTLS, RTP or RTCP.
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination: self.local,
                contents,
            },
        );
        if let Err(e) = self.rtc.handle_input(input) {
            tracing::debug!("dropped a datagram: {e}");
        }
    }

    /// Sends one datagram now over `proto`. UDP is lossy: a full socket buffer costs this
    /// datagram only, and the outcome is always `Done`. TCP may connect, queue, drop or
    /// fail (`tcp.rs`).
    pub fn transmit(
        &mut self,
        proto: Protocol,
        contents: &[u8],
        destination: SocketAddr,
    ) -> Transmitted {
        match (&mut self.socket, proto) {
            (PeerSocket::Udp { sender, .. }, Protocol::Udp) => {
                if let Err(e) = sender.send_to(contents, destination) {
                    tracing::debug!("dropped an outgoing datagram to {destination}: {e}");
                }
                Transmitted::Done
            }
            (PeerSocket::Tcp(link), Protocol::Tcp) => link.send(contents, destination),
            // str0m pairs only our own candidate's protocol: nothing to send this on.
            _ => Transmitted::Done,
        }
    }
}

/// Reception of one incoming stream (one SSRC of the subscriber PC).
pub(crate) struct TrackRx {
    track_sid: String,
    video: bool,
    packets: u64,
    bytes: u64,
    first_seq: u64,
    max_seq: u64,
    first_packet: Option<Duration>,
    /// Video: the width of the last keyframe, the layer being received.
    width: u16,
    /// Video: frames completed per width (at most `WIDTHS_KEPT`).
    frames_by_width: Vec<(u16, u64)>,
}

/// Distinct widths counted per stream: a simulcast track has three layers.
const WIDTHS_KEPT: usize = 8;

impl TrackRx {
    /// Counts a video packet towards the layer being received.
    fn count_layer(&mut self, payload: &[u8], marker: bool) {
        if let Some(width) = crate::media::keyframe_width(payload) {
            self.width = width;
        }
        if !marker || self.width == 0 {
            return;
        }
        let width = self.width;
        if let Some((_, frames)) = self.frames_by_width.iter_mut().find(|(w, _)| *w == width) {
            *frames += 1;
        } else if self.frames_by_width.len() < WIDTHS_KEPT {
            self.frames_by_width.push((width, 1));
        }
    }

    fn lost(&self) -> u64 {
        if self.packets == 0 {
            return 0;
        }
        (self.max_seq - self.first_seq + 1).saturating_sub(self.packets)
    }
}

pub(crate) struct Part {
    pub(crate) gen: u64,
    pub(crate) events: mpsc::UnboundedSender<ParticipantEvent>,
    pub(crate) started: Instant,
    pub(crate) bind: IpAddr,
    pub(crate) publisher: Option<usize>,
    pub(crate) subscriber: Option<usize>,
    pub(crate) sources: Vec<Source>,
    pub(crate) ready: Option<oneshot::Sender<Result<(), ClientError>>>,
    pub(crate) wanted_channels: usize,
    pub(crate) labels: HashMap<ChannelId, String>,
    pub(crate) pending: Option<SdpPendingOffer>,
    pub(crate) mid_to_track: HashMap<String, String>,
    pub(crate) received: Vec<TrackRx>,
    pub(crate) by_ssrc: HashMap<Ssrc, usize>,
    pub(crate) packets_sent: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) connected: Option<Duration>,
    pub(crate) first_media: Option<Duration>,
    pub(crate) subscriber_steps: crate::SubscriberTimings,
    pub(crate) closed_reported: bool,
    /// The subscriber PC's simulated downlink.
    pub(crate) downlink: Option<crate::LinkCap>,
    /// What both PCs carry their media over.
    pub(crate) transport: Transport,
}

impl Part {
    pub fn new(
        gen: u64,
        events: mpsc::UnboundedSender<ParticipantEvent>,
        started: Instant,
        bind: IpAddr,
    ) -> Self {
        Self {
            gen,
            events,
            started,
            bind,
            publisher: None,
            subscriber: None,
            sources: Vec::new(),
            ready: None,
            wanted_channels: 0,
            labels: HashMap::new(),
            pending: None,
            mid_to_track: HashMap::new(),
            received: Vec::new(),
            by_ssrc: HashMap::new(),
            packets_sent: 0,
            bytes_sent: 0,
            connected: None,
            first_media: None,
            subscriber_steps: crate::SubscriberTimings::default(),
            closed_reported: false,
            downlink: None,
            transport: Transport::Udp,
        }
    }

    pub(crate) fn emit(&self, event: ParticipantEvent) {
        // Nobody listening is fine: the load tester drops the receivers it does not need.
        let _ = self.events.send(event);
    }
}

pub(crate) fn rtc_error(what: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Rtc(format!("{what}: {e}"))
}

impl Loop {
    pub(crate) fn part_index(&self, id: u64) -> Result<usize, ClientError> {
        self.by_id.get(&id).copied().ok_or(ClientError::DriverGone)
    }

    /// Answers a server offer on the subscriber PC, creating the PC at the first one.
    pub fn subscriber_offer(
        &mut self,
        id: u64,
        sdp: &str,
        mid_to_track: HashMap<String, String>,
    ) -> Result<String, ClientError> {
        let index = self.part_index(id)?;
        let (existing, bind, downlink, transport) = match self.parts.get(index) {
            Some(Some(part)) => (
                part.subscriber,
                part.bind,
                part.downlink.clone(),
                part.transport,
            ),
            _ => return Err(ClientError::DriverGone),
        };
        crate::tcp::check_offers_tcp(transport, sdp)?;
        let peer = match existing {
            Some(peer) => peer,
            None => {
                let peer = self.new_peer(index, Role::Subscriber, bind, transport)?;
                if let Some(Some(slot)) = self.peers.get_mut(peer) {
                    slot.bottleneck = downlink.map(crate::link::Bottleneck::new);
                }
                peer
            }
        };
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| rtc_error("bad offer", e))?;
        let slot = self
            .peers
            .get_mut(peer)
            .and_then(Option::as_mut)
            .ok_or(ClientError::DriverGone)?;
        let answer = slot
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| rtc_error("offer refused", e))?;
        if let Some(Some(part)) = self.parts.get_mut(index) {
            part.subscriber = Some(peer);
            part.mid_to_track.extend(mid_to_track);
            let at = part.started.elapsed();
            part.subscriber_steps.offer.get_or_insert(at);
        }
        self.drive(peer);
        Ok(answer.to_sdp_string())
    }

    pub fn stats_of(&self, index: usize) -> Option<DriverStats> {
        let part = self.parts.get(index)?.as_ref()?;
        Some(DriverStats {
            tracks: part
                .received
                .iter()
                .map(|rx| TrackStats {
                    track_sid: rx.track_sid.clone(),
                    kind: if rx.video {
                        TrackKind::Video
                    } else {
                        TrackKind::Audio
                    },
                    packets: rx.packets,
                    bytes: rx.bytes,
                    lost: rx.lost(),
                    first_packet: rx.first_packet,
                    frames_by_width: rx
                        .frames_by_width
                        .iter()
                        .map(|&(w, n)| (u32::from(w), n))
                        .collect(),
                })
                .collect(),
            packets_sent: part.packets_sent,
            bytes_sent: part.bytes_sent,
            connected: part.connected,
            first_media: part.first_media,
            subscriber: part.subscriber_steps,
        })
    }

    pub fn peer_closed(&mut self, part: usize, role: Role, reason: &str) {
        if let Some(Some(p)) = self.parts.get_mut(part) {
            if let Some(ready) = p.ready.take() {
                let _ = ready.send(Err(ClientError::Rtc(reason.to_owned())));
            }
            if !p.closed_reported {
                p.closed_reported = true;
                p.emit(ParticipantEvent::MediaDisconnected {
                    publisher: role == Role::Publisher,
                    reason: reason.to_owned(),
                });
            }
        }
        // Park the peer: its slot stays until the participant is removed.
        let index = match role {
            Role::Publisher => self.parts.get(part).and_then(|p| p.as_ref()?.publisher),
            Role::Subscriber => self.parts.get(part).and_then(|p| p.as_ref()?.subscriber),
        };
        if let Some(Some(peer)) = index.and_then(|i| self.peers.get_mut(i)) {
            peer.timeout = Instant::now() + Duration::from_secs(3600 * 24);
        }
    }

    pub fn on_event(&mut self, part_index: usize, role: Role, peer: usize, event: Event) {
        match event {
            Event::RtpPacket(packet) if role == Role::Subscriber => {
                self.on_rtp(part_index, peer, packet)
            }
            Event::IceConnectionStateChange(state) => {
                let up = matches!(
                    state,
                    IceConnectionState::Connected | IceConnectionState::Completed
                );
                if let (true, Role::Subscriber, Some(Some(part))) =
                    (up, role, self.parts.get_mut(part_index))
                {
                    let at = part.started.elapsed();
                    part.subscriber_steps.ice.get_or_insert(at);
                }
            }
            Event::Connected => {
                if let Some(Some(slot)) = self.peers.get_mut(peer) {
                    slot.connected = true;
                }
                if let (Role::Subscriber, Some(Some(part))) = (role, self.parts.get_mut(part_index))
                {
                    let at = part.started.elapsed();
                    part.subscriber_steps.connected.get_or_insert(at);
                }
                if role == Role::Publisher {
                    self.start_sources(part_index);
                    self.check_ready(part_index);
                }
            }
            Event::ChannelOpen(id, label) => {
                if let Some(Some(part)) = self.parts.get_mut(part_index) {
                    part.labels.insert(id, label);
                }
                self.check_ready(part_index);
            }
            Event::ChannelData(data) => {
                if let Some(Some(part)) = self.parts.get(part_index) {
                    let label = part.labels.get(&data.id).cloned().unwrap_or_default();
                    match proto::DataPacket::decode(data.data.as_slice()) {
                        Ok(packet) => part.emit(ParticipantEvent::Data {
                            label,
                            packet: Box::new(packet),
                        }),
                        Err(e) => tracing::debug!("undecodable data packet: {e}"),
                    }
                }
            }
            Event::KeyframeRequest(request) if role == Role::Publisher => {
                if let Some(Some(part)) = self.parts.get_mut(part_index) {
                    for source in &mut part.sources {
                        source.keyframe_requested(request.mid, request.rid);
                    }
                }
            }
            _ => {}
        }
    }

    pub(crate) fn check_ready(&mut self, index: usize) {
        let Some(Some(part)) = self.parts.get_mut(index) else {
            return;
        };
        let connected = part
            .publisher
            .and_then(|p| self.peers.get(p))
            .and_then(Option::as_ref)
            .is_some_and(|p| p.connected);
        if connected && part.labels.len() >= part.wanted_channels {
            if let Some(ready) = part.ready.take() {
                part.connected = Some(part.started.elapsed());
                let _ = ready.send(Ok(()));
            }
        }
    }

    /// Counts an RTP packet on the subscriber PC: per stream, sequence gaps, first packet,
    /// and the latency from its stamp.
    fn on_rtp(&mut self, index: usize, peer: usize, packet: RtpPacket) {
        let arrival = packet.timestamp;
        let Some(Some(part)) = self.parts.get_mut(index) else {
            return;
        };
        let ssrc = packet.header.ssrc;
        let rx_index = match part.by_ssrc.get(&ssrc) {
            Some(&i) => i,
            None => {
                let Some(Some(slot)) = self.peers.get_mut(peer) else {
                    return;
                };
                let Some(mid) = slot.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid()) else {
                    return;
                };
                let video = slot
                    .rtc
                    .media(mid)
                    .is_some_and(|m| m.kind() == MediaKind::Video);
                let track_sid = part
                    .mid_to_track
                    .get(&mid.to_string())
                    .cloned()
                    .unwrap_or_default();
                part.received.push(TrackRx {
                    track_sid,
                    video,
                    packets: 0,
                    bytes: 0,
                    first_seq: *packet.seq_no,
                    max_seq: *packet.seq_no,
                    first_packet: None,
                    width: 0,
                    frames_by_width: Vec::new(),
                });
                part.by_ssrc.insert(ssrc, part.received.len() - 1);
                part.received.len() - 1
            }
        };
        let rx = &mut part.received[rx_index];
        let seq = *packet.seq_no;
        rx.packets += 1;
        rx.bytes += packet.payload.len() as u64;
        rx.first_seq = rx.first_seq.min(seq);
        rx.max_seq = rx.max_seq.max(seq);
        let video = rx.video;
        if video {
            rx.count_layer(&packet.payload, packet.header.marker);
        }
        if rx.first_packet.is_none() {
            let after = arrival.saturating_duration_since(part.started);
            rx.first_packet = Some(after);
            part.first_media.get_or_insert(after);
            let track_sid = rx.track_sid.clone();
            part.emit(ParticipantEvent::FirstPacket { track_sid, after });
        }
        self.counters
            .packets_received
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_received
            .fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
        if let Some(stamp) = read_stamp(video, &packet.payload) {
            self.record_latency(arrival, stamp);
        }
    }
}
