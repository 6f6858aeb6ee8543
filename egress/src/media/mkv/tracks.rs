//! The Tracks element: one TrackEntry per recorded track, with the codec headers players
//! need before the first block.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};

use super::ebml::{self, id};
use crate::media::opus::{self, SEEK_PRE_ROLL_NS};
use crate::media::Codec;

/// What the file may contain: WebM allows only VP8/VP9/Opus (of what is recorded here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocType {
    WebM,
    Matroska,
}

impl DocType {
    pub fn name(self) -> &'static str {
        match self {
            DocType::WebM => "webm",
            DocType::Matroska => "matroska",
        }
    }
}

/// One track of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSpec {
    /// The track number blocks refer to; 1 and up, unique in the file.
    pub number: u64,
    pub name: String,
    pub codec: Codec,
    /// H.264: the "avcC" record (required). Opus: an OpusHead; one is built when `None`.
    pub codec_private: Option<Vec<u8>>,
    /// Width and height, for video.
    pub video: Option<(u32, u32)>,
    /// Sample rate and channels, for audio (Opus defaults to 48 kHz stereo).
    pub audio: Option<(u32, u8)>,
}

/// Why a set of tracks cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackError {
    #[error("no tracks")]
    NoTracks,
    #[error("track number {0} is 0 or used twice")]
    BadNumber(u64),
    #[error("{codec:?} cannot go in a {doc_type:?} file")]
    CodecNotAllowed { codec: Codec, doc_type: DocType },
    #[error("H.264 track {0} needs its avcC codec private data")]
    MissingCodecPrivate(u64),
    #[error("no track {0} in this file")]
    UnknownTrack(u64),
}

impl From<TrackError> for std::io::Error {
    fn from(error: TrackError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, error)
    }
}

fn codec_id(codec: Codec) -> &'static str {
    match codec {
        Codec::Opus => "A_OPUS",
        Codec::Vp8 => "V_VP8",
        Codec::Vp9 => "V_VP9",
        Codec::H264 => "V_MPEG4/ISO/AVC",
    }
}

pub fn validate(doc_type: DocType, tracks: &[TrackSpec]) -> Result<(), TrackError> {
    if tracks.is_empty() {
        return Err(TrackError::NoTracks);
    }
    let mut numbers = HashSet::new();
    for track in tracks {
        // Block headers carry the number as a variable-size integer; 8 bytes is the limit.
        if track.number == 0 || track.number > ebml::MAX_SIZE || !numbers.insert(track.number) {
            return Err(TrackError::BadNumber(track.number));
        }
        if doc_type == DocType::WebM && track.codec == Codec::H264 {
            return Err(TrackError::CodecNotAllowed {
                codec: track.codec,
                doc_type,
            });
        }
        if track.codec == Codec::H264 && track.codec_private.is_none() {
            return Err(TrackError::MissingCodecPrivate(track.number));
        }
    }
    Ok(())
}

/// A random, non-zero UID per track, distinct within the file.
fn track_uids(count: usize) -> Vec<u64> {
    let mut uids = Vec::with_capacity(count);
    let state = RandomState::new();
    let mut counter = 0u64;
    while uids.len() < count {
        let mut hasher = state.build_hasher();
        hasher.write_u64(counter);
        counter += 1;
        let uid = hasher.finish();
        if uid != 0 && !uids.contains(&uid) {
            uids.push(uid);
        }
    }
    uids
}

/// The whole Tracks element. Call [`validate`] first.
pub fn tracks_element(tracks: &[TrackSpec]) -> Vec<u8> {
    let uids = track_uids(tracks.len());
    let mut out = Vec::new();
    ebml::master(&mut out, id::TRACKS, |out| {
        for (track, uid) in tracks.iter().zip(uids) {
            ebml::master(out, id::TRACK_ENTRY, |out| track_entry(out, track, uid));
        }
    });
    out
}

