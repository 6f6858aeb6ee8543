//! Test support: a real SQLite store on a temp file, a real HTTP receiver, events written
//! through the store's own methods, and the real livekit-server-sdk as the webhook verifier.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::delivery::{self, DeliveryConfig, RetryPolicy, SigningKey};
use crate::store::tests::harness::PgSchema;
use crate::store::{
    EgressStatus, EgressUpdate, EventRecord, NewEgress, NewRoom, NewSession, ParticipantJoin,
    ParticipantLeave, ParticipantRole, ParticipantSummary, PostgresStore, RoomSpec, SessionState,
    SqliteStore, Store, TrackEvent,
};

/// Long enough for a loaded CI machine; a hang fails instead of blocking the suite.
pub const WAIT: Duration = Duration::from_secs(20);

pub const KEY: &str = "webhook-key";
pub const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A store on a temp file that lives as long as this value.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    _dir: TempDir,
}

impl TestStore {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("sb.db").display());
        let store = SqliteStore::open(&url).await.expect("open SQLite store");
        TestStore {
            store: Arc::new(store),
            _dir: dir,
        }
    }

    pub async fn all_events(&self) -> Vec<EventRecord> {
        self.store
            .events_after(0, 1000)
            .await
            .expect("read event log")
    }
}

/// Fast retries so failure tests take milliseconds, not seconds.
pub fn config() -> DeliveryConfig {
    DeliveryConfig {
        webhook_key: SigningKey {
            api_key: KEY.to_owned(),
            api_secret: SECRET.to_owned(),
        },
        retry: RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
        },
        timeout: Duration::from_secs(5),
        ..DeliveryConfig::default()
    }
}

/// Running delivery tasks and the handles to drive them.
pub struct Running {
    pub wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// As a node named `node_id` (delivery leases are per node).
    pub fn start_as(store: &Arc<dyn Store>, config: DeliveryConfig, node_id: &str) -> Self {
        Running::start(
            store,
            DeliveryConfig {
                node_id: node_id.to_owned(),
                ..config
            },
        )
    }

    /// Kills the tasks as `kill -9` would the node: nothing runs after the current await
    /// point, so the lease is not released and a cursor write under way does not happen.
    pub async fn abort(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let ended = tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("an aborted delivery task ends at once");
            assert!(
                matches!(&ended, Err(e) if e.is_cancelled()) || ended.is_ok(),
                "delivery task panicked: {ended:?}"
            );
        }
    }

    pub fn start(store: &Arc<dyn Store>, config: DeliveryConfig) -> Self {
        let wake = Arc::new(Notify::new());
        let (stop, stop_rx) = watch::channel(false);
        let tasks = delivery::spawn(Arc::clone(store), config, Arc::clone(&wake), stop_rx);
        Running { wake, stop, tasks }
    }

    /// Stops the tasks and waits for them: they must end promptly, even mid-retry.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("delivery task stops promptly")
                .expect("delivery task did not panic");
        }
    }
}

/// One request the receiver got.
#[derive(Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    pub fn authorization(&self) -> &str {
        self.headers
            .get("authorization")
            .expect("Authorization header")
            .to_str()
            .expect("ASCII Authorization header")
    }
}

/// The event id (`EV_<id>`) whose first request is left unanswered until the sender gives
/// up, and what it waits on meanwhile.
type Held = Arc<Mutex<Option<(String, Arc<Notify>)>>>;

#[derive(Clone)]
struct ReceiverState {
    requests: mpsc::UnboundedSender<Received>,
    /// Statuses to answer, in order; 200 once used up.
    script: Arc<Mutex<VecDeque<StatusCode>>>,
    hold: Held,
}

/// A real HTTP server collecting webhook POSTs.
pub struct Receiver {
    pub url: String,
    requests: mpsc::UnboundedReceiver<Received>,
    script: Arc<Mutex<VecDeque<StatusCode>>>,
    hold: Held,
    server: JoinHandle<()>,
}

