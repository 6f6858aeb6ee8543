//! Tests of `serve` settings resolution: defaults, precedence and error messages.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use tempfile::NamedTempFile;

use super::*;

pub(super) const STRONG: &str = "0123456789abcdef0123456789abcdef";
pub(super) const STRONG2: &str = "fedcba9876543210fedcba9876543210";

/// An environment holding exactly `vars`.
pub(super) fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| vars.get(name).cloned()
}

pub(super) fn no_env(_: &str) -> Option<String> {
    None
}

pub(super) fn parse(args: &[&str]) -> Command {
    let argv = ["switchboard"].iter().chain(args);
    Cli::try_parse_from(argv).expect("arguments parse").command
}

pub(super) fn serve(args: &[&str]) -> ServeArgs {
    let mut argv = vec!["serve"];
    argv.extend(args);
    match parse(&argv) {
        Command::Serve(args) => args,
        other => panic!("expected serve, got {other:?}"),
    }
}

pub(super) fn toml_file(text: &str) -> NamedTempFile {
    let mut file = NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write temp file");
    file
}

pub(super) fn path_str(file: &NamedTempFile) -> &str {
    file.path().to_str().expect("temp path is UTF-8")
}

pub(super) fn err(args: &ServeArgs, env: &impl Fn(&str) -> Option<String>) -> String {
    match resolve(args, env) {
        Ok(settings) => panic!("expected an error, got {settings:?}"),
        Err(err) => err.to_string(),
    }
}

