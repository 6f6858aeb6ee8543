//! Each subscriber's link: transport-wide sequence numbers on what our send path sends to
//! it, the feedback its browser returns (TWCC) turned into an estimate, and the estimate
//! handed to its allocator.
//!
//! str0m's own estimator only sees packets str0m sends (docs/decisions.md, "Bandwidth
//! estimation: our own records"), so subscriber PCs negotiate no transport-wide extension
//! through str0m; we add it to the SDP ourselves and own its sequence space.

use std::time::{Duration, Instant};

use str0m::rtp::rtcp::Twcc;
use tracing::debug;

use crate::bwe::micros_since;
use crate::bwe::Estimator;
use crate::participant::Slot;
use crate::rtp_out::{RtpOut, Stamp, TransportSeq};
use crate::twcc_report::{extend_u24, TwccReport};
use crate::worker::Worker;

/// The extension id we offer transport-wide sequence numbers under: the one str0m's
/// standard map would use, left free because subscriber PCs take it out (`rtc_config.rs`).
pub(crate) const TRANSPORT_CC_ID: u8 = 3;
pub(crate) const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
/// What a new link is assumed to carry until its feedback says more: enough for a 720p
/// camera's middle layer and audio, not its top layer.
pub(crate) const INITIAL_ESTIMATE: u64 = 1_000_000;
/// A new link's estimate is provisional (no top layers) until a probe was judged, or this
/// long after congestion control started.
const PROVISIONAL_FOR: Duration = Duration::from_secs(3);
/// The allocator looks again when the estimate moved by this share since it last looked...
const REALLOCATE_CHANGE_PERCENT: u64 = 5;
/// ... or this long after it last looked.
const REALLOCATE_INTERVAL: Duration = Duration::from_secs(1);
/// Loss above this share counts as congestion (the estimator cuts its estimate from here).
const CONGESTING_LOSS: f64 = 0.1;
/// Packets taken from one feedback message: a browser's name ~100; a receiver claiming more
/// (up to 65,535) is cut here.
const MAX_REPORTED: usize = 2048;
/// Arrivals count from this far above 0 on the receiver's clock: a later report may name
/// packets that arrived before the first one reported (reordered, or a negative delta).
const ARRIVAL_SLACK_US: u64 = 60_000_000;
/// A reference time counts 64 ms.
const REFERENCE_UNIT_US: u64 = 64_000;
/// Padding bytes per probe packet: RTP's most (the count is one byte).
const PADDING: u8 = 255;
/// Bits a padding packet counts for (its padding; headers are small change).
const PADDING_BITS: u64 = PADDING as u64 * 8;
/// Padding goes out in bursts this far apart while a probe runs.
pub(crate) const PROBE_TICK: Duration = Duration::from_millis(5);
/// At most this many padding packets per burst, however late the tick.
const PROBE_BURST_MAX: u64 = 16;

/// The subscriber side of congestion control on one subscriber PC.
pub(crate) struct Congestion {
    /// The header extension id the peer knows transport-wide numbers by.
    extension_id: u8,
    next_seq: u64,
    /// The origin of the receiver's clock in feedback (only differences matter).
    time_zero: Instant,
    /// The highest sequence number feedback has named, to extend the next one's 16 bits.
    feedback_seq: u64,
    /// The last reference time feedback gave, extended past its 24 bits (it wraps every
    /// 12.4 days of the receiver's clock, which may start anywhere).
    feedback_reference: Option<u64>,
    pub estimator: Estimator,
    /// What the allocator last saw (estimate, congested), and when.
    allocated: Option<(Link, Instant)>,
    /// The probe running, if any.
    probe: Option<ProbeRun>,
}

/// One transport-wide feedback message: parsed by str0m (it came in a compound with other
/// RTCP), or read in place by `feedback_in.rs` (it came alone, as nearly all do).
pub(crate) enum TransportFeedback<'a> {
    Parsed(Twcc),
    InPlace(&'a TwccReport<'a>),
}

/// What the allocator is told about a subscriber's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link {
    pub estimate: u64,
    pub congested: bool,
}

