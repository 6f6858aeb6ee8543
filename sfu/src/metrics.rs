//! What a media worker reports to ops through the `metrics` facade.
//!
//! The hot path only bumps plain `u64` fields of [`WorkerMetrics`]; they are added to the
//! registry's counters every [`FLUSH_EVERY`] (and when the worker stops), through handles
//! taken once when the worker starts. So forwarding a packet costs no registry lookup, no
//! atomic and no lock. Gauges are recomputed from the worker's state at each flush and
//! reported as differences, so that several workers add up in one series.

use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use str0m::media::KeyframeRequestKind;
use str0m::stats::{MediaEgressStats, MediaIngressStats};

use crate::api::{PeerRole, TrackKind};
use crate::participant::Slot;
use crate::worker::Worker;

/// How often local counts reach the registry. A scrape lags the truth by at most this.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Kinds of datagrams told apart by their first byte (RFC 7983), then RTP from RTCP.
#[derive(Clone, Copy)]
pub(crate) enum Wire {
    Stun = 0,
    Dtls = 1,
    Rtp = 2,
    Rtcp = 3,
    Other = 4,
}

const WIRE_LABELS: [&str; 5] = ["stun", "dtls", "rtp", "rtcp", "other"];

impl Wire {
    pub fn of(data: &[u8]) -> Wire {
        match data.first() {
            Some(0..=3) => Wire::Stun,
            Some(20..=63) => Wire::Dtls,
            Some(128..=191) => match data.get(1) {
                // RTCP packet types 192..=223 share the byte with RTP's marker + PT.
                Some(192..=223) => Wire::Rtcp,
                _ => Wire::Rtp,
            },
            _ => Wire::Other,
        }
    }
}

/// A local count and the registry counter it is flushed to.
struct Local {
    value: u64,
    counter: Counter,
}

impl Local {
    fn new(counter: Counter) -> Self {
        Self { value: 0, counter }
    }

    fn flush(&mut self) {
        if self.value > 0 {
            self.counter.increment(self.value);
            self.value = 0;
        }
    }
}

/// A gauge this worker contributes `last` to.
struct Share {
    last: f64,
    gauge: Gauge,
}

impl Share {
    fn new(gauge: Gauge) -> Self {
        Self { last: 0.0, gauge }
    }

    fn set(&mut self, value: f64) {
        if value != self.last {
            self.gauge.increment(value - self.last);
            self.last = value;
        }
    }
}

/// Gauge values a worker computes from its state at each flush.
#[derive(Default)]
pub(crate) struct Population {
    pub participants: usize,
    pub published_tracks: usize,
    pub subscribed_tracks: usize,
    /// ICE-TCP connections adopted by the worker's peers.
    pub tcp_connections: usize,
}

pub(crate) struct WorkerMetrics {
    /// RTP packets and payload bytes received from publishers (after SRTP).
    pub rtp_in: u64,
    pub rtp_in_bytes: u64,
    /// RTP packets written to subscribers, and their payload bytes.
    pub forwarded: u64,
    pub forwarded_bytes: u64,
    /// Packets sent again from our own send path's history, answering NACKs.
    pub retransmitted: u64,
    /// Transport-wide feedback datagrams read before str0m (`feedback_in.rs`).
    pub feedback_taken: u64,
    /// Datagrams and bytes on the wire, by [`Wire`] kind.
    pub udp_in: [u64; 5],
    pub udp_in_bytes: [u64; 5],
    pub udp_out: [u64; 5],
    pub udp_out_bytes: [u64; 5],
    next_flush: Instant,
    c_rtp_in: Local,
    c_rtp_in_bytes: Local,
    c_forwarded: Local,
    c_forwarded_bytes: Local,
    c_retransmitted: Local,
    c_feedback_taken: Local,
    c_udp_in: [Local; 5],
    c_udp_in_bytes: [Local; 5],
    c_udp_out: [Local; 5],
    c_udp_out_bytes: [Local; 5],
    pli_sent: Counter,
    pli_received: Counter,
    fir_received: Counter,
    nacks_sent: Counter,
    nacks_received: Counter,
    lost_reported: Counter,
    subscriber_loss: Histogram,
    publisher_loss: Histogram,
    subscriber_rtt: Histogram,
    publisher_rtt: Histogram,
    lag: Histogram,
    queue_depth: Gauge,
    worker_participants: Gauge,
    participants: Share,
    tcp_connections: Share,
    published: Share,
    subscribed: Share,
}

fn by_wire(name: &'static str, direction: &'static str) -> [Local; 5] {
    WIRE_LABELS.map(|kind| Local::new(counter!(name, "direction" => direction, "kind" => kind)))
}

