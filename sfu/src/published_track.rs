//! A track a participant publishes, as the worker receives it: its layers (simulcast
//! encodings, or the one stream), what each is sending, and its keyframe state. Which layer
//! each subscriber gets is the subscriber's business (`down_track.rs`, `allocator.rs`).

use std::time::{Duration, Instant};

use str0m::format::{Codec, PayloadParams};
use str0m::media::{Mid, Pt, Rid};

use crate::allocator::Step;
use crate::api::{ExpectedTrack, LayerSize, TrackKind, TrackSettings};
use crate::ids::DownTrackId;
use crate::layer_meter::{BitrateMeter, Temporal};

/// A layer that sent nothing for this long is considered stopped (the publisher's
/// bandwidth estimate dropped it, or the camera went away).
pub(crate) const LAYER_IDLE: Duration = Duration::from_millis(1500);
/// A keyframe request the publisher has not answered yet blocks further ones for this long
/// (its keyframe may still be on the way; after that it was lost, ask again).
const KEYFRAME_THROTTLE: Duration = Duration::from_millis(500);
/// Once answered, the next request may follow this soon: subscribers joining one after the
/// other then wait for at most this plus one frame, not for the full throttle.
const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The fewest frames per second a temporal step above a track's lowest layer must give to
/// be one of its steps (`active_steps`).
const MIN_STEP_FPS: u32 = 15;

/// A layer's place in the quality order: higher is better. LiveKit names simulcast layers
/// q (low), h (medium), f (full); a track without simulcast has one layer, above them all.
pub(crate) type Quality = u8;

/// The quality of a layer named `rid`.
pub(crate) fn quality_of(rid: Option<&str>) -> Quality {
    match rid {
        None => 3,
        Some("f") => 2,
        Some("h") => 1,
        _ => 0,
    }
}

/// A set of qualities, one bit each.
pub(crate) fn bit(quality: Quality) -> u8 {
    1 << quality.min(7)
}

/// One simulcast layer (or the only stream) of a published track.
pub(crate) struct Layer {
    pub ssrc: u32,
    pub rid: Option<Rid>,
    pub quality: Quality,
    first_seq: u64,
    max_seq: u64,
    received: u64,
    pub meter: BitrateMeter,
    keyframes: KeyframeThrottle,
}

/// When keyframes were last asked for and last came: requests are spaced out until the
/// publisher answers (`KEYFRAME_THROTTLE`), and by a little after (`KEYFRAME_MIN_INTERVAL`).
#[derive(Debug, Default, Clone, Copy)]
struct KeyframeThrottle {
    last_request: Option<Instant>,
    last_keyframe: Option<Instant>,
}

impl KeyframeThrottle {
    /// Whether a request may go now; if so, it is counted as made.
    fn request(&mut self, now: Instant) -> bool {
        let throttled = self.last_request.is_some_and(|at| {
            let since = now.saturating_duration_since(at);
            let answered = self.last_keyframe.is_some_and(|k| k >= at);
            since < KEYFRAME_MIN_INTERVAL || (!answered && since < KEYFRAME_THROTTLE)
        });
        if !throttled {
            self.last_request = Some(now);
        }
        !throttled
    }
}

impl Layer {
    /// A layer whose first packet (number `seq`) came at `now`; it counts as sending from
    /// then.
    pub fn new(ssrc: u32, rid: Option<Rid>, now: Instant, seq: u64) -> Self {
        let mut meter = BitrateMeter::new(now);
        meter.last_packet = Some(now);
        Self {
            ssrc,
            rid,
            quality: quality_of(rid.as_deref()),
            first_seq: seq,
            max_seq: seq,
            received: 0,
            meter,
            keyframes: KeyframeThrottle::default(),
        }
    }

    /// Counts a received packet, for loss accounting and the layer's bitrate.
    pub fn record(&mut self, seq: u64, bytes: usize, now: Instant, temporal: Option<Temporal>) {
        self.received += 1;
        self.max_seq = self.max_seq.max(seq);
        self.first_seq = self.first_seq.min(seq);
        self.meter.record(bytes, now, temporal);
    }

    /// Packets never received, from sequence gaps (retransmissions fill gaps in).
    pub fn lost(&self) -> u64 {
        (self.max_seq - self.first_seq + 1).saturating_sub(self.received)
    }

    fn active(&self, now: Instant) -> bool {
        self.meter.active(now)
    }
}

