//! The media loop: one task that drives every PeerConnection of the participants given to
//! it — UDP or TCP in and out, str0m timers, synthetic media out, RTP in.
//!
//! A load test puts hundreds of PeerConnections on a thread. Each has its own UDP socket
//! (the server tells its peers apart by source address) or ICE-TCP connection (`tcp.rs`),
//! but they all live in one task: sockets report readiness through a `SelectAll`, so only
//! sockets with data are read, and every deadline (str0m's timeouts, the next frame of each
//! source) sits in one heap. No packet crosses a channel or a lock on its way between the
//! socket and str0m.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::stream::{SelectAll, Stream, StreamExt as _};
use hdrhistogram::Histogram;

use str0m::net::Protocol;
use str0m::{Input, Output};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use crate::state::{Part, PeerSlot, PeerSocket, Role};
use crate::tcp::Transmitted;
use crate::{ClientError, ParticipantEvent, TrackSpec, Transport};

/// Reads from one socket (datagrams, or TCP reads of many frames) before others get their
/// turn.
pub(crate) const READ_BURST: usize = 64;
/// Outputs handled for one peer in one go; str0m always ends with a timeout, this only
/// guards against a peer that would never yield.
const DRAIN_LIMIT: usize = 10_000;
/// Latencies above this are clamped (a stalled run, not a measurement).
const LATENCY_MAX_US: u64 = 60_000_000;

/// Totals of one driver, readable at any time without asking the loop.
#[derive(Debug, Default)]
pub struct Counters {
    pub packets_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub packets_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Datagrams dropped because an ICE-TCP connection's send queue was full.
    pub tcp_datagrams_dropped: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub packets_received: u64,
    pub bytes_received: u64,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub tcp_datagrams_dropped: u64,
}

/// Handle to a media loop. Cloning it shares the loop; the loop ends when every handle and
/// every participant on it is gone.
#[derive(Clone, Debug)]
pub struct Driver {
    commands: mpsc::UnboundedSender<Command>,
    counters: Arc<Counters>,
}

pub(crate) enum Command {
    Add {
        id: u64,
        events: mpsc::UnboundedSender<ParticipantEvent>,
        started: Instant,
        bind: IpAddr,
        downlink: Option<crate::LinkCap>,
        transport: Transport,
        reply: oneshot::Sender<()>,
    },
    PublisherOffer {
        id: u64,
        tracks: Vec<TrackSpec>,
        data_channels: bool,
        reply: oneshot::Sender<Result<String, ClientError>>,
    },
    PublisherAnswer {
        id: u64,
        sdp: String,
        ready: oneshot::Sender<Result<(), ClientError>>,
    },
    SubscriberOffer {
        id: u64,
        sdp: String,
        mid_to_track: HashMap<String, String>,
        reply: oneshot::Sender<Result<String, ClientError>>,
    },
    Stats {
        id: u64,
        reply: oneshot::Sender<Option<crate::DriverStats>>,
    },
    Remove {
        id: u64,
        reply: oneshot::Sender<Option<crate::DriverStats>>,
    },
    Latency {
        reset: bool,
        reply: oneshot::Sender<Histogram<u64>>,
    },
}

impl Driver {
    /// Starts a media loop on the current tokio runtime. On a current-thread runtime every
    /// participant given to it runs on that one thread.
    pub fn spawn() -> Driver {
        // str0m needs a process-wide crypto provider; installing it again is harmless. The
        // shared DTLS set-up is made here, not in the first participant's join.
        str0m::crypto::from_feature_flags().install_process_default();
        switchboard_dtls::prepare();
        let (commands, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let media = Loop::new(Arc::clone(&counters));
        tokio::spawn(media.run(rx));
        Driver { commands, counters }
    }

    pub fn counters(&self) -> CounterSnapshot {
        let c = &self.counters;
        CounterSnapshot {
            packets_received: c.packets_received.load(Ordering::Relaxed),
            bytes_received: c.bytes_received.load(Ordering::Relaxed),
            packets_sent: c.packets_sent.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            tcp_datagrams_dropped: c.tcp_datagrams_dropped.load(Ordering::Relaxed),
        }
    }

    /// End-to-end latencies (µs) of stamped packets received by this loop's participants,
    /// since the start or the last reset; `reset` starts a new window.
    pub async fn latency(&self, reset: bool) -> Result<Histogram<u64>, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Latency { reset, reply })?;
        rx.await.map_err(|_| ClientError::DriverGone)
    }

    pub(crate) fn send(&self, command: Command) -> Result<(), ClientError> {
        self.commands
            .send(command)
            .map_err(|_| ClientError::DriverGone)
    }

    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply))?;
        rx.await.map_err(|_| ClientError::DriverGone)
    }
}

