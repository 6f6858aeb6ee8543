//! The three sources of settings (flags, environment, TOML file) and the lookup that picks
//! the highest-precedence one. Values are carried as strings with their [`Origin`] until
//! parsed, so one parser per setting serves all sources and every error names its source.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, Origin};
use super::parse;

/// How a setting is written in the TOML file (flags and env vars are always strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    Str,
    Int,
    /// `empty_timeout = 300` or `empty_timeout = "5m"`.
    IntOrStr,
    /// An array of strings (a comma-separated string is accepted too).
    StrList,
}

/// The names of one setting in each source.
#[derive(Debug)]
pub(super) struct Setting {
    pub flag: &'static str,
    pub env: &'static str,
    /// Dotted TOML key, e.g. `rtc.port`.
    pub key: &'static str,
    pub kind: Kind,
}

macro_rules! settings {
    ($($name:ident = $flag:literal, $env:literal, $key:literal, $kind:ident;)*) => {
        $(pub(super) const $name: Setting =
            Setting { flag: $flag, env: $env, key: $key, kind: Kind::$kind };)*
        /// Every key the config file may contain, except the free-form `[keys]` section.
        const FILE_SETTINGS: &[Setting] = &[$($name),*];
    };
}

settings! {
    DEV = "--dev", "SWITCHBOARD_DEV", "dev", Bool;
    DEV_ALLOW_PUBLIC = "--dev-allow-public", "SWITCHBOARD_DEV_ALLOW_PUBLIC", "dev_allow_public",
        Bool;
    CORS_ORIGINS = "--cors-origin", "SWITCHBOARD_CORS_ORIGINS", "cors_origins", StrList;
    HTTP_ADDR = "--http-addr", "SWITCHBOARD_HTTP_ADDR", "http_addr", Str;
    RTC_IP = "--rtc-ip", "SWITCHBOARD_RTC_IP", "rtc.ip", Str;
    RTC_PORT = "--rtc-port", "SWITCHBOARD_RTC_PORT", "rtc.port", Int;
    RTC_TCP_PORT = "--rtc-tcp-port", "SWITCHBOARD_RTC_TCP_PORT", "rtc.tcp_port", IntOrStr;
    RTC_WORKERS = "--rtc-workers", "SWITCHBOARD_RTC_WORKERS", "rtc.workers", Int;
    RTC_BANDWIDTH_ESTIMATION = "--rtc-bandwidth-estimation",
        "SWITCHBOARD_RTC_BANDWIDTH_ESTIMATION", "rtc.bandwidth_estimation", Bool;
    RTC_SINGLE_PC = "--rtc-single-pc", "SWITCHBOARD_RTC_SINGLE_PC", "rtc.single_pc", Bool;
    NODE_IPS = "--node-ip", "SWITCHBOARD_NODE_IPS", "rtc.node_ips", StrList;
    ICE_SERVERS = "--ice-server", "SWITCHBOARD_ICE_SERVERS", "rtc.ice_servers", StrList;
    TURN_SECRET = "--turn-secret", "SWITCHBOARD_TURN_SECRET", "rtc.turn_secret", Str;
    TURN_CREDENTIAL_TTL = "--turn-credential-ttl", "SWITCHBOARD_TURN_CREDENTIAL_TTL",
        "rtc.turn_credential_ttl", IntOrStr;
    TURN_UDP_PORT = "--turn-udp-port", "SWITCHBOARD_TURN_UDP_PORT", "turn.udp_port", IntOrStr;
    TURN_RELAY_PORTS = "--turn-relay-ports", "SWITCHBOARD_TURN_RELAY_PORTS", "turn.relay_ports",
        Str;
    TURN_TLS_PORT = "--turn-tls-port", "SWITCHBOARD_TURN_TLS_PORT", "turn.tls_port", IntOrStr;
    TURN_CERT = "--turn-cert", "SWITCHBOARD_TURN_CERT", "turn.cert_file", Str;
    TURN_KEY = "--turn-key", "SWITCHBOARD_TURN_KEY", "turn.key_file", Str;
    TURN_DOMAIN = "--turn-domain", "SWITCHBOARD_TURN_DOMAIN", "turn.domain", Str;
    DATABASE_URL = "--database-url", "SWITCHBOARD_DATABASE_URL", "database_url", Str;
    DATA_DIR = "--data-dir", "SWITCHBOARD_DATA_DIR", "data_dir", Str;
    EGRESS_DIR = "--egress-dir", "SWITCHBOARD_EGRESS_DIR", "egress.directory", Str;
    EMPTY_TIMEOUT = "--empty-timeout", "SWITCHBOARD_EMPTY_TIMEOUT", "empty_timeout", IntOrStr;
    MAX_PARTICIPANTS = "--max-participants", "SWITCHBOARD_MAX_PARTICIPANTS",
        "max_participants", Int;
    PUBLIC_URL = "--public-url", "SWITCHBOARD_PUBLIC_URL", "public_url", Str;
    LOG = "--log", "SWITCHBOARD_LOG", "log", Str;
    WEBHOOK_URLS = "--webhook-url", "SWITCHBOARD_WEBHOOK_URLS", "webhooks.urls", StrList;
    WEBHOOK_API_KEY = "--webhook-api-key", "SWITCHBOARD_WEBHOOK_API_KEY", "webhooks.api_key",
        Str;
    NATS_URL = "--nats-url", "SWITCHBOARD_NATS_URL", "nats.url", Str;
    NATS_SUBJECT_PREFIX = "--nats-subject-prefix", "SWITCHBOARD_NATS_SUBJECT_PREFIX",
        "nats.subject_prefix", Str;
    NATS_SESSION_SUBJECT = "--nats-session-subject", "SWITCHBOARD_NATS_SESSION_SUBJECT",
        "nats.session_subject", Str;
    NATS_CLUSTER_PREFIX = "--nats-cluster-prefix", "SWITCHBOARD_NATS_CLUSTER_PREFIX",
        "nats.cluster_prefix", Str;
    NODE_ID = "--node-id", "SWITCHBOARD_NODE_ID", "node_id", Str;
    CLUSTER_HEARTBEAT_INTERVAL = "--cluster-heartbeat-interval",
        "SWITCHBOARD_CLUSTER_HEARTBEAT_INTERVAL", "cluster.heartbeat_interval", IntOrStr;
    CLUSTER_NODE_TIMEOUT = "--cluster-node-timeout", "SWITCHBOARD_CLUSTER_NODE_TIMEOUT",
        "cluster.node_timeout", IntOrStr;
    CLUSTER_ROOM_LEASE_TTL = "--cluster-room-lease-ttl", "SWITCHBOARD_CLUSTER_ROOM_LEASE_TTL",
        "cluster.room_lease_ttl", IntOrStr;
    CLUSTER_DELIVERY_LEASE_TTL = "--cluster-delivery-lease-ttl",
        "SWITCHBOARD_CLUSTER_DELIVERY_LEASE_TTL", "cluster.delivery_lease_ttl", IntOrStr;
    CLUSTER_DRAIN_TIMEOUT = "--cluster-drain-timeout", "SWITCHBOARD_CLUSTER_DRAIN_TIMEOUT",
        "cluster.drain_timeout", IntOrStr;
}

