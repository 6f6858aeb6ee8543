//! The TLS listener: an accept task that enforces the connection caps, and one task per
//! connection that runs the handshake, frames what the client sends and writes what the
//! core sends back. Connections talk to the driver (the task owning the core) through
//! [`TlsEvent`]s on one bounded queue; a connection waits when it is full, which TCP
//! turns into backpressure on that client only.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::framing::{FrameError, Framer};
use super::TlsLimits;
use crate::core::{Client, ConnectionId};

/// Messages waiting to be written to one connection. The real bound is
/// `max_buffered_bytes`; this only sizes the queue.
const OUTBOUND_MESSAGES: usize = 256;
/// Bytes read from a connection per read call (and at most the framer's free space).
const READ_CHUNK: usize = 4096;
/// Messages written per flush: a burst of media goes out in fewer TLS records.
const WRITE_BATCH: usize = 16;
/// After a failed `accept` (out of file descriptors, typically) the listener waits this
/// long instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a connection tells the driver, in this order: opened, messages, closed.
pub(crate) enum TlsEvent {
    Opened { client: Client, link: TlsLink },
    Message { client: Client, data: Vec<u8> },
    Closed { client: Client },
}

/// The driver's handle on a connection's write side.
pub(crate) struct TlsLink {
    tx: mpsc::Sender<Vec<u8>>,
    /// Bytes queued and not yet written, shared with the connection's task.
    queued: Arc<AtomicUsize>,
    max: usize,
}

impl TlsLink {
    /// Queues one whole message, or drops it if the client is not taking what it is sent.
    /// Never waits: one slow client must not stall the driver.
    pub(crate) fn send(&self, data: Vec<u8>) -> bool {
        let len = data.len();
        // Counted before it is queued, so the writer's subtraction cannot come first.
        if self.queued.fetch_add(len, Ordering::AcqRel) + len > self.max {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        if self.tx.try_send(data).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }
}

/// The connection caps, shared by the accept task and the connections' slots.
#[derive(Debug)]
struct Counts {
    limits: TlsLimits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it frees its place under the caps.
struct Slot {
    counts: Arc<Counts>,
    ip: IpAddr,
}

impl Counts {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let ip = ip.to_canonical();
        // The lock guards two integers and never panics while held; poisoning cannot
        // leave them inconsistent, so a poisoned lock is used as is.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, per_ip) = &mut *open;
        let from_ip = per_ip.get(&ip).copied().unwrap_or(0);
        if *total >= self.limits.max_connections || from_ip >= self.limits.max_connections_per_ip {
            return None;
        }
        *total += 1;
        per_ip.insert(ip, from_ip + 1);
        Some(Slot {
            counts: self.clone(),
            ip,
        })
    }

    fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .counts
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (total, per_ip) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// The running accept task.
pub(crate) struct Acceptor {
    pub(crate) task: JoinHandle<()>,
    counts: Arc<Counts>,
}

impl Acceptor {
    pub(crate) fn connection_count(&self) -> ConnectionCount {
        ConnectionCount(self.counts.clone())
    }
}

/// Reads how many TLS connections are open (handshaking included).
#[derive(Debug, Clone)]
pub(crate) struct ConnectionCount(Arc<Counts>);

impl ConnectionCount {
    pub(crate) fn get(&self) -> usize {
        self.0.open()
    }
}

/// Starts accepting on `listener`. The task ends, closing every connection, when the
/// driver drops its receiver of `events`.
pub(crate) fn spawn_acceptor(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    limits: TlsLimits,
    events: mpsc::Sender<TlsEvent>,
) -> Acceptor {
    let counts = Arc::new(Counts {
        limits,
        open: Mutex::new((0, HashMap::new())),
    });
    let task = tokio::spawn(accept(
        listener,
        TlsAcceptor::from(config),
        counts.clone(),
        events,
    ));
    Acceptor { task, counts }
}

async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    counts: Arc<Counts>,
    events: mpsc::Sender<TlsEvent>,
) {
    // Holds at most `max_connections` tasks: each holds a slot, and finished ones are
    // reaped as they end.
    let mut connections = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            _ = events.closed() => break,
            Some(_) = connections.join_next() => {}
            accepted = listener.accept() => {
                let (tcp, addr) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "TURN TLS accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let Some(slot) = counts.admit(addr.ip()) else {
                    tracing::debug!(%addr, "TURN TLS connection refused: connection cap");
                    continue;
                };
                // Media and its replies are small and latency-bound.
                let _ = tcp.set_nodelay(true);
                let client = Client::tls(ConnectionId(next_id), addr);
                next_id += 1;
                let conn = Connection {
                    client,
                    limits: counts.limits.clone(),
                    events: events.clone(),
                    _slot: slot,
                };
                connections.spawn(conn.run(tcp, acceptor.clone()));
            }
        }
    }
    connections.shutdown().await;
}

