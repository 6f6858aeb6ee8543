//! Real media for the format tests: ffmpeg encodes a test pattern or a tone and sends it as
//! RTP to a socket the test binds; ffprobe and ffmpeg judge the files written from it.
//! Nothing is mocked, so a machine without ffmpeg fails these tests.

#![allow(dead_code)] // each test binary uses a different part

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard_egress::media::depacketize::{Depacketizer, Frame};
use switchboard_egress::media::jitter::{JitterBuffer, Released};
use switchboard_egress::media::{Codec, RtpPacketIn};

/// Three seconds of a 320x240, 30 fps test pattern, then the encoder arguments.
pub fn video_source() -> Vec<&'static str> {
    vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=30",
        "-t",
        "3",
        "-pix_fmt",
        "yuv420p",
    ]
}

pub fn vp8_args() -> Vec<&'static str> {
    let mut args = video_source();
    // A keyframe every second, so clusters and loss recovery have keyframes to work with.
    args.extend([
        "-c:v",
        "libvpx",
        "-g",
        "30",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
    ]);
    args.extend(["-b:v", "400k"]);
    args
}

pub fn vp9_args() -> Vec<&'static str> {
    let mut args = video_source();
    args.extend([
        "-c:v",
        "libvpx-vp9",
        "-g",
        "30",
        "-cpu-used",
        "6",
        "-b:v",
        "400k",
    ]);
    args.extend(["-strict", "experimental"]);
    args
}

pub fn h264_args() -> Vec<&'static str> {
    let mut args = video_source();
    args.extend([
        "-c:v",
        "libx264",
        "-profile:v",
        "baseline",
        "-bf",
        "0",
        "-g",
        "30",
    ]);
    args.extend(["-preset", "veryfast"]);
    args
}

pub fn opus_args() -> Vec<&'static str> {
    vec![
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "3",
        "-ac",
        "2",
        "-c:a",
        "libopus",
        "-b:a",
        "64k",
    ]
}

/// Runs ffmpeg with `args` sending RTP to a socket of ours and returns the packets received,
/// with extended sequence numbers, in arrival order.
pub fn capture_rtp(args: &[&str]) -> Vec<RtpPacketIn> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("set a read timeout");
    let port = socket.local_addr().expect("local address").port();
    let url = format!("rtp://127.0.0.1:{port}?pkt_size=1200");
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error"])
        .args(args)
        .args(["-f", "rtp", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ffmpeg (the format tests need ffmpeg installed)");
    let mut packets = Vec::new();
    let mut extender = SeqExtender::default();
    let mut buf = vec![0u8; 65_536];
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut exited = None;
    loop {
        match socket.recv(&mut buf) {
            Ok(len) => {
                if let Some(rtp) = parse_rtp(&buf[..len]) {
                    packets.push(RtpPacketIn {
                        seq: extender.extend(rtp.seq),
                        timestamp: rtp.timestamp,
                        marker: rtp.marker,
                        payload: rtp.payload.to_vec(),
                    });
                }
            }
            Err(_) if exited.is_some() => break,
            Err(_) => {}
        }
        if exited.is_none() {
            exited = child.try_wait().expect("poll ffmpeg");
        }
        assert!(Instant::now() < deadline, "ffmpeg did not finish in time");
    }
    let output = child.wait_with_output().expect("ffmpeg output");
    assert!(
        output.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!packets.is_empty(), "no RTP packets from ffmpeg");
    packets
}

pub struct RtpView<'a> {
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: &'a [u8],
}

/// Parses an RTP packet (RFC 3550), skipping CSRCs, a header extension and padding. RTCP
/// (packet types 200..=207 where the RTP payload type and marker would be) is `None`.
pub fn parse_rtp(packet: &[u8]) -> Option<RtpView<'_>> {
    if packet.len() < 12 || packet[0] >> 6 != 2 || (200..=207).contains(&packet[1]) {
        return None;
    }
    let padding = packet[0] & 0x20 != 0;
    let extension = packet[0] & 0x10 != 0;
    let csrcs = usize::from(packet[0] & 0x0f);
    let mut start = 12 + 4 * csrcs;
    if extension {
        let words = packet.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let mut end = packet.len();
    if padding {
        end = end.checked_sub(usize::from(*packet.last()?))?;
    }
    Some(RtpView {
        payload_type: packet[1] & 0x7f,
        seq: u16::from_be_bytes([packet[2], packet[3]]),
        timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        marker: packet[1] & 0x80 != 0,
        payload: packet.get(start..end)?,
    })
}

