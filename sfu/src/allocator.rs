//! One subscriber's allocator: which layer of each track it receives. The subscriber's
//! bandwidth estimate (when there is one) is shared out by priority: audio first, then
//! every video track's lowest useful layer (screen shares before cameras, larger requests
//! first), then upward one layer at a time in the same order. A video track whose lowest
//! layer does not fit is paused.

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
    /// The client turned the track off.
    pub disabled: bool,
    /// The layers being sent, lowest quality first: (quality, bits per second, 0 when not
    /// yet measured).
    pub layers: Vec<(Quality, u64)>,
}

/// The allocator's decision for one down-track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allocation {
    /// Forward this layer.
    Layer(Quality),
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
            Allocation::Layer(q) => i16::from(q),
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
        let usable: Vec<Vec<(Quality, u64)>> = demands.iter().map(usable_layers).collect();
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
                if let Some(before) = before {
                    let hold = if before.went_up {
                        UP_AFTER_UP
                    } else {
                        UP_AFTER_DOWN * 2u32.pow(before.failed_ups)
                    };
                    let still_there = match before.allocation {
                        Allocation::Layer(q) => layers.iter().any(|(l, _)| *l == q),
                        _ => true,
                    };
                    if wanted.level() > before.allocation.level() && before.limited && still_there {
                        chosen = if now.saturating_duration_since(before.since) < hold {
                            before.allocation
                        } else {
                            // One layer up at a time: an estimate that overshot (a probe
                            // through a bursty queue) costs one step, not the top layer.
                            layers
                                .iter()
                                .map(|&(q, _)| Allocation::Layer(q))
                                .find(|a| a.level() > before.allocation.level())
                                .unwrap_or(wanted)
                        };
                    }
                }
                if let Some(before) = before {
                    let kept = match before.allocation {
                        Allocation::Layer(q) => layers.iter().any(|(l, _)| *l == q),
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
                if chosen == Allocation::Paused && !self.congested {
                    // Pausing needs the link to show trouble, not only an estimate still
                    // finding its level (a new subscriber's, or one a single-layer track
                    // outgrows): the lowest layer goes until congestion says otherwise.
                    if let Some(&(q, _)) = layers.first() {
                        chosen = Allocation::Layer(q);
                    }
                }
                let best = layers.last().map(|&(q, rate)| (Allocation::Layer(q), rate));
                let limited = !demand.disabled
                    && self.estimate.is_some()
                    && best.is_some_and(|(b, _)| b.level() > chosen.level());
                let rate = match chosen {
                    Allocation::Layer(q) => layers.iter().find(|(l, _)| *l == q).map_or(0, |l| l.1),
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
                };
                held.push(match before {
                    None => unchanged,
                    Some(b) if b.allocation == chosen => Held { limited, ..b },
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

    /// What the chosen layers send, bits per second.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// What the limited tracks lack, bits per second (0 when nothing is limited).
    pub fn deficit(&self) -> u64 {
        self.deficit
    }

    /// The allocation the estimate allows, before hold times.
    fn share(&self, demands: &[Demand], usable: &[Vec<(Quality, u64)>]) -> Vec<Allocation> {
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
        // Everyone's lowest layer, or a pause.
        let mut step = vec![0usize; demands.len()];
        for &i in &order {
            let cost = usable[i][0].1;
            if cost <= budget {
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
                if self.provisional && step[i] + 2 == usable[i].len() {
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

/// The layers worth sending for `demand`, lowest first, each with what it costs: those up
/// to its best useful quality (at least the lowest layer).
fn usable_layers(demand: &Demand) -> Vec<(Quality, u64)> {
    let cost = |&(q, measured): &(Quality, u64)| {
        let bitrate = if measured > 0 {
            measured
        } else {
            assumed_bitrate(q, demand.is_video)
        };
        (q, bitrate)
    };
    let max = demand.max_quality.unwrap_or(Quality::MAX);
    let mut layers: Vec<(Quality, u64)> = demand
        .layers
        .iter()
        .filter(|(q, _)| *q <= max)
        .map(cost)
        .collect();
    if layers.is_empty() {
        layers.extend(demand.layers.first().map(cost));
    }
    layers
}

#[cfg(test)]
mod tests {
    use super::*;
    use Allocation::{Idle, Layer, Off, Paused};

    fn camera(layers: &[(Quality, u64)]) -> Demand {
        Demand {
            key: 0,
            is_video: true,
            screen: false,
            max_quality: None,
            disabled: false,
            layers: layers.to_vec(),
        }
    }

    const SIMULCAST: [(Quality, u64); 3] = [(0, 150_000), (1, 450_000), (2, 1_500_000)];

    /// An allocator with no history on a congested link: what the estimate allows,
    /// demands keyed by position.
    fn with(estimate: Option<u64>) -> Fresh {
        Fresh(Allocator {
            estimate,
            congested: true,
            ..Allocator::default()
        })
    }

    struct Fresh(Allocator);

    impl Fresh {
        fn allocate(mut self, demands: &[Demand]) -> Vec<Allocation> {
            let keyed: Vec<Demand> = demands
                .iter()
                .enumerate()
                .map(|(key, d)| Demand { key, ..d.clone() })
                .collect();
            self.0.allocate(Instant::now(), &keyed)
        }
    }

    #[test]
    fn going_up_after_the_link_limited_a_track_waits_for_the_hold_times() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut allocator = Allocator::default();
        let mut step = |estimate, ms| {
            allocator.estimate = Some(estimate);
            allocator.congested = true;
            allocator.allocate(at(ms), &[camera(&SIMULCAST)])[0]
        };
        assert_eq!(step(2_000_000, 0), Layer(2));
        // Down at once.
        assert_eq!(step(500_000, 100), Layer(1));
        assert_eq!(step(100_000, 200), Paused);
        // Up again only 3 s after the last change, one layer at a time, 1.5 s apart.
        assert_eq!(step(2_000_000, 3100), Paused);
        assert_eq!(step(2_000_000, 3200), Layer(0));
        assert_eq!(step(2_000_000, 4000), Layer(0));
        assert_eq!(step(2_000_000, 4700), Layer(1));
        assert_eq!(step(500_000, 4800), Layer(1));
        assert_eq!(step(2_000_000, 6100), Layer(1));
        assert_eq!(step(2_000_000, 6200), Layer(2));
        assert_eq!(allocator.deficit(), 0);
        allocator.estimate = Some(500_000);
        allocator.allocate(at(6400), &[camera(&SIMULCAST)]);
        assert_eq!(allocator.deficit(), 1_500_000 - 450_000);
    }

    #[test]
    fn steps_up_the_link_takes_back_make_the_next_wait_longer() {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut allocator = Allocator::default();
        let mut step = |estimate, s| {
            allocator.estimate = Some(estimate);
            allocator.congested = true;
            allocator.allocate(at(s), &[camera(&SIMULCAST)])[0]
        };
        assert_eq!(step(300_000, 0.0), Layer(0));
        // A probe through a burst allowance reads 700 kbit/s: up, and taken back at once.
        assert_eq!(step(700_000, 3.0), Layer(1));
        assert_eq!(step(300_000, 4.0), Layer(0));
        // The next try waits 6 s instead of 3 ...
        assert_eq!(step(700_000, 9.9), Layer(0));
        assert_eq!(step(700_000, 10.1), Layer(1));
        assert_eq!(step(300_000, 11.0), Layer(0));
        // ... then 12 s, and no longer.
        assert_eq!(step(700_000, 22.9), Layer(0));
        assert_eq!(step(700_000, 23.1), Layer(1));
        assert_eq!(step(300_000, 24.0), Layer(0));
        assert_eq!(step(700_000, 35.9), Layer(0));
        assert_eq!(step(700_000, 36.1), Layer(1));
        // A step up that holds for 5 s was real: the next fall waits 3 s again.
        assert_eq!(step(300_000, 41.2), Layer(0));
        assert_eq!(step(700_000, 44.3), Layer(1));
    }

    #[test]
    fn without_congestion_a_low_estimate_takes_nothing_away() {
        let t0 = Instant::now();
        let mut allocator = Allocator {
            estimate: Some(2_000_000),
            ..Allocator::default()
        };
        assert_eq!(
            allocator.allocate(t0, &[camera(&SIMULCAST)]),
            vec![Layer(2)]
        );
        // The estimate falls below what arrives fine: f stays, and nothing is missing.
        allocator.estimate = Some(300_000);
        assert_eq!(
            allocator.allocate(t0, &[camera(&SIMULCAST)]),
            vec![Layer(2)]
        );
        assert_eq!(allocator.deficit(), 0);
        allocator.congested = true;
        assert_eq!(
            allocator.allocate(t0, &[camera(&SIMULCAST)]),
            vec![Layer(0)]
        );
    }

    #[test]
    fn the_first_estimate_takes_away_what_was_chosen_without_one() {
        let t0 = Instant::now();
        let mut allocator = Allocator::default();
        assert_eq!(allocator.allocate(t0, &[camera(&SIMULCAST)]), [Layer(2)]);
        // The subscriber's answer accepted feedback: its link starts at 1 Mbit/s.
        allocator.estimate = Some(1_000_000);
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(allocator.allocate(t1, &[camera(&SIMULCAST)]), [Layer(1)]);
        // From then on, without congestion, a lower estimate takes nothing away.
        allocator.estimate = Some(300_000);
        assert_eq!(allocator.allocate(t1, &[camera(&SIMULCAST)]), [Layer(1)]);
    }

    #[test]
    fn a_provisional_estimate_keeps_the_top_layer_for_later() {
        let t0 = Instant::now();
        let ramping = [(0, 100_000), (1, 250_000), (2, 400_000)];
        let mut allocator = Allocator::with_estimate(Some(1_000_000));
        assert_eq!(allocator.allocate(t0, &[camera(&ramping)]), [Layer(1)]);
        assert_eq!(
            allocator.deficit(),
            150_000,
            "a probe looks for the top layer"
        );
        // A single layer is taken whatever the link.
        assert_eq!(
            allocator.allocate(t0, &[camera(&[(3, 400_000)])]),
            [Layer(3)]
        );
        allocator.provisional = false;
        let later = t0 + Duration::from_secs(2);
        assert_eq!(allocator.allocate(later, &[camera(&ramping)]), [Layer(2)]);
    }

    #[test]
    fn without_congestion_nothing_is_paused() {
        let t0 = Instant::now();
        let mut allocator = Allocator {
            estimate: Some(100_000),
            ..Allocator::default()
        };
        // A new subscriber whose estimate is still low, and a single 2.5 Mbit/s layer.
        assert_eq!(
            allocator.allocate(t0, &[camera(&SIMULCAST)]),
            vec![Layer(0)]
        );
        assert_eq!(
            allocator.allocate(t0, &[camera(&[(3, 2_500_000)])]),
            vec![Layer(3)]
        );
        allocator.congested = true;
        assert_eq!(allocator.allocate(t0, &[camera(&SIMULCAST)]), vec![Paused]);
    }

    #[test]
    fn what_the_client_asks_for_applies_at_once() {
        let t0 = Instant::now();
        let mut allocator = Allocator {
            estimate: Some(2_000_000),
            ..Allocator::default()
        };
        let small = Demand {
            max_quality: Some(0),
            ..camera(&SIMULCAST)
        };
        assert_eq!(allocator.allocate(t0, &[small]), vec![Layer(0)]);
        // Not limited by the link: the bigger element gets its layer on the spot.
        assert_eq!(
            allocator.allocate(t0, &[camera(&SIMULCAST)]),
            vec![Layer(2)]
        );
    }

    #[test]
    fn without_an_estimate_every_track_gets_its_best_useful_layer() {
        let small = Demand {
            max_quality: Some(1),
            ..camera(&SIMULCAST)
        };
        let allocations = with(None).allocate(&[camera(&SIMULCAST), small, camera(&[])]);
        assert_eq!(allocations, vec![Layer(2), Layer(1), Idle]);
    }

    #[test]
    fn a_capped_link_gets_the_layer_that_fits() {
        // 500 kbit/s: q (150) then h (+300) fit, f does not.
        assert_eq!(
            with(Some(500_000)).allocate(&[camera(&SIMULCAST)]),
            vec![Layer(1)]
        );
        assert_eq!(
            with(Some(200_000)).allocate(&[camera(&SIMULCAST)]),
            vec![Layer(0)]
        );
        assert_eq!(
            with(Some(100_000)).allocate(&[camera(&SIMULCAST)]),
            vec![Paused]
        );
    }

    #[test]
    fn audio_goes_first_then_screen_shares_then_cameras() {
        let audio = Demand {
            is_video: false,
            layers: vec![(3, 40_000)],
            ..camera(&[])
        };
        let screen = Demand {
            screen: true,
            ..camera(&SIMULCAST)
        };
        // 40 for audio, 150 for the screen's q; the camera's q (150) no longer fits.
        let allocations =
            with(Some(300_000)).allocate(&[camera(&SIMULCAST), audio.clone(), screen.clone()]);
        assert_eq!(allocations, vec![Paused, Layer(3), Layer(0)]);
        // Enough for both lowest layers, then the screen share goes up first.
        let allocations = with(Some(700_000)).allocate(&[camera(&SIMULCAST), audio, screen]);
        assert_eq!(allocations, vec![Layer(0), Layer(3), Layer(1)]);
    }

    #[test]
    fn a_disabled_track_is_off_and_costs_nothing() {
        let off = Demand {
            disabled: true,
            ..camera(&SIMULCAST)
        };
        let allocations = with(Some(1_700_000)).allocate(&[off.clone(), camera(&SIMULCAST)]);
        assert_eq!(allocations, vec![Off, Layer(2)]);
        assert_eq!(with(None).allocate(&[off]), vec![Off]);
    }

    #[test]
    fn unmeasured_layers_cost_what_is_assumed() {
        let fresh = camera(&[(0, 0), (1, 0), (2, 0)]);
        assert_eq!(with(Some(700_000)).allocate(&[fresh]), vec![Layer(1)]);
    }
}
