//! What every request passes before a handler sees it: the request rate of its client
//! address on `/rtc`, `/whip`/`/whep` and `/v1`/`/twirp`, and a body that must fit
//! `http_request_body_bytes` and arrive within `http_body_timeout` (counted from when the
//! request head was read).

use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use http_body_util::{LengthLimitError, Limited};

use super::conn::client_key;
use super::guests::GuestLimiter;
use super::problem::Problem;

/// Rate limits are counted per minute.
const WINDOW: Duration = Duration::from_secs(60);

/// The limits of [`guard`], from `[limits]`.
#[derive(Debug, Clone)]
pub struct GuardLimits {
    pub rtc_per_minute: u32,
    pub whip_per_minute: u32,
    pub api_per_minute: u32,
    pub body_bytes: usize,
    pub body_timeout: Duration,
}

pub struct Guard {
    limits: GuardLimits,
    rtc: GuestLimiter,
    whip: GuestLimiter,
    api: GuestLimiter,
}

/// Which per-address budget a path counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Surface {
    Rtc,
    Whip,
    Api,
}

fn surface(path: &str) -> Option<Surface> {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if under("/rtc") || under("/agent") {
        Some(Surface::Rtc)
    } else if under("/whip") || under("/whep") {
        Some(Surface::Whip)
    } else if under("/v1") || under("/twirp") {
        Some(Surface::Api)
    } else {
        None
    }
}

impl Guard {
    pub fn new(limits: GuardLimits) -> Arc<Self> {
        Arc::new(Self {
            rtc: GuestLimiter::new(limits.rtc_per_minute, WINDOW),
            whip: GuestLimiter::new(limits.whip_per_minute, WINDOW),
            api: GuestLimiter::new(limits.api_per_minute, WINDOW),
            limits,
        })
    }

    /// `Err(response)` when the client address has used up its budget for `surface`.
    fn count(&self, surface: Surface, request: &Request) -> Result<(), Box<Response>> {
        let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() else {
            return Ok(());
        };
        let (limiter, per_minute, name, setting) = match surface {
            Surface::Rtc => (
                &self.rtc,
                self.limits.rtc_per_minute,
                "/rtc",
                "rtc_requests_per_minute",
            ),
            Surface::Whip => (
                &self.whip,
                self.limits.whip_per_minute,
                "/whip and /whep",
                "whip_requests_per_minute",
            ),
            Surface::Api => (
                &self.api,
                self.limits.api_per_minute,
                "/v1 and /twirp",
                "api_requests_per_minute",
            ),
        };
        let Err(retry) = limiter.check(client_key(peer.ip()), Instant::now()) else {
            return Ok(());
        };
        metrics::counter!("switchboard_http_rate_limited_total", "surface" => name).increment(1);
        let detail = format!(
            "too many requests to {name} from your address: at most {per_minute} a minute \
             ({setting}); try again in {retry} s"
        );
        let dialect = Dialect::of(request.uri().path());
        Err(Box::new(dialect.refuse(
            StatusCode::TOO_MANY_REQUESTS,
            detail,
            Some(retry),
        )))
    }

    fn too_large(&self, dialect: Dialect) -> Response {
        let detail = format!(
            "the request body is larger than {} bytes, the most this server accepts \
             (http_request_body_bytes)",
            self.limits.body_bytes
        );
        dialect.refuse(StatusCode::PAYLOAD_TOO_LARGE, detail, None)
    }

    fn timed_out(&self, dialect: Dialect) -> Response {
        let detail = format!(
            "the request body did not arrive within {} s (http_body_timeout)",
            self.limits.body_timeout.as_secs_f64()
        );
        dialect.refuse(StatusCode::REQUEST_TIMEOUT, detail, None)
    }
}

/// How a path's clients read a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// `/rtc`: livekit-client shows the text of a refused upgrade as it is.
    Text,
    /// `/twirp`: LiveKit's server SDKs read Twirp's `{code, msg}`.
    Twirp,
    /// Everything else: a problem document.
    Problem,
}

