//! The server's estimates of the capped subscribers' links, read back from its log (the
//! "subscriber link" lines of sfu/src/congestion.rs), what the report says of them, and the
//! timeline of one subscriber for web/tools/timeline-svg.mjs.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use switchboard_client::{LinkRate, ParticipantStats, TrackKind};

use super::args::{CapStep, LoadtestArgs};
use super::report::Percentiles;
use super::workers::{Plan, Role};

/// How often the timeline samples its subscriber (and a cap step is looked at).
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// An estimate within ±this share of the new cap has followed a step.
const CONVERGED_WITHIN: f64 = 0.25;

/// One estimate the server logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Seconds from the start of the measured window (negative: before it).
    pub t: f64,
    /// The participant's `PA_…` sid.
    pub participant: String,
    pub bps: u64,
    pub congested: bool,
}

/// The "subscriber link" lines of `log`, timed from `window_start`.
pub fn parse_estimates(
    log: impl Iterator<Item = String>,
    window_start: DateTime<Utc>,
) -> Vec<Estimate> {
    log.filter(|line| line.contains("subscriber link"))
        .filter_map(|line| {
            let plain = strip_ansi(&line);
            let mut words = plain.split_whitespace();
            let at = DateTime::parse_from_rfc3339(words.next()?).ok()?;
            let field = |name: &str| {
                plain
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                    .map(str::to_owned)
            };
            let t = (at.with_timezone(&Utc) - window_start).num_microseconds()? as f64 / 1e6;
            Some(Estimate {
                t,
                participant: field("participant")?,
                bps: field("estimate")?.parse().ok()?,
                congested: field("congested")? == "true",
            })
        })
        .collect()
}

/// The line without terminal colour codes (`ESC [ … m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What the report says of the server's estimates of the capped subscribers' links.
#[derive(Debug, Default, Serialize)]
pub struct LinkEstimates {
    /// Subscribers the server logged an estimate for.
    pub subscribers: usize,
    /// Each one's last estimate in the window (bits per second, not milliseconds).
    pub final_bps: Percentiles,
    /// With `--subscriber-cap-step`: each one's last estimate before the step.
    pub before_step_bps: Option<Percentiles>,
    /// With `--subscriber-cap-step`: seconds from the step until a subscriber's estimate
    /// first came within 25 % of the new cap; `not_converged` never did in the window.
    pub convergence_s: Option<Percentiles>,
    pub not_converged: usize,
}

/// Sums up `estimates` of the subscribers named in `sids` over a window of `window_s`
/// seconds; `step` is (seconds into the window, new cap in bits per second).
pub fn summarize(
    estimates: &[Estimate],
    sids: &[String],
    window_s: f64,
    step: Option<(f64, u32)>,
) -> LinkEstimates {
    let mut by_sid: HashMap<&str, Vec<&Estimate>> = HashMap::new();
    for e in estimates.iter().filter(|e| e.t <= window_s) {
        if sids.contains(&e.participant) {
            by_sid.entry(e.participant.as_str()).or_default().push(e);
        }
    }
    let last_before =
        |list: &[&Estimate], t: f64| list.iter().rev().find(|e| e.t <= t).map(|e| e.bps as f64);
    let finals = by_sid
        .values()
        .filter_map(|list| list.last().map(|e| e.bps as f64))
        .collect();
    let mut summary = LinkEstimates {
        subscribers: by_sid.len(),
        final_bps: Percentiles::of(finals),
        ..LinkEstimates::default()
    };
    if let Some((at, cap)) = step {
        let cap = f64::from(cap);
        let mut times = Vec::new();
        for list in by_sid.values() {
            let followed = list
                .iter()
                .find(|e| e.t >= at && (e.bps as f64 - cap).abs() <= cap * CONVERGED_WITHIN);
            match followed {
                Some(e) => times.push(e.t - at),
                None => summary.not_converged += 1,
            }
        }
        summary.before_step_bps = Some(Percentiles::of(
            by_sid
                .values()
                .filter_map(|list| last_before(list, at))
                .collect(),
        ));
        summary.convergence_s = Some(Percentiles::of(times));
    }
    summary
}

