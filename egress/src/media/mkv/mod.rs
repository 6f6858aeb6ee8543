//! A live Matroska/WebM muxer that survives being cut off.
//!
//! The Segment starts with an unknown size and each Cluster is built in memory and written
//! whole, with its size, when it closes; the writer is flushed after every cluster. A process
//! killed mid-recording therefore leaves a file that plays up to the last written cluster.
//! `finish` adds Cues and patches in the Segment size, the Duration and the SeekHead.

mod ebml;
mod tracks;

use std::collections::HashMap;
use std::io::{self, Seek, SeekFrom, Write};

use ebml::id;
pub use tracks::{DocType, TrackError, TrackSpec};

pub use super::FinishStats;

/// A video keyframe this long after a cluster's start opens a new cluster.
const CLUSTER_KEYFRAME_MS: i64 = 1_000;
/// Any frame this long after a cluster's start opens a new cluster: bounds what a crash loses
/// when keyframes are rare.
const CLUSTER_MAX_MS: i64 = 2_000;
/// A cluster this large is closed early (a burst of big keyframes).
const CLUSTER_MAX_BYTES: usize = 8 << 20;
/// Room kept at the start of the Segment for a SeekHead (Info, Tracks, Cues) and a Void.
const SEEK_HEAD_ROOM: usize = 96;

struct Track {
    /// Video, or audio in a file without video: its keyframes may start clusters.
    leads_clusters: bool,
    last_timestamp: Option<u64>,
}

/// The cluster being built in memory.
struct OpenCluster {
    timestamp: u64,
    /// The children after the cluster's Timestamp.
    blocks: Vec<u8>,
    /// The track whose keyframe starts the cluster, for a cue point.
    cue_track: Option<u64>,
}

struct CuePoint {
    time: u64,
    track: u64,
    /// From the start of the Segment's data.
    cluster_position: u64,
}

pub struct MkvWriter<W: Write + Seek> {
    out: W,
    /// Where the file began in `out` (a writer may start mid-stream).
    base: u64,
    /// Bytes handed to `out` so far.
    written: u64,
    segment_size_at: u64,
    segment_data_at: u64,
    duration_at: u64,
    info_position: u64,
    tracks_position: u64,
    tracks: HashMap<u64, Track>,
    cluster: Option<OpenCluster>,
    cues: Vec<CuePoint>,
    frames: u64,
    end_ms: u64,
}

impl<W: Write + Seek> MkvWriter<W> {
    /// Writes the headers (EBML, Segment start, SeekHead, Info, Tracks) and flushes them.
    pub fn new(mut out: W, doc_type: DocType, tracks: &[TrackSpec]) -> io::Result<Self> {
        tracks::validate(doc_type, tracks)?;
        let base = out.stream_position()?;
        let mut head = Vec::new();
        ebml::master(&mut head, id::EBML, |out| {
            ebml::uint(out, id::EBML_VERSION, 1);
            ebml::uint(out, id::EBML_READ_VERSION, 1);
            ebml::uint(out, id::EBML_MAX_ID_LENGTH, 4);
            ebml::uint(out, id::EBML_MAX_SIZE_LENGTH, 8);
            ebml::string(out, id::DOC_TYPE, doc_type.name());
            // Version 4 for CodecDelay and SeekPreRoll; readers need only 2 (SimpleBlock).
            ebml::uint(out, id::DOC_TYPE_VERSION, 4);
            ebml::uint(out, id::DOC_TYPE_READ_VERSION, 2);
        });
        ebml::write_id(&mut head, id::SEGMENT);
        let segment_size_at = head.len() as u64;
        head.extend_from_slice(&ebml::UNKNOWN_SIZE);
        let segment_data_at = head.len() as u64;

        let info = info_element();
        let info_position = SEEK_HEAD_ROOM as u64;
        let tracks_position = info_position + info.len() as u64;
        head.extend_from_slice(&seek_head(info_position, tracks_position, None));
        // Duration is Info's last child: its 8-byte value ends the element.
        let duration_at = segment_data_at + tracks_position - 8;
        head.extend_from_slice(&info);
        head.extend_from_slice(&tracks::tracks_element(tracks));

        out.write_all(&head)?;
        out.flush()?;
        let has_video = tracks.iter().any(|t| t.codec.is_video());
        let tracks = tracks
            .iter()
            .map(|t| {
                let track = Track {
                    leads_clusters: t.codec.is_video() || !has_video,
                    last_timestamp: None,
                };
                (t.number, track)
            })
            .collect();
        Ok(Self {
            out,
            base,
            written: head.len() as u64,
            segment_size_at,
            segment_data_at,
            duration_at,
            info_position,
            tracks_position,
            tracks,
            cluster: None,
            cues: Vec::new(),
            frames: 0,
            end_ms: 0,
        })
    }