impl Link {
    /// Whether the allocator should look at this link again, having last seen `seen`:
    /// congestion came or went, the estimate moved enough, or long enough passed.
    pub fn news_since(&self, seen: Option<(Link, Instant)>, now: Instant) -> bool {
        match seen {
            None => true,
            Some((last, at)) => {
                self.congested != last.congested
                    || self.estimate.abs_diff(last.estimate) * 100
                        > last.estimate * REALLOCATE_CHANGE_PERCENT
                    || now.saturating_duration_since(at) >= REALLOCATE_INTERVAL
            }
        }
    }
}

/// A probe under way: padding on top of the media, up to its target rate, until it ends.
#[derive(Debug, Clone, Copy)]
struct ProbeRun {
    until: Instant,
    padding_bps: u64,
    /// Padding bits owed since the last burst.
    owed_bits: u64,
    last_tick: Instant,
}

impl Congestion {
    /// Congestion control for a peer that knows transport-wide numbers by `extension_id`;
    /// send times count from `epoch`, the worker's (see [`Estimator`]).
    pub fn new(now: Instant, epoch: Instant, extension_id: u8) -> Self {
        Self {
            extension_id,
            next_seq: 0,
            time_zero: now,
            feedback_seq: 0,
            feedback_reference: None,
            estimator: Estimator::new(INITIAL_ESTIMATE, epoch),
            allocated: None,
            probe: None,
        }
    }

    /// The header extension id the peer knows transport-wide numbers by.
    pub fn extension_id(&self) -> u8 {
        self.extension_id
    }

    /// The number for the next packet our path sends to this peer.
    pub fn next(&mut self) -> (u64, TransportSeq) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let stamped = TransportSeq {
            id: self.extension_id,
            seq: seq as u16,
        };
        (seq, stamped)
    }

    /// A packet sent under the 16-bit number `seq` went again (a NACK answer), with the
    /// same number: its feedback is no delay sample.
    pub fn resent(&mut self, seq: u16) {
        // The most recent number with these 16 bits.
        let last = self.next_seq.saturating_sub(1);
        let candidate = (last & !0xffff) | u64::from(seq);
        let extended = if candidate > last {
            candidate.saturating_sub(0x1_0000)
        } else {
            candidate
        };
        self.estimator.on_resent(extended);
    }

    /// Feeds one feedback message to the estimator.
    pub fn feedback(&mut self, now: Instant, feedback: TransportFeedback) {
        let reference_us = self.reference_us(match &feedback {
            TransportFeedback::Parsed(twcc) => twcc.reference_time,
            TransportFeedback::InPlace(report) => report.reference_time(),
        });
        let (sent, time_zero, extend_from) = (self.next_seq, self.time_zero, self.feedback_seq);
        let (mut taken, mut highest) = (0, None);
        let estimator = &mut self.estimator;
        // Numbers we never sent (a confused or hostile receiver) say nothing, and one
        // message names at most what a few seconds of sending could.
        let mut take = |seq: u64, arrival: Option<u64>| {
            if seq < sent {
                estimator.on_reported(seq, arrival);
                highest = Some(highest.map_or(seq, |h: u64| h.max(seq)));
                taken += 1;
            }
            taken < MAX_REPORTED
        };
        match feedback {
            TransportFeedback::Parsed(twcc) => {
                // str0m counts arrivals from `time_zero` plus the reference time's 24 bits;
                // moved to where ours count from (its wraps added back, and the slack).
                let base = reference_us - u64::from(twcc.reference_time) * REFERENCE_UNIT_US;
                for (seq, _, arrival) in twcc.into_iter(time_zero, extend_from.into()) {
                    let arrival = arrival.map(|at| base + micros_since(time_zero, at));
                    if !take(*seq, arrival) {
                        break;
                    }
                }
            }
            TransportFeedback::InPlace(report) => {
                report.for_each(reference_us, extend_from, take);
            }
        }
        if let Some(highest) = highest {
            self.feedback_seq = self.feedback_seq.max(highest);
        }
        self.estimator.end_feedback(now);
    }

    /// The microseconds a report's 24-bit `reference` time stands for on our reading of the
    /// receiver's clock: extended across its wraps, plus [`ARRIVAL_SLACK_US`].
    fn reference_us(&mut self, reference: u32) -> u64 {
        let extended = extend_u24(self.feedback_reference.unwrap_or(0), reference);
        self.feedback_reference = Some(extended);
        extended * REFERENCE_UNIT_US + ARRIVAL_SLACK_US
    }

    /// What the link is known to carry, once feedback acknowledged something: the
    /// estimate, and whether it shows congestion.
    fn link(&self) -> Option<Link> {
        self.estimator.acked_bitrate()?;
        let congested = self.estimator.congested()
            || self.estimator.loss().is_some_and(|l| l > CONGESTING_LOSS);
        Some(Link {
            estimate: self.estimator.estimate(),
            congested,
        })
    }

    /// The link, if it changed enough since the allocator last saw it (or long enough
    /// passed) that the allocator should look again; counted as seen.
    pub fn link_to_allocate(&mut self, now: Instant) -> Option<Link> {
        let link = self.link()?;
        let due = link.news_since(self.allocated, now);
        if due {
            self.allocated = Some((link, now));
        }
        due.then_some(link)
    }
}

