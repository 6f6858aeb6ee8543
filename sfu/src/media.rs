//! What a worker does with its peers' events: binding published tracks, forwarding RTP to
//! subscribers and keyframe requests. Subscriptions and renegotiation: `subscriptions.rs`.

use std::time::{Duration, Instant};

use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::rtp::rtcp::{Nack, Rtcp};
use str0m::rtp::{RawPacket, RtpPacket, RtpWrite};
use str0m::{Event, Input};
use tracing::debug;

use crate::api::{PeerEvent, PeerRole, TrackKind};
use crate::codec::starts_keyframe;
use crate::participant::{InTrack, Layer, Slot};
use crate::rtp_out::{self, DropEvery, RtpOut, StreamSend};
use crate::worker::Worker;

/// A layer that sent nothing for this long is considered stopped (the publisher's
/// bandwidth estimate dropped it, or the camera went away).
const LAYER_IDLE: Duration = Duration::from_millis(1500);
/// A keyframe request the publisher has not answered yet blocks further ones for this long
/// (its keyframe may still be on the way; after that it was lost, ask again).
const KEYFRAME_THROTTLE: Duration = Duration::from_millis(500);
/// Once answered, the next request may follow this soon: subscribers joining one after the
/// other then wait for at most this plus one frame, not for the full throttle.
const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(100);

impl Worker {
    pub(crate) fn handle_event(&mut self, slot: Slot, role: PeerRole, event: Event) {
        match (role, event) {
            (PeerRole::Publisher, Event::RtpPacket(packet)) => self.forward(slot, packet),
            (PeerRole::Publisher, Event::MediaAdded(added)) if added.direction.is_receiving() => {
                self.bind_track(slot, added.mid);
            }
            (PeerRole::Publisher, Event::MediaChanged(changed))
                if !changed.direction.is_receiving() =>
            {
                self.unpublish_mid(slot, changed.mid);
            }
            (PeerRole::Publisher, Event::ChannelOpen(id, label)) => {
                if let Some(part) = self.parts[slot].as_mut() {
                    match label.as_str() {
                        "_reliable" => part.channels.reliable = Some(id),
                        "_lossy" => part.channels.lossy = Some(id),
                        _ => {}
                    }
                }
            }
            (PeerRole::Publisher, Event::ChannelData(data)) => {
                if let Some(part) = self.parts[slot].as_ref() {
                    let reliable = Some(data.id) == part.channels.reliable;
                    let known = reliable || Some(data.id) == part.channels.lossy;
                    if known {
                        match part.data_budget.admit(data.data) {
                            Some(payload) => part.emit(PeerEvent::Data { reliable, payload }),
                            // Its session is not taking messages (blocked on a slow socket)
                            // while the client keeps sending: as over the data rate, drop.
                            None => {
                                metrics::counter!("switchboard_data_dropped_total", "why" => "queue")
                                    .increment(1)
                            }
                        }
                    }
                }
            }
            (PeerRole::Subscriber, Event::RawPacket(raw)) => {
                if let RawPacket::RtcpRx(Rtcp::Nack(nack)) = *raw {
                    self.answer_nack(slot, &nack);
                }
            }
            (PeerRole::Subscriber, Event::IceConnectionStateChange(state))
                if state.is_connected() =>
            {
                // After an ICE restart the peer may be at a new address, which our send path
                // learns from str0m's next datagram to it: let each stream's next packet be
                // str0m's.
                if let Some(part) = self.parts[slot].as_mut() {
                    for out in part.out.iter_mut().flatten() {
                        out.send.str0m_written = None;
                    }
                }
            }
            (PeerRole::Subscriber, Event::KeyframeRequest(request)) => {
                self.metrics.keyframe_request_received(request.kind);
                self.keyframe_requested(slot, request.mid);
            }
            (_, Event::PeerStats(stats)) => {
                if let (Some(part), Some(rtt)) = (self.parts[slot].as_mut(), stats.rtt) {
                    part.stats.rtt_ms = Some(rtt.as_millis().min(u128::from(u32::MAX)) as u32);
                }
            }
            (PeerRole::Subscriber, Event::MediaEgressStats(stats)) => {
                self.egress_stats(slot, &stats);
            }
            (PeerRole::Publisher, Event::MediaIngressStats(stats)) => {
                self.ingress_stats(slot, &stats);
            }
            _ => {}
        }
    }

