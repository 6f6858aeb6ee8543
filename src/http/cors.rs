//! Which browser pages may call the server, and with what.
//!
//! Never credentials mode: every endpoint takes its credential as a bearer token (an
//! `Authorization` header or `access_token`), which a page must already hold, so answering
//! with `Access-Control-Allow-Credentials` would only add ambient authority (cookies) that
//! nothing here uses. `/v1/dev/token` is the one endpoint that needs no credential in
//! development mode, so it is also refused server-side to origins not explicitly allowed.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use super::problem::Problem;
use crate::config::{is_loopback_origin, normalize_origin, CorsOrigins};

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct CorsPolicy {
    /// `*` configured (or the production default): any origin may read responses.
    any: bool,
    /// Origins configured by name, and the server's own.
    named: Vec<String>,
    /// Development mode: loopback origins are allowed too.
    loopback: bool,
}

impl CorsPolicy {
    /// Production default: any origin (bearer tokens only, no credentials mode).
    /// Development default: the server's own origins (`own`) and loopback ones.
    pub fn new(dev: bool, configured: Option<&CorsOrigins>, own: &[String]) -> Self {
        let mut named: Vec<String> = own.iter().filter_map(|o| normalize_origin(o)).collect();
        let any = match configured {
            Some(CorsOrigins::Any) => true,
            Some(CorsOrigins::List(list)) => {
                named.extend(list.iter().cloned());
                false
            }
            None => !dev,
        };
        Self {
            any,
            named,
            loopback: dev,
        }
    }

    /// An origin named in the configuration, the server's own, or loopback in development
    /// mode: the origins that may mint development tokens (`*` never counts).
    fn named(&self, origin: &str) -> bool {
        match normalize_origin(origin) {
            Some(origin) => {
                self.named.contains(&origin) || (self.loopback && is_loopback_origin(&origin))
            }
            None => false,
        }
    }

    /// May a page from `origin` read the server's responses?
    pub fn allows(&self, origin: &str) -> bool {
        self.any || self.named(origin)
    }

    pub fn layer(self: &Arc<Self>) -> CorsLayer {
        let origin = if self.any {
            AllowOrigin::any()
        } else {
            let policy = Arc::clone(self);
            AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                origin.to_str().is_ok_and(|o| policy.allows(o))
            })
        };
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            // `*` would not cover Authorization (Fetch standard); without credentials,
            // echoing what the page asks for is as safe.
            .allow_headers(AllowHeaders::mirror_request())
            // Browser WHIP/WHEP players read these from the answers of other origins.
            .expose_headers([
                header::LOCATION,
                header::ETAG,
                header::LINK,
                HeaderName::from_static("accept-patch"),
                HeaderName::from_static("accept-post"),
                header::RETRY_AFTER,
            ])
            .max_age(PREFLIGHT_MAX_AGE)
    }
}

/// `/v1/dev/token` mints admin tokens for whoever asks: a browser page may ask only from an
/// origin named in the configuration, the server's own, or loopback. Requests without an
/// `Origin` (curl, the CLI, server-side code) are not a browser's cross-site call.
pub async fn dev_token_origin(
    State(policy): State<Arc<CorsPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !policy.named(origin) {
            return Problem::forbidden(format!(
                "development tokens are not given to pages from {origin:?}: only the server's \
                 own origin, loopback origins and those in cors_origins (--cors-origin) may \
                 ask for them"
            ))
            .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_by_mode() {
        let own = ["http://127.0.0.1:7880".to_owned()];
        let prod = CorsPolicy::new(false, None, &own);
        assert!(prod.allows("https://anything.example"));
        assert!(!prod.named("https://anything.example"));
        let dev = CorsPolicy::new(true, None, &own);
        assert!(dev.allows("http://127.0.0.1:7880"));
        assert!(dev.allows("http://localhost:5173"));
        assert!(!dev.allows("https://evil.example"));
        let listed = CorsPolicy::new(
            false,
            Some(&CorsOrigins::List(vec!["https://app.example".into()])),
            &own,
        );
        assert!(listed.allows("https://APP.example"));
        assert!(
            !listed.allows("http://localhost:5173"),
            "loopback only in dev"
        );
        let dev_any = CorsPolicy::new(true, Some(&CorsOrigins::Any), &own);
        assert!(dev_any.allows("https://evil.example"));
        assert!(
            !dev_any.named("https://evil.example"),
            "* never mints tokens"
        );
    }
}
