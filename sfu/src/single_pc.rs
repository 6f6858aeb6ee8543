//! LiveKit's signaling v1: one PeerConnection per participant, and the client always offers.
//!
//! Beside what it publishes, the client's offer carries `recvonly` m-lines to receive on
//! (livekit-client opens three of each kind; more when asked). A down-track takes a free
//! line of its kind, and the answer to the client's next offer makes that line `sendonly`
//! with the track's msid (`PA_…|TR_…`); every free line is answered `inactive`. A change
//! of what the participant receives asks the client for that next offer with
//! `MediaSectionsRequirement` (lines to add, or none: just offer again), where a v0
//! session gets a server offer (`subscriptions.rs`).
//!
//! The one PC also receives what the client publishes, for which str0m stamps and answers
//! transport-wide sequence numbers. Our own send path stamps its own on what it forwards
//! (`congestion.rs`), so str0m must not stamp a second sequence on the receive lines: the
//! header extensions our send path writes are taken out of those lines before str0m reads
//! the offer, and put back into our answer.

use std::collections::BTreeMap;

use str0m::change::SdpOffer;
use str0m::media::{MediaKind, Mid};
use str0m::Event;

use crate::api::{PeerEvent, PeerRole, SfuError, TrackKind};
use crate::down_track::OutState;
use crate::participant::{Participant, Slot};
use crate::worker::Worker;

/// One of the client's receive m-lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReceiveLine {
    pub mid: Mid,
    pub kind: TrackKind,
}

/// What the client is answered: the SDP, and the track each receive line carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    pub sdp: String,
    /// mid → `TR_…` sid, for every line that carries a track (single-PC sessions only).
    pub mid_to_track: BTreeMap<String, String>,
}

/// The header extensions our send path writes, never str0m (see the module comment).
const OUR_EXTENSIONS: [&str; 2] = [
    crate::congestion::TRANSPORT_CC_URI,
    crate::remb::ABS_SEND_TIME_URI,
];

/// Which role's handler an event of a single PC belongs to: what concerns the media we
/// send is the subscriber's, the rest the publisher's.
pub(crate) fn role_of(event: &Event) -> PeerRole {
    match event {
        Event::RawPacket(_)
        | Event::KeyframeRequest(_)
        | Event::MediaEgressStats(_)
        | Event::IceConnectionStateChange(_) => PeerRole::Subscriber,
        _ => PeerRole::Publisher,
    }
}

/// The SDP split into its session part and its m-sections, each with its lines ending.
fn sections(sdp: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("m=") {
            out.push(String::new());
        }
        if let Some(last) = out.last_mut() {
            last.push_str(line);
        }
    }
    out
}

fn attribute<'a>(section: &'a str, name: &str) -> Option<&'a str> {
    section
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

fn direction(section: &str) -> Option<&str> {
    section.lines().find_map(|l| {
        let l = l.trim();
        matches!(l, "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive").then_some(l)
    })
}

fn is_extension_of_ours(line: &str) -> bool {
    line.starts_with("a=extmap:") && OUR_EXTENSIONS.iter().any(|uri| line.contains(uri))
}

/// The client's offer with our send path's header extensions taken out of its receive
/// lines, and the ids it gave them there: (transport-wide sequence, send time).
pub(crate) fn offer_for_str0m(sdp: &str) -> (String, Option<u8>, Option<u8>) {
    let mut out = String::with_capacity(sdp.len());
    let (mut transport, mut send_time) = (None, None);
    for section in sections(sdp) {
        if direction(&section) != Some("a=recvonly") {
            out.push_str(&section);
            continue;
        }
        transport = transport.or(crate::congestion::transport_cc_id(&section));
        send_time = send_time.or(crate::remb::abs_send_time_id(&section));
        for line in section.split_inclusive('\n') {
            if !is_extension_of_ours(line) {
                out.push_str(line);
            }
        }
    }
    (out, transport, send_time)
}

/// What one receive line is answered with: `Some((stream id, track id))` to send a track,
/// `None` to stay silent.
type LineAnswer = Option<(String, String)>;

