//! A part of a recording: its header (once its tracks are ready), its frames placed on the
//! part's timeline and interleaved, and its closing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::BufWriter;
use std::time::Instant;

use switchboard_sfu::TrackKind;
use tracing::info;

use super::{
    codec_name, write_error, FileRecorder, PartState, Slot, Timed, Track, INTERLEAVE_MS,
    SENDER_REPORT_WAIT,
};
use crate::media::mkv::{DocType, MkvWriter, TrackSpec};
use crate::media::Codec;
use crate::{EgressError, FileSummary, TrackSummary};

impl FileRecorder {
    /// A gathering part writes its header once every track it knows is ready, or at its
    /// deadline with those that are.
    pub(super) fn maybe_write_header(&mut self, now: Instant) -> Result<(), EgressError> {
        self.write_header(now, false)
    }

    /// `force`: do not wait for anything more.
    pub(super) fn write_header(&mut self, now: Instant, force: bool) -> Result<(), EgressError> {
        let Some(part) = self.part.as_mut() else {
            return Ok(());
        };
        let PartState::Gathering {
            started,
            deadline,
            pending,
        } = &mut part.state
        else {
            return Ok(());
        };
        let clock_settled = |track: &Track| {
            force || track.clock.has_sender_clock() || now >= *started + SENDER_REPORT_WAIT
        };
        let ready = |id: u32, track: &Track| {
            let media = match track.info.kind {
                TrackKind::Audio => pending.iter().any(|t| t.track == id),
                TrackKind::Video => {
                    pending.iter().any(|t| t.track == id && t.frame.keyframe)
                        && track.depacketizer.dimensions().is_some()
                }
            };
            media && clock_settled(track)
        };
        let ready_ids: Vec<u32> = {
            let mut ids: Vec<u32> = self
                .tracks
                .iter()
                .filter(|(id, t)| ready(**id, t))
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            ids
        };
        let all_ready = ready_ids.len() == self.tracks.len();
        if ready_ids.is_empty() || (!all_ready && !force && now < *deadline) {
            return Ok(());
        }
        let pending = std::mem::take(pending);
        let mut specs = Vec::new();
        let mut slots = Vec::new();
        for (n, id) in ready_ids.iter().enumerate() {
            let Some(track) = self.tracks.get(id) else {
                continue;
            };
            let number = n as u64 + 1;
            let kind = track.info.kind;
            specs.push(TrackSpec {
                number,
                name: format!(
                    "{} {}",
                    track.info.identity,
                    if kind == TrackKind::Video {
                        "video"
                    } else {
                        "audio"
                    }
                ),
                codec: track.codec,
                codec_private: track.depacketizer.codec_private(),
                video: (kind == TrackKind::Video)
                    .then(|| track.depacketizer.dimensions())
                    .flatten(),
                audio: (kind == TrackKind::Audio).then_some((
                    track.info.codec.clock_rate,
                    track.info.codec.channels.unwrap_or(2),
                )),
            });
            slots.push(Slot {
                number,
                identity: track.info.identity.clone(),
                kind,
                codec: track.codec,
                track: Some(*id),
                sids: vec![track.info.track_sid.clone()],
                last_ms: None,
                wants_keyframe: kind == TrackKind::Video,
            });
        }
        let matroska = specs.iter().any(|s| s.codec == Codec::H264);
        let (doc_type, extension) = if matroska {
            (DocType::Matroska, "mkv")
        } else {
            (DocType::WebM, "webm")
        };
        part.path.set_extension(extension);
        let path = part.path.clone();
        let name = path.file_name().unwrap_or_default();
        let file = self.dir.create(name).map_err(|e| write_error(&path, e))?;
        let writer = MkvWriter::new(BufWriter::new(file), doc_type, &specs)
            .map_err(|e| write_error(&path, e))?;
        info!(path = %path.display(), tracks = specs.len(), "recording");
        // Each track's mapping to the timeline is fixed here, at its first frame.
        let mut placed: Vec<(f64, Timed)> = Vec::new();
        for timed in pending {
            if !ready_ids.contains(&timed.track) {
                continue;
            }
            let Some(track) = self.tracks.get_mut(&timed.track) else {
                continue;
            };
            if let Some(wall) = self
                .timeline
                .wall_time(&mut track.clock, timed.frame.timestamp)
            {
                placed.push((wall, timed));
            }
        }
        placed.sort_by(|a, b| a.0.total_cmp(&b.0));
        let origin = placed.first().map_or(0.0, |(wall, _)| *wall);
        part.slots = slots;
        part.state = PartState::Writing {
            writer: Box::new(writer),
            origin,
            queue: BinaryHeap::new(),
            order: 0,
            newest_ms: 0,
        };
        for (_, timed) in placed {
            self.write(timed)?;
        }
        Ok(())
    }

