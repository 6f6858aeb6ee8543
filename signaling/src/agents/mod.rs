//! LiveKit Agents: workers built with `livekit-agents` register over the `/agent` WebSocket
//! (`worker.rs`), and rooms get agents dispatched into them — automatically when a room
//! starts (workers registered without an agent name, or the agents a join token's
//! `roomConfig` names) or explicitly through AgentDispatchService. A dispatch offers a job
//! to a matching worker (AvailabilityRequest), and an accepting worker gets a join token of
//! kind `agent` for the room (JobAssignment); the agent then joins over `/rtc` like anyone.
//!
//! Bounded: [`MAX_WORKERS`] registered workers, [`MAX_DISPATCHES_PER_ROOM`] dispatches per
//! room (those of closed rooms are dropped), [`WORKER_QUEUE`] messages queued to a worker.

mod dispatch;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use livekit_protocol as proto;
use tokio::sync::{mpsc, oneshot};

pub(crate) use worker::router;

/// Workers registered at once; one more is refused at registration.
pub const MAX_WORKERS: usize = 256;
/// Dispatches a room may have; one more is refused (CreateDispatch answers
/// resource_exhausted).
pub const MAX_DISPATCHES_PER_ROOM: usize = 16;
/// Messages queued to one worker; a worker that does not read them is skipped.
pub(crate) const WORKER_QUEUE: usize = 64;

/// Why a dispatch request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("room {room:?} already has {max} agent dispatches; delete one first")]
    TooManyDispatches { room: String, max: usize },
    #[error("room {room:?} has no agent dispatch {dispatch_id:?}")]
    NoSuchDispatch { room: String, dispatch_id: String },
    #[error("the agent name is {len} bytes; at most {max} are accepted")]
    NameTooLong { len: usize, max: usize },
    #[error("the dispatch metadata is {len} bytes; at most {max} are accepted")]
    MetadataTooLarge { len: usize, max: usize },
}

/// Longest agent name accepted (a worker's or a dispatch's).
pub(crate) const MAX_AGENT_NAME: usize = 128;
/// Largest dispatch metadata accepted (it travels in every job offer).
pub(crate) const MAX_DISPATCH_METADATA: usize = 64 * 1024;

/// A registered worker.
pub(crate) struct Worker {
    pub agent_name: String,
    pub job_type: i32,
    /// What its agents may do in rooms (the permissions it registered with).
    pub permissions: proto::ParticipantPermission,
    /// The API key it authenticated with: its agents' join tokens are signed with it.
    pub api_key: String,
    /// WS_AVAILABLE unless it said it is full.
    pub available: bool,
    pub load: f32,
    pub tx: mpsc::Sender<proto::ServerMessage>,
}

#[derive(Default)]
struct State {
    workers: HashMap<String, Worker>,
    /// Dispatches by room name.
    dispatches: HashMap<String, Vec<proto::AgentDispatch>>,
    /// Job offers waiting for the worker's AvailabilityResponse, by job id.
    offers: HashMap<String, oneshot::Sender<proto::AvailabilityResponse>>,
    /// Which worker runs each assigned job, for termination.
    job_workers: HashMap<String, String>,
}

/// The registry of workers and dispatches.
#[derive(Default)]
pub(crate) struct Agents {
    state: Mutex<State>,
}

impl Agents {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a worker; `None` when [`MAX_WORKERS`] are registered.
    pub(crate) fn register(&self, id: String, worker: Worker) -> Option<()> {
        let mut state = self.lock();
        if state.workers.len() >= MAX_WORKERS {
            return None;
        }
        state.workers.insert(id, worker);
        metrics::gauge!("switchboard_agent_workers").set(state.workers.len() as f64);
        Some(())
    }

    pub(crate) fn unregister(&self, id: &str) {
        let mut state = self.lock();
        state.workers.remove(id);
        state.job_workers.retain(|_, w| w != id);
        metrics::gauge!("switchboard_agent_workers").set(state.workers.len() as f64);
    }

    pub(crate) fn worker_status(&self, id: &str, available: bool, load: f32) {
        if let Some(worker) = self.lock().workers.get_mut(id) {
            worker.available = available;
            worker.load = load;
        }
    }

