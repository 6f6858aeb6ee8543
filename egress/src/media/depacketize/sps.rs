//! H.264 sequence parameter sets: the picture size for the container header, and the
//! "avcC" record Matroska's V_MPEG4/ISO/AVC wants as CodecPrivate.

use super::bits::{BitReader, EndOfData};

/// What the container needs from an SPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsInfo {
    pub profile_idc: u8,
    pub chroma_format_idc: u32,
    pub bit_depth_luma: u32,
    pub bit_depth_chroma: u32,
    pub width: u32,
    pub height: u32,
}

/// Profiles whose SPS carries chroma format, bit depth and scaling matrices (7.3.2.1.1).
fn has_chroma_info(profile_idc: u8) -> bool {
    matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    )
}

/// Parses an SPS NAL unit (with its one-byte NAL header).
pub fn parse_sps(nal: &[u8]) -> Result<SpsInfo, EndOfData> {
    let rbsp = unescape(nal.get(1..).ok_or(EndOfData)?);
    let mut r = BitReader::new(&rbsp);
    let profile_idc = r.bits(8)? as u8;
    let _constraints_and_level = r.bits(16)?;
    let _sps_id = r.ue()?;
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    let (mut bit_depth_luma, mut bit_depth_chroma) = (8, 8);
    if has_chroma_info(profile_idc) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()?;
        }
        bit_depth_luma = r.ue()?.saturating_add(8);
        bit_depth_chroma = r.ue()?.saturating_add(8);
        let _qpprime_y_zero_transform_bypass = r.bit()?;
        if r.bit()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    let _log2_max_frame_num = r.ue()?;
    match r.ue()? {
        0 => {
            let _log2_max_poc_lsb = r.ue()?;
        }
        1 => {
            let _delta_pic_order_always_zero = r.bit()?;
            let _offset_for_non_ref_pic = r.se()?;
            let _offset_for_top_to_bottom_field = r.se()?;
            let cycle = r.ue()?;
            for _ in 0..cycle.min(255) {
                let _offset_for_ref_frame = r.se()?;
            }
        }
        _ => {}
    }
    let _max_num_ref_frames = r.ue()?;
    let _gaps_in_frame_num_allowed = r.bit()?;
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.bit()?;
    if !frame_mbs_only {
        let _mb_adaptive_frame_field = r.bit()?;
    }
    let _direct_8x8_inference = r.bit()?;
    let (mut crop_left, mut crop_right, mut crop_top, mut crop_bottom) = (0u64, 0u64, 0u64, 0u64);
    if r.bit()? {
        crop_left = r.ue()?.into();
        crop_right = r.ue()?.into();
        crop_top = r.ue()?.into();
        crop_bottom = r.ue()?.into();
    }

    // Table 6-1 and equations 7-19..7-22.
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (crop_unit_x, crop_unit_y) = match chroma_array_type {
        1 => (2, 2 * field_factor),
        2 => (2, field_factor),
        _ => (1, field_factor),
    };
    let width = (width_mbs * 16).saturating_sub(crop_unit_x * (crop_left + crop_right));
    let height = (height_map_units * 16 * field_factor)
        .saturating_sub(crop_unit_y * (crop_top + crop_bottom));
    Ok(SpsInfo {
        profile_idc,
        chroma_format_idc,
        bit_depth_luma,
        bit_depth_chroma,
        width: u32::try_from(width).map_err(|_| EndOfData)?,
        height: u32::try_from(height).map_err(|_| EndOfData)?,
    })
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), EndOfData> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            // delta_scale is −128..=127 (7.4.2.1.1.1); a larger one is no SPS (and would
            // overflow the sum).
            if !(-128..=127).contains(&delta) {
                return Err(EndOfData);
            }
            next = (last + delta).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// Removes emulation prevention bytes (00 00 03 → 00 00).
