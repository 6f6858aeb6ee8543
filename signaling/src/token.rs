//! Access tokens in LiveKit's JWT layout, so tokens minted by any LiveKit server SDK work here
//! and ours work with LiveKit tooling (see docs/PROTOCOL.md, "IDs and tokens").
//!
//! A token is an HS256 JWT whose `iss` names the API key that selects the signing secret, whose
//! `sub` is the participant identity and whose `video` claim carries the grants. Webhooks reuse
//! the same format with a `sha256` claim over the request body.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

/// Clock skew tolerated on `exp` and `nbf`, in seconds; PROTOCOL.md allows at most 60.
pub const LEEWAY_SECS: u64 = 60;

/// The only algorithm accepted: LiveKit's SDKs sign with HS256, and accepting anything else
/// (`none`, or an RSA header over an HMAC secret) is the classic JWT downgrade.
const ALLOWED_ALG: &str = "HS256";

/// The `video` claim: what the bearer may do. Field names match livekit-server-sdk's
/// `VideoGrant`; grants that Switchboard does not know (`agent`, `ingressAdmin`, ...) are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VideoGrant {
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub room: String,
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub room_join: bool,
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub room_create: bool,
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub room_list: bool,
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub room_admin: bool,
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub room_record: bool,
    /// `None` means "not said", which LiveKit treats as allowed; see [`VideoGrant::can_publish()`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_publish_data: Option<bool>,
    /// Track sources as LiveKit spells them on the wire: `camera`, `microphone`,
    /// `screen_share`, `screen_share_audio`. Empty means "any source".
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub can_publish_sources: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_update_own_metadata: Option<bool>,
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub hidden: bool,
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub recorder: bool,
    /// An agent: as a join grant, the participant is an agent; on a worker's token
    /// (`/agent`), the worker may register.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_as_default")]
    pub agent: bool,
}

impl VideoGrant {
    /// Whether the bearer may publish tracks; LiveKit's default is yes.
    pub fn can_publish(&self) -> bool {
        self.can_publish.unwrap_or(true)
    }

    /// Whether the bearer may subscribe to tracks; LiveKit's default is yes.
    pub fn can_subscribe(&self) -> bool {
        self.can_subscribe.unwrap_or(true)
    }

    /// Whether the bearer may send data packets; unless said otherwise, publishers may.
    pub fn can_publish_data(&self) -> bool {
        self.can_publish_data.unwrap_or_else(|| self.can_publish())
    }
}

/// The claims of a LiveKit access token. Unknown claims (`sip`, ...) are ignored when
/// parsing, as livekit-server-sdk adds more of them over time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Claims {
    /// The API key whose secret signed the token.
    #[serde(deserialize_with = "null_as_default")]
    pub iss: String,
    /// The participant identity; empty for server API and webhook tokens.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
    #[serde(deserialize_with = "null_as_default")]
    pub video: VideoGrant,
    /// The participant's kind: `agent` for LiveKit Agents (LiveKit also knows `standard`,
    /// `ingress`, `egress`, `sip`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The room's configuration, applied when this token's join creates the room: here,
    /// the agents to dispatch into it.
    #[serde(
        rename = "roomConfig",
        alias = "room_config",
        skip_serializing_if = "Option::is_none"
    )]
    pub room_config: Option<RoomConfig>,
    /// Base64 of the SHA-256 of a webhook body; binds a webhook token to its request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Expiry, Unix seconds. Defaults to 0 when absent only so that verification can report
    /// "no exp" itself instead of a generic parse error; a verified token always has one.
    pub exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// A token's `roomConfig` claim (LiveKit's `RoomConfiguration` in protobuf JSON): the
/// parts this server applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomConfig {
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub agents: Vec<RoomAgentDispatch>,
}

/// One agent a room's configuration dispatches when the room starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomAgentDispatch {
    #[serde(
        rename = "agentName",
        alias = "agent_name",
        deserialize_with = "null_as_default"
    )]
    pub agent_name: String,
    #[serde(deserialize_with = "null_as_default")]
    pub metadata: String,
}

impl Claims {
    /// Whether the bearer joins as an agent (LiveKit: `kind: agent`, or the agent grant).
    pub fn is_agent(&self) -> bool {
        self.kind.as_deref() == Some("agent") || self.video.agent
    }
}

/// Shortest and longest lifetime of a refreshed join token.
const REFRESHED_TTL: std::ops::RangeInclusive<u64> = 600..=6 * 3600;