impl Congestion {
    /// Starts a probe if the estimator wants one for what the allocator lacks.
    fn start_probe(&mut self, now: Instant, allocated: u64, deficit: u64) -> bool {
        if deficit == 0 || self.probe.is_some() {
            return false;
        }
        let Some(probe) = self.estimator.probe_due(now, allocated + deficit) else {
            return false;
        };
        self.probe = Some(ProbeRun {
            until: now + probe.duration,
            padding_bps: probe.target_bps.saturating_sub(allocated),
            owed_bits: 0,
            last_tick: now,
        });
        true
    }

    /// How many padding packets are due now; `None` once the probe is over, or as soon as
    /// the link shows overuse (the probe has its answer, and the queue it built would delay
    /// audio and video).
    fn padding_due(&mut self, now: Instant) -> Option<u64> {
        let run = self.probe.as_mut()?;
        if now >= run.until || self.estimator.congested() {
            self.probe = None;
            return None;
        }
        let elapsed = now.saturating_duration_since(run.last_tick);
        run.last_tick = now;
        run.owed_bits += run.padding_bps * elapsed.as_micros() as u64 / 1_000_000;
        let per_packet = u64::from(PADDING) * 8;
        let count = (run.owed_bits / per_packet).min(PROBE_BURST_MAX);
        run.owed_bits = run
            .owed_bits
            .saturating_sub(count * per_packet)
            .min(per_packet * PROBE_BURST_MAX);
        Some(count)
    }
}

/// The stamp for a packet our path sends now to a subscriber whose link is estimated by
/// `congestion` (TWCC: the next transport-wide number, also returned extended, for the
/// estimator's record once the packet's size is known) or by its receiver (`remb`).
pub(crate) fn stamp_for(
    congestion: Option<&mut Congestion>,
    remb: Option<&crate::remb::RembLink>,
    now: Instant,
) -> (Option<u64>, Option<Stamp>) {
    match (congestion, remb) {
        (Some(congestion), _) => {
            let (seq, stamped) = congestion.next();
            (Some(seq), Some(Stamp::Transport(stamped)))
        }
        (None, Some(remb)) => (None, remb.stamp(now)),
        (None, None) => (None, None),
    }
}

/// Offers, in every m-section of a subscriber offer, transport-wide sequence numbers and,
/// for a receiver that estimates the link itself (REMB), the send time.
pub(crate) fn offer_feedback_extensions(sdp: &str) -> String {
    let sdp = with_extension(
        sdp,
        crate::remb::ABS_SEND_TIME_ID,
        crate::remb::ABS_SEND_TIME_URI,
    );
    with_extension(&sdp, TRANSPORT_CC_ID, TRANSPORT_CC_URI)
}

/// Adds the header extension `uri` under `id` to every m-section of `sdp` (our offer, or
/// our answer to a viewer that offered it): one our send path writes, so str0m, which
/// would write its own values into it, does not negotiate it.
pub(crate) fn with_extension(sdp: &str, id: u8, uri: &str) -> String {
    let line = format!("a=extmap:{id} {uri}\r\n");
    let mut out = String::with_capacity(sdp.len() + 128);
    for piece in sdp.split_inclusive('\n') {
        out.push_str(piece);
        if piece.starts_with("a=mid:") {
            out.push_str(&line);
        }
    }
    out
}

