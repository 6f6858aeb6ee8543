//! VP8 picture ids and TL0PICIDX (RFC 7741 §4.2) made continuous across a down-track's
//! source switches. Each simulcast layer is its own encoder, numbering its pictures from
//! its own random start; at a layer switch a receiver would see the picture id jump and
//! have to guess which pictures in between it lost. Rewritten, a subscriber sees one
//! encoder's numbering, whatever layers it went through.

/// Where a VP8 payload descriptor keeps what we read or rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Descriptor {
    /// S = 1 and partition 0: the packet starts a frame.
    pub starts_frame: bool,
    /// The picture id's byte offset, its value, and whether it is 15 bits long (M = 1).
    pub picture_id: Option<(usize, u16, bool)>,
    /// TL0PICIDX's byte offset and value.
    pub tl0_pic_idx: Option<(usize, u8)>,
    /// TID: the temporal layer of the frame (T = 1).
    pub temporal: Option<u8>,
    /// Where the VP8 payload (its frame header on a frame's first packet) starts.
    pub payload_at: usize,
}

/// Reads the payload descriptor at the start of a VP8 RTP payload; `None` if it is cut
/// short (or the payload is empty: padding).
pub(crate) fn descriptor(payload: &[u8]) -> Option<Descriptor> {
    let first = *payload.first()?;
    let mut at = 1;
    let mut picture_id = None;
    let mut tl0_pic_idx = None;
    let mut temporal = None;
    if first & 0x80 != 0 {
        let ext = *payload.get(1)?;
        at = 2;
        if ext & 0x80 != 0 {
            let high = *payload.get(at)?;
            if high & 0x80 != 0 {
                let low = *payload.get(at + 1)?;
                picture_id = Some((at, u16::from(high & 0x7f) << 8 | u16::from(low), true));
                at += 2;
            } else {
                picture_id = Some((at, u16::from(high), false));
                at += 1;
            }
        }
        if ext & 0x40 != 0 {
            tl0_pic_idx = Some((at, *payload.get(at)?));
            at += 1;
        }
        if ext & 0x30 != 0 {
            // TID/Y/KEYIDX; TID counts only with T = 1.
            let byte = *payload.get(at)?;
            if ext & 0x20 != 0 {
                temporal = Some(byte >> 6);
            }
            at += 1;
        }
    }
    (payload.len() >= at).then_some(Descriptor {
        starts_frame: first & 0x10 != 0 && first & 0x07 == 0,
        picture_id,
        tl0_pic_idx,
        temporal,
        payload_at: at,
    })
}

/// The rewritten numbers to write into one outgoing packet's copy of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Vp8Patch {
    picture_id: Option<(u8, u16, bool)>,
    tl0_pic_idx: Option<(u8, u8)>,
}

