//! Switchboard's media plane: WebRTC peers on str0m in RTP mode, grouped into rooms and
//! sharded across media workers.
//!
//! Each worker is one thread that owns its UDP socket and every room placed on it, so
//! forwarding a packet from a publisher to its subscribers takes no lock and crosses no
//! channel. The crate knows nothing of HTTP, tokens or SQL: the signaling layer drives it
//! through [`ParticipantHandle`] and listens to [`PeerEvent`]s.

mod allocator;
mod api;
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;
mod bwe;
mod codec;
mod commands;
mod congestion;
mod data_budget;
mod down_track;
mod dtls_openssl;
mod dynacast;
mod feedback_in;
mod forward;
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzzing;
mod ice_tcp;
mod ids;
mod layer_meter;
mod layer_selection;
mod liveness;
mod media;
mod metrics;
mod participant;
mod permissions;
mod published_track;
mod quality;
mod red;
mod remb;
mod rewrite;
mod room_news;
mod rtc_config;
mod rtp_out;
mod sdp_guard;
mod sdp_order;
#[cfg(target_os = "linux")]
mod sendmmsg;
mod single_pc;
mod sink;
mod speakers;
mod subscriptions;
mod svc;
mod tap;
mod tap_forward;
mod timers;
mod twcc_report;
mod viewer;
mod vp8_ids;
mod worker;

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use api::Command;
pub use api::{
    ConnectionQuality, DtlsPeers, ExpectedTrack, JoinOptions, LayerSize, MediaTimeout,
    ParticipantStats, PeerEvent, PeerRole, SfuError, TrackKind, TrackSettings,
};
pub use data_budget::{DataPayload, DEFAULT_DATA_QUEUE_BYTES};
pub use ice_tcp::{DEFAULT_MAX_TCP_CONNECTIONS, DEFAULT_TCP_CONNECTIONS_PER_ADDRESS};
pub use permissions::{AllowedSubscriber, SubscribePermission};
pub use single_pc::Answer;
pub use speakers::Speaker;
pub use tap::{
    SenderClock, TapCodec, TapEvent, TapHandle, TapPacket, TapReceiver, TapScope, TapTrack,
};

/// How the media plane listens.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Address the UDP sockets bind to. `0.0.0.0` needs `advertise_ips`.
    pub bind_ip: IpAddr,
    /// First UDP port; worker `i` listens on `port + i`. 0 picks ephemeral ports (tests).
    pub port: u16,
    /// The ICE-TCP port every worker's peers share (`ice_tcp/`), on `bind_ip`; `None` turns
    /// ICE-TCP off, 0 picks an ephemeral port (tests).
    pub tcp_port: Option<u16>,
    /// Most ICE-TCP connections open at once, over all peers; more are closed at accept.
    pub max_tcp_connections: usize,
    /// Most ICE-TCP connections open at once from one address (IPv6: one /64).
    pub tcp_connections_per_address: usize,
    /// Number of media workers (threads). Rooms are spread over them by name.
    pub workers: usize,
    /// Estimate subscribers' bandwidth (transport-wide congestion control) and fit their
    /// layers to it; off, each gets the best layer it can use.
    pub bandwidth_estimation: bool,
    /// Addresses advertised as host candidates when `bind_ip` is unspecified.
    pub advertise_ips: Vec<IpAddr>,
    /// For tests of retransmission only: withhold the first send of every Nth forwarded
    /// video packet (it still goes into the history, so a NACK brings it). `None` in
    /// production.
    pub test_drop_video_every: Option<std::num::NonZeroU64>,
    /// A participant none of whose PeerConnections finished ICE and DTLS this long after
    /// its join is ended ([`PeerEvent::MediaTimedOut`]).
    pub ice_connect_timeout: std::time::Duration,
    /// A participant that was connected and has had no PeerConnection up for this long is
    /// ended ([`PeerEvent::MediaTimedOut`]).
    pub peer_departure_timeout: std::time::Duration,
    /// Most m-lines accepted in a client's offer (or in an answer, beyond what our offer
    /// had), counted before the SDP is parsed.
    pub max_media_sections: usize,
    /// Most remote ICE candidates a PeerConnection takes, in one SDP and trickled since its
    /// last ICE restart; more are refused (SDP) or ignored (trickle).
    pub max_remote_candidates: usize,
    /// Bytes of one participant's data-channel messages that may wait for its signaling
    /// session; more are dropped (`data_budget.rs`).
    pub data_queue_bytes: usize,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            tcp_port: None,
            max_tcp_connections: ice_tcp::DEFAULT_MAX_TCP_CONNECTIONS,
            tcp_connections_per_address: ice_tcp::DEFAULT_TCP_CONNECTIONS_PER_ADDRESS,
            workers: 1,
            bandwidth_estimation: true,
            advertise_ips: Vec::new(),
            test_drop_video_every: None,
            ice_connect_timeout: liveness::LivenessLimits::default().connect,
            peer_departure_timeout: liveness::LivenessLimits::default().departure,
            max_media_sections: DEFAULT_MAX_MEDIA_SECTIONS,
            max_remote_candidates: DEFAULT_MAX_REMOTE_CANDIDATES,
            data_queue_bytes: DEFAULT_DATA_QUEUE_BYTES,
        }
    }
}

