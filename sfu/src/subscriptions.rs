//! Who receives what: subscribing and unsubscribing out-tracks, and renegotiating a
//! subscriber PC when its set of tracks changes (one offer at a time; changes made while an
//! offer is out go in the next one).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use str0m::media::{Direction, MediaKind};

use crate::api::{PeerEvent, PeerRole, TrackKind};
use crate::down_track::{DownTrack, OutState};
use crate::ids::{DownTrackId, TrackId};
use crate::participant::Slot;
use crate::worker::Worker;

/// str0m's retransmission cache of a video subscriber stream. It only holds the packets
/// str0m sends itself (every packet before the peer's keys exist, then one per
/// `rtp_out::STR0M_REFRESH`); our own send path keeps its own history (`rtp_out::History`).
/// One second, what libwebrtc senders keep at least (several NACK round trips).
const VIDEO_HISTORY_PACKETS: usize = 16;
const VIDEO_HISTORY_AGE: Duration = Duration::from_secs(1);
/// At most one subscriber offer per this interval on a PC: the first change is offered at
/// the end of its loop turn, later ones wait for the interval since the last offer and go
/// together. A room's joins at 20 per second reach each member in one offer per ~3 joins
/// instead of one per join, while a lone change (a publisher's first tracks, a subscriber
/// that joined just before them) waits for nothing. LiveKit's server spaces offers by as
/// much (it delays every one).
const RENEGOTIATION_INTERVAL: Duration = Duration::from_millis(150);
/// Retransmitted bytes may be at most this share of the bytes sent (str0m's default; our
/// own path has the same cap, `rtp_out::RESEND_SHARE_PERCENT`): a subscriber's NACKs cannot
/// make the worker resend its whole history again and again.
const RETRANSMIT_RATIO_CAP: f32 = 0.15;

impl Worker {
    /// Subscribes `sub` to every track `publisher` has.
    pub(crate) fn subscribe_all_of(&mut self, sub: Slot, publisher: Slot) {
        let count = self.parts[publisher].as_ref().map_or(0, |p| p.tracks.len());
        for index in 0..count {
            self.subscribe(sub, TrackId { publisher, index });
        }
    }

    /// Adds a down-track at `sub` for track `source`, unless already there.
    pub(crate) fn subscribe(&mut self, sub: Slot, source: TrackId) {
        let Some(publisher) = self.parts[source.publisher].as_ref() else {
            return;
        };
        let Some(track) = publisher.tracks.get(source.index).and_then(Option::as_ref) else {
            return;
        };
        let (track_sid, kind, publisher_key) =
            (track.sid.clone(), track.kind, publisher.key.clone());
        let Some(subscriber) = self.parts[sub].as_mut() else {
            return;
        };
        if subscriber.is_subscribed_to(source) {
            return;
        }
        if !self.may_subscribe(sub, source) {
            self.deny(sub, source);
            return;
        }
        let Some(subscriber) = self.parts[sub].as_mut() else {
            return;
        };
        let index =
            subscriber.add_down_track(DownTrack::new(track_sid, publisher_key, source, kind));
        if let Some(track) = self.published_mut(source) {
            track.down_tracks.push(DownTrackId {
                subscriber: sub,
                index,
            });
        }
    }

    /// Subscribes to or unsubscribes from tracks of the same room by sid (UpdateSubscription).
    pub(crate) fn set_subscriptions(&mut self, key: &str, sids: &[String], subscribe: bool) {
        let Some(&slot) = self.by_key.get(key) else {
            return;
        };
        let Some(room) = self.parts[slot].as_ref().map(|p| p.room.clone()) else {
            return;
        };
        let members = self.rooms.get(&room).cloned().unwrap_or_default();
        for sid in sids {
            for &publisher in &members {
                let found = self.parts[publisher]
                    .as_ref()
                    .and_then(|p| p.track_index_by_sid(sid));
                let Some(index) = found else {
                    // Announced but not yet sending (a client that subscribes as soon as it
                    // hears of a track): taken when its media binds.
                    self.subscribe_early(publisher, slot, sid, subscribe);
                    continue;
                };
                let source = TrackId { publisher, index };
                if subscribe {
                    if publisher != slot {
                        self.subscribe(slot, source);
                    }
                } else {
                    self.forget_denied(slot, source);
                    self.unsubscribe(slot, source);
                }
            }
        }
        self.negotiate(slot);
    }

    /// Remembers (or forgets) that `sub` wants the announced track `sid` of `publisher`.
    fn subscribe_early(&mut self, publisher: Slot, sub: Slot, sid: &str, subscribe: bool) {
        if publisher == sub {
            return;
        }
        let Some(key) = self.parts[sub].as_ref().map(|p| p.key.clone()) else {
            return;
        };
        let Some(part) = self.parts[publisher].as_mut() else {
            return;
        };
        if !part.expected.iter().any(|t| t.sid == sid) {
            return;
        }
        part.early_subscribers
            .retain(|(t, k)| !(t.as_str() == sid && *k == key));
        if subscribe {
            part.early_subscribers.push((sid.to_owned(), key));
        }
    }

