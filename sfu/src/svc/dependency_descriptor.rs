//! Where an AV1 packet sits in a scalable stream, read from the dependency descriptor header
//! extension (AV1 RTP specification, appendix A). AV1's payload has no layer fields of its
//! own: each packet's descriptor names a *frame template*, and the templates' spatial and
//! temporal ids come with the stream's template structure, which a keyframe's descriptor
//! carries. A published track keeps the last structure it was sent ([`Templates`]).
//!
//! The descriptor goes on to subscribers as it came: a receiver reads frame boundaries and
//! references from it, and the frames of the layers a subscriber gets reference only frames
//! of those layers.

use std::sync::Arc;

use str0m::rtp::{ExtensionSerializer, ExtensionValues};

use super::SvcLayer;

pub(crate) const URI: &str =
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

/// The id our offers give it (free in str0m's standard map; the one-byte form's 1–14).
pub(crate) const ID: u8 = 12;

/// A template id has 6 bits, so a structure has at most 64 templates.
const MAX_TEMPLATES: usize = 64;

/// Layer ids above these are refused: a published track measures at most 8 spatial layers
/// and a down-track steps through at most 8 temporal ones.
const MAX_LAYER_ID: u8 = 7;

/// A packet's descriptor as it came, kept among str0m's extension values of the packet
/// (`user_values`) and written again on the packets forwarded from it.
#[derive(Debug, Clone)]
pub(crate) struct DescriptorBytes(pub Arc<[u8]>);

/// How str0m reads and writes the extension (its own map has no entry for it).
#[derive(Debug)]
pub(crate) struct DescriptorExtension;

impl ExtensionSerializer for DescriptorExtension {
    fn write_to(&self, buf: &mut [u8], ev: &ExtensionValues) -> usize {
        match ev.user_values.get::<DescriptorBytes>() {
            Some(DescriptorBytes(bytes)) if bytes.len() <= buf.len() && bytes.len() <= 255 => {
                buf[..bytes.len()].copy_from_slice(bytes);
                bytes.len()
            }
            _ => 0,
        }
    }

    fn parse_value(&self, buf: &[u8], ev: &mut ExtensionValues) -> bool {
        // Three bytes are the mandatory fields; less is not a descriptor.
        if buf.len() < 3 {
            return false;
        }
        ev.user_values.set(DescriptorBytes(Arc::from(buf)));
        true
    }

    fn is_video(&self) -> bool {
        true
    }

    fn is_audio(&self) -> bool {
        false
    }

    fn requires_two_byte_form(&self, ev: &ExtensionValues) -> bool {
        ev.user_values
            .get::<DescriptorBytes>()
            .is_some_and(|DescriptorBytes(bytes)| bytes.len() > 16)
    }
}

/// The id a negotiated session description (an answer) gives the descriptor.
pub(crate) fn negotiated_id(sdp: &str) -> Option<u8> {
    crate::congestion::extmap_id(sdp, URI)
}

/// `answer` without the descriptor in the m-sections whose track is announced in another
/// codec than AV1 (`codec_of_mid`; sections of unknown tracks keep it). Chromium sends the
/// descriptor on every video codec once it is negotiated, and nothing but AV1 needs it here:
/// VP8 and VP9 say what they need in their payload descriptors.
pub(crate) fn only_for_av1(answer: &str, codec_of_mid: impl Fn(&str) -> Option<String>) -> String {
    let extmap = format!(" {URI}");
    let mut out = String::with_capacity(answer.len());
    let mut section = String::new();
    let flush = |section: &mut String, out: &mut String| {
        let mid = section
            .lines()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .map(str::trim);
        let drop = mid
            .and_then(&codec_of_mid)
            .is_some_and(|codec| !codec.eq_ignore_ascii_case("av1"));
        for line in section.split_inclusive('\n') {
            let is_descriptor = line.starts_with("a=extmap:") && line.trim_end().ends_with(&extmap);
            if !(drop && is_descriptor) {
                out.push_str(line);
            }
        }
        section.clear();
    };
    for line in answer.split_inclusive('\n') {
        if line.starts_with("m=") {
            flush(&mut section, &mut out);
        }
        section.push_str(line);
    }
    flush(&mut section, &mut out);
    out
}

/// The fields of one descriptor that place its packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Descriptor {
    pub starts_frame: bool,
    pub ends_frame: bool,
    pub template_id: u8,
    /// The template structure, when this packet carries one (a keyframe's first packet).
    pub structure: Option<Templates>,
}

/// The spatial and temporal id of each frame template of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Templates {
    id_offset: u8,
    /// (spatial, temporal) by template index; 1 to 64 entries.
    layers: Vec<(u8, u8)>,
}