impl Claims {
    /// The same grants, issued at `now` for as long as these claims were valid when issued
    /// (10 minutes to 6 hours): what a connected participant's client gets to resume with
    /// after its first token expired (`RefreshToken`).
    pub fn refreshed(&self, now: u64) -> Claims {
        let issued = self.iat.or(self.nbf).unwrap_or(now);
        let ttl = self
            .exp
            .saturating_sub(issued)
            .clamp(*REFRESHED_TTL.start(), *REFRESHED_TTL.end());
        Claims {
            exp: now.saturating_add(ttl),
            nbf: Some(now),
            iat: Some(now),
            jti: None,
            ..self.clone()
        }
    }

    /// Claims for joining `room` as `identity` for `ttl` from now, valid from now.
    pub fn for_join(
        api_key: impl Into<String>,
        identity: impl Into<String>,
        room: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        let now = now_secs();
        Claims {
            iss: api_key.into(),
            sub: identity.into(),
            exp: now.saturating_add(ttl.as_secs()),
            nbf: Some(now),
            // Revocations compare against the issue time (see revocations.rs).
            iat: Some(now),
            video: VideoGrant {
                room: room.into(),
                room_join: true,
                ..VideoGrant::default()
            },
            ..Claims::default()
        }
    }
}

/// API keys and their secrets. `Debug` lists the keys only, so a store can be logged safely.
#[derive(Clone, Default)]
pub struct KeyStore {
    secrets: HashMap<String, String>,
}

impl KeyStore {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        KeyStore {
            secrets: pairs.into_iter().collect(),
        }
    }

    pub fn secret(&self, api_key: &str) -> Option<&str> {
        self.secrets.get(api_key).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&str> = self.secrets.keys().map(String::as_str).collect();
        keys.sort_unstable();
        f.debug_struct("KeyStore").field("api_keys", &keys).finish()
    }
}

/// Why a token was refused (or could not be minted). Messages are meant for the person holding
/// the token: the `/rtc/validate` endpoint shows them to the client as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token algorithm {0:?} is not allowed; tokens must be signed with HS256")]
    AlgorithmNotAllowed(String),
    #[error("token is signed with unknown API key {0:?}")]
    UnknownApiKey(String),
    #[error("token signature does not match (wrong API secret?)")]
    BadSignature,
    #[error("token has no expiry (the exp claim is required)")]
    MissingExpiry,
    #[error("token expired at {}", Rfc3339(*.exp))]
    Expired { exp: u64 },
    #[error("token is not valid before {}", Rfc3339(*.nbf))]
    NotYetValid { nbf: u64 },
    #[error("token does not grant roomJoin")]
    MissingRoomJoin,
    #[error("token names no room (video.room is empty)")]
    MissingRoom,
    #[error("token has no identity (sub is empty)")]
    MissingIdentity,
    /// The identity was removed from the room after this token was issued.
    #[error("you were removed from room {room}; ask for a new token")]
    Revoked { room: String },
    /// The token's room name or identity breaks the naming rule (names.rs).
    #[error("{0} (in the token)")]
    BadName(#[from] crate::names::NameError),
    /// Only from [`issue`]: the claims or key cannot make a valid token.
    #[error("cannot issue token: {0}")]
    Issue(String),
}

impl TokenError {
    /// The HTTP status to answer with: 401 when the token itself is not acceptable, 403 when
    /// it is genuine but does not allow joining, 500 for our own minting failures.
    pub fn http_status(&self) -> u16 {
        match self {
            TokenError::Malformed(_)
            | TokenError::AlgorithmNotAllowed(_)
            | TokenError::UnknownApiKey(_)
            | TokenError::BadSignature
            | TokenError::MissingExpiry
            | TokenError::Expired { .. }
            | TokenError::NotYetValid { .. } => 401,
            TokenError::MissingRoomJoin
            | TokenError::MissingRoom
            | TokenError::MissingIdentity
            | TokenError::Revoked { .. } => 403,
            TokenError::BadName(_) => 400,
            TokenError::Issue(_) => 500,
        }
    }
}

/// Signs `claims` with HS256. The token's `iss` is always `api_key`, since that is how the
/// verifier finds the secret; `claims.iss` may be empty or equal to it.
pub fn issue(api_key: &str, secret: &str, claims: &Claims) -> Result<String, TokenError> {
    if api_key.is_empty() || secret.is_empty() {
        return Err(TokenError::Issue(
            "API key and secret must not be empty".to_owned(),
        ));
    }
    if claims.exp == 0 {
        return Err(TokenError::Issue(
            "claims have no expiry (exp is 0)".to_owned(),
        ));
    }
    let claims = if claims.iss == api_key {
        Cow::Borrowed(claims)
    } else if claims.iss.is_empty() {
        Cow::Owned(Claims {
            iss: api_key.to_owned(),
            ..claims.clone()
        })
    } else {
        return Err(TokenError::Issue(format!(
            "claims.iss {:?} differs from the signing API key {api_key:?}",
            claims.iss
        )));
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &*claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|err| TokenError::Issue(err.to_string()))
}