pub(super) const ENV_CONFIG: &str = "SWITCHBOARD_CONFIG";
pub(super) const ENV_KEYS: &str = "SWITCHBOARD_KEYS";
pub(super) const ENV_API_KEY: &str = "SWITCHBOARD_API_KEY";
pub(super) const ENV_API_SECRET: &str = "SWITCHBOARD_API_SECRET";
/// TOML sections holding settings (`[rtc]` holds `rtc.*`, and so on); `[keys]` maps free-form
/// key names to secrets.
const SECTIONS: &[&str] = &["rtc", "turn", "webhooks", "nats", "egress", "cluster"];
const SECTION_KEYS: &str = "keys";
const SECTION_LIMITS: &str = "limits";

/// A value not yet parsed, with where it came from.
#[derive(Debug, Clone)]
pub(super) struct Raw {
    pub value: String,
    /// The value as the message should show it: quoted for strings, TOML syntax for the
    /// file.
    pub shown: String,
    pub origin: Origin,
}

impl Raw {
    pub(super) fn typed(value: String, origin: Origin) -> Self {
        Raw {
            shown: format!("{value:?}"),
            value,
            origin,
        }
    }

    pub fn invalid(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.clone(),
            shown: self.shown.clone(),
            reason: reason.into(),
        }
    }
}

