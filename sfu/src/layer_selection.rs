//! The worker's side of layer selection: runs a subscriber's allocator over its
//! down-tracks and applies the choices, and keeps each published track's set of wanted
//! layers (what the hot path checks before a fan-out) in step with them.

use crate::allocator::{Allocation, Demand, Step};
use crate::api::{PeerEvent, TrackSettings};
use crate::down_track::DownTrack;
use crate::ids::{DownTrackId, TrackId};
use crate::participant::Slot;
use crate::published_track::{PublishedTrack, Quality};
use crate::worker::Worker;

impl Worker {
    pub(crate) fn published(&self, id: TrackId) -> Option<&PublishedTrack> {
        self.parts
            .get(id.publisher)?
            .as_ref()?
            .tracks
            .get(id.index)?
            .as_ref()
    }

    pub(crate) fn down_track(&self, id: DownTrackId) -> Option<&DownTrack> {
        self.parts
            .get(id.subscriber)?
            .as_ref()?
            .down_tracks
            .get(id.index)?
            .as_ref()
    }

    pub(crate) fn published_mut(&mut self, id: TrackId) -> Option<&mut PublishedTrack> {
        self.parts
            .get_mut(id.publisher)?
            .as_mut()?
            .tracks
            .get_mut(id.index)?
            .as_mut()
    }

    /// The publisher started or stopped a layer of track `id`: every subscriber of it
    /// chooses again.
    pub(crate) fn layers_changed(&mut self, id: TrackId) {
        let Some(track) = self.published(id) else {
            return;
        };
        let mut subscribers: Vec<Slot> = track.down_tracks.iter().map(|d| d.subscriber).collect();
        subscribers.sort_unstable();
        subscribers.dedup();
        for sub in subscribers {
            self.allocate(sub);
        }
    }

    /// Runs `sub`'s allocator over all of its down-tracks and applies what it chose.
    pub(crate) fn allocate(&mut self, sub: Slot) {
        let Some(part) = self.parts[sub].as_ref() else {
            return;
        };
        let mut chosen = Vec::new();
        let mut demands = Vec::new();
        for (index, down) in part.down_tracks.iter().enumerate() {
            let Some((down, source)) = down.as_ref().and_then(|d| Some((d, d.source?))) else {
                continue;
            };
            let Some(track) = self.published(source) else {
                continue;
            };
            let layers = track.active_steps();
            chosen.push((index, source, track.is_svc(), top_temporal(&layers)));
            demands.push(Demand {
                key: index,
                is_video: track.is_video(),
                screen: track.screen,
                max_quality: track.max_quality_for(&down.settings),
                max_temporal: track.max_temporal_for(&down.settings),
                disabled: down.settings.disabled,
                lowest_announced: track.lowest_announced(),
                layers,
            });
        }
        let now = self.now;
        let Some(part) = self.parts[sub].as_mut() else {
            return;
        };
        let allocations = part.allocator.allocate(now, &demands);
        let mut sources: Vec<TrackId> = chosen.iter().map(|(_, source, ..)| *source).collect();
        for ((index, _, svc, tops), allocation) in chosen.into_iter().zip(allocations) {
            let Some(down) = part.down_tracks[index].as_mut() else {
                continue;
            };
            down.layer.svc = svc;
            let (target, paused) = match allocation {
                Allocation::Layer(step) => (Some(step), false),
                Allocation::Idle | Allocation::Off => (None, false),
                Allocation::Paused => (None, true),
            };
            // A layer's top step forwards all of its temporal layers, also any it adds.
            down.layer.set_temporal(target.and_then(|step| {
                let top = tops.iter().find(|(q, _)| *q == step.quality).map(|t| t.1);
                (top != Some(step.temporal)).then_some(step.temporal)
            }));
            let target = target.map(|step| step.quality);
            let before = down.layer.wanted();
            if down.layer.set_target(target) && down.kind == crate::api::TrackKind::Video {
                tracing::debug!(
                    participant = %part.key,
                    track = %down.track_sid,
                    ?allocation,
                    estimate = ?part.allocator.estimate,
                    congested = part.allocator.congested,
                    "layer target"
                );
                let direction = match (target, before) {
                    (None, _) => "off",
                    (Some(q), b) if b != 0 && crate::published_track::bit(q) < b => "down",
                    _ => "up",
                };
                metrics::counter!("switchboard_layer_targets_total", "direction" => direction)
                    .increment(1);
            }
            if down.paused != paused {
                metrics::counter!(
                    "switchboard_stream_pauses_total",
                    "state" => if paused { "paused" } else { "resumed" }
                )
                .increment(1);
                down.paused = paused;
                let _ = part.events.send(PeerEvent::StreamState {
                    publisher: down.publisher_key.clone(),
                    track_sid: down.track_sid.clone(),
                    paused,
                });
            }
        }
        // Also the sources whose targets stayed: a down-track new to one (a viewer's
        // m-line switched to it) adds its wants all the same.
        sources.sort_unstable();
        sources.dedup();
        for source in sources {
            self.refresh_wanted(source);
        }
    }

    /// Subscribers whose allocator waits for a publisher's lower layers choose again (every
    /// `QUIET_PROBE_CHECK`): layers that never come must not keep them waiting.
    pub(crate) fn allocate_waiting(&mut self) {
        for sub in 0..self.parts.len() {
            if self.parts[sub]
                .as_ref()
                .is_some_and(|p| p.allocator.waiting())
            {
                self.allocate(sub);
            }
        }
    }

    /// The subscriber in `sub` asks `settings` of the tracks it receives named `sids`.
    pub(crate) fn track_settings(&mut self, sub: Slot, sids: &[String], settings: TrackSettings) {
        let Some(part) = self.parts[sub].as_mut() else {
            return;
        };
        // A set: a request may name thousands of sids (up to a 1 MiB message), and each
        // down-track looks itself up once.
        let sids: std::collections::HashSet<&str> = sids.iter().map(String::as_str).collect();
        for down in part.down_tracks.iter_mut().flatten() {
            if sids.contains(down.track_sid.as_str()) {
                down.settings = settings;
            }
        }
        self.allocate(sub);
    }

    /// Recomputes which layers of track `id` some down-track forwards or waits for.
    pub(crate) fn refresh_wanted(&mut self, id: TrackId) {
        let Some(track) = self.published(id) else {
            return;
        };
        let wanted = track
            .down_tracks
            .iter()
            .filter_map(|&d| self.down_track(d))
            .fold(0, |set, down| set | down.layer.wanted());
        if let Some(track) = self.published_mut(id) {
            track.wanted = wanted;
        }
        self.dynacast(id);
    }
}

/// The highest temporal step of each quality among `steps`.
fn top_temporal(steps: &[(Step, u64)]) -> Vec<(Quality, u8)> {
    let mut tops: Vec<(Quality, u8)> = Vec::new();
    for (step, _) in steps {
        match tops.iter_mut().find(|(q, _)| *q == step.quality) {
            Some(top) => top.1 = top.1.max(step.temporal),
            None => tops.push((step.quality, step.temporal)),
        }
    }
    tops
}
