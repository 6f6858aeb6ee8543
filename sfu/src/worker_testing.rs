//! A worker in memory for unit tests: datagrams go nowhere, commands are handled directly.

use std::net::SocketAddr;

use tokio::sync::{mpsc, oneshot};

use crate::api::{Command, DtlsPeers, JoinOptions, PeerEvent};
use crate::worker::{DatagramSink, Worker};

struct NullSink;

impl DatagramSink for NullSink {
    fn send(&mut self, _data: Vec<u8>, _to: crate::ice_tcp::Route) {}
}

pub fn worker() -> Worker {
    let server: SocketAddr = "127.0.0.1:7882".parse().expect("an address");
    Worker::new(0, Box::new(NullSink), vec![server])
}

/// Joins participant `key` (publishes and subscribes); its events come on the receiver.
pub fn join(worker: &mut Worker, key: &str) -> mpsc::UnboundedReceiver<PeerEvent> {
    join_with(
        worker,
        key,
        JoinOptions {
            auto_subscribe: false,
            can_subscribe: true,
            can_publish: true,
            single_pc: false,
            dtls: DtlsPeers::Ecdsa,
        },
    )
}

/// Joins participant `key` with `options`.
pub fn join_with(
    worker: &mut Worker,
    key: &str,
    options: JoinOptions,
) -> mpsc::UnboundedReceiver<PeerEvent> {
    let (events, received) = mpsc::unbounded_channel();
    let (reply, joined) = oneshot::channel();
    worker.handle_command(
        Command::Join {
            participant: key.into(),
            identity: key.into(),
            room: "r".into(),
            options,
            events,
            reply,
        },
        std::time::Instant::now(),
    );
    joined
        .blocking_recv()
        .expect("the worker answers")
        .expect("the join succeeds");
    received
}
