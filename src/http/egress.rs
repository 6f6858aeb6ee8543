//! `/v1/egress`: starting, listing and stopping recordings and RTP restreams, and the
//! status reports of external egress workers.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api_json::{ApiJson, ApiQuery};
use super::auth::{Caller, Need};
use super::problem::Problem;
use super::sessions::session_for;
use super::AppState;
use crate::control::{EgressReport, EgressRequest};

/// `POST /v1/egress`: records a room or a track to files, or restreams a track as RTP.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<EgressRequest>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let room_id = request.room_id.clone();
    let result: Result<_, Problem> = async {
        caller.require(Need::Record(&room_id))?;
        let egress = state.control.start_egress(request, None).await?;
        Ok((StatusCode::CREATED, Json(json!({ "egress": egress }))))
    }
    .await;
    state
        .audited(&caller, "egress.start", &room_id, result)
        .await
}

/// `POST /v1/egress/{id}/stop`: the egress finalizes its files; stopping twice is harmless.
pub async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path(egress_id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let result: Result<_, Problem> = async {
        let egress = state.control.store.get_egress(&egress_id).await?;
        caller.require(Need::Record(&egress.room_id))?;
        let egress = state.control.stop_egress(&egress_id).await?;
        Ok(Json(json!({ "egress": egress })))
    }
    .await;
    state
        .audited(&caller, "egress.stop", &egress_id, result)
        .await
}

#[derive(Debug, Deserialize)]
pub struct EgressQuery {
    room_id: Option<String>,
    session_id: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<EgressQuery>,
) -> Result<Json<Value>, Problem> {
    match (&query.room_id, &query.session_id) {
        (Some(room), _) => caller.require(Need::Read(room))?,
        (None, Some(session_id)) => {
            let session = session_for(&state, session_id).await?;
            caller.require(Need::Read(&session.room_id))?;
        }
        (None, None) => caller.require(Need::List)?,
    }
    let list = state
        .control
        .store
        .list_egress(query.room_id.as_deref(), query.session_id.as_deref())
        .await?;
    Ok(Json(json!({ "egress": list })))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(egress_id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let egress = state.control.store.get_egress(&egress_id).await?;
    caller.require(Need::Read(&egress.room_id))?;
    Ok(Json(json!({ "egress": egress })))
}

/// `POST /v1/egress/{id}/status`: an egress worker reports progress; the session follows.
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(egress_id): Path<String>,
    ApiJson(report): ApiJson<EgressReport>,
) -> Result<Json<Value>, Problem> {
    let result: Result<_, Problem> = async {
        let egress = state.control.store.get_egress(&egress_id).await?;
        caller.require(Need::Record(&egress.room_id))?;
        let egress = state.control.egress_reported(&egress_id, report).await?;
        Ok(Json(json!({ "egress": egress })))
    }
    .await;
    state
        .audited(&caller, "egress.status", &egress_id, result)
        .await
}
