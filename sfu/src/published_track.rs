//! A track a participant publishes, as the worker receives it: its layers (simulcast
//! encodings, or the one stream), what each is sending, and its keyframe state. Which layer
//! each subscriber gets is the subscriber's business (`down_track.rs`, `allocator.rs`).

use std::time::{Duration, Instant};

use str0m::format::{Codec, PayloadParams};
use str0m::media::{Mid, Pt, Rid};

use crate::api::{ExpectedTrack, LayerSize, TrackKind, TrackSettings};
use crate::ids::DownTrackId;

/// A layer that sent nothing for this long is considered stopped (the publisher's
/// bandwidth estimate dropped it, or the camera went away).
pub(crate) const LAYER_IDLE: Duration = Duration::from_millis(1500);
/// A keyframe request the publisher has not answered yet blocks further ones for this long
/// (its keyframe may still be on the way; after that it was lost, ask again).
const KEYFRAME_THROTTLE: Duration = Duration::from_millis(500);
/// Once answered, the next request may follow this soon: subscribers joining one after the
/// other then wait for at most this plus one frame, not for the full throttle.
const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(100);
/// A layer's bitrate is measured over windows of this length.
const BITRATE_WINDOW: Duration = Duration::from_secs(1);

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

/// Bits per second of a stream, measured over windows of `BITRATE_WINDOW`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BitrateMeter {
    window_start: Instant,
    window_bytes: u64,
    /// Over the last full window; 0 until one has passed.
    pub bitrate: u64,
    last_packet: Option<Instant>,
}

impl BitrateMeter {
    fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            window_bytes: 0,
            bitrate: 0,
            last_packet: None,
        }
    }

    fn record(&mut self, bytes: usize, now: Instant) {
        self.last_packet = Some(now);
        self.window_bytes += bytes as u64;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= BITRATE_WINDOW {
            self.bitrate = self.window_bytes * 8 * 1_000_000 / elapsed.as_micros().max(1) as u64;
            self.window_start = now;
            self.window_bytes = 0;
        }
    }

    fn active(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|last| now.saturating_duration_since(last) < LAYER_IDLE)
    }
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
    pub fn record(&mut self, seq: u64, bytes: usize, now: Instant) {
        self.received += 1;
        self.max_seq = self.max_seq.max(seq);
        self.first_seq = self.first_seq.min(seq);
        self.meter.record(bytes, now);
    }

    /// Packets never received, from sequence gaps (retransmissions fill gaps in).
    pub fn lost(&self) -> u64 {
        (self.max_seq - self.first_seq + 1).saturating_sub(self.received)
    }

    fn active(&self, now: Instant) -> bool {
        self.meter.active(now)
    }
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
    /// packets each belong to one of them (`vp9_svc.rs`). Empty for simulcast and plain
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
    /// How loud it is (audio tracks; `speakers.rs`).
    pub audio_level: Option<crate::speakers::AudioLevel>,
    /// What its publisher was told to send (`dynacast.rs`).
    pub dynacast: crate::dynacast::Dynacast,
    /// Keyframe requests before any layer has sent (then each layer has its own).
    keyframes: KeyframeThrottle,
}

impl PublishedTrack {
    /// The track the client announced as `expected`, bound to m-line `mid`.
    pub fn new(expected: ExpectedTrack, kind: TrackKind, mid: Mid) -> Self {
        Self {
            sid: expected.sid,
            cid: expected.cid,
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
            audio_level: (kind == TrackKind::Audio).then(Default::default),
            dynacast: Default::default(),
            keyframes: KeyframeThrottle::default(),
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

    /// Adds the layer a new SSRC carries.
    pub fn add_layer(&mut self, ssrc: u32, rid: Option<Rid>, now: Instant, seq: u64) {
        self.layers.push(Layer::new(ssrc, rid, now, seq));
    }

    /// Takes in one packet of layer `ssrc`; `spatial` is its spatial layer in an SVC
    /// stream. `None` for an SSRC that is not one of ours.
    pub fn receive(
        &mut self,
        ssrc: u32,
        seq: u64,
        bytes: usize,
        now: Instant,
        keyframe: bool,
        spatial: Option<u8>,
    ) -> Option<Received> {
        let layer = self.layers.iter_mut().find(|l| l.ssrc == ssrc)?;
        layer.record(seq, bytes, now);
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
            self.spatial[sid].record(bytes, now);
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

    /// The layers being sent now, lowest quality first: (quality, bits per second).
    /// An SVC stream's layer costs what it and every layer below it send together.
    pub fn active_layers(&self) -> impl Iterator<Item = (Quality, u64)> + '_ {
        let mut layers: Vec<(Quality, u64)> = if self.spatial.is_empty() {
            self.layers
                .iter()
                .filter(|l| self.active & bit(l.quality) != 0)
                .map(|l| (l.quality, l.meter.bitrate))
                .collect()
        } else {
            let mut below = 0;
            (0..self.spatial.len())
                .map(|sid| {
                    below += self.spatial[sid].bitrate;
                    (sid as Quality, below)
                })
                .filter(|(quality, _)| self.active & bit(*quality) != 0)
                .collect()
        };
        layers.sort_unstable();
        layers.into_iter()
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

    /// A packet of layer `ssrc` (1 = q, 2 = h, 3 = f), added at its first packet as the
    /// worker does.
    fn packet(track: &mut PublishedTrack, ssrc: u32, seq: u64, at: Instant, key: bool) -> Received {
        if !track.layers.iter().any(|l| l.ssrc == ssrc) {
            let rid = ["q", "h", "f"][ssrc as usize - 1];
            track.add_layer(ssrc, Some(Rid::from(rid)), at, seq);
        }
        track
            .receive(ssrc, seq, 1000, at, key, None)
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
        assert!(track.receive(9, 1, 100, later, false, None).is_none());
    }

    #[test]
    fn a_layers_bitrate_is_measured_over_a_window() {
        let t0 = Instant::now();
        let mut track = video();
        // 101 packets of 1,000 bytes in one second: 808 kbit/s.
        for i in 0..=100u64 {
            packet(&mut track, 2, i, t0 + Duration::from_millis(i * 10), false);
        }
        let layers: Vec<_> = track.active_layers().collect();
        assert_eq!(layers, vec![(1, 808_000)]);
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
                let received = track.receive(7, seq, bytes, at, key, Some(sid)).unwrap();
                assert_eq!(received.quality, sid);
            }
        }
        assert!(track.is_svc());
        assert_eq!(track.best_active(), Some(2));
        let layers: Vec<_> = track.active_layers().collect();
        assert_eq!(layers, vec![(0, 33_600), (1, 100_800), (2, 268_800)]);
        // A keyframe of any of them is one of the stream.
        assert_eq!(track.keyframe_requests(t0, bit(1)), vec![None]);
        // Layer 2 stops: the others go on.
        let later = t0 + Duration::from_millis(1000) + LAYER_IDLE;
        let received = track
            .receive(7, seq + 1, 200, later, false, Some(0))
            .unwrap();
        assert!(received.layers_changed);
        assert_eq!(track.best_active(), Some(0), "layer 1 fell silent too");
    }
}
