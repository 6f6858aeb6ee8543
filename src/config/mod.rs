//! Command line and configuration of the `switchboard` binary.
//!
//! Every setting comes from, in order of precedence: a command-line flag, an environment
//! variable `SWITCHBOARD_*`, the TOML config file (`--config FILE` or `SWITCHBOARD_CONFIG`),
//! or the built-in default. [`resolve`] merges them for `serve`; [`resolve_token`] and
//! [`resolve_migrate`] resolve the subset the other subcommands need with the same rules,
//! so e.g. `token create` signs with a key `serve` accepts. The environment is passed in as
//! a function so the merge is testable without touching the process environment.
//!
//! Invalid configuration is an error that names the bad setting and where it came from;
//! nothing is silently replaced by a default, and nothing starts with a well-known secret.

// Some resolved settings and helpers are only read by tests so far.
#![allow(dead_code)]

mod cli;
#[cfg(test)]
mod cli_tests;
mod cluster;
#[cfg(test)]
mod cluster_tests;
mod delivery;
#[cfg(test)]
mod delivery_tests;
mod error;
mod exposure;
mod keys;
mod limits;
mod parse;
mod sources;
#[cfg(test)]
mod tests;
mod turn;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

pub use cli::{Cli, Command, MigrateArgs, ServeArgs, TokenCommand, TokenCreateArgs};
#[allow(unused_imports)] // the defaults are part of the module's API, used by tests
pub use cluster::{
    node_id as parse_node_id, ClusterSettings, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_NODE_TIMEOUT,
};
pub use delivery::{NatsSettings, WebhookSettings};
#[cfg(test)]
pub use delivery::{DEFAULT_NATS_CLUSTER_PREFIX, DEFAULT_NATS_SESSION_SUBJECT};
#[allow(unused_imports)] // part of the module's API, used by tests
pub use error::{ConfigError, Origin};
pub use exposure::{is_loopback_origin, normalize_origin, CorsOrigins};
#[allow(unused_imports)]
pub use keys::{DEV_KEY, DEV_SECRET, MIN_SECRET_CHARS};
pub use limits::Limits;
pub(crate) use parse::redact_url;
#[allow(unused_imports)]
pub use parse::{parse_duration, parse_ttl, DurationError};
pub use turn::TurnSettings;

use sources::Sources;

pub const DEFAULT_HTTP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7880);
pub const DEFAULT_RTC_PORT: u16 = 7882;
/// ICE-TCP's port, as LiveKit's.
pub const DEFAULT_RTC_TCP_PORT: u16 = 7881;
pub const DEFAULT_DATA_DIR: &str = "./data";
pub const DEFAULT_EMPTY_TIMEOUT: Duration = Duration::from_secs(300);
/// A day, as the TURN REST API draft suggests: a TURN server checks the credential again at
/// every refresh of an allocation, so it must outlast a call.
pub const DEFAULT_TURN_CREDENTIAL_TTL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_LOG: &str = "info";
/// Resolved settings of `switchboard serve`.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// Development mode (`--dev`): the dev key is allowed and short secrets are accepted.
    pub dev: bool,
    /// Where the HTTP API and WebSocket signaling listen.
    pub http_addr: SocketAddr,
    pub rtc: RtcSettings,
    /// sqlx database URL (sqlite: or postgres://).
    pub database_url: String,
    /// Directory for local state; the default SQLite database lives here. Not created
    /// here: resolving settings has no side effects.
    pub data_dir: PathBuf,
    /// Where recordings go (egress); not created here either.
    pub egress_dir: PathBuf,
    /// API key -> secret; never empty.
    pub keys: BTreeMap<String, String>,
    /// How long a room stays open after its last participant left.
    pub empty_timeout: Duration,
    /// Maximum participants per room; 0 = unlimited.
    pub max_participants: u32,
    /// The WebSocket URL returned with tokens, if configured; see [`Settings::public_ws_url`].
    pub public_url: Option<String>,
    /// Log filter in `tracing_subscriber::EnvFilter` syntax (already validated).
    pub log: String,
    /// Where events are POSTed as LiveKit webhooks.
    pub webhooks: WebhookSettings,
    /// Where events are published, if NATS is configured.
    pub nats: Option<NatsSettings>,
    /// Every resource limit (`[limits]`, `--limit`, `SWITCHBOARD_LIMIT_*`).
    pub limits: Limits,
    /// `--dev` may listen on a non-loopback address.
    pub dev_allow_public: bool,
    /// Browser origins allowed by CORS; `None` = the default of the mode (see
    /// [`CorsOrigins`]).
    pub cors_origins: Option<CorsOrigins>,
    /// The embedded TURN server, when it runs.
    pub turn: Option<TurnSettings>,
    /// This node's id and its membership timing (`node_id`, `[cluster]`).
    pub cluster: ClusterSettings,
}

