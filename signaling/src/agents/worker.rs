//! The `/agent` WebSocket: one LiveKit Agents worker, speaking binary protobuf
//! `WorkerMessage`s and `ServerMessage`s. The worker authenticates with a token carrying the
//! `agent` grant (refused with 401 before the upgrade otherwise), registers first, then
//! reports its load and its jobs' status and answers job offers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use livekit_protocol as proto;
use prost::Message as _;
use proto::server_message::Message as ServerMsg;
use proto::worker_message::Message as WorkerMsg;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::{Worker, MAX_AGENT_NAME, WORKER_QUEUE};
use crate::websocket::{self, CloseFrame, Message, SignalSocket};
use crate::{credentials, ids, Signaling};

/// The worker's first message, its registration, must come within this.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// A worker sends its status every 2.5 s: this long without a frame is a dead worker.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(60);
/// The agent protocol version this server speaks (ServerInfo.agent_protocol).
const AGENT_PROTOCOL: i32 = 1;

fn refuse(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

async fn agent(
    State(sig): State<Arc<Signaling>>,
    Query(params): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    let Some(raw) = credentials::join_token(request.headers(), &params) else {
        return refuse(StatusCode::UNAUTHORIZED, credentials::MISSING.into());
    };
    let claims = match sig.verify(raw) {
        Ok(claims) => claims,
        Err(e) => {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            return refuse(status, e.to_string());
        }
    };
    if !claims.video.agent {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "an agent worker's token needs the agent grant (video.agent: true)".into(),
        );
    }
    let accepted = match websocket::accept(request) {
        Ok(accepted) => accepted,
        Err(refusal) => return refusal.into_response(),
    };
    let upgrade = accepted.upgrade;
    tokio::spawn(async move {
        match SignalSocket::upgraded(upgrade).await {
            Ok(socket) => serve(sig, socket, claims.iss).await,
            Err(e) => debug!("an /agent connection closed during the upgrade: {e}"),
        }
    });
    accepted.response
}

pub(crate) fn router(sig: Arc<Signaling>) -> Router {
    Router::new().route("/agent", get(agent)).with_state(sig)
}

async fn send(ws: &mut SignalSocket, message: ServerMsg) -> bool {
    let bytes = proto::ServerMessage {
        message: Some(message),
    }
    .encode_to_vec();
    ws.send(Bytes::from(bytes)).await.is_ok()
}

async fn close(ws: &mut SignalSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: code.into(),
        reason: reason.to_owned().into(),
    };
    ws.close(Some(frame)).await;
}

/// The next WorkerMessage; `Err` with a close reason when the worker broke the protocol or left.
async fn next(ws: &mut SignalSocket) -> Result<Option<WorkerMsg>, &'static str> {
    match ws.recv().await {
        Some(Ok(Message::Binary(bytes))) => proto::WorkerMessage::decode(bytes.as_ref())
            .map(|m| m.message)
            .map_err(|_| "malformed WorkerMessage"),
        Some(Ok(Message::Text(_))) => {
            Err("text frames are not supported: send binary WorkerMessage frames")
        }
        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Err("closed"),
        Some(Ok(_)) => Ok(None),
    }
}

async fn serve(sig: Arc<Signaling>, mut ws: SignalSocket, api_key: String) {
    let register = match tokio::time::timeout(REGISTER_TIMEOUT, next(&mut ws)).await {
        Ok(Ok(Some(WorkerMsg::Register(register)))) => register,
        Ok(Err("closed")) => return,
        _ => {
            close(
                &mut ws,
                1008,
                "the first message must be a RegisterWorkerRequest, within 10 s",
            )
            .await;
            return;
        }
    };
    if register.agent_name.len() > MAX_AGENT_NAME {
        close(&mut ws, 1008, "the agent name is longer than 128 bytes").await;
        return;
    }
    let id = ids::worker_id();
    let (tx, mut rx) = mpsc::channel(WORKER_QUEUE);
    let worker = Worker {
        agent_name: register.agent_name.clone(),
        job_type: register.r#type,
        permissions: register
            .allowed_permissions
            .clone()
            .unwrap_or_else(default_permissions),
        api_key,
        available: true,
        load: 0.0,
        tx,
    };
    if sig.agents.register(id.clone(), worker).is_none() {
        close(
            &mut ws,
            1013,
            "this server has its maximum of agent workers registered",
        )
        .await;
        return;
    }
    info!(worker = %id, agent_name = %register.agent_name, version = %register.version, "agent worker registered");
    let response = ServerMsg::Register(proto::RegisterWorkerResponse {
        worker_id: id.clone(),
        server_info: Some(proto::ServerInfo {
            edition: proto::server_info::Edition::Standard as i32,
            version: sig.server_version.clone(),
            protocol: 16,
            agent_protocol: AGENT_PROTOCOL,
            node_id: sig.node_id.clone(),
            ..Default::default()
        }),
        ..Default::default()
    });
    if send(&mut ws, response).await {
        run(&sig, &mut ws, &id, &mut rx).await;
    }
    sig.agents.unregister(&id);
    info!(worker = %id, "agent worker left");
}

async fn run(
    sig: &Signaling,
    ws: &mut SignalSocket,
    id: &str,
    rx: &mut mpsc::Receiver<proto::ServerMessage>,
) {
    loop {
        tokio::select! {
            message = tokio::time::timeout(SILENCE_TIMEOUT, next(ws)) => match message {
                Err(_) => {
                    close(ws, 1000, "no message from the worker for 60 s").await;
                    return;
                }
                Ok(Err("closed")) => return,
                Ok(Err(reason)) => {
                    close(ws, 1003, reason).await;
                    return;
                }
                Ok(Ok(None)) => {}
                Ok(Ok(Some(message))) => {
                    if let Some(reply) = handle(sig, id, message) {
                        if !send(ws, reply).await {
                            return;
                        }
                    }
                }
            },
            Some(out) = rx.recv() => {
                if ws.send(Bytes::from(out.encode_to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn handle(sig: &Signaling, id: &str, message: WorkerMsg) -> Option<ServerMsg> {
    match message {
        WorkerMsg::Availability(answer) => sig.agents.answered(answer),
        WorkerMsg::UpdateWorker(status) => {
            let available = status.status != Some(proto::WorkerStatus::WsFull as i32);
            sig.agents.worker_status(id, available, status.load);
        }
        WorkerMsg::UpdateJob(update) => sig.agents.job_status(&update),
        WorkerMsg::Ping(ping) => {
            return Some(ServerMsg::Pong(proto::WorkerPong {
                last_timestamp: ping.timestamp,
                timestamp: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64),
            }))
        }
        // Jobs of a worker that reconnected keep running in their rooms; there is no other
        // node to move them to.
        WorkerMsg::MigrateJob(migrate) => {
            debug!(worker = %id, jobs = ?migrate.job_ids, "job migration asked; the jobs stay");
        }
        WorkerMsg::Register(_) => debug!(worker = %id, "a second registration ignored"),
        WorkerMsg::SimulateJob(_) => debug!(worker = %id, "simulated jobs are not run here"),
    }
    None
}

/// What agents may do when their worker registered without saying.
fn default_permissions() -> proto::ParticipantPermission {
    proto::ParticipantPermission {
        can_subscribe: true,
        can_publish: true,
        can_publish_data: true,
        can_update_metadata: true,
        ..Default::default()
    }
}
