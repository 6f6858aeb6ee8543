//! Tests of the command-line definition, `token create` / `migrate` resolution and
//! duration parsing.

use std::time::Duration;

use clap::{CommandFactory, Parser};

use super::tests::{env, no_env, parse, path_str, toml_file, STRONG, STRONG2};
use super::*;

fn token(args: &[&str]) -> TokenCreateArgs {
    let mut argv = vec!["token", "create", "--room", "r", "--identity", "alice"];
    argv.extend(args);
    match parse(&argv) {
        Command::Token(TokenCommand::Create(args)) => args,
        other => panic!("expected token create, got {other:?}"),
    }
}

fn migrate(args: &[&str]) -> MigrateArgs {
    let mut argv = vec!["migrate"];
    argv.extend(args);
    match parse(&argv) {
        Command::Migrate(args) => args,
        other => panic!("expected migrate, got {other:?}"),
    }
}

#[test]
fn config_cli_definition_is_consistent() {
    Cli::command().debug_assert();
}

/// Every option of every subcommand has help text and appears in `--help`; options that
/// can also be set from the environment name their variable.
#[test]
fn config_help_documents_every_option() {
    let mut root = Cli::command();
    root.build();
    // (path like "token create", command)
    let mut commands = vec![(String::new(), root.clone())];
    for sub in root.get_subcommands() {
        commands.push((sub.get_name().to_owned(), sub.clone()));
        for nested in sub.get_subcommands() {
            let path = format!("{} {}", sub.get_name(), nested.get_name());
            commands.push((path, nested.clone()));
        }
    }
    let mut checked = std::collections::BTreeMap::new();
    for (path, mut cmd) in commands {
        let help = cmd.render_long_help().to_string();
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            assert!(
                help.contains(&format!("--{long}")),
                "`{}` help lacks --{long}:\n{help}",
                cmd.get_name()
            );
            if long != "help" && long != "version" {
                assert!(
                    arg.get_help().is_some(),
                    "--{long} of `{}` has no help text",
                    cmd.get_name()
                );
                *checked.entry(path.clone()).or_insert(0) += 1;
            }
        }
    }
    // A guard that the loop saw the subcommands (by name, so commands added elsewhere,
    // such as `rooms`, do not change these counts).
    assert_eq!(checked.get("serve"), Some(&43), "{checked:?}");
    assert_eq!(checked.get("drain"), Some(&8), "{checked:?}");
    assert_eq!(checked.get("token create"), Some(&12), "{checked:?}");
    assert_eq!(checked.get("migrate"), Some(&3), "{checked:?}");

    let serve_help = Cli::command()
        .find_subcommand_mut("serve")
        .expect("serve subcommand")
        .render_long_help()
        .to_string();
    for var in [
        "SWITCHBOARD_DEV",
        "SWITCHBOARD_DEV_ALLOW_PUBLIC",
        "SWITCHBOARD_CORS_ORIGINS",
        "SWITCHBOARD_CONFIG",
        "SWITCHBOARD_HTTP_ADDR",
        "SWITCHBOARD_RTC_IP",
        "SWITCHBOARD_RTC_PORT",
        "SWITCHBOARD_RTC_TCP_PORT",
        "SWITCHBOARD_TURN_UDP_PORT",
        "SWITCHBOARD_TURN_RELAY_PORTS",
        "SWITCHBOARD_TURN_TLS_PORT",
        "SWITCHBOARD_TURN_CERT",
        "SWITCHBOARD_TURN_KEY",
        "SWITCHBOARD_TURN_DOMAIN",
        "SWITCHBOARD_RTC_WORKERS",
        "SWITCHBOARD_NODE_IPS",
        "SWITCHBOARD_ICE_SERVERS",
        "SWITCHBOARD_DATABASE_URL",
        "SWITCHBOARD_DATA_DIR",
        "SWITCHBOARD_EGRESS_DIR",
        "SWITCHBOARD_API_KEY",
        "SWITCHBOARD_API_SECRET",
        "SWITCHBOARD_KEYS",
        "SWITCHBOARD_EMPTY_TIMEOUT",
        "SWITCHBOARD_MAX_PARTICIPANTS",
        "SWITCHBOARD_PUBLIC_URL",
        "SWITCHBOARD_LOG",
        "SWITCHBOARD_WEBHOOK_URLS",
        "SWITCHBOARD_WEBHOOK_API_KEY",
        "SWITCHBOARD_LIMIT_<NAME>",
        "SWITCHBOARD_NATS_URL",
        "SWITCHBOARD_NATS_SUBJECT_PREFIX",
        "SWITCHBOARD_NATS_SESSION_SUBJECT",
        "SWITCHBOARD_NATS_CLUSTER_PREFIX",
        "SWITCHBOARD_CLUSTER_DRAIN_TIMEOUT",
    ] {
        assert!(serve_help.contains(var), "serve --help lacks {var}");
    }
}

