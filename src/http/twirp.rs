//! LiveKit's Twirp `RoomService` at `/twirp/livekit.RoomService/{Method}`, so
//! `livekit-server-sdk`'s `RoomServiceClient` manages our rooms unchanged. Requests and
//! responses are protojson (`application/json`) or protobuf (`application/protobuf`), errors
//! Twirp's `{code, msg}`. Every call goes through the same [`Control`] as `/v1`.
//!
//! [`Control`]: crate::control::Control

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use livekit_protocol as proto;
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchboard_signaling::ParticipantChange;

use super::auth::{Caller, Need};
use super::problem::Problem;
use super::AppState;
use crate::control::{now, ControlError, RoomOptions};
use crate::store::{RoomRecord, RoomStatus, RoomUpdate};

/// A Twirp error: `{code, msg}` with the status Twirp assigns to the code.
pub struct TwirpError {
    code: &'static str,
    msg: String,
}

impl TwirpError {
    pub(super) fn new(code: &'static str, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }
}

impl From<Problem> for TwirpError {
    fn from(p: Problem) -> Self {
        let code = match p.status {
            400 => "invalid_argument",
            401 => "unauthenticated",
            403 => "permission_denied",
            404 => "not_found",
            409 => "already_exists",
            412 => "failed_precondition",
            429 => "resource_exhausted",
            503 => "unavailable",
            _ => "internal",
        };
        TwirpError::new(code, p.detail)
    }
}

impl From<crate::store::StoreError> for TwirpError {
    fn from(e: crate::store::StoreError) -> Self {
        Problem::from(e).into()
    }
}

impl From<ControlError> for TwirpError {
    fn from(e: ControlError) -> Self {
        Problem::from(e).into()
    }
}

impl IntoResponse for TwirpError {
    fn into_response(self) -> Response {
        let status = match self.code {
            "invalid_argument" | "malformed" => StatusCode::BAD_REQUEST,
            "unauthenticated" => StatusCode::UNAUTHORIZED,
            "permission_denied" => StatusCode::FORBIDDEN,
            "not_found" | "bad_route" => StatusCode::NOT_FOUND,
            "already_exists" => StatusCode::CONFLICT,
            "failed_precondition" => StatusCode::PRECONDITION_FAILED,
            "resource_exhausted" => StatusCode::TOO_MANY_REQUESTS,
            "unimplemented" => StatusCode::NOT_IMPLEMENTED,
            "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = serde_json::json!({ "code": self.code, "msg": self.msg });
        (status, axum::Json(body)).into_response()
    }
}

/// How the client encoded its request; the response uses the same.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Json,
    Protobuf,
}

pub(super) fn encoding(headers: &HeaderMap) -> Result<Encoding, TwirpError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/json" => Ok(Encoding::Json),
        "application/protobuf" | "application/x-protobuf" => Ok(Encoding::Protobuf),
        other => Err(TwirpError::new(
            "bad_route",
            format!(
                "unsupported Content-Type {other:?}: use application/json or application/protobuf"
            ),
        )),
    }
}

pub(super) fn decode<T: Message + Default + DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
) -> Result<T, TwirpError> {
    match encoding {
        Encoding::Json => serde_json::from_slice(body).map_err(|e| {
            TwirpError::new("malformed", format!("the JSON request is not valid: {e}"))
        }),
        Encoding::Protobuf => T::decode(body).map_err(|e| {
            TwirpError::new(
                "malformed",
                format!("the protobuf request is not valid: {e}"),
            )
        }),
    }
}

pub(super) fn encode<T: Message + Serialize>(encoding: Encoding, value: &T) -> Response {
    match encoding {
        Encoding::Json => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(value).unwrap_or_default(),
        )
            .into_response(),
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/protobuf")],
            value.encode_to_vec(),
        )
            .into_response(),
    }
}

