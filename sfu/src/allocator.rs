//! One subscriber's allocator: which layer of each track it receives. The subscriber's
//! bandwidth estimate (when there is one) is shared out by priority: audio first, then
//! every video track's lowest useful layer (screen shares before cameras, larger requests
//! first), then upward one step at a time in the same order. A step is a spatial layer
//! with some of its temporal layers (`Step`): a track whose publisher sends temporal layers
//! has finer steps (q at 7.5, 15, 30 fps, then h at 7.5 fps …). A video track whose lowest
//! step does not fit is paused.

use std::time::{Duration, Instant};

use crate::published_track::Quality;

/// A track whose layer the link limited goes up again no sooner than this after it went
/// down (or was paused), doubled for each step up in a row that the link took back within
/// [`FAILED_UP_WITHIN`] (3, 6, 12 s: a link whose burst allowance or queue makes a layer
/// look affordable costs one freeze, then rarer ones, not one every 3 s) ...
const UP_AFTER_DOWN: Duration = Duration::from_secs(3);
const FAILED_UP_WITHIN: Duration = Duration::from_secs(5);
const MAX_FAILED_UPS: u32 = 2;
/// ... and one step at a time, this far apart: a link that flaps makes layers change no
/// faster than these hold times. Going down is never held.
const UP_AFTER_UP: Duration = Duration::from_millis(1500);
/// A track whose top layer arrives before the lower ones it announced waits this long for
/// them on a provisional link, then takes what there is: a publisher that announced layers
/// it never sends still gets seen.
const WAIT_FOR_LOWER: Duration = Duration::from_secs(1);

/// What the allocator assumes a layer costs before its bitrate has been measured (bits per
/// second): libwebrtc's usual targets for LiveKit's q/h/f presets, and one Opus stream.
fn assumed_bitrate(quality: Quality, is_video: bool) -> u64 {
    match (is_video, quality) {
        (false, _) => 64_000,
        (true, 0) => 150_000,
        (true, 1) => 500_000,
        (true, _) => 1_700_000,
    }
}

/// One step of a track's ladder: a spatial layer (a simulcast layer, or an SVC stream's
/// spatial layer and those below it) with its temporal layers up to `temporal`. Ordered
/// spatial first: any step of a better layer is above every step of a worse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Step {
    pub quality: Quality,
    pub temporal: u8,
}

#[cfg(test)]
impl Step {
    /// A layer without temporal layers (or with all of them, where it is the top step).
    pub fn spatial(quality: Quality) -> Self {
        Self {
            quality,
            temporal: 0,
        }
    }
}

/// What one down-track asks of the allocator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Demand {
    /// Names the down-track from one allocation to the next.
    pub key: usize,
    pub is_video: bool,
    /// Screen shares are served before cameras.
    pub screen: bool,
    /// The best quality the subscriber can use (its element's size, the quality it asked
    /// for); `None`: any.
    pub max_quality: Option<Quality>,
    /// The highest temporal layer it can use (the frame rate it asked for); `None`: any.
    pub max_temporal: Option<u8>,
    /// The client turned the track off.
    pub disabled: bool,
    /// The lowest quality the publisher announced (its simulcast or SVC layers), sending
    /// yet or not; `None`: it announced none.
    pub lowest_announced: Option<Quality>,
    /// The steps being sent, lowest first: (step, bits per second, 0 when not yet
    /// measured). A layer without temporal layers is one step.
    pub layers: Vec<(Step, u64)>,
}

/// The allocator's decision for one down-track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allocation {
    /// Forward this step.
    Layer(Step),
    /// Nothing is being sent: nothing to forward, nothing to tell.
    Idle,
    /// The client turned the track off: forward nothing; it knows.
    Off,
    /// The link cannot carry the lowest layer: forward nothing, and tell the client the
    /// track is paused.
    Paused,
}

