//! A track egress of an Opus track: Ogg Opus (RFC 7845), the format audio tools expect.
//! Pages are flushed about every second, so a crash loses little.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use switchboard_sfu::{TapPacket, TapTrack};

use crate::media::depacketize::Depacketizer;
use crate::media::jitter::{JitterBuffer, Released};
use crate::media::ogg::OggOpusWriter;
use crate::media::{Codec, RtpPacketIn};
use crate::outdir::OutDir;
use crate::recorder::{write_error, Counters, Finished};
use crate::timeline::Unwrapper;
use crate::{EgressError, FileSummary, TrackSummary};

const JITTER: Duration = Duration::from_millis(100);

pub(crate) struct OggRecorder {
    dir: OutDir,
    path: PathBuf,
    track: TapTrack,
    jitter: JitterBuffer,
    depacketizer: Depacketizer,
    writer: Option<OggOpusWriter<BufWriter<File>>>,
    rtp: Unwrapper,
    first: Option<i64>,
    pub counters: Counters,
    pub wrote_media: bool,
}

impl OggRecorder {
    pub fn new(dir: &OutDir, stem: &str, track: TapTrack) -> Self {
        Self {
            dir: dir.clone(),
            path: dir.path().join(format!("{stem}.ogg")),
            track,
            jitter: JitterBuffer::new(JITTER, 256),
            depacketizer: Depacketizer::new(Codec::Opus),
            writer: None,
            rtp: Unwrapper::default(),
            first: None,
            counters: Counters::default(),
            wrote_media: false,
        }
    }

    pub fn packet(&mut self, packet: TapPacket, now: Instant) -> Result<(), EgressError> {
        self.counters.packets += 1;
        self.jitter.push(RtpPacketIn::from(&packet), now);
        self.drain(now, false)
    }

    pub fn tick(&mut self, now: Instant) -> Result<(), EgressError> {
        self.drain(now, false)
    }

    fn drain(&mut self, now: Instant, flush: bool) -> Result<(), EgressError> {
        for released in self.jitter.release(now, flush) {
            let packet = match released {
                Released::Packet(packet) => packet,
                Released::Lost { count, .. } => {
                    self.counters.packets_lost += count;
                    continue;
                }
            };
            let Some(frame) = self.depacketizer.push(&packet) else {
                continue;
            };
            let ext = self.rtp.unwrap(frame.timestamp);
            let first = *self.first.get_or_insert(ext);
            // Opus in WebRTC runs on a 48 kHz clock, the granule position's clock too.
            let granule = u64::try_from(ext - first).unwrap_or(0);
            if self.writer.is_none() {
                let name = self.path.file_name().unwrap_or_default();
                let file = self
                    .dir
                    .create(name)
                    .map_err(|e| write_error(&self.path, e))?;
                let channels = self.track.codec.channels.unwrap_or(2);
                let serial = self.track.id ^ 0x5357_4244;
                let writer = OggOpusWriter::new(BufWriter::new(file), channels, serial)
                    .map_err(|e| write_error(&self.path, e))?;
                self.writer = Some(writer);
            }
            if let Some(writer) = self.writer.as_mut() {
                writer
                    .write_packet(&frame.data, granule)
                    .map_err(|e| write_error(&self.path, e))?;
                self.counters.frames += 1;
                self.wrote_media = true;
            }
        }
        Ok(())
    }

    pub fn finish(mut self, now: Instant) -> Finished {
        let drained = self.drain(now, true);
        let mut files = Vec::new();
        let mut error = drained.err();
        if let Some(writer) = self.writer.take() {
            match writer.finish() {
                Ok((_, stats)) => files.push(FileSummary {
                    path: self.path.display().to_string(),
                    bytes: stats.bytes,
                    duration_ms: stats.duration_ms,
                    frames: stats.frames,
                    tracks: vec![TrackSummary {
                        number: 1,
                        identity: self.track.identity.clone(),
                        track_sids: vec![self.track.track_sid.clone()],
                        kind: self.track.kind,
                        codec: "opus".into(),
                    }],
                }),
                Err(e) => {
                    error.get_or_insert(write_error(&self.path, e));
                }
            }
        }
        (files, self.counters, error)
    }
}