    /// Subscribes those who asked for track `index` of `publisher` before it bound.
    pub(crate) fn take_early_subscribers(&mut self, publisher: Slot, index: usize) {
        let Some(part) = self.parts[publisher].as_mut() else {
            return;
        };
        let Some(sid) = part
            .tracks
            .get(index)
            .and_then(Option::as_ref)
            .map(|t| t.sid.clone())
        else {
            return;
        };
        let mut keys = Vec::new();
        part.early_subscribers.retain(|(t, k)| {
            let taken = *t == sid;
            if taken {
                keys.push(k.clone());
            }
            !taken
        });
        for key in keys {
            if let Some(&sub) = self.by_key.get(&key) {
                self.subscribe(sub, TrackId { publisher, index });
                self.renegotiate_later(sub);
            }
        }
    }

    pub(crate) fn unsubscribe(&mut self, sub: Slot, source: TrackId) {
        let Some(part) = self.parts[sub].as_ref() else {
            return;
        };
        let gone: Vec<DownTrackId> = part
            .down_tracks
            .iter()
            .enumerate()
            .filter(|(_, o)| o.as_ref().is_some_and(|o| o.source == Some(source)))
            .map(|(index, _)| DownTrackId {
                subscriber: sub,
                index,
            })
            .collect();
        if let Some(track) = self.published_mut(source) {
            track.down_tracks.retain(|d| d.subscriber != sub);
        }
        self.refresh_wanted(source);
        for down in gone {
            self.source_gone(down);
        }
    }

    /// The source of down-track `down` is gone: stop its m-line (or forget it if it was
    /// never offered). The caller renegotiates.
    pub(crate) fn source_gone(&mut self, down: DownTrackId) {
        let Some(part) = self.parts[down.subscriber].as_mut() else {
            return;
        };
        let Some(slot) = part.down_tracks.get_mut(down.index) else {
            return;
        };
        let Some(track) = slot.as_mut() else {
            return;
        };
        track.source = None;
        track.layer.set_target(None);
        if track.fixed {
            // Switched to another source later, without renegotiating.
            return;
        }
        match track.state {
            OutState::ToOpen => *slot = None,
            OutState::Open(mid) | OutState::Negotiating(mid) => track.state = OutState::ToStop(mid),
            OutState::ToStop(_) | OutState::NegotiatingStop(_) => {}
        }
    }

    /// Renegotiates `slot`'s subscriber PC at the end of this turn, or once
    /// [`RENEGOTIATION_INTERVAL`] has passed since its last offer; one offer carries every
    /// change made until then. A publisher's offer brings its audio and video m-lines in
    /// one answer, and in a room where everyone publishes each join changes every member's
    /// tracks: negotiating at each change sent every member one offer per track and per
    /// join (one at a time, each waiting for the client's answer), and the SDP work of
    /// those round trips, on the worker that also forwards the room's media, was what made
    /// joins slow while others joined.
    pub(crate) fn renegotiate_later(&mut self, slot: Slot) {
        if self.renegotiate.iter().any(|(s, _)| *s == slot) {
            return;
        }
        let now = self.now;
        let at = self.parts[slot]
            .as_ref()
            .and_then(|p| p.last_offer)
            .map_or(now, |last| (last + RENEGOTIATION_INTERVAL).max(now));
        self.renegotiate.push((slot, at));
    }

    /// The renegotiations due at `now`. One at a time off the list, so a peer that panics
    /// leaves the others queued for the next turn.
    pub(crate) fn renegotiate_due(&mut self, now: Instant) {
        while let Some(index) = self.renegotiate.iter().position(|(_, at)| *at <= now) {
            let (slot, _) = self.renegotiate.swap_remove(index);
            self.negotiate(slot);
        }
    }

    /// When the next renegotiation is due.
    pub(crate) fn next_renegotiation(&self) -> Option<Instant> {
        self.renegotiate.iter().map(|(_, at)| *at).min()
    }

    /// Asks for an ICE restart in the next subscriber offer, and for that offer.
    pub(crate) fn restart_subscriber_ice(&mut self, slot: Slot) {
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        // A subscriber PC never offered has no ICE to restart: its first offer starts it. A
        // single-PC client restarts ICE itself, with its own offer.
        if part.last_offer.is_none() || part.single_pc() {
            return;
        }
        part.restart_subscriber_ice = true;
        // Not spaced like other renegotiations: the client is waiting for its media.
        self.negotiate(slot);
    }