/// The parsed config file: dotted key -> raw value, plus the `[keys]` section.
#[derive(Debug, Default)]
pub(super) struct FileLayer {
    pub path: PathBuf,
    values: BTreeMap<&'static str, Raw>,
    /// `[keys]` entries, already checked for well-formed names and non-empty secrets.
    pub keys: Vec<(String, String)>,
    /// `[limits]` entries by name, checked against the table in `limits.rs` when resolved.
    pub limits: BTreeMap<String, Raw>,
}

impl FileLayer {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::FileRead {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|err: toml::de::Error| ConfigError::FileSyntax {
                    path: path.to_owned(),
                    message: err.to_string().trim_end().to_owned(),
                })?;
        let mut layer = FileLayer {
            path: path.to_owned(),
            ..FileLayer::default()
        };
        for (name, value) in &table {
            match name.as_str() {
                section if SECTIONS.contains(&section) => {
                    for (sub, value) in layer.section(name, value)? {
                        layer.setting(&format!("{section}.{sub}"), value)?;
                    }
                }
                SECTION_KEYS => {
                    for (key, secret) in layer.section(name, value)? {
                        layer.api_key(key, secret)?;
                    }
                }
                SECTION_LIMITS => {
                    for (key, value) in layer.section(name, value)? {
                        layer.limit(key, value)?;
                    }
                }
                _ => layer.setting(name, value)?,
            }
        }
        Ok(layer)
    }

    fn origin(&self, key: &str) -> Origin {
        Origin::File {
            path: self.path.clone(),
            key: key.to_owned(),
        }
    }

    fn section<'t>(
        &self,
        name: &str,
        value: &'t toml::Value,
    ) -> Result<&'t toml::Table, ConfigError> {
        value.as_table().ok_or_else(|| ConfigError::Invalid {
            origin: self.origin(name),
            shown: value.to_string(),
            reason: format!("expected a section like [{name}]"),
        })
    }

    fn setting(&mut self, key: &str, value: &toml::Value) -> Result<(), ConfigError> {
        let Some(setting) = FILE_SETTINGS.iter().find(|s| s.key == key) else {
            return Err(self.unknown(key));
        };
        let invalid = |reason: &str| ConfigError::Invalid {
            origin: self.origin(key),
            shown: value.to_string(),
            reason: reason.to_owned(),
        };
        use toml::Value as V;
        let raw = match (setting.kind, value) {
            (Kind::Bool, V::Boolean(b)) => b.to_string(),
            (Kind::Str | Kind::IntOrStr | Kind::StrList, V::String(s)) => s.clone(),
            (Kind::Int | Kind::IntOrStr, V::Integer(i)) => i.to_string(),
            (Kind::StrList, V::Array(items)) => {
                let strings: Option<Vec<&str>> = items.iter().map(V::as_str).collect();
                let strings = strings.ok_or_else(|| invalid("expected an array of strings"))?;
                if strings.is_empty() {
                    // `node_ips = []` reads as "none", i.e. the default.
                    return Ok(());
                }
                strings.join(",")
            }
            (Kind::Bool, _) => return Err(invalid("expected true or false")),
            (Kind::Str, _) => return Err(invalid("expected a string")),
            (Kind::Int, _) => return Err(invalid("expected an integer")),
            (Kind::IntOrStr, _) => {
                return Err(invalid("expected seconds or a duration like \"5m\""))
            }
            (Kind::StrList, _) => return Err(invalid("expected an array of strings")),
        };
        let raw = Raw {
            value: raw.trim().to_owned(),
            shown: value.to_string(),
            origin: self.origin(key),
        };
        self.values.insert(setting.key, raw);
        Ok(())
    }

    /// A `[limits]` entry: a number, or a string like "64KiB" or "30s".
    fn limit(&mut self, name: &str, value: &toml::Value) -> Result<(), ConfigError> {
        let key = format!("{SECTION_LIMITS}.{name}");
        let raw = match value {
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::String(s) => s.trim().to_owned(),
            _ => {
                return Err(ConfigError::Invalid {
                    origin: self.origin(&key),
                    shown: value.to_string(),
                    reason: "expected a number or a string like \"64KiB\" or \"30s\"".to_owned(),
                })
            }
        };
        let raw = Raw {
            value: raw,
            shown: value.to_string(),
            origin: self.origin(&key),
        };
        self.limits.insert(name.to_owned(), raw);
        Ok(())
    }

    fn api_key(&mut self, key: &str, secret: &toml::Value) -> Result<(), ConfigError> {
        let origin = self.origin(&format!("{SECTION_KEYS}.{key}"));
        let invalid = |reason: String| ConfigError::Invalid {
            origin: origin.clone(),
            // Never echo what may be a secret; the key name is in the origin already.
            shown: "…".to_owned(),
            reason,
        };
        let secret = secret
            .as_str()
            .ok_or_else(|| invalid("expected the secret as a string".to_owned()))?
            .trim();
        parse::api_key(key).map_err(invalid)?;
        parse::api_secret(key, secret).map_err(invalid)?;
        self.keys.push((key.to_owned(), secret.to_owned()));
        Ok(())
    }

    fn unknown(&self, key: &str) -> ConfigError {
        // List the settings of the section the unknown key is in: that is where a typo's
        // correct spelling is.
        let prefix = match key.split_once('.') {
            Some((section, _)) => format!("{section}."),
            None => String::new(),
        };
        let mut known: Vec<String> = FILE_SETTINGS
            .iter()
            .filter(|s| match s.key.strip_prefix(prefix.as_str()) {
                Some(rest) => !rest.contains('.'),
                None => false,
            })
            .map(|s| s.key.to_owned())
            .collect();
        if prefix.is_empty() {
            known.extend(SECTIONS.iter().map(|section| format!("[{section}]")));
            known.push(format!("[{SECTION_KEYS}]"));
            known.push(format!("[{SECTION_LIMITS}]"));
        }
        ConfigError::UnknownSetting {
            path: self.path.clone(),
            key: key.to_owned(),
            known: known.join(", "),
        }
    }
}

