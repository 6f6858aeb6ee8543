//! In-process egress: starting and stopping recordings and RTP restreams, and recording
//! what they report (status, files, sizes) on their egress rows, which moves broadcast
//! sessions along (PUBLISHING → LIVE on the first media, ENDING → STOPPED when the file is
//! finalized).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_egress::{EgressEvent, EgressSlots, EgressSpec, Output, RunningEgress};
use switchboard_sfu::{Sfu, SfuError, TapScope};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::sessions::EgressReport;
use super::{new_id, now, Control, ControlError};
use crate::store::{EgressRecord, EgressStatus, EgressUpdate, NewEgress};

/// Where an egress writes, as API requests give it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum OutputRequest {
    /// Files in the server's egress directory, or in a subdirectory of it.
    File {
        #[serde(default)]
        directory: Option<String>,
    },
    /// Plain RTP of one track to a UDP address.
    Rtp { host: String, port: u16 },
}

impl Default for OutputRequest {
    fn default() -> Self {
        OutputRequest::File { directory: None }
    }
}

/// `POST /v1/egress`: what to record.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRequest {
    pub room_id: String,
    /// One track; without it, the whole room.
    #[serde(default)]
    pub track_sid: Option<String>,
    #[serde(default)]
    pub output: OutputRequest,
}

/// The running egresses of this process and what they need.
pub struct EgressRuntime {
    sfu: Arc<Sfu>,
    root: PathBuf,
    /// At most `max_egress` run at once (one thread each).
    slots: EgressSlots,
    running: Mutex<HashMap<String, RunningEgress>>,
    events: mpsc::UnboundedSender<EgressEvent>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<EgressEvent>>>,
    /// Wakes whoever waits for the running set to drain (shutdown).
    drained: watch::Sender<usize>,
}