/// `max_media_sections` unless configured (docs/configuration.md says why 32).
pub const DEFAULT_MAX_MEDIA_SECTIONS: usize = 32;

/// `max_remote_candidates` unless configured (docs/configuration.md says why 64).
pub const DEFAULT_MAX_REMOTE_CANDIDATES: usize = 64;

struct WorkerHandle {
    commands: mpsc::UnboundedSender<Command>,
    addr: SocketAddr,
}

/// The running media plane.
pub struct Sfu {
    workers: Vec<WorkerHandle>,
    /// The ICE-TCP port's address, when it is on.
    tcp_addr: Option<SocketAddr>,
    stop_tcp: tokio::sync::watch::Sender<bool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next_tap: AtomicU64,
    max_media_sections: usize,
    max_remote_candidates: usize,
}

/// What a worker socket asks the kernel for, each way.
///
/// One socket carries every peer of the worker's rooms. The kernel's default (~208 KiB on
/// Linux, about 90 full-size datagrams once its per-packet overhead is counted) fills in a
/// few tens of milliseconds when a loop turn runs long — a join renegotiating a big room —
/// and the kernel then drops datagrams of every participant of the worker. 4 MiB rides out
/// ~1.5 s of such stalls at S1 rates. Linux caps the request at `net.core.rmem_max` /
/// `wmem_max`; what we got is logged so ops can raise those.
const WORKER_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

fn size_socket_buffers(socket: &std::net::UdpSocket, addr: SocketAddr) {
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock.set_recv_buffer_size(WORKER_SOCKET_BUFFER) {
        tracing::warn!(%addr, "cannot size the receive buffer: {e}");
    }
    if let Err(e) = sock.set_send_buffer_size(WORKER_SOCKET_BUFFER) {
        tracing::warn!(%addr, "cannot size the send buffer: {e}");
    }
    let recv = sock.recv_buffer_size().unwrap_or(0);
    let send = sock.send_buffer_size().unwrap_or(0);
    // Linux reports twice what it grants for bookkeeping; anything under the request means
    // the sysctl capped it.
    if recv < WORKER_SOCKET_BUFFER || send < WORKER_SOCKET_BUFFER {
        tracing::info!(
            %addr, recv, send,
            "media socket buffers are smaller than {WORKER_SOCKET_BUFFER} bytes; raise \
             net.core.rmem_max and net.core.wmem_max for fewer drops under load"
        );
    } else {
        tracing::debug!(%addr, recv, send, "media socket buffers");
    }
}

