//! Links whose receiver estimates itself. A subscriber that negotiated no transport-wide
//! feedback but `goog-remb` (a player that left TWCC out of its offer, an older client)
//! measures the delay of what we send it, from the send times we stamp (abs-send-time),
//! and reports the rate it can take in REMB messages. The report is its link's estimate.
//!
//! A receiver's estimate can only grow from what it receives (libwebrtc allows at most
//! 1.5 × the incoming rate), so while the allocator lacks bits, padding tops the media up
//! to the estimate: the receiver then sees a link carrying its estimate and raises it, and
//! a link that cannot carry it shows delay and the report falls.

use std::time::{Duration, Instant};

use tracing::debug;

use crate::congestion::Link;
use crate::participant::Slot;
use crate::rtp_out::{abs_send_time, Stamp};
use crate::worker::Worker;

pub(crate) const ABS_SEND_TIME_URI: &str =
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
/// The id we offer the send time under: the one str0m's standard map gives it, left free
/// because subscriber PCs take it out (`rtc_config.rs`): str0m would stamp its own packets
/// from another clock origin, and a receiver would read the difference as delay.
pub(crate) const ABS_SEND_TIME_ID: u8 = 2;
/// A report shows congestion when it cut the estimate (below 95 % of the report before:
/// libwebrtc cuts to 85 % of what arrived when it sees queueing delay) to less than the
/// allocator sends; the first report, when it is below 90 % of that. A report that only
/// has not grown as far as the layers sent is no congestion: the allocator keeps them.
const CUT_BELOW_PERCENT: u64 = 95;
const FIRST_BELOW_PERCENT: u64 = 90;
/// Padding never tops the media up beyond this (a receiver claiming more is believed only
/// as far as the allocator could use).
const MAX_PADDED_BPS: u64 = 10_000_000;
/// A report above this is taken as this (the TWCC estimator's own ceiling is 20 Mbit/s).
const MAX_REPORTED_BPS: u64 = 1_000_000_000;
/// After congestion, no padding for 3 s; 2 × longer each time congestion follows padding
/// within 2 s, up to 12 s (the probe controller's intervals, `bwe/probe.rs`): a link held
/// full by padding would keep queueing the media behind it.
const FIRST_QUIET: Duration = Duration::from_secs(3);
const MAX_QUIET: Duration = Duration::from_secs(12);
const BLAMED_WITHIN: Duration = Duration::from_secs(2);
/// Padding owed is counted over at most this long (a late tick sends no burst).
const MAX_TICK: Duration = Duration::from_millis(50);
/// What the media sent measures over windows of this length.
const SENT_WINDOW: Duration = Duration::from_millis(500);

/// A subscriber link estimated by its receiver.
pub(crate) struct RembLink {
    /// The id the peer knows abs-send-time by, if negotiated (without it, a receiver
    /// estimates from RTP timestamps: coarser, but it still reports).
    abs_send_time_id: Option<u8>,
    time_zero: Instant,
    /// The last report, bits per second.
    reported: Option<u64>,
    /// What the allocator last saw, and when.
    allocated: Option<(Link, Instant)>,
    /// Padding bits owed since the last tick while topping up, and when that was.
    owed_bits: u64,
    last_tick: Option<Instant>,
    /// When padding last went out; after congestion that soon after it, none until
    /// `quiet_until`, for `quiet_for` (doubling each time, up to [`MAX_QUIET`]).
    padded_at: Option<Instant>,
    quiet_until: Option<Instant>,
    quiet_for: Duration,
    /// What the video actually sent, not what the allocator's layer rates say: a layer
    /// that measures above what it sends now (an encoder easing off, a low temporal layer)
    /// would leave the receiver below its report with no padding to grow it, and its
    /// estimate stuck (seen: a first report of 98 kbit/s held for 37 s). Audio is left out
    /// because the receiver leaves it out: libwebrtc's receive-side estimator takes no
    /// audio packet that lacks transport-wide numbers. Counting it stopped the padding
    /// where video alone was below the report, and with a low layer's 50 kbit/s next to
    /// 40 kbit/s of audio the report stayed at 118 kbit/s for 40 s.
    sent: SentMeter,
}

/// Media bits sent over the last whole window.
#[derive(Debug, Default)]
struct SentMeter {
    window_start: Option<Instant>,
    bits: u64,
    last_bps: u64,
}

impl SentMeter {
    fn on_sent(&mut self, now: Instant, bytes: usize) {
        self.roll(now);
        self.bits += bytes as u64 * 8;
    }

