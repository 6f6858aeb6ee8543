//! Token interop with the real `livekit-server-sdk` (npm), through web/tests/support/lk-token.mjs.
//!
//! Needs Node.js (`node` on PATH, or its path in `NODE`) and `npm install` run in web/. These
//! tests fail rather than skip when either is missing: a silently skipped interop test would
//! let a token-format regression through.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use switchboard_signaling::token::{self, now_secs, Claims, KeyStore, TokenError};

const KEY: &str = "APIinteropKey";
const SECRET: &str = "interop-secret-that-is-long-enough-for-hs256";

fn web_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web")
}

fn node() -> String {
    std::env::var("NODE").unwrap_or_else(|_| "node".to_owned())
}

/// Panics with instructions when Node.js or the SDK is missing.
fn check_prerequisites() {
    let node = node();
    match Command::new(&node).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`{node} --version` failed ({}); this test needs Node.js >= 18 (set NODE to its path)",
            out.status
        ),
        Err(err) => panic!(
            "cannot run `{node}` ({err}); this test needs Node.js >= 18 on PATH (or NODE=/path/to/node)"
        ),
    }
    let sdk = web_dir().join("node_modules/livekit-server-sdk/package.json");
    assert!(
        sdk.is_file(),
        "{} not found; run `npm install` in {} to install livekit-server-sdk",
        sdk.display(),
        web_dir().display()
    );
}

/// Runs lk-token.mjs: `Ok(stdout)` on success, `Err(stderr)` when it exits non-zero.
fn lk_token(args: &[&str]) -> Result<String, String> {
    check_prerequisites();
    let script = web_dir().join("tests/support/lk-token.mjs");
    assert!(script.is_file(), "{} is missing", script.display());
    let out = Command::new(node())
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    match out.status.code() {
        Some(0) => Ok(stdout),
        Some(1) => Err(stderr),
        _ => panic!(
            "lk-token.mjs {args:?} could not run ({}): {stderr}",
            out.status
        ),
    }
}

fn sdk_mint(room: &str, identity: &str) -> String {
    lk_token(&["mint", KEY, SECRET, room, identity])
        .unwrap_or_else(|err| panic!("the SDK failed to mint a token: {err}"))
}

fn keys(secret: &str) -> KeyStore {
    KeyStore::new([(KEY.to_owned(), secret.to_owned())])
}

#[test]
fn sdk_token_is_accepted_by_verify_join() {
    let token = sdk_mint("interop-room", "ada");
    let claims = token::verify_join(&token, &keys(SECRET))
        .unwrap_or_else(|err| panic!("our verifier refused the SDK's token: {err}"));
    assert_eq!(claims.iss, KEY);
    assert_eq!(claims.sub, "ada");
    assert_eq!(claims.video.room, "interop-room");
    assert!(claims.video.room_join);
    assert_eq!(claims.video.can_publish, Some(true));
    assert!(claims.video.can_subscribe() && claims.video.can_publish_data());
    let now = now_secs();
    assert!(
        claims.exp > now && claims.exp <= now + 600 + 5,
        "exp {}",
        claims.exp
    );
    assert!(claims.nbf.is_some_and(|nbf| nbf <= now + 5));
}

#[test]
fn our_token_is_accepted_by_the_sdk_verifier() {
    let mut claims = Claims::for_join(KEY, "grace", "interop-room", Duration::from_secs(300));
    claims.name = Some("Grace".to_owned());
    claims.attributes = Some([("role".to_owned(), "host".to_owned())].into());
    claims.video.can_subscribe = Some(false);
    let token = token::issue(KEY, SECRET, &claims).expect("issue");

    let printed = lk_token(&["verify", KEY, SECRET, &token])
        .unwrap_or_else(|err| panic!("the SDK refused our token: {err}"));
    let verified: Value = serde_json::from_str(&printed)
        .unwrap_or_else(|err| panic!("lk-token.mjs printed no JSON ({err}): {printed}"));
    assert_eq!(verified["iss"], KEY);
    assert_eq!(verified["sub"], "grace");
    assert_eq!(verified["name"], "Grace");
    assert_eq!(verified["attributes"]["role"], "host");
    assert_eq!(verified["video"]["room"], "interop-room");
    assert_eq!(verified["video"]["roomJoin"], true);
    assert_eq!(verified["video"]["canSubscribe"], false);
    assert_eq!(verified["exp"], claims.exp);
}

#[test]
fn sdk_refuses_our_token_signed_with_another_secret() {
    // Proves the test above exercises the SDK's signature check rather than a pass-through.
    let claims = Claims::for_join(KEY, "grace", "interop-room", Duration::from_secs(300));
    let token = token::issue(KEY, "some-other-secret-entirely-0123456789", &claims).expect("issue");
    let err = lk_token(&["verify", KEY, SECRET, &token])
        .expect_err("the SDK accepted a token signed with the wrong secret");
    assert!(err.contains("signature"), "unexpected SDK error: {err}");
}

#[test]
fn sdk_token_with_wrong_secret_or_key_is_refused_by_us() {
    let token = sdk_mint("interop-room", "ada");

    let err = token::verify_join(&token, &keys("not-the-secret-the-sdk-signed-with"))
        .expect_err("accepted a token signed with another secret");
    assert_eq!(err, TokenError::BadSignature);
    assert_eq!(err.http_status(), 401);

    let strangers = KeyStore::new([("APIother".to_owned(), SECRET.to_owned())]);
    let err = token::verify_join(&token, &strangers).expect_err("accepted an unknown key");
    assert_eq!(err, TokenError::UnknownApiKey(KEY.to_owned()));
}
