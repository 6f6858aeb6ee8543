//! The accept loop: every connection is counted against its client address and the node
//! before it is served, and served over HTTP/1.1 with header, idle and head-size bounds.
//! `axum::serve` hides the connection, so none of that can be done through it.
//!
//! HTTP/1.1 only: browsers speak HTTP/2 only over TLS, which a proxy in front terminates,
//! and plaintext h2c would be a second protocol to bound (streams, windows, resets).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower_service::Service as _;
use tracing::{debug, info, warn};

use super::conn::{Clock, Connections, Expired, InFlight, Refused, Watched};

/// Descriptors kept for everything that is not an HTTP connection (media sockets, the
/// database pool, recordings, webhooks): a fifth of the limit, at least this many.
const RESERVED_FDS: u64 = 64;

/// How long shutdown waits for requests in progress to finish.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// The bounds of the HTTP server (from `[limits]`).
#[derive(Debug, Clone)]
pub struct ServeLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub header_bytes: usize,
    pub max_connections: u32,
    pub connections_per_address: u32,
}

/// Raises the soft open-file limit to the hard one and returns how many connections fit
/// under it: `wanted`, or fewer (with a warning) when the limit is too low for it.
pub fn connection_cap(wanted: u32) -> usize {
    let soft = match raise_nofile_limit() {
        Ok(soft) => soft,
        Err(e) => {
            warn!("cannot read the open-file limit (RLIMIT_NOFILE): {e}; the connection cap is {wanted} unchecked");
            return wanted as usize;
        }
    };
    let reserved = (soft / 5).max(RESERVED_FDS);
    let fits = soft.saturating_sub(reserved).max(1);
    if u64::from(wanted) > fits {
        warn!(
            open_file_limit = soft,
            "http_max_connections = {wanted} does not fit the open-file limit of {soft}; \
             at most {fits} HTTP connections are accepted (raise `ulimit -n` or the \
             service's LimitNOFILE for more)"
        );
        fits as usize
    } else {
        info!(
            open_file_limit = soft,
            "at most {wanted} HTTP connections are accepted"
        );
        wanted as usize
    }
}

/// RLIMIT_NOFILE's soft limit, raised to the hard limit first when it is lower.
fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // An unlimited hard limit still has the kernel's nr_open ceiling; ask for a million.
    let hard = if limit.rlim_max == libc::RLIM_INFINITY {
        1 << 20
    } else {
        limit.rlim_max
    };
    if limit.rlim_cur < hard {
        let raised = libc::rlimit {
            rlim_cur: hard,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = hard;
        } else {
            warn!(
                "cannot raise the open-file limit from {} to {hard}: {}",
                limit.rlim_cur,
                io::Error::last_os_error()
            );
        }
    }
    Ok(limit.rlim_cur)
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets
/// requests in progress finish (at most [`DRAIN_GRACE`]) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    let cap = connection_cap(limits.max_connections);
    let connections = Connections::new(cap, limits.connections_per_address);
    let limits = Arc::new(limits);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        let admitted = match connections.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(refused) => {
                refuse(&stream, peer, refused);
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            warn!("cannot turn Nagle's algorithm off on a connection: {e}");
        }
        let clock = Clock::new();
        let io = Watched::new(stream, Arc::clone(&clock), admitted);
        tokio::spawn(serve_connection(
            io,
            peer,
            clock,
            router.clone(),
            Arc::clone(&limits),
            stop_rx.clone(),
        ));
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    // Every connection task holds a receiver; they are all gone when the last one ends.
    if tokio::time::timeout(DRAIN_GRACE, stop_tx.closed())
        .await
        .is_err()
    {
        warn!(
            open = connections.total(),
            "HTTP requests still in progress after {DRAIN_GRACE:?}; stopping anyway"
        );
    }
}

/// Accept fails for the connection (reset before accept) or for the process (out of file
/// descriptors); in the second case a pause lets connections close before trying again.
async fn accept_failed(e: io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionRefused => {}
        _ => {
            warn!("cannot accept an HTTP connection: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Tells the client why in a 503 if its socket takes it at once, and closes it.
fn refuse(stream: &TcpStream, peer: SocketAddr, refused: Refused) {
    let (reason, detail) = match refused {
        Refused::Node { max } => (
            "node",
            format!("this server has its maximum of {max} connections open; try again later"),
        ),
        Refused::Address { max } => (
            "address",
            format!(
                "your address has the maximum of {max} open connections \
                 (http_connections_per_address); close some and try again"
            ),
        ),
    };
    metrics::counter!("switchboard_http_connections_refused_total", "reason" => reason)
        .increment(1);
    debug!(%peer, "connection refused at accept: {detail}");
    let body = serde_json::json!({
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": detail,
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // Best effort and never waiting: a client that does not read gets only the close.
    let _ = stream.try_write(response.as_bytes());
}

async fn serve_connection(
    io: Watched,
    peer: SocketAddr,
    clock: Arc<Clock>,
    router: Router,
    limits: Arc<ServeLimits>,
    mut stop: watch::Receiver<bool>,
) {
    let service_clock = Arc::clone(&clock);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let in_flight = service_clock.request_started();
        let mut router = router.clone();
        async move {
            // Router is always ready; its error type is Infallible.
            let response = router.call(request.map(axum::body::Body::new)).await?;
            Ok::<_, std::convert::Infallible>(
                response.map(|body| axum::body::Body::new(Tracked { body, in_flight })),
            )
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // hyper's own header timer starts when the connection is ready for a request, so
        // it covers the idle wait too: a backstop behind the clock's finer deadlines.
        .header_read_timeout(limits.header_timeout + limits.idle_timeout)
        .max_buf_size(limits.header_bytes);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                // An upgraded WebSocket ends up here too; its socket lives on in its session.
                if let Err(e) = result {
                    debug!(%peer, "HTTP connection ended: {e}");
                }
                break;
            }
            expired = clock.expired(limits.idle_timeout, limits.header_timeout) => {
                let which = match expired {
                    Expired::Idle => "idle",
                    Expired::Header => "header",
                };
                metrics::counter!("switchboard_http_timeouts_total", "timeout" => which)
                    .increment(1);
                debug!(%peer, "closing an HTTP connection: {which} timeout");
                break;
            }
            _ = stop.changed(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A response body that marks its request finished when it is dropped (written out, or
/// abandoned by a client that went away).
struct Tracked {
    body: axum::body::Body,
    #[allow(dead_code)] // held for its Drop
    in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
