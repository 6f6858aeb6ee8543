//! Tests of the event delivery settings: webhooks and NATS.

use super::tests::{env, err, no_env, ok, path_str, serve, toml_file, STRONG, STRONG2};
use super::*;

#[test]
fn config_delivery_defaults() {
    let s = ok(&serve(&["--dev"]), &no_env);
    assert!(s.webhooks.urls.is_empty());
    assert_eq!(s.webhooks.api_key, "devkey");
    assert_eq!(s.nats, None);
}

#[test]
fn config_delivery_from_file() {
    let file = toml_file(&format!(
        r#"
[keys]
b-key = "{STRONG}"
a-key = "{STRONG2}"

[webhooks]
urls = ["https://hooks.example.com/lk", "http://127.0.0.1:9000/hook"]
api_key = "b-key"

[nats]
url = "nats://127.0.0.1:4222"
subject_prefix = "sb.prod"
session_subject = "stream.status"
"#
    ));
    let s = ok(&serve(&["--config", path_str(&file)]), &no_env);
    assert_eq!(
        s.webhooks.urls,
        ["https://hooks.example.com/lk", "http://127.0.0.1:9000/hook"]
    );
    assert_eq!(s.webhooks.api_key, "b-key");
    assert_eq!(
        s.nats,
        Some(NatsSettings {
            url: "nats://127.0.0.1:4222".to_owned(),
            subject_prefix: "sb.prod".to_owned(),
            session_subject: "stream.status".to_owned(),
            cluster_prefix: DEFAULT_NATS_CLUSTER_PREFIX.to_owned(),
        })
    );
}

#[test]
fn config_delivery_precedence_flag_over_env_over_file() {
    let file = toml_file(
        r#"
[webhooks]
urls = ["http://file.example/hook"]
[nats]
url = "nats://file:4222"
subject_prefix = "file.events"
"#,
    );
    let config = path_str(&file);
    let vars = env(&[
        (
            "SWITCHBOARD_WEBHOOK_URLS",
            "http://env1.example/a, http://env2.example/b",
        ),
        ("SWITCHBOARD_NATS_URL", "nats://env:4222"),
        ("SWITCHBOARD_NATS_SUBJECT_PREFIX", "env.events"),
        ("SWITCHBOARD_NATS_SESSION_SUBJECT", "env.status"),
        ("SWITCHBOARD_NATS_CLUSTER_PREFIX", "env.cluster"),
    ]);

    let flags = serve(&[
        "--dev",
        "--config",
        config,
        "--webhook-url",
        "http://flag1.example/a",
        "--webhook-url",
        "https://flag2.example/b",
        "--nats-url",
        "nats://flag:4222",
        "--nats-subject-prefix",
        "flag.events",
        "--nats-session-subject",
        "flag.status",
        "--nats-cluster-prefix",
        "flag.cluster",
    ]);
    let s = ok(&flags, &vars);
    assert_eq!(
        s.webhooks.urls,
        ["http://flag1.example/a", "https://flag2.example/b"]
    );
    let nats = s.nats.expect("nats configured");
    assert_eq!(nats.url, "nats://flag:4222");
    assert_eq!(nats.subject_prefix, "flag.events");
    assert_eq!(nats.session_subject, "flag.status");
    assert_eq!(nats.cluster_prefix, "flag.cluster");

    let s = ok(&serve(&["--dev", "--config", config]), &vars);
    assert_eq!(
        s.webhooks.urls,
        ["http://env1.example/a", "http://env2.example/b"]
    );
    let nats = s.nats.expect("nats configured");
    assert_eq!(nats.url, "nats://env:4222");
    assert_eq!(nats.subject_prefix, "env.events");
    assert_eq!(nats.session_subject, "env.status");
    assert_eq!(nats.cluster_prefix, "env.cluster");

    let s = ok(&serve(&["--dev", "--config", config]), &no_env);
    assert_eq!(s.webhooks.urls, ["http://file.example/hook"]);
    let nats = s.nats.expect("nats configured");
    assert_eq!(nats.url, "nats://file:4222");
    assert_eq!(nats.subject_prefix, "file.events");
    assert_eq!(nats.session_subject, DEFAULT_NATS_SESSION_SUBJECT);
}

