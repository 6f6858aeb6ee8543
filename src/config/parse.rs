//! Parsers for single setting values. They are source-agnostic: they return the reason a
//! value is wrong, and the caller (which knows whether it came from a flag, the environment
//! or the config file) turns that into a [`super::ConfigError`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Error of [`parse_duration`] and of the `--ttl` parser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(
        "expected a number followed by s, m, h or d, like 90s, 30m, 6h or 1d \
         (or a combination like 1h30m)"
    )]
    Malformed,
    #[error("duration is too long")]
    Overflow,
    #[error("must be longer than 0s")]
    Zero,
}

/// Parses durations like `90s`, `30m`, `6h`, `1d` or combinations such as `1h30m`.
///
/// A unit is required: a bare `6` is ambiguous (seconds? hours?) and a token silently valid
/// for six seconds instead of six hours is a confusing failure.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err(DurationError::Malformed);
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(DurationError::Malformed);
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| DurationError::Overflow)?;
        // Digits are ASCII, so `digits` is a char boundary; the unit is one ASCII letter.
        let unit_secs = match rest.as_bytes().get(digits) {
            Some(b's') => 1,
            Some(b'm') => 60,
            Some(b'h') => 3600,
            Some(b'd') => 86_400,
            _ => return Err(DurationError::Malformed),
        };
        total = number
            .checked_mul(unit_secs)
            .and_then(|secs| total.checked_add(secs))
            .ok_or(DurationError::Overflow)?;
        rest = &rest[digits + 1..];
    }
    Ok(Duration::from_secs(total))
}

/// `--ttl`: a duration, and a token valid for 0s would be useless.
pub fn parse_ttl(input: &str) -> Result<Duration, DurationError> {
    match parse_duration(input)? {
        ttl if ttl.is_zero() => Err(DurationError::Zero),
        ttl => Ok(ttl),
    }
}

/// `empty_timeout`: the option is documented in seconds, but a duration reads better in
/// a config file, so both `300` and `5m` are accepted.
pub(super) fn secs_or_duration(input: &str) -> Result<Duration, String> {
    if let Ok(secs) = input.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    parse_duration(input).map_err(|err| match err {
        DurationError::Malformed => {
            "expected a number of seconds like 300, or a duration like 5m".to_owned()
        }
        other => other.to_string(),
    })
}

pub(super) fn socket_addr(input: &str) -> Result<SocketAddr, String> {
    input
        .parse()
        .map_err(|_| "expected IP:PORT like 127.0.0.1:7880".to_owned())
}

pub(super) fn ip(input: &str) -> Result<IpAddr, String> {
    input
        .parse()
        .map_err(|_| "expected an IP address like 192.0.2.10".to_owned())
}

pub(super) fn port(input: &str) -> Result<u16, String> {
    input
        .parse()
        .map_err(|_| "not a port number (0-65535)".to_owned())
}

/// A port, or `off` for none.
pub(super) fn port_or_off(input: &str) -> Result<Option<u16>, String> {
    if input.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    input
        .parse()
        .map(Some)
        .map_err(|_| "not a port number (0-65535) or `off`".to_owned())
}

/// Upper bound on media workers: far above any CPU count we run on, low enough that a typo
/// (an extra zero or two) fails at start instead of spawning thousands of threads.
const MAX_WORKERS: usize = 1024;

pub(super) fn workers(input: &str) -> Result<usize, String> {
    match input.parse::<usize>() {
        Ok(0) => Err("rtc.workers must be at least 1".to_owned()),
        Ok(n) if n > MAX_WORKERS => Err(format!("rtc.workers must be at most {MAX_WORKERS}")),
        Ok(n) => Ok(n),
        Err(_) => Err("expected a whole number of worker threads, like 4".to_owned()),
    }
}

/// Comma-separated list of IPs that browsers can reach. A wildcard address is rejected
/// because it would be announced to clients as an ICE candidate they cannot use.
pub(super) fn node_ips(input: &str) -> Result<Vec<IpAddr>, String> {
    let mut ips = Vec::new();
    for item in input.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let addr: IpAddr = item
            .parse()
            .map_err(|_| format!("\"{item}\" is not an IP address like 192.0.2.10"))?;
        if addr.is_unspecified() {
            return Err(format!(
                "{addr} is not an address browsers can reach; give this host's public IP"
            ));
        }
        if !ips.contains(&addr) {
            ips.push(addr);
        }
    }
    if ips.is_empty() {
        return Err("expected at least one IP address".to_owned());
    }
    Ok(ips)
}