/// A stored room as LiveKit's `Room`, with live numbers when it is open on this node.
fn room_proto(state: &AppState, room: &RoomRecord) -> proto::Room {
    let live = state.signaling.live_room(&room.room_id);
    proto::Room {
        sid: live
            .as_ref()
            .map(|l| l.sid.clone())
            .or_else(|| room.sid.clone())
            .unwrap_or_default(),
        name: room.room_id.clone(),
        empty_timeout: room.empty_timeout_secs,
        max_participants: room.max_participants,
        creation_time: room.created_at.timestamp(),
        creation_time_ms: room.created_at.timestamp_millis(),
        metadata: room.metadata.clone().unwrap_or_default(),
        num_participants: live.as_ref().map_or(0, |l| l.num_participants),
        num_publishers: live.as_ref().map_or(0, |l| l.num_publishers),
        ..Default::default()
    }
}

fn participant_of(
    state: &AppState,
    room: &str,
    identity: &str,
) -> Result<proto::ParticipantInfo, TwirpError> {
    // Checked, not only looked up: the refusal would otherwise echo whatever was sent.
    state.control.check_identity(identity)?;
    state.signaling.participant(room, identity).ok_or_else(|| {
        TwirpError::new(
            "not_found",
            format!("nobody with identity {identity:?} is connected to room {room:?}"),
        )
    })
}

/// The room a RoomService call is about, when it names one (ListRooms does not). `None`
/// also for a body that does not decode: the local handler then says what is wrong with it.
fn room_of(method: &str, e: Encoding, body: &[u8]) -> Option<String> {
    let room = match method {
        "CreateRoom" => decode::<proto::CreateRoomRequest>(e, body).ok()?.name,
        "DeleteRoom" => decode::<proto::DeleteRoomRequest>(e, body).ok()?.room,
        "ListParticipants" => decode::<proto::ListParticipantsRequest>(e, body).ok()?.room,
        "GetParticipant" | "RemoveParticipant" => {
            decode::<proto::RoomParticipantIdentity>(e, body).ok()?.room
        }
        "MutePublishedTrack" => decode::<proto::MuteRoomTrackRequest>(e, body).ok()?.room,
        "UpdateParticipant" => {
            decode::<proto::UpdateParticipantRequest>(e, body)
                .ok()?
                .room
        }
        "UpdateSubscriptions" => {
            decode::<proto::UpdateSubscriptionsRequest>(e, body)
                .ok()?
                .room
        }
        "UpdateRoomMetadata" => {
            decode::<proto::UpdateRoomMetadataRequest>(e, body)
                .ok()?
                .room
        }
        "SendData" => decode::<proto::SendDataRequest>(e, body).ok()?.room,
        _ => return None,
    };
    (!room.is_empty()).then_some(room)
}

/// A room another node runs, as that node reports it (`ListRooms` there, which answers
/// from its memory); `None` when no other node runs it or its node did not answer.
async fn remote_room_proto(
    state: &AppState,
    headers: &HeaderMap,
    room: &str,
) -> Option<proto::Room> {
    let request = proto::ListRoomsRequest {
        names: vec![room.to_owned()],
    };
    let body = serde_json::to_vec(&request).ok()?;
    let answer = super::forwarding::ask_owner(
        state,
        room,
        headers,
        "/twirp/livekit.RoomService/ListRooms",
        Some(body.into()),
    )
    .await?;
    let listed: proto::ListRoomsResponse = serde_json::from_slice(&answer).ok()?;
    listed.rooms.into_iter().find(|r| r.name == room)
}