impl Receiver {
    pub async fn start(script: &[StatusCode]) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(script.iter().copied().collect()));
        let hold = Arc::new(Mutex::new(None));
        let state = ReceiverState {
            requests: tx,
            script: Arc::clone(&script),
            hold: Arc::clone(&hold),
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver serves");
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            requests: rx,
            script,
            hold,
            server,
        }
    }

    /// The first request for event `EV_<event id>` is recorded but not answered: its
    /// sender sees neither success nor failure until it gives up the connection, or until
    /// the returned notify is triggered: then the event is accepted (200).
    pub fn hold(&self, event_id: i64) -> Arc<Notify> {
        let release = Arc::new(Notify::new());
        *self.hold.lock().expect("hold lock") =
            Some((format!("EV_{event_id}"), Arc::clone(&release)));
        release
    }

    /// The requests that arrived and are not taken yet, without waiting. Call it once every
    /// sender has finished (tasks stopped): each request is recorded before it is answered,
    /// so nothing sent can still be on its way.
    pub fn rest(&mut self) -> Vec<Received> {
        let mut out = Vec::new();
        while let Ok(request) = self.requests.try_recv() {
            out.push(request);
        }
        out
    }

    /// From now on, answer every request with `status`.
    pub fn answer_always(&self, status: StatusCode) {
        let mut script = self.script.lock().expect("script lock");
        script.clear();
        script.extend(std::iter::repeat_n(status, 10_000));
    }

    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(WAIT, self.requests.recv())
            .await
            .expect("a webhook arrives in time")
            .expect("receiver is running")
    }

    pub async fn take(&mut self, n: usize) -> Vec<Received> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next().await);
        }
        out
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let status = state
        .script
        .lock()
        .expect("script lock")
        .pop_front()
        .unwrap_or(StatusCode::OK);
    let id = headers
        .get(crate::delivery::EVENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let held = {
        let mut hold = state.hold.lock().expect("hold lock");
        let wanted = hold
            .as_ref()
            .is_some_and(|(wanted, _)| Some(wanted) == id.as_ref());
        if wanted {
            hold.take().map(|(_, release)| release)
        } else {
            None
        }
    };
    // Recorded before answering, so the test sees every attempt, failed ones included.
    let _ = state.requests.send(Received { headers, body });
    if let Some(release) = held {
        release.notified().await;
        return StatusCode::OK;
    }
    status
}

/// Two stores on one fresh PostgreSQL schema, each with its own pool: two nodes sharing one
/// database. Dropped (schema and all) by [`PgNodes::finish`].
pub struct PgNodes {
    pub a: Arc<dyn Store>,
    pub b: Arc<dyn Store>,
    schema: PgSchema,
}

impl PgNodes {
    /// Fails (never skips) when PostgreSQL is not reachable.
    pub async fn open() -> Self {
        let schema = PgSchema::create().await;
        let mut stores: Vec<Arc<dyn Store>> = Vec::new();
        for _ in 0..2 {
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(30));
            match PostgresStore::connect_with(schema.store_options(), pool).await {
                Ok(store) => stores.push(Arc::new(store)),
                Err(e) => {
                    schema.drop_schema().await;
                    panic!("open a PostgreSQL store: {e}");
                }
            }
        }
        let b = stores.pop().expect("two stores");
        let a = stores.pop().expect("two stores");
        PgNodes { a, b, schema }
    }

    /// Runs `test` (in a task of its own, so a panic still drops the schema) with both
    /// stores and the options of a connection to the same schema.
    pub async fn run<F, Fut>(test: F)
    where
        F: FnOnce(Arc<dyn Store>, Arc<dyn Store>, PgConnectOptions) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let nodes = PgNodes::open().await;
        let options = nodes.schema.store_options();
        let outcome = tokio::spawn(test(Arc::clone(&nodes.a), Arc::clone(&nodes.b), options)).await;
        nodes.a.close().await;
        nodes.b.close().await;
        nodes.schema.drop_schema().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// A room's life through the store's own methods: created, started, a session that goes
