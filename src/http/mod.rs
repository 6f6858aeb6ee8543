//! The HTTP server: LiveKit signaling, the `/v1` API, health checks and the demo page, with
//! CORS for the configured browser origins (cors.rs) and per-address bounds (guard.rs,
//! serve.rs).

mod api_json;
mod auth;
mod conn;
mod cors;
mod egress;
mod forwarding;
mod guard;
mod guests;
mod livekit_json;
pub mod metrics;
mod nodes;
mod paging;
mod problem;
mod rooms;
mod serve;
mod sessions;
mod tokens;
mod twirp;
mod twirp_agents;
mod twirp_egress;
mod web;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use switchboard_sfu::Sfu;
use switchboard_signaling::Signaling;

use crate::cluster::Forwarder;
use crate::control::Control;
pub use cors::CorsPolicy;
pub use guard::{Guard, GuardLimits};
pub use guests::GuestLimiter;
pub use problem::Problem;
pub use serve::{serve, ServeLimits};

/// What every HTTP handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub control: Arc<Control>,
    pub signaling: Arc<Signaling>,
    pub sfu: Arc<Sfu>,
    /// API key → secret, for signing tokens.
    pub keys: Arc<BTreeMap<String, String>>,
    pub public_ws_url: String,
    pub dev: bool,
    pub guest_limiter: Arc<GuestLimiter>,
    /// Which browser origins may read responses and mint development tokens.
    pub cors: Arc<CorsPolicy>,
    /// Per-address request rates and request bodies.
    pub guard: Arc<Guard>,
    /// A node whose heartbeat is older than this is dead (`GET /v1/nodes`).
    pub node_timeout: Duration,
    /// Relays admin calls about a room another node runs to that node.
    pub forwarder: Arc<Forwarder>,
    /// Asks this node to drain (`POST /v1/node/drain`).
    pub drain: Arc<crate::cluster::drain::Drain>,
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

/// Guest tokens: at most this many per client address per minute.
pub fn default_guest_limiter() -> GuestLimiter {
    GuestLimiter::new(20, Duration::from_secs(60))
}

/// The process is up.
async fn healthz() -> &'static str {
    "ok"
}

/// The store answers and every media worker is running.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if !state.sfu.healthy() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "a media worker has stopped; see the server log",
        )
        .into_response();
    }
    match state.control.store.health().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the session store ({}) is not reachable: {e}",
                state.control.store.backend()
            ),
        )
        .into_response(),
    }
}

async fn not_found() -> Problem {
    Problem::not_found("no such endpoint; the API is described at /v1/openapi.json")
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {}; the API is described at /v1/openapi.json",
            uri.path()
        ),
    )
}

async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

/// The CORS layer answers every `OPTIONS` itself; on WHIP/WHEP paths the answer also says
/// what they accept (RFC 9725 §4.1: `Accept-Post` on the endpoint, `Accept-Patch` on a
/// session), as 204.
async fn whip_options(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let options = request.method() == axum::http::Method::OPTIONS;
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    if !options || !response.status().is_success() {
        return response;
    }
    let accept = match path.as_str() {
        "/whip" | "/whep" => Some(("accept-post", "application/sdp")),
        p if p.starts_with("/whip/") || p.starts_with("/whep/") => {
            Some(("accept-patch", "application/trickle-ice-sdpfrag"))
        }
        _ => None,
    };
    if let Some((name, value)) = accept {
        response.headers_mut().insert(
            axum::http::HeaderName::from_static(name),
            axum::http::HeaderValue::from_static(value),
        );
        *response.status_mut() = axum::http::StatusCode::NO_CONTENT;
    }
    response
}

pub fn router(state: AppState) -> Router {
    // Calls that read or change a live room, or open it: answered by the node running it.
    let one_room = Router::new()
        .route(
            "/v1/rooms/{room_id}",
            get(rooms::get).patch(rooms::update).delete(rooms::delete),
        )
        .route("/v1/rooms/{room_id}/participants", get(rooms::participants))
        .route(
            "/v1/rooms/{room_id}/participants/{identity}",
            axum::routing::delete(rooms::remove_participant).patch(rooms::update_participant),
        )
        .route(
            "/v1/rooms/{room_id}/participants/{identity}/tracks/{track_sid}/mute",
            post(rooms::mute_track),
        )
        .route("/v1/rooms/{room_id}/tokens", post(tokens::create_for_room))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forwarding::room_routes,
        ));
    // The room is in the body, or the egress names it.
    let room_in_body = Router::new()
        .route("/v1/rooms", post(rooms::create).get(rooms::list))
        .route("/v1/egress", post(egress::create).get(egress::list))
        .route("/v1/egress/{egress_id}/stop", post(egress::stop))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forwarding::body_or_egress_routes,
        ));
    let api = Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/node/drain", post(nodes::drain))
        .merge(room_in_body)
        .merge(one_room)
        .route("/v1/rooms/{room_id}/guest-token", get(guests::guest_token))
        .route("/v1/rooms/{room_id}/events", get(sessions::events))
        .route("/v1/sessions", post(sessions::create).get(sessions::list))
        .route("/v1/sessions/{session_id}", get(sessions::get))
        .route("/v1/sessions/{session_id}/live", post(sessions::live))
        .route("/v1/sessions/{session_id}/end", post(sessions::end))
        .route("/v1/sessions/{session_id}/cancel", post(sessions::cancel))
        .route(
            "/v1/sessions/{session_id}/participants",
            get(sessions::participants),
        )
        .merge(
            Router::new()
                .route(
                    "/v1/sessions/{session_id}/transcripts",
                    post(sessions::add_transcript).get(sessions::transcripts),
                )
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    forwarding::session_routes,
                )),
        )
        .route("/v1/egress/{egress_id}", get(egress::get))
        .route("/v1/egress/{egress_id}/status", post(egress::status))
        .route("/v1/audit", get(sessions::audit))
        .route(
            "/v1/dev/token",
            post(tokens::create_dev).layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state.cors),
                cors::dev_token_origin,
            )),
        )
        .route(
            "/twirp/livekit.RoomService/{method}",
            post(twirp::room_service),
        )
        .route(
            "/twirp/livekit.Egress/{method}",
            post(twirp_egress::egress_service),
        )
        .route(
            "/twirp/livekit.AgentDispatchService/{method}",
            post(twirp_agents::agent_dispatch_service),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .merge(web::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    state
        .signaling
        .router()
        .merge(api)
        // The guard reads bodies under http_request_body_bytes itself, with a problem
        // document when one is too large; axum's own 2 MB default would only get in the way.
        .layer(axum::extract::DefaultBodyLimit::disable())
        // Inside CORS, so a page can read a 429 or 413 (the CORS layer adds its headers).
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.guard),
            guard::guard,
        ))
        .layer(state.cors.layer())
        // Outside the CORS layer, which answers OPTIONS before anything inside it runs.
        .layer(axum::middleware::from_fn(whip_options))
}