    /// Whether a worker without an agent name is registered (rooms then get one
    /// automatically).
    pub(crate) fn has_unnamed_worker(&self) -> bool {
        self.lock()
            .workers
            .values()
            .any(|w| w.agent_name.is_empty())
    }

    /// A worker answered a job offer.
    pub(crate) fn answered(&self, answer: proto::AvailabilityResponse) {
        if let Some(waiting) = self.lock().offers.remove(&answer.job_id) {
            let _ = waiting.send(answer);
        }
    }

    /// A worker reported a job's status: it goes in the job's dispatch.
    pub(crate) fn job_status(&self, update: &proto::UpdateJobStatus) {
        let mut state = self.lock();
        for dispatch in state.dispatches.values_mut().flatten() {
            let Some(job_state) = dispatch
                .state
                .as_mut()
                .and_then(|s| s.jobs.iter_mut().find(|j| j.id == update.job_id))
                .and_then(|j| j.state.as_mut())
            else {
                continue;
            };
            job_state.status = update.status;
            job_state.error = update.error.clone();
            let now = now_ns();
            if update.status == proto::JobStatus::JsRunning as i32 && job_state.started_at == 0 {
                job_state.started_at = now;
            }
            let ended = update.status == proto::JobStatus::JsSuccess as i32
                || update.status == proto::JobStatus::JsFailed as i32;
            if ended {
                job_state.ended_at = now;
                // An ended job needs no termination: its worker entry goes.
                state.job_workers.remove(&update.job_id);
            }
            return;
        }
    }

