//! A media worker: one thread, one UDP socket, every room placed on it.
//!
//! The loop waits for whichever comes first — a datagram, a frame from one of its ICE-TCP
//! connections (`ice_tcp/`), a command from signaling, or the earliest deadline any peer
//! asked for — feeds it to the right str0m peer and drains that peer's output. Forwarding happens inside that drain, on this thread, without locks.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use str0m::net::{Protocol, Receive};
use str0m::{Input, Output};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::api::{Command, PeerEvent, PeerRole};
use crate::down_track::OutState;
use crate::ice_tcp::links::TcpLinks;
use crate::ice_tcp::Route;
use crate::liveness::LivenessLimits;
use crate::metrics::{Population, WorkerMetrics};
use crate::participant::{Participant, Slot};
use crate::timers::Timers;

/// At most this many datagrams are taken in per loop turn (one woken by the socket plus
/// those already waiting), so timeouts and commands still run between batches.
const RECEIVE_BATCH: usize = 32;

/// How often the worker looks for participants past a liveness deadline. The deadlines are
/// tens of seconds, so a quarter second late is nothing; checking every turn would cost a
/// pass over every participant per packet.
const LIVENESS_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// The configured bounds a worker enforces on its participants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorkerLimits {
    pub liveness: LivenessLimits,
    pub max_media_sections: usize,
    /// Remote ICE candidates one peer takes: in one SDP, and trickled since its last ICE
    /// restart.
    pub max_remote_candidates: usize,
    /// Data-channel bytes one participant may have waiting for its session.
    pub data_queue_bytes: usize,
    /// Subscriber offers carry transport-wide congestion control (`congestion.rs`).
    pub bandwidth_estimation: bool,
}

impl Default for WorkerLimits {
    fn default() -> Self {
        Self {
            liveness: LivenessLimits::default(),
            max_media_sections: crate::DEFAULT_MAX_MEDIA_SECTIONS,
            max_remote_candidates: crate::DEFAULT_MAX_REMOTE_CANDIDATES,
            data_queue_bytes: crate::DEFAULT_DATA_QUEUE_BYTES,
            bandwidth_estimation: true,
        }
    }
}

pub(crate) use crate::sink::DatagramSink;

/// The host candidates a worker bound to `local` advertises.
pub(crate) fn advertised_addrs(local: SocketAddr, advertise_ips: &[IpAddr]) -> Vec<SocketAddr> {
    if !local.ip().is_unspecified() {
        return vec![local];
    }
    let mut addrs: Vec<SocketAddr> = advertise_ips
        .iter()
        .map(|ip| SocketAddr::new(*ip, local.port()))
        .collect();
    // Loopback peers (tests, a browser on the same host) can always reach a wildcard socket.
    let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port());
    if !addrs.contains(&loopback) {
        addrs.push(loopback);
    }
    addrs
}

/// The local address a datagram from `source` was sent to, as str0m must be told: the
/// advertised address of the same family, loopback for a loopback source.
pub(crate) fn destination_for(advertise: &[SocketAddr], source: SocketAddr) -> SocketAddr {
    let wanted_loopback = source.ip().is_loopback();
    advertise
        .iter()
        .copied()
        .find(|a| a.ip().is_loopback() == wanted_loopback && a.is_ipv4() == source.is_ipv4())
        .or_else(|| advertise.first().copied())
        .unwrap_or(source)
}

/// Entry point of a worker thread. `tcp_advertise` are its ICE-TCP host candidates (the
/// front door's port; empty when ICE-TCP is off).
pub(crate) fn run(
    index: usize,
    socket: std::net::UdpSocket,
    advertise: Vec<SocketAddr>,
    tcp_advertise: Vec<SocketAddr>,
    test_drop_video_every: Option<std::num::NonZeroU64>,
    limits: WorkerLimits,
    commands: mpsc::UnboundedReceiver<Command>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            warn!(worker = index, "cannot start the media worker runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        let socket = match socket
            .set_nonblocking(true)
            .and_then(|()| UdpSocket::from_std(socket))
        {
            Ok(s) => std::sync::Arc::new(s),
            Err(e) => {
                warn!(worker = index, "cannot register the media socket: {e}");
                return;
            }
        };
        let sink = Box::new(crate::sink::NetSink::new(std::sync::Arc::clone(&socket)));
        let mut worker = Worker::new(index, sink, advertise);
        worker.tcp = TcpLinks::new(tcp_advertise);
        worker.limits = limits;
        worker.test_drop = test_drop_video_every.map(crate::rtp_out::DropEvery::new);
        worker.run(&socket, commands).await;
    });
}