impl Sfu {
    /// Binds every worker's socket and starts the worker threads.
    pub fn start(config: &SfuConfig) -> Result<Sfu, SfuError> {
        if config.workers == 0 {
            return Err(SfuError::Config(
                "at least one media worker is needed".into(),
            ));
        }
        if config.bind_ip.is_unspecified() && config.advertise_ips.is_empty() {
            return Err(SfuError::Config(
                "binding to an unspecified address needs the IPs to advertise".into(),
            ));
        }
        rtc_config::install_crypto();
        // Bound before the workers start, so they know the port to advertise.
        let tcp_listener = match config.tcp_port {
            Some(port) => {
                let bind = SocketAddr::new(config.bind_ip, port);
                let listener = std::net::TcpListener::bind(bind).map_err(|e| SfuError::Bind {
                    addr: format!("{bind} (TCP)"),
                    reason: e.to_string(),
                })?;
                let addr = listener.local_addr().map_err(|e| SfuError::Bind {
                    addr: format!("{bind} (TCP)"),
                    reason: e.to_string(),
                })?;
                Some((listener, addr))
            }
            None => None,
        };
        let tcp_advertise = tcp_listener
            .as_ref()
            .map(|(_, addr)| worker::advertised_addrs(*addr, &config.advertise_ips))
            .unwrap_or_default();
        let mut workers = Vec::with_capacity(config.workers);
        let mut threads = Vec::with_capacity(config.workers);
        for index in 0..config.workers {
            let port = if config.port == 0 {
                0
            } else {
                config.port.checked_add(index as u16).ok_or_else(|| {
                    SfuError::Config(format!("UDP port {} + {index} overflows", config.port))
                })?
            };
            let bind = SocketAddr::new(config.bind_ip, port);
            let socket = std::net::UdpSocket::bind(bind).map_err(|e| SfuError::Bind {
                addr: bind.to_string(),
                reason: e.to_string(),
            })?;
            let addr = socket.local_addr().map_err(|e| SfuError::Bind {
                addr: bind.to_string(),
                reason: e.to_string(),
            })?;
            size_socket_buffers(&socket, addr);
            #[cfg(target_os = "linux")]
            if addr.is_ipv4() {
                use std::os::fd::AsRawFd;
                if let Err(e) = sendmmsg::set_dont_fragment(socket.as_raw_fd()) {
                    tracing::warn!(%addr, "cannot set Don't Fragment on the media socket: {e}");
                }
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let advertise = worker::advertised_addrs(addr, &config.advertise_ips);
            let drop_every = config.test_drop_video_every;
            let tcp_advertise = tcp_advertise.clone();
            let limits = worker::WorkerLimits {
                liveness: liveness::LivenessLimits {
                    connect: config.ice_connect_timeout,
                    departure: config.peer_departure_timeout,
                },
                max_media_sections: config.max_media_sections,
                max_remote_candidates: config.max_remote_candidates,
                data_queue_bytes: config.data_queue_bytes,
                bandwidth_estimation: config.bandwidth_estimation,
            };
            let thread = std::thread::Builder::new()
                .name(format!("media-worker-{index}"))
                .spawn(move || {
                    worker::run(
                        index,
                        socket,
                        advertise,
                        tcp_advertise,
                        drop_every,
                        limits,
                        rx,
                    )
                })
                .map_err(|e| SfuError::Config(format!("cannot start a media worker: {e}")))?;
            workers.push(WorkerHandle { commands: tx, addr });
            threads.push(thread);
        }
        let (stop_tcp, stopped) = tokio::sync::watch::channel(false);
        let mut tcp_addr = None;
        if let Some((listener, addr)) = tcp_listener {
            let queues = workers.iter().map(|w| w.commands.clone()).collect();
            let limits = ice_tcp::front_door::ConnectionLimits {
                total: config.max_tcp_connections,
                per_address: config.tcp_connections_per_address,
            };
            let thread = ice_tcp::front_door::start(listener, queues, limits, stopped)
                .map_err(|e| SfuError::Config(format!("cannot start ICE-TCP: {e}")))?;
            threads.push(thread);
            tcp_addr = Some(addr);
        }
        Ok(Sfu {
            workers,
            tcp_addr,
            stop_tcp,
            threads: Mutex::new(threads),
            next_tap: AtomicU64::new(1),
            max_media_sections: config.max_media_sections,
            max_remote_candidates: config.max_remote_candidates,
        })
    }

    /// The most m-lines a client's SDP may carry (`max_media_sections`), for callers that
    /// check an offer before handing it over (WHIP/WHEP).
    pub fn max_media_sections(&self) -> usize {
        self.max_media_sections
    }

    /// The most remote ICE candidates a PeerConnection takes (`max_remote_candidates`),
    /// for callers that check a trickle fragment before handing it over (WHIP/WHEP).
    pub fn max_remote_candidates(&self) -> usize {
        self.max_remote_candidates
    }

    /// True while every media worker is running (a worker that stopped drops its queue).
    pub fn healthy(&self) -> bool {
        self.workers.iter().all(|w| !w.commands.is_closed())
    }

    /// The UDP addresses the workers listen on.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(|w| w.addr).collect()
    }

