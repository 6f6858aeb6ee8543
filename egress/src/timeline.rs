//! Placing frames of different tracks on one timeline.
//!
//! Each track's RTP clock starts at a random value, so times are mapped to wall-clock time:
//! through the publisher's RTCP sender reports when they are known (audio and video of one
//! publisher share that clock, which is what keeps them in sync), else through the arrival
//! time of the packets. A publisher's sender clock may be off from ours by any amount, so
//! it is only used relative to arrivals: the offset between the two is the smallest seen
//! for that publisher (the packet that waited least in the network).

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use switchboard_sfu::SenderClock;

/// Seconds since the Unix epoch.
fn wall_secs(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Unwraps 32-bit RTP timestamps into a monotonic 64-bit count.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Unwrapper {
    last: Option<(u32, i64)>,
}

impl Unwrapper {
    pub fn unwrap(&mut self, ts: u32) -> i64 {
        let extended = match self.last {
            None => i64::from(ts),
            Some((last_ts, last_ext)) => last_ext + i64::from(ts.wrapping_sub(last_ts) as i32),
        };
        // Only move the reference forward, so a late packet does not drag it back.
        if self.last.is_none_or(|(_, last_ext)| extended > last_ext) {
            self.last = Some((ts, extended));
        }
        extended
    }

    /// Unwraps a timestamp near the current position without moving it.
    pub fn peek(&self, ts: u32) -> i64 {
        match self.last {
            None => i64::from(ts),
            Some((last_ts, last_ext)) => last_ext + i64::from(ts.wrapping_sub(last_ts) as i32),
        }
    }
}

/// The clock of one track.
#[derive(Debug)]
pub(crate) struct TrackClock {
    pub participant: String,
    clock_rate: f64,
    rtp: Unwrapper,
    /// (wall seconds, extended RTP) of the first packet, as it arrived here.
    arrival_anchor: Option<(f64, i64)>,
    /// (sender wall seconds, extended RTP) from the last sender report.
    sender_anchor: Option<(f64, i64)>,
    /// The mapping in use, fixed at the first frame placed: from then on the track's own
    /// RTP clock alone moves it, so its timestamps never jump when reports come or go.
    frozen: Option<(f64, i64)>,
}

impl TrackClock {
    pub fn new(participant: String, clock_rate: u32) -> Self {
        Self {
            participant,
            clock_rate: f64::from(clock_rate.max(1)),
            rtp: Unwrapper::default(),
            arrival_anchor: None,
            sender_anchor: None,
            frozen: None,
        }
    }

    /// Whether a sender report was seen (the mapping can then line the track up with the
    /// publisher's other tracks).
    pub fn has_sender_clock(&self) -> bool {
        self.sender_anchor.is_some()
    }
}

/// Every track's clock, and each publisher's offset between its sender clock and ours.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    /// Our wall time minus the publisher's sender time, smallest seen.
    offsets: HashMap<String, f64>,
}

impl Timeline {
    /// Records a packet's timing. `arrival` is converted with the pair (`now`, `now_wall`).
    pub fn packet(
        &mut self,
        clock: &mut TrackClock,
        timestamp: u32,
        arrival: Instant,
        sender: Option<SenderClock>,
        (now, now_wall): (Instant, SystemTime),
    ) {
        let ext = clock.rtp.unwrap(timestamp);
        let arrived = wall_secs(now_wall) - now.saturating_duration_since(arrival).as_secs_f64();
        if clock.arrival_anchor.is_none() {
            clock.arrival_anchor = Some((arrived, ext));
        }
        if let Some(sender) = sender {
            let sr_ext = clock.rtp.peek(sender.rtp);
            clock.sender_anchor = Some((wall_secs(sender.ntp), sr_ext));
            let sent = wall_secs(sender.ntp) + (ext - sr_ext) as f64 / clock.clock_rate;
            let offset = arrived - sent;
            self.offsets
                .entry(clock.participant.clone())
                .and_modify(|o| *o = o.min(offset))
                .or_insert(offset);
        }
    }

