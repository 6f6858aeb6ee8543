//! Webhook sink: POSTs each event to one URL exactly as LiveKit sends webhooks, so
//! `livekit-server-sdk`'s `WebhookReceiver` (and LiveKit's other SDKs) accept them.

use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::EventRecord;

use super::{DeliveryError, SigningKey, Sink};

/// Carries the event's id (`EV_<id>`, as the body's `id`), the same on every attempt and from
/// every node, so a receiver can drop a resend without parsing the body.
pub(crate) const EVENT_ID_HEADER: &str = "switchboard-event-id";
/// LiveKit's webhook content type; receivers may check it.
pub(super) const CONTENT_TYPE_WEBHOOK: &str = "application/webhook+json";
/// How long a signature stays valid, as in LiveKit.
const TOKEN_VALIDITY: Duration = Duration::from_secs(5 * 60);
/// How much of an error response body goes into the log.
const MAX_LOGGED_BODY: usize = 200;

/// The claims of LiveKit's webhook token: who signed it (`iss` = API key), which body it
/// is for, and a short validity.
#[derive(Debug, Serialize)]
struct WebhookClaims<'a> {
    iss: &'a str,
    /// base64 (standard, padded) of SHA-256 of the exact body bytes.
    sha256: String,
    nbf: i64,
    exp: i64,
}

/// The `Authorization` header value of a webhook: a bare JWT (no "Bearer"), as LiveKit
/// sends it.
pub(super) fn sign(key: &SigningKey, body: &[u8]) -> Result<String, DeliveryError> {
    let now = Utc::now().timestamp();
    let claims = WebhookClaims {
        iss: &key.api_key,
        sha256: base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body)),
        nbf: now,
        // TOKEN_VALIDITY is a small constant, so the cast cannot truncate.
        exp: now + TOKEN_VALIDITY.as_secs() as i64,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key.api_secret.as_bytes()),
    )
    .map_err(DeliveryError::Sign)
}

pub(super) struct WebhookSink {
    name: String,
    url: String,
    key: SigningKey,
    timeout: Duration,
    /// Built on first use, so a failure to set up TLS is retried like any failed delivery
    /// instead of taking the server down.
    client: Option<reqwest::Client>,
}

impl WebhookSink {
    pub(super) fn new(url: String, key: SigningKey, timeout: Duration) -> Self {
        WebhookSink {
            name: format!("webhook:{url}"),
            url,
            key,
            timeout,
            client: None,
        }
    }

    fn client(&mut self) -> Result<reqwest::Client, DeliveryError> {
        if let Some(client) = &self.client {
            // A reqwest Client is a handle to a shared pool; cloning it is cheap.
            return Ok(client.clone());
        }
        super::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            // A redirect would re-send the signed body somewhere not configured.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(DeliveryError::Client)?;
        self.client = Some(client.clone());
        Ok(client)
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&mut self, event: &EventRecord) -> Result<(), DeliveryError> {
        let body = super::livekit::webhook_body(event)?;
        // Signed per attempt: a retry may come long after the first token expired.
        let token = sign(&self.key, &body)?;
        let response = self
            .client()?
            .post(&self.url)
            .header(CONTENT_TYPE, CONTENT_TYPE_WEBHOOK)
            .header(AUTHORIZATION, token)
            .header(EVENT_ID_HEADER, format!("EV_{}", event.id))
            .body(body)
            .send()
            .await
            .map_err(DeliveryError::Request)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // The receiver's explanation helps whoever reads the warning; it is best-effort.
        let mut body = response.text().await.unwrap_or_default();
        if body.len() > MAX_LOGGED_BODY {
            let cut = (0..=MAX_LOGGED_BODY)
                .rev()
                .find(|&i| body.is_char_boundary(i))
                .unwrap_or(0);
            body.truncate(cut);
            body.push('…');
        }
        Err(DeliveryError::Status {
            status: status.as_u16(),
            body,
        })
    }
}
