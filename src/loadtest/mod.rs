//! `switchboard loadtest`: real LiveKit-protocol clients (the `switchboard-client` crate)
//! against a server, reporting join times, delivery, loss, latency and — when the server
//! runs on this machine — its CPU per forwarded packet against a floor measured in the same
//! run. See docs/loadtest.md.

mod args;
mod floor;
mod links;
mod report;
mod server;
mod workers;

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use switchboard_client::{
    AudioConfig, CounterSnapshot, Histogram, LinkCap, LinkRate, ParticipantStats, Transport,
    VideoConfig,
};

pub use args::LoadtestArgs;
use args::Preset;
use links::LinkWatch;
use report::{Percentiles, Report};
use server::StartedServer;
use workers::{Plan, Role, Shared, Worker};

/// How long, after the last join, the tester waits for every expected track to flow before
/// it starts the window anyway.
const WARMUP_LIMIT: Duration = Duration::from_secs(10);

pub fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    init_log()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(run_scenario(&args))?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The tester logs nothing unless `SWITCHBOARD_LOADTEST_LOG` holds a filter (e.g.
/// `is=debug,str0m=debug` to follow the clients' ICE): the log then goes to stderr. The
/// variable is not passed to a started server (no `SWITCHBOARD_*` variable is).
fn init_log() -> anyhow::Result<()> {
    let Ok(filter) = std::env::var("SWITCHBOARD_LOADTEST_LOG") else {
        return Ok(());
    };
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .context("invalid SWITCHBOARD_LOADTEST_LOG filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

/// Each step of the subscriber PeerConnection from the one before, per participant.
fn subscriber_steps(stats: &[(usize, ParticipantStats)]) -> report::SubscriberSteps {
    let step = |from: fn(&ParticipantStats) -> Option<Duration>,
                to: fn(&ParticipantStats) -> Option<Duration>| {
        Percentiles::of(
            stats
                .iter()
                .filter_map(|(_, s)| {
                    let (a, b) = (from(s)?, to(s)?);
                    Some(b.saturating_sub(a).as_secs_f64() * 1000.0)
                })
                .collect(),
        )
    };
    report::SubscriberSteps {
        offer_ms: step(|_| Some(Duration::ZERO), |s| s.timings.subscriber.offer),
        offer_to_ice_ms: step(|s| s.timings.subscriber.offer, |s| s.timings.subscriber.ice),
        ice_to_dtls_ms: step(
            |s| s.timings.subscriber.ice,
            |s| s.timings.subscriber.connected,
        ),
        dtls_to_media_ms: step(
            |s| s.timings.subscriber.connected,
            |s| s.timings.first_media,
        ),
    }
}

/// A progress line on stderr: rewritten in place on a terminal, every few seconds otherwise.
struct Progress {
    quiet: bool,
    terminal: bool,
    last: Option<Instant>,
}

impl Progress {
    fn show(&mut self, line: &str) {
        if self.quiet {
            return;
        }
        let every = if self.terminal {
            Duration::ZERO
        } else {
            Duration::from_secs(5)
        };
        if self.last.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let mut err = std::io::stderr();
        if self.terminal {
            let _ = write!(err, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn done(&mut self) {
        if !self.quiet && self.terminal {
            eprintln!();
        }
    }
}

fn video_config(args: &LoadtestArgs) -> VideoConfig {
    let (bitrate, fps, width, height) = args.preset.unwrap_or(Preset::Medium).video();
    VideoConfig {
        bitrate_bps: args.video_bitrate.unwrap_or(bitrate),
        fps: args.fps.unwrap_or(fps).max(1),
        keyframe_interval: args.keyframe_interval,
        width,
        height,
        simulcast: args.simulcast,
        pacing_factor: args.pacing.max(0.0),
    }
}

/// Every participant, publishers of all rooms first, then subscribers spread over rooms,
/// at `1 / join_rate` intervals.
fn plans(args: &LoadtestArgs, run_id: &str) -> Vec<Plan> {
    let mut roles = Vec::new();
    for room in 0..args.rooms {
        roles.extend((0..args.video_publishers).map(|i| (room, Role::VideoPublisher, i)));
        roles.extend((0..args.audio_publishers).map(|i| (room, Role::AudioPublisher, i)));
    }
    for i in 0..args.subscribers {
        roles.extend((0..args.rooms).map(|room| (room, Role::Subscriber, i)));
    }
    let interval = Duration::from_secs_f64(1.0 / args.join_rate);
    roles
        .into_iter()
        .enumerate()
        .map(|(index, (room, role, i))| {
            let kind = match role {
                Role::VideoPublisher => "video",
                Role::AudioPublisher => "audio",
                Role::Subscriber => "sub",
            };
            Plan {
                index,
                room: format!("loadtest-{run_id}-{room}"),
                identity: format!("{kind}-{i}"),
                role,
                at: interval.mul_f64(index as f64),
            }
        })
        .collect()
}

async fn snapshot_all(
    workers: &[Worker],
    reset_latency: bool,
) -> anyhow::Result<(Vec<(usize, ParticipantStats)>, Histogram<u64>)> {
    let mut participants = Vec::new();
    let mut latency = switchboard_client::new_latency_histogram();
    for worker in workers {
        let snapshot = worker.snapshot(reset_latency).await?;
        participants.extend(snapshot.participants);
        latency
            .add(&snapshot.latency)
            .context("cannot merge latency histograms")?;
    }
    Ok((participants, latency))
}

fn counters(workers: &[Worker]) -> CounterSnapshot {
    workers
        .iter()
        .map(|w| w.driver.counters())
        .fold(CounterSnapshot::default(), |a, c| CounterSnapshot {
            packets_received: a.packets_received + c.packets_received,
            bytes_received: a.bytes_received + c.bytes_received,
            packets_sent: a.packets_sent + c.packets_sent,
            bytes_sent: a.bytes_sent + c.bytes_sent,
            tcp_datagrams_dropped: a.tcp_datagrams_dropped + c.tcp_datagrams_dropped,
        })
}

/// Distinct (participant, track) pairs that delivered something.
fn tracks_received(participants: &[(usize, ParticipantStats)]) -> u64 {
    let mut pairs: Vec<(usize, &str)> = participants
        .iter()
        .flat_map(|(i, s)| {
            s.tracks
                .iter()
                .filter(|t| t.packets > 0)
                .map(move |t| (*i, t.track_sid.as_str()))
        })
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs.len() as u64
}

async fn run_scenario(args: &LoadtestArgs) -> anyhow::Result<Report> {
    let per_room = args.video_publishers + args.audio_publishers + args.subscribers;
    if args.rooms == 0 || per_room == 0 {
        bail!("nobody to join: give --rooms and some publishers or subscribers");
    }
    if !(args.join_rate.is_finite() && args.join_rate > 0.0) {
        bail!("--join-rate must be more than zero");
    }
    let (api_key, api_secret) = match (&args.api_key, &args.api_secret) {
        (Some(key), Some(secret)) => (key.clone(), secret.clone()),
        _ if args.dev || args.start_server => ("devkey".to_owned(), "secret".to_owned()),
        _ => bail!("tokens need --api-key and --api-secret, or --dev for a development server"),
    };
    // One per CPU: a single thread receiving a large room's packets (27 k/s in S1) queues
    // them behind each other and adds its own milliseconds to every latency figure, even
    // with the server on the same cores (S1 p50 5.5 → 3.4 ms with 2 threads on 2 CPUs).
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let mut progress = Progress {
        quiet: args.quiet,
        terminal: std::io::stderr().is_terminal(),
        last: None,
    };
    progress.show("measuring the floor (sendto + SRTP)…");
    // Measured first, on a quiet machine: nothing of the scenario runs yet.
    let floor = floor::measure().context("cannot measure the floor")?;
    let mut started = match args.start_server {
        true => Some(StartedServer::start(
            &args.server_bandwidth_estimation,
            args.subscriber_cap.is_some(),
        )?),
        false => None,
    };
    let url = match (&started, &args.url) {
        (Some(s), _) => s.ws_url.clone(),
        (None, Some(url)) => url.clone(),
        (None, None) => bail!("--url is needed without --start-server"),
    };
    let pid = started.as_ref().map(StartedServer::pid).or(args.server_pid);
    let metrics_url = args
        .metrics_url
        .clone()
        .unwrap_or_else(|| server::metrics_url_for(&url));
    let http = reqwest::Client::new();
    let video = video_config(args);
    let run_id = format!("{:08x}", rand::random::<u32>());
    let plans = plans(args, &run_id);
    let total = plans.len();
    // Shared by every subscriber's bottleneck: `--subscriber-cap-step` changes them all.
    let cap_rate = args
        .subscriber_cap
        .map(|rate| LinkRate::new(u64::from(rate)));
    let shared = Arc::new(Shared {
        url: url.clone(),
        api_key,
        api_secret,
        video: video.clone(),
        audio: AudioConfig {
            bitrate_bps: args.audio_bitrate,
        },
        video_with_audio: args.video_with_audio,
        subscriber_downlink: cap_rate.clone().map(|rate| LinkCap {
            rate,
            queue: args.subscriber_queue,
            burst: args.subscriber_burst,
        }),
        seed: args.seed,
        transport: if args.tcp {
            Transport::Tcp
        } else {
            Transport::Udp
        },
    });

    let (reports_tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now() + Duration::from_millis(200);
    let mut workers = Vec::with_capacity(threads);
    for t in 0..threads {
        let mine: Vec<Plan> = plans
            .iter()
            .filter(|p| p.index % threads == t)
            .cloned()
            .collect();
        workers.push(Worker::spawn(
            t,
            mine,
            Arc::clone(&shared),
            start,
            reports_tx.clone(),
        )?);
    }
    drop(reports_tx);

    // Joins, with the server's RSS when half and when all have joined.
    let mut errors = Vec::new();
    let (mut joined, mut failed) = (0usize, 0usize);
    let mut rss_half = None;
    let limit =
        start + Duration::from_secs_f64(total as f64 / args.join_rate) + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while joined + failed < total {
        tokio::select! {
            report = reports.recv() => match report {
                Some(report) => match report.result {
                    Ok(()) => {
                        joined += 1;
                        if joined == total.div_ceil(2) && total >= 2 {
                            rss_half = pid.and_then(|p| server::rss_kib(p).ok()).map(|rss_kib| report::RssPoint { participants: joined, rss_kib });
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        if errors.len() < 20 {
                            errors.push(format!("join {}: {e}", report.index));
                        }
                    }
                },
                None => break,
            },
            _ = tick.tick() => {
                if Instant::now() > limit {
                    errors.push(format!("{} joins did not finish in time", total - joined - failed));
                    break;
                }
                progress.show(&format!("joining {joined}/{total} ({failed} failed)"));
            }
        }
    }
    let rss_all = pid
        .and_then(|p| server::rss_kib(p).ok())
        .map(|rss_kib| report::RssPoint {
            participants: joined,
            rss_kib,
        });

    // Let every expected track start flowing before the window opens.
    let p = u64::from(args.video_publishers + args.audio_publishers);
    // Tracks per room; every participant receives all of them but its own.
    let t = u64::from(args.video_publishers) * (1 + u64::from(args.video_with_audio))
        + u64::from(args.audio_publishers);
    let expected = if p == 0 {
        0
    } else {
        u64::from(args.rooms) * t * (u64::from(args.subscribers) + p - 1)
    };
    let warmup_end = Instant::now() + WARMUP_LIMIT;
    loop {
        let (participants, _) = snapshot_all(&workers, false).await?;
        let received = tracks_received(&participants);
        progress.show(&format!(
            "joined {joined}/{total}; waiting for media: {received}/{expected} tracks"
        ));
        if received >= expected || Instant::now() > warmup_end {
            break;
        }
        tick.tick().await;
    }

    // The measured window.
    let (start_stats, _) = snapshot_all(&workers, true).await?;
    let cpu_start = pid.map(server::cpu_times).transpose()?;
    let metrics_start = server::scrape(&http, &metrics_url).await;
    let window_start = Instant::now();
    let window_wall = chrono::Utc::now();
    let window_end = window_start + args.duration;
    let counters_start = counters(&workers);
    let mut previous = (Instant::now(), counters_start, cpu_start);
    let mut second = tokio::time::interval(Duration::from_secs(1));
    second.tick().await;
    let mut watch = LinkWatch::new(args, &plans);
    while Instant::now() < window_end {
        tokio::select! {
            _ = second.tick() => {}
            _ = watch.tick() => {
                let elapsed = window_start.elapsed().as_secs_f64();
                watch.step(elapsed, cap_rate.as_ref());
                if watch.sampling() {
                    let (participants, _) = snapshot_all(&workers, false).await?;
                    watch.sample(elapsed, &participants);
                }
                continue;
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(window_end)) => {}
        }
        let now = (
            Instant::now(),
            counters(&workers),
            pid.and_then(|p| server::cpu_times(p).ok()),
        );
        let dt = now.0.duration_since(previous.0).as_secs_f64().max(1e-3);
        let rx = (now.1.packets_received - previous.1.packets_received) as f64 / dt;
        let mbit = (now.1.bytes_received - previous.1.bytes_received) as f64 * 8.0 / 1e6 / dt;
        let cpu = match (now.2, previous.2) {
            (Some(a), Some(b)) => format!(", server CPU {:.0}%", a.since(b).total() / dt * 100.0),
            _ => String::new(),
        };
        progress.show(&format!(
            "[{:>4.0}s/{:.0}s] {joined}/{total} joined, {rx:.0} packets/s, {mbit:.1} Mbit/s{cpu}",
            window_start.elapsed().as_secs_f64(),
            args.duration.as_secs_f64()
        ));
        previous = now;
    }
    let (end_stats, latency) = snapshot_all(&workers, false).await?;
    let window_s = window_start.elapsed().as_secs_f64();
    let cpu_end = pid.map(server::cpu_times).transpose()?;
    let metrics_end = server::scrape(&http, &metrics_url).await;
    let counters_end = counters(&workers);
    let rss_end = pid.map(server::rss_kib).transpose()?;
    progress.show("leaving…");
    for worker in &mut workers {
        worker.leave().await;
        worker.join_thread();
    }
    if let Some(server) = started.as_mut() {
        server.stop();
    }
    progress.done();
    let subscriber_sids: Vec<String> = end_stats
        .iter()
        .filter(|(i, _)| plans[*i].role == Role::Subscriber)
        .map(|(_, s)| s.sid.clone())
        .collect();
    let link_estimates = match (&started, args.subscriber_cap) {
        (Some(server), Some(_)) => {
            let estimates = links::parse_estimates(server.log()?, window_wall);
            if let Some(path) = &args.timeline {
                watch.write_timeline(path, &estimates, &end_stats)?;
            }
            Some(links::summarize(
                &estimates,
                &subscriber_sids,
                window_s,
                watch
                    .stepped
                    .map(|at| (at, args.subscriber_cap_step.map_or(0, |s| s.rate_bps))),
            ))
        }
        _ => None,
    };

    let sent = |stats: &[(usize, ParticipantStats)]| {
        stats.iter().map(|(_, s)| s.packets_sent).sum::<u64>()
    };
    let delivery = report::delivery(
        &report::track_counts(&start_stats),
        &report::track_counts(&end_stats),
        window_s,
        sent(&end_stats).saturating_sub(sent(&start_stats)),
    );
    let receives = |index: usize| -> bool {
        let role = plans[index].role;
        role == Role::Subscriber || p > 1
    };
    let first_media: Vec<f64> = end_stats
        .iter()
        .filter(|(i, _)| receives(*i))
        .filter_map(|(_, s)| s.timings.first_media.map(|d| d.as_secs_f64() * 1000.0))
        .collect();
    let expecting = end_stats
        .iter()
        .filter(|(i, _)| receives(*i) && p > 0)
        .count();
    let join = report::JoinSummary {
        attempted: total,
        joined,
        failed,
        signal_ms: Percentiles::of(
            end_stats
                .iter()
                .map(|(_, s)| s.timings.signaled.as_secs_f64() * 1000.0)
                .collect(),
        ),
        without_media: expecting.saturating_sub(first_media.len()),
        connected_ms: Percentiles::of(
            end_stats
                .iter()
                .filter_map(|(_, s)| s.timings.connected.map(|d| d.as_secs_f64() * 1000.0))
                .collect(),
        ),
        first_media_ms: Percentiles::of(first_media),
        subscriber_steps: subscriber_steps(&end_stats),
    };
    let server_cost = match (pid, cpu_start, cpu_end, rss_end) {
        (Some(pid), Some(a), Some(b), Some(rss_kib)) => {
            let used = b.since(a);
            let cpu_s = used.total();
            let forwarded_metrics = match (metrics_start.forwarded, metrics_end.forwarded) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            };
            let per = |count: f64| (count > 0.0 && cpu_s > 0.0).then(|| cpu_s * 1e6 / count);
            Some(report::ServerCost {
                pid,
                cpu_s,
                cpu_user_s: used.user,
                cpu_system_s: used.system,
                cpu_percent: cpu_s / window_s * 100.0,
                forwarded_packets: delivery.packets,
                forwarded_packets_metrics: forwarded_metrics,
                cpu_us_per_forwarded_packet: per(delivery.packets as f64),
                user_us_per_forwarded_packet: (delivery.packets > 0)
                    .then(|| used.user * 1e6 / delivery.packets as f64),
                cpu_us_per_forwarded_packet_metrics: forwarded_metrics.and_then(per),
                rss_kib,
                rss_half,
                rss_all,
                rss_per_participant_kib: match (rss_half, rss_all) {
                    (Some(half), Some(all)) if all.participants > half.participants => {
                        let added = (all.participants - half.participants) as f64;
                        Some((all.rss_kib as f64 - half.rss_kib as f64) / added)
                    }
                    _ => None,
                },
            })
        }
        _ => None,
    };
    let efficiency = server_cost
        .as_ref()
        .and_then(|c| c.cpu_us_per_forwarded_packet)
        .map(|per| floor.floor_us / per);
    Ok(Report {
        schema: report::SCHEMA,
        scenario: report::Scenario {
            url,
            transport: if args.tcp { "tcp" } else { "udp" },
            started_server: args.start_server,
            rooms: args.rooms,
            video_publishers: args.video_publishers,
            audio_publishers: args.audio_publishers,
            subscribers: args.subscribers,
            participants: total,
            duration_s: args.duration.as_secs_f64(),
            join_rate: args.join_rate,
            video_bitrate_bps: video.bitrate_bps,
            fps: video.fps,
            width: video.width,
            height: video.height,
            simulcast: video.simulcast,
            pacing_factor: video.pacing_factor,
            keyframe_interval_s: video.keyframe_interval.as_secs_f64(),
            audio_bitrate_bps: args.audio_bitrate,
            subscriber_cap_bps: args.subscriber_cap,
            subscriber_queue_ms: args
                .subscriber_cap
                .map(|_| args.subscriber_queue.as_secs_f64() * 1000.0),
            subscriber_burst_bytes: args.subscriber_cap.map(|_| args.subscriber_burst),
            subscriber_cap_step_s: watch.stepped,
            subscriber_cap_step_bps: args.subscriber_cap_step.map(|s| s.rate_bps),
            seed: args.seed,
            threads,
        },
        join,
        delivery,
        layers: report::layer_mix(&start_stats, &end_stats),
        link_estimates,
        latency_ms: report::LatencySummary::of(&latency),
        tcp: args.tcp.then(|| report::TcpSummary {
            client_dropped: counters_end
                .tcp_datagrams_dropped
                .saturating_sub(counters_start.tcp_datagrams_dropped),
            server_connections: metrics_end.tcp_connections,
            // A counter the server had not touched at the start was zero then.
            server_dropped: metrics_end
                .tcp_dropped
                .map(|end| end - metrics_start.tcp_dropped.unwrap_or(0.0)),
        }),
        tracks: report::Tracks {
            expected,
            received: tracks_received(&end_stats),
        },
        server: server_cost,
        floor,
        efficiency,
        errors,
    })
}
