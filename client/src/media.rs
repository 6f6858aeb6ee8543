//! Synthetic media: VP8 and Opus RTP payloads shaped like a real encoder's, each carrying
//! the time it was made so a subscriber in the same process can measure end-to-end latency.
//!
//! Nothing here is decodable video or audio. What matters to an SFU is real: VP8 payload
//! descriptors (S bit, partition 0, a 15-bit picture id), a VP8 frame header on the first
//! packet of each frame whose P bit marks keyframes, frames split evenly over packets of at
//! most [`MAX_PAYLOAD`] bytes with the marker on the last, and packet rates and sizes that
//! follow the configured bitrate and frame rate.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// Largest RTP payload we send, as browsers packetize (it keeps the datagram under ~1250
/// bytes once RTP header, extensions and the SRTP tag are added).
pub const MAX_PAYLOAD: usize = 1200;

/// Marks a payload stamped by this crate, so media from anything else is never misread as
/// a send time.
pub const STAMP_MAGIC: [u8; 4] = *b"SBlt";
/// Magic plus nanoseconds on the process clock, big-endian.
pub const STAMP_LEN: usize = 12;

/// VP8 payload descriptor we write: X, then I with a 15-bit picture id.
const VP8_DESCRIPTOR_LEN: usize = 4;
/// VP8 frame header on a frame's first packet: 3-byte tag, plus start code and size on a
/// keyframe (RFC 6386 9.1).
const VP8_KEY_HEADER_LEN: usize = 10;
const VP8_DELTA_HEADER_LEN: usize = 3;
/// A keyframe costs this many delta frames' bytes (roughly what libvpx produces at
/// realtime settings); the average bitrate is kept regardless.
const KEYFRAME_WEIGHT: f64 = 4.0;
/// Opus TOC byte: config 31 (CELT fullband, 20 ms), mono, one frame.
const OPUS_TOC: u8 = 0xf8;

/// The process-wide clock the stamps are read on. Publishers and subscribers of one
/// process share it, so `arrival - stamp` is the end-to-end latency.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from [`epoch`] to `at` (0 before the epoch).
pub fn stamp_of(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_nanos() as u64
}

/// Synthetic video: bitrate, frame rate and keyframe cadence.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoConfig {
    pub bitrate_bps: u32,
    pub fps: u32,
    /// A keyframe at least this often (keyframe requests add more).
    pub keyframe_interval: Duration,
    pub width: u32,
    pub height: u32,
    /// Publish three layers with rids q/h/f (1/4, 1/2 and full resolution) instead of one.
    pub simulcast: bool,
    /// Packets leave at this multiple of a layer's bitrate (libwebrtc's pacer: 2.5); 0 sends
    /// each frame as one burst.
    pub pacing_factor: f64,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            bitrate_bps: 1_000_000,
            fps: 30,
            keyframe_interval: Duration::from_secs(3),
            width: 1280,
            height: 720,
            simulcast: false,
            pacing_factor: crate::pacer::DEFAULT_PACING_FACTOR,
        }
    }
}

impl VideoConfig {
    /// The layers to send: (rid, bitrate, width, height), lowest first as LiveKit orders
    /// them. Without simulcast one layer without rid.
    pub fn layers(&self) -> Vec<(Option<&'static str>, u32, u32, u32)> {
        if !self.simulcast {
            return vec![(None, self.bitrate_bps, self.width, self.height)];
        }
        // Roughly livekit-client's default 720p ladder: f full, h a quarter, q a tenth.
        vec![
            (
                Some("q"),
                (self.bitrate_bps / 10).max(30_000),
                self.width / 4,
                self.height / 4,
            ),
            (
                Some("h"),
                (self.bitrate_bps / 4).max(60_000),
                self.width / 2,
                self.height / 2,
            ),
            (Some("f"), self.bitrate_bps, self.width, self.height),
        ]
    }
}

/// Synthetic Opus: 20 ms frames at a bitrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioConfig {
    pub bitrate_bps: u32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            bitrate_bps: 32_000,
        }
    }
}

/// One RTP packet to write: payload and marker. Sequence numbers and timestamps come with
/// the frame.
pub(crate) struct OutPacket {
    pub payload: Vec<u8>,
    pub marker: bool,
}

/// One encoded frame: its RTP timestamp, first extended sequence number and packets.
pub(crate) struct Frame {
    pub rtp_time: u32,
    pub first_seq: u64,
    pub packets: Vec<OutPacket>,
}

/// Filler bytes, random once per source: the SFU never reads them and SRTP costs the same
/// whatever they are.
fn filler(rng: &mut StdRng) -> Vec<u8> {
    let mut bytes = vec![0u8; MAX_PAYLOAD];
    rng.fill(bytes.as_mut_slice());
    bytes
}

