//! A worker's ICE-TCP connections: which peer each is for, and the tasks that read and write
//! its frames on the worker's own runtime.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::net::{Protocol, Receive};
use str0m::Input;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tracing::debug;

use super::{
    frame_header, read_frame, TcpHandoff, IDLE_TIMEOUT, LINKS_PER_PEER, RECEIVE_QUEUE, WRITE_QUEUE,
    WRITE_STALL_TIMEOUT,
};
use crate::api::PeerRole;
use crate::participant::Slot;
use crate::worker::{destination_for, Worker};

/// What a connection's reader tells its worker. `link` tells a connection from one that
/// replaced it from the same address.
#[derive(Debug)]
pub(crate) enum TcpInput {
    Frame { from: SocketAddr, data: Vec<u8> },
    Closed { from: SocketAddr, link: u64 },
}

/// The connections of one worker, by the client's address.
pub(crate) struct TcpLinks {
    /// Our TCP host candidates: where str0m must be told a frame arrived.
    advertise: Vec<SocketAddr>,
    links: HashMap<SocketAddr, Link>,
    input: mpsc::Sender<TcpInput>,
    /// Taken by the worker's loop when it starts.
    receiver: Option<mpsc::Receiver<TcpInput>>,
    next_link: u64,
}

struct Link {
    id: u64,
    peer: (Slot, PeerRole),
    destination: SocketAddr,
    reader: AbortHandle,
    writer: AbortHandle,
}

impl Drop for Link {
    fn drop(&mut self) {
        // Either task may be waiting on the socket; both end with the link.
        self.reader.abort();
        self.writer.abort();
    }
}

impl TcpLinks {
    pub fn new(advertise: Vec<SocketAddr>) -> Self {
        let (input, receiver) = mpsc::channel(RECEIVE_QUEUE);
        Self {
            advertise,
            links: HashMap::new(),
            input,
            receiver: Some(receiver),
            next_link: 0,
        }
    }

    /// Our TCP host candidates (none when ICE-TCP is off).
    pub fn advertise(&self) -> &[SocketAddr] {
        &self.advertise
    }

    pub fn take_receiver(&mut self) -> Option<mpsc::Receiver<TcpInput>> {
        self.receiver.take()
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Forgets connection `link` from `from` (not one that replaced it); its tasks end. The
    /// caller detaches it from the sink.
    fn close(&mut self, from: SocketAddr, link: u64) -> bool {
        if self.links.get(&from).is_some_and(|l| l.id == link) {
            self.links.remove(&from);
            return true;
        }
        false
    }

    /// Forgets every connection of a participant; returns their addresses.
    fn close_slot(&mut self, slot: Slot) -> Vec<SocketAddr> {
        let gone: Vec<SocketAddr> = self
            .links
            .iter()
            .filter(|(_, link)| link.peer.0 == slot)
            .map(|(addr, _)| *addr)
            .collect();
        for addr in &gone {
            self.links.remove(addr);
        }
        gone
    }

    /// Starts reading and writing an adopted connection, on the current (worker's) runtime.
    /// Returns the queue of datagrams to write to it.
    fn open(
        &mut self,
        handoff: TcpHandoff,
        peer: (Slot, PeerRole),
        destination: SocketAddr,
    ) -> std::io::Result<mpsc::Sender<Vec<u8>>> {
        let TcpHandoff {
            stream,
            remote,
            permit,
            ..
        } = handoff;
        let stream = tokio::net::TcpStream::from_std(stream)?;
        let (read, write) = stream.into_split();
        let (queue, queued) = mpsc::channel(WRITE_QUEUE);
        let input = self.input.clone();
        self.next_link += 1;
        let id = self.next_link;
        let reader = tokio::spawn(async move {
            // The connection counts against the front door's limit while it is read.
            let _permit = permit;
            read_frames(read, remote, id, input).await;
        })
        .abort_handle();
        let writer = tokio::spawn(write_frames(write, remote, queued)).abort_handle();
        // A second connection from the same address replaces the first (its drop aborts it).
        self.links.insert(
            remote,
            Link {
                id,
                peer,
                destination,
                reader,
                writer,
            },
        );
        Ok(queue)
    }
}

async fn read_frames(
    read: OwnedReadHalf,
    from: SocketAddr,
    link: u64,
    input: mpsc::Sender<TcpInput>,
) {
    let mut reader = BufReader::new(read);
    loop {
        match tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut reader)).await {
            Ok(Ok(Some(data))) => {
                // A full queue waits here, and so stops reading this connection.
                if input.send(TcpInput::Frame { from, data }).await.is_err() {
                    return;
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                debug!(%from, "ICE-TCP connection failed: {e}");
                break;
            }
            Err(_) => {
                debug!(%from, "ICE-TCP connection idle; closing it");
                break;
            }
        }
    }
    let _ = input.send(TcpInput::Closed { from, link }).await;
}

