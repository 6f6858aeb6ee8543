//! A media worker: one thread, one UDP socket, every room placed on it.
//!
//! The loop waits for whichever comes first — a datagram, a command from signaling, or the
//! earliest deadline any peer asked for — feeds it to the right str0m peer and drains that
//! peer's output. Forwarding happens inside that drain, on this thread, without locks.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, Output};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::api::{Command, ExpectedTrack, JoinOptions, PeerEvent, PeerRole, SfuError};
use crate::participant::{DataChannels, Participant, Peer, Slot};
use crate::rtc_config::new_rtc;

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

/// Entry point of a worker thread.
pub(crate) fn run(
    index: usize,
    socket: std::net::UdpSocket,
    advertise: Vec<SocketAddr>,
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
            Ok(s) => Arc::new(s),
            Err(e) => {
                warn!(worker = index, "cannot register the media socket: {e}");
                return;
            }
        };
        let mut worker = Worker::new(index, socket, advertise);
        worker.run(commands).await;
    });
}

pub(crate) struct Worker {
    pub index: usize,
    pub socket: Arc<UdpSocket>,
    pub advertise: Vec<SocketAddr>,
    pub parts: Vec<Option<Participant>>,
    pub by_key: HashMap<String, Slot>,
    pub rooms: HashMap<String, Vec<Slot>>,
    pub by_addr: HashMap<SocketAddr, (Slot, PeerRole)>,
    /// Reused buffer of (subscriber, out index) pairs while forwarding one packet.
    pub scratch: Vec<(Slot, usize)>,
    /// Keyframe requests to pass to publishers after the current drain: (publisher, track).
    pub keyframe_queue: Vec<(Slot, usize)>,
    /// The participant whose peer is being driven, so a panic can be pinned on it.
    current: Option<Slot>,
}

impl Worker {
    fn new(index: usize, socket: Arc<UdpSocket>, advertise: Vec<SocketAddr>) -> Self {
        Self {
            index,
            socket,
            advertise,
            parts: Vec::new(),
            by_key: HashMap::new(),
            rooms: HashMap::new(),
            by_addr: HashMap::new(),
            scratch: Vec::new(),
            keyframe_queue: Vec::new(),
            current: None,
        }
    }