#[test]
fn config_webhook_key_defaults_to_first_sorted_and_must_be_configured() {
    let keys = format!("zeta:{STRONG},alpha:{STRONG2}");
    let vars = env(&[("SWITCHBOARD_KEYS", &keys)]);
    assert_eq!(ok(&serve(&[]), &vars).webhooks.api_key, "alpha");
    let args = serve(&["--webhook-api-key", "zeta"]);
    assert_eq!(ok(&args, &vars).webhooks.api_key, "zeta");

    assert_eq!(
        err(&serve(&["--webhook-api-key", "nope"]), &vars),
        "invalid --webhook-api-key \"nope\": not a configured API key \
         (configured keys: alpha, zeta)"
    );
    let file = toml_file("[webhooks]\napi_key = \"nope\"\n");
    assert_eq!(
        err(&serve(&["--config", path_str(&file)]), &vars),
        format!(
            "invalid webhooks.api_key = \"nope\" in config file {}: not a configured API key \
             (configured keys: alpha, zeta)",
            path_str(&file)
        )
    );
}

/// Flags, environment, expected message.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn config_delivery_invalid_values_name_their_source() {
    let cases: &[Case] = &[
        (
            &["--webhook-url", "ftp://example.com/x"],
            &[],
            "invalid --webhook-url \"ftp://example.com/x\": \"ftp://example.com/x\" is not an \
             http:// or https:// URL like https://hooks.example.com/lk",
        ),
        (
            &[],
            &[("SWITCHBOARD_WEBHOOK_URLS", "http://ok.example/a,not a url")],
            "invalid SWITCHBOARD_WEBHOOK_URLS=\"http://ok.example/a,not a url\": \"not a url\" \
             is not a URL like https://hooks.example.com/lk: relative URL without a base",
        ),
        (
            &["--nats-url", "http://127.0.0.1:4222"],
            &[],
            "invalid --nats-url \"http://127.0.0.1:4222\": \"http://127.0.0.1:4222\" is not a \
             NATS server URL like nats://127.0.0.1:4222: invalid scheme for NATS server URL: \
             http",
        ),
        (
            &[],
            &[("SWITCHBOARD_NATS_SUBJECT_PREFIX", "events.>")],
            "invalid SWITCHBOARD_NATS_SUBJECT_PREFIX=\"events.>\": a subject must not contain \
             whitespace or the wildcards * and >",
        ),
        (
            &["--nats-session-subject", "events..status"],
            &[],
            "invalid --nats-session-subject \"events..status\": a subject is dot-separated \
             words like switchboard.events, with no empty word",
        ),
    ];
    for (flags, vars, expected) in cases {
        let mut args = vec!["--dev"];
        args.extend_from_slice(flags);
        assert_eq!(
            err(&serve(&args), &env(vars)),
            *expected,
            "{flags:?} {vars:?}"
        );
    }

    let file = toml_file("[webhooks]\nurls = \"http://a.example/x\"\nsecret = 1\n");
    let message = err(&serve(&["--dev", "--config", path_str(&file)]), &no_env);
    assert!(
        message.contains("unknown setting \"webhooks.secret\"")
            && message.contains("webhooks.urls, webhooks.api_key"),
        "{message}"
    );
    let file = toml_file("[nats]\nurl = 4222\n");
    assert_eq!(
        err(&serve(&["--dev", "--config", path_str(&file)]), &no_env),
        format!(
            "invalid nats.url = 4222 in config file {}: expected a string",
            path_str(&file)
        )
    );
}

#[test]
fn config_delivery_urls_hide_passwords() {
    let message = err(
        &serve(&["--dev", "--webhook-url", "ftp://u:hunter2@example.com/x"]),
        &no_env,
    );
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("ftp://u:***@example.com/x"), "{message}");
    let message = err(
        &serve(&["--dev", "--nats-url", "http://u:hunter2@nats:4222"]),
        &no_env,
    );
    assert!(!message.contains("hunter2"), "{message}");

    let s = ok(
        &serve(&[
            "--dev",
            "--webhook-url",
            "https://u:hunter2@hooks.example/x",
            "--nats-url",
            "nats://u:hunter2@nats:4222",
        ]),
        &no_env,
    );
    assert!(!format!("{s:?}").contains("hunter2"), "{s:?}");
}

#[test]
fn config_duplicate_webhook_urls_are_one_sink() {
    let s = ok(
        &serve(&[
            "--dev",
            "--webhook-url",
            "http://a.example/x",
            "--webhook-url",
            "http://a.example/x",
        ]),
        &no_env,
    );
    assert_eq!(s.webhooks.urls, ["http://a.example/x"]);
}
