//! Recording tracks into Matroska/WebM files.
//!
//! Packets of each track go through a jitter buffer (reordering, and time for the media
//! plane's NACKs to bring retransmissions) and a depacketizer into frames, which are placed
//! on one timeline ([`crate::timeline`]) and written interleaved.
//!
//! A Matroska file declares its tracks up front, so a part waits briefly for the tracks it
//! knows to be ready (video needs a keyframe for its size) before writing its header. A
//! publisher who leaves and comes back continues in its old file track (same identity, kind
//! and codec); a track that cannot continue one starts the next part of the recording.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use switchboard_sfu::{TapPacket, TapTrack, TrackKind};
use tracing::{debug, info};

use crate::media::depacketize::{Depacketizer, Frame};
use crate::media::jitter::{JitterBuffer, Released};
use crate::media::mkv::MkvWriter;
use crate::media::{Codec, RtpPacketIn};
use crate::outdir::OutDir;
use crate::timeline::{Timeline, TrackClock};
use crate::{EgressError, FileSummary};

mod parts;

/// How long a new part waits for its tracks to be ready before writing without the late ones.
const GATHER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a part waits for a track's first sender report (which lines it up with the
/// publisher's other tracks) before placing it by arrival time instead.
const SENDER_REPORT_WAIT: Duration = Duration::from_millis(1500);
/// Frames are held this long to be written in time order across tracks.
const INTERLEAVE_MS: u64 = 500;
/// At most one keyframe request per track per this interval.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// Video waits longer than audio for retransmissions: a lost video packet ruins a frame.
const VIDEO_JITTER: Duration = Duration::from_millis(300);
const AUDIO_JITTER: Duration = Duration::from_millis(100);
const JITTER_CAPACITY: usize = 1024;

pub(crate) fn codec_of(name: &str) -> Option<Codec> {
    match name {
        "opus" => Some(Codec::Opus),
        "vp8" => Some(Codec::Vp8),
        "vp9" => Some(Codec::Vp9),
        "h264" => Some(Codec::H264),
        _ => None,
    }
}

fn codec_name(codec: Codec) -> &'static str {
    match codec {
        Codec::Opus => "opus",
        Codec::Vp8 => "vp8",
        Codec::Vp9 => "vp9",
        Codec::H264 => "h264",
    }
}

/// One tapped track.
struct Track {
    info: TapTrack,
    codec: Codec,
    clock: TrackClock,
    jitter: JitterBuffer,
    depacketizer: Depacketizer,
    last_keyframe_request: Option<Instant>,
}

/// A frame waiting for its part's header. Its place on the timeline is worked out when it
/// is written, so a sender report that arrives meanwhile can still place it.
struct Timed {
    track: u32,
    frame: Frame,
}

/// A track of the file being written.
struct Slot {
    number: u64,
    identity: String,
    kind: TrackKind,
    codec: Codec,
    /// The tapped track writing into it now, if any.
    track: Option<u32>,
    sids: Vec<String>,
    last_ms: Option<u64>,
    /// Until a keyframe, a video slot (re)joined by a track drops delta frames.
    wants_keyframe: bool,
}

/// A frame waiting to be written: (ms, arrival order, file track number, keyframe, data);
/// ordered by time, then arrival.
type Queued = (u64, u64, u64, bool, Vec<u8>);

/// What a recording leaves behind when it ends, and the error that ended it if any.
pub(crate) type Finished = (Vec<FileSummary>, Counters, Option<EgressError>);

enum PartState {
    Gathering {
        started: Instant,
        deadline: Instant,
        pending: Vec<Timed>,
    },
    Writing {
        writer: Box<MkvWriter<BufWriter<File>>>,
        /// Wall time of the part's zero.
        origin: f64,
        /// (ms, arrival order, slot number, keyframe, data), earliest first.
        queue: BinaryHeap<Reverse<Queued>>,
        order: u64,
        newest_ms: u64,
    },
}

struct Part {
    path: PathBuf,
    state: PartState,
    slots: Vec<Slot>,
}

