//! The media plane's own send path for forwarded RTP.
//!
//! str0m sends a written packet only when its peer is next woken, and waking a peer costs a
//! pass over every stream it has (pacer, reports, NACK and keyframe state): per forwarded
//! packet, that pass and str0m's per-packet bookkeeping were most of a worker's CPU. Here a
//! subscriber's forwarded packet is built, encrypted with the keys its DTLS handshake
//! exported ([`srtp`]) and queued for the socket on the spot, and NACKs are answered from
//! a small history of what was sent ([`History`]).
//!
//! str0m keeps everything else: ICE, DTLS, SDP, the streams it declared (their SSRCs are
//! ours), incoming RTCP (receiver reports, PLI, FIR, NACK statistics) and outgoing RTCP. Its
//! sender reports map RTP time to wallclock from the last packet written through it, so one
//! packet per stream every [`STR0M_REFRESH`] still goes through str0m's path (see `media.rs`).

pub(crate) mod srtp;

use std::sync::Arc;
use std::time::{Duration, Instant};

use srtp::SrtpSender;

use crate::vp8_ids::Vp8Patch;

/// How often a forwarded stream sends one packet through str0m, so the sender reports str0m
/// writes for it keep a current RTP-time ↔ wallclock mapping (what receivers synchronise
/// audio with video by). str0m reports every second for video, every five for audio.
pub(crate) const STR0M_REFRESH: Duration = Duration::from_millis(500);

/// A stream keeps what it sent in the last [`HISTORY_AGE`] for retransmission, in a ring
/// that starts at [`HISTORY_MIN`] entries and doubles while it would drop packets younger
/// than that, up to [`HISTORY_MAX`] (2.5 Mbit/s video needs 512, Opus at 50 packets a
/// second 64). Entries are a
/// few dozen bytes: the payload is shared with every other subscriber of the track.
const HISTORY_AGE: Duration = Duration::from_secs(1);
const HISTORY_MIN: usize = 32;
const HISTORY_MAX: usize = 1024;

/// A subscriber peer's own send path, ready once its DTLS handshake exported keys.
pub(crate) struct DirectSend {
    srtp: SrtpSender,
}

/// The fields of an RTP packet the forwarder chooses.
pub(crate) struct RtpOut<'a> {
    pub ssrc: u32,
    pub pt: u8,
    pub marker: bool,
    /// Extended sequence number (rollover counter × 65536 + sequence number).
    pub seq: u64,
    pub timestamp: u32,
    pub payload: &'a [u8],
    /// The header extension the subscriber's link feedback needs: a transport-wide
    /// sequence number (TWCC) or the send time (REMB).
    pub stamp: Option<Stamp>,
    /// Bytes of padding after the payload (RTP's P bit); 0 for media. Padding-only
    /// packets probe the subscriber's link.
    pub padding: u8,
    /// VP8 picture numbers this subscriber's copy carries instead of the publisher's.
    pub vp8: Option<Vp8Patch>,
    /// An AV1 packet's dependency descriptor, as the publisher sent it.
    pub descriptor: Option<DescriptorOut<'a>>,
}

/// A dependency descriptor and the header extension id the subscriber gave it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DescriptorOut<'a> {
    pub id: u8,
    pub bytes: &'a Arc<[u8]>,
}

/// A transport-wide sequence number and the header extension id it goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TransportSeq {
    pub id: u8,
    pub seq: u16,
}

/// The one header extension our path writes on a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stamp {
    /// For transport-wide feedback (the sender estimates).
    Transport(TransportSeq),
    /// The send time, for a receiver that estimates itself and reports REMB:
    /// abs-send-time's 24 bits (seconds, 6.18 fixed point) under extension id `id`.
    AbsSendTime { id: u8, time: u32 },
}

impl Stamp {
    /// The transport-wide number, if this is one.
    pub(crate) fn transport(self) -> Option<TransportSeq> {
        match self {
            Stamp::Transport(t) => Some(t),
            Stamp::AbsSendTime { .. } => None,
        }
    }
}

