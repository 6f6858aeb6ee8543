//! LiveKit's Twirp `AgentDispatchService`: CreateDispatch, ListDispatch, DeleteDispatch,
//! as `livekit-server-sdk`'s AgentDispatchClient and `livekit-api` call them. A dispatch
//! into a room that is not open opens it (recorded like a CreateRoom).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use livekit_protocol as proto;
use switchboard_signaling::agents::{AgentError, DispatchError};

use super::auth::{Caller, Need};
use super::problem::Problem;
use super::twirp::{decode, encode, encoding, Encoding, TwirpError};
use super::AppState;
use crate::control::{ControlError, RoomOptions};

impl From<AgentError> for TwirpError {
    fn from(e: AgentError) -> Self {
        let code = match e {
            AgentError::TooManyDispatches { .. } => "resource_exhausted",
            AgentError::NoSuchDispatch { .. } => "not_found",
            AgentError::NameTooLong { .. } | AgentError::MetadataTooLarge { .. } => {
                "invalid_argument"
            }
        };
        TwirpError::new(code, e.to_string())
    }
}

/// The room a call is about: dispatches live in the room, on the node running it. `None`
/// for a body that does not decode (the local handler says what is wrong with it).
fn room_of(method: &str, e: Encoding, body: &[u8]) -> Option<String> {
    let room = match method {
        "CreateDispatch" => {
            decode::<proto::CreateAgentDispatchRequest>(e, body)
                .ok()?
                .room
        }
        "ListDispatch" => {
            decode::<proto::ListAgentDispatchRequest>(e, body)
                .ok()?
                .room
        }
        "DeleteDispatch" => {
            decode::<proto::DeleteAgentDispatchRequest>(e, body)
                .ok()?
                .room
        }
        _ => return None,
    };
    (!room.is_empty()).then_some(room)
}

pub async fn agent_dispatch_service(
    State(state): State<AppState>,
    Path(method): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    caller: Result<Caller, Problem>,
    body: Bytes,
) -> Result<Response, TwirpError> {
    let e = encoding(&headers)?;
    let caller = caller?;
    if let Some(room) = room_of(&method, e, &body) {
        if let Some(answer) = super::forwarding::twirp(&state, &room, &uri, &headers, &body).await {
            return Ok(answer);
        }
    }
    match method.as_str() {
        "CreateDispatch" => {
            let req: proto::CreateAgentDispatchRequest = decode(e, &body)?;
            caller.require(Need::Admin(&req.room))?;
            if state.signaling.live_room(&req.room).is_none() {
                let options = RoomOptions {
                    room_id: Some(req.room.clone()),
                    ..Default::default()
                };
                state
                    .control
                    .create_room(options)
                    .await
                    .map_err(Problem::from)?;
            }
            let result = state
                .signaling
                .create_agent_dispatch(&req.room, req.agent_name, req.metadata)
                .map_err(|err| match err {
                    DispatchError::Room(admin) => TwirpError::from(ControlError::from(admin)),
                    DispatchError::Agent(agent) => TwirpError::from(agent),
                });
            let dispatch = match result {
                Ok(dispatch) => dispatch,
                Err(err) => return Err(err),
            };
            state
                .audited(
                    &caller,
                    "twirp.CreateDispatch",
                    &format!("{}/{}", req.room, dispatch.id),
                    Ok::<_, Problem>(()),
                )
                .await?;
            Ok(encode(e, &dispatch))
        }
        "ListDispatch" => {
            let req: proto::ListAgentDispatchRequest = decode(e, &body)?;
            caller.require(Need::Admin(&req.room))?;
            let agent_dispatches = state
                .signaling
                .agent_dispatches(&req.room, &req.dispatch_id);
            Ok(encode(
                e,
                &proto::ListAgentDispatchResponse { agent_dispatches },
            ))
        }
        "DeleteDispatch" => {
            let req: proto::DeleteAgentDispatchRequest = decode(e, &body)?;
            caller.require(Need::Admin(&req.room))?;
            let dispatch = state
                .signaling
                .delete_agent_dispatch(&req.room, &req.dispatch_id)?;
            state
                .audited(
                    &caller,
                    "twirp.DeleteDispatch",
                    &format!("{}/{}", req.room, req.dispatch_id),
                    Ok::<_, Problem>(()),
                )
                .await?;
            Ok(encode(e, &dispatch))
        }
        other => Err(TwirpError::new(
            "bad_route",
            format!("AgentDispatchService has no method {other:?}"),
        )),
    }
}
