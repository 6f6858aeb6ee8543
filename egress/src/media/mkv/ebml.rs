//! EBML encoding (RFC 8794) and the Matroska element IDs the writer uses (RFC 9559).
//! Elements are built in memory: everything the writer emits has a known size except the
//! Segment, whose size is only known (and patched in) at the end.

pub mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const VOID: u32 = 0xEC;

    pub const SEGMENT: u32 = 0x1853_8067;
    pub const SEEK_HEAD: u32 = 0x114D_9B74;
    pub const SEEK: u32 = 0x4DBB;
    pub const SEEK_ID: u32 = 0x53AB;
    pub const SEEK_POSITION: u32 = 0x53AC;

    pub const INFO: u32 = 0x1549_A966;
    pub const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
    pub const DURATION: u32 = 0x4489;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;

    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const FLAG_LACING: u32 = 0x9C;
    pub const NAME: u32 = 0x536E;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const CODEC_DELAY: u32 = 0x56AA;
    pub const SEEK_PRE_ROLL: u32 = 0x56BB;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const AUDIO: u32 = 0xE1;
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub const CHANNELS: u32 = 0x9F;

    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMESTAMP: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;

    pub const CUES: u32 = 0x1C53_BB6B;
    pub const CUE_POINT: u32 = 0xBB;
    pub const CUE_TIME: u32 = 0xB3;
    pub const CUE_TRACK_POSITIONS: u32 = 0xB7;
    pub const CUE_TRACK: u32 = 0xF7;
    pub const CUE_CLUSTER_POSITION: u32 = 0xF1;
}

/// The largest value an 8-byte size can hold (all ones means "unknown").
pub const MAX_SIZE: u64 = (1 << 56) - 2;

/// An 8-byte size field saying "unknown": what a live Segment starts with.
pub const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

/// Element IDs keep their marker bits, so they are written as their big-endian bytes.
pub fn write_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(3);
    out.extend_from_slice(&bytes[skip..]);
}

/// How many bytes the shortest variable-size integer for `value` takes. The all-ones value of
/// each length is reserved, hence `<` rather than `<=`.
pub fn vint_len(value: u64) -> usize {
    (1..=8)
        .find(|&len| value < (1u64 << (7 * len)) - 1)
        .unwrap_or(8)
}

/// Writes `value` (at most [`MAX_SIZE`]) as a variable-size integer of exactly `len` bytes.
pub fn write_vint(out: &mut Vec<u8>, value: u64, len: usize) {
    debug_assert!((1..=8).contains(&len) && value < (1u64 << (7 * len)) - 1);
    let marked = value | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
}

pub fn write_size(out: &mut Vec<u8>, size: u64) {
    write_vint(out, size, vint_len(size));
}

/// An 8-byte size field, for a size patched in later.
pub fn size_8(size: u64) -> [u8; 8] {
    let mut out = Vec::with_capacity(8);
    write_vint(&mut out, size.min(MAX_SIZE), 8);
    let mut fixed = [0; 8];
    fixed.copy_from_slice(&out);
    fixed
}

pub fn element(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    write_id(out, id);
    write_size(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// A master element whose children `build` writes.
pub fn master(out: &mut Vec<u8>, id: u32, build: impl FnOnce(&mut Vec<u8>)) {
    let mut body = Vec::new();
    build(&mut body);
    element(out, id, &body);
}

pub fn uint(out: &mut Vec<u8>, id: u32, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(7);
    element(out, id, &bytes[skip..]);
}

pub fn float(out: &mut Vec<u8>, id: u32, value: f64) {
    element(out, id, &value.to_be_bytes());
}

pub fn string(out: &mut Vec<u8>, id: u32, value: &str) {
    element(out, id, value.as_bytes());
}

/// A Void element of exactly `total` bytes (at least 2), to reserve room.
pub fn void(out: &mut Vec<u8>, total: usize) {
    debug_assert!(total >= 2);
    // One byte of ID; the size field grows with the body, so find the fitting pair.
    let mut size_len = 1;
    while vint_len((total - 1 - size_len) as u64) > size_len {
        size_len += 1;
    }
    let body = total - 1 - size_len;
    write_id(out, id::VOID);
    write_vint(out, body as u64, size_len);
    out.resize(out.len() + body, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vint_sizes_at_their_limits() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x80]),
            (1, &[0x81]),
            (126, &[0xfe]),
            // 127 is all ones in one byte (reserved), so it takes two.
            (127, &[0x40, 0x7f]),
            (16_382, &[0x7f, 0xfe]),
            (16_383, &[0x20, 0x3f, 0xff]),
            (MAX_SIZE, &[0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]),
        ];
        for &(value, bytes) in cases {
            let mut out = Vec::new();
            write_size(&mut out, value);
            assert_eq!(out, bytes, "{value}");
        }
        assert_eq!(size_8(5), [0x01, 0, 0, 0, 0, 0, 0, 5]);
    }

    #[test]
    fn ids_and_elements() {
        let mut out = Vec::new();
        write_id(&mut out, id::SEGMENT);
        write_id(&mut out, id::TIMESTAMP);
        write_id(&mut out, id::TIMESTAMP_SCALE);
        assert_eq!(out, [0x18, 0x53, 0x80, 0x67, 0xe7, 0x2a, 0xd7, 0xb1]);

        let mut out = Vec::new();
        uint(&mut out, id::TRACK_NUMBER, 0);
        uint(&mut out, id::TIMESTAMP_SCALE, 1_000_000);
        string(&mut out, id::CODEC_ID, "V_VP8");
        assert_eq!(
            out,
            [
                0xd7, 0x81, 0x00, 0x2a, 0xd7, 0xb1, 0x83, 0x0f, 0x42, 0x40, 0x86, 0x85, b'V', b'_',
                b'V', b'P', b'8'
            ]
        );
        let mut out = Vec::new();
        float(&mut out, id::DURATION, 1.5);
        assert_eq!(out, [0x44, 0x89, 0x88, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn void_fills_exactly() {
        for total in [2, 3, 100, 128, 129, 130, 200, 20_000] {
            let mut out = Vec::new();
            void(&mut out, total);
            assert_eq!(out.len(), total, "{total}");
            assert_eq!(out[0], 0xec);
        }
    }
}
