//! Join tokens over HTTP: `POST /v1/rooms/{room_id}/tokens` for hosts' backends, and the
//! dev-mode `POST /v1/dev/token` the demo page uses.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;
use rand::Rng;
use serde::{Deserialize, Serialize};
use switchboard_signaling::token::{self, Claims};

use super::api_json::ApiJson;
use super::auth::{Caller, Need};
use super::problem::Problem;
use super::AppState;

/// Longest lifetime a token minted over HTTP may ask for.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_TTL: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub token: String,
    pub url: String,
    pub room_id: String,
    pub identity: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostTokenRequest {
    identity: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    metadata: Option<String>,
    /// Lifetime in seconds (default 6 h, at most 24 h).
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    can_publish: Option<bool>,
    #[serde(default)]
    can_subscribe: Option<bool>,
    #[serde(default)]
    can_publish_data: Option<bool>,
    /// Grant roomAdmin for this room (a host).
    #[serde(default)]
    admin: bool,
}

fn ttl(requested: Option<u64>) -> Result<Duration, Problem> {
    match requested {
        None => Ok(DEFAULT_TTL),
        Some(0) => Err(Problem::bad_request("ttl_secs must be positive")),
        Some(secs) if Duration::from_secs(secs) > MAX_TTL => Err(Problem::bad_request(format!(
            "ttl_secs {secs} is longer than the maximum of {} seconds",
            MAX_TTL.as_secs()
        ))),
        Some(secs) => Ok(Duration::from_secs(secs)),
    }
}

/// The URL a client should join `room_id` at: its owner's when another node serves it (any
/// node would relay the join, the owner saves the hop), else this node's. A store that
/// cannot answer gives this node's URL: it relays too.
async fn join_url(state: &AppState, room_id: &str) -> String {
    match state
        .control
        .store
        .room_owner(room_id, crate::control::now())
        .await
    {
        Ok(Some(lease)) => lease
            .public_url
            .unwrap_or_else(|| state.public_ws_url.clone()),
        Ok(None) => state.public_ws_url.clone(),
        Err(e) => {
            tracing::warn!(
                room_id,
                "cannot look up the room's node for its join URL: {e}"
            );
            state.public_ws_url.clone()
        }
    }
}

fn sign(state: &AppState, claims: &Claims) -> Result<String, Problem> {
    token::issue(&claims.iss, state.signing_secret(&claims.iss)?, claims)
        .map_err(|e| Problem::internal(format!("could not sign the token: {e}")))
}

/// `POST /v1/rooms/{room_id}/tokens`: a host's backend (bearer JWT with roomCreate, or
/// roomAdmin for this room) asks for a join token. With roomCreate the room is created on
/// demand, so it exists before the token is returned (seed 002).
pub async fn create_for_room(
    State(state): State<AppState>,
    caller: Caller,
    Path(room_id): Path<String>,
    ApiJson(request): ApiJson<HostTokenRequest>,
) -> Result<Json<TokenResponse>, Problem> {
    let target = format!("{room_id}/{}", request.identity);
    let result: Result<_, Problem> = async {
        caller.require(Need::Admin(&room_id))?;
        state.control.check_identity(&request.identity)?;
        if caller.claims.video.room_create {
            state.control.ensure_room(&room_id).await?;
        }
        let mut claims = Claims::for_join(
            caller.claims.iss.clone(),
            request.identity.clone(),
            room_id.clone(),
            ttl(request.ttl_secs)?,
        );
        claims.name = request.name;
        claims.metadata = request.metadata;
        claims.video.can_publish = request.can_publish;
        claims.video.can_subscribe = request.can_subscribe;
        claims.video.can_publish_data = request.can_publish_data;
        claims.video.room_admin = request.admin;
        let token = sign(&state, &claims)?;
        Ok(Json(TokenResponse {
            token,
            url: join_url(&state, &room_id).await,
            room_id,
            identity: request.identity,
        }))
    }
    .await;
    state
        .audited(&caller, "token.create", &target, result)
        .await
}

#[derive(Debug, Deserialize)]
pub struct DevTokenRequest {
    room_id: String,
    #[serde(default)]
    name: Option<String>,
}

/// An identity from a display name: lowercase letters and digits, plus a random suffix so
/// two people called "Alice" are two participants.
fn identity_from_name(name: &str) -> String {
    let mut base: String = name
        .chars()
        .filter_map(|c| {
            if c.is_ascii_alphanumeric() {
                Some(c.to_ascii_lowercase())
            } else if c == ' ' || c == '-' || c == '_' {
                Some('-')
            } else {
                None
            }
        })
        .take(32)
        .collect();
    if base.trim_matches('-').is_empty() {
        base = "guest".into();
    }
    let suffix: u32 = rand::rng().random_range(0x1000..0xffff);
    format!("{}-{suffix:x}", base.trim_matches('-'))
}

/// `POST /v1/dev/token`: only in `--dev`, a join token for the demo page.
pub async fn create_dev(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<DevTokenRequest>,
) -> Result<Json<TokenResponse>, Problem> {
    if !state.dev {
        return Err(Problem::not_found(
            "dev tokens are only served with `switchboard serve --dev`; ask your backend for a token",
        ));
    }
    state.control.check_room_id(&request.room_id)?;
    let name = request.name.unwrap_or_default();
    let identity = identity_from_name(&name);
    let api_key = state
        .first_key()
        .ok_or_else(|| Problem::internal("no API key is configured"))?;
    let mut claims = Claims::for_join(
        api_key,
        identity.clone(),
        request.room_id.clone(),
        DEFAULT_TTL,
    );
    if !name.trim().is_empty() {
        claims.name = Some(name.trim().to_owned());
    }
    let token = sign(&state, &claims)?;
    Ok(Json(TokenResponse {
        token,
        url: join_url(&state, &request.room_id).await,
        room_id: request.room_id,
        identity,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_from_names_are_safe_and_distinct() {
        let a = identity_from_name("Alice Smith!");
        let b = identity_from_name("Alice Smith!");
        assert!(a.starts_with("alice-smith-"), "{a}");
        assert_ne!(a, b);
        assert!(identity_from_name("  ").starts_with("guest-"));
    }

    #[test]
    fn ttl_limits() {
        assert_eq!(ttl(None).unwrap(), DEFAULT_TTL);
        assert!(ttl(Some(0)).is_err());
        assert!(ttl(Some(MAX_TTL.as_secs() + 1)).is_err());
        assert_eq!(ttl(Some(60)).unwrap(), Duration::from_secs(60));
    }
}
