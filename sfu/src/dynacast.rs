//! Dynacast: a publisher is told which simulcast layers some subscriber needs, so it stops
//! encoding the others (LiveKit's `SubscribedQualityUpdate`, which livekit-client with
//! `dynacast: true` turns into `active` flags on its encodings). A layer is turned on as
//! soon as it is needed and off only after it has not been for a while: a subscriber that
//! resizes, flaps or rejoins does not make the publisher restart an encoder every time.

use std::time::{Duration, Instant};

use crate::api::PeerEvent;
use crate::ids::TrackId;
use crate::published_track::Quality;
use crate::worker::Worker;

/// A layer nobody needs stays on this long (LiveKit waits as long).
const TURN_OFF_DELAY: Duration = Duration::from_secs(5);
/// The best simulcast quality there is (f).
const TOP: Quality = 2;

/// What a published track's publisher was told it must send.
#[derive(Debug, Default)]
pub(crate) struct Dynacast {
    /// The best quality announced; `None` before anything was (the publisher sends every
    /// layer until told otherwise); `Some(None)`: no layer.
    announced: Option<Option<Quality>>,
    /// Since when less has been needed than was announced.
    lower_since: Option<Instant>,
}

impl Dynacast {
    /// Subscribers now need up to `needed` (`None`: nothing). Returns what to announce now,
    /// if anything: more at once, less once it has been less for [`TURN_OFF_DELAY`].
    pub fn update(&mut self, now: Instant, needed: Option<Quality>) -> Option<Option<Quality>> {
        let needed = needed.map(|q| q.min(TOP));
        let announced = self.announced.unwrap_or(Some(TOP));
        let level = |q: Option<Quality>| q.map_or(-1, i16::from);
        if level(needed) >= level(announced) {
            self.lower_since = None;
            if self.announced.is_some() && needed == announced {
                return None;
            }
            if self.announced.is_none() && needed == announced {
                // Everything needed, and everything is being sent: nothing to say.
                return None;
            }
            self.announced = Some(needed);
            return Some(needed);
        }
        let since = *self.lower_since.get_or_insert(now);
        if now.saturating_duration_since(since) < TURN_OFF_DELAY {
            return None;
        }
        self.lower_since = None;
        self.announced = Some(needed);
        Some(needed)
    }

    /// Whether a lower announcement is waiting for its delay.
    pub fn pending(&self) -> bool {
        self.lower_since.is_some()
    }
}

impl Worker {
    /// Works out what the subscribers of track `id` need and tells its publisher when that
    /// changes. Simulcast video only: a single stream has nothing to turn off.
    pub(crate) fn dynacast(&mut self, id: TrackId) {
        let now = self.now;
        let Some(track) = self.published(id) else {
            return;
        };
        if !track.is_video() || !track.is_simulcast() {
            return;
        }
        let recorded = self.taps.iter().any(|tap| {
            self.parts[id.publisher]
                .as_ref()
                .is_some_and(|p| p.room == tap.room && tap.wants(&track.sid))
        });
        let needed = if recorded {
            Some(TOP)
        } else {
            track
                .down_tracks
                .iter()
                .filter_map(|&d| self.down_track(d))
                .filter(|down| !down.settings.disabled)
                .map(|down| track.max_quality_for(&down.settings).unwrap_or(TOP))
                .max()
        };
        let Some(part) = self.parts[id.publisher].as_mut() else {
            return;
        };
        let Some(track) = part.tracks.get_mut(id.index).and_then(Option::as_mut) else {
            return;
        };
        let announce = track.dynacast.update(now, needed);
        let (sid, pending) = (track.sid.clone(), track.dynacast.pending());
        if let Some(max_quality) = announce {
            part.emit(PeerEvent::SubscribedQuality {
                track_sid: sid,
                max_quality,
            });
        }
        if pending && !self.dynacast_pending.contains(&id) {
            self.dynacast_pending.push(id);
        }
    }

    /// Announces the lower layers whose delay has passed.
    pub(crate) fn dynacast_due(&mut self) {
        let pending = std::mem::take(&mut self.dynacast_pending);
        for id in pending {
            self.dynacast(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_go_on_at_once_and_off_after_the_delay() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut d = Dynacast::default();
        // Everything needed while everything is sent: nothing to say.
        assert_eq!(d.update(at(0), Some(2)), None);
        // Only q from now on: said 5 s later, if still so.
        assert_eq!(d.update(at(100), Some(0)), None);
        assert!(d.pending());
        assert_eq!(d.update(at(4000), Some(0)), None);
        assert_eq!(d.update(at(5100), Some(0)), Some(Some(0)));
        assert!(!d.pending());
        // h wanted: at once.
        assert_eq!(d.update(at(5200), Some(1)), Some(Some(1)));
        assert_eq!(d.update(at(5300), Some(1)), None);
        // Nobody: off after the delay; a need in between cancels it.
        assert_eq!(d.update(at(6000), None), None);
        assert_eq!(d.update(at(8000), Some(1)), None);
        assert!(!d.pending());
        assert_eq!(d.update(at(9000), None), None);
        assert_eq!(d.update(at(14_000), None), Some(None));
        assert_eq!(d.update(at(14_100), Some(2)), Some(Some(2)));
    }
}