    /// Sends the next offer on `slot`'s subscriber PC if anything changed and no offer is
    /// outstanding (one offer at a time; the answer triggers the next round).
    pub(crate) fn negotiate(&mut self, slot: Slot) {
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        if part.single_pc() {
            self.single_pc_negotiate(slot);
            return;
        }
        if part.pending_offer.is_some() || !part.options.can_subscribe {
            return;
        }
        // An offer whose every m-line is stopped leaves its BUNDLE group empty, and the
        // client (libwebrtc) then closes the transport: the PC is dead. So the last m-line
        // to go is kept, inactive, for as long as the PC lives (at most one).
        let mut stays_bundled = part.inactive_placeholder.is_some()
            || part.down_tracks.iter().flatten().any(|o| {
                matches!(
                    o.state,
                    OutState::ToOpen | OutState::Open(_) | OutState::Negotiating(_)
                )
            });
        let mut change = crate::participant::sender_mut(&mut part.subscriber, &mut part.publisher)
            .rtc
            .sdp_api();
        if part.restart_subscriber_ice {
            part.restart_subscriber_ice = false;
            // Our candidates stay what they were; the client gathers anew.
            change.ice_restart(true);
        }
        for out in part.down_tracks.iter_mut().flatten() {
            match out.state {
                OutState::ToOpen => {
                    let kind = match out.kind {
                        TrackKind::Audio => MediaKind::Audio,
                        TrackKind::Video => MediaKind::Video,
                    };
                    // livekit-client matches incoming media by msid "PA_…|TR_…" / "TR_…".
                    let stream_id = format!("{}|{}", out.publisher_key, out.track_sid);
                    let mid = change.add_media(
                        kind,
                        Direction::SendOnly,
                        Some(stream_id),
                        Some(out.track_sid.clone()),
                        None,
                    );
                    out.state = OutState::Negotiating(mid);
                }
                OutState::ToStop(mid) if !stays_bundled => {
                    change.set_direction(mid, Direction::Inactive);
                    part.inactive_placeholder = Some(mid);
                    stays_bundled = true;
                    out.state = OutState::NegotiatingStop(mid);
                }
                OutState::ToStop(mid) => {
                    change.stop_media(mid);
                    out.state = OutState::NegotiatingStop(mid);
                }
                _ => {}
            }
        }
        if !change.has_changes() {
            return;
        }
        let Some((offer, pending)) = change.apply() else {
            return;
        };
        part.pending_offer = Some(pending);
        part.last_offer = Some(self.now);
        let mid_to_track: BTreeMap<String, String> = part
            .down_tracks
            .iter()
            .flatten()
            .filter_map(|o| match o.state {
                OutState::Negotiating(mid) | OutState::Open(mid) => {
                    Some((mid.to_string(), o.track_sid.clone()))
                }
                _ => None,
            })
            .collect();
        let mut sdp = offer.to_sdp_string();
        if self.limits.bandwidth_estimation {
            sdp = crate::congestion::offer_feedback_extensions(&sdp);
        }
        part.offered_sections = crate::sdp_guard::media_sections(&sdp);
        part.emit(PeerEvent::SubscriberOffer { sdp, mid_to_track });
        self.drain(slot, PeerRole::Subscriber);
    }

    /// The subscriber accepted our offer: offered m-lines are open, stopped ones are free.
    pub(crate) fn answer_applied(&mut self, slot: Slot) {
        let mut opened = Vec::new();
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        for entry in part.down_tracks.iter_mut() {
            let Some(out) = entry.as_mut() else {
                continue;
            };
            match out.state {
                OutState::Negotiating(mid) => {
                    out.state = OutState::Open(mid);
                    let sender =
                        crate::participant::sender_mut(&mut part.subscriber, &mut part.publisher);
                    let mut api = sender.rtc.direct_api();
                    let stream = api.stream_tx_by_mid(mid, None);
                    out.ssrc = stream.as_ref().map(|s| s.ssrc());
                    match (stream, out.kind) {
                        // Audio is forwarded without retransmissions (browsers do not NACK
                        // Opus), so str0m's retransmission history and the send-rate records
                        // behind its retransmission cap would only cost memory: ~3 KiB per
                        // audio stream, 30 KiB for a subscriber of ten speakers.
                        (Some(stream), TrackKind::Audio) => {
                            stream.set_rtx_cache(0, Duration::ZERO, None)
                        }
                        (Some(stream), TrackKind::Video) => stream.set_rtx_cache(
                            VIDEO_HISTORY_PACKETS,
                            VIDEO_HISTORY_AGE,
                            Some(RETRANSMIT_RATIO_CAP),
                        ),
                        (None, _) => {}
                    }
                    if let Some(source) = out.source {
                        opened.push((source, out.kind));
                    }
                }
                OutState::NegotiatingStop(_) => *entry = None,
                _ => {}
            }
        }
        if !opened.is_empty() {
            // What the new down-tracks forward; a new video subscriber needs a keyframe to
            // start decoding.
            self.allocate(slot);
            self.keyframe_queue.extend(
                opened
                    .iter()
                    .filter(|(_, kind)| *kind == TrackKind::Video)
                    .map(|(source, _)| crate::media::KeyframeWant::all(*source)),
            );
        }
        // Changes that arrived while the offer was out go in the next one.
        let waiting = self.parts[slot].as_ref().is_some_and(|p| {
            p.restart_subscriber_ice
                || p.down_tracks
                    .iter()
                    .flatten()
                    .any(|o| matches!(o.state, OutState::ToOpen | OutState::ToStop(_)))
        });
        if waiting {
            self.renegotiate_later(slot);
        }
    }
}
