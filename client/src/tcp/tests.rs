//! Framing and queueing of the client's ICE-TCP connections, without a server; the load
//! test's `--tcp` run (tests/loadtest.rs) covers a whole join over TCP.

use std::io::{self, Read as _, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use super::*;

/// `datagrams` as the server writes them: each after its 16-bit length.
fn framed(datagrams: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for d in datagrams {
        let len = u16::try_from(d.len()).expect("a test datagram fits a frame");
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(d);
    }
    bytes
}

/// Datagrams of the sizes a session has: a 1-byte oddity, STUN, media, the largest taken.
fn datagrams() -> Vec<Vec<u8>> {
    [1usize, 20, 1200, 3, MAX_FRAME]
        .iter()
        .enumerate()
        .map(|(i, &len)| (0..len).map(|b| (b + i) as u8).collect())
        .collect()
}

/// Feeds `bytes` in reads of `chunk` bytes; returns the frames and the first error.
fn deframe(bytes: &[u8], chunk: usize) -> (Vec<Vec<u8>>, Result<(), FrameError>) {
    let mut deframer = Deframer::default();
    let mut frames = Vec::new();
    for read in bytes.chunks(chunk) {
        if let Err(e) = deframer.feed(read, |f| frames.push(f.to_vec())) {
            return (frames, Err(e));
        }
    }
    (frames, Ok(()))
}

#[test]
fn frames_come_out_whole_however_the_reads_cut_them() {
    let sent = datagrams();
    let bytes = framed(&sent);
    // One byte at a time cuts every header in two; 1201 puts a boundary inside each frame
    // and several frames in one read; the whole stream is every frame in one read.
    for chunk in [1, 2, 3, 7, 1201, 4096, bytes.len()] {
        let (frames, result) = deframe(&bytes, chunk);
        assert_eq!(result, Ok(()), "reads of {chunk}");
        assert_eq!(frames, sent, "reads of {chunk}");
    }
}

#[test]
fn an_unfinished_frame_waits_for_the_rest() {
    let bytes = framed(&[vec![7; 100], vec![8; 50]]);
    let mut deframer = Deframer::default();
    let mut frames = Vec::new();
    deframer
        .feed(&bytes[..60], |f| frames.push(f.to_vec()))
        .expect("a good stream");
    assert!(frames.is_empty(), "half a frame is not a frame");
    deframer
        .feed(&bytes[60..103], |f| frames.push(f.to_vec()))
        .expect("a good stream");
    assert_eq!(frames, vec![vec![7; 100]]);
    deframer
        .feed(&bytes[103..], |f| frames.push(f.to_vec()))
        .expect("a good stream");
    assert_eq!(frames, vec![vec![7; 100], vec![8; 50]]);
}

#[test]
fn empty_and_oversized_frames_are_errors_wherever_the_header_is_cut() {
    let good = framed(&[vec![1; 10]]);
    let mut empty = good.clone();
    empty.extend_from_slice(&[0, 0]);
    let mut oversized = good.clone();
    let too_long = u16::try_from(MAX_FRAME + 1).expect("fits");
    oversized.extend_from_slice(&too_long.to_be_bytes());
    oversized.extend_from_slice(&[0; 16]);
    for chunk in [1, 2, 5, 12, 100] {
        let (frames, result) = deframe(&empty, chunk);
        assert_eq!(
            frames,
            vec![vec![1; 10]],
            "the frame before it, reads of {chunk}"
        );
        assert_eq!(result, Err(FrameError::Empty), "reads of {chunk}");
        let (frames, result) = deframe(&oversized, chunk);
        assert_eq!(frames, vec![vec![1; 10]], "reads of {chunk}");
        assert_eq!(
            result,
            Err(FrameError::TooLong(MAX_FRAME + 1)),
            "reads of {chunk}"
        );
    }
}

/// A socket that takes `budget` bytes, then would block until given more.
struct Throttled {
    taken: Vec<u8>,
    budget: usize,
}

impl Write for Throttled {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        self.taken.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn what_a_full_socket_refuses_goes_out_later_in_order() {
    let sent = datagrams();
    let mut queue = Outbound::default();
    let mut socket = Throttled {
        taken: Vec::new(),
        budget: 700,
    };
    for d in &sent {
        assert!(queue.push(d));
        queue
            .flush(&mut socket)
            .expect("would block is not an error");
    }
    assert_eq!(socket.taken.len(), 700, "the socket took what it could");
    assert_eq!(queue.queued(), framed(&sent).len() - 700);
    // The socket drains a bit at a time; every flush sends what it can.
    while queue.queued() > 0 {
        socket.budget = 333;
        queue
            .flush(&mut socket)
            .expect("would block is not an error");
    }
    assert_eq!(socket.taken, framed(&sent), "whole frames, in order");
}

#[test]
fn a_full_queue_drops_whole_datagrams_and_keeps_the_stream_in_step() {
    let mut queue = Outbound::default();
    let mut stalled = Throttled {
        taken: Vec::new(),
        budget: 10,
    };
    let datagram = vec![5u8; 1200];
    let (mut queued, mut dropped) = (Vec::new(), 0);
    for _ in 0..(MAX_QUEUED / 1202 + 100) {
        if queue.push(&datagram) {
            queued.push(datagram.clone());
        } else {
            dropped += 1;
        }
        queue
            .flush(&mut stalled)
            .expect("would block is not an error");
    }
    assert!(dropped >= 100, "{dropped} dropped");
    assert!(queue.queued() <= MAX_QUEUED);
    // The connection recovers: what was kept arrives as whole frames.
    stalled.budget = usize::MAX;
    queue.flush(&mut stalled).expect("writes");
    assert_eq!(queue.queued(), 0);
    let (frames, result) = deframe(&stalled.taken, 4096);
    assert_eq!(result, Ok(()));
    assert_eq!(frames.len(), queued.len());
    assert!(
        !queue.push(&vec![0; usize::from(u16::MAX) + 1]),
        "no frame says that length"
    );
}

#[test]
fn a_broken_socket_is_an_error() {
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut queue = Outbound::default();
    assert!(queue.push(b"hello"));
    assert!(queue.flush(&mut Broken).is_err());
}

#[test]
fn a_server_description_without_a_tcp_candidate_is_refused_over_tcp_only() {
    let udp_only = "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host\r\n";
    let with_tcp = "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host\r\n\
        a=candidate:2 1 TCP 1518280447 127.0.0.1 7881 typ host tcptype passive\r\n";
    assert!(check_offers_tcp(Transport::Tcp, udp_only).is_err());
    assert!(check_offers_tcp(Transport::Tcp, with_tcp).is_ok());
    assert!(check_offers_tcp(Transport::Udp, udp_only).is_ok());
}

#[tokio::test]
async fn a_link_connects_at_its_first_transmit_and_frames_both_ways() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a listener");
    let server = listener.local_addr().expect("its address");
    let mut link = TcpLink::new(Ipv4Addr::LOCALHOST.into());
    let Transmitted::Connected(stream) = link.send(b"hello", server) else {
        panic!("the first transmit connects");
    };
    assert_eq!(link.server(), Some(server));
    let (mut accepted, _) = listener.accept().expect("the link connected");
    let mut received = [0u8; 7];
    accepted.read_exact(&mut received).expect("a frame");
    assert_eq!(&received, b"\x00\x05hello");

    // A transmit to another of the server's candidates has nowhere to go.
    let elsewhere = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
    assert!(matches!(link.send(b"lost", elsewhere), Transmitted::Done));
    assert!(matches!(link.send(b"again", server), Transmitted::Done));
    let mut received = [0u8; 7];
    accepted.read_exact(&mut received).expect("a frame");
    assert_eq!(&received, b"\x00\x05again");

    accepted
        .write_all(&framed(&[b"abc".to_vec()]))
        .expect("writes");
    let reader = stream.upgrade().expect("the link holds its stream");
    reader.readable().await.expect("readable");
    let mut buf = [0u8; 64];
    let len = loop {
        match link.try_read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                reader.readable().await.expect("readable")
            }
            read => break read.expect("reads"),
        }
    };
    let mut frames = Vec::new();
    link.deframer
        .feed(&buf[..len], |f| frames.push(f.to_vec()))
        .expect("a good frame");
    assert_eq!(frames, vec![b"abc".to_vec()]);

    drop(reader);
    link.close();
    assert!(
        stream.upgrade().is_none(),
        "closing drops the stream the loop watches"
    );
    assert!(matches!(link.send(b"late", server), Transmitted::Done));
}

#[test]
fn a_refused_connection_fails_the_peer() {
    // A port nobody listens on: bind one, then free it.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut link = TcpLink::new(Ipv4Addr::LOCALHOST.into());
    assert!(matches!(link.send(b"check", port), Transmitted::Failed(_)));
    assert!(
        matches!(link.send(b"check", port), Transmitted::Done),
        "no retry"
    );
}