    /// Adds one frame as a SimpleBlock. Timestamps are milliseconds from the recording's
    /// start, non-decreasing per track; across tracks they may step back a little (up to
    /// 32 s, the reach of a block's relative timestamp).
    pub fn write_frame(
        &mut self,
        track: u64,
        timestamp_ms: u64,
        keyframe: bool,
        data: &[u8],
    ) -> io::Result<()> {
        let entry = self
            .tracks
            .get_mut(&track)
            .ok_or(TrackError::UnknownTrack(track))?;
        let leads = entry.leads_clusters && keyframe;
        let frame_ms = entry
            .last_timestamp
            .map_or(0, |last| timestamp_ms.saturating_sub(last));
        entry.last_timestamp = Some(timestamp_ms);
        self.end_ms = self.end_ms.max(timestamp_ms + frame_ms);

        if let Some(cluster) = &self.cluster {
            let relative = timestamp_ms as i64 - cluster.timestamp as i64;
            let close = (leads && relative >= CLUSTER_KEYFRAME_MS)
                || relative >= CLUSTER_MAX_MS
                || relative < i64::from(i16::MIN)
                || cluster.blocks.len() >= CLUSTER_MAX_BYTES;
            if close {
                self.close_cluster()?;
            }
        }
        let cluster = self.cluster.get_or_insert_with(|| OpenCluster {
            timestamp: timestamp_ms,
            blocks: Vec::with_capacity(64 * 1024),
            cue_track: leads.then_some(track),
        });
        // Bounded by the checks above (a fresh cluster starts at this frame).
        let relative = (timestamp_ms as i64 - cluster.timestamp as i64) as i16;
        let mut header = Vec::with_capacity(12);
        ebml::write_size(&mut header, track);
        header.extend_from_slice(&relative.to_be_bytes());
        header.push(if keyframe { 0x80 } else { 0 });
        ebml::write_id(&mut cluster.blocks, id::SIMPLE_BLOCK);
        ebml::write_size(&mut cluster.blocks, (header.len() + data.len()) as u64);
        cluster.blocks.extend_from_slice(&header);
        cluster.blocks.extend_from_slice(data);
        self.frames += 1;
        Ok(())
    }

    /// Writes the open cluster now (and flushes), e.g. when the recording pauses.
    pub fn close_cluster(&mut self) -> io::Result<()> {
        let Some(cluster) = self.cluster.take() else {
            return Ok(());
        };
        let position = self.written - self.segment_data_at;
        let mut timestamp = Vec::new();
        ebml::uint(&mut timestamp, id::TIMESTAMP, cluster.timestamp);
        let mut out = Vec::with_capacity(12 + timestamp.len() + cluster.blocks.len());
        ebml::write_id(&mut out, id::CLUSTER);
        ebml::write_size(&mut out, (timestamp.len() + cluster.blocks.len()) as u64);
        out.extend_from_slice(&timestamp);
        self.out.write_all(&out)?;
        self.out.write_all(&cluster.blocks)?;
        self.out.flush()?;
        self.written += (out.len() + cluster.blocks.len()) as u64;
        if let Some(track) = cluster.cue_track {
            self.cues.push(CuePoint {
                time: cluster.timestamp,
                track,
                cluster_position: position,
            });
        }
        Ok(())
    }

    /// Bytes handed to the underlying writer (the open cluster is not counted until written).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Frames accepted, including those in the open cluster.
    pub fn frames_written(&self) -> u64 {
        self.frames
    }

    /// The end of the latest frame, in ms: what `finish` will record as the Duration.
    pub fn duration_ms(&self) -> u64 {
        self.end_ms
    }