/// A secret: anything but empty (it is only ever shown when empty).
pub(super) fn secret(input: &str) -> Result<String, String> {
    if input.trim().is_empty() {
        return Err("expected a secret, got nothing".to_owned());
    }
    Ok(input.to_owned())
}

/// `URL` or `USERNAME:CREDENTIAL@URL`, comma-separated; URLs are `stun:`, `turn:` or
/// `turns:` (RFC 7064/7065).
pub(super) fn ice_servers(input: &str) -> Result<Vec<switchboard_signaling::IceServer>, String> {
    let mut servers = Vec::new();
    for item in input.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (auth, url) = match item.rsplit_once('@') {
            Some((auth, url)) if is_ice_url(url) => (Some(auth), url),
            _ => (None, item),
        };
        if !is_ice_url(url) {
            return Err(format!(
                "\"{item}\" is not a stun:, turn: or turns: URL (optionally USERNAME:CREDENTIAL@ first)"
            ));
        }
        let (username, credential) = match auth {
            None => (None, None),
            Some(auth) => match auth.split_once(':') {
                Some((user, credential)) if !user.is_empty() && !credential.is_empty() => {
                    (Some(user.to_owned()), Some(credential.to_owned()))
                }
                _ => {
                    return Err(format!(
                        "the credentials of \"{url}\" must be USERNAME:CREDENTIAL"
                    ))
                }
            },
        };
        servers.push(switchboard_signaling::IceServer {
            url: url.to_owned(),
            username,
            credential,
            rest: None,
        });
    }
    Ok(servers)
}

fn is_ice_url(url: &str) -> bool {
    ["stun:", "turn:", "turns:"]
        .iter()
        .any(|scheme| url.starts_with(scheme) && url.len() > scheme.len())
}

pub(super) fn bool(input: &str) -> Result<bool, String> {
    match input.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected 1/true/yes/on or 0/false/no/off".to_owned()),
    }
}

pub(super) fn max_participants(input: &str) -> Result<u32, String> {
    input
        .parse()
        .map_err(|_| format!("expected a whole number from 0 (unlimited) to {}", u32::MAX))
}

/// Only the backends the binary is built with (sqlx features `sqlite` and `postgres`).
pub(super) fn database_url(input: &str) -> Result<String, String> {
    let known = ["sqlite:", "postgres://", "postgresql://"];
    if known.iter().any(|scheme| input.starts_with(scheme)) {
        Ok(input.to_owned())
    } else {
        Err(
            "expected a sqlite: or postgres:// URL, like sqlite://./data/switchboard.db?mode=rwc"
                .to_owned(),
        )
    }
}

pub(super) fn public_url(input: &str) -> Result<String, String> {
    let rest = input
        .strip_prefix("ws://")
        .or_else(|| input.strip_prefix("wss://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => {
            // Clients append paths like `/rtc`; a trailing slash would double it.
            Ok(input.trim_end_matches('/').to_owned())
        }
        _ => Err("expected a ws:// or wss:// URL like wss://sfu.example.com".to_owned()),
    }
}

/// Checked here rather than when logging starts, so a typo stops start with a message that
/// names where the filter came from.
pub(super) fn log_filter(input: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(input)
        .map(|_| input.to_owned())
        .map_err(|err| format!("not a log filter like \"info,switchboard=debug\": {err}"))
}

/// `key1:secret1,key2:secret2` (SWITCHBOARD_KEYS). Secrets may contain `:` (the key may
/// not), but not `,`.
pub(super) fn key_list(input: &str) -> Result<Vec<(String, String)>, String> {
    let mut keys = Vec::new();
    for entry in input.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((key, secret)) = entry.split_once(':') else {
            return Err(format!(
                "entry without a secret (expected key1:secret1,key2:secret2), near \"{}\"",
                key_of(entry)
            ));
        };
        let (key, secret) = (key.trim(), secret.trim());
        api_key(key)?;
        api_secret(key, secret)?;
        keys.push((key.to_owned(), secret.to_owned()));
    }
    if keys.is_empty() {
        return Err("expected key1:secret1,key2:secret2".to_owned());
    }
    Ok(keys)
}