    /// A publisher m-line appeared: match it to the track the client announced by its msid.
    fn bind_track(&mut self, slot: Slot, mid: Mid) {
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        if !part.options.can_publish || part.track_index_by_mid(mid).is_some() {
            return;
        }
        let Some(media) = part.publisher.rtc.media(mid) else {
            return;
        };
        let msid_track = media.track_id().to_owned();
        let media_kind = media.kind();
        // Clients announce by msid track id; WHIP publishers, whose offers may carry no msid,
        // are announced by mid.
        let mid_name = mid.to_string();
        let Some(pos) = part
            .expected
            .iter()
            .position(|t| t.cid == msid_track || t.cid == mid_name)
        else {
            debug!(participant = %part.key, %mid, msid_track, "media without an announced track");
            return;
        };
        let expected = part.expected.remove(pos);
        let kind = match media_kind {
            MediaKind::Audio => TrackKind::Audio,
            MediaKind::Video => TrackKind::Video,
        };
        let track = InTrack {
            sid: expected.sid,
            cid: expected.cid,
            codec: expected.codec,
            kind,
            mid,
            muted: false,
            media_started: false,
            layers: Vec::new(),
            selected: None,
            payloads: Vec::new(),
            subscribers: Vec::new(),
            last_keyframe_request: None,
            last_keyframe: None,
        };
        let index = match part.tracks.iter().position(Option::is_none) {
            Some(i) => {
                part.tracks[i] = Some(track);
                i
            }
            None => {
                part.tracks.push(Some(track));
                part.tracks.len() - 1
            }
        };
        let room = part.room.clone();
        let members = self.rooms.get(&room).cloned().unwrap_or_default();
        self.viewers_follow(slot);
        for sub in members {
            if sub == slot {
                continue;
            }
            let auto = self.parts[sub]
                .as_ref()
                .is_some_and(|p| p.options.auto_subscribe && p.options.can_subscribe);
            if auto {
                self.subscribe(sub, slot, index);
                self.renegotiate_later(sub);
            }
        }
    }

    /// The client stopped sending on a publisher m-line.
    fn unpublish_mid(&mut self, slot: Slot, mid: Mid) {
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        let Some(index) = part.track_index_by_mid(mid) else {
            return;
        };
        let Some(track) = part.tracks[index].take() else {
            return;
        };
        part.stats.packets_lost += track.layers.iter().map(Layer::lost).sum::<u64>();
        part.ssrc_tracks.retain(|(_, i)| *i != index);
        part.emit(PeerEvent::TrackUnpublished { sid: track.sid });
        self.tap_track_ended(slot, index);
        for (sub, out) in track.subscribers {
            self.source_gone(sub, out);
            self.renegotiate_later(sub);
        }
        self.viewers_follow(slot);
    }

    fn keyframe_requested(&mut self, sub: Slot, mid: Mid) {
        let source = self.parts[sub].as_ref().and_then(|p| {
            p.out
                .iter()
                .flatten()
                .find(|o| o.open_mid() == Some(mid))
                .and_then(|o| o.source)
        });
        if let Some(source) = source {
            self.keyframe_queue.push(source);
        }
    }

    /// Passes queued keyframe requests to publishers, at most one per track per interval.
    pub(crate) fn flush_keyframe_requests(&mut self) {
        if self.keyframe_queue.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut queue = std::mem::take(&mut self.keyframe_queue);
        queue.sort_unstable();
        queue.dedup();
        for (publisher, index) in queue.drain(..) {
            let Some(part) = self.parts[publisher].as_mut() else {
                continue;
            };
            let Some(track) = part.tracks.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            let throttled = track.last_keyframe_request.is_some_and(|at| {
                let since = now.duration_since(at);
                let answered = track.last_keyframe.is_some_and(|k| k >= at);
                since < KEYFRAME_MIN_INTERVAL || (!answered && since < KEYFRAME_THROTTLE)
            });
            if track.kind != TrackKind::Video || throttled {
                continue;
            }
            track.last_keyframe_request = Some(now);
            let (mid, rids): (Mid, Vec<_>) =
                (track.mid, track.layers.iter().map(|l| l.rid).collect());
            let mut api = part.publisher.rtc.direct_api();
            let rids = if rids.is_empty() { vec![None] } else { rids };
            for rid in rids {
                if let Some(stream) = api.stream_rx_by_mid(mid, rid) {
                    stream.request_keyframe(KeyframeRequestKind::Pli);
                    self.metrics.keyframe_request_sent();
                }
            }
            self.drain(publisher, PeerRole::Publisher);
        }
        // Keep the buffer for reuse, and what the drains above queued for the next round.
        let pushed = std::mem::replace(&mut self.keyframe_queue, queue);
        self.keyframe_queue.extend(pushed);
    }