/// Counters of the whole recording.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub packets: u64,
    pub packets_lost: u64,
    pub frames: u64,
}

/// Records the tracks of a room (or one track) into files under `dir`.
pub(crate) struct FileRecorder {
    pub dir: OutDir,
    pub stem: String,
    tracks: HashMap<u32, Track>,
    timeline: Timeline,
    part: Option<Part>,
    parts_started: u32,
    files: Vec<FileSummary>,
    pub counters: Counters,
    /// Set when the first frame reached a file.
    pub wrote_media: bool,
}

pub(crate) fn write_error(path: &Path, e: impl std::fmt::Display) -> EgressError {
    EgressError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl FileRecorder {
    pub fn new(dir: OutDir, stem: String) -> Self {
        Self {
            dir,
            stem,
            tracks: HashMap::new(),
            timeline: Timeline::default(),
            part: None,
            parts_started: 0,
            files: Vec::new(),
            counters: Counters::default(),
            wrote_media: false,
        }
    }

    /// A track started; tracks whose codec cannot be recorded are refused.
    pub fn track_started(&mut self, info: TapTrack) -> Result<(), EgressError> {
        let Some(codec) = codec_of(&info.codec.name) else {
            return Err(EgressError::UnsupportedCodec {
                track: info.track_sid.clone(),
                codec: info.codec.name.clone(),
            });
        };
        let jitter = if info.kind == TrackKind::Video {
            VIDEO_JITTER
        } else {
            AUDIO_JITTER
        };
        let track = Track {
            clock: TrackClock::new(info.identity.clone(), info.codec.clock_rate),
            codec,
            jitter: JitterBuffer::new(jitter, JITTER_CAPACITY),
            depacketizer: Depacketizer::new(codec),
            last_keyframe_request: None,
            info,
        };
        self.tracks.insert(track.info.id, track);
        Ok(())
    }

    pub fn packet(&mut self, id: u32, packet: TapPacket, now: Instant) -> Result<(), EgressError> {
        let Some(track) = self.tracks.get_mut(&id) else {
            return Ok(());
        };
        self.counters.packets += 1;
        self.timeline.packet(
            &mut track.clock,
            packet.timestamp,
            packet.arrival,
            packet.sender_clock,
            (now, SystemTime::now()),
        );
        track.jitter.push(RtpPacketIn::from(&packet), now);
        self.drain_track(id, now, false)
    }

    /// The track is gone: what it still holds is written, and its file track is free for
    /// its publisher's return.
    pub fn track_ended(&mut self, id: u32, now: Instant) -> Result<(), EgressError> {
        self.drain_track(id, now, true)?;
        self.tracks.remove(&id);
        if let Some(part) = self.part.as_mut() {
            for slot in part.slots.iter_mut().filter(|s| s.track == Some(id)) {
                slot.track = None;
            }
        }
        Ok(())
    }

    /// Time-driven work: released packets, a part's header, keyframe requests. Returns
    /// the tracks a keyframe should be requested for.
    pub fn tick(&mut self, now: Instant) -> Result<Vec<u32>, EgressError> {
        let ids: Vec<u32> = self.tracks.keys().copied().collect();
        for id in ids {
            self.drain_track(id, now, false)?;
        }
        self.maybe_write_header(now)?;
        let mut wanted = Vec::new();
        // Tracks whose file track waits for a keyframe, and in a part still gathering, video
        // tracks without one yet (its header needs their size).
        let slots_waiting: Vec<u32> = match &self.part {
            Some(Part {
                state: PartState::Gathering { pending, .. },
                ..
            }) => self
                .tracks
                .keys()
                .copied()
                .filter(|id| !pending.iter().any(|t| t.track == *id && t.frame.keyframe))
                .collect(),
            Some(part) => part
                .slots
                .iter()
                .filter(|s| s.wants_keyframe)
                .filter_map(|s| s.track)
                .collect(),
            None => Vec::new(),
        };
        for (id, track) in &mut self.tracks {
            if track.info.kind != TrackKind::Video {
                continue;
            }
            let needs = track.depacketizer.needs_keyframe() || slots_waiting.contains(id);
            let due = track
                .last_keyframe_request
                .is_none_or(|at| now.saturating_duration_since(at) >= KEYFRAME_REQUEST_INTERVAL);
            if needs && due {
                track.last_keyframe_request = Some(now);
                wanted.push(*id);
            }
        }
        Ok(wanted)
    }

    /// Writes everything still held and closes the file. Returns the files written.
    pub fn finish(mut self, now: Instant) -> Finished {
        let ids: Vec<u32> = self.tracks.keys().copied().collect();
        let mut result = Ok(());
        for id in ids {
            if let Err(e) = self.drain_track(id, now, true) {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            result = self.close_part(true);
        }
        (self.files, self.counters, result.err())
    }

    fn drain_track(&mut self, id: u32, now: Instant, flush: bool) -> Result<(), EgressError> {
        let mut frames = Vec::new();
        {
            let Some(track) = self.tracks.get_mut(&id) else {
                return Ok(());
            };
            for r in track.jitter.release(now, flush) {
                match r {
                    Released::Packet(p) => {
                        frames.extend(track.depacketizer.push(&p));
                        while let Some(frame) = track.depacketizer.pop_ready() {
                            frames.push(frame);
                        }
                    }
                    Released::Lost { count, .. } => {
                        self.counters.packets_lost += count;
                        track.depacketizer.lost();
                    }
                }
            }
            if flush {
                frames.extend(track.depacketizer.flush());
                while let Some(frame) = track.depacketizer.pop_ready() {
                    frames.push(frame);
                }
            }
        }
        for frame in frames {
            self.frame(id, frame, now)?;
        }
        Ok(())
    }

    fn frame(&mut self, id: u32, frame: Frame, now: Instant) -> Result<(), EgressError> {
        let Some(track) = self.tracks.get(&id) else {
            return Ok(());
        };
        let sid = track.info.track_sid.clone();
        self.counters.frames += 1;
        let timed = Timed { track: id, frame };
        if self.part.is_none() {
            self.parts_started += 1;
            let name = match self.parts_started {
                1 => self.stem.clone(),
                n => format!("{}--part{n}", self.stem),
            };
            self.part = Some(Part {
                path: self.dir.path().join(name),
                state: PartState::Gathering {
                    started: now,
                    deadline: now + GATHER_TIMEOUT,
                    pending: Vec::new(),
                },
                slots: Vec::new(),
            });
        }
        let Some(part) = self.part.as_mut() else {
            return Ok(());
        };
        match &mut part.state {
            PartState::Gathering { pending, .. } => {
                pending.push(timed);
                self.maybe_write_header(now)
            }
            PartState::Writing { .. } => {
                if self.bind_slot(id).is_none() {
                    // A track this file has no place for: the next part takes it.
                    info!(track = %sid, "new track: starting the next part of the recording");
                    self.close_part(false)?;
                    return self.frame_again(timed, now);
                }
                self.write(timed)
            }
        }
    }

    /// Re-enters a frame after its part was closed (it opens the next one).
    fn frame_again(&mut self, timed: Timed, now: Instant) -> Result<(), EgressError> {
        self.counters.frames -= 1;
        self.frame(timed.track, timed.frame, now)
    }

    /// The slot track `id` writes into, binding a free one of the same publisher, kind
    /// and codec if it has none.
    fn bind_slot(&mut self, id: u32) -> Option<u64> {
        let track = self.tracks.get(&id)?;
        let part = self.part.as_mut()?;
        if let Some(slot) = part.slots.iter().find(|s| s.track == Some(id)) {
            return Some(slot.number);
        }
        let slot = part.slots.iter_mut().find(|s| {
            s.track.is_none()
                && s.identity == track.info.identity
                && s.kind == track.info.kind
                && s.codec == track.codec
        })?;
        debug!(track = %track.info.track_sid, number = slot.number, "track continues a file track");
        slot.track = Some(id);
        slot.sids.push(track.info.track_sid.clone());
        slot.wants_keyframe = slot.kind == TrackKind::Video;
        Some(slot.number)
    }
}
