//! Ogg pages (RFC 3533): header, lacing and the page checksum.

/// Header type flags.
pub const CONTINUED: u8 = 0x01;
pub const BEGIN_OF_STREAM: u8 = 0x02;
pub const END_OF_STREAM: u8 = 0x04;

/// A page holds at most 255 lacing values.
pub const MAX_SEGMENTS: usize = 255;

/// The granule position of a page on which no packet ends.
pub const NO_GRANULE: u64 = u64::MAX;

const CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 with polynomial 0x04C11DB7, initial value 0, no reflection and no final XOR: the
/// variant Ogg uses, which none of the common CRC presets is.
const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

pub fn crc32(data: &[u8]) -> u32 {
    data.iter().fold(0, |crc, &byte| {
        (crc << 8) ^ CRC_TABLE[usize::from((crc >> 24) as u8 ^ byte)]
    })
}

/// Lacing values for a packet of `len` bytes: 255s then the remainder, which is 0 when `len`
/// is a multiple of 255 (so a reader sees where the packet ends).
pub fn lacing(len: usize) -> impl Iterator<Item = u8> {
    std::iter::repeat_n(255u8, len / 255).chain(std::iter::once((len % 255) as u8))
}

/// Serializes one page; `segments` are its lacing values and `body` their bytes.
pub fn build(
    flags: u8,
    granule: u64,
    serial: u32,
    sequence: u32,
    segments: &[u8],
    body: &[u8],
) -> Vec<u8> {
    debug_assert!(segments.len() <= MAX_SEGMENTS);
    debug_assert_eq!(
        segments.iter().map(|&s| usize::from(s)).sum::<usize>(),
        body.len()
    );
    let mut page = Vec::with_capacity(27 + segments.len() + body.len());
    page.extend_from_slice(b"OggS");
    page.push(0); // stream structure version
    page.push(flags);
    page.extend_from_slice(&granule.to_le_bytes());
    page.extend_from_slice(&serial.to_le_bytes());
    page.extend_from_slice(&sequence.to_le_bytes());
    page.extend_from_slice(&[0; 4]); // checksum, computed with these bytes zero
    page.push(segments.len() as u8);
    page.extend_from_slice(segments);
    page.extend_from_slice(body);
    let crc = crc32(&page);
    page[22..26].copy_from_slice(&crc.to_le_bytes());
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_known_check_value() {
        // The check value of this CRC variant ("123456789"), as published for Ogg's CRC
        // (CRC-32/MPEG-2 parameters with initial value 0 instead of all ones).
        assert_eq!(crc32(b"123456789"), 0x89A1_897F);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn crc_of_a_real_page() {
        // The first page (OpusHead) of an Ogg Opus file written by ffmpeg's Ogg muxer.
        let page: [u8; 47] = [
            0x4f, 0x67, 0x67, 0x53, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x9c, 0x8c, 0xff, 0x86, 0x00, 0x00, 0x00, 0x00, 0xe6, 0x51, 0xf6, 0x70, 0x01, 0x13,
            0x4f, 0x70, 0x75, 0x73, 0x48, 0x65, 0x61, 0x64, 0x01, 0x02, 0x38, 0x01, 0x80, 0xbb,
            0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let mut zeroed = page;
        zeroed[22..26].fill(0);
        let stored = u32::from_le_bytes([page[22], page[23], page[24], page[25]]);
        let rebuilt = build(
            BEGIN_OF_STREAM,
            0,
            u32::from_le_bytes([page[14], page[15], page[16], page[17]]),
            0,
            &[19],
            &page[28..],
        );
        assert_eq!(rebuilt[22..26], page[22..26]);
        assert_eq!(crc32(&zeroed), stored);
    }

    #[test]
    fn lacing_values() {
        assert_eq!(lacing(0).collect::<Vec<_>>(), [0]);
        assert_eq!(lacing(100).collect::<Vec<_>>(), [100]);
        assert_eq!(lacing(255).collect::<Vec<_>>(), [255, 0]);
        assert_eq!(lacing(600).collect::<Vec<_>>(), [255, 255, 90]);
    }
}