#[test]
fn config_token_create_arguments() {
    let args = token(&[]);
    assert_eq!(args.room, "r");
    assert_eq!(args.identity, "alice");
    assert_eq!(args.ttl, Duration::from_secs(6 * 3600));
    assert!(!args.no_publish && !args.no_subscribe && !args.admin && !args.dev);

    let args = token(&[
        "--name",
        "Alice",
        "--metadata",
        "{}",
        "--ttl",
        "30m",
        "--no-publish",
        "--no-subscribe",
        "--admin",
    ]);
    assert_eq!(args.name.as_deref(), Some("Alice"));
    assert_eq!(args.metadata.as_deref(), Some("{}"));
    assert_eq!(args.ttl, Duration::from_secs(1800));
    assert!(args.no_publish && args.no_subscribe && args.admin);

    let err = Cli::try_parse_from(["switchboard", "token", "create", "--room", "r"])
        .expect_err("--identity is required");
    assert!(err.to_string().contains("--identity"), "{err}");

    for bad in ["6x", "0s"] {
        let err = Cli::try_parse_from([
            "switchboard",
            "token",
            "create",
            "--room",
            "r",
            "--identity",
            "a",
            "--ttl",
            bad,
        ])
        .expect_err("bad ttl");
        assert!(err.to_string().contains("--ttl"), "{err}");
    }
}

#[test]
fn config_token_uses_dev_key_in_dev_mode() {
    let t = resolve_token(&token(&["--dev"]), &no_env).expect("dev token settings");
    assert_eq!(
        (t.api_key.as_str(), t.api_secret.as_str()),
        ("devkey", "secret")
    );
    assert_eq!(t.ws_url, "ws://127.0.0.1:7880");
    assert!(
        !format!("{t:?}").contains("\"secret\""),
        "Debug hides the secret: {t:?}"
    );
}

#[test]
fn config_token_needs_a_key_outside_dev() {
    let err = resolve_token(&token(&[]), &no_env).expect_err("no key");
    assert!(
        err.to_string().starts_with("no API key configured"),
        "{err}"
    );

    let err = resolve_token(&token(&["--api-secret", STRONG]), &no_env).expect_err("unpaired");
    assert_eq!(err.to_string(), "--api-secret given without --api-key");

    let err = resolve_token(
        &token(&["--api-key", "k", "--api-secret", "short"]),
        &no_env,
    )
    .expect_err("weak secret");
    assert!(err.to_string().contains("at least 32"), "{err}");

    let t = resolve_token(&token(&["--api-key", "k", "--api-secret", STRONG]), &no_env)
        .expect("explicit key");
    assert_eq!((t.api_key.as_str(), t.api_secret.as_str()), ("k", STRONG));
}

