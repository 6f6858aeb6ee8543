//! H.264 over RTP (RFC 6184, packetization-mode 1): single NAL units, STAP-A and FU-A, put
//! back together as AVCC access units.

use super::bits::BitReader;
use super::sps::{avc_decoder_configuration, parse_sps};
use super::{Assembler, PayloadError};

const NAL_SLICE: u8 = 1;
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

#[derive(Default)]
pub struct H264 {
    /// The NAL units of the frame being built, without start codes or lengths.
    nals: Vec<Vec<u8>>,
    /// An FU-A NAL unit being reassembled (its header rebuilt first).
    fragment: Option<Vec<u8>>,
    /// A fragment went missing: the NAL unit it belonged to is useless.
    broken: bool,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    dimensions: Option<(u32, u32)>,
}

fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

impl H264 {
    pub fn codec_private(&self) -> Option<Vec<u8>> {
        avc_decoder_configuration(self.sps.as_deref()?, self.pps.as_deref()?)
    }

    fn add_nal(&mut self, nal: Vec<u8>) {
        match nal_type(&nal) {
            NAL_SPS => {
                if let Ok(info) = parse_sps(&nal) {
                    self.dimensions = Some((info.width, info.height));
                }
                self.sps = Some(nal.clone());
            }
            NAL_PPS => self.pps = Some(nal.clone()),
            _ => {}
        }
        self.nals.push(nal);
    }

    fn push_stap_a(&mut self, payload: &[u8]) -> Result<(), PayloadError> {
        let mut rest = payload.get(1..).ok_or(PayloadError::Truncated)?;
        if rest.is_empty() {
            return Err(PayloadError::Truncated);
        }
        while !rest.is_empty() {
            let [hi, lo, tail @ ..] = rest else {
                return Err(PayloadError::Truncated);
            };
            let size = usize::from(u16::from_be_bytes([*hi, *lo]));
            if size == 0 || size > tail.len() {
                return Err(PayloadError::Truncated);
            }
            self.add_nal(tail[..size].to_vec());
            rest = &tail[size..];
        }
        Ok(())
    }

    fn push_fu_a(&mut self, payload: &[u8]) -> Result<(), PayloadError> {
        let [indicator, header, data @ ..] = payload else {
            return Err(PayloadError::Truncated);
        };
        let (start, end) = (header & 0x80 != 0, header & 0x40 != 0);
        if start {
            let unfinished = self.fragment.is_some();
            let mut nal = Vec::with_capacity(data.len() * 4 + 1);
            nal.push((indicator & 0xe0) | (header & 0x1f));
            nal.extend_from_slice(data);
            self.fragment = Some(nal);
            if unfinished {
                self.broken = true;
                return Err(PayloadError::BrokenFragment);
            }
        } else {
            let Some(nal) = self.fragment.as_mut() else {
                self.broken = true;
                return Err(PayloadError::BrokenFragment);
            };
            nal.extend_from_slice(data);
        }
        if end {
            if let Some(nal) = self.fragment.take() {
                self.add_nal(nal);
            }
        }
        Ok(())
    }
}

impl Assembler for H264 {
    fn push(&mut self, payload: &[u8]) -> Result<(), PayloadError> {
        let first = *payload.first().ok_or(PayloadError::Empty)?;
        if first & 0x80 != 0 {
            // forbidden_zero_bit: the sender marks a NAL unit it knows is corrupt.
            return Err(PayloadError::BrokenFragment);
        }
        match first & 0x1f {
            1..=23 => {
                if self.fragment.take().is_some() {
                    self.broken = true;
                }
                self.add_nal(payload.to_vec());
                Ok(())
            }
            STAP_A => self.push_stap_a(payload),
            FU_A => self.push_fu_a(payload),
            other => Err(PayloadError::UnsupportedNal(other)),
        }
    }

    fn take(&mut self) -> Result<Option<(Vec<u8>, bool)>, PayloadError> {
        let nals = std::mem::take(&mut self.nals);
        let unfinished = self.fragment.take().is_some();
        if std::mem::take(&mut self.broken) || unfinished {
            return Err(PayloadError::BrokenFragment);
        }
        let Some(first_slice) = nals
            .iter()
            .find(|nal| matches!(nal_type(nal), NAL_SLICE | NAL_IDR))
        else {
            // Parameter sets or SEI alone: kept (above) for the next keyframe.
            return Ok(None);
        };
        // first_mb_in_slice, the slice header's first field, is 0 only in a picture's first
        // slice: anything else means the start of the picture was lost.
        if BitReader::new(&first_slice[1..]).ue() != Ok(0) {
            return Err(PayloadError::MissingStart);
        }
        let keyframe = nals.iter().any(|nal| nal_type(nal) == NAL_IDR);
        let mut prefix: Vec<&[u8]> = Vec::new();
        if keyframe {
            let (Some(sps), Some(pps)) = (&self.sps, &self.pps) else {
                return Err(PayloadError::MissingParameterSets);
            };
            // A player that starts (or seeks) here needs them in band too.
            if !nals.iter().any(|nal| nal_type(nal) == NAL_SPS) {
                prefix.push(sps);
            }
            if !nals.iter().any(|nal| nal_type(nal) == NAL_PPS) {
                prefix.push(pps);
            }
        }
        let parts = prefix
            .into_iter()
            .chain(nals.iter().map(Vec::as_slice))
            .collect::<Vec<_>>();
        let size = parts.iter().map(|nal| nal.len() + 4).sum();
        let mut data = Vec::with_capacity(size);
        for nal in parts {
            // Packets are at most 64 KiB and a frame of them fits u32 lengths by far.
            data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            data.extend_from_slice(nal);
        }
        Ok(Some((data, keyframe)))
    }