impl EgressRuntime {
    pub fn new(sfu: Arc<Sfu>, root: PathBuf, max_egress: usize) -> Self {
        let (events, receiver) = mpsc::unbounded_channel();
        Self {
            sfu,
            root,
            slots: EgressSlots::new(max_egress),
            running: Mutex::new(HashMap::new()),
            events,
            receiver: Mutex::new(Some(receiver)),
            drained: watch::channel(0).0,
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningEgress>> {
        // A panic while holding this lock leaves a plain map behind: still usable.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses a requested subdirectory that is not inside the egress root.
    pub(crate) fn check_directory(&self, requested: Option<&str>) -> Result<(), ControlError> {
        self.directory(requested).map(drop)
    }

    /// A requested subdirectory, relative to the egress root; `..` and absolute paths are
    /// refused so an API caller cannot write elsewhere on the server, and control characters
    /// so it cannot forge a log line. (Links below the root are refused when the egress
    /// opens it: switchboard-egress walks it without following them.)
    fn directory(&self, requested: Option<&str>) -> Result<PathBuf, ControlError> {
        let Some(requested) = requested.filter(|d| !d.is_empty()) else {
            return Ok(PathBuf::new());
        };
        if requested.chars().any(char::is_control) {
            return Err(ControlError::BadRequest(format!(
                "output directory {requested:?} contains control characters"
            )));
        }
        let path = Path::new(requested);
        if !path.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(ControlError::BadRequest(format!(
                "output directory {requested:?} must be a relative path inside the server's egress directory, without `..`"
            )));
        }
        Ok(path.to_path_buf())
    }
}

/// The stored description of an output, plus what the egress reported.
fn output_json(output: &Output, track_sid: Option<&str>) -> Value {
    match output {
        Output::File { root, subdir } => {
            json!({ "type": "file", "directory": root.join(subdir), "track_sid": track_sid })
        }
        Output::Rtp { target, .. } => {
            json!({ "type": "rtp", "target": target.to_string(), "track_sid": track_sid })
        }
    }
}

fn merged(base: &Value, extra: Value) -> Value {
    let mut out = base.clone();
    if let (Some(out), Value::Object(extra)) = (out.as_object_mut(), extra) {
        out.extend(extra);
    }
    out
}

impl Control {
    /// Starts an egress: checks the request, taps the media plane, records the egress
    /// (starting) and runs it. An output that cannot be written fails the egress at once
    /// (recorded as failed, and its session told).
    pub async fn start_egress(
        &self,
        request: EgressRequest,
        session_id: Option<String>,
    ) -> Result<EgressRecord, ControlError> {
        let runtime = &self.egress;
        self.check_room_id(&request.room_id)?;
        if let OutputRequest::File { directory } = &request.output {
            runtime.check_directory(directory.as_deref())?;
        }
        // Before anything of the egress exists (tap, record, directory), so a refused one
        // leaves nothing behind.
        let slot = runtime.slots.try_take().ok_or_else(|| ControlError::Busy {
            detail: format!(
                "this node is already running its maximum of {} egress (limit max_egress); \
                 stop one or retry later",
                runtime.slots.max()
            ),
            retry_after_secs: 10,
        })?;
        let output = match &request.output {
            OutputRequest::File { directory } => Output::File {
                root: runtime.root.clone(),
                subdir: runtime.directory(directory.as_deref())?,
            },
            OutputRequest::Rtp { host, port } => {
                if request.track_sid.is_none() {
                    return Err(ControlError::BadRequest(
                        "an RTP egress sends one track: give track_sid".into(),
                    ));
                }
                let target = resolve_target(host, *port).await?;
                Output::Rtp {
                    target,
                    sdp_dir: runtime.root.clone(),
                }
            }
        };
        let scope = match &request.track_sid {
            Some(sid) => TapScope::Track(sid.clone()),
            None => TapScope::Room,
        };
        let (tap, receiver) =
            runtime
                .sfu
                .tap(&request.room_id, scope)
                .await
                .map_err(|e| match e {
                    SfuError::UnknownTrack(sid) => ControlError::NotFound(format!(
                        "track {sid} is not published in room {}",
                        request.room_id
                    )),
                    other => ControlError::Conflict(format!("the media plane refused: {other}")),
                })?;
        let kind = match (&request.track_sid, &output) {
            (_, Output::Rtp { .. }) => "rtp",
            (Some(_), _) => "track",
            (None, _) => "room",
        };
        let egress_id = new_id("eg");
        let record = self
            .store
            .create_egress(&NewEgress {
                egress_id: egress_id.clone(),
                session_id: session_id.clone(),
                room_id: request.room_id.clone(),
                kind: kind.into(),
                output: output_json(&output, request.track_sid.as_deref()),
                at: now(),
                node_id: Some(self.node_id.clone()),
            })
            .await?;
        self.written();
        let spec = EgressSpec {
            egress_id: egress_id.clone(),
            room: request.room_id.clone(),
            session_id,
            track_sid: request.track_sid.clone(),
            output,
        };
        match switchboard_egress::start(spec, slot, tap, receiver, runtime.events.clone()) {
            Ok(running) => {
                info!(%egress_id, room = %request.room_id, kind, "egress started");
                runtime.running().insert(egress_id, running);
                let count = runtime.running().len();
                runtime.drained.send_replace(count);
                Ok(record)
            }
            Err(e) => {
                warn!(%egress_id, "egress failed to start: {e}");
                self.egress_reported(
                    &egress_id,
                    EgressReport {
                        status: EgressStatus::Failed,
                        error: Some(e.to_string()),
                        output: None,
                    },
                )
                .await
            }
        }
    }

    /// `POST /v1/egress/{id}/stop`: asks a running egress to finish its files. Stopping
    /// one that already ended returns it as it is.
    pub async fn stop_egress(&self, egress_id: &str) -> Result<EgressRecord, ControlError> {
        let record = self.store.get_egress(egress_id).await?;
        if record.status.is_terminal() {
            return Ok(record);
        }
        let record = if record.status == EgressStatus::Ending {
            record
        } else {
            let updated = self
                .store
                .update_egress(
                    egress_id,
                    &EgressUpdate {
                        status: EgressStatus::Ending,
                        error: None,
                        output: None,
                        at: now(),
                    },
                )
                .await;
            self.written();
            match updated {
                Ok(record) => record,
                // It ended meanwhile.
                Err(crate::store::StoreError::Conflict { .. }) => {
                    return Ok(self.store.get_egress(egress_id).await?)
                }
                Err(e) => return Err(e.into()),
            }
        };
        if !self.stop_runner(egress_id) {
            // Not running here (an external egress worker, or a process that is gone):
            // nothing will finalize it, so it ends now.
            return self
                .egress_reported(
                    egress_id,
                    EgressReport {
                        status: EgressStatus::Complete,
                        error: None,
                        output: None,
                    },
                )
                .await;
        }
        Ok(record)
    }

    /// Asks the in-process egress to stop, if it runs here. True when it does.
    pub(crate) fn stop_runner(&self, egress_id: &str) -> bool {
        match self.egress.running().get_mut(egress_id) {
            Some(running) => {
                running.stop();
                true
            }
            None => false,
        }
    }

    /// Records what running egresses report, until `stop`.
    pub async fn run_egress_events(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let receiver = self
            .egress
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(mut receiver) = receiver else {
            warn!("the egress event loop is already running");
            return;
        };
        loop {
            tokio::select! {
                event = receiver.recv() => match event {
                    Some(event) => self.egress_event(event).await,
                    None => return,
                },
                _ = stop.changed() => return,
            }
        }
    }

    async fn egress_event(&self, event: EgressEvent) {
        let (egress_id, report) = match event {
            EgressEvent::Active { egress_id, sdp } => {
                let output = match (sdp, self.store.get_egress(&egress_id).await) {
                    (Some(sdp), Ok(record)) => Some(merged(&record.output, json!({ "sdp": sdp }))),
                    _ => None,
                };
                let report = EgressReport {
                    status: EgressStatus::Active,
                    error: None,
                    output,
                };
                (egress_id, report)
            }
            EgressEvent::Ended {
                egress_id,
                summary,
                error,
            } => {
                let output = match self.store.get_egress(&egress_id).await {
                    Ok(record) => Some(merged(&record.output, json!({ "result": summary }))),
                    Err(_) => None,
                };
                let report = EgressReport {
                    status: if error.is_some() {
                        EgressStatus::Failed
                    } else {
                        EgressStatus::Complete
                    },
                    error: error.map(|e| e.to_string()),
                    output,
                };
                // The thread is on its way out after sending Ended: dropping its handle
                // detaches it (no thread is spent waiting for it).
                drop(self.egress.running().remove(&egress_id));
                (egress_id, report)
            }
        };
        let status = report.status;
        match self.egress_reported(&egress_id, report).await {
            Ok(_) => info!(%egress_id, %status, "egress reported"),
            // Ended another way first (session cancelled, room deleted): keep that record.
            Err(ControlError::Conflict(_)) => {}
            Err(e) => warn!(%egress_id, "could not record the egress report: {e}"),
        }
        let count = self.egress.running().len();
        self.egress.drained.send_replace(count);
    }

    /// Shutdown: every running egress finalizes its files and is recorded, within `grace`.
    pub async fn stop_all_egress(&self, grace: Duration) {
        let ids: Vec<String> = self.egress.running().keys().cloned().collect();
        if ids.is_empty() {
            return;
        }
        info!(count = ids.len(), "finishing running egress");
        for id in &ids {
            let _ = self.stop_egress(id).await;
        }
        let mut drained = self.egress.drained.subscribe();
        let _ = tokio::time::timeout(grace, drained.wait_for(|n| *n == 0)).await;
    }
}

async fn resolve_target(host: &str, port: u16) -> Result<SocketAddr, ControlError> {
    if port == 0 {
        return Err(ControlError::BadRequest(
            "the RTP port must not be 0".into(),
        ));
    }
    let mut addrs = tokio::net::lookup_host((host, port)).await.map_err(|e| {
        ControlError::BadRequest(format!("cannot resolve the RTP host {host:?}: {e}"))
    })?;
    addrs
        .next()
        .ok_or_else(|| ControlError::BadRequest(format!("the RTP host {host:?} has no address")))
}
