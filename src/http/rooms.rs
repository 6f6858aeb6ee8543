//! `/v1/rooms`: rooms and the people in them.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchboard_signaling::ParticipantChange;

use super::api_json::{ApiJson, ApiQuery};
use super::auth::{Caller, Need};
use super::paging::{self, PageQuery};
use super::problem::Problem;
use super::AppState;
use crate::control::{now, RoomOptions};
use crate::store::{RoomRecord, RoomStatus, RoomUpdate};

/// A room record plus, when it is live on this node, who is in it right now.
fn room_json(state: &AppState, room: &RoomRecord) -> Value {
    let live = state.signaling.participants(&room.room_id);
    let mut value = serde_json::to_value(room).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert(
            "participants".into(),
            live.map(|ps| ps.iter().map(super::livekit_json::participant).collect())
                .unwrap_or_else(|| Value::Array(Vec::new())),
        );
    }
    value
}

/// [`room_json`] for a list: when another node runs the room, with the participants that
/// node reports, so every node lists alike.
async fn listed_room_json(state: &AppState, headers: &HeaderMap, room: &RoomRecord) -> Value {
    let mut value = room_json(state, room);
    if room.status != RoomStatus::Active {
        return value;
    }
    // Room ids are [A-Za-z0-9_-]: nothing to escape in the path.
    let path = format!("/v1/rooms/{}", room.room_id);
    let Some(answer) =
        super::forwarding::ask_owner(state, &room.room_id, headers, &path, None).await
    else {
        return value;
    };
    let remote: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    if let (Value::Object(map), Some(participants)) =
        (&mut value, remote["room"].get("participants"))
    {
        map.insert("participants".into(), participants.clone());
    }
    value
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(options): ApiJson<RoomOptions>,
) -> Result<impl IntoResponse, Problem> {
    let target = options.room_id.clone().unwrap_or_default();
    let result = async {
        caller.require(Need::Create)?;
        let (room, created) = state.control.create_room(options).await?;
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok((status, Json(json!({ "room": room_json(&state, &room) }))))
    }
    .await;
    state.audited(&caller, "room.create", &target, result).await
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
    page_token: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, Problem> {
    caller.require(Need::List)?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<RoomStatus>().map_err(|_| {
            Problem::bad_request(format!(
                "status {s:?} is not a room status: use active or closed"
            ))
        })?),
    };
    let page = PageQuery {
        limit: query.limit,
        page_token: query.page_token,
    };
    let limit = page.limit()?;
    let after = match page.position()? {
        Some(position) => {
            let (ms, room_id) = paging::parse_room_position(&position)?;
            let at = chrono::DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| Problem::bad_request("page_token is not valid"))?;
            Some((at, room_id))
        }
        None => None,
    };
    // One more than the page, to know whether another page follows.
    let mut rooms = state
        .control
        .store
        .list_rooms_page(status, after, limit + 1)
        .await?;
    let next_page_token = if rooms.len() > limit as usize {
        rooms.truncate(limit as usize);
        rooms.last().map(|last| {
            paging::token(&paging::room_position(
                last.created_at.timestamp_millis(),
                &last.room_id,
            ))
        })
    } else {
        None
    };
    let mut listed = Vec::with_capacity(rooms.len());
    for room in &rooms {
        listed.push(listed_room_json(&state, &headers, room).await);
    }
    Ok(Json(
        json!({ "rooms": listed, "next_page_token": next_page_token }),
    ))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
) -> Result<Json<Value>, Problem> {
    caller.require(Need::Read(&room_id))?;
    let room = state.control.store.get_room(&room_id).await?;
    Ok(Json(json!({ "room": room_json(&state, &room) })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomPatch {
    #[serde(default)]
    metadata: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    guest_access: Option<bool>,
    #[serde(default)]
    max_participants: Option<u32>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    ApiJson(patch): ApiJson<RoomPatch>,
) -> Result<Json<Value>, Problem> {
    let result = async {
        caller.require(Need::Admin(&room_id))?;
        let room = state
            .control
            .update_room(
                &room_id,
                RoomUpdate {
                    metadata: patch.metadata,
                    name: patch.name,
                    guest_access: patch.guest_access,
                    max_participants: patch.max_participants,
                    at: now(),
                },
            )
            .await?;
        Ok(Json(json!({ "room": room_json(&state, &room) })))
    }
    .await;
    state
        .audited(&caller, "room.update", &room_id, result)
        .await
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
) -> Result<StatusCode, Problem> {
    let result = async {
        caller.require(Need::Create)?;
        state.control.delete_room(&room_id).await?;
        Ok(StatusCode::NO_CONTENT)
    }
    .await;
    state
        .audited(&caller, "room.delete", &room_id, result)
        .await
}

/// Seed 003's "operators": who is in the room now, by identity, a page at a time.
pub async fn participants(
    State(state): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Value>, Problem> {
    caller.require(Need::Read(&room_id))?;
    let limit = page.limit()? as usize;
    let after = page.position()?;
    state.control.store.get_room(&room_id).await?;
    let mut live = state.signaling.participants(&room_id).unwrap_or_default();
    live.sort_by(|a, b| a.identity.cmp(&b.identity));
    let start = match &after {
        Some(after) => live.partition_point(|p| p.identity.as_str() <= after.as_str()),
        None => 0,
    };
    let page_items = &live[start..live.len().min(start + limit)];
    let next_page_token = (start + limit < live.len())
        .then(|| page_items.last().map(|p| paging::token(&p.identity)))
        .flatten();
    let list: Vec<Value> = page_items
        .iter()
        .map(super::livekit_json::participant)
        .collect();
    Ok(Json(
        json!({ "participants": list, "next_page_token": next_page_token }),
    ))
}

pub async fn remove_participant(
    State(state): State<AppState>,
    caller: Caller,
    Path((room_id, identity)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let target = format!("{room_id}/{identity}");
    let result = async {
        caller.require(Need::Admin(&room_id))?;
        state
            .control
            .remove_participant(&room_id, &identity)
            .await?;
        Ok(StatusCode::NO_CONTENT)
    }
    .await;
    state
        .audited(&caller, "participant.remove", &target, result)
        .await
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MuteBody {
    muted: bool,
}

pub async fn mute_track(
    State(state): State<AppState>,
    caller: Caller,
    Path((room_id, identity, track_sid)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<MuteBody>,
) -> Result<Json<Value>, Problem> {
    let target = format!("{room_id}/{identity}/{track_sid}");
    let result = async {
        caller.require(Need::Admin(&room_id))?;
        let track = state
            .control
            .mute_track(&room_id, &identity, &track_sid, body.muted)?;
        Ok(Json(json!({ "track": super::livekit_json::track(&track) })))
    }
    .await;
    state.audited(&caller, "track.mute", &target, result).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantPatch {
    #[serde(default)]
    metadata: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    attributes: Option<std::collections::HashMap<String, String>>,
}

pub async fn update_participant(
    State(state): State<AppState>,
    caller: Caller,
    Path((room_id, identity)): Path<(String, String)>,
    ApiJson(patch): ApiJson<ParticipantPatch>,
) -> Result<Json<Value>, Problem> {
    let target = format!("{room_id}/{identity}");
    let result = async {
        caller.require(Need::Admin(&room_id))?;
        let info = state.control.update_participant(
            &room_id,
            &identity,
            ParticipantChange {
                metadata: patch.metadata,
                name: patch.name,
                attributes: patch.attributes,
                permission: None,
            },
        )?;
        Ok(Json(
            json!({ "participant": super::livekit_json::participant(&info) }),
        ))
    }
    .await;
    state
        .audited(&caller, "participant.update", &target, result)
        .await
}
