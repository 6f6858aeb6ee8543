//! What one participant may send and hold: sizes of what it says about itself, how many
//! tracks it announces, how fast it talks, and how far behind its socket may fall. The
//! server fills these from its `[limits]` table (docs/configuration.md, "Limits").

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Per-participant bounds enforced by signaling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLimits {
    /// Tracks announced with AddTrackRequest (bound or still pending).
    pub max_tracks: u32,
    pub max_metadata_bytes: usize,
    pub max_attributes: u32,
    /// Keys and values together.
    pub max_attributes_bytes: usize,
    pub max_name_bytes: usize,
    pub max_room_metadata_bytes: usize,
    pub max_data_packet_bytes: usize,
    pub data_packets_per_second: u32,
    pub data_bytes_per_second: usize,
    pub signal_requests_per_second: u32,
    /// Encoded signaling output waiting for one participant's socket.
    pub signal_queue_bytes: usize,
    /// Longest one message may take to be written to a participant's socket.
    pub signal_write_timeout: Duration,
    /// How long a participant whose signaling was lost waits for its client to resume
    /// (`resume.rs`) before it leaves.
    pub departure_timeout: Duration,
    /// How often a connected participant is sent a fresh join token (`RefreshToken`), so its
    /// client can still resume once the token it joined with has expired.
    pub token_refresh_interval: Duration,
}

impl Default for SessionLimits {
    /// The production defaults (the same as the server's `[limits]` table).
    fn default() -> Self {
        SessionLimits {
            max_tracks: 8,
            max_metadata_bytes: 64 * 1024,
            max_attributes: 64,
            max_attributes_bytes: 16 * 1024,
            max_name_bytes: 256,
            max_room_metadata_bytes: 64 * 1024,
            max_data_packet_bytes: crate::data::MAX_DATA_PACKET,
            data_packets_per_second: 200,
            data_bytes_per_second: 2 * 1024 * 1024,
            signal_requests_per_second: 50,
            signal_queue_bytes: 4 * 1024 * 1024,
            signal_write_timeout: Duration::from_secs(10),
            departure_timeout: Duration::from_secs(20),
            token_refresh_interval: Duration::from_secs(300),
        }
    }
}

/// A participant field over its limit, said so that the person who set it can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TooLarge {
    #[error("the participant {field} is {size} bytes; at most {max} are allowed")]
    Bytes {
        field: &'static str,
        size: usize,
        max: usize,
    },
    #[error("the participant has {count} attributes; at most {max} are allowed")]
    Attributes { count: usize, max: u32 },
}

impl SessionLimits {
    fn bytes(field: &'static str, size: usize, max: usize) -> Result<(), TooLarge> {
        if size > max {
            return Err(TooLarge::Bytes { field, size, max });
        }
        Ok(())
    }

    pub(crate) fn check_metadata(&self, metadata: &str) -> Result<(), TooLarge> {
        Self::bytes("metadata", metadata.len(), self.max_metadata_bytes)
    }

    pub(crate) fn check_name(&self, name: &str) -> Result<(), TooLarge> {
        Self::bytes("name", name.len(), self.max_name_bytes)
    }

    /// What a join token says about the participant (metadata, name, attributes), within
    /// the sizes a participant may have: checked before the join (`/rtc`, WHIP/WHEP).
    pub(crate) fn check_claims(&self, claims: &crate::token::Claims) -> Result<(), TooLarge> {
        self.check_metadata(claims.metadata.as_deref().unwrap_or_default())?;
        self.check_name(claims.name.as_deref().unwrap_or_default())?;
        if let Some(attributes) = &claims.attributes {
            self.check_attributes(attributes)?;
        }
        Ok(())
    }

    /// Checks a participant's whole set of attributes (after a merge).
    pub(crate) fn check_attributes<'a>(
        &self,
        attributes: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<(), TooLarge> {
        let (mut count, mut size) = (0usize, 0usize);
        for (key, value) in attributes {
            count += 1;
            size += key.len() + value.len();
        }
        if count > self.max_attributes as usize {
            return Err(TooLarge::Attributes {
                count,
                max: self.max_attributes,
            });
        }
        Self::bytes("attributes", size, self.max_attributes_bytes)
    }
}

/// Merges attribute changes the way LiveKit does: an empty value deletes the key.
pub(crate) fn merge_attributes(
    current: &mut HashMap<String, String>,
    changes: impl IntoIterator<Item = (String, String)>,
) {
    for (key, value) in changes {
        if value.is_empty() {
            current.remove(&key);
        } else {
            current.insert(key, value);
        }
    }
}

/// A token bucket: `rate` per second on average, bursts up to `burst`.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// Takes `cost` tokens if there are that many; false (and nothing taken) otherwise.
    pub(crate) fn take(&mut self, cost: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

/// How long a burst of signaling requests may be, in seconds of the average rate: a join
/// sends its offer, a few dozen ICE candidates and its tracks at once.
pub(crate) const SIGNAL_BURST_SECS: f64 = 4.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(10.0, 20.0);
        let taken = (0..100).filter(|_| bucket.take(1.0, start)).count();
        assert_eq!(taken, 20, "the burst, no more");
        assert!(!bucket.take(1.0, start + Duration::from_millis(50)));
        assert!(bucket.take(1.0, start + Duration::from_millis(110)));
        // Refills stop at the burst.
        let later = start + Duration::from_secs(60);
        let taken = (0..100).filter(|_| bucket.take(1.0, later)).count();
        assert_eq!(taken, 20);
    }

    #[test]
    fn attributes_are_limited_by_count_and_total_size() {
        let limits = SessionLimits {
            max_attributes: 2,
            max_attributes_bytes: 10,
            ..Default::default()
        };
        let a: HashMap<String, String> = [("k".into(), "v".into())].into();
        assert!(limits.check_attributes(&a).is_ok());
        let three: HashMap<String, String> = [
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("c".into(), "3".into()),
        ]
        .into();
        assert_eq!(
            limits.check_attributes(&three),
            Err(TooLarge::Attributes { count: 3, max: 2 })
        );
        let big: HashMap<String, String> = [("key".into(), "a value".into())].into();
        assert_eq!(
            limits.check_attributes(&big),
            Ok(()),
            "exactly the limit is allowed"
        );
        let bigger: HashMap<String, String> = [("key".into(), "a longer value".into())].into();
        assert!(limits.check_attributes(&bigger).is_err());
    }

    #[test]
    fn merging_deletes_keys_set_to_empty() {
        let mut current: HashMap<String, String> =
            [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        merge_attributes(
            &mut current,
            [("a".into(), String::new()), ("c".into(), "3".into())],
        );
        assert_eq!(
            current,
            [("b".into(), "2".into()), ("c".into(), "3".into())].into()
        );
    }
}
