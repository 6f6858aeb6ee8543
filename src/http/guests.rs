//! Guest links (seed 004): `GET /v1/rooms/{room_id}/guest-token?name=…` gives anyone a join
//! token with a random `guest-<room>-<random>` identity, when the room allows guests.
//! Rate-limited per client address, since it needs no credentials.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, State};
use axum::Json;
use rand::Rng;
use serde::Deserialize;
use switchboard_signaling::token::{self, Claims};

use super::api_json::ApiQuery;
use super::problem::Problem;
use super::tokens::TokenResponse;
use super::AppState;
use crate::control::ControlError;
use crate::store::RoomStatus;

/// Guest tokens live long enough for one call.
const GUEST_TTL: Duration = Duration::from_secs(2 * 3600);

/// A fixed-window counter per client address.
pub struct GuestLimiter {
    per_window: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl GuestLimiter {
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request from `ip`; `Err(seconds until the window resets)` when over the limit.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        // A poisoned lock still holds valid counters.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 10_000 {
            seen.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let entry = seen.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.per_window {
            let reset = self.window.saturating_sub(now.duration_since(entry.0));
            return Err(reset.as_secs().max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
pub struct GuestQuery {
    name: Option<String>,
}

pub async fn guest_token(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Path(room_id): Path<String>,
    ApiQuery(query): ApiQuery<GuestQuery>,
) -> Result<Json<TokenResponse>, Problem> {
    // Counted per client as the other per-address limits are (an IPv6 client is its /64).
    let client = super::conn::client_key(remote.ip());
    if let Err(retry) = state.guest_limiter.check(client, Instant::now()) {
        return Err(ControlError::RateLimited {
            retry_after_secs: retry,
        }
        .into());
    }
    state.control.check_room_id(&room_id)?;
    let room = state.control.store.get_room(&room_id).await?;
    if room.status != RoomStatus::Active {
        return Err(ControlError::RoomNotActive { room_id }.into());
    }
    if !room.guest_access {
        return Err(Problem::forbidden(format!(
            "room {room_id} does not allow guests; ask its host for an invitation"
        )));
    }
    let name = query.name.unwrap_or_default().trim().to_owned();
    if name.chars().count() > 64 {
        return Err(Problem::bad_request("name must be at most 64 characters"));
    }
    let suffix: String = (0..8)
        .map(|_| char::from(b"abcdefghijkmnpqrstuvwxyz23456789"[rand::rng().random_range(0..32)]))
        .collect();
    let identity = format!("guest-{room_id}-{suffix}");
    let api_key = state
        .keys
        .keys()
        .next()
        .cloned()
        .ok_or_else(|| Problem::internal("no API key is configured"))?;
    let secret = state
        .keys
        .get(&api_key)
        .ok_or_else(|| Problem::internal("no API key is configured"))?;
    let mut claims = Claims::for_join(
        api_key.clone(),
        identity.clone(),
        room_id.clone(),
        GUEST_TTL,
    );
    claims.name = (!name.is_empty()).then_some(name);
    claims.attributes = Some([("role".to_owned(), "guest".to_owned())].into());
    claims.video.can_publish = Some(true);
    claims.video.can_subscribe = Some(true);
    let token = token::issue(&api_key, secret, &claims)
        .map_err(|e| Problem::internal(format!("could not sign the token: {e}")))?;
    Ok(Json(TokenResponse {
        token,
        url: state.public_ws_url.clone(),
        room_id,
        identity,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_per_address_and_window() {
        let limiter = GuestLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(limiter.check(a, t0).is_ok());
        assert!(limiter.check(a, t0).is_ok());
        assert_eq!(limiter.check(a, t0 + Duration::from_secs(10)), Err(50));
        assert!(
            limiter.check(b, t0).is_ok(),
            "another address has its own budget"
        );
        assert!(
            limiter.check(a, t0 + Duration::from_secs(61)).is_ok(),
            "a new window"
        );
    }
}
