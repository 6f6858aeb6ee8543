//! VP8 over RTP (RFC 7741): strip the payload descriptor, join the partitions.

use super::{Assembler, PayloadError};

/// The parts of a VP8 payload descriptor the recorder needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// S set and partition index 0: the first packet of a frame.
    pub frame_start: bool,
    /// Length of the descriptor: where the VP8 data begins.
    pub len: usize,
}

pub fn parse_descriptor(payload: &[u8]) -> Result<Descriptor, PayloadError> {
    let first = *payload.first().ok_or(PayloadError::Empty)?;
    let extended = first & 0x80 != 0;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    let mut len = 1;
    if extended {
        let ext = *payload.get(1).ok_or(PayloadError::Truncated)?;
        len = 2;
        if ext & 0x80 != 0 {
            // PictureID: 15 bits when its M bit is set, else 7.
            let id = *payload.get(len).ok_or(PayloadError::Truncated)?;
            len += if id & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            len += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            len += 1; // TID/Y/KEYIDX
        }
    }
    if len >= payload.len() {
        return Err(PayloadError::Truncated);
    }
    Ok(Descriptor {
        frame_start: start && partition == 0,
        len,
    })
}

/// Width and height from a keyframe's header (RFC 6386 9.1), `None` if the start code is
/// missing.
pub fn keyframe_dimensions(frame: &[u8]) -> Option<(u32, u32)> {
    if frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([*frame.get(6)?, *frame.get(7)?]) & 0x3fff;
    let height = u16::from_le_bytes([*frame.get(8)?, *frame.get(9)?]) & 0x3fff;
    Some((u32::from(width), u32::from(height)))
}

#[derive(Default)]
pub struct Vp8 {
    data: Vec<u8>,
    /// The frame's first packet was the frame start.
    started: bool,
    dimensions: Option<(u32, u32)>,
}

impl Assembler for Vp8 {
    fn push(&mut self, payload: &[u8]) -> Result<(), PayloadError> {
        let descriptor = parse_descriptor(payload)?;
        if self.data.is_empty() {
            self.started = descriptor.frame_start;
        }
        self.data.extend_from_slice(&payload[descriptor.len..]);
        Ok(())
    }

    fn take(&mut self) -> Result<Option<(Vec<u8>, bool)>, PayloadError> {
        let data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return Ok(None);
        }
        if !std::mem::take(&mut self.started) {
            return Err(PayloadError::MissingStart);
        }
        // The frame tag's P bit: 0 for a keyframe.
        let keyframe = data[0] & 0x01 == 0;
        if keyframe {
            self.dimensions = Some(keyframe_dimensions(&data).ok_or(PayloadError::BadKeyframe)?);
        }
        Ok(Some((data, keyframe)))
    }

    fn reset(&mut self) {
        self.data.clear();
        self.started = false;
    }

    fn dimensions(&self) -> Option<(u32, u32)> {
        self.dimensions
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::packet;
    use super::super::{Codec, Depacketizer};
    use super::*;

    /// A keyframe tag + start code + 320x240, then filler.
    fn keyframe() -> Vec<u8> {
        let mut f = vec![0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
        f.extend_from_slice(&[0xaa; 20]);
        f
    }

    #[test]
    fn descriptor_variants() {
        // Minimal: S bit only.
        assert_eq!(
            parse_descriptor(&[0x10, 0xff]),
            Ok(Descriptor {
                frame_start: true,
                len: 1
            })
        );
        // X, I with a 15-bit PictureID, L, T: 5 bytes.
        assert_eq!(
            parse_descriptor(&[0x90, 0xe0, 0x81, 0x23, 0x05, 0x40, 0xff]),
            Ok(Descriptor {
                frame_start: true,
                len: 6
            })
        );
        // X, I with a 7-bit PictureID, K only.
        assert_eq!(
            parse_descriptor(&[0x80, 0x90, 0x12, 0x20, 0xff]),
            Ok(Descriptor {
                frame_start: false,
                len: 4
            })
        );
        // S set but a later partition: not a frame start.
        assert!(!parse_descriptor(&[0x11, 0xff]).unwrap().frame_start);
        assert_eq!(
            parse_descriptor(&[0x90, 0x80]),
            Err(PayloadError::Truncated)
        );
        assert_eq!(parse_descriptor(&[0x10]), Err(PayloadError::Truncated));
        assert_eq!(parse_descriptor(&[]), Err(PayloadError::Empty));
    }

    #[test]
    fn frames_span_packets_and_keyframes_give_dimensions() {
        let mut d = Depacketizer::new(Codec::Vp8);
        assert!(d.needs_keyframe());
        let key = keyframe();
        let mut p1 = vec![0x90, 0x80, 0x05];
        p1.extend_from_slice(&key[..12]);
        let mut p2 = vec![0x80, 0x80, 0x05];
        p2.extend_from_slice(&key[12..]);
        assert!(d.push(&packet(1, 3000, false, &p1)).is_none());
        let frame = d.push(&packet(2, 3000, true, &p2)).unwrap();
        assert_eq!(frame.data, key);
        assert!(frame.keyframe);
        assert_eq!(d.dimensions(), Some((320, 240)));
        assert!(!d.needs_keyframe());

        let delta = d.push(&packet(3, 6000, true, &[0x10, 0x31, 0x01])).unwrap();
        assert!(!delta.keyframe);
        assert_eq!(delta.data, [0x31, 0x01]);
    }

    #[test]
    fn after_a_loss_only_a_keyframe_gets_through() {
        let mut d = Depacketizer::new(Codec::Vp8);
        let mut p = vec![0x10];
        p.extend_from_slice(&keyframe());
        d.push(&packet(1, 3000, true, &p)).unwrap();
        d.lost();
        assert!(d.needs_keyframe());
        // The rest of a frame whose start was lost.
        assert!(d.push(&packet(3, 6000, true, &[0x00, 0x31])).is_none());
        assert_eq!(d.last_error(), Some(&PayloadError::MissingStart));
        assert!(d.push(&packet(4, 9000, true, &[0x10, 0x31])).is_none());
        assert!(d.push(&packet(5, 12000, true, &p)).unwrap().keyframe);
        assert!(d.push(&packet(6, 15000, true, &[0x10, 0x31])).is_some());
    }

    #[test]
    fn a_frame_without_marker_ends_at_the_next_timestamp() {
        let mut d = Depacketizer::new(Codec::Vp8);
        let mut p = vec![0x10];
        p.extend_from_slice(&keyframe());
        assert!(d.push(&packet(1, 3000, false, &p)).is_none());
        let frame = d.push(&packet(2, 6000, true, &[0x10, 0x31])).unwrap();
        assert!(frame.keyframe);
        assert_eq!(frame.timestamp, 3000);
        let frame = d.pop_ready().unwrap();
        assert_eq!(frame.timestamp, 6000);
        assert!(d.flush().is_none());
    }

    #[test]
    fn a_frame_cut_off_by_the_end_of_the_stream_is_dropped() {
        let mut d = Depacketizer::new(Codec::Vp8);
        let key = keyframe();
        let mut p1 = vec![0x90, 0x80, 0x05];
        p1.extend_from_slice(&key[..12]);
        // The publisher left before the frame's last packet (with the marker) arrived.
        assert!(d.push(&packet(1, 3000, false, &p1)).is_none());
        assert!(d.flush().is_none(), "a truncated frame is undecodable");
        assert_eq!(d.stats().dropped_frames, 1);
    }
}
