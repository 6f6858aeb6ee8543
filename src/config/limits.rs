//! Resource limits: one table of every bound a client can run into, each with a production
//! default. A limit is set as `--limit NAME=VALUE` (repeatable), `SWITCHBOARD_LIMIT_<NAME>`
//! or `[limits] NAME = VALUE` in the config file, with the usual precedence. Adding a limit is
//! one line in [`limits!`]; docs/configuration.md lists them all.

use std::collections::BTreeMap;
use std::time::Duration;

use super::error::{ConfigError, Origin};
use super::parse;
use super::sources::{Raw, Sources};

/// A count of things (tracks, connections, rooms); at least 1.
pub(super) fn count(input: &str) -> Result<u32, String> {
    match input.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number from 1 to {}", u32::MAX)),
    }
}

/// A size in bytes; at least 1. Suffixes `KiB` and `MiB` are accepted (`64KiB`).
pub(super) fn bytes(input: &str) -> Result<usize, String> {
    let err = || "expected a size in bytes above 0, like 65536 or 64KiB".to_owned();
    let (digits, unit) = match input.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => input.split_at(at),
        None => (input, ""),
    };
    let n: usize = digits.parse().map_err(|_| err())?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => return Err(err()),
    };
    match n.checked_mul(scale) {
        Some(v) if v >= 1 => Ok(v),
        _ => Err(err()),
    }
}

/// A duration above zero: seconds, or `500ms`, `30s`, `5m`.
pub(super) fn duration(input: &str) -> Result<Duration, String> {
    match parse::secs_or_duration(input) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("expected a duration above zero".to_owned()),
        Err(e) => Err(e),
    }
}

/// The largest request head: at least 8 KiB (the HTTP library's own floor, room for a join
/// token in a URL).
pub(super) fn header_bytes(input: &str) -> Result<usize, String> {
    match bytes(input)? {
        n if n >= 8192 => Ok(n),
        _ => Err("expected at least 8KiB".to_owned()),
    }
}

/// A rate per minute; at least 1.
pub(super) fn per_minute(input: &str) -> Result<u32, String> {
    count(input)
}