pub(super) fn ok(args: &ServeArgs, env: &impl Fn(&str) -> Option<String>) -> Settings {
    resolve(args, env).unwrap_or_else(|err| panic!("unexpected error: {err}"))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

#[test]
fn dev_mode_defaults() {
    let s = ok(&serve(&["--dev"]), &no_env);
    assert!(s.dev);
    assert_eq!(s.http_addr, addr("127.0.0.1:7880"));
    assert_eq!(s.rtc.ip, ip("127.0.0.1"));
    assert_eq!(s.rtc.port, 7882);
    assert_eq!(
        s.rtc.tcp_port,
        Some(7881),
        "ICE-TCP is on by default, also in --dev"
    );
    assert_eq!(
        s.turn, None,
        "the embedded TURN server runs only when asked"
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(s.rtc.workers, cpus);
    assert!(s.rtc.node_ips.is_empty());
    assert_eq!(s.rtc.advertised_ips(), vec![ip("127.0.0.1")]);
    assert_eq!(s.database_url, "sqlite://./data/switchboard.db?mode=rwc");
    assert_eq!(s.data_dir, Path::new("./data"));
    let dev_keys = BTreeMap::from([("devkey".to_owned(), "secret".to_owned())]);
    assert_eq!(s.keys, dev_keys);
    assert_eq!(s.empty_timeout, Duration::from_secs(300));
    assert_eq!(s.max_participants, 0);
    assert_eq!(s.public_url, None);
    assert_eq!(s.public_ws_url(), "ws://127.0.0.1:7880");
    assert_eq!(s.log, "info");
}

#[test]
fn config_dev_from_env_and_file() {
    assert!(ok(&serve(&[]), &env(&[("SWITCHBOARD_DEV", "1")])).dev);
    let file = toml_file("dev = true\n");
    assert!(ok(&serve(&["--config", path_str(&file)]), &no_env).dev);
    assert_eq!(
        err(&serve(&[]), &env(&[("SWITCHBOARD_DEV", "maybe")])),
        "invalid SWITCHBOARD_DEV=\"maybe\": expected 1/true/yes/on or 0/false/no/off"
    );
}

#[test]
fn config_every_setting_from_file() {
    let file = toml_file(&format!(
        r#"
http_addr = "0.0.0.0:8000"
database_url = "postgres://sb@db/sb"
data_dir = "/var/lib/sb"
empty_timeout = "2m"
max_participants = 50
public_url = "wss://sfu.example.com/"
log = "debug"

[rtc]
ip = "0.0.0.0"
port = 0
tcp_port = 443
workers = 3
node_ips = ["203.0.113.5", "2001:db8::5"]

[turn]
udp_port = 3478
relay_ports = "40000-40100"

[keys]
prod = "{STRONG}"
"#
    ));
    let s = ok(&serve(&["--config", path_str(&file)]), &no_env);
    assert!(!s.dev);
    assert_eq!(s.http_addr, addr("0.0.0.0:8000"));
    assert_eq!(s.rtc.ip, ip("0.0.0.0"));
    assert_eq!(s.rtc.port, 0);
    assert_eq!(s.rtc.tcp_port, Some(443));
    assert_eq!(
        s.turn,
        Some(TurnSettings {
            udp_port: 3478,
            relay_ports: Some(40000..=40100),
            tls: None,
        })
    );
    assert_eq!(s.rtc.workers, 3);
    assert_eq!(s.rtc.node_ips, vec![ip("203.0.113.5"), ip("2001:db8::5")]);
    assert_eq!(s.database_url, "postgres://sb@db/sb");
    assert_eq!(s.data_dir, Path::new("/var/lib/sb"));
    assert_eq!(s.keys.get("prod").map(String::as_str), Some(STRONG));
    assert_eq!(s.empty_timeout, Duration::from_secs(120));
    assert_eq!(s.max_participants, 50);
    assert_eq!(s.public_ws_url(), "wss://sfu.example.com");
    assert_eq!(s.log, "debug");
}

#[test]
fn config_precedence_flag_over_env_over_file() {
    let file = toml_file(
        r#"
http_addr = "10.0.0.1:1001"
database_url = "sqlite://file.db"
empty_timeout = 10
log = "warn"
[rtc]
port = 1001
node_ips = ["10.0.0.1"]
"#,
    );
    let config = path_str(&file);
    let all_env = env(&[
        ("SWITCHBOARD_HTTP_ADDR", "10.0.0.2:1002"),
        ("SWITCHBOARD_DATABASE_URL", "sqlite://env.db"),
        ("SWITCHBOARD_EMPTY_TIMEOUT", "20"),
        ("SWITCHBOARD_LOG", "error"),
        ("SWITCHBOARD_RTC_PORT", "1002"),
        ("SWITCHBOARD_RTC_TCP_PORT", "off"),
        ("SWITCHBOARD_NODE_IPS", "10.0.0.2, 10.0.0.22"),
    ]);

    let flags = serve(&[
        "--dev",
        "--config",
        config,
        "--http-addr",
        "10.0.0.3:1003",
        "--database-url",
        "sqlite://flag.db",
        "--empty-timeout",
        "30",
        "--log",
        "trace",
        "--rtc-port",
        "1003",
        "--node-ip",
        "10.0.0.3",
        "--node-ip",
        "10.0.0.33",
    ]);
    let s = ok(&flags, &all_env);
    assert_eq!(s.http_addr, addr("10.0.0.3:1003"));
    assert_eq!(s.database_url, "sqlite://flag.db");
    assert_eq!(s.empty_timeout, Duration::from_secs(30));
    assert_eq!(s.log, "trace");
    assert_eq!(s.rtc.port, 1003);
    assert_eq!(s.rtc.node_ips, vec![ip("10.0.0.3"), ip("10.0.0.33")]);

    let s = ok(&serve(&["--dev", "--config", config]), &all_env);
    assert_eq!(s.http_addr, addr("10.0.0.2:1002"));
    assert_eq!(s.database_url, "sqlite://env.db");
    assert_eq!(s.empty_timeout, Duration::from_secs(20));
    assert_eq!(s.log, "error");
    assert_eq!(s.rtc.port, 1002);
    assert_eq!(s.rtc.tcp_port, None);
    assert_eq!(s.rtc.node_ips, vec![ip("10.0.0.2"), ip("10.0.0.22")]);

    let s = ok(&serve(&["--dev", "--config", config]), &no_env);
    assert_eq!(s.http_addr, addr("10.0.0.1:1001"));
    assert_eq!(s.database_url, "sqlite://file.db");
    assert_eq!(s.empty_timeout, Duration::from_secs(10));
    assert_eq!(s.log, "warn");
    assert_eq!(s.rtc.port, 1001);
    assert_eq!(s.rtc.node_ips, vec![ip("10.0.0.1")]);
}

#[test]
fn config_file_from_env_and_flag_wins() {
    let from_env = toml_file("http_addr = \"10.0.0.1:1\"\n");
    let from_flag = toml_file("http_addr = \"10.0.0.2:2\"\n");
    let vars = env(&[("SWITCHBOARD_CONFIG", path_str(&from_env))]);
    assert_eq!(ok(&serve(&["--dev"]), &vars).http_addr, addr("10.0.0.1:1"));
    let args = serve(&["--dev", "--config", path_str(&from_flag)]);
    assert_eq!(ok(&args, &vars).http_addr, addr("10.0.0.2:2"));
}

#[test]
fn config_empty_env_counts_as_unset() {
    let vars = env(&[
        ("SWITCHBOARD_HTTP_ADDR", ""),
        ("SWITCHBOARD_PUBLIC_URL", "  "),
    ]);
    let s = ok(&serve(&["--dev"]), &vars);
    assert_eq!(s.http_addr, addr("127.0.0.1:7880"));
    assert_eq!(s.public_url, None);
}

#[test]
fn config_rtc_ip_defaults_to_http_ip() {
    let s = ok(&serve(&["--dev", "--http-addr", "192.0.2.1:80"]), &no_env);
    assert_eq!(s.rtc.ip, ip("192.0.2.1"));
    let s = ok(&serve(&["--dev", "--http-addr", "[::1]:80"]), &no_env);
    assert_eq!(s.rtc.ip, ip("::1"));
    assert_eq!(s.public_ws_url(), "ws://[::1]:80");
}

#[test]
fn config_invalid_values_name_their_source() {
    // (serve flags after --dev, environment, expected message)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            &[],
            &[("SWITCHBOARD_RTC_PORT", "abc")],
            "invalid SWITCHBOARD_RTC_PORT=\"abc\": not a port number (0-65535)",
        ),
        (
            &["--rtc-port", "70000"],
            &[],
            "invalid --rtc-port \"70000\": not a port number (0-65535)",
        ),
        (
            &["--rtc-tcp-port", "no"],
            &[],
            "invalid --rtc-tcp-port \"no\": not a port number (0-65535) or `off`",
        ),
        (
            &["--http-addr", "foo"],
            &[],
            "invalid --http-addr \"foo\": expected IP:PORT like 127.0.0.1:7880",
        ),
        (
            &["--rtc-ip", "localhost"],
            &[],
            "invalid --rtc-ip \"localhost\": expected an IP address like 192.0.2.10",
        ),
        (
            &["--rtc-workers", "0"],
            &[],
            "invalid --rtc-workers \"0\": rtc.workers must be at least 1",
        ),
        (
            &[],
            &[("SWITCHBOARD_NODE_IPS", "203.0.113.5,0.0.0.0")],
            "invalid SWITCHBOARD_NODE_IPS=\"203.0.113.5,0.0.0.0\": 0.0.0.0 is not an address \
             browsers can reach; give this host's public IP",
        ),
        (
            &["--max-participants=-1"],
            &[],
            "invalid --max-participants \"-1\": expected a whole number from 0 (unlimited) to \
             4294967295",
        ),
        (
            &["--empty-timeout", "soon"],
            &[],
            "invalid --empty-timeout \"soon\": expected a number of seconds like 300, or a \
             duration like 5m",
        ),
        (
            &["--public-url", "http://sfu.example.com"],
            &[],
            "invalid --public-url \"http://sfu.example.com\": expected a ws:// or wss:// URL \
             like wss://sfu.example.com",
        ),
        (
            &["--api-key", "k"],
            &[],
            "--api-key given without --api-secret",
        ),
        (
            &["--api-secret", STRONG],
            &[],
            "--api-secret given without --api-key",
        ),
        (
            &[],
            &[("SWITCHBOARD_API_KEY", "k")],
            "SWITCHBOARD_API_KEY given without SWITCHBOARD_API_SECRET",
        ),
    ];
    for (args, vars, expected) in cases {
        let mut argv = vec!["--dev"];
        argv.extend(*args);
        assert_eq!(
            err(&serve(&argv), &env(vars)),
            *expected,
            "args {args:?} env {vars:?}"
        );
    }
}

