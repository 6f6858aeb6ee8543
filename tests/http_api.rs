//! The HTTP side of signaling and the `/v1` token API against the real binary: token
//! refusals on `/rtc/validate` and on the `/rtc` upgrade, the v1 fallback, `HEAD /`, CORS,
//! and host / dev token minting.

mod support;

use livekit_protocol as proto;
use reqwest::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{join_claims, now_secs, rtc_url, sign, unsigned, Client, Resp, Server, DEV_SECRET};
use tokio_tungstenite::tungstenite::Error as WsError;

const ORIGIN: &str = "https://app.example.com";

/// A refused token: its name, the token, the status, and a word the body must contain.
struct Refused {
    case: &'static str,
    token: String,
    status: StatusCode,
    says: &'static str,
}

fn refused_tokens() -> Vec<Refused> {
    let room = "refusals";
    let mut expired = join_claims(room, "alice");
    expired["nbf"] = json!(now_secs() - 7200);
    expired["exp"] = json!(now_secs() - 3600);
    let mut early = join_claims(room, "alice");
    early["nbf"] = json!(now_secs() + 3600);
    early["exp"] = json!(now_secs() + 7200);
    let mut no_join = join_claims(room, "alice");
    no_join["video"] = json!({ "room": room });
    let mut no_room = join_claims(room, "alice");
    no_room["video"] = json!({ "room": "", "roomJoin": true });
    vec![
        Refused {
            case: "bad secret",
            token: sign(&join_claims(room, "alice"), "not-the-secret"),
            status: StatusCode::UNAUTHORIZED,
            says: "signature",
        },
        Refused {
            case: "expired",
            token: sign(&expired, DEV_SECRET),
            status: StatusCode::UNAUTHORIZED,
            says: "expired",
        },
        Refused {
            case: "nbf in the future",
            token: sign(&early, DEV_SECRET),
            status: StatusCode::UNAUTHORIZED,
            says: "not valid before",
        },
        Refused {
            case: "alg none",
            token: unsigned(&join_claims(room, "alice")),
            status: StatusCode::UNAUTHORIZED,
            says: "none",
        },
        Refused {
            case: "no roomJoin",
            token: sign(&no_join, DEV_SECRET),
            status: StatusCode::FORBIDDEN,
            says: "roomJoin",
        },
        Refused {
            case: "empty room",
            token: sign(&no_room, DEV_SECRET),
            status: StatusCode::FORBIDDEN,
            says: "room",
        },
        Refused {
            case: "no token",
            token: String::new(),
            status: StatusCode::UNAUTHORIZED,
            says: "token",
        },
    ]
}

