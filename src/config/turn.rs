//! The embedded TURN server's settings (`--turn-udp-port`, `--turn-relay-ports`, `[turn]`).
//!
//! Off unless a port is given. Its credentials are the TURN REST ones signaling already
//! mints per participant (`--turn-secret` if set, else a secret made at start), so turning it
//! on needs nothing else.

use std::ops::RangeInclusive;
use std::path::PathBuf;

use super::error::ConfigError;
use super::sources::{self, Sources};
use super::{parse, ServeArgs};

/// Relay ports when none are configured: 10,001 ports, as LiveKit's default range.
pub const DEFAULT_TURN_RELAY_PORTS: RangeInclusive<u16> = 30000..=40000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnSettings {
    /// The UDP port TURN clients talk to, on `rtc.ip`; 0 = ephemeral (tests).
    pub udp_port: u16,
    /// Ports relay sockets bind in; `None` = ephemeral ports (tests).
    pub relay_ports: Option<RangeInclusive<u16>>,
    /// TURN over TLS, when asked for.
    pub tls: Option<TurnTlsSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnTlsSettings {
    /// The TCP port TLS clients connect to; 0 = ephemeral (tests).
    pub port: u16,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The name in `turns:` URLs; `None` announces the media IPs.
    pub domain: Option<String>,
}

fn path(input: &str) -> Result<PathBuf, String> {
    if input.is_empty() {
        Err("expected a file path".to_owned())
    } else {
        Ok(PathBuf::from(input))
    }
}

fn domain(input: &str) -> Result<String, String> {
    let ok = !input.is_empty()
        && input.len() <= 253
        && input
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if ok {
        Ok(input.to_owned())
    } else {
        Err("expected a host name like turn.example.com".to_owned())
    }
}

/// `START-END`, or `0` for ephemeral ports.
fn relay_ports(input: &str) -> Result<Option<RangeInclusive<u16>>, String> {
    if input.trim() == "0" {
        return Ok(None);
    }
    let err = || "expected a port range like 30000-40000 (or 0 for ephemeral ports)".to_owned();
    let (start, end) = input.split_once('-').ok_or_else(err)?;
    let start: u16 = start.trim().parse().map_err(|_| err())?;
    let end: u16 = end.trim().parse().map_err(|_| err())?;
    if start == 0 || start > end {
        return Err(err());
    }
    Ok(Some(start..=end))
}

pub(super) fn turn_settings(
    src: &Sources<'_>,
    args: &ServeArgs,
) -> Result<Option<TurnSettings>, ConfigError> {
    let udp_port = src
        .get(
            args.turn_udp_port.as_deref(),
            &sources::TURN_UDP_PORT,
            parse::port_or_off,
        )?
        .flatten();
    // Validated even when TURN is off, like the other settings of a section.
    let relay_ports = src
        .get(
            args.turn_relay_ports.as_deref(),
            &sources::TURN_RELAY_PORTS,
            relay_ports,
        )?
        .unwrap_or(Some(DEFAULT_TURN_RELAY_PORTS));
    let tls_port = src
        .get(
            args.turn_tls_port.as_deref(),
            &sources::TURN_TLS_PORT,
            parse::port_or_off,
        )?
        .flatten();
    let cert_file = src.get(args.turn_cert.as_deref(), &sources::TURN_CERT, path)?;
    let key_file = src.get(args.turn_key.as_deref(), &sources::TURN_KEY, path)?;
    let domain = src.get(args.turn_domain.as_deref(), &sources::TURN_DOMAIN, domain)?;
    let tls = match (tls_port, cert_file, key_file) {
        (None, _, _) => None,
        (Some(_), None, _) => return Err(incomplete("--turn-tls-port", "--turn-cert")),
        (Some(_), _, None) => return Err(incomplete("--turn-tls-port", "--turn-key")),
        (Some(port), Some(cert_file), Some(key_file)) => Some(TurnTlsSettings {
            port,
            cert_file,
            key_file,
            domain,
        }),
    };
    if tls.is_some() && udp_port.is_none() {
        return Err(incomplete("--turn-tls-port", "--turn-udp-port"));
    }
    Ok(udp_port.map(|udp_port| TurnSettings {
        udp_port,
        relay_ports,
        tls,
    }))
}

fn incomplete(setting: &'static str, missing: &'static str) -> ConfigError {
    ConfigError::TurnTlsIncomplete { setting, missing }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_port_ranges_are_read_or_refused_with_the_expected_form() {
        assert_eq!(relay_ports("30000-30010"), Ok(Some(30000..=30010)));
        assert_eq!(relay_ports("0"), Ok(None));
        for bad in ["30010-30000", "0-10", "30000", "a-b", "30000-70000"] {
            assert!(relay_ports(bad).is_err(), "{bad}");
        }
    }
}