#[test]
fn config_invalid_log_filter() {
    let message = err(&serve(&["--dev", "--log", "switchboard=loud"]), &no_env);
    assert!(
        message.starts_with("invalid --log \"switchboard=loud\": not a log filter like"),
        "{message}"
    );
}

#[test]
fn config_database_url_password_is_not_shown() {
    let args = serve(&["--dev", "--database-url", "mysql://sb:hunter2@db/sb"]);
    assert_eq!(
        err(&args, &no_env),
        "invalid --database-url \"mysql://sb:***@db/sb\": expected a sqlite: or postgres:// \
         URL, like sqlite://./data/switchboard.db?mode=rwc"
    );
    let s = ok(
        &serve(&["--dev", "--database-url", "postgres://sb:hunter2@db/sb"]),
        &no_env,
    );
    assert!(!format!("{s:?}").contains("hunter2"));
}

#[test]
fn config_default_database_url_follows_data_dir() {
    let s = ok(&serve(&["--dev", "--data-dir", "/var/lib/sb/"]), &no_env);
    assert_eq!(
        s.database_url,
        "sqlite:///var/lib/sb/switchboard.db?mode=rwc"
    );
    let vars = env(&[("SWITCHBOARD_DATA_DIR", "odd?dir#1%")]);
    let s = ok(&serve(&["--dev"]), &vars);
    assert_eq!(s.data_dir, Path::new("odd?dir#1%"));
    assert_eq!(
        s.database_url,
        "sqlite://odd%3Fdir%231%25/switchboard.db?mode=rwc"
    );
}

