//! Reading just enough of an RTP payload to know whether it starts a keyframe. A layer
//! switch or a new subscriber can only start on one.

use str0m::format::Codec;

/// Whether this RTP payload is the first packet of a keyframe, for the codecs we forward.
/// Audio and unknown codecs never are.
pub(crate) fn starts_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8_starts_keyframe(payload),
        Codec::Vp9 => vp9_starts_keyframe(payload),
        Codec::H264 => h264_has_keyframe(payload),
        Codec::Av1 => av1_starts_sequence(payload),
        _ => false,
    }
}

/// RFC 7741: the payload descriptor, then on the first packet of a partition-0 the VP8
/// frame header whose lowest bit (P) is 0 for a key frame.
fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    crate::vp8_ids::descriptor(payload).is_some_and(|d| {
        d.starts_frame
            && payload
                .get(d.payload_at)
                .is_some_and(|header| header & 0x01 == 0)
    })
}

/// draft-ietf-payload-vp9: P (inter-picture predicted) clear and B (start of frame) set.
fn vp9_starts_keyframe(payload: &[u8]) -> bool {
    payload
        .first()
        .is_some_and(|&b| b & 0x40 == 0 && b & 0x08 != 0)
}

/// RFC 6184: an IDR slice (5) or SPS (7), directly, inside a STAP-A, or at the start of a
/// FU-A.
fn h264_has_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let is_key = |nal_type: u8| nal_type == 5 || nal_type == 7;
    match first & 0x1f {
        24 => {
            let mut offset = 1;
            while offset + 2 < payload.len() {
                let size = usize::from(u16::from_be_bytes([payload[offset], payload[offset + 1]]));
                let Some(&nal) = payload.get(offset + 2) else {
                    return false;
                };
                if is_key(nal & 0x1f) {
                    return true;
                }
                offset += 2 + size;
            }
            false
        }
        28 => payload
            .get(1)
            .is_some_and(|&fu| fu & 0x80 != 0 && is_key(fu & 0x1f)),
        nal_type => is_key(nal_type),
    }
}

/// AV1 RTP: the N bit of the aggregation header marks the first packet of a coded video
/// sequence, which starts with a key frame.
fn av1_starts_sequence(payload: &[u8]) -> bool {
    payload.first().is_some_and(|&b| b & 0x08 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_with_extended_descriptor() {
        // X=1 S=1 PID=0; I=1 with a 15-bit picture id; then a key frame header (P=0).
        let key = [0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00];
        assert!(starts_keyframe(Codec::Vp8, &key));
        let delta = [0x90, 0x80, 0x81, 0x23, 0x11, 0x02, 0x00];
        assert!(!starts_keyframe(Codec::Vp8, &delta));
    }

    #[test]
    fn vp8_continuation_packet_is_not_a_keyframe_start() {
        // S=0: a middle packet, even if its first payload byte looks like a key header.
        assert!(!starts_keyframe(Codec::Vp8, &[0x00, 0x10]));
        assert!(!starts_keyframe(Codec::Vp8, &[]));
        // Truncated descriptor.
        assert!(!starts_keyframe(Codec::Vp8, &[0x90, 0x80]));
    }

    #[test]
    fn vp8_minimal_descriptor() {
        assert!(starts_keyframe(Codec::Vp8, &[0x10, 0x50]));
        assert!(!starts_keyframe(Codec::Vp8, &[0x10, 0x51]));
    }

    #[test]
    fn h264_single_stap_and_fragment() {
        assert!(starts_keyframe(Codec::H264, &[0x65, 0x88]));
        assert!(!starts_keyframe(Codec::H264, &[0x41, 0x9a]));
        // STAP-A carrying SPS (len 2) then PPS (len 2).
        assert!(starts_keyframe(
            Codec::H264,
            &[0x18, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]
        ));
        // FU-A start of an IDR, and a later fragment of it.
        assert!(starts_keyframe(Codec::H264, &[0x7c, 0x85, 0x00]));
        assert!(!starts_keyframe(Codec::H264, &[0x7c, 0x05, 0x00]));
    }

    #[test]
    fn vp9_and_av1_flags() {
        assert!(starts_keyframe(Codec::Vp9, &[0x08]));
        assert!(!starts_keyframe(Codec::Vp9, &[0x48]));
        assert!(starts_keyframe(Codec::Av1, &[0x18]));
        assert!(!starts_keyframe(Codec::Av1, &[0x10]));
        assert!(!starts_keyframe(Codec::Opus, &[0xff]));
    }
}
