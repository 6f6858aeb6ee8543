//! Where a worker's datagrams leave: its UDP socket, batched, and its ICE-TCP connections.

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::ice_tcp::Route;

/// Where a worker's outgoing datagrams go: its UDP socket and ICE-TCP connections in
/// production, a counter in the benches (so forwarding can be measured in process, without
/// sockets).
///
/// A sink may hold datagrams back until [`DatagramSink::flush`], which the loop calls at the
/// end of every turn; it must keep their order.
pub(crate) trait DatagramSink {
    /// Takes the datagram's buffer (str0m's own allocation), so queueing it copies nothing.
    fn send(&mut self, data: Vec<u8>, to: Route);

    /// From now on datagrams routed to `Route::Tcp(remote)` go into `queue` (its writer
    /// frames them onto the connection).
    fn attach_tcp(&mut self, _remote: SocketAddr, _queue: mpsc::Sender<Vec<u8>>) {}

    /// The connection from `remote` is gone.
    fn detach_tcp(&mut self, _remote: SocketAddr) {}

    /// An empty buffer for a datagram of our own: one already sent, when the sink keeps them.
    fn buffer(&mut self) -> Vec<u8> {
        Vec::new()
    }

    /// Sends whatever `send` held back.
    fn flush(&mut self) {}
}

/// The production sink: the worker's own UDP socket. The datagrams of a loop turn (a fan-out
/// is one per subscriber) are queued and handed to the kernel in batches (`sendmmsg` on Linux)
/// when the turn ends or a batch is full, instead of one syscall each. Datagrams for ICE-TCP
/// peers go to their connection's writer queue instead.
pub(crate) struct NetSink {
    socket: std::sync::Arc<UdpSocket>,
    queue: Vec<(Vec<u8>, SocketAddr)>,
    /// Buffers of sent datagrams, reused for the next ones: a fan-out would otherwise
    /// allocate and free one buffer per subscriber per packet.
    spare: Vec<Vec<u8>>,
    tcp: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    /// Datagrams a connection's full queue refused (a link slower than its media).
    tcp_dropped: metrics::Counter,
}

/// Spare buffers a sink keeps (two full batches, ~330 KB at most).
pub(crate) const SPARE_BUFFERS: usize = 2 * SEND_BATCH;

#[cfg(target_os = "linux")]
const SEND_BATCH: usize = crate::sendmmsg::MAX_BATCH;
#[cfg(not(target_os = "linux"))]
const SEND_BATCH: usize = 64;

impl NetSink {
    pub fn new(socket: std::sync::Arc<UdpSocket>) -> Self {
        Self {
            socket,
            queue: Vec::with_capacity(SEND_BATCH),
            spare: Vec::with_capacity(SPARE_BUFFERS),
            tcp: HashMap::new(),
            tcp_dropped: metrics::counter!("switchboard_tcp_datagrams_dropped_total"),
        }
    }

    /// Empties the queue after a send, keeping its buffers for reuse.
    fn recycle(&mut self) {
        let room = SPARE_BUFFERS.saturating_sub(self.spare.len());
        self.spare
            .extend(self.queue.drain(..).take(room).map(|(mut data, _)| {
                data.clear();
                data
            }));
    }
}

impl DatagramSink for NetSink {
    fn send(&mut self, data: Vec<u8>, to: Route) {
        let to = match to {
            Route::Udp(to) => to,
            Route::Tcp(to) => {
                let queued = self.tcp.get(&to).map(|queue| queue.try_send(data));
                // A full queue drops this datagram only, as a full socket buffer would; a
                // closed connection is detached by the worker when its reader reports it.
                if matches!(queued, Some(Err(mpsc::error::TrySendError::Full(_)))) {
                    self.tcp_dropped.increment(1);
                }
                return;
            }
        };
        self.queue.push((data, to));
        // A full batch goes now: waiting for the end of a long turn would only add latency.
        if self.queue.len() >= SEND_BATCH {
            self.flush();
        }
    }

    fn attach_tcp(&mut self, remote: SocketAddr, queue: mpsc::Sender<Vec<u8>>) {
        self.tcp.insert(remote, queue);
    }

    fn detach_tcp(&mut self, remote: SocketAddr) {
        self.tcp.remove(&remote);
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    #[cfg(target_os = "linux")]
    fn flush(&mut self) {
        use std::os::fd::AsRawFd;
        if self.queue.is_empty() {
            return;
        }
        // Straight to the descriptor, not through tokio's readiness (which may answer
        // `WouldBlock` without trying): the socket is non-blocking and nothing waits on its
        // writability. Refused datagrams are dropped, as before (UDP is lossy); no metric
        // counts them.
        let _dropped = crate::sendmmsg::send_all(self.socket.as_raw_fd(), &self.queue);
        self.recycle();
    }

    #[cfg(not(target_os = "linux"))]
    fn flush(&mut self) {
        for (data, to) in &self.queue {
            // UDP is lossy anyway: a full socket buffer drops this datagram only.
            let _ = self.socket.try_send_to(data, *to);
        }
        self.recycle();
    }
}
