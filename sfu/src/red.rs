//! Redundant audio (RED, RFC 2198). livekit-client publishes Opus wrapped in RED: each packet
//! carries the newest frame and copies of earlier ones, so a lost packet is recovered from
//! the next without a round trip. Subscribers that negotiated RED get the packets as they
//! came; the others (and recordings) get the newest frame alone, as plain Opus.

/// Where the primary block (the newest frame) of a RED payload starts: after the block
/// headers and every redundant block. `None` for a payload that is cut short.
pub(crate) fn primary_block(payload: &[u8]) -> Option<usize> {
    let mut at = 0;
    let mut redundant = 0;
    loop {
        let header = *payload.get(at)?;
        if header & 0x80 == 0 {
            // The last header (F = 0) names the primary block and has no length: it is
            // what follows the redundant blocks.
            at += 1;
            break;
        }
        // F = 1: payload type, a 14-bit timestamp offset, then a 10-bit block length.
        let length = payload.get(at + 2..at + 4)?;
        redundant += usize::from(length[0] & 0x03) << 8 | usize::from(length[1]);
        at += 4;
    }
    let start = at + redundant;
    (start <= payload.len()).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_primary_block_after_the_redundant_ones() {
        // One redundant block of 3 bytes (PT 111, offset 960), then the primary of 2 bytes.
        let payload = [
            0x80 | 111,
            0x0f,
            0x00,
            0x03,
            111,
            0xa1,
            0xa2,
            0xa3,
            0xb1,
            0xb2,
        ];
        assert_eq!(primary_block(&payload), Some(8));
        assert_eq!(&payload[8..], &[0xb1, 0xb2]);
        // Two redundant blocks, of 1 and 258 bytes.
        let mut two = vec![0xef, 0x1e, 0x00, 0x01, 0xef, 0x0f, 0x01, 0x02, 111];
        two.extend(std::iter::repeat_n(0, 259));
        two.extend([0xc1]);
        assert_eq!(primary_block(&two), Some(9 + 259));
    }

    #[test]
    fn a_packet_without_redundancy_is_all_primary() {
        assert_eq!(primary_block(&[111, 0xb1, 0xb2]), Some(1));
    }

    #[test]
    fn cut_short_reads_as_none() {
        assert_eq!(primary_block(&[]), None);
        assert_eq!(primary_block(&[0xef, 0x0f]), None, "inside a header");
        assert_eq!(primary_block(&[0xef, 0x0f, 0x00]), None);
        assert_eq!(
            primary_block(&[0xef, 0x0f, 0x00, 0x05, 111, 0xa1]),
            None,
            "the redundant block runs past the end"
        );
        assert_eq!(
            primary_block(&[0xef, 0x0f, 0x00, 0x00]),
            None,
            "no last header"
        );
    }
}
