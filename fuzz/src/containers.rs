//! The container writers (target `containers`).
use std::io::Cursor;

use switchboard_egress::media::mkv::{DocType, MkvWriter, TrackSpec};
use switchboard_egress::media::ogg::{crc32, OggOpusWriter};
use switchboard_egress::media::Codec;
use switchboard_sfu::fuzzing::Input;

const CODECS: [Codec; 4] = [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264];

/// The Matroska/WebM and Ogg Opus writers fed arbitrary frame sequences and timestamps:
/// what they write must stay a well-formed file (EBML header and sizes, Ogg pages and CRCs).
pub fn containers(data: &[u8]) {
    let mut input = Input::new(data);
    if input.bool() {
        ogg(&mut input);
    } else {
        mkv(&mut input);
    }
}

fn mkv(input: &mut Input<'_>) {
    let doc_type = if input.bool() {
        DocType::WebM
    } else {
        DocType::Matroska
    };
    let count = 1 + usize::from(input.u8() % 3);
    let tracks: Vec<TrackSpec> = (0..count)
        .map(|i| {
            let flags = input.u8();
            TrackSpec {
                number: if flags & 0x80 != 0 {
                    u64::from(input.u8())
                } else {
                    i as u64 + 1
                },
                name: String::from_utf8_lossy(input.bytes(usize::from(flags & 0x0f))).into(),
                codec: CODECS[usize::from(flags >> 4 & 0x03)],
                codec_private: (flags & 0x40 != 0).then(|| input.field().to_vec()),
                video: Some((u32::from(input.u16()), u32::from(input.u16()))),
                audio: Some((input.u32(), input.u8())),
            }
        })
        .collect();
    let Ok(mut writer) = MkvWriter::new(Cursor::new(Vec::new()), doc_type, &tracks) else {
        return;
    };
    let mut accepted = 0;
    // What a recording can hand over: milliseconds from its start (a u32 of RTP time at
    // 90 kHz is ~13 hours), per track mostly forward, across tracks a little back.
    let mut clock = u64::from(input.u16());
    while !input.is_empty() {
        match input.u8() % 8 {
            0..=5 => {
                let track = match input.u8() {
                    0xff => u64::from(input.u8()),
                    n => tracks[usize::from(n) % count].number,
                };
                let step = i64::from(input.u16() as i16);
                clock = clock
                    .saturating_add_signed(step)
                    .min(u64::from(u32::MAX) * 12);
                let keyframe = input.bool();
                if writer
                    .write_frame(track, clock, keyframe, input.field())
                    .is_ok()
                {
                    accepted += 1;
                }
            }
            6 => clock += u64::from(input.u32()),
            _ => writer.close_cluster().expect("writing to memory"),
        }
    }
    assert_eq!(writer.frames_written(), accepted);
    let (out, stats) = writer.finish().expect("writing to memory");
    let file = out.into_inner();
    assert_eq!(stats.frames, accepted);
    assert_eq!(stats.bytes, file.len() as u64);
    assert_eq!(
        &file[..4],
        &[0x1a, 0x45, 0xdf, 0xa3],
        "an EBML header first"
    );
}

fn ogg(input: &mut Input<'_>) {
    let channels = 1 + input.u8() % 2;
    let serial = input.u32();
    let Ok(mut writer) = OggOpusWriter::new(Vec::new(), channels, serial) else {
        return;
    };
    // Granules are RTP time since the first packet (48 kHz): forward, with gaps and
    // stragglers, within what a long recording reaches.
    let mut granule: u64 = 0;
    let mut packets = 0;
    let mut big_done = false;
    while !input.is_empty() {
        let flags = input.u8();
        granule = match flags % 4 {
            0 => granule.saturating_sub(u64::from(input.u16())),
            1 => granule + u64::from(input.u32()),
            _ => granule + 960,
        }
        .min(u64::from(u32::MAX) << 8);
        let big;
        let data = if flags == 0xff && !big_done {
            // Over 64 KiB: the packet continues on the next page (once per input: the
            // page checksums of such a packet are most of an input's time).
            big_done = true;
            big = vec![input.u8(); 65_536 + usize::from(input.u16())];
            &big[..]
        } else {
            input.field()
        };
        writer
            .write_packet(data, granule)
            .expect("writing to memory");
        packets += 1;
    }
    assert_eq!(writer.packets_written(), packets);
    let (file, stats) = writer.finish().expect("writing to memory");
    assert_eq!(stats.bytes, file.len() as u64);
    check_pages(&file, serial);
}

/// Every page: capture pattern, our serial, consecutive sequence numbers, the right CRC, and
/// exactly the bytes its lacing values say.
fn check_pages(mut file: &[u8], serial: u32) {
    let mut sequence = 0;
    while !file.is_empty() {
        assert!(file.len() >= 27, "a page header is 27 bytes");
        assert_eq!(&file[..4], b"OggS");
        assert_eq!(file[26..27].len(), 1);
        let segments = usize::from(file[26]);
        let body: usize = file[27..27 + segments]
            .iter()
            .map(|&v| usize::from(v))
            .sum();
        let len = 27 + segments + body;
        let page = &file[..len];
        assert_eq!(u32::from_le_bytes(page[14..18].try_into().unwrap()), serial);
        assert_eq!(
            u32::from_le_bytes(page[18..22].try_into().unwrap()),
            sequence
        );
        let mut zeroed = page.to_vec();
        zeroed[22..26].fill(0);
        assert_eq!(
            crc32(&zeroed),
            u32::from_le_bytes(page[22..26].try_into().unwrap()),
            "page CRC"
        );
        sequence += 1;
        file = &file[len..];
    }
}