/// Whether a subscriber's answer kept the transport-wide sequence numbers we offered.
pub(crate) fn answer_accepts_transport_cc(sdp: &str) -> bool {
    transport_cc_id(sdp) == Some(TRANSPORT_CC_ID)
}

/// The id `sdp` gives transport-wide sequence numbers, if one our send path can write
/// (1–14: the one-byte header form).
pub(crate) fn transport_cc_id(sdp: &str) -> Option<u8> {
    extension_id(sdp, TRANSPORT_CC_URI)
}

/// The id `sdp` gives the header extension `uri`, if one our send path can write (1–14:
/// the one-byte header form).
pub(crate) fn extension_id(sdp: &str, uri: &str) -> Option<u8> {
    extmap_id(sdp, uri).filter(|id| (1..=14).contains(id))
}

/// The id `sdp`'s `a=extmap` line gives `uri`, if it has one.
pub(crate) fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let (id, named) = line.strip_prefix("a=extmap:")?.split_once(' ')?;
        let id: u8 = id.split('/').next()?.parse().ok()?;
        let named = named.split_whitespace().next()?;
        (named == uri && id >= 1).then_some(id)
    })
}

/// How often subscribers that lack bits are checked for a probe even without feedback.
pub(crate) const QUIET_PROBE_CHECK: Duration = Duration::from_secs(1);

impl Worker {
    /// A subscriber's TWCC feedback: into its estimator, and to its allocator when the
    /// estimate moved.
    pub(crate) fn transport_feedback(&mut self, slot: Slot, feedback: TransportFeedback) {
        let now = self.now;
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        let Some(congestion) = part.congestion.as_mut() else {
            return;
        };
        congestion.feedback(now, feedback);
        let confirmed = part.allocator.provisional
            && (congestion.estimator.probed()
                || now.saturating_duration_since(congestion.time_zero) >= PROVISIONAL_FOR);
        if confirmed {
            // The link has been probed (or carried feedback long enough): its estimate
            // now decides the top layers too.
            part.allocator.provisional = false;
            self.allocate(slot);
        }
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        let Some(congestion) = part.congestion.as_mut() else {
            return;
        };
        if let Some(link) = congestion.link_to_allocate(now) {
            debug!(
                participant = %part.key,
                estimate = link.estimate,
                congested = link.congested,
                acked = congestion.estimator.acked_bitrate(),
                "subscriber link"
            );
            metrics::histogram!("switchboard_subscriber_estimate_bps").record(link.estimate as f64);
            part.allocator.estimate = Some(link.estimate);
            part.allocator.congested = link.congested;
            self.allocate(slot);
        }
        self.maybe_probe(slot);
    }

    /// Probes the links of subscribers that lack bits but get no feedback: a subscriber
    /// whose every video track is paused receives nothing to acknowledge, and only a probe
    /// can show that its link has room again. Called every `QUIET_PROBE_CHECK`.
    pub(crate) fn probe_quiet_links(&mut self) {
        for slot in 0..self.parts.len() {
            let lacking = self.parts[slot]
                .as_ref()
                .is_some_and(|p| p.congestion.is_some() && p.allocator.deficit() > 0);
            if lacking {
                self.maybe_probe(slot);
            }
        }
    }

    /// Starts a probe of the subscriber's link if its allocator lacks bits and its
    /// estimator allows one now.
    fn maybe_probe(&mut self, slot: Slot) {
        let now = self.now;
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        let (allocated, deficit) = (part.allocator.allocated(), part.allocator.deficit());
        if let Some(congestion) = part.congestion.as_mut() {
            if congestion.start_probe(now, allocated, deficit) {
                debug!(participant = %part.key, allocated, deficit, "probe");
                metrics::counter!("switchboard_probes_total").increment(1);
                if !self.probing.contains(&slot) {
                    self.probing.push(slot);
                }
            }
        }
    }

