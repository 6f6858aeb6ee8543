//! WHIP (RFC 9725) and WHEP: publishing and watching with plain HTTP signaling, with the
//! same room tokens as the LiveKit protocol. A WHIP publisher is an ordinary participant of
//! its room (others see it join and subscribe to its tracks); a WHEP viewer is a hidden
//! participant whose receive-only m-lines carry one publisher's audio and video.
//!
//! `POST /whip` and `POST /whep` create a session resource (`Location: /whip/{id}`);
//! `PATCH` on it trickles candidates or restarts ICE; `DELETE` ends it.

#[cfg(feature = "fuzz")]
pub(crate) mod fuzz;
mod problem;
mod resource;
mod sdp;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use switchboard_sfu::{DtlsPeers, JoinOptions, PeerRole, SfuError};

use crate::credentials;
use crate::rooms::JoinRefused;
use crate::token::Claims;
use crate::Signaling;
use crate::{Owner, PlacementRefused, Placing};
pub(crate) use problem::Problem;
use resource::{Kind, Resource};

/// The session resources of this node, by id.
#[derive(Default)]
pub(crate) struct Resources(Mutex<HashMap<String, Arc<Resource>>>);

impl Resources {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Resource>>> {
        // A panic while holding the lock leaves a plain map: still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, kind: Kind, id: &str) -> Option<Arc<Resource>> {
        self.lock().get(id).filter(|r| r.kind == kind).cloned()
    }

    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// Seconds a client is asked to wait before retrying a full room.
const FULL_RETRY_AFTER_SECS: u64 = 5;

/// Verifies the bearer token as a join token for its room.
fn authenticate(
    sig: &Signaling,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Claims, Problem> {
    let raw = credentials::join_token(headers, query).ok_or_else(|| {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "missing token",
            credentials::MISSING,
        )
    })?;
    let claims = sig.verify_join(raw).map_err(|e| {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
        Problem::new(status, "token refused", e.to_string())
    })?;
    sig.limits
        .check_claims(&claims)
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "token refused", e.to_string()))?;
    Ok(claims)
}

fn require_content_type(headers: &HeaderMap, wanted: &str) -> Result<(), Problem> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = given.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case(wanted) {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported content type",
            format!("expected Content-Type {wanted}, got {given:?}"),
        ))
    }
}

fn body_text(body: &Bytes) -> Result<&str, Problem> {
    std::str::from_utf8(body).map_err(|_| Problem::bad_request("the body is not UTF-8 text"))
}

/// Refuses an offer with more m-lines than `max_media_sections`, or more candidates than
/// `max_remote_candidates`, before anything reads it further (the media plane checks again;
/// this answers before the room is joined).
fn check_offer_size(sig: &Signaling, sdp_text: &str) -> Result<(), Problem> {
    let (sent, limit) = (sdp::media_sections(sdp_text), sig.sfu.max_media_sections());
    if sent > limit {
        return Err(negotiation_problem(SfuError::TooManyMediaSections {
            sent,
            limit,
        }));
    }
    let (sent, limit) = (sdp::candidates(sdp_text), sig.sfu.max_remote_candidates());
    if sent > limit {
        return Err(negotiation_problem(SfuError::TooManyCandidates {
            sent,
            limit,
        }));
    }
    Ok(())
}

/// Checks an offer for what this endpoint needs: at least one m-line in the right
/// direction with a codec we forward.
fn check_offer(sdp_text: &str, kind: Kind) -> Result<sdp::Offer, Problem> {
    let offer = sdp::inspect(sdp_text).map_err(Problem::bad_request)?;
    let (wanted, verb) = match kind {
        Kind::Publish => (
            offer.media.iter().filter(|m| m.sends()).collect::<Vec<_>>(),
            "send",
        ),
        Kind::Play => (
            offer.media.iter().filter(|m| m.receives()).collect(),
            "receive",
        ),
    };
    if wanted.is_empty() {
        return Err(Problem::bad_request(format!(
            "no audio or video m-line of the offer is set to {verb} (a={verb}only or a=sendrecv)"
        )));
    }
    if wanted.iter().all(|m| m.supported_codec().is_none()) {
        let offered: Vec<&str> = wanted
            .iter()
            .flat_map(|m| m.codecs.iter().map(String::as_str))
            .filter(|c| !matches!(*c, "rtx" | "red" | "ulpfec" | "flexfec-03"))
            .collect();
        return Err(Problem::new(
            StatusCode::NOT_ACCEPTABLE,
            "no supported codec",
            format!(
                "none of the offered codecs ({}) can be forwarded; supported: {}",
                offered.join(", "),
                sdp::accepted_codecs()
            ),
        ));
    }
    Ok(offer)
}

