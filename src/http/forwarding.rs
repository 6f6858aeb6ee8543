//! The HTTP side of relaying admin calls to the node that runs their room
//! ([`crate::cluster::forward`]): which requests go, and what the caller gets back.
//!
//! A request is answered here when it was relayed here already, when the room is open on
//! this node (no store lookup: the common single-node case costs nothing), when its
//! credentials do not authenticate (refused here, without a store lookup for strangers), or
//! when no other node holds an unexpired lease on the room. Otherwise the owner answers.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::{debug, warn};

use super::auth::Caller;
use super::problem::Problem;
use super::twirp::TwirpError;
use super::AppState;
use crate::cluster::forward::{Outgoing, Relayed, RETRY_AFTER_SECS};
use crate::cluster::Forwarder;
use crate::store::RoomLease;

/// How a refusal reads for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// `/v1`: a problem document.
    Problem,
    /// `/twirp`: Twirp's `{code, msg}`, which LiveKit's server SDKs read.
    Twirp,
}

/// The lease of `room` when another node runs it and this request should go there.
async fn owner_for(state: &AppState, room: &str, headers: &HeaderMap) -> Option<RoomLease> {
    if Forwarder::was_forwarded(headers) || state.signaling.live_room(room).is_some() {
        return None;
    }
    state.forwarder.owner_elsewhere(room).await
}

/// Relays the request to the holder of `lease`; its answer, or a 503 naming the node.
async fn relay(
    state: &AppState,
    lease: &RoomLease,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
    dialect: Dialect,
) -> Response {
    let path_and_query = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    debug!(
        room = lease.room_id,
        node = lease.node_id,
        path = path_and_query,
        "relaying to the room's node"
    );
    let outgoing = Outgoing {
        method,
        path_and_query,
        headers,
        body,
    };
    match state.forwarder.forward(lease, outgoing).await {
        Ok(relayed) => relayed_response(relayed),
        Err(e) => {
            warn!(
                room = lease.room_id,
                node = lease.node_id,
                "relaying failed: {e}"
            );
            refuse(dialect, e.to_string())
        }
    }
}

fn relayed_response(relayed: Relayed) -> Response {
    let mut response = (relayed.status, relayed.body).into_response();
    response.headers_mut().extend(relayed.headers);
    response
}

fn refuse(dialect: Dialect, detail: String) -> Response {
    match dialect {
        Dialect::Problem => Problem::unavailable(detail, RETRY_AFTER_SECS).into_response(),
        Dialect::Twirp => {
            let mut response = TwirpError::new("unavailable", detail).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            response
        }
    }
}

/// Answers here, or relays to the node running `room` (when another node does).
async fn relay_or_run(
    state: &AppState,
    room: Option<String>,
    parts: Parts,
    body: Body,
    next: Next,
) -> Response {
    let lease = match &room {
        Some(room) if state.signaling.live_room(room).is_none() => {
            state.forwarder.owner_elsewhere(room).await
        }
        _ => None,
    };
    let Some(lease) = lease else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    // Bounded by the guard outside: a body over the limit ends in an error, and the guard
    // answers 413 whatever is returned here.
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return Problem::bad_request("the request body could not be read").into_response();
    };
    relay(
        state,
        &lease,
        parts.method,
        &parts.uri,
        &parts.headers,
        body,
        Dialect::Problem,
    )
    .await
}

/// The request's parts when it may be relayed: not relayed already, and from a caller whose
/// credentials authenticate (strangers are refused here, without a store lookup).
async fn candidate(state: &AppState, request: Request) -> Result<(Parts, Body), Request> {
    if Forwarder::was_forwarded(request.headers()) {
        return Err(request);
    }
    let (mut parts, body) = request.into_parts();
    if Caller::from_request_parts(&mut parts, state).await.is_err() {
        return Err(Request::from_parts(parts, body));
    }
    Ok((parts, body))
}

