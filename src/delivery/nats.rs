//! NATS sink: publishes every event as JSON to `<prefix>.<event>`, and session state changes
//! also to the stream status subject (seed 000's `events.raw.stream.status`) in the shape its
//! consumers already read.
//!
//! async-nats reconnects by itself after a lost connection; while it is disconnected a
//! delivery fails (and is retried with backoff) instead of queueing in the client, so the
//! cursor only moves past events the server has acknowledged with a flush.

use std::time::Duration;

use async_nats::connection::State;
use async_nats::{ConnectOptions, Event, ServerAddr};
use serde_json::{json, Value};

use crate::config::{redact_url, NatsSettings};
use crate::store::{kinds, EventRecord};

use super::{DeliveryError, Sink};

pub(super) const SINK_NAME: &str = "nats";

pub(super) struct NatsSink {
    settings: NatsSettings,
    timeout: Duration,
    /// Connected on first delivery (and again after a failed connect), so a NATS server that
    /// is down at start delays events instead of failing the server.
    client: Option<async_nats::Client>,
}

impl NatsSink {
    pub(super) fn new(settings: NatsSettings, timeout: Duration) -> Self {
        NatsSink {
            settings,
            timeout,
            client: None,
        }
    }

    async fn client(&mut self) -> Result<async_nats::Client, DeliveryError> {
        if let Some(client) = &self.client {
            // A Client is a handle to one shared connection; cloning it is cheap.
            return Ok(client.clone());
        }
        let servers = self
            .settings
            .url
            .split(',')
            .map(|url| url.trim().parse::<ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| DeliveryError::Nats(format!("invalid server URL: {err}")))?;
        super::install_crypto_provider();
        let shown = redact_url(&self.settings.url);
        let options = ConnectOptions::new()
            .name("switchboard")
            .connection_timeout(self.timeout)
            .event_callback(move |event| {
                let shown = shown.clone();
                async move {
                    match event {
                        Event::Disconnected => {
                            tracing::warn!(server = %shown, "NATS connection lost; reconnecting")
                        }
                        Event::Connected => tracing::info!(server = %shown, "NATS connected"),
                        other => tracing::debug!(server = %shown, "NATS: {other}"),
                    }
                }
            });
        let client = async_nats::connect_with_options(servers, options)
            .await
            .map_err(|err| DeliveryError::Nats(format!("cannot connect: {err}")))?;
        self.client = Some(client.clone());
        Ok(client)
    }

    async fn publish(
        &self,
        client: &async_nats::Client,
        subject: String,
        message_id: &str,
        message: &Value,
    ) -> Result<(), DeliveryError> {
        let payload =
            serde_json::to_vec(message).map_err(|err| DeliveryError::Nats(err.to_string()))?;
        // The same id on every attempt, from any node: a JetStream stream capturing these
        // subjects drops a resend within its duplicate window, and core subscribers can
        // deduplicate by it.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id);
        client
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
            .map_err(|err| DeliveryError::Nats(format!("cannot publish to {subject}: {err}")))?;
        // Flushed per message: only what the server has taken counts as delivered.
        tokio::time::timeout(self.timeout, client.flush())
            .await
            .map_err(|_| DeliveryError::Nats(format!("flush timed out after {:?}", self.timeout)))?
            .map_err(|err| DeliveryError::Nats(format!("cannot flush: {err}")))
    }
}

impl Sink for NatsSink {
    fn name(&self) -> &str {
        SINK_NAME
    }

    async fn deliver(&mut self, event: &EventRecord) -> Result<(), DeliveryError> {
        let client = self.client().await?;
        if client.connection_state() != State::Connected {
            return Err(DeliveryError::Nats("not connected".to_owned()));
        }
        let subject = format!("{}.{}", self.settings.subject_prefix, event.kind);
        let (event_id, status_id) = message_ids(event);
        self.publish(&client, subject, &event_id, &event_message(event)?)
            .await?;
        if let Some(status) = stream_status(event) {
            self.publish(
                &client,
                self.settings.session_subject.clone(),
                &status_id,
                &status,
            )
            .await?;
        }
        Ok(())
    }
}

/// The `Nats-Msg-Id` of an event's message (`EV_<id>`, as the webhook's `id`) and of its
/// stream status message (`EV_<id>.status`): distinct, since one stream may capture both.
pub(super) fn message_ids(event: &EventRecord) -> (String, String) {
    let id = format!("EV_{}", event.id);
    let status = format!("{id}.status");
    (id, status)
}

/// The event as published to `<prefix>.<event>`: the event record (snake_case fields) plus
/// its webhook name as `event`.
pub(super) fn event_message(event: &EventRecord) -> Result<Value, DeliveryError> {
    let mut message = serde_json::to_value(event).map_err(|err| DeliveryError::Encode {
        event_id: event.id,
        reason: err.to_string(),
    })?;
    if let Value::Object(map) = &mut message {
        map.insert("event".to_owned(), json!(event.kind));
    }
    Ok(message)
}

/// Seed 000's stream status message, for a session state change.
pub(super) fn stream_status(event: &EventRecord) -> Option<Value> {
    if event.kind != kinds::SESSION_STATE_CHANGED {
        return None;
    }
    let p = &event.payload;
    let session = p.get("session").unwrap_or(&Value::Null);
    let status = p
        .get("to")
        .or_else(|| session.get("state"))
        .and_then(Value::as_str);
    let session_id = session
        .get("session_id")
        .and_then(Value::as_str)
        .or(event.session_id.as_deref());
    Some(json!({
        "session_id": session_id,
        "room_id": event.room_id,
        "owner_identity": session.get("owner_identity"),
        "status": status,
        "from": p.get("from"),
        "is_live": status == Some("LIVE"),
        "seq": event.seq,
        "at": event.created_at,
    }))
}