/// A media-plane error of an offer as the client should see it.
fn negotiation_problem(e: SfuError) -> Problem {
    match e {
        SfuError::BadSdp(reason) => {
            Problem::bad_request(format!("the SDP offer could not be parsed: {reason}"))
        }
        SfuError::Negotiation(reason) => {
            Problem::bad_request(format!("the offer could not be answered: {reason}"))
        }
        SfuError::TooManyMediaSections { sent, limit } => Problem::bad_request(format!(
            "the offer has {sent} media sections (m-lines); at most {limit} are accepted \
             (max_media_sections)"
        )),
        SfuError::TooManyCandidates { sent, limit } => Problem::bad_request(format!(
            "the SDP has {sent} ICE candidates; at most {limit} are accepted \
             (max_remote_candidates)"
        )),
        other => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "media server unavailable",
            other.to_string(),
        ),
    }
}

fn created(sig: &Signaling, kind: Kind, resource: &Resource, answer: String) -> Response {
    let location = format!("/{}/{}", kind.path(), resource.id);
    let mut response = (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/sdp")],
        answer,
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&resource.etag()) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(
        "accept-patch",
        HeaderValue::from_static("application/trickle-ice-sdpfrag"),
    );
    let now = std::time::SystemTime::now();
    for server in &sig.ice_servers {
        let server = server.for_participant(&resource.identity, now);
        if let Ok(v) = HeaderValue::from_str(&server.link_header()) {
            headers.append(header::LINK, v);
        }
    }
    response
}

async fn start(
    sig: Arc<Signaling>,
    kind: Kind,
    uri: Uri,
    headers: HeaderMap,
    query: HashMap<String, String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let claims = authenticate(&sig, &headers, &query)?;
    let preferred = match kind {
        Kind::Play => query.get("participant").filter(|p| !p.is_empty()).cloned(),
        Kind::Publish => None,
    };
    let allowed = match kind {
        Kind::Publish => claims.video.can_publish(),
        Kind::Play => claims.video.can_subscribe(),
    };
    if !allowed {
        let grant = match kind {
            Kind::Publish => "canPublish",
            Kind::Play => "canSubscribe",
        };
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "grant missing",
            format!(
                "the token does not grant {grant} in room {:?}",
                claims.video.room
            ),
        ));
    }
    require_content_type(&headers, "application/sdp")?;
    let sdp_text = body_text(&body)?;
    check_offer_size(&sig, sdp_text)?;
    let offer = check_offer(sdp_text, kind)?;
    match sig.claim_room(&claims.video.room, Placing::Anywhere).await {
        Ok(()) => {}
        Err(PlacementRefused::OwnedElsewhere { owner, .. }) if owner.public_url.is_some() => {
            return Ok(redirect_to(&owner, &uri));
        }
        Err(refused) => return Err(placement_refusal(refused)),
    }
    if let Err(refused) = sig.rooms.check_capacity(&claims.video.room, &claims.sub) {
        return Err(room_refusal(refused));
    }
    let options = match kind {
        Kind::Publish => JoinOptions {
            auto_subscribe: false,
            can_subscribe: false,
            can_publish: true,
            single_pc: false,
            dtls: DtlsPeers::EcdsaOrRsa,
        },
        Kind::Play => JoinOptions {
            auto_subscribe: false,
            can_subscribe: true,
            can_publish: false,
            // A player's one PC is its subscriber PC (`viewer.rs`).
            single_pc: false,
            dtls: DtlsPeers::EcdsaOrRsa,
        },
    };
    let (resource, answer) =
        resource::open(&sig, kind, claims, options, &offer, sdp_text, preferred).await?;
    let response = created(&sig, kind, &resource, answer);
    sig.whip.lock().insert(resource.id.clone(), resource);
    Ok(response)
}

fn room_refusal(refused: JoinRefused) -> Problem {
    try_again_soon("room unavailable", refused.to_string())
}

/// A 503 whose cause passes within seconds (`Retry-After`).
fn try_again_soon(title: &'static str, detail: String) -> Problem {
    let mut problem = Problem::new(StatusCode::SERVICE_UNAVAILABLE, title, detail);
    problem.retry_after = Some(FULL_RETRY_AFTER_SECS);
    problem
}