impl Templates {
    /// The layer of the frame that uses template `template_id`; `None` for an id outside
    /// the structure.
    pub fn layer_of(&self, template_id: u8) -> Option<(u8, u8)> {
        let index = (usize::from(template_id) + MAX_TEMPLATES - usize::from(self.id_offset))
            % MAX_TEMPLATES;
        self.layers.get(index).copied()
    }
}

/// Reads a descriptor's mandatory fields and, when present, the layers of its template
/// structure. `None` when it is cut short or its structure is not one we can use.
pub(crate) fn parse(bytes: &[u8]) -> Option<Descriptor> {
    let mut bits = Bits::new(bytes);
    let starts_frame = bits.flag()?;
    let ends_frame = bits.flag()?;
    let template_id = bits.read(6)? as u8;
    let _frame_number = bits.read(16)?;
    let mut structure = None;
    if bytes.len() > 3 && bits.flag()? {
        // template_dependency_structure_present_flag, then four more flags, then the
        // structure: what follows its template layers (decode target indications,
        // references, chains, resolutions) is not needed to place a packet.
        bits.read(4)?;
        let id_offset = bits.read(6)? as u8;
        let _decode_targets_minus_one = bits.read(5)?;
        structure = Some(template_layers(&mut bits, id_offset)?);
    }
    Some(Descriptor {
        starts_frame,
        ends_frame,
        template_id,
        structure,
    })
}

/// `template_layers()`: each template's layer, as steps from the one before it.
fn template_layers(bits: &mut Bits<'_>, id_offset: u8) -> Option<Templates> {
    let (mut spatial, mut temporal) = (0u8, 0u8);
    let mut layers = Vec::new();
    loop {
        if layers.len() == MAX_TEMPLATES || spatial > MAX_LAYER_ID || temporal > MAX_LAYER_ID {
            return None;
        }
        layers.push((spatial, temporal));
        match bits.read(2)? {
            0 => {}
            1 => temporal += 1,
            2 => {
                temporal = 0;
                spatial += 1;
            }
            _ => break,
        }
    }
    Some(Templates { id_offset, layers })
}

/// Where the AV1 packet described by `descriptor` sits, given the stream's `templates`
/// (updated first if the descriptor carries new ones). `payload` is the RTP payload: its
/// aggregation header's N bit marks the first packet of a keyframe.
pub(crate) fn layer_of(
    descriptor: &[u8],
    templates: &mut Option<Box<Templates>>,
    payload: &[u8],
) -> Option<SvcLayer> {
    let parsed = parse(descriptor)?;
    if let Some(structure) = parsed.structure {
        if templates.as_deref() != Some(&structure) {
            *templates = Some(Box::new(structure));
        }
    }
    let (spatial, temporal) = templates.as_ref()?.layer_of(parsed.template_id)?;
    Some(SvcLayer {
        spatial,
        temporal,
        starts_frame: parsed.starts_frame,
        ends_frame: parsed.ends_frame,
        inter_picture: !crate::codec::starts_keyframe(str0m::format::Codec::Av1, payload),
    })
}

