//! VP9 over RTP (RFC 9628, the layout Chrome sends, flexible and non-flexible mode): strip
//! the payload descriptor, join a picture's layer frames.

use super::bits::{BitReader, EndOfData};
use super::{Assembler, PayloadError};

/// The parts of a VP9 payload descriptor the recorder needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// P: the layer frame is inter-picture predicted.
    pub inter_predicted: bool,
    /// B: the first packet of a layer frame.
    pub begins_frame: bool,
    /// Spatial layer id (0 without layer indices).
    pub spatial_id: u8,
    /// The highest spatial layer's size, from a scalability structure with Y set.
    pub ss_dimensions: Option<(u32, u32)>,
    /// Length of the descriptor: where the VP9 data begins.
    pub len: usize,
}

fn byte(payload: &[u8], at: usize) -> Result<u8, PayloadError> {
    payload.get(at).copied().ok_or(PayloadError::Truncated)
}

pub fn parse_descriptor(payload: &[u8]) -> Result<Descriptor, PayloadError> {
    let first = *payload.first().ok_or(PayloadError::Empty)?;
    let has_picture_id = first & 0x80 != 0;
    let inter_predicted = first & 0x40 != 0;
    let has_layers = first & 0x20 != 0;
    let flexible = first & 0x10 != 0;
    let begins_frame = first & 0x08 != 0;
    let has_ss = first & 0x02 != 0;
    let mut at = 1;
    if has_picture_id {
        at += if byte(payload, at)? & 0x80 != 0 { 2 } else { 1 };
    }
    let mut spatial_id = 0;
    if has_layers {
        spatial_id = (byte(payload, at)? >> 1) & 0x07;
        at += 1;
        if !flexible {
            at += 1; // TL0PICIDX
        }
    }
    if flexible && inter_predicted {
        // Up to three reference indices, each with N set when another follows.
        let mut references = 0;
        loop {
            let diff = byte(payload, at)?;
            at += 1;
            references += 1;
            if diff & 0x01 == 0 {
                break;
            }
            if references == 3 {
                return Err(PayloadError::Truncated);
            }
        }
    }
    let mut ss_dimensions = None;
    if has_ss {
        let ss = byte(payload, at)?;
        at += 1;
        let layers = usize::from(ss >> 5) + 1;
        if ss & 0x10 != 0 {
            for _ in 0..layers {
                let size = payload.get(at..at + 4).ok_or(PayloadError::Truncated)?;
                let width = u16::from_be_bytes([size[0], size[1]]);
                let height = u16::from_be_bytes([size[2], size[3]]);
                ss_dimensions = Some((u32::from(width), u32::from(height)));
                at += 4;
            }
        }
        if ss & 0x08 != 0 {
            let groups = byte(payload, at)?;
            at += 1;
            for _ in 0..groups {
                let references = usize::from((byte(payload, at)? >> 2) & 0x03);
                at += 1 + references;
            }
        }
    }
    if at >= payload.len() {
        return Err(PayloadError::Truncated);
    }
    Ok(Descriptor {
        inter_predicted,
        begins_frame,
        spatial_id,
        ss_dimensions,
        len: at,
    })
}

/// What the start of a frame's uncompressed header (VP9 spec 6.2) tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub keyframe: bool,
    /// Keyframes only.
    pub dimensions: Option<(u32, u32)>,
}

/// `None` when `frame` does not start with a valid header.
pub fn parse_frame_header(frame: &[u8]) -> Option<FrameHeader> {
    header(frame).ok().flatten()
}

fn header(frame: &[u8]) -> Result<Option<FrameHeader>, EndOfData> {
    const INTER: FrameHeader = FrameHeader {
        keyframe: false,
        dimensions: None,
    };
    let mut r = BitReader::new(frame);
    if r.bits(2)? != 2 {
        return Ok(None);
    }
    let profile = r.bits(1)? | (r.bits(1)? << 1);
    if profile == 3 {
        r.bit()?;
    }
    if r.bit()? {
        return Ok(Some(INTER)); // show_existing_frame
    }
    let keyframe = !r.bit()?;
    let _show_frame = r.bit()?;
    let _error_resilient = r.bit()?;
    if !keyframe {
        return Ok(Some(INTER));
    }
    if r.bits(24)? != 0x49_83_42 {
        return Ok(None);
    }
    if profile >= 2 {
        let _ten_or_twelve_bit = r.bit()?;
    }
    let color_space = r.bits(3)?;
    if color_space != 7 {
        let _color_range = r.bit()?;
        if profile == 1 || profile == 3 {
            r.bits(3)?; // subsampling_x, subsampling_y, reserved
        }
    } else if profile == 1 || profile == 3 {
        r.bit()?;
    }
    let width = r.bits(16)? + 1;
    let height = r.bits(16)? + 1;
    Ok(Some(FrameHeader {
        keyframe: true,
        dimensions: Some((width, height)),
    }))
}