    /// Places a frame of a bound track on the part's timeline and queues it.
    pub(super) fn write(&mut self, timed: Timed) -> Result<(), EgressError> {
        let Some(track) = self.tracks.get_mut(&timed.track) else {
            return Ok(());
        };
        let Some(wall) = self
            .timeline
            .wall_time(&mut track.clock, timed.frame.timestamp)
        else {
            return Ok(());
        };
        let Some(part) = self.part.as_mut() else {
            return Ok(());
        };
        let Some(slot) = part.slots.iter_mut().find(|s| s.track == Some(timed.track)) else {
            return Ok(());
        };
        let PartState::Writing {
            writer,
            origin,
            queue,
            order,
            newest_ms,
        } = &mut part.state
        else {
            return Ok(());
        };
        if slot.wants_keyframe {
            if !timed.frame.keyframe {
                return Ok(());
            }
            slot.wants_keyframe = false;
        }
        let ms = ((wall - *origin) * 1000.0).max(0.0) as u64;
        // Timestamps of a track always move forward, whatever the clocks did (a rejoin
        // continues after the old track's last frame).
        let ms = slot.last_ms.map_or(ms, |last| ms.max(last + 1));
        slot.last_ms = Some(ms);
        *order += 1;
        queue.push(Reverse((
            ms,
            *order,
            slot.number,
            timed.frame.keyframe,
            timed.frame.data,
        )));
        *newest_ms = (*newest_ms).max(ms);
        while let Some(Reverse(head)) = queue.peek() {
            if head.0 + INTERLEAVE_MS > *newest_ms {
                break;
            }
            let Some(Reverse((ms, _, number, keyframe, data))) = queue.pop() else {
                break;
            };
            writer
                .write_frame(number, ms, keyframe, &data)
                .map_err(|e| write_error(&part.path, e))?;
            self.wrote_media = true;
        }
        Ok(())
    }

    /// Writes what a part holds and closes its file. `last` is the end of the recording:
    /// a part still gathering writes its header with the tracks that are ready.
    pub(super) fn close_part(&mut self, last: bool) -> Result<(), EgressError> {
        if last {
            // The end: write with whatever is ready.
            self.write_header(Instant::now(), true)?;
        }
        let Some(part) = self.part.take() else {
            return Ok(());
        };
        let PartState::Writing {
            mut writer, queue, ..
        } = part.state
        else {
            return Ok(());
        };
        // Sorted by `Reverse`, so latest first: walk it backwards.
        let rest = queue.into_sorted_vec();
        for Reverse((ms, _, number, keyframe, data)) in rest.into_iter().rev() {
            writer
                .write_frame(number, ms, keyframe, &data)
                .map_err(|e| write_error(&part.path, e))?;
            self.wrote_media = true;
        }
        let (_, stats) = writer.finish().map_err(|e| write_error(&part.path, e))?;
        self.files.push(FileSummary {
            path: part.path.display().to_string(),
            bytes: stats.bytes,
            duration_ms: stats.duration_ms,
            frames: stats.frames,
            tracks: part
                .slots
                .into_iter()
                .map(|s| TrackSummary {
                    number: s.number,
                    identity: s.identity,
                    track_sids: s.sids,
                    kind: s.kind,
                    codec: codec_name(s.codec).to_owned(),
                })
                .collect(),
        });
        Ok(())
    }
}
