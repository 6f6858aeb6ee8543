//! Shared harness for the integration tests: runs the real `switchboard` binary, mints tokens
//! with it (or by hand for odd claims), and speaks the v0 signaling protocol over a WebSocket.
//!
//! Every wait here waits for something to happen (a line, a frame, an exit) under a timeout;
//! nothing sleeps to synchronize.

// Each test file compiles this module separately and uses a different part of it.
#![allow(dead_code)]

pub mod api;
pub mod cluster;
pub mod postgres;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use livekit_protocol as proto;
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use proto::signal_request::Message as Req;
pub use proto::signal_response::Message as Resp;

/// How long any single expected event may take.
pub const WAIT: Duration = Duration::from_secs(5);
/// The server needs longer the first time (SQLite migrations, media workers).
const READY_WAIT: Duration = Duration::from_secs(30);

pub const DEV_KEY: &str = "devkey";
pub const DEV_SECRET: &str = "secret";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

/// A command for the binary with no `SWITCHBOARD_*` setting leaking in from the environment.
pub fn command() -> Command {
    let mut cmd = Command::new(bin());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SWITCHBOARD_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Runs a command to completion (at most `limit`), killing it if it takes longer.
/// Returns (exit status, stdout, stderr).
pub fn run_with_timeout(mut cmd: Command, limit: Duration) -> (ExitStatus, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the switchboard binary");
    let out = collect(child.stdout.take().expect("stdout"));
    let err = collect(child.stderr.take().expect("stderr"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(limit) {
        Ok(status) => status.expect("wait for the binary"),
        Err(_) => {
            signal(pid, "KILL");
            panic!(
                "the command did not finish within {limit:?}; stderr so far:\n{}",
                err.0.lock().unwrap()
            );
        }
    };
    // The pipes close when the process exits; the reader threads finish right after.
    let stdout = wait_collected(&out);
    let stderr = wait_collected(&err);
    (status, stdout, stderr)
}

type Collected = Arc<Mutex<String>>;

fn collect(mut pipe: impl Read + Send + 'static) -> (Collected, mpsc::Receiver<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let (done_tx, done_rx) = mpsc::channel();
    let sink = Arc::clone(&text);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let _ = done_tx.send(());
    });
    (text, done_rx)
}

fn wait_collected((text, done): &(Collected, mpsc::Receiver<()>)) -> String {
    let _ = done.recv_timeout(WAIT);
    text.lock().unwrap().clone()
}

/// Sends a signal with the `kill` utility (the std library only offers SIGKILL).
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Mints a join token with `switchboard token create --dev` plus `extra` arguments.
pub fn token(room: &str, identity: &str, extra: &[&str]) -> String {
    let mut cmd = command();
    cmd.args([
        "token",
        "create",
        "--dev",
        "--room",
        room,
        "--identity",
        identity,
    ])
    .args(extra);
    let (status, stdout, stderr) = run_with_timeout(cmd, Duration::from_secs(20));
    assert!(status.success(), "token create failed: {stderr}");
    let jwt = stdout.trim().to_owned();
    assert_eq!(jwt.split('.').count(), 3, "not a JWT: {stdout:?}");
    jwt
}

/// Signs arbitrary claims with HS256 and `secret`, for tokens the CLI will not make.
pub fn sign(claims: &serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign claims")
}

/// Join claims for the dev key, valid for an hour; tests change what they need.
pub fn join_claims(room: &str, identity: &str) -> serde_json::Value {
    let now = now_secs();
    serde_json::json!({
        "iss": DEV_KEY,
        "sub": identity,
        "nbf": now,
        "exp": now + 3600,
        "video": { "room": room, "roomJoin": true },
    })
}

/// An unsigned token (`alg: none`), built by hand since no JWT library will make one.
pub fn unsigned(claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// Decodes the payload of a JWT without checking anything.
pub fn jwt_payload(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("JWT payload part");
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .expect("payload is base64url");
    serde_json::from_slice(&bytes).expect("payload is JSON")
}

/// A running `switchboard serve --dev` on free ports with its own data directory.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`
    pub http: String,
    /// `ws://127.0.0.1:<port>`
    pub ws: String,
    pub data_dir: tempfile::TempDir,
    stderr: (Collected, mpsc::Receiver<()>),
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Starts the server with extra `serve` arguments and waits for its ready line.
    pub fn start_with(extra: &[&str]) -> Server {
        let data_dir = tempfile::tempdir().expect("temporary data dir");
        let (child, stderr, addr) = spawn_serve(data_dir.path(), extra);
        Server {
            child: Some(child),
            http: format!("http://{addr}"),
            ws: format!("ws://{addr}"),
            data_dir,
            stderr,
        }
    }

    /// Kills the server with SIGKILL (no shutdown, no leaves recorded: a crash) and waits
    /// for it to be gone.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("server running");
        signal(child.id(), "KILL");
        let status = child.wait().expect("wait for the killed server");
        assert!(
            !status.success(),
            "a SIGKILLed server cannot exit cleanly: {status}"
        );
    }

    /// Starts the binary again on the same data directory (after [`Server::kill9`] or
    /// [`Server::stop`]), on new ports; `http`/`ws` point at the new process.
    pub fn restart(&mut self, extra: &[&str]) {
        assert!(
            self.child.is_none(),
            "stop or kill the server before restarting it"
        );
        let (child, stderr, addr) = spawn_serve(self.data_dir.path(), extra);
        // Keep the previous run's log in front, for failure reports.
        let previous = self.stderr_text();
        stderr
            .0
            .lock()
            .unwrap()
            .insert_str(0, &format!("{previous}--- restarted ---\n"));
        self.child = Some(child);
        self.http = format!("http://{addr}");
        self.ws = format!("ws://{addr}");
        self.stderr = stderr;
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.0.lock().unwrap().clone()
    }

    /// `<data-dir>/switchboard.db`, the embedded store's file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.path().join("switchboard.db")
    }

    /// Sends SIGTERM (without waiting).
    pub fn terminate(&self) {
        signal(self.pid(), "TERM");
    }

    /// Waits up to `limit` for the server to exit (after [`Server::terminate`]).
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(limit) {
            Ok(status) => status.expect("wait for the server"),
            Err(_) => {
                signal(pid, "KILL");
                panic!(
                    "the server did not exit within {limit:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
        }
    }

    /// SIGTERM, then waits for the exit; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.terminate();
        self.wait_exit(Duration::from_secs(10))
    }

    /// A token minted by the CLI, then a joined client with its JoinResponse.
    pub async fn join(
        &self,
        room: &str,
        identity: &str,
        extra: &[&str],
    ) -> (Client, proto::JoinResponse) {
        Client::join(&self.ws, &token(room, identity, extra)).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- switchboard stderr ---\n{}", self.stderr_text());
        }
    }
}

