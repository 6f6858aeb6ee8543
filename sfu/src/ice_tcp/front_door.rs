//! The one TCP port every worker's peers share: accepts, reads the first frame, finds the
//! worker whose peer it is for, and hands the connection over.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::{debug, info, warn};

use super::{read_frame, ConnectionSlot, PerAddress, TcpHandoff, FIRST_FRAME_TIMEOUT};
use crate::api::Command;

/// Starts the front door's thread on `listener`. It stops when `stop` says so (or its sender
/// is dropped).
/// How many connections the front door lets in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub total: usize,
    pub per_address: usize,
}

pub(crate) fn start(
    listener: std::net::TcpListener,
    workers: Vec<mpsc::UnboundedSender<Command>>,
    limits: ConnectionLimits,
    stop: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("ice-tcp".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!("cannot start the ICE-TCP runtime: {e}");
                    return;
                }
            };
            runtime.block_on(serve(listener, workers, limits, stop));
        })
}

async fn serve(
    listener: std::net::TcpListener,
    workers: Vec<mpsc::UnboundedSender<Command>>,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let max_connections = limits.total;
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!("cannot register the ICE-TCP listener: {e}");
            return;
        }
    };
    let addr = listener.local_addr().ok();
    info!(?addr, max_connections, "ICE-TCP listening");
    let workers: Arc<[mpsc::UnboundedSender<Command>]> = workers.into();
    let permits = Arc::new(Semaphore::new(max_connections));
    let per_address = PerAddress::new(limits.per_address);
    let mut full_logged = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, most likely: the listener itself is fine.
                debug!("ICE-TCP accept failed: {e}");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            if !full_logged {
                warn!(
                    max_connections,
                    "ICE-TCP connection limit reached; closing new ones"
                );
                full_logged = true;
            }
            metrics::counter!("switchboard_tcp_connections_refused_total", "reason" => "node")
                .increment(1);
            continue; // Dropping the stream closes it.
        };
        full_logged = false;
        let Some(address) = per_address.take(remote.ip()) else {
            debug!(%remote, "ICE-TCP connections from this address are at their limit");
            metrics::counter!("switchboard_tcp_connections_refused_total", "reason" => "address")
                .increment(1);
            continue;
        };
        let slot = ConnectionSlot {
            _total: permit,
            _address: address,
        };
        tokio::spawn(admit(stream, remote, Arc::clone(&workers), slot));
    }
    debug!("ICE-TCP front door stopped");
}

/// Reads the first frame and offers the connection to each worker until one keeps it.
async fn admit(
    mut stream: TcpStream,
    remote: SocketAddr,
    workers: Arc<[mpsc::UnboundedSender<Command>]>,
    permit: ConnectionSlot,
) {
    let first = match tokio::time::timeout(FIRST_FRAME_TIMEOUT, read_frame(&mut stream)).await {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            debug!(%remote, "ICE-TCP connection closed before its first frame: {e}");
            return;
        }
        Err(_) => {
            debug!(%remote, "ICE-TCP connection sent no frame in time");
            return;
        }
    };
    if !matches!(first.first(), Some(0..=3)) {
        debug!(%remote, "ICE-TCP connection did not start with STUN");
        return;
    }
    // Disable Nagle: media is latency-sensitive and already in datagram-sized writes.
    let _ = stream.set_nodelay(true);
    let stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            debug!(%remote, "cannot hand an ICE-TCP connection over: {e}");
            return;
        }
    };
    let mut handoff = TcpHandoff {
        stream,
        remote,
        first,
        permit,
    };
    for worker in workers.iter() {
        let (reply, back) = oneshot::channel();
        if worker
            .send(Command::TcpConnection { handoff, reply })
            .is_err()
        {
            return; // Shutting down.
        }
        match back.await {
            Ok(refused) => handoff = refused,
            // The worker kept it.
            Err(_) => return,
        }
    }
    debug!(%remote, "no peer takes this ICE-TCP connection");
}