/// Why a connection ended (logged).
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    #[error("closed by the client")]
    Eof,
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("not TURN: {0}")]
    Framing(#[from] FrameError),
    #[error("idle: no message within the idle timeout")]
    Idle,
    #[error("the client took nothing we wrote within the idle timeout")]
    WriteTimeout,
    #[error("the server stopped")]
    Stopped,
}

struct Connection {
    client: Client,
    limits: TlsLimits,
    events: mpsc::Sender<TlsEvent>,
    _slot: Slot,
}

impl Connection {
    async fn run(self, tcp: TcpStream, acceptor: TlsAcceptor) {
        let client = self.client;
        let stream = match timeout(self.limits.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return self.log(Closed::Handshake(e)),
            Err(_) => return self.log(Closed::HandshakeTimeout),
        };
        let (tx, rx) = mpsc::channel(OUTBOUND_MESSAGES);
        let queued = Arc::new(AtomicUsize::new(0));
        let link = TlsLink {
            tx,
            queued: queued.clone(),
            max: self.limits.max_buffered_bytes,
        };
        if self
            .events
            .send(TlsEvent::Opened { client, link })
            .await
            .is_err()
        {
            return;
        }
        let closed = self.pump(stream, rx, &queued).await;
        self.log(closed);
        // The driver ends the allocation on this; if it is gone, so is everything else.
        let _ = self.events.send(TlsEvent::Closed { client }).await;
    }

    fn log(&self, closed: Closed) {
        tracing::debug!(client = %self.client, reason = %closed, "TURN TLS connection closed");
    }

    /// Reads messages to the driver and writes the driver's messages to the client until
    /// either side is done.
    async fn pump(
        &self,
        mut stream: TlsStream<TcpStream>,
        mut rx: mpsc::Receiver<Vec<u8>>,
        queued: &AtomicUsize,
    ) -> Closed {
        let idle = self.limits.idle_timeout;
        let mut framer = Framer::new(self.limits.max_buffered_bytes);
        let mut chunk = vec![0u8; READ_CHUNK];
        let mut deadline = Instant::now() + idle;
        loop {
            let space = framer.space().min(READ_CHUNK);
            tokio::select! {
                read = stream.read(chunk.get_mut(..space).unwrap_or_default()) => {
                    let n = match read {
                        Ok(0) => return Closed::Eof,
                        Ok(n) => n,
                        Err(e) => return Closed::Io(e),
                    };
                    framer.extend(chunk.get(..n).unwrap_or_default());
                    loop {
                        match framer.next_message() {
                            Ok(Some(data)) => {
                                deadline = Instant::now() + idle;
                                let event = TlsEvent::Message { client: self.client, data };
                                if self.events.send(event).await.is_err() {
                                    return Closed::Stopped;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return Closed::Framing(e),
                        }
                    }
                }
                out = rx.recv() => {
                    let Some(first) = out else {
                        return Closed::Stopped;
                    };
                    match timeout(idle, write_batch(&mut stream, first, &mut rx, queued)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Closed::Io(e),
                        Err(_) => return Closed::WriteTimeout,
                    }
                }
                _ = sleep_until(deadline) => return Closed::Idle,
            }
        }
    }
}

/// Writes `first` and whatever else is queued (up to [`WRITE_BATCH`]), then flushes.
async fn write_batch(
    stream: &mut TlsStream<TcpStream>,
    first: Vec<u8>,
    rx: &mut mpsc::Receiver<Vec<u8>>,
    queued: &AtomicUsize,
) -> std::io::Result<()> {
    let mut next = Some(first);
    let mut written = 0;
    while let Some(data) = next.take() {
        stream.write_all(&data).await?;
        queued.fetch_sub(data.len(), Ordering::AcqRel);
        written += 1;
        if written < WRITE_BATCH {
            next = rx.try_recv().ok();
        }
    }
    stream.flush().await
}
