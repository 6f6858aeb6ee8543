//! What a worker does with the commands signaling sends: joins and leaves, offers and
//! answers, trickled candidates, announced tracks, mutes and data messages.

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::net::TcpType;
use str0m::{Candidate, Input};
use tokio::sync::mpsc;
use tracing::debug;

use crate::api::{Command, ExpectedTrack, JoinOptions, PeerEvent, PeerRole, SfuError};
use crate::ids::TrackId;
use crate::participant::{DataChannels, Participant, Peer, Slot};
use crate::rtc_config::{new_publisher_rtc, new_single_rtc, new_subscriber_rtc};
use crate::sdp_guard;
use crate::worker::Worker;

impl Worker {
    pub(crate) fn handle_command(&mut self, command: Command, now: std::time::Instant) {
        self.now = now;
        match command {
            Command::Join {
                participant,
                identity,
                room,
                options,
                events,
                reply,
            } => {
                let _ = reply.send(self.join(participant, identity, room, options, events));
            }
            Command::PublisherOffer {
                participant,
                sdp,
                reply,
            } => {
                let _ = reply.send(self.offer(&participant, &sdp));
            }
            Command::SubscriberAnswer {
                participant,
                sdp,
                reply,
            } => {
                let _ = reply.send(self.subscriber_answer(&participant, &sdp));
            }
            Command::RemoteCandidate {
                participant,
                role,
                candidate,
            } => self.remote_candidate(&participant, role, &candidate),
            Command::ExpectTrack { participant, track } => self.expect_track(&participant, track),
            Command::SetTrackMuted {
                participant,
                sid,
                muted,
            } => self.set_track_muted(&participant, &sid, muted),
            Command::Subscribe {
                participant,
                track_sids,
                subscribe,
            } => self.set_subscriptions(&participant, &track_sids, subscribe),
            Command::SetSubscribePermission {
                participant,
                permission,
            } => self.set_subscribe_permission(&participant, permission),
            Command::SendData {
                to,
                reliable,
                payload,
            } => self.send_data(&to, reliable, &payload),
            Command::Leave { participant, reply } => {
                let stats = match self.by_key.get(&participant).copied() {
                    Some(slot) => self.remove_participant(slot),
                    None => Default::default(),
                };
                let _ = reply.send(stats);
            }
            Command::ViewerOffer {
                participant,
                sdp,
                reply,
            } => {
                let _ = reply.send(self.viewer_offer(&participant, &sdp));
            }
            Command::View {
                participant,
                publisher,
            } => self.view(&participant, publisher),
            Command::IceRestart {
                participant,
                role,
                ufrag,
                pwd,
                reply,
            } => {
                let _ = reply.send(self.ice_restart(&participant, role, &ufrag, &pwd));
            }
            Command::Tap {
                tap,
                room,
                scope,
                sender,
                reply,
            } => {
                let _ = reply.send(self.add_tap(tap, room, scope, sender));
            }
            Command::Untap { tap } => self.taps.retain(|t| t.id != tap),
            Command::TapKeyframe { tap, track } => self.tap_keyframe(tap, track),
            Command::TrackSettings {
                participant,
                track_sids,
                settings,
            } => {
                if let Ok(slot) = self.slot_of(&participant) {
                    self.track_settings(slot, &track_sids, settings);
                }
            }
            Command::TcpConnection { handoff, reply } => self.adopt_tcp(handoff, reply),
            Command::RestartSubscriberIce { participant } => {
                if let Ok(slot) = self.slot_of(&participant) {
                    self.restart_subscriber_ice(slot);
                }
            }
            Command::Shutdown => {}
        }
    }