    fn roll(&mut self, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= SENT_WINDOW {
            self.last_bps = self.bits * 1_000_000 / elapsed.as_micros().max(1) as u64;
            self.bits = 0;
            self.window_start = Some(now);
        }
    }

    /// Bits per second over the last whole window (a window with nothing sent counts as
    /// nothing once it is over).
    fn bps(&mut self, now: Instant) -> u64 {
        self.roll(now);
        self.last_bps
    }
}

impl RembLink {
    /// The header extension id the receiver knows the send time by, if it has one.
    pub fn abs_send_time_id(&self) -> Option<u8> {
        self.abs_send_time_id
    }

    pub fn new(now: Instant, abs_send_time_id: Option<u8>) -> Self {
        Self {
            abs_send_time_id,
            time_zero: now,
            reported: None,
            allocated: None,
            owed_bits: 0,
            last_tick: None,
            padded_at: None,
            quiet_until: None,
            quiet_for: FIRST_QUIET,
            sent: SentMeter::default(),
        }
    }

    /// A media packet of `bytes` went to the receiver (padding is not counted; audio is
    /// not, see [`RembLink::sent`]).
    pub fn on_media_sent(&mut self, now: Instant, bytes: usize, is_video: bool) {
        if is_video {
            self.sent.on_sent(now, bytes);
        }
    }

    /// The stamp for a packet sent now.
    pub fn stamp(&self, now: Instant) -> Option<Stamp> {
        let id = self.abs_send_time_id?;
        Some(Stamp::AbsSendTime {
            id,
            time: abs_send_time(now.saturating_duration_since(self.time_zero)),
        })
    }

    /// A report of `bps`, with `sending` bits per second allocated: the link, if the
    /// allocator should look at it again.
    pub fn report(&mut self, now: Instant, bps: u64, sending: u64) -> Option<Link> {
        let congested = match self.reported.replace(bps) {
            None => bps * 100 < sending * FIRST_BELOW_PERCENT,
            Some(before) => bps < sending && bps * 100 < before * CUT_BELOW_PERCENT,
        };
        let link = Link {
            estimate: bps,
            congested,
        };
        let due = link.news_since(self.allocated, now);
        if link.congested && !self.congested() {
            let padding_to_blame = self
                .padded_at
                .is_some_and(|at| now.saturating_duration_since(at) < BLAMED_WITHIN);
            self.quiet_for = if padding_to_blame {
                (self.quiet_for * 2).min(MAX_QUIET)
            } else {
                FIRST_QUIET
            };
            self.quiet_until = Some(now + self.quiet_for);
        }
        if due {
            self.allocated = Some((link, now));
        }
        due.then_some(link)
    }

    /// Padding packets of `packet_bits` due now to top the media sent up to the report
    /// (at most to `allocated` + `deficit`, what the allocator's layers would take), while
    /// the allocator lacks `deficit`; `None` (topping up stops) when it lacks nothing, or
    /// the link shows congestion, or it showed it recently.
    pub fn padding_due(
        &mut self,
        now: Instant,
        allocated: u64,
        deficit: u64,
        packet_bits: u64,
    ) -> Option<u64> {
        let last = self.last_tick.replace(now);
        let sending = self.sent.bps(now);
        let target = self
            .reported
            .unwrap_or(0)
            .min(allocated + deficit)
            .min(MAX_PADDED_BPS);
        let quiet = self.quiet_until.is_some_and(|until| now < until);
        if deficit == 0 || target <= sending || quiet || self.congested() {
            self.owed_bits = 0;
            self.last_tick = None;
            return None;
        }
        self.padded_at = Some(now);
        let elapsed = last.map_or(Duration::ZERO, |last| {
            now.saturating_duration_since(last).min(MAX_TICK)
        });
        self.owed_bits += (target - sending) * elapsed.as_micros() as u64 / 1_000_000;
        let count = self.owed_bits / packet_bits;
        self.owed_bits -= count * packet_bits;
        Some(count)
    }

    fn congested(&self) -> bool {
        self.allocated.is_some_and(|(l, _)| l.congested)
    }
}

/// A REMB's bitrate (a float off the wire) in bits per second: NaN and negatives are 0,
/// and no report is believed beyond [`MAX_REPORTED_BPS`] (the arithmetic on estimates
/// stays far from overflow).
fn reported_bps(bitrate: f32) -> u64 {
    (bitrate.max(0.0) as u64).min(MAX_REPORTED_BPS)
}

/// The id `sdp` gives abs-send-time, if one our send path can write.
pub(crate) fn abs_send_time_id(sdp: &str) -> Option<u8> {
    crate::congestion::extension_id(sdp, ABS_SEND_TIME_URI)
}