/// Settings of the WebRTC media plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcSettings {
    /// Local IP the media UDP socket binds to.
    pub ip: IpAddr,
    /// UDP port of the media socket; 0 = ephemeral (tests).
    pub port: u16,
    /// The ICE-TCP port; `None` = off, 0 = ephemeral (tests).
    pub tcp_port: Option<u16>,
    /// Media worker threads, at least 1.
    pub workers: usize,
    /// Subscribers' bandwidth is estimated and their layers fit to it.
    pub bandwidth_estimation: bool,
    /// `/rtc/v1` (one PeerConnection per participant) is served.
    pub single_pc: bool,
    /// IPs announced to browsers as ICE candidates; empty = announce `ip`. Never contains
    /// a wildcard address, and is non-empty whenever `ip` is a wildcard.
    pub node_ips: Vec<IpAddr>,
    /// STUN/TURN servers announced to clients.
    pub ice_servers: Vec<switchboard_signaling::IceServer>,
    /// `--turn-secret` with the credential lifetime, when given (the embedded TURN server
    /// uses it too; without it, it makes its own).
    pub turn_rest: Option<switchboard_signaling::TurnRestSecret>,
    /// How long a minted TURN credential is accepted.
    pub turn_credential_ttl: Duration,
}

impl RtcSettings {
    /// The addresses to announce as ICE candidates.
    pub fn advertised_ips(&self) -> Vec<IpAddr> {
        if self.node_ips.is_empty() {
            vec![self.ip]
        } else {
            self.node_ips.clone()
        }
    }
}

impl Settings {
    /// Refuses `--dev` on a non-loopback address unless `dev_allow_public` is set.
    pub fn check_dev_exposure(&self) -> Result<(), ConfigError> {
        exposure::check_dev_exposure(self.dev, self.dev_allow_public, self.http_addr, self.rtc.ip)
    }

    /// The WebSocket URL clients should connect to: `public_url` if configured, else
    /// `ws://` + the HTTP address (with a wildcard listen address replaced by a node IP,
    /// or loopback, since `ws://0.0.0.0:…` is not something a client can connect to).
    pub fn public_ws_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.clone(),
            None => derived_ws_url(self.http_addr, &self.rtc.node_ips),
        }
    }

    /// The `http://` URL of the API bound at `bound`, as other nodes and operators reach it
    /// (a wildcard address replaced like in [`Settings::public_ws_url`]).
    pub fn http_url_for(&self, bound: SocketAddr) -> String {
        let ws = derived_ws_url(bound, &self.rtc.node_ips);
        format!("http://{}", ws.trim_start_matches("ws://"))
    }
}

/// Secrets are left out so settings can be logged at start.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("dev", &self.dev)
            .field("http_addr", &self.http_addr)
            .field("rtc", &self.rtc)
            .field("database_url", &parse::redact_url(&self.database_url))
            .field("data_dir", &self.data_dir)
            .field("egress_dir", &self.egress_dir)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("empty_timeout", &self.empty_timeout)
            .field("max_participants", &self.max_participants)
            .field("public_url", &self.public_url)
            .field("log", &self.log)
            .field("webhooks", &self.webhooks)
            .field("nats", &self.nats)
            .field("limits", &self.limits)
            .field("dev_allow_public", &self.dev_allow_public)
            .field("cors_origins", &self.cors_origins)
            .field("turn", &self.turn)
            .field("cluster", &self.cluster)
            .finish()
    }
}

