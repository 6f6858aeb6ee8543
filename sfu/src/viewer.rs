//! Viewers (WHEP): the client offers receive-only m-lines on the subscriber PC, and the
//! worker fills them with one publisher's first audio and first video track, switching
//! sources under the same m-lines (keyframe requested, numbering continuous) when that
//! publisher's tracks change or another publisher is chosen.

use str0m::change::SdpOffer;
use str0m::media::MediaKind;

use crate::api::{PeerRole, SfuError, TrackKind};
use crate::down_track::DownTrack;
use crate::ids::{DownTrackId, TrackId};
use crate::participant::Slot;
use crate::svc::dependency_descriptor;
use crate::worker::Worker;

/// A viewer's fixed m-line: (its down-track's index, kind, current source).
type FixedLine = (usize, TrackKind, Option<TrackId>);

impl Worker {
    /// Accepts a viewer's offer on its subscriber PC; every m-line we send on becomes a
    /// fixed out-track, filled from the viewed publisher.
    pub(crate) fn viewer_offer(&mut self, key: &str, sdp: &str) -> Result<String, SfuError> {
        let slot = *self
            .by_key
            .get(key)
            .ok_or_else(|| SfuError::UnknownParticipant(key.to_owned()))?;
        self.current = Some(slot);
        crate::sdp_guard::check(
            sdp,
            self.limits.max_media_sections,
            self.limits.max_remote_candidates,
        )?;
        let offer =
            SdpOffer::from_sdp_string(sdp).map_err(|e| crate::sdp_guard::parse_error(sdp, &e))?;
        let feedback =
            crate::congestion::transport_cc_id(sdp).filter(|_| self.limits.bandwidth_estimation);
        let now = self.now;
        let Some(part) = self.parts[slot].as_mut() else {
            return Err(SfuError::UnknownParticipant(key.to_owned()));
        };
        if part.down_tracks.iter().flatten().any(|o| o.fixed) {
            return Err(SfuError::Negotiation(
                "this viewer already negotiated its m-lines".into(),
            ));
        }
        let answer = part
            .sender_mut()
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| crate::sdp_guard::negotiation_error(sdp, &e))?;
        let sending: Vec<(str0m::media::Mid, TrackKind)> = crate::sdp_order::mids(sdp)
            .into_iter()
            .filter_map(|mid| {
                let mid = str0m::media::Mid::from(mid.as_str());
                let media = part.sender().rtc.media(mid)?;
                if !media.direction().is_sending() {
                    return None;
                }
                let kind = match media.kind() {
                    MediaKind::Audio => TrackKind::Audio,
                    MediaKind::Video => TrackKind::Video,
                };
                Some((mid, kind))
            })
            .collect();
        if sending.is_empty() {
            return Err(SfuError::Negotiation(
                "the offer has no audio or video m-line to receive on".into(),
            ));
        }
        for (mid, kind) in sending {
            let ssrc = part
                .sender_mut()
                .rtc
                .direct_api()
                .stream_tx_by_mid(mid, None)
                .map(|s| s.ssrc());
            part.add_down_track(DownTrack::fixed(kind, mid, ssrc));
        }
        let answer = match feedback {
            // The viewer offered transport-wide feedback: answered, our send path stamps its
            // packets under the viewer's id, and the link is estimated as a subscriber's.
            Some(id) => {
                part.congestion = Some(Box::new(crate::congestion::Congestion::new(
                    now, self.epoch, id,
                )));
                crate::congestion::with_extension(
                    &answer.to_sdp_string(),
                    id,
                    crate::congestion::TRANSPORT_CC_URI,
                )
            }
            // REMB instead: the viewer estimates its link itself (`remb.rs`).
            None if self.limits.bandwidth_estimation && crate::remb::negotiates_remb(sdp) => {
                let abs_send_time = crate::remb::abs_send_time_id(sdp);
                part.remb = Some(Box::new(crate::remb::RembLink::new(now, abs_send_time)));
                let answer = answer.to_sdp_string();
                match abs_send_time {
                    Some(id) => crate::congestion::with_extension(
                        &answer,
                        id,
                        crate::remb::ABS_SEND_TIME_URI,
                    ),
                    None => answer,
                }
            }
            // No feedback will come: nothing limits its layers (as for a subscriber whose
            // answer has none).
            None => {
                part.allocator.estimate = None;
                part.allocator.provisional = false;
                answer.to_sdp_string()
            }
        };
        part.sender_mut().descriptor_id = dependency_descriptor::negotiated_id(&answer);
        self.drain(slot, PeerRole::Subscriber);
        self.attach_viewer(slot);
        Ok(answer)
    }

    /// Chooses the publisher (by key) a viewer receives; `None` leaves its m-lines silent.
    pub(crate) fn view(&mut self, key: &str, publisher: Option<String>) {
        let Some(&slot) = self.by_key.get(key) else {
            return;
        };
        if let Some(part) = self.parts[slot].as_mut() {
            part.viewing = publisher;
        }
        self.attach_viewer(slot);
    }

    /// Every viewer of `publisher` re-evaluates its sources (a track came or went).
    pub(crate) fn viewers_follow(&mut self, publisher: Slot) {
        let Some(key) = self.parts[publisher].as_ref().map(|p| p.key.clone()) else {
            return;
        };
        let viewers: Vec<Slot> = self
            .parts
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.as_ref()
                    .is_some_and(|p| p.viewing.as_deref() == Some(&key))
            })
            .map(|(slot, _)| slot)
            .collect();
        for viewer in viewers {
            self.attach_viewer(viewer);
        }
    }

    /// Points each fixed m-line of `viewer` at the viewed publisher's first track of its
    /// kind, if it is not there already.
    fn attach_viewer(&mut self, viewer: Slot) {
        let Some(part) = self.parts[viewer].as_ref() else {
            return;
        };
        let publisher = part
            .viewing
            .as_ref()
            .and_then(|key| self.by_key.get(key))
            .copied()
            .filter(|p| *p != viewer);
        let fixed: Vec<FixedLine> = part
            .down_tracks
            .iter()
            .enumerate()
            .filter_map(|(i, o)| {
                o.as_ref()
                    .filter(|o| o.fixed)
                    .map(|o| (i, o.kind, o.source))
            })
            .collect();
        let mut taken: Vec<TrackId> = Vec::new();
        let mut switched = false;
        for (index, kind, current) in fixed {
            let down = DownTrackId {
                subscriber: viewer,
                index,
            };
            let wanted = publisher.and_then(|p| {
                self.parts[p].as_ref().and_then(|pp| {
                    pp.tracks
                        .iter()
                        .enumerate()
                        .map(|(index, t)| {
                            (
                                TrackId {
                                    publisher: p,
                                    index,
                                },
                                t,
                            )
                        })
                        .find(|(id, t)| {
                            t.as_ref().is_some_and(|t| t.kind == kind) && !taken.contains(id)
                        })
                        .map(|(id, _)| id)
                })
            });
            if let Some(w) = wanted {
                taken.push(w);
            }
            if wanted == current {
                continue;
            }
            switched = true;
            if let Some(old) = current {
                if let Some(track) = self.published_mut(old) {
                    track.down_tracks.retain(|&d| d != down);
                }
                self.refresh_wanted(old);
            }
            let (sid, publisher_key) = match wanted {
                Some(id) => {
                    let key = self.parts[id.publisher].as_ref().map(|p| p.key.clone());
                    match (key, self.published_mut(id)) {
                        (Some(key), Some(track)) => {
                            track.down_tracks.push(down);
                            (track.sid.clone(), key)
                        }
                        _ => (String::new(), String::new()),
                    }
                }
                None => (String::new(), String::new()),
            };
            if let Some(Some(Some(o))) = self.parts[viewer]
                .as_mut()
                .map(|p| p.down_tracks.get_mut(index))
            {
                o.source = wanted;
                o.track_sid = sid;
                o.publisher_key = publisher_key;
                // The new source starts on a keyframe; the rewriter keeps numbering going.
                o.layer.restart();
                o.pt_map.clear();
            }
            if let (Some(source), TrackKind::Video) = (wanted, kind) {
                self.keyframe_queue
                    .push(crate::media::KeyframeWant::all(source));
            }
        }
        if switched {
            self.allocate(viewer);
        }
        self.flush_keyframe_requests();
    }

    /// ICE restart (WHIP/WHEP PATCH): takes the client's new credentials and returns ours.
    pub(crate) fn ice_restart(
        &mut self,
        key: &str,
        role: PeerRole,
        ufrag: &str,
        pwd: &str,
    ) -> Result<(String, String), SfuError> {
        let slot = *self
            .by_key
            .get(key)
            .ok_or_else(|| SfuError::UnknownParticipant(key.to_owned()))?;
        let Some(part) = self.parts[slot].as_mut() else {
            return Err(SfuError::UnknownParticipant(key.to_owned()));
        };
        let peer = part.peer_mut(role);
        // A restart starts a new candidate gathering on the client.
        peer.trickled = 0;
        let rtc = &mut peer.rtc;
        let local = str0m::IceCreds::new();
        let mut api = rtc.direct_api();
        api.set_remote_ice_credentials(str0m::IceCreds {
            ufrag: ufrag.to_owned(),
            pass: pwd.to_owned(),
        });
        api.set_local_ice_credentials(local.clone());
        self.drain(slot, role);
        Ok((local.ufrag, local.pass))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use str0m::media::{Direction, MediaKind};

    use crate::worker::testing;

    /// A player's offer: audio and video to receive, with str0m's standard header
    /// extensions (transport-wide numbers under id 3, as Chromium's).
    fn player_offer() -> String {
        crate::rtc_config::install_crypto();
        let mut rtc = str0m::Rtc::builder().build(Instant::now());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, _) = api.apply().expect("an offer");
        offer.to_sdp_string()
    }

    const TWCC: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

    #[test]
    fn a_player_offering_transport_wide_feedback_gets_its_link_estimated() {
        let offer = player_offer();
        assert!(offer.contains(TWCC), "{offer}");
        let mut worker = testing::worker();
        let _events = testing::join(&mut worker, "PA_a");
        let answer = worker.viewer_offer("PA_a", &offer).expect("answered");
        assert_eq!(
            answer.matches(&format!("a=extmap:3 {TWCC}")).count(),
            2,
            "{answer}"
        );
        let part = worker.parts[0].as_ref().expect("joined");
        assert!(part.congestion.is_some());
        assert!(part.allocator.estimate.is_some());
    }

    #[test]
    fn a_player_without_it_reports_remb_or_is_not_held_to_a_guess() {
        let without_twcc: String = player_offer()
            .split_inclusive('\n')
            .filter(|line| !line.contains(TWCC))
            .collect();
        // Its browser estimates the link and reports REMB: the send time is stamped under
        // the player's abs-send-time id, and the reports will set the estimate.
        let mut worker = testing::worker();
        let _events = testing::join(&mut worker, "PA_a");
        let answer = worker
            .viewer_offer("PA_a", &without_twcc)
            .expect("answered");
        assert!(!answer.contains(TWCC), "{answer}");
        assert!(answer.contains("goog-remb"), "{answer}");
        // Stamped by us only: str0m, which would stamp its own packets from another clock
        // origin, does not know the extension (the standard map's id 2 is ours).
        assert_eq!(
            answer
                .matches(&format!("a=extmap:2 {}", crate::remb::ABS_SEND_TIME_URI))
                .count(),
            2,
            "{answer}"
        );
        let part = worker.parts[0].as_ref().expect("joined");
        assert!(part.congestion.is_none());
        let remb = part.remb.as_ref().expect("a REMB link");
        assert!(
            remb.stamp(Instant::now()).is_some(),
            "abs-send-time is stamped"
        );

        // Neither: no feedback will come, and the starting estimate (provisional, which
        // kept the top layer away) does not stay.
        let neither: String = without_twcc
            .split_inclusive('\n')
            .filter(|line| !line.contains("goog-remb"))
            .collect();
        let mut worker = testing::worker();
        let _events = testing::join(&mut worker, "PA_a");
        worker.viewer_offer("PA_a", &neither).expect("answered");
        let part = worker.parts[0].as_ref().expect("joined");
        assert!(part.congestion.is_none() && part.remb.is_none());
        assert_eq!(part.allocator.estimate, None);
        assert!(!part.allocator.provisional);
    }
}