/// Whether `sdp` asks for REMB feedback on any codec.
pub(crate) fn negotiates_remb(sdp: &str) -> bool {
    sdp.lines()
        .any(|l| l.starts_with("a=rtcp-fb:") && l.split_whitespace().nth(1) == Some("goog-remb"))
}

impl Worker {
    /// A subscriber's REMB of `bitrate` (bits per second, as the message's float): its
    /// link's estimate, to its allocator.
    pub(crate) fn remb_feedback(&mut self, slot: Slot, bitrate: f32) {
        let now = self.now;
        let Some(part) = self.parts[slot].as_mut() else {
            return;
        };
        let sending = part.allocator.allocated();
        let Some(link) = part.remb.as_mut() else {
            return;
        };
        let bps = reported_bps(bitrate);
        let Some(link) = link.report(now, bps, sending) else {
            return;
        };
        debug!(
            participant = %part.key,
            estimate = link.estimate,
            congested = link.congested,
            "subscriber link (REMB)"
        );
        metrics::histogram!("switchboard_subscriber_estimate_bps").record(link.estimate as f64);
        part.allocator.estimate = Some(link.estimate);
        part.allocator.congested = link.congested;
        part.allocator.provisional = false;
        part.allocator.never_pause = true;
        self.allocate(slot);
        if !self.probing.contains(&slot) {
            self.probing.push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n\
        a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
        a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 nack\r\n";

    #[test]
    fn an_offer_names_its_send_time_extension_and_remb() {
        assert_eq!(abs_send_time_id(OFFER), Some(2));
        assert!(negotiates_remb(OFFER));
        let without = OFFER.replace("a=rtcp-fb:96 goog-remb\r\n", "");
        assert!(!negotiates_remb(&without));
        assert_eq!(
            abs_send_time_id(&OFFER.replace("extmap:2", "extmap:15")),
            None
        );
    }

    #[test]
    fn a_report_that_cuts_below_what_is_sent_is_congestion() {
        let t0 = Instant::now();
        let mut link = RembLink::new(t0, Some(2));
        let first = link.report(t0, 1_000_000, 500_000).unwrap();
        assert_eq!(
            first,
            Link {
                estimate: 1_000_000,
                congested: false
            }
        );
        // Nearly the same a moment later: nothing new for the allocator.
        assert_eq!(
            link.report(t0 + Duration::from_millis(100), 1_010_000, 500_000),
            None
        );
        let cut = link
            .report(t0 + Duration::from_millis(200), 420_000, 500_000)
            .unwrap();
        assert!(cut.congested);
        // A further cut right after, still below what is sent: congestion again (the
        // allocator goes down as far as the report says).
        let again = link
            .report(t0 + Duration::from_millis(900), 300_000, 500_000)
            .unwrap();
        assert!(again.congested);
        // Growing again, though still below what is sent: no congestion.
        let growing = link
            .report(t0 + Duration::from_millis(1300), 450_000, 500_000)
            .unwrap();
        assert!(!growing.congested);
        // A cut that leaves more than is sent takes nothing away either.
        let ample = link
            .report(t0 + Duration::from_millis(1400), 380_000, 300_000)
            .unwrap();
        assert!(!ample.congested);
    }

    /// Media of 1,000 bytes every 20 ms (400 kbit/s) from `from` up to `to` ms.
    fn media(link: &mut RembLink, t0: Instant, from: u64, to: u64) {
        for ms in (from..to).step_by(20) {
            link.on_media_sent(t0 + Duration::from_millis(ms), 1_000, true);
        }
    }

    #[test]
    fn padding_tops_the_media_up_to_the_report_while_bits_are_lacking() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut link = RembLink::new(t0, Some(2));
        media(&mut link, t0, 0, 600);
        link.report(at(600), 1_000_000, 400_000);
        let bits = 2_000;
        assert_eq!(link.padding_due(at(600), 400_000, 2_000_000, bits), Some(0));
        // 600 kbit/s missing for 20 ms: 12,000 bits, six packets.
        media(&mut link, t0, 600, 620);
        assert_eq!(link.padding_due(at(620), 400_000, 2_000_000, bits), Some(6));
        // Nothing lacking: no padding.
        assert_eq!(link.padding_due(at(640), 400_000, 0, bits), None);
        // Congestion right after padding: none for 6 s (twice the first quiet time).
        assert_eq!(link.padding_due(at(650), 400_000, 2_000_000, bits), Some(0));
        link.report(at(660), 300_000, 400_000);
        link.report(at(1_700), 800_000, 400_000);
        media(&mut link, t0, 620, 5_600);
        assert_eq!(link.padding_due(at(5_600), 400_000, 2_000_000, bits), None);
        media(&mut link, t0, 5_600, 6_700);
        assert_eq!(
            link.padding_due(at(6_700), 400_000, 2_000_000, bits),
            Some(0)
        );
        assert_eq!(
            link.padding_due(at(6_720), 400_000, 2_000_000, bits),
            Some(4)
        );
    }

    #[test]
    fn padding_measures_what_the_media_sends_not_what_its_layers_should() {
        // The allocator's layer measures 160 kbit/s, the media sends 80 kbit/s (1,000
        // bytes every 100 ms), the receiver reports 98 kbit/s: once the first report's
        // quiet time is over, padding tops the 80 up to 98 (the receiver's estimate can only
        // grow from what arrives), although the layer alone "should" exceed the report.
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut link = RembLink::new(t0, Some(2));
        let sparse = |link: &mut RembLink, from: u64, to: u64| {
            for ms in (from..to).step_by(100) {
                link.on_media_sent(t0 + Duration::from_millis(ms), 1_000, true);
            }
        };
        sparse(&mut link, 0, 1_000);
        assert!(link.report(at(1_000), 98_000, 160_000).unwrap().congested);
        sparse(&mut link, 1_000, 2_000);
        assert!(!link.report(at(2_000), 98_000, 160_000).unwrap().congested);
        sparse(&mut link, 2_000, 4_000);
        let bits = 1_000;
        assert_eq!(link.padding_due(at(3_900), 160_000, 500_000, bits), None);
        assert_eq!(link.padding_due(at(4_000), 160_000, 500_000, bits), Some(0));
        // 18 kbit/s missing for 50 ms: 900 bits, then 1,800 over the next 50 ms.
        assert_eq!(link.padding_due(at(4_050), 160_000, 500_000, bits), Some(0));
        assert_eq!(link.padding_due(at(4_100), 160_000, 500_000, bits), Some(1));
        // Media alone above the report: nothing to add.
        media(&mut link, t0, 4_100, 4_700);
        assert_eq!(link.padding_due(at(4_700), 160_000, 500_000, bits), None);
    }

    #[test]
    fn padding_tops_up_the_video_for_the_receiver_counts_no_audio() {
        // Video of 50 kbit/s (625 bytes every 100 ms) and audio of 40 kbit/s (100 bytes
        // every 20 ms), a report of 118 kbit/s: the receiver's estimate grows only from
        // what it counts, video and padding, so padding makes up 68 kbit/s, not 28.
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut link = RembLink::new(t0, Some(2));
        let send = |link: &mut RembLink, from: u64, to: u64| {
            for ms in (from..to).step_by(20) {
                let now = t0 + Duration::from_millis(ms);
                link.on_media_sent(now, 100, false);
                if ms % 100 == 0 {
                    link.on_media_sent(now, 625, true);
                }
            }
        };
        send(&mut link, 0, 1_000);
        assert!(!link.report(at(1_000), 118_000, 90_000).unwrap().congested);
        send(&mut link, 1_000, 1_600);
        let bits = 1_000;
        assert_eq!(link.padding_due(at(1_600), 90_000, 500_000, bits), Some(0));
        // 68 kbit/s missing for 50 ms: 3,400 bits, three packets (400 bits carried on).
        assert_eq!(link.padding_due(at(1_650), 90_000, 500_000, bits), Some(3));
    }

    #[test]
    fn a_hostile_report_is_bounded() {
        assert_eq!(reported_bps(f32::NAN), 0);
        assert_eq!(reported_bps(-5.0), 0);
        assert_eq!(reported_bps(f32::MAX), MAX_REPORTED_BPS);
        assert_eq!(reported_bps(f32::INFINITY), MAX_REPORTED_BPS);
        let t0 = Instant::now();
        let mut link = RembLink::new(t0, None);
        link.report(t0, reported_bps(f32::MAX), 500_000);
        // The next report compares against it without overflowing.
        assert!(link.report(t0, 0, 500_000).is_some_and(|l| l.congested));
    }

    #[test]
    fn send_times_are_six_point_eighteen_seconds() {
        let t0 = Instant::now();
        let link = RembLink::new(t0, Some(4));
        assert_eq!(
            link.stamp(t0 + Duration::from_millis(1500)),
            Some(Stamp::AbsSendTime {
                id: 4,
                time: 3 << 17
            })
        );
        // 64 s wraps to 0.
        assert_eq!(abs_send_time(Duration::from_secs(64)), 0);
        assert_eq!(RembLink::new(t0, None).stamp(t0), None);
    }
}
