//! The server under test: starting one (`--start-server`), and reading what it costs from
//! `/proc` and `/metrics`.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context as _};

/// The server's log filter when its estimates are wanted: the "subscriber link" lines of
/// sfu/src/congestion.rs (at most one per subscriber per 5 % move or second).
const LINK_LOG: &str = "info,switchboard_sfu::congestion=debug";

/// Name of the forwarded-packets counter the server exports.
pub const FORWARDED_METRIC: &str = "switchboard_packets_forwarded_total";
/// The server's gauge of open ICE-TCP connections.
const TCP_CONNECTIONS_METRIC: &str = "switchboard_tcp_connections";
/// The server's count of datagrams it dropped because an ICE-TCP connection's queue was full.
const TCP_DROPPED_METRIC: &str = "switchboard_tcp_datagrams_dropped_total";

/// A `switchboard serve --dev` started by the tester, stopped when dropped.
pub struct StartedServer {
    child: Child,
    pub ws_url: String,
    data_dir: PathBuf,
}

impl StartedServer {
    /// Runs this binary's `serve --dev` on free loopback ports with a fresh data directory
    /// and waits for its ready line; estimating subscribers' bandwidth or not (`on`/`off`),
    /// and with `link_log` logging each estimate (`links.rs` reads them back).
    pub fn start(bandwidth_estimation: &str, link_log: bool) -> anyhow::Result<StartedServer> {
        let exe = std::env::current_exe().context("cannot find the switchboard binary")?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let data_dir = std::env::temp_dir().join(format!(
            "switchboard-loadtest-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let log = std::fs::File::create(data_dir.join("server.log"))?;
        let mut command = Command::new(exe);
        for (name, _) in std::env::vars_os() {
            // Only our flags configure it: no SWITCHBOARD_* setting leaks in.
            if name.to_string_lossy().starts_with("SWITCHBOARD_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args([
                "serve",
                "--dev",
                "--http-addr",
                "127.0.0.1:0",
                "--rtc-port",
                "0",
                "--rtc-tcp-port",
                "0",
                "--rtc-bandwidth-estimation",
                bandwidth_estimation,
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--log", if link_log { LINK_LOG } else { "info" }])
            // Every simulated client comes from 127.0.0.1: the per-address bounds meant for
            // one real client would stop the load at its first few hundred participants.
            .args([
                "--limit",
                "http_connections_per_address=1000000",
                "--limit",
                "rtc_requests_per_minute=1000000",
                "--limit",
                "api_requests_per_minute=1000000",
                "--limit",
                "whip_requests_per_minute=1000000",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("cannot start switchboard serve")?;
        let stdout = child.stdout.take().context("no stdout from the server")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("switchboard ready http://") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default();
                bail!("the server did not become ready within 60 s; its log:\n{log}");
            }
        };
        Ok(StartedServer {
            child,
            ws_url: format!("ws://{addr}"),
            data_dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server logged so far, line by line (a long run's log need not fit in
    /// memory).
    pub fn log(&self) -> anyhow::Result<impl Iterator<Item = String>> {
        let path = self.data_dir.join("server.log");
        let file = std::fs::File::open(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(BufReader::new(file).lines().map_while(Result::ok))
    }

    /// SIGTERM, then up to 10 s for a graceful exit, then SIGKILL.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) with the pid of our own child process and a valid signal number.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for StartedServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// CPU time a process has used so far, in seconds, from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTimes {
    /// In the process itself (utime): where the server's own work shows.
    pub user: f64,
    /// In the kernel on its behalf (stime): mostly sending and receiving datagrams.
    pub system: f64,
}

impl CpuTimes {
    pub fn total(self) -> f64 {
        self.user + self.system
    }

    /// What was used between `earlier` and this reading.
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }
}

/// The user and system CPU time of a process so far.
pub fn cpu_times(pid: u32) -> anyhow::Result<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: fields count from after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unreadable /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse::<u64>()? as f64)
    };
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = if per_second > 0 {
        per_second as f64
    } else {
        100.0
    };
    Ok(CpuTimes {
        user: ticks(11)? / per_second,
        system: ticks(12)? / per_second,
    })
}

/// Resident set size of a process in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// `http://host:port/metrics` for a `ws://host:port` server URL.
pub fn metrics_url_for(ws_url: &str) -> String {
    let base = ws_url
        .replacen("wss://", "https://", 1)
        .replacen("ws://", "http://", 1);
    format!("{}/metrics", base.trim_end_matches('/'))
}

/// What the report reads from one scrape of the server's `/metrics`; each `None` when the
/// server has no such metric (a counter it has not touched yet) or no `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scrape {
    /// `switchboard_packets_forwarded_total`, summed over its label sets.
    pub forwarded: Option<f64>,
    /// `switchboard_tcp_connections`: ICE-TCP connections open.
    pub tcp_connections: Option<f64>,
    /// `switchboard_tcp_datagrams_dropped_total`.
    pub tcp_dropped: Option<f64>,
}

pub async fn scrape(client: &reqwest::Client, url: &str) -> Scrape {
    let Some(text) = metrics_text(client, url).await else {
        return Scrape::default();
    };
    Scrape {
        forwarded: parse_counter(&text, FORWARDED_METRIC),
        tcp_connections: parse_counter(&text, TCP_CONNECTIONS_METRIC),
        tcp_dropped: parse_counter(&text, TCP_DROPPED_METRIC),
    }
}

async fn metrics_text(client: &reqwest::Client, url: &str) -> Option<String> {
    let response = client
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

/// Sum of every sample of `name` in Prometheus text format.
pub fn parse_counter(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // `name value` or `name{labels} value`, not a longer name sharing the prefix.
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest.rsplit(' ').next()?.parse::<f64>().ok()?;
        *total.get_or_insert(0.0) += value;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_labels() {
        let text = "# TYPE switchboard_packets_forwarded_total counter\n\
            switchboard_packets_forwarded_total{worker=\"0\"} 10\n\
            switchboard_packets_forwarded_total{worker=\"1\"} 5\n\
            switchboard_packets_forwarded_total_other 99\n";
        assert_eq!(parse_counter(text, FORWARDED_METRIC), Some(15.0));
        assert_eq!(parse_counter("x 1\n", FORWARDED_METRIC), None);
        assert_eq!(
            metrics_url_for("ws://127.0.0.1:7880/"),
            "http://127.0.0.1:7880/metrics"
        );
    }

    #[test]
    fn own_process_has_cpu_and_rss() {
        let pid = std::process::id();
        let cpu = cpu_times(pid).expect("cpu");
        assert!(cpu.user >= 0.0 && cpu.system >= 0.0);
        assert_eq!(cpu.total(), cpu.user + cpu.system);
        assert!(rss_kib(pid).expect("rss") > 0);
    }
}