    /// Writes the last cluster and the Cues, patches the Segment size, Duration and SeekHead,
    /// and hands back the writer, positioned at the end of the file.
    pub fn finish(mut self) -> io::Result<(W, FinishStats)> {
        self.close_cluster()?;
        let cues_position = if self.cues.is_empty() {
            None
        } else {
            let cues = cues_element(&self.cues);
            let position = self.written - self.segment_data_at;
            self.out.write_all(&cues)?;
            self.written += cues.len() as u64;
            Some(position)
        };
        let end = self.base + self.written;

        let segment_size = self.written - self.segment_data_at;
        self.patch(self.segment_size_at, &ebml::size_8(segment_size))?;
        self.patch(self.duration_at, &(self.end_ms as f64).to_be_bytes())?;
        let seek_head = seek_head(self.info_position, self.tracks_position, cues_position);
        self.patch(self.segment_data_at, &seek_head)?;
        self.out.seek(SeekFrom::Start(end))?;
        self.out.flush()?;
        let stats = FinishStats {
            duration_ms: self.end_ms,
            bytes: self.written,
            frames: self.frames,
        };
        Ok((self.out, stats))
    }

    fn patch(&mut self, at: u64, bytes: &[u8]) -> io::Result<()> {
        self.out.seek(SeekFrom::Start(self.base + at))?;
        self.out.write_all(bytes)
    }
}

fn info_element() -> Vec<u8> {
    let mut out = Vec::new();
    ebml::master(&mut out, id::INFO, |out| {
        ebml::uint(out, id::TIMESTAMP_SCALE, 1_000_000);
        ebml::string(out, id::MUXING_APP, "switchboard");
        ebml::string(out, id::WRITING_APP, "switchboard");
        // A placeholder until `finish`: 0 makes readers estimate from the blocks instead.
        ebml::float(out, id::DURATION, 0.0);
    });
    out
}

/// The SeekHead padded with a Void to exactly [`SEEK_HEAD_ROOM`] bytes, so it can be
/// rewritten in place once the Cues exist.
fn seek_head(info: u64, tracks: u64, cues: Option<u64>) -> Vec<u8> {
    let entries = [
        (id::INFO, Some(info)),
        (id::TRACKS, Some(tracks)),
        (id::CUES, cues),
    ];
    let mut out = Vec::with_capacity(SEEK_HEAD_ROOM);
    ebml::master(&mut out, id::SEEK_HEAD, |out| {
        for (element, position) in entries {
            let Some(position) = position else { continue };
            ebml::master(out, id::SEEK, |out| {
                ebml::element(out, id::SEEK_ID, &element.to_be_bytes());
                ebml::uint(out, id::SEEK_POSITION, position);
            });
        }
    });
    let used = out.len();
    // Three entries take at most 68 bytes, which leaves room for the Void.
    ebml::void(&mut out, SEEK_HEAD_ROOM - used);
    out
}