impl Allocation {
    /// Orders allocations by what they forward.
    fn level(self) -> i16 {
        match self {
            Allocation::Layer(s) => i16::from(s.quality) * 16 + i16::from(s.temporal.min(15)),
            _ => -1,
        }
    }
}

/// What the allocator last chose for one down-track.
#[derive(Debug, Clone, Copy)]
struct Held {
    key: usize,
    allocation: Allocation,
    /// When it last changed, and whether up.
    since: Instant,
    went_up: bool,
    /// The link, not the track's layers or the client's wishes, set it below the best.
    limited: bool,
    /// The last change was a step up from a layer the link had limited.
    tried_up: bool,
    /// Steps up in a row the link took back soon after.
    failed_ups: u32,
    /// Since when it has waited for the lower layers its publisher announced.
    waiting_since: Option<Instant>,
}

/// The allocator of one subscriber: its estimate, and what it chose last.
#[derive(Debug, Default)]
pub(crate) struct Allocator {
    /// The subscriber's available bandwidth, bits per second; `None`: unknown, no limit.
    pub estimate: Option<u64>,
    /// The link shows congestion (queueing delay growing, or heavy loss): only then does
    /// the estimate take layers away. Otherwise it only decides how far tracks go up, so
    /// an estimate still climbing towards what the link carries never takes a layer that
    /// is arriving fine.
    pub congested: bool,
    held: Vec<Held>,
    /// Bits per second the limited tracks would take on top of what they have: what a
    /// probe should look for.
    deficit: u64,
    /// Bits per second of the layers chosen.
    allocated: u64,
    /// The link is new and its estimate only the estimator's starting point: a simulcast
    /// track gets at most its second-best layer until a probe (or a few seconds of
    /// feedback) confirms more. A publisher whose encoder is still ramping up sends a top
    /// layer that measures far below what it will cost in a second.
    pub provisional: bool,
    /// The estimate is the receiver's measure of what reaches it (REMB): a paused track
    /// would leave it nothing to measure and no way back, so the lowest layer stays.
    pub never_pause: bool,
    /// The last allocation had an estimate. One made without (before the link was known)
    /// is no choice of the link's: the first estimate takes what it cannot carry away.
    had_estimate: bool,
}

impl Allocator {
    /// An allocator starting from `estimate` (bits per second; `None`: no limit), taken as
    /// provisional.
    pub fn with_estimate(estimate: Option<u64>) -> Self {
        Self {
            estimate,
            provisional: estimate.is_some(),
            ..Self::default()
        }
    }