    /// The hot path: one RTP packet from a publisher to every subscriber of its track.
    fn forward(&mut self, slot: Slot, packet: RtpPacket) {
        let ssrc = *packet.header.ssrc;
        let now = packet.timestamp;
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        part.stats.packets_in += 1;
        part.stats.bytes_in += packet.payload.len() as u64;
        self.metrics.rtp_in += 1;
        self.metrics.rtp_in_bytes += packet.payload.len() as u64;
        let index = match part.ssrc_tracks.iter().find(|(s, _)| *s == ssrc) {
            Some(&(_, index)) => index,
            None => {
                let Some((mid, rid)) = part
                    .publisher
                    .rtc
                    .direct_api()
                    .stream_rx(&packet.header.ssrc)
                    .map(|s| (s.mid(), s.rid()))
                else {
                    return;
                };
                let Some(index) = part.track_index_by_mid(mid) else {
                    return;
                };
                part.ssrc_tracks.push((ssrc, index));
                if let Some(track) = part.tracks[index].as_mut() {
                    track
                        .layers
                        .push(Layer::new(ssrc, rid, now, *packet.seq_no));
                }
                index
            }
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
                .find(|p| p.pt() == pt)
                .copied();
            match params {
                Some(params) => track.payloads.push((pt, params)),
                None => return,
            }
        }
        let Some((params, codec)) = track.codec_of(pt) else {
            return;
        };
        let is_video = track.kind == TrackKind::Video;
        let keyframe = is_video && starts_keyframe(codec, &packet.payload);
        if keyframe {
            track.last_keyframe = Some(now);
        }
        if !select_layer(track, ssrc, *packet.seq_no, now, keyframe) {
            if track.selected.is_none() || keyframe_needed(track, now) {
                self.keyframe_queue.push((slot, index));
            }
            return;
        }
        if track.muted {
            return;
        }
        let clock_rate = params.spec().clock_rate.get();
        self.scratch.clear();
        self.scratch.extend_from_slice(&track.subscribers);
        let subscribers = std::mem::take(&mut self.scratch);
        let mut waiting = false;
        for &(sub, out) in &subscribers {
            let Some(subscriber) = self.parts[sub].as_mut() else {
                continue;
            };
            let Some(out_track) = subscriber.out.get_mut(out).and_then(Option::as_mut) else {
                continue;
            };
            let (Some(_), Some(ssrc_out)) = (out_track.open_mid(), out_track.ssrc) else {
                continue;
            };
            let peer = &subscriber.subscriber;
            if peer.direct.is_none() && !peer.rtc.is_connected() {
                // Nothing can leave before DTLS is up. str0m would queue the packet and send
                // it once connected, after the packets our own path sends from that moment,
                // and a receiver drops a packet that late.
                continue;
            }
            if out_track.waiting_keyframe {
                if !keyframe {
                    waiting = true;
                    continue;
                }
                out_track.waiting_keyframe = false;
            }
            let pt_out = match out_track.pt_map.iter().find(|(i, _)| *i == pt) {
                Some(&(_, o)) => o,
                None => match subscriber
                    .subscriber
                    .rtc
                    .codec_config()
                    .match_params(params)
                {
                    Some(local) => {
                        let o = local.pt();
                        out_track.pt_map.push((pt, o));
                        o
                    }
                    None => continue,
                },
            };
            let Some((seq, ts)) = out_track.rewriter.rewrite(
                ssrc,
                *packet.seq_no,
                packet.header.timestamp,
                now,
                clock_rate,
            ) else {
                continue;
            };
            let peer = &mut subscriber.subscriber;
            match (&peer.direct, peer.media_to) {
                (Some(direct), Some(to)) if !out_track.send.str0m_due(now) => {
                    let rtp = RtpOut {
                        ssrc: *ssrc_out,
                        pt: *pt_out,
                        marker: packet.header.marker,
                        seq,
                        timestamp: ts,
                        payload: &packet.payload,
                    };
                    let datagram = direct.packet(self.sink.buffer(), &rtp);
                    self.metrics.datagram_out(&datagram);
                    let withheld =
                        is_video && self.test_drop.as_mut().is_some_and(DropEvery::this_one);
                    if !withheld {
                        self.sink.send(datagram, to);
                    }
                    out_track.send.sent(&rtp, &packet.payload, now, is_video);
                }
                _ => {
                    let mut api = peer.rtc.direct_api();
                    let Some(stream) = api.stream_tx(&ssrc_out) else {
                        continue;
                    };
                    stream.write_rtp(
                        RtpWrite::new(pt_out, seq.into(), ts, now, packet.payload.clone())
                            .marker(packet.header.marker)
                            .nackable(is_video),
                    );
                    out_track.send.str0m_written = Some(now);
                    // Sent now, not at the turn's end, so it leaves in order with the
                    // packets our own path sends right away.
                    self.str0m_now.push(sub);
                }
            }
            subscriber.stats.packets_out += 1;
            subscriber.stats.bytes_out += packet.payload.len() as u64;
            self.metrics.forwarded += 1;
            self.metrics.forwarded_bytes += packet.payload.len() as u64;
            if !subscriber.first_media_sent {
                subscriber.first_media_sent = true;
                subscriber.emit(PeerEvent::FirstMediaSent);
            }
        }
        self.scratch = subscribers;
        self.send_str0m_written();
        if !self.taps.is_empty() {
            self.tap_packet(slot, index, &packet, params);
        }
        if waiting {
            // Keep asking (throttled) until a keyframe comes: an earlier one may have been
            // sent before this subscriber's m-line was ready.
            self.keyframe_queue.push((slot, index));
        }
    }

