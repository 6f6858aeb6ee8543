//! The `/v1` API over real HTTP: a small client that checks problem documents, remembers
//! which paths it called (so a test can check each one is in the OpenAPI document), tokens
//! with exactly the grants a test needs, and polling for what the server records
//! asynchronously.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{now_secs, sign, Client, Event, DEV_KEY, DEV_SECRET, WAIT};

/// How long a condition the server reaches on its own (records written by its event loop)
/// may take.
pub const SETTLE: Duration = Duration::from_secs(10);

/// reqwest on rustls without a built-in crypto provider: install aws-lc-rs once.
pub fn http_client() -> reqwest::Client {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
    reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("HTTP client")
}

/// `GET /rtc/validate` on `server` with `token` and extra request `headers`: (status, body).
pub async fn rtc_validate_with(
    server: &super::Server,
    token: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut request = http_client()
        .get(format!("{}/rtc/validate", server.http))
        .query(&[("access_token", token)]);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let reply = request.send().await.expect("GET /rtc/validate");
    let status = reply.status();
    (status, reply.text().await.unwrap_or_default())
}

/// `GET /rtc/validate` on `server` with `token`: (status, body).
pub async fn rtc_validate(server: &super::Server, token: &str) -> (StatusCode, String) {
    rtc_validate_with(server, token, &[]).await
}

/// Hand-signed dev-key claims for `identity` with the given `video` grant.
pub fn grant_token(identity: &str, video: Value) -> String {
    let now = now_secs();
    sign(
        &json!({
            "iss": DEV_KEY,
            "sub": identity,
            "nbf": now,
            "exp": now + 3600,
            "video": video,
        }),
        DEV_SECRET,
    )
}

/// The CLI's `--admin` token: roomCreate, roomList and roomAdmin (+ join) for `room`.
pub fn admin_token(room: &str, identity: &str) -> String {
    super::token(room, identity, &["--admin"])
}

/// A host's join token: roomAdmin for `room` (hand-signed, quicker than the CLI).
pub fn host_token(room: &str, identity: &str) -> String {
    grant_token(
        identity,
        json!({ "room": room, "roomJoin": true, "roomAdmin": true }),
    )
}

/// A plain join token (a guest, in session terms).
pub fn guest_token(room: &str, identity: &str) -> String {
    grant_token(identity, json!({ "room": room, "roomJoin": true }))
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub what: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON (Null when it is empty or not JSON).
    pub body: Value,
}

impl Reply {
    /// Asserts the status and returns the JSON body.
    pub fn expect(&self, status: StatusCode) -> &Value {
        assert_eq!(
            self.status, status,
            "{}: expected {status}, body {}",
            self.what, self.text
        );
        &self.body
    }

    /// Asserts an RFC 9457 problem document with `status` and a readable detail; returns
    /// the detail.
    pub fn problem(&self, status: StatusCode) -> String {
        assert_eq!(
            self.status, status,
            "{}: expected {status}, body {}",
            self.what, self.text
        );
        let content_type = self
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("application/problem+json"),
            "{}: a {status} must be application/problem+json, got {content_type:?} with body {:?}",
            self.what,
            self.text
        );
        assert_eq!(
            self.body["status"],
            status.as_u16(),
            "{}: {}",
            self.what,
            self.text
        );
        assert!(
            self.body["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{}: a problem has a title: {}",
            self.what,
            self.text
        );
        let detail = self.body["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: the problem has no detail: {}", self.what, self.text))
            .to_owned();
        // A sentence, not a code: several words.
        assert!(
            detail.split_whitespace().count() >= 3,
            "{}: the detail {detail:?} does not explain anything",
            self.what
        );
        detail
    }

    /// A refused request body: 400 or 422 (axum's status for a body of the right syntax but
    /// wrong shape), as a problem whose detail mentions each of `words`.
    pub fn bad_body(&self, words: &[&str]) -> String {
        assert!(
            self.status == StatusCode::BAD_REQUEST
                || self.status == StatusCode::UNPROCESSABLE_ENTITY,
            "{}: a bad body is 400 or 422, got {}: {}",
            self.what,
            self.status,
            self.text
        );
        self.problem_saying(self.status, words)
    }

    /// [`Reply::problem`], and the detail must mention each of `words`.
    pub fn problem_saying(&self, status: StatusCode, words: &[&str]) -> String {
        let detail = self.problem(status);
        for word in words {
            assert!(
                detail.contains(word),
                "{}: the detail must mention {word:?}: {detail:?}",
                self.what
            );
        }
        detail
    }
}