impl Dialect {
    fn of(path: &str) -> Self {
        match surface(path) {
            Some(Surface::Rtc) => Dialect::Text,
            _ if path.starts_with("/twirp/") => Dialect::Twirp,
            _ => Dialect::Problem,
        }
    }

    fn refuse(self, status: StatusCode, detail: String, retry: Option<u64>) -> Response {
        let mut response = match self {
            Dialect::Text => (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                detail,
            )
                .into_response(),
            Dialect::Twirp => {
                // Twirp's codes each have their HTTP status; a body too large is an invalid
                // request that retrying will not fix.
                let (status, code) = match status {
                    StatusCode::TOO_MANY_REQUESTS => (status, "resource_exhausted"),
                    StatusCode::REQUEST_TIMEOUT => (status, "deadline_exceeded"),
                    _ => (StatusCode::BAD_REQUEST, "invalid_argument"),
                };
                let body = serde_json::json!({ "code": code, "msg": detail });
                (status, axum::Json(body)).into_response()
            }
            Dialect::Problem => Problem::new(status, detail).into_response(),
        };
        if let Some(secs) = retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// What went wrong while a handler read a [`Bounded`] body.
#[derive(Debug, Default)]
struct Overrun {
    too_large: AtomicBool,
    timed_out: AtomicBool,
}

/// A request body that ends in an error once it passes the size limit or its deadline,
/// noting which in [`Overrun`] so the guard can answer with the right problem whatever the
/// handler's extractor made of the error. Nothing is read until a handler reads it, so a
/// request refused before (no credentials, say) costs no buffering.
struct Bounded {
    body: Limited<Body>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    overrun: Arc<Overrun>,
}

impl http_body::Body for Bounded {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::BoxError>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.overrun.timed_out.store(true, Ordering::Release);
            return Poll::Ready(Some(Err("the request body did not arrive in time".into())));
        }
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &polled {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                self.overrun.too_large.store(true, Ordering::Release);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The middleware: rate limit (preflights are not counted: the CORS layer outside answers
/// them), then the body.
pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if request.method() != Method::OPTIONS {
        if let Some(surface) = surface(request.uri().path()) {
            if let Err(refused) = guard.count(surface, &request) {
                return *refused;
            }
        }
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > guard.limits.body_bytes as u64) {
        return guard.too_large(Dialect::of(request.uri().path()));
    }
    let dialect = Dialect::of(request.uri().path());
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        // No body (GET, WebSocket upgrades): nothing to bound.
        return next.run(Request::from_parts(parts, body)).await;
    }
    let overrun = Arc::new(Overrun::default());
    let bounded = Bounded {
        body: Limited::new(body, guard.limits.body_bytes),
        deadline: Box::pin(tokio::time::sleep(guard.limits.body_timeout)),
        overrun: Arc::clone(&overrun),
    };
    let response = next
        .run(Request::from_parts(parts, Body::new(bounded)))
        .await;
    if overrun.timed_out.load(Ordering::Acquire) {
        guard.timed_out(dialect)
    } else if overrun.too_large.load(Ordering::Acquire) {
        guard.too_large(dialect)
    } else {
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_budget() {
        assert_eq!(surface("/rtc"), Some(Surface::Rtc));
        assert_eq!(surface("/rtc/validate"), Some(Surface::Rtc));
        assert_eq!(surface("/whip"), Some(Surface::Whip));
        assert_eq!(surface("/whep/abc"), Some(Surface::Whip));
        assert_eq!(surface("/v1/rooms"), Some(Surface::Api));
        assert_eq!(
            surface("/twirp/livekit.RoomService/ListRooms"),
            Some(Surface::Api)
        );
        assert_eq!(surface("/healthz"), None);
        assert_eq!(surface("/rtcx"), None);
        assert_eq!(surface("/"), None);
    }
}