async fn path_param(parts: &mut Parts, state: &AppState, name: &str) -> Option<String> {
    let Path(mut params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .ok()?;
    params.remove(name)
}

/// Middleware on the `/v1/rooms/{room_id}/…` routes that read or change a live room.
pub async fn room_routes(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let room = path_param(&mut parts, &state, "room_id").await;
    // A room open here is answered here before the credentials are looked at twice.
    if room
        .as_ref()
        .is_none_or(|room| state.signaling.live_room(room).is_some())
    {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let (parts, body) = match candidate(&state, Request::from_parts(parts, body)).await {
        Ok(candidate) => candidate,
        Err(request) => return next.run(request).await,
    };
    relay_or_run(&state, room, parts, body, next).await
}

/// Middleware on `POST /v1/rooms` and `POST /v1/egress` (the room is the body's `room_id`)
/// and `POST /v1/egress/{egress_id}/stop`: a room opens only on the node holding its lease,
/// a recording runs on the node that has the room's media, and only that node can stop it.
pub async fn body_or_egress_routes(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = match candidate(&state, request).await {
        Ok(candidate) => candidate,
        Err(request) => return next.run(request).await,
    };
    if let Some(egress_id) = path_param(&mut parts, &state, "egress_id").await {
        let room = state
            .control
            .store
            .get_egress(&egress_id)
            .await
            .ok()
            .map(|record| record.room_id);
        return relay_or_run(&state, room, parts, body, next).await;
    }
    if parts.method != Method::POST {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Problem::bad_request("the request body could not be read").into_response();
    };
    // A body that does not parse is the local handler's to refuse.
    let room = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("room_id")?.as_str().map(str::to_owned));
    relay_or_run(&state, room, parts, Body::from(bytes), next).await
}

/// Middleware on `POST /v1/sessions/{session_id}/transcripts`: a transcript is relayed to
/// the people in the room, on the node running it.
pub async fn session_routes(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = match candidate(&state, request).await {
        Ok(candidate) => candidate,
        Err(request) => return next.run(request).await,
    };
    if parts.method != Method::POST {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let room = match path_param(&mut parts, &state, "session_id").await {
        Some(session_id) => state
            .control
            .store
            .get_session(&session_id)
            .await
            .ok()
            .map(|session| session.room_id),
        None => None,
    };
    relay_or_run(&state, room, parts, body, next).await
}

/// For a Twirp call about `room` (decoded from the body by the caller, which is
/// authenticated): the owner's answer when another node runs the room, `None` to answer
/// here. The body goes on as it came, in whichever encoding.
pub async fn twirp(
    state: &AppState,
    room: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<Response> {
    let lease = owner_for(state, room, headers).await?;
    Some(
        relay(
            state,
            &lease,
            Method::POST,
            uri,
            headers,
            body.clone(),
            Dialect::Twirp,
        )
        .await,
    )
}

/// For lists across rooms: the owner's successful answer to a read about `room` when
/// another node runs it (`method`, `path_and_query`, `body`, with the caller's credentials).
/// `None` when this node runs it, nobody does, or the owner did not answer: the list then
/// shows the room's record without live state, as for a room nobody runs.
pub async fn ask_owner(
    state: &AppState,
    room: &str,
    caller_headers: &HeaderMap,
    path_and_query: &str,
    json_body: Option<Bytes>,
) -> Option<Bytes> {
    let lease = owner_for(state, room, caller_headers).await?;
    let mut headers = HeaderMap::new();
    if let Some(auth) = caller_headers.get(header::AUTHORIZATION) {
        headers.insert(header::AUTHORIZATION, auth.clone());
    }
    let (method, body) = match json_body {
        Some(body) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            (Method::POST, body)
        }
        None => (Method::GET, Bytes::new()),
    };
    let outgoing = Outgoing {
        method,
        path_and_query,
        headers: &headers,
        body,
    };
    match state.forwarder.forward(&lease, outgoing).await {
        Ok(relayed) if relayed.status.is_success() => Some(relayed.body),
        Ok(relayed) => {
            warn!(room, node = lease.node_id, status = %relayed.status, "the room's node refused a read for a list");
            None
        }
        Err(e) => {
            warn!(room, "a list shows the room without live state: {e}");
            None
        }
    }
}