/// A `/v1` client with (or without) a bearer token.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    client: reqwest::Client,
    token: Option<String>,
    /// (METHOD, path without query) of every call made through this client and its clones.
    calls: Arc<Mutex<BTreeSet<(String, String)>>>,
}

impl Api {
    pub fn new(base: &str, token: Option<&str>) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            client: http_client(),
            token: token.map(str::to_owned),
            calls: Arc::default(),
        }
    }

    /// The same server with another token; calls are remembered together.
    pub fn as_caller(&self, token: Option<&str>) -> Api {
        Api {
            token: token.map(str::to_owned),
            ..self.clone()
        }
    }

    /// Sends a request; `body` is sent as JSON when given.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let bare = path.split('?').next().unwrap_or(path).to_owned();
        self.calls
            .lock()
            .unwrap()
            .insert((method.as_str().to_owned(), bare));
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let what = format!("{method} {path}");
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            what,
            status,
            headers,
            text,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    /// A POST with no body (the session steps).
    pub async fn post_empty(&self, path: &str) -> Reply {
        self.call(Method::POST, path, None).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Reply {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    /// Every (METHOD, path) called so far.
    pub fn calls(&self) -> Vec<(String, String)> {
        self.calls.lock().unwrap().iter().cloned().collect()
    }

    /// Fetches `/v1/openapi.json` and asserts every call made so far is documented there
    /// (path templates like `/v1/rooms/{room_id}` match any one segment).
    pub async fn assert_documented(&self) {
        let reply = self
            .client
            .get(format!("{}/v1/openapi.json", self.base))
            .send()
            .await
            .expect("GET /v1/openapi.json");
        assert_eq!(reply.status(), StatusCode::OK);
        let doc: Value = reply.json().await.expect("the OpenAPI document is JSON");
        let paths = doc["paths"].as_object().expect("OpenAPI paths");
        let mut missing = Vec::new();
        for (method, path) in self.calls() {
            let documented = paths.iter().any(|(template, ops)| {
                template_matches(template, &path)
                    && ops.get(method.to_lowercase().as_str()).is_some()
            });
            if !documented {
                missing.push(format!("{method} {path}"));
            }
        }
        assert!(
            missing.is_empty(),
            "called but not in /v1/openapi.json: {missing:#?}"
        );
    }
}

/// Whether an OpenAPI path template (`/v1/rooms/{room_id}`) matches a concrete path.
pub fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
}

/// Polls `check` until it yields a value, for at most [`SETTLE`]; panics with `what`
/// and the last observation otherwise.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("{what} did not happen within {SETTLE:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

impl Api {
    /// `GET /v1/sessions/{id}` → the session object.
    pub async fn session(&self, session_id: &str) -> Value {
        self.get(&format!("/v1/sessions/{session_id}"))
            .await
            .expect(StatusCode::OK)["session"]
            .clone()
    }

    /// Waits until the session is in `state`; returns it.
    pub async fn session_reaches(&self, session_id: &str, state: &str) -> Value {
        eventually(
            &format!("session {session_id} reaching {state}"),
            || async {
                let session = self.session(session_id).await;
                if session["state"] == state {
                    Ok(session)
                } else {
                    Err(session.to_string())
                }
            },
        )
        .await
    }

    /// `GET /v1/sessions?room_id=` → the sessions, newest first.
    pub async fn sessions_of(&self, room_id: &str) -> Vec<Value> {
        self.get(&format!("/v1/sessions?room_id={room_id}"))
            .await
            .expect(StatusCode::OK)["sessions"]
            .as_array()
            .expect("sessions array")
            .clone()
    }

    /// Waits until the room is recorded (a join records the room it opens asynchronously,
    /// just after the join); returns `GET /v1/rooms/{room_id}`'s room.
    pub async fn room_recorded(&self, room_id: &str) -> Value {
        eventually(&format!("room {room_id} to be recorded"), || async {
            let reply = self.get(&format!("/v1/rooms/{room_id}")).await;
            (reply.status == StatusCode::OK)
                .then(|| reply.body["room"].clone())
                .ok_or(reply.text)
        })
        .await
    }