pub(crate) struct Worker {
    pub index: usize,
    pub sink: Box<dyn DatagramSink>,
    pub advertise: Vec<SocketAddr>,
    pub parts: Vec<Option<Participant>>,
    pub by_key: HashMap<String, Slot>,
    pub rooms: HashMap<String, Vec<Slot>>,
    /// Which peer a UDP source address belongs to.
    pub by_addr: HashMap<SocketAddr, (Slot, PeerRole)>,
    /// ICE-TCP connections, each bound to one peer when it was adopted.
    pub(crate) tcp: TcpLinks,
    /// Reused buffer of down-tracks while forwarding one packet.
    pub scratch: Vec<crate::ids::DownTrackId>,
    /// Decrypted feedback, reused (`feedback_in.rs`).
    pub rtcp_plain: Vec<u8>,
    /// Subscriber peers str0m was handed a forwarded packet for, to send it right away.
    pub(crate) str0m_now: Vec<Slot>,
    /// Keyframe requests to pass to publishers after the current drain.
    pub keyframe_queue: Vec<crate::media::KeyframeWant>,
    /// The participant whose peer is being driven, so a panic can be pinned on it.
    pub(crate) current: Option<Slot>,
    /// When each peer asked to be woken.
    pub(crate) timers: Timers,
    /// Peers being woken in this turn (reused buffer).
    due: Vec<(Slot, PeerRole)>,
    /// Subscriber PCs to renegotiate, and when (`renegotiate_later`).
    pub(crate) renegotiate: Vec<(Slot, Instant)>,
    pub(crate) metrics: WorkerMetrics,
    /// Commands waiting in the queue, as last seen by the loop.
    queue_depth: usize,
    /// In-process consumers of rooms' media (egress); usually none.
    pub(crate) taps: Vec<crate::tap::Tap>,
    /// Tests of retransmission only (`SfuConfig::test_drop_video_every`); `None` in
    /// production.
    pub(crate) test_drop: Option<crate::rtp_out::DropEvery>,
    pub(crate) limits: WorkerLimits,
    /// When participants' liveness deadlines are next looked at.
    next_liveness_check: Instant,
    /// The time of the current loop turn. The loop (or a test, a bench) hands it in with
    /// each input, as str0m is handed its time; the logic never reads the clock itself, so
    /// its timing decisions can be tested with made-up time.
    pub(crate) now: Instant,
    /// What the bandwidth estimators of this worker's subscribers count send times from
    /// (`bwe`): one origin, so a packet's send time is read once for all its subscribers.
    pub(crate) epoch: Instant,
    /// Subscribers whose link is being probed (`congestion.rs`).
    pub(crate) probing: Vec<Slot>,
    /// When speakers are next judged, and connections next rated.
    next_speakers: Instant,
    next_quality: Instant,
    next_quiet_probe: Instant,
    /// Tracks whose publisher is to be told it may stop layers, once a delay passed.
    pub(crate) dynacast_pending: Vec<crate::ids::TrackId>,
}

impl Worker {
    pub(crate) fn new(
        index: usize,
        sink: Box<dyn DatagramSink>,
        advertise: Vec<SocketAddr>,
    ) -> Self {
        Self {
            index,
            sink,
            advertise,
            parts: Vec::new(),
            by_key: HashMap::new(),
            rooms: HashMap::new(),
            by_addr: HashMap::new(),
            tcp: TcpLinks::new(Vec::new()),
            scratch: Vec::new(),
            rtcp_plain: Vec::new(),
            str0m_now: Vec::new(),
            keyframe_queue: Vec::new(),
            current: None,
            timers: Timers::default(),
            due: Vec::new(),
            renegotiate: Vec::new(),
            metrics: WorkerMetrics::new(index),
            queue_depth: 0,
            taps: Vec::new(),
            test_drop: None,
            limits: WorkerLimits::default(),
            next_liveness_check: Instant::now(),
            now: Instant::now(),
            // A minute back, so that times a test or bench hands in from just before the
            // worker was made still count from it.
            epoch: Instant::now()
                .checked_sub(std::time::Duration::from_secs(60))
                .unwrap_or_else(Instant::now),
            probing: Vec::new(),
            dynacast_pending: Vec::new(),
            next_speakers: Instant::now(),
            next_quality: Instant::now() + crate::quality::QUALITY_INTERVAL,
            next_quiet_probe: Instant::now() + crate::congestion::QUIET_PROBE_CHECK,
        }
    }