/// Reads bits most significant first.
struct Bits<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Bits<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn read(&mut self, count: usize) -> Option<u32> {
        let mut value = 0u32;
        for _ in 0..count {
            let byte = *self.bytes.get(self.at / 8)?;
            let bit = (byte >> (7 - self.at % 8)) & 1;
            value = value << 1 | u32::from(bit);
            self.at += 1;
        }
        Some(value)
    }

    fn flag(&mut self) -> Option<bool> {
        self.read(1).map(|bit| bit == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes bits most significant first, as the descriptor is laid out.
    #[derive(Default)]
    struct Writer {
        bytes: Vec<u8>,
        bits: usize,
    }

    impl Writer {
        fn put(&mut self, count: usize, value: u32) -> &mut Self {
            for i in (0..count).rev() {
                if self.bits.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                let bit = (value >> i) as u8 & 1;
                *self.bytes.last_mut().unwrap() |= bit << (7 - self.bits % 8);
                self.bits += 1;
            }
            self
        }
    }

    /// A descriptor of the given frame flags and template id; with `steps`, a structure
    /// with id offset `offset` whose template layers follow those next_layer_idc steps.
    fn descriptor(
        start: bool,
        end: bool,
        template: u32,
        structure: Option<(u32, &[u32])>,
    ) -> Vec<u8> {
        let mut w = Writer::default();
        w.put(1, start.into())
            .put(1, end.into())
            .put(6, template)
            .put(16, 0x1234);
        if let Some((offset, steps)) = structure {
            w.put(1, 1).put(4, 0).put(6, offset).put(5, 8);
            for step in steps {
                w.put(2, *step);
            }
            // Stands for the rest of the structure, which is not read.
            w.put(8, 0xff);
        }
        w.bytes
    }

    /// L3T3's layers as libwebrtc lays out its templates: per spatial layer, T0, T0 again
    /// (the key template), T1, T2.
    const L3T3: [u32; 12] = [0, 1, 1, 2, 0, 1, 1, 2, 0, 1, 1, 3];

    #[test]
    fn a_keyframe_brings_the_templates_that_place_later_packets() {
        let mut templates = None;
        // The keyframe's first packet: N set in the AV1 aggregation header.
        let key = descriptor(true, false, 5, Some((5, &L3T3)));
        let layer = layer_of(&key, &mut templates, &[0x18]).unwrap();
        assert_eq!((layer.spatial, layer.temporal), (0, 0));
        assert!(layer.starts_keyframe());
        // Template 5 + 6 (offset 5) is index 6: spatial 1, temporal 1.
        let upper = layer_of(&descriptor(false, true, 11, None), &mut templates, &[0x10]).unwrap();
        assert_eq!((upper.spatial, upper.temporal), (1, 1));
        assert!(upper.ends_frame && !upper.starts_frame && upper.inter_picture);
        // Ids wrap: template 0 is index 59 with offset 5, beyond the 12 templates.
        assert_eq!(
            layer_of(&descriptor(true, true, 0, None), &mut templates, &[0x10]),
            None
        );
        let top = layer_of(&descriptor(true, false, 16, None), &mut templates, &[0x10]).unwrap();
        assert_eq!((top.spatial, top.temporal), (2, 2));
    }

    #[test]
    fn nothing_is_placed_before_a_structure() {
        let mut templates = None;
        assert_eq!(
            layer_of(&descriptor(true, true, 1, None), &mut templates, &[0x10]),
            None
        );
        assert!(templates.is_none());
    }

    #[test]
    fn cut_short_or_unusable_descriptors_read_as_none() {
        assert_eq!(
            parse(&[0x80, 0x01]),
            None,
            "under the mandatory three bytes"
        );
        let full = descriptor(true, false, 0, Some((0, &L3T3)));
        assert_eq!(parse(&full[..5]), None, "cut inside the structure");
        // 64 templates of one layer each, and one more: more than 6 bits can name.
        let too_many = [0; 64].iter().copied().chain([3]).collect::<Vec<_>>();
        assert_eq!(
            parse(&descriptor(true, true, 0, Some((0, &too_many)))),
            None
        );
        // Nine spatial layers.
        assert_eq!(
            parse(&descriptor(
                true,
                true,
                0,
                Some((0, &[2, 2, 2, 2, 2, 2, 2, 2, 3]))
            )),
            None
        );
        let mut sixty_four = vec![0; 63];
        sixty_four.push(3);
        assert!(parse(&descriptor(true, true, 0, Some((0, &sixty_four)))).is_some());
    }

    #[test]
    fn the_mandatory_fields_alone() {
        let parsed = parse(&descriptor(false, true, 42, None)).unwrap();
        assert_eq!(
            parsed,
            Descriptor {
                starts_frame: false,
                ends_frame: true,
                template_id: 42,
                structure: None,
            }
        );
        // Extended fields without a structure: the flags say so.
        assert_eq!(parse(&[0x40, 0x12, 0x34, 0x40]).unwrap().structure, None);
    }

    #[test]
    fn answers_keep_the_descriptor_for_av1_tracks_only() {
        let answer = format!(
            "v=0\r\nm=video 9 UDP 96\r\na=mid:0\r\na=extmap:12 {URI}\r\na=extmap:3 x\r\n\
             m=video 9 UDP 45\r\na=extmap:12 {URI}\r\na=mid:1\r\n\
             m=video 9 UDP 45\r\na=mid:2\r\na=extmap:12 {URI}\r\n"
        );
        let codecs = |mid: &str| match mid {
            "0" => Some("vp8".to_owned()),
            "1" => Some("av1".to_owned()),
            _ => None,
        };
        let out = only_for_av1(&answer, codecs);
        assert_eq!(out.matches(URI).count(), 2, "{out}");
        assert!(out.contains("a=mid:0\r\na=extmap:3 x\r\n"), "{out}");
        assert!(
            out.contains(&format!("a=extmap:12 {URI}\r\na=mid:1")),
            "{out}"
        );
        assert!(out.starts_with("v=0\r\n") && out.ends_with(&format!("{URI}\r\n")));
    }

    #[test]
    fn the_bytes_go_back_out_as_they_came() {
        let mut values = ExtensionValues::default();
        let bytes = descriptor(true, false, 5, Some((5, &L3T3)));
        assert!(DescriptorExtension.parse_value(&bytes, &mut values));
        assert!(DescriptorExtension.requires_two_byte_form(&values) == (bytes.len() > 16));
        let mut out = [0u8; 64];
        let written = DescriptorExtension.write_to(&mut out, &values);
        assert_eq!(&out[..written], &bytes[..]);
        assert_eq!(
            DescriptorExtension.write_to(&mut out[..2], &values),
            0,
            "no room"
        );
        assert!(!DescriptorExtension.parse_value(&[1, 2], &mut values));
    }
}
