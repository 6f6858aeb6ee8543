//! `switchboard loadtest` against a server it starts itself: every expected track arrives,
//! nothing is lost on loopback, the numbers are sane, and the JSON report has the
//! documented schema (docs/loadtest.md). Nothing here asserts on speed.

mod support;

use std::time::Duration;

use serde_json::Value;

fn field<'a>(report: &'a Value, path: &str) -> &'a Value {
    let mut value = report;
    for key in path.split('.') {
        value = value
            .get(key)
            .unwrap_or_else(|| panic!("the report has no {path} (missing {key}): {report:#}"));
    }
    value
}

fn number(report: &Value, path: &str) -> f64 {
    field(report, path)
        .as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {report:#}"))
}

#[test]
fn a_short_run_against_a_started_server_reports_every_track_without_loss() {
    let (report, stdout) = run_loadtest(&[
        "--rooms",
        "2",
        "--video-publishers",
        "1",
        "--audio-publishers",
        "1",
        "--subscribers",
        "2",
        "--preset",
        "low",
        "--duration",
        "3s",
        "--join-rate",
        "20",
        "--threads",
        "2",
    ]);
    for row in [
        "tracks received / expected",
        "latency p50/p99/p99.9",
        "efficiency",
    ] {
        assert!(
            stdout.contains(row),
            "no {row:?} row in the table:\n{stdout}"
        );
    }
    assert_eq!(field(&report, "schema"), "switchboard-loadtest/1");
    assert_eq!(field(&report, "scenario.transport"), "udp");
    assert!(field(&report, "tcp").is_null(), "{report:#}");

    // 2 rooms × (2 publishers + 2 subscribers).
    assert_eq!(number(&report, "scenario.participants"), 8.0);
    assert_eq!(number(&report, "join.joined"), 8.0, "{report:#}");
    assert_eq!(number(&report, "join.failed"), 0.0);
    // Each subscriber gets both tracks, each publisher the other's: 2 × (2×2 + 2×1).
    assert_eq!(number(&report, "tracks.expected"), 12.0);
    assert_eq!(
        number(&report, "tracks.received"),
        number(&report, "tracks.expected"),
        "{report:#}"
    );
    // Everyone in these rooms receives something, so everyone has a first-media time.
    assert_eq!(
        number(&report, "join.first_media_ms.count"),
        8.0,
        "{report:#}"
    );
    assert_eq!(number(&report, "join.without_media"), 0.0);
    let first_media = number(&report, "join.first_media_ms.p50");
    assert!(first_media > 0.0, "{report:#}");
    assert!(number(&report, "join.signal_ms.p99") > 0.0);
    assert_eq!(number(&report, "join.connected_ms.count"), 8.0);

    assert!(number(&report, "delivery.packets") > 0.0, "{report:#}");
    assert!(number(&report, "delivery.packets_per_s") > 0.0);
    assert!(number(&report, "delivery.mbit_per_s") > 0.0);
    assert_eq!(
        number(&report, "delivery.lost"),
        0.0,
        "loss on loopback: {report:#}"
    );
    assert_eq!(number(&report, "delivery.loss_ratio"), 0.0);

    let p50 = number(&report, "latency_ms.p50");
    assert!(
        p50 > 0.0 && p50 < 1000.0,
        "latency p50 {p50} ms: {report:#}"
    );
    for q in ["p99", "p999", "max"] {
        assert!(number(&report, &format!("latency_ms.{q}")) >= p50);
    }
    assert!(number(&report, "latency_ms.samples") > 0.0);

    // The tester started the server, so it knows what the server cost.
    assert!(number(&report, "server.pid") > 0.0);
    assert!(number(&report, "server.cpu_s") >= 0.0);
    // The split adds up to the whole (each is rounded to the clock tick, summed after).
    let (user, system) = (
        number(&report, "server.cpu_user_s"),
        number(&report, "server.cpu_system_s"),
    );
    assert!(user >= 0.0 && system >= 0.0);
    assert!((user + system - number(&report, "server.cpu_s")).abs() < 1e-9);
    assert!(field(&report, "server")
        .get("user_us_per_forwarded_packet")
        .is_some());
    assert_eq!(
        number(&report, "server.forwarded_packets"),
        number(&report, "delivery.packets")
    );
    assert!(number(&report, "server.rss_kib") > 0.0);
    assert!(
        number(&report, "server.rss_half.participants")
            < number(&report, "server.rss_all.participants")
    );
    assert!(
        field(&report, "server.forwarded_packets_metrics").is_number()
            || field(&report, "server.forwarded_packets_metrics").is_null()
    );
    assert!(field(&report, "server")
        .get("rss_per_participant_kib")
        .is_some());
    assert!(field(&report, "server")
        .get("cpu_us_per_forwarded_packet")
        .is_some());

    let floor = number(&report, "floor.floor_us");
    let sendto = number(&report, "floor.sendto_us");
    let gcm = number(&report, "floor.srtp_aes128_gcm_us");
    let cm = number(&report, "floor.srtp_aes128_cm_sha1_80_us");
    assert!(sendto > 0.0 && gcm > 0.0 && cm > 0.0);
    assert!((floor - sendto - gcm.min(cm)).abs() < 1e-6, "{report:#}");
    assert!(field(&report, "floor.srtp_cheaper").is_string());
    assert!(field(&report, "efficiency").is_number() || field(&report, "efficiency").is_null());
    assert_eq!(field(&report, "errors"), &Value::Array(Vec::new()));
}

#[test]
fn a_short_tcp_run_carries_every_track_over_ice_tcp() {
    let (report, stdout) = run_loadtest(&[
        "--tcp",
        "--rooms",
        "1",
        "--video-publishers",
        "1",
        "--audio-publishers",
        "1",
        "--subscribers",
        "2",
        "--preset",
        "low",
        "--duration",
        "3s",
        "--threads",
        "2",
    ]);
    assert!(
        stdout.contains("ICE-TCP"),
        "the table names the transport:\n{stdout}"
    );
    assert_eq!(field(&report, "scenario.transport"), "tcp");
    assert_eq!(number(&report, "join.joined"), 4.0, "{report:#}");
    // Each subscriber gets both tracks, each publisher the other's: 2×2 + 2×1.
    assert_eq!(number(&report, "tracks.expected"), 6.0);
    assert_eq!(
        number(&report, "tracks.received"),
        number(&report, "tracks.expected"),
        "{report:#}"
    );
    assert!(
        number(&report, "delivery.packets") > 0.0,
        "packets forwarded to subscribers: {report:#}"
    );
    assert_eq!(number(&report, "delivery.lost"), 0.0, "{report:#}");
    // The clients have no UDP socket: every PeerConnection (a publisher and a subscriber
    // one per participant, all four receive) is one connection to the server's TCP port.
    assert_eq!(number(&report, "tcp.server_connections"), 8.0, "{report:#}");
    assert_eq!(number(&report, "tcp.client_dropped"), 0.0, "{report:#}");
    assert_eq!(number(&report, "tcp.server_dropped"), 0.0, "{report:#}");
}

#[test]
fn tcp_and_a_subscriber_cap_are_refused_together() {
    let mut cmd = support::command();
    cmd.args([
        "loadtest",
        "--start-server",
        "--tcp",
        "--subscriber-cap",
        "1M",
    ]);
    let (status, _, stderr) = support::run_with_timeout(cmd, Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        stderr.contains("--tcp") && stderr.contains("--subscriber-cap"),
        "{stderr}"
    );
}

/// Runs `switchboard loadtest --start-server --quiet` with `args`; returns the JSON report
/// and the table it printed.
fn run_loadtest(args: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let json = dir.path().join("report.json");
    let mut cmd = support::command();
    cmd.args(["loadtest", "--start-server", "--quiet"])
        .args(args)
        .arg("--json")
        .arg(&json);
    let (status, stdout, stderr) = support::run_with_timeout(cmd, Duration::from_secs(180));
    assert!(
        status.success(),
        "loadtest failed: {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let text = std::fs::read_to_string(&json).expect("the JSON report was written");
    let report = serde_json::from_str(&text).expect("the report is JSON");
    (report, stdout)
}

/// One room, a 720p simulcast publisher and two subscribers for `seconds`, with `extra`
/// options (a cap on the subscribers' links). Returns the report and the table.
fn simulcast_run(seconds: u32, extra: &[&str]) -> (Value, String) {
    let duration = format!("{seconds}s");
    let mut args = vec![
        "--video-publishers",
        "1",
        "--simulcast",
        "--preset",
        "high",
        "--subscribers",
        "2",
        "--duration",
        duration.as_str(),
    ];
    args.extend(extra);
    let (report, stdout) = run_loadtest(&args);
    assert!(
        stdout.contains("video layers received"),
        "no layer row in the table:\n{stdout}"
    );
    (report, stdout)
}

/// Frames received at `width` in the window.
fn frames_at(report: &Value, width: u64) -> u64 {
    field(report, "layers")
        .as_array()
        .unwrap_or_else(|| panic!("layers is not a list: {report:#}"))
        .iter()
        .filter(|l| l["width"].as_u64() == Some(width))
        .filter_map(|l| l["frames"].as_u64())
        .sum()
}

#[test]
fn a_capped_subscriber_link_gets_lower_layers_and_an_uncapped_one_the_top() {
    // q 320 wide at 250 kbit/s, h 640 at 625 kbit/s, f 1280 at 2.5 Mbit/s: behind 400 kbit/s
    // only q fits; the server must find that from the subscribers' feedback alone.
    let (capped, _) = simulcast_run(8, &["--subscriber-cap", "400k"]);
    assert_eq!(number(&capped, "scenario.subscriber_cap_bps"), 400_000.0);
    assert!(
        frames_at(&capped, 320) > 0,
        "q frames behind the cap: {capped:#}"
    );
    assert_eq!(
        frames_at(&capped, 1280),
        0,
        "no f frames behind the cap: {capped:#}"
    );
    let (open, _) = simulcast_run(10, &[]);
    assert!(
        field(&open, "scenario.subscriber_cap_bps").is_null(),
        "{open:#}"
    );
    assert!(
        frames_at(&open, 1280) > 0,
        "f frames on an open link: {open:#}"
    );
}

#[test]
fn a_cap_step_is_followed_by_the_servers_estimate_and_the_timeline_shows_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let timeline = dir.path().join("timeline.json");
    let timeline_arg = timeline.to_string_lossy().into_owned();
    // 3 Mbit/s, then 500 kbit/s 6 s into a 14 s window.
    let (report, stdout) = simulcast_run(
        14,
        &[
            "--subscriber-cap",
            "3M",
            "--subscriber-cap-step",
            "6s:500k",
            "--timeline",
            &timeline_arg,
        ],
    );
    assert!(stdout.contains("through the step"), "{stdout}");
    assert_eq!(
        number(&report, "scenario.subscriber_cap_step_bps"),
        500_000.0
    );
    assert_eq!(
        number(&report, "link_estimates.subscribers"),
        2.0,
        "{report:#}"
    );
    // On the open link the estimate climbed from its 1 Mbit/s start; after the step it came
    // within 25 % of the new cap for both subscribers, and ended no higher than that.
    assert!(
        number(&report, "link_estimates.before_step_bps.p50") > 1_000_000.0,
        "{report:#}"
    );
    assert_eq!(
        number(&report, "link_estimates.not_converged"),
        0.0,
        "{report:#}"
    );
    assert!(
        number(&report, "link_estimates.convergence_s.max") < 5.0,
        "{report:#}"
    );
    assert!(
        number(&report, "link_estimates.final_bps.max") <= 625_000.0,
        "{report:#}"
    );
    assert!(frames_at(&report, 320) > 0, "q after the step: {report:#}");
    assert!(
        frames_at(&report, 640) + frames_at(&report, 1280) > 0,
        "a higher layer before it: {report:#}"
    );
    let text = std::fs::read_to_string(&timeline).expect("the timeline was written");
    let timeline: Value = serde_json::from_str(&text).expect("the timeline is JSON");
    let count = |key: &str| timeline[key].as_array().map_or(0, Vec::len);
    // 250 ms samples over 14 s, the server's estimates of that subscriber, two events.
    assert!(count("samples") >= 40, "{timeline:#}");
    assert!(count("estimates") >= 5, "{timeline:#}");
    assert_eq!(count("events"), 2, "{timeline:#}");
}