    fn reset(&mut self) {
        self.nals.clear();
        self.fragment = None;
        self.broken = false;
    }

    fn dimensions(&self) -> Option<(u32, u32)> {
        self.dimensions
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::packet;
    use super::super::{Codec, Depacketizer};
    use super::*;

    // x264's 1280x720 baseline SPS and a PPS.
    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x40];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    // Slices whose first_mb_in_slice is 0 (first bit set).
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33];
    const P_SLICE: &[u8] = &[0x41, 0x9a, 0x02, 0x04];

    fn stap_a(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![0x78];
        for nal in nals {
            out.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            out.extend_from_slice(nal);
        }
        out
    }

    fn fu_a(nal: &[u8], pieces: usize) -> Vec<Vec<u8>> {
        let body = &nal[1..];
        let chunk = body.len().div_ceil(pieces);
        let chunks: Vec<&[u8]> = body.chunks(chunk).collect();
        let last = chunks.len() - 1;
        chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut header = nal[0] & 0x1f;
                if i == 0 {
                    header |= 0x80;
                }
                if i == last {
                    header |= 0x40;
                }
                let mut p = vec![(nal[0] & 0xe0) | FU_A, header];
                p.extend_from_slice(c);
                p
            })
            .collect()
    }

    fn avcc(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for nal in nals {
            out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            out.extend_from_slice(nal);
        }
        out
    }

    #[test]
    fn stap_a_and_fu_a_make_an_avcc_keyframe() {
        let mut d = Depacketizer::new(Codec::H264);
        let idr: Vec<u8> = IDR.iter().chain(&[7u8; 40]).copied().collect();
        assert!(d
            .push(&packet(1, 9000, false, &stap_a(&[SPS, PPS])))
            .is_none());
        let pieces = fu_a(&idr, 3);
        assert!(d.push(&packet(2, 9000, false, &pieces[0])).is_none());
        assert!(d.push(&packet(3, 9000, false, &pieces[1])).is_none());
        let frame = d.push(&packet(4, 9000, true, &pieces[2])).unwrap();
        assert!(frame.keyframe);
        assert_eq!(frame.data, avcc(&[SPS, PPS, &idr]));
        assert_eq!(d.dimensions(), Some((1280, 720)));
        let private = d.codec_private().unwrap();
        assert_eq!(&private[..6], &[1, 0x42, 0xc0, 0x1f, 0xff, 0xe1]);
        assert!(!d.needs_keyframe());

        let frame = d.push(&packet(5, 12000, true, P_SLICE)).unwrap();
        assert!(!frame.keyframe);
        assert_eq!(frame.data, avcc(&[P_SLICE]));
    }

    #[test]
    fn parameter_sets_are_put_in_front_of_a_bare_idr() {
        let mut d = Depacketizer::new(Codec::H264);
        // Parameter sets with their own timestamp (some senders do that) make no frame.
        assert!(d
            .push(&packet(1, 100, true, &stap_a(&[SPS, PPS])))
            .is_none());
        let frame = d.push(&packet(2, 3100, true, IDR)).unwrap();
        assert_eq!(frame.data, avcc(&[SPS, PPS, IDR]));
    }

    #[test]
    fn idr_without_parameter_sets_is_refused() {
        let mut d = Depacketizer::new(Codec::H264);
        assert!(d.push(&packet(1, 100, true, IDR)).is_none());
        assert_eq!(d.last_error(), Some(&PayloadError::MissingParameterSets));
        assert!(d.needs_keyframe());
    }

    #[test]
    fn lost_fragment_drops_the_frame_and_waits_for_an_idr() {
        let mut d = Depacketizer::new(Codec::H264);
        d.push(&packet(1, 100, true, &stap_a(&[SPS, PPS, IDR])))
            .unwrap();
        let slice: Vec<u8> = P_SLICE.iter().chain(&[1u8; 30]).copied().collect();
        let pieces = fu_a(&slice, 3);
        d.push(&packet(2, 200, false, &pieces[0]));
        // Packet 3 never comes: the jitter buffer reports it.
        d.lost();
        assert!(d.needs_keyframe());
        assert!(d.push(&packet(4, 200, true, &pieces[2])).is_none());
        assert!(d.push(&packet(5, 300, true, P_SLICE)).is_none());
        let frame = d.push(&packet(6, 400, true, IDR)).unwrap();
        assert!(frame.keyframe);
        assert_eq!(d.stats().dropped_frames, 3);
    }

    #[test]
    fn a_frame_missing_its_first_slice_is_dropped() {
        let mut d = Depacketizer::new(Codec::H264);
        d.push(&packet(1, 100, true, &stap_a(&[SPS, PPS, IDR])))
            .unwrap();
        d.lost();
        // A second slice: first_mb_in_slice = 3 ("00100").
        assert!(d.push(&packet(3, 200, true, &[0x41, 0x20, 0x00])).is_none());
        assert_eq!(d.last_error(), Some(&PayloadError::MissingStart));
    }

    #[test]
    fn malformed_aggregates_are_counted() {
        let mut d = Depacketizer::new(Codec::H264);
        d.push(&packet(1, 100, true, &[0x78, 0x00, 0x09, 0x67]));
        d.push(&packet(2, 200, true, &[0x7c]));
        d.push(&packet(3, 300, true, &[0x79, 1, 2]));
        assert_eq!(d.stats().malformed_packets, 3);
        assert_eq!(d.stats().frames, 0);
    }
}
