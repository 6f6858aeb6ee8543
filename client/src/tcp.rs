//! ICE-TCP for a client peer: an active TCP candidate (RFC 6544) and one connection to the
//! server's passive candidate, carrying STUN, DTLS, RTP and RTCP as RFC 4571 frames (a
//! 16-bit big-endian length before each datagram).
//!
//! The connection is opened at the peer's first TCP transmit (its first ICE check), to that
//! transmit's destination. The media loop never waits on it after that: reads take what the
//! socket has and keep an unfinished frame for the next read ([`Deframer`]); writes go out
//! as far as the socket takes them and the rest waits in a bounded queue ([`Outbound`]) that
//! the peer's later transmits and reads flush. A full queue drops whole datagrams, as a full
//! UDP socket buffer would, so the stream never carries half a frame.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use str0m::net::{Protocol, TcpType};
use str0m::Candidate;
use tokio::net::TcpStream;

use crate::driver::{Loop, READ_BURST};
use crate::state::PeerSocket;
use crate::{ClientError, Transport};

/// Bytes of the length before each frame.
const HEADER: usize = 2;
/// The longest frame taken from the server: the server's own limit for frames it reads
/// (sfu/src/ice_tcp), well above any datagram it sends (they fit an MTU).
pub(crate) const MAX_FRAME: usize = 2048;
/// Bytes a connection may hold back before datagrams are dropped: ~13 s of a 2.5 Mbit/s
/// video stream, so only a connection that has really stalled loses anything.
pub(crate) const MAX_QUEUED: usize = 4 * 1024 * 1024;
/// An emptied queue larger than this gives its memory back: a burst on one of hundreds of
/// peers should not keep megabytes for the rest of the run.
const KEEP_CAPACITY: usize = 64 * 1024;
/// The longest the loop blocks in a connect. On loopback a connect takes microseconds or is
/// refused at once; an unreachable server would otherwise stall every peer of the thread
/// for the kernel's SYN retries (minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The port an active candidate announces: it connects from whatever port the kernel picks,
/// so RFC 6544 has it announce the discard port.
const ACTIVE_CANDIDATE_PORT: u16 = 9;

/// A frame the server should never send; the connection cannot be trusted after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("an empty frame")]
    Empty,
    #[error("a frame of {0} bytes (at most {MAX_FRAME} are taken)")]
    TooLong(usize),
}

fn frame_len(header: [u8; HEADER]) -> Result<usize, FrameError> {
    match usize::from(u16::from_be_bytes(header)) {
        0 => Err(FrameError::Empty),
        len if len > MAX_FRAME => Err(FrameError::TooLong(len)),
        len => Ok(len),
    }
}

/// Splits the bytes of a stream, read in pieces of any size, into frames.
#[derive(Debug, Default)]
pub(crate) struct Deframer {
    /// The start of a frame the last read did not finish (its header, maybe part of it).
    partial: Vec<u8>,
}

impl Deframer {
    /// Takes the bytes of one read and hands `on_frame` every frame they complete, in order;
    /// an unfinished frame waits for the next read. After an error the stream is out of
    /// step and must be closed.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        mut on_frame: impl FnMut(&[u8]),
    ) -> Result<(), FrameError> {
        if !self.partial.is_empty() {
            if self.partial.len() < HEADER {
                let take = (HEADER - self.partial.len()).min(input.len());
                self.partial.extend_from_slice(&input[..take]);
                input = &input[take..];
                if self.partial.len() < HEADER {
                    return Ok(());
                }
            }
            let len = frame_len([self.partial[0], self.partial[1]])?;
            let missing = HEADER + len - self.partial.len();
            let take = missing.min(input.len());
            self.partial.extend_from_slice(&input[..take]);
            input = &input[take..];
            if take < missing {
                return Ok(());
            }
            on_frame(&self.partial[HEADER..]);
            self.partial.clear();
        }
        // Whole frames straight from the read buffer, without copying them.
        while let [high, low, rest @ ..] = input {
            let len = frame_len([*high, *low])?;
            let Some(frame) = rest.get(..len) else {
                break;
            };
            on_frame(frame);
            input = &rest[len..];
        }
        self.partial.extend_from_slice(input);
        Ok(())
    }
}

/// Framed datagrams waiting for a connection that did not take them at once.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    bytes: Vec<u8>,
    /// How much of `bytes` the socket has taken.
    written: usize,
}

impl Outbound {
    /// Bytes waiting.
    pub fn queued(&self) -> usize {
        self.bytes.len() - self.written
    }

    /// Frames a datagram onto the queue. False, and the datagram dropped whole, when the
    /// queue would grow past [`MAX_QUEUED`] (or the datagram is too long for a frame).
    pub fn push(&mut self, datagram: &[u8]) -> bool {
        let Ok(len) = u16::try_from(datagram.len()) else {
            return false;
        };
        if self.queued() + HEADER + datagram.len() > MAX_QUEUED {
            return false;
        }
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(datagram);
        true
    }

