//! One subscriber's copy of a published track: its m-line's negotiation, the layer of the
//! source it forwards and the one it wants, the rewriting of numbering, our send path's
//! history for retransmissions, and its pause state.

use str0m::media::{Mid, Pt};
use str0m::rtp::Ssrc;

use crate::api::{TrackKind, TrackSettings};
use crate::ids::TrackId;
use crate::layer_meter::Temporal;
use crate::published_track::{bit, Quality};
use crate::rewrite::Rewriter;
use crate::rtp_out::StreamSend;
use crate::svc::SvcLayer;
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
    /// Left out of the stream this down-track follows (a temporal or spatial layer above
    /// its choice): the numbering closes up after it.
    Skip,
    /// Dropped, and a keyframe of this packet's layer is wanted to switch to it.
    WantKeyframe,
}

/// Where one packet sits among its track's layers, as a down-track's choice needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PacketLayer {
    pub ssrc: u32,
    /// Its layer's quality: the simulcast layer's, or its spatial id in an SVC stream.
    pub quality: Quality,
    /// It starts a keyframe (of its simulcast layer, or of an SVC stream's whole picture).
    pub keyframe: bool,
    /// Video: a switch must wait for a keyframe.
    pub needs_keyframe: bool,
    /// Its place in an SVC stream (`svc/`); `None` for simulcast and plain streams.
    pub svc: Option<SvcLayer>,
    /// Its temporal layer, when the codec says (VP8's TID, VP9's).
    pub temporal: Option<Temporal>,
}

/// Which layer of its source a down-track forwards, and which one it wants. Switching
/// happens only where the receiver can decode from: at a keyframe of the new layer (video),
/// at once (audio, a single layer). In an SVC stream the choice is the highest spatial
/// layer: every layer up to it is forwarded, going down happens at the next picture, going
/// up at a keyframe (L3T3_KEY predicts from a lower layer only there).
///
/// Within the forwarded layer, temporal layers above the chosen one are left out: going
/// down at the next frame, up at the next frame of the base temporal layer (every frame
/// after one of those refers only to frames the subscriber has).
#[derive(Debug, Default)]
pub(crate) struct LayerChoice {
    /// The quality the allocator chose; `None` while nothing is chosen (no layer is being
    /// sent, or the down-track is paused).
    target: Option<Quality>,
    /// The layer being forwarded (SSRC, quality); `None` until the first packet it may
    /// start on.
    current: Option<(u32, Quality)>,
    /// The source is one SVC stream: a quality stands for itself and the layers below it.
    pub svc: bool,
    /// The highest temporal layer to forward (`None`: all), and the one forwarded now.
    temporal_target: Option<u8>,
    temporal_current: Option<u8>,
}

impl LayerChoice {
    /// Decides for packet `p`.
    pub fn admit(&mut self, p: &PacketLayer) -> Verdict {
        let Some(target) = self.target else {
            return Verdict::Drop;
        };
        let verdict = if let Some(layer) = p.svc {
            self.svc = true;
            self.admit_within_picture(p, layer, target)
        } else if self.current.is_some_and(|(s, _)| s == p.ssrc) {
            // The current layer flows until the target's keyframe takes over.
            Verdict::Forward
        } else if p.quality != target {
            Verdict::Drop
        } else if p.needs_keyframe && !p.keyframe {
            Verdict::WantKeyframe
        } else {
            self.current = Some((p.ssrc, p.quality));
            self.temporal_current = self.temporal_target;
            Verdict::Forward
        };
        match (verdict, p.temporal) {
            (Verdict::Forward, Some(temporal)) => self.admit_temporal(p, temporal),
            _ => verdict,
        }
    }