fn push_stamp(payload: &mut Vec<u8>, at: Instant) {
    payload.extend_from_slice(&STAMP_MAGIC);
    payload.extend_from_slice(&stamp_of(at).to_be_bytes());
}

/// Rewrites the send time of a stamped payload: a paced packet leaves after its frame was
/// made, and latency counts from when it leaves.
pub(crate) fn restamp(payload: &mut [u8], at: Instant) {
    // The stamp follows the payload descriptor and, on a frame's first packet, the frame
    // header: within the first few dozen bytes.
    let window = &payload[..payload.len().min(32)];
    if let Some(pos) = window
        .windows(STAMP_MAGIC.len())
        .position(|w| w == STAMP_MAGIC)
    {
        let start = pos + STAMP_MAGIC.len();
        if let Some(slot) = payload.get_mut(start..start + 8) {
            slot.copy_from_slice(&stamp_of(at).to_be_bytes());
        }
    }
}

/// Fills `payload` up to `len` bytes from `filler`.
fn pad(payload: &mut Vec<u8>, len: usize, filler: &[u8]) {
    if payload.len() < len {
        let missing = len - payload.len();
        payload.extend_from_slice(&filler[..missing.min(filler.len())]);
    }
}

/// Produces VP8 frames for one layer.
pub(crate) struct VideoEncoder {
    fps: u32,
    frames_per_key: u64,
    delta_bytes: f64,
    width: u16,
    height: u16,
    since_key: u64,
    force_key: bool,
    picture_id: u16,
    next_seq: u64,
    rtp_base: u32,
    started: Option<Instant>,
    rng: StdRng,
    filler: Vec<u8>,
}

impl VideoEncoder {
    pub fn new(
        bitrate_bps: u32,
        fps: u32,
        keyframe_interval: Duration,
        size: (u32, u32),
        seed: u64,
    ) -> Self {
        let fps = fps.max(1);
        let mut rng = StdRng::seed_from_u64(seed);
        let frames_per_key =
            ((keyframe_interval.as_secs_f64() * f64::from(fps)).round() as u64).max(1);
        let average = f64::from(bitrate_bps) / 8.0 / f64::from(fps);
        let n = frames_per_key as f64;
        // n frames, one of them a keyframe of weight KEYFRAME_WEIGHT, average `average`.
        let delta_bytes = if frames_per_key > 1 {
            average * n / (KEYFRAME_WEIGHT + n - 1.0)
        } else {
            average
        };
        Self {
            fps,
            frames_per_key,
            delta_bytes,
            width: size.0.min(0x3fff) as u16,
            height: size.1.min(0x3fff) as u16,
            since_key: 0,
            force_key: true,
            picture_id: rng.random_range(0..0x8000),
            // Start below 2^15 so the rollover counter stays 0 for a long while.
            next_seq: rng.random_range(0..0x8000),
            rtp_base: rng.random(),
            started: None,
            filler: filler(&mut rng),
            rng,
        }
    }

    pub fn frame_interval(&self) -> Duration {
        Duration::from_secs(1) / self.fps
    }

    /// The next frame is a keyframe (the SFU asked for one).
    pub fn request_keyframe(&mut self) {
        self.force_key = true;
    }

    pub fn next_frame(&mut self, now: Instant) -> Frame {
        let started = *self.started.get_or_insert(now);
        let keyframe = self.force_key || self.since_key + 1 >= self.frames_per_key;
        self.force_key = false;
        self.since_key = if keyframe { 0 } else { self.since_key + 1 };
        let jitter = self.rng.random_range(0.9..1.1);
        let weight = if keyframe && self.frames_per_key > 1 {
            KEYFRAME_WEIGHT
        } else {
            1.0
        };
        let header = if keyframe {
            VP8_KEY_HEADER_LEN
        } else {
            VP8_DELTA_HEADER_LEN
        };
        let overhead = VP8_DESCRIPTOR_LEN + STAMP_LEN;
        let min_size = overhead + header;
        let size = ((self.delta_bytes * weight * jitter) as usize).max(min_size);
        let count = size.div_ceil(MAX_PAYLOAD).max(1);
        let base = size / count;
        let mut packets = Vec::with_capacity(count);
        for i in 0..count {
            // Spread the remainder over the first packets, as libwebrtc balances them.
            let len = (base + usize::from(i < size % count)).clamp(min_size, MAX_PAYLOAD);
            let mut payload = Vec::with_capacity(len);
            let start = i == 0;
            // X=1, S on the first packet, partition id 0.
            payload.push(0x80 | if start { 0x10 } else { 0 });
            payload.push(0x80); // I: a picture id follows.
            payload.extend_from_slice(&(0x8000 | self.picture_id).to_be_bytes());
            if start {
                self.push_frame_header(&mut payload, keyframe, size);
            }
            push_stamp(&mut payload, now);
            pad(&mut payload, len, &self.filler);
            packets.push(OutPacket {
                payload,
                marker: i + 1 == count,
            });
        }
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        let first_seq = self.next_seq;
        self.next_seq += count as u64;
        let elapsed = now.saturating_duration_since(started);
        let ticks = (elapsed.as_micros() * 90 / 1000) as u32;
        Frame {
            rtp_time: self.rtp_base.wrapping_add(ticks),
            first_seq,
            packets,
        }
    }

