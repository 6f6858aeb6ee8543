//! The plain types that cross the media plane's boundary: commands in, events out.
//!
//! The signaling layer drives a participant through a [`crate::ParticipantHandle`]; the media
//! worker answers on a oneshot or reports on the participant's event channel. Nothing here
//! knows about HTTP, tokens or SQL.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

/// Which of a participant's two PeerConnections a message is about (LiveKit's v0 layout:
/// the client offers on the publisher PC, the server offers on the subscriber PC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerRole {
    Publisher,
    Subscriber,
}

/// Kind of a published track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    Audio,
    Video,
}

/// What a participant may do in the media plane; decided by signaling from the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinOptions {
    /// Subscribe to every track in the room as it appears.
    pub auto_subscribe: bool,
    /// The participant may receive media at all.
    pub can_subscribe: bool,
    /// The participant may send media.
    pub can_publish: bool,
    /// One PeerConnection carries both directions, the client always offering (LiveKit's
    /// signaling v1, `single_pc.rs`); otherwise a publisher and a subscriber PC (v0).
    pub single_pc: bool,
    /// Which DTLS certificates the participant's peers accept from the other side.
    pub dtls: DtlsPeers,
}

/// The certificates a participant's DTLS accepts from its peer, and so which DTLS stack runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DtlsPeers {
    /// ECDSA only (str0m's own DTLS): what browsers and libwebrtc present; the leanest.
    #[default]
    Ecdsa,
    /// ECDSA or RSA (OpenSSL's DTLS, ~160 KiB more per peer): for tools without an SDK —
    /// GStreamer, encoders — that present RSA certificates.
    EcdsaOrRsa,
}

/// A track the client announced (LiveKit `AddTrackRequest`) before offering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedTrack {
    /// The client's id for the track: the msid track id in its SDP offer.
    pub cid: String,
    /// The cids of the track's codecs (simulcast codecs, a backup codec), which some SDKs
    /// put in the msid instead of `cid`.
    pub codec_cids: Vec<String>,
    /// The server-assigned `TR_…` sid.
    pub sid: String,
    pub kind: TrackKind,
    /// The codec the client asked to publish with (`vp8`, `h264`, …), if any; the answer
    /// puts it first so the browser sends it.
    pub codec: Option<String>,
    /// A screen share (served before cameras when a subscriber's link is short).
    pub screen: bool,
    /// The size of each simulcast layer the client announced, to match subscribers'
    /// requested sizes to layers. Empty for audio and unknown sizes.
    pub layers: Vec<LayerSize>,
}

/// One announced video layer: its quality (0 low, 1 medium, 2 high, LiveKit's
/// `VideoQuality` and rids q/h/f) and its size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSize {
    pub quality: u8,
    pub width: u32,
    pub height: u32,
}

/// What a subscriber asks of one track it receives (LiveKit's `UpdateTrackSettings`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackSettings {
    /// Send nothing (the client's element is hidden or gone).
    pub disabled: bool,
    /// The size the client shows it at; 0 when not given.
    pub width: u32,
    pub height: u32,
    /// The best quality wanted (0 low, 1 medium, 2 high), used when no size is given.
    pub quality: Option<u8>,
    /// The frame rate wanted; 0 when not given. Met by leaving out temporal layers where
    /// the publisher sends them.
    pub fps: u32,
}

/// Traffic counters of one participant, reported when it leaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParticipantStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Packets the participant's publisher never delivered (sequence gaps after reordering).
    pub packets_lost: u64,
    /// Round-trip time last measured by RTCP, when known.
    pub rtt_ms: Option<u32>,
}

/// Something the media plane tells the signaling session of one participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A new offer on the subscriber PC. `mid_to_track` maps each m-line to its `TR_…` sid.
    SubscriberOffer {
        sdp: String,
        mid_to_track: BTreeMap<String, String>,
    },
    /// A single-PC participant must offer again, with `audios` and `videos` more receive
    /// m-lines (LiveKit's `MediaSectionsRequirement`; none: just offer again).
    MediaSectionsRequirement { audios: u32, videos: u32 },
    /// The first RTP packet of an announced track arrived.
    TrackMediaStarted { sid: String },
    /// The first RTP packet was forwarded to this participant (its join is complete as far
    /// as media goes; signaling measures join latency up to here).
    FirstMediaSent,
    /// The client stopped sending a published track (its m-line went inactive or away).
    TrackUnpublished { sid: String },
    /// The connection quality of some of the room's participants changed: (participant
    /// key, rating, score 0 … 100).
    ConnectionQuality {
        updates: Vec<(String, ConnectionQuality, u8)>,
    },
    /// Participants of the room started speaking, changed level or stopped (`level` 0).
    SpeakersChanged {
        speakers: Vec<crate::speakers::Speaker>,
    },
    /// The subscribers of a simulcast track this participant publishes need layers up to
    /// `max_quality` (0 low, 1 medium, 2 high; `None`: none): the others may stop.
    SubscribedQuality {
        track_sid: String,
        max_quality: Option<u8>,
    },
    /// A track this participant receives was paused because its link cannot carry even
    /// the lowest layer, or resumed. (A track the client disabled is not reported: it
    /// knows, and LiveKit does not report it either.)
    StreamState {
        publisher: String,
        track_sid: String,
        paused: bool,
    },
    /// This participant may not (`allowed` false) or now may receive track `track_sid` of
    /// participant `publisher` (its key), under that publisher's subscribe permission.
    SubscriptionPermission {
        publisher: String,
        track_sid: String,
        allowed: bool,
    },
    /// A data-channel message from this participant, to be checked and relayed by signaling.
    Data {
        reliable: bool,
        payload: crate::DataPayload,
    },
    /// ICE or DTLS failed or timed out on one of the participant's PeerConnections.
    MediaDisconnected { role: PeerRole, reason: String },
    /// No PeerConnection of the participant connected within `ice_connect_timeout` of its
    /// join, or none has been connected for `peer_departure_timeout`: its media is gone and
    /// the participant should be ended (sent once).
    MediaTimedOut { cause: MediaTimeout },
}

