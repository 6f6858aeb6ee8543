//! Who is calling the admin API, what their token lets them do, and the audit trail of what
//! they did (seed 001).
//!
//! Callers authenticate like LiveKit's server SDKs: `Authorization: Bearer <JWT>` signed by a
//! configured API key, with grants: `roomCreate` (create/delete rooms; also manages their
//! sessions), `roomList` (read), `roomAdmin` + `room` (everything about that one room),
//! `roomRecord` (report egress status).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use switchboard_signaling::token::Claims;
use switchboard_signaling::NameRules;
use tracing::warn;

use super::problem::Problem;
use super::AppState;
use crate::control::now;
use crate::store::AuditEntry;

/// An authenticated API caller.
pub struct Caller {
    pub claims: Claims,
    pub remote: Option<SocketAddr>,
    /// The naming rule every room an operation names is checked against.
    names: NameRules,
}

/// What an operation needs from the caller's token.
#[derive(Debug, Clone, Copy)]
pub enum Need<'a> {
    /// roomCreate.
    Create,
    /// roomList, or roomAdmin for this room.
    Read(&'a str),
    /// roomList (every room).
    List,
    /// roomAdmin for this room, or roomCreate.
    Admin(&'a str),
    /// roomRecord or roomAdmin for this room, or roomCreate.
    Record(&'a str),
    /// Anything above for this room, or a join token for it.
    Member(&'a str),
}

impl<'a> Need<'a> {
    fn room(self) -> Option<&'a str> {
        match self {
            Need::Create | Need::List => None,
            Need::Read(room) | Need::Admin(room) | Need::Record(room) | Need::Member(room) => {
                Some(room)
            }
        }
    }
}

impl Caller {
    fn admin_of(&self, room: &str) -> bool {
        self.claims.video.room_admin && self.claims.video.room == room
    }

    /// Checks a grant; the refusal says which grant was missing. A room the operation names
    /// (a path, a body, a Twirp request) must follow the naming rule first: 400 otherwise,
    /// so every room-scoped operation of `/v1` and Twirp checks it here.
    pub fn require(&self, need: Need<'_>) -> Result<(), Problem> {
        if let Some(room) = need.room() {
            self.names
                .check_room(room)
                .map_err(|e| Problem::bad_request(e.to_string()))?;
        }
        let v = &self.claims.video;
        let (ok, wanted) = match need {
            Need::Create => (v.room_create, "roomCreate".to_owned()),
            Need::List => (v.room_list, "roomList".to_owned()),
            Need::Read(room) => (
                v.room_list || self.admin_of(room),
                format!("roomList, or roomAdmin for room {room:?}"),
            ),
            Need::Admin(room) => (
                v.room_create || self.admin_of(room),
                format!("roomAdmin for room {room:?} (or roomCreate)"),
            ),
            Need::Record(room) => (
                // LiveKit's egress tokens carry roomRecord without a room: any room then.
                v.room_create
                    || self.admin_of(room)
                    || (v.room_record && (v.room.is_empty() || v.room == room)),
                format!("roomRecord or roomAdmin for room {room:?} (or roomCreate)"),
            ),
            Need::Member(room) => (
                v.room_create
                    || v.room_list
                    || self.admin_of(room)
                    || (v.room_join && v.room == room),
                format!("a token for room {room:?}"),
            ),
        };
        if ok {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "this operation needs {wanted}; the token (API key {:?}, identity {:?}) does not grant it",
                self.claims.iss, self.claims.sub
            )))
        }
    }

    fn actor(&self) -> String {
        if self.claims.sub.is_empty() {
            self.claims.iss.clone()
        } else {
            format!("{}/{}", self.claims.iss, self.claims.sub)
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let remote = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let value = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Problem::unauthorized(
                    "missing Authorization header: send \"Bearer <JWT>\" signed with an API key",
                )
            })?;
        let raw = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header must be \"Bearer <JWT>\"")
            })?;
        // The same check as /rtc and WHIP: signature, time, names and revocations, so a
        // removed host's token stops working here too.
        let claims = state
            .signaling
            .verify(raw.trim())
            .map_err(|e| match e.http_status() {
                400 => Problem::bad_request(e.to_string()),
                403 => Problem::forbidden(e.to_string()),
                _ => Problem::unauthorized(e.to_string()),
            })?;
        Ok(Caller {
            claims,
            remote,
            names: state.signaling.names(),
        })
    }
}

impl AppState {
    /// Records an admin operation and its outcome, then passes the result through. A failure
    /// to write the audit entry is logged, never hidden behind the operation's result.
    pub async fn audited<T>(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        result: Result<T, Problem>,
    ) -> Result<T, Problem> {
        let (outcome, detail) = match &result {
            Ok(_) => ("ok", None),
            Err(p) if p.status == 401 || p.status == 403 => ("denied", Some(p.detail.clone())),
            Err(p) => ("error", Some(p.detail.clone())),
        };
        let entry = AuditEntry {
            actor: caller.actor(),
            action: action.to_owned(),
            target: target.to_owned(),
            remote_addr: caller.remote.map(|a| a.ip().to_string()),
            outcome: outcome.to_owned(),
            detail,
            at: now(),
        };
        if let Err(e) = self.control.store.record_audit(&entry).await {
            warn!(?entry, "could not write the audit log: {e}");
        }
        result
    }
}