fn http() -> reqwest::Client {
    support::api::http_client()
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_accepts_good_tokens_and_explains_refusals() {
    let server = Server::start();
    let client = http();
    let validate = format!("{}/rtc/validate", server.http);

    let good = support::token("refusals", "alice", &[]);
    let response = client
        .get(&validate)
        .query(&[("access_token", good.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // A hand-signed token with the dev secret is as good as a CLI one.
    let by_hand = sign(&join_claims("refusals", "bob"), DEV_SECRET);
    let response = client
        .get(&validate)
        .query(&[("access_token", by_hand.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // LiveKit's Rust core (its Python, Node and native SDKs) sends the token as a header.
    let response = client
        .get(&validate)
        .bearer_auth(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // A header and a query parameter: the header is the one read.
    let response = client
        .get(&validate)
        .bearer_auth(&good)
        .query(&[("access_token", "garbage")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    for refused in refused_tokens() {
        for in_header in [false, true] {
            let mut request = client.get(&validate);
            if !refused.token.is_empty() {
                request = if in_header {
                    request.bearer_auth(&refused.token)
                } else {
                    request.query(&[("access_token", refused.token.as_str())])
                };
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            let case = format!("{} (in the header: {in_header})", refused.case);
            assert_eq!(status, refused.status, "{case}: body {body:?}");
            assert!(
                body.contains(refused.says),
                "{case}: the body must mention {:?}: {body:?}",
                refused.says
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rtc_upgrade_is_refused_with_the_same_status() {
    let server = Server::start();
    for refused in refused_tokens() {
        let url = rtc_url(&server.ws, &refused.token, "");
        match Client::connect(&url).await {
            Ok(_) => panic!("{}: the upgrade was accepted", refused.case),
            Err(WsError::Http(response)) => {
                assert_eq!(response.status(), refused.status, "{}", refused.case);
                let body =
                    String::from_utf8_lossy(response.body().as_deref().unwrap_or(&[])).into_owned();
                assert!(
                    body.contains(refused.says),
                    "{}: the refusal body must mention {:?}: {body:?}",
                    refused.case,
                    refused.says
                );
            }
            Err(other) => panic!("{}: expected an HTTP refusal, got {other}", refused.case),
        }
    }
    // And a good token still gets in.
    let (mut alice, _) = server.join("refusals", "alice", &[]).await;
    alice.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_token_without_a_websocket_handshake_is_told_what_is_missing() {
    let server = Server::start();
    let token = support::token("handshake", "alice", &[]);
    // GET /rtc with a good token and `headers`: the status, the headers and the body.
    let get = |headers: &'static [(&'static str, &'static str)]| {
        let request = support::api::http_client()
            .get(format!("{}/rtc", server.http))
            .query(&[("access_token", token.as_str())]);
        async move {
            let mut request = request;
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = request.send().await.unwrap();
            let (status, headers) = (response.status(), response.headers().clone());
            (status, headers, response.text().await.unwrap())
        }
    };

    // A plain GET (a person pasting the URL into a browser).
    let (status, _, body) = get(&[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("WebSocket upgrade") && body.contains("Upgrade: websocket"),
        "{body:?}"
    );

    // A handshake of another WebSocket version: 426 naming the one spoken here.
    let (status, headers, body) = get(&[
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "8"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ])
    .await;
    assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
    assert_eq!(headers["sec-websocket-version"], "13");
    assert!(
        body.contains("Sec-WebSocket-Version must be 13"),
        "{body:?}"
    );

    // No key.
    let (status, _, body) = get(&[
        ("Connection", "keep-alive, Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
    ])
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Sec-WebSocket-Key"), "{body:?}");

    // The same token then joins: nothing was used up by the refusals.
    let (mut alice, _) = Client::join(&server.ws, &token).await;
    alice.assert_alive().await;
}

/// A v1 `join_request`: a plain `WrappedJoinRequest` in URL-safe base64, with `offer` as the
/// publisher offer (id 7).
fn join_request(offer: Option<String>) -> String {
    use base64::Engine as _;
    use prost::Message as _;
    let request = proto::JoinRequest {
        connection_settings: Some(proto::ConnectionSettings {
            auto_subscribe: true,
            ..Default::default()
        }),
        publisher_offer: offer.map(|sdp| proto::SessionDescription {
            r#type: "offer".into(),
            sdp,
            id: 7,
            ..Default::default()
        }),
        ..Default::default()
    };
    let wrapped = proto::WrappedJoinRequest {
        compression: 0,
        join_request: request.encode_to_vec(),
    };
    base64::engine::general_purpose::URL_SAFE.encode(wrapped.encode_to_vec())
}

/// A single-PC client's first offer: receive lines and a data channel, as livekit-client's.
fn single_pc_offer() -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::builder().build(std::time::Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_channel("_reliable".into());
    let (offer, _) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_joins_with_its_offer_answered_after_the_join_response() {
    let server = Server::start();
    let token = support::token("v1", "alice", &[]);
    let url = format!(
        "{}/rtc/v1?access_token={token}&join_request={}",
        server.ws,
        join_request(Some(single_pc_offer()))
    );
    let mut alice = Client::connect(&url).await.expect("upgrade to /rtc/v1");
    let join = alice
        .expect("the JoinResponse", |r| match r {
            Resp::Join(join) => Some(join.clone()),
            _ => None,
        })
        .await;
    assert!(!join.subscriber_primary);
    let answer = alice
        .expect("the answer", |r| match r {
            Resp::Answer(answer) => Some(answer.clone()),
            _ => None,
        })
        .await;
    assert_eq!(answer.id, 7, "the answer names the offer's id");
    // Nothing is received yet: both receive lines are answered inactive.
    assert_eq!(
        answer.sdp.matches("a=inactive").count(),
        2,
        "{}",
        answer.sdp
    );
    assert!(answer.mid_to_track_id.is_empty());
    alice.assert_alive().await;

    // A join request that cannot be read is refused before the upgrade, saying why.
    let client = http();
    for (param, says) in [
        (None, "needs a join_request"),
        (Some("not base64!".to_owned()), "not URL-safe base64"),
    ] {
        let mut query = vec![("access_token", token.clone())];
        query.extend(param.map(|p| ("join_request", p)));
        for path in ["/rtc/v1", "/rtc/v1/validate"] {
            let response = client
                .get(format!("{}{path}", server.http))
                .query(&query)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
            let body = response.text().await.unwrap();
            assert!(body.contains(says), "{path}: {body}");
        }
    }
    let response = client
        .get(format!("{}/rtc/v1/validate", server.http))
        .query(&[("join_request", join_request(None))])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_switched_off_is_refused_so_clients_fall_back_and_cors_answers_listed_origins() {
    let server = Server::start_with(&["--cors-origin", ORIGIN, "--rtc-single-pc", "off"]);
    let client = http();
    let token = support::token("fallback", "alice", &[]);
    let request = join_request(None);

    let response = client
        .get(format!("{}/rtc/v1", server.http))
        .query(&[("access_token", token.as_str()), ("join_request", &request)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let response = client
        .get(format!("{}/rtc/v1/validate", server.http))
        .query(&[("access_token", token.as_str()), ("join_request", &request)])
        .header("Origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let allowed = response
        .headers()
        .get(ACCESS_CONTROL_ALLOW_ORIGIN)
        .expect("the v1 validate 404 must carry access-control-allow-origin");
    assert!(allowed == "*" || allowed == ORIGIN, "{allowed:?}");

    // A WebSocket upgrade on /rtc/v1 is refused too.
    let url = format!(
        "{}/rtc/v1?access_token={token}&join_request={request}",
        server.ws
    );
    match Client::connect(&url).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 404),
        Err(other) => panic!("expected a 404 refusal, got {other}"),
        Ok(_) => panic!("the /rtc/v1 upgrade was accepted"),
    }

    let response = client.head(&server.http).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "HEAD / is livekit's probe"
    );

    let response = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/rtc/validate", server.http),
        )
        .header("Origin", ORIGIN)
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "preflight: {}",
        response.status()
    );
    let allowed = response
        .headers()
        .get(ACCESS_CONTROL_ALLOW_ORIGIN)
        .expect("the preflight allows the origin");
    assert!(allowed == "*" || allowed == ORIGIN, "{allowed:?}");

    // The validate answer itself is readable cross-origin.
    let response = client
        .get(format!("{}/rtc/validate", server.http))
        .query(&[("access_token", token.as_str())])
        .header("Origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
}

/// Checks an RFC 9457 problem answer and returns its detail.
async fn problem(response: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/problem+json"),
        "content type {content_type:?}"
    );
    let body: Value = response.json().await.expect("problem JSON");
    assert_eq!(body["status"], status.as_u16());
    let detail = body["detail"].as_str().expect("a detail").to_owned();
    assert!(!detail.is_empty());
    detail
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_mint_join_tokens_over_http() {
    let server = Server::start();
    let client = http();
    let url = format!("{}/v1/rooms/class-7/tokens", server.http);
    let body = json!({ "identity": "student-1", "name": "Student One" });

    let admin = support::token("anything", "backend", &["--admin"]);
    let response = client
        .post(&url)
        .bearer_auth(&admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let minted: Value = response.json().await.unwrap();
    assert_eq!(minted["room_id"], "class-7");
    assert_eq!(minted["identity"], "student-1");
    let url_field = minted["url"].as_str().expect("url");
    assert!(url_field.starts_with("ws"), "a WebSocket URL: {url_field}");
    let token = minted["token"].as_str().expect("token").to_owned();
    let claims = support::jwt_payload(&token);
    assert_eq!(claims["sub"], "student-1");
    assert_eq!(claims["video"]["room"], "class-7");
    assert_eq!(claims["video"]["roomJoin"], true);

    let response = client
        .get(format!("{}/rtc/validate", server.http))
        .query(&[("access_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the minted token joins");
    let (_student, join) = Client::join(&server.ws, &token).await;
    let me = join.participant.unwrap();
    assert_eq!(me.identity, "student-1");
    assert_eq!(me.name, "Student One");

    let response = client.post(&url).json(&body).send().await.unwrap();
    let detail = problem(response, StatusCode::UNAUTHORIZED).await;
    assert!(detail.contains("Authorization"), "{detail}");

    let plain = support::token("class-7", "student-2", &[]);
    let response = client
        .post(&url)
        .bearer_auth(&plain)
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::FORBIDDEN).await;

    let bad_secret = sign(&join_claims("class-7", "x"), "wrong");
    let response = client
        .post(&url)
        .bearer_auth(&bad_secret)
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::UNAUTHORIZED).await;

    let response = client
        .post(format!("{}/v1/rooms/bad.room/tokens", server.http))
        .bearer_auth(&admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    let detail = problem(response, StatusCode::BAD_REQUEST).await;
    assert!(detail.contains("bad.room"), "{detail}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_mode_serves_tokens_to_the_demo_page() {
    let server = Server::start();
    let client = http();
    let response = client
        .post(format!("{}/v1/dev/token", server.http))
        .json(&json!({ "room_id": "demo", "name": "Ada Lovelace" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let minted: Value = response.json().await.unwrap();
    assert_eq!(minted["room_id"], "demo");
    let identity = minted["identity"].as_str().expect("identity").to_owned();
    let token = minted["token"].as_str().expect("token").to_owned();

    let (_ada, join) = Client::join(&server.ws, &token).await;
    let me = join.participant.unwrap();
    assert_eq!(me.identity, identity);
    assert_eq!(me.name, "Ada Lovelace");
    assert_eq!(join.room.unwrap().name, "demo");

    let response = client
        .post(format!("{}/v1/dev/token", server.http))
        .json(&json!({ "room_id": "no spaces" }))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::BAD_REQUEST).await;
}