#[test]
fn config_token_picks_configured_key() {
    let file = toml_file(&format!(
        "[keys]\nzeta = \"{STRONG}\"\nalpha = \"{STRONG2}\"\n"
    ));
    let config = path_str(&file);

    // Several keys and no --api-key: the first in sorted order.
    let t = resolve_token(&token(&["--config", config]), &no_env).expect("first key");
    assert_eq!(
        (t.api_key.as_str(), t.api_secret.as_str()),
        ("alpha", STRONG2)
    );

    // --api-key alone selects a configured key and takes its secret from the config.
    let t = resolve_token(&token(&["--config", config, "--api-key", "zeta"]), &no_env)
        .expect("selected key");
    assert_eq!(
        (t.api_key.as_str(), t.api_secret.as_str()),
        ("zeta", STRONG)
    );

    let err = resolve_token(&token(&["--config", config, "--api-key", "nope"]), &no_env)
        .expect_err("unknown key");
    assert_eq!(
        err.to_string(),
        "API key \"nope\" (from --api-key) is not configured; configured keys: alpha, zeta"
    );

    // Keys from the environment win over the file, as for serve; so does the public URL.
    let vars = env(&[
        ("SWITCHBOARD_API_KEY", "envkey"),
        ("SWITCHBOARD_API_SECRET", STRONG),
        ("SWITCHBOARD_PUBLIC_URL", "wss://sfu.example.com"),
    ]);
    let t = resolve_token(&token(&["--config", config]), &vars).expect("env key");
    assert_eq!(t.api_key, "envkey");
    assert_eq!(t.ws_url, "wss://sfu.example.com");

    // --dev with keys configured signs with those keys, which is what a dev server uses.
    let t = resolve_token(&token(&["--dev", "--config", config]), &no_env).expect("dev");
    assert_eq!(t.api_key, "alpha");
}

#[test]
fn config_migrate_resolves_database_without_keys() {
    let m = resolve_migrate(&migrate(&[]), &no_env).expect("defaults");
    assert_eq!(m.database_url, "sqlite://./data/switchboard.db?mode=rwc");
    assert_eq!(m.data_dir, std::path::Path::new("./data"));

    let file = toml_file("data_dir = \"/srv/sb\"\n");
    let m = resolve_migrate(&migrate(&["--config", path_str(&file)]), &no_env).expect("file");
    assert_eq!(m.database_url, "sqlite:///srv/sb/switchboard.db?mode=rwc");

    let vars = env(&[("SWITCHBOARD_DATABASE_URL", "postgres://db/env")]);
    let m = resolve_migrate(&migrate(&["--config", path_str(&file)]), &vars).expect("env");
    assert_eq!(m.database_url, "postgres://db/env");

    let args = migrate(&["--database-url", "postgres://db/flag", "--dev"]);
    let m = resolve_migrate(&args, &vars).expect("flag");
    assert_eq!(m.database_url, "postgres://db/flag");
    assert!(m.dev);

    let err = resolve_migrate(&migrate(&["--database-url", "db.sqlite"]), &no_env)
        .expect_err("no scheme");
    assert!(
        err.to_string()
            .starts_with("invalid --database-url \"db.sqlite\""),
        "{err}"
    );
}

#[test]
fn config_parse_duration() {
    let cases = [
        ("90s", 90),
        ("30m", 1800),
        ("6h", 6 * 3600),
        ("1d", 86_400),
        ("1h30m", 5400),
        (" 2m ", 120),
        ("0s", 0),
    ];
    for (input, secs) in cases {
        assert_eq!(
            parse_duration(input),
            Ok(Duration::from_secs(secs)),
            "{input:?}"
        );
    }
    for bad in ["", "6", "h", "6x", "-1h", "1.5h", "6 h", "6hh", "6H"] {
        assert_eq!(
            parse_duration(bad),
            Err(DurationError::Malformed),
            "{bad:?}"
        );
    }
    assert_eq!(
        parse_duration("99999999999999999999d"),
        Err(DurationError::Overflow)
    );
    assert_eq!(
        parse_duration("999999999999999d"),
        Err(DurationError::Overflow)
    );
    assert_eq!(
        DurationError::Malformed.to_string(),
        "expected a number followed by s, m, h or d, like 90s, 30m, 6h or 1d \
         (or a combination like 1h30m)"
    );
    assert_eq!(parse_ttl("0m"), Err(DurationError::Zero));
    assert_eq!(parse_ttl("1s"), Ok(Duration::from_secs(1)));
}
