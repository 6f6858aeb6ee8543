use std::time::{Duration, Instant};

use super::*;

/// A feedback packet: the fixed part for `base`/`count`/`reference`, then `body` (chunks and
/// deltas), padded with zeros to whole words.
fn packet(base: u16, count: u16, reference: u32, body: &[u8]) -> Vec<u8> {
    let mut raw = vec![0x8f, 205, 0, 0];
    raw.extend_from_slice(&1u32.to_be_bytes());
    raw.extend_from_slice(&2u32.to_be_bytes());
    raw.extend_from_slice(&base.to_be_bytes());
    raw.extend_from_slice(&count.to_be_bytes());
    raw.extend_from_slice(&reference.to_be_bytes()[1..]);
    raw.push(0);
    raw.extend_from_slice(body);
    while raw.len() % 4 != 0 {
        raw.push(0);
    }
    let words = (raw.len() / 4 - 1) as u16;
    raw[2..4].copy_from_slice(&words.to_be_bytes());
    raw
}

/// Far enough above 0 that no delta of these tests reaches it.
const OFFSET_US: u64 = 1 << 40;

/// The report's packets, arrivals as instants from `t0` (as str0m gives them).
fn read(raw: &[u8], t0: Instant, extend_from: u64) -> Vec<(u64, Option<Instant>)> {
    let mut out = Vec::new();
    let report = TwccReport::parse(raw).expect("a complete report");
    let reference_us = u64::from(report.reference_time()) * 64_000 + OFFSET_US;
    report.for_each(reference_us, extend_from, |seq, at| {
        let at = at.map(|us| {
            if us >= OFFSET_US {
                t0 + Duration::from_micros(us - OFFSET_US)
            } else {
                t0 - Duration::from_micros(OFFSET_US - us)
            }
        });
        out.push((seq, at));
        true
    });
    out
}

#[test]
fn statuses_and_deltas_are_read_in_order() {
    // Seven two-bit symbols: small, lost, large (−0.5 ms), small, reserved, then two unused.
    let chunk: u16 = 0xc000 | (1 << 12) | (2 << 8) | (1 << 6) | (3 << 4);
    let mut body = chunk.to_be_bytes().to_vec();
    body.push(4); // +1 ms
    body.extend_from_slice(&(-2i16).to_be_bytes()); // −0.5 ms
    body.push(8); // +2 ms
    let t0 = Instant::now();
    let ms = |us: u64| Some(t0 + Duration::from_micros(us));
    assert_eq!(
        read(&packet(10, 5, 1, &body), t0, 0),
        vec![
            (10, ms(65_000)),
            (11, None),
            (12, ms(64_500)),
            (13, ms(66_500)),
            (14, None),
        ]
    );
}

#[test]
fn incomplete_reports_are_refused() {
    let run_of_small = (0x2000u16 | 3).to_be_bytes(); // three received, small deltas
    assert!(TwccReport::parse(&packet(
        0,
        3,
        0,
        &[run_of_small[0], run_of_small[1], 1, 1, 1]
    ))
    .is_some());
    // A delta missing (the padding to a whole word is the only byte after the chunk).
    let short = packet(0, 3, 0, &[run_of_small[0], run_of_small[1], 1]);
    assert!(TwccReport::parse(&short[..short.len() - 1]).is_none());
    // Chunks that do not cover the count.
    assert!(
        TwccReport::parse(&packet(0, 20, 0, &(0x8000u16 | 0x3fff).to_be_bytes())[..22]).is_none()
    );
    assert!(TwccReport::parse(&[0x8f, 205, 0, 4]).is_none());
}

#[test]
fn the_most_packets_a_report_can_name_cost_no_more_than_their_chunks() {
    // 65,535 packets in eight runs of "not received": no deltas needed.
    let mut body = Vec::new();
    for _ in 0..8 {
        body.extend_from_slice(&0x1fffu16.to_be_bytes());
    }
    let mut count = 0;
    let raw = packet(0, u16::MAX, 0, &body);
    assert!(TwccReport::parse(&raw).is_none(), "8 × 8191 < 65,535");
    body.extend_from_slice(&0x1fffu16.to_be_bytes());
    let raw = packet(0, u16::MAX, 0, &body);
    TwccReport::parse(&raw)
        .expect("nine runs cover it")
        .for_each(0, 0, |_, at| {
            assert_eq!(at, None);
            count += 1;
            true
        });
    assert_eq!(count, 65_535);
}