impl Vp8Patch {
    /// Writes the numbers into `payload` (the copy going out, same layout as the one read).
    pub(crate) fn apply(&self, payload: &mut [u8]) {
        if let Some((at, id, long)) = self.picture_id {
            let at = usize::from(at);
            if long {
                if let Some(bytes) = payload.get_mut(at..at + 2) {
                    bytes[0] = 0x80 | (id >> 8) as u8 & 0x7f;
                    bytes[1] = id as u8;
                }
            } else if let Some(byte) = payload.get_mut(at) {
                *byte = id as u8 & 0x7f;
            }
        }
        if let Some((at, idx)) = self.tl0_pic_idx {
            if let Some(byte) = payload.get_mut(usize::from(at)) {
                *byte = idx;
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.picture_id.is_none() && self.tl0_pic_idx.is_none()
    }
}

const PICTURE_ID_MASK: u16 = 0x7fff;

/// One down-track's numbering of VP8 pictures.
#[derive(Debug, Default)]
pub(crate) struct Vp8Ids {
    source: Option<u32>,
    picture_id_offset: u16,
    tl0_offset: u8,
    last_picture_id: Option<u16>,
    last_tl0: Option<u8>,
}

impl Vp8Ids {
    /// The numbers the packet of source `ssrc` with descriptor `d` (read once per packet,
    /// whatever the number of subscribers) goes out with. A new source continues right
    /// after the last picture sent (it starts on a keyframe).
    pub(crate) fn rewrite(&mut self, ssrc: u32, d: &Descriptor) -> Option<Vp8Patch> {
        if self.source != Some(ssrc) {
            self.source = Some(ssrc);
            self.picture_id_offset = match (self.last_picture_id, d.picture_id) {
                (Some(last), Some((_, id, _))) => last.wrapping_add(1).wrapping_sub(id),
                _ => 0,
            };
            self.tl0_offset = match (self.last_tl0, d.tl0_pic_idx) {
                (Some(last), Some((_, idx))) => last.wrapping_add(1).wrapping_sub(idx),
                _ => 0,
            };
        }
        let picture_id = d.picture_id.map(|(at, id, long)| {
            let id = id.wrapping_add(self.picture_id_offset) & PICTURE_ID_MASK;
            // The newest picture, by 15-bit serial number arithmetic.
            if self
                .last_picture_id
                .is_none_or(|last| id.wrapping_sub(last) & PICTURE_ID_MASK < 0x4000)
            {
                self.last_picture_id = Some(id);
            }
            (at as u8, id, long)
        });
        let tl0_pic_idx = d.tl0_pic_idx.map(|(at, idx)| {
            let idx = idx.wrapping_add(self.tl0_offset);
            if self
                .last_tl0
                .is_none_or(|last| idx.wrapping_sub(last) < 0x80)
            {
                self.last_tl0 = Some(idx);
            }
            (at as u8, idx)
        });
        let patch = Vp8Patch {
            picture_id,
            tl0_pic_idx,
        };
        (!patch.is_empty()).then_some(patch)
    }

    /// Leaves out the frame packet `d` starts (of a temporal layer this subscriber does not
    /// get): the pictures after it close up, so the receiver sees no picture missing (it
    /// would hold back every frame after one until a keyframe). Only for a frame newer than
    /// the last one sent; the packets of a frame all carry its start's fate.
    pub(crate) fn skip(&mut self, ssrc: u32, d: &Descriptor) {
        if self.source != Some(ssrc) || !d.starts_frame {
            return;
        }
        let Some((_, id, _)) = d.picture_id else {
            return;
        };
        let id = id.wrapping_add(self.picture_id_offset) & PICTURE_ID_MASK;
        let newer = self.last_picture_id.is_some_and(|last| {
            let ahead = id.wrapping_sub(last) & PICTURE_ID_MASK;
            ahead != 0 && ahead < 0x4000
        });
        if newer {
            self.picture_id_offset = self.picture_id_offset.wrapping_sub(1);
        }
    }

    /// Forgets the source: the next packet continues the numbering as a new one would.
    pub(crate) fn restart(&mut self) {
        self.source = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 payload with a 15-bit picture id, TL0PICIDX and TID, then one payload byte.
    fn packet(picture_id: u16, tl0: u8, starts: bool) -> Vec<u8> {
        vec![
            0x80 | if starts { 0x10 } else { 0 },
            0xe0,
            0x80 | (picture_id >> 8) as u8,
            picture_id as u8,
            tl0,
            0x20,
            0x9d,
        ]
    }

    fn rewritten(ids: &mut Vp8Ids, ssrc: u32, payload: &[u8]) -> (u16, u8) {
        let mut out = payload.to_vec();
        if let Some(patch) = ids.rewrite(ssrc, &descriptor(payload).unwrap()) {
            patch.apply(&mut out);
        }
        let d = descriptor(&out).unwrap();
        (d.picture_id.unwrap().1, d.tl0_pic_idx.unwrap().1)
    }

    #[test]
    fn reads_the_descriptor() {
        let d = descriptor(&packet(0x1234, 7, true)).unwrap();
        assert_eq!(d.picture_id, Some((2, 0x1234, true)));
        assert_eq!(d.tl0_pic_idx, Some((4, 7)));
        assert_eq!(d.payload_at, 6);
        assert_eq!(d.temporal, Some(0));
        assert!(d.starts_frame);
        let mut t2 = packet(0x1234, 7, true);
        t2[5] = 0x80 | 0x20; // TID 2, Y
        assert_eq!(descriptor(&t2).unwrap().temporal, Some(2));
        // K without T: no temporal layer.
        assert_eq!(
            descriptor(&[0x80, 0x10, 0xc0, 0x9d]).unwrap().temporal,
            None
        );
        // Minimal descriptor, 7-bit picture id, and cut short.
        assert_eq!(descriptor(&[0x10, 0x9d]).unwrap().payload_at, 1);
        assert_eq!(
            descriptor(&[0x90, 0x80, 0x05, 0x9d]).unwrap().picture_id,
            Some((2, 5, false))
        );
        assert_eq!(descriptor(&[0x90, 0x80, 0x85]), None);
        assert_eq!(descriptor(&[]), None);
    }

    #[test]
    fn a_switch_continues_the_numbering_of_the_source_before() {
        let mut ids = Vp8Ids::default();
        assert_eq!(rewritten(&mut ids, 1, &packet(100, 10, true)), (100, 10));
        assert_eq!(rewritten(&mut ids, 1, &packet(100, 10, false)), (100, 10));
        assert_eq!(rewritten(&mut ids, 1, &packet(101, 10, true)), (101, 10));
        assert_eq!(rewritten(&mut ids, 1, &packet(102, 11, true)), (102, 11));
        // Another layer, numbered from elsewhere (and wrapping): one more than the last.
        assert_eq!(
            rewritten(&mut ids, 2, &packet(0x7ffe, 250, true)),
            (103, 12)
        );
        assert_eq!(
            rewritten(&mut ids, 2, &packet(0x7fff, 250, true)),
            (104, 12)
        );
        assert_eq!(rewritten(&mut ids, 2, &packet(0, 251, true)), (105, 13));
        // After a restart, even the same source continues after the last picture sent.
        ids.restart();
        assert_eq!(rewritten(&mut ids, 1, &packet(103, 11, true)), (106, 14));
    }

    #[test]
    fn left_out_frames_leave_no_hole_in_the_picture_ids() {
        let mut ids = Vp8Ids::default();
        let d = |id, starts| descriptor(&packet(id, 10, starts)).unwrap();
        assert_eq!(rewritten(&mut ids, 1, &packet(500, 10, true)), (500, 10));
        // Frames 501 and 502 are left out (two packets each, as a late one of 501 too).
        ids.skip(1, &d(501, true));
        ids.skip(1, &d(501, false));
        ids.skip(1, &d(502, true));
        assert_eq!(rewritten(&mut ids, 1, &packet(503, 10, true)), (501, 10));
        // A frame start older than the last picture sent changes nothing.
        ids.skip(1, &d(502, true));
        ids.skip(1, &d(503, true));
        assert_eq!(rewritten(&mut ids, 1, &packet(504, 10, true)), (502, 10));
        // Another source's frames are not this one's to skip.
        ids.skip(2, &d(505, true));
        assert_eq!(rewritten(&mut ids, 1, &packet(505, 10, true)), (503, 10));
    }

    #[test]
    fn padding_and_short_descriptors_are_left_alone() {
        let mut ids = Vp8Ids::default();
        assert_eq!(descriptor(&[]), None, "padding has no descriptor");
        let minimal = descriptor(&[0x10, 0x9d]).unwrap();
        assert_eq!(ids.rewrite(1, &minimal), None, "no picture id to rewrite");
    }

    #[test]
    fn a_seven_bit_picture_id_stays_seven_bits() {
        let mut ids = Vp8Ids::default();
        ids.rewrite(1, &descriptor(&[0x90, 0x80, 0x7f, 0x9d]).unwrap());
        let payload = [0x90, 0x80, 0x10, 0x9d];
        let mut out = payload;
        ids.rewrite(2, &descriptor(&payload).unwrap())
            .unwrap()
            .apply(&mut out);
        assert_eq!(
            out,
            [0x90, 0x80, 0x00, 0x9d],
            "0x7f + 1 wraps within 7 bits"
        );
    }
}
