//! The hot path: one RTP packet from a publisher, received by its track, then handed to
//! each down-track that wants its layer, rewritten and sent; and the retransmissions our
//! own send path answers NACKs with.

use std::sync::Arc;
use std::time::Instant;

use str0m::format::{Codec, PayloadParams};
use str0m::media::Pt;
use str0m::rtp::rtcp::Nack;
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::Input;
use tracing::debug;

use crate::api::PeerEvent;
use crate::bwe::micros_since;
use crate::codec::starts_keyframe;
use crate::down_track::{PacketLayer, PtOut, Verdict};
use crate::ids::{DownTrackId, TrackId};
use crate::layer_meter::Temporal;
use crate::media::KeyframeWant;
use crate::participant::Slot;
use crate::published_track::{bit, Arrival};
use crate::red;
use crate::rtp_out::{self, DescriptorOut, DropEvery, RtpOut, Stamp, StreamSend};
use crate::svc::dependency_descriptor::{self, DescriptorBytes};
use crate::svc::vp9 as vp9_svc;
use crate::vp8_ids;
use crate::worker::Worker;

/// One received packet as the fan-out needs it.
struct Incoming<'a> {
    packet: &'a RtpPacket,
    /// Its layer, for the down-tracks' choices.
    layer: PacketLayer,
    is_video: bool,
    params: PayloadParams,
    /// Redundant audio (`red.rs`), and where its primary block starts (`None`: cut short).
    red: Option<Option<usize>>,
    /// A VP8 packet's payload descriptor, read once for all down-tracks.
    vp8: Option<vp8_ids::Descriptor>,
    /// An AV1 packet's dependency descriptor, passed on to subscribers that negotiated it.
    descriptor: Option<&'a Arc<[u8]>>,
    now: Instant,
}

/// What the fan-out of one packet found.
#[derive(Default)]
struct FanOut {
    /// A down-track started or switched layers: the track's wanted layers changed.
    switched: bool,
    /// A down-track waits for a keyframe of this packet's layer.
    want_keyframe: bool,
}

impl Worker {
    /// One RTP packet from the publisher in `slot` to every down-track of its track.
    pub(crate) fn forward(&mut self, slot: Slot, packet: RtpPacket) {
        let ssrc = *packet.header.ssrc;
        let now = packet.timestamp;
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        part.stats.packets_in += 1;
        part.stats.bytes_in += packet.payload.len() as u64;
        self.metrics.rtp_in += 1;
        self.metrics.rtp_in_bytes += packet.payload.len() as u64;
        let Some(index) = self.track_of(slot, &packet) else {
            return;
        };
        let id = TrackId {
            publisher: slot,
            index,
        };
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        let Some(track) = part.tracks.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if !track.media_started {
            track.media_started = true;
            let sid = track.sid.clone();
            part.emit(PeerEvent::TrackMediaStarted { sid });
        }
        let Some(track) = part.tracks.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let pt = packet.header.payload_type;
        if track.codec_of(pt).is_none() {
            let params = part
                .publisher
                .rtc
                .codec_config()
                .find(|p| p.pt() == pt || p.red() == Some(pt))
                .copied();
            match params {
                Some(params) => track.payloads.push((pt, params)),
                None => return,
            }
        }
        let Some((params, codec)) = track.codec_of(pt) else {
            return;
        };
        let is_video = track.is_video();
        let descriptor = match codec {
            Codec::Av1 => packet
                .header
                .ext_vals
                .user_values
                .get::<DescriptorBytes>()
                .map(|DescriptorBytes(bytes)| bytes),
            _ => None,
        };
        let svc = match (codec, descriptor) {
            (Codec::Vp9, _) => vp9_svc::layer_of(&packet.payload),
            (Codec::Av1, Some(bytes)) => {
                dependency_descriptor::layer_of(bytes, &mut track.av1_templates, &packet.payload)
            }
            _ => None,
        };
        let keyframe = is_video
            && svc.map_or_else(
                || starts_keyframe(codec, &packet.payload),
                |layer| layer.starts_keyframe(),
            );
        let vp8 = match codec {
            Codec::Vp8 => vp8_ids::descriptor(&packet.payload),
            _ => None,
        };
        let temporal = match (svc, vp8) {
            (Some(layer), _) => Some(Temporal {
                id: layer.temporal,
                frame_start: layer.starts_frame,
            }),
            (None, Some(d)) => d.temporal.map(|id| Temporal {
                id,
                frame_start: d.starts_frame,
            }),
            _ => None,
        };
        let arrival = Arrival {
            ssrc,
            seq: *packet.seq_no,
            bytes: packet.payload.len(),
            keyframe,
            spatial: svc.map(|layer| layer.spatial),
            temporal,
        };
        let Some(received) = track.receive(arrival, now) else {
            return;
        };
        // Layer fields of a simulcast layer's own stream are not what places it.
        let svc = svc.filter(|_| track.is_svc());
        if let (Some(meter), Some(level)) = (
            track.audio_level.as_mut(),
            packet.header.ext_vals.audio_level,
        ) {
            meter.packet(level.unsigned_abs(), packet.header.timestamp);
        }
        if received.layers_changed {
            self.layers_changed(id);
        }
        let Some(track) = self.published(id) else {
            return;
        };
        if track.muted {
            return;
        }
        let incoming = Incoming {
            packet: &packet,
            layer: PacketLayer {
                ssrc,
                quality: received.quality,
                keyframe,
                needs_keyframe: is_video,
                svc,
                temporal,
            },
            is_video,
            params,
            red: (params.pt() != pt && params.red() == Some(pt))
                .then(|| red::primary_block(&packet.payload)),
            vp8,
            descriptor,
            now,
        };
        let taps = !self.taps.is_empty();
        if track.wanted & bit(received.quality) == 0 && !taps && svc.is_none() {
            // No down-track forwards this layer or waits to switch to it. (An SVC stream's
            // left-out layers still pass each down-track, which closes up its numbering.)
            return;
        }
        let outcome = self.fan_out(id, &incoming);
        if outcome.switched {
            self.refresh_wanted(id);
        }
        self.send_str0m_written();
        if taps {
            self.tap_packet(id, &packet, params, &incoming.layer);
        }
        if outcome.want_keyframe {
            // Asked again (throttled) until a keyframe comes: an earlier one may have been
            // sent before this down-track's m-line was ready.
            self.keyframe_queue
                .push(KeyframeWant::layer(id, incoming.layer.quality));
        }
    }