#[test]
fn config_node_ips_required_for_wildcard_ip() {
    let expected = "rtc.node_ips is required when rtc.ip is 0.0.0.0 (the address browsers \
                    should use)";
    let message = err(&serve(&["--dev", "--http-addr", "0.0.0.0:7880"]), &no_env);
    assert!(message.starts_with(expected), "{message}");
    let message = err(&serve(&["--dev", "--rtc-ip", "0.0.0.0"]), &no_env);
    assert!(message.starts_with(expected), "{message}");

    let args = serve(&[
        "--dev",
        "--http-addr",
        "0.0.0.0:7880",
        "--node-ip",
        "203.0.113.5",
    ]);
    let s = ok(&args, &no_env);
    assert_eq!(s.rtc.ip, ip("0.0.0.0"));
    assert_eq!(s.rtc.advertised_ips(), vec![ip("203.0.113.5")]);
    // A wildcard HTTP address is not a URL clients can use; the node IP is.
    assert_eq!(s.public_ws_url(), "ws://203.0.113.5:7880");
}

#[test]
fn config_file_errors() {
    let file = toml_file("[rtc]\nprt = 7882\n");
    let message = err(&serve(&["--dev", "--config", path_str(&file)]), &no_env);
    let expected = format!(
        "config file {}: unknown setting \"rtc.prt\"",
        path_str(&file)
    );
    assert!(message.starts_with(&expected), "{message}");
    assert!(
        message.contains("rtc.port"),
        "lists the known rtc settings: {message}"
    );

    let file = toml_file("htp_addr = \"127.0.0.1:1\"\n");
    let message = err(&serve(&["--dev", "--config", path_str(&file)]), &no_env);
    assert!(
        message.contains("unknown setting \"htp_addr\""),
        "{message}"
    );
    assert!(message.contains("http_addr"), "{message}");

    let file = toml_file("[http]\naddr = \"127.0.0.1:1\"\n");
    let message = err(&serve(&["--dev", "--config", path_str(&file)]), &no_env);
    assert!(message.contains("unknown setting \"http\""), "{message}");

    let file = toml_file("[rtc]\nport = \"7882\"\n");
    assert_eq!(
        err(&serve(&["--dev", "--config", path_str(&file)]), &no_env),
        format!(
            "invalid rtc.port = \"7882\" in config file {}: expected an integer",
            path_str(&file)
        )
    );

    let file = toml_file("[rtc]\nworkers = 0\n");
    assert_eq!(
        err(&serve(&["--dev", "--config", path_str(&file)]), &no_env),
        format!(
            "invalid rtc.workers = 0 in config file {}: rtc.workers must be at least 1",
            path_str(&file)
        )
    );

    let file = toml_file("rtc = 5\n");
    let message = err(&serve(&["--dev", "--config", path_str(&file)]), &no_env);
    assert!(
        message.ends_with("expected a section like [rtc]"),
        "{message}"
    );

    let file = toml_file("http_addr = \n");
    let message = err(&serve(&["--dev", "--config", path_str(&file)]), &no_env);
    let expected = format!("config file {}: not valid TOML", path_str(&file));
    assert!(message.starts_with(&expected), "{message}");

    let message = err(
        &serve(&["--dev", "--config", "/nonexistent/sb.toml"]),
        &no_env,
    );
    assert!(
        message.starts_with("config file /nonexistent/sb.toml: cannot read it: "),
        "{message}"
    );
}

