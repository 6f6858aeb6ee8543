//! Ogg Opus files (RFC 7845), written live.
//!
//! A page is written (and the writer flushed) once it holds about a second of audio, so a
//! process killed mid-recording loses at most that second; every page is a valid end point.

mod page;

use std::io::{self, Write};

use super::opus;
pub use super::FinishStats;
pub use page::crc32;

/// A page is closed before it spans more than this much audio (48 kHz samples).
const PAGE_SAMPLES: u64 = 48_000;

pub struct OggOpusWriter<W: Write> {
    out: W,
    serial: u32,
    sequence: u32,
    /// Lacing values and bytes of the page being filled.
    segments: Vec<u8>,
    body: Vec<u8>,
    /// The end of the last packet on the page being filled, in samples.
    page_granule: Option<u64>,
    /// The start of the page being filled, in samples.
    page_start: u64,
    /// The end of the last packet written, in samples.
    end: u64,
    /// The next page starts with the rest of a packet.
    continues: bool,
    written: u64,
    packets: u64,
}

impl<W: Write> OggOpusWriter<W> {
    /// Writes the OpusHead and OpusTags pages and flushes them. `channels` is 1 or 2.
    pub fn new(out: W, channels: u8, serial: u32) -> io::Result<Self> {
        let mut writer = Self {
            out,
            serial,
            sequence: 0,
            segments: Vec::new(),
            body: Vec::new(),
            page_granule: None,
            page_start: 0,
            end: 0,
            continues: false,
            written: 0,
            packets: 0,
        };
        let head = opus::opus_head(channels, opus::PRE_SKIP);
        writer.write_page(page::BEGIN_OF_STREAM, 0, &[head.len() as u8], &head)?;
        let tags = opus_tags();
        let lacing: Vec<u8> = page::lacing(tags.len()).collect();
        writer.write_page(0, 0, &lacing, &tags)?;
        writer.out.flush()?;
        Ok(writer)
    }

    /// Adds one Opus packet. `granule_48k` is where the packet starts, in 48 kHz samples from
    /// the start of the recording (the RTP timestamp minus the first one); the writer adds the
    /// packet's own duration, read from its TOC byte, to get the Ogg granule position. A start
    /// before the end of the previous packet is moved up to it, so granules never go back.
    pub fn write_packet(&mut self, data: &[u8], granule_48k: u64) -> io::Result<()> {
        // A packet whose TOC is unreadable is still the sender's; assume the usual 20 ms.
        let samples = u64::from(opus::packet_samples(data).unwrap_or(960));
        let start = granule_48k.max(self.end);
        let gap = start > self.end;
        let page_full = start.saturating_sub(self.page_start) >= PAGE_SAMPLES;
        let needed = data.len() / 255 + 1;
        let no_room = self.segments.len() + needed > page::MAX_SEGMENTS;
        if self.page_granule.is_some() && (gap || page_full || no_room) {
            // Before a gap too: a page's granule only says where its last packet ends, so
            // packets on both sides of a gap would be played back to back.
            self.flush_page(0)?;
        }
        if self.page_granule.is_none() && self.segments.is_empty() {
            self.page_start = start;
        }
        self.end = start + samples;
        self.packets += 1;
        let mut lacing = page::lacing(data.len()).peekable();
        let mut offset = 0;
        while let Some(value) = lacing.next() {
            if self.segments.len() == page::MAX_SEGMENTS {
                // Only a packet of more than 64 KiB gets here; it continues on the next page.
                self.flush_page(0)?;
                self.page_start = start;
            }
            self.segments.push(value);
            self.body
                .extend_from_slice(&data[offset..offset + usize::from(value)]);
            offset += usize::from(value);
            if lacing.peek().is_none() {
                self.page_granule = Some(self.end);
            }
        }
        Ok(())
    }

    /// Bytes handed to the underlying writer.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    pub fn packets_written(&self) -> u64 {
        self.packets
    }

    /// Writes the last page with the end-of-stream flag and hands back the writer.
    pub fn finish(mut self) -> io::Result<(W, FinishStats)> {
        self.flush_page(page::END_OF_STREAM)?;
        self.out.flush()?;
        let pre_skip = u64::from(opus::PRE_SKIP);
        let stats = FinishStats {
            duration_ms: self.end.saturating_sub(pre_skip) / 48,
            bytes: self.written,
            frames: self.packets,
        };
        Ok((self.out, stats))
    }

    /// Writes the page being filled (an empty one too, to carry an end-of-stream flag).
    fn flush_page(&mut self, flags: u8) -> io::Result<()> {
        let granule = match self.page_granule.take() {
            Some(granule) => granule,
            None if self.segments.is_empty() => self.end,
            None => page::NO_GRANULE,
        };
        let segments = std::mem::take(&mut self.segments);
        let body = std::mem::take(&mut self.body);
        self.write_page(flags, granule, &segments, &body)?;
        self.out.flush()
    }

    fn write_page(
        &mut self,
        flags: u8,
        granule: u64,
        segments: &[u8],
        body: &[u8],
    ) -> io::Result<()> {
        let flags = flags | if self.continues { page::CONTINUED } else { 0 };
        let bytes = page::build(flags, granule, self.serial, self.sequence, segments, body);
        self.out.write_all(&bytes)?;
        self.sequence += 1;
        self.written += bytes.len() as u64;
        // A page ending in a 255 lacing value ends inside a packet.
        self.continues = segments.last() == Some(&255);
        Ok(())
    }
}

