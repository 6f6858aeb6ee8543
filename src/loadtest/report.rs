//! The load test's results: computed from snapshots at the start and end of the measured
//! window, printed as a table and written as JSON (schema in docs/loadtest.md).

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;
use switchboard_client::{Histogram, ParticipantStats};

use super::floor::Floor;

/// Version of the JSON layout; bumped when a field changes meaning or goes away.
pub const SCHEMA: &str = "switchboard-loadtest/1";

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub scenario: Scenario,
    pub join: JoinSummary,
    pub delivery: Delivery,
    /// Video frames received in the window per picture width (the simulcast layer).
    pub layers: Vec<LayerShare>,
    /// With `--subscriber-cap` and `--start-server`: the server's estimates of the capped
    /// links (`links.rs`).
    pub link_estimates: Option<super::links::LinkEstimates>,
    pub latency_ms: LatencySummary,
    /// With `--tcp`: what the ICE-TCP connections did.
    pub tcp: Option<TcpSummary>,
    pub tracks: Tracks,
    pub server: Option<ServerCost>,
    pub floor: Floor,
    /// floor.floor_us ÷ server.cpu_us_per_forwarded_packet (tester's count).
    pub efficiency: Option<f64>,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Scenario {
    pub url: String,
    /// What the participants' media went over: "udp", or "tcp" (ICE-TCP, `--tcp`).
    pub transport: &'static str,
    pub started_server: bool,
    pub rooms: u32,
    pub video_publishers: u32,
    pub audio_publishers: u32,
    pub subscribers: u32,
    pub participants: usize,
    pub duration_s: f64,
    pub join_rate: f64,
    pub video_bitrate_bps: u32,
    pub fps: u32,
    pub width: u32,
    pub height: u32,
    pub simulcast: bool,
    /// Video packets leave at this multiple of the bitrate; 0 = each frame as one burst.
    pub pacing_factor: f64,
    pub keyframe_interval_s: f64,
    pub audio_bitrate_bps: u32,
    /// Each subscriber's simulated downlink (`--subscriber-cap`), and its queue.
    pub subscriber_cap_bps: Option<u32>,
    pub subscriber_queue_ms: Option<f64>,
    pub subscriber_burst_bytes: Option<u32>,
    /// `--subscriber-cap-step`: seconds into the window, and the new cap.
    pub subscriber_cap_step_s: Option<f64>,
    pub subscriber_cap_step_bps: Option<u32>,
    pub seed: u64,
    pub threads: usize,
}

/// The ICE-TCP connections of a `--tcp` run, over the window.
#[derive(Debug, Serialize)]
pub struct TcpSummary {
    /// Datagrams the clients dropped because a connection's send queue (4 MiB) was full.
    pub client_dropped: u64,
    /// The server's `switchboard_tcp_connections` at the end of the window.
    pub server_connections: Option<f64>,
    /// Datagrams the server dropped because a connection's queue was full: the increase of
    /// its `switchboard_tcp_datagrams_dropped_total`.
    pub server_dropped: Option<f64>,
}

