//! A transport-wide feedback packet (RTCP RTPFB, FMT 15; draft-holmer-rmcat-transport-wide-
//! cc-extensions-01 §3.1) read where it lies. Every subscriber sends one every 50–100 ms, and
//! str0m's parser builds two queues per packet on the heap and walks them again to iterate;
//! this reader checks the packet once and walks its bytes, allocating nothing.
//!
//! Layout after the 4-byte RTCP header: sender SSRC, media SSRC, base sequence number (16),
//! packet status count (16), reference time (24, signed multiples of 64 ms), feedback packet
//! count (8), packet chunks (16 bits each), then one receive delta per received packet: a
//! byte (unsigned, 250 µs units) for "small", two bytes (signed) for "large or negative".

/// The fixed part: RTCP header, two SSRCs, base, count, reference time, feedback count.
const FIXED: usize = 20;
const DELTA_UNIT_US: u64 = 250;

/// What a status symbol says of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    NotReceived,
    Small,
    Large,
    /// Symbol 3, reserved: no delta, nothing known (str0m reports it as lost, so do we).
    Reserved,
}

impl Status {
    fn of(symbol: u16) -> Self {
        match symbol & 0b11 {
            0 => Status::NotReceived,
            1 => Status::Small,
            2 => Status::Large,
            _ => Status::Reserved,
        }
    }

    fn delta_bytes(self) -> usize {
        match self {
            Status::Small => 1,
            Status::Large => 2,
            Status::NotReceived | Status::Reserved => 0,
        }
    }
}

/// The statuses of one packet chunk: its symbols for the `count` packets it covers.
fn chunk_statuses(chunk: u16, count: usize) -> impl Iterator<Item = Status> {
    let (run, bits, capacity) = if chunk & 0x8000 == 0 {
        // Run length: one symbol, repeated.
        (true, 2, 1usize)
    } else if chunk & 0x4000 == 0 {
        // Status vector of 14 one-bit symbols (0 not received, 1 small delta).
        (false, 1, 14)
    } else {
        // Status vector of 7 two-bit symbols.
        (false, 2, 7)
    };
    (0..count).map(move |i| {
        if run {
            Status::of(chunk >> 13)
        } else {
            let shift = 14 - bits * (i % capacity + 1);
            Status::of((chunk >> shift) & ((1 << bits) - 1))
        }
    })
}

/// How many packets a chunk covers, at most `remaining`.
fn chunk_len(chunk: u16, remaining: usize) -> usize {
    let capacity = match chunk {
        c if c & 0x8000 == 0 => usize::from(c & 0x1fff),
        c if c & 0x4000 == 0 => 14,
        _ => 7,
    };
    capacity.min(remaining)
}

/// One feedback packet, checked: its chunks cover every status it counts, and its deltas
/// are all there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TwccReport<'a> {
    base_seq: u16,
    status_count: u16,
    reference_time: u32,
    chunks: &'a [u8],
    deltas: &'a [u8],
}

impl<'a> TwccReport<'a> {
    /// Reads `packet`, a whole RTCP packet (header included, padding removed); `None` when
    /// it is not a complete transport-wide feedback packet.
    pub fn parse(packet: &'a [u8]) -> Option<Self> {
        let fixed = packet.get(..FIXED)?;
        let base_seq = u16::from_be_bytes([fixed[12], fixed[13]]);
        let status_count = u16::from_be_bytes([fixed[14], fixed[15]]);
        let reference_time = u32::from_be_bytes([0, fixed[16], fixed[17], fixed[18]]);
        let rest = &packet[FIXED..];
        let (mut covered, mut pos, mut delta_bytes) = (0usize, 0usize, 0usize);
        while covered < usize::from(status_count) {
            let chunk = u16::from_be_bytes([*rest.get(pos)?, *rest.get(pos + 1)?]);
            pos += 2;
            let len = chunk_len(chunk, usize::from(status_count) - covered);
            delta_bytes += chunk_statuses(chunk, len)
                .map(Status::delta_bytes)
                .sum::<usize>();
            covered += len;
        }
        let deltas = rest.get(pos..pos + delta_bytes)?;
        Some(Self {
            base_seq,
            status_count,
            reference_time,
            chunks: &rest[..pos],
            deltas,
        })
    }

    /// The reference time: 24 bits, in 64 ms units, on the receiver's clock (it wraps;
    /// see [`extend_u24`]).
    pub fn reference_time(&self) -> u32 {
        self.reference_time
    }

    /// Each reported packet in order, until `report` returns false: its sequence number,
    /// extended next to `extend_from` (the highest number reported before), and its arrival
    /// in microseconds on the receiver's clock (`reference_us`, the reference time's, plus
    /// the deltas; never below 0), or `None` if lost.
    pub fn for_each(
        &self,
        reference_us: u64,
        extend_from: u64,
        mut report: impl FnMut(u64, Option<u64>) -> bool,
    ) {
        let mut at = reference_us;
        let mut seq = extend_u16(extend_from, self.base_seq);
        let mut deltas = self.deltas;
        let mut remaining = usize::from(self.status_count);
        for pair in self.chunks.chunks_exact(2) {
            let chunk = u16::from_be_bytes([pair[0], pair[1]]);
            let len = chunk_len(chunk, remaining);
            remaining -= len;
            for status in chunk_statuses(chunk, len) {
                let arrival = match status {
                    Status::NotReceived | Status::Reserved => None,
                    Status::Small => {
                        // `parse` counted every delta, so neither of these returns.
                        let Some((&[v], rest)) = deltas.split_first_chunk::<1>() else {
                            return;
                        };
                        deltas = rest;
                        at += DELTA_UNIT_US * u64::from(v);
                        Some(at)
                    }
                    Status::Large => {
                        let Some((&v, rest)) = deltas.split_first_chunk::<2>() else {
                            return;
                        };
                        deltas = rest;
                        let v = i16::from_be_bytes(v);
                        let step = DELTA_UNIT_US * u64::from(v.unsigned_abs());
                        at = if v < 0 {
                            at.saturating_sub(step)
                        } else {
                            at + step
                        };
                        Some(at)
                    }
                };
                if !report(seq, arrival) {
                    return;
                }
                seq += 1;
            }
        }
    }
}

/// The 64-bit number whose low 16 bits are `low`, nearest to `last` (never below 0).
pub(crate) fn extend_u16(last: u64, low: u16) -> u64 {
    extend(last, u64::from(low), 16)
}

/// The 64-bit number whose low 24 bits are `low` (a reference time), nearest to `last`.
pub(crate) fn extend_u24(last: u64, low: u32) -> u64 {
    extend(last, u64::from(low & 0xff_ffff), 24)
}

/// The number whose low `bits` bits are `low`, nearest to `last` (never below 0).
fn extend(last: u64, low: u64, bits: u32) -> u64 {
    let span = 1u64 << bits;
    let half = span / 2;
    let candidate = (last & !(span - 1)) | low;
    if candidate + half < last {
        candidate + span
    } else if candidate > last + half && candidate >= span {
        candidate - span
    } else {
        candidate
    }
}

#[cfg(test)]
#[path = "twcc_report_tests.rs"]
mod tests;
