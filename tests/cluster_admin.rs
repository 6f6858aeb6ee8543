//! Admin calls give the same answer from every node and act on a room wherever it runs: two
//! real nodes on one PostgreSQL database, a participant on node A, and the `/v1` API and
//! Twirp `RoomService` used through node B, which relays what concerns A's room to A. When A
//! dies, B says so at once (503) instead of hanging, while A's lease lasts.

mod support;

use std::time::{Duration, Instant};

use livekit_protocol as proto;
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::api::{admin_token, http_client, Api};
use support::cluster::{lease_holder, reader, start, until_another_node_has_rooms};
use support::postgres::TestDatabase;
use support::{Resp, Server};

const FORWARDED_BY: &str = "x-switchboard-forwarded-by";

/// A Twirp `RoomService` call with a JSON body: (status, body as JSON).
async fn twirp(server: &Server, token: &str, method: &str, body: &Value) -> (StatusCode, Value) {
    let reply = http_client()
        .post(format!(
            "{}/twirp/livekit.RoomService/{method}",
            server.http
        ))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("Twirp {method}: {e}"));
    let status = reply.status();
    (status, reply.json().await.unwrap_or(Value::Null))
}

/// `ListParticipants` in protobuf, as the server SDKs may send it.
async fn participants_protobuf(server: &Server, token: &str, room: &str) -> Vec<String> {
    let request = proto::ListParticipantsRequest {
        room: room.to_owned(),
    };
    let reply = http_client()
        .post(format!(
            "{}/twirp/livekit.RoomService/ListParticipants",
            server.http
        ))
        .bearer_auth(token)
        .header("content-type", "application/protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .expect("Twirp ListParticipants in protobuf");
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(
        reply.headers()["content-type"],
        "application/protobuf",
        "the owner's content type is relayed"
    );
    let bytes = reply.bytes().await.expect("the protobuf answer");
    let decoded = proto::ListParticipantsResponse::decode(bytes.as_ref()).expect("decodes");
    decoded
        .participants
        .into_iter()
        .map(|p| p.identity)
        .collect()
}

/// The room `room` in a `GET /v1/rooms` answer.
fn listed<'a>(body: &'a Value, room: &str) -> &'a Value {
    body["rooms"]
        .as_array()
        .expect("a room list")
        .iter()
        .find(|r| r["room_id"] == room)
        .unwrap_or_else(|| panic!("{room} is listed: {body}"))
}

fn identities(participants: &Value) -> Vec<String> {
    participants
        .as_array()
        .expect("a participant list")
        .iter()
        .map(|p| p["identity"].as_str().expect("identity").to_owned())
        .collect()
}

