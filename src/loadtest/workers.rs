//! The load generator's threads. Each runs a single-threaded runtime with one media
//! [`Driver`] for all its participants, joins them on schedule, and answers the
//! orchestrator's snapshot and leave requests.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use switchboard_client::{
    AudioConfig, Driver, Histogram, JoinOptions, Participant, ParticipantStats, VideoConfig,
};
use switchboard_signaling::token::{self, Claims};
use tokio::sync::{mpsc, oneshot};

/// What a participant does in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    VideoPublisher,
    AudioPublisher,
    Subscriber,
}

/// One participant to join: where, as whom, and when (from the start of the run).
#[derive(Debug, Clone)]
pub struct Plan {
    pub index: usize,
    pub room: String,
    pub identity: String,
    pub role: Role,
    pub at: Duration,
}

/// What every participant shares.
pub struct Shared {
    pub url: String,
    pub api_key: String,
    pub api_secret: String,
    pub video: VideoConfig,
    pub audio: AudioConfig,
    /// Video publishers publish audio too.
    pub video_with_audio: bool,
    /// Each subscriber's simulated downlink.
    pub subscriber_downlink: Option<switchboard_client::LinkCap>,
    /// UDP, or ICE-TCP for everyone (`--tcp`).
    pub transport: switchboard_client::Transport,
    pub seed: u64,
}

/// A finished join attempt.
pub struct JoinReport {
    pub index: usize,
    pub result: Result<(), String>,
}

/// One thread's view at an instant.
pub struct ThreadSnapshot {
    pub latency: Histogram<u64>,
    pub participants: Vec<(usize, ParticipantStats)>,
}

enum ThreadCmd {
    Snapshot {
        reset_latency: bool,
        reply: oneshot::Sender<ThreadSnapshot>,
    },
    Leave {
        reply: oneshot::Sender<Vec<(usize, ParticipantStats)>>,
    },
}

pub struct Worker {
    pub driver: Driver,
    commands: mpsc::UnboundedSender<ThreadCmd>,
    thread: Option<JoinHandle<()>>,
}

/// How long one join may take before it counts as failed.
const JOIN_TIMEOUT: Duration = Duration::from_secs(15);

impl Worker {
    /// Starts a thread that joins `plans` at `start + plan.at` and reports each join.
    pub fn spawn(
        number: usize,
        plans: Vec<Plan>,
        shared: Arc<Shared>,
        start: Instant,
        reports: mpsc::UnboundedSender<JoinReport>,
    ) -> anyhow::Result<Worker> {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (driver_tx, driver_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("loadtest-{number}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        eprintln!("loadtest thread {number}: cannot start a runtime: {e}");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let driver = Driver::spawn();
                    let _ = driver_tx.send(driver.clone());
                    run(driver, plans, shared, start, reports, command_rx).await;
                });
            })
            .context("cannot start a load generator thread")?;
        let driver = driver_rx
            .recv()
            .context("a load generator thread stopped at its start")?;
        Ok(Worker {
            driver,
            commands,
            thread: Some(thread),
        })
    }

    pub async fn snapshot(&self, reset_latency: bool) -> anyhow::Result<ThreadSnapshot> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(ThreadCmd::Snapshot {
                reset_latency,
                reply,
            })
            .ok()
            .context("a load generator thread stopped")?;
        rx.await.context("a load generator thread stopped")
    }

    /// Everyone on this thread leaves; returns their final stats.
    pub async fn leave(&mut self) -> Vec<(usize, ParticipantStats)> {
        let (reply, rx) = oneshot::channel();
        let _ = self.commands.send(ThreadCmd::Leave { reply });
        rx.await.unwrap_or_default()
    }

    pub fn join_thread(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn run(
    driver: Driver,
    plans: Vec<Plan>,
    shared: Arc<Shared>,
    start: Instant,
    reports: mpsc::UnboundedSender<JoinReport>,
    mut commands: mpsc::UnboundedReceiver<ThreadCmd>,
) {
    let (joined_tx, mut joined) = mpsc::unbounded_channel();
    for plan in plans {
        let (driver, shared, reports, joined_tx) = (
            driver.clone(),
            Arc::clone(&shared),
            reports.clone(),
            joined_tx.clone(),
        );
        tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(start + plan.at)).await;
            let index = plan.index;
            let result = join(&plan, &shared, driver).await;
            let report = match result {
                Ok(participant) => {
                    let _ = joined_tx.send((index, participant));
                    Ok(())
                }
                Err(e) => Err(format!("{e:#}")),
            };
            let _ = reports.send(JoinReport {
                index,
                result: report,
            });
        });
    }
    drop(joined_tx);
    let mut participants: Vec<(usize, Participant)> = Vec::new();
    loop {
        tokio::select! {
            Some(entry) = joined.recv() => participants.push(entry),
            command = commands.recv() => match command {
                Some(ThreadCmd::Snapshot { reset_latency, reply }) => {
                    let mut stats = Vec::with_capacity(participants.len());
                    for (index, participant) in &participants {
                        if let Ok(s) = participant.stats().await {
                            stats.push((*index, s));
                        }
                    }
                    let latency = match driver.latency(reset_latency).await {
                        Ok(latency) => latency,
                        Err(_) => switchboard_client::new_latency_histogram(),
                    };
                    let _ = reply.send(ThreadSnapshot { latency, participants: stats });
                }
                Some(ThreadCmd::Leave { reply }) => {
                    // All at once: each leave waits for its own WebSocket close.
                    let leaving: Vec<_> = participants
                        .drain(..)
                        .map(|(index, p)| {
                            tokio::spawn(async move { p.leave().await.ok().map(|s| (index, s)) })
                        })
                        .collect();
                    let mut stats = Vec::with_capacity(leaving.len());
                    for task in leaving {
                        if let Ok(Some(entry)) = task.await {
                            stats.push(entry);
                        }
                    }
                    let _ = reply.send(stats);
                    return;
                }
                None => return,
            },
        }
    }
}

/// Mints the participant's token and joins; the join time starts before the token.
async fn join(plan: &Plan, shared: &Shared, driver: Driver) -> anyhow::Result<Participant> {
    let started = Instant::now();
    let claims = Claims::for_join(
        shared.api_key.clone(),
        plan.identity.clone(),
        plan.room.clone(),
        Duration::from_secs(6 * 3600),
    );
    let jwt = token::issue(&shared.api_key, &shared.api_secret, &claims)
        .context("cannot sign a join token")?;
    let options = JoinOptions {
        driver: Some(driver),
        video: (plan.role == Role::VideoPublisher).then(|| shared.video.clone()),
        audio: (plan.role == Role::AudioPublisher
            || (plan.role == Role::VideoPublisher && shared.video_with_audio))
            .then_some(shared.audio),
        seed: shared
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(plan.index as u64),
        timeout: JOIN_TIMEOUT,
        started: Some(started),
        transport: shared.transport,
        downlink: shared
            .subscriber_downlink
            .clone()
            .filter(|_| plan.role == Role::Subscriber),
        ..JoinOptions::default()
    };
    let (participant, _events) = Participant::join(&shared.url, &jwt, options)
        .await
        .with_context(|| format!("{} in {}", plan.identity, plan.room))?;
    Ok(participant)
}
