//! `switchboard rooms …`, `switchboard sessions …` and `switchboard drain`: admin commands
//! against a running server over its `/v1` API, signed with a configured API key (as
//! `token create` is).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use switchboard_signaling::token::{self, Claims};

use crate::config::{self, TokenCreateArgs};

/// How to reach and sign for the server.
#[derive(Debug, Args)]
pub struct Target {
    /// The server's HTTP address, e.g. http://127.0.0.1:7880 (default: derived from the
    /// configuration, as `serve` would listen).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// Development mode: sign with "devkey"/"secret" unless keys are configured.
    #[arg(long)]
    pub dev: bool,

    /// TOML config file to read API keys from, as for `serve`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// API key to sign with (see `token create --help`).
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,

    /// Secret to sign with (needs --api-key).
    #[arg(long, value_name = "SECRET")]
    pub api_secret: Option<String>,

    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RoomsCommand {
    /// List rooms.
    List {
        /// Only rooms in this status: active or closed.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Create a room (or show it, if it exists).
    Create {
        /// Room id: [A-Za-z0-9_-]{1,64}; a ro_<ULID> is made when omitted.
        room_id: Option<String>,
        /// Display name of the room.
        #[arg(long)]
        name: Option<String>,
        /// Room metadata (free-form, usually JSON), sent to everyone in the room.
        #[arg(long)]
        metadata: Option<String>,
        /// Let anyone with the link join as a guest.
        #[arg(long)]
        guest_access: bool,
        /// Seconds the room stays open with nobody in it.
        #[arg(long, value_name = "SECS")]
        empty_timeout: Option<u32>,
        /// Most participants at once (0 = unlimited).
        #[arg(long, value_name = "N")]
        max_participants: Option<u32>,
        #[command(flatten)]
        target: Target,
    },
    /// Close a room: everyone in it is told to leave.
    Delete {
        /// The room to close.
        room_id: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List a room's sessions, newest first.
    List {
        /// The room whose sessions to list.
        #[arg(long, value_name = "ROOM")]
        room: String,
        #[command(flatten)]
        target: Target,
    },
    /// End a live session (LIVE → ENDING).
    End {
        /// The session to end (se_…).
        session_id: String,
        #[command(flatten)]
        target: Target,
    },
}

/// `switchboard drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Wait until the node has stopped (its HTTP address no longer answers).
    #[arg(long)]
    pub wait: bool,

    /// With --wait: give up waiting after this long, like 90s, 30m or 1h (the node drains
    /// on).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = config::parse_ttl)]
    pub wait_timeout: Duration,

    #[command(flatten)]
    pub target: Target,
}

/// A client for one server, with an admin token for `room` (or every room when empty).
struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    fn new(target: &Target, room: &str) -> anyhow::Result<Self> {
        let args = TokenCreateArgs {
            room: room.to_owned(),
            identity: "switchboard-cli".to_owned(),
            name: None,
            metadata: None,
            ttl: Duration::from_secs(300),
            no_publish: true,
            no_subscribe: true,
            admin: true,
            dev: target.dev,
            config: target.config.clone(),
            api_key: target.api_key.clone(),
            api_secret: target.api_secret.clone(),
        };
        let settings = config::resolve_token(&args, &|name| std::env::var(name).ok())
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let mut claims = Claims::for_join(
            settings.api_key.clone(),
            "switchboard-cli",
            room,
            Duration::from_secs(300),
        );
        claims.video.room_join = false;
        claims.video.room_create = true;
        claims.video.room_list = true;
        claims.video.room_admin = !room.is_empty();
        let token = token::issue(&settings.api_key, &settings.api_secret, &claims)?;
        let base = match &target.url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => settings
                .ws_url
                .replacen("ws://", "http://", 1)
                .replacen("wss://", "https://", 1),
        };
        Ok(Self {
            base,
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let detail = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(text);
            bail!("{status}: {detail}");
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// GETs every page of a paginated list (`path` has a query already) and returns
    /// `{key: [all items]}`.
    async fn all_pages(&self, path: &str, key: &str) -> anyhow::Result<Value> {
        let mut items = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let after = page_token
                .map(|t| format!("&page_token={t}"))
                .unwrap_or_default();
            let mut page = self
                .call(reqwest::Method::GET, &format!("{path}{after}"), None)
                .await?;
            if let Some(Value::Array(more)) = page.get_mut(key).map(Value::take) {
                items.extend(more);
            }
            page_token = page["next_page_token"].as_str().map(str::to_owned);
            if page_token.is_none() {
                return Ok(json!({ key: items }));
            }
        }
    }
}

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

fn print(json_out: bool, value: &Value, rows: impl FnOnce(&Value)) {
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        rows(value);
    }
}

fn print_room(room: &Value) {
    println!(
        "{:<40} {:<7} created {} participants {}",
        text(room, "room_id"),
        text(room, "status"),
        text(room, "created_at"),
        room.get("participants")
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    );
}

fn print_session(session: &Value) {
    println!(
        "{:<32} {:<10} room {} updated {}",
        text(session, "session_id"),
        text(session, "state"),
        text(session, "room_id"),
        text(session, "updated_at")
    );
}

pub fn rooms(command: RoomsCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match command {
            RoomsCommand::List { status, target } => {
                let client = Client::new(&target, "")?;
                let filter = status.map(|s| format!("&status={s}")).unwrap_or_default();
                let path = format!("/v1/rooms?limit=500{filter}");
                let value = client.all_pages(&path, "rooms").await?;
                print(target.json, &value, |v| {
                    for room in v["rooms"].as_array().into_iter().flatten() {
                        print_room(room);
                    }
                });
            }
            RoomsCommand::Create {
                room_id,
                name,
                metadata,
                guest_access,
                empty_timeout,
                max_participants,
                target,
            } => {
                let client = Client::new(&target, room_id.as_deref().unwrap_or(""))?;
                let body = json!({
                    "room_id": room_id, "name": name, "metadata": metadata,
                    "guest_access": guest_access, "empty_timeout_secs": empty_timeout,
                    "max_participants": max_participants,
                });
                let value = client
                    .call(reqwest::Method::POST, "/v1/rooms", Some(body))
                    .await?;
                print(target.json, &value, |v| print_room(&v["room"]));
            }
            RoomsCommand::Delete { room_id, target } => {
                let client = Client::new(&target, &room_id)?;
                client
                    .call(
                        reqwest::Method::DELETE,
                        &format!("/v1/rooms/{room_id}"),
                        None,
                    )
                    .await?;
                eprintln!("room {room_id} deleted");
            }
        }
        Ok(())
    })
}