/// Sends the offer to the node serving the room: a 307 keeps the method and the body, and
/// the resource URL the owner answers with is relative, so PATCH and DELETE go there too.
fn redirect_to(owner: &Owner, uri: &Uri) -> Response {
    let base = owner.public_http_url().unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("{base}{path}");
    let problem = Problem::new(
        StatusCode::TEMPORARY_REDIRECT,
        "room on another node",
        format!(
            "this room is served by node {}: send the offer to {location}",
            owner.node_id
        ),
    );
    let mut response = problem.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Another node serves the room (409), nobody can tell right now, or this node is draining
/// (503).
fn placement_refusal(refused: PlacementRefused) -> Problem {
    match refused {
        PlacementRefused::OwnedElsewhere { .. } => Problem::new(
            StatusCode::CONFLICT,
            "room on another node",
            refused.to_string(),
        ),
        PlacementRefused::Unavailable { .. } => {
            try_again_soon("room placement unavailable", refused.to_string())
        }
        PlacementRefused::Draining { .. } => try_again_soon("node draining", refused.to_string()),
    }
}

/// `POST /whip` or `POST /whep[?participant=IDENTITY]`.
async fn post_offer(
    State(sig): State<Arc<Signaling>>,
    kind: Kind,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    start(sig, kind, uri, headers, query, body).await
}

/// The resource a PATCH or DELETE names, if the caller's token is for it.
fn owned(
    sig: &Signaling,
    kind: Kind,
    id: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Arc<Resource>, Problem> {
    let claims = authenticate(sig, headers, query)?;
    let resource = sig.whip.get(kind, id).ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "no such session",
            format!("{} session {id} does not exist (or has ended)", kind.name()),
        )
    })?;
    if claims.video.room != resource.room || claims.sub != resource.identity {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "not your session",
            "the token is for another participant than the one that created this session",
        ));
    }
    Ok(resource)
}

/// `PATCH /whip/{id}` or `/whep/{id}`: trickled candidates or an ICE restart.
async fn patch(
    State(sig): State<Arc<Signaling>>,
    kind: Kind,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let resource = owned(&sig, kind, &id, &headers, &query)?;
    require_content_type(&headers, "application/trickle-ice-sdpfrag")?;
    if let Some(wanted) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        if wanted.trim() != "*" && wanted.trim() != resource.etag() {
            return Err(Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "stale session",
                format!(
                    "If-Match {wanted} does not match the session's ETag {}",
                    resource.etag()
                ),
            ));
        }
    }
    let frag = sdp::parse_sdpfrag(body_text(&body)?).map_err(Problem::bad_request)?;
    let limit = sig.sfu.max_remote_candidates();
    if frag.candidates.len() > limit {
        return Err(Problem::bad_request(format!(
            "the fragment has {} ICE candidates; at most {limit} are accepted \
             (max_remote_candidates)",
            frag.candidates.len()
        )));
    }
    let role = match kind {
        Kind::Publish => PeerRole::Publisher,
        Kind::Play => PeerRole::Subscriber,
    };
    let restart = match (&frag.ice_ufrag, &frag.ice_pwd) {
        (Some(ufrag), Some(pwd)) if *ufrag != resource.remote_ufrag() => Some((ufrag, pwd)),
        _ => None,
    };
    let answer = match restart {
        Some((ufrag, pwd)) => {
            let (local_ufrag, local_pwd) = resource
                .media
                .ice_restart(role, ufrag.clone(), pwd.clone())
                .await
                .map_err(negotiation_problem)?;
            resource.restarted(ufrag);
            Some(format!(
                "a=ice-ufrag:{local_ufrag}\r\na=ice-pwd:{local_pwd}\r\n"
            ))
        }
        None => None,
    };
    for candidate in frag.candidates {
        let _ = resource.media.remote_candidate(role, candidate);
    }
    let mut response = match answer {
        Some(frag) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/trickle-ice-sdpfrag")],
            frag,
        )
            .into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&resource.etag()) {
        response.headers_mut().insert(header::ETAG, v);
    }
    Ok(response)
}

/// `DELETE /whip/{id}` or `/whep/{id}`: the session ends.
async fn delete(
    State(sig): State<Arc<Signaling>>,
    kind: Kind,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let resource = owned(&sig, kind, &id, &headers, &query)?;
    sig.whip.remove(&id);
    resource.end().await;
    Ok(StatusCode::OK.into_response())
}

/// Which protocol a request speaks, from the path it came in on: one set of handlers
/// serves both.
impl<S: Send + Sync> FromRequestParts<S> for Kind {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(if parts.uri.path().starts_with("/whep") {
            Kind::Play
        } else {
            Kind::Publish
        })
    }
}

pub(crate) fn router(sig: Arc<Signaling>) -> Router {
    Router::new()
        // OPTIONS (CORS preflights and capability queries) is answered by the server's
        // CORS layer, which adds Accept-Post/Accept-Patch on these paths.
        .route("/whip", post(post_offer))
        .route("/whip/{id}", axum::routing::patch(patch).delete(delete))
        .route("/whep", post(post_offer))
        .route("/whep/{id}", axum::routing::patch(patch).delete(delete))
        .with_state(sig)
}