/// Runs `switchboard serve --dev` on free ports with `data_dir`; returns the child, its
/// collected stderr and the `host:port` of its ready line.
fn spawn_serve(
    data_dir: &std::path::Path,
    extra: &[&str],
) -> (Child, (Collected, mpsc::Receiver<()>), String) {
    let mut cmd = command();
    cmd.args([
        "serve",
        "--dev",
        "--http-addr",
        "127.0.0.1:0",
        "--rtc-port",
        "0",
        "--rtc-tcp-port",
        "0",
        "--data-dir",
    ])
    .arg(data_dir)
    // Tests poll the API and join far faster than one real client would; the per-address
    // request rates are tested in tests/attack_http.rs, whose own `--limit`s come later and
    // win.
    .args([
        "--limit",
        "api_requests_per_minute=1000000",
        "--limit",
        "rtc_requests_per_minute=1000000",
        "--limit",
        "whip_requests_per_minute=1000000",
    ])
    .args(extra)
    .env(
        "SWITCHBOARD_LOG",
        "info,switchboard=debug,switchboard_signaling=debug",
    )
    .env("NO_COLOR", "1")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn switchboard serve");
    let stderr = collect(child.stderr.take().expect("stderr"));
    let stdout = child.stdout.take().expect("stdout");
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(line) => {
                    if line_tx.send(line).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    let line = match line_rx.recv_timeout(READY_WAIT) {
        Ok(line) => line,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "no ready line from switchboard serve ({e}); stderr:\n{}",
                wait_collected(&stderr)
            )
        }
    };
    let addr = match line.strip_prefix("switchboard ready http://") {
        Some(addr) => addr.to_owned(),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unexpected first stdout line: {line:?}")
        }
    };
    (child, stderr, addr)
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What reading from the socket produced.
// Short-lived values in tests: boxing the response would only make matching clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Event {
    Response(Resp),
    /// The server's close frame (None when it carried no code).
    Closed(Option<CloseFrame>),
    /// The stream ended without a close frame, or failed.
    Ended(String),
}