    /// Waits until the room has an open session in `state`; returns it.
    pub async fn open_session_reaches(&self, room_id: &str, state: &str) -> Value {
        eventually(&format!("an open {state} session in {room_id}"), || async {
            // The room itself may not be recorded yet (a join records it asynchronously).
            let reply = self.get(&format!("/v1/sessions?room_id={room_id}")).await;
            if reply.status != StatusCode::OK {
                return Err(reply.text);
            }
            let sessions = reply.body["sessions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            sessions
                .iter()
                .find(|s| s["state"] == state)
                .cloned()
                .ok_or_else(|| Value::Array(sessions).to_string())
        })
        .await
    }

    /// Every event of the room, paging through the log 1000 at a time.
    pub async fn all_events(&self, room_id: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .get(&format!(
                    "/v1/rooms/{room_id}/events?after={after}&limit=1000"
                ))
                .await;
            let body = page.expect(StatusCode::OK);
            let events = body["events"].as_array().expect("events array").clone();
            if events.is_empty() {
                return all;
            }
            after = body["next_after"].as_i64().expect("next_after");
            all.extend(events);
        }
    }

    /// The recorded leave reason of `identity` in the room's event log (waits for the
    /// recorder).
    pub async fn leave_reason(&self, room_id: &str, identity: &str) -> String {
        eventually(&format!("{identity}'s participant_left"), || async {
            let events = self.all_events(room_id).await;
            events
                .iter()
                .find(|e| {
                    e["kind"] == "participant_left"
                        && e["payload"]["participant"]["identity"] == identity
                })
                .map(|left| {
                    left["payload"]["participant"]["leave_reason"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .ok_or_else(|| Value::Array(events).to_string())
        })
        .await
    }

    /// `GET /v1/sessions/{id}/participants` → the rows.
    pub async fn session_participants(&self, session_id: &str) -> Vec<Value> {
        self.get(&format!("/v1/sessions/{session_id}/participants"))
            .await
            .expect(StatusCode::OK)["participants"]
            .as_array()
            .expect("participants array")
            .clone()
    }
}

/// The kinds of `events`, in order.
pub fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The `(from, to)` of the session_state_changed events of `session_id`, in order (`from`
/// is "-" for a creation).
pub fn transitions(events: &[Value], session_id: &str) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["kind"] == "session_state_changed" && e["session_id"] == session_id)
        .map(|e| {
            (
                e["payload"]["from"].as_str().unwrap_or("-").to_owned(),
                e["payload"]["to"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

/// Asserts the events' seqs are exactly 1..=n.
pub fn assert_gapless(events: &[Value]) {
    let seqs: Vec<i64> = events
        .iter()
        .map(|e| e["seq"].as_i64().unwrap_or(-1))
        .collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(seqs, expected, "event seqs must be 1..=n without gaps");
}

/// A string field of a JSON object (panics with the object when it is missing).
pub fn id(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {value}"))
        .to_owned()
}

/// `<prefix>` + a lowercase ULID (26 Crockford base32 characters), as `ro_`/`se_`/`eg_` ids.
pub fn is_ulid_id(value: &str, prefix: &str) -> bool {
    value.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == 26
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || b"abcdefghjkmnpqrstvwxyz".contains(&b))
    })
}

/// `POST /v1/sessions/{id}/{step}` expecting 200; returns the body.
/// `live` goes live with an external egress, whose status the test reports by hand.
pub async fn step(api: &Api, session_id: &str, step: &str) -> Value {
    let path = format!("/v1/sessions/{session_id}/{step}");
    let reply = if step == "live" {
        api.post(&path, &serde_json::json!({ "external": true }))
            .await
    } else {
        api.post_empty(&path).await
    };
    reply.expect(StatusCode::OK).clone()
}

/// `POST /v1/egress/{id}/status` expecting 200; returns the egress.
pub async fn egress_status(api: &Api, egress_id: &str, body: Value) -> Value {
    api.post(&format!("/v1/egress/{egress_id}/status"), &body)
        .await
        .expect(StatusCode::OK)["egress"]
        .clone()
}

/// Leaves as livekit-client does and waits until the server closes the socket.
pub async fn leave(client: &mut Client) {
    client.leave().await;
    loop {
        match client.next_event().await {
            Event::Response(_) => {}
            Event::Closed(_) | Event::Ended(_) => return,
        }
    }
}