/// How well a participant's media gets through (LiveKit's `ConnectionQuality`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionQuality {
    Excellent,
    Good,
    Poor,
    Lost,
}

/// Which liveness deadline a participant missed ([`PeerEvent::MediaTimedOut`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaTimeout {
    /// No PeerConnection finished ICE and DTLS within `ice_connect_timeout` of the join.
    NeverConnected,
    /// It was connected, then had no PeerConnection up for `peer_departure_timeout`.
    Departed,
}

impl MediaTimeout {
    /// Said in logs.
    pub fn describe(self) -> &'static str {
        match self {
            MediaTimeout::NeverConnected => "no media connection within ice_connect_timeout",
            MediaTimeout::Departed => "media connection lost for peer_departure_timeout",
        }
    }
}

/// Errors the media plane reports back to a command.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SfuError {
    /// The text is not SDP str0m can read. The reason names the line and what was found
    /// there, never parser internals.
    #[error("the SDP could not be parsed: {0}")]
    BadSdp(String),
    /// An offer or answer with more m-lines than `max_media_sections` allows, refused
    /// before it is parsed.
    #[error("the SDP has {sent} media sections (m-lines); at most {limit} are accepted")]
    TooManyMediaSections { sent: usize, limit: usize },
    /// An offer or answer with more `a=candidate` lines than `max_remote_candidates`,
    /// refused before it is parsed.
    #[error("the SDP has {sent} ICE candidates; at most {limit} are accepted")]
    TooManyCandidates { sent: usize, limit: usize },
    #[error("the offer was refused: {0}")]
    Negotiation(String),
    #[error("the ICE candidate could not be parsed: {0}")]
    BadCandidate(String),
    #[error("participant {0} is not in the media plane")]
    UnknownParticipant(String),
    #[error("participant {0} is already in the media plane")]
    DuplicateParticipant(String),
    #[error("no answer was pending on the subscriber connection")]
    NoPendingOffer,
    #[error("track {0} is not published in this room")]
    UnknownTrack(String),
    #[error("the media worker has stopped")]
    WorkerGone,
    #[error("cannot bind the media socket {addr}: {reason}")]
    Bind { addr: String, reason: String },
    #[error("invalid media configuration: {0}")]
    Config(String),
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, SfuError>>;

/// A command to a media worker. Built by [`crate::ParticipantHandle`]; not constructed by hand.
#[derive(Debug)]
pub(crate) enum Command {
    Join {
        participant: String,
        identity: String,
        room: String,
        options: JoinOptions,
        events: mpsc::UnboundedSender<PeerEvent>,
        reply: Reply<()>,
    },
    PublisherOffer {
        participant: String,
        sdp: String,
        reply: Reply<crate::single_pc::Answer>,
    },
    SubscriberAnswer {
        participant: String,
        sdp: String,
        reply: Reply<()>,
    },
    RemoteCandidate {
        participant: String,
        role: PeerRole,
        candidate: String,
    },
    ExpectTrack {
        participant: String,
        track: ExpectedTrack,
    },
    SetTrackMuted {
        participant: String,
        sid: String,
        muted: bool,
    },
    Subscribe {
        participant: String,
        track_sids: Vec<String>,
        subscribe: bool,
    },
    SetSubscribePermission {
        participant: String,
        permission: Option<crate::permissions::SubscribePermission>,
    },
    TrackSettings {
        participant: String,
        track_sids: Vec<String>,
        settings: TrackSettings,
    },
    SendData {
        to: Vec<String>,
        reliable: bool,
        payload: Arc<[u8]>,
    },
    Leave {
        participant: String,
        reply: oneshot::Sender<ParticipantStats>,
    },
    ViewerOffer {
        participant: String,
        sdp: String,
        reply: Reply<String>,
    },
    View {
        participant: String,
        publisher: Option<String>,
    },
    /// Restart ICE on the participant's subscriber PC with the next offer (at once, unless
    /// an offer is out: then after its answer).
    RestartSubscriberIce {
        participant: String,
    },
    /// A connection to the ICE-TCP port whose first frame some peer of this worker may
    /// accept; handed back through `reply` when none does.
    TcpConnection {
        handoff: crate::ice_tcp::TcpHandoff,
        reply: oneshot::Sender<crate::ice_tcp::TcpHandoff>,
    },
    IceRestart {
        participant: String,
        role: PeerRole,
        ufrag: String,
        pwd: String,
        reply: Reply<(String, String)>,
    },
    Tap {
        tap: u64,
        room: String,
        scope: crate::tap::TapScope,
        sender: crate::tap::TapSender,
        reply: Reply<()>,
    },
    Untap {
        tap: u64,
    },
    TapKeyframe {
        tap: u64,
        track: u32,
    },
    Shutdown,
}