fn track_entry(out: &mut Vec<u8>, track: &TrackSpec, uid: u64) {
    ebml::uint(out, id::TRACK_NUMBER, track.number);
    ebml::uint(out, id::TRACK_UID, uid);
    ebml::uint(
        out,
        id::TRACK_TYPE,
        if track.codec.is_video() { 1 } else { 2 },
    );
    ebml::uint(out, id::FLAG_LACING, 0);
    if !track.name.is_empty() {
        ebml::string(out, id::NAME, &track.name);
    }
    ebml::string(out, id::CODEC_ID, codec_id(track.codec));
    if track.codec == Codec::Opus {
        let (rate, channels) = track.audio.unwrap_or((48_000, 2));
        let head = track
            .codec_private
            .clone()
            .unwrap_or_else(|| opus::opus_head(channels, opus::PRE_SKIP));
        let (channels, pre_skip) = opus::parse_opus_head(&head).unwrap_or((channels, 0));
        ebml::element(out, id::CODEC_PRIVATE, &head);
        // CodecDelay is the OpusHead pre-skip in nanoseconds (RFC 7845 and the WebM spec).
        ebml::uint(
            out,
            id::CODEC_DELAY,
            u64::from(pre_skip) * 1_000_000_000 / 48_000,
        );
        ebml::uint(out, id::SEEK_PRE_ROLL, SEEK_PRE_ROLL_NS);
        ebml::master(out, id::AUDIO, |out| {
            ebml::float(out, id::SAMPLING_FREQUENCY, f64::from(rate));
            ebml::uint(out, id::CHANNELS, u64::from(channels));
        });
        return;
    }
    if let Some(private) = &track.codec_private {
        ebml::element(out, id::CODEC_PRIVATE, private);
    }
    if let Some((width, height)) = track.video {
        ebml::master(out, id::VIDEO, |out| {
            ebml::uint(out, id::PIXEL_WIDTH, u64::from(width));
            ebml::uint(out, id::PIXEL_HEIGHT, u64::from(height));
        });
    } else if let Some((rate, channels)) = track.audio {
        ebml::master(out, id::AUDIO, |out| {
            ebml::float(out, id::SAMPLING_FREQUENCY, f64::from(rate));
            ebml::uint(out, id::CHANNELS, u64::from(channels));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(number: u64, codec: Codec) -> TrackSpec {
        TrackSpec {
            number,
            name: String::new(),
            codec,
            codec_private: None,
            video: None,
            audio: None,
        }
    }

    #[test]
    fn validation() {
        assert_eq!(validate(DocType::WebM, &[]), Err(TrackError::NoTracks));
        assert_eq!(
            validate(DocType::WebM, &[spec(1, Codec::Vp8), spec(1, Codec::Opus)]),
            Err(TrackError::BadNumber(1))
        );
        assert_eq!(
            validate(DocType::WebM, &[spec(0, Codec::Vp8)]),
            Err(TrackError::BadNumber(0))
        );
        let mut h264 = spec(1, Codec::H264);
        assert!(matches!(
            validate(DocType::WebM, std::slice::from_ref(&h264)),
            Err(TrackError::CodecNotAllowed { .. })
        ));
        assert_eq!(
            validate(DocType::Matroska, std::slice::from_ref(&h264)),
            Err(TrackError::MissingCodecPrivate(1))
        );
        h264.codec_private = Some(vec![1]);
        assert_eq!(validate(DocType::Matroska, &[h264]), Ok(()));
    }

    #[test]
    fn uids_are_distinct_and_non_zero() {
        let uids = track_uids(16);
        let set: HashSet<_> = uids.iter().collect();
        assert_eq!(set.len(), 16);
        assert!(!uids.contains(&0));
    }

    #[test]
    fn opus_entry_has_a_head_and_delays() {
        let mut out = Vec::new();
        track_entry(&mut out, &spec(2, Codec::Opus), 7);
        let head = opus::opus_head(2, opus::PRE_SKIP);
        assert!(out.windows(head.len()).any(|w| w == head));
        // SeekPreRoll: 56 BB 84 04 C4 B4 00 (80 ms).
        assert!(out
            .windows(7)
            .any(|w| w == [0x56, 0xbb, 0x84, 0x04, 0xc4, 0xb4, 0x00]));
        assert!(out.windows(6).any(|w| w == *b"A_OPUS"));
    }
}