/// Rewrites str0m's answer: each receive line (by mid) gets its direction and msid, and
/// `extensions` (id, uri) for our send path.
fn rewrite_answer(answer: &str, lines: &[(Mid, LineAnswer)], extensions: &[(u8, &str)]) -> String {
    let mut out = String::with_capacity(answer.len() + 256);
    for section in sections(answer) {
        let line = attribute(&section, "a=mid:")
            .and_then(|mid| lines.iter().find(|(m, _)| m.to_string() == mid));
        let Some((_, carried)) = line else {
            out.push_str(&section);
            continue;
        };
        for l in section.split_inclusive('\n') {
            let trimmed = l.trim_end();
            if direction(trimmed).is_some() {
                out.push_str(if carried.is_some() {
                    "a=sendonly\r\n"
                } else {
                    "a=inactive\r\n"
                });
                continue;
            }
            let identifies_stream = trimmed.starts_with("a=msid:")
                || trimmed.starts_with("a=ssrc:")
                || trimmed.starts_with("a=ssrc-group:");
            match carried {
                None if identifies_stream => {}
                Some((stream, track)) if trimmed.starts_with("a=msid:") => {
                    out.push_str(&format!("a=msid:{stream} {track}\r\n"));
                }
                Some((stream, track)) if trimmed.starts_with("a=ssrc:") => {
                    match trimmed.split_once(" msid:") {
                        Some((head, _)) => {
                            out.push_str(&format!("{head} msid:{stream} {track}\r\n"))
                        }
                        None => out.push_str(l),
                    }
                }
                _ => out.push_str(l),
            }
            if trimmed.starts_with("a=mid:") {
                for (id, uri) in extensions {
                    out.push_str(&format!("a=extmap:{id} {uri}\r\n"));
                }
            }
        }
    }
    out
}

/// Binds down-tracks waiting for a line to free lines of their kind; returns how many
/// lines of each kind (audio, video) are still missing.
fn bind_free_lines(part: &mut Participant) -> (u32, u32) {
    let mut taken: Vec<Mid> = part
        .down_tracks
        .iter()
        .flatten()
        .filter_map(|d| d.mid())
        .collect();
    let mut missing = (0, 0);
    for down in part.down_tracks.iter_mut().flatten() {
        if down.state != OutState::ToOpen {
            continue;
        }
        let free = part
            .receive_lines
            .iter()
            .find(|line| line.kind == down.kind && !taken.contains(&line.mid));
        match free {
            Some(line) => {
                down.state = OutState::Negotiating(line.mid);
                taken.push(line.mid);
            }
            None if down.kind == TrackKind::Audio => missing.0 += 1,
            None => missing.1 += 1,
        }
    }
    missing
}