#[test]
fn config_keys_required_and_strong_outside_dev() {
    assert!(err(&serve(&[]), &no_env).starts_with("no API key configured"));

    let args = serve(&["--api-key", "prod", "--api-secret", "tooshort"]);
    assert_eq!(
        err(&args, &no_env),
        "API key \"prod\" (from --api-key): secret is 8 characters long; outside --dev it must \
         be at least 32 (e.g. `openssl rand -hex 32`)"
    );

    let file = toml_file("[keys]\ndevkey = \"secret\"\n");
    let message = err(&serve(&["--config", path_str(&file)]), &no_env);
    let expected = format!(
        "API key \"devkey\" (from keys.devkey in config file {}): uses the well-known \
         development secret \"secret\"",
        path_str(&file)
    );
    assert!(message.starts_with(&expected), "{message}");

    // The same weak key is accepted in development mode.
    let s = ok(&serve(&["--dev", "--config", path_str(&file)]), &no_env);
    assert_eq!(s.keys.get("devkey").map(String::as_str), Some("secret"));

    let s = ok(
        &serve(&["--api-key", "prod", "--api-secret", STRONG]),
        &no_env,
    );
    assert_eq!(s.keys.len(), 1);
    assert!(
        !format!("{s:?}").contains(STRONG),
        "Debug must not print secrets"
    );
}