impl WorkerMetrics {
    pub fn new(worker: usize) -> Self {
        let worker = worker.to_string();
        Self {
            rtp_in: 0,
            rtp_in_bytes: 0,
            forwarded: 0,
            forwarded_bytes: 0,
            retransmitted: 0,
            feedback_taken: 0,
            udp_in: [0; 5],
            udp_in_bytes: [0; 5],
            udp_out: [0; 5],
            udp_out_bytes: [0; 5],
            next_flush: Instant::now() + FLUSH_EVERY,
            c_rtp_in: Local::new(counter!("switchboard_rtp_packets_received_total")),
            c_rtp_in_bytes: Local::new(counter!("switchboard_rtp_bytes_received_total")),
            c_forwarded: Local::new(counter!("switchboard_packets_forwarded_total")),
            c_forwarded_bytes: Local::new(counter!("switchboard_bytes_forwarded_total")),
            c_retransmitted: Local::new(counter!("switchboard_packets_retransmitted_total")),
            c_feedback_taken: Local::new(counter!("switchboard_transport_feedback_taken_total")),
            c_udp_in: by_wire("switchboard_udp_packets_total", "in"),
            c_udp_in_bytes: by_wire("switchboard_udp_bytes_total", "in"),
            c_udp_out: by_wire("switchboard_udp_packets_total", "out"),
            c_udp_out_bytes: by_wire("switchboard_udp_bytes_total", "out"),
            pli_sent: counter!("switchboard_keyframe_requests_total", "direction" => "sent", "kind" => "pli"),
            pli_received: counter!("switchboard_keyframe_requests_total", "direction" => "received", "kind" => "pli"),
            fir_received: counter!("switchboard_keyframe_requests_total", "direction" => "received", "kind" => "fir"),
            nacks_sent: counter!("switchboard_nacks_total", "direction" => "sent"),
            nacks_received: counter!("switchboard_nacks_total", "direction" => "received"),
            lost_reported: counter!("switchboard_subscriber_reported_packets_lost_total"),
            subscriber_loss: histogram!("switchboard_fraction_lost", "reported_by" => "subscriber"),
            publisher_loss: histogram!("switchboard_fraction_lost", "reported_by" => "server"),
            subscriber_rtt: histogram!("switchboard_rtt_seconds", "peer" => "subscriber"),
            publisher_rtt: histogram!("switchboard_rtt_seconds", "peer" => "publisher"),
            lag: histogram!("switchboard_media_worker_lag_seconds", "worker" => worker.clone()),
            queue_depth: gauge!("switchboard_media_worker_queue_depth", "worker" => worker.clone()),
            worker_participants: gauge!("switchboard_media_worker_participants", "worker" => worker),
            participants: Share::new(gauge!("switchboard_media_participants")),
            tcp_connections: Share::new(gauge!("switchboard_tcp_connections")),
            published: Share::new(gauge!("switchboard_published_tracks")),
            subscribed: Share::new(gauge!("switchboard_subscribed_tracks")),
        }
    }

    #[inline]
    pub fn datagram_in(&mut self, data: &[u8]) {
        let kind = Wire::of(data) as usize;
        self.udp_in[kind] += 1;
        self.udp_in_bytes[kind] += data.len() as u64;
    }

    #[inline]
    pub fn datagram_out(&mut self, data: &[u8]) {
        let kind = Wire::of(data) as usize;
        self.udp_out[kind] += 1;
        self.udp_out_bytes[kind] += data.len() as u64;
    }

    pub fn keyframe_request_sent(&self) {
        self.pli_sent.increment(1);
    }

    pub fn keyframe_request_received(&self, kind: KeyframeRequestKind) {
        match kind {
            KeyframeRequestKind::Pli => self.pli_received.increment(1),
            KeyframeRequestKind::Fir => self.fir_received.increment(1),
        }
    }

    /// NACKs we sent to a publisher since its last stats report.
    pub fn nacks_sent(&self, count: u64) {
        self.nacks_sent.increment(count);
    }

    /// NACKs a subscriber sent us since its last stats report.
    pub fn nacks_received(&self, count: u64) {
        self.nacks_received.increment(count);
    }

    /// A subscriber's receiver report about one of our streams to it.
    pub fn subscriber_report(&self, loss: Option<f32>, rtt: Option<Duration>, lost: u64) {
        if let Some(loss) = loss {
            self.subscriber_loss.record(f64::from(loss));
        }
        if let Some(rtt) = rtt {
            self.subscriber_rtt.record(rtt.as_secs_f64());
        }
        self.lost_reported.increment(lost);
    }

    /// What we measured receiving one of a publisher's streams.
    pub fn publisher_report(&self, loss: Option<f32>, rtt: Option<Duration>) {
        if let Some(loss) = loss {
            self.publisher_loss.record(f64::from(loss));
        }
        if let Some(rtt) = rtt {
            self.publisher_rtt.record(rtt.as_secs_f64());
        }
    }

    /// How late the loop woke for a deadline.
    pub fn lag(&self, late: Duration) {
        self.lag.record(late.as_secs_f64());
    }

