//! Command-line definition (clap derive).
//!
//! Value-carrying options of `serve` are kept as raw strings on purpose: they are parsed in
//! [`super::resolve`] together with the environment and the config file, so every bad value
//! gets the same kind of message naming where it came from (`invalid --rtc-port "x": …` vs
//! `invalid SWITCHBOARD_RTC_PORT="x": …`). For the same reason no option uses clap's
//! `env =` attribute or a `default_value`: an option that was not given must stay `None` so
//! the lower-precedence sources get their turn; each option's help text names its
//! environment variable, config file key and default instead. Pairing rules (`--api-key`
//! needs `--api-secret`) are checked there too rather than with clap's `requires`, so they
//! apply to the environment variables as well, with the same message.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::parse::parse_ttl;

/// Switchboard: a self-hosted WebRTC SFU speaking LiveKit's client protocol.
///
/// Settings are taken from, in order of precedence: command-line options, environment
/// variables (SWITCHBOARD_*), the TOML config file (--config or SWITCHBOARD_CONFIG), and
/// built-in defaults. See `switchboard serve --help`.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// `Command` is parsed once at start and moved into its handler: boxing the large `serve`
// arguments would save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the SFU: HTTP API, WebSocket signaling and the media plane.
    Serve(ServeArgs),
    /// Manage access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Apply database migrations and exit.
    Migrate(MigrateArgs),
    /// Manage rooms on a running server.
    #[command(subcommand)]
    Rooms(crate::admin_cli::RoomsCommand),
    /// Manage broadcast sessions on a running server.
    #[command(subcommand)]
    Sessions(crate::admin_cli::SessionsCommand),
    /// Drain a running node: it opens no new room, stops once its rooms are empty (or its
    /// cluster.drain_timeout has passed).
    Drain(crate::admin_cli::DrainArgs),
    /// Drive real WebRTC clients against a server and report delivery, latency and cost.
    Loadtest(crate::loadtest::LoadtestArgs),
}