/// One subscriber over the window, in web/tools/timeline-svg.mjs's format.
#[derive(Debug, Default, Serialize)]
pub struct Timeline {
    pub samples: Vec<Sample>,
    pub estimates: Vec<TimelineEstimate>,
    pub events: Vec<Event>,
}

#[derive(Debug, Serialize)]
pub struct Sample {
    pub t: f64,
    pub kbps: f64,
    pub fps: f64,
    /// The width most of its frames had in the interval (the simulcast layer); 0: none.
    pub width: u32,
}

#[derive(Debug, Serialize)]
pub struct TimelineEstimate {
    pub t: f64,
    #[serde(rename = "estimateKbps")]
    pub estimate_kbps: f64,
    pub congested: bool,
}

#[derive(Debug, Serialize)]
pub struct Event {
    pub t: f64,
    pub what: String,
}

/// Samples one subscriber's video for a [`Timeline`]: what came between two snapshots.
#[derive(Debug, Default)]
pub struct Sampler {
    previous: Option<Totals>,
}

/// A subscriber's video so far: when (seconds into the window), bytes, frames per width.
type Totals = (f64, u64, Vec<(u32, u64)>);

impl Sampler {
    /// The sample for the interval ending at `t` (seconds into the window) with `stats`,
    /// the subscriber's snapshot then; `None` for the first one.
    pub fn sample(&mut self, t: f64, stats: &ParticipantStats) -> Option<Sample> {
        let video = stats.tracks.iter().filter(|s| s.kind == TrackKind::Video);
        let bytes: u64 = video.clone().map(|s| s.bytes).sum();
        let mut frames: Vec<(u32, u64)> = Vec::new();
        for (width, count) in video.flat_map(|s| s.frames_by_width.iter().copied()) {
            match frames.iter_mut().find(|(w, _)| *w == width) {
                Some(entry) => entry.1 += count,
                None => frames.push((width, count)),
            }
        }
        let (t0, bytes0, frames0) = self.previous.replace((t, bytes, frames.clone()))?;
        let dt = (t - t0).max(1e-3);
        let before = |width: u32| {
            frames0
                .iter()
                .find(|(w, _)| *w == width)
                .map_or(0, |(_, n)| *n)
        };
        let new: Vec<(u32, u64)> = frames
            .iter()
            .map(|&(w, n)| (w, n.saturating_sub(before(w))))
            .collect();
        let count: u64 = new.iter().map(|(_, n)| n).sum();
        let width = new
            .iter()
            .filter(|(_, n)| *n > 0)
            .max_by_key(|(_, n)| *n)
            .map_or(0, |(w, _)| *w);
        Some(Sample {
            t,
            kbps: bytes.saturating_sub(bytes0) as f64 * 8.0 / dt / 1000.0,
            fps: count as f64 / dt,
            width,
        })
    }
}

/// During the measured window: steps the cap (`--subscriber-cap-step`) and samples the
/// timeline's subscriber (`--timeline`: the first subscriber).
pub struct LinkWatch {
    step: Option<CapStep>,
    /// When the step was made, seconds into the window.
    pub stepped: Option<f64>,
    cap_bps: Option<u32>,
    /// The participant the timeline follows.
    followed: Option<usize>,
    sampler: Sampler,
    timeline: Timeline,
    ticker: Option<tokio::time::Interval>,
}

impl LinkWatch {
    pub fn new(args: &LoadtestArgs, plans: &[Plan]) -> Self {
        let followed = args
            .timeline
            .as_ref()
            .and_then(|_| plans.iter().find(|p| p.role == Role::Subscriber))
            .map(|p| p.index);
        let watching = followed.is_some() || args.subscriber_cap_step.is_some();
        Self {
            step: args.subscriber_cap_step,
            stepped: None,
            cap_bps: args.subscriber_cap,
            followed,
            sampler: Sampler::default(),
            timeline: Timeline::default(),
            ticker: watching.then(|| tokio::time::interval(WATCH_EVERY)),
        }
    }

