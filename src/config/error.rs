//! Configuration errors. Each variant is one problem, and its message names the setting and
//! the source it came from, because the operator has to find and fix it there.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line option, e.g. `--http-addr`.
    Flag(&'static str),
    /// An environment variable, e.g. `SWITCHBOARD_HTTP_ADDR`.
    Env(std::borrow::Cow<'static, str>),
    /// A key of the TOML config file, e.g. `rtc.port` (`keys.<name>` for API keys).
    File { path: PathBuf, key: String },
}

impl Origin {
    /// `--x "v"`, `ENV="v"` or `key = v in config file F`: the forms people would type.
    /// `shown` is already quoted/rendered by the caller.
    fn with_value(&self, shown: &str) -> String {
        match self {
            Origin::Flag(flag) => format!("{flag} {shown}"),
            Origin::Env(name) => format!("{name}={shown}"),
            Origin::File { path, key } => {
                format!("{key} = {shown} in config file {}", path.display())
            }
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => f.write_str(flag),
            Origin::Env(name) => f.write_str(name),
            Origin::File { path, key } => write!(f, "{key} in config file {}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A single value does not parse or is out of range.
    #[error("invalid {}: {reason}", origin.with_value(shown))]
    Invalid {
        origin: Origin,
        /// The offending value as shown in the message (quoted; passwords redacted).
        shown: String,
        reason: String,
    },

    #[error("config file {}: cannot read it: {source}", path.display())]
    FileRead { path: PathBuf, source: io::Error },

    #[error("config file {}: not valid TOML: {message}", path.display())]
    FileSyntax { path: PathBuf, message: String },

    #[error("config file {}: unknown setting \"{key}\" (known settings: {known})", path.display())]
    UnknownSetting {
        path: PathBuf,
        key: String,
        known: String,
    },

    #[error(
        "rtc.node_ips is required when rtc.ip is {ip} (the address browsers should use); \
         set --node-ip, SWITCHBOARD_NODE_IPS or rtc.node_ips in the config file"
    )]
    NodeIpsRequired { ip: IpAddr },

    #[error(
        "the TURN server \"{url}\" has no credential: write USERNAME:CREDENTIAL@ in front of \
         it, or set --turn-secret (SWITCHBOARD_TURN_SECRET, rtc.turn_secret) to mint one per \
         participant"
    )]
    TurnWithoutCredential { url: String },

    /// TURN over TLS asked for without what it needs.
    #[error("{setting} needs {missing}")]
    TurnTlsIncomplete {
        setting: &'static str,
        missing: &'static str,
    },

    /// `--api-key` without `--api-secret`, or the same for the environment variables.
    #[error("{given} given without {missing}")]
    Unpaired {
        given: &'static str,
        missing: &'static str,
    },

    #[error(
        "no API key configured: set --api-key and --api-secret, SWITCHBOARD_API_KEY and \
         SWITCHBOARD_API_SECRET, SWITCHBOARD_KEYS=\"key:secret,…\" or a [keys] section in \
         the config file (or use --dev for a local development server)"
    )]
    NoKeys,

    /// A secret that must not be used outside development mode.
    #[error("API key \"{key}\" (from {origin}): {reason}")]
    WeakSecret {
        key: String,
        origin: Origin,
        reason: String,
    },

    #[error("API key \"{key}\" is defined twice with different secrets ({first} and {second})")]
    ConflictingKey {
        key: String,
        first: Origin,
        second: Origin,
    },

    /// `--dev` on an address other machines can reach, without `--dev-allow-public`.
    #[error(
        "--dev refuses to listen on {setting} {ip}: development mode hands admin tokens to \
         anyone who can reach it (the well-known key, /v1/dev/token). Use a loopback address \
         (127.0.0.1), configure real keys without --dev, or add --dev-allow-public \
         (SWITCHBOARD_DEV_ALLOW_PUBLIC=1, dev_allow_public = true) if you mean it"
    )]
    DevNotLoopback { setting: &'static str, ip: IpAddr },

    /// The node timeout leaves no room for a late heartbeat.
    #[error(
        "cluster.node_timeout ({node_timeout:?}) must be at least twice \
         cluster.heartbeat_interval ({heartbeat_interval:?}), so one late heartbeat does not \
         make a node dead"
    )]
    NodeTimeoutTooShort {
        heartbeat_interval: std::time::Duration,
        node_timeout: std::time::Duration,
    },

    /// The room lease TTL is outside [2 × heartbeat interval, node timeout].
    #[error(
        "cluster.room_lease_ttl ({ttl:?}) must be at least twice cluster.heartbeat_interval \
         ({heartbeat_interval:?}), so one late renewal does not lose a room, and at most \
         cluster.node_timeout ({node_timeout:?}), so a room is free by the time its node is \
         called dead"
    )]
    RoomLeaseTtlOutOfRange {
        heartbeat_interval: std::time::Duration,
        node_timeout: std::time::Duration,
        ttl: std::time::Duration,
    },

    /// `token create --api-key K` where K is not among the configured keys.
    #[error("API key \"{key}\" (from --api-key) is not configured; configured keys: {known}")]
    UnknownKey { key: String, known: String },
}