    fn join(
        &mut self,
        key: String,
        identity: String,
        room: String,
        options: JoinOptions,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Result<(), SfuError> {
        if self.by_key.contains_key(&key) {
            return Err(SfuError::DuplicateParticipant(key));
        }
        let now = self.now;
        let (mut publisher, mut subscriber) = if options.single_pc {
            (Peer::new(new_single_rtc(now, options.dtls)), None)
        } else {
            (
                Peer::new(new_publisher_rtc(now, options.dtls)),
                Some(Peer::new(new_subscriber_rtc(now, options.dtls))),
            )
        };
        let mut candidates = Vec::new();
        for addr in &self.advertise {
            let candidate = Candidate::host(*addr, "udp")
                .map_err(|e| SfuError::Config(format!("bad host candidate {addr}: {e}")))?;
            candidates.push(candidate);
        }
        for addr in self.tcp.advertise() {
            let candidate = Candidate::builder()
                .tcp()
                .host(*addr)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|e| SfuError::Config(format!("bad TCP host candidate {addr}: {e}")))?;
            candidates.push(candidate);
        }
        for candidate in candidates {
            publisher.rtc.add_local_candidate(candidate.clone());
            if let Some(subscriber) = subscriber.as_mut() {
                subscriber.rtc.add_local_candidate(candidate);
            }
        }
        let participant = Participant {
            key: key.clone(),
            identity,
            viewing: None,
            room: room.clone(),
            options,
            events,
            publisher,
            subscriber,
            receive_lines: Vec::new(),
            awaiting_offer: false,
            expected: Vec::new(),
            early_subscribers: Vec::new(),
            inactive_placeholder: None,
            tracks: Vec::new(),
            permission: None,
            ssrc_tracks: Vec::new(),
            down_tracks: Vec::new(),
            // Our offers carry transport-wide feedback when estimation is on: until the
            // answer says otherwise (or feedback says more), the link is assumed to carry
            // what an estimator starts from (provisionally), so a simulcast track starts
            // below its top layer and probes up rather than overflowing a narrow link.
            allocator: crate::allocator::Allocator::with_estimate(
                self.limits
                    .bandwidth_estimation
                    .then_some(crate::congestion::INITIAL_ESTIMATE),
            ),
            congestion: None,
            remb: None,
            speaking: 0,
            quality: Default::default(),
            pending_offer: None,
            last_offer: None,
            restart_subscriber_ice: false,
            channels: DataChannels::default(),
            data_budget: crate::data_budget::DataBudget::new(self.limits.data_queue_bytes),
            stats: Default::default(),
            first_media_sent: false,
            stream_totals: Vec::new(),
            liveness: crate::liveness::Liveness::new(now),
            offered_sections: 0,
        };
        let slot = match self.parts.iter().position(Option::is_none) {
            Some(slot) => {
                self.parts[slot] = Some(participant);
                slot
            }
            None => {
                self.parts.push(Some(participant));
                self.parts.len() - 1
            }
        };
        self.by_key.insert(key, slot);
        // Both peers get their first timeout on this loop turn.
        self.timers.set(slot, PeerRole::Publisher, now);
        if !options.single_pc {
            self.timers.set(slot, PeerRole::Subscriber, now);
        }
        let members = self.rooms.entry(room).or_default();
        let others: Vec<Slot> = members.clone();
        members.push(slot);
        if options.auto_subscribe && options.can_subscribe {
            for publisher in others {
                self.subscribe_all_of(slot, publisher);
            }
            self.negotiate(slot);
        }
        Ok(())
    }

    /// The slot of a participant a command is about; it becomes the one a panic is pinned on.
    fn slot_of(&mut self, key: &str) -> Result<Slot, SfuError> {
        let slot = self
            .by_key
            .get(key)
            .copied()
            .ok_or_else(|| SfuError::UnknownParticipant(key.to_owned()))?;
        self.current = Some(slot);
        Ok(slot)
    }

    /// A client's offer: on its publisher PC, or on the one PC of a single-PC session.
    pub(crate) fn offer(&mut self, key: &str, sdp: &str) -> Result<crate::Answer, SfuError> {
        let slot = self.slot_of(key)?;
        if self.parts[slot].as_ref().is_some_and(|p| p.single_pc()) {
            return self.single_pc_offer(slot, sdp);
        }
        self.publisher_offer(key, sdp).map(|sdp| crate::Answer {
            sdp,
            mid_to_track: Default::default(),
        })
    }