    /// True when it is time for [`WorkerMetrics::flush`].
    #[inline]
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_flush
    }

    /// Keeps the local counts from being flushed (to zero) for an hour: tests read them.
    #[cfg(test)]
    pub fn hold_flush(&mut self) {
        self.next_flush = Instant::now() + std::time::Duration::from_secs(3600);
    }

    /// Adds the local counts to the registry and updates the gauges.
    pub fn flush(&mut self, now: Instant, queue_depth: usize, population: &Population) {
        self.next_flush = now + FLUSH_EVERY;
        for (local, value) in [
            (&mut self.c_rtp_in, &mut self.rtp_in),
            (&mut self.c_rtp_in_bytes, &mut self.rtp_in_bytes),
            (&mut self.c_forwarded, &mut self.forwarded),
            (&mut self.c_forwarded_bytes, &mut self.forwarded_bytes),
            (&mut self.c_retransmitted, &mut self.retransmitted),
            (&mut self.c_feedback_taken, &mut self.feedback_taken),
        ] {
            local.value = std::mem::take(value);
            local.flush();
        }
        for (locals, values) in [
            (&mut self.c_udp_in, &mut self.udp_in),
            (&mut self.c_udp_in_bytes, &mut self.udp_in_bytes),
            (&mut self.c_udp_out, &mut self.udp_out),
            (&mut self.c_udp_out_bytes, &mut self.udp_out_bytes),
        ] {
            for (local, value) in locals.iter_mut().zip(values.iter_mut()) {
                local.value = std::mem::take(value);
                local.flush();
            }
        }
        self.queue_depth.set(queue_depth as f64);
        self.worker_participants.set(population.participants as f64);
        self.participants.set(population.participants as f64);
        self.tcp_connections.set(population.tcp_connections as f64);
        self.published.set(population.published_tracks as f64);
        self.subscribed.set(population.subscribed_tracks as f64);
    }
}

impl Worker {
    /// A stats report on a subscriber's stream (str0m's every 5 s), with what the
    /// subscriber's receiver reports said: NACKs it sent, loss, RTT.
    pub(crate) fn egress_stats(&mut self, slot: Slot, stats: &MediaEgressStats) {
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        let lost = stats.remote.as_ref().map_or(0, |r| r.packets_lost);
        let (nacks, lost) = part.stream_delta(
            PeerRole::Subscriber,
            stats.mid,
            stats.rid,
            stats.nacks,
            lost,
        );
        self.metrics.nacks_received(nacks);
        self.metrics.subscriber_report(stats.loss, stats.rtt, lost);
        let kind = part
            .down_tracks
            .iter()
            .flatten()
            .find(|d| d.open_mid() == Some(stats.mid))
            .map(|d| d.kind);
        if let Some(kind) = kind {
            let jitter = stats.remote.as_ref().map_or(0, |r| r.jitter);
            part.quality
                .report(stream_report(kind, stats.loss, stats.rtt, jitter));
        }
    }

    /// A stats report on a publisher's stream: the NACKs we sent, the loss we measured.
    pub(crate) fn ingress_stats(&mut self, slot: Slot, stats: &MediaIngressStats) {
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        let (nacks, _) =
            part.stream_delta(PeerRole::Publisher, stats.mid, stats.rid, stats.nacks, 0);
        self.metrics.nacks_sent(nacks);
        self.metrics.publisher_report(stats.loss, stats.rtt);
        let kind = part
            .tracks
            .iter()
            .flatten()
            .find(|t| t.mid == stats.mid)
            .map(|t| t.kind);
        if let Some(kind) = kind {
            part.quality
                .report(stream_report(kind, stats.loss, stats.rtt, stats.jitter));
        }
    }
}

/// A stream's report for its participant's quality; `jitter` in RTP time units.
fn stream_report(
    kind: TrackKind,
    loss: Option<f32>,
    rtt: Option<std::time::Duration>,
    jitter: u32,
) -> crate::quality::StreamReport {
    let clock_rate = match kind {
        TrackKind::Audio => 48_000,
        TrackKind::Video => 90_000,
    };
    crate::quality::StreamReport {
        loss: f64::from(loss.unwrap_or(0.0)),
        rtt,
        jitter: std::time::Duration::from_micros(u64::from(jitter) * 1_000_000 / clock_rate),
        video: kind == TrackKind::Video,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_datagram_kinds_apart() {
        assert!(matches!(Wire::of(&[0, 1, 0, 0]), Wire::Stun));
        assert!(matches!(Wire::of(&[22, 254, 253]), Wire::Dtls));
        assert!(matches!(Wire::of(&[0x80, 96, 0, 1]), Wire::Rtp));
        assert!(matches!(Wire::of(&[0x80, 0xe0, 0, 1]), Wire::Rtp)); // marker + PT 96
        assert!(matches!(Wire::of(&[0x81, 200, 0, 6]), Wire::Rtcp)); // sender report
        assert!(matches!(Wire::of(&[0x8f, 206, 0, 2]), Wire::Rtcp)); // PLI
        assert!(matches!(Wire::of(&[]), Wire::Other));
    }
}
