//! Transport-wide feedback taken before str0m. A subscriber sends a TWCC report every 50–100
//! ms; handed to str0m, each one costs an SRTCP decryption and parse there, then a pass of
//! the peer's output and timers, before it reaches our estimator as a raw packet — with 100
//! subscribers, more CPU than the estimator itself (docs/benchmarks.md). A datagram whose
//! compound holds nothing but transport-wide feedback is decrypted here, with the peer's
//! SRTCP keys (`rtp_out/srtp/receive.rs`), and goes straight to the estimator; anything
//! else (receiver reports, NACKs, PLIs, or feedback in the same compound as them) goes to
//! str0m as before.

use crate::congestion::TransportFeedback;
use crate::participant::Slot;
use crate::twcc_report::TwccReport;
use crate::worker::Worker;

/// RTPFB (RFC 4585) with FMT 15: transport-wide congestion control feedback.
const RTPFB: u8 = 205;
const TWCC_FMT: u8 = 15;

/// Reports one datagram may carry here; more go to str0m.
const MAX_REPORTS: usize = 4;

type Reports<'a> = [Option<TwccReport<'a>>; MAX_REPORTS];

impl Worker {
    /// Takes `datagram` from subscriber `slot` if it is SRTCP holding only transport-wide
    /// feedback for a link we estimate; false leaves it to str0m.
    pub(crate) fn take_feedback(&mut self, slot: Slot, datagram: &[u8]) -> bool {
        // The first RTCP header is sent in the clear: no decryption for anything else.
        if !starts_with_transport_feedback(datagram) {
            return false;
        }
        let Some(part) = self.parts[slot].as_mut() else {
            return false;
        };
        if part.congestion.is_none() {
            return false;
        }
        let sender = crate::participant::sender_mut(&mut part.subscriber, &mut part.publisher);
        let Some(receiver) = sender.srtcp_in.as_mut() else {
            return false;
        };
        let mut plain = std::mem::take(&mut self.rtcp_plain);
        let mut reports: Reports = [None; MAX_REPORTS];
        let taken = receiver.unprotect(datagram, &mut plain) && only_feedback(&plain, &mut reports);
        if taken {
            self.metrics.feedback_taken += 1;
            for report in reports.iter().flatten() {
                self.transport_feedback(slot, TransportFeedback::InPlace(report));
            }
        }
        self.rtcp_plain = plain;
        taken
    }
}

/// For `fuzzing.rs`: the packets a decrypted compound's reports name, each report walked
/// to its end.
#[cfg(feature = "fuzz")]
pub(crate) fn fuzz_compound(plain: &[u8]) -> usize {
    let mut reports: Reports = [None; MAX_REPORTS];
    if !only_feedback(plain, &mut reports) {
        return 0;
    }
    let mut named = 0;
    for report in reports.iter().flatten() {
        report.for_each(0, 0, |_, _| {
            named += 1;
            true
        });
    }
    named
}

/// RFC 5761 §4: the second byte of RTCP is its packet type, 192–223; RTP's is a payload type
/// (with the marker bit) outside that range. Then the first packet's type and FMT.
fn starts_with_transport_feedback(datagram: &[u8]) -> bool {
    matches!(datagram, [first, RTPFB, ..] if first >> 6 == 2 && first & 0x1f == TWCC_FMT)
}

/// Whether the compound `plain` is transport-wide feedback and nothing else, each report
/// parsed into `reports` (at most [`MAX_REPORTS`]).
fn only_feedback<'a>(plain: &'a [u8], reports: &mut Reports<'a>) -> bool {
    let mut rest = plain;
    let mut count = 0;
    while !rest.is_empty() {
        let [first, kind, high, low, ..] = *rest else {
            return false;
        };
        if first >> 6 != 2 || kind != RTPFB || first & 0x1f != TWCC_FMT || count == MAX_REPORTS {
            return false;
        }
        let length = (usize::from(u16::from_be_bytes([high, low])) + 1) * 4;
        let Some(packet) = rest.get(..length) else {
            return false;
        };
        // Padding (the P bit): its last byte counts the bytes to drop.
        let unpadded = if first & 0x20 != 0 {
            match length.checked_sub(usize::from(packet[length - 1])) {
                Some(len) if len >= 4 => &packet[..len],
                _ => return false,
            }
        } else {
            packet
        };
        match TwccReport::parse(unpadded) {
            Some(report) => reports[count] = Some(report),
            None => return false,
        }
        count += 1;
        rest = &rest[length..];
    }
    count > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;

    /// One report of one packet, unpadded and padded (P set, one byte of padding counted).
    const REPORT: &str = "8fcd00050000000100000002000000010000000020010400";
    const PADDED: &str = "afcd00050000000100000002000000010000000020010401";
    /// A receiver report with no report blocks.
    const RR: &str = "81c9000100000001";

    #[test]
    fn only_compounds_of_transport_feedback_are_taken() {
        let report = hex(REPORT);
        let mut reports: Reports = [None; MAX_REPORTS];
        assert!(only_feedback(&report, &mut reports));
        assert!(reports[0].is_some() && reports[1].is_none());
        let two = hex(&format!("{REPORT}{PADDED}"));
        assert!(only_feedback(&two, &mut [None; MAX_REPORTS]));
        let with_rr = hex(&format!("{REPORT}{RR}"));
        assert!(!only_feedback(&with_rr, &mut [None; MAX_REPORTS]));
        assert!(!only_feedback(&hex(RR), &mut [None; MAX_REPORTS]));
        assert!(!only_feedback(&[], &mut [None; MAX_REPORTS]));
        // A length past the end, and padding longer than the packet.
        assert!(!only_feedback(
            &hex(&REPORT[..40]),
            &mut [None; MAX_REPORTS]
        ));
        let mut overpadded = hex(PADDED);
        overpadded[23] = 30;
        assert!(!only_feedback(&overpadded, &mut [None; MAX_REPORTS]));
        let five = hex(&REPORT.repeat(5));
        assert!(
            !only_feedback(&five, &mut [None; MAX_REPORTS]),
            "more than we take here"
        );
    }

    #[test]
    fn the_clear_header_says_whether_to_decrypt() {
        assert!(starts_with_transport_feedback(&hex(REPORT)));
        assert!(!starts_with_transport_feedback(&hex(RR)));
        // A NACK: RTPFB with FMT 1.
        assert!(!starts_with_transport_feedback(&hex("81cd0003")));
        // A DTLS record.
        assert!(!starts_with_transport_feedback(&hex("16fefd00")));
    }
}