/// An "OpusTags" comment header (RFC 7845 5.2) with the vendor string and no comments.
fn opus_tags() -> Vec<u8> {
    let vendor = b"switchboard";
    let mut tags = Vec::with_capacity(16 + vendor.len());
    tags.extend_from_slice(b"OpusTags");
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor);
    tags.extend_from_slice(&0u32.to_le_bytes());
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Page {
        flags: u8,
        granule: u64,
        sequence: u32,
        lacing: Vec<u8>,
        body: Vec<u8>,
    }

    /// The pages of an Ogg stream, each page's CRC checked.
    fn pages(mut bytes: &[u8]) -> Vec<Page> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            assert_eq!(&bytes[..4], b"OggS");
            let count = usize::from(bytes[26]);
            let lacing = bytes[27..27 + count].to_vec();
            let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
            let len = 27 + count + body_len;
            let mut zeroed = bytes[..len].to_vec();
            zeroed[22..26].fill(0);
            let crc = u32::from_le_bytes(bytes[22..26].try_into().unwrap());
            assert_eq!(crc32(&zeroed), crc);
            out.push(Page {
                flags: bytes[5],
                granule: u64::from_le_bytes(bytes[6..14].try_into().unwrap()),
                sequence: u32::from_le_bytes(bytes[18..22].try_into().unwrap()),
                lacing,
                body: bytes[27 + count..len].to_vec(),
            });
            bytes = &bytes[len..];
        }
        out
    }

    // A 20 ms CELT packet (TOC config 31, one frame).
    fn packet(len: usize) -> Vec<u8> {
        let mut p = vec![0xfc];
        p.resize(len, 0x11);
        p
    }

    #[test]
    fn headers_then_pages_of_about_a_second() {
        let mut w = OggOpusWriter::new(Vec::new(), 2, 0x1234).unwrap();
        for i in 0..120u64 {
            w.write_packet(&packet(80), i * 960).unwrap();
        }
        let (bytes, stats) = w.finish().unwrap();
        assert_eq!(stats.frames, 120);
        assert_eq!(stats.duration_ms, 2400);
        assert_eq!(stats.bytes, bytes.len() as u64);
        let pages = pages(&bytes);
        assert_eq!(pages[0].flags, page::BEGIN_OF_STREAM);
        assert_eq!(&pages[0].body[..8], b"OpusHead");
        assert_eq!(&pages[1].body[..8], b"OpusTags");
        // 50 packets (1 s) per page, then the rest with end of stream.
        let audio: Vec<_> = pages[2..]
            .iter()
            .map(|p| (p.flags, p.granule, p.lacing.len()))
            .collect();
        assert_eq!(
            audio,
            [
                (0, 48_000, 50),
                (0, 96_000, 50),
                (page::END_OF_STREAM, 115_200, 20)
            ]
        );
        let sequences: Vec<u32> = pages.iter().map(|p| p.sequence).collect();
        assert_eq!(sequences, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_gap_closes_the_page_and_granules_never_go_back() {
        let mut w = OggOpusWriter::new(Vec::new(), 1, 1).unwrap();
        w.write_packet(&packet(10), 0).unwrap();
        w.write_packet(&packet(10), 960).unwrap();
        // Five packets lost.
        w.write_packet(&packet(10), 960 * 7).unwrap();
        // A start that overlaps the previous packet is moved up.
        w.write_packet(&packet(10), 960 * 7).unwrap();
        let (bytes, stats) = w.finish().unwrap();
        let granules: Vec<u64> = pages(&bytes)[2..].iter().map(|p| p.granule).collect();
        assert_eq!(granules, [1920, 960 * 9]);
        assert_eq!(stats.duration_ms, 180);
    }

    #[test]
    fn large_packets_span_pages() {
        let mut w = OggOpusWriter::new(Vec::new(), 2, 1).unwrap();
        let big = packet(70_000);
        w.write_packet(&big, 0).unwrap();
        w.write_packet(&packet(255), 960).unwrap();
        let (bytes, _) = w.finish().unwrap();
        let pages = pages(&bytes);
        // 70 000 bytes need 275 lacing values: 255 on one page, 20 on the next.
        assert_eq!(pages[2].flags, 0);
        assert_eq!(pages[2].granule, page::NO_GRANULE);
        assert_eq!(pages[2].lacing.len(), 255);
        assert_eq!(pages[3].flags, page::CONTINUED | page::END_OF_STREAM);
        assert_eq!(pages[3].granule, 1920);
        let joined: Vec<u8> = [pages[2].body.clone(), pages[3].body.clone()].concat();
        assert_eq!(&joined[..big.len()], &big[..]);
        // The 255-byte packet ends with a 0 lacing value.
        assert_eq!(&pages[3].lacing[pages[3].lacing.len() - 2..], &[255, 0]);
    }

    #[test]
    fn empty_stream_still_ends() {
        let w = OggOpusWriter::new(Vec::new(), 2, 1).unwrap();
        let (bytes, stats) = w.finish().unwrap();
        let pages = pages(&bytes);
        assert_eq!(pages.len(), 3);
        assert_eq!(pages[2].flags, page::END_OF_STREAM);
        assert!(pages[2].lacing.is_empty());
        assert_eq!(stats.frames, 0);
    }
}