fn unescape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &byte in data {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

/// An AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1) with 4-byte NAL lengths.
/// `None` when a parameter set is too large for its 16-bit length or the SPS is too short.
pub fn avc_decoder_configuration(sps: &[u8], pps: &[u8]) -> Option<Vec<u8>> {
    let sps_len = u16::try_from(sps.len()).ok()?;
    let pps_len = u16::try_from(pps.len()).ok()?;
    let header = sps.get(1..4)?;
    let mut out = Vec::with_capacity(16 + sps.len() + pps.len());
    out.push(1); // configurationVersion
    out.extend_from_slice(header); // profile, constraint flags, level
    out.push(0xfc | 3); // lengthSizeMinusOne = 3
    out.push(0xe0 | 1); // one SPS
    out.extend_from_slice(&sps_len.to_be_bytes());
    out.extend_from_slice(sps);
    out.push(1); // one PPS
    out.extend_from_slice(&pps_len.to_be_bytes());
    out.extend_from_slice(pps);
    if has_chroma_info(header[0]) {
        if let Ok(info) = parse_sps(sps) {
            out.push(0xfc | (info.chroma_format_idc & 3) as u8);
            out.push(0xf8 | (info.bit_depth_luma.saturating_sub(8) & 7) as u8);
            out.push(0xf8 | (info.bit_depth_chroma.saturating_sub(8) & 7) as u8);
            out.push(0); // no SPS extensions
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bit writer for building SPSs field by field.
    #[derive(Default)]
    struct Bits(Vec<bool>);

    impl Bits {
        fn u(mut self, count: u32, value: u32) -> Self {
            for i in (0..count).rev() {
                self.0.push((value >> i) & 1 == 1);
            }
            self
        }
        fn ue(self, value: u32) -> Self {
            let code = value + 1;
            let len = 32 - code.leading_zeros();
            self.u(len - 1, 0).u(len, code)
        }
        fn se(self, value: i32) -> Self {
            let code = if value > 0 {
                2 * value as u32 - 1
            } else {
                (-2 * value) as u32
            };
            self.ue(code)
        }
        fn nal(mut self) -> Vec<u8> {
            self.0.push(true); // rbsp stop bit
            let mut out = vec![0x67];
            for chunk in self.0.chunks(8) {
                let mut byte = 0u8;
                for (i, &bit) in chunk.iter().enumerate() {
                    byte |= u8::from(bit) << (7 - i);
                }
                out.push(byte);
            }
            out
        }
    }

    #[test]
    fn baseline_sps_with_cropping() {
        // x264's 1280x720 baseline SPS: 80x45 macroblocks, no cropping.
        let sps = [
            0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x40, 0, 0, 3, 0,
        ];
        let info = parse_sps(&sps).unwrap();
        assert_eq!((info.width, info.height), (1280, 720));
        // 1920x1080: 120x68 macroblocks cropped by 8 rows at the bottom.
        let sps = Bits::default()
            .u(8, 66)
            .u(8, 0xc0)
            .u(8, 40)
            .ue(0)
            .ue(0) // log2_max_frame_num - 4
            .ue(2) // pic_order_cnt_type
            .ue(1)
            .u(1, 0)
            .ue(119)
            .ue(67)
            .u(1, 1) // frame_mbs_only
            .u(1, 1)
            .u(1, 1) // cropping
            .ue(0)
            .ue(0)
            .ue(0)
            .ue(4)
            .nal();
        let info = parse_sps(&sps).unwrap();
        assert_eq!((info.width, info.height), (1920, 1080));
    }

    #[test]
    fn high_profile_sps_with_scaling_lists_and_poc_type_1() {
        let mut bits = Bits::default()
            .u(8, 100)
            .u(8, 0)
            .u(8, 31)
            .ue(0)
            .ue(1) // chroma 4:2:0
            .ue(0)
            .ue(0)
            .u(1, 0)
            .u(1, 1); // scaling matrices present
        for i in 0..8 {
            bits = bits.u(1, u32::from(i % 2 == 0));
            if i % 2 == 0 {
                // Deltas that end the list early (next scale 0 after one step).
                bits = bits.se(5).se(-13);
            }
        }
        let sps = bits
            .ue(0)
            .ue(1) // pic_order_cnt_type 1
            .u(1, 0)
            .se(-1)
            .se(2)
            .ue(2)
            .se(3)
            .se(-3)
            .ue(4)
            .u(1, 0)
            .ue(39) // 640
            .ue(14) // 15 map units * 2 (fields) * 16 = 480
            .u(1, 0) // frame_mbs_only = 0
            .u(1, 0)
            .u(1, 1)
            .u(1, 0)
            .nal();
        let info = parse_sps(&sps).unwrap();
        assert_eq!(info.profile_idc, 100);
        assert_eq!((info.width, info.height), (640, 480));
        let avcc = avc_decoder_configuration(&sps, &[0x68, 0xce, 0x38, 0x80]).unwrap();
        assert_eq!(&avcc[..6], &[1, 100, 0, 31, 0xff, 0xe1]);
        assert_eq!(&avcc[avcc.len() - 4..], &[0xfd, 0xf8, 0xf8, 0]);
    }

    #[test]
    fn avcc_layout_for_baseline() {
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xd9];
        let pps = [0x68, 0xcb, 0x83, 0xcb, 0x20];
        let avcc = avc_decoder_configuration(&sps, &pps).unwrap();
        let mut expected = vec![1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, 5];
        expected.extend_from_slice(&sps);
        expected.extend_from_slice(&[1, 0, 5]);
        expected.extend_from_slice(&pps);
        assert_eq!(avcc, expected);
        assert!(avc_decoder_configuration(&[0x67], &pps).is_none());
    }

    #[test]
    fn a_scaling_delta_out_of_range_is_an_error_not_an_overflow() {
        // High profile, scaling matrices present, the first list's first delta far beyond
        // −128..=127 (the fuzzer's crash: the sum overflowed).
        let sps = Bits::default()
            .u(8, 100)
            .u(8, 0)
            .u(8, 31)
            .ue(0)
            .ue(1)
            .ue(0)
            .ue(0)
            .u(1, 0)
            .u(1, 1)
            .u(1, 1)
            .se(i32::MAX)
            .nal();
        assert!(parse_sps(&sps).is_err());
    }

    #[test]
    fn truncated_sps_is_an_error() {
        assert!(parse_sps(&[0x67, 0x42]).is_err());
        assert!(parse_sps(&[]).is_err());
    }
}
