//! The command line: configuration errors that name the bad setting, `serve --help`, and
//! `token create`.

mod support;

use std::process::ExitStatus;
use std::time::Duration;

use support::{command, jwt_payload, now_secs, run_with_timeout};

const LIMIT: Duration = Duration::from_secs(20);

/// Runs the binary with `args` (and extra environment) and returns (status, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let mut cmd = command();
    cmd.args(args);
    for (name, value) in env {
        cmd.env(name, value);
    }
    run_with_timeout(cmd, LIMIT)
}

/// `serve` on free ports with a throwaway data directory, plus `args`.
fn serve(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap().to_owned();
    let mut all = vec![
        "serve",
        "--http-addr",
        "127.0.0.1:0",
        "--rtc-tcp-port",
        "0",
        "--data-dir",
        dir.as_str(),
    ];
    all.extend_from_slice(args);
    run(&all, env)
}

fn assert_refused((status, stdout, stderr): &(ExitStatus, String, String), names: &str) -> String {
    assert!(
        !status.success(),
        "the server must not start; stdout {stdout:?}"
    );
    assert!(
        !stdout.contains("switchboard ready"),
        "no ready line on a refused start: {stdout:?}"
    );
    assert!(
        stderr.contains(names),
        "the message must name {names:?}: {stderr:?}"
    );
    stderr.clone()
}

#[test]
fn serve_without_dev_or_keys_refuses_to_start() {
    let out = serve(&["--rtc-port", "0"], &[]);
    let stderr = assert_refused(&out, "API key");
    assert!(
        stderr.contains("--api-key") && stderr.contains("SWITCHBOARD_API_KEY"),
        "the message says how to set a key: {stderr}"
    );
}

#[test]
fn a_bad_rtc_port_flag_is_named() {
    let out = serve(&["--dev", "--rtc-port", "abc"], &[]);
    let stderr = assert_refused(&out, "--rtc-port");
    assert!(stderr.contains("abc"), "the bad value is shown: {stderr}");
}

#[test]
fn a_bad_rtc_port_env_var_is_named() {
    let out = serve(&["--dev"], &[("SWITCHBOARD_RTC_PORT", "abc")]);
    let stderr = assert_refused(&out, "SWITCHBOARD_RTC_PORT");
    assert!(stderr.contains("abc"), "the bad value is shown: {stderr}");
}

#[test]
fn a_bad_test_drop_hook_is_named() {
    let out = serve(
        &["--dev", "--rtc-port", "0"],
        &[("SWITCHBOARD_TEST_DROP_VIDEO_EVERY", "0")],
    );
    let stderr = assert_refused(&out, "SWITCHBOARD_TEST_DROP_VIDEO_EVERY");
    assert!(stderr.contains("\"0\""), "the bad value is shown: {stderr}");
}

#[test]
fn a_bad_flag_is_blamed_even_with_a_good_env_var() {
    // Flags take precedence over the environment: the bad flag is the one named.
    let out = serve(
        &["--dev", "--rtc-port", "abc"],
        &[("SWITCHBOARD_RTC_PORT", "0")],
    );
    let stderr = assert_refused(&out, "--rtc-port");
    assert!(
        !stderr.contains("SWITCHBOARD_RTC_PORT=\"0\""),
        "the good env value is not blamed: {stderr}"
    );
}

#[test]
fn serve_help_documents_the_options() {
    let (status, stdout, stderr) = run(&["serve", "--help"], &[]);
    assert!(status.success(), "{stderr}");
    for option in [
        "--http-addr",
        "--rtc-port",
        "--node-ip",
        "--database-url",
        "--data-dir",
        "--api-key",
        "--api-secret",
        "--dev",
        "--config",
    ] {
        assert!(stdout.contains(option), "serve --help lacks {option}");
    }
    assert!(
        stdout.contains("SWITCHBOARD_RTC_PORT"),
        "help names the environment variables"
    );
}

#[test]
fn token_create_prints_a_livekit_jwt() {
    let (status, stdout, stderr) = run(
        &[
            "token",
            "create",
            "--dev",
            "--room",
            "standup",
            "--identity",
            "alice",
            "--name",
            "Alice",
            "--ttl",
            "1h",
        ],
        &[],
    );
    assert!(status.success(), "{stderr}");
    let jwt = stdout.trim();
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout is the token alone: {stdout:?}"
    );
    let header = support::jwt_payload(&format!(
        "x.{}.x",
        jwt.split('.').next().expect("header part")
    ));
    assert_eq!(header["alg"], "HS256");

    let claims = jwt_payload(jwt);
    assert_eq!(claims["iss"], "devkey");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["name"], "Alice");
    assert_eq!(claims["video"]["room"], "standup");
    assert_eq!(claims["video"]["roomJoin"], true);
    let exp = claims["exp"].as_u64().expect("numeric exp");
    let now = now_secs();
    assert!(
        (now + 3600 - 120..=now + 3600 + 5).contains(&exp),
        "--ttl 1h: exp {exp}, now {now}"
    );
    let nbf = claims["nbf"].as_u64().expect("numeric nbf");
    assert_eq!(exp - nbf, 3600);
    assert!(
        claims["video"].get("canPublish").is_none_or(|v| v == true),
        "publishing is allowed by default"
    );

    let (status, stdout, _) = run(
        &[
            "token",
            "create",
            "--dev",
            "--room",
            "r",
            "--identity",
            "viewer",
            "--no-publish",
        ],
        &[],
    );
    assert!(status.success());
    let claims = jwt_payload(stdout.trim());
    assert_eq!(claims["video"]["canPublish"], false);
}

#[test]
fn token_create_without_keys_or_dev_fails() {
    let out = run(
        &["token", "create", "--room", "r", "--identity", "alice"],
        &[],
    );
    let (status, stdout, stderr) = &out;
    assert!(!status.success());
    assert!(stdout.trim().is_empty(), "no token printed: {stdout:?}");
    assert!(stderr.contains("API key"), "{stderr}");
}