#[test]
fn config_keys_come_from_the_highest_source_that_has_any() {
    let file = toml_file(&format!("[keys]\nfilekey = \"{STRONG}\"\n"));
    let config = path_str(&file);
    let vars = env(&[
        ("SWITCHBOARD_KEYS", &format!("a:{STRONG}, b:{STRONG2}")),
        ("SWITCHBOARD_API_KEY", "c"),
        ("SWITCHBOARD_API_SECRET", STRONG),
    ]);

    let s = ok(&serve(&["--config", config]), &no_env);
    assert_eq!(s.keys.keys().collect::<Vec<_>>(), ["filekey"]);

    let s = ok(&serve(&["--config", config]), &vars);
    assert_eq!(s.keys.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(s.keys.get("b").map(String::as_str), Some(STRONG2));

    let args = serve(&[
        "--config",
        config,
        "--api-key",
        "d",
        "--api-secret",
        STRONG2,
    ]);
    let s = ok(&args, &vars);
    assert_eq!(s.keys.keys().collect::<Vec<_>>(), ["d"]);
}

#[test]
fn config_key_list_errors() {
    let vars = env(&[("SWITCHBOARD_KEYS", "a:first-secret,b")]);
    let message = err(&serve(&["--dev"]), &vars);
    assert_eq!(
        message,
        "invalid SWITCHBOARD_KEYS=…: entry without a secret (expected \
         key1:secret1,key2:secret2), near \"b\""
    );
    assert!(!message.contains("first-secret"));

    let vars = env(&[
        ("SWITCHBOARD_KEYS", &format!("a:{STRONG}")),
        ("SWITCHBOARD_API_KEY", "a"),
        ("SWITCHBOARD_API_SECRET", STRONG2),
    ]);
    assert_eq!(
        err(&serve(&[]), &vars),
        "API key \"a\" is defined twice with different secrets (SWITCHBOARD_KEYS and \
         SWITCHBOARD_API_KEY)"
    );

    let file = toml_file("[keys]\n\"bad key\" = \"s\"\nother = 5\n");
    let message = err(&serve(&["--dev", "--config", path_str(&file)]), &no_env);
    assert!(message.contains("must not contain"), "{message}");
}

#[test]
fn ice_servers_take_optional_credentials_and_refuse_anything_else() {
    let servers = super::parse::ice_servers(
        "stun:stun.example.net:3478, alice:s3cret@turn:turn.example.net:3478?transport=udp",
    )
    .expect("two servers");
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0].url, "stun:stun.example.net:3478");
    assert_eq!(servers[0].username, None);
    assert_eq!(servers[1].url, "turn:turn.example.net:3478?transport=udp");
    assert_eq!(servers[1].username.as_deref(), Some("alice"));
    assert_eq!(servers[1].credential.as_deref(), Some("s3cret"));
    assert!(
        !format!("{:?}", servers[1]).contains("s3cret"),
        "credentials stay out of logs"
    );
    for bad in ["http://x", "bob@turn:t.example", "stun:"] {
        let err = super::parse::ice_servers(bad).expect_err(bad);
        assert!(
            err.contains("stun:") || err.contains("USERNAME:CREDENTIAL"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn a_turn_server_without_a_credential_needs_the_shared_secret() {
    let err = resolve(
        &serve(&["--dev", "--ice-server", "turn:turn.example.net:3478"]),
        &no_env,
    )
    .expect_err("no credential at all");
    assert!(err.to_string().contains("--turn-secret"), "{err}");
    let settings = resolve(
        &serve(&[
            "--dev",
            "--ice-server",
            "turn:turn.example.net:3478",
            "--ice-server",
            "stun:stun.example.net",
            "--turn-credential-ttl",
            "2h",
        ]),
        &env(&[("SWITCHBOARD_TURN_SECRET", "north")]),
    )
    .expect("the secret mints credentials");
    let servers = &settings.rtc.ice_servers;
    assert!(servers[0].rest.is_some() && servers[1].rest.is_none());
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
    let minted = servers[0].for_participant("alice", now);
    assert_eq!(
        minted.username.as_deref(),
        Some("8200:alice"),
        "two hours on"
    );
    assert!(minted.credential.is_some() && minted.rest.is_none());
    assert!(
        !format!("{settings:?}").contains("north"),
        "the secret stays out of logs"
    );
}

#[test]
fn limits_take_flag_over_env_over_file_and_name_unknown_ones() {
    let file = toml_file("[limits]\nhttp_request_body_bytes = \"2KiB\"\n");
    let from_file = resolve(&serve(&["--dev", "--config", path_str(&file)]), &no_env)
        .expect("file limit resolves");
    assert_eq!(from_file.limits.http_request_body_bytes, 2048);
    let env = env(&[("SWITCHBOARD_LIMIT_HTTP_REQUEST_BODY_BYTES", "3KiB")]);
    let from_env =
        resolve(&serve(&["--dev", "--config", path_str(&file)]), &env).expect("env limit");
    assert_eq!(from_env.limits.http_request_body_bytes, 3072);
    let args = serve(&[
        "--dev",
        "--config",
        path_str(&file),
        "--limit",
        "http_request_body_bytes=4096",
    ]);
    assert_eq!(
        resolve(&args, &env)
            .expect("flag limit")
            .limits
            .http_request_body_bytes,
        4096
    );
    let defaults = resolve(&serve(&["--dev"]), &no_env).expect("defaults");
    assert_eq!(defaults.limits, Limits::default());

    let unknown = err(&serve(&["--dev", "--limit", "max_unicorns=3"]), &no_env);
    assert!(unknown.contains("max_unicorns"), "{unknown}");
    assert!(unknown.contains("http_request_body_bytes"), "{unknown}");
    let bad = err(
        &serve(&["--dev", "--limit", "http_request_body_bytes=0"]),
        &no_env,
    );
    assert!(bad.contains("above 0"), "{bad}");
    let no_equals = err(
        &serve(&["--dev", "--limit", "http_request_body_bytes"]),
        &no_env,
    );
    assert!(no_equals.contains("NAME=VALUE"), "{no_equals}");
    let bad_file = toml_file("[limits]\nmax_unicorns = 3\n");
    let msg = err(&serve(&["--dev", "--config", path_str(&bad_file)]), &no_env);
    assert!(
        msg.contains("max_unicorns") && msg.contains("config file"),
        "{msg}"
    );
}

#[test]
fn turn_over_tls_needs_its_certificate_key_and_udp_port() {
    let full = [
        "--dev",
        "--turn-udp-port",
        "3478",
        "--turn-tls-port",
        "443",
        "--turn-cert",
        "/etc/sb/turn.crt",
        "--turn-key",
        "/etc/sb/turn.key",
        "--turn-domain",
        "turn.example.com",
    ];
    let s = ok(&serve(&full), &no_env);
    assert_eq!(
        s.turn.and_then(|t| t.tls),
        Some(turn::TurnTlsSettings {
            port: 443,
            cert_file: "/etc/sb/turn.crt".into(),
            key_file: "/etc/sb/turn.key".into(),
            domain: Some("turn.example.com".into()),
        })
    );
    assert_eq!(
        err(&serve(&full[..7]), &no_env),
        "--turn-tls-port needs --turn-key"
    );
    assert_eq!(
        err(&serve(&full[..5]), &no_env),
        "--turn-tls-port needs --turn-cert"
    );
    assert_eq!(
        err(
            &serve(&[
                "--dev",
                "--turn-tls-port",
                "443",
                "--turn-cert",
                "c",
                "--turn-key",
                "k"
            ]),
            &no_env
        ),
        "--turn-tls-port needs --turn-udp-port"
    );
    assert_eq!(
        err(&serve(&["--dev", "--turn-domain", "turn example"]), &no_env),
        "invalid --turn-domain \"turn example\": expected a host name like turn.example.com"
    );
}