fn derived_ws_url(http_addr: SocketAddr, node_ips: &[IpAddr]) -> String {
    let ip = http_addr.ip();
    let host = if !ip.is_unspecified() {
        ip
    } else {
        let same_family = node_ips.iter().find(|n| n.is_ipv4() == ip.is_ipv4());
        match same_family.or(node_ips.first()) {
            Some(node_ip) => *node_ip,
            None if ip.is_ipv4() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            None => IpAddr::V6(Ipv6Addr::LOCALHOST),
        }
    };
    // SocketAddr's Display brackets IPv6 hosts as URLs need.
    format!("ws://{}", SocketAddr::new(host, http_addr.port()))
}

fn default_workers() -> usize {
    // available_parallelism fails only where the CPU count is unknowable; one worker
    // still works there.
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Resolves the settings of `switchboard serve`. `env` looks up an environment variable
/// (`|name| std::env::var(name).ok()` in production).
pub fn resolve(
    args: &ServeArgs,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let src = Sources::new(args.config.as_deref(), env)?;
    let dev = src.dev(args.dev)?;

    let http_addr = src
        .get(
            args.http_addr.as_deref(),
            &sources::HTTP_ADDR,
            parse::socket_addr,
        )?
        .unwrap_or(DEFAULT_HTTP_ADDR);
    let rtc = rtc_settings(&src, args, http_addr)?;
    let (data_dir, database_url) =
        database(&src, args.data_dir.as_deref(), args.database_url.as_deref())?;
    let egress_dir = src
        .get(args.egress_dir.as_deref(), &sources::EGRESS_DIR, |dir| {
            if dir.is_empty() {
                Err("expected a directory path".to_owned())
            } else {
                Ok(PathBuf::from(dir))
            }
        })?
        .unwrap_or_else(|| data_dir.join("egress"));
    let keys: BTreeMap<String, String> = keys::resolve(
        &src,
        dev,
        args.api_key.as_deref(),
        args.api_secret.as_deref(),
    )?
    .into_iter()
    .map(|(key, (secret, _origin))| (key, secret))
    .collect();
    let webhooks = delivery::webhook_settings(&src, args, &keys)?;
    let nats = delivery::nats_settings(&src, args)?;
    let empty_timeout = src
        .get(
            args.empty_timeout.as_deref(),
            &sources::EMPTY_TIMEOUT,
            parse::secs_or_duration,
        )?
        .unwrap_or(DEFAULT_EMPTY_TIMEOUT);
    let max_participants = src
        .get(
            args.max_participants.as_deref(),
            &sources::MAX_PARTICIPANTS,
            parse::max_participants,
        )?
        .unwrap_or(0);
    let public_url = src.get(
        args.public_url.as_deref(),
        &sources::PUBLIC_URL,
        parse::public_url,
    )?;
    let log = src
        .get(args.log.as_deref(), &sources::LOG, parse::log_filter)?
        .unwrap_or_else(|| DEFAULT_LOG.to_owned());
    let limits = limits::resolve(&src, &args.limits)?;
    let dev_allow_public = src
        .get(
            args.dev_allow_public.then_some("true"),
            &sources::DEV_ALLOW_PUBLIC,
            parse::bool,
        )?
        .unwrap_or(false);
    let cors_flags = (!args.cors_origins.is_empty()).then(|| args.cors_origins.join(","));
    let cors_origins = src.get(
        cors_flags.as_deref(),
        &sources::CORS_ORIGINS,
        exposure::cors_origins,
    )?;
    let turn = turn::turn_settings(&src, args)?;
    let cluster = cluster::resolve(&src, args)?;

    Ok(Settings {
        dev,
        http_addr,
        rtc,
        database_url,
        data_dir,
        egress_dir,
        keys,
        empty_timeout,
        max_participants,
        public_url,
        log,
        webhooks,
        nats,
        limits,
        dev_allow_public,
        cors_origins,
        turn,
        cluster,
    })
}

/// Looks a setting up and parses it like [`Sources::get`], but shows the value with any
/// URL password redacted: these values may hold credentials and errors end up in logs.
fn get_redacted<T>(
    src: &Sources<'_>,
    flag: Option<&str>,
    setting: &sources::Setting,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    let Some(raw) = src.lookup(flag, setting) else {
        return Ok(None);
    };
    parse(&raw.value)
        .map(Some)
        .map_err(|reason| ConfigError::Invalid {
            origin: raw.origin.clone(),
            shown: format!("{:?}", parse::redact_url(&raw.value)),
            reason,
        })
}

fn rtc_settings(
    src: &Sources<'_>,
    args: &ServeArgs,
    http_addr: SocketAddr,
) -> Result<RtcSettings, ConfigError> {
    let ip = src
        .get(args.rtc_ip.as_deref(), &sources::RTC_IP, parse::ip)?
        .unwrap_or(http_addr.ip());
    let port = src
        .get(args.rtc_port.as_deref(), &sources::RTC_PORT, parse::port)?
        .unwrap_or(DEFAULT_RTC_PORT);
    let tcp_port = src
        .get(
            args.rtc_tcp_port.as_deref(),
            &sources::RTC_TCP_PORT,
            parse::port_or_off,
        )?
        .unwrap_or(Some(DEFAULT_RTC_TCP_PORT));
    let workers = src
        .get(
            args.rtc_workers.as_deref(),
            &sources::RTC_WORKERS,
            parse::workers,
        )?
        .unwrap_or_else(default_workers);
    let bandwidth_estimation = src
        .get(
            args.rtc_bandwidth_estimation.as_deref(),
            &sources::RTC_BANDWIDTH_ESTIMATION,
            parse::bool,
        )?
        .unwrap_or(true);
    let single_pc = src
        .get(
            args.rtc_single_pc.as_deref(),
            &sources::RTC_SINGLE_PC,
            parse::bool,
        )?
        .unwrap_or(true);
    // Repeated `--node-ip` flags form one value, so they replace the env/file list as a
    // whole like every other flag.
    let node_ip_flags = (!args.node_ips.is_empty()).then(|| args.node_ips.join(","));
    let node_ips = src
        .get(
            node_ip_flags.as_deref(),
            &sources::NODE_IPS,
            parse::node_ips,
        )?
        .unwrap_or_default();
    if ip.is_unspecified() && node_ips.is_empty() {
        return Err(ConfigError::NodeIpsRequired { ip });
    }
    let ice_flags = (!args.ice_servers.is_empty()).then(|| args.ice_servers.join(","));
    let mut ice_servers = get_redacted(
        src,
        ice_flags.as_deref(),
        &sources::ICE_SERVERS,
        parse::ice_servers,
    )?
    .unwrap_or_default();
    let turn_secret = src.get(
        args.turn_secret.as_deref(),
        &sources::TURN_SECRET,
        parse::secret,
    )?;
    let turn_ttl = src
        .get(
            args.turn_credential_ttl.as_deref(),
            &sources::TURN_CREDENTIAL_TTL,
            parse::secs_or_duration,
        )?
        .unwrap_or(DEFAULT_TURN_CREDENTIAL_TTL);
    for server in &mut ice_servers {
        if !server.url.starts_with("turn") || server.username.is_some() {
            continue;
        }
        let Some(secret) = &turn_secret else {
            return Err(ConfigError::TurnWithoutCredential {
                url: server.url.clone(),
            });
        };
        server.rest = Some(switchboard_signaling::TurnRestSecret::new(
            secret.clone(),
            turn_ttl,
        ));
    }
    let turn_rest =
        turn_secret.map(|secret| switchboard_signaling::TurnRestSecret::new(secret, turn_ttl));
    Ok(RtcSettings {
        turn_rest,
        turn_credential_ttl: turn_ttl,
        ip,
        port,
        tcp_port,
        workers,
        bandwidth_estimation,
        single_pc,
        node_ips,
        ice_servers,
    })
}

/// `(data_dir, database_url)`; the default URL depends on the data directory.
fn database(
    src: &Sources<'_>,
    flag_data_dir: Option<&str>,
    flag_url: Option<&str>,
) -> Result<(PathBuf, String), ConfigError> {
    let data_dir = src
        .get(flag_data_dir, &sources::DATA_DIR, |dir| {
            if dir.is_empty() {
                Err("expected a directory path".to_owned())
            } else {
                Ok(dir.to_owned())
            }
        })?
        .unwrap_or_else(|| DEFAULT_DATA_DIR.to_owned());
    let url = match src.lookup(flag_url, &sources::DATABASE_URL) {
        Some(raw) => parse::database_url(&raw.value).map_err(|reason| ConfigError::Invalid {
            origin: raw.origin.clone(),
            // The URL may carry a database password.
            shown: format!("{:?}", parse::redact_url(&raw.value)),
            reason,
        })?,
        None => parse::sqlite_url_for_dir(&data_dir),
    };
    Ok((PathBuf::from(data_dir), url))
}

/// What `switchboard token create` needs besides its own arguments.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSettings {
    pub dev: bool,
    /// The key to sign with (goes into the token's `iss` claim).
    pub api_key: String,
    pub api_secret: String,
    /// The WebSocket URL to print next to the token, as `serve` would return it.
    pub ws_url: String,
    /// The limits `serve` would apply (file and environment), for the naming rule.
    pub limits: Limits,
}

