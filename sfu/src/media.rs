//! What a worker does with its peers' events: binding published tracks, unpublishing them,
//! and passing keyframe requests to publishers. The hot path: `forward.rs`; subscriptions
//! and renegotiation: `subscriptions.rs`.

use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::rtp::rtcp::Rtcp;
use str0m::rtp::RawPacket;
use str0m::Event;
use tracing::debug;

use crate::api::{ExpectedTrack, PeerEvent, PeerRole, TrackKind};
use crate::ids::TrackId;
use crate::participant::Slot;
use crate::published_track::{bit, PublishedTrack, Quality};
use crate::worker::Worker;

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
            (PeerRole::Subscriber, Event::RawPacket(raw)) => match *raw {
                RawPacket::RtcpRx(Rtcp::Nack(nack)) => self.answer_nack(slot, &nack),
                RawPacket::RtcpRx(Rtcp::Twcc(twcc)) => self
                    .transport_feedback(slot, crate::congestion::TransportFeedback::Parsed(twcc)),
                RawPacket::RtcpRx(Rtcp::Remb(remb)) => self.remb_feedback(slot, remb.bitrate),
                _ => {}
            },
            (PeerRole::Subscriber, Event::IceConnectionStateChange(state))
                if state.is_connected() =>
            {
                // After an ICE restart the peer may be at a new address, which our send path
                // learns from str0m's next datagram to it: let each stream's next packet be
                // str0m's.
                if let Some(part) = self.parts[slot].as_mut() {
                    for down in part.down_tracks.iter_mut().flatten() {
                        down.send.str0m_written = None;
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
    pub(crate) fn bind_track(&mut self, slot: Slot, mid: Mid) {
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
        let kind = match media.kind() {
            MediaKind::Audio => TrackKind::Audio,
            MediaKind::Video => TrackKind::Video,
        };
        let bound = part
            .tracks
            .iter()
            .flatten()
            .any(|t| t.cid == msid_track || t.codec_cids.contains(&msid_track));
        let Some(pos) = match_pending(&part.expected, &msid_track, &mid.to_string(), kind, bound)
        else {
            debug!(participant = %part.key, %mid, msid_track, "media without an announced track");
            return;
        };
        let expected = part.expected.remove(pos);
        let track = PublishedTrack::new(expected, kind, mid);
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
        self.take_early_subscribers(slot, index);
        for sub in members {
            if sub == slot {
                continue;
            }
            let auto = self.parts[sub]
                .as_ref()
                .is_some_and(|p| p.options.auto_subscribe && p.options.can_subscribe);
            if auto {
                self.subscribe(
                    sub,
                    TrackId {
                        publisher: slot,
                        index,
                    },
                );
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
        part.stats.packets_lost += track.packets_lost();
        part.ssrc_tracks.retain(|(_, i)| *i != index);
        part.emit(PeerEvent::TrackUnpublished { sid: track.sid });
        self.tap_track_ended(TrackId {
            publisher: slot,
            index,
        });
        for down in track.down_tracks {
            self.source_gone(down);
            self.renegotiate_later(down.subscriber);
        }
        self.viewers_follow(slot);
    }

    fn keyframe_requested(&mut self, sub: Slot, mid: Mid) {
        // The layer the subscriber decodes, or the one it is switching to.
        let want = self.parts[sub].as_ref().and_then(|p| {
            let down = p
                .down_tracks
                .iter()
                .flatten()
                .find(|o| o.open_mid() == Some(mid))?;
            Some(KeyframeWant {
                track: down.source?,
                layers: down.layer.wanted(),
            })
        });
        if let Some(want) = want {
            self.keyframe_queue.push(want);
        }
    }

    /// Passes queued keyframe requests to publishers, at most one per layer per interval.
    pub(crate) fn flush_keyframe_requests(&mut self) {
        if self.keyframe_queue.is_empty() {
            return;
        }
        let now = self.now;
        let mut queue = std::mem::take(&mut self.keyframe_queue);
        queue.sort_unstable_by_key(|w| w.track);
        let mut merged: Vec<KeyframeWant> = Vec::with_capacity(queue.len());
        for want in queue.drain(..) {
            match merged.last_mut() {
                Some(last) if last.track == want.track => last.layers |= want.layers,
                _ => merged.push(want),
            }
        }
        for KeyframeWant { track: id, layers } in merged {
            let TrackId { publisher, index } = id;
            let Some(part) = self.parts[publisher].as_mut() else {
                continue;
            };
            let Some(track) = part.tracks.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            let rids = track.keyframe_requests(now, layers);
            if rids.is_empty() {
                continue;
            }
            let mid = track.mid;
            let mut api = part.publisher.rtc.direct_api();
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
}

/// Layers of a published track a keyframe is wanted on (a set of qualities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyframeWant {
    pub track: TrackId,
    pub layers: u8,
}

impl KeyframeWant {
    /// Every layer the track sends (a new subscriber, a recording starting, an unmute).
    pub fn all(track: TrackId) -> Self {
        Self {
            track,
            layers: u8::MAX,
        }
    }

    pub fn layer(track: TrackId, quality: Quality) -> Self {
        Self {
            track,
            layers: bit(quality),
        }
    }
}

/// Which announced track a new publisher m-line carries, as LiveKit's server decides it:
/// the track whose cid is the m-line's msid track id (or, for WHIP, its mid); else the one
/// with a codec of that cid (a simulcast or backup codec); else, because LiveKit's native
/// SDKs put their own WebRTC track id in the msid, the oldest pending track of the same
/// kind. `already_bound` says the msid names a track that is already published: then the
/// m-line is a second one for that track (a backup codec) and takes no pending track.
pub(crate) fn match_pending(
    pending: &[ExpectedTrack],
    msid_track: &str,
    mid: &str,
    kind: TrackKind,
    already_bound: bool,
) -> Option<usize> {
    pending
        .iter()
        .position(|t| t.cid == msid_track || t.cid == mid)
        .or_else(|| {
            pending
                .iter()
                .position(|t| t.codec_cids.iter().any(|c| c == msid_track))
        })
        .or_else(|| {
            (!already_bound && !msid_track.is_empty())
                .then(|| pending.iter().position(|t| t.kind == kind))
                .flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(cid: &str, codec_cids: &[&str], kind: TrackKind) -> ExpectedTrack {
        ExpectedTrack {
            cid: cid.into(),
            codec_cids: codec_cids.iter().map(|c| (*c).to_owned()).collect(),
            sid: format!("TR_{cid}"),
            kind,
            codec: None,
            screen: false,
            layers: Vec::new(),
        }
    }

    #[test]
    fn the_cid_wins_then_a_codec_cid_then_the_oldest_of_the_kind() {
        let list = [
            pending("mic", &[], TrackKind::Audio),
            pending("cam", &["cam-vp9", "cam-vp8"], TrackKind::Video),
            pending("screen", &[], TrackKind::Video),
        ];
        let video = TrackKind::Video;
        assert_eq!(match_pending(&list, "screen", "3", video, false), Some(2));
        assert_eq!(match_pending(&list, "cam-vp8", "3", video, false), Some(1));
        // A native SDK's own track id: the oldest pending video track.
        assert_eq!(
            match_pending(&list, "webrtc-track-7", "3", video, false),
            Some(1)
        );
        assert_eq!(
            match_pending(&list, "webrtc-track-8", "4", TrackKind::Audio, false),
            Some(0)
        );
        // WHIP announces by mid.
        let whip = [pending("0", &[], TrackKind::Audio)];
        assert_eq!(
            match_pending(&whip, "", "0", TrackKind::Audio, false),
            Some(0)
        );
    }

    #[test]
    fn nothing_of_the_kind_pending_or_a_second_m_line_of_a_bound_track_matches_nothing() {
        let list = [pending("mic", &[], TrackKind::Audio)];
        assert_eq!(
            match_pending(&list, "x", "1", TrackKind::Video, false),
            None
        );
        assert_eq!(
            match_pending(&list, "cam", "2", TrackKind::Audio, true),
            None
        );
        assert_eq!(
            match_pending(&[], "cam", "0", TrackKind::Video, false),
            None
        );
    }
}