#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Development mode: fall back to the well-known key "devkey"/"secret".
    ///
    /// If no API key is configured, the key "devkey" with secret "secret" is used, and
    /// configured secrets may be shorter than 32 characters. Never use in production.
    ///
    /// Environment: SWITCHBOARD_DEV=1. Config file: dev = true.
    #[arg(long)]
    pub dev: bool,

    /// TOML config file with settings.
    ///
    /// Flags and environment variables override its settings; unknown settings in it are
    /// an error.
    ///
    /// Environment: SWITCHBOARD_CONFIG.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Let --dev listen on a non-loopback address.
    ///
    /// Without it, --dev refuses an http_addr or rtc.ip other machines can reach, since a
    /// development server hands admin tokens to anyone who can reach it.
    ///
    /// Environment: SWITCHBOARD_DEV_ALLOW_PUBLIC=1. Config file: dev_allow_public = true.
    #[arg(long)]
    pub dev_allow_public: bool,

    /// Browser origin allowed to call the API, like https://app.example.com (repeat for
    /// several), or * for any origin.
    ///
    /// Credentials mode is never allowed (every endpoint takes a bearer token). In
    /// development mode the server's own and loopback origins are always allowed;
    /// /v1/dev/token accepts only those and the origins listed here, never *.
    ///
    /// Environment: SWITCHBOARD_CORS_ORIGINS (comma-separated). Config file: cors_origins
    /// (an array). Default: * in production; the server's own and loopback origins with
    /// --dev.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,

    /// Address the HTTP API and WebSocket signaling listen on.
    ///
    /// Environment: SWITCHBOARD_HTTP_ADDR. Config file: http_addr.
    /// Default: 127.0.0.1:7880.
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<String>,

    /// Local IP the WebRTC media (UDP) socket binds to.
    ///
    /// Environment: SWITCHBOARD_RTC_IP. Config file: rtc.ip.
    /// Default: the IP of --http-addr.
    #[arg(long, value_name = "IP")]
    pub rtc_ip: Option<String>,

    /// UDP port for WebRTC media (0 picks a free port, for tests).
    ///
    /// Environment: SWITCHBOARD_RTC_PORT. Config file: rtc.port. Default: 7882.
    #[arg(long, value_name = "PORT")]
    pub rtc_port: Option<String>,

    /// TCP port for WebRTC media over ICE-TCP, for clients whose firewall drops UDP: one
    /// port for every worker, offered as a lower-priority candidate so UDP wins when both
    /// work. `off` turns it off; 0 picks a free port (tests).
    ///
    /// Environment: SWITCHBOARD_RTC_TCP_PORT. Config file: rtc.tcp_port. Default: 7881.
    #[arg(long, value_name = "PORT|off")]
    pub rtc_tcp_port: Option<String>,

    /// Number of media worker threads (at least 1).
    ///
    /// Environment: SWITCHBOARD_RTC_WORKERS. Config file: rtc.workers.
    /// Default: the number of CPUs.
    #[arg(long, value_name = "N")]
    pub rtc_workers: Option<String>,

    /// Estimate each subscriber's bandwidth (transport-wide congestion control) and send it
    /// the layers that fit: on or off.
    ///
    /// Off, every subscriber gets the best layer it can use, whatever its link.
    /// Environment: SWITCHBOARD_RTC_BANDWIDTH_ESTIMATION. Config file:
    /// rtc.bandwidth_estimation. Default: on.
    #[arg(long, value_name = "on|off")]
    pub rtc_bandwidth_estimation: Option<String>,

    /// Serve LiveKit's signaling v1 at /rtc/v1 (one PeerConnection per participant): on or
    /// off.
    ///
    /// Off, /rtc/v1 answers 404 and the SDKs fall back to /rtc (two PeerConnections).
    /// Environment: SWITCHBOARD_RTC_SINGLE_PC. Config file: rtc.single_pc. Default: on.
    #[arg(long, value_name = "on|off")]
    pub rtc_single_pc: Option<String>,

    /// IP address browsers send media to (repeat for several).
    ///
    /// Announced to clients as ICE candidates. Required when the media socket binds to
    /// 0.0.0.0 or ::, since clients cannot use those.
    ///
    /// Environment: SWITCHBOARD_NODE_IPS (comma-separated). Config file: rtc.node_ips
    /// (an array). Default: the IP the media socket binds to.
    #[arg(long = "node-ip", value_name = "IP")]
    pub node_ips: Vec<String>,

    /// STUN or TURN server clients may use (repeat for several).
    ///
    /// `stun:host:port`, or `USERNAME:CREDENTIAL@turn:host:port?transport=udp` for a TURN
    /// server with a static credential, or `turn:host:port` with `--turn-secret`. Sent in LiveKit JoinResponses and as `Link`
    /// headers of WHIP/WHEP answers.
    ///
    /// Environment: SWITCHBOARD_ICE_SERVERS (comma-separated). Config file:
    /// rtc.ice_servers (an array). Default: none (clients reach the server directly).
    #[arg(long = "ice-server", value_name = "[USER:CREDENTIAL@]URL")]
    pub ice_servers: Vec<String>,

    /// Secret shared with the TURN servers of `--ice-server` that have no static credential
    /// (coturn's `static-auth-secret` with `use-auth-secret`): each participant is given its
    /// own credential, valid for `--turn-credential-ttl` (the TURN REST API scheme).
    ///
    /// Environment: SWITCHBOARD_TURN_SECRET. Config file: rtc.turn_secret. Default: none.
    #[arg(long = "turn-secret", value_name = "SECRET")]
    pub turn_secret: Option<String>,

    /// How long a minted TURN credential is accepted (`90s`, `12h`; plain seconds too). A
    /// TURN server also checks it when an allocation is refreshed, so it must outlast the
    /// longest call.
    ///
    /// Environment: SWITCHBOARD_TURN_CREDENTIAL_TTL. Config file: rtc.turn_credential_ttl.
    /// Default: 24h.
    #[arg(long = "turn-credential-ttl", value_name = "DURATION")]
    pub turn_credential_ttl: Option<String>,

    /// Run the embedded TURN server on this UDP port (3478 is TURN's), on the media IP:
    /// participants are told about it with credentials of their own, and it relays only to
    /// this server's media addresses and the public internet. `off` (the default) runs none.
    ///
    /// Environment: SWITCHBOARD_TURN_UDP_PORT. Config file: turn.udp_port. Default: off.
    #[arg(long = "turn-udp-port", value_name = "PORT|off")]
    pub turn_udp_port: Option<String>,

    /// Ports the embedded TURN server's relay sockets bind in, `START-END` (one per
    /// allocation); `0` takes ephemeral ports (tests).
    ///
    /// Environment: SWITCHBOARD_TURN_RELAY_PORTS. Config file: turn.relay_ports.
    /// Default: 30000-40000.
    #[arg(long = "turn-relay-ports", value_name = "START-END")]
    pub turn_relay_ports: Option<String>,

    /// Also serve the embedded TURN server over TLS on this TCP port (443 in production:
    /// the way out of networks that let only HTTPS through), with `--turn-cert` and
    /// `--turn-key`; needs `--turn-udp-port`. `off` (the default) serves UDP only.
    ///
    /// Environment: SWITCHBOARD_TURN_TLS_PORT. Config file: turn.tls_port. Default: off.
    #[arg(long = "turn-tls-port", value_name = "PORT|off")]
    pub turn_tls_port: Option<String>,

    /// The TURN TLS certificate chain (PEM, leaf first).
    ///
    /// Environment: SWITCHBOARD_TURN_CERT. Config file: turn.cert_file. Default: none.
    #[arg(long = "turn-cert", value_name = "FILE")]
    pub turn_cert: Option<String>,

    /// The TURN TLS private key (PEM).
    ///
    /// Environment: SWITCHBOARD_TURN_KEY. Config file: turn.key_file. Default: none.
    #[arg(long = "turn-key", value_name = "FILE")]
    pub turn_key: Option<String>,

    /// The host name clients reach the embedded TURN server's TLS port at: the name on its
    /// certificate, announced as `turns:NAME:PORT?transport=tcp`.
    ///
    /// Environment: SWITCHBOARD_TURN_DOMAIN. Config file: turn.domain. Default: each
    /// announced media IP (the certificate must then name the IP).
    #[arg(long = "turn-domain", value_name = "NAME")]
    pub turn_domain: Option<String>,

    /// Database URL (sqlite: or postgres://).
    ///
    /// Environment: SWITCHBOARD_DATABASE_URL. Config file: database_url.
    /// Default: sqlite://<data-dir>/switchboard.db?mode=rwc.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,

    /// Directory for local state, such as the default SQLite database.
    ///
    /// Environment: SWITCHBOARD_DATA_DIR. Config file: data_dir. Default: ./data.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,

    /// Directory recordings (egress files and RTP egress SDP documents) are written to.
    ///
    /// API requests may name a subdirectory of it, never a path outside it.
    ///
    /// Environment: SWITCHBOARD_EGRESS_DIR. Config file: egress.directory.
    /// Default: <data-dir>/egress.
    #[arg(long, value_name = "DIR")]
    pub egress_dir: Option<String>,

    /// API key that signs access tokens (needs --api-secret).
    ///
    /// Replaces the keys from the environment and config file: keys come from the
    /// highest-precedence source that defines any.
    ///
    /// Environment: SWITCHBOARD_API_KEY with SWITCHBOARD_API_SECRET, and/or
    /// SWITCHBOARD_KEYS="key1:secret1,key2:secret2". Config file: a [keys] section of
    /// key = "secret" lines.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,

    /// Secret of --api-key, at least 32 characters unless --dev.
    ///
    /// Environment: SWITCHBOARD_API_SECRET.
    #[arg(long, value_name = "SECRET")]
    pub api_secret: Option<String>,

    /// Seconds a room stays open after its last participant left.
    ///
    /// A duration like 5m is accepted too.
    ///
    /// Environment: SWITCHBOARD_EMPTY_TIMEOUT. Config file: empty_timeout. Default: 300.
    #[arg(long, value_name = "SECS")]
    pub empty_timeout: Option<String>,

    /// Maximum participants per room (0 means unlimited).
    ///
    /// Environment: SWITCHBOARD_MAX_PARTICIPANTS. Config file: max_participants.
    /// Default: 0.
    #[arg(long, value_name = "N")]
    pub max_participants: Option<String>,

    /// WebSocket URL clients connect to, returned along with tokens.
    ///
    /// A ws:// or wss:// URL, e.g. the address of a TLS-terminating proxy.
    ///
    /// Environment: SWITCHBOARD_PUBLIC_URL. Config file: public_url.
    /// Default: ws://<http-addr>.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,

    /// Log filter, e.g. "info,switchboard=debug" (tracing EnvFilter syntax).
    ///
    /// Environment: SWITCHBOARD_LOG. Config file: log. Default: info.
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,

    /// URL to POST LiveKit-format webhooks to (repeat for several).
    ///
    /// Every event (room, participant, track, session and egress changes) is sent to each
    /// URL in order, signed as LiveKit signs webhooks, and retried until it is accepted.
    ///
    /// Environment: SWITCHBOARD_WEBHOOK_URLS (comma-separated). Config file: webhooks.urls
    /// (an array). Default: none.
    #[arg(long = "webhook-url", value_name = "URL")]
    pub webhook_urls: Vec<String>,

    /// API key whose secret signs webhooks (one of the configured keys).
    ///
    /// Receivers verify webhooks with this key and its secret.
    ///
    /// Environment: SWITCHBOARD_WEBHOOK_API_KEY. Config file: webhooks.api_key.
    /// Default: the first configured key in sorted order.
    #[arg(long, value_name = "KEY")]
    pub webhook_api_key: Option<String>,

    /// NATS server to publish every event to, like nats://127.0.0.1:4222.
    ///
    /// Several servers of one cluster may be given comma-separated.
    ///
    /// Environment: SWITCHBOARD_NATS_URL. Config file: nats.url. Default: none (no NATS).
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,

    /// Subject prefix of published events: each goes to <prefix>.<event>.
    ///
    /// Environment: SWITCHBOARD_NATS_SUBJECT_PREFIX. Config file: nats.subject_prefix.
    /// Default: switchboard.events.
    #[arg(long, value_name = "SUBJECT")]
    pub nats_subject_prefix: Option<String>,

    /// Subject that session state changes are also published to, as stream status messages.
    ///
    /// Environment: SWITCHBOARD_NATS_SESSION_SUBJECT. Config file: nats.session_subject.
    /// Default: events.raw.stream.status.
    #[arg(long, value_name = "SUBJECT")]
    pub nats_session_subject: Option<String>,

    /// Subject prefix of the messages nodes of one cluster send each other (revocations go
    /// to <prefix>.revocations). Clusters sharing a NATS server need different prefixes.
    ///
    /// Environment: SWITCHBOARD_NATS_CLUSTER_PREFIX. Config file: nats.cluster_prefix.
    /// Default: switchboard.cluster.
    #[arg(long, value_name = "SUBJECT")]
    pub nats_cluster_prefix: Option<String>,

    /// This node's id, unique in the cluster (nodes sharing one database): 1 to 64
    /// characters from A-Z, a-z, 0-9, '_', '.' and '-'.
    ///
    /// It marks the rooms, connections and egress the node serves, so a restarted node
    /// recovers its own records only: it must stay the same across restarts.
    ///
    /// Environment: SWITCHBOARD_NODE_ID. Config file: node_id. Default: ND_ and a ULID,
    /// generated once and kept in <data-dir>/node-id.
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,

    /// How often this node records its heartbeat in the database (`2s`; plain seconds too).
    ///
    /// Environment: SWITCHBOARD_CLUSTER_HEARTBEAT_INTERVAL. Config file:
    /// cluster.heartbeat_interval. Default: 2s.
    #[arg(long, value_name = "DURATION")]
    pub cluster_heartbeat_interval: Option<String>,

    /// How long a node may go without a heartbeat before the others call it dead and close
    /// what it left open; at least twice the heartbeat interval.
    ///
    /// Environment: SWITCHBOARD_CLUSTER_NODE_TIMEOUT. Config file: cluster.node_timeout.
    /// Default: 10s.
    #[arg(long, value_name = "DURATION")]
    pub cluster_node_timeout: Option<String>,

    /// How long this node's hold on a room (its lease) lasts without renewal; renewed every
    /// heartbeat. At least twice the heartbeat interval, at most the node timeout.
    ///
    /// Environment: SWITCHBOARD_CLUSTER_ROOM_LEASE_TTL. Config file: cluster.room_lease_ttl.
    /// Default: the node timeout.
    #[arg(long, value_name = "DURATION")]
    pub cluster_room_lease_ttl: Option<String>,

    /// How long this node's hold on delivering the events to one webhook or to NATS (its
    /// delivery lease) lasts without renewal; renewed every third of it. Another node takes
    /// a sink over this long after its holder died.
    ///
    /// Environment: SWITCHBOARD_CLUSTER_DELIVERY_LEASE_TTL. Config file:
    /// cluster.delivery_lease_ttl. Default: the node timeout.
    #[arg(long, value_name = "DURATION")]
    pub cluster_delivery_lease_ttl: Option<String>,
    /// How long a drain (SIGTERM/SIGINT, or `switchboard drain`) waits for the rooms open on
    /// this node to empty before it tells the participants left to leave and stops. 0 = no
    /// wait: stop at once, as a single node does.
    ///
    /// Environment: SWITCHBOARD_CLUSTER_DRAIN_TIMEOUT. Config file: cluster.drain_timeout.
    /// Default: 0s.
    #[arg(long, value_name = "DURATION")]
    pub cluster_drain_timeout: Option<String>,

    /// Sets one resource limit, like max_tracks_per_participant=8 (repeat for several).
    ///
    /// docs/configuration.md lists every limit and its default.
    ///
    /// Environment: SWITCHBOARD_LIMIT_<NAME>. Config file: a [limits] section.
    #[arg(long = "limit", value_name = "NAME=VALUE")]
    pub limits: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint an access token for a participant and print it.
    Create(TokenCreateArgs),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// Room the token grants access to.
    #[arg(long, value_name = "ROOM")]
    pub room: String,

    /// Participant identity (unique within the room).
    #[arg(long, value_name = "IDENTITY")]
    pub identity: String,

    /// Display name of the participant.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Participant metadata (free-form, usually JSON), visible to other participants.
    #[arg(long, value_name = "METADATA")]
    pub metadata: Option<String>,

    /// How long the token is valid, like 6h, 30m, 90s or 1d.
    #[arg(long, value_name = "DURATION", default_value = "6h", value_parser = parse_ttl)]
    pub ttl: Duration,

    /// Do not allow the participant to publish tracks.
    #[arg(long)]
    pub no_publish: bool,

    /// Do not allow the participant to subscribe to tracks.
    #[arg(long)]
    pub no_subscribe: bool,

    /// Grant room administration (the roomAdmin permission).
    #[arg(long)]
    pub admin: bool,

    /// Development mode: sign with "devkey"/"secret" unless keys are configured.
    ///
    /// The same fallback as `serve --dev`, so the token works with a development server.
    ///
    /// Environment: SWITCHBOARD_DEV=1. Config file: dev = true.
    #[arg(long)]
    pub dev: bool,

    /// TOML config file to read API keys from, as for `serve`.
    ///
    /// Environment: SWITCHBOARD_CONFIG.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// API key to sign with.
    ///
    /// Alone, it selects a configured key and takes its secret from the environment or
    /// config file; with --api-secret it defines the key. Without it, the first configured
    /// key in sorted order is used.
    ///
    /// Environment: SWITCHBOARD_API_KEY, SWITCHBOARD_KEYS. Config file: [keys].
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,

    /// Secret to sign with (needs --api-key).
    ///
    /// Environment: SWITCHBOARD_API_SECRET.
    #[arg(long, value_name = "SECRET")]
    pub api_secret: Option<String>,
}

#[derive(Debug, Default, Args)]
pub struct MigrateArgs {
    /// TOML config file to read the database settings from, as for `serve`.
    ///
    /// Environment: SWITCHBOARD_CONFIG.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Database URL (sqlite: or postgres://).
    ///
    /// Environment: SWITCHBOARD_DATABASE_URL. Config file: database_url.
    /// Default: sqlite://<data-dir>/switchboard.db?mode=rwc, where the data directory is
    /// SWITCHBOARD_DATA_DIR or data_dir in the config file (default ./data).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,

    /// Development mode, as for `serve`.
    ///
    /// Accepted so the same flags work for every subcommand; migrations need no API keys
    /// either way.
    ///
    /// Environment: SWITCHBOARD_DEV=1. Config file: dev = true.
    #[arg(long)]
    pub dev: bool,
}