/// Only the part of an entry before any `:`, so a malformed entry never echoes a secret.
fn key_of(entry: &str) -> &str {
    entry.split(':').next().unwrap_or_default()
}

/// Key names end up in JWT `iss` claims and in SWITCHBOARD_KEYS, where `:`, `,` and
/// whitespace are separators.
pub(super) fn api_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        Err("API key name is empty".to_owned())
    } else if key.contains([':', ',']) || key.chars().any(char::is_whitespace) {
        Err(format!(
            "API key \"{key}\" must not contain ':', ',' or whitespace"
        ))
    } else {
        Ok(())
    }
}

/// Only emptiness here: strength depends on development mode and is checked after merging.
pub(super) fn api_secret(key: &str, secret: &str) -> Result<(), String> {
    if secret.is_empty() {
        Err(format!("API key \"{key}\" has an empty secret"))
    } else {
        Ok(())
    }
}

/// The default database URL for a data directory. sqlx percent-decodes the path of a
/// sqlite URL and splits it at `?`, so those characters must be encoded.
pub(super) fn sqlite_url_for_dir(data_dir: &str) -> String {
    let dir = match data_dir.trim_end_matches('/') {
        "" => "/", // the data dir is the root directory
        trimmed => trimmed,
    };
    let mut encoded = String::with_capacity(dir.len());
    for c in dir.chars() {
        match c {
            '%' => encoded.push_str("%25"),
            '?' => encoded.push_str("%3F"),
            '#' => encoded.push_str("%23"),
            _ => encoded.push(c),
        }
    }
    let sep = if encoded.ends_with('/') { "" } else { "/" };
    format!("sqlite://{encoded}{sep}switchboard.db?mode=rwc")
}

/// Hides the password of `scheme://user:password@host/…` in error messages, which may end
/// up in logs.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // Only the authority (up to the first `/`) can hold credentials; an `@` further on is
    // part of the path or query.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = key_of(userinfo);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

/// Webhook endpoints: absolute http(s) URLs, duplicates dropped (each URL is one delivery
/// sink, and a URL listed twice would get every event twice). Comma-separated in the
/// environment, so a URL containing a comma can only be given by flag or in the file.
pub(super) fn webhook_urls(input: &str) -> Result<Vec<String>, String> {
    let mut urls: Vec<String> = Vec::new();
    for item in input.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let shown = redact_url(item);
        let url = reqwest::Url::parse(item).map_err(|err| {
            format!("\"{shown}\" is not a URL like https://hooks.example.com/lk: {err}")
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(format!(
                "\"{shown}\" is not an http:// or https:// URL like https://hooks.example.com/lk"
            ));
        }
        if !urls.iter().any(|known| known == item) {
            urls.push(item.to_owned());
        }
    }
    if urls.is_empty() {
        return Err("expected at least one URL".to_owned());
    }
    Ok(urls)
}

/// NATS servers: one URL, or several of one cluster comma-separated, each as the client
/// accepts them (nats://, tls://, ws://, wss://, or a bare host:port).
pub(super) fn nats_url(input: &str) -> Result<String, String> {
    let servers: Vec<&str> = input
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if servers.is_empty() {
        return Err("expected a NATS server URL like nats://127.0.0.1:4222".to_owned());
    }
    for server in &servers {
        server.parse::<async_nats::ServerAddr>().map_err(|err| {
            format!(
                "\"{}\" is not a NATS server URL like nats://127.0.0.1:4222: {err}",
                redact_url(server)
            )
        })?;
    }
    Ok(servers.join(","))
}

/// A NATS subject to publish to (or a prefix of one): dot-separated tokens, none empty, no
/// whitespace and no wildcards (`*`, `>`), which are only meaningful when subscribing.
pub(super) fn nats_subject(input: &str) -> Result<String, String> {
    if input.is_empty() {
        return Err("expected a subject like switchboard.events".to_owned());
    }
    if input
        .chars()
        .any(|c| c.is_whitespace() || c == '*' || c == '>')
    {
        return Err("a subject must not contain whitespace or the wildcards * and >".to_owned());
    }
    if input.split('.').any(str::is_empty) {
        return Err(
            "a subject is dot-separated words like switchboard.events, with no empty word"
                .to_owned(),
        );
    }
    Ok(input.to_owned())
}
