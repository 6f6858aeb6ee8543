//! One subscriber's copy of a published track: its m-line's negotiation, the layer of the
//! source it forwards and the one it wants, the rewriting of numbering, our send path's
//! history for retransmissions, and its pause state.

use str0m::media::{Mid, Pt};
use str0m::rtp::Ssrc;

use crate::api::{TrackKind, TrackSettings};
use crate::ids::TrackId;
use crate::published_track::{bit, Quality};
use crate::rewrite::Rewriter;
use crate::rtp_out::StreamSend;
use crate::vp8_ids::Vp8Ids;

/// Negotiation state of one m-line on the subscriber PC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutState {
    /// Needs an m-line in the next offer.
    ToOpen,
    /// Offered, waiting for the answer.
    Negotiating(Mid),
    /// Negotiated: media flows.
    Open(Mid),
    /// The source went away: the m-line must be stopped in the next offer.
    ToStop(Mid),
    /// Stop offered, waiting for the answer; the slot is freed after it.
    NegotiatingStop(Mid),
}

/// What a down-track does with one packet of its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Forward,
    Drop,
    /// Dropped, and a keyframe of this packet's layer is wanted to switch to it.
    WantKeyframe,
}

/// Which layer of its source a down-track forwards, and which one it wants. Switching
/// happens only where the receiver can decode from: at a keyframe of the new layer (video),
/// at once (audio, a single layer).
#[derive(Debug, Default)]
pub(crate) struct LayerChoice {
    /// The quality the allocator chose; `None` while nothing is chosen (no layer is being
    /// sent, or the down-track is paused).
    target: Option<Quality>,
    /// The layer being forwarded (SSRC, quality); `None` until the first packet it may
    /// start on.
    current: Option<(u32, Quality)>,
}

impl LayerChoice {
    /// Decides for a packet of layer `ssrc` (of `quality`); `keyframe` says whether it starts
    /// one, `needs_keyframe` whether a switch must wait for one (video).
    pub fn admit(
        &mut self,
        ssrc: u32,
        quality: Quality,
        keyframe: bool,
        needs_keyframe: bool,
    ) -> Verdict {
        let Some(target) = self.target else {
            return Verdict::Drop;
        };
        if self.current.is_some_and(|(s, _)| s == ssrc) {
            // The current layer flows until the target's keyframe takes over.
            return Verdict::Forward;
        }
        if quality != target {
            return Verdict::Drop;
        }
        if needs_keyframe && !keyframe {
            return Verdict::WantKeyframe;
        }
        self.current = Some((ssrc, quality));
        Verdict::Forward
    }

    /// Sets the quality to switch to; `None` stops forwarding at once (a paused track must
    /// start again on a keyframe). Returns whether anything changed.
    pub fn set_target(&mut self, target: Option<Quality>) -> bool {
        if target == self.target {
            return false;
        }
        self.target = target;
        if target.is_none() {
            self.current = None;
        }
        true
    }

    /// Forgets the forwarded layer: the next packet forwarded starts a new source (another
    /// publisher's track under a viewer's m-line).
    pub fn restart(&mut self) {
        self.current = None;
    }

    pub fn current(&self) -> Option<Quality> {
        self.current.map(|(_, q)| q)
    }

    /// The qualities whose packets this choice may forward.
    pub fn wanted(&self) -> u8 {
        self.target.map_or(0, bit) | self.current.map_or(0, |(_, q)| bit(q))
    }
}

/// A track this participant receives from another participant of the room.
pub(crate) struct DownTrack {
    pub track_sid: String,
    pub publisher_key: String,
    /// `None` once the source is gone (or while a viewer's m-line has none).
    pub source: Option<TrackId>,
    pub kind: TrackKind,
    pub state: OutState,
    pub ssrc: Option<Ssrc>,
    pub pt_map: Vec<(Pt, Pt)>,
    pub layer: LayerChoice,
    /// What the subscriber asked of this track.
    pub settings: TrackSettings,
    /// Paused by the allocator (the link cannot carry even the lowest layer, or the client
    /// disabled the track).
    pub paused: bool,
    pub rewriter: Rewriter,
    /// VP8 picture numbering continued across the layers forwarded.
    pub vp8: Vp8Ids,
    /// Our own send path's state for this stream (history for NACKs).
    pub send: StreamSend,
    /// The last packet sent ended a frame: padding may follow without splitting one.
    pub frame_end: bool,
    /// The payload type of the last packet sent (what padding goes out with).
    pub last_pt: Option<u8>,
    /// An m-line the client offered (a WHEP viewer): it stays open whatever its source
    /// does, and the source is switched under it instead of renegotiating.
    pub fixed: bool,
}