#[test]
fn sequence_numbers_and_reference_times_extend_across_the_wrap_both_ways() {
    assert_eq!(extend_u16(0, 5), 5);
    assert_eq!(extend_u16(0xfff0, 3), 0x1_0003);
    assert_eq!(extend_u16(0x1_0003, 0xfff0), 0xfff0);
    assert_eq!(extend_u16(3, 0xfff0), 0xfff0, "nothing below zero");
    assert_eq!(extend_u16(0x5_1234, 0x1234), 0x5_1234);
    // Reference times, 24 bits: forward across the wrap, and a late report from before it.
    assert_eq!(extend_u24(0xff_fff0, 2), 0x100_0002);
    assert_eq!(extend_u24(0x100_0002, 0xff_fff0), 0xff_fff0);
    assert_eq!(extend_u24(0x300_0010, 0x20), 0x300_0020);
    assert_eq!(extend_u24(5, 0xff_fff0), 0xff_fff0, "nothing below zero");
}

/// A tiny deterministic generator (xorshift), so the comparison below is repeatable.
struct Rand(u64);

impl Rand {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// A random well-formed report: runs of "not received" or "small", and status vectors of
/// both sizes, with the deltas they need; the last vector may be cut short (its unused
/// symbols zero, as senders write them).
fn random_report(rand: &mut Rand) -> Vec<u8> {
    let (mut chunks, mut deltas, mut count) = (Vec::new(), Vec::new(), 0u16);
    for _ in 0..1 + rand.next(6) {
        let chunk: u16 = match rand.next(3) {
            0 => {
                let len = 1 + rand.next(30) as u16;
                let small = rand.next(2) == 1;
                if small {
                    deltas.extend((0..len).map(|_| rand.next(256) as u8));
                }
                count += len;
                (u16::from(small) << 13) | len
            }
            1 => {
                let mut v = 0x8000u16;
                for i in 0..14 {
                    if rand.next(2) == 1 {
                        v |= 1 << (13 - i);
                        deltas.push(rand.next(256) as u8);
                    }
                }
                count += 14;
                v
            }
            _ => {
                let mut v = 0xc000u16;
                for i in 0..7 {
                    let symbol = rand.next(4) as u16;
                    v |= symbol << (12 - 2 * i);
                    match symbol {
                        1 => deltas.push(rand.next(256) as u8),
                        2 => deltas.extend_from_slice(&(rand.next(65_536) as u16).to_be_bytes()),
                        _ => {}
                    }
                }
                count += 7;
                v
            }
        };
        chunks.extend_from_slice(&chunk.to_be_bytes());
    }
    let base = rand.next(65_536) as u16;
    let mut body = chunks;
    body.extend_from_slice(&deltas);
    packet(base, count, rand.next(1 << 24) as u32, &body)
}

#[test]
fn reads_what_str0m_reads() {
    let mut rand = Rand(0x9e37_79b9_7f4a_7c15);
    let t0 = Instant::now();
    for _ in 0..2000 {
        let raw = random_report(&mut rand);
        // From 2^16 up: below that, str0m extends a number "before" 0 to 2^64 minus
        // something (which the estimator then drops as never sent); we keep it at 0 and up.
        let extend_from = 0x1_0000 + rand.next(1 << 20);
        let Ok(str0m::rtp::rtcp::Rtcp::Twcc(twcc)) = str0m::rtp::rtcp::Rtcp::try_from(&raw[..])
        else {
            panic!("str0m refused {raw:02x?}");
        };
        let theirs: Vec<(u64, Option<Instant>)> = twcc
            .into_iter(t0, extend_from.into())
            .map(|(seq, _, at)| (*seq, at))
            .collect();
        assert_eq!(read(&raw, t0, extend_from), theirs, "{raw:02x?}");
    }
}
