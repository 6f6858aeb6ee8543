//! Media formats: reordering, depacketizing and the container writers.
//!
//! The pipeline for one track is `jitter` (reorder, report gaps) → `depacketize` (RTP payloads
//! to whole frames, gated on keyframes after a gap) → `mkv` or `ogg` (files that stay playable
//! if the process dies mid-recording). Nothing here transcodes.

pub mod depacketize;
pub mod jitter;
pub mod mkv;
pub mod ogg;
pub mod opus;

/// One RTP packet of a track, as the SFU hands it over (already de-SRTP'd, RTX unwrapped,
/// simulcast layers rewritten to one continuous stream).
#[derive(Debug, Clone)]
pub struct RtpPacketIn {
    /// Extended sequence number, monotonic across 16-bit wraps (the caller extends it).
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Vec<u8>,
}

/// The media plane's packet, copied off the worker's shared buffer on the egress thread.
impl From<&switchboard_sfu::TapPacket> for RtpPacketIn {
    fn from(packet: &switchboard_sfu::TapPacket) -> Self {
        Self {
            seq: packet.seq,
            timestamp: packet.timestamp,
            marker: packet.marker,
            payload: packet.payload.to_vec(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Opus,
    Vp8,
    Vp9,
    H264,
}

impl Codec {
    pub fn is_video(self) -> bool {
        !matches!(self, Codec::Opus)
    }

    /// The RTP clock rate WebRTC uses for the codec.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            Codec::Vp8 | Codec::Vp9 | Codec::H264 => 90_000,
        }
    }
}

/// What a container writer reports when it is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FinishStats {
    pub duration_ms: u64,
    pub bytes: u64,
    pub frames: u64,
}