    /// The index of the track whose layer `packet` belongs to, learning a new SSRC's layer
    /// from str0m on its first packet.
    fn track_of(&mut self, slot: Slot, packet: &RtpPacket) -> Option<usize> {
        let ssrc = *packet.header.ssrc;
        let part = self.parts[slot].as_mut()?;
        if let Some(&(_, index)) = part.ssrc_tracks.iter().find(|(s, _)| *s == ssrc) {
            return Some(index);
        }
        let (mid, rid) = part
            .publisher
            .rtc
            .direct_api()
            .stream_rx(&packet.header.ssrc)
            .map(|s| (s.mid(), s.rid()))?;
        let index = part.track_index_by_mid(mid)?;
        part.ssrc_tracks.push((ssrc, index));
        if let Some(track) = part.tracks[index].as_mut() {
            track.add_layer(ssrc, rid, packet.timestamp, *packet.seq_no);
        }
        Some(index)
    }

    /// Hands the packet to every down-track of track `id` that takes it.
    fn fan_out(&mut self, id: TrackId, incoming: &Incoming) -> FanOut {
        let mut outcome = FanOut::default();
        let mut down_tracks = std::mem::take(&mut self.scratch);
        down_tracks.clear();
        if let Some(track) = self.published(id) {
            down_tracks.extend_from_slice(&track.down_tracks);
        }
        let packet = incoming.packet;
        let layer = &incoming.layer;
        let pt = packet.header.payload_type;
        let clock_rate = incoming.params.spec().clock_rate.get();
        // The send time estimators record, read once for every subscriber.
        let (epoch, mut now_us) = (self.epoch, None);
        for &DownTrackId {
            subscriber: sub,
            index,
        } in &down_tracks
        {
            let Some(subscriber) = self.parts[sub].as_mut() else {
                continue;
            };
            let Some(down) = subscriber
                .down_tracks
                .get_mut(index)
                .and_then(Option::as_mut)
            else {
                continue;
            };
            let (Some(_), Some(ssrc_out)) = (down.open_mid(), down.ssrc) else {
                continue;
            };
            let peer = subscriber
                .subscriber
                .as_ref()
                .unwrap_or(&subscriber.publisher);
            if peer.direct.is_none() && !peer.rtc.is_connected() {
                // Nothing can leave before DTLS is up. str0m would queue the packet and send
                // it once connected, after the packets our own path sends from that moment,
                // and a receiver drops a packet that late.
                continue;
            }
            let before = down.layer.current();
            let verdict = down.layer.admit(layer);
            outcome.switched |= down.layer.current() != before;
            match verdict {
                Verdict::Forward => {}
                Verdict::Skip => {
                    // Left out of the stream this subscriber follows: close up after it.
                    down.rewriter.skip(layer.ssrc, *packet.seq_no);
                    if let Some(d) = &incoming.vp8 {
                        down.vp8.skip(layer.ssrc, d);
                    }
                    continue;
                }
                Verdict::Drop | Verdict::WantKeyframe => {
                    outcome.want_keyframe |= verdict == Verdict::WantKeyframe;
                    if layer.svc.is_some() {
                        // A layer of the stream this subscriber follows: close up after it.
                        down.rewriter.skip(layer.ssrc, *packet.seq_no);
                    }
                    continue;
                }
            }
            let marker = down.layer.marker(layer, packet.header.marker);
            let Some(PtOut {
                to: pt_out,
                de_red,
                nack,
                ..
            }) = down_track_pt(
                &mut down.pt_map,
                pt,
                incoming.params,
                incoming.red.is_some(),
                &subscriber
                    .subscriber
                    .as_ref()
                    .unwrap_or(&subscriber.publisher)
                    .rtc,
            )
            else {
                continue;
            };
            let payload: &[u8] = match (de_red, incoming.red) {
                (false, _) => &packet.payload,
                (true, Some(Some(primary))) => &packet.payload[primary..],
                // Not RED after all, or cut short: nothing to send.
                (true, _) => continue,
            };
            let Some((seq, ts)) = down.rewriter.rewrite(
                layer.ssrc,
                *packet.seq_no,
                packet.header.timestamp,
                incoming.now,
                clock_rate,
            ) else {
                continue;
            };
            let vp8 = incoming
                .vp8
                .as_ref()
                .and_then(|d| down.vp8.rewrite(layer.ssrc, d));
            let now = incoming.now;
            let peer = crate::participant::sender_mut(
                &mut subscriber.subscriber,
                &mut subscriber.publisher,
            );
            match (&peer.direct, peer.media_to) {
                (Some(direct), Some(to)) if !down.send.str0m_due(now) => {
                    let (transport, stamp) = crate::congestion::stamp_for(
                        subscriber.congestion.as_deref_mut(),
                        subscriber.remb.as_deref(),
                        now,
                    );
                    let rtp = RtpOut {
                        ssrc: *ssrc_out,
                        pt: *pt_out,
                        marker,
                        seq,
                        timestamp: ts,
                        payload,
                        stamp,
                        padding: 0,
                        vp8,
                        descriptor: peer
                            .descriptor_id
                            .zip(incoming.descriptor)
                            .map(|(id, bytes)| DescriptorOut { id, bytes }),
                    };
                    let datagram = direct.packet(self.sink.buffer(), &rtp);
                    if let (Some(congestion), Some(seq)) =
                        (subscriber.congestion.as_mut(), transport)
                    {
                        let sent_us = *now_us.get_or_insert_with(|| micros_since(epoch, now));
                        congestion
                            .estimator
                            .on_sent(seq, sent_us, datagram.len(), false);
                    }
                    self.metrics.datagram_out(&datagram);
                    let withheld = incoming.is_video
                        && self.test_drop.as_mut().is_some_and(DropEvery::this_one);
                    if !withheld {
                        self.sink.send(datagram, to);
                    }
                    if incoming.layer.keyframe {
                        down.send.keyframe_at(seq, now);
                    }
                    down.send
                        .sent(&rtp, &packet.payload, now, incoming.is_video || nack);
                }
                _ => {
                    let mut api = peer.rtc.direct_api();
                    let Some(stream) = api.stream_tx(&ssrc_out) else {
                        continue;
                    };
                    let payload = match vp8 {
                        // This subscriber's own copy, with its picture numbers.
                        Some(patch) => {
                            let mut copy = packet.payload.to_vec();
                            patch.apply(&mut copy);
                            copy.into()
                        }
                        None if de_red => payload.to_vec().into(),
                        None => packet.payload.clone(),
                    };
                    let mut write = RtpWrite::new(pt_out, seq.into(), ts, now, payload)
                        .marker(marker)
                        .nackable(incoming.is_video || nack);
                    if let (Some(bytes), Some(_)) = (incoming.descriptor, peer.descriptor_id) {
                        let mut values = ExtensionValues::default();
                        values.user_values.set(DescriptorBytes(Arc::clone(bytes)));
                        write = write.ext_vals(values);
                    }
                    stream.write_rtp(write);
                    down.send.str0m_written = Some(now);
                    // Sent now, not at the turn's end, so it leaves in order with the
                    // packets our own path sends right away.
                    self.str0m_now.push(sub);
                }
            }
            down.frame_end = marker;
            down.last_pt = Some(*pt_out);
            subscriber.stats.packets_out += 1;
            subscriber.stats.bytes_out += payload.len() as u64;
            if let Some(remb) = subscriber.remb.as_deref_mut() {
                remb.on_media_sent(now, payload.len(), incoming.is_video);
            }
            self.metrics.forwarded += 1;
            self.metrics.forwarded_bytes += payload.len() as u64;
            if !subscriber.first_media_sent {
                subscriber.first_media_sent = true;
                subscriber.emit(PeerEvent::FirstMediaSent);
            }
        }
        self.scratch = down_tracks;
        outcome
    }

