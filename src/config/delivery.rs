//! Where events go: webhook and NATS settings, resolved like every other setting.

use std::collections::BTreeMap;
use std::fmt;

use super::cli::ServeArgs;
use super::sources::{self, Sources};
use super::{get_redacted, parse, ConfigError};

pub const DEFAULT_NATS_SUBJECT_PREFIX: &str = "switchboard.events";
/// The subject of stream status messages in the deployment this project grew out of
/// (seed 000), so its consumers work unchanged.
pub const DEFAULT_NATS_SESSION_SUBJECT: &str = "events.raw.stream.status";
/// Where the nodes of a cluster tell each other things: kept apart from the events'
/// prefix, so an event consumer subscribed to `switchboard.events.>` sees only events.
pub const DEFAULT_NATS_CLUSTER_PREFIX: &str = "switchboard.cluster";

/// Webhook delivery.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Endpoints, each an http(s) URL, no duplicates; empty = no webhooks.
    pub urls: Vec<String>,
    /// The API key that signs webhooks: always one of [`Settings::keys`].
    pub api_key: String,
}

/// URLs may carry credentials (`https://user:pass@…`), so they are redacted.
impl fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|url| parse::redact_url(url)).collect();
        f.debug_struct("WebhookSettings")
            .field("urls", &urls)
            .field("api_key", &self.api_key)
            .finish()
    }
}

/// Event publishing to NATS.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// Server URL(s), comma-separated, as async-nats accepts them.
    pub url: String,
    /// Every event goes to `<subject_prefix>.<event>`.
    pub subject_prefix: String,
    /// Session state changes also go here, as stream status messages.
    pub session_subject: String,
    /// Nodes of one cluster tell each other things under this prefix (revocations).
    pub cluster_prefix: String,
}

impl fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &parse::redact_url(&self.url))
            .field("subject_prefix", &self.subject_prefix)
            .field("session_subject", &self.session_subject)
            .field("cluster_prefix", &self.cluster_prefix)
            .finish()
    }
}

pub(super) fn webhook_settings(
    src: &Sources<'_>,
    args: &ServeArgs,
    keys: &BTreeMap<String, String>,
) -> Result<WebhookSettings, ConfigError> {
    // Repeated `--webhook-url` flags form one value that replaces the env/file list, as
    // `--node-ip` does.
    let url_flags = (!args.webhook_urls.is_empty()).then(|| args.webhook_urls.join(","));
    let urls = get_redacted(
        src,
        url_flags.as_deref(),
        &sources::WEBHOOK_URLS,
        parse::webhook_urls,
    )?
    .unwrap_or_default();
    // Checked even without URLs, so a typo fails at start rather than when a URL is added.
    let api_key = match src.lookup(args.webhook_api_key.as_deref(), &sources::WEBHOOK_API_KEY) {
        Some(raw) if keys.contains_key(&raw.value) => raw.value,
        Some(raw) => {
            let known = keys.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(raw.invalid(format!(
                "not a configured API key (configured keys: {known})"
            )));
        }
        // `keys::resolve` never returns an empty set; an empty name would then fail in
        // delivery with a clear message rather than panic here.
        None => keys.keys().next().cloned().unwrap_or_default(),
    };
    Ok(WebhookSettings { urls, api_key })
}

pub(super) fn nats_settings(
    src: &Sources<'_>,
    args: &ServeArgs,
) -> Result<Option<NatsSettings>, ConfigError> {
    let url = get_redacted(
        src,
        args.nats_url.as_deref(),
        &sources::NATS_URL,
        parse::nats_url,
    )?;
    // Validated even without a URL, like the webhook key.
    let subject_prefix = src
        .get(
            args.nats_subject_prefix.as_deref(),
            &sources::NATS_SUBJECT_PREFIX,
            parse::nats_subject,
        )?
        .unwrap_or_else(|| DEFAULT_NATS_SUBJECT_PREFIX.to_owned());
    let session_subject = src
        .get(
            args.nats_session_subject.as_deref(),
            &sources::NATS_SESSION_SUBJECT,
            parse::nats_subject,
        )?
        .unwrap_or_else(|| DEFAULT_NATS_SESSION_SUBJECT.to_owned());
    let cluster_prefix = src
        .get(
            args.nats_cluster_prefix.as_deref(),
            &sources::NATS_CLUSTER_PREFIX,
            parse::nats_subject,
        )?
        .unwrap_or_else(|| DEFAULT_NATS_CLUSTER_PREFIX.to_owned());
    Ok(url.map(|url| NatsSettings {
        url,
        subject_prefix,
        session_subject,
        cluster_prefix,
    }))
}
