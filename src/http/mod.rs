//! The HTTP server: LiveKit signaling, the `/v1` API, health checks and the demo page, with
//! CORS open so browser apps on other origins can connect.

mod problem;
mod tokens;
mod web;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use switchboard_signaling::Signaling;
use tower_http::cors::CorsLayer;

use crate::store::Store;
pub use problem::Problem;

/// What every HTTP handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub signaling: Arc<Signaling>,
    pub store: Arc<dyn Store>,
    /// API key → secret, for signing tokens.
    pub keys: Arc<BTreeMap<String, String>>,
    pub public_ws_url: String,
    pub dev: bool,
}

impl AppState {
    fn signing_secret(&self, api_key: &str) -> Result<&str, Problem> {
        self.keys
            .get(api_key)
            .map(String::as_str)
            .ok_or_else(|| Problem::internal(format!("API key {api_key:?} has no secret")))
    }

    fn first_key(&self) -> Option<String> {
        self.keys.keys().next().cloned()
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.health().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the session store ({}) is not reachable: {e}",
                state.store.backend()
            ),
        )
        .into_response(),
    }
}

async fn not_found() -> Problem {
    Problem::not_found("no such endpoint")
}

async fn participants_count(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "participants": state.signaling.participant_count() }))
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/rooms/{room_id}/tokens", post(tokens::create_for_room))
        .route("/v1/dev/token", post(tokens::create_dev))
        .route("/v1/node", get(participants_count))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(web::router())
        .fallback(not_found)
        .with_state(state.clone());
    state
        .signaling
        .router()
        .merge(api)
        .layer(CorsLayer::very_permissive())
}