/// Flags > environment > file, for one command invocation.
pub(super) struct Sources<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    pub file: Option<FileLayer>,
}

impl<'a> Sources<'a> {
    /// Reads the config file named by `--config` or SWITCHBOARD_CONFIG, if any.
    pub fn new(
        config_flag: Option<&Path>,
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut sources = Sources { env, file: None };
        let path = match config_flag {
            Some(path) => Some(path.to_owned()),
            None => sources.env(ENV_CONFIG).map(|raw| PathBuf::from(raw.value)),
        };
        if let Some(path) = path {
            sources.file = Some(FileLayer::load(&path)?);
        }
        Ok(sources)
    }

    /// The environment lookup, for settings whose names are not fixed (`limits.rs`).
    pub fn env_fn(&self) -> &dyn Fn(&str) -> Option<String> {
        self.env
    }

    /// An environment variable, trimmed. Empty counts as unset, as `FOO=` in a compose file
    /// or an env file usually means "not configured".
    pub fn env(&self, name: &'static str) -> Option<Raw> {
        let value = (self.env)(name)?;
        let value = value.trim();
        (!value.is_empty()).then(|| Raw::typed(value.to_owned(), Origin::Env(name.into())))
    }

    /// The highest-precedence raw value of a setting.
    pub fn lookup(&self, flag: Option<&str>, setting: &Setting) -> Option<Raw> {
        if let Some(value) = flag {
            return Some(Raw::typed(
                value.trim().to_owned(),
                Origin::Flag(setting.flag),
            ));
        }
        if let Some(raw) = self.env(setting.env) {
            return Some(raw);
        }
        self.file.as_ref()?.values.get(setting.key).cloned()
    }

    /// Looks a setting up and parses it; `None` means "use the default".
    pub fn get<T>(
        &self,
        flag: Option<&str>,
        setting: &Setting,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.lookup(flag, setting) {
            Some(raw) => parse(&raw.value)
                .map(Some)
                .map_err(|reason| raw.invalid(reason)),
            None => Ok(None),
        }
    }

    /// Development mode. `--dev` can only switch it on: a flag that is absent falls through
    /// to the environment and file like any other setting.
    pub fn dev(&self, flag: bool) -> Result<bool, ConfigError> {
        let flag = flag.then_some("true");
        Ok(self.get(flag, &DEV, parse::bool)?.unwrap_or(false))
    }
}
