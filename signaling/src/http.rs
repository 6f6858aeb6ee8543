//! The HTTP face of signaling: the `/rtc` (v0) and `/rtc/v1` WebSocket upgrades, and the
//! validate endpoints the LiveKit client probes when an upgrade fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::credentials;
use crate::relay::{self, RelayRefused};
use crate::rooms::JoinRefused;
use crate::session::{self, JoinParams};
use crate::token::Claims;
use crate::websocket::{self, SignalSocket};
use crate::{Owner, PlacementRefused, Placing, Signaling};

type Params = Query<HashMap<String, String>>;

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

/// Why a join is refused: the status and the text livekit-client shows the user.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        text(self.0, self.1)
    }
}

/// Where an admitted join is served.
enum Admission {
    /// Here: the token's claims (boxed: an admission lives only until the upgrade).
    Here(Box<Claims>),
    /// On another node, through a relay.
    Relay { owner: Owner, room: String },
}

/// Checks the join token, which node serves the room (taking it here, or placing it on the
/// least-loaded node, when nobody does) and, when it is this one, the room's capacity,
/// exactly as the upgrade will.
async fn admit(
    sig: &Signaling,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Admission, Refusal> {
    let Some(raw) = credentials::join_token(headers, params) else {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            credentials::MISSING.into(),
        ));
    };
    let claims = sig.verify_join(raw).map_err(|e| {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
        Refusal(status, e.to_string())
    })?;
    sig.limits.check_claims(&claims).map_err(|e| {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("the join token is refused: {e}"),
        )
    })?;
    let relayed = relay::was_relayed(headers);
    // A request another node relayed here is served here or refused: one hop at most.
    let placing = if relayed {
        Placing::Here
    } else {
        Placing::Anywhere
    };
    match sig.claim_room(&claims.video.room, placing).await {
        Ok(()) => {}
        Err(PlacementRefused::OwnedElsewhere { room, owner }) if !relayed => {
            return Ok(Admission::Relay { owner, room });
        }
        Err(e) => {
            let status = match &e {
                PlacementRefused::OwnedElsewhere { .. } => StatusCode::CONFLICT,
                PlacementRefused::Unavailable { .. } | PlacementRefused::Draining { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            return Err(Refusal(status, e.to_string()));
        }
    }
    sig.rooms
        .check_capacity(&claims.video.room, &claims.sub)
        .map_err(|e| {
            let status = match &e {
                JoinRefused::TooManyRooms { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::FORBIDDEN,
            };
            Refusal(status, e.to_string())
        })?;
    Ok(Admission::Here(Box::new(claims)))
}

async fn rtc(
    State(sig): State<Arc<Signaling>>,
    Query(params): Params,
    request: Request,
) -> Response {
    let (claims, request) = match admit_or_relay(&sig, request, &params).await {
        Ok(admitted) => admitted,
        Err(answered) => return answered,
    };
    // Join latency is measured from here: the token is verified and the room has room.
    let verified_at = std::time::Instant::now();
    let accepted = match websocket::accept(request) {
        Ok(accepted) => accepted,
        Err(refusal) => return refusal.into_response(),
    };
    let join = JoinParams {
        auto_subscribe: params
            .get("auto_subscribe")
            .is_none_or(|v| v != "0" && v != "false"),
        reconnect: params
            .get("reconnect")
            .is_some_and(|v| v == "1" || v == "true"),
        sid: params.get("sid").cloned(),
        reconnect_reason: params.get("reconnect_reason").cloned(),
        verified_at,
        single_pc: false,
        offer: None,
    };
    upgrade(sig, accepted, claims, join)
}

/// How long a join waits for the room's node when it cannot be reached: a dead node's lease
/// lapses within its TTL and the room then opens on a live node, so a reconnecting client is
/// served on that attempt instead of backing off for seconds. Under livekit-client's 15 s
/// signal connect timeout.
const OWNER_LOST_WAIT: Duration = Duration::from_secs(8);

/// How often a waiting join asks again which node serves the room.
const OWNER_LOST_RETRY: Duration = Duration::from_millis(500);

/// Admits a join here (its claims, and the request to upgrade), or answers it: a refusal,
/// or the relay to the node serving the room.
async fn admit_or_relay(
    sig: &Arc<Signaling>,
    request: Request,
    params: &HashMap<String, String>,
) -> Result<(Claims, Request), Response> {
    let deadline = Instant::now() + OWNER_LOST_WAIT;
    loop {
        let (owner, room) = match admit(sig, request.headers(), params).await {
            Ok(Admission::Here(claims)) => return Ok((*claims, request)),
            Ok(Admission::Relay { owner, room }) => (owner, room),
            Err(refusal) => return Err(refusal.into_response()),
        };
        // Not a WebSocket: refused before the owner is asked to start a session.
        if let Err(refusal) = websocket::check(&request) {
            return Err(refusal.into_response());
        }
        let node_id = &sig.node_id;
        match relay::open(&owner, &room, node_id, request.uri(), request.headers()).await {
            Ok(upstream) => return Err(relay_to(Arc::clone(sig), request, upstream, owner, room)),
            Err(RelayRefused::Unreachable(answer)) if Instant::now() < deadline => {
                tracing::debug!(room, owner = owner.node_id, "waiting for the room's node");
                drop(answer);
                tokio::time::sleep(OWNER_LOST_RETRY).await;
            }
            Err(refused) => return Err(refused.into_response()),
        }
    }
}

/// Serves a join whose room another node serves: the owner's answer (the upgrade), then the
/// messages of both sides copied until either closes (`relay.rs`).
fn relay_to(
    sig: Arc<Signaling>,
    request: Request,
    upstream: relay::Upstream,
    owner: Owner,
    room: String,
) -> Response {
    let accepted = match websocket::accept(request) {
        Ok(accepted) => accepted,
        Err(refusal) => return refusal.into_response(),
    };
    tracing::debug!(
        room,
        owner = owner.node_id,
        "relaying a join to the room's node"
    );
    metrics::counter!("switchboard_signal_relays_total").increment(1);
    let write_timeout = sig.limits.signal_write_timeout;
    let upgrade = accepted.upgrade;
    tokio::spawn(async move {
        match SignalSocket::upgraded(upgrade).await {
            Ok(mut socket) => {
                socket.set_write_timeout(write_timeout);
                let relays = metrics::gauge!("switchboard_signal_relays");
                relays.increment(1.0);
                relay::pipe(socket, upstream, room).await;
                relays.decrement(1.0);
            }
            Err(e) => tracing::debug!("a relayed /rtc connection closed during the upgrade: {e}"),
        }
    });
    accepted.response
}

/// Runs the session once the WebSocket upgrade completes.
fn upgrade(
    sig: Arc<Signaling>,
    accepted: websocket::Accepted,
    claims: Claims,
    join: JoinParams,
) -> Response {
    let upgrade = accepted.upgrade;
    tokio::spawn(async move {
        match SignalSocket::upgraded(upgrade).await {
            Ok(socket) => session::run(sig, socket, claims, join).await,
            Err(e) => tracing::debug!("the /rtc connection closed during the upgrade: {e}"),
        }
    });
    accepted.response
}

async fn validate(
    State(sig): State<Arc<Signaling>>,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    match admit(&sig, &headers, &params).await {
        Ok(Admission::Here(_)) => text(StatusCode::OK, "success"),
        Ok(Admission::Relay { owner, room }) => {
            relay::validate(&owner, &room, &sig.node_id, &uri, &headers).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// Signaling v1: one PeerConnection, the join (and usually the first offer) in the
/// `join_request` parameter (`v1.rs`).
async fn rtc_v1(
    State(sig): State<Arc<Signaling>>,
    Query(params): Params,
    request: Request,
) -> Response {
    if !sig.single_pc {
        return v1_switched_off();
    }
    let (claims, request) = match admit_or_relay(&sig, request, &params).await {
        Ok(admitted) => admitted,
        Err(answered) => return answered,
    };
    let verified_at = std::time::Instant::now();
    let join_request = match crate::v1::decode(params.get("join_request").map(String::as_str)) {
        Ok(request) => request,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let accepted = match websocket::accept(request) {
        Ok(accepted) => accepted,
        Err(refusal) => return refusal.into_response(),
    };
    let join = JoinParams {
        // A JoinRequest without settings subscribes, as a v0 query without the parameter.
        auto_subscribe: join_request
            .connection_settings
            .as_ref()
            .is_none_or(|s| s.auto_subscribe),
        reconnect: join_request.reconnect,
        sid: Some(join_request.participant_sid.clone()).filter(|s| !s.is_empty()),
        reconnect_reason: crate::v1::reconnect_reason(&join_request),
        verified_at,
        single_pc: true,
        offer: join_request.publisher_offer,
    };
    upgrade(sig, accepted, claims, join)
}

async fn validate_v1(
    State(sig): State<Arc<Signaling>>,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    if !sig.single_pc {
        return v1_switched_off();
    }
    match admit(&sig, &headers, &params).await {
        Ok(Admission::Here(_)) => {}
        Ok(Admission::Relay { owner, room }) => {
            return relay::validate(&owner, &room, &sig.node_id, &uri, &headers).await;
        }
        Err(refusal) => return refusal.into_response(),
    }
    match crate::v1::decode(params.get("join_request").map(String::as_str)) {
        Ok(_) => text(StatusCode::OK, "success"),
        Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// With v1 switched off (`rtc.single_pc = false`) a 404 makes the SDKs fall back to `/rtc`.
fn v1_switched_off() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "signaling v1 (/rtc/v1) is switched off on this server; use /rtc",
    )
}

pub(crate) fn router(sig: Arc<Signaling>) -> Router {
    Router::new()
        .route("/rtc", get(rtc))
        .route("/rtc/validate", get(validate))
        .route("/rtc/v1", get(rtc_v1))
        .route("/rtc/v1/validate", get(validate_v1))
        .with_state(sig)
}
