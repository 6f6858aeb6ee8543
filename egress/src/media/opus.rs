//! What both containers need to know about Opus (RFC 6716, RFC 7845): the identification
//! header and a packet's duration.

/// The pre-skip the recordings declare. The recorder joins a live stream mid-way, so there is
/// no encoder start-up to hide; 0 keeps Ogg granules and WebM timestamps equal to the RTP
/// clock.
pub const PRE_SKIP: u16 = 0;

/// How long a decoder needs to converge after a seek (RFC 7845 recommends 80 ms).
pub const SEEK_PRE_ROLL_NS: u64 = 80_000_000;

/// An "OpusHead" identification header (RFC 7845 5.1), channel mapping family 0.
pub fn opus_head(channels: u8, pre_skip: u16) -> Vec<u8> {
    let mut head = Vec::with_capacity(19);
    head.extend_from_slice(b"OpusHead");
    head.push(1); // version
    head.push(channels.clamp(1, 2));
    head.extend_from_slice(&pre_skip.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes()); // input sample rate, informational
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    head.push(0); // mapping family 0: mono or stereo
    head
}

/// Channels and pre-skip of an OpusHead, `None` if it is not one.
pub fn parse_opus_head(head: &[u8]) -> Option<(u8, u16)> {
    if head.len() < 19 || &head[..8] != b"OpusHead" {
        return None;
    }
    Some((head[9], u16::from_le_bytes([head[10], head[11]])))
}

/// The packet's duration in 48 kHz samples, from its TOC byte (RFC 6716 3.1). `None` for a
/// packet too short or claiming more than the 120 ms a packet may hold.
pub fn packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let samples = frame * frames;
    (frames > 0 && samples <= 5760).then_some(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_round_trips() {
        let head = opus_head(2, 312);
        assert_eq!(head.len(), 19);
        assert_eq!(&head[..10], b"OpusHead\x01\x02");
        assert_eq!(parse_opus_head(&head), Some((2, 312)));
        assert_eq!(parse_opus_head(b"OpusTags"), None);
    }

    #[test]
    fn durations_from_toc() {
        assert_eq!(packet_samples(&[0xfc, 0]), Some(960)); // CELT FB 20 ms, one frame
        assert_eq!(packet_samples(&[0x78]), Some(960)); // hybrid SWB 20 ms
        assert_eq!(packet_samples(&[0x19]), Some(2 * 2880)); // SILK 60 ms, two frames
        assert_eq!(packet_samples(&[0x03, 0x03]), Some(3 * 480)); // code 3, three frames
        assert_eq!(packet_samples(&[0x1b, 0x03]), None); // 180 ms is too long
        assert_eq!(packet_samples(&[0x03, 0x00]), None); // zero frames
        assert_eq!(packet_samples(&[0x03]), None);
        assert_eq!(packet_samples(&[]), None);
    }
}
