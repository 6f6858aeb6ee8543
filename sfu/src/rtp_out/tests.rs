use super::*;

#[test]
fn stun_answers_do_not_move_the_media_address() {
    assert!(!goes_to_media_address(&[0x01, 0x01, 0x00, 0x00])); // binding success
    assert!(!goes_to_media_address(&[]));
    assert!(goes_to_media_address(&[22, 0xfe, 0xfd])); // DTLS handshake
    assert!(goes_to_media_address(&[0x80, 96])); // RTP
    assert!(goes_to_media_address(&[0x81, 200])); // RTCP sender report
}

#[test]
fn the_test_hook_holds_back_every_nth_packet() {
    let mut drop = DropEvery::new(std::num::NonZeroU64::new(3).unwrap());
    let held: Vec<bool> = (0..7).map(|_| drop.this_one()).collect();
    assert_eq!(held, [false, false, true, false, false, true, false]);
}

#[test]
fn a_nack_entry_names_its_packet_and_the_bits_after_it() {
    assert_eq!(nacked(10, 0).collect::<Vec<_>>(), [10]);
    assert_eq!(nacked(10, 0b101).collect::<Vec<_>>(), [10, 11, 13]);
    assert_eq!(nacked(65535, 1).collect::<Vec<_>>(), [65535, 0]);
}

#[test]
fn the_history_answers_recent_packets_only() {
    let mut history = History::default();
    let payload: Arc<[u8]> = Arc::from(&[1u8, 2, 3][..]);
    let start = Instant::now();
    let rtp = |seq| RtpOut {
        ssrc: 7,
        pt: 96,
        marker: false,
        seq,
        timestamp: 90,
        payload: &[],
        stamp: None,
        padding: 0,
        vp8: None,
        descriptor: None,
    };
    let at = |ms| start + Duration::from_millis(ms);
    history.record(&rtp(70_000), &payload, at(0));
    history.record(&rtp(70_001), &payload, at(800));
    // 70_032 lands in the slot of 70_000, which is old enough to give up.
    history.record(&rtp(70_032), &payload, at(1100));
    assert_eq!(history.slots.len(), HISTORY_MIN);
    let mut found = Vec::new();
    let wanted = [70_000u64 as u16, 70_001u64 as u16, 70_032u64 as u16, 5];
    history.find(7, wanted.into_iter(), at(1500), |r| {
        assert_eq!((r.ssrc, r.payload.len()), (7, 3));
        found.push(r.seq);
    });
    assert_eq!(found, [70_001, 70_032]);
    // Later, 70_001 is too old to be worth resending.
    found.clear();
    history.find(7, wanted.into_iter(), at(1850), |r| found.push(r.seq));
    assert_eq!(found, [70_032]);
}

#[test]
fn nothing_older_than_the_last_keyframe_is_resent() {
    let mut history = History::default();
    let payload: Arc<[u8]> = Arc::from(&[1u8][..]);
    let now = Instant::now();
    for seq in 10..20 {
        let rtp = RtpOut {
            ssrc: 7,
            pt: 96,
            marker: false,
            seq,
            timestamp: 90,
            payload: &payload,
            stamp: None,
            padding: 0,
            vp8: None,
            descriptor: None,
        };
        if seq == 15 {
            history.keyframe_at(seq);
        }
        history.record(&rtp, &payload, now);
    }
    let mut found = Vec::new();
    history.find(7, 12..17, now, |r| found.push(r.seq));
    assert_eq!(found, [15, 16]);
}

#[test]
fn audio_unwrapped_from_red_is_resent_unwrapped() {
    let mut history = History::default();
    // A RED packet whose primary block starts at byte 5; the subscriber got only that.
    let red: Arc<[u8]> = Arc::from(&[0x6f, 0, 0, 0, 0x6f, 0xf8, 0xff, 0xfe][..]);
    let sent = RtpOut {
        ssrc: 7,
        pt: 111,
        marker: false,
        seq: 3,
        timestamp: 960,
        payload: &red[5..],
        stamp: None,
        padding: 0,
        vp8: None,
        descriptor: None,
    };
    let now = Instant::now();
    history.record(&sent, &red, now);
    let mut resent = Vec::new();
    history.find(7, [3u16].into_iter(), now, |r| {
        resent.push(r.payload.to_vec())
    });
    assert_eq!(resent, vec![vec![0xf8, 0xff, 0xfe]]);
}

/// A plain video packet numbered `seq` on stream 1.
fn video_packet(seq: u64, payload: &[u8]) -> RtpOut<'_> {
    RtpOut {
        ssrc: 1,
        pt: 96,
        marker: false,
        seq,
        timestamp: 0,
        payload,
        stamp: None,
        padding: 0,
        vp8: None,
        descriptor: None,
    }
}

#[test]
fn resends_cost_at_most_a_share_of_what_was_sent() {
    let mut stream = StreamSend::default();
    let payload: Arc<[u8]> = Arc::from(vec![0u8; 1000]);
    let rtp = |seq| video_packet(seq, &payload);
    let now = Instant::now();
    for seq in 0..20 {
        stream.sent(&rtp(seq), &payload, now, true);
    }
    // 20 packets of 1000 bytes earn 3000 bytes of resends: three packets, not a fourth.
    assert!((0..3).all(|_| stream.allowance.take(1000)));
    assert!(!stream.allowance.take(1000));
    stream.sent(&rtp(20), &payload, now, true);
    assert!(
        !stream.allowance.take(1000),
        "150 bytes more are not a packet"
    );
    assert!(stream.allowance.take(150));
}