    /// One allocation for each demand, in the same order. Going up after the link limited
    /// a track waits for the hold times; everything else applies at once.
    pub fn allocate(&mut self, now: Instant, demands: &[Demand]) -> Vec<Allocation> {
        let usable: Vec<Vec<(Step, u64)>> = demands.iter().map(usable_layers).collect();
        let fresh = self.share(demands, &usable);
        let mut held = Vec::with_capacity(demands.len());
        let mut deficit = 0;
        let mut allocated = 0;
        let result: Vec<Allocation> = demands
            .iter()
            .zip(&usable)
            .zip(fresh)
            .map(|((demand, layers), wanted)| {
                let before = self.held.iter().find(|h| h.key == demand.key).copied();
                let mut chosen = wanted;
                // `share` leaves a track with layers idle only to wait for its lower ones.
                let mut waiting_since = None;
                if wanted == Allocation::Idle && !layers.is_empty() {
                    let since = before.and_then(|b| b.waiting_since).unwrap_or(now);
                    if now.saturating_duration_since(since) < WAIT_FOR_LOWER {
                        waiting_since = Some(since);
                    } else {
                        chosen = Allocation::Layer(layers[0].0);
                    }
                }
                if let Some(before) = before {
                    let hold = if before.went_up {
                        UP_AFTER_UP
                    } else {
                        UP_AFTER_DOWN * 2u32.pow(before.failed_ups)
                    };
                    let still_there = match before.allocation {
                        Allocation::Layer(s) => layers.iter().any(|(l, _)| *l == s),
                        _ => true,
                    };
                    if wanted.level() > before.allocation.level() && before.limited && still_there {
                        chosen = if now.saturating_duration_since(before.since) < hold {
                            before.allocation
                        } else {
                            // One spatial layer up at a time: an estimate that overshot (a
                            // probe through a bursty queue) costs one step, not the top
                            // layer. Within it, as many temporal layers as fit.
                            let next = match before.allocation {
                                Allocation::Layer(s) => i16::from(s.quality) + 1,
                                _ => 0,
                            };
                            layers
                                .iter()
                                .rev()
                                .filter(|(s, _)| i16::from(s.quality) <= next)
                                .map(|&(s, _)| Allocation::Layer(s))
                                .find(|a| {
                                    a.level() > before.allocation.level()
                                        && a.level() <= wanted.level()
                                })
                                .unwrap_or(wanted)
                        };
                    }
                }
                if let Some(before) = before {
                    let kept = match before.allocation {
                        Allocation::Layer(s) => layers.iter().any(|(l, _)| *l == s),
                        _ => false,
                    };
                    if !self.congested
                        && self.had_estimate
                        && kept
                        && !demand.disabled
                        && chosen.level() < before.allocation.level()
                    {
                        chosen = before.allocation;
                    }
                }
                if chosen == Allocation::Paused && (!self.congested || self.never_pause) {
                    // Pausing needs the link to show trouble, not only an estimate still
                    // finding its level (a new subscriber's, or one a single-layer track
                    // outgrows): the lowest layer goes until congestion says otherwise.
                    if let Some(&(q, _)) = layers.first() {
                        chosen = Allocation::Layer(q);
                    }
                }
                let best = layers.last().map(|&(q, rate)| (Allocation::Layer(q), rate));
                let limited = !demand.disabled
                    && waiting_since.is_none()
                    && self.estimate.is_some()
                    && best.is_some_and(|(b, _)| b.level() > chosen.level());
                let rate = match chosen {
                    Allocation::Layer(s) => layers.iter().find(|(l, _)| *l == s).map_or(0, |l| l.1),
                    _ => 0,
                };
                allocated += rate;
                if limited {
                    deficit += best.map_or(0, |(_, best)| best.saturating_sub(rate));
                }
                let unchanged = Held {
                    key: demand.key,
                    allocation: chosen,
                    since: now,
                    went_up: true,
                    limited,
                    tried_up: false,
                    failed_ups: 0,
                    waiting_since,
                };
                held.push(match before {
                    None => unchanged,
                    Some(b) if b.allocation == chosen => Held {
                        limited,
                        waiting_since,
                        ..b
                    },
                    Some(b) if chosen.level() > b.allocation.level() => Held {
                        tried_up: b.limited,
                        failed_ups: b.failed_ups,
                        ..unchanged
                    },
                    Some(b) => {
                        let failed = b.tried_up
                            && self.congested
                            && now.saturating_duration_since(b.since) < FAILED_UP_WITHIN;
                        Held {
                            went_up: false,
                            failed_ups: if failed {
                                (b.failed_ups + 1).min(MAX_FAILED_UPS)
                            } else {
                                0
                            },
                            ..unchanged
                        }
                    }
                });
                chosen
            })
            .collect();
        self.held = held;
        self.had_estimate = self.estimate.is_some();
        self.deficit = deficit;
        self.allocated = allocated;
        result
    }

    /// Some track waits for the lower layers its publisher announced: the allocator must
    /// look again within [`WAIT_FOR_LOWER`] even if nothing else changes.
    pub fn waiting(&self) -> bool {
        self.held.iter().any(|h| h.waiting_since.is_some())
    }

    /// What the chosen layers send, bits per second.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// What the limited tracks lack, bits per second (0 when nothing is limited).
    pub fn deficit(&self) -> u64 {
        self.deficit
    }

