//! RTP payloads to whole frames, ready for a container.
//!
//! Frames are assembled by RTP timestamp and marker bit; the codec modules strip their payload
//! descriptors and say whether a frame is complete and a keyframe. After a gap
//! ([`Depacketizer::lost`]) or a damaged frame, delta frames are refused until the next
//! keyframe, so a recording never holds frames its decoder cannot reconstruct.

mod bits;
mod h264;
mod sps;
mod vp8;
mod vp9;

use std::collections::VecDeque;

use super::{Codec, RtpPacketIn};

pub use sps::{avc_decoder_configuration, parse_sps, SpsInfo};

/// One encoded frame (for Opus, one packet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The RTP timestamp of the frame's packets.
    pub timestamp: u32,
    /// VP8/VP9: the raw frame; H.264: AVCC (4-byte big-endian lengths); Opus: the packet.
    pub data: Vec<u8>,
    pub keyframe: bool,
}

/// Why a payload or a frame was thrown away. Counted, never fatal: the bytes come from a
/// remote encoder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("empty payload")]
    Empty,
    #[error("payload descriptor or aggregate runs past the end of the packet")]
    Truncated,
    #[error("H.264 packetization type {0} is not supported (packetization-mode 1 only)")]
    UnsupportedNal(u8),
    #[error("the frame's first packet is missing")]
    MissingStart,
    #[error("a fragmented NAL unit is missing a piece")]
    BrokenFragment,
    #[error("keyframe header is invalid")]
    BadKeyframe,
    #[error("H.264 keyframe arrived before any SPS/PPS")]
    MissingParameterSets,
}

/// Counters for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DepacketizerStats {
    pub frames: u64,
    /// Frames dropped as incomplete or damaged, or refused while waiting for a keyframe.
    pub dropped_frames: u64,
    pub malformed_packets: u64,
}

/// A codec's half of the work: payload parsing and frame building.
trait Assembler {
    /// Adds one packet's payload to the frame being built.
    fn push(&mut self, payload: &[u8]) -> Result<(), PayloadError>;
    /// Takes the frame built so far, resetting for the next one: `Ok(None)` when nothing
    /// that belongs in a container was collected (e.g. H.264 parameter sets alone).
    fn take(&mut self) -> Result<Option<(Vec<u8>, bool)>, PayloadError>;
    /// Drops the partial frame.
    fn reset(&mut self);
    fn dimensions(&self) -> Option<(u32, u32)>;
}

#[derive(Default)]
struct OpusPacket(Vec<u8>);

impl Assembler for OpusPacket {
    fn push(&mut self, payload: &[u8]) -> Result<(), PayloadError> {
        if payload.is_empty() {
            return Err(PayloadError::Empty);
        }
        self.0 = payload.to_vec();
        Ok(())
    }

    fn take(&mut self) -> Result<Option<(Vec<u8>, bool)>, PayloadError> {
        let data = std::mem::take(&mut self.0);
        Ok((!data.is_empty()).then_some((data, true)))
    }

    fn reset(&mut self) {
        self.0.clear();
    }

    fn dimensions(&self) -> Option<(u32, u32)> {
        None
    }
}

/// The codec-specific half, one variant per codec (H.264 also answers `codec_private`).
enum Inner {
    Opus(OpusPacket),
    Vp8(vp8::Vp8),
    Vp9(vp9::Vp9),
    H264(h264::H264),
}

pub struct Depacketizer {
    codec: Codec,
    inner: Inner,
    /// The timestamp of the frame being built.
    current: Option<u32>,
    /// A packet of the current frame was malformed.
    damaged: bool,
    waiting_for_keyframe: bool,
    /// Frames completed by one push beyond the one it returns (a frame ended by a timestamp
    /// change, then a one-packet frame with its marker).
    ready: VecDeque<Frame>,
    stats: DepacketizerStats,
    last_error: Option<PayloadError>,
}