/// One received packet, as the receiver counts it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival {
    pub ssrc: u32,
    pub seq: u64,
    pub bytes: usize,
    pub keyframe: bool,
    /// Its spatial layer in an SVC stream.
    pub spatial: Option<u8>,
    /// Its temporal layer, when the codec says.
    pub temporal: Option<Temporal>,
}

/// What the receiver made of one packet.
pub(crate) struct Received {
    pub quality: Quality,
    /// The set of layers the publisher is sending changed with this packet (a layer
    /// started, or one fell silent): subscribers' layer choices need a new look.
    pub layers_changed: bool,
}

/// A track a participant publishes.
pub(crate) struct PublishedTrack {
    pub sid: String,
    /// The client's track id (msid) and the codec it asked for.
    pub cid: String,
    /// The cids of its codecs, which a second m-line for it (a backup codec) carries.
    pub codec_cids: Vec<String>,
    pub codec: Option<String>,
    pub kind: TrackKind,
    pub mid: Mid,
    /// A screen share.
    pub screen: bool,
    /// The layers' sizes as the publisher announced them.
    sizes: Vec<LayerSize>,
    pub muted: bool,
    pub media_started: bool,
    pub layers: Vec<Layer>,
    /// The spatial layers of an SVC stream (VP9), by spatial id: a single stream whose
    /// packets each belong to one of them (`svc/`). Empty for simulcast and plain
    /// streams. At most 8 (the id has 3 bits).
    spatial: Vec<BitrateMeter>,
    /// Qualities of the layers sending now.
    active: u8,
    /// Qualities some down-track forwards or is switching to; packets of other layers
    /// stop before the fan-out.
    pub wanted: u8,
    /// Codec of each payload type seen, resolved once from the publisher's negotiation (a
    /// RED payload type maps to the codec it wraps, whose `red()` it is).
    pub payloads: Vec<(Pt, PayloadParams)>,
    pub down_tracks: Vec<DownTrackId>,
    /// Keys of participants that want this track and may not have it (`permissions.rs`):
    /// at most one per member of the room, forgotten when they leave.
    pub denied: Vec<String>,
    /// How loud it is (audio tracks; `speakers.rs`).
    pub audio_level: Option<crate::speakers::AudioLevel>,
    /// What its publisher was told to send (`dynacast.rs`).
    pub dynacast: crate::dynacast::Dynacast,
    /// Keyframe requests before any layer has sent (then each layer has its own).
    keyframes: KeyframeThrottle,
    /// An AV1 stream's frame templates, from its last keyframe's dependency descriptor
    /// (`svc/dependency_descriptor.rs`).
    pub av1_templates: Option<Box<crate::svc::dependency_descriptor::Templates>>,
}

impl PublishedTrack {
    /// The track the client announced as `expected`, bound to m-line `mid`.
    pub fn new(expected: ExpectedTrack, kind: TrackKind, mid: Mid) -> Self {
        Self {
            sid: expected.sid,
            cid: expected.cid,
            codec_cids: expected.codec_cids,
            codec: expected.codec,
            kind,
            mid,
            screen: expected.screen,
            sizes: expected.layers,
            muted: false,
            media_started: false,
            layers: Vec::new(),
            spatial: Vec::new(),
            active: 0,
            wanted: 0,
            payloads: Vec::new(),
            down_tracks: Vec::new(),
            denied: Vec::new(),
            audio_level: (kind == TrackKind::Audio).then(Default::default),
            dynacast: Default::default(),
            keyframes: KeyframeThrottle::default(),
            av1_templates: None,
        }
    }