fn cues_element(cues: &[CuePoint]) -> Vec<u8> {
    let mut out = Vec::new();
    ebml::master(&mut out, id::CUES, |out| {
        for cue in cues {
            ebml::master(out, id::CUE_POINT, |out| {
                ebml::uint(out, id::CUE_TIME, cue.time);
                ebml::master(out, id::CUE_TRACK_POSITIONS, |out| {
                    ebml::uint(out, id::CUE_TRACK, cue.track);
                    ebml::uint(out, id::CUE_CLUSTER_POSITION, cue.cluster_position);
                });
            });
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::media::Codec;

    fn video(number: u64) -> TrackSpec {
        TrackSpec {
            number,
            name: "camera".into(),
            codec: Codec::Vp8,
            codec_private: None,
            video: Some((320, 240)),
            audio: None,
        }
    }

    fn audio(number: u64) -> TrackSpec {
        TrackSpec {
            number,
            name: "mic".into(),
            codec: Codec::Opus,
            codec_private: None,
            video: None,
            audio: Some((48_000, 2)),
        }
    }

    fn count(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count()
    }

    const CLUSTER: [u8; 4] = [0x1f, 0x43, 0xb6, 0x75];

    #[test]
    fn clusters_open_on_keyframes_after_a_second_and_every_two_seconds() {
        let mut w = MkvWriter::new(Cursor::new(Vec::new()), DocType::WebM, &[video(1)]).unwrap();
        for i in 0..150u64 {
            // A keyframe every 45 frames (1.5 s) at 30 fps.
            w.write_frame(1, i * 33, i % 45 == 0, &[0xaa; 10]).unwrap();
        }
        let written_before_finish = w.bytes_written();
        let (out, stats) = w.finish().unwrap();
        let bytes = out.into_inner();
        assert_eq!(stats.frames, 150);
        assert_eq!(stats.bytes, bytes.len() as u64);
        assert!(written_before_finish < stats.bytes);
        // Keyframes at 0, 1.485, 2.97 and 4.455 s each open a cluster.
        assert_eq!(count(&bytes, &CLUSTER), 4);
        assert_eq!(stats.duration_ms, 149 * 33 + 33);
        let duration = (stats.duration_ms as f64).to_be_bytes();
        assert_eq!(count(&bytes, &duration), 1);
        // The Segment size was patched: no unknown size remains.
        assert_eq!(count(&bytes, &ebml::UNKNOWN_SIZE), 0);
        // The Cues ID twice: the element, and its entry patched into the SeekHead.
        assert_eq!(count(&bytes, &[0x1c, 0x53, 0xbb, 0x6b]), 2);
        // A cue point (CueTrack 1, then CueClusterPosition) per cluster.
        assert_eq!(count(&bytes, &[0xf7, 0x81, 0x01, 0xf1]), 4);

        // Without keyframes, a cluster closes every two seconds.
        let mut w = MkvWriter::new(Cursor::new(Vec::new()), DocType::WebM, &[video(1)]).unwrap();
        for i in 0..150u64 {
            w.write_frame(1, i * 33, i == 0, &[0xaa; 10]).unwrap();
        }
        let (out, _) = w.finish().unwrap();
        // 0, 2.013 and 4.026 s; only the first starts with a keyframe.
        let bytes = out.into_inner();
        assert_eq!(count(&bytes, &CLUSTER), 3);
        assert_eq!(count(&bytes, &[0xf7, 0x81, 0x01, 0xf1]), 1);
    }

    #[test]
    fn interleaved_tracks_may_step_back_a_little() {
        let mut w = MkvWriter::new(
            Cursor::new(Vec::new()),
            DocType::WebM,
            &[video(1), audio(2)],
        )
        .unwrap();
        w.write_frame(1, 0, true, &[1]).unwrap();
        w.write_frame(1, 1000, true, &[1]).unwrap();
        // Audio at 990 ms after the cluster opened at 1000 ms: relative -10.
        w.write_frame(2, 990, true, &[2]).unwrap();
        let (out, stats) = w.finish().unwrap();
        let bytes = out.into_inner();
        assert_eq!(stats.frames, 3);
        // SimpleBlock: A3 85, track 82, -10 as i16, keyframe flag, data.
        assert_eq!(count(&bytes, &[0xa3, 0x85, 0x82, 0xff, 0xf6, 0x80, 2]), 1);
    }

    #[test]
    fn unknown_track_and_bad_specs_are_input_errors() {
        let mut w = MkvWriter::new(Cursor::new(Vec::new()), DocType::WebM, &[video(1)]).unwrap();
        let error = w.write_frame(5, 0, true, &[1]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        let h264 = TrackSpec {
            codec: Codec::H264,
            codec_private: Some(vec![1]),
            ..video(1)
        };
        let error = MkvWriter::new(Cursor::new(Vec::new()), DocType::WebM, &[h264])
            .err()
            .unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_crash_leaves_every_closed_cluster_on_disk() {
        let mut w = MkvWriter::new(Cursor::new(Vec::new()), DocType::WebM, &[audio(1)]).unwrap();
        for i in 0..200u64 {
            w.write_frame(1, i * 20, true, &[0xfc; 30]).unwrap();
        }
        // Audio-only: clusters of one second; 3 closed, the 4th still open.
        assert_eq!(w.bytes_written(), w.out.get_ref().len() as u64);
        assert_eq!(count(w.out.get_ref(), &CLUSTER), 3);
        assert_eq!(count(w.out.get_ref(), &ebml::UNKNOWN_SIZE), 1);
    }

    #[test]
    fn starts_at_the_writers_position() {
        let mut cursor = Cursor::new(vec![0u8; 10]);
        cursor.set_position(10);
        let mut w = MkvWriter::new(cursor, DocType::Matroska, &[video(1)]).unwrap();
        w.write_frame(1, 0, true, &[1, 2, 3]).unwrap();
        let (out, stats) = w.finish().unwrap();
        let bytes = out.into_inner();
        assert_eq!(&bytes[10..14], &[0x1a, 0x45, 0xdf, 0xa3]);
        assert_eq!(bytes.len() as u64, 10 + stats.bytes);
    }
}
