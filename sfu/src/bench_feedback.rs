//! The forwarding turn with the subscribers' transport-wide feedback coming back, on a clock
//! handed in: what estimation costs the worker, measured without sockets or a busy host in
//! the way. Each packet of the publisher is forwarded, every subscriber (str0m, as the load
//! tester's) takes what it was sent and reports as its own timer says (every 50 ms), and
//! the worker takes those reports. Only the worker's turns are timed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::{Input, Output};

use super::ForwardRig;

/// What the worker spent, and on what.
#[derive(Debug, Default, Clone, Copy)]
pub struct FeedbackRun {
    /// The worker's turns: the publisher's packets and the subscribers' datagrams.
    pub worker: Duration,
    pub packets: u64,
    /// Datagrams the subscribers sent back (their feedback, receiver reports).
    pub replies: u64,
}

impl ForwardRig {
    /// Forwards `count` packets of the publisher, `interval` apart on a clock of the rig's
    /// own that only moves forward (from the real time of the first call), each subscriber
    /// answering what it received. A bench calls this instead of
    /// [`ForwardRig::prepare`] and [`ForwardRig::forward`], never mixed with them (they run
    /// on the real clock).
    pub fn forward_with_feedback(&mut self, count: usize, interval: Duration) -> FeedbackRun {
        let mut now = *self.clock.get_or_insert_with(Instant::now);
        let datagrams = match self.publisher_datagrams_at(count, false, now) {
            Ok(datagrams) => datagrams,
            // Invariant of a connected rig; a bench has no better way to report it.
            Err(e) => panic!("the bench rig broke: {e}"),
        };
        let mut run = FeedbackRun::default();
        let mut replies: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        self.sink.capture.set(true);
        for datagram in &datagrams {
            now += interval;
            let started = Instant::now();
            self.worker
                .datagram_turn(datagram, self.publisher.addr, now);
            run.worker += started.elapsed();
            run.packets += 1;
            self.subscribers_answer(now, &mut replies);
            run.replies += replies.len() as u64;
            for (from, data) in replies.drain(..) {
                let started = Instant::now();
                self.worker.datagram_turn(&data, from, now);
                run.worker += started.elapsed();
            }
        }
        self.sink.capture.set(false);
        self.clock = Some(now);
        run
    }

    /// Untimed: every subscriber takes what the worker sent it and runs its timers; what
    /// they send goes into `replies`. Whatever the worker sent anyone else is dropped.
    fn subscribers_answer(&mut self, now: Instant, replies: &mut Vec<(SocketAddr, Vec<u8>)>) {
        let captured = std::mem::take(&mut *self.sink.captured.borrow_mut());
        for (to, data) in captured {
            let Some(client) = self.subscribers.iter_mut().find(|c| c.addr == to) else {
                continue;
            };
            if client.receive(self.server, &data, now) {
                Self::collect(client, replies);
            }
            self.sink.recycle(data);
        }
        for client in &mut self.subscribers {
            let _ = client.rtc.handle_input(Input::Timeout(now));
            Self::collect(client, replies);
        }
    }

    fn collect(client: &mut super::ClientPeer, replies: &mut Vec<(SocketAddr, Vec<u8>)>) {
        loop {
            match client.rtc.poll_output() {
                Ok(Output::Timeout(_)) | Err(_) => break,
                Ok(Output::Transmit(t)) => replies.push((client.addr, t.contents.to_vec())),
                Ok(Output::Event(str0m::Event::RtpPacket(_))) => client.rtp_received += 1,
                Ok(Output::Event(_)) => {}
            }
        }
    }
}
