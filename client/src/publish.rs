//! The publishing side of a participant in the media loop: the publisher PC's offer and
//! answer, and the synthetic sources that write RTP into it on schedule.

use std::cmp::Reverse;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use str0m::change::SdpAnswer;
use str0m::channel::{ChannelConfig, Reliability};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::rtp::RtpWrite;
use tokio::sync::oneshot;

use crate::driver::{Loop, Timer};
use crate::media::{restamp, AudioEncoder, Frame, VideoEncoder};
use crate::pacer::Pacer;
use crate::state::{rtc_error, Part, Role};
use crate::{ClientError, TrackSpec};

enum Encoder {
    // Boxed: a video encoder holds its RNG state and is ten times an audio one.
    Video(Box<VideoEncoder>),
    Audio(AudioEncoder),
}

/// One synthetic RTP stream: a track's only stream or one simulcast layer.
pub(crate) struct Source {
    mid: Mid,
    rid: Option<Rid>,
    encoder: Encoder,
    pt: Option<Pt>,
    /// Offset of the first frame after connecting, so publishers do not send in lockstep.
    phase: Duration,
    next_at: Instant,
    /// Video only, unless pacing is off.
    pacer: Option<Pacer>,
    /// The pace timer armed, if any.
    pace_armed: Option<Instant>,
}

impl Source {
    fn interval(&self) -> Duration {
        match &self.encoder {
            Encoder::Video(v) => v.frame_interval(),
            Encoder::Audio(_) => AudioEncoder::FRAME,
        }
    }

    /// The server asked for a keyframe of `mid` (and `rid`): the next frame is one.
    pub fn keyframe_requested(&mut self, mid: Mid, rid: Option<Rid>) {
        if self.mid == mid && self.rid == rid {
            if let Encoder::Video(v) = &mut self.encoder {
                v.request_keyframe();
            }
        }
    }

    fn is_video(&self) -> bool {
        matches!(self.encoder, Encoder::Video(_))
    }
}

