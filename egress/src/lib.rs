//! Switchboard's egress: the RTP of published tracks, as the media plane's taps hand it
//! over, written to files without transcoding (a room → WebM/Matroska; one track: Opus →
//! Ogg, VP8/VP9 → WebM, H.264 → Matroska) or restreamed as plain RTP with an SDP document.
//!
//! The crate knows nothing of HTTP or SQL: an egress is started with an [`EgressSpec`] and
//! a tap of the media plane, and reports what happens as [`EgressEvent`]s.

pub mod media;
mod naming;
mod outdir;
mod recorder;
mod recorder_ogg;
mod rtp_out;
mod runner;
mod timeline;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;
use switchboard_sfu::TrackKind;

pub use naming::file_stem;
pub use rtp_out::sdp_document;
pub use runner::{start, EgressSlot, EgressSlots, RunningEgress};

/// What an egress records and where it goes.
#[derive(Debug, Clone)]
pub struct EgressSpec {
    pub egress_id: String,
    pub room: String,
    pub session_id: Option<String>,
    /// One track (`TR_…`) or, when `None`, every track of the room.
    pub track_sid: Option<String>,
    pub output: Output,
}

/// Where an egress writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Files in `root/subdir` (created when missing). `subdir` is walked without following
    /// symbolic links, so the files stay below `root`.
    File { root: PathBuf, subdir: PathBuf },
    /// Plain RTP of one track to `target`; the SDP document describing it is written in
    /// `sdp_dir` (the egress root) and reported.
    Rtp {
        target: SocketAddr,
        sdp_dir: PathBuf,
    },
}

/// Why an egress could not start or stopped early.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EgressError {
    #[error("the output directory {path} is not writable: {reason}")]
    Unwritable { path: String, reason: String },
    #[error("writing {path} failed: {reason}")]
    Write { path: String, reason: String },
    #[error("cannot send RTP to {target}: {reason}")]
    Network { target: String, reason: String },
    #[error("the track {0} was unpublished before any media was recorded")]
    TrackGone(String),
    #[error("codec {codec} of track {track} cannot be recorded without transcoding")]
    UnsupportedCodec { track: String, codec: String },
    #[error("no media was received before the egress stopped")]
    NoMedia,
    #[error("RTP egress needs one track, not a whole room")]
    RtpNeedsTrack,
    #[error("the egress thread could not start: {0}")]
    Thread(String),
}

/// Something an egress tells its owner. `Active` comes at most once, `Ended` exactly once
/// and last.
#[derive(Debug, Clone, PartialEq)]
pub enum EgressEvent {
    /// The first media was written (or sent); `sdp` is set for RTP egress.
    Active {
        egress_id: String,
        sdp: Option<String>,
    },
    /// Final: what was written, and the error that ended it early if any.
    Ended {
        egress_id: String,
        summary: EgressSummary,
        error: Option<EgressError>,
    },
}

/// What an egress produced, recorded on its row when it ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EgressSummary {
    /// Files in the order they were written (a room egress starts a new part when a new
    /// publisher's track cannot continue an existing one).
    pub files: Vec<FileSummary>,
    pub packets: u64,
    /// Sequence gaps the jitter buffer gave up on (after retransmission had its chance).
    pub packets_lost: u64,
    /// Packets the media plane dropped because the egress fell behind.
    pub packets_dropped: u64,
    pub frames: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    /// Plain RTP egress: the SDP document a receiver needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdp: Option<String>,
}

/// One written file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileSummary {
    pub path: String,
    pub bytes: u64,
    pub duration_ms: u64,
    pub frames: u64,
    pub tracks: Vec<TrackSummary>,
}

/// A track of a written file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackSummary {
    /// Matroska track number.
    pub number: u64,
    pub identity: String,
    /// Every published track that wrote into this one (a rejoin continues it).
    pub track_sids: Vec<String>,
    #[serde(serialize_with = "serialize_kind")]
    pub kind: TrackKind,
    pub codec: String,
}

fn serialize_kind<S: serde::Serializer>(kind: &TrackKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match kind {
        TrackKind::Audio => "audio",
        TrackKind::Video => "video",
    })
}