impl DownTrack {
    pub fn new(track_sid: String, publisher_key: String, source: TrackId, kind: TrackKind) -> Self {
        Self::with_state(
            track_sid,
            publisher_key,
            Some(source),
            kind,
            OutState::ToOpen,
        )
    }

    /// A viewer's m-line, open from the start and filled later.
    pub fn fixed(kind: TrackKind, mid: Mid, ssrc: Option<Ssrc>) -> Self {
        let mut track = Self::with_state(
            String::new(),
            String::new(),
            None,
            kind,
            OutState::Open(mid),
        );
        track.ssrc = ssrc;
        track.fixed = true;
        track
    }

    fn with_state(
        track_sid: String,
        publisher_key: String,
        source: Option<TrackId>,
        kind: TrackKind,
        state: OutState,
    ) -> Self {
        Self {
            track_sid,
            publisher_key,
            source,
            kind,
            state,
            ssrc: None,
            pt_map: Vec::new(),
            layer: LayerChoice::default(),
            settings: TrackSettings::default(),
            paused: false,
            rewriter: Rewriter::default(),
            vp8: Vp8Ids::default(),
            send: StreamSend::default(),
            frame_end: false,
            last_pt: None,
            fixed: false,
        }
    }

    pub fn open_mid(&self) -> Option<Mid> {
        match self.state {
            OutState::Open(mid) => Some(mid),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: u32 = 1;
    const H: u32 = 2;
    const F: u32 = 3;

    #[test]
    fn video_starts_and_switches_only_at_keyframes() {
        let mut choice = LayerChoice::default();
        // Nothing chosen yet: nothing goes.
        assert_eq!(choice.admit(F, 2, true, true), Verdict::Drop);
        choice.set_target(Some(2));
        assert_eq!(choice.admit(F, 2, false, true), Verdict::WantKeyframe);
        assert_eq!(choice.admit(H, 1, true, true), Verdict::Drop);
        assert_eq!(choice.admit(F, 2, true, true), Verdict::Forward);
        assert_eq!(choice.admit(F, 2, false, true), Verdict::Forward);
        // Down to q: f keeps flowing until q's keyframe.
        choice.set_target(Some(0));
        assert_eq!(choice.admit(Q, 0, false, true), Verdict::WantKeyframe);
        assert_eq!(choice.admit(F, 2, false, true), Verdict::Forward);
        assert_eq!(choice.wanted(), bit(0) | bit(2));
        assert_eq!(choice.admit(Q, 0, true, true), Verdict::Forward);
        assert_eq!(choice.admit(F, 2, false, true), Verdict::Drop);
        assert_eq!(choice.current(), Some(0));
        assert_eq!(choice.wanted(), bit(0));
    }

    #[test]
    fn pausing_stops_at_once_and_resuming_waits_for_a_keyframe() {
        let mut choice = LayerChoice::default();
        choice.set_target(Some(1));
        assert_eq!(choice.admit(H, 1, true, true), Verdict::Forward);
        assert!(choice.set_target(None));
        assert_eq!(choice.admit(H, 1, false, true), Verdict::Drop);
        assert_eq!(choice.wanted(), 0);
        assert!(!choice.set_target(None));
        choice.set_target(Some(1));
        assert_eq!(choice.admit(H, 1, false, true), Verdict::WantKeyframe);
        assert_eq!(choice.admit(H, 1, true, true), Verdict::Forward);
    }

    #[test]
    fn audio_starts_on_any_packet() {
        let mut choice = LayerChoice::default();
        choice.set_target(Some(3));
        assert_eq!(choice.admit(7, 3, false, false), Verdict::Forward);
    }
}
