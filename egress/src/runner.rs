//! The life of one egress: a thread that takes the tap's packets, drives the recorder or
//! the RTP sender, and reports `Active` and `Ended`.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchboard_sfu::{TapEvent, TapHandle, TapReceiver, TapTrack};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::outdir::OutDir;
use crate::recorder::{codec_of, Counters, FileRecorder};
use crate::recorder_ogg::OggRecorder;
use crate::rtp_out::{sdp_document, RtpSender};
use crate::{naming, EgressError, EgressEvent, EgressSpec, EgressSummary, Output};

/// How often buffered packets are released and keyframe needs looked at.
const TICK: Duration = Duration::from_millis(40);

/// The node's egress capacity: at most `max` egress run at once, each on one thread, so
/// egress threads are bounded too. A slot is taken before anything of an egress exists (no
/// record, no tap, no directory) and given back when its thread has finished its work.
#[derive(Debug, Clone)]
pub struct EgressSlots {
    free: Arc<Semaphore>,
    max: usize,
}

/// One egress's share of [`EgressSlots`], held by its thread.
#[derive(Debug)]
pub struct EgressSlot(#[allow(dead_code)] OwnedSemaphorePermit);

impl EgressSlots {
    pub fn new(max: usize) -> Self {
        EgressSlots {
            free: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A slot, or `None` when `max` egress are running.
    pub fn try_take(&self) -> Option<EgressSlot> {
        Arc::clone(&self.free)
            .try_acquire_owned()
            .ok()
            .map(EgressSlot)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn in_use(&self) -> usize {
        self.max - self.free.available_permits()
    }
}

/// A started egress. Dropping it does not stop it; [`RunningEgress::stop`] does.
pub struct RunningEgress {
    pub egress_id: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RunningEgress {
    /// Asks the egress to write what it holds, close its files and report `Ended`.
    /// Calling it again does nothing.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the egress thread (after `stop`, or once it ended on its own).
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts an egress on its own thread, which holds `slot` until it is done. A bad output
/// (unwritable directory, a link below the egress root, RTP for a whole room) fails here,
/// before anything runs.
pub fn start(
    spec: EgressSpec,
    slot: EgressSlot,
    tap: TapHandle,
    receiver: TapReceiver,
    events: mpsc::UnboundedSender<EgressEvent>,
) -> Result<RunningEgress, EgressError> {
    let stem = naming::file_stem(&spec.room, spec.session_id.as_deref(), &spec.egress_id);
    let sink = match &spec.output {
        Output::File { root, subdir } => {
            let dir = OutDir::open(root, subdir)?;
            dir.probe(&spec.egress_id)?;
            Sink::File(FileRecorder::new(dir, stem))
        }
        Output::Rtp { target, sdp_dir } => {
            if spec.track_sid.is_none() {
                return Err(EgressError::RtpNeedsTrack);
            }
            let dir = OutDir::open(sdp_dir, Path::new(""))?;
            dir.probe(&spec.egress_id)?;
            Sink::Rtp(RtpOut {
                target: *target,
                sdp_name: format!("{stem}.sdp"),
                dir,
                title: format!("Switchboard egress {}", spec.egress_id),
                sender: None,
                track: None,
                sdp: None,
            })
        }
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let egress_id = spec.egress_id.clone();
    let thread = std::thread::Builder::new()
        .name(format!("egress-{}", spec.egress_id))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = events.send(EgressEvent::Ended {
                        egress_id: spec.egress_id.clone(),
                        summary: EgressSummary::default(),
                        error: Some(EgressError::Thread(e.to_string())),
                    });
                    return;
                }
            };
            let run = Run {
                spec,
                tap,
                receiver,
                events,
                sink,
                active_sent: false,
            };
            runtime.block_on(run.run(stop_rx));
            drop(runtime);
            // Last: the slot frees only when this egress's work is over.
            drop(slot);
        })
        .map_err(|e| EgressError::Thread(e.to_string()))?;
    Ok(RunningEgress {
        egress_id,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// The RTP sender of an RTP egress, made when its track's codec is known.
struct RtpOut {
    target: SocketAddr,
    dir: OutDir,
    sdp_name: String,
    title: String,
    sender: Option<RtpSender>,
    track: Option<u32>,
    sdp: Option<String>,
}

enum Sink {
    File(FileRecorder),
    /// A track egress of an Opus track (decided when the track starts).
    Ogg(Box<OggRecorder>),
    Rtp(RtpOut),
}

impl Sink {
    fn wrote_media(&self) -> bool {
        match self {
            Sink::File(recorder) => recorder.wrote_media,
            Sink::Ogg(recorder) => recorder.wrote_media,
            Sink::Rtp(out) => out.sender.as_ref().is_some_and(|s| s.sent_any),
        }
    }
}

struct Run {
    spec: EgressSpec,
    tap: TapHandle,
    receiver: TapReceiver,
    events: mpsc::UnboundedSender<EgressEvent>,
    sink: Sink,
    active_sent: bool,
}

impl Run {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut error = None;
        loop {
            let step = tokio::select! {
                _ = &mut stop => break,
                event = self.receiver.recv() => match event {
                    // The media plane stopped (server shutdown): keep what was recorded.
                    None => break,
                    Some(event) => self.event(event),
                },
                _ = tick.tick() => self.tick(),
            };
            match step {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
            if !self.active_sent && self.sink.wrote_media() {
                self.active_sent = true;
                let sdp = match &self.sink {
                    Sink::Rtp(out) => out.sdp.clone(),
                    Sink::File(_) | Sink::Ogg(_) => None,
                };
                let _ = self.events.send(EgressEvent::Active {
                    egress_id: self.spec.egress_id.clone(),
                    sdp,
                });
            }
        }
        self.finish(error);
    }

    /// Handles one tap event; `Ok(false)` ends the egress.
    fn event(&mut self, event: TapEvent) -> Result<bool, EgressError> {
        let now = Instant::now();
        match (&mut self.sink, event) {
            (Sink::File(recorder), TapEvent::TrackStarted(track))
                if self.spec.track_sid.is_some() && track.codec.name == "opus" =>
            {
                let ogg = OggRecorder::new(&recorder.dir, &recorder.stem, track);
                self.sink = Sink::Ogg(Box::new(ogg));
                Ok(true)
            }
            (Sink::Ogg(recorder), TapEvent::Rtp { packet, .. }) => {
                recorder.packet(packet, now)?;
                Ok(true)
            }
            (Sink::Ogg(_), TapEvent::TrackEnded { .. }) => Ok(false),
            (Sink::Ogg(_), TapEvent::TrackStarted(_)) => Ok(true),
            (Sink::File(recorder), TapEvent::TrackStarted(track)) => {
                if let Err(e) = recorder.track_started(track) {
                    // A room records what it can; a single track that cannot be recorded
                    // is this egress's end.
                    if self.spec.track_sid.is_some() {
                        return Err(e);
                    }
                    warn!(egress = %self.spec.egress_id, "{e}");
                }
                Ok(true)
            }
            (Sink::File(recorder), TapEvent::Rtp { track, packet }) => {
                recorder.packet(track, packet, now)?;
                Ok(true)
            }
            (Sink::File(recorder), TapEvent::TrackEnded { track }) => {
                recorder.track_ended(track, now)?;
                Ok(self.spec.track_sid.is_none())
            }
            (Sink::Rtp(out), TapEvent::TrackStarted(track)) => {
                rtp_started(out, &track)?;
                Ok(true)
            }
            (Sink::Rtp(out), TapEvent::Rtp { track, packet }) => {
                if out.track == Some(track) {
                    if let Some(sender) = out.sender.as_mut() {
                        sender.packet(packet, now)?;
                    }
                }
                Ok(true)
            }
            (Sink::Rtp(_), TapEvent::TrackEnded { .. }) => Ok(false),
        }
    }

    fn tick(&mut self) -> Result<bool, EgressError> {
        let now = Instant::now();
        let wanted = match &mut self.sink {
            Sink::File(recorder) => recorder.tick(now)?,
            Sink::Ogg(recorder) => {
                recorder.tick(now)?;
                Vec::new()
            }
            Sink::Rtp(out) => {
                let mut wanted = Vec::new();
                if let (Some(sender), Some(track)) = (out.sender.as_mut(), out.track) {
                    sender.release(now, false)?;
                    if std::mem::take(&mut sender.wants_keyframe) {
                        wanted.push(track);
                    }
                }
                wanted
            }
        };
        for track in wanted {
            // A stopped worker ends the tap too; the receive side notices.
            let _ = self.tap.request_keyframe(track);
        }
        Ok(true)
    }

    fn finish(self, mut error: Option<EgressError>) {
        let now = Instant::now();
        let dropped = self.receiver.dropped();
        let mut summary = EgressSummary {
            packets_dropped: dropped,
            ..Default::default()
        };
        let counters: Counters;
        let file_sink = !matches!(self.sink, Sink::Rtp(_));
        match self.sink {
            Sink::File(recorder) => {
                let (files, c, failed) = recorder.finish(now);
                counters = c;
                error = error.or(failed);
                summary.files = files;
            }
            Sink::Ogg(recorder) => {
                let (files, c, failed) = (*recorder).finish(now);
                counters = c;
                error = error.or(failed);
                summary.files = files;
            }
            Sink::Rtp(mut out) => {
                counters = match out.sender.as_mut() {
                    Some(sender) => {
                        if let Err(e) = sender.release(now, true) {
                            error.get_or_insert(e);
                        }
                        summary.bytes = sender.bytes;
                        sender.counters
                    }
                    None => Counters::default(),
                };
                summary.sdp = out.sdp.clone();
                if !out.sender.as_ref().is_some_and(|s| s.sent_any) && error.is_none() {
                    error = Some(match &self.spec.track_sid {
                        Some(sid) if out.track.is_some() => EgressError::TrackGone(sid.clone()),
                        _ => EgressError::NoMedia,
                    });
                }
            }
        }
        if file_sink && summary.files.is_empty() && error.is_none() {
            error = Some(match &self.spec.track_sid {
                Some(sid) => EgressError::TrackGone(sid.clone()),
                None => EgressError::NoMedia,
            });
        }
        summary.packets = counters.packets;
        summary.packets_lost = counters.packets_lost;
        summary.frames = counters.frames;
        if !summary.files.is_empty() {
            summary.bytes = summary.files.iter().map(|f| f.bytes).sum();
            summary.duration_ms = summary.files.iter().map(|f| f.duration_ms).sum();
            summary.frames = summary.files.iter().map(|f| f.frames).sum();
        }
        let _ = self.events.send(EgressEvent::Ended {
            egress_id: self.spec.egress_id.clone(),
            summary,
            error,
        });
    }
}

/// The RTP egress's track started: bind the sender and write the SDP document.
fn rtp_started(out: &mut RtpOut, track: &TapTrack) -> Result<(), EgressError> {
    if out.track.is_some() {
        return Ok(());
    }
    if codec_of(&track.codec.name).is_none() && track.codec.name != "av1" {
        return Err(EgressError::UnsupportedCodec {
            track: track.track_sid.clone(),
            codec: track.codec.name.clone(),
        });
    }
    let sdp = sdp_document(out.target, track.kind, &track.codec, &out.title);
    let sdp_path: PathBuf = out.dir.path().join(&out.sdp_name);
    let write_error = |e: std::io::Error| EgressError::Write {
        path: sdp_path.display().to_string(),
        reason: e.to_string(),
    };
    let mut file = out
        .dir
        .create(OsStr::new(&out.sdp_name))
        .map_err(write_error)?;
    std::io::Write::write_all(&mut file, sdp.as_bytes()).map_err(write_error)?;
    // Any SSRC will do; deriving it from the track keeps restarts distinguishable.
    let ssrc = track
        .track_sid
        .bytes()
        .fold(0x5b0a_0000u32, |h, b| h.rotate_left(5) ^ u32::from(b));
    out.sender = Some(RtpSender::new(out.target, track.kind, ssrc)?);
    out.track = Some(track.id);
    out.sdp = Some(sdp);
    Ok(())
}