/// True when `frame` already ends with a superframe index (VP9 spec Annex B).
fn has_superframe_index(frame: &[u8]) -> bool {
    let Some(&marker) = frame.last() else {
        return false;
    };
    if marker & 0xe0 != 0xc0 {
        return false;
    }
    let frames = usize::from(marker & 0x07) + 1;
    let size_bytes = usize::from((marker >> 3) & 0x03) + 1;
    let index = 2 + size_bytes * frames;
    frame.len() >= index && frame[frame.len() - index] == marker
}

/// Joins a picture's layer frames into one superframe, as a decoder expects them in one
/// container block.
pub fn superframe(frames: &[Vec<u8>]) -> Vec<u8> {
    let largest = frames.iter().map(Vec::len).max().unwrap_or(0);
    let joinable = (2..=8).contains(&frames.len())
        && !frames.iter().any(|f| has_superframe_index(f))
        && u32::try_from(largest).is_ok();
    if !joinable {
        return frames.concat();
    }
    let size_bytes = match largest {
        0..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xff_ffff => 3,
        _ => 4,
    };
    let marker = 0xc0 | ((size_bytes as u8 - 1) << 3) | (frames.len() as u8 - 1);
    let mut out = frames.concat();
    out.push(marker);
    for frame in frames {
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes()[..size_bytes]);
    }
    out.push(marker);
    out
}

#[derive(Default)]
pub struct Vp9 {
    /// Finished layer frames of the picture being built.
    layers: Vec<Vec<u8>>,
    current: Vec<u8>,
    /// The picture's first packet began the base layer frame.
    started: bool,
    /// Any packets collected for the picture.
    collecting: bool,
    first_inter_predicted: bool,
    ss_dimensions: Option<(u32, u32)>,
    header_dimensions: Option<(u32, u32)>,
}

impl Assembler for Vp9 {
    fn push(&mut self, payload: &[u8]) -> Result<(), PayloadError> {
        let d = parse_descriptor(payload)?;
        if d.ss_dimensions.is_some() {
            self.ss_dimensions = d.ss_dimensions;
        }
        if !self.collecting {
            self.collecting = true;
            self.started = d.begins_frame && d.spatial_id == 0;
            self.first_inter_predicted = d.inter_predicted;
        } else if d.begins_frame && !self.current.is_empty() {
            self.layers.push(std::mem::take(&mut self.current));
        }
        self.current.extend_from_slice(&payload[d.len..]);
        Ok(())
    }

    fn take(&mut self) -> Result<Option<(Vec<u8>, bool)>, PayloadError> {
        let mut layers = std::mem::take(&mut self.layers);
        let current = std::mem::take(&mut self.current);
        if !current.is_empty() {
            layers.push(current);
        }
        let started = std::mem::take(&mut self.started);
        self.collecting = false;
        if layers.is_empty() {
            return Ok(None);
        }
        if !started {
            return Err(PayloadError::MissingStart);
        }
        let keyframe = match parse_frame_header(&layers[0]) {
            Some(header) if header.keyframe && !self.first_inter_predicted => {
                self.header_dimensions = header.dimensions;
                true
            }
            Some(_) => false,
            // Not a header this parser knows: trust the descriptor.
            None => !self.first_inter_predicted,
        };
        let data = if layers.len() == 1 {
            layers.swap_remove(0)
        } else {
            superframe(&layers)
        };
        Ok(Some((data, keyframe)))
    }

    fn reset(&mut self) {
        self.layers.clear();
        self.current.clear();
        self.started = false;
        self.collecting = false;
    }

