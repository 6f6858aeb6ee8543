//! What one HTTP connection holds and how long it may hold it: the connection counts per
//! client address and per node, and the per-connection clock the idle and header timeouts
//! are read from.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The address limits are counted against. An IPv6 client usually holds a whole /64, so
/// that is one client; an IPv4-mapped address is its IPv4 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The node has `max` connections open.
    Node { max: usize },
    /// This client address has `max` connections open.
    Address { max: u32 },
}

/// Open connections, per client address and in all.
pub struct Connections {
    max_total: usize,
    per_address: u32,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, u32>,
}

impl Connections {
    pub fn new(max_total: usize, per_address: u32) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            per_address,
            open: Mutex::new(Open::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // Plain counters: still right after a panic elsewhere.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `ip`, or says why it must be closed.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        let key = client_key(ip);
        let mut open = self.lock();
        if open.total >= self.max_total {
            return Err(Refused::Node {
                max: self.max_total,
            });
        }
        let count = open.by_address.entry(key).or_insert(0);
        if *count >= self.per_address {
            return Err(Refused::Address {
                max: self.per_address,
            });
        }
        *count += 1;
        open.total += 1;
        metrics::gauge!("switchboard_http_connections").set(open.total as f64);
        Ok(Admitted {
            connections: Arc::clone(self),
            key,
        })
    }

    pub fn total(&self) -> usize {
        self.lock().total
    }
}

/// One counted connection; dropping it (when the socket closes, WebSocket or not) frees
/// its place.
pub struct Admitted {
    connections: Arc<Connections>,
    key: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_address.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.by_address.remove(&self.key);
            }
        }
        metrics::gauge!("switchboard_http_connections").set(open.total as f64);
    }
}

/// Where a connection is between requests, for its timeouts. Times are milliseconds since
/// `epoch`, so they fit atomics the reader, the service and the watchdog share.
pub struct Clock {
    epoch: Instant,
    in_flight: AtomicU32,
    /// When the last request finished (or the connection was accepted).
    idle_since: AtomicU64,
    /// 1 + when the first byte of the next request head arrived; 0 while none has.
    head_since: AtomicU64,
    changed: Notify,
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    Idle,
    Header,
}

impl Clock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            changed: Notify::new(),
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Bytes arrived: with no request in progress they start the next request's head.
    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Acquire) == 0
        {
            self.head_since.store(self.now() + 1, Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// A request's head was read and handed to the router; the returned guard lives until
    /// its response has been written (or abandoned).
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
        self.changed.notify_one();
        InFlight(Arc::clone(self))
    }

    /// Resolves when the connection has been idle longer than `idle`, or has been sending
    /// one request head longer than `header`. Never while a request is in progress.
    pub async fn expired(&self, idle: Duration, header: Duration) -> Expired {
        loop {
            let now = self.now();
            let deadline = if self.in_flight.load(Ordering::Acquire) > 0 {
                None
            } else {
                match self.head_since.load(Ordering::Acquire) {
                    0 => Some((
                        self.idle_since.load(Ordering::Acquire) + idle.as_millis() as u64,
                        Expired::Idle,
                    )),
                    since => Some((since - 1 + header.as_millis() as u64, Expired::Header)),
                }
            };
            match deadline {
                Some((at, why)) if at <= now => return why,
                Some((at, _)) => {
                    let sleep = tokio::time::sleep(Duration::from_millis(at - now));
                    tokio::select! {
                        () = sleep => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

/// A request in progress on a connection (see [`Clock::request_started`]).
pub struct InFlight(Arc<Clock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let clock = &self.0;
        if clock.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            clock.idle_since.store(clock.now(), Ordering::Release);
            clock.changed.notify_one();
        }
    }
}

/// The accepted socket, telling its [`Clock`] when bytes arrive, and holding its place in
/// [`Connections`] for as long as it is open (through a WebSocket upgrade too).
pub struct Watched {
    stream: TcpStream,
    clock: Arc<Clock>,
    _admitted: Admitted,
}

impl Watched {
    pub fn new(stream: TcpStream, clock: Arc<Clock>, admitted: Admitted) -> Self {
        Self {
            stream,
            clock,
            _admitted: admitted,
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.clock.bytes_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_counted_per_client_and_in_all() {
        let conns = Connections::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = conns.admit(a).unwrap();
        let _a2 = conns.admit(a).unwrap();
        assert_eq!(conns.admit(a).err(), Some(Refused::Address { max: 2 }));
        let _b1 = conns.admit(b).unwrap();
        assert_eq!(conns.admit(b).err(), Some(Refused::Node { max: 3 }));
        drop(a1);
        assert!(
            conns.admit(a).is_ok(),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn ipv6_clients_are_their_64() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let same: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(one), client_key(same));
        assert_ne!(client_key(one), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn idle_and_header_deadlines() {
        let clock = Clock::new();
        let idle = Duration::from_millis(300);
        let header = Duration::from_millis(100);
        let started = Instant::now();
        assert_eq!(clock.expired(idle, header).await, Expired::Idle);
        assert!(started.elapsed() >= idle);
        let request = clock.request_started();
        let waiting = tokio::time::timeout(idle * 2, clock.expired(idle, header)).await;
        assert!(
            waiting.is_err(),
            "no deadline while a request is in progress"
        );
        drop(request);
        let finished = Instant::now();
        clock.bytes_read();
        assert_eq!(clock.expired(idle, header).await, Expired::Header);
        let took = finished.elapsed();
        assert!(took >= header && took < idle, "{took:?}");
    }
}