/// live with a host publishing and an egress running, the host leaving, the room closing
/// (which ends the session). Returns the session id.
pub async fn room_story(store: &dyn Store, room_id: &str) -> String {
    let at = Utc::now();
    let unique = ulid::Ulid::new();
    let session_id = format!("se_{unique}");
    let egress_id = format!("eg_{unique}");
    let host_sid = format!("PA_{unique}");
    store
        .create_room(&RoomSpec {
            room_id: room_id.to_owned(),
            name: Some("Demo".to_owned()),
            metadata: Some("{\"topic\":\"delivery\"}".to_owned()),
            empty_timeout_secs: 60,
            max_participants: 10,
            channel_id: None,
            guest_access: true,
            at,
        })
        .await
        .expect("create_room");
    store
        .room_started(&NewRoom {
            room_id: room_id.to_owned(),
            sid: format!("RM_{unique}"),
            name: None,
            metadata: None,
            empty_timeout_secs: 60,
            max_participants: 10,
            started_at: at,
            node_id: None,
        })
        .await
        .expect("room_started");
    store
        .create_session(&NewSession {
            session_id: session_id.clone(),
            room_id: room_id.to_owned(),
            channel_id: None,
            owner_identity: Some("host".to_owned()),
            state: SessionState::Ready,
            at,
        })
        .await
        .expect("create_session");
    store
        .participant_joined(&ParticipantJoin {
            room_id: room_id.to_owned(),
            sid: host_sid.clone(),
            identity: "host".to_owned(),
            name: "Host".to_owned(),
            role: Some(ParticipantRole::Host),
            metadata: None,
            joined_at: at,
            node_id: None,
            session_id: Some(session_id.clone()),
        })
        .await
        .expect("participant_joined");
    store
        .record_track(&TrackEvent {
            room_id: room_id.to_owned(),
            participant_sid: host_sid.clone(),
            identity: "host".to_owned(),
            track_sid: format!("TR_{unique}"),
            kind: "video".to_owned(),
            source: "camera".to_owned(),
            published: true,
            at,
        })
        .await
        .expect("record_track");
    store
        .transition_session(
            &session_id,
            SessionState::Ready,
            SessionState::Publishing,
            "egress requested",
            at,
        )
        .await
        .expect("READY -> PUBLISHING");
    store
        .create_egress(&NewEgress {
            egress_id: egress_id.clone(),
            session_id: Some(session_id.clone()),
            room_id: room_id.to_owned(),
            kind: "room".to_owned(),
            output: json!({"rtmp": "rtmp://127.0.0.1/live"}),
            at,
            node_id: None,
        })
        .await
        .expect("create_egress");
    let update = |status| EgressUpdate {
        status,
        error: None,
        output: None,
        at,
    };
    store
        .update_egress(&egress_id, &update(EgressStatus::Active))
        .await
        .expect("egress active");
    store
        .transition_session(
            &session_id,
            SessionState::Publishing,
            SessionState::Live,
            "egress active",
            at,
        )
        .await
        .expect("PUBLISHING -> LIVE");
    store
        .participant_left(
            &host_sid,
            &ParticipantLeave {
                left_at: at,
                reason: "CLIENT_INITIATED".to_owned(),
                summary: ParticipantSummary::default(),
            },
        )
        .await
        .expect("participant_left");
    store
        .update_egress(&egress_id, &update(EgressStatus::Complete))
        .await
        .expect("egress complete");
    store
        .room_finished(room_id, at, "ROOM_DELETED")
        .await
        .expect("room_finished");
    session_id
}

/// A unique room id, so runs sharing a NATS server can tell their messages apart.
pub fn room_id(tag: &str) -> String {
    format!("{tag}_{}", ulid::Ulid::new())
}

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// Fails (never skips) when node or the SDK is missing: the SDK check is the point.
pub fn require_livekit_sdk() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        matches!(&node, Ok(out) if out.status.success()),
        "node is required to verify webhooks with livekit-server-sdk: {node:?}"
    );
    let sdk = web_dir().join("node_modules/livekit-server-sdk/package.json");
    assert!(
        sdk.exists(),
        "{} is missing: run `npm ci` in web/ to install livekit-server-sdk",
        sdk.display()
    );
}

/// Verifies webhooks with the SDK's `WebhookReceiver` (web/tests/support/lk-webhook.mjs),
/// all at once to keep node start-up off the critical path. Per webhook: the parsed event
/// as the SDK renders it, or the SDK's reason for rejecting it.
pub fn verify_with_sdk(webhooks: &[(&str, &[u8])]) -> Vec<Result<Value, String>> {
    require_livekit_sdk();
    let dir = tempfile::tempdir().expect("temp dir");
    let script = web_dir().join("tests/support/lk-webhook.mjs");
    let children: Vec<_> = webhooks
        .iter()
        .enumerate()
        .map(|(i, (auth, body))| {
            let file = dir.path().join(format!("body-{i}.json"));
            std::fs::write(&file, body).expect("write body file");
            Command::new("node")
                .arg(&script)
                .args([KEY, SECRET, auth])
                .arg(&file)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start node")
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().expect("node runs");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            match out.status.code() {
                Some(0) => Ok(serde_json::from_slice(&out.stdout).expect("SDK prints JSON")),
                Some(1) => Err(stderr),
                other => panic!("lk-webhook.mjs setup error ({other:?}): {stderr}"),
            }
        })
        .collect()
}
