//! The allocator's choices for given estimates, priorities and histories, with the time
//! handed in.

use super::*;
use Allocation::{Idle, Off, Paused};

/// A spatial layer without temporal layers, as most tests have them.
#[allow(non_snake_case)]
fn Layer(quality: Quality) -> Allocation {
    Allocation::Layer(Step::spatial(quality))
}

fn camera(layers: &[(Quality, u64)]) -> Demand {
    Demand {
        key: 0,
        is_video: true,
        screen: false,
        max_quality: None,
        max_temporal: None,
        disabled: false,
        lowest_announced: None,
        layers: layers
            .iter()
            .map(|&(q, rate)| (Step::spatial(q), rate))
            .collect(),
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
fn a_provisional_link_waits_for_announced_lower_layers_rather_than_take_the_top_alone() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    // The publisher announced q, h and f; its f arrived first.
    let announced = |layers: &[(Quality, u64)]| Demand {
        lowest_announced: Some(0),
        ..camera(layers)
    };
    let mut allocator = Allocator::with_estimate(Some(1_000_000));
    assert_eq!(
        allocator.allocate(at(0), &[announced(&[(2, 400_000)])]),
        [Idle]
    );
    assert!(allocator.waiting());
    assert_eq!(allocator.deficit(), 0, "nothing to probe for while waiting");
    assert_eq!(
        allocator.allocate(at(500), &[announced(&[(2, 400_000)])]),
        [Idle]
    );
    // q and h come: the provisional rule keeps f for later, with no hold for the wait.
    assert_eq!(
        allocator.allocate(at(600), &[announced(&SIMULCAST)]),
        [Layer(1)]
    );
    assert!(!allocator.waiting());

    // Lower layers that never come keep it waiting no longer than `WAIT_FOR_LOWER`.
    let mut allocator = Allocator::with_estimate(Some(1_000_000));
    assert_eq!(
        allocator.allocate(at(0), &[announced(&[(2, 400_000)])]),
        [Idle]
    );
    assert_eq!(
        allocator.allocate(at(0) + WAIT_FOR_LOWER, &[announced(&[(2, 400_000)])]),
        [Layer(2)]
    );
    assert!(!allocator.waiting());

    // A confirmed estimate, or a track that announced nothing lower, does not wait.
    let mut confirmed = Allocator::with_estimate(Some(1_000_000));
    confirmed.provisional = false;
    assert_eq!(
        confirmed.allocate(at(0), &[announced(&[(2, 400_000)])]),
        [Layer(2)]
    );
    let single = Demand {
        lowest_announced: Some(2),
        ..camera(&[(2, 400_000)])
    };
    assert_eq!(
        Allocator::with_estimate(Some(1_000_000)).allocate(at(0), &[single]),
        [Layer(2)]
    );
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
    // A receiver's own estimate (REMB) is never answered with a pause.
    allocator.never_pause = true;
    assert_eq!(
        allocator.allocate(t0, &[camera(&SIMULCAST)]),
        vec![Layer(0)]
    );
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
        layers: vec![(Step::spatial(3), 40_000)],
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

/// Simulcast with three temporal layers in each: (quality, temporal, cumulative rate).
fn temporal_ladder() -> Demand {
    let steps = [
        (0, 0, 60_000),
        (0, 1, 100_000),
        (0, 2, 150_000),
        (1, 0, 180_000),
        (1, 1, 300_000),
        (1, 2, 450_000),
        (2, 0, 600_000),
        (2, 1, 1_000_000),
        (2, 2, 1_500_000),
    ];
    Demand {
        layers: steps
            .iter()
            .map(|&(quality, temporal, rate)| (Step { quality, temporal }, rate))
            .collect(),
        ..camera(&[])
    }
}

fn step(quality: Quality, temporal: u8) -> Allocation {
    Allocation::Layer(Step { quality, temporal })
}

#[test]
fn temporal_layers_are_finer_steps_between_spatial_ones() {
    // 400 kbit/s: q at full rate (150) and h at two thirds of its frames (+150).
    assert_eq!(
        with(Some(400_000)).allocate(&[temporal_ladder()]),
        vec![step(1, 1)]
    );
    // 80 kbit/s: q's base layer rather than a pause.
    assert_eq!(
        with(Some(80_000)).allocate(&[temporal_ladder()]),
        vec![step(0, 0)]
    );
    assert_eq!(
        with(Some(50_000)).allocate(&[temporal_ladder()]),
        vec![Paused]
    );
    // A frame rate asked for caps the temporal layer.
    let slow = Demand {
        max_temporal: Some(1),
        ..temporal_ladder()
    };
    assert_eq!(with(Some(5_000_000)).allocate(&[slow]), vec![step(2, 1)]);
}

#[test]
fn going_up_takes_one_spatial_layer_with_the_temporal_layers_that_fit() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let mut allocator = Allocator::default();
    let mut to = |estimate, ms| {
        allocator.estimate = Some(estimate);
        allocator.congested = true;
        allocator.allocate(at(ms), &[temporal_ladder()])[0]
    };
    assert_eq!(to(5_000_000, 0), step(2, 2));
    // Down at once, to a step within h: no keyframe needed between its temporal steps.
    assert_eq!(to(350_000, 100), step(1, 1));
    // Up after the hold: one spatial layer at most (h to f), with all of its temporal
    // layers that fit.
    assert_eq!(to(5_000_000, 3200), step(2, 2));
    // The link takes part of it back: f's base layer, held twice as long as before.
    assert_eq!(to(700_000, 3300), step(2, 0));
    assert_eq!(to(5_000_000, 6400), step(2, 0));
    assert_eq!(to(5_000_000, 9400), step(2, 2));
    // From a pause, up to the lowest spatial layer's best step only.
    assert_eq!(to(30_000, 20_000), Paused);
    assert_eq!(to(5_000_000, 23_100), step(0, 2));
}

#[test]
fn unmeasured_layers_cost_what_is_assumed() {
    let fresh = camera(&[(0, 0), (1, 0), (2, 0)]);
    assert_eq!(with(Some(700_000)).allocate(&[fresh]), vec![Layer(1)]);
}
