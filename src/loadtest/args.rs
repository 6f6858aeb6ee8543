//! `switchboard loadtest` options and how they become a scenario.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Video quality presets: (bitrate, frames per second, width, height).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// 2.5 Mbit/s, 30 fps, 1280×720.
    High,
    /// 1 Mbit/s, 30 fps, 960×540.
    Medium,
    /// 300 kbit/s, 15 fps, 640×360.
    Low,
}

impl Preset {
    pub fn video(self) -> (u32, u32, u32, u32) {
        match self {
            Preset::High => (2_500_000, 30, 1280, 720),
            Preset::Medium => (1_000_000, 30, 960, 540),
            Preset::Low => (300_000, 15, 640, 360),
        }
    }
}

#[derive(Debug, Args)]
pub struct LoadtestArgs {
    /// WebSocket URL of the server, like ws://127.0.0.1:7880 (not with --start-server).
    #[arg(long, value_name = "URL", required_unless_present = "start_server")]
    pub url: Option<String>,

    /// API key the tester signs its join tokens with (needs --api-secret).
    #[arg(long, value_name = "KEY", requires = "api_secret")]
    pub api_key: Option<String>,

    /// Secret of --api-key.
    #[arg(long, value_name = "SECRET", requires = "api_key")]
    pub api_secret: Option<String>,

    /// Sign tokens with the development key "devkey"/"secret" (a `serve --dev` server).
    #[arg(long, conflicts_with = "api_key")]
    pub dev: bool,

    /// Start `switchboard serve --dev` on free loopback ports, measure it, and stop it.
    #[arg(long, conflicts_with_all = ["url", "server_pid"])]
    pub start_server: bool,

    /// Carry every participant's media over ICE-TCP instead of UDP: each PeerConnection
    /// (publisher and subscriber) announces only an active TCP candidate, connects to the
    /// server's passive one and sends STUN, DTLS, RTP and RTCP down that connection in
    /// RFC 4571 frames, as a browser whose network drops UDP does. The report then shows the
    /// server's TCP connections and what either side dropped on full send queues. The server
    /// must have ICE-TCP on (`serve --rtc-tcp-port`, on by default at 7881; --start-server
    /// turns it on at a free port). Not with --subscriber-cap: its bottleneck drops
    /// datagrams as a congested UDP link does, which a TCP connection never would.
    #[arg(long, conflicts_with = "subscriber_cap")]
    pub tcp: bool,