    /// Has the subscriber peers str0m was given a packet for send it now. str0m sends a
    /// written packet only when woken (its pacer looks at queues then), which costs a pass
    /// over all of the peer's streams; our own send path makes that rare (`rtp_out`).
    fn send_str0m_written(&mut self) {
        if self.str0m_now.is_empty() {
            return;
        }
        let now = Instant::now();
        let subscribers = std::mem::take(&mut self.str0m_now);
        for &sub in &subscribers {
            let Some(part) = self.parts[sub].as_mut() else {
                continue;
            };
            if let Err(e) = part.subscriber.rtc.handle_input(Input::Timeout(now)) {
                debug!(participant = %part.key, "timeout input failed: {e}");
            }
            self.drain(sub, PeerRole::Subscriber);
        }
        self.str0m_now = subscribers;
        self.str0m_now.clear();
    }

    /// Answers a subscriber's NACK from what our own send path sent (str0m answers for the
    /// packets it sent itself), within the stream's retransmission allowance.
    pub(crate) fn answer_nack(&mut self, slot: Slot, nack: &Nack) {
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        let peer = &part.subscriber;
        let (Some(direct), Some(to)) = (&peer.direct, peer.media_to) else {
            return;
        };
        let ssrc = *nack.ssrc;
        let Some(out) = part
            .out
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
        } = &mut out.send;
        history.find(ssrc, seqs, Instant::now(), |rtp| {
            if !allowance.take(rtp.payload.len()) {
                return;
            }
            let datagram = direct.packet(sink.buffer(), rtp);
            metrics.datagram_out(&datagram);
            metrics.retransmitted += 1;
            sink.send(datagram, to);
        });
    }
}

/// Decides whether a packet of `ssrc` is forwarded, switching the forwarded simulcast layer
/// to the best active one at a keyframe.
fn select_layer(track: &mut InTrack, ssrc: u32, seq: u64, now: Instant, keyframe: bool) -> bool {
    if let Some(layer) = track.layers.iter_mut().find(|l| l.ssrc == ssrc) {
        layer.record(seq, now);
    }
    if track.layers.len() <= 1 {
        track.selected = Some(ssrc);
        return true;
    }
    let best = track
        .layers
        .iter()
        .filter(|l| now.saturating_duration_since(l.last_packet) < LAYER_IDLE)
        .max_by_key(|l| l.rank())
        .map(|l| l.ssrc);
    if track.selected != best && best == Some(ssrc) && keyframe {
        track.selected = Some(ssrc);
    }
    track.selected == Some(ssrc)
}

/// True when the best layer is not the forwarded one, so a keyframe on it is wanted.
fn keyframe_needed(track: &InTrack, now: Instant) -> bool {
    let best = track
        .layers
        .iter()
        .filter(|l| now.saturating_duration_since(l.last_packet) < LAYER_IDLE)
        .max_by_key(|l| l.rank())
        .map(|l| l.ssrc);
    best.is_some() && best != track.selected
}