    /// A packet of the forwarded layer in temporal layer `temporal`.
    fn admit_temporal(&mut self, p: &PacketLayer, temporal: Temporal) -> Verdict {
        // Where frames start: at each of an SVC stream's pictures (its layer frames share
        // one temporal id), at each frame otherwise.
        let starts = p.svc.map_or(temporal.frame_start, |l| l.starts_picture());
        if starts && self.temporal_current != self.temporal_target {
            let up = match (self.temporal_current, self.temporal_target) {
                (Some(current), Some(target)) => target > current,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if !up || temporal.id == 0 {
                self.temporal_current = self.temporal_target;
            }
        }
        if self.temporal_current.is_none_or(|top| temporal.id <= top) {
            Verdict::Forward
        } else {
            Verdict::Skip
        }
    }

    /// An SVC packet: forwarded when its spatial layer is at or below the current one.
    fn admit_within_picture(
        &mut self,
        p: &PacketLayer,
        layer: SvcLayer,
        target: Quality,
    ) -> Verdict {
        let current = match self.current.filter(|(ssrc, _)| *ssrc == p.ssrc) {
            None if layer.starts_keyframe() => Some(target),
            None => None,
            Some((_, current)) if current != target && layer.starts_picture() => {
                if target < current || layer.starts_keyframe() {
                    Some(target)
                } else {
                    Some(current)
                }
            }
            Some((_, current)) => Some(current),
        };
        self.current = current.map(|q| (p.ssrc, q));
        match current {
            Some(current) if p.quality <= current => Verdict::Forward,
            // A layer the target includes waits for a keyframe.
            _ if p.quality <= target => Verdict::WantKeyframe,
            _ if current.is_some() => Verdict::Skip,
            _ => Verdict::Drop,
        }
    }

    /// The marker bit packet `p` goes out with: an SVC stream marks the end of a picture
    /// after its highest layer, which for this down-track is the current one.
    pub fn marker(&self, p: &PacketLayer, marker: bool) -> bool {
        marker
            || p.svc.is_some_and(|layer| {
                layer.ends_frame && self.current.is_some_and(|(_, q)| q == p.quality)
            })
    }

    /// Sets the quality to switch to; `None` stops forwarding at once (a paused track must
    /// start again on a keyframe). Returns whether the quality changed.
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

    /// Sets the highest temporal layer to forward (`None`: all of them).
    pub fn set_temporal(&mut self, temporal: Option<u8>) {
        self.temporal_target = temporal;
    }

    /// The temporal layer forwarded now (`None`: all of them).
    #[cfg(test)]
    pub fn temporal(&self) -> Option<u8> {
        self.temporal_current
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
        let target = self.target.map_or(0, bit);
        let current = self.current.map_or(0, |(_, q)| bit(q));
        if self.svc {
            // The highest one and every layer below it (both are single bits).
            let top = target.max(current);
            return if top == 0 { 0 } else { top | (top - 1) };
        }
        target | current
    }
}

/// How packets of one of the publisher's payload types go to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PtOut {
    /// The publisher's payload type.
    pub from: Pt,
    /// The subscriber's for the same codec.
    pub to: Pt,
    /// RED is unwrapped on the way (the subscriber did not negotiate it).
    pub de_red: bool,
    /// Its codec is negotiated with NACK, so what was sent is kept to answer (video always
    /// is). str0m keeps our side's feedback flags, not the answer's: for Opus this says we
    /// offered it, and a subscriber that answered without it costs a second of history.
    pub nack: bool,
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
    /// The publisher's payload types and how each goes to the subscriber (`forward.rs`).
    pub pt_map: Vec<PtOut>,
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