/// Asks A and then B until A's answer passes `ready` and B's is the same (the recorder
/// writes a join's records just after it, and a track's may land between two reads);
/// returns the answer.
async fn agreed<F, Fut>(what: &str, ready: impl Fn(&Value) -> bool, ask: F) -> Value
where
    F: Fn(bool) -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (a, b) = (ask(true).await, ask(false).await);
        if ready(&a) && a == b {
            return a;
        }
        assert!(Instant::now() < deadline, "{what}: B answers {b}, A {a}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_calls_through_any_node_reach_the_room_where_it_runs() {
    let db = TestDatabase::direct("admin").await;
    let pool = reader(&db).await;
    let mut node_a = start(&db, &["--node-id", "node-a"]);
    let node_b = start(&db, &["--node-id", "node-b"]);
    let token = admin_token("stage", "ops");
    let via_a = Api::new(&node_a.http, Some(&token));
    let via_b = Api::new(&node_b.http, Some(&token));

    // Alice is in `stage` on A, publishing.
    let (mut alice, _) = node_a.join("stage", "alice", &[]).await;
    let mic = alice.add_audio_track("mic").await;
    assert_eq!(
        lease_holder(&pool, "stage").await.as_deref(),
        Some("node-a")
    );

    // And Dave in `backstage` on B (the least-loaded node once A's heartbeat counts its
    // room): each node lists the other's room as its node does.
    until_another_node_has_rooms(&node_b, &token, "node-b", 1).await;
    let (_dave, _) = node_b.join("backstage", "dave", &[]).await;

    // Reads: B answers as A does.
    for path in [
        "/v1/rooms",
        "/v1/rooms/stage",
        "/v1/rooms/stage/participants",
    ] {
        let in_room = |answer: &Value, room: &str, who: &str| {
            let participants = match path {
                "/v1/rooms" => answer["rooms"]
                    .as_array()
                    .and_then(|rooms| rooms.iter().find(|r| r["room_id"] == room))
                    .map(|room| room["participants"].clone()),
                "/v1/rooms/stage" => Some(answer["room"]["participants"].clone()),
                _ => Some(answer["participants"].clone()),
            };
            participants.is_some_and(|p| p.is_array() && identities(&p) == [who])
        };
        let alice_in = |answer: &Value| {
            in_room(answer, "stage", "alice")
                && (path != "/v1/rooms" || in_room(answer, "backstage", "dave"))
        };
        agreed(path, alice_in, |on_a| {
            let api = if on_a { via_a.clone() } else { via_b.clone() };
            async move { api.get(path).await.expect(StatusCode::OK).clone() }
        })
        .await;
    }
    let path = "/v1/rooms/stage/participants";
    for (method, body) in [
        ("ListParticipants", json!({"room": "stage"})),
        ("ListRooms", json!({})),
    ] {
        let listed_stage = |answer: &Value| {
            answer["participants"].is_array()
                || answer["rooms"].as_array().is_some_and(|rooms| {
                    ["stage", "backstage"]
                        .iter()
                        .all(|name| rooms.iter().any(|r| r["name"] == *name))
                })
        };
        let answer = agreed(method, listed_stage, |on_a| {
            let (server, body, token) = (if on_a { &node_a } else { &node_b }, &body, &token);
            async move {
                let (status, answer) = twirp(server, token, method, body).await;
                assert_eq!(status, StatusCode::OK, "{method}: {answer}");
                answer
            }
        })
        .await;
        if method == "ListParticipants" {
            assert_eq!(identities(&answer["participants"]), ["alice"]);
        } else {
            let stage = answer["rooms"]
                .as_array()
                .expect("rooms")
                .iter()
                .find(|r| r["name"] == "stage")
                .expect("stage listed")
                .clone();
            assert_eq!(stage["numParticipants"], 1, "{stage}");
            assert_eq!(stage["numPublishers"], 1, "{stage}");
            let backstage = answer["rooms"]
                .as_array()
                .expect("rooms")
                .iter()
                .find(|r| r["name"] == "backstage")
                .expect("backstage listed")
                .clone();
            assert_eq!(backstage["numParticipants"], 1, "{backstage}");
        }
    }
    assert_eq!(
        participants_protobuf(&node_b, &token, "stage").await,
        ["alice"]
    );

    // A request already relayed once is answered where it lands: B, which does not run the
    // room, sees nobody in it (and does not relay it again).
    let reply = http_client()
        .get(format!("{}{path}", node_b.http))
        .bearer_auth(&token)
        .header(FORWARDED_BY, "node-x")
        .send()
        .await
        .expect("a relayed request");
    assert_eq!(reply.status(), StatusCode::OK);
    let local: Value = reply.json().await.expect("JSON");
    assert_eq!(local["participants"], json!([]), "answered by B itself");

    // Writes through B act on A's room.
    let (status, body) = twirp(
        &node_b,
        &token,
        "UpdateRoomMetadata",
        &json!({"room": "stage", "metadata": "via-b"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["metadata"], "via-b", "{body}");
    assert_eq!(
        body["numParticipants"], 1,
        "the owner's live numbers: {body}"
    );
    let room = alice
        .expect("RoomUpdate", |r| match r {
            Resp::RoomUpdate(u) => u.room.clone().filter(|room| room.metadata == "via-b"),
            _ => None,
        })
        .await;
    assert_eq!(room.name, "stage");

    // A /v1 write with a body, relayed as it came.
    let muted = via_b
        .post(
            &format!("/v1/rooms/stage/participants/alice/tracks/{mic}/mute"),
            &json!({"muted": true}),
        )
        .await;
    assert_eq!(muted.expect(StatusCode::OK)["track"]["muted"], true);
    let muted_sid = alice
        .expect("the Mute", |r| match r {
            Resp::Mute(m) => m.muted.then(|| m.sid.clone()),
            _ => None,
        })
        .await;
    assert_eq!(muted_sid, mic);

    let (status, body) = twirp(
        &node_b,
        &token,
        "RemoveParticipant",
        &json!({"room": "stage", "identity": "alice"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    alice
        .expect("the leave", |r| match r {
            Resp::Leave(leave) => Some(leave.clone()),
            _ => None,
        })
        .await;
    let from_a = via_a.get(path).await.expect(StatusCode::OK).clone();
    assert_eq!(from_a["participants"], json!([]), "gone from A");

    // Agent dispatches live in the room: created and listed through B, they are A's.
    let dispatch = |server: &Server, method: &'static str, body: Value| {
        let (url, token) = (
            format!(
                "{}/twirp/livekit.AgentDispatchService/{method}",
                server.http
            ),
            token.clone(),
        );
        async move {
            let reply = http_client()
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("a dispatch call");
            assert_eq!(reply.status(), StatusCode::OK, "{method}");
            reply.json::<Value>().await.expect("JSON")
        }
    };
    let created = dispatch(
        &node_b,
        "CreateDispatch",
        json!({"room": "stage", "agentName": "helper"}),
    )
    .await;
    let id = created["id"].as_str().expect("a dispatch id").to_owned();
    let on_a = dispatch(&node_a, "ListDispatch", json!({"room": "stage"})).await;
    assert_eq!(on_a["agentDispatches"][0]["id"], id.as_str(), "{on_a}");
    let on_b = dispatch(&node_b, "ListDispatch", json!({"room": "stage"})).await;
    assert_eq!(on_b, on_a);

    // Deleting a room through B closes it on A: everyone there is told.
    let (mut carol, _) = node_a.join("green", "carol", &[]).await;
    via_a.room_recorded("green").await;
    via_b
        .delete("/v1/rooms/green")
        .await
        .expect(StatusCode::NO_CONTENT);
    let leave = carol
        .expect("the leave", |r| match r {
            Resp::Leave(leave) => Some(leave.clone()),
            _ => None,
        })
        .await;
    assert_eq!(leave.reason, proto::DisconnectReason::RoomDeleted as i32);
    let green = via_b.get("/v1/rooms/green").await;
    assert_eq!(green.expect(StatusCode::OK)["room"]["status"], "closed");

    // A dies with someone in the room. While its lease lasts, B says at once that the
    // room's node does not answer, naming it, instead of hanging or answering wrongly.
    let (_bob, _) = node_a.join("stage", "bob", &[]).await;
    node_a.kill9();
    let asked = Instant::now();
    let reply = via_b.get(path).await;
    let took = asked.elapsed();
    eprintln!("B answered for the dead owner in {took:?}");
    let detail = reply.problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(detail.contains("node-a"), "names the node: {detail}");
    assert!(
        reply.headers.contains_key("retry-after"),
        "{:?}",
        reply.headers
    );
    assert!(took < Duration::from_secs(3), "answered in {took:?}");
    let (status, body) = twirp(
        &node_b,
        &token,
        "ListParticipants",
        &json!({"room": "stage"}),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "unavailable", "{body}");
    // A list does not fail for one unreachable node: the room shows its record.
    let listed_b = via_b.get("/v1/rooms").await.expect(StatusCode::OK).clone();
    assert_eq!(listed(&listed_b, "stage")["participants"], json!([]));
    assert_eq!(
        identities(&listed(&listed_b, "backstage")["participants"]),
        ["dave"]
    );
    pool.close().await;
}