    /// Runs one step of the loop. A panic inside it is pinned on the participant being
    /// driven at the time, which is dropped; the worker and everyone else carry on.
    fn guarded(&mut self, step: impl FnOnce(&mut Self)) {
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

    async fn run(&mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; 2048];
        let socket = self.socket.clone();
        info!(worker = self.index, addrs = ?self.advertise, "media worker started");
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                command = commands.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(command) => self.guarded(|w| w.handle_command(command)),
                },
                received = socket.recv_from(&mut buf) => match received {
                    Ok((len, source)) => self.guarded(|w| w.handle_datagram(&buf[..len], source)),
                    Err(e) => debug!(worker = self.index, "UDP receive failed: {e}"),
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            }
            self.guarded(|w| {
                w.handle_timeouts(Instant::now());
                w.flush_keyframe_requests();
            });
        }
        let slots: Vec<Slot> = self.by_key.values().copied().collect();
        for slot in slots {
            self.remove_participant(slot);
        }
        info!(worker = self.index, "media worker stopped");
    }

    fn next_deadline(&self) -> Instant {
        let cap = Instant::now() + Duration::from_millis(500);
        self.parts
            .iter()
            .flatten()
            .flat_map(|p| [p.publisher.timeout, p.subscriber.timeout])
            .fold(cap, Instant::min)
    }

    fn handle_timeouts(&mut self, now: Instant) {
        for slot in 0..self.parts.len() {
            for role in [PeerRole::Publisher, PeerRole::Subscriber] {
                let Some(part) = self.parts[slot].as_mut() else {
                    continue;
                };
                let peer = part.peer_mut(role);
                if peer.timeout > now {
                    continue;
                }
                self.current = Some(slot);
                if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                    debug!(participant = %part.key, ?role, "timeout input failed: {e}");
                }
                self.drain(slot, role);
            }
        }
    }

    /// The local address a datagram from `source` was sent to, as str0m must be told.
    fn destination_for(&self, source: SocketAddr) -> SocketAddr {
        let wanted_loopback = source.ip().is_loopback();
        self.advertise
            .iter()
            .copied()
            .find(|a| a.ip().is_loopback() == wanted_loopback && a.is_ipv4() == source.is_ipv4())
            .or_else(|| self.advertise.first().copied())
            .unwrap_or(source)
    }

    fn handle_datagram(&mut self, data: &[u8], source: SocketAddr) {
        let Ok(contents) = data.try_into() else {
            return; // Not STUN, DTLS, RTP or RTCP: nothing of ours.
        };
        let now = Instant::now();
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.destination_for(source),
                contents,
            },
        );
        let target = match self.by_addr.get(&source) {
            Some(target) => Some(*target),
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
        if let Err(e) = peer.rtc.handle_input(input) {
            // A bad packet costs only itself; the peer stays up.
            debug!(participant = %part.key, ?role, "dropped a datagram: {e}");
        }
        self.drain(slot, role);
    }

    fn find_accepting(&self, input: &Input) -> Option<(Slot, PeerRole)> {
        self.parts.iter().enumerate().find_map(|(slot, part)| {
            let part = part.as_ref()?;
            if part.publisher.rtc.accepts(input) {
                Some((slot, PeerRole::Publisher))
            } else if part.subscriber.rtc.accepts(input) {
                Some((slot, PeerRole::Subscriber))
            } else {
                None
            }
        })
    }

    /// Feeds str0m's output to the socket and to the event handlers until it asks for time.
    pub(crate) fn drain(&mut self, slot: Slot, role: PeerRole) {
        let outer = self.current.replace(slot);
        self.drain_peer(slot, role);
        self.current = outer;
    }

    fn drain_peer(&mut self, slot: Slot, role: PeerRole) {
        loop {
            let Some(part) = self.parts[slot].as_mut() else {
                return;
            };
            let peer = part.peer_mut(role);
            if !peer.rtc.is_alive() {
                peer.timeout = Instant::now() + Duration::from_secs(3600);
                if !peer.disconnected_reported {
                    peer.disconnected_reported = true;
                    part.emit(PeerEvent::MediaDisconnected {
                        role,
                        reason: "the peer connection closed".into(),
                    });
                }
                return;
            }
            match peer.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    peer.timeout = at;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    // UDP is lossy anyway: a full socket buffer drops this datagram only.
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(event)) => self.handle_event(slot, role, event),
                Err(e) => {
                    peer.rtc.disconnect();
                    warn!(participant = %part.key, ?role, "peer failed: {e}");
                }
            }
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Join {
                participant,
                room,
                options,
                events,
                reply,
            } => {
                let _ = reply.send(self.join(participant, room, options, events));
            }
            Command::PublisherOffer {
                participant,
                sdp,
                reply,
            } => {
                let _ = reply.send(self.publisher_offer(&participant, &sdp));
            }
            Command::SubscriberAnswer {
                participant,
                sdp,
                reply,
            } => {
                let _ = reply.send(self.subscriber_answer(&participant, &sdp));
            }
            Command::RemoteCandidate {
                participant,
                role,
                candidate,
            } => self.remote_candidate(&participant, role, &candidate),
            Command::ExpectTrack { participant, track } => self.expect_track(&participant, track),
            Command::SetTrackMuted {
                participant,
                sid,
                muted,
            } => self.set_track_muted(&participant, &sid, muted),
            Command::Subscribe {
                participant,
                track_sids,
                subscribe,
            } => self.set_subscriptions(&participant, &track_sids, subscribe),
            Command::SendData {
                to,
                reliable,
                payload,
            } => self.send_data(&to, reliable, &payload),
            Command::Leave { participant, reply } => {
                let stats = match self.by_key.get(&participant).copied() {
                    Some(slot) => self.remove_participant(slot),
                    None => Default::default(),
                };
                let _ = reply.send(stats);
            }
            Command::Shutdown => {}
        }
    }

    fn join(
        &mut self,
        key: String,
        room: String,
        options: JoinOptions,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Result<(), SfuError> {
        if self.by_key.contains_key(&key) {
            return Err(SfuError::DuplicateParticipant(key));
        }
        let now = Instant::now();
        let mut publisher = Peer::new(new_rtc(now), now);
        let mut subscriber = Peer::new(new_rtc(now), now);
        for addr in &self.advertise {
            let candidate = Candidate::host(*addr, "udp")
                .map_err(|e| SfuError::Config(format!("bad host candidate {addr}: {e}")))?;
            publisher.rtc.add_local_candidate(candidate.clone());
            subscriber.rtc.add_local_candidate(candidate);
        }
        let participant = Participant {
            key: key.clone(),
            room: room.clone(),
            options,
            events,
            publisher,
            subscriber,
            expected: Vec::new(),
            tracks: Vec::new(),
            ssrc_tracks: HashMap::new(),
            out: Vec::new(),
            pending_offer: None,
            channels: DataChannels::default(),
            stats: Default::default(),
        };
        let slot = match self.parts.iter().position(Option::is_none) {
            Some(slot) => {
                self.parts[slot] = Some(participant);
                slot
            }
            None => {
                self.parts.push(Some(participant));
                self.parts.len() - 1
            }
        };
        self.by_key.insert(key, slot);
        let members = self.rooms.entry(room).or_default();
        let others: Vec<Slot> = members.clone();
        members.push(slot);
        if options.auto_subscribe && options.can_subscribe {
            for publisher in others {
                self.subscribe_all_of(slot, publisher);
            }
            self.negotiate(slot);
        }
        Ok(())
    }

    /// The slot of a participant a command is about; it becomes the one a panic is pinned on.
    fn slot_of(&mut self, key: &str) -> Result<Slot, SfuError> {
        let slot = self
            .by_key
            .get(key)
            .copied()
            .ok_or_else(|| SfuError::UnknownParticipant(key.to_owned()))?;
        self.current = Some(slot);
        Ok(slot)
    }

    fn publisher_offer(&mut self, key: &str, sdp: &str) -> Result<String, SfuError> {
        let slot = self.slot_of(key)?;
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let Some(part) = self.parts[slot].as_mut() else {
            return Err(SfuError::UnknownParticipant(key.to_owned()));
        };
        let answer = part
            .publisher
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::Negotiation(e.to_string()))?;
        self.drain(slot, PeerRole::Publisher);
        // The codec each announced track asked for, by the mid its msid sits on.
        let wanted: Vec<(String, String)> = match self.parts[slot].as_ref() {
            Some(part) => crate::sdp_order::msid_tracks(sdp)
                .into_iter()
                .filter_map(|(mid, cid)| Some((mid, part.codec_for_cid(&cid)?.to_owned())))
                .collect(),
            None => Vec::new(),
        };
        let answer = crate::sdp_order::order_answer(sdp, &answer.to_sdp_string(), |mid| {
            wanted
                .iter()
                .find(|(m, _)| m == mid)
                .map(|(_, c)| c.clone())
        });
        tracing::trace!(
            participant = key,
            offer = sdp,
            answer,
            "publisher negotiation"
        );
        Ok(answer)
    }

    fn subscriber_answer(&mut self, key: &str, sdp: &str) -> Result<(), SfuError> {
        let slot = self.slot_of(key)?;
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let Some(part) = self.parts[slot].as_mut() else {
            return Err(SfuError::UnknownParticipant(key.to_owned()));
        };
        let pending = part.pending_offer.take().ok_or(SfuError::NoPendingOffer)?;
        part.subscriber
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| SfuError::Negotiation(e.to_string()))?;
        self.drain(slot, PeerRole::Subscriber);
        self.answer_applied(slot);
        Ok(())
    }

    fn remote_candidate(&mut self, key: &str, role: PeerRole, candidate: &str) {
        let Ok(slot) = self.slot_of(key) else {
            return;
        };
        let line = candidate.strip_prefix("a=").unwrap_or(candidate);
        match Candidate::from_sdp_string(line) {
            Ok(candidate) => {
                if let Some(part) = self.parts[slot].as_mut() {
                    part.peer_mut(role).rtc.add_remote_candidate(candidate);
                    self.drain(slot, role);
                }
            }
            Err(e) => debug!(participant = key, "ignored a remote candidate: {e}"),
        }
    }

    fn expect_track(&mut self, key: &str, track: ExpectedTrack) {
        if let Ok(slot) = self.slot_of(key) {
            if let Some(part) = self.parts[slot].as_mut() {
                part.expected.retain(|t| t.cid != track.cid);
                part.expected.push(track);
            }
        }
    }

    fn set_track_muted(&mut self, key: &str, sid: &str, muted: bool) {
        let Ok(slot) = self.slot_of(key) else {
            return;
        };
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        let Some(index) = part.track_index_by_sid(sid) else {
            return;
        };
        if let Some(track) = part.tracks[index].as_mut() {
            track.muted = muted;
            if !muted {
                // Resuming video needs a fresh keyframe at every subscriber.
                self.keyframe_queue.push((slot, index));
            }
        }
    }

    fn send_data(&mut self, to: &[String], reliable: bool, payload: &[u8]) {
        for key in to {
            let Ok(slot) = self.slot_of(key) else {
                continue;
            };
            let Some(part) = self.parts[slot].as_mut() else {
                continue;
            };
            let channel = if reliable {
                part.channels.reliable
            } else {
                part.channels.lossy.or(part.channels.reliable)
            };
            let Some(channel) = channel else {
                debug!(participant = %key, "no data channel open yet; message dropped");
                continue;
            };
            if let Some(mut channel) = part.publisher.rtc.channel(channel) {
                match channel.write(true, payload) {
                    Ok(true) => {}
                    Ok(false) => debug!(participant = %key, "data channel full; message dropped"),
                    Err(e) => debug!(participant = %key, "data channel write failed: {e}"),
                }
            }
            self.drain(slot, PeerRole::Publisher);
        }
    }

    /// Removes a participant and every reference other participants hold to it.
    fn remove_participant(&mut self, slot: Slot) -> crate::ParticipantStats {
        let Some(mut part) = self.parts[slot].take() else {
            return Default::default();
        };
        self.by_key.remove(&part.key);
        for addr in part.publisher.addrs.iter().chain(&part.subscriber.addrs) {
            self.by_addr.remove(addr);
        }
        if let Some(members) = self.rooms.get_mut(&part.room) {
            members.retain(|s| *s != slot);
            if members.is_empty() {
                self.rooms.remove(&part.room);
            }
        }
        // Its published tracks disappear at every subscriber.
        for track in part.tracks.iter().flatten() {
            for &(sub, out) in &track.subscribers {
                self.source_gone(sub, out);
            }
        }
        // Its subscriptions no longer hold places at the publishers.
        for out in part.out.iter().flatten() {
            if let Some((publisher, track)) = out.source {
                if let Some(Some(track)) = self.parts[publisher]
                    .as_mut()
                    .map(|p| p.tracks.get_mut(track).and_then(Option::as_mut))
                {
                    track.subscribers.retain(|(s, _)| *s != slot);
                }
            }
        }
        let mut touched: Vec<Slot> = self.rooms.get(&part.room).cloned().unwrap_or_default();
        touched.retain(|s| *s != slot);
        for sub in touched {
            self.negotiate(sub);
        }
        part.publisher.rtc.disconnect();
        part.subscriber.rtc.disconnect();
        part.stats.packets_lost += part
            .tracks
            .iter()
            .flatten()
            .flat_map(|t| &t.layers)
            .map(crate::participant::Layer::lost)
            .sum::<u64>();
        part.stats
    }
}