    /// The m-line it holds, in any state but waiting for one.
    pub fn mid(&self) -> Option<Mid> {
        match self.state {
            OutState::ToOpen => None,
            OutState::Negotiating(mid)
            | OutState::Open(mid)
            | OutState::ToStop(mid)
            | OutState::NegotiatingStop(mid) => Some(mid),
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

    fn simulcast(ssrc: u32, quality: Quality, keyframe: bool, needs_keyframe: bool) -> PacketLayer {
        PacketLayer {
            ssrc,
            quality,
            keyframe,
            needs_keyframe,
            svc: None,
            temporal: None,
        }
    }

    /// A one-packet frame of layer H in temporal layer `tid`.
    fn frame(tid: u8, keyframe: bool) -> PacketLayer {
        PacketLayer {
            temporal: Some(Temporal {
                id: tid,
                frame_start: true,
            }),
            ..simulcast(H, 1, keyframe, true)
        }
    }

    /// A packet of spatial layer `sid` of an SVC stream: `starts` its layer frame, `ends`
    /// it, of a keyframe picture or not.
    fn svc(sid: Quality, key: bool, starts: bool, ends: bool) -> PacketLayer {
        let layer = SvcLayer {
            spatial: sid,
            temporal: 0,
            starts_frame: starts,
            ends_frame: ends,
            inter_picture: !key,
        };
        PacketLayer {
            ssrc: 9,
            quality: sid,
            keyframe: layer.starts_keyframe(),
            needs_keyframe: true,
            svc: Some(layer),
            temporal: None,
        }
    }

    /// One picture of three spatial layers, one packet each: what `choice` did with each
    /// (F forwarded, K dropped waiting for a keyframe, - dropped) and the marker bits
    /// (the publisher marks the last layer).
    fn picture(choice: &mut LayerChoice, key: bool) -> (String, Vec<bool>) {
        let mut verdicts = String::new();
        let mut markers = Vec::new();
        for sid in 0..3 {
            let p = svc(sid, key, true, true);
            match choice.admit(&p) {
                Verdict::Forward => {
                    verdicts.push('F');
                    markers.push(choice.marker(&p, sid == 2));
                }
                Verdict::WantKeyframe => verdicts.push('K'),
                Verdict::Drop | Verdict::Skip => verdicts.push('-'),
            }
        }
        (verdicts, markers)
    }

    #[test]
    fn svc_forwards_the_layers_up_to_the_target_and_marks_the_last() {
        let mut choice = LayerChoice::default();
        choice.set_target(Some(1));
        // Starts on a keyframe only.
        assert_eq!(picture(&mut choice, false).0, "KK-");
        assert_eq!(
            picture(&mut choice, true),
            ("FF-".into(), vec![false, true])
        );
        assert_eq!(choice.wanted(), bit(0) | bit(1));
        // Down: from the next picture on, the marker on the layer below.
        choice.set_target(Some(0));
        assert_eq!(picture(&mut choice, false), ("F--".into(), vec![true]));
        assert_eq!(choice.wanted(), bit(0));
        // Up: only at a keyframe; until then the lower layers keep flowing.
        choice.set_target(Some(2));
        assert_eq!(choice.wanted(), bit(0) | bit(1) | bit(2));
        assert_eq!(picture(&mut choice, false), ("FKK".into(), vec![true]));
        assert_eq!(
            picture(&mut choice, true),
            ("FFF".into(), vec![false, false, true])
        );
        assert_eq!(choice.current(), Some(2));
    }

    #[test]
    fn svc_switches_only_between_pictures() {
        let mut choice = LayerChoice::default();
        choice.set_target(Some(2));
        assert_eq!(picture(&mut choice, true).0, "FFF");
        // Lowered while a picture is under way: its upper layers still go, so it ends.
        assert_eq!(choice.admit(&svc(0, false, true, true)), Verdict::Forward);
        choice.set_target(Some(0));
        assert_eq!(choice.admit(&svc(1, false, true, true)), Verdict::Forward);
        let last = svc(2, false, true, true);
        assert_eq!(choice.admit(&last), Verdict::Forward);
        assert!(choice.marker(&last, true));
        assert_eq!(picture(&mut choice, false).0, "F--");
    }

    #[test]
    fn video_starts_and_switches_only_at_keyframes() {
        let mut choice = LayerChoice::default();
        // Nothing chosen yet: nothing goes.
        assert_eq!(choice.admit(&simulcast(F, 2, true, true)), Verdict::Drop);
        choice.set_target(Some(2));
        assert_eq!(
            choice.admit(&simulcast(F, 2, false, true)),
            Verdict::WantKeyframe
        );
        assert_eq!(choice.admit(&simulcast(H, 1, true, true)), Verdict::Drop);
        assert_eq!(choice.admit(&simulcast(F, 2, true, true)), Verdict::Forward);
        assert_eq!(
            choice.admit(&simulcast(F, 2, false, true)),
            Verdict::Forward
        );
        // Down to q: f keeps flowing until q's keyframe.
        choice.set_target(Some(0));
        assert_eq!(
            choice.admit(&simulcast(Q, 0, false, true)),
            Verdict::WantKeyframe
        );
        assert_eq!(
            choice.admit(&simulcast(F, 2, false, true)),
            Verdict::Forward
        );
        assert_eq!(choice.wanted(), bit(0) | bit(2));
        assert_eq!(choice.admit(&simulcast(Q, 0, true, true)), Verdict::Forward);
        assert_eq!(choice.admit(&simulcast(F, 2, false, true)), Verdict::Drop);
        assert_eq!(choice.current(), Some(0));
        assert_eq!(choice.wanted(), bit(0));
    }

    #[test]
    fn temporal_layers_go_down_at_the_next_frame_and_up_at_a_base_layer_frame() {
        let mut choice = LayerChoice::default();
        choice.set_target(Some(1));
        choice.set_temporal(Some(1));
        // The usual three-layer pattern: T0 T2 T1 T2, from a keyframe.
        let pattern = [0, 2, 1, 2, 0, 2, 1, 2];
        let verdicts = |choice: &mut LayerChoice, first_key: bool| -> String {
            pattern
                .iter()
                .enumerate()
                .map(
                    |(i, &tid)| match choice.admit(&frame(tid, first_key && i == 0)) {
                        Verdict::Forward => 'F',
                        Verdict::Skip => 's',
                        _ => '?',
                    },
                )
                .collect()
        };
        assert_eq!(verdicts(&mut choice, true), "FsFsFsFs");
        assert_eq!(choice.temporal(), Some(1));
        // Down to the base layer: from the next frame on.
        choice.set_temporal(Some(0));
        assert_eq!(choice.admit(&frame(2, false)), Verdict::Skip);
        assert_eq!(choice.admit(&frame(1, false)), Verdict::Skip);
        // Up to all of them: only from the next base-layer frame.
        choice.set_temporal(None);
        assert_eq!(choice.admit(&frame(2, false)), Verdict::Skip);
        assert_eq!(choice.admit(&frame(0, false)), Verdict::Forward);
        assert_eq!(choice.temporal(), None);
        assert_eq!(choice.admit(&frame(2, false)), Verdict::Forward);
        // A frame's later packets share its start's fate.
        choice.set_temporal(Some(0));
        let rest = |tid| PacketLayer {
            temporal: Some(Temporal {
                id: tid,
                frame_start: false,
            }),
            ..frame(tid, false)
        };
        assert_eq!(
            choice.admit(&rest(2)),
            Verdict::Forward,
            "the frame under way goes on"
        );
        assert_eq!(choice.admit(&frame(1, false)), Verdict::Skip);
        assert_eq!(choice.admit(&rest(1)), Verdict::Skip);
        // Packets without a temporal layer always go.
        assert_eq!(
            choice.admit(&simulcast(H, 1, false, true)),
            Verdict::Forward
        );
    }

    #[test]
    fn pausing_stops_at_once_and_resuming_waits_for_a_keyframe() {
        let mut choice = LayerChoice::default();
        choice.set_target(Some(1));
        assert_eq!(choice.admit(&simulcast(H, 1, true, true)), Verdict::Forward);
        assert!(choice.set_target(None));
        assert_eq!(choice.admit(&simulcast(H, 1, false, true)), Verdict::Drop);
        assert_eq!(choice.wanted(), 0);
        assert!(!choice.set_target(None));
        choice.set_target(Some(1));
        assert_eq!(
            choice.admit(&simulcast(H, 1, false, true)),
            Verdict::WantKeyframe
        );
        assert_eq!(choice.admit(&simulcast(H, 1, true, true)), Verdict::Forward);
    }

    #[test]
    fn audio_starts_on_any_packet() {
        let mut choice = LayerChoice::default();
        choice.set_target(Some(3));
        assert_eq!(
            choice.admit(&simulcast(7, 3, false, false)),
            Verdict::Forward
        );
    }
}
