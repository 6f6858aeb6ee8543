//! A LiveKit-protocol client for Switchboard: what a browser running livekit-client does on
//! the wire, without a browser.
//!
//! A [`Participant`] joins a room over WebSocket signaling (protocol v0: a publisher and a
//! subscriber PeerConnection), publishes synthetic VP8 and Opus tracks over real ICE,
//! DTLS and SRTP (str0m in RTP mode; over UDP, or ICE-TCP with [`Transport::Tcp`]), answers the server's subscriber offers, and counts
//! what it receives: packets per track, loss from sequence gaps, and end-to-end latency
//! from the send time every synthetic packet carries.
//!
//! Media of many participants runs in one [`Driver`]: a single task per thread that owns
//! all their PeerConnections. Signaling runs in a small task per participant on the same
//! runtime.
//!
//! ```no_run
//! # async fn demo(token: &str) -> Result<(), switchboard_client::ClientError> {
//! use switchboard_client::{Driver, JoinOptions, Participant, VideoConfig};
//! let driver = Driver::spawn();
//! let options = JoinOptions {
//!     driver: Some(driver.clone()),
//!     video: Some(VideoConfig::default()),
//!     ..JoinOptions::default()
//! };
//! let (me, _events) = Participant::join("ws://127.0.0.1:7880", token, options).await?;
//! let stats = me.leave().await?;
//! # let _ = stats; Ok(()) }
//! ```

mod driver;
mod link;
mod media;
mod pacer;
mod participant;
mod publish;
mod signal;
mod state;
mod tcp;

use std::time::Duration;

pub use driver::{new_latency_histogram, CounterSnapshot, Driver};
pub use hdrhistogram::Histogram;
pub use link::{LinkCap, LinkRate};
pub use livekit_protocol as proto;
pub use media::{epoch, read_stamp, stamp_of, AudioConfig, VideoConfig, MAX_PAYLOAD};
pub use pacer::DEFAULT_PACING_FACTOR;
pub use participant::{
    JoinOptions, JoinTimings, Participant, ParticipantStats, PublishedTrack, SubscriberTimings,
};

/// What a participant's PeerConnections carry their media over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A UDP socket per PeerConnection, as browsers prefer.
    #[default]
    Udp,
    /// ICE-TCP only: each PeerConnection announces one active TCP candidate and connects to
    /// the server's passive TCP candidate, carrying STUN, DTLS, RTP and RTCP in RFC 4571
    /// frames — what a browser does when its network drops UDP. The server must offer
    /// TCP candidates (Switchboard's `--rtc-tcp-port`, on by default).
    Tcp,
}

/// Kind of a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    Audio,
    Video,
}

/// What one participant received on one incoming stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackStats {
    /// The `TR_…` sid, from the offer's `mid_to_track_id`.
    pub track_sid: String,
    pub kind: TrackKind,
    pub packets: u64,
    /// RTP payload bytes.
    pub bytes: u64,
    /// Sequence numbers never seen between the lowest and highest received.
    pub lost: u64,
    /// From the start of the join to the first packet.
    pub first_packet: Option<Duration>,
    /// Video: frames received per picture width (the simulcast layer), as (width, frames).
    pub frames_by_width: Vec<(u32, u64)>,
}

/// Things that happen to a participant, in order. Dropping the receiver is fine.
#[derive(Debug, Clone, PartialEq)]
pub enum ParticipantEvent {
    /// A `ParticipantUpdate`: full snapshots of the participants that changed.
    ParticipantUpdate(Vec<proto::ParticipantInfo>),
    /// The first RTP packet of an incoming track arrived, this long after the join began.
    FirstPacket { track_sid: String, after: Duration },
    /// A data packet on one of the data channels (`_reliable` or `_lossy`).
    Data {
        label: String,
        packet: Box<proto::DataPacket>,
    },
    /// A PeerConnection failed or closed.
    MediaDisconnected { publisher: bool, reason: String },
    /// Signaling ended without our leave (server `LeaveRequest`, close, error).
    Disconnected { reason: String },
    /// Any other server message the client does not handle itself.
    Signal(Box<proto::signal_response::Message>),
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("the server refused the join (HTTP {status}): {body}")]
    Refused { status: u16, body: String },
    #[error("WebSocket error: {0}")]
    WebSocket(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("signaling ended: {0}")]
    Closed(String),
    #[error("unexpected signaling: {0}")]
    Protocol(String),
    #[error("WebRTC: {0}")]
    Rtc(String),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("unsupported options: {0}")]
    Unsupported(&'static str),
    #[error("the media driver has stopped")]
    DriverGone,
}

/// A track to publish, as the media loop builds it.
#[derive(Debug, Clone)]
pub(crate) enum TrackSpec {
    Video {
        cid: String,
        config: VideoConfig,
        seed: u64,
    },
    Audio {
        cid: String,
        config: AudioConfig,
        seed: u64,
    },
}

impl TrackSpec {
    fn seed(&self) -> u64 {
        match self {
            TrackSpec::Video { seed, .. } | TrackSpec::Audio { seed, .. } => *seed,
        }
    }
}

/// What the media loop knows of one participant.
#[derive(Debug, Clone, Default)]
pub(crate) struct DriverStats {
    pub tracks: Vec<TrackStats>,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub connected: Option<Duration>,
    pub first_media: Option<Duration>,
    pub subscriber: SubscriberTimings,
}