    pub(crate) fn publisher_offer(&mut self, key: &str, sdp: &str) -> Result<String, SfuError> {
        let slot = self.slot_of(key)?;
        sdp_guard::check(
            sdp,
            self.limits.max_media_sections,
            self.limits.max_remote_candidates,
        )?;
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| sdp_guard::parse_error(sdp, &e))?;
        let Some(part) = self.parts[slot].as_mut() else {
            return Err(SfuError::UnknownParticipant(key.to_owned()));
        };
        let answer = part
            .publisher
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| sdp_guard::negotiation_error(sdp, &e))?;
        part.publisher.remote_sdp(sdp);
        self.drain(slot, PeerRole::Publisher);
        let answer = self.publisher_answer_text(slot, sdp, &answer.to_sdp_string());
        tracing::trace!(
            participant = key,
            offer = sdp,
            answer,
            "publisher negotiation"
        );
        Ok(answer)
    }

    /// str0m's answer to a publisher offer, with each published m-line's codecs in the
    /// order the client asked for, and the dependency descriptor only where AV1 is sent.
    pub(crate) fn publisher_answer_text(&self, slot: Slot, sdp: &str, answer: &str) -> String {
        // The codec each announced track asked for, by the mid its msid sits on.
        let wanted: Vec<(String, String)> = match self.parts[slot].as_ref() {
            Some(part) => crate::sdp_order::msid_tracks(sdp)
                .into_iter()
                .filter_map(|(mid, cid)| Some((mid, part.codec_for_cid(&cid)?.to_owned())))
                .collect(),
            None => Vec::new(),
        };
        let codec_of = |mid: &str| {
            wanted
                .iter()
                .find(|(m, _)| m == mid)
                .map(|(_, c)| c.clone())
        };
        let answer = crate::sdp_order::order_answer(sdp, answer, codec_of);
        crate::svc::dependency_descriptor::only_for_av1(&answer, codec_of)
    }

    pub(crate) fn subscriber_answer(&mut self, key: &str, sdp: &str) -> Result<(), SfuError> {
        let slot = self.slot_of(key)?;
        let offered = self.parts[slot].as_ref().map_or(0, |p| p.offered_sections);
        sdp_guard::check(
            sdp,
            self.limits.max_media_sections.max(offered),
            self.limits.max_remote_candidates,
        )?;
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| sdp_guard::parse_error(sdp, &e))?;
        let Some(part) = self.parts[slot].as_mut() else {
            return Err(SfuError::UnknownParticipant(key.to_owned()));
        };
        let pending = part.pending_offer.take().ok_or(SfuError::NoPendingOffer)?;
        tracing::trace!(participant = key, answer = sdp, "subscriber negotiation");
        let subscriber = part.sender_mut();
        subscriber
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| sdp_guard::negotiation_error(sdp, &e))?;
        subscriber.remote_sdp(sdp);
        subscriber.descriptor_id = crate::svc::dependency_descriptor::negotiated_id(sdp);
        if part.congestion.is_none() && crate::congestion::answer_accepts_transport_cc(sdp) {
            // The allocator already starts from the initial estimate (see `join`).
            part.congestion = Some(Box::new(crate::congestion::Congestion::new(
                self.now,
                self.epoch,
                crate::congestion::TRANSPORT_CC_ID,
            )));
        }
        // An answer without transport-wide feedback but with REMB: the receiver estimates.
        let remb = part.allocator.estimate.is_some() && crate::remb::negotiates_remb(sdp);
        if part.congestion.is_none() && part.remb.is_none() && remb {
            part.remb = Some(Box::new(crate::remb::RembLink::new(
                self.now,
                crate::remb::abs_send_time_id(sdp),
            )));
        }
        // With neither, no feedback will come: nothing limits layers.
        let unlimited =
            part.congestion.is_none() && part.remb.is_none() && part.allocator.estimate.is_some();
        if unlimited {
            part.allocator.estimate = None;
            part.allocator.provisional = false;
        }
        // The client's first connectivity check often beats its answer here (it goes out as
        // soon as the client answered; the answer still crosses signaling). str0m parks such
        // checks until it knows the remote credentials and answers one per timeout, the next
        // one due a pacing interval (50 ms) later. Running the timeout now answers the first
        // check at once; any further parked ones follow on str0m's own schedule.
        if let Err(e) = part.sender_mut().rtc.handle_input(Input::Timeout(self.now)) {
            debug!(
                participant = key,
                "subscriber timeout after the answer: {e}"
            );
        }
        if unlimited {
            self.allocate(slot);
        }
        self.drain(slot, PeerRole::Subscriber);
        self.answer_applied(slot);
        Ok(())
    }

    fn remote_candidate(&mut self, key: &str, role: PeerRole, candidate: &str) {
        let Ok(slot) = self.slot_of(key) else {
            return;
        };
        let line = candidate.strip_prefix("a=").unwrap_or(candidate);
        let limit = self.limits.max_remote_candidates;
        match Candidate::from_sdp_string(line) {
            Ok(candidate) => {
                if let Some(part) = self.parts[slot].as_mut() {
                    let peer = part.peer_mut(role);
                    if peer.trickled >= limit {
                        // Each one costs the ICE agent a pass over all it has: past the
                        // bound a client is only spending our worker's time.
                        debug!(
                            participant = key,
                            "ignored a candidate past max_remote_candidates"
                        );
                        return;
                    }
                    peer.trickled += 1;
                    peer.rtc.add_remote_candidate(candidate);
                    self.drain(slot, role);
                }
            }
            Err(e) => debug!(participant = key, "ignored a remote candidate: {e}"),
        }
    }

    fn expect_track(&mut self, key: &str, track: ExpectedTrack) {
        if let Ok(slot) = self.slot_of(key) {
            if let Some(part) = self.parts[slot].as_mut() {
                part.expected.retain(|t| t.cid != track.cid);
                part.expected.push(track);
            }
        }
    }

    fn set_track_muted(&mut self, key: &str, sid: &str, muted: bool) {
        let Ok(slot) = self.slot_of(key) else {
            return;
        };
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        let Some(index) = part.track_index_by_sid(sid) else {
            return;
        };
        let Some(track) = part.tracks[index].as_mut() else {
            return;
        };
        track.muted = muted;
        if muted {
            return;
        }
        // Resuming video needs a fresh keyframe at every subscriber, and every subscriber's
        // numbering continues where it stopped instead of jumping over the muted stretch.
        self.keyframe_queue
            .push(crate::media::KeyframeWant::all(TrackId {
                publisher: slot,
                index,
            }));
        let down_tracks = track.down_tracks.clone();
        for down in down_tracks {
            if let Some(Some(Some(down))) = self.parts[down.subscriber]
                .as_mut()
                .map(|p| p.down_tracks.get_mut(down.index))
            {
                down.rewriter.resync();
                down.vp8.restart();
            }
        }
    }

    fn send_data(&mut self, to: &[String], reliable: bool, payload: &[u8]) {
        for key in to {
            let Ok(slot) = self.slot_of(key) else {
                continue;
            };
            let Some(part) = self.parts[slot].as_mut() else {
                continue;
            };
            let channel = if reliable {
                part.channels.reliable
            } else {
                part.channels.lossy.or(part.channels.reliable)
            };
            let Some(channel) = channel else {
                debug!(participant = %key, "no data channel open yet; message dropped");
                continue;
            };
            if let Some(mut channel) = part.publisher.rtc.channel(channel) {
                match channel.write(true, payload) {
                    Ok(true) => {}
                    Ok(false) => debug!(participant = %key, "data channel full; message dropped"),
                    Err(e) => debug!(participant = %key, "data channel write failed: {e}"),
                }
            }
            self.drain(slot, PeerRole::Publisher);
        }
    }

    /// Removes a participant and every reference other participants hold to it.
    pub(crate) fn remove_participant(&mut self, slot: Slot) -> crate::ParticipantStats {
        let Some(mut part) = self.parts[slot].take() else {
            return Default::default();
        };
        self.by_key.remove(&part.key);
        self.timers.clear(slot, PeerRole::Publisher);
        self.timers.clear(slot, PeerRole::Subscriber);
        self.renegotiate.retain(|(s, _)| *s != slot);
        self.probing.retain(|s| *s != slot);
        self.dynacast_pending.retain(|t| t.publisher != slot);
        let subscriber_addrs = part.subscriber.iter().flat_map(|p| &p.addrs);
        for addr in part.publisher.addrs.iter().chain(subscriber_addrs) {
            self.by_addr.remove(addr);
        }
        self.close_tcp_links(slot);
        if let Some(members) = self.rooms.get_mut(&part.room) {
            members.retain(|s| *s != slot);
            if members.is_empty() {
                self.rooms.remove(&part.room);
            }
        }
        // Its published tracks disappear at every subscriber and tap.
        for index in 0..part.tracks.len() {
            self.tap_track_ended(TrackId {
                publisher: slot,
                index,
            });
        }
        for track in part.tracks.iter().flatten() {
            for &down in &track.down_tracks {
                self.source_gone(down);
            }
        }
        // Its subscriptions no longer hold places at the publishers.
        for down in part.down_tracks.iter().flatten() {
            if let Some(source) = down.source {
                if let Some(track) = self.published_mut(source) {
                    track.down_tracks.retain(|d| d.subscriber != slot);
                }
                self.refresh_wanted(source);
            }
        }
        let mut touched: Vec<Slot> = self.rooms.get(&part.room).cloned().unwrap_or_default();
        touched.retain(|s| *s != slot);
        for &publisher in &touched {
            if let Some(other) = self.parts[publisher].as_mut() {
                for track in other.tracks.iter_mut().flatten() {
                    track.denied.retain(|k| *k != part.key);
                }
                other.early_subscribers.retain(|(_, k)| *k != part.key);
            }
        }
        for sub in touched {
            self.renegotiate_later(sub);
        }
        part.publisher.rtc.disconnect();
        if let Some(subscriber) = part.subscriber.as_mut() {
            subscriber.rtc.disconnect();
        }
        part.stats.packets_lost += part
            .tracks
            .iter()
            .flatten()
            .map(crate::published_track::PublishedTrack::packets_lost)
            .sum::<u64>();
        part.stats
    }
}