    /// Sends the padding due on every running probe; forgets the probes that ended.
    pub(crate) fn probe_ticks(&mut self) {
        if self.probing.is_empty() {
            return;
        }
        let now = self.now;
        let mut probing = std::mem::take(&mut self.probing);
        probing.retain(|&slot| {
            let due = self.parts[slot].as_mut().and_then(|p| {
                let (sending, deficit) = (p.allocator.allocated(), p.allocator.deficit());
                match (p.congestion.as_mut(), p.remb.as_mut()) {
                    (Some(c), _) => c.padding_due(now),
                    (None, Some(remb)) => remb.padding_due(now, sending, deficit, PADDING_BITS),
                    (None, None) => None,
                }
            });
            match due {
                Some(count) => {
                    self.send_padding(slot, count);
                    true
                }
                None => false,
            }
        });
        self.probing = probing;
    }

    /// Sends `count` padding-only packets to the subscriber in `slot`, on a video stream
    /// that just ended a frame (so no frame is split) or is paused (its last frame may be
    /// cut short, but it restarts on a keyframe; and a subscriber whose every track is
    /// paused must still be probed, or it could never resume), numbered in its sequence.
    fn send_padding(&mut self, slot: Slot, count: u64) {
        let now = self.now;
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        let sender = crate::participant::sender_mut(&mut part.subscriber, &mut part.publisher);
        let (Some(direct), Some(to)) = (&sender.direct, sender.media_to) else {
            return;
        };
        if part.congestion.is_none() && part.remb.is_none() {
            return;
        }
        let Some(down) = part.down_tracks.iter_mut().flatten().find(|d| {
            (d.frame_end || d.paused)
                && d.kind == crate::api::TrackKind::Video
                && d.open_mid().is_some()
        }) else {
            return;
        };
        let (Some(ssrc), Some(pt)) = (down.ssrc, down.last_pt) else {
            return;
        };
        for _ in 0..count {
            let Some((seq, timestamp)) = down.rewriter.pad() else {
                return;
            };
            let (transport_seq, stamp) =
                stamp_for(part.congestion.as_deref_mut(), part.remb.as_deref(), now);
            let rtp = RtpOut {
                ssrc: *ssrc,
                pt,
                marker: false,
                seq,
                timestamp,
                payload: &[],
                stamp,
                padding: PADDING,
                vp8: None,
                descriptor: None,
            };
            let datagram = direct.packet(self.sink.buffer(), &rtp);
            if let (Some(congestion), Some(transport_seq)) =
                (part.congestion.as_mut(), transport_seq)
            {
                let sent_us = congestion.estimator.micros(now);
                congestion
                    .estimator
                    .on_sent(transport_seq, sent_us, datagram.len(), true);
            }
            self.metrics.datagram_out(&datagram);
            self.sink.send(datagram, to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offer_carries_the_extension_in_every_section_and_the_answer_is_read() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n";
        let offered = offer_feedback_extensions(offer);
        assert_eq!(offered.matches(TRANSPORT_CC_URI).count(), 2);
        assert!(offered.contains("a=mid:1\r\na=extmap:3 http://www.ietf.org/"));
        assert_eq!(offered.matches(crate::remb::ABS_SEND_TIME_URI).count(), 2);
        let answer =
            format!("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=extmap:3 {TRANSPORT_CC_URI}\r\n");
        assert!(answer_accepts_transport_cc(&answer));
        assert!(!answer_accepts_transport_cc(
            "v=0\r\na=extmap:3 urn:other\r\n"
        ));
        assert!(!answer_accepts_transport_cc(
            &answer.replace("extmap:3", "extmap:5")
        ));
        // A viewer's offer names its own id, which the answer then uses.
        let viewer = answer.replace("extmap:3", "extmap:5/sendrecv");
        assert_eq!(transport_cc_id(&viewer), Some(5));
        assert_eq!(
            transport_cc_id(&answer.replace("extmap:3", "extmap:15")),
            None
        );
        assert!(
            with_extension(offer, 5, TRANSPORT_CC_URI).contains("a=mid:0\r\na=extmap:5 http://")
        );
    }

    /// A TWCC message (RFC draft-holmer §3.1) naming `count` packets from `base`, all lost:
    /// one run-length chunk, no deltas.
    fn all_lost(base: u16, count: u16) -> Twcc {
        let mut raw = vec![0x8f, 205, 0, 5]; // V=2, FMT=15, PT=205, 5 words after this one
        raw.extend_from_slice(&1u32.to_be_bytes()); // sender SSRC
        raw.extend_from_slice(&2u32.to_be_bytes()); // media SSRC
        raw.extend_from_slice(&base.to_be_bytes());
        raw.extend_from_slice(&count.to_be_bytes());
        raw.extend_from_slice(&[0, 0, 0, 0]); // reference time, feedback count
        raw.extend_from_slice(&(count & 0x1fff).to_be_bytes()); // run of "not received"
        raw.extend_from_slice(&[0, 0]);
        match str0m::rtp::rtcp::Rtcp::try_from(raw.as_slice()) {
            Ok(str0m::rtp::rtcp::Rtcp::Twcc(twcc)) => twcc,
            other => panic!("not a TWCC message: {other:?}"),
        }
    }

    #[test]
    fn a_receiver_naming_thousands_of_packets_is_read_no_further_than_the_bound() {
        let t0 = Instant::now();
        let mut congestion = Congestion::new(t0, t0, TRANSPORT_CC_ID);
        for _ in 0..8000 {
            congestion.next();
        }
        congestion.feedback(t0, TransportFeedback::Parsed(all_lost(0, 8000)));
        assert_eq!(congestion.feedback_seq, MAX_REPORTED as u64 - 1);
        // Numbers never sent say nothing, however many are claimed.
        let mut fresh = Congestion::new(t0, t0, TRANSPORT_CC_ID);
        fresh.next();
        fresh.feedback(t0, TransportFeedback::Parsed(all_lost(0, 8000)));
        assert_eq!(fresh.feedback_seq, 0);
    }

    #[test]
    fn a_probe_stops_padding_as_soon_as_the_link_shows_overuse() {
        let t0 = Instant::now();
        let ms = |n: u64| Duration::from_millis(n);
        let mut congestion = Congestion::new(t0, t0, TRANSPORT_CC_ID);
        congestion.estimator.on_feedback(t0, &[]);
        assert!(congestion.start_probe(t0, 300_000, 1_000_000));
        assert!(congestion.padding_due(t0 + ms(20)).is_some_and(|n| n > 0));
        // Each packet waits 3 ms longer than the one before: a queue growing.
        let mut at = t0;
        for i in 0..200u64 {
            at = t0 + ms(20 + 5 * i);
            let sent_us = congestion.estimator.micros(at);
            congestion.estimator.on_sent(i, sent_us, 1000, false);
            let arrival = at + ms(40 + 3 * i);
            congestion
                .estimator
                .on_feedback(arrival + ms(10), &[(i, Some(micros_since(t0, arrival)))]);
            if congestion.estimator.congested() {
                break;
            }
        }
        assert!(congestion.estimator.congested());
        assert!(
            at < t0 + ms(500),
            "overuse shows before the probe would end"
        );
        assert_eq!(congestion.padding_due(at), None);
        assert!(congestion.probe.is_none());
    }

    #[test]
    fn numbers_run_on_and_feedback_for_numbers_never_sent_is_ignored() {
        let t0 = Instant::now();
        let mut congestion = Congestion::new(t0, t0, TRANSPORT_CC_ID);
        let (first, stamped) = congestion.next();
        assert_eq!((first, stamped.seq, stamped.id), (0, 0, TRANSPORT_CC_ID));
        assert_eq!(congestion.next().0, 1);
        // Nothing acknowledged yet: the allocator is told nothing.
        assert_eq!(congestion.link_to_allocate(t0), None);
    }

    #[test]
    fn arrivals_run_on_across_the_reference_times_wrap() {
        let t0 = Instant::now();
        let mut congestion = Congestion::new(t0, t0, TRANSPORT_CC_ID);
        let before = congestion.reference_us(0xff_fffe);
        // Two steps of 64 ms, across the wrap; then a late report from before it.
        let after = congestion.reference_us(0);
        assert_eq!(after - before, 2 * REFERENCE_UNIT_US);
        let late = congestion.reference_us(0xff_ffff);
        assert_eq!(after - late, REFERENCE_UNIT_US);
    }
}