    /// The next time to look; never, with nothing to watch.
    pub async fn tick(&mut self) {
        match self.ticker.as_mut() {
            Some(ticker) => {
                ticker.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Makes the step once its time has come.
    pub fn step(&mut self, elapsed: f64, rate: Option<&LinkRate>) {
        let (Some(step), None, Some(rate)) = (self.step, self.stepped, rate) else {
            return;
        };
        if elapsed >= step.after.as_secs_f64() {
            rate.set(u64::from(step.rate_bps));
            self.stepped = Some(elapsed);
            self.timeline.events.push(Event {
                t: elapsed,
                what: format!("cap {} kbit/s", step.rate_bps / 1000),
            });
        }
    }

    pub fn sampling(&self) -> bool {
        self.followed.is_some()
    }

    /// Takes the followed subscriber's sample from a snapshot of everyone.
    pub fn sample(&mut self, elapsed: f64, participants: &[(usize, ParticipantStats)]) {
        let Some(stats) = participants
            .iter()
            .find(|(i, _)| Some(*i) == self.followed)
            .map(|(_, s)| s)
        else {
            return;
        };
        if self.timeline.events.is_empty() {
            if let Some(cap) = self.cap_bps {
                self.timeline.events.push(Event {
                    t: elapsed,
                    what: format!("capped at {} kbit/s", cap / 1000),
                });
            }
        }
        if let Some(sample) = self.sampler.sample(elapsed, stats) {
            self.timeline.samples.push(sample);
        }
    }

    /// Writes the timeline with the server's `estimates` of the followed subscriber's link.
    pub fn write_timeline(
        &mut self,
        path: &Path,
        estimates: &[Estimate],
        stats: &[(usize, ParticipantStats)],
    ) -> anyhow::Result<()> {
        let sid = stats
            .iter()
            .find(|(i, _)| Some(*i) == self.followed)
            .map(|(_, s)| s.sid.as_str());
        self.timeline.estimates = estimates
            .iter()
            .filter(|e| Some(e.participant.as_str()) == sid && e.t >= 0.0)
            .map(|e| TimelineEstimate {
                t: e.t,
                estimate_kbps: e.bps as f64 / 1000.0,
                congested: e.congested,
            })
            .collect();
        let json = serde_json::to_string_pretty(&self.timeline)?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_line(at: &str, sid: &str, estimate: u64) -> String {
        format!(
            "{at} \u{1b}[34mDEBUG\u{1b}[0m switchboard_sfu::congestion: subscriber link \
             participant={sid} estimate={estimate} congested=false acked=Some(1)"
        )
    }

    #[test]
    fn estimates_are_read_from_the_log_and_a_step_is_followed() {
        let start = DateTime::parse_from_rfc3339("2026-12-05T21:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let log = [
            log_line("2026-12-05T20:59:59.500000Z", "PA_a", 900_000),
            "2026-12-05T21:00:00.100000Z  INFO switchboard: something else".to_owned(),
            log_line("2026-12-05T21:00:04.000000Z", "PA_a", 2_000_000),
            log_line("2026-12-05T21:00:04.000000Z", "PA_b", 1_900_000),
            log_line("2026-12-05T21:00:06.000000Z", "PA_a", 1_000_000),
            log_line("2026-12-05T21:00:07.500000Z", "PA_a", 550_000),
            log_line("2026-12-05T21:00:08.000000Z", "PA_other", 550_000),
        ]
        .join("\n");
        let estimates = parse_estimates(log.lines().map(str::to_owned), start);
        assert_eq!(estimates.len(), 6);
        assert_eq!(estimates[0].t, -0.5);
        assert_eq!(estimates[0].participant, "PA_a");
        assert_eq!(estimates[0].bps, 900_000);
        let sids = ["PA_a".to_owned(), "PA_b".to_owned()];
        // A step to 500 kbit/s at 5 s: PA_a follows 2.5 s later (550k is within 25 %), PA_b
        // never does.
        let summary = summarize(&estimates, &sids, 10.0, Some((5.0, 500_000)));
        assert_eq!(summary.subscribers, 2);
        assert_eq!(summary.not_converged, 1);
        let convergence = summary.convergence_s.expect("a step was given");
        assert_eq!((convergence.count, convergence.max), (1, Some(2.5)));
        assert_eq!(
            summary.before_step_bps.map(|p| p.max),
            Some(Some(2_000_000.0))
        );
        assert_eq!(summary.final_bps.count, 2);
    }
}
