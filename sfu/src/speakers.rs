//! Active speakers: each audio track's level from the audio-level header extension
//! (RFC 6464) its publisher stamps, judged over 400 ms windows, and every room's speakers
//! sent to its members as changes (LiveKit's `SpeakersChanged`).

use std::time::Duration;

use crate::api::PeerEvent;
use crate::worker::Worker;

/// How often speakers are judged and sent.
pub(crate) const SPEAKER_WINDOW: Duration = Duration::from_millis(400);
/// Levels (0 loudest … 127 silent, in −dBov) at or below this count as speech.
const SPEECH_LEVEL: u8 = 35;
/// A track speaks in a window when speech took at least this share of it.
const SPEECH_SHARE: f64 = 0.4;
/// The weight of the newest window in the smoothed level.
const SMOOTHING: f64 = 2.0 / 3.0;
/// A smoothed level below this is silence: −35 dBov as a linear level.
const ACTIVE_LEVEL: f64 = 0.0178;

/// One audio track's level over the current window.
#[derive(Debug, Default)]
pub(crate) struct AudioLevel {
    /// Speech heard in this window, and its loudest level.
    speech: Duration,
    loudest: Option<u8>,
    last_rtp_time: Option<u32>,
    /// The smoothed linear level (0 … 1).
    smoothed: f64,
}

impl AudioLevel {
    /// A packet of `level` (0 loudest … 127 silent) at RTP time `rtp_time` (48 kHz).
    pub fn packet(&mut self, level: u8, rtp_time: u32) {
        // A packet lasts until the next one's time; DTX gaps count as the last packet's.
        let ticks = self
            .last_rtp_time
            .map_or(960, |last| rtp_time.wrapping_sub(last).min(48_000 / 10));
        self.last_rtp_time = Some(rtp_time);
        if level <= SPEECH_LEVEL {
            self.speech += Duration::from_micros(u64::from(ticks) * 1_000_000 / 48_000);
            self.loudest = Some(self.loudest.map_or(level, |l| l.min(level)));
        }
    }

    /// Ends a window: the smoothed level, 0 for silence.
    pub fn window(&mut self) -> f64 {
        let share = self.speech.as_secs_f64() / SPEAKER_WINDOW.as_secs_f64();
        let level = match self.loudest {
            Some(loudest) if share >= SPEECH_SHARE => {
                // Quieter the less of the window was speech.
                let adjusted = f64::from(loudest) - 20.0 * share.min(1.0).log10();
                10f64.powf(-adjusted / 20.0)
            }
            _ => 0.0,
        };
        self.smoothed = SMOOTHING * level + (1.0 - SMOOTHING) * self.smoothed;
        if self.smoothed < ACTIVE_LEVEL / 10.0 {
            self.smoothed = 0.0;
        }
        self.speech = Duration::ZERO;
        self.loudest = None;
        self.smoothed
    }
}

/// A participant speaking at `eighths`/8 of full level (0: stopped), as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speaker {
    pub participant: String,
    pub eighths: u8,
    pub active: bool,
}

impl Worker {
    /// Ends a speaker window in every room: members hear who started, changed level or
    /// stopped speaking.
    pub(crate) fn judge_speakers(&mut self) {
        self.tell_rooms(
            |part| {
                let level = part
                    .tracks
                    .iter_mut()
                    .flatten()
                    .filter_map(|t| t.audio_level.as_mut().map(AudioLevel::window))
                    .fold(0.0, f64::max);
                let heard = if level >= ACTIVE_LEVEL {
                    // Eighths: small changes are not worth a message.
                    (level * 8.0).ceil().clamp(1.0, 8.0) as u8
                } else {
                    0
                };
                if heard == part.speaking {
                    return None;
                }
                part.speaking = heard;
                Some(Speaker {
                    participant: part.key.clone(),
                    eighths: heard,
                    active: heard > 0,
                })
            },
            |speakers| PeerEvent::SpeakersChanged { speakers },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 ms Opus packets at `level` for `ms`.
    fn talk(track: &mut AudioLevel, time: &mut u32, level: u8, ms: u32) {
        for _ in 0..ms / 20 {
            track.packet(level, *time);
            *time = time.wrapping_add(960);
        }
    }

    #[test]
    fn speech_makes_a_level_and_silence_takes_it_away() {
        let mut track = AudioLevel::default();
        let mut time = 0;
        talk(&mut track, &mut time, 127, 400);
        assert_eq!(track.window(), 0.0);
        talk(&mut track, &mut time, 20, 400);
        let loud = track.window();
        assert!(loud >= ACTIVE_LEVEL, "{loud}");
        talk(&mut track, &mut time, 20, 400);
        assert!(track.window() > loud, "rises towards the level");
        // A little speech (under 40 % of the window) is not speaking.
        talk(&mut track, &mut time, 20, 100);
        talk(&mut track, &mut time, 127, 300);
        let fading = track.window();
        talk(&mut track, &mut time, 127, 400);
        let gone = track.window();
        assert!(gone < fading && gone < ACTIVE_LEVEL, "{fading} then {gone}");
    }

    #[test]
    fn a_quiet_voice_is_below_a_loud_one() {
        let (mut quiet, mut loud) = (AudioLevel::default(), AudioLevel::default());
        let (mut t1, mut t2) = (0, 0);
        talk(&mut quiet, &mut t1, 34, 400);
        talk(&mut loud, &mut t2, 5, 400);
        assert!(quiet.window() < loud.window());
    }
}