impl Loop {
    /// Creates the publisher PC with the tracks' m-lines (and livekit-client's data
    /// channels) and returns its offer.
    pub fn publisher_offer(
        &mut self,
        id: u64,
        tracks: Vec<TrackSpec>,
        data_channels: bool,
    ) -> Result<String, ClientError> {
        let index = self.part_index(id)?;
        let Some(Some(part)) = self.parts.get(index) else {
            return Err(ClientError::DriverGone);
        };
        if part.publisher.is_some() {
            return Err(ClientError::Rtc(
                "the publisher PC was already offered".into(),
            ));
        }
        let (bind, transport) = (part.bind, part.transport);
        let peer = self.new_peer(index, Role::Publisher, bind, transport)?;
        let mut sources = Vec::new();
        let Some(Some(slot)) = self.peers.get_mut(peer) else {
            return Err(ClientError::DriverGone);
        };
        let mut api = slot.rtc.sdp_api();
        for spec in tracks {
            let mut rng = StdRng::seed_from_u64(spec.seed());
            match spec {
                TrackSpec::Video { cid, config, seed } => {
                    let layers = config.layers();
                    let simulcast = config.simulcast.then(|| {
                        let mut s = Simulcast::new();
                        for (rid, ..) in &layers {
                            s.add_send_layer(SimulcastLayer::new(rid.unwrap_or_default()));
                        }
                        s
                    });
                    let stream = format!("{cid}-stream");
                    let mid = api.add_media(
                        MediaKind::Video,
                        Direction::SendOnly,
                        Some(stream),
                        Some(cid),
                        simulcast,
                    );
                    for (i, (rid, bitrate, width, height)) in layers.into_iter().enumerate() {
                        let encoder = VideoEncoder::new(
                            bitrate,
                            config.fps,
                            config.keyframe_interval,
                            (width, height),
                            seed.wrapping_add(i as u64),
                        );
                        let phase = encoder.frame_interval().mul_f64(rng.random_range(0.0..1.0));
                        sources.push(Source {
                            mid,
                            rid: rid.map(Rid::from),
                            encoder: Encoder::Video(Box::new(encoder)),
                            pt: None,
                            phase,
                            next_at: Instant::now(),
                            pacer: Pacer::new(bitrate, config.pacing_factor),
                            pace_armed: None,
                        });
                    }
                }
                TrackSpec::Audio { cid, config, seed } => {
                    let stream = format!("{cid}-stream");
                    let mid = api.add_media(
                        MediaKind::Audio,
                        Direction::SendOnly,
                        Some(stream),
                        Some(cid),
                        None,
                    );
                    let phase = AudioEncoder::FRAME.mul_f64(rng.random_range(0.0..1.0));
                    sources.push(Source {
                        mid,
                        rid: None,
                        encoder: Encoder::Audio(AudioEncoder::new(config.bitrate_bps, seed)),
                        pt: None,
                        phase,
                        next_at: Instant::now(),
                        // An audio frame is one small packet: browsers do not pace it either.
                        pacer: None,
                        pace_armed: None,
                    });
                }
            }
        }
        if data_channels {
            // As livekit-client opens them: ordered, and unordered without retransmits.
            api.add_channel("_reliable".into());
            api.add_channel_with_config(ChannelConfig {
                label: "_lossy".into(),
                ordered: false,
                reliability: Reliability::MaxRetransmits { retransmits: 0 },
                ..Default::default()
            });
        }
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| ClientError::Rtc("nothing to offer on the publisher PC".into()))?;
        let Some(Some(part)) = self.parts.get_mut(index) else {
            return Err(ClientError::DriverGone);
        };
        part.publisher = Some(peer);
        part.sources = sources;
        part.pending = Some(pending);
        part.wanted_channels = if data_channels { 2 } else { 0 };
        Ok(offer.to_sdp_string())
    }

    /// Applies the server's answer; `ready` fires once the PC is connected and its data
    /// channels are open (what livekit-client's `connect()` waits for).
    pub fn publisher_answer(
        &mut self,
        id: u64,
        sdp: &str,
        ready: oneshot::Sender<Result<(), ClientError>>,
    ) {
        match self.apply_publisher_answer(id, sdp) {
            Ok((index, peer)) => {
                if let Some(Some(part)) = self.parts.get_mut(index) {
                    part.ready = Some(ready);
                }
                self.drive(peer);
                self.check_ready(index);
            }
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        }
    }

    fn apply_publisher_answer(
        &mut self,
        id: u64,
        sdp: &str,
    ) -> Result<(usize, usize), ClientError> {
        let index = self.part_index(id)?;
        let part = self
            .parts
            .get_mut(index)
            .and_then(Option::as_mut)
            .ok_or(ClientError::DriverGone)?;
        crate::tcp::check_offers_tcp(part.transport, sdp)?;
        let (Some(peer), Some(pending)) = (part.publisher, part.pending.take()) else {
            return Err(ClientError::Rtc("no publisher offer is pending".into()));
        };
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| rtc_error("bad answer", e))?;
        let slot = self
            .peers
            .get_mut(peer)
            .and_then(Option::as_mut)
            .ok_or(ClientError::DriverGone)?;
        slot.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| rtc_error("answer refused", e))?;
        Ok((index, peer))
    }

    /// The publisher PC is up: every source sends its first frame after its phase.
    pub(crate) fn start_sources(&mut self, index: usize) {
        let now = Instant::now();
        let Some(Some(part)) = self.parts.get_mut(index) else {
            return;
        };
        for (i, source) in part.sources.iter_mut().enumerate() {
            source.next_at = now + source.phase;
            let timer = Timer::Source {
                part: index,
                source: i,
                gen: part.gen,
            };
            self.timers.push(Reverse((source.next_at, timer)));
        }
    }

    /// A source's frame is due: packetize it into its stream and arm the next one.
    pub fn send_frame(&mut self, index: usize, source: usize, gen: u64, at: Instant, now: Instant) {
        let Some(part) = part_of_gen(&mut self.parts, index, gen) else {
            return;
        };
        let Some(src) = part.sources.get_mut(source) else {
            return;
        };
        if src.next_at != at {
            return;
        }
        // Keep the cadence; frames the loop was too late for are skipped, not bunched up.
        let interval = src.interval();
        let mut next = at + interval;
        while next <= now {
            next += interval;
        }
        src.next_at = next;
        self.timers.push(Reverse((
            next,
            Timer::Source {
                part: index,
                source,
                gen,
            },
        )));
        let Some(peer_index) = part.publisher else {
            return;
        };
        let Some(Some(peer)) = self.peers.get_mut(peer_index) else {
            return;
        };
        if !peer.connected {
            return;
        }
        let codec = if src.is_video() {
            Codec::Vp8
        } else {
            Codec::Opus
        };
        let pt = match src.pt {
            Some(pt) => pt,
            None => {
                let Some(pt) = peer
                    .rtc
                    .codec_config()
                    .iter()
                    .find(|p| p.spec().codec == codec)
                    .map(|p| p.pt())
                else {
                    return;
                };
                src.pt = Some(pt);
                pt
            }
        };
        let frame = match &mut src.encoder {
            Encoder::Video(v) => v.next_frame(now),
            Encoder::Audio(a) => a.next_frame(now),
        };
        if let Some(pacer) = src.pacer.as_mut() {
            let Frame {
                rtp_time,
                first_seq,
                packets,
            } = frame;
            for (i, packet) in packets.into_iter().enumerate() {
                pacer.push(first_seq + i as u64, rtp_time, packet);
            }
            self.pace(index, source, gen, now, now);
            return;
        }
        let nackable = src.is_video();
        let mut api = peer.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(src.mid, src.rid) else {
            return;
        };
        let mut bytes = 0;
        let count = frame.packets.len() as u64;
        for (i, packet) in frame.packets.into_iter().enumerate() {
            bytes += packet.payload.len() as u64;
            let seq = frame.first_seq + i as u64;
            stream.write_rtp(
                RtpWrite::new(pt, seq.into(), frame.rtp_time, now, packet.payload)
                    .marker(packet.marker)
                    .nackable(nackable),
            );
        }
        self.count_sent(index, count, bytes);
        self.drive(peer_index);
    }

    /// Sends what a source's pacer releases by `now` and arms its next turn. Called when a
    /// frame is queued (`at == now`) and by the source's pace timer.
    pub(crate) fn pace(
        &mut self,
        index: usize,
        source: usize,
        gen: u64,
        at: Instant,
        now: Instant,
    ) {
        let Some(part) = part_of_gen(&mut self.parts, index, gen) else {
            return;
        };
        let Some(src) = part.sources.get_mut(source) else {
            return;
        };
        if at != now && src.pace_armed != Some(at) {
            return; // a timer superseded by an earlier one
        }
        if src.pace_armed == Some(at) {
            src.pace_armed = None;
        }
        let (Some(pacer), Some(pt)) = (src.pacer.as_mut(), src.pt) else {
            return;
        };
        let released = pacer.release(now);
        let next = pacer.next_due();
        if let Some(next) = next {
            if src.pace_armed.is_none_or(|armed| next < armed) {
                src.pace_armed = Some(next);
                self.timers.push(Reverse((
                    next,
                    Timer::Pace {
                        part: index,
                        source,
                        gen,
                    },
                )));
            }
        }
        if released.is_empty() {
            return;
        }
        let (mid, rid) = (src.mid, src.rid);
        let Some(peer_index) = part.publisher else {
            return;
        };
        let Some(Some(peer)) = self.peers.get_mut(peer_index) else {
            return;
        };
        let mut api = peer.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, rid) else {
            return;
        };
        let count = released.len() as u64;
        let mut bytes = 0;
        for mut queued in released {
            bytes += queued.packet.payload.len() as u64;
            restamp(&mut queued.packet.payload, now);
            stream.write_rtp(
                RtpWrite::new(
                    pt,
                    queued.seq.into(),
                    queued.rtp_time,
                    now,
                    queued.packet.payload,
                )
                .marker(queued.packet.marker)
                .nackable(true),
            );
        }
        self.count_sent(index, count, bytes);
        self.drive(peer_index);
    }

    fn count_sent(&mut self, index: usize, count: u64, bytes: u64) {
        if let Some(Some(part)) = self.parts.get_mut(index) {
            part.packets_sent += count;
            part.bytes_sent += bytes;
        }
        self.counters
            .packets_sent
            .fetch_add(count, Ordering::Relaxed);
        self.counters.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The participant at `index`, unless it left and the slot now holds another.
fn part_of_gen(parts: &mut [Option<Part>], index: usize, gen: u64) -> Option<&mut Part> {
    match parts.get_mut(index) {
        Some(Some(part)) if part.gen == gen => Some(part),
        _ => None,
    }
}
