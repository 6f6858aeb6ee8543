//! The `/agent` WebSocket of LiveKit Agents workers against the real binary: who may
//! register, what a worker that breaks the protocol gets, and a well-behaved worker's
//! registration and ping. Dispatch with the real `livekit-agents`: web/tests/agents.test.mjs.

mod support;

use futures_util::{SinkExt, StreamExt};
use livekit_protocol as proto;
use prost::Message as _;
use serde_json::json;
use support::{now_secs, sign, Server, DEV_SECRET};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

fn worker_token(agent: bool) -> String {
    sign(
        &json!({
            "iss": "devkey",
            "sub": "",
            "exp": now_secs() + 600,
            "nbf": now_secs(),
            "video": { "agent": agent, "canPublish": true },
        }),
        DEV_SECRET,
    )
}

fn refusal_of(result: Result<impl Sized, WsError>) -> (u16, String) {
    match result {
        Ok(_) => panic!("the /agent upgrade was accepted"),
        Err(WsError::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or(&[])).into_owned(),
        ),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_tokens_with_the_agent_grant_may_register() {
    let server = Server::start();
    let url = format!("{}/agent", server.ws);
    let (status, body) = refusal_of(tokio_tungstenite::connect_async(url.as_str()).await);
    assert_eq!(status, 401);
    assert!(body.contains("Bearer"), "{body}");
    let join_token = support::token("room", "alice", &[]);
    let (status, body) = refusal_of(
        tokio_tungstenite::connect_async(format!("{url}?access_token={join_token}")).await,
    );
    assert_eq!(status, 401);
    assert!(body.contains("agent grant"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_registers_and_is_answered_and_a_broken_one_is_closed_with_a_reason() {
    let server = Server::start();
    let url = format!("{}/agent?access_token={}", server.ws, worker_token(true));

    // Not a registration first: closed, saying what was expected.
    let (mut broken, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let ping = proto::WorkerMessage {
        message: Some(proto::worker_message::Message::Ping(proto::WorkerPing {
            timestamp: 1,
        })),
    };
    broken
        .send(Message::Binary(ping.encode_to_vec().into()))
        .await
        .unwrap();
    let mut reason = None;
    while let Some(Ok(frame)) = broken.next().await {
        if let Message::Close(frame) = frame {
            reason = frame.map(|f| f.reason.to_string());
            break;
        }
    }
    let reason = reason.expect("a close frame with a reason");
    assert!(reason.contains("RegisterWorkerRequest"), "{reason}");

    // A registration, then a ping.
    let (mut worker, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let register = proto::WorkerMessage {
        message: Some(proto::worker_message::Message::Register(
            proto::RegisterWorkerRequest {
                r#type: proto::JobType::JtRoom as i32,
                agent_name: "notes".into(),
                version: "test".into(),
                ..Default::default()
            },
        )),
    };
    worker
        .send(Message::Binary(register.encode_to_vec().into()))
        .await
        .unwrap();
    worker
        .send(Message::Binary(ping.encode_to_vec().into()))
        .await
        .unwrap();
    let mut replies = Vec::new();
    while replies.len() < 2 {
        match worker.next().await {
            Some(Ok(Message::Binary(bytes))) => replies.push(
                proto::ServerMessage::decode(bytes.as_ref())
                    .unwrap()
                    .message,
            ),
            Some(Ok(_)) => {}
            other => panic!("the worker's connection ended: {other:?}"),
        }
    }
    match &replies[0] {
        Some(proto::server_message::Message::Register(r)) => {
            assert!(r.worker_id.starts_with("AW_"), "{r:?}");
            assert_eq!(r.server_info.as_ref().unwrap().agent_protocol, 1);
        }
        other => panic!("expected the registration's answer first, got {other:?}"),
    }
    match &replies[1] {
        Some(proto::server_message::Message::Pong(p)) => assert_eq!(p.last_timestamp, 1),
        other => panic!("expected a pong, got {other:?}"),
    }

    // Garbage after registering: closed as unsupported data.
    worker
        .send(Message::Binary(vec![0xff, 0xff, 0xff].into()))
        .await
        .unwrap();
    loop {
        match worker.next().await {
            Some(Ok(Message::Close(frame))) => {
                let frame = frame.expect("a close code");
                assert_eq!(u16::from(frame.code), 1003);
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}