    /// Has the subscriber peers str0m was given a packet for send it now. str0m sends a
    /// written packet only when woken (its pacer looks at queues then), which costs a pass
    /// over all of the peer's streams; our own send path makes that rare (`rtp_out`).
    fn send_str0m_written(&mut self) {
        if self.str0m_now.is_empty() {
            return;
        }
        let now = self.now;
        let subscribers = std::mem::take(&mut self.str0m_now);
        for &sub in &subscribers {
            let Some(part) = self.parts[sub].as_mut() else {
                continue;
            };
            if let Err(e) = part.sender_mut().rtc.handle_input(Input::Timeout(now)) {
                debug!(participant = %part.key, "timeout input failed: {e}");
            }
            self.drain(sub, crate::api::PeerRole::Subscriber);
        }
        self.str0m_now = subscribers;
        self.str0m_now.clear();
    }

    /// Answers a subscriber's NACK from what our own send path sent (str0m answers for the
    /// packets it sent itself), within the stream's retransmission allowance.
    pub(crate) fn answer_nack(&mut self, slot: Slot, nack: &Nack) {
        let now = self.now;
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        let peer = part.subscriber.as_ref().unwrap_or(&part.publisher);
        let (Some(direct), Some(to)) = (&peer.direct, peer.media_to) else {
            return;
        };
        let ssrc = *nack.ssrc;
        let Some(down) = part
            .down_tracks
            .iter_mut()
            .flatten()
            .find(|o| o.ssrc.is_some_and(|s| *s == ssrc))
        else {
            return;
        };
        let seqs = nack
            .reports
            .iter()
            .flat_map(|e| rtp_out::nacked(e.pid, e.blp));
        let (sink, metrics) = (&mut self.sink, &mut self.metrics);
        let StreamSend {
            history, allowance, ..
        } = &mut down.send;
        let congestion = &mut part.congestion;
        history.find(ssrc, seqs, now, |rtp| {
            if !allowance.take(rtp.payload.len()) {
                return;
            }
            if let (Some(congestion), Some(transport)) =
                (congestion.as_mut(), rtp.stamp.and_then(Stamp::transport))
            {
                congestion.resent(transport.seq);
            }
            let datagram = direct.packet(sink.buffer(), rtp);
            metrics.datagram_out(&datagram);
            metrics.retransmitted += 1;
            sink.send(datagram, to);
        });
    }
}

/// How the publisher's `pt` goes to the subscriber, resolved once per down-track: its
/// payload type there, whether RED (`red`: the publisher's packets are) must be unwrapped
/// for it (a subscriber that did not negotiate RED gets the codec it wraps), and whether it
/// NACKs the codec.
fn down_track_pt(
    map: &mut Vec<PtOut>,
    pt: Pt,
    params: PayloadParams,
    red: bool,
    subscriber: &str0m::Rtc,
) -> Option<PtOut> {
    if let Some(&out) = map.iter().find(|o| o.from == pt) {
        return Some(out);
    }
    let theirs = subscriber.codec_config().match_params(params)?;
    let (to, de_red) = match theirs.red() {
        Some(red_pt) if red => (red_pt, false),
        _ => (theirs.pt(), red),
    };
    let out = PtOut {
        from: pt,
        to,
        de_red,
        nack: theirs.fb_nack(),
    };
    map.push(out);
    Some(out)
}
