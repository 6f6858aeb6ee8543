//! `/v1/sessions`, the event log, transcripts and the audit log.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api_json::{ApiJson, ApiQuery};
use super::auth::{Caller, Need};
use super::paging::{self, PageQuery};
use super::problem::Problem;
use super::AppState;
use crate::control::{LiveOptions, TranscriptInput};
use crate::store::SessionRecord;

/// Most events one replay request returns.
const MAX_EVENTS: u32 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    room_id: String,
    #[serde(default)]
    owner_identity: Option<String>,
}

pub(super) async fn session_for(
    state: &AppState,
    session_id: &str,
) -> Result<SessionRecord, Problem> {
    Ok(state.control.store.get_session(session_id).await?)
}

/// `POST /v1/sessions` (seed 000): 404 unknown room, 412 room not active.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateSession>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let room_id = body.room_id.clone();
    let result: Result<_, Problem> = async {
        caller.require(Need::Admin(&body.room_id))?;
        let session = state
            .control
            .create_session(&body.room_id, body.owner_identity)
            .await?;
        Ok((StatusCode::CREATED, Json(json!({ "session": session }))))
    }
    .await;
    state
        .audited(&caller, "session.create", &room_id, result)
        .await
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let session = session_for(&state, &session_id).await?;
    caller.require(Need::Read(&session.room_id))?;
    Ok(Json(json!({ "session": session })))
}

#[derive(Debug, Deserialize)]
pub struct ListSessions {
    room_id: Option<String>,
    limit: Option<u32>,
    page_token: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListSessions>,
) -> Result<Json<Value>, Problem> {
    let Some(room_id) = query.room_id.filter(|r| !r.is_empty()) else {
        return Err(Problem::bad_request(
            "list sessions of one room: GET /v1/sessions?room_id=ROOM",
        ));
    };
    caller.require(Need::Read(&room_id))?;
    state.control.store.get_room(&room_id).await?;
    let page = PageQuery {
        limit: query.limit,
        page_token: query.page_token,
    };
    // Newest first; a room has one session per broadcast, so the whole list is read and
    // the answer is what is bounded.
    let sessions = state.control.store.list_sessions(&room_id).await?;
    let (page_items, next_page_token) =
        paging::page_of(&sessions, &page, |s| s.session_id.as_str())?;
    Ok(Json(
        json!({ "sessions": page_items, "next_page_token": next_page_token }),
    ))
}

/// Which of `/live`, `/end`, `/cancel` was called.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Live,
    End,
    Cancel,
}

async fn step(
    state: AppState,
    caller: Caller,
    session_id: String,
    step: Step,
    options: LiveOptions,
) -> Result<Json<Value>, Problem> {
    let action = match step {
        Step::Live => "session.live",
        Step::End => "session.end",
        Step::Cancel => "session.cancel",
    };
    let result: Result<_, Problem> = async {
        let session = session_for(&state, &session_id).await?;
        caller.require(Need::Admin(&session.room_id))?;
        let body = match step {
            Step::Live => {
                let (session, egress) = state.control.go_live(&session_id, options).await?;
                json!({ "session": session, "egress": egress })
            }
            Step::End => json!({ "session": state.control.end_session(&session_id).await? }),
            Step::Cancel => json!({ "session": state.control.cancel_session(&session_id).await? }),
        };
        Ok(Json(body))
    }
    .await;
    state.audited(&caller, action, &session_id, result).await
}

pub async fn live(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, Problem> {
    // The options are optional: an empty body means the defaults.
    let options = if body.iter().all(u8::is_ascii_whitespace) {
        LiveOptions::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Problem::bad_request(format!("the request body is not valid: {e}")))?
    };
    step(state, caller, session_id, Step::Live, options).await
}

pub async fn end(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<String>,
) -> Result<Json<Value>, Problem> {
    step(state, caller, session_id, Step::End, LiveOptions::default()).await
}

pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<String>,
) -> Result<Json<Value>, Problem> {
    step(
        state,
        caller,
        session_id,
        Step::Cancel,
        LiveOptions::default(),
    )
    .await
}

pub async fn participants(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Value>, Problem> {
    let session = session_for(&state, &session_id).await?;
    caller.require(Need::Read(&session.room_id))?;
    let list = state
        .control
        .store
        .list_session_participants(&session_id)
        .await?;
    let (list, next_page_token) = paging::page_of(&list, &page, |p| p.identity.as_str())?;
    Ok(Json(
        json!({ "participants": list, "next_page_token": next_page_token }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

/// `GET /v1/rooms/{room_id}/events?after=SEQ&limit=N`: replay of the room's log.
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<Value>, Problem> {
    caller.require(Need::Read(&room_id))?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_EVENTS {
        return Err(Problem::bad_request(format!(
            "limit must be between 1 and {MAX_EVENTS}"
        )));
    }
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(Problem::bad_request("after must not be negative"));
    }
    state.control.store.get_room(&room_id).await?;
    let events = state
        .control
        .store
        .list_events(&room_id, after, limit)
        .await?;
    let next = events.last().map_or(after, |e| e.seq);
    Ok(Json(json!({ "events": events, "next_after": next })))
}

pub async fn add_transcript(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<String>,
    ApiJson(input): ApiJson<TranscriptInput>,
) -> Result<Json<Value>, Problem> {
    let session = session_for(&state, &session_id).await?;
    caller.require(Need::Admin(&session.room_id))?;
    let segment = state.control.add_transcript(&session_id, input).await?;
    Ok(Json(json!({ "segment": segment })))
}

pub async fn transcripts(
    State(state): State<AppState>,
    caller: Caller,
    Path(session_id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Value>, Problem> {
    let session = session_for(&state, &session_id).await?;
    caller.require(Need::Member(&session.room_id))?;
    let segments = state.control.store.list_transcripts(&session_id).await?;
    let (segments, next_page_token) = paging::page_of(&segments, &page, |s| s.segment_id.as_str())?;
    Ok(Json(
        json!({ "segments": segments, "next_page_token": next_page_token }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    limit: Option<u32>,
    before: Option<i64>,
}

/// `GET /v1/audit`: who did what, newest first.
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, Problem> {
    caller.require(Need::List)?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_EVENTS);
    let entries = state.control.store.list_audit(limit, query.before).await?;
    Ok(Json(json!({ "entries": entries })))
}