    /// The ICE-TCP address, when ICE-TCP is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    fn worker_for(&self, room: &str) -> &WorkerHandle {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        room.hash(&mut hasher);
        let index = (hasher.finish() % self.workers.len() as u64) as usize;
        &self.workers[index]
    }

    /// Adds a participant to a room's media worker. Events about it arrive on the returned
    /// receiver until it leaves.
    pub async fn join(
        &self,
        room: &str,
        participant: &str,
        identity: &str,
        options: JoinOptions,
    ) -> Result<(ParticipantHandle, mpsc::UnboundedReceiver<PeerEvent>), SfuError> {
        let worker = self.worker_for(room);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        worker
            .commands
            .send(Command::Join {
                participant: participant.to_owned(),
                identity: identity.to_owned(),
                room: room.to_owned(),
                options,
                events: events_tx,
                reply,
            })
            .map_err(|_| SfuError::WorkerGone)?;
        answer.await.map_err(|_| SfuError::WorkerGone)??;
        Ok((
            ParticipantHandle {
                participant: participant.to_owned(),
                commands: worker.commands.clone(),
            },
            events_rx,
        ))
    }

    /// Starts receiving a room's media in process (egress). Fails with
    /// [`SfuError::UnknownTrack`] when a single track is asked for and the room does not
    /// publish it. Keyframes of the tapped video tracks are requested at once.
    pub async fn tap(
        &self,
        room: &str,
        scope: TapScope,
    ) -> Result<(TapHandle, TapReceiver), SfuError> {
        let worker = self.worker_for(room);
        let id = self.next_tap.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = tap::channel();
        let (reply, answer) = oneshot::channel();
        worker
            .commands
            .send(Command::Tap {
                tap: id,
                room: room.to_owned(),
                scope,
                sender,
                reply,
            })
            .map_err(|_| SfuError::WorkerGone)?;
        answer.await.map_err(|_| SfuError::WorkerGone)??;
        Ok((TapHandle::new(id, worker.commands.clone()), receiver))
    }

    /// Stops every worker and waits for the threads to end. Calling it again is harmless.
    pub fn shutdown(&self) {
        let _ = self.stop_tcp.send(true);
        for worker in &self.workers {
            let _ = worker.commands.send(Command::Shutdown);
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for Sfu {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One participant's access to its media worker.
#[derive(Clone, Debug)]
pub struct ParticipantHandle {
    participant: String,
    commands: mpsc::UnboundedSender<Command>,
}

impl ParticipantHandle {
    fn send(&self, command: Command) -> Result<(), SfuError> {
        self.commands
            .send(command)
            .map_err(|_| SfuError::WorkerGone)
    }

    async fn ask<T>(&self, make: impl FnOnce(api::Reply<T>) -> Command) -> Result<T, SfuError> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply))?;
        answer.await.map_err(|_| SfuError::WorkerGone)?
    }

    /// The participant's key in the media plane (its `PA_…` sid).
    pub fn participant(&self) -> &str {
        &self.participant
    }

    /// Applies the client's offer on the publisher PC and returns the SDP answer.
    pub async fn publisher_offer(&self, sdp: String) -> Result<String, SfuError> {
        self.offer(sdp).await.map(|answer| answer.sdp)
    }

    /// Applies the client's offer on its publisher PC (in a single-PC session, its only PC)
    /// and returns the answer, with the track each receive line carries.
    pub async fn offer(&self, sdp: String) -> Result<Answer, SfuError> {
        let participant = self.participant.clone();
        self.ask(|reply| Command::PublisherOffer {
            participant,
            sdp,
            reply,
        })
        .await
    }

    /// Applies the client's answer to the last subscriber offer.
    pub async fn subscriber_answer(&self, sdp: String) -> Result<(), SfuError> {
        let participant = self.participant.clone();
        self.ask(|reply| Command::SubscriberAnswer {
            participant,
            sdp,
            reply,
        })
        .await
    }

    /// Adds a trickled remote candidate (`candidate:…` line).
    pub fn remote_candidate(&self, role: PeerRole, candidate: String) -> Result<(), SfuError> {
        self.send(Command::RemoteCandidate {
            participant: self.participant.clone(),
            role,
            candidate,
        })
    }

    /// Announces a track the client is about to offer.
    pub fn expect_track(&self, track: ExpectedTrack) -> Result<(), SfuError> {
        self.send(Command::ExpectTrack {
            participant: self.participant.clone(),
            track,
        })
    }

    /// Stops or resumes forwarding a published track (server-side mute).
    pub fn set_track_muted(&self, sid: String, muted: bool) -> Result<(), SfuError> {
        self.send(Command::SetTrackMuted {
            participant: self.participant.clone(),
            sid,
            muted,
        })
    }

    /// Sets whom this participant lets subscribe to its tracks (`None`: everyone).
    pub fn set_subscribe_permission(
        &self,
        permission: Option<SubscribePermission>,
    ) -> Result<(), SfuError> {
        self.send(Command::SetSubscribePermission {
            participant: self.participant.clone(),
            permission,
        })
    }

    /// Subscribes to or unsubscribes from tracks by sid.
    pub fn subscribe(&self, track_sids: Vec<String>, subscribe: bool) -> Result<(), SfuError> {
        self.send(Command::Subscribe {
            participant: self.participant.clone(),
            track_sids,
            subscribe,
        })
    }

    /// Applies what the subscriber asks of tracks it receives, by sid: their size, the
    /// best quality, or none at all.
    pub fn track_settings(
        &self,
        track_sids: Vec<String>,
        settings: TrackSettings,
    ) -> Result<(), SfuError> {
        self.send(Command::TrackSettings {
            participant: self.participant.clone(),
            track_sids,
            settings,
        })
    }

    /// Sends a data-channel message to participants of the same room.
    pub fn send_data(
        &self,
        to: Vec<String>,
        reliable: bool,
        payload: Arc<[u8]>,
    ) -> Result<(), SfuError> {
        self.send(Command::SendData {
            to,
            reliable,
            payload,
        })
    }

    /// A viewer's (WHEP) offer of receive-only m-lines, accepted on the subscriber PC; the
    /// answer's m-lines carry the publisher chosen with [`ParticipantHandle::view`].
    pub async fn viewer_offer(&self, sdp: String) -> Result<String, SfuError> {
        let participant = self.participant.clone();
        self.ask(|reply| Command::ViewerOffer {
            participant,
            sdp,
            reply,
        })
        .await
    }

    /// Chooses whose first audio and video track a viewer receives (a publisher's
    /// participant key), switching cleanly from the previous one; `None` for silence.
    pub fn view(&self, publisher: Option<String>) -> Result<(), SfuError> {
        self.send(Command::View {
            participant: self.participant.clone(),
            publisher,
        })
    }

    /// ICE restart: the client's new ufrag and password in, ours out.
    pub async fn ice_restart(
        &self,
        role: PeerRole,
        ufrag: String,
        pwd: String,
    ) -> Result<(String, String), SfuError> {
        let participant = self.participant.clone();
        self.ask(|reply| Command::IceRestart {
            participant,
            role,
            ufrag,
            pwd,
            reply,
        })
        .await
    }

    /// Restarts ICE on the subscriber PC: a new offer with new ICE credentials follows as a
    /// [`PeerEvent::SubscriberOffer`] (after the answer to one still out). Nothing happens
    /// if the subscriber PC was never negotiated.
    pub fn restart_subscriber_ice(&self) -> Result<(), SfuError> {
        self.send(Command::RestartSubscriberIce {
            participant: self.participant.clone(),
        })
    }

    /// Removes the participant from the media plane and returns its traffic counters.
    pub async fn leave(&self) -> ParticipantStats {
        let (reply, answer) = oneshot::channel();
        if self
            .send(Command::Leave {
                participant: self.participant.clone(),
                reply,
            })
            .is_err()
        {
            return ParticipantStats::default();
        }
        answer.await.unwrap_or_default()
    }
}

/// Bytes from hex digits, for tests' known answers.
#[cfg(test)]
pub(crate) fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digits"))
        .collect()
}
