//! The egress depacketizers behind the jitter buffer (target `depacketize`).
use std::time::{Duration, Instant};

use switchboard_egress::media::depacketize::{
    avc_decoder_configuration, parse_sps, Depacketizer, Frame,
};
use switchboard_egress::media::jitter::{JitterBuffer, Released};
use switchboard_egress::media::opus::{packet_samples, parse_opus_head};
use switchboard_egress::media::{Codec, RtpPacketIn};
use switchboard_sfu::fuzzing::Input;

const CODECS: [Codec; 4] = [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264];

struct Check {
    video: bool,
    /// A keyframe is due: at the start and after every reported loss.
    keyframe_due: bool,
}

impl Check {
    fn frames(&mut self, depacketizer: &mut Depacketizer, first: Option<Frame>) {
        let mut next = first;
        while let Some(frame) = next.take().or_else(|| depacketizer.pop_ready()) {
            if self.video {
                assert!(
                    frame.keyframe || !self.keyframe_due,
                    "a delta frame came out while a keyframe was due"
                );
                if frame.keyframe {
                    self.keyframe_due = false;
                }
            }
        }
    }

    fn lost(&mut self, depacketizer: &mut Depacketizer) {
        depacketizer.lost();
        self.keyframe_due = self.video;
    }
}

fn release(released: Released, depacketizer: &mut Depacketizer, check: &mut Check) {
    match released {
        Released::Packet(packet) => {
            let frame = depacketizer.push(&packet);
            check.frames(depacketizer, frame);
        }
        Released::Lost { count, .. } => {
            assert!(count > 0);
            check.lost(depacketizer);
        }
    }
}

/// The egress depacketizers (VP8, VP9, H.264, Opus) behind the jitter buffer, as a
/// recording runs them: packets in any order, gaps, duplicates, arbitrary payloads. A video
/// frame that comes out while a keyframe is due (at the start, after a loss) is a finding.
pub fn depacketize(data: &[u8]) {
    let mut input = Input::new(data);
    let codec = CODECS[usize::from(input.u8() % 4)];
    let max_delay = Duration::from_millis(u64::from(input.u8()) * 4);
    let mut jitter = JitterBuffer::new(max_delay, usize::from(input.u8()));
    let mut depacketizer = Depacketizer::new(codec);
    let mut check = Check {
        video: codec.is_video(),
        keyframe_due: codec.is_video(),
    };
    let mut now = Instant::now();
    let mut seq: u64 = 70_000;
    let mut timestamp = input.u32();
    while !input.is_empty() {
        match input.u8() % 8 {
            0..=4 => {
                let flags = input.u8();
                // Mostly the next packet; sometimes a step back, a repeat or a gap.
                seq = seq.saturating_add_signed(i64::from(flags & 0x07) - 2);
                if flags & 0x08 != 0 {
                    timestamp = timestamp.wrapping_add(u32::from(input.u16()));
                }
                let packet = RtpPacketIn {
                    seq,
                    timestamp,
                    marker: flags & 0x10 != 0,
                    payload: input.field().to_vec(),
                };
                jitter.push(packet, now);
            }
            5 => now += Duration::from_millis(u64::from(input.u16())),
            6 => check.lost(&mut depacketizer),
            _ => {
                let (sps, pps) = (input.field(), input.field());
                if let Ok(info) = parse_sps(sps) {
                    let _ = (info.width, info.height);
                }
                if let Some(avcc) = avc_decoder_configuration(sps, pps) {
                    assert_eq!(avcc.first(), Some(&1), "avcC version 1");
                }
                let _ = packet_samples(pps);
                let _ = parse_opus_head(sps);
            }
        }
        while let Some(released) = jitter.pop(now) {
            release(released, &mut depacketizer, &mut check);
        }
    }
    for released in jitter.flush() {
        release(released, &mut depacketizer, &mut check);
    }
    let last = depacketizer.flush();
    check.frames(&mut depacketizer, last);
    let _ = depacketizer.dimensions();
    if let Some(avcc) = depacketizer.codec_private() {
        assert_eq!(avcc.first(), Some(&1), "avcC version 1");
    }
    let stats = depacketizer.stats();
    let _ = (stats.frames, stats.dropped_frames, jitter.stats());
}
