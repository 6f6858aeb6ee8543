//! **Not public API.** A media worker whose peers are connected in memory, for the criterion
//! benches in `benches/` (feature `bench`). It may change or go away at any time.
//!
//! The worker's datagrams go to a sink instead of a socket. Each participant's str0m peer on
//! the worker is connected to a str0m client peer held here, by passing datagrams between
//! them (as str0m's own tests connect two `Rtc`s): ICE, DTLS and SRTP are the real thing.
//! Once connected, the bench feeds the worker one SRTP datagram from the publisher per
//! iteration and the worker writes one SRTP packet per subscriber into the counting sink.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::sync::{mpsc, oneshot};

use crate::api::{Command, DtlsPeers, ExpectedTrack, JoinOptions, PeerEvent, TrackKind};
use crate::worker::{DatagramSink, Worker};

/// How long connecting the rig may take before it gives up.
const SETUP_LIMIT: Duration = Duration::from_secs(30);
/// Payload of every forwarded video packet: a full-size packet, as the load targets assume.
pub const VIDEO_PAYLOAD: usize = 1200;

/// What the worker's sink does with a datagram.
#[derive(Default)]
struct SinkState {
    /// While connecting, datagrams are kept to be delivered to the client peers.
    capture: Cell<bool>,
    captured: RefCell<Vec<(SocketAddr, Vec<u8>)>>,
    /// Buffers of datagrams sent (or delivered, when captured), reused for the next ones as
    /// the production sink reuses its own: without this every packet would cost the worker
    /// an allocation that production does not pay.
    spare: RefCell<Vec<Vec<u8>>>,
    packets: Cell<u64>,
    bytes: Cell<u64>,
    rtp: Cell<u64>,
}

struct RigSink(Rc<SinkState>);

impl DatagramSink for RigSink {
    fn send(&mut self, data: Vec<u8>, to: crate::ice_tcp::Route) {
        let to = to.addr();
        let state = &self.0;
        state.packets.set(state.packets.get() + 1);
        state.bytes.set(state.bytes.get() + data.len() as u64);
        if is_rtp(&data) {
            state.rtp.set(state.rtp.get() + 1);
        }
        if state.capture.get() {
            state.captured.borrow_mut().push((to, data));
        } else {
            state.recycle(data);
        }
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.0.spare.borrow_mut().pop().unwrap_or_default()
    }
}

impl SinkState {
    /// Keeps `data`'s buffer for a later datagram (as many as the production sink keeps).
    fn recycle(&self, mut data: Vec<u8>) {
        let mut spare = self.spare.borrow_mut();
        if spare.len() < crate::sink::SPARE_BUFFERS {
            data.clear();
            spare.push(data);
        }
    }
}

/// A client-side str0m peer, full ICE, talking to one of the worker's peers.
struct ClientPeer {
    rtc: Rtc,
    addr: SocketAddr,
    connected: bool,
    rtp_received: u64,
    /// With `record`: every RTP packet received, as (sequence number, payload), for tests.
    record: bool,
    pub(crate) received: Vec<(u64, Vec<u8>)>,
}

impl ClientPeer {
    /// Hands the peer a datagram the worker at `server` sent it; false if str0m cannot read
    /// it at all (nothing was handed).
    fn receive(&mut self, server: SocketAddr, data: &[u8], now: Instant) -> bool {
        let Ok(contents) = data.try_into() else {
            return false;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: server,
                destination: self.addr,
                contents,
            },
        );
        let _ = self.rtc.handle_input(input);
        true
    }

    fn new(addr: SocketAddr) -> Result<Self, String> {
        // RTP mode: the publisher writes packets directly; subscribers do not depacketize.
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
        let candidate = Candidate::host(addr, "udp").map_err(|e| e.to_string())?;
        rtc.add_local_candidate(candidate);
        Ok(Self {
            rtc,
            addr,
            connected: false,
            rtp_received: 0,
            record: false,
            received: Vec::new(),
        })
    }
}

