//! HTTP errors as RFC 9457 `application/problem+json`, with a detail a person can act on.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    pub status: u16,
    pub detail: String,
    /// Seconds to wait before retrying (429, 503); sent as the Retry-After header.
    #[serde(skip)]
    retry_after: Option<u64>,
    /// Extension members (RFC 9457 §3.2), e.g. a session's `current_state` on a 409.
    #[serde(flatten)]
    extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
            extensions: serde_json::Map::new(),
        }
    }

    /// Adds an extension member to the problem document.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    pub fn too_many(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut p = Self::new(StatusCode::TOO_MANY_REQUESTS, detail);
        p.retry_after = Some(retry_after_secs);
        p
    }

    /// 503 with Retry-After: the node is at a capacity limit, not the caller at a quota.
    pub fn unavailable(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut p = Self::new(StatusCode::SERVICE_UNAVAILABLE, detail);
        p.retry_after = Some(retry_after_secs);
        p
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<crate::control::ControlError> for Problem {
    fn from(e: crate::control::ControlError) -> Self {
        use crate::control::ControlError as E;
        let detail = e.to_string();
        match e {
            E::NotFound(_) => Problem::not_found(detail),
            E::BadRequest(_) => Problem::bad_request(detail),
            E::RoomNotActive { .. } => Problem::new(StatusCode::PRECONDITION_FAILED, detail),
            E::IllegalTransition { current, .. } => {
                Problem::conflict(detail).with("current_state", current.as_str())
            }
            E::Conflict(_) => Problem::conflict(detail),
            E::RateLimited { retry_after_secs } => Problem::too_many(detail, retry_after_secs),
            E::Busy {
                retry_after_secs, ..
            } => Problem::unavailable(detail, retry_after_secs),
            E::Store(ref store) if store.is_unavailable() => {
                tracing::warn!("the session store is unreachable behind an API call: {detail}");
                Problem::unavailable(
                    "the session store (database) is unreachable; retry shortly",
                    5,
                )
            }
            E::Store(_) => {
                tracing::error!("store failure behind an API call: {detail}");
                Problem::internal("the session store failed; the error is in the server log")
            }
        }
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(e: crate::store::StoreError) -> Self {
        crate::control::ControlError::from(e).into()
    }
}