    /// Runs one step of the loop. A panic inside it is pinned on the participant being
    /// driven at the time, which is dropped; the worker and everyone else carry on.
    pub(crate) fn guarded(&mut self, step: impl FnOnce(&mut Self)) {
        self.current = None;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(self)));
        if outcome.is_err() {
            let culprit = self.current.take();
            warn!(
                worker = self.index,
                ?culprit,
                "a media peer panicked; dropping it"
            );
            self.keyframe_queue.clear();
            // Peers taken off the timer heap in this turn may not have been woken yet.
            let now = self.now;
            for (slot, role) in std::mem::take(&mut self.due) {
                if self.parts.get(slot).is_some_and(Option::is_some) {
                    self.timers.set(slot, role, now);
                }
            }
            if let Some(slot) = culprit {
                if let Some(part) = self.parts[slot].as_ref() {
                    part.emit(PeerEvent::MediaDisconnected {
                        role: PeerRole::Publisher,
                        reason: "internal error in the media worker".into(),
                    });
                }
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.remove_participant(slot);
                }));
            }
        }
    }

    async fn run(&mut self, socket: &UdpSocket, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; crate::ice_tcp::MAX_FRAME];
        info!(
            worker = self.index,
            addrs = ?self.advertise,
            tcp = ?self.tcp.advertise(),
            "media worker started"
        );
        // Senders live in the connections' readers; the worker keeps one itself, so this
        // never ends while the worker runs.
        let Some(mut tcp_input) = self.tcp.take_receiver() else {
            warn!(worker = self.index, "the ICE-TCP receiver was taken twice");
            return;
        };
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                command = commands.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(command) => {
                        let now = Instant::now();
                        self.guarded(|w| w.handle_command(command, now));
                    }
                },
                received = socket.recv_from(&mut buf) => match received {
                    Ok((len, source)) => {
                        let now = Instant::now();
                        self.guarded(|w| w.handle_datagram(&buf[..len], source, now));
                        self.receive_waiting(socket, &mut buf);
                    }
                    Err(e) => debug!(worker = self.index, "UDP receive failed: {e}"),
                },
                Some(input) = tcp_input.recv() => {
                    let now = Instant::now();
                    self.guarded(|w| w.handle_tcp_input(input, now));
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            }
            let now = Instant::now();
            if now > deadline {
                self.metrics.lag(now - deadline);
            }
            self.queue_depth = commands.len();
            self.after_wake(now);
        }
        let slots: Vec<Slot> = self.by_key.values().copied().collect();
        for slot in slots {
            self.remove_participant(slot);
        }
        // Whatever closing the peers wrote (alerts, BYEs) leaves before the socket does.
        self.sink.flush();
        // A stopped worker no longer holds anyone.
        self.metrics
            .flush(Instant::now(), 0, &Population::default());
        info!(worker = self.index, "media worker stopped");
    }

    /// Takes in the datagrams already waiting on the socket, up to a batch, before the turn's
    /// timeouts run and its datagrams are sent: a loaded worker hands the kernel one
    /// `sendmmsg` per batch instead of one per packet. An idle socket ends the batch at once,
    /// so a lightly loaded worker sends every packet on the turn it arrived.
    fn receive_waiting(&mut self, socket: &UdpSocket, buf: &mut [u8]) {
        for _ in 1..RECEIVE_BATCH {
            match socket.try_recv_from(buf) {
                Ok((len, source)) => {
                    let now = Instant::now();
                    self.guarded(|w| w.handle_datagram(&buf[..len], source, now));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!(worker = self.index, "UDP receive failed: {e}");
                    return;
                }
            }
        }
    }

    /// The end of every loop turn: due renegotiations, due timeouts, then queued keyframe
    /// requests, then the turn's datagrams go out.
    pub(crate) fn after_wake(&mut self, now: Instant) {
        self.now = now;
        self.guarded(|w| w.renegotiate_due(now));
        self.guarded(|w| {
            w.handle_timeouts(now);
            w.flush_keyframe_requests();
        });
        self.guarded(Self::probe_ticks);
        if now >= self.next_quiet_probe {
            self.next_quiet_probe = now + crate::congestion::QUIET_PROBE_CHECK;
            self.guarded(Self::probe_quiet_links);
            self.guarded(Self::allocate_waiting);
        }
        if now >= self.next_speakers {
            self.next_speakers = now + crate::speakers::SPEAKER_WINDOW;
            self.guarded(Self::judge_speakers);
        }
        if now >= self.next_quality {
            self.next_quality = now + crate::quality::QUALITY_INTERVAL;
            self.guarded(Self::rate_connections);
        }
        if now >= self.next_liveness_check {
            self.next_liveness_check = now + LIVENESS_CHECK_INTERVAL;
            self.check_liveness(now);
            self.guarded(Self::dynacast_due);
        }
        self.sink.flush();
        if self.metrics.due(now) {
            let population = self.population();
            self.metrics.flush(now, self.queue_depth, &population);
        }
    }

    /// What the gauges report, counted every flush (cheap at that rate, and never drifts
    /// the way increments on every state change could).
    fn population(&self) -> Population {
        let mut population = Population {
            tcp_connections: self.tcp.len(),
            ..Population::default()
        };
        for part in self.parts.iter().flatten() {
            population.participants += 1;
            population.published_tracks += part.tracks.iter().flatten().count();
            population.subscribed_tracks += part
                .down_tracks
                .iter()
                .flatten()
                .filter(|o| matches!(o.state, OutState::Open(_)))
                .count();
        }
        population
    }

    /// One loop turn woken by a datagram, as the event loop runs it (benches call this).
    #[cfg(feature = "bench")]
    pub(crate) fn datagram_turn(&mut self, data: &[u8], source: SocketAddr, now: Instant) {
        let _deadline = self.next_deadline();
        self.guarded(|w| w.handle_datagram(data, source, now));
        self.after_wake(now);
    }

    /// The earliest deadline any peer or renegotiation asked for, at most half a second away.
    pub(crate) fn next_deadline(&self) -> Instant {
        let now = self.now;
        let cap = now + Duration::from_millis(500);
        let probe = (!self.probing.is_empty()).then(|| now + crate::congestion::PROBE_TICK);
        [self.timers.next(), self.next_renegotiation(), probe]
            .into_iter()
            .flatten()
            .fold(cap, Instant::min)
    }

    /// Wakes every peer whose deadline has passed, once: a peer that asks again for a time
    /// already past is woken on the next turn.
    fn handle_timeouts(&mut self, now: Instant) {
        self.due.clear();
        self.timers.take_due(now, &mut self.due);
        for index in 0..self.due.len() {
            let (slot, role) = self.due[index];
            let Some(part) = self.parts[slot].as_mut() else {
                continue;
            };
            self.current = Some(slot);
            let peer = part.peer_mut(role);
            if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                debug!(participant = %part.key, ?role, "timeout input failed: {e}");
            }
            self.drain(slot, role);
        }
        self.due.clear();
    }

    pub(crate) fn handle_datagram(&mut self, data: &[u8], source: SocketAddr, now: Instant) {
        self.now = now;
        self.metrics.datagram_in(data);
        let known = self.by_addr.get(&source).copied();
        // Most of what subscribers send is transport-wide feedback: it is read before
        // anything is built for str0m.
        if known.is_some_and(|(slot, role)| self.feedback_taken(slot, role, data)) {
            return;
        }
        let Ok(contents) = data.try_into() else {
            return; // Not STUN, DTLS, RTP or RTCP: nothing of ours.
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: destination_for(&self.advertise, source),
                contents,
            },
        );
        let target = match known {
            Some(target) => Some(target),
            None => self.find_accepting(&input),
        };
        let Some((slot, role)) = target else {
            debug!(%source, "no peer accepts this datagram");
            return;
        };
        self.current = Some(slot);
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        let peer = part.peer_mut(role);
        if !peer.addrs.contains(&source) {
            peer.addrs.push(source);
            self.by_addr.insert(source, (slot, role));
        }
        self.deliver_to_peer(slot, role, input);
    }

    /// Hands a datagram (or ICE-TCP frame) that belongs to a peer to it, or to our own
    /// feedback reader first (`feedback_in.rs`).
    pub(crate) fn deliver(&mut self, slot: Slot, role: PeerRole, data: &[u8], input: Input) {
        if self.feedback_taken(slot, role, data) {
            return;
        }
        self.deliver_to_peer(slot, role, input);
    }

    /// Whether our own feedback reader took `data` from this peer (`feedback_in.rs`).
    fn feedback_taken(&mut self, slot: Slot, role: PeerRole, data: &[u8]) -> bool {
        self.current = Some(slot);
        let sends = role == PeerRole::Subscriber
            || self.parts[slot].as_ref().is_some_and(|p| p.single_pc());
        sends && self.take_feedback(slot, data)
    }

    /// Hands `input` to the peer's str0m instance, and its output on.
    fn deliver_to_peer(&mut self, slot: Slot, role: PeerRole, input: Input) {
        self.current = Some(slot);
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        let peer = part.peer_mut(role);
        if let Err(e) = peer.rtc.handle_input(input) {
            // A bad packet costs only itself; the peer stays up.
            debug!(participant = %part.key, ?role, "dropped a datagram: {e}");
        }
        self.drain(slot, role);
    }

    pub(crate) fn find_accepting(&self, input: &Input) -> Option<(Slot, PeerRole)> {
        self.parts.iter().enumerate().find_map(|(slot, part)| {
            let part = part.as_ref()?;
            if part.publisher.rtc.accepts(input) {
                Some((slot, PeerRole::Publisher))
            } else if part
                .subscriber
                .as_ref()
                .is_some_and(|s| s.rtc.accepts(input))
            {
                Some((slot, PeerRole::Subscriber))
            } else {
                None
            }
        })
    }

    /// Feeds str0m's output to the socket and to the event handlers until it asks for time.
    pub(crate) fn drain(&mut self, slot: Slot, role: PeerRole) {
        let Some(role) = self.parts[slot].as_ref().map(|p| p.peer_role(role)) else {
            return;
        };
        let outer = self.current.replace(slot);
        self.drain_peer(slot, role);
        self.current = outer;
    }

    fn drain_peer(&mut self, slot: Slot, role: PeerRole) {
        loop {
            let Some(part) = self.parts[slot].as_mut() else {
                return;
            };
            let single = part.single_pc();
            let peer = part.peer_mut(role);
            if !peer.rtc.is_alive() {
                // A closed peer never needs waking again.
                self.timers.clear(slot, role);
                if !peer.disconnected_reported {
                    peer.disconnected_reported = true;
                    part.emit(PeerEvent::MediaDisconnected {
                        role,
                        reason: "the peer connection closed".into(),
                    });
                }
                return;
            }
            let output = peer.rtc.poll_output();
            // A handshake that completed in this poll left its keys on this thread: a
            // subscriber peer's become its own send path; a publisher's are not needed.
            if let Some(keys) = switchboard_dtls::take_exported_keys() {
                if role == PeerRole::Subscriber || single {
                    if let Err(e) = peer.start_direct_send(&keys) {
                        // str0m's path still works, only slower.
                        warn!(worker = self.index, slot, "forwarding through str0m: {e}");
                    }
                }
            }
            match output {
                Ok(Output::Timeout(at)) => {
                    self.timers.set(slot, role, at);
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let route = Route::of(t.proto, t.destination);
                    if crate::rtp_out::goes_to_media_address(&t.contents) {
                        peer.media_to = Some(route);
                    }
                    self.metrics.datagram_out(&t.contents);
                    self.sink.send(t.contents.into(), route);
                }
                Ok(Output::Event(event)) => {
                    Self::observe_liveness(part, role, &event, self.now);
                    let about = if single {
                        crate::single_pc::role_of(&event)
                    } else {
                        role
                    };
                    self.handle_event(slot, about, event);
                }
                Err(e) => {
                    peer.rtc.disconnect();
                    warn!(participant = %part.key, ?role, "peer failed: {e}");
                }
            }
        }
    }
}

/// A worker in memory for unit tests.
#[cfg(test)]
#[path = "worker_testing.rs"]
pub(crate) mod testing;
