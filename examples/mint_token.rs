//! Mints a join token for a Switchboard room and prints it on stdout.
//!
//!     cargo run --example mint_token -- --room demo --identity alice
//!     cargo run --example mint_token -- --api-key prod --api-secret "$SECRET" \
//!         --room standup --identity bob --name "Bob" --ttl-secs 3600
//!
//! Each option falls back to an environment variable: SWITCHBOARD_API_KEY,
//! SWITCHBOARD_API_SECRET (the names `switchboard serve` reads), SWITCHBOARD_ROOM,
//! SWITCHBOARD_IDENTITY. Without a key the development pair devkey/secret is used, which only
//! `switchboard serve --dev` accepts.
//!
//! The token is an HS256 JWT in LiveKit's layout: pass it with the server's WebSocket URL to
//! livekit-client's `room.connect(url, token)`.

use std::process::ExitCode;
use std::time::Duration;

use switchboard_signaling::token::{self, Claims, KeyStore};

const USAGE: &str = "usage: mint_token --room ROOM --identity IDENTITY \
[--api-key KEY --api-secret SECRET] [--name NAME] [--ttl-secs SECS]";

struct Options {
    api_key: String,
    api_secret: String,
    room: String,
    identity: String,
    name: Option<String>,
    ttl: Duration,
}

fn parse() -> Result<Options, String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut api_key = env("SWITCHBOARD_API_KEY");
    let mut api_secret = env("SWITCHBOARD_API_SECRET");
    let mut room = env("SWITCHBOARD_ROOM");
    let mut identity = env("SWITCHBOARD_IDENTITY");
    let mut name = None;
    let mut ttl_secs: u64 = 6 * 3600;

    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_owned());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--api-key" => api_key = Some(value),
            "--api-secret" => api_secret = Some(value),
            "--room" => room = Some(value),
            "--identity" => identity = Some(value),
            "--name" => name = Some(value),
            "--ttl-secs" => {
                ttl_secs =
                    value.parse().ok().filter(|secs| *secs > 0).ok_or_else(|| {
                        format!("--ttl-secs wants a positive number, got {value:?}")
                    })?;
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }

    let room = room.ok_or_else(|| format!("--room is required\n{USAGE}"))?;
    let identity = identity.ok_or_else(|| format!("--identity is required\n{USAGE}"))?;
    let (api_key, api_secret) = match (api_key, api_secret) {
        (Some(key), Some(secret)) => (key, secret),
        (None, None) => {
            eprintln!(
                "no API key given: signing with devkey/secret (only `serve --dev` accepts it)"
            );
            ("devkey".to_owned(), "secret".to_owned())
        }
        _ => return Err("give the API key and its secret together".to_owned()),
    };
    Ok(Options {
        api_key,
        api_secret,
        room,
        identity,
        name,
        ttl: Duration::from_secs(ttl_secs),
    })
}

fn main() -> ExitCode {
    let options = match parse() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };

    // A join grant for one room: roomJoin, the room, the identity, exp and nbf. Publishing,
    // subscribing and data are allowed because the grant leaves them unsaid, as in LiveKit.
    let mut claims = Claims::for_join(
        options.api_key.clone(),
        options.identity,
        options.room,
        options.ttl,
    );
    claims.name = options.name;

    let jwt = match token::issue(&options.api_key, &options.api_secret, &claims) {
        Ok(jwt) => jwt,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };

    // The same check the server makes before it upgrades /rtc, as a sanity check.
    let keys = KeyStore::new([(options.api_key, options.api_secret)]);
    if let Err(e) = token::verify_join(&jwt, &keys) {
        eprintln!("the minted token does not verify: {e}");
        return ExitCode::FAILURE;
    }

    println!("{jwt}");
    ExitCode::SUCCESS
}