/// A distribution in milliseconds; `None`s when there were no samples.
#[derive(Debug, Default, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Percentiles {
    pub fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| -> Option<f64> {
            if samples.is_empty() {
                return None;
            }
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            Some(samples[rank - 1])
        };
        Percentiles {
            count: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: samples.last().copied(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct JoinSummary {
    pub attempted: usize,
    pub joined: usize,
    pub failed: usize,
    /// Token minted → JoinResponse received.
    pub signal_ms: Percentiles,
    /// Token minted → publisher PeerConnection connected with its data channels open (what
    /// livekit-client's `connect()` waits for).
    pub connected_ms: Percentiles,
    /// Token minted → first media packet received, for participants that receive media.
    pub first_media_ms: Percentiles,
    /// Participants that should receive media but got none.
    pub without_media: usize,
    /// `first_media_ms` broken down along the subscriber PeerConnection.
    pub subscriber_steps: SubscriberSteps,
}

/// The subscriber PeerConnection's steps, each from the previous one, per participant that
/// got that far.
#[derive(Debug, Serialize)]
pub struct SubscriberSteps {
    /// Token minted → the server's first subscriber offer reached the media loop.
    pub offer_ms: Percentiles,
    /// Offer → ICE connected (a nominated pair; our answer went out just after the offer).
    pub offer_to_ice_ms: Percentiles,
    /// ICE connected → DTLS done (str0m's `Connected`).
    pub ice_to_dtls_ms: Percentiles,
    /// DTLS done → first RTP packet.
    pub dtls_to_media_ms: Percentiles,
}

#[derive(Debug, Default, Serialize)]
pub struct Delivery {
    pub window_s: f64,
    /// RTP packets received by all participants (= forwarded by the server).
    pub packets: u64,
    pub packets_per_s: f64,
    /// RTP payload bytes received.
    pub bytes: u64,
    pub mbit_per_s: f64,
    /// Packets the publishers sent in the window.
    pub sent_packets: u64,
    /// Sequence gaps at the receivers.
    pub lost: u64,
    pub loss_ratio: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
}

impl LatencySummary {
    /// From a histogram of microseconds.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            samples: histogram.len(),
            p50: Some(ms(histogram.value_at_quantile(0.50))),
            p99: Some(ms(histogram.value_at_quantile(0.99))),
            p999: Some(ms(histogram.value_at_quantile(0.999))),
            max: Some(ms(histogram.max())),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Tracks {
    /// (receiving participant, track) pairs the scenario should produce.
    pub expected: u64,
    /// Pairs that delivered at least one packet by the end of the window.
    pub received: u64,
}

#[derive(Debug, Serialize)]
pub struct ServerCost {
    pub pid: u32,
    /// utime + stime during the window.
    pub cpu_s: f64,
    /// The two apart: the server's own work, and the kernel's on its behalf (sending
    /// datagrams, most of it). A change to the server's code shows in the first alone.
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    pub cpu_percent: f64,
    /// Packets delivered to subscribers, counted by the tester.
    pub forwarded_packets: u64,
    /// The server's `switchboard_packets_forwarded_total` over the window, if exported.
    pub forwarded_packets_metrics: Option<f64>,
    pub cpu_us_per_forwarded_packet: Option<f64>,
    pub cpu_us_per_forwarded_packet_metrics: Option<f64>,
    /// User time alone per packet delivered (tester's count).
    pub user_us_per_forwarded_packet: Option<f64>,
    /// RSS at the end of the window.
    pub rss_kib: u64,
    /// RSS when half and when all of the participants had joined.
    pub rss_half: Option<RssPoint>,
    pub rss_all: Option<RssPoint>,
    /// Slope between those two points.
    pub rss_per_participant_kib: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RssPoint {
    pub participants: usize,
    pub rss_kib: u64,
}

/// Per (participant, track): packets, payload bytes, lost.
pub type TrackCounts = HashMap<(usize, String), (u64, u64, u64)>;

pub fn track_counts(participants: &[(usize, ParticipantStats)]) -> TrackCounts {
    let mut counts = TrackCounts::new();
    for (index, stats) in participants {
        for track in &stats.tracks {
            let entry = counts.entry((*index, track.track_sid.clone())).or_default();
            entry.0 += track.packets;
            entry.1 += track.bytes;
            entry.2 += track.lost;
        }
    }
    counts
}

/// Frames of one picture width received in the window, and their share of all.
#[derive(Debug, Serialize, PartialEq)]
pub struct LayerShare {
    pub width: u32,
    pub frames: u64,
    pub share: f64,
}

/// The video frames every receiver got between two snapshots, by picture width.
pub fn layer_mix(
    start: &[(usize, ParticipantStats)],
    end: &[(usize, ParticipantStats)],
) -> Vec<LayerShare> {
    let frames = |stats: &[(usize, ParticipantStats)]| {
        let mut counts: HashMap<(usize, String, u32), u64> = HashMap::new();
        for (index, s) in stats {
            for track in &s.tracks {
                for &(width, n) in &track.frames_by_width {
                    *counts
                        .entry((*index, track.track_sid.clone(), width))
                        .or_default() += n;
                }
            }
        }
        counts
    };
    let before = frames(start);
    let mut by_width: std::collections::BTreeMap<u32, u64> = Default::default();
    for (key, n) in frames(end) {
        let added = n.saturating_sub(before.get(&key).copied().unwrap_or_default());
        *by_width.entry(key.2).or_default() += added;
    }
    let total: u64 = by_width.values().sum();
    by_width
        .into_iter()
        .filter(|&(_, frames)| frames > 0)
        .map(|(width, frames)| LayerShare {
            width,
            frames,
            share: frames as f64 / total as f64,
        })
        .collect()
}

/// What happened between two snapshots.
pub fn delivery(
    start: &TrackCounts,
    end: &TrackCounts,
    window_s: f64,
    sent_packets: u64,
) -> Delivery {
    let (mut packets, mut bytes, mut lost) = (0, 0, 0);
    for (key, (p1, b1, l1)) in end {
        let (p0, b0, l0) = start.get(key).copied().unwrap_or_default();
        packets += p1.saturating_sub(p0);
        bytes += b1.saturating_sub(b0);
        lost += l1.saturating_sub(l0);
    }
    let per_s = |v: f64| if window_s > 0.0 { v / window_s } else { 0.0 };
    Delivery {
        window_s,
        packets,
        packets_per_s: per_s(packets as f64),
        bytes,
        mbit_per_s: per_s(bytes as f64 * 8.0 / 1e6),
        sent_packets,
        lost,
        loss_ratio: if packets + lost > 0 {
            lost as f64 / (packets + lost) as f64
        } else {
            0.0
        },
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2} ms"))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let s = &self.scenario;
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
        let video = if s.video_publishers > 0 {
            format!(
                "{:.2} Mbit/s {} fps {}x{}{}, {}",
                f64::from(s.video_bitrate_bps) / 1e6,
                s.fps,
                s.width,
                s.height,
                if s.simulcast { " simulcast q/h/f" } else { "" },
                if s.pacing_factor > 0.0 {
                    format!("paced at {}× the bitrate", s.pacing_factor)
                } else {
                    "frames sent as bursts (no pacing)".to_owned()
                }
            )
        } else {
            "none".into()
        };
        row(
            "scenario",
            format!(
                "{} room(s) × ({} video + {} audio publishers, {} subscribers) = {} participants",
                s.rooms, s.video_publishers, s.audio_publishers, s.subscribers, s.participants
            ),
        );
        row("video", video);
        row(
            "transport",
            match &self.tcp {
                None => "UDP".to_owned(),
                Some(tcp) => format!(
                    "ICE-TCP (RFC 4571 frames), {} server connections; dropped on full send \
                     queues: {} by the clients, {} by the server",
                    opt(tcp.server_connections, 0),
                    tcp.client_dropped,
                    opt(tcp.server_dropped, 0)
                ),
            },
        );
        row(
            "window",
            format!(
                "{:.1} s after all joins, {} threads",
                self.delivery.window_s, s.threads
            ),
        );
        let j = &self.join;
        row(
            "joined",
            format!("{}/{} ({} failed)", j.joined, j.attempted, j.failed),
        );
        row(
            "join → JoinResponse p50/p99",
            format!("{} / {}", ms(j.signal_ms.p50), ms(j.signal_ms.p99)),
        );
        row(
            "join → connected p50/p99",
            format!("{} / {}", ms(j.connected_ms.p50), ms(j.connected_ms.p99)),
        );
        row(
            "join → first media p50/p99",
            format!(
                "{} / {} (max {}, {} without media)",
                ms(j.first_media_ms.p50),
                ms(j.first_media_ms.p99),
                ms(j.first_media_ms.max),
                j.without_media
            ),
        );
        let steps = &j.subscriber_steps;
        row(
            "  sub offer / +ICE / +DTLS / +RTP",
            format!(
                "p50 {} / {} / {} / {}; p99 {} / {} / {} / {}",
                ms(steps.offer_ms.p50),
                ms(steps.offer_to_ice_ms.p50),
                ms(steps.ice_to_dtls_ms.p50),
                ms(steps.dtls_to_media_ms.p50),
                ms(steps.offer_ms.p99),
                ms(steps.offer_to_ice_ms.p99),
                ms(steps.ice_to_dtls_ms.p99),
                ms(steps.dtls_to_media_ms.p99),
            ),
        );
        if let Some(cap) = s.subscriber_cap_bps {
            row(
                "subscriber downlink",
                format!(
                    "capped at {} kbit/s, {:.0} ms queue, {} bytes burst",
                    cap / 1000,
                    s.subscriber_queue_ms.unwrap_or_default(),
                    s.subscriber_burst_bytes.unwrap_or_default()
                ),
            );
        }
        if let (Some(at), Some(cap)) = (s.subscriber_cap_step_s, s.subscriber_cap_step_bps) {
            row(
                "  then stepped",
                format!("to {} kbit/s {at:.0} s into the window", cap / 1000),
            );
        }
        if let Some(links) = &self.link_estimates {
            let kbps = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.0}", v / 1000.0));
            row(
                "server's link estimates",
                format!(
                    "{} subscribers; at the end p50 {} kbit/s (max {})",
                    links.subscribers,
                    kbps(links.final_bps.p50),
                    kbps(links.final_bps.max)
                ),
            );
            if let (Some(before), Some(took)) = (&links.before_step_bps, &links.convergence_s) {
                let s = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} s"));
                row(
                    "  through the step",
                    format!(
                        "p50 {} kbit/s before; within 25 % of the new cap after p50 {}, max {} ({} never)",
                        kbps(before.p50),
                        s(took.p50),
                        s(took.max),
                        links.not_converged
                    ),
                );
            }
        }
        row(
            "video layers received",
            if self.layers.is_empty() {
                "none".to_owned()
            } else {
                self.layers
                    .iter()
                    .map(|l| format!("{} wide {:.0} %", l.width, l.share * 100.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        row(
            "tracks received / expected",
            format!("{} / {}", self.tracks.received, self.tracks.expected),
        );
        let d = &self.delivery;
        row(
            "delivered",
            format!(
                "{:.0} packets/s, {:.2} Mbit/s payload ({} packets)",
                d.packets_per_s, d.mbit_per_s, d.packets
            ),
        );
        row(
            "loss (sequence gaps)",
            format!("{} packets ({:.4}%)", d.lost, d.loss_ratio * 100.0),
        );
        let l = &self.latency_ms;
        row(
            "latency p50/p99/p99.9",
            format!(
                "{} / {} / {} (max {}, {} samples)",
                ms(l.p50),
                ms(l.p99),
                ms(l.p999),
                ms(l.max),
                l.samples
            ),
        );
        if let Some(c) = &self.server {
            row(
                "server CPU",
                format!(
                    "{:.2} s ({:.0}% of one core; user {:.2} s, system {:.2} s), pid {}",
                    c.cpu_s, c.cpu_percent, c.cpu_user_s, c.cpu_system_s, c.pid
                ),
            );
            row(
                "CPU per forwarded packet",
                format!(
                    "{} µs, of it user {} µs (tester count); {} µs ({}: {})",
                    opt(c.cpu_us_per_forwarded_packet, 2),
                    opt(c.user_us_per_forwarded_packet, 2),
                    opt(c.cpu_us_per_forwarded_packet_metrics, 2),
                    super::server::FORWARDED_METRIC,
                    opt(c.forwarded_packets_metrics, 0)
                ),
            );
            row(
                "server RSS",
                format!(
                    "{:.1} MiB; {} KiB per participant",
                    c.rss_kib as f64 / 1024.0,
                    opt(c.rss_per_participant_kib, 1)
                ),
            );
        }
        let f = &self.floor;
        row(
            "floor",
            format!(
                "{:.2} µs = sendto {:.2} µs + SRTP {} {:.2} µs (other profile {:.2} µs)",
                f.floor_us,
                f.sendto_us,
                f.srtp_cheaper,
                f.floor_us - f.sendto_us,
                f.srtp_aes128_gcm_us.max(f.srtp_aes128_cm_sha1_80_us)
            ),
        );
        row("efficiency (floor ÷ CPU/packet)", opt(self.efficiency, 3));
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v) in &rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        for e in &self.errors {
            let _ = writeln!(out, "error: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!(
            (p.count, p.p50, p.p99, p.max),
            (100, Some(50.0), Some(99.0), Some(100.0))
        );
        assert_eq!(Percentiles::of(Vec::new()).p50, None);
    }

    #[test]
    fn delivery_is_the_difference_of_two_snapshots() {
        let start: TrackCounts = [((0, "TR_a".to_owned()), (10, 1000, 0))].into();
        let end: TrackCounts = [
            ((0, "TR_a".to_owned()), (110, 11000, 1)),
            ((1, "TR_a".to_owned()), (50, 5000, 0)),
        ]
        .into();
        let d = delivery(&start, &end, 2.0, 60);
        assert_eq!((d.packets, d.bytes, d.lost), (150, 15000, 1));
        assert_eq!(d.packets_per_s, 75.0);
        assert!((d.loss_ratio - 1.0 / 151.0).abs() < 1e-12);
    }
}
