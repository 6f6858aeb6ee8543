//! The worker's side of taps: handing forwarded packets to in-process consumers.

use std::sync::Arc;

use str0m::format::PayloadParams;
use str0m::rtp::RtpPacket;

use crate::api::{SfuError, TrackKind};
use crate::down_track::{LayerChoice, PacketLayer, Verdict};
use crate::ids::TrackId;
use crate::media::KeyframeWant;
use crate::rewrite::Rewriter;
use crate::tap::{
    SenderClock, Tap, TapCodec, TapEvent, TapPacket, TapScope, TapSender, TapTrack, TappedTrack,
};
use crate::worker::Worker;

impl Worker {
    pub(crate) fn add_tap(
        &mut self,
        id: u64,
        room: String,
        scope: TapScope,
        sender: TapSender,
    ) -> Result<(), SfuError> {
        let members = self.rooms.get(&room).cloned().unwrap_or_default();
        let mut video = Vec::new();
        let mut found = false;
        for &publisher in &members {
            let Some(part) = self.parts[publisher].as_ref() else {
                continue;
            };
            for (index, track) in part.tracks.iter().enumerate() {
                let Some(track) = track else { continue };
                let wanted = match &scope {
                    TapScope::Room => true,
                    TapScope::Track(sid) => *sid == track.sid,
                };
                if wanted {
                    found = true;
                    if track.kind == TrackKind::Video {
                        video.push(TrackId { publisher, index });
                    }
                }
            }
        }
        if let TapScope::Track(sid) = &scope {
            if !found {
                return Err(SfuError::UnknownTrack(sid.clone()));
            }
        }
        // A recording starts on a keyframe: ask for one now rather than wait for the next.
        self.keyframe_queue
            .extend(video.iter().copied().map(KeyframeWant::all));
        self.taps.push(Tap {
            id,
            room,
            scope,
            sender,
            tracks: Vec::new(),
            next_track: 1,
        });
        self.flush_keyframe_requests();
        // A recording takes the best layer: its publisher must keep sending it.
        for id in video {
            self.dynacast(id);
        }
        Ok(())
    }

    pub(crate) fn tap_keyframe(&mut self, tap: u64, track: u32) {
        let source = self
            .taps
            .iter()
            .find(|t| t.id == tap)
            .and_then(|t| t.tracks.iter().find(|t| t.id == track))
            .map(|t| KeyframeWant {
                track: t.source,
                layers: t.layer.wanted(),
            });
        if let Some(want) = source {
            self.keyframe_queue.push(want);
            self.flush_keyframe_requests();
        }
    }

    /// Track `id` is gone: every tap holding it hears so.
    pub(crate) fn tap_track_ended(&mut self, id: TrackId) {
        for tap in &mut self.taps {
            tap.tracks.retain(|t| {
                if t.source != id {
                    return true;
                }
                tap.sender.control(TapEvent::TrackEnded { track: t.id });
                false
            });
        }
    }

    /// Hands a packet of track `id` (of layer `quality`) to the taps of its room that want
    /// it, each following the best layer the publisher sends.
    pub(crate) fn tap_packet(
        &mut self,
        id: TrackId,
        packet: &RtpPacket,
        params: PayloadParams,
        layer: &PacketLayer,
    ) {
        // Consumers that went away leave their taps behind; forget them here.
        self.taps.retain(|t| !t.sender.is_closed());
        let Some(part) = self.parts[id.publisher].as_ref() else {
            return;
        };
        let Some(track) = part.tracks.get(id.index).and_then(Option::as_ref) else {
            return;
        };
        let best = track.best_active();
        let ssrc = *packet.header.ssrc;
        let clock_rate = params.spec().clock_rate.get();
        // Recordings get RED audio as the codec it wraps (`red.rs`).
        let pt = packet.header.payload_type;
        let payload = if params.pt() != pt && params.red() == Some(pt) {
            match crate::red::primary_block(&packet.payload) {
                Some(primary) => Arc::from(&packet.payload[primary..]),
                None => return,
            }
        } else {
            packet.payload.clone()
        };
        let mut keyframes = Vec::new();
        for tap in &mut self.taps {
            if tap.room != part.room || !tap.wants(&track.sid) {
                continue;
            }
            let position = match tap.tracks.iter().position(|t| t.source == id) {
                Some(position) => position,
                None => {
                    let tap_track = tap.next_track;
                    tap.next_track += 1;
                    let spec = params.spec();
                    let started = TapTrack {
                        id: tap_track,
                        track_sid: track.sid.clone(),
                        participant: part.key.clone(),
                        identity: part.identity.clone(),
                        kind: track.kind,
                        codec: TapCodec {
                            name: spec.codec.to_string().to_ascii_lowercase(),
                            clock_rate,
                            channels: spec.channels,
                            profile_level_id: spec.format.profile_level_id,
                        },
                    };
                    tap.sender.control(TapEvent::TrackStarted(started));
                    if track.kind == TrackKind::Video {
                        keyframes.push(KeyframeWant::all(id));
                    }
                    tap.tracks.push(TappedTrack {
                        source: id,
                        id: tap_track,
                        layer: LayerChoice::default(),
                        rewriter: Rewriter::default(),
                    });
                    tap.tracks.len() - 1
                }
            };
            let tapped = &mut tap.tracks[position];
            tapped.layer.set_target(best);
            match tapped.layer.admit(layer) {
                Verdict::Forward => {}
                Verdict::Drop => continue,
                Verdict::Skip => {
                    tapped.rewriter.skip(ssrc, *packet.seq_no);
                    continue;
                }
                Verdict::WantKeyframe => {
                    keyframes.push(KeyframeWant::layer(id, layer.quality));
                    continue;
                }
            }
            let Some((seq, timestamp)) = tapped.rewriter.rewrite(
                ssrc,
                *packet.seq_no,
                packet.header.timestamp,
                packet.timestamp,
                clock_rate,
            ) else {
                continue;
            };
            let sender_clock = packet
                .last_sender_info
                .filter(|info| *info.ssrc == ssrc && tapped.rewriter.source() == Some(ssrc))
                .map(|info| SenderClock {
                    ntp: info.ntp_time,
                    // The SR's RTP time is in the clock rate of the stream, wrapped to 32 bits
                    // as on the wire.
                    rtp: tapped.rewriter.map_timestamp(info.rtp_time.numer() as u32),
                });
            tap.sender.packet(
                tapped.id,
                TapPacket {
                    seq,
                    timestamp,
                    marker: tapped.layer.marker(layer, packet.header.marker),
                    payload: payload.clone(),
                    arrival: packet.timestamp,
                    sender_clock,
                },
            );
        }
        self.keyframe_queue.extend(keyframes);
    }
}