impl fmt::Debug for TokenSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSettings")
            .field("dev", &self.dev)
            .field("api_key", &self.api_key)
            .field("api_secret", &"…")
            .field("ws_url", &self.ws_url)
            .finish()
    }
}

/// Resolves the signing key of `token create` the way `serve` resolves its keys (same
/// sources, same dev default, same secret rules), then picks `--api-key` or the first key
/// in sorted order. `--api-key` alone selects a configured key; with `--api-secret` it
/// defines the key outright.
pub fn resolve_token(
    args: &TokenCreateArgs,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<TokenSettings, ConfigError> {
    let src = Sources::new(args.config.as_deref(), env)?;
    let dev = src.dev(args.dev)?;
    let keys = match args.api_secret.as_deref() {
        Some(_) => keys::resolve(
            &src,
            dev,
            args.api_key.as_deref(),
            args.api_secret.as_deref(),
        )?,
        None => keys::resolve(&src, dev, None, None)?,
    };
    let (api_key, api_secret) = keys::select(&keys, args.api_key.as_deref())?;

    // No flags for these: the URL comes from the same env/file settings `serve` reads.
    let public_url = src.get(None, &sources::PUBLIC_URL, parse::public_url)?;
    let ws_url = match public_url {
        Some(url) => url,
        None => {
            let http_addr = src
                .get(None, &sources::HTTP_ADDR, parse::socket_addr)?
                .unwrap_or(DEFAULT_HTTP_ADDR);
            let node_ips = src
                .get(None, &sources::NODE_IPS, parse::node_ips)?
                .unwrap_or_default();
            derived_ws_url(http_addr, &node_ips)
        }
    };
    let limits = limits::resolve(&src, &[])?;
    Ok(TokenSettings {
        limits,
        dev,
        api_key,
        api_secret,
        ws_url,
    })
}

/// What `switchboard migrate` needs.
#[derive(Clone, PartialEq, Eq)]
pub struct MigrateSettings {
    pub dev: bool,
    pub database_url: String,
    /// Needed to create the directory of the default SQLite database before connecting.
    pub data_dir: PathBuf,
}

impl fmt::Debug for MigrateSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MigrateSettings")
            .field("dev", &self.dev)
            .field("database_url", &parse::redact_url(&self.database_url))
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

/// Resolves the database of `migrate` exactly as `serve` does, without requiring API keys
/// (migrations do not need them).
pub fn resolve_migrate(
    args: &MigrateArgs,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<MigrateSettings, ConfigError> {
    let src = Sources::new(args.config.as_deref(), env)?;
    let dev = src.dev(args.dev)?;
    let (data_dir, database_url) = database(&src, None, args.database_url.as_deref())?;
    Ok(MigrateSettings {
        dev,
        database_url,
        data_dir,
    })
}