pub fn sessions(command: SessionsCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match command {
            SessionsCommand::List { room, target } => {
                let client = Client::new(&target, &room)?;
                let path = format!("/v1/sessions?room_id={room}&limit=500");
                let value = client.all_pages(&path, "sessions").await?;
                print(target.json, &value, |v| {
                    for session in v["sessions"].as_array().into_iter().flatten() {
                        print_session(session);
                    }
                });
            }
            SessionsCommand::End { session_id, target } => {
                // The grant is for every room (roomCreate), since the room is not known yet.
                let client = Client::new(&target, "")?;
                let value = client
                    .call(
                        reqwest::Method::POST,
                        &format!("/v1/sessions/{session_id}/end"),
                        None,
                    )
                    .await?;
                print(target.json, &value, |v| print_session(&v["session"]));
            }
        }
        Ok(())
    })
}

/// How often `drain --wait` looks whether the node is still up.
const DRAIN_POLL: Duration = Duration::from_millis(250);

pub fn drain(args: DrainArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = Client::new(&args.target, "")?;
        let value = client
            .call(reqwest::Method::POST, "/v1/node/drain", None)
            .await?;
        let node = text(&value, "node_id");
        print(args.target.json, &value, |v| {
            eprintln!(
                "node {node} is draining: {} rooms, {} participants; it stops once they are \
                 empty (drain timeout {} s)",
                text(v, "rooms"),
                text(v, "participants"),
                text(v, "drain_timeout_secs"),
            );
        });
        if !args.wait {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + args.wait_timeout;
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let url = format!("{}/healthz", client.base);
        loop {
            // A refused connection is the node gone; any answer is the node still up.
            if probe.get(&url).send().await.is_err() {
                eprintln!("node {node} stopped");
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "node {node} still runs after {:?}; it drains on",
                    args.wait_timeout
                );
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    })
}