pub async fn room_service(
    State(state): State<AppState>,
    Path(method): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    caller: Result<Caller, Problem>,
    body: Bytes,
) -> Result<Response, TwirpError> {
    let encoding = encoding(&headers)?;
    let caller = caller?;
    let e = encoding;
    if let Some(room) = room_of(&method, e, &body) {
        if let Some(answer) = super::forwarding::twirp(&state, &room, &uri, &headers, &body).await {
            return Ok(answer);
        }
    }
    match method.as_str() {
        "CreateRoom" => {
            let req: proto::CreateRoomRequest = decode(e, &body)?;
            caller.require(Need::Create)?;
            let options = RoomOptions {
                room_id: Some(req.name.clone()),
                metadata: (!req.metadata.is_empty()).then_some(req.metadata),
                empty_timeout_secs: (req.empty_timeout > 0).then_some(req.empty_timeout),
                max_participants: (req.max_participants > 0).then_some(req.max_participants),
                agents: req
                    .agents
                    .iter()
                    .map(|a| switchboard_signaling::token::RoomAgentDispatch {
                        agent_name: a.agent_name.clone(),
                        metadata: a.metadata.clone(),
                    })
                    .collect(),
                ..Default::default()
            };
            let result = state
                .control
                .create_room(options)
                .await
                .map_err(Problem::from);
            let (room, _) = state
                .audited(&caller, "twirp.CreateRoom", &req.name, result)
                .await?;
            Ok(encode(e, &room_proto(&state, &room)))
        }
        "ListRooms" => {
            let req: proto::ListRoomsRequest = decode(e, &body)?;
            caller.require(Need::List)?;
            let rooms = state
                .control
                .store
                .list_rooms(Some(RoomStatus::Active))
                .await?;
            let mut listed = Vec::new();
            for record in rooms
                .iter()
                .filter(|r| req.names.is_empty() || req.names.contains(&r.room_id))
            {
                let mut room = room_proto(&state, record);
                // Live numbers from the node that runs the room, so every node lists alike.
                if let Some(remote) = remote_room_proto(&state, &headers, &record.room_id).await {
                    room.sid = remote.sid;
                    room.num_participants = remote.num_participants;
                    room.num_publishers = remote.num_publishers;
                }
                listed.push(room);
            }
            Ok(encode(e, &proto::ListRoomsResponse { rooms: listed }))
        }
        "DeleteRoom" => {
            let req: proto::DeleteRoomRequest = decode(e, &body)?;
            caller.require(Need::Create)?;
            let result = state
                .control
                .delete_room(&req.room)
                .await
                .map_err(Problem::from);
            state
                .audited(&caller, "twirp.DeleteRoom", &req.room, result)
                .await?;
            Ok(encode(e, &proto::DeleteRoomResponse {}))
        }
        "ListParticipants" => {
            let req: proto::ListParticipantsRequest = decode(e, &body)?;
            caller.require(Need::Admin(&req.room))?;
            let participants = state.signaling.participants(&req.room).unwrap_or_default();
            Ok(encode(e, &proto::ListParticipantsResponse { participants }))
        }
        "GetParticipant" => {
            let req: proto::RoomParticipantIdentity = decode(e, &body)?;
            caller.require(Need::Admin(&req.room))?;
            Ok(encode(
                e,
                &participant_of(&state, &req.room, &req.identity)?,
            ))
        }
        "RemoveParticipant" => {
            let req: proto::RoomParticipantIdentity = decode(e, &body)?;
            caller.require(Need::Admin(&req.room))?;
            let target = format!("{}/{}", req.room, req.identity);
            let result = state
                .control
                .remove_participant(&req.room, &req.identity)
                .await
                .map_err(Problem::from);
            state
                .audited(&caller, "twirp.RemoveParticipant", &target, result)
                .await?;
            Ok(encode(e, &proto::RemoveParticipantResponse {}))
        }
        "MutePublishedTrack" => {
            let req: proto::MuteRoomTrackRequest = decode(e, &body)?;
            caller.require(Need::Admin(&req.room))?;
            let target = format!("{}/{}/{}", req.room, req.identity, req.track_sid);
            let result = state
                .control
                .mute_track(&req.room, &req.identity, &req.track_sid, req.muted)
                .map_err(Problem::from);
            let track = state
                .audited(&caller, "twirp.MutePublishedTrack", &target, result)
                .await?;
            Ok(encode(
                e,
                &proto::MuteRoomTrackResponse { track: Some(track) },
            ))
        }
        "UpdateParticipant" => {
            let req: proto::UpdateParticipantRequest = decode(e, &body)?;
            caller.require(Need::Admin(&req.room))?;
            let target = format!("{}/{}", req.room, req.identity);
            let change = ParticipantChange {
                metadata: (!req.metadata.is_empty()).then_some(req.metadata),
                name: (!req.name.is_empty()).then_some(req.name),
                attributes: (!req.attributes.is_empty()).then_some(req.attributes),
                permission: req.permission,
            };
            let result = state
                .control
                .update_participant(&req.room, &req.identity, change)
                .map_err(Problem::from);
            let info = state
                .audited(&caller, "twirp.UpdateParticipant", &target, result)
                .await?;
            Ok(encode(e, &info))
        }
        // participant_tracks is deprecated upstream (sids name tracks uniquely), but older
        // server SDKs still fill it.
        #[allow(deprecated)]
        "UpdateSubscriptions" => {
            let req: proto::UpdateSubscriptionsRequest = decode(e, &body)?;
            caller.require(Need::Admin(&req.room))?;
            let mut sids = req.track_sids;
            sids.extend(
                req.participant_tracks
                    .into_iter()
                    .flat_map(|p| p.track_sids),
            );
            if sids.is_empty() {
                return Err(TwirpError::new(
                    "invalid_argument",
                    "name at least one track in track_sids",
                ));
            }
            let target = format!("{}/{}", req.room, req.identity);
            let result = state
                .control
                .update_subscriptions(&req.room, &req.identity, sids, req.subscribe)
                .map_err(Problem::from);
            state
                .audited(&caller, "twirp.UpdateSubscriptions", &target, result)
                .await?;
            Ok(encode(e, &proto::UpdateSubscriptionsResponse {}))
        }
        "UpdateRoomMetadata" => {
            let req: proto::UpdateRoomMetadataRequest = decode(e, &body)?;
            caller.require(Need::Admin(&req.room))?;
            let update = RoomUpdate {
                metadata: Some(req.metadata),
                name: None,
                guest_access: None,
                max_participants: None,
                at: now(),
            };
            let result = state
                .control
                .update_room(&req.room, update)
                .await
                .map_err(Problem::from);
            let room = state
                .audited(&caller, "twirp.UpdateRoomMetadata", &req.room, result)
                .await?;
            Ok(encode(e, &room_proto(&state, &room)))
        }
        // destination_sids is deprecated upstream, but older server SDKs still address by sid.
        #[allow(deprecated)]
        "SendData" => {
            let req: proto::SendDataRequest = decode(e, &body)?;
            caller.require(Need::Admin(&req.room))?;
            let reliable = req.kind != proto::data_packet::Kind::Lossy as i32;
            let addressed =
                !req.destination_sids.is_empty() || !req.destination_identities.is_empty();
            let mut destinations = req.destination_identities;
            if !req.destination_sids.is_empty() {
                let live = state.signaling.participants(&req.room).unwrap_or_default();
                destinations.extend(
                    live.into_iter()
                        .filter(|p| req.destination_sids.contains(&p.sid))
                        .map(|p| p.identity),
                );
            }
            if addressed && destinations.is_empty() {
                // Addressed only to sids that are not here: nobody receives it (never everyone).
                return Ok(encode(e, &proto::SendDataResponse {}));
            }
            state
                .signaling
                .send_data(&req.room, req.data, reliable, req.topic, destinations)
                .map_err(|err| TwirpError::from(ControlError::from(err)))?;
            Ok(encode(e, &proto::SendDataResponse {}))
        }
        other => Err(TwirpError::new(
            "bad_route",
            format!("RoomService has no method {other:?}"),
        )),
    }
}