    fn dimensions(&self) -> Option<(u32, u32)> {
        self.ss_dimensions.or(self.header_dimensions)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::packet;
    use super::super::{Codec, Depacketizer};
    use super::*;

    /// A profile 0 keyframe header for 320x240 (sizes minus one: 319, 239), then filler.
    fn keyframe_bytes() -> Vec<u8> {
        // 10 0 0 0 0 1 1 | sync 49 83 42 | color_space 3 bits, range 1 | 16+16 bits
        // frame_marker=2, profile 0, show_existing 0, frame_type 0, show 1, error_res 0
        let mut bits: Vec<bool> = Vec::new();
        let mut put = |count: u32, value: u32| {
            for i in (0..count).rev() {
                bits.push((value >> i) & 1 == 1);
            }
        };
        put(2, 2);
        put(2, 0);
        put(1, 0);
        put(1, 0);
        put(1, 1);
        put(1, 0);
        put(24, 0x49_83_42);
        put(3, 1);
        put(1, 0);
        put(16, 319);
        put(16, 239);
        let mut out: Vec<u8> = bits
            .chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0, |b, (i, &x)| b | (u8::from(x) << (7 - i)))
            })
            .collect();
        out.extend_from_slice(&[0x55; 16]);
        out
    }

    #[test]
    fn descriptor_with_scalability_structure() {
        // I (15-bit), L (non-flexible: + TL0PICIDX), B, E, V.
        // SS: N_S=1 (2 layers), Y, G; sizes 320x180 and 640x360; N_G=1, one group with R=1.
        let payload = [
            0xae, 0x80, 0x01, 0x00, 0x07, 0x38, 0x01, 0x40, 0x00, 0xb4, 0x02, 0x80, 0x01, 0x68,
            0x01, 0x04, 0x01, 0xaa,
        ];
        let d = parse_descriptor(&payload).unwrap();
        assert_eq!(d.ss_dimensions, Some((640, 360)));
        assert!(d.begins_frame);
        assert!(!d.inter_predicted);
        assert_eq!(d.len, payload.len() - 1);
    }

    #[test]
    fn flexible_mode_reference_indices() {
        // I (7-bit), P, L, F, B: two P_DIFFs (N set on the first).
        let payload = [0xf8, 0x12, 0x02, 0x03, 0x04, 0xaa];
        let d = parse_descriptor(&payload).unwrap();
        assert!(d.inter_predicted);
        assert_eq!(d.spatial_id, 1);
        assert_eq!(d.len, 5);
        // Three P_DIFFs all claiming another follows.
        assert_eq!(
            parse_descriptor(&[0x58, 0x03, 0x03, 0x03, 0xaa]),
            Err(PayloadError::Truncated)
        );
        assert_eq!(
            parse_descriptor(&[0x8a, 0x80]),
            Err(PayloadError::Truncated)
        );
    }

    #[test]
    fn keyframe_header_gives_dimensions() {
        let key = parse_frame_header(&keyframe_bytes()).unwrap();
        assert!(key.keyframe);
        assert_eq!(key.dimensions, Some((320, 240)));
        // An inter frame: frame_type 1.
        let inter = parse_frame_header(&[0x86, 0x00]).unwrap();
        assert!(!inter.keyframe);
        assert_eq!(parse_frame_header(&[0x00]), None);
    }

    #[test]
    fn picture_from_packets_and_keyframe_gate() {
        let mut d = Depacketizer::new(Codec::Vp9);
        let key = keyframe_bytes();
        // ffmpeg's layout: no optional fields, B on the first packet, E on the last.
        let mut p1 = vec![0x08];
        p1.extend_from_slice(&key[..10]);
        let mut p2 = vec![0x04];
        p2.extend_from_slice(&key[10..]);
        assert!(d.push(&packet(1, 0, false, &p1)).is_none());
        let frame = d.push(&packet(2, 0, true, &p2)).unwrap();
        assert!(frame.keyframe);
        assert_eq!(frame.data, key);
        assert_eq!(d.dimensions(), Some((320, 240)));

        // P clear in the descriptor but an inter frame in the bitstream (ffmpeg never sets P).
        let inter = d
            .push(&packet(3, 3000, true, &[0x0c, 0x86, 0x00, 0x11]))
            .unwrap();
        assert!(!inter.keyframe);
        d.lost();
        assert!(d
            .push(&packet(5, 9000, true, &[0x4c, 0x86, 0x00]))
            .is_none());
        assert!(d.needs_keyframe());
    }

    #[test]
    fn spatial_layers_become_a_superframe() {
        let mut d = Depacketizer::new(Codec::Vp9);
        let key = keyframe_bytes();
        let mut base = vec![0x2c, 0x00, 0x00];
        base.extend_from_slice(&key);
        let upper = vec![0x2c, 0x02, 0x00, 0x86, 0x00, 0x11];
        assert!(d.push(&packet(1, 0, false, &base)).is_none());
        let frame = d.push(&packet(2, 0, true, &upper)).unwrap();
        assert!(frame.keyframe);
        let mut expected = key.clone();
        expected.extend_from_slice(&[0x86, 0x00, 0x11]);
        expected.extend_from_slice(&[0xc1, key.len() as u8, 3, 0xc1]);
        assert_eq!(frame.data, expected);
        assert!(has_superframe_index(&frame.data));
        // A picture starting at an upper layer lost its base.
        d.lost();
        assert!(d.push(&packet(4, 3000, true, &upper)).is_none());
        assert_eq!(d.last_error(), Some(&PayloadError::MissingStart));
    }
}