    /// With --start-server: whether the server estimates subscribers' bandwidth
    /// (`serve --rtc-bandwidth-estimation`), to measure what estimation costs.
    #[arg(
        long,
        value_name = "on|off",
        requires = "start_server",
        default_value = "on"
    )]
    pub server_bandwidth_estimation: String,

    /// PID of the server when it runs on this machine: adds its CPU time, CPU per forwarded
    /// packet, RSS and RSS per participant to the report.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Prometheus endpoint of the server [default: /metrics on the --url host].
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<String>,

    /// Number of rooms; every room gets the same participants.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub rooms: u32,

    /// Participants per room publishing one video track.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub video_publishers: u32,

    /// Participants per room publishing one audio track.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub audio_publishers: u32,

    /// Video publishers also publish an audio track (a camera and a microphone, as in a
    /// call).
    #[arg(long)]
    pub video_with_audio: bool,

    /// Participants per room that only subscribe.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub subscribers: u32,

    /// Length of the measured window, after everyone joined: 15s, 2m, 500ms.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,

    /// Joins per second, over all rooms.
    #[arg(long, default_value_t = 20.0, value_name = "PER_SECOND")]
    pub join_rate: f64,

    /// Video preset; --video-bitrate and --fps override its parts [default: medium].
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,

    /// Video bitrate per publisher: 2.5M, 800k or bits per second.
    #[arg(long, value_parser = parse_bitrate, value_name = "BITS")]
    pub video_bitrate: Option<u32>,

    /// Video frames per second.
    #[arg(long, value_name = "FPS")]
    pub fps: Option<u32>,

    /// Audio bitrate per publisher (20 ms Opus frames).
    #[arg(long, default_value = "32k", value_parser = parse_bitrate, value_name = "BITS")]
    pub audio_bitrate: u32,

    /// Caps each subscriber's downlink at this rate (2M, 500k or bits per second): its
    /// incoming datagrams pass a simulated bottleneck (client/src/link.rs), so the server's
    /// estimate of its link and the layers it gets can be watched. The report then shows
    /// the layer mix.
    #[arg(long, value_parser = parse_bitrate, value_name = "BITS")]
    pub subscriber_cap: Option<u32>,

    /// With --subscriber-cap: the longest a datagram waits in the bottleneck's queue before
    /// it is dropped instead.
    /// 300 ms, as the browser tests' tbf links.
    #[arg(long, default_value = "300ms", value_parser = parse_duration, value_name = "DURATION")]
    pub subscriber_queue: Duration,

    /// With --subscriber-cap: bytes that pass at once after a quiet spell (16 KB, as the
    /// browser tests' tbf `burst`); 0 for none.
    #[arg(long, default_value_t = 16 * 1024, value_name = "BYTES")]
    pub subscriber_burst: u32,

    /// With --subscriber-cap: changes every subscriber's cap this far into the measured
    /// window, e.g. `10s:500k`. The report then shows how long the server's estimates took
    /// to follow (with --start-server, from its log).
    #[arg(long, value_parser = parse_cap_step, value_name = "AFTER:BITS", requires = "subscriber_cap")]
    pub subscriber_cap_step: Option<CapStep>,

    /// With --start-server and --subscriber-cap: writes what the first subscriber received
    /// (kbit/s, frame width, fps every 250 ms) and the server's estimates of its link to FILE
    /// as JSON, for web/tools/timeline-svg.mjs to draw.
    #[arg(long, value_name = "FILE", requires_all = ["start_server", "subscriber_cap"])]
    pub timeline: Option<PathBuf>,

    /// A keyframe at least this often (the server's requests add more).
    #[arg(long, default_value = "3s", value_parser = parse_duration, value_name = "DURATION")]
    pub keyframe_interval: Duration,

    /// Publish video as three simulcast layers (rids q, h, f).
    #[arg(long)]
    pub simulcast: bool,

    /// Video packets leave at this multiple of the bitrate, as libwebrtc's pacer sends them;
    /// 0 sends each frame as one burst (a stress case no browser causes).
    #[arg(long, default_value_t = switchboard_client::DEFAULT_PACING_FACTOR, value_name = "FACTOR")]
    pub pacing: f64,

    /// Seed of the synthetic media (frame sizes, phases) and of nothing else.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Threads running participants [default: one per CPU].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Write the report as JSON to FILE (schema in docs/loadtest.md).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// No progress line, only the table.
    #[arg(long)]
    pub quiet: bool,
}

/// `15s`, `2m`, `500ms`, `1h` or plain seconds.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let text = input.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{input:?} is not a duration like 15s, 2m or 500ms"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {input:?}: use ms, s, m or h"
            ))
        }
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("{input:?} must be more than zero"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A change of the subscribers' cap during the measured window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapStep {
    /// How far into the window.
    pub after: Duration,
    /// The new cap, bits per second.
    pub rate_bps: u32,
}

/// `10s:500k`: a duration, a colon, a bitrate.
pub fn parse_cap_step(input: &str) -> Result<CapStep, String> {
    let (after, rate) = input
        .split_once(':')
        .ok_or_else(|| format!("{input:?} is not a step like 10s:500k (when, then the new cap)"))?;
    Ok(CapStep {
        after: parse_duration(after)?,
        rate_bps: parse_bitrate(rate)?,
    })
}

/// `2.5M`, `800k`, `32000`.
pub fn parse_bitrate(input: &str) -> Result<u32, String> {
    let text = input.trim();
    let (number, factor) = match text.chars().last() {
        Some('k' | 'K') => (&text[..text.len() - 1], 1e3),
        Some('m' | 'M') => (&text[..text.len() - 1], 1e6),
        _ => (text, 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{input:?} is not a bitrate like 2.5M, 800k or 32000"))?;
    let bits = value * factor;
    if !(1000.0..=100e6).contains(&bits) {
        return Err(format!("{input:?} is outside 1k..100M bits per second"));
    }
    Ok(bits as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_bitrates_parse() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_bitrate("2.5M"), Ok(2_500_000));
        assert_eq!(parse_bitrate("800k"), Ok(800_000));
        assert_eq!(parse_bitrate("32000"), Ok(32_000));
        assert!(parse_bitrate("fast").is_err());
        assert!(parse_bitrate("10").is_err());
        assert_eq!(
            parse_cap_step("10s:500k"),
            Ok(CapStep {
                after: Duration::from_secs(10),
                rate_bps: 500_000
            })
        );
        assert!(parse_cap_step("500k").is_err());
        assert!(parse_cap_step("10s:fast").is_err());
    }
}