/// One signaling connection, speaking binary protobuf frames.
pub struct Client {
    pub ws: Ws,
}

/// The `/rtc` URL with a token and livekit-client's usual query.
pub fn rtc_url(ws_base: &str, token: &str, extra_query: &str) -> String {
    format!(
        "{ws_base}/rtc?access_token={token}&auto_subscribe=1&sdk=js&version=2.23.0&protocol=16{extra_query}"
    )
}

impl Client {
    /// Connects (the upgrade may be refused: the error carries the HTTP response).
    pub async fn connect(url: &str) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("WebSocket connect timed out")?;
        Ok(Client { ws })
    }

    /// Connects and returns the JoinResponse, which must be the first message.
    pub async fn join(ws_base: &str, token: &str) -> (Client, proto::JoinResponse) {
        let mut client = Client::connect(&rtc_url(ws_base, token, ""))
            .await
            .expect("upgrade to /rtc");
        match client.next_event().await {
            Event::Response(Resp::Join(join)) => (client, join),
            other => panic!("the first message was not a JoinResponse: {other:?}"),
        }
    }

    pub async fn send(&mut self, message: Req) {
        let request = proto::SignalRequest {
            message: Some(message),
        };
        self.send_raw(Message::Binary(request.encode_to_vec().into()))
            .await;
    }

    /// Announces an Opus microphone track under `cid`; returns its sid once published.
    pub async fn add_audio_track(&mut self, cid: &str) -> String {
        self.send(Req::AddTrack(proto::AddTrackRequest {
            cid: cid.to_owned(),
            name: "microphone".into(),
            r#type: proto::TrackType::Audio as i32,
            source: proto::TrackSource::Microphone as i32,
            ..Default::default()
        }))
        .await;
        self.expect("TrackPublishedResponse", |r| match r {
            Resp::TrackPublished(p) => p.track.as_ref().map(|t| t.sid.clone()),
            _ => None,
        })
        .await
    }

    /// Sends a request, or says the connection is gone: for floods the server may cut off
    /// midway.
    pub async fn try_send(&mut self, message: Req) -> bool {
        let request = proto::SignalRequest {
            message: Some(message),
        };
        let frame = Message::Binary(request.encode_to_vec().into());
        matches!(
            tokio::time::timeout(WAIT, self.ws.send(frame)).await,
            Ok(Ok(()))
        )
    }

    pub async fn send_raw(&mut self, frame: Message) {
        tokio::time::timeout(WAIT, self.ws.send(frame))
            .await
            .expect("send timed out")
            .expect("send a frame");
    }

    /// The next response, close or end of stream (WebSocket pings are skipped); panics
    /// after [`WAIT`].
    pub async fn next_event(&mut self) -> Event {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("nothing from the server within {WAIT:?}"),
                Ok(None) => return Event::Ended("stream ended".into()),
                Ok(Some(Err(e))) => return Event::Ended(e.to_string()),
                Ok(Some(Ok(frame))) => frame,
            };
            match frame {
                Message::Binary(bytes) => {
                    let response = proto::SignalResponse::decode(bytes.as_ref())
                        .expect("the server sent an undecodable SignalResponse");
                    match response.message {
                        Some(message) => return Event::Response(message),
                        None => panic!("the server sent an empty SignalResponse"),
                    }
                }
                Message::Close(frame) => return Event::Closed(frame),
                Message::Text(text) => panic!("the server sent a text frame: {text}"),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Skips responses until `pick` accepts one; panics on close or after [`WAIT`].
    pub async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(&Resp) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut skipped = Vec::new();
        loop {
            let event = match tokio::time::timeout_at(deadline, self.next_event()).await {
                Ok(event) => event,
                Err(_) => panic!("no {what} within {WAIT:?}; skipped: {skipped:#?}"),
            };
            match event {
                Event::Response(response) => {
                    if let Some(found) = pick(&response) {
                        return found;
                    }
                    skipped.push(response);
                }
                other => panic!("waiting for {what}, got {other:?}; skipped: {skipped:#?}"),
            }
        }
    }

    /// Skips responses until the server's side goes away (a close frame or the stream's end).
    pub async fn until_gone(&mut self) {
        loop {
            match self.next_event().await {
                Event::Response(_) => {}
                Event::Closed(_) | Event::Ended(_) => return,
            }
        }
    }

    /// Skips responses until the server closes; returns the close frame.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.next_event())
                .await
                .expect("the server did not close the connection");
            match event {
                Event::Response(_) => {}
                Event::Closed(frame) => return frame,
                Event::Ended(why) => panic!("the stream ended without a close frame: {why}"),
            }
        }
    }

    /// The next ParticipantInfo snapshot about `sid` that satisfies `check`.
    pub async fn expect_participant(
        &mut self,
        what: &str,
        sid: &str,
        mut check: impl FnMut(&proto::ParticipantInfo) -> bool,
    ) -> proto::ParticipantInfo {
        self.expect(what, |response| match response {
            Resp::Update(update) => update
                .participants
                .iter()
                .find(|p| p.sid == sid && check(p))
                .cloned(),
            _ => None,
        })
        .await
    }

    /// Sends `ping` and `ping_req` and checks both answers: the connection is alive.
    pub async fn assert_alive(&mut self) {
        let value = 0x5eed_1234_i64 + now_secs() as i64;
        self.send(Req::Ping(value)).await;
        let pong = self
            .expect("pong", |r| match r {
                Resp::Pong(v) => Some(*v),
                _ => None,
            })
            .await;
        assert_eq!(pong, value, "pong must echo the ping");
    }

    /// Sends a client-initiated LeaveRequest as livekit-client does.
    pub async fn leave(&mut self) {
        self.send(Req::Leave(proto::LeaveRequest {
            can_reconnect: false,
            reason: proto::DisconnectReason::ClientInitiated as i32,
            action: proto::leave_request::Action::Disconnect as i32,
            ..Default::default()
        }))
        .await;
    }
}

/// `PA_`/`RM_`/`TR_` followed by 12 base62 characters.
pub fn assert_sid(sid: &str, prefix: &str) {
    let rest = sid
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{sid:?} does not start with {prefix}"));
    assert_eq!(
        rest.len(),
        12,
        "{sid:?} must have 12 characters after {prefix}"
    );
    assert!(
        rest.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{sid:?} is not base62"
    );
}

/// The state of a participant as the enum.
pub fn state(info: &proto::ParticipantInfo) -> proto::participant_info::State {
    proto::participant_info::State::try_from(info.state).expect("a known participant state")
}

/// Opens the server's SQLite file (WAL mode; works while it runs or after it stopped).
pub async fn open_db(server: &Server) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}?mode=rw", server.db_path().display());
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}