/// The part of the header we must see before trusting anything else.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
}

/// Checks algorithm, API key, signature, `exp` and `nbf` (each with [`LEEWAY_SECS`]).
/// Grants are not checked; see [`verify_join`]. This is the token's own validity only: every
/// server surface goes through `Signaling::verify`, which adds names and revocations.
pub fn verify(token: &str, keys: &KeyStore) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "expected three base64url parts separated by '.'".to_owned(),
        ));
    };
    // Read by hand rather than with jsonwebtoken::decode_header: its `Algorithm` enum has no
    // `none`, and "unknown variant" is no help to someone holding an unsigned token.
    let header: RawHeader = decode_part(header, "header")?;
    if header.alg != ALLOWED_ALG {
        return Err(TokenError::AlgorithmNotAllowed(header.alg));
    }
    // The unverified claims only pick the secret and word the exp/nbf errors (jsonwebtoken
    // checks those after the signature, so by then the values are authentic); everything
    // returned comes from the verified decode below.
    let unverified: Claims = decode_part(payload, "payload")?;
    if unverified.iss.is_empty() {
        return Err(TokenError::Malformed(
            "no issuer (iss must name the API key)".to_owned(),
        ));
    }
    let secret = keys
        .secret(&unverified.iss)
        .ok_or_else(|| TokenError::UnknownApiKey(unverified.iss.clone()))?;

    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY_SECS;
    validation.set_required_spec_claims(&["exp"]);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    // LiveKit tokens carry no audience; an `aud` added by some minter must not make us refuse.
    validation.validate_aud = false;

    let key = DecodingKey::from_secret(secret.as_bytes());
    match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
        Ok(data) => Ok(data.claims),
        Err(err) => Err(match err.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::ExpiredSignature => TokenError::Expired {
                exp: unverified.exp,
            },
            ErrorKind::ImmatureSignature => TokenError::NotYetValid {
                nbf: unverified.nbf.unwrap_or_default(),
            },
            ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => TokenError::MissingExpiry,
            ErrorKind::InvalidAlgorithm => TokenError::AlgorithmNotAllowed(header.alg),
            // Header and payload were decoded above, so only the signature can be bad base64.
            ErrorKind::Base64(b64_err) => {
                TokenError::Malformed(format!("signature is not base64url: {b64_err}"))
            }
            _ => TokenError::Malformed(err.to_string()),
        }),
    }
}

/// [`verify`], then the checks for joining a room: `roomJoin`, a room and an identity.
/// Server surfaces use `Signaling::verify_join` instead, which adds the naming rule and the
/// revocations.
pub fn verify_join(token: &str, keys: &KeyStore) -> Result<Claims, TokenError> {
    require_join_grants(verify(token, keys)?)
}

/// The grants joining a room needs: `roomJoin`, a room and an identity.
pub(crate) fn require_join_grants(claims: Claims) -> Result<Claims, TokenError> {
    if !claims.video.room_join {
        return Err(TokenError::MissingRoomJoin);
    }
    if claims.video.room.is_empty() {
        return Err(TokenError::MissingRoom);
    }
    if claims.sub.is_empty() {
        return Err(TokenError::MissingIdentity);
    }
    Ok(claims)
}

/// Seconds since the Unix epoch. A clock set before 1970 reads as 0, which makes every token
/// look not-yet-valid rather than panicking.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn decode_part<T: DeserializeOwned>(part: &str, what: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|err| TokenError::Malformed(format!("{what} is not base64url: {err}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|err| TokenError::Malformed(format!("{what} does not parse: {err}")))
}

/// Go's encoding/json, which LiveKit's server uses, reads `null` as "absent"; so do we, so
/// that SDKs emitting nulls for unset grants still interoperate.
fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

// Takes a reference because that is what serde's skip_serializing_if passes.
fn is_false(value: &bool) -> bool {
    !*value
}

/// Unix seconds shown as RFC 3339 UTC (`2026-11-21T05:00:00Z`), for error messages; a date
/// crate would be a whole dependency for one line of output.
struct Rfc3339(u64);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (days, secs_of_day) = (self.0 / 86_400, self.0 % 86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            secs_of_day / 3600,
            secs_of_day / 60 % 60,
            secs_of_day % 60
        )
    }
}

/// Howard Hinnant's `civil_from_days` (proleptic Gregorian), restricted to days on or after
/// 1970-01-01 so that everything stays unsigned. Eras are 400-year cycles starting 0000-03-01,
/// which puts the leap day at the end of each year of the computation.
fn civil_from_days(days_since_epoch: u64) -> (u64, u64, u64) {
    let z = days_since_epoch + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1, [0, 365]
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests;