    /// Writes what the socket takes now; a socket that would block keeps the rest queued.
    /// An error is a broken connection.
    pub fn flush(&mut self, socket: &mut impl Write) -> io::Result<()> {
        while self.written < self.bytes.len() {
            match socket.write(&self.bytes[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written == self.bytes.len() {
            if self.bytes.capacity() > KEEP_CAPACITY {
                self.bytes = Vec::new();
            }
            self.bytes.clear();
            self.written = 0;
        } else if self.written * 2 >= self.bytes.len() {
            // Moving the rest forward costs no more than the bytes already written.
            self.bytes.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }
}

/// What a transmit did besides sending or queueing its datagram.
#[derive(Debug)]
pub(crate) enum Transmitted {
    Done,
    /// The TCP queue was full: the datagram was dropped.
    Dropped,
    /// This transmit opened the peer's TCP connection: the loop must watch it for reads.
    Connected(Weak<TcpStream>),
    /// The TCP connection could not be opened or broke: the peer cannot go on.
    Failed(String),
}

/// One peer's ICE-TCP side.
#[derive(Debug)]
pub(crate) struct TcpLink {
    bind: IpAddr,
    state: LinkState,
    pub deframer: Deframer,
    outbound: Outbound,
}

#[derive(Debug)]
enum LinkState {
    /// No TCP transmit yet.
    Idle,
    Open(Connection),
    /// Failed, closed by the server, or the peer is going: transmits are dropped and
    /// nothing reconnects (str0m gives the peer up).
    Closed,
}

#[derive(Debug)]
struct Connection {
    server: SocketAddr,
    /// Reads; the runtime reports readiness to the loop's `Readable`, which holds it weakly.
    reader: Arc<TcpStream>,
    /// Writes: a duplicate of the descriptor, written directly. tokio's `try_write` refuses
    /// until its reactor has seen the socket writable, which it has not in the loop turn
    /// that connected it — the turn of the first ICE check (as for UDP, `PeerSocket`).
    writer: std::net::TcpStream,
}

impl TcpLink {
    pub fn new(bind: IpAddr) -> Self {
        Self {
            bind,
            state: LinkState::Idle,
            deframer: Deframer::default(),
            outbound: Outbound::default(),
        }
    }

    /// Where frames come from: the server's candidate this link connected to.
    pub fn server(&self) -> Option<SocketAddr> {
        match &self.state {
            LinkState::Open(connection) => Some(connection.server),
            _ => None,
        }
    }

    /// Sends one datagram to `destination`, connecting there first if this is the first.
    pub fn send(&mut self, datagram: &[u8], destination: SocketAddr) -> Transmitted {
        let mut connected = None;
        if matches!(self.state, LinkState::Idle) {
            match connect(self.bind, destination) {
                Ok(connection) => {
                    connected = Some(Arc::downgrade(&connection.reader));
                    self.state = LinkState::Open(connection);
                }
                Err(e) => {
                    self.state = LinkState::Closed;
                    return Transmitted::Failed(format!(
                        "cannot open an ICE-TCP connection to {destination}: {e}"
                    ));
                }
            }
        }
        let LinkState::Open(connection) = &mut self.state else {
            return Transmitted::Done; // Closed: nothing goes out any more.
        };
        if connection.server != destination {
            // The server offers one TCP candidate per address; str0m keeps checking the
            // others, which this single connection cannot reach. Not a loss to count.
            tracing::trace!("no ICE-TCP connection to {destination}");
            return Transmitted::Done;
        }
        let queued = self.outbound.push(datagram);
        if let Err(e) = self.outbound.flush(&mut connection.writer) {
            self.close();
            return Transmitted::Failed(format!("ICE-TCP write to {destination} failed: {e}"));
        }
        match (connected, queued) {
            (Some(stream), _) => Transmitted::Connected(stream),
            (None, true) => Transmitted::Done,
            (None, false) => Transmitted::Dropped,
        }
    }

    /// Writes what earlier transmits left queued.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.state {
            LinkState::Open(connection) => self.outbound.flush(&mut connection.writer),
            _ => Ok(()),
        }
    }

    /// Reads what the connection has into `buf`; `WouldBlock` when nothing (clearing the
    /// readiness the loop was woken by), `Ok(0)` when the server closed it.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.state {
            LinkState::Open(connection) => connection.reader.try_read(buf),
            _ => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Drops the connection (its `Readable` ends) and what waits to be sent.
    pub fn close(&mut self) {
        self.state = LinkState::Closed;
        self.outbound = Outbound::default();
    }

    /// The peer is going: its goodbyes may use an open connection, but must not open one.
    pub fn closing(&mut self) {
        if matches!(self.state, LinkState::Idle) {
            self.state = LinkState::Closed;
        }
    }
}

/// Connects from `bind`, as the peer's UDP socket would send from it, so the server sees
/// the participant at the address it announced. Blocking, bounded by [`CONNECT_TIMEOUT`].
fn connect(bind: IpAddr, server: SocketAddr) -> io::Result<Connection> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(server),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.bind(&SocketAddr::new(bind, 0).into())?;
    socket.connect_timeout(&server.into(), CONNECT_TIMEOUT)?;
    let stream: std::net::TcpStream = socket.into();
    // Every write is a whole datagram that should leave now: Nagle would hold an ICE check
    // or an RTCP report back until the previous write is acknowledged.
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    let writer = stream.try_clone()?;
    let reader = Arc::new(TcpStream::from_std(stream)?);
    Ok(Connection {
        server,
        reader,
        writer,
    })
}

/// A TCP peer's local candidate: active, at `bind` (str0m is told frames from the server
/// arrive at that address, whatever port the connection really has).
pub(crate) fn tcp_candidate(bind: IpAddr) -> Result<(SocketAddr, Candidate), ClientError> {
    let local = SocketAddr::new(bind, ACTIVE_CANDIDATE_PORT);
    let candidate = Candidate::builder()
        .tcp()
        .host(local)
        .tcptype(TcpType::Active)
        .build()
        .map_err(|e| ClientError::Rtc(format!("TCP candidate {local}: {e}")))?;
    Ok((local, candidate))
}

/// Over TCP, a server description without a TCP candidate can never connect: say so now
/// rather than let the join time out.
pub(crate) fn check_offers_tcp(transport: Transport, sdp: &str) -> Result<(), ClientError> {
    let tcp_candidate = |line: &str| {
        line.starts_with("a=candidate:")
            && line
                .split_whitespace()
                .nth(2)
                .is_some_and(|proto| proto.eq_ignore_ascii_case("tcp"))
    };
    if transport == Transport::Tcp && !sdp.lines().any(tcp_candidate) {
        return Err(ClientError::Rtc(
            "the server offers no ICE-TCP candidate (is its --rtc-tcp-port off?)".into(),
        ));
    }
    Ok(())
}

impl Loop {
    /// Reads what a peer's TCP connection has (a burst of reads at most), feeds each
    /// complete frame to str0m, and flushes what an earlier full socket held back.
    pub(crate) fn read_tcp(&mut self, index: usize, gen: u64) {
        for _ in 0..READ_BURST {
            let Some(Some(peer)) = self.peers.get_mut(index) else {
                return;
            };
            let PeerSocket::Tcp(link) = &mut peer.socket else {
                return;
            };
            if peer.gen != gen {
                return;
            }
            let len = match link.try_read(&mut self.tcp_buf) {
                Ok(0) => return self.tcp_failed(index, "the server closed the ICE-TCP connection"),
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return self.tcp_failed(index, &format!("ICE-TCP read failed: {e}")),
            };
            let Some(source) = link.server() else {
                return;
            };
            // Out of the peer and the loop while frames are handed on: `drive` needs both.
            let mut deframer = std::mem::take(&mut link.deframer);
            let input = std::mem::take(&mut self.tcp_buf);
            // Arrival is when the socket was read, as for a UDP datagram.
            let now = Instant::now();
            let fed = deframer.feed(&input[..len], |frame| {
                if let Some(Some(peer)) = self.peers.get_mut(index) {
                    peer.receive(now, Protocol::Tcp, source, frame);
                }
                self.drive(index);
            });
            self.tcp_buf = input;
            if let Some(Some(peer)) = self.peers.get_mut(index) {
                if let PeerSocket::Tcp(link) = &mut peer.socket {
                    link.deframer = deframer;
                }
            }
            if let Err(e) = fed {
                return self.tcp_failed(index, &format!("ICE-TCP from the server: {e}"));
            }
        }
        let Some(Some(peer)) = self.peers.get_mut(index) else {
            return;
        };
        if let PeerSocket::Tcp(link) = &mut peer.socket {
            if let Err(e) = link.flush() {
                self.tcp_failed(index, &format!("ICE-TCP write failed: {e}"));
            }
        }
    }

    /// Acts on what a transmit did; false when the peer cannot go on.
    pub(crate) fn transmitted(&mut self, index: usize, outcome: Transmitted) -> bool {
        match outcome {
            Transmitted::Done => true,
            Transmitted::Dropped => {
                self.counters
                    .tcp_datagrams_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Transmitted::Connected(stream) => {
                if let Some(Some(peer)) = self.peers.get(index) {
                    let gen = peer.gen;
                    self.watch_tcp(index, gen, stream);
                }
                true
            }
            Transmitted::Failed(reason) => {
                self.tcp_failed(index, &reason);
                false
            }
        }
    }

    /// The peer's connection is gone: so is the peer (TCP has no other path to the server).
    fn tcp_failed(&mut self, index: usize, reason: &str) {
        let Some(Some(peer)) = self.peers.get_mut(index) else {
            return;
        };
        if let PeerSocket::Tcp(link) = &mut peer.socket {
            link.close();
        }
        peer.rtc.disconnect();
        let (part, role) = (peer.part, peer.role);
        self.peer_closed(part, role, reason);
    }
}

#[cfg(test)]
mod tests;