/// abs-send-time's 24-bit value for `elapsed` since any fixed origin (receivers use only
/// differences; the value wraps every 64 s).
pub(crate) fn abs_send_time(elapsed: Duration) -> u32 {
    ((elapsed.as_nanos() << 18) / 1_000_000_000) as u32 & 0x00ff_ffff
}

/// Bytes of the RTP header we write: no CSRCs and no header extensions (the SSRCs are
/// signalled in the SDP, so receivers need no MID to bind them)...
const HEADER: usize = 12;
/// ... or with one: the transport-wide sequence number or the send time, in a
/// one-byte-header extension block (RFC 8285) of one word.
const HEADER_WITH_EXTENSION: usize = HEADER + 8;

impl DirectSend {
    pub(crate) fn new(srtp: SrtpSender) -> Self {
        Self { srtp }
    }

    /// The SRTP packet for `rtp`, ready for the socket, written into `packet` (an empty
    /// buffer, reused when the sink keeps sent ones).
    pub(crate) fn packet(&self, mut packet: Vec<u8>, rtp: &RtpOut<'_>) -> Vec<u8> {
        let padding = usize::from(rtp.padding);
        packet.reserve(HEADER_WITH_EXTENSION + rtp.payload.len() + padding + self.srtp.overhead());
        // Version 2, the padding bit, the extension bit, no CSRC.
        let extension = rtp.stamp.is_some();
        packet.push(0x80 | u8::from(padding > 0) << 5 | u8::from(extension) << 4);
        packet.push(u8::from(rtp.marker) << 7 | (rtp.pt & 0x7f));
        packet.extend_from_slice(&(rtp.seq as u16).to_be_bytes());
        packet.extend_from_slice(&rtp.timestamp.to_be_bytes());
        packet.extend_from_slice(&rtp.ssrc.to_be_bytes());
        let header = match (rtp.stamp, rtp.descriptor) {
            (stamp, Some(descriptor)) => write_extensions(&mut packet, stamp, descriptor),
            (Some(Stamp::Transport(TransportSeq { id, seq })), None) => {
                // 0xBEDE, one word; the element: id, length − 1 = 1, then the number; one
                // byte of padding to the word.
                packet.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, id << 4 | 1]);
                packet.extend_from_slice(&seq.to_be_bytes());
                packet.push(0);
                HEADER_WITH_EXTENSION
            }
            (Some(Stamp::AbsSendTime { id, time }), None) => {
                // 0xBEDE, one word; the element: id, length − 1 = 2, then the 24 bits.
                packet.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, id << 4 | 2]);
                packet.extend_from_slice(&time.to_be_bytes()[1..]);
                HEADER_WITH_EXTENSION
            }
            (None, None) => HEADER,
        };
        packet.extend_from_slice(rtp.payload);
        if let Some(patch) = rtp.vp8 {
            patch.apply(&mut packet[header..]);
        }
        if padding > 0 {
            // RFC 3550 §5.1: zeros, then the count of padding bytes, itself included.
            packet.resize(packet.len() + padding - 1, 0);
            packet.push(rtp.padding);
        }
        // The SRTP index is 48 bits; the rewriter numbers every stream from 1, far below.
        self.srtp
            .protect(&mut packet, header, rtp.ssrc, rtp.seq & 0xffff_ffff_ffff);
        packet
    }
}

