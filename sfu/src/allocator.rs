//! One subscriber's allocator: which layer of each track it receives. The subscriber's
//! bandwidth estimate (when there is one) is shared out by priority: audio first, then
//! every video track's lowest useful layer (screen shares before cameras, larger requests
//! first), then upward one layer at a time in the same order. A video track whose lowest
//! layer does not fit is paused.

use crate::published_track::Quality;

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

/// The allocator of one subscriber: its estimate, and (to come) what it remembers between
/// allocations.
#[derive(Debug, Default)]
pub(crate) struct Allocator {
    /// The subscriber's available bandwidth, bits per second; `None`: unknown, no limit.
    pub estimate: Option<u64>,
}

impl Allocator {
    /// One allocation for each demand, in the same order.
    pub fn allocate(&self, demands: &[Demand]) -> Vec<Allocation> {
        let usable: Vec<Vec<(Quality, u64)>> = demands.iter().map(usable_layers).collect();
        let mut result: Vec<Allocation> = demands
            .iter()
            .zip(&usable)
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
            is_video: true,
            screen: false,
            max_quality: None,
            disabled: false,
            layers: layers.to_vec(),
        }
    }

    const SIMULCAST: [(Quality, u64); 3] = [(0, 150_000), (1, 450_000), (2, 1_500_000)];

    fn with(estimate: Option<u64>) -> Allocator {
        Allocator { estimate }
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