    /// Our wall-clock time (seconds) of RTP time `timestamp` of a track, once it has seen a
    /// packet. The first call fixes the track's mapping.
    pub fn wall_time(&self, clock: &mut TrackClock, timestamp: u32) -> Option<f64> {
        let ext = clock.rtp.peek(timestamp);
        if clock.frozen.is_none() {
            let offset = self.offsets.get(&clock.participant);
            clock.frozen = match (clock.sender_anchor, offset) {
                (Some((wall, rtp)), Some(offset)) => Some((wall + offset, rtp)),
                _ => Some(clock.arrival_anchor?),
            };
        }
        let (wall, rtp) = clock.frozen?;
        Some(wall + (ext - rtp) as f64 / clock.clock_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unwrap_crosses_the_32_bit_boundary_both_ways() {
        let mut u = Unwrapper::default();
        assert_eq!(u.unwrap(u32::MAX - 10), i64::from(u32::MAX - 10));
        assert_eq!(u.unwrap(5), i64::from(u32::MAX) + 6);
        // A late packet from before the wrap.
        assert_eq!(u.unwrap(u32::MAX - 2), i64::from(u32::MAX - 2));
        assert_eq!(u.peek(10), i64::from(u32::MAX) + 11);
    }

    #[test]
    fn sender_reports_keep_audio_and_video_of_a_publisher_in_sync() {
        let now = Instant::now();
        let now_wall = SystemTime::now();
        let mut timeline = Timeline::default();
        // The publisher's clock is an hour off ours; its audio and video were captured at
        // the same instant but the video arrives 80 ms later (bigger frames).
        let sender_epoch = now_wall - Duration::from_secs(3600);
        let mut audio = TrackClock::new("alice".into(), 48_000);
        let mut video = TrackClock::new("alice".into(), 90_000);
        let audio_sr = SenderClock {
            ntp: sender_epoch,
            rtp: 1_000,
        };
        let video_sr = SenderClock {
            ntp: sender_epoch,
            rtp: 500_000,
        };
        timeline.packet(&mut audio, 1_000, now, Some(audio_sr), (now, now_wall));
        let late = now + Duration::from_millis(80);
        timeline.packet(
            &mut video,
            500_000,
            late,
            Some(video_sr),
            (late, now_wall + Duration::from_millis(80)),
        );
        let a = timeline.wall_time(&mut audio, 1_000).unwrap();
        let v = timeline.wall_time(&mut video, 500_000).unwrap();
        assert!((a - v).abs() < 0.001, "audio {a} video {v}");
        // 100 ms later in RTP time is 100 ms later on the timeline.
        let a2 = timeline.wall_time(&mut audio, 1_000 + 4_800).unwrap();
        assert!((a2 - a - 0.1).abs() < 0.0001);
    }

    #[test]
    fn without_sender_reports_arrival_time_places_frames() {
        let now = Instant::now();
        let now_wall = SystemTime::now();
        let mut timeline = Timeline::default();
        let mut clock = TrackClock::new("bob".into(), 90_000);
        timeline.packet(&mut clock, 9_000, now, None, (now, now_wall));
        let first = timeline.wall_time(&mut clock, 9_000).unwrap();
        assert!((first - wall_secs(now_wall)).abs() < 0.001);
        let later = timeline.wall_time(&mut clock, 9_000 + 90_000).unwrap();
        assert!((later - first - 1.0).abs() < 0.0001);
        // A sender report arriving later does not move a track already placed.
        let sr = SenderClock {
            ntp: now_wall - Duration::from_secs(50),
            rtp: 9_000 + 90_000,
        };
        let t = now + Duration::from_secs(1);
        timeline.packet(
            &mut clock,
            9_000 + 90_000,
            t,
            Some(sr),
            (t, now_wall + Duration::from_secs(1)),
        );
        let again = timeline.wall_time(&mut clock, 9_000 + 90_000).unwrap();
        assert!((again - later).abs() < 1e-9);
    }
}
