//! A big-endian bit reader for codec headers (H.264 SPS, VP9 uncompressed header).
//! Reading past the end is an error, never a panic: the bytes come from the network.

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bitstream ended early")]
pub struct EndOfData;

pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub fn bit(&mut self) -> Result<bool, EndOfData> {
        let byte = self.data.get(self.pos / 8).ok_or(EndOfData)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    /// Up to 32 bits as an unsigned number.
    pub fn bits(&mut self, count: u32) -> Result<u32, EndOfData> {
        debug_assert!(count <= 32);
        let mut value = 0u32;
        for _ in 0..count {
            value = (value << 1) | u32::from(self.bit()?);
        }
        Ok(value)
    }

    /// Unsigned exp-Golomb, ue(v) in H.264.
    pub fn ue(&mut self) -> Result<u32, EndOfData> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            // Longer codes do not fit the u32 values any syntax element here may take.
            if zeros > 31 {
                return Err(EndOfData);
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)) as u32)
    }

    /// Signed exp-Golomb, se(v) in H.264.
    pub fn se(&mut self) -> Result<i32, EndOfData> {
        let code = i64::from(self.ue()?);
        let value = if code % 2 == 1 {
            (code + 1) / 2
        } else {
            -(code / 2)
        };
        Ok(value as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fixed_and_exp_golomb_fields() {
        // 1 | 010 | 011 | 00100 | 00101 | 0001000 ...: ue 0, 1, 2, 3, 4, 7
        let data = [0b1010_0110, 0b0100_0010, 0b1000_1000, 0];
        let mut r = BitReader::new(&data);
        assert_eq!(r.ue(), Ok(0));
        assert_eq!(r.ue(), Ok(1));
        assert_eq!(r.ue(), Ok(2));
        assert_eq!(r.ue(), Ok(3));
        assert_eq!(r.ue(), Ok(4));
        assert_eq!(r.ue(), Ok(7));
        let mut r = BitReader::new(&data);
        assert_eq!(r.bits(4), Ok(0b1010));
        // se: codes 1, 2, 3, 4 are +1, -1, +2, -2
        let mut r = BitReader::new(&[0b0100_1100, 0b1000_0101]);
        assert_eq!(r.se(), Ok(1));
        assert_eq!(r.se(), Ok(-1));
        assert_eq!(r.se(), Ok(2));
        assert_eq!(r.se(), Ok(-2));
    }

    #[test]
    fn running_out_is_an_error() {
        let mut r = BitReader::new(&[0]);
        assert_eq!(r.ue(), Err(EndOfData));
        let mut r = BitReader::new(&[0xff]);
        assert_eq!(r.bits(8), Ok(0xff));
        assert_eq!(r.bit(), Err(EndOfData));
    }
}
