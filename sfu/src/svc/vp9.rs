//! Where a VP9 packet sits in a scalable stream, read from its payload descriptor
//! (draft-ietf-payload-vp9 §4.2).

use super::SvcLayer;

/// The layer fields of a VP9 RTP payload; `None` when it carries none (L = 0: a stream
/// without layers, which is forwarded as a whole) or is cut short.
pub(crate) fn layer_of(payload: &[u8]) -> Option<SvcLayer> {
    let first = *payload.first()?;
    let has_picture_id = first & 0x80 != 0;
    let has_layers = first & 0x20 != 0;
    if !has_layers {
        return None;
    }
    let mut at = 1;
    if has_picture_id {
        // M: a 15-bit picture id in two bytes, else 7 bits in one.
        at += if *payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
    }
    let layers = *payload.get(at)?;
    Some(SvcLayer {
        temporal: layers >> 5,
        spatial: (layers >> 1) & 0x07,
        starts_frame: first & 0x08 != 0,
        ends_frame: first & 0x04 != 0,
        inter_picture: first & 0x40 != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// I=1 (15-bit picture id), L=1, flexible mode (F=1), with the given P, B and E bits.
    fn descriptor(p: bool, b: bool, e: bool, tid: u8, sid: u8) -> Vec<u8> {
        let first = 0x80 | 0x20 | 0x10 | u8::from(p) << 6 | u8::from(b) << 3 | u8::from(e) << 2;
        vec![first, 0x81, 0x23, tid << 5 | sid << 1, 0x9d]
    }

    #[test]
    fn reads_the_layer_indices() {
        let key = layer_of(&descriptor(false, true, false, 0, 0)).unwrap();
        assert_eq!(
            key,
            SvcLayer {
                spatial: 0,
                temporal: 0,
                starts_frame: true,
                ends_frame: false,
                inter_picture: false,
            }
        );
        assert!(key.starts_picture() && key.starts_keyframe());
        let upper = layer_of(&descriptor(true, true, true, 2, 2)).unwrap();
        assert_eq!((upper.spatial, upper.temporal), (2, 2));
        assert!(upper.ends_frame && !upper.starts_picture() && !upper.starts_keyframe());
        // A keyframe's upper layer (P clear) does not start the picture.
        assert!(!layer_of(&descriptor(false, true, true, 0, 1))
            .unwrap()
            .starts_keyframe());
    }

    #[test]
    fn non_flexible_mode_and_seven_bit_picture_ids() {
        // I=1 with a 7-bit id, L=1, F=0: layer indices then TL0PICIDX.
        let payload = [0x80 | 0x20 | 0x08, 0x05, 1 << 5 | 1 << 1 | 1, 0x07, 0x9d];
        let layer = layer_of(&payload).unwrap();
        assert_eq!((layer.spatial, layer.temporal), (1, 1));
        // No picture id at all.
        assert_eq!(layer_of(&[0x20 | 0x08, 0x02]).unwrap().spatial, 1);
    }

    #[test]
    fn no_layers_or_cut_short_reads_as_none() {
        assert_eq!(layer_of(&[0x88, 0x12, 0x9d]), None, "L = 0");
        assert_eq!(layer_of(&[]), None);
        assert_eq!(layer_of(&[0xa8, 0x81]), None, "cut inside the picture id");
        assert_eq!(
            layer_of(&[0xa8, 0x81, 0x23]),
            None,
            "cut before the layer indices"
        );
    }
}
