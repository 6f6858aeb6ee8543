//! `GET /v1/nodes`: the cluster's nodes as the store records them, with their liveness
//! judged against this node's `cluster.node_timeout`. Every node answers the same (one
//! table), give or take heartbeats landing between two reads.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::auth::{Caller, Need};
use super::problem::Problem;
use super::AppState;
use crate::control::now;
use crate::store::NodeRecord;

pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, Problem> {
    // Reading every node is reading the whole deployment: the grant that lists every room.
    caller.require(Need::List)?;
    let nodes = state
        .control
        .store
        .list_nodes(now(), state.node_timeout)
        .await?;
    Ok(Json(json!({
        "node_id": state.control.node_id,
        "nodes": nodes.iter().map(node_json).collect::<Vec<_>>(),
    })))
}

fn node_json(node: &NodeRecord) -> Value {
    json!({
        "node_id": node.node_id,
        "state": node.state,
        "alive": node.alive,
        "http_url": node.http_url,
        "public_url": node.public_url,
        "max_rooms": node.max_rooms,
        "rooms": node.load.rooms,
        "participants": node.load.participants,
        "started_at": node.started_at,
        "heartbeat_at": node.heartbeat_at,
        "released_at": node.released_at,
    })
}

/// `POST /v1/node/drain`: the answering node drains (docs/cluster.md#drain) and stops once
/// its rooms are empty or its `cluster.drain_timeout` has passed. 202 with what it still
/// serves; asking again changes nothing.
pub async fn drain(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<(StatusCode, Json<Value>), Problem> {
    // Stopping a node is acting on every room it serves: the grants of a deployment admin.
    caller.require(Need::Create)?;
    caller.require(Need::List)?;
    let first = state.drain.request();
    if first {
        tracing::info!("drain requested through the API");
    }
    let rooms = state.signaling.live_rooms();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "node_id": state.control.node_id,
            "state": "draining",
            "already_draining": !first,
            "rooms": rooms.len(),
            "participants": state.signaling.participant_count(),
            "drain_timeout_secs": state.drain.timeout().as_secs(),
        })),
    ))
}