/// Extends 16-bit sequence numbers across wraps (the SFU's job in production).
#[derive(Default)]
pub struct SeqExtender {
    last: Option<u64>,
}

impl SeqExtender {
    pub fn extend(&mut self, seq: u16) -> u64 {
        let seq = u64::from(seq);
        let extended = match self.last {
            // Start one cycle up, so a packet reordered before the first has room below.
            None => (1 << 16) + seq,
            Some(last) => {
                let base = last & !0xffff;
                [
                    base.saturating_sub(1 << 16) + seq,
                    base + seq,
                    base + (1 << 16) + seq,
                ]
                .into_iter()
                .min_by_key(|candidate| candidate.abs_diff(last))
                .unwrap_or(base + seq)
            }
        };
        self.last = Some(self.last.map_or(extended, |last| last.max(extended)));
        extended
    }
}

/// Swaps a few adjacent packets, as a network path might.
pub fn shuffle_some(packets: &mut [RtpPacketIn]) {
    let mut i = 5;
    while i + 1 < packets.len() {
        packets.swap(i, i + 1);
        i += 37;
    }
}

/// What a track's packets became.
pub struct Depacketized {
    pub frames: Vec<Frame>,
    pub depacketizer: Depacketizer,
    pub lost_packets: u64,
}

/// Feeds packets, one per simulated millisecond, through a jitter buffer and a
/// depacketizer, as the recorder does.
pub fn depacketize(codec: Codec, packets: Vec<RtpPacketIn>) -> Depacketized {
    let delay = if codec.is_video() { 300 } else { 100 };
    let mut jitter = JitterBuffer::new(Duration::from_millis(delay), 512);
    let mut depacketizer = Depacketizer::new(codec);
    let mut frames = Vec::new();
    let mut lost_packets = 0;
    let t0 = Instant::now();
    let mut released = Vec::new();
    for (i, packet) in packets.into_iter().enumerate() {
        let now = t0 + Duration::from_millis(i as u64);
        jitter.push(packet, now);
        released.extend(std::iter::from_fn(|| jitter.pop(now)));
    }
    released.extend(jitter.flush());
    for item in released {
        match item {
            Released::Packet(packet) => frames.extend(depacketizer.push(&packet)),
            Released::Lost { count, .. } => {
                lost_packets += count;
                depacketizer.lost();
            }
        }
        frames.extend(std::iter::from_fn(|| depacketizer.pop_ready()));
    }
    frames.extend(depacketizer.flush());
    frames.extend(std::iter::from_fn(|| depacketizer.pop_ready()));
    Depacketized {
        frames,
        depacketizer,
        lost_packets,
    }
}

/// Milliseconds of a frame from the first frame's RTP timestamp.
pub fn frame_ms(frame: &Frame, first: u32, clock_rate: u32) -> u64 {
    u64::from(frame.timestamp.wrapping_sub(first)) * 1000 / u64::from(clock_rate)
}

/// ffprobe's JSON description of a file's streams and format.
pub fn probe(path: &Path) -> Value {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        output.status.success(),
        "ffprobe failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("ffprobe JSON")
}

pub fn format_duration(probe: &Value) -> f64 {
    probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {probe}"))
}

/// The stream of `codec_type` ("video"/"audio") in a probe.
pub fn stream<'a>(probe: &'a Value, codec_type: &str) -> &'a Value {
    probe["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["codec_type"] == codec_type))
        .unwrap_or_else(|| panic!("no {codec_type} stream in {probe}"))
}

/// Decodes the whole file with ffmpeg; returns whether it exited 0 and what it printed at
/// level error (`-xerror` makes any decoding error fatal when `strict`).
pub fn decode(path: &Path, strict: bool) -> (bool, String) {
    let mut command = Command::new("ffmpeg");
    command.args(["-hide_banner", "-nostdin", "-v", "error"]);
    if strict {
        command.arg("-xerror");
    }
    let output = command
        .arg("-i")
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts that ffmpeg decodes the file with no error at all.
pub fn assert_decodes_cleanly(path: &Path) {
    let (ok, errors) = decode(path, true);
    assert!(ok && errors.is_empty(), "{}: {errors}", path.display());
}

/// Frames ffprobe decodes from the first stream of `selector` ("v:0", "a:0").
pub fn decoded_frames(path: &Path, selector: &str) -> u64 {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", selector])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .trim_end_matches(',')
        .parse()
        .unwrap_or_else(|_| panic!("no frame count for {}: {text:?}", path.display()))
}

pub fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= expected * tolerance,
        "{what}: {actual}, expected {expected} ± {}%",
        tolerance * 100.0
    );
}