macro_rules! limits {
    ($( $(#[doc = $doc:literal])* $name:ident : $ty:ty = $default:expr, $parse:path; )*) => {
        /// Every configurable resource limit (see docs/configuration.md, "Limits").
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Limits {
            $( $(#[doc = $doc])* pub $name: $ty, )*
        }

        impl Default for Limits {
            fn default() -> Self {
                Limits { $( $name: $default, )* }
            }
        }

        /// Every limit's name, as written after `--limit` and in `[limits]`.
        pub(super) const LIMIT_NAMES: &[&str] = &[$( stringify!($name) ),*];

        impl Limits {
            /// Parses and sets one limit; `None` if no limit has that name.
            fn set(&mut self, name: &str, value: &str) -> Option<Result<(), String>> {
                match name {
                    $( stringify!($name) => Some($parse(value).map(|v| self.$name = v)), )*
                    _ => None,
                }
            }
        }
    };
}

limits! {
    /// Largest HTTP request body (`/v1`, Twirp, WHIP/WHEP offers); a larger one gets 413.
    http_request_body_bytes: usize = 1024 * 1024, bytes;
    /// How long after its join a participant's media (WHIP, WHEP, or a LiveKit client's
    /// PeerConnections) may take to connect (ICE and DTLS); then it is ended (leave reason
    /// `media_connect_timeout`).
    ice_connect_timeout: Duration = Duration::from_secs(30), duration;
    /// How long a participant whose media was connected may have none connected (ICE
    /// disconnected) before it is ended (leave reason `media_departure_timeout`).
    peer_departure_timeout: Duration = Duration::from_secs(20), duration;
    /// How often a connected LiveKit participant is sent a fresh join token (RefreshToken)
    /// with its current grants, so its client can resume after the token it joined with
    /// expired.
    token_refresh_interval: Duration = Duration::from_secs(300), duration;
    /// Most m-lines in a WHIP/WHEP offer or a LiveKit publisher offer (a subscriber answer
    /// may also have as many as our offer had); more are refused (400) before parsing.
    max_media_sections: u32 = 32, count;
    /// Most remote ICE candidates one PeerConnection takes: in one SDP (more: refused, 400)
    /// and trickled since its last ICE restart (more: ignored; a WHIP PATCH with more: 400).
    max_remote_candidates: u32 = 64, count;
    /// ICE-TCP connections open at once on this node, over all participants; more are
    /// closed at accept. (One participant may hold 8; a connection that sends no STUN
    /// request a peer accepts within 5 s, or nothing for 30 s, is closed.)
    max_tcp_connections: u32 = 4096, count;
    /// ICE-TCP connections open at once from one client address (IPv4 address, IPv6 /64);
    /// more are closed at accept.
    tcp_connections_per_address: u32 = 256, count;
    /// Allocations on the embedded TURN server (each holds a relay port); more are refused
    /// with 508.
    turn_max_allocations: u32 = 1000, count;
    /// Allocations one participant identity may hold on the embedded TURN server (two
    /// PeerConnections, each maybe on two address families and again after an ICE restart);
    /// more are refused with 486.
    turn_allocations_per_participant: u32 = 10, count;
    /// How long a client may take to send a request's head (line and headers), counted from
    /// its first byte; the connection is closed when it runs out (slowloris).
    http_header_timeout: Duration = Duration::from_secs(10), duration;
    /// How long a client may take to send a whole request body; 408 when it runs out.
    http_body_timeout: Duration = Duration::from_secs(30), duration;
    /// How long a connection may sit with no request in progress (before its first request
    /// or between keep-alive requests) before it is closed. Upgraded WebSockets are exempt.
    http_idle_timeout: Duration = Duration::from_secs(60), duration;
    /// Largest request head (line and headers); a larger one is refused with 431.
    http_header_bytes: usize = 64 * 1024, header_bytes;
    /// Open HTTP connections (WebSockets included) from one client address (an IPv6 /64);
    /// more are closed at accept.
    http_connections_per_address: u32 = 256, count;
    /// Open HTTP connections (WebSockets included) on this node; more are closed at accept.
    /// Lowered at start to fit the process's open-file limit.
    http_max_connections: u32 = 10_000, count;
    /// `/rtc` and `/rtc/validate` requests per client address per minute; then 429.
    rtc_requests_per_minute: u32 = 120, per_minute;
    /// `/whip` and `/whep` requests (offers, trickle, deletes) per client address per minute.
    whip_requests_per_minute: u32 = 300, per_minute;
    /// `/v1` and `/twirp` requests per client address per minute.
    api_requests_per_minute: u32 = 1200, per_minute;
    /// Rooms open on this node at once; creating one more is refused (503).
    max_rooms: u32 = 10_000, count;
    /// Signaling events held in memory while the database is unreachable or slow (joins,
    /// leaves, tracks waiting to be recorded); newer ones are dropped when it is full.
    recorder_queue_bytes: usize = 16 * 1024 * 1024, bytes;
    /// Tracks one participant may have announced (AddTrackRequest), bound or still pending;
    /// one more is refused with RequestResponse LIMIT_EXCEEDED.
    max_tracks_per_participant: u32 = 8, count;
    /// Largest participant metadata (token, UpdateParticipantMetadata, admin update).
    max_participant_metadata_bytes: usize = 64 * 1024, bytes;
    /// Most participant attributes (keys) one participant may have.
    max_participant_attributes: u32 = 64, count;
    /// Largest total of a participant's attribute keys and values.
    max_participant_attributes_bytes: usize = 16 * 1024, bytes;
    /// Longest participant name.
    max_participant_name_bytes: usize = 256, bytes;
    /// Longest participant identity (the token's `sub`, API paths and bodies, minted tokens);
    /// the characters allowed are fixed (signaling/src/names.rs).
    max_participant_identity_bytes: usize = 256, bytes;
    /// Longest room name, wherever one enters (token, `/v1`, Twirp, minting); the characters
    /// are `[A-Za-z0-9_-]` (signaling/src/names.rs).
    max_room_name_bytes: usize = 64, bytes;
    /// Egress (recordings, restreams) running at once on this node; one more is refused
    /// with 503. Each runs on a thread of its own, so this also bounds egress threads.
    max_egress: u32 = 32, count;
    /// Largest room metadata (admin update, room creation).
    max_room_metadata_bytes: usize = 64 * 1024, bytes;
    /// Largest DataPacket a participant may send; a larger one is dropped.
    max_data_packet_bytes: usize = 64 * 1024, bytes;
    /// DataPackets per second one participant may send (bursts up to one second's worth);
    /// more are dropped.
    data_packets_per_second: u32 = 200, count;
    /// DataPacket bytes per second one participant may send (bursts up to one second's
    /// worth); more are dropped.
    data_bytes_per_second: usize = 2 * 1024 * 1024, bytes;
    /// Data-channel bytes of one participant waiting between its media worker and its
    /// signaling session; more are dropped.
    data_queue_bytes: usize = switchboard_sfu::DEFAULT_DATA_QUEUE_BYTES, bytes;
    /// Signaling requests per second one participant may send (bursts up to four seconds'
    /// worth); a client over it is disconnected (close 1008).
    signal_requests_per_second: u32 = 50, count;
    /// Signaling output waiting for one participant's socket; a client further behind is
    /// disconnected (leave reason `signal_backpressure`).
    signal_queue_bytes: usize = 4 * 1024 * 1024, bytes;
    /// How long one signaling message may take to be written to a client's socket before
    /// the client is disconnected (leave reason `signal_backpressure`).
    signal_write_timeout: Duration = Duration::from_secs(10), duration;
}

fn env_name(name: &str) -> String {
    format!("SWITCHBOARD_LIMIT_{}", name.to_ascii_uppercase())
}

fn unknown(origin: Origin, shown: String, name: &str) -> ConfigError {
    ConfigError::Invalid {
        origin,
        shown,
        reason: format!(
            "no limit is called {name:?}; the limits are: {}",
            LIMIT_NAMES.join(", ")
        ),
    }
}

/// Resolves every limit: `--limit` flags beat `SWITCHBOARD_LIMIT_*`, which beats `[limits]`.
pub(super) fn resolve(src: &Sources<'_>, flags: &[String]) -> Result<Limits, ConfigError> {
    let mut chosen: BTreeMap<&'static str, Raw> = BTreeMap::new();
    if let Some(file) = &src.file {
        for (name, raw) in &file.limits {
            let Some(known) = LIMIT_NAMES.iter().find(|n| *n == name) else {
                return Err(unknown(raw.origin.clone(), raw.shown.clone(), name));
            };
            chosen.insert(known, raw.clone());
        }
    }
    for name in LIMIT_NAMES {
        let env = env_name(name);
        if let Some(value) = (src.env_fn())(&env) {
            let value = value.trim().to_owned();
            if !value.is_empty() {
                let origin = Origin::Env(env.into());
                chosen.insert(name, Raw::typed(value, origin));
            }
        }
    }
    for flag in flags {
        let origin = Origin::Flag("--limit");
        let Some((name, value)) = flag.split_once('=') else {
            return Err(ConfigError::Invalid {
                origin,
                shown: format!("{flag:?}"),
                reason: "expected NAME=VALUE, like max_tracks_per_participant=8".to_owned(),
            });
        };
        let name = name.trim();
        let Some(known) = LIMIT_NAMES.iter().find(|n| **n == name) else {
            return Err(unknown(origin, format!("{flag:?}"), name));
        };
        chosen.insert(known, Raw::typed(value.trim().to_owned(), origin));
    }
    let mut limits = Limits::default();
    for (name, raw) in chosen {
        match limits.set(name, &raw.value) {
            Some(Ok(())) => {}
            Some(Err(reason)) => return Err(raw.invalid(format!("limit {name}: {reason}"))),
            // Every name in `chosen` came from LIMIT_NAMES.
            None => return Err(unknown(raw.origin.clone(), raw.shown.clone(), name)),
        }
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_units_and_refuse_zero() {
        assert_eq!(bytes("65536"), Ok(65536));
        assert_eq!(bytes("64KiB"), Ok(65536));
        assert_eq!(bytes("2MiB"), Ok(2 * 1024 * 1024));
        assert!(bytes("0").is_err());
        assert!(bytes("12 parsecs").is_err());
        assert!(count("0").is_err());
        assert_eq!(count("8"), Ok(8));
        assert!(duration("0").is_err());
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
    }
}
