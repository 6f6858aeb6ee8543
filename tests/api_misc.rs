//! The rest of the `/v1` API over real HTTP: guest links (seed 004) and their rate limit,
//! transcripts, the audit log (seed 001), health checks, the OpenAPI document, and problem
//! documents from the router itself.

mod support;

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::api::{admin_token, grant_token, guest_token, host_token, template_matches, Api};
use support::{Client, Server};

/// Guest tokens allowed per client address per minute (src/http/mod.rs).
const GUEST_LIMIT: usize = 20;

fn setup() -> (Server, Api) {
    let server = Server::start();
    let api = Api::new(&server.http, Some(&admin_token("ops-room", "ops")));
    (server, api)
}

async fn create_room(api: &Api, body: Value) {
    api.post("/v1/rooms", &body)
        .await
        .expect(StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn guests_get_tokens_only_where_allowed_and_not_too_often() {
    let (server, api) = setup();
    create_room(
        &api,
        json!({ "room_id": "open-door", "guest_access": true }),
    )
    .await;
    create_room(&api, json!({ "room_id": "members-only" })).await;
    create_room(&api, json!({ "room_id": "shut", "guest_access": true })).await;
    api.delete("/v1/rooms/shut")
        .await
        .expect(StatusCode::NO_CONTENT);
    // Guest links need no credentials.
    let anyone = api.as_caller(None);
    let mut requests = 0;

    requests += 1;
    anyone
        .get("/v1/rooms/members-only/guest-token")
        .await
        .problem_saying(StatusCode::FORBIDDEN, &["members-only", "guests"]);
    requests += 1;
    anyone
        .get("/v1/rooms/nowhere/guest-token")
        .await
        .problem_saying(StatusCode::NOT_FOUND, &["nowhere"]);
    requests += 1;
    anyone
        .get("/v1/rooms/shut/guest-token")
        .await
        .problem_saying(StatusCode::PRECONDITION_FAILED, &["shut"]);
    requests += 1;
    anyone
        .get(&format!(
            "/v1/rooms/open-door/guest-token?name={}",
            "n".repeat(65)
        ))
        .await
        .problem_saying(StatusCode::BAD_REQUEST, &["name"]);

    requests += 1;
    let reply = anyone
        .get("/v1/rooms/open-door/guest-token?name=Visitor")
        .await;
    let minted = reply.expect(StatusCode::OK).clone();
    assert_eq!(minted["room_id"], "open-door");
    let identity = minted["identity"].as_str().unwrap().to_owned();
    let random = identity
        .strip_prefix("guest-open-door-")
        .unwrap_or_else(|| panic!("identity {identity:?} is not guest-<room>-<random>"));
    assert!(
        random.len() >= 6 && random.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{identity:?}"
    );
    let token = minted["token"].as_str().unwrap().to_owned();
    let claims = support::jwt_payload(&token);
    assert_eq!(claims["sub"], identity.as_str());
    assert_eq!(claims["video"]["room"], "open-door");
    assert_ne!(claims["video"]["roomAdmin"], true, "a guest is no host");
    assert_ne!(claims["video"]["roomCreate"], true);
    let validated = support::api::http_client()
        .get(format!("{}/rtc/validate", server.http))
        .query(&[("access_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(validated.status(), StatusCode::OK);
    let (_visitor, join) = Client::join(&server.ws, &token).await;
    let me = join.participant.unwrap();
    assert_eq!(me.identity, identity);
    assert_eq!(me.name, "Visitor");

    // Switching guests on makes the members-only room open to them.
    api.patch("/v1/rooms/members-only", &json!({ "guest_access": true }))
        .await
        .expect(StatusCode::OK);
    requests += 1;
    anyone
        .get("/v1/rooms/members-only/guest-token")
        .await
        .expect(StatusCode::OK);

    // Every request counts against the address, refused ones too.
    let mut seen = vec![identity];
    while requests < GUEST_LIMIT {
        requests += 1;
        let reply = anyone.get("/v1/rooms/open-door/guest-token").await;
        seen.push(
            reply.expect(StatusCode::OK)["identity"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "every guest gets a new identity"
    );
    let reply = anyone.get("/v1/rooms/open-door/guest-token").await;
    reply.problem_saying(StatusCode::TOO_MANY_REQUESTS, &["retry"]);
    let retry: u64 = reply
        .headers
        .get(RETRY_AFTER)
        .expect("a 429 says when to come back")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    api.assert_documented().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transcripts_are_upserted_until_final_and_listed_in_order() {
    let (_server, api) = setup();
    create_room(&api, json!({ "room_id": "lecture" })).await;
    let session = api
        .post("/v1/sessions", &json!({ "room_id": "lecture" }))
        .await;
    let session_id = session.expect(StatusCode::CREATED)["session"]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/sessions/{session_id}/transcripts");
    let segment = |id: &str, text: &str, is_final: bool, start: i64, end: i64| {
        json!({
            "segment_id": id,
            "participant_identity": "prof",
            "text": text,
            "language": "en",
            "final": is_final,
            "start_ms": start,
            "end_ms": end,
        })
    };
    let post = |body: Value| {
        let api = api.clone();
        let path = path.clone();
        async move { api.post(&path, &body).await.expect(StatusCode::OK)["segment"].clone() }
    };

    let first = post(segment("seg-2", "Hello", false, 2000, 2400)).await;
    assert_eq!(first["text"], "Hello");
    assert_eq!(first["is_final"], false);
    assert_eq!(first["session_id"], session_id.as_str());
    let updated = post(segment("seg-2", "Hello wor", false, 2000, 2800)).await;
    assert_eq!(updated["text"], "Hello wor");
    assert_eq!(updated["end_ms"], 2800);
    assert_eq!(
        updated["created_at"], first["created_at"],
        "updated in place"
    );
    let last = post(segment("seg-2", "Hello world.", true, 2000, 3000)).await;
    assert_eq!(last["is_final"], true);
    assert_eq!(last["text"], "Hello world.");
    // A late interim version does not undo the final one.
    let late = post(segment("seg-2", "Hello wrong", false, 2000, 2900)).await;
    assert_eq!(late["text"], "Hello world.");
    assert_eq!(late["is_final"], true);
    post(segment("seg-1", "Good morning.", true, 0, 1500)).await;
    post(segment("seg-3", "Let us", false, 3100, 3500)).await;

    // Members of the room may read them; in start order.
    let member = api.as_caller(Some(&guest_token("lecture", "student")));
    let listed = member.get(&path).await;
    let listed = listed.expect(StatusCode::OK)["segments"]
        .as_array()
        .unwrap()
        .clone();
    let summary: Vec<(&str, &str, bool)> = listed
        .iter()
        .map(|s| {
            (
                s["segment_id"].as_str().unwrap(),
                s["text"].as_str().unwrap(),
                s["is_final"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("seg-1", "Good morning.", true),
            ("seg-2", "Hello world.", true),
            ("seg-3", "Let us", false),
        ]
    );

    api.post(&path, &segment("seg-9", "backwards", false, 5000, 4000))
        .await
        .problem_saying(StatusCode::BAD_REQUEST, &["end_ms"]);
    api.post(&path, &segment(" ", "no id", false, 0, 10))
        .await
        .problem_saying(StatusCode::BAD_REQUEST, &["segment_id"]);
    api.post(&path, &json!({ "text": "only text" }))
        .await
        .bad_body(&["missing field"]);
    api.post(
        "/v1/sessions/se_nope/transcripts",
        &segment("a", "b", false, 0, 1),
    )
    .await
    .problem_saying(StatusCode::NOT_FOUND, &["se_nope"]);
    api.get("/v1/sessions/se_nope/transcripts")
        .await
        .problem_saying(StatusCode::NOT_FOUND, &["se_nope"]);
    member
        .post(&path, &segment("seg-4", "forged", true, 4000, 4100))
        .await
        .problem(StatusCode::FORBIDDEN);
    api.as_caller(Some(&guest_token("other-room", "x")))
        .get(&path)
        .await
        .problem(StatusCode::FORBIDDEN);
    api.assert_documented().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_says_who_did_what_newest_first() {
    let (_server, api) = setup();
    create_room(&api, json!({ "room_id": "audited" })).await;
    let lister = api.as_caller(Some(&grant_token("lister", json!({ "roomList": true }))));
    lister
        .post("/v1/rooms", &json!({ "room_id": "sneaky" }))
        .await
        .problem(StatusCode::FORBIDDEN);
    api.post("/v1/sessions", &json!({ "room_id": "nowhere" }))
        .await
        .problem(StatusCode::NOT_FOUND);
    api.patch("/v1/rooms/audited", &json!({ "metadata": "m" }))
        .await
        .expect(StatusCode::OK);

    let entries = api.get("/v1/audit").await;
    let entries = entries.expect(StatusCode::OK)["entries"]
        .as_array()
        .unwrap()
        .clone();
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let summary: Vec<(&str, &str, &str, &str)> = entries
        .iter()
        .take(4)
        .map(|e| {
            (
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("devkey/ops", "room.update", "audited", "ok"),
            ("devkey/ops", "session.create", "nowhere", "error"),
            ("devkey/lister", "room.create", "sneaky", "denied"),
            ("devkey/ops", "room.create", "audited", "ok"),
        ]
    );
    for entry in entries.iter().take(4) {
        assert_eq!(entry["remote_addr"], "127.0.0.1", "{entry}");
        assert!(entry["at"].is_string(), "{entry}");
    }
    let denied = &entries[2];
    assert!(
        denied["detail"]
            .as_str()
            .is_some_and(|d| d.contains("roomCreate")),
        "a refusal keeps its reason: {denied}"
    );

    let page = api.get("/v1/audit?limit=2").await;
    assert_eq!(
        page.expect(StatusCode::OK)["entries"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let older = api.get(&format!("/v1/audit?before={}", ids[1])).await;
    let older = older.expect(StatusCode::OK)["entries"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(older.as_slice(), &entries[2..]);
    api.as_caller(Some(&host_token("audited", "host")))
        .get("/v1/audit")
        .await
        .problem_saying(StatusCode::FORBIDDEN, &["roomList"]);
    api.as_caller(None)
        .get("/v1/audit")
        .await
        .problem(StatusCode::UNAUTHORIZED);
    api.assert_documented().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_and_the_router_answer_in_kind() {
    let (_server, api) = setup();
    let anyone = api.as_caller(None);
    let alive = anyone.get("/healthz").await;
    assert_eq!(alive.status, StatusCode::OK);
    let ready = anyone.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    api.assert_documented().await;
    // Deliberately undocumented calls, on a client of their own.
    let stray = Api::new(&api.base, None);
    stray
        .get("/v1/no-such-thing")
        .await
        .problem_saying(StatusCode::NOT_FOUND, &["openapi.json"]);
    // A known path with the wrong method is a problem document too.
    stray
        .call(Method::PUT, "/v1/rooms", Some(&json!({})))
        .await
        .problem(StatusCode::METHOD_NOT_ALLOWED);
}

/// Every (method, path, statuses) the API tests call and observe.
const CALLED: &[(&str, &str, &[u16])] = &[
    ("POST", "/v1/rooms", &[200, 201, 400, 401, 403]),
    ("GET", "/v1/rooms", &[200, 400, 401, 403]),
    ("GET", "/v1/rooms/{room_id}", &[200, 403, 404]),
    ("PATCH", "/v1/rooms/{room_id}", &[200, 403, 404]),
    ("DELETE", "/v1/rooms/{room_id}", &[204, 403, 404]),
    ("GET", "/v1/rooms/{room_id}/participants", &[200, 404]),
    (
        "DELETE",
        "/v1/rooms/{room_id}/participants/{identity}",
        &[204, 403, 404],
    ),
    (
        "POST",
        "/v1/rooms/{room_id}/participants/{identity}/tracks/{track_sid}/mute",
        &[200, 403, 404],
    ),
    ("POST", "/v1/rooms/{room_id}/tokens", &[200, 400, 403]),
    (
        "GET",
        "/v1/rooms/{room_id}/guest-token",
        &[200, 400, 403, 404, 412, 429],
    ),
    ("GET", "/v1/rooms/{room_id}/events", &[200, 400, 403, 404]),
    ("POST", "/v1/sessions", &[201, 401, 403, 404, 409, 412]),
    ("GET", "/v1/sessions", &[200, 400, 404]),
    ("GET", "/v1/sessions/{session_id}", &[200, 403, 404]),
    ("POST", "/v1/sessions/{session_id}/live", &[200, 404, 409]),
    ("POST", "/v1/sessions/{session_id}/end", &[200, 409]),
    ("POST", "/v1/sessions/{session_id}/cancel", &[200, 409]),
    (
        "GET",
        "/v1/sessions/{session_id}/participants",
        &[200, 403, 404],
    ),
    (
        "POST",
        "/v1/sessions/{session_id}/transcripts",
        &[200, 400, 403, 404],
    ),
    (
        "GET",
        "/v1/sessions/{session_id}/transcripts",
        &[200, 403, 404],
    ),
    ("GET", "/v1/egress", &[200]),
    ("GET", "/v1/egress/{egress_id}", &[200]),
    ("POST", "/v1/egress/{egress_id}/status", &[200, 404, 409]),
    ("GET", "/v1/audit", &[200, 401, 403]),
    // tests/cluster_drain.rs (403; 202 through `switchboard drain`).
    ("POST", "/v1/node/drain", &[202, 403]),
    ("GET", "/v1/openapi.json", &[200]),
    ("GET", "/healthz", &[200]),
    ("GET", "/readyz", &[200]),
];

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_every_call_the_tests_make() {
    let (_server, api) = setup();
    let reply = api.as_caller(None).get("/v1/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    let content_type = reply.headers[CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let doc: Value = serde_json::from_str(&reply.text).expect("the OpenAPI document is JSON");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "an OpenAPI 3 document"
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().expect("paths");
    let mut missing = Vec::new();
    for (method, path, statuses) in CALLED {
        let op = paths
            .get(*path)
            .and_then(|ops| ops.get(method.to_lowercase()));
        let Some(op) = op else {
            missing.push(format!("{method} {path}"));
            continue;
        };
        let responses = op["responses"].as_object().expect("responses");
        for status in *statuses {
            if !responses.contains_key(&status.to_string()) && !responses.contains_key("default") {
                missing.push(format!("{method} {path} → {status}"));
            }
        }
    }
    assert!(missing.is_empty(), "not documented: {missing:#?}");
    // Each listed call is a real template (the helper's matching agrees).
    for (_, path, _) in CALLED {
        assert!(template_matches(path, path));
    }
    api.assert_documented().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_request_bodies_are_documented() {
    let (_server, api) = setup();
    // A body of the right syntax but the wrong shape: whatever status the server picks for it
    // must be one the document lists for that operation.
    let reply = api.post("/v1/rooms", &json!({ "room_id": 7 })).await;
    reply.bad_body(&["room_id"]);
    let doc = api.get("/v1/openapi.json").await.body;
    let responses = doc["paths"]["/v1/rooms"]["post"]["responses"]
        .as_object()
        .unwrap()
        .clone();
    assert!(
        responses.contains_key(reply.status.as_str()),
        "POST /v1/rooms answers {} to a malformed body, which the OpenAPI document does not list \
         ({:?})",
        reply.status,
        responses.keys().collect::<Vec<_>>()
    );
}
