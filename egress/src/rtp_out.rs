//! RTP egress: one track's packets, decrypted, put back in order and sent as plain RTP to a
//! UDP target, with the SDP document a receiver (ffmpeg, GStreamer) opens to take them.

use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use switchboard_sfu::{TapCodec, TapPacket, TrackKind};

use crate::media::jitter::{JitterBuffer, Released};
use crate::media::RtpPacketIn;
use crate::recorder::Counters;
use crate::EgressError;

/// Payload types of the restreamed RTP (dynamic range; the SDP says what they mean).
const VIDEO_PT: u8 = 96;
const AUDIO_PT: u8 = 111;
/// Reordering window; retransmissions from the media plane land within it.
const RTP_JITTER: std::time::Duration = std::time::Duration::from_millis(150);

/// The SDP document describing the RTP an egress sends to `target`.
pub fn sdp_document(target: SocketAddr, kind: TrackKind, codec: &TapCodec, title: &str) -> String {
    let family = if target.is_ipv4() { "IP4" } else { "IP6" };
    let ip = target.ip();
    let (media, pt) = match kind {
        TrackKind::Audio => ("audio", AUDIO_PT),
        TrackKind::Video => ("video", VIDEO_PT),
    };
    let encoding = match codec.name.as_str() {
        "opus" => "opus".to_owned(),
        other => other.to_ascii_uppercase(),
    };
    let mut sdp = format!(
        "v=0\r\no=- 0 0 IN {family} {ip}\r\ns={title}\r\nc=IN {family} {ip}\r\nt=0 0\r\nm={media} {port} RTP/AVP {pt}\r\n",
        port = target.port()
    );
    match codec.channels {
        Some(channels) if kind == TrackKind::Audio => sdp.push_str(&format!(
            "a=rtpmap:{pt} {encoding}/{}/{channels}\r\n",
            codec.clock_rate
        )),
        _ => sdp.push_str(&format!(
            "a=rtpmap:{pt} {encoding}/{}\r\n",
            codec.clock_rate
        )),
    }
    if codec.name == "h264" {
        let profile = codec.profile_level_id.unwrap_or(0x42e01f);
        sdp.push_str(&format!(
            "a=fmtp:{pt} packetization-mode=1;profile-level-id={profile:06x}\r\n"
        ));
    }
    sdp.push_str("a=recvonly\r\n");
    sdp
}

/// Sends one track as plain RTP.
pub(crate) struct RtpSender {
    socket: UdpSocket,
    target: SocketAddr,
    pt: u8,
    ssrc: u32,
    jitter: JitterBuffer,
    buf: Vec<u8>,
    pub counters: Counters,
    pub bytes: u64,
    pub sent_any: bool,
    /// A packet was given up, or a receiver just appeared: a video receiver needs a
    /// keyframe to (re)start its picture.
    pub wants_keyframe: bool,
    /// The target refused packets (ICMP port unreachable, reported on the connected socket)
    /// and how many sends went through since.
    refused: bool,
    accepted_since_refused: u32,
}

/// Sends in a row without a refusal after which a receiver is taken to be listening.
const RECEIVER_PRESENT_AFTER: u32 = 20;

impl RtpSender {
    pub fn new(target: SocketAddr, kind: TrackKind, ssrc: u32) -> Result<Self, EgressError> {
        let bind: SocketAddr = if target.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let network = |e: std::io::Error| EgressError::Network {
            target: target.to_string(),
            reason: e.to_string(),
        };
        let socket = UdpSocket::bind(bind).map_err(network)?;
        // Connected, so the kernel reports a target with nobody listening: a receiver that
        // starts later (ffmpeg opening the SDP) is then noticed and sent a fresh keyframe.
        socket.connect(target).map_err(network)?;
        Ok(Self {
            socket,
            target,
            pt: if kind == TrackKind::Video {
                VIDEO_PT
            } else {
                AUDIO_PT
            },
            ssrc,
            jitter: JitterBuffer::new(RTP_JITTER, 1024),
            buf: Vec::with_capacity(1500),
            counters: Counters::default(),
            bytes: 0,
            sent_any: false,
            wants_keyframe: false,
            refused: false,
            accepted_since_refused: 0,
        })
    }

    pub fn packet(&mut self, packet: TapPacket, now: Instant) -> Result<(), EgressError> {
        self.counters.packets += 1;
        self.jitter.push(RtpPacketIn::from(&packet), now);
        self.release(now, false)
    }

    /// Sends what the jitter buffer lets go; everything when `flush`.
    pub fn release(&mut self, now: Instant, flush: bool) -> Result<(), EgressError> {
        for r in self.jitter.release(now, flush) {
            match r {
                Released::Packet(p) => self.send(&p)?,
                Released::Lost { count, .. } => {
                    self.counters.packets_lost += count;
                    self.wants_keyframe = true;
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, p: &RtpPacketIn) -> Result<(), EgressError> {
        self.buf.clear();
        self.buf.push(0x80);
        self.buf.push(if p.marker { 0x80 } else { 0 } | self.pt);
        self.buf.extend_from_slice(&(p.seq as u16).to_be_bytes());
        self.buf.extend_from_slice(&p.timestamp.to_be_bytes());
        self.buf.extend_from_slice(&self.ssrc.to_be_bytes());
        self.buf.extend_from_slice(&p.payload);
        match self.socket.send(&self.buf) {
            Ok(_) => {
                self.bytes += self.buf.len() as u64;
                self.sent_any = true;
                if self.refused {
                    self.accepted_since_refused += 1;
                    if self.accepted_since_refused >= RECEIVER_PRESENT_AFTER {
                        self.refused = false;
                        self.wants_keyframe = true;
                    }
                }
                Ok(())
            }
            // Nobody listening (yet) is normal for UDP: keep sending, and watch for a receiver.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                self.refused = true;
                self.accepted_since_refused = 0;
                Ok(())
            }
            Err(e) => Err(EgressError::Network {
                target: self.target.to_string(),
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_describes_h264_for_ffmpeg() {
        let codec = TapCodec {
            name: "h264".into(),
            clock_rate: 90_000,
            channels: None,
            profile_level_id: Some(0x42e01f),
        };
        let sdp = sdp_document(
            "127.0.0.1:5004".parse().unwrap(),
            TrackKind::Video,
            &codec,
            "eg_1",
        );
        assert!(sdp.contains("c=IN IP4 127.0.0.1\r\n"), "{sdp}");
        assert!(sdp.contains("m=video 5004 RTP/AVP 96\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:96 H264/90000\r\n"), "{sdp}");
        assert!(sdp.contains("profile-level-id=42e01f"), "{sdp}");
    }

    #[test]
    fn sdp_describes_opus_with_channels() {
        let codec = TapCodec {
            name: "opus".into(),
            clock_rate: 48_000,
            channels: Some(2),
            profile_level_id: None,
        };
        let sdp = sdp_document("[::1]:7000".parse().unwrap(), TrackKind::Audio, &codec, "x");
        assert!(sdp.contains("c=IN IP6 ::1\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:111 opus/48000/2\r\n"), "{sdp}");
    }
}
