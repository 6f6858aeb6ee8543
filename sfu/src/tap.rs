//! Taps: in-process consumers of a room's media, such as the egress recorder.
//!
//! A tap receives the RTP of the tracks it asked for exactly as subscribers would (the
//! forwarded simulcast layer, numbered as one continuous stream), but as plain values on a
//! channel instead of SRTP on a socket. Packets are dropped, never queued without bound,
//! when the consumer falls behind: a slow disk must not grow the worker's memory or slow
//! its forwarding.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;

use crate::api::{Command, SfuError, TrackKind};
use crate::down_track::LayerChoice;
use crate::ids::TrackId;
use crate::rewrite::Rewriter;

/// What a tap receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapScope {
    /// Every track of the room, as tracks come and go.
    Room,
    /// One track, by its `TR_…` sid.
    Track(String),
}

/// The codec of a tapped track, from the publisher's negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapCodec {
    /// Lower-case codec name: `opus`, `vp8`, `vp9`, `h264`, `av1`.
    pub name: String,
    pub clock_rate: u32,
    /// Audio channels (2 for Opus as negotiated in SDP).
    pub channels: Option<u8>,
    /// H.264 `profile-level-id`, when negotiated.
    pub profile_level_id: Option<u32>,
}

/// A track a tap started receiving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapTrack {
    /// The tap's own number for the track, used by [`TapEvent::Rtp`] and
    /// [`TapHandle::request_keyframe`]. A republished track gets a new number.
    pub id: u32,
    pub track_sid: String,
    /// The publisher's `PA_…` sid and identity.
    pub participant: String,
    pub identity: String,
    pub kind: TrackKind,
    pub codec: TapCodec,
}

/// The publisher's clock as its last RTCP sender report gave it: RTP time `rtp` (in the
/// tap's numbering) was wall-clock time `ntp` at the sender. Lines tracks up with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderClock {
    pub ntp: SystemTime,
    pub rtp: u32,
}

/// One RTP packet of a tapped track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapPacket {
    /// Extended sequence number, continuous across simulcast layer switches.
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    /// Shared with the packets forwarded to subscribers: tapping copies nothing.
    pub payload: Arc<[u8]>,
    /// When the worker received it.
    pub arrival: Instant,
    pub sender_clock: Option<SenderClock>,
}

/// What the media worker tells a tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapEvent {
    /// The first packet of a track (for this tap) follows.
    TrackStarted(TapTrack),
    Rtp {
        track: u32,
        packet: TapPacket,
    },
    /// The track was unpublished or its publisher left.
    TrackEnded {
        track: u32,
    },
}

/// The receiving end of a tap.
pub struct TapReceiver {
    events: mpsc::UnboundedReceiver<TapEvent>,
    shared: Arc<TapShared>,
}

impl TapReceiver {
    /// The next event; `None` once the tap is closed or the worker stopped.
    pub async fn recv(&mut self) -> Option<TapEvent> {
        let event = self.events.recv().await;
        self.account(&event);
        event
    }

    /// The same, for a consumer on its own thread.
    pub fn blocking_recv(&mut self) -> Option<TapEvent> {
        let event = self.events.blocking_recv();
        self.account(&event);
        event
    }

    fn account(&self, event: &Option<TapEvent>) {
        if let Some(TapEvent::Rtp { .. }) = event {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Packets the worker dropped because this receiver fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// Counters shared by a tap's worker side and its receiver.
#[derive(Debug, Default)]
pub(crate) struct TapShared {
    queued: AtomicUsize,
    dropped: AtomicU64,
}

/// Controls a tap; dropping it closes the tap.
#[derive(Debug)]
pub struct TapHandle {
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
}

impl TapHandle {
    pub(crate) fn new(id: u64, commands: mpsc::UnboundedSender<Command>) -> Self {
        Self { id, commands }
    }

    /// Asks the publisher of a tapped video track for a keyframe (throttled like
    /// subscribers' requests).
    pub fn request_keyframe(&self, track: u32) -> Result<(), SfuError> {
        self.commands
            .send(Command::TapKeyframe {
                tap: self.id,
                track,
            })
            .map_err(|_| SfuError::WorkerGone)
    }
}

impl Drop for TapHandle {
    fn drop(&mut self) {
        // A stopped worker has no taps left to close.
        let _ = self.commands.send(Command::Untap { tap: self.id });
    }
}

/// Creates both ends' shared state and channel.
pub(crate) fn channel() -> (TapSender, TapReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(TapShared::default());
    (
        TapSender {
            events: tx,
            shared: Arc::clone(&shared),
        },
        TapReceiver { events: rx, shared },
    )
}

/// The worker's end of a tap's channel.
#[derive(Debug)]
pub(crate) struct TapSender {
    events: mpsc::UnboundedSender<TapEvent>,
    shared: Arc<TapShared>,
}

/// Packets a tap may have waiting before new ones are dropped: a few seconds of a
/// high-bitrate room.
const TAP_QUEUE_LIMIT: usize = 4096;

impl TapSender {
    /// Sends a control event; these are never dropped.
    pub fn control(&self, event: TapEvent) -> bool {
        self.events.send(event).is_ok()
    }

    /// Sends a packet unless the receiver is too far behind.
    pub fn packet(&self, track: u32, packet: TapPacket) {
        if self.shared.queued.load(Ordering::Relaxed) >= TAP_QUEUE_LIMIT {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        if self.events.send(TapEvent::Rtp { track, packet }).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn is_closed(&self) -> bool {
        self.events.is_closed()
    }
}

/// A track as one tap sees it. A tap takes the best layer the publisher sends.
pub(crate) struct TappedTrack {
    pub source: TrackId,
    pub id: u32,
    pub layer: LayerChoice,
    pub rewriter: Rewriter,
}

/// A tap, on the worker's side.
pub(crate) struct Tap {
    pub id: u64,
    pub room: String,
    pub scope: TapScope,
    pub sender: TapSender,
    pub tracks: Vec<TappedTrack>,
    pub next_track: u32,
}

impl Tap {
    /// Whether the tap wants the track `sid` of its room.
    pub fn wants(&self, sid: &str) -> bool {
        match &self.scope {
            TapScope::Room => true,
            TapScope::Track(wanted) => wanted == sid,
        }
    }
}