    /// RFC 6386 9.1: the frame tag (P = 0 on keyframes, show_frame, first partition size)
    /// and on keyframes the start code and dimensions.
    fn push_frame_header(&self, payload: &mut Vec<u8>, keyframe: bool, size: usize) {
        let first_partition = (size / 10).min(0x7ffff) as u32;
        let tag = (first_partition << 5) | (1 << 4) | u32::from(!keyframe);
        payload.extend_from_slice(&tag.to_le_bytes()[..3]);
        if keyframe {
            payload.extend_from_slice(&[0x9d, 0x01, 0x2a]);
            payload.extend_from_slice(&self.width.to_le_bytes());
            payload.extend_from_slice(&self.height.to_le_bytes());
        }
    }
}

/// Produces 20 ms Opus frames.
pub(crate) struct AudioEncoder {
    frame_bytes: usize,
    next_seq: u64,
    rtp_time: u32,
    filler: Vec<u8>,
}

impl AudioEncoder {
    pub const FRAME: Duration = Duration::from_millis(20);

    pub fn new(bitrate_bps: u32, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let frame_bytes = (bitrate_bps as usize / 8 / 50).clamp(1 + STAMP_LEN, MAX_PAYLOAD);
        Self {
            frame_bytes,
            next_seq: rng.random_range(0..0x8000),
            rtp_time: rng.random(),
            filler: filler(&mut rng),
        }
    }

    pub fn next_frame(&mut self, now: Instant) -> Frame {
        let mut payload = Vec::with_capacity(self.frame_bytes);
        payload.push(OPUS_TOC);
        push_stamp(&mut payload, now);
        pad(&mut payload, self.frame_bytes, &self.filler);
        let frame = Frame {
            rtp_time: self.rtp_time,
            first_seq: self.next_seq,
            packets: vec![OutPacket {
                payload,
                marker: false,
            }],
        };
        self.next_seq += 1;
        self.rtp_time = self.rtp_time.wrapping_add(960);
        frame
    }
}

/// Length of the VP8 payload descriptor at the start of `payload` (RFC 7741 4.2).
fn vp8_descriptor_len(payload: &[u8]) -> Option<usize> {
    let first = *payload.first()?;
    let mut len = 1;
    if first & 0x80 != 0 {
        let ext = *payload.get(1)?;
        len += 1;
        if ext & 0x80 != 0 {
            len += if *payload.get(len)? & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            len += 1;
        }
        if ext & 0x30 != 0 {
            len += 1;
        }
    }
    Some(len)
}