    /// The allocation the estimate allows, before hold times.
    fn share(&self, demands: &[Demand], usable: &[Vec<(Step, u64)>]) -> Vec<Allocation> {
        let mut result: Vec<Allocation> = demands
            .iter()
            .zip(usable)
            .map(|(demand, layers)| match layers.last() {
                _ if demand.disabled => Allocation::Off,
                None => Allocation::Idle,
                Some(&(best, _)) => Allocation::Layer(best),
            })
            .collect();
        let Some(mut budget) = self.estimate else {
            return result;
        };
        // Audio first, whatever it costs.
        for (i, demand) in demands.iter().enumerate() {
            if !demand.is_video {
                if let Some(&(_, cost)) = usable[i].first() {
                    budget = budget.saturating_sub(cost);
                }
            }
        }
        let mut order: Vec<usize> = (0..demands.len())
            .filter(|&i| demands[i].is_video && matches!(result[i], Allocation::Layer(_)))
            .collect();
        order.sort_by_key(|&i| {
            let d = &demands[i];
            (
                !d.screen,
                std::cmp::Reverse(d.max_quality.unwrap_or(Quality::MAX)),
            )
        });
        // The top quality of each track, and whether a provisional estimate keeps it for
        // later: it does when the track announced (or sends) a lower one.
        let top = |i: usize| usable[i][usable[i].len() - 1].0.quality;
        let kept_for_later = |i: usize| {
            let lowest = demands[i]
                .lowest_announced
                .map_or(usable[i][0].0.quality, |q| q.min(usable[i][0].0.quality));
            self.provisional && lowest < top(i)
        };
        // Everyone's lowest layer, or a pause.
        let mut step = vec![0usize; demands.len()];
        for &i in &order {
            let cost = usable[i][0].1;
            if usable[i][0].0.quality == top(i) && kept_for_later(i) {
                // Only the top layer is sending yet (its publisher just started): on a new
                // link the lower ones it announced are worth a moment's wait.
                result[i] = Allocation::Idle;
            } else if cost <= budget {
                budget -= cost;
                result[i] = Allocation::Layer(usable[i][0].0);
            } else {
                result[i] = Allocation::Paused;
            }
        }
        // Then upward, one layer at a time per track, while anything fits.
        loop {
            let mut upgraded = false;
            for &i in &order {
                if !matches!(result[i], Allocation::Layer(_)) || step[i] + 1 >= usable[i].len() {
                    continue;
                }
                if usable[i][step[i] + 1].0.quality == top(i) && kept_for_later(i) {
                    continue;
                }
                let extra = usable[i][step[i] + 1]
                    .1
                    .saturating_sub(usable[i][step[i]].1);
                if extra <= budget {
                    budget -= extra;
                    step[i] += 1;
                    result[i] = Allocation::Layer(usable[i][step[i]].0);
                    upgraded = true;
                }
            }
            if !upgraded {
                return result;
            }
        }
    }
}

/// The steps worth sending for `demand`, lowest first, each with what it costs: those up
/// to its best useful quality and frame rate (at least the lowest step).
fn usable_layers(demand: &Demand) -> Vec<(Step, u64)> {
    let cost = |&(s, measured): &(Step, u64)| {
        let bitrate = if measured > 0 {
            measured
        } else {
            assumed_bitrate(s.quality, demand.is_video)
        };
        (s, bitrate)
    };
    let max = demand.max_quality.unwrap_or(Quality::MAX);
    let max_temporal = demand.max_temporal.unwrap_or(u8::MAX);
    let mut layers: Vec<(Step, u64)> = demand
        .layers
        .iter()
        .filter(|(s, _)| s.quality <= max && s.temporal <= max_temporal)
        .map(cost)
        .collect();
    if layers.is_empty() {
        layers.extend(demand.layers.first().map(cost));
    }
    layers
}

#[cfg(test)]
#[path = "allocator_tests.rs"]
mod tests;