/// Writes the header extension block of a packet that carries a dependency descriptor
/// (and maybe a stamp) after the fixed header in `packet`; returns the header's length.
/// The one-byte form (RFC 8285 §4.2) when every element fits it, else the two-byte form
/// (§4.3: a keyframe's descriptor carries the template structure, often over 16 bytes),
/// which str0m's SDP allows in every session (`a=extmap-allow-mixed`).
fn write_extensions(
    packet: &mut Vec<u8>,
    stamp: Option<Stamp>,
    descriptor: DescriptorOut<'_>,
) -> usize {
    let mut stamp_bytes = [0u8; 3];
    let stamp = stamp.map(|stamp| match stamp {
        Stamp::Transport(TransportSeq { id, seq }) => {
            stamp_bytes[..2].copy_from_slice(&seq.to_be_bytes());
            (id, &stamp_bytes[..2])
        }
        Stamp::AbsSendTime { id, time } => {
            stamp_bytes.copy_from_slice(&time.to_be_bytes()[1..]);
            (id, &stamp_bytes[..])
        }
    });
    // A descriptor longer than a two-byte element holds is not one str0m took in.
    let bytes = &descriptor.bytes[..descriptor.bytes.len().min(255)];
    let elements = stamp.into_iter().chain([(descriptor.id, bytes)]);
    let one_byte = bytes.len() <= 16 && descriptor.id <= 14;
    let start = packet.len();
    let profile: [u8; 2] = if one_byte { [0xbe, 0xde] } else { [0x10, 0x00] };
    packet.extend_from_slice(&profile);
    // The length in words, filled in below.
    packet.extend_from_slice(&[0, 0]);
    for (id, data) in elements {
        if one_byte {
            packet.push(id << 4 | (data.len() as u8 - 1));
        } else {
            packet.extend_from_slice(&[id, data.len() as u8]);
        }
        packet.extend_from_slice(data);
    }
    while !(packet.len() - start).is_multiple_of(4) {
        packet.push(0);
    }
    let words = ((packet.len() - start - 4) / 4) as u16;
    packet[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
    packet.len()
}

/// Whether str0m's datagram goes to the peer's media address: DTLS, RTP and RTCP go to the
/// nominated ICE pair, STUN answers wherever their check came from. Our own packets go where
/// the last of the former went.
pub(crate) fn goes_to_media_address(datagram: &[u8]) -> bool {
    // RFC 7983: 0–3 is STUN, 20–63 DTLS, 128–191 RTP/RTCP.
    datagram.first().is_some_and(|b| *b >= 20)
}

/// A test hook (`SfuConfig::test_drop_video_every`): the first send of every Nth forwarded
/// video packet is held back, as a lossy downlink would drop it.
pub(crate) struct DropEvery {
    every: std::num::NonZeroU64,
    counted: u64,
}

impl DropEvery {
    pub(crate) fn new(every: std::num::NonZeroU64) -> Self {
        Self { every, counted: 0 }
    }

    /// Counts a packet; true when it is the one to hold back.
    pub(crate) fn this_one(&mut self) -> bool {
        self.counted += 1;
        self.counted.is_multiple_of(self.every.get())
    }
}

/// Retransmissions may cost at most this share of the bytes a stream sent (str0m's own cap
/// is the same): a subscriber that NACKs everything, again and again, gets little more
/// than the stream itself. Unused allowance is kept up to [`RESEND_ALLOWANCE_MAX`].
pub(crate) const RESEND_SHARE_PERCENT: usize = 15;
/// 32 KB: a burst of loss at the top layer (10 % of 2.5 Mbit/s for a second is 31 KB) is
/// resent whole, but a stream that ran uncapped for a while cannot pour seconds of
/// resends into a link that just narrowed. With 256 KB saved up, a subscriber whose link
/// fell from 1.7 Mbit/s to 500 kbit/s got up to 4 s of resends of the layer it was
/// leaving ahead of the new layer's keyframe, and froze for 3 s (the browser test with the
/// stepped cap failed 3 runs of 8).
const RESEND_ALLOWANCE_MAX: usize = 32 * 1024;
/// A keyframe refills the allowance, at most this often. Resends of the layer a
/// subscriber is leaving can spend it all just before the new layer's keyframe, whose own
/// lost packets then found nothing left: at 15 % of a low layer's 150 kbit/s the allowance
/// earns back a 1,000-byte packet in 0.4 s, and the picture froze until then (the stepped
/// cap's browser test, 7 refused resends of one keyframe over 0.9 s). Keyframes are rare
/// (the publisher sends one on request, at most one per 500 ms, `KEYFRAME_THROTTLE`), so
/// a subscriber gets at most 32 KB more per half second, 512 kbit/s, whatever it NACKs.
const REFILL_INTERVAL: Duration = Duration::from_millis(500);

/// What the send path keeps per forwarded stream.
#[derive(Default)]
pub(crate) struct StreamSend {
    pub history: History,
    pub allowance: ResendAllowance,
    /// When a packet of this stream last went through str0m (see [`STR0M_REFRESH`]).
    pub str0m_written: Option<Instant>,
    /// When a keyframe last refilled `allowance` (see [`REFILL_INTERVAL`]).
    refilled_at: Option<Instant>,
}

/// Bytes of retransmission a stream may still send.
#[derive(Default)]
pub(crate) struct ResendAllowance(usize);

impl ResendAllowance {
    fn earn(&mut self, sent: usize) {
        self.0 = (self.0 + sent * RESEND_SHARE_PERCENT / 100).min(RESEND_ALLOWANCE_MAX);
    }

    fn refill(&mut self) {
        self.0 = RESEND_ALLOWANCE_MAX;
    }

    /// Takes the allowance for resending `bytes`, if there is enough left.
    pub(crate) fn take(&mut self, bytes: usize) -> bool {
        match self.0.checked_sub(bytes) {
            Some(left) => {
                self.0 = left;
                true
            }
            None => false,
        }
    }
}

impl StreamSend {
    /// Records a packet sent on our path (video packets are kept for retransmission).
    pub(crate) fn sent(&mut self, rtp: &RtpOut<'_>, payload: &Arc<[u8]>, at: Instant, keep: bool) {
        self.allowance.earn(rtp.payload.len());
        if keep {
            self.history.record(rtp, payload, at);
        }
    }

    /// `seq` starts a keyframe sent at `now`: nothing before it is resent any more, and
    /// the allowance is refilled for its own lost packets (see [`REFILL_INTERVAL`]).
    pub(crate) fn keyframe_at(&mut self, seq: u64, now: Instant) {
        self.history.keyframe_at(seq);
        let due = self
            .refilled_at
            .is_none_or(|at| now.saturating_duration_since(at) >= REFILL_INTERVAL);
        if due {
            self.allowance.refill();
            self.refilled_at = Some(now);
        }
    }

    /// Whether the next packet must go through str0m to refresh its sender reports.
    pub(crate) fn str0m_due(&self, now: Instant) -> bool {
        self.str0m_written
            .is_none_or(|at| now.saturating_duration_since(at) >= STR0M_REFRESH)
    }
}

/// One sent packet, kept to answer a NACK for it.
struct Sent {
    seq: u64,
    timestamp: u32,
    pt: u8,
    marker: bool,
    payload: Arc<[u8]>,
    /// Where in `payload` what was sent starts (after a RED header that was unwrapped).
    payload_at: usize,
    at: Instant,
    /// Resent with the same number: a packet is encrypted again only with the header it
    /// had (the SRTP index, hence the AEAD nonce, stays the same).
    stamp: Option<Stamp>,
    /// ... and the same payload.
    vp8: Option<Vp8Patch>,
    descriptor: Option<(u8, Arc<[u8]>)>,
}

/// The recently sent packets of one stream, by sequence number.
#[derive(Default)]
pub(crate) struct History {
    /// Allocated at the first packet.
    slots: Vec<Option<Sent>>,
    /// The first packet of the last keyframe sent: nothing before it is resent. A decoder
    /// that has the keyframe needs nothing older, and after a switch down to a layer that
    /// fits the link, resends of the layer it left would take the room the new layer's
    /// keyframe needs (its own lost packets then find no allowance, and the picture stays
    /// frozen until the browser asks for a keyframe itself, 3 s on).
    floor: u64,
}

impl History {
    /// Keeps `rtp`, whose payload is `payload` or a tail of it (audio unwrapped from RED).
    pub(crate) fn record(&mut self, rtp: &RtpOut<'_>, payload: &Arc<[u8]>, at: Instant) {
        let payload_at = (rtp.payload.as_ptr() as usize)
            .checked_sub(payload.as_ptr() as usize)
            .filter(|at| at + rtp.payload.len() <= payload.len())
            .unwrap_or(0);
        if self.slots.is_empty() {
            self.slots.resize_with(HISTORY_MIN, || None);
        }
        let len = self.slots.len();
        let evicts_young = self.slots[rtp.seq as usize % len]
            .as_ref()
            .is_some_and(|old| at.saturating_duration_since(old.at) < HISTORY_AGE);
        if evicts_young && len < HISTORY_MAX {
            self.grow();
        }
        let len = self.slots.len();
        self.slots[rtp.seq as usize % len] = Some(Sent {
            seq: rtp.seq,
            timestamp: rtp.timestamp,
            pt: rtp.pt,
            marker: rtp.marker,
            payload: Arc::clone(payload),
            payload_at,
            at,
            stamp: rtp.stamp,
            vp8: rtp.vp8,
            descriptor: rtp.descriptor.map(|d| (d.id, Arc::clone(d.bytes))),
        });
    }

    /// `seq` starts a keyframe: what was sent before it is no longer resent.
    fn keyframe_at(&mut self, seq: u64) {
        self.floor = self.floor.max(seq);
    }

    fn grow(&mut self) {
        let mut slots: Vec<Option<Sent>> = Vec::new();
        slots.resize_with(self.slots.len() * 2, || None);
        let len = slots.len();
        for sent in self.slots.drain(..).flatten() {
            let index = sent.seq as usize % len;
            slots[index] = Some(sent);
        }
        self.slots = slots;
    }

    /// Calls `resend` with each packet of `seqs` (16-bit sequence numbers, as NACKs carry
    /// them) still held, younger than [`HISTORY_AGE`] and not older than the last keyframe.
    pub(crate) fn find(
        &self,
        ssrc: u32,
        seqs: impl Iterator<Item = u16>,
        now: Instant,
        mut resend: impl FnMut(&RtpOut<'_>),
    ) {
        if self.slots.is_empty() {
            return;
        }
        for seq in seqs {
            // The ring's length is a power of two at most 65536, so the 16-bit number
            // finds the slot its extended number went to.
            let Some(sent) = &self.slots[usize::from(seq) % self.slots.len()] else {
                continue;
            };
            if sent.seq as u16 != seq
                || sent.seq < self.floor
                || now.saturating_duration_since(sent.at) > HISTORY_AGE
            {
                continue;
            }
            resend(&RtpOut {
                ssrc,
                pt: sent.pt,
                marker: sent.marker,
                seq: sent.seq,
                timestamp: sent.timestamp,
                payload: sent.payload.get(sent.payload_at..).unwrap_or(&sent.payload),
                stamp: sent.stamp,
                padding: 0,
                vp8: sent.vp8,
                descriptor: sent
                    .descriptor
                    .as_ref()
                    .map(|(id, bytes)| DescriptorOut { id: *id, bytes }),
            });
        }
    }
}

/// The sequence numbers a generic NACK entry names (RFC 4585 §6.2.1): `pid`, and each
/// following packet whose bit is set in `blp`.
pub(crate) fn nacked(pid: u16, blp: u16) -> impl Iterator<Item = u16> {
    std::iter::once(pid).chain(
        (0..16u16)
            .filter(move |bit| blp & (1 << bit) != 0)
            .map(move |bit| pid.wrapping_add(bit + 1)),
    )
}

#[cfg(test)]
mod tests;