impl Worker {
    /// A single-PC client's offer: what it publishes is taken as on a publisher PC, and its
    /// receive lines carry what it is subscribed to.
    pub(crate) fn single_pc_offer(&mut self, slot: Slot, sdp: &str) -> Result<Answer, SfuError> {
        let receiving = self.parts[slot].as_ref().map_or(0, |p| p.down_tracks.len());
        crate::sdp_guard::check(
            sdp,
            self.limits.max_media_sections + receiving,
            self.limits.max_remote_candidates,
        )?;
        let (for_str0m, transport_id, send_time_id) = offer_for_str0m(sdp);
        let offer = SdpOffer::from_sdp_string(&for_str0m)
            .map_err(|e| crate::sdp_guard::parse_error(sdp, &e))?;
        let estimate = self.limits.bandwidth_estimation;
        let now = self.now;
        let Some(part) = self.parts[slot].as_mut() else {
            return Err(SfuError::Negotiation("the participant left".into()));
        };
        part.awaiting_offer = false;
        let answer = part
            .publisher
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| crate::sdp_guard::negotiation_error(sdp, &e))?;
        part.publisher.remote_sdp(sdp);
        // The receive lines are the client's recvonly m-lines: those str0m sends on.
        part.receive_lines = crate::sdp_order::mids(sdp)
            .into_iter()
            .filter_map(|mid| {
                let mid = Mid::from(mid.as_str());
                let media = part.publisher.rtc.media(mid)?;
                if !media.direction().is_sending() {
                    return None;
                }
                let kind = match media.kind() {
                    MediaKind::Audio => TrackKind::Audio,
                    MediaKind::Video => TrackKind::Video,
                };
                Some(ReceiveLine { mid, kind })
            })
            .collect();
        // A line the client no longer offers is no longer ours to send on.
        let lines = part.receive_lines.clone();
        for entry in part.down_tracks.iter_mut() {
            let Some(down) = entry.as_mut() else {
                continue;
            };
            let Some(mid) = down.mid() else {
                continue;
            };
            if lines.iter().any(|l| l.mid == mid) {
                continue;
            }
            match down.source {
                Some(_) => down.state = OutState::ToOpen,
                None => *entry = None,
            }
        }
        if part.congestion.is_none() && part.remb.is_none() && part.allocator.estimate.is_some() {
            match (estimate, transport_id, send_time_id) {
                (true, Some(id), _) => {
                    part.congestion = Some(Box::new(crate::congestion::Congestion::new(
                        now, self.epoch, id,
                    )));
                }
                (true, None, time) if crate::remb::negotiates_remb(sdp) => {
                    part.remb = Some(Box::new(crate::remb::RembLink::new(now, time)));
                }
                _ => {
                    part.allocator.estimate = None;
                    part.allocator.provisional = false;
                }
            }
        }
        bind_free_lines(part);
        // This answer silences every line whose track went away.
        for down in part.down_tracks.iter_mut().flatten() {
            if let OutState::ToStop(mid) = down.state {
                down.state = OutState::NegotiatingStop(mid);
            }
        }
        // On every receive line, free or not: a client may offer a line again with only
        // the extensions its last answer kept.
        let mut extensions: Vec<(u8, &str)> = Vec::new();
        if let Some(congestion) = &part.congestion {
            extensions.push((
                congestion.extension_id(),
                crate::congestion::TRANSPORT_CC_URI,
            ));
        }
        if let Some(id) = part.remb.as_ref().and_then(|r| r.abs_send_time_id()) {
            extensions.push((id, crate::remb::ABS_SEND_TIME_URI));
        }
        let mut mid_to_track = BTreeMap::new();
        let answered: Vec<(Mid, LineAnswer)> = lines
            .iter()
            .map(|line| {
                let down = part.down_tracks.iter().flatten().find(|d| {
                    matches!(d.state, OutState::Negotiating(m) | OutState::Open(m) if m == line.mid)
                });
                let carried = down.map(|d| {
                    mid_to_track.insert(line.mid.to_string(), d.track_sid.clone());
                    (
                        format!("{}|{}", d.publisher_key, d.track_sid),
                        d.track_sid.clone(),
                    )
                });
                (line.mid, carried)
            })
            .collect();
        let answer = self.publisher_answer_text(slot, sdp, &answer.to_sdp_string());
        let answer = rewrite_answer(&answer, &answered, &extensions);
        if let Some(part) = self.parts[slot].as_mut() {
            part.publisher.descriptor_id =
                crate::svc::dependency_descriptor::negotiated_id(&answer);
        }
        self.drain(slot, PeerRole::Publisher);
        self.answer_applied(slot);
        Ok(Answer {
            sdp: answer,
            mid_to_track,
        })
    }

    /// What a change of a single-PC participant's down-tracks needs: lines bound to the
    /// waiting down-tracks, stopped lines freed, and the client asked for the offer whose
    /// answer says so (with more lines, if it has too few).
    pub(crate) fn single_pc_negotiate(&mut self, slot: Slot) {
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        // Before the client's first offer there are no lines yet; that offer (carried in
        // the join) brings some, and its answer binds them.
        let offered = part.publisher.remote_ufrag.is_some();
        if part.awaiting_offer || !offered || !part.options.can_subscribe {
            return;
        }
        let mut changed = false;
        for down in part.down_tracks.iter_mut().flatten() {
            if let OutState::ToStop(mid) = down.state {
                down.state = OutState::NegotiatingStop(mid);
                changed = true;
            }
        }
        let (audios, videos) = bind_free_lines(part);
        changed |= audios > 0
            || videos > 0
            || part
                .down_tracks
                .iter()
                .flatten()
                .any(|d| matches!(d.state, OutState::Negotiating(_)));
        if !changed {
            return;
        }
        part.awaiting_offer = true;
        part.last_offer = Some(self.now);
        part.emit(PeerEvent::MediaSectionsRequirement { audios, videos });
    }
}

#[cfg(test)]
#[path = "single_pc_tests.rs"]
mod tests;