    pub fn codec_of(&self, pt: Pt) -> Option<(PayloadParams, Codec)> {
        self.payloads
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, params)| (*params, params.spec().codec))
    }

    pub fn is_video(&self) -> bool {
        self.kind == TrackKind::Video
    }

    /// Several layers, announced or seen.
    pub fn is_simulcast(&self) -> bool {
        self.sizes.len() > 1 || self.layers.len() > 1
    }

    /// The lowest quality the publisher announced, sending yet or not.
    pub fn lowest_announced(&self) -> Option<Quality> {
        self.sizes.iter().map(|l| l.quality).min()
    }

    /// Adds the layer a new SSRC carries.
    pub fn add_layer(&mut self, ssrc: u32, rid: Option<Rid>, now: Instant, seq: u64) {
        self.layers.push(Layer::new(ssrc, rid, now, seq));
    }

    /// Takes in one packet. `None` for an SSRC that is not one of ours.
    pub fn receive(&mut self, packet: Arrival, now: Instant) -> Option<Received> {
        let Arrival {
            ssrc,
            seq,
            bytes,
            keyframe,
            spatial,
            temporal,
        } = packet;
        let layer = self.layers.iter_mut().find(|l| l.ssrc == ssrc)?;
        layer.record(seq, bytes, now, temporal);
        let mut quality = layer.quality;
        if keyframe {
            layer.keyframes.last_keyframe = Some(now);
            self.keyframes.last_keyframe = Some(now);
        }
        if let Some(spatial) = spatial.filter(|_| layer.rid.is_none()) {
            // An SVC stream: its layers are the spatial ones (a simulcast layer's own spatial
            // id is always 0, and its rid already places it).
            let sid = usize::from(spatial & 0x07);
            if self.spatial.len() <= sid {
                self.spatial.resize(sid + 1, BitrateMeter::new(now));
            }
            self.spatial[sid].record(bytes, now, temporal);
            quality = sid as Quality;
        }
        let active = if self.spatial.is_empty() {
            self.layers
                .iter()
                .filter(|l| l.active(now))
                .fold(0, |set, l| set | bit(l.quality))
        } else {
            (0..self.spatial.len())
                .filter(|&sid| self.spatial[sid].active(now))
                .fold(0, |set, sid| set | bit(sid as Quality))
        };
        let layers_changed = active != self.active;
        self.active = active;
        Some(Received {
            quality,
            layers_changed,
        })
    }

    /// Whether its layers are the spatial layers of one SVC stream.
    pub fn is_svc(&self) -> bool {
        !self.spatial.is_empty()
    }

    /// The best quality being sent now.
    pub fn best_active(&self) -> Option<Quality> {
        (0..8u8).rev().find(|q| self.active & bit(*q) != 0)
    }

    /// The steps being sent now, lowest first, with their bits per second: each layer's
    /// temporal layers (one step for a layer without). An SVC stream's step costs what it
    /// and every spatial layer below it send at that frame rate. Above the lowest layer, a
    /// step needs `MIN_STEP_FPS`: a bigger picture at a few frames a second is worse than
    /// the smaller one in motion; the lowest layer's steps all count (fewer frames beat a
    /// pause).
    pub fn active_steps(&self) -> Vec<(Step, u64)> {
        let lowest = (0..8u8).find(|q| self.active & bit(*q) != 0);
        let min_fps = |q: Quality| if Some(q) == lowest { 0 } else { MIN_STEP_FPS };
        let mut steps: Vec<(Step, u64)> = if self.spatial.is_empty() {
            self.layers
                .iter()
                .filter(|l| self.active & bit(l.quality) != 0)
                .flat_map(|l| l.meter.steps(l.quality, &[], min_fps(l.quality)))
                .collect()
        } else {
            (0..self.spatial.len())
                .filter(|&sid| self.active & bit(sid as Quality) != 0)
                .flat_map(|sid| {
                    let below: Vec<&BitrateMeter> = self.spatial[..sid].iter().collect();
                    let quality = sid as Quality;
                    self.spatial[sid].steps(quality, &below, min_fps(quality))
                })
                .collect()
        };
        steps.sort_unstable();
        steps
    }

    /// The highest temporal layer worth sending to a subscriber that asks for `fps` frames
    /// per second (0: any): the lowest one that gives it, by the best layer's frame rates.
    pub fn max_temporal_for(&self, settings: &TrackSettings) -> Option<u8> {
        if settings.fps == 0 {
            return None;
        }
        let best = self.best_active()?;
        let meter = if self.spatial.is_empty() {
            &self.layers.iter().find(|l| l.quality == best)?.meter
        } else {
            self.spatial.get(usize::from(best))?
        };
        meter.temporal_for_fps(settings.fps)
    }

    /// The best quality worth sending to a subscriber that asks for `settings`: the
    /// smallest layer about as large as the size it shows the track at (the top one if none
    /// is), or the quality it named. `None`: no limit. Sizes are compared by their longer
    /// side, and a layer 10 % short still serves (LiveKit's tolerance): a 700-pixel element
    /// gets the 640-pixel layer, not one of four times its bitrate.
    pub fn max_quality_for(&self, settings: &TrackSettings) -> Option<Quality> {
        let requested = u64::from(settings.width.max(settings.height));
        if requested == 0 || self.sizes.is_empty() {
            return settings.quality;
        }
        let wanted = (requested * 9).div_ceil(10) as u32;
        let mut sizes: Vec<(u32, Quality)> = self
            .sizes
            .iter()
            .map(|l| (l.width.max(l.height), l.quality))
            .collect();
        sizes.sort_unstable();
        sizes
            .iter()
            .find(|(side, _)| *side >= wanted)
            .or(sizes.last())
            .map(|(_, quality)| *quality)
    }

    /// The layers (by rid) to ask a keyframe of now, among the qualities in `wanted`: each
    /// layer not asked too recently, counted as asked. Before any layer has sent, the one
    /// stream without a rid.
    pub fn keyframe_requests(&mut self, now: Instant, wanted: u8) -> Vec<Option<Rid>> {
        if !self.is_video() {
            return Vec::new();
        }
        if self.layers.is_empty() {
            return if self.keyframes.request(now) {
                vec![None]
            } else {
                Vec::new()
            };
        }
        // An SVC stream's keyframe is one for all of its spatial layers.
        let svc = self.is_svc();
        self.layers
            .iter_mut()
            .filter_map(|l| {
                let wants = wanted & bit(l.quality) != 0 || (svc && wanted != 0);
                (wants && l.keyframes.request(now)).then_some(l.rid)
            })
            .collect()
    }

    pub fn packets_lost(&self) -> u64 {
        self.layers.iter().map(Layer::lost).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video() -> PublishedTrack {
        let size = |quality, width, height| LayerSize {
            quality,
            width,
            height,
        };
        let expected = ExpectedTrack {
            cid: "cam".into(),
            codec_cids: Vec::new(),
            sid: "TR_v".into(),
            kind: TrackKind::Video,
            codec: None,
            screen: false,
            layers: vec![size(2, 1280, 720), size(0, 320, 180), size(1, 640, 360)],
        };
        PublishedTrack::new(expected, TrackKind::Video, Mid::from("0"))
    }

    #[test]
    fn a_requested_size_selects_the_smallest_layer_that_covers_it() {
        let track = video();
        let asked = |width, height, quality| {
            track.max_quality_for(&TrackSettings {
                disabled: false,
                width,
                height,
                quality,
                fps: 0,
            })
        };
        assert_eq!(asked(160, 90, None), Some(0));
        assert_eq!(asked(320, 180, None), Some(0));
        assert_eq!(asked(355, 100, None), Some(0));
        assert_eq!(asked(356, 100, None), Some(1));
        assert_eq!(asked(700, 394, None), Some(1));
        // Portrait elements are measured by their longer side too.
        assert_eq!(asked(200, 600, None), Some(1));
        assert_eq!(asked(1920, 1080, None), Some(2));
        assert_eq!(asked(0, 0, Some(1)), Some(1));
        assert_eq!(asked(0, 0, None), None);
    }

    fn arrival(ssrc: u32, seq: u64, bytes: usize, keyframe: bool, spatial: Option<u8>) -> Arrival {
        Arrival {
            ssrc,
            seq,
            bytes,
            keyframe,
            spatial,
            temporal: None,
        }
    }

    /// A packet of layer `ssrc` (1 = q, 2 = h, 3 = f), added at its first packet as the
    /// worker does.
    fn packet(track: &mut PublishedTrack, ssrc: u32, seq: u64, at: Instant, key: bool) -> Received {
        if !track.layers.iter().any(|l| l.ssrc == ssrc) {
            let rid = ["q", "h", "f"][ssrc as usize - 1];
            track.add_layer(ssrc, Some(Rid::from(rid)), at, seq);
        }
        track
            .receive(arrival(ssrc, seq, 1000, key, None), at)
            .expect("the layer was just added")
    }

    #[test]
    fn layers_start_and_stop_with_their_packets() {
        let t0 = Instant::now();
        let mut track = video();
        assert!(packet(&mut track, 1, 1, t0, true).layers_changed);
        assert_eq!(track.best_active(), Some(0));
        assert!(packet(&mut track, 3, 1, t0, true).layers_changed);
        assert_eq!(track.best_active(), Some(2));
        assert!(!packet(&mut track, 1, 2, t0, false).layers_changed);
        // f falls silent: the next packet of q notices.
        let later = t0 + LAYER_IDLE + Duration::from_millis(1);
        assert!(packet(&mut track, 1, 3, later, false).layers_changed);
        assert_eq!(track.best_active(), Some(0));
        assert!(track
            .receive(arrival(9, 1, 100, false, None), later)
            .is_none());
    }

    #[test]
    fn a_layers_bitrate_is_measured_over_a_window() {
        let t0 = Instant::now();
        let mut track = video();
        // 101 packets of 1,000 bytes in one second: 808 kbit/s.
        for i in 0..=100u64 {
            packet(&mut track, 2, i, t0 + Duration::from_millis(i * 10), false);
        }
        assert_eq!(track.active_steps(), vec![(Step::spatial(1), 808_000)]);
    }

    #[test]
    fn temporal_steps_above_the_lowest_layer_need_enough_frames() {
        let t0 = Instant::now();
        let mut track = video();
        // q and h at 20 fps in three temporal layers: T0 5 fps, with T1 10, with T2 20.
        for frame in 0..=20u64 {
            let at = t0 + Duration::from_millis(frame * 50);
            let id = [0, 2, 1, 2][frame as usize % 4];
            for ssrc in [1, 2] {
                if !track.layers.iter().any(|l| l.ssrc == ssrc) {
                    let rid = ["q", "h"][ssrc as usize - 1];
                    track.add_layer(ssrc, Some(Rid::from(rid)), at, frame);
                }
                let arrival = Arrival {
                    temporal: Some(Temporal {
                        id,
                        frame_start: true,
                    }),
                    ..arrival(ssrc, frame, 1000, frame == 0, None)
                };
                track.receive(arrival, at);
            }
        }
        let steps: Vec<(Quality, u8)> = track
            .active_steps()
            .iter()
            .map(|(s, _)| (s.quality, s.temporal))
            .collect();
        // h at 5 or 10 fps is no step: q in motion is better.
        assert_eq!(steps, vec![(0, 0), (0, 1), (0, 2), (1, 2)]);
        let asked = |fps| TrackSettings {
            fps,
            ..Default::default()
        };
        assert_eq!(track.max_temporal_for(&asked(10)), Some(1));
        assert_eq!(track.max_temporal_for(&asked(0)), None);
    }

    #[test]
    fn keyframe_requests_go_to_the_wanted_layers_throttled_until_answered() {
        let t0 = Instant::now();
        let mut track = video();
        let all = u8::MAX;
        let ms = |n| Duration::from_millis(n);
        // Before any packet: the stream without a rid.
        assert_eq!(track.keyframe_requests(t0, all), vec![None]);
        assert!(track.keyframe_requests(t0 + ms(10), all).is_empty());
        packet(&mut track, 1, 1, t0, false);
        packet(&mut track, 3, 1, t0, false);
        let rids = |r: Vec<Option<Rid>>| {
            r.into_iter()
                .flatten()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(rids(track.keyframe_requests(t0, bit(2))), vec!["f"]);
        // f waits for its answer; q was not asked yet.
        assert_eq!(rids(track.keyframe_requests(t0 + ms(400), all)), vec!["q"]);
        assert_eq!(
            rids(track.keyframe_requests(t0 + ms(500), bit(2))),
            vec!["f"]
        );
        // Answered: the next one may follow after the short interval.
        let t1 = t0 + ms(520);
        packet(&mut track, 3, 2, t1, true);
        assert!(track.keyframe_requests(t1 + ms(50), bit(2)).is_empty());
        assert_eq!(
            rids(track.keyframe_requests(t1 + ms(100), bit(2))),
            vec!["f"]
        );
    }

    #[test]
    fn an_svc_streams_layers_are_its_spatial_layers_each_costing_those_below_too() {
        let t0 = Instant::now();
        let mut track = video();
        track.add_layer(7, None, t0, 0);
        let mut seq = 0;
        // 21 pictures in one second: 200 bytes of layer 0, 400 of layer 1, 1,000 of layer 2.
        for picture in 0..=20u64 {
            let at = t0 + Duration::from_millis(picture * 50);
            for (sid, bytes) in [(0, 200), (1, 400), (2, 1000)] {
                seq += 1;
                let key = picture == 0 && sid == 0;
                let received = track
                    .receive(arrival(7, seq, bytes, key, Some(sid)), at)
                    .unwrap();
                assert_eq!(received.quality, sid);
            }
        }
        assert!(track.is_svc());
        assert_eq!(track.best_active(), Some(2));
        let steps: Vec<_> = track.active_steps();
        assert_eq!(
            steps,
            vec![
                (Step::spatial(0), 33_600),
                (Step::spatial(1), 100_800),
                (Step::spatial(2), 268_800)
            ]
        );
        // A keyframe of any of them is one of the stream.
        assert_eq!(track.keyframe_requests(t0, bit(1)), vec![None]);
        // Layer 2 stops: the others go on.
        let later = t0 + Duration::from_millis(1000) + LAYER_IDLE;
        let received = track
            .receive(arrival(7, seq + 1, 200, false, Some(0)), later)
            .unwrap();
        assert!(received.layers_changed);
        assert_eq!(track.best_active(), Some(0), "layer 1 fell silent too");
    }
}