    /// The dispatches of `room`, or only `dispatch_id` when given.
    pub(crate) fn list(&self, room: &str, dispatch_id: &str) -> Vec<proto::AgentDispatch> {
        self.lock()
            .dispatches
            .get(room)
            .map(|all| {
                all.iter()
                    .filter(|d| dispatch_id.is_empty() || d.id == dispatch_id)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes a dispatch; its running jobs are told to end (JobTermination).
    pub(crate) fn delete(
        &self,
        room: &str,
        dispatch_id: &str,
    ) -> Result<proto::AgentDispatch, AgentError> {
        let mut state = self.lock();
        let missing = || AgentError::NoSuchDispatch {
            room: room.to_owned(),
            dispatch_id: dispatch_id.to_owned(),
        };
        let list = state.dispatches.get_mut(room).ok_or_else(missing)?;
        let pos = list
            .iter()
            .position(|d| d.id == dispatch_id)
            .ok_or_else(missing)?;
        let mut dispatch = list.remove(pos);
        if list.is_empty() {
            state.dispatches.remove(room);
        }
        let jobs: Vec<String> = dispatch
            .state
            .iter()
            .flat_map(|s| s.jobs.iter().map(|j| j.id.clone()))
            .collect();
        for job_id in jobs {
            let Some(worker) = state.job_workers.remove(&job_id) else {
                continue;
            };
            if let Some(w) = state.workers.get(&worker) {
                let message =
                    proto::server_message::Message::Termination(proto::JobTermination { job_id });
                let _ = w.tx.try_send(proto::ServerMessage {
                    message: Some(message),
                });
            }
        }
        if let Some(s) = dispatch.state.as_mut() {
            s.deleted_at = now_ns();
        }
        Ok(dispatch)
    }

    /// Records a new dispatch for `room`, dropping those of rooms no longer open.
    fn add(
        &self,
        dispatch: proto::AgentDispatch,
        live: impl Fn(&str) -> bool,
    ) -> Result<(), AgentError> {
        let mut state = self.lock();
        state.dispatches.retain(|room, _| live(room));
        let list = state.dispatches.entry(dispatch.room.clone()).or_default();
        if list.len() >= MAX_DISPATCHES_PER_ROOM {
            return Err(AgentError::TooManyDispatches {
                room: dispatch.room,
                max: MAX_DISPATCHES_PER_ROOM,
            });
        }
        list.push(dispatch);
        Ok(())
    }

    /// Adds `job` to its dispatch's state.
    fn job_created(&self, job: &proto::Job) {
        let mut state = self.lock();
        let Some(dispatch) = state
            .dispatches
            .get_mut(job.room.as_ref().map_or("", |r| r.name.as_str()))
            .and_then(|list| list.iter_mut().find(|d| d.id == job.dispatch_id))
        else {
            return;
        };
        dispatch
            .state
            .get_or_insert_with(Default::default)
            .jobs
            .push(job.clone());
    }

    /// Workers that may take a job of `agent_name`, least loaded first: (id, queue).
    fn candidates(&self, agent_name: &str) -> Vec<(String, mpsc::Sender<proto::ServerMessage>)> {
        let state = self.lock();
        let mut found: Vec<(&String, &Worker)> = state
            .workers
            .iter()
            .filter(|(_, w)| {
                w.available
                    && w.agent_name == agent_name
                    && w.job_type == proto::JobType::JtRoom as i32
            })
            .collect();
        found.sort_by(|a, b| a.1.load.total_cmp(&b.1.load));
        found
            .into_iter()
            .map(|(id, w)| (id.clone(), w.tx.clone()))
            .collect()
    }

    /// Waits for the answer to the job offer `job_id` (registered before it is sent).
    fn expect_answer(&self, job_id: &str) -> oneshot::Receiver<proto::AvailabilityResponse> {
        let (tx, rx) = oneshot::channel();
        self.lock().offers.insert(job_id.to_owned(), tx);
        rx
    }

    fn forget_offer(&self, job_id: &str) {
        self.lock().offers.remove(job_id);
    }

    /// The worker `id`'s permissions and API key, while it is registered.
    fn worker_grants(&self, id: &str) -> Option<(proto::ParticipantPermission, String)> {
        self.lock()
            .workers
            .get(id)
            .map(|w| (w.permissions.clone(), w.api_key.clone()))
    }

    fn assigned(&self, job_id: &str, worker: &str) {
        self.lock()
            .job_workers
            .insert(job_id.to_owned(), worker.to_owned());
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

pub(crate) use dispatch::room_started;

/// AgentDispatchService, for the server's API.
impl crate::Signaling {
    /// Dispatches `agent_name` into the open room `room_id` (the caller opens it first).
    pub fn create_agent_dispatch(
        self: &Arc<Self>,
        room_id: &str,
        agent_name: String,
        metadata: String,
    ) -> Result<proto::AgentDispatch, DispatchError> {
        let live = self
            .live_room(room_id)
            .ok_or_else(|| crate::AdminError::RoomNotFound {
                room: room_id.to_owned(),
            })?;
        let room = proto::Room {
            sid: live.sid,
            name: live.room_id,
            metadata: live.metadata,
            ..Default::default()
        };
        Ok(dispatch::create_dispatch(
            self, &room, agent_name, metadata,
        )?)
    }

    /// The dispatches of `room_id` (only `dispatch_id`'s when given).
    pub fn agent_dispatches(&self, room_id: &str, dispatch_id: &str) -> Vec<proto::AgentDispatch> {
        self.agents.list(room_id, dispatch_id)
    }

    /// Deletes a dispatch; its agents are told to end their jobs.
    pub fn delete_agent_dispatch(
        &self,
        room_id: &str,
        dispatch_id: &str,
    ) -> Result<proto::AgentDispatch, AgentError> {
        self.agents.delete(room_id, dispatch_id)
    }
}

/// Why CreateDispatch was refused.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Room(#[from] crate::AdminError),
    #[error(transparent)]
    Agent(#[from] AgentError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(agent_name: &str) -> (Worker, mpsc::Receiver<proto::ServerMessage>) {
        let (tx, rx) = mpsc::channel(WORKER_QUEUE);
        let worker = Worker {
            agent_name: agent_name.into(),
            job_type: proto::JobType::JtRoom as i32,
            permissions: Default::default(),
            api_key: "devkey".into(),
            available: true,
            load: 0.0,
            tx,
        };
        (worker, rx)
    }

    fn dispatch(room: &str) -> proto::AgentDispatch {
        proto::AgentDispatch {
            id: crate::ids::dispatch_id(),
            room: room.into(),
            ..Default::default()
        }
    }

    #[test]
    fn workers_are_bounded() {
        let agents = Agents::default();
        let mut queues = Vec::new();
        for i in 0..MAX_WORKERS {
            let (w, rx) = worker("a");
            queues.push(rx);
            assert!(agents.register(format!("AW_{i}"), w).is_some());
        }
        assert!(agents.register("AW_over".into(), worker("a").0).is_none());
        agents.unregister("AW_0");
        assert!(agents.register("AW_again".into(), worker("a").0).is_some());
    }

    #[test]
    fn dispatches_are_bounded_per_room_and_dropped_with_their_room() {
        let agents = Agents::default();
        for _ in 0..MAX_DISPATCHES_PER_ROOM {
            agents.add(dispatch("r"), |_| true).unwrap();
        }
        assert!(matches!(
            agents.add(dispatch("r"), |_| true),
            Err(AgentError::TooManyDispatches { .. })
        ));
        // Room r closed: its dispatches go when the next one is recorded.
        agents.add(dispatch("s"), |room| room == "s").unwrap();
        assert!(agents.list("r", "").is_empty());
        assert_eq!(agents.list("s", "").len(), 1);
    }

    #[test]
    fn candidates_match_the_name_skip_full_workers_and_prefer_the_least_loaded() {
        let agents = Agents::default();
        let (busy, _a) = worker("notes");
        let (idle, _b) = worker("notes");
        let (other, _c) = worker("");
        agents.register("AW_busy".into(), busy);
        agents.register("AW_idle".into(), idle);
        agents.register("AW_other".into(), other);
        agents.worker_status("AW_busy", true, 0.9);
        agents.worker_status("AW_idle", true, 0.1);
        let ids: Vec<String> = agents
            .candidates("notes")
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(ids, ["AW_idle", "AW_busy"]);
        agents.worker_status("AW_idle", false, 0.1);
        let ids: Vec<String> = agents
            .candidates("notes")
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(ids, ["AW_busy"]);
        assert!(agents.has_unnamed_worker());
    }

    /// A registry with worker AW_1, a dispatch in room r, and its job AJ_1 assigned to AW_1;
    /// the worker's queue.
    fn one_assigned_job() -> (
        Agents,
        proto::AgentDispatch,
        mpsc::Receiver<proto::ServerMessage>,
    ) {
        let agents = Agents::default();
        let (w, rx) = worker("notes");
        agents.register("AW_1".into(), w);
        let d = dispatch("r");
        agents.add(d.clone(), |_| true).unwrap();
        let job = proto::Job {
            id: "AJ_1".into(),
            dispatch_id: d.id.clone(),
            room: Some(proto::Room {
                name: "r".into(),
                ..Default::default()
            }),
            state: Some(Default::default()),
            ..Default::default()
        };
        agents.job_created(&job);
        agents.assigned("AJ_1", "AW_1");
        (agents, d, rx)
    }

    #[test]
    fn deleting_a_dispatch_terminates_its_jobs() {
        let (agents, d, mut rx) = one_assigned_job();
        let deleted = agents.delete("r", &d.id).unwrap();
        assert_eq!(deleted.state.unwrap().jobs.len(), 1);
        match rx.try_recv().unwrap().message {
            Some(proto::server_message::Message::Termination(t)) => assert_eq!(t.job_id, "AJ_1"),
            other => panic!("expected a JobTermination, got {other:?}"),
        }
        assert!(matches!(
            agents.delete("r", &d.id),
            Err(AgentError::NoSuchDispatch { .. })
        ));
    }

    #[test]
    fn an_ended_job_is_forgotten_by_its_worker_and_not_terminated_again() {
        let (agents, d, mut rx) = one_assigned_job();
        agents.job_status(&proto::UpdateJobStatus {
            job_id: "AJ_1".into(),
            status: proto::JobStatus::JsSuccess as i32,
            error: String::new(),
        });
        assert!(agents.lock().job_workers.is_empty());
        let listed = agents.list("r", "");
        let state = listed[0].state.as_ref().unwrap().jobs[0]
            .state
            .clone()
            .unwrap();
        assert_eq!(state.status, proto::JobStatus::JsSuccess as i32);
        assert!(state.ended_at > 0);
        agents.delete("r", &d.id).unwrap();
        assert!(rx.try_recv().is_err(), "no termination for an ended job");
    }
}