/// The loop's buffer for TCP reads: ~50 frames of media in one read.
const TCP_READ_BUFFER: usize = 64 * 1024;

/// What a deadline in the heap is for. Entries are never removed early: one whose peer or
/// source changed (generation, or a different deadline) is skipped when it comes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    Peer {
        peer: usize,
        gen: u64,
    },
    Source {
        part: usize,
        source: usize,
        gen: u64,
    },
    /// A paced source may release more packets.
    Pace {
        part: usize,
        source: usize,
        gen: u64,
    },
    /// Datagrams leave a peer's simulated bottleneck (`link.rs`).
    Link {
        peer: usize,
        gen: u64,
    },
}

/// Yields a peer's key, and which socket it is, each time its socket has something to read.
/// Holds the socket weakly: when the peer is dropped (or its TCP connection closed), the
/// socket closes and the stream ends.
struct Readable {
    peer: usize,
    gen: u64,
    socket: Watched,
}

enum Watched {
    Udp(Weak<UdpSocket>),
    Tcp(Weak<TcpStream>),
}

impl Stream for Readable {
    type Item = (usize, u64, Protocol);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let (ready, proto) = match &self.socket {
            Watched::Udp(socket) => match socket.upgrade() {
                Some(socket) => (socket.poll_recv_ready(cx), Protocol::Udp),
                None => return Poll::Ready(None),
            },
            Watched::Tcp(stream) => match stream.upgrade() {
                Some(stream) => (stream.poll_read_ready(cx), Protocol::Tcp),
                None => return Poll::Ready(None),
            },
        };
        match ready {
            Poll::Ready(Ok(())) => Poll::Ready(Some((self.peer, self.gen, proto))),
            Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

pub(crate) struct Loop {
    pub counters: Arc<Counters>,
    pub parts: Vec<Option<Part>>,
    pub by_id: HashMap<u64, usize>,
    pub peers: Vec<Option<PeerSlot>>,
    pub timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    pub latency: Histogram<u64>,
    readable: SelectAll<Readable>,
    next_gen: u64,
    buf: Vec<u8>,
    /// TCP reads: one read takes many frames.
    pub tcp_buf: Vec<u8>,
}

impl Loop {
    fn new(counters: Arc<Counters>) -> Self {
        Self {
            counters,
            parts: Vec::new(),
            by_id: HashMap::new(),
            peers: Vec::new(),
            timers: BinaryHeap::new(),
            latency: new_latency_histogram(),
            readable: SelectAll::new(),
            next_gen: 1,
            buf: vec![0u8; 2048],
            tcp_buf: vec![0u8; TCP_READ_BUFFER],
        }
    }

    pub fn gen(&mut self) -> u64 {
        self.next_gen += 1;
        self.next_gen
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut open = true;
        loop {
            if !open && self.by_id.is_empty() {
                return;
            }
            let wake = self
                .timers
                .peek()
                .map_or_else(|| Instant::now() + Duration::from_secs(1), |t| t.0 .0);
            sleep.as_mut().reset(tokio::time::Instant::from_std(wake));
            tokio::select! {
                command = commands.recv(), if open => match command {
                    Some(command) => self.handle_command(command),
                    None => open = false,
                },
                Some((peer, gen, proto)) = self.readable.next() => match proto {
                    Protocol::Udp => self.read(peer, gen),
                    _ => self.read_tcp(peer, gen),
                },
                _ = &mut sleep => {}
            }
            self.run_timers();
        }
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
            if at > now {
                return;
            }
            self.timers.pop();
            match timer {
                Timer::Peer { peer, gen } => {
                    let due = matches!(self.peers.get(peer), Some(Some(p)) if p.gen == gen && p.timeout == at);
                    if due {
                        if let Some(Some(p)) = self.peers.get_mut(peer) {
                            let _ = p.rtc.handle_input(Input::Timeout(now));
                        }
                        self.drive(peer);
                    }
                }
                Timer::Source { part, source, gen } => self.send_frame(part, source, gen, at, now),
                Timer::Pace { part, source, gen } => self.pace(part, source, gen, at, now),
                Timer::Link { peer, gen } => self.leave_bottleneck(peer, gen, now),
            }
        }
    }

    /// Reads what one socket has (up to a burst) and feeds it to its peer.
    fn read(&mut self, index: usize, gen: u64) {
        for _ in 0..READ_BURST {
            let Some(Some(peer)) = self.peers.get_mut(index) else {
                return;
            };
            if peer.gen != gen {
                return;
            }
            let PeerSocket::Udp { socket, .. } = &peer.socket else {
                return;
            };
            let (len, source) = match socket.try_recv_from(&mut self.buf) {
                Ok(received) => received,
                Err(_) => return, // WouldBlock: drained. Other errors: nothing to read.
            };
            let now = Instant::now();
            if let Some(link) = peer.bottleneck.as_mut() {
                let idle = link.next_departure().is_none();
                if let (Some(leaves), true) = (link.admit(now, source, &self.buf[..len]), idle) {
                    let timer = Timer::Link { peer: index, gen };
                    self.timers.push(Reverse((leaves, timer)));
                }
                continue;
            }
            peer.receive(now, Protocol::Udp, source, &self.buf[..len]);
            self.drive(index);
        }
    }

    /// Hands a peer the datagrams that left its bottleneck by `now`, one at a time with
    /// its output drained after each (as str0m wants), and arms the timer for the next.
    fn leave_bottleneck(&mut self, index: usize, gen: u64, now: Instant) {
        loop {
            let Some(Some(peer)) = self.peers.get_mut(index) else {
                return;
            };
            if peer.gen != gen {
                return;
            }
            let Some(link) = peer.bottleneck.as_mut() else {
                return;
            };
            let Some((source, datagram)) = link.release(now) else {
                if let Some(next) = link.next_departure() {
                    self.timers
                        .push(Reverse((next, Timer::Link { peer: index, gen })));
                }
                return;
            };
            // A bottleneck is UDP's only: `Participant::join` refuses one over TCP.
            peer.receive(now, Protocol::Udp, source, &datagram);
            self.drive(index);
        }
    }

    /// Handles a peer's output until str0m asks for time, and arms its timer.
    pub fn drive(&mut self, index: usize) {
        let mut now = Instant::now();
        for _ in 0..DRAIN_LIMIT {
            let Some(Some(peer)) = self.peers.get_mut(index) else {
                return;
            };
            if !peer.rtc.is_alive() {
                let part = peer.part;
                let role = peer.role;
                self.peer_closed(part, role, "the peer connection closed");
                return;
            }
            match peer.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    if at <= now {
                        // Queued RTP goes out on the next timeout: give it now.
                        now = Instant::now();
                        let _ = peer.rtc.handle_input(Input::Timeout(now));
                        continue;
                    }
                    if peer.timeout != at {
                        peer.timeout = at;
                        let timer = Timer::Peer {
                            peer: index,
                            gen: peer.gen,
                        };
                        self.timers.push(Reverse((at, timer)));
                    }
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let outcome = peer.transmit(t.proto, &t.contents, t.destination);
                    // Always `Done` over UDP; the rest is ICE-TCP's (tcp.rs).
                    if !matches!(outcome, Transmitted::Done) && !self.transmitted(index, outcome) {
                        return;
                    }
                }
                Ok(Output::Event(event)) => {
                    let (part, role) = (peer.part, peer.role);
                    self.on_event(part, role, index, event);
                }
                Err(e) => {
                    peer.rtc.disconnect();
                    let part = peer.part;
                    let role = peer.role;
                    self.peer_closed(part, role, &format!("the peer connection failed: {e}"));
                    return;
                }
            }
        }
    }

    /// A new str0m peer with one host candidate at `bind`: on its own UDP socket, or an
    /// active TCP candidate whose connection opens at its first transmit.
    pub fn new_peer(
        &mut self,
        part: usize,
        role: Role,
        bind: IpAddr,
        transport: Transport,
    ) -> Result<usize, ClientError> {
        let (socket, local, candidate) = PeerSocket::open(transport, bind)?;
        let watched = match &socket {
            PeerSocket::Udp { socket, .. } => Some(Watched::Udp(Arc::downgrade(socket))),
            // Watched once connected (`watch_tcp`).
            PeerSocket::Tcp(_) => None,
        };
        let mut rtc = crate::state::new_rtc(Instant::now());
        rtc.add_local_candidate(candidate);
        let gen = self.gen();
        let slot = PeerSlot {
            part,
            role,
            gen,
            rtc,
            socket,
            local,
            timeout: Instant::now(),
            connected: false,
            bottleneck: None,
        };
        let index = match self.peers.iter().position(Option::is_none) {
            Some(i) => {
                self.peers[i] = Some(slot);
                i
            }
            None => {
                self.peers.push(Some(slot));
                self.peers.len() - 1
            }
        };
        if let Some(socket) = watched {
            self.readable.push(Readable {
                peer: index,
                gen,
                socket,
            });
        }
        Ok(index)
    }

    /// Reads of a peer's new TCP connection wake the loop from now on.
    pub(crate) fn watch_tcp(&mut self, peer: usize, gen: u64, stream: Weak<TcpStream>) {
        self.readable.push(Readable {
            peer,
            gen,
            socket: Watched::Tcp(stream),
        });
    }

    /// Closes a peer: str0m's goodbyes go out, then the socket closes with the slot.
    pub fn drop_peer(&mut self, index: usize) {
        if let Some(Some(peer)) = self.peers.get_mut(index) {
            if let PeerSocket::Tcp(link) = &mut peer.socket {
                link.closing();
            }
            peer.rtc.disconnect();
            while let Ok(output) = peer.rtc.poll_output() {
                match output {
                    Output::Transmit(t) => {
                        // Best effort: the slot and its socket go next.
                        let _ = peer.transmit(t.proto, &t.contents, t.destination);
                    }
                    Output::Timeout(_) => break,
                    Output::Event(_) => {}
                }
            }
        }
        if let Some(slot) = self.peers.get_mut(index) {
            *slot = None;
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Add {
                id,
                events,
                started,
                bind,
                downlink,
                transport,
                reply,
            } => {
                let gen = self.gen();
                let mut part = Part::new(gen, events, started, bind);
                part.downlink = downlink;
                part.transport = transport;
                let index = match self.parts.iter().position(Option::is_none) {
                    Some(i) => {
                        self.parts[i] = Some(part);
                        i
                    }
                    None => {
                        self.parts.push(Some(part));
                        self.parts.len() - 1
                    }
                };
                self.by_id.insert(id, index);
                let _ = reply.send(());
            }
            Command::PublisherOffer {
                id,
                tracks,
                data_channels,
                reply,
            } => {
                let result = self.publisher_offer(id, tracks, data_channels);
                let _ = reply.send(result);
            }
            Command::PublisherAnswer { id, sdp, ready } => self.publisher_answer(id, &sdp, ready),
            Command::SubscriberOffer {
                id,
                sdp,
                mid_to_track,
                reply,
            } => {
                let result = self.subscriber_offer(id, &sdp, mid_to_track);
                let _ = reply.send(result);
            }
            Command::Stats { id, reply } => {
                let stats = self.by_id.get(&id).and_then(|&i| self.stats_of(i));
                let _ = reply.send(stats);
            }
            Command::Remove { id, reply } => {
                let stats = self.by_id.remove(&id).and_then(|index| {
                    let stats = self.stats_of(index);
                    let part = self.parts.get_mut(index).and_then(Option::take)?;
                    for peer in [part.publisher, part.subscriber].into_iter().flatten() {
                        self.drop_peer(peer);
                    }
                    stats
                });
                let _ = reply.send(stats);
            }
            Command::Latency { reset, reply } => {
                let histogram = if reset {
                    std::mem::replace(&mut self.latency, new_latency_histogram())
                } else {
                    self.latency.clone()
                };
                let _ = reply.send(histogram);
            }
        }
    }

    pub fn record_latency(&mut self, arrival: Instant, stamp_ns: u64) {
        let arrival_ns = crate::media::stamp_of(arrival);
        let micros = arrival_ns.saturating_sub(stamp_ns) / 1000;
        self.latency
            .saturating_record(micros.clamp(1, LATENCY_MAX_US));
    }
}

/// Microseconds from 1 µs to a minute, three significant digits.
pub fn new_latency_histogram() -> Histogram<u64> {
    // Invariant: constant bounds hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}