impl Depacketizer {
    pub fn new(codec: Codec) -> Self {
        let inner = match codec {
            Codec::Opus => Inner::Opus(OpusPacket::default()),
            Codec::Vp8 => Inner::Vp8(vp8::Vp8::default()),
            Codec::Vp9 => Inner::Vp9(vp9::Vp9::default()),
            Codec::H264 => Inner::H264(h264::H264::default()),
        };
        Self {
            codec,
            inner,
            current: None,
            damaged: false,
            waiting_for_keyframe: codec.is_video(),
            ready: VecDeque::new(),
            stats: DepacketizerStats::default(),
            last_error: None,
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Adds the next packet (in sequence order); returns a frame when one is complete.
    pub fn push(&mut self, packet: &RtpPacketIn) -> Option<Frame> {
        if self.current.is_some_and(|ts| ts != packet.timestamp) {
            // The previous frame's marker never came, but its packets all did (a loss would
            // have been reported first): it is complete.
            self.complete();
        }
        self.current = Some(packet.timestamp);
        if let Err(error) = self.assembler_mut().push(&packet.payload) {
            self.stats.malformed_packets += 1;
            self.last_error = Some(error);
            self.damaged = true;
        }
        if packet.marker || self.codec == Codec::Opus {
            self.complete();
        }
        self.ready.pop_front()
    }

    /// A gap in the sequence: the partial frame is dropped and delta frames are refused until
    /// the next keyframe.
    pub fn lost(&mut self) {
        if self.current.take().is_some() {
            self.stats.dropped_frames += 1;
        }
        self.assembler_mut().reset();
        self.damaged = false;
        self.waiting_for_keyframe = self.codec.is_video();
    }

    /// The end of the stream: a frame still queued. A video frame in progress never got
    /// its marker, so its last packets are missing (the publisher left mid-frame): it is
    /// dropped, since a truncated frame is undecodable. (Opus frames are one packet each and
    /// never wait here.)
    pub fn flush(&mut self) -> Option<Frame> {
        if self.current.take().is_some() {
            self.assembler_mut().reset();
            self.damaged = false;
            self.stats.dropped_frames += 1;
        }
        self.ready.pop_front()
    }

    /// A frame completed earlier but not yet returned (rare: see [`Depacketizer::push`]).
    /// Call after `push` or `flush` until `None` to never hold one back.
    pub fn pop_ready(&mut self) -> Option<Frame> {
        self.ready.pop_front()
    }

    /// True while delta frames are refused: ask the sender for a keyframe.
    pub fn needs_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }

    /// Video width and height, from the latest keyframe, SPS or VP9 scalability structure.
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        match &self.inner {
            Inner::Opus(a) => a.dimensions(),
            Inner::Vp8(a) => a.dimensions(),
            Inner::Vp9(a) => a.dimensions(),
            Inner::H264(a) => a.dimensions(),
        }
    }

    /// H.264 only: an AVCDecoderConfigurationRecord ("avcC") from the latest SPS and PPS.
    pub fn codec_private(&self) -> Option<Vec<u8>> {
        match &self.inner {
            Inner::H264(h264) => h264.codec_private(),
            _ => None,
        }
    }

    pub fn stats(&self) -> DepacketizerStats {
        self.stats
    }

    /// The latest reason a packet or frame was thrown away.
    pub fn last_error(&self) -> Option<&PayloadError> {
        self.last_error.as_ref()
    }

    fn assembler_mut(&mut self) -> &mut dyn Assembler {
        match &mut self.inner {
            Inner::Opus(a) => a,
            Inner::Vp8(a) => a,
            Inner::Vp9(a) => a,
            Inner::H264(a) => a,
        }
    }

    fn complete(&mut self) {
        let Some(timestamp) = self.current.take() else {
            return;
        };
        let built = self.assembler_mut().take();
        let damaged = std::mem::take(&mut self.damaged);
        if damaged {
            return self.drop_frame(None);
        }
        let (data, keyframe) = match built {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(error) => return self.drop_frame(Some(error)),
        };
        if self.waiting_for_keyframe && !keyframe {
            self.stats.dropped_frames += 1;
            return;
        }
        self.waiting_for_keyframe = false;
        self.stats.frames += 1;
        self.ready.push_back(Frame {
            timestamp,
            data,
            keyframe,
        });
    }

    fn drop_frame(&mut self, error: Option<PayloadError>) {
        if let Some(error) = error {
            self.last_error = Some(error);
        }
        self.stats.dropped_frames += 1;
        self.waiting_for_keyframe = self.codec.is_video();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny xorshift: fuzz-ish inputs without a dependency, reproducible by seed.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Self(seed | 1)
        }
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub(crate) fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
        pub(crate) fn bytes(&mut self, max_len: usize) -> Vec<u8> {
            let len = (self.next() as usize) % (max_len + 1);
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    pub(crate) fn packet(seq: u64, timestamp: u32, marker: bool, payload: &[u8]) -> RtpPacketIn {
        RtpPacketIn {
            seq,
            timestamp,
            marker,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn random_payloads_never_panic() {
        for codec in [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264] {
            let mut rng = Rng::new(0x5eed ^ codec as u64);
            let mut d = Depacketizer::new(codec);
            for seq in 0..20_000u64 {
                let payload = rng.bytes(64);
                let ts = (seq / 3) as u32 * 3000;
                let marker = rng.below(3) == 0;
                let _ = d.push(&packet(seq, ts, marker, &payload));
                if rng.below(50) == 0 {
                    d.lost();
                }
                let _ = d.dimensions();
                let _ = d.codec_private();
            }
            let _ = d.flush();
        }
    }

    #[test]
    fn opus_packets_are_frames_at_once() {
        let mut d = Depacketizer::new(Codec::Opus);
        assert!(!d.needs_keyframe());
        let f = d.push(&packet(1, 960, false, &[0xfc, 1, 2])).unwrap();
        assert_eq!(f.timestamp, 960);
        assert_eq!(f.data, [0xfc, 1, 2]);
        assert!(f.keyframe);
        d.lost();
        assert!(!d.needs_keyframe());
        assert!(d.push(&packet(3, 2880, false, &[])).is_none());
        assert_eq!(d.stats().malformed_packets, 1);
        assert!(d.push(&packet(4, 3840, false, &[0xfc])).is_some());
    }
}