async fn write_frames(write: OwnedWriteHalf, to: SocketAddr, mut queued: mpsc::Receiver<Vec<u8>>) {
    let mut writer = BufWriter::new(write);
    while let Some(first) = queued.recv().await {
        let mut next = Some(first);
        let written = tokio::time::timeout(WRITE_STALL_TIMEOUT, async {
            // Whatever else is queued goes out in the same write.
            while let Some(datagram) = next.take() {
                let Some(header) = frame_header(datagram.len()) else {
                    continue; // Longer than a frame can say: never one of ours.
                };
                writer.write_all(&header).await?;
                writer.write_all(&datagram).await?;
                next = queued.try_recv().ok();
            }
            writer.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(%to, "ICE-TCP write failed: {e}");
                return;
            }
            Err(_) => {
                debug!(%to, "ICE-TCP writes stalled; closing the connection");
                return;
            }
        }
    }
}

impl Worker {
    /// A connection the front door offers: kept if one of our peers accepts its first
    /// frame, else handed back through `reply` for the next worker.
    pub(crate) fn adopt_tcp(&mut self, handoff: TcpHandoff, reply: oneshot::Sender<TcpHandoff>) {
        let now = self.now;
        let destination = destination_for(self.tcp.advertise(), handoff.remote);
        let found = match handoff.first.as_slice().try_into() {
            Ok(contents) => self.find_accepting(&Input::Receive(
                now,
                Receive {
                    proto: Protocol::Tcp,
                    source: handoff.remote,
                    destination,
                    contents,
                },
            )),
            Err(_) => None,
        };
        let Some(peer) = found else {
            let _ = reply.send(handoff);
            return;
        };
        let held = self.tcp.links.values().filter(|l| l.peer == peer).count();
        if held >= LINKS_PER_PEER {
            debug!(remote = %handoff.remote, "a peer has {held} ICE-TCP connections; closing another");
            return;
        }
        let remote = handoff.remote;
        let mut handoff = handoff;
        let first_frame = std::mem::take(&mut handoff.first);
        match self.tcp.open(handoff, peer, destination) {
            Ok(queue) => self.sink.attach_tcp(remote, queue),
            Err(e) => {
                debug!(%remote, "cannot adopt an ICE-TCP connection: {e}");
                return;
            }
        }
        self.handle_tcp_frame(remote, &first_frame, now);
    }

    pub(crate) fn handle_tcp_input(&mut self, input: TcpInput, now: Instant) {
        match input {
            TcpInput::Frame { from, data } => self.handle_tcp_frame(from, &data, now),
            TcpInput::Closed { from, link } => {
                if self.tcp.close(from, link) {
                    self.sink.detach_tcp(from);
                }
            }
        }
    }

    fn handle_tcp_frame(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        self.now = now;
        let Some(link) = self.tcp.links.get(&from) else {
            return; // Closed meanwhile.
        };
        let ((slot, role), destination) = (link.peer, link.destination);
        self.metrics.datagram_in(data);
        let Ok(contents) = data.try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Tcp,
                source: from,
                destination,
                contents,
            },
        );
        self.deliver(slot, role, data, input);
    }

    /// Closes the connections of a participant being removed.
    pub(crate) fn close_tcp_links(&mut self, slot: Slot) {
        for addr in self.tcp.close_slot(slot) {
            self.sink.detach_tcp(addr);
        }
    }
}