#[test]
fn the_history_grows_to_hold_a_second_of_a_fast_stream() {
    let mut history = History::default();
    let payload: Arc<[u8]> = Arc::from(&[0u8][..]);
    let start = Instant::now();
    // 300 packets a second for two seconds, numbers wrapping past 65535.
    for i in 0..600u64 {
        let rtp = RtpOut {
            ssrc: 1,
            pt: 96,
            marker: false,
            seq: 65_400 + i,
            timestamp: 0,
            payload: &[],
            stamp: None,
            padding: 0,
            vp8: None,
            descriptor: None,
        };
        history.record(&rtp, &payload, start + Duration::from_micros(i * 3333));
    }
    assert_eq!(history.slots.len(), 512);
    let now = start + Duration::from_micros(599 * 3333);
    // Every packet of the last second is still there, by its 16-bit number.
    let last_second = (300..600u64).map(|i| (65_400 + i) as u16);
    let mut found = 0;
    history.find(1, last_second, now, |_| found += 1);
    assert_eq!(found, 300);
}

/// The header extension block a descriptor packet gets: (profile, elements as (id, data)).
fn extension_block(header: &[u8]) -> ([u8; 2], Vec<(u8, Vec<u8>)>) {
    let profile = [header[12], header[13]];
    let words = usize::from(u16::from_be_bytes([header[14], header[15]]));
    assert_eq!(header.len(), 16 + 4 * words, "the block ends the header");
    let mut block = &header[16..];
    let mut elements = Vec::new();
    while let Some(&first) = block.first() {
        if first == 0 {
            block = &block[1..];
            continue;
        }
        let (id, len, at) = if profile == [0xbe, 0xde] {
            (first >> 4, usize::from(first & 0x0f) + 1, 1)
        } else {
            (first, usize::from(block[1]), 2)
        };
        elements.push((id, block[at..at + len].to_vec()));
        block = &block[at + len..];
    }
    (profile, elements)
}

#[test]
fn a_descriptor_goes_out_beside_the_stamp_in_the_form_its_length_needs() {
    let stamp = Some(Stamp::Transport(TransportSeq { id: 3, seq: 0x0102 }));
    let short: Arc<[u8]> = Arc::from(&[0x80u8, 0x01, 0x02][..]);
    let mut packet = vec![0u8; HEADER];
    let header = write_extensions(
        &mut packet,
        stamp,
        DescriptorOut {
            id: 12,
            bytes: &short,
        },
    );
    assert_eq!(header, packet.len());
    let (profile, elements) = extension_block(&packet);
    assert_eq!(profile, [0xbe, 0xde]);
    assert_eq!(elements, [(3, vec![1, 2]), (12, short.to_vec())]);

    // A keyframe's descriptor with its structure: longer than a one-byte element holds.
    let long: Arc<[u8]> = (0..40u8).collect::<Vec<_>>().into();
    let time = Some(Stamp::AbsSendTime {
        id: 2,
        time: 0x00ab_cdef,
    });
    let mut packet = vec![0u8; HEADER];
    write_extensions(
        &mut packet,
        time,
        DescriptorOut {
            id: 12,
            bytes: &long,
        },
    );
    let (profile, elements) = extension_block(&packet);
    assert_eq!(profile, [0x10, 0x00]);
    assert_eq!(elements, [(2, vec![0xab, 0xcd, 0xef]), (12, long.to_vec())]);

    // An id above 14 needs the two-byte form too; no stamp at all.
    let mut packet = vec![0u8; HEADER];
    write_extensions(
        &mut packet,
        None,
        DescriptorOut {
            id: 20,
            bytes: &short,
        },
    );
    let (profile, elements) = extension_block(&packet);
    assert_eq!(profile, [0x10, 0x00]);
    assert_eq!(elements, [(20, short.to_vec())]);
}

#[test]
fn a_keyframe_refills_the_resend_allowance_at_most_every_half_second() {
    let mut stream = StreamSend::default();
    let payload: Arc<[u8]> = Arc::from(vec![0u8; 1000]);
    let rtp = |seq| video_packet(seq, &payload);
    let t0 = Instant::now();
    let resendable = |stream: &mut StreamSend, seqs: &[u16], now| {
        let StreamSend {
            history, allowance, ..
        } = stream;
        let mut resent = Vec::new();
        history.find(1, seqs.iter().copied(), now, |r| {
            if allowance.take(r.payload.len()) {
                resent.push(r.seq);
            }
        });
        resent
    };
    // The layer being left: its resends spend what it earned.
    for seq in 0..10 {
        stream.sent(&rtp(seq), &payload, t0, true);
    }
    assert_eq!(resendable(&mut stream, &[0, 1, 2, 3], t0), vec![0]);
    // The new layer's keyframe, three of its packets lost: all three are resent.
    stream.keyframe_at(10, t0);
    for seq in 10..20 {
        stream.sent(&rtp(seq), &payload, t0, true);
    }
    assert_eq!(resendable(&mut stream, &[12, 13, 14], t0), vec![12, 13, 14]);
    // A NACK for the same packet, again and again, until the allowance is spent: another
    // keyframe 100 ms on refills nothing, one 500 ms on does.
    while !resendable(&mut stream, &[19], t0).is_empty() {}
    let soon = t0 + Duration::from_millis(100);
    stream.keyframe_at(20, soon);
    stream.sent(&rtp(20), &payload, soon, true);
    assert!(resendable(&mut stream, &[20], soon).is_empty());
    let later = t0 + Duration::from_millis(500);
    stream.keyframe_at(21, later);
    stream.sent(&rtp(21), &payload, later, true);
    assert_eq!(resendable(&mut stream, &[20, 21], later), vec![21]);
}