/// A worker with one publisher of one track and `subscribers` connected subscribers, plus
/// `idle` participants of other rooms that are joined but never connect.
pub struct ForwardRig {
    worker: Worker,
    sink: Rc<SinkState>,
    server: SocketAddr,
    publisher: ClientPeer,
    subscribers: Vec<ClientPeer>,
    /// Keeps the participants' event channels open (the worker drops events otherwise).
    _events: Vec<mpsc::UnboundedReceiver<PeerEvent>>,
    mid: Mid,
    pt: Pt,
    seq: u64,
    rtp_time: u32,
    /// The clock [`ForwardRig::forward_with_feedback`] hands in, once it has run.
    clock: Option<Instant>,
}

fn client_addr(index: usize) -> SocketAddr {
    let port = 20_000 + index as u16;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// True for RTP (not RTCP, STUN or DTLS): the datagrams the bench times.
fn is_rtp(data: &[u8]) -> bool {
    data.len() > 1 && (128..192).contains(&data[0]) && !(192..224).contains(&data[1])
}

impl ForwardRig {
    /// Builds and connects the rig: ICE, DTLS, negotiation of the publisher's VP8 track and
    /// of every subscriber's m-line, until every subscriber has received media.
    pub fn new(subscribers: usize, idle: usize) -> Result<Self, String> {
        Self::build(subscribers, idle, false, true)
    }

    /// The rig with bandwidth estimation on or off (`WorkerLimits::bandwidth_estimation`):
    /// on, the subscribers' PCs negotiate transport-wide feedback.
    pub fn with_estimation(subscribers: usize, estimation: bool) -> Result<Self, String> {
        Self::build(subscribers, 0, false, estimation)
    }

    /// The rig with single-PC (signaling v1) subscribers: each offers one receive line, which
    /// the publisher's track takes.
    pub fn single_pc(subscribers: usize) -> Result<Self, String> {
        Self::build(subscribers, 0, true, true)
    }

    fn build(
        subscribers: usize,
        idle: usize,
        single_pc: bool,
        estimation: bool,
    ) -> Result<Self, String> {
        crate::rtc_config::install_crypto();
        let sink = Rc::new(SinkState::default());
        sink.capture.set(true);
        let server = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7000);
        let mut worker = Worker::new(0, Box::new(RigSink(Rc::clone(&sink))), vec![server]);
        worker.limits.bandwidth_estimation = estimation;
        let mut events = Vec::new();
        let join = |worker: &mut Worker, key: &str, room: &str, single_pc: bool| {
            let (tx, rx) = mpsc::unbounded_channel();
            let (reply, _answer) = oneshot::channel();
            worker.handle_command(
                Command::Join {
                    participant: key.to_owned(),
                    identity: key.to_owned(),
                    room: room.to_owned(),
                    options: JoinOptions {
                        auto_subscribe: true,
                        can_subscribe: true,
                        can_publish: true,
                        single_pc,
                        dtls: DtlsPeers::Ecdsa,
                    },
                    events: tx,
                    reply,
                },
                std::time::Instant::now(),
            );
            rx
        };
        for i in 0..idle {
            events.push(join(
                &mut worker,
                &format!("PA_idle{i}"),
                &format!("idle-{i}"),
                false,
            ));
        }
        let mut sub_events = Vec::new();
        for i in 0..subscribers {
            sub_events.push(join(&mut worker, &format!("PA_sub{i}"), "bench", single_pc));
        }
        events.push(join(&mut worker, "PA_pub", "bench", false));
        worker.handle_command(
            Command::ExpectTrack {
                participant: "PA_pub".into(),
                track: ExpectedTrack {
                    cid: "bench-video".into(),
                    codec_cids: Vec::new(),
                    sid: "TR_bench".into(),
                    kind: TrackKind::Video,
                    codec: Some("vp8".into()),
                    screen: false,
                    layers: Vec::new(),
                },
            },
            std::time::Instant::now(),
        );

        let mut publisher = ClientPeer::new(client_addr(0))?;
        let mut api = publisher.rtc.sdp_api();
        let mid = api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            Some("bench-stream".into()),
            Some("bench-video".into()),
            None,
        );
        let (offer, pending) = api.apply().ok_or("the publisher made no offer")?;
        let answer = worker
            .publisher_offer("PA_pub", &offer.to_sdp_string())
            .map_err(|e| e.to_string())?;
        let answer = SdpAnswer::from_sdp_string(&answer).map_err(|e| e.to_string())?;
        publisher
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| e.to_string())?;
        let pt = publisher
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Vp8)
            .map(|p| p.pt())
            .ok_or("no VP8 in the publisher's config")?;

        let mut rig = ForwardRig {
            worker,
            sink,
            server,
            publisher,
            subscribers: Vec::with_capacity(subscribers),
            _events: events,
            mid,
            pt,
            seq: 1,
            rtp_time: 0,
            clock: None,
        };
        // Once the publisher is connected the worker binds its track and offers it to every
        // subscriber.
        let started = Instant::now();
        if single_pc {
            rig.single_pc_subscribers(subscribers, started)?;
        }
        let mut offers: Vec<Option<String>> = vec![None; if single_pc { 0 } else { subscribers }];
        while offers.iter().any(Option::is_none) {
            if started.elapsed() > SETUP_LIMIT {
                return Err("not every subscriber got an offer".into());
            }
            rig.pump();
            for (rx, offer) in sub_events.iter_mut().zip(offers.iter_mut()) {
                while let Ok(event) = rx.try_recv() {
                    if let PeerEvent::SubscriberOffer { sdp, .. } = event {
                        *offer = Some(sdp);
                    }
                }
            }
        }
        for (i, offer) in offers.into_iter().flatten().enumerate() {
            let mut client = ClientPeer::new(client_addr(i + 1))?;
            let offer = SdpOffer::from_sdp_string(&offer).map_err(|e| e.to_string())?;
            let answer = client
                .rtc
                .sdp_api()
                .accept_offer(offer)
                .map_err(|e| e.to_string())?;
            rig.worker
                .subscriber_answer(&format!("PA_sub{i}"), &answer.to_sdp_string())
                .map_err(|e| e.to_string())?;
            rig.subscribers.push(client);
        }
        rig._events.extend(sub_events);
        while !(rig.publisher.connected && rig.subscribers.iter().all(|c| c.connected)) {
            if started.elapsed() > SETUP_LIMIT {
                return Err("the peers did not connect".into());
            }
            rig.pump();
        }
        // Media until every subscriber got some: the first packet is a keyframe, which
        // subscribers wait for; later ones are delta frames.
        while rig.subscribers.iter().any(|c| c.rtp_received == 0) {
            if started.elapsed() > SETUP_LIMIT {
                return Err("media did not reach every subscriber".into());
            }
            let keyframe = rig.seq == 1;
            for datagram in rig.publisher_datagrams(1, keyframe)? {
                rig.worker
                    .handle_datagram(&datagram, rig.publisher.addr, Instant::now());
            }
            rig.pump();
        }
        rig.sink.capture.set(false);
        Ok(rig)
    }

    /// Once the publisher's track is bound, each single-PC subscriber offers one receive line
    /// and takes the answer, which binds the track to it.
    fn single_pc_subscribers(
        &mut self,
        subscribers: usize,
        started: Instant,
    ) -> Result<(), String> {
        let bound = |worker: &Worker| {
            worker
                .parts
                .iter()
                .flatten()
                .any(|p| p.key == "PA_pub" && p.tracks.iter().flatten().count() > 0)
        };
        while !bound(&self.worker) {
            if started.elapsed() > SETUP_LIMIT {
                return Err("the publisher's track did not bind".into());
            }
            self.pump();
        }
        for i in 0..subscribers {
            let mut client = ClientPeer::new(client_addr(i + 1))?;
            let mut api = client.rtc.sdp_api();
            api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
            let (offer, pending) = api.apply().ok_or("the subscriber made no offer")?;
            let answer = self
                .worker
                .offer(&format!("PA_sub{i}"), &offer.to_sdp_string())
                .map_err(|e| e.to_string())?;
            let answer = SdpAnswer::from_sdp_string(&answer.sdp).map_err(|e| e.to_string())?;
            client
                .rtc
                .sdp_api()
                .accept_answer(pending, answer)
                .map_err(|e| e.to_string())?;
            self.subscribers.push(client);
        }
        Ok(())
    }

    /// Exchanges whatever the peers have to say (STUN, DTLS, RTCP, media while connecting)
    /// and runs the worker's timeouts once.
    fn pump(&mut self) {
        let now = Instant::now();
        for client in std::iter::once(&mut self.publisher).chain(&mut self.subscribers) {
            let _ = client.rtc.handle_input(Input::Timeout(now));
            Self::poll_client(&mut self.worker, client);
        }
        self.worker.after_wake(std::time::Instant::now());
        let captured = std::mem::take(&mut *self.sink.captured.borrow_mut());
        for (to, data) in captured {
            let client = std::iter::once(&mut self.publisher)
                .chain(&mut self.subscribers)
                .find(|c| c.addr == to);
            let Some(client) = client else {
                continue;
            };
            if client.receive(self.server, &data, now) {
                // str0m holds one received packet at a time: read it before the next input.
                Self::poll_client(&mut self.worker, client);
            }
            self.sink.recycle(data);
        }
    }

    /// Handles a client peer's output until it asks for time; what it sends goes to the
    /// worker.
    fn poll_client(worker: &mut Worker, client: &mut ClientPeer) {
        loop {
            match client.rtc.poll_output() {
                Ok(Output::Timeout(_)) | Err(_) => break,
                Ok(Output::Transmit(t)) => {
                    worker.handle_datagram(&t.contents, client.addr, Instant::now())
                }
                Ok(Output::Event(Event::Connected)) => client.connected = true,
                Ok(Output::Event(Event::RtpPacket(packet))) => {
                    client.rtp_received += 1;
                    if client.record {
                        client
                            .received
                            .push((*packet.seq_no, packet.payload.to_vec()));
                    }
                }
                Ok(Output::Event(_)) => {}
            }
        }
    }

    /// `count` SRTP datagrams of the publisher, each one RTP packet with a 1200-byte VP8
    /// payload. Anything else the publisher sends meanwhile goes to the worker.
    fn publisher_datagrams(
        &mut self,
        count: usize,
        keyframe: bool,
    ) -> Result<Vec<Vec<u8>>, String> {
        self.publisher_datagrams_at(count, keyframe, Instant::now())
    }

    /// [`Self::publisher_datagrams`] on a clock handed in.
    fn publisher_datagrams_at(
        &mut self,
        count: usize,
        keyframe: bool,
        now: Instant,
    ) -> Result<Vec<Vec<u8>>, String> {
        let mut payload = vec![0u8; VIDEO_PAYLOAD];
        payload[0] = 0x10; // VP8 descriptor: start of partition 0.
        payload[1] = if keyframe { 0x00 } else { 0x01 }; // VP8 header: P bit.
        let payload: std::sync::Arc<[u8]> = payload.into();
        let mut out = Vec::with_capacity(count);
        // A bounded batch at a time, so the client's send queue never drops any.
        for chunk in (0..count).collect::<Vec<_>>().chunks(64) {
            {
                let mut api = self.publisher.rtc.direct_api();
                let stream = api
                    .stream_tx_by_mid(self.mid, None)
                    .ok_or("the publisher has no send stream")?;
                for _ in chunk {
                    stream.write_rtp(
                        RtpWrite::new(
                            self.pt,
                            self.seq.into(),
                            self.rtp_time,
                            now,
                            payload.clone(),
                        )
                        .marker(true)
                        .nackable(true),
                    );
                    self.seq += 1;
                    self.rtp_time = self.rtp_time.wrapping_add(3000);
                }
            }
            let _ = self.publisher.rtc.handle_input(Input::Timeout(now));
            loop {
                match self.publisher.rtc.poll_output() {
                    Ok(Output::Timeout(_)) | Err(_) => break,
                    Ok(Output::Transmit(t)) if is_rtp(&t.contents) => out.push(t.contents.to_vec()),
                    Ok(Output::Transmit(t)) => {
                        self.worker
                            .handle_datagram(&t.contents, self.publisher.addr, now);
                    }
                    Ok(Output::Event(_)) => {}
                }
            }
        }
        if out.len() != count {
            return Err(format!(
                "the publisher sent {} of {count} packets",
                out.len()
            ));
        }
        Ok(out)
    }

    /// Untimed: `count` publisher datagrams for [`ForwardRig::forward`], after a round of
    /// keep-alive traffic so the peers stay connected however long the bench runs.
    pub fn prepare(&mut self, count: usize) -> Vec<Vec<u8>> {
        self.sink.capture.set(true);
        self.pump();
        self.sink.capture.set(false);
        match self.publisher_datagrams(count, false) {
            Ok(datagrams) => datagrams,
            // Invariant of a connected rig; a bench has no better way to report it.
            Err(e) => panic!("the bench rig broke: {e}"),
        }
    }

    /// Timed: one loop turn of the worker woken by this publisher datagram.
    pub fn forward(&mut self, datagram: &[u8]) {
        self.worker
            .datagram_turn(datagram, self.publisher.addr, Instant::now());
    }

    /// For `crate::fuzzing::forward`: the publisher sends `payload` as its next RTP packet,
    /// `skip` sequence numbers after the last one and `ticks` later in RTP time. The worker
    /// takes the SRTP datagram, and the peers then exchange what follows (forwarded packets,
    /// RTCP, NACKs and their answers), since the sink keeps capturing.
    #[cfg(any(test, feature = "fuzz"))]
    pub(crate) fn fuzz_packet(&mut self, skip: u64, ticks: u32, marker: bool, payload: &[u8]) {
        self.sink.capture.set(true);
        self.seq += skip;
        self.rtp_time = self.rtp_time.wrapping_add(ticks);
        let now = Instant::now();
        {
            let mut api = self.publisher.rtc.direct_api();
            let Some(stream) = api.stream_tx_by_mid(self.mid, None) else {
                return;
            };
            let payload: std::sync::Arc<[u8]> = payload.into();
            stream.write_rtp(
                RtpWrite::new(self.pt, self.seq.into(), self.rtp_time, now, payload)
                    .marker(marker)
                    .nackable(true),
            );
        }
        self.seq += 1;
        let _ = self.publisher.rtc.handle_input(Input::Timeout(now));
        Self::poll_client(&mut self.worker, &mut self.publisher);
        self.worker.after_wake(std::time::Instant::now());
        self.pump();
    }

    /// For `crate::fuzzing::forward`: a datagram of the fuzzer's from the publisher's
    /// address, a subscriber's, or a stranger's.
    #[cfg(feature = "fuzz")]
    pub(crate) fn fuzz_datagram(&mut self, data: &[u8], source: u8) {
        let from = match source % 3 {
            0 => self.publisher.addr,
            1 => self
                .subscribers
                .first()
                .map_or(self.publisher.addr, |c| c.addr),
            _ => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 30_000),
        };
        self.worker.datagram_turn(data, from, Instant::now());
    }

    /// Datagrams and bytes the worker has sent since the rig was built.
    pub fn sent(&self) -> (u64, u64) {
        (self.sink.packets.get(), self.sink.bytes.get())
    }

    /// RTP datagrams the worker has sent since the rig was built.
    pub fn sent_rtp(&self) -> u64 {
        self.sink.rtp.get()
    }
}

#[path = "bench_feedback.rs"]
mod feedback;
pub use feedback::FeedbackRun;

#[cfg(test)]
#[path = "rig_tests.rs"]
mod tests;