/// The width a VP8 keyframe's first packet declares (RFC 6386 9.1, the low 14 bits);
/// `None` for any other packet. After a switch a subscriber's layer shows in its first
/// keyframe, and the load tester counts frames per width by it.
pub fn keyframe_width(payload: &[u8]) -> Option<u16> {
    let descriptor = vp8_descriptor_len(payload)?;
    let first = payload[0];
    if first & 0x10 == 0 || first & 0x07 != 0 {
        return None;
    }
    let header = payload.get(descriptor..descriptor + VP8_KEY_HEADER_LEN)?;
    if header[0] & 0x01 != 0 || header[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    Some(u16::from_le_bytes([header[6], header[7]]) & 0x3fff)
}

/// The send time stamped into a payload of ours, in nanoseconds on the [`epoch`] clock.
/// `None` for payloads this crate did not make.
pub fn read_stamp(video: bool, payload: &[u8]) -> Option<u64> {
    let offset = if video {
        let descriptor = vp8_descriptor_len(payload)?;
        let first = payload[0];
        let starts_frame = first & 0x10 != 0 && first & 0x07 == 0;
        if starts_frame {
            let tag = *payload.get(descriptor)?;
            descriptor
                + if tag & 0x01 == 0 {
                    VP8_KEY_HEADER_LEN
                } else {
                    VP8_DELTA_HEADER_LEN
                }
        } else {
            descriptor
        }
    } else {
        1
    };
    let stamp = payload.get(offset..offset + STAMP_LEN)?;
    if stamp[..4] != STAMP_MAGIC {
        return None;
    }
    let mut ns = [0u8; 8];
    ns.copy_from_slice(&stamp[4..]);
    Some(u64::from_be_bytes(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Frame {
        /// P bit clear in the VP8 frame header of the first packet.
        fn is_key(&self) -> bool {
            self.packets[0].payload[4] & 0x01 == 0
        }
    }

    #[test]
    fn video_frames_have_descriptors_markers_and_keyframes() {
        let mut encoder = VideoEncoder::new(2_500_000, 30, Duration::from_secs(1), (1280, 720), 7);
        let now = Instant::now();
        let key = encoder.next_frame(now);
        assert!(key.is_key(), "the first frame is a keyframe");
        assert!(key.packets.len() > 1, "a 2.5 Mbit/s keyframe spans packets");
        let first = &key.packets[0].payload;
        assert_eq!(first[0], 0x90, "X and S set, partition 0");
        assert_eq!(first[4] & 0x01, 0, "P bit clear on a keyframe");
        assert_eq!(&first[7..10], &[0x9d, 0x01, 0x2a], "keyframe start code");
        assert!(key.packets.iter().all(|p| p.payload.len() <= MAX_PAYLOAD));
        assert!(key.packets.iter().skip(1).all(|p| p.payload[0] == 0x80));
        let markers: Vec<bool> = key.packets.iter().map(|p| p.marker).collect();
        assert_eq!(markers.iter().filter(|m| **m).count(), 1);
        assert!(markers[markers.len() - 1]);
        let delta = encoder.next_frame(now + Duration::from_millis(33));
        assert!(!delta.is_key());
        assert_eq!(
            delta.packets[0].payload[4] & 0x01,
            1,
            "P bit set on a delta frame"
        );
        assert_eq!(delta.first_seq, key.first_seq + key.packets.len() as u64);
        // Picture ids advance by one per frame, with the M bit set.
        let pid =
            |f: &Frame| u16::from_be_bytes([f.packets[0].payload[2], f.packets[0].payload[3]]);
        assert_eq!(pid(&delta) & 0x7fff, (pid(&key) + 1) & 0x7fff);
        assert_ne!(pid(&key) & 0x8000, 0);
        // 30 frames a second with a keyframe each second come out near the bitrate.
        let mut bytes: usize = key.packets.iter().map(|p| p.payload.len()).sum();
        bytes += delta.packets.iter().map(|p| p.payload.len()).sum::<usize>();
        let mut keyframes = 1;
        for i in 2..30 {
            let f = encoder.next_frame(now + Duration::from_millis(33 * i));
            keyframes += usize::from(f.is_key());
            bytes += f.packets.iter().map(|p| p.payload.len()).sum::<usize>();
        }
        assert_eq!(keyframes, 1);
        let bits = bytes as f64 * 8.0;
        assert!(
            (2_200_000.0..2_800_000.0).contains(&bits),
            "{bits} bits in a second"
        );
        assert!(encoder.next_frame(now + Duration::from_secs(1)).is_key());
        encoder.request_keyframe();
        assert!(encoder
            .next_frame(now + Duration::from_millis(1033))
            .is_key());
    }

    #[test]
    fn keyframes_declare_their_width() {
        let t0 = Instant::now();
        let mut encoder = VideoEncoder::new(500_000, 30, Duration::from_secs(2), (640, 360), 7);
        let key = encoder.next_frame(t0);
        assert_eq!(keyframe_width(&key.packets[0].payload), Some(640));
        let delta = encoder.next_frame(t0 + Duration::from_millis(33));
        assert_eq!(keyframe_width(&delta.packets[0].payload), None);
        assert_eq!(keyframe_width(&[]), None);
    }

    #[test]
    fn stamps_round_trip_on_every_packet() {
        let now = Instant::now();
        let mut video = VideoEncoder::new(1_000_000, 30, Duration::from_secs(3), (640, 360), 1);
        for frame in [video.next_frame(now), video.next_frame(now)] {
            for packet in &frame.packets {
                assert_eq!(read_stamp(true, &packet.payload), Some(stamp_of(now)));
            }
        }
        let mut audio = AudioEncoder::new(32_000, 2);
        let frame = audio.next_frame(now);
        assert_eq!(frame.packets[0].payload.len(), 80);
        assert_eq!(
            read_stamp(false, &frame.packets[0].payload),
            Some(stamp_of(now))
        );
        assert_eq!(
            audio.next_frame(now).rtp_time,
            frame.rtp_time.wrapping_add(960)
        );
        assert_eq!(read_stamp(false, &[0xf8, 0xff, 0xfe]), None, "not ours");
    }
}
