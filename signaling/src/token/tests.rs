use super::*;

#[test]
fn refreshed_claims_keep_the_grants_and_the_lifetime_from_now() {
    let mut claims = Claims::for_join("k", "alice", "room", Duration::from_secs(3600));
    claims.jti = Some("once".into());
    let later = claims.exp + 100;
    let fresh = claims.refreshed(later);
    assert_eq!(fresh.sub, "alice");
    assert_eq!(fresh.video.room, "room");
    assert_eq!((fresh.iat, fresh.nbf), (Some(later), Some(later)));
    assert_eq!(fresh.exp, later + 3600, "the same lifetime, from now");
    assert_eq!(fresh.jti, None);
    // A token minted for a minute is refreshed for ten; one for a week, for six hours.
    let short = Claims::for_join("k", "a", "r", Duration::from_secs(60)).refreshed(later);
    assert_eq!(short.exp - later, 600);
    let long = Claims::for_join("k", "a", "r", Duration::from_secs(7 * 86400)).refreshed(later);
    assert_eq!(long.exp - later, 6 * 3600);
}
use serde_json::{json, Value};

const KEY: &str = "APIkeyOne";
const SECRET: &str = "first-secret-long-enough-for-hs256-keys";
const OTHER_SECRET: &str = "second-secret-long-enough-for-hs256-key";

fn keys() -> KeyStore {
    KeyStore::new([
        (KEY.to_owned(), SECRET.to_owned()),
        ("APIkeyTwo".to_owned(), OTHER_SECRET.to_owned()),
    ])
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// Signs arbitrary JSON, for payloads our `Claims` type would never produce.
fn sign_json(alg: Algorithm, payload: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        payload,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn join_claims() -> Claims {
    Claims::for_join(KEY, "alice", "lobby", Duration::from_secs(600))
}

fn join_payload(exp: u64) -> Value {
    json!({"iss": KEY, "sub": "alice", "exp": exp, "video": {"room": "lobby", "roomJoin": true}})
}

#[test]
fn round_trip_keeps_every_claim() {
    let mut claims = join_claims();
    claims.name = Some("Alice".to_owned());
    claims.metadata = Some(r#"{"team":"red"}"#.to_owned());
    claims.attributes = Some(BTreeMap::from([("role".to_owned(), "host".to_owned())]));
    claims.iat = claims.nbf;
    claims.jti = Some("token-1".to_owned());
    claims.video = VideoGrant {
        room: "lobby".to_owned(),
        room_join: true,
        room_create: true,
        room_list: true,
        room_admin: true,
        room_record: true,
        can_publish: Some(false),
        can_subscribe: Some(true),
        can_publish_data: Some(true),
        can_publish_sources: vec!["camera".to_owned(), "microphone".to_owned()],
        can_update_own_metadata: Some(true),
        hidden: true,
        recorder: true,
        agent: true,
    };
    claims.kind = Some("agent".to_owned());
    claims.room_config = Some(RoomConfig {
        agents: vec![RoomAgentDispatch {
            agent_name: "notes".to_owned(),
            metadata: "{}".to_owned(),
        }],
    });
    let token = issue(KEY, SECRET, &claims).unwrap();
    assert_eq!(verify_join(&token, &keys()).unwrap(), claims);
}

#[test]
fn room_config_is_read_as_livekit_sdks_mint_it() {
    // livekit-server-sdk and livekit-api write protobuf JSON (lowerCamelCase); snake_case
    // is protobuf JSON too.
    for (claim, agent_key) in [("roomConfig", "agentName"), ("room_config", "agent_name")] {
        let json = format!(
            r#"{{"sub":"u","exp":1,"video":{{"room":"r","roomJoin":true}},"{claim}":{{"agents":[{{"{agent_key}":"notes","metadata":"m"}}],"emptyTimeout":30}}}}"#
        );
        let claims: Claims = serde_json::from_str(&json).unwrap();
        let agents = claims.room_config.unwrap().agents;
        assert_eq!(agents.len(), 1, "{claim}");
        assert_eq!(agents[0].agent_name, "notes");
        assert_eq!(agents[0].metadata, "m");
    }
    let agent: Claims = serde_json::from_str(r#"{"exp":1,"kind":"agent"}"#).unwrap();
    assert!(agent.is_agent());
    assert!(!Claims::default().is_agent());
}

#[test]
fn for_join_sets_the_join_claims() {
    let before = now_secs();
    let claims = join_claims();
    assert_eq!((claims.iss.as_str(), claims.sub.as_str()), (KEY, "alice"));
    assert_eq!(claims.video.room, "lobby");
    assert!(claims.video.room_join);
    let nbf = claims.nbf.unwrap();
    assert!(nbf >= before && nbf <= now_secs());
    assert_eq!(claims.exp, nbf + 600);
}

#[test]
fn wire_names_are_livekit_camel_case_and_defaults_are_omitted() {
    assert_eq!(
        serde_json::to_value(VideoGrant::default()).unwrap(),
        json!({})
    );
    let grant = VideoGrant {
        room: "r".to_owned(),
        room_join: true,
        can_publish: Some(false),
        can_publish_data: Some(true),
        can_publish_sources: vec!["screen_share".to_owned()],
        can_update_own_metadata: Some(false),
        ..VideoGrant::default()
    };
    assert_eq!(
        serde_json::to_value(&grant).unwrap(),
        json!({"room": "r", "roomJoin": true, "canPublish": false, "canPublishData": true,
               "canPublishSources": ["screen_share"], "canUpdateOwnMetadata": false})
    );
    let claims = Claims {
        iss: KEY.to_owned(),
        exp: 5,
        ..Claims::default()
    };
    assert_eq!(
        serde_json::to_value(&claims).unwrap(),
        json!({"iss": KEY, "video": {}, "exp": 5})
    );
}

#[test]
fn publish_subscribe_and_data_defaults_follow_livekit() {
    let unset = VideoGrant::default();
    assert!(unset.can_publish() && unset.can_subscribe() && unset.can_publish_data());

    let no_publish = VideoGrant {
        can_publish: Some(false),
        ..VideoGrant::default()
    };
    assert!(!no_publish.can_publish());
    assert!(!no_publish.can_publish_data(), "data follows canPublish");
    assert!(no_publish.can_subscribe());

    let data_only = VideoGrant {
        can_publish: Some(false),
        can_publish_data: Some(true),
        can_subscribe: Some(false),
        ..VideoGrant::default()
    };
    assert!(data_only.can_publish_data());
    assert!(!data_only.can_subscribe());

    let no_data = VideoGrant {
        can_publish_data: Some(false),
        ..VideoGrant::default()
    };
    assert!(no_data.can_publish() && !no_data.can_publish_data());
}

#[test]
fn unknown_claims_nulls_and_aud_are_ignored() {
    let exp = now_secs() + 600;
    let payload = json!({
        "iss": KEY, "sub": "alice", "exp": exp, "nbf": exp - 600, "aud": "someone",
        "kind": "standard", "roomPreset": "p", "roomConfig": {"agents": [{"agentName": "a"}]},
        "sip": {"admin": true}, "name": null, "attributes": null,
        "video": {"room": "lobby", "roomJoin": true, "agent": true, "ingressAdmin": true,
                  "destinationRoom": "x", "hidden": null, "canPublishSources": null},
    });
    let claims = verify_join(&sign_json(Algorithm::HS256, &payload, SECRET), &keys()).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.video.room, "lobby");
    assert_eq!(claims.name, None);
    assert!(!claims.video.hidden && claims.video.can_publish_sources.is_empty());
}

#[test]
fn webhook_claims_round_trip_without_join_grants() {
    let claims = Claims {
        sha256: Some("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".to_owned()),
        exp: now_secs() + 300,
        ..Claims::default()
    };
    let token = issue(KEY, SECRET, &claims).unwrap();
    let verified = verify(&token, &keys()).unwrap();
    assert_eq!(verified.iss, KEY, "issue fills iss from the API key");
    assert_eq!(verified.sha256, claims.sha256);
    assert_eq!(
        verify_join(&token, &keys()),
        Err(TokenError::MissingRoomJoin)
    );
}

#[test]
fn algorithm_none_is_refused_by_name() {
    let token = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&join_payload(now_secs() + 600))
    );
    let err = verify(&token, &keys()).unwrap_err();
    assert_eq!(err, TokenError::AlgorithmNotAllowed("none".to_owned()));
    assert_eq!(
        err.to_string(),
        r#"token algorithm "none" is not allowed; tokens must be signed with HS256"#
    );
    assert_eq!(err.http_status(), 401);
}

#[test]
fn other_algorithms_are_refused_even_with_the_right_secret() {
    let payload = join_payload(now_secs() + 600);
    let hs384 = sign_json(Algorithm::HS384, &payload, SECRET);
    assert_eq!(
        verify(&hs384, &keys()),
        Err(TokenError::AlgorithmNotAllowed("HS384".to_owned()))
    );
    // The classic key-confusion forgery: an RSA header over an HMAC made with the secret.
    let hs256 = sign_json(Algorithm::HS256, &payload, SECRET);
    let signature = hs256.rsplit('.').next().unwrap();
    let rs256 = format!(
        "{}.{}.{signature}",
        b64(&json!({"alg": "RS256", "typ": "JWT"})),
        b64(&payload)
    );
    let err = verify(&rs256, &keys()).unwrap_err();
    assert_eq!(err, TokenError::AlgorithmNotAllowed("RS256".to_owned()));
    assert!(err.to_string().contains(r#""RS256""#), "{err}");
}

#[test]
fn unknown_api_key_is_named() {
    let claims = Claims::for_join("APIstranger", "alice", "lobby", Duration::from_secs(60));
    let token = issue("APIstranger", SECRET, &claims).unwrap();
    let err = verify(&token, &keys()).unwrap_err();
    assert_eq!(err, TokenError::UnknownApiKey("APIstranger".to_owned()));
    assert_eq!(
        err.to_string(),
        r#"token is signed with unknown API key "APIstranger""#
    );
    assert_eq!(err.http_status(), 401);
}

#[test]
fn wrong_secret_or_tampered_claims_fail_the_signature() {
    let wrong = issue(KEY, OTHER_SECRET, &join_claims()).unwrap();
    let err = verify(&wrong, &keys()).unwrap_err();
    assert_eq!(err, TokenError::BadSignature);
    assert_eq!(
        err.to_string(),
        "token signature does not match (wrong API secret?)"
    );

    let genuine = issue(KEY, SECRET, &join_claims()).unwrap();
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let mut forged = join_claims();
    forged.video.room = "boardroom".to_owned();
    let forged_payload = b64(&serde_json::to_value(&forged).unwrap());
    parts[1] = &forged_payload;
    assert_eq!(
        verify(&parts.join("."), &keys()),
        Err(TokenError::BadSignature)
    );

    let unsigned = format!("{}.{}.", parts[0], forged_payload);
    assert_eq!(verify(&unsigned, &keys()), Err(TokenError::BadSignature));
}

#[test]
fn exp_is_required() {
    let payload = json!({"iss": KEY, "sub": "alice", "video": {"room": "lobby", "roomJoin": true}});
    let err = verify(&sign_json(Algorithm::HS256, &payload, SECRET), &keys()).unwrap_err();
    assert_eq!(err, TokenError::MissingExpiry);
    assert_eq!(err.http_status(), 401);
}

#[test]
fn expiry_allows_sixty_seconds_of_leeway() {
    let recently = sign_json(Algorithm::HS256, &join_payload(now_secs() - 30), SECRET);
    assert!(verify_join(&recently, &keys()).is_ok());

    let exp = now_secs() - 120;
    let long_ago = sign_json(Algorithm::HS256, &join_payload(exp), SECRET);
    let err = verify_join(&long_ago, &keys()).unwrap_err();
    assert_eq!(err, TokenError::Expired { exp });
    assert_eq!(
        err.to_string(),
        format!("token expired at {}", Rfc3339(exp))
    );
    assert_eq!(err.http_status(), 401);
}

#[test]
fn not_before_allows_sixty_seconds_of_leeway() {
    let now = now_secs();
    let mut soon = join_payload(now + 600);
    soon["nbf"] = json!(now + 30);
    assert!(verify_join(&sign_json(Algorithm::HS256, &soon, SECRET), &keys()).is_ok());

    let nbf = now + 120;
    let mut later = join_payload(now + 600);
    later["nbf"] = json!(nbf);
    let err = verify_join(&sign_json(Algorithm::HS256, &later, SECRET), &keys()).unwrap_err();
    assert_eq!(err, TokenError::NotYetValid { nbf });
    assert_eq!(
        err.to_string(),
        format!("token is not valid before {}", Rfc3339(nbf))
    );
    assert_eq!(err.http_status(), 401);
}

#[test]
fn malformed_tokens_are_refused_with_401() {
    let exp = now_secs() + 600;
    let header = b64(&json!({"alg": "HS256", "typ": "JWT"}));
    let cases = [
        String::new(),
        "not-a-token".to_owned(),
        "a.b".to_owned(),
        "a.b.c.d".to_owned(),
        format!("%%%.{}.sig", b64(&join_payload(exp))),
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode("{not json"),
            b64(&join_payload(exp))
        ),
        format!(
            "{}.{}.sig",
            b64(&json!({"typ": "JWT"})),
            b64(&join_payload(exp))
        ),
        format!("{header}.{}.sig", URL_SAFE_NO_PAD.encode("[1,2]")),
        // A claim of the wrong type is refused before the signature is even looked at.
        format!(
            "{header}.{}.sig",
            b64(&json!({"iss": KEY, "exp": exp, "video": {"roomJoin": "yes"}}))
        ),
        format!("{header}.{}.%%", b64(&join_payload(exp))),
        // Without iss there is no way to pick a secret.
        sign_json(
            Algorithm::HS256,
            &json!({"sub": "alice", "exp": exp}),
            SECRET,
        ),
    ];
    for token in cases {
        let err = verify(&token, &keys()).unwrap_err();
        assert!(
            matches!(err, TokenError::Malformed(_)),
            "{token:?} gave {err:?}"
        );
        assert_eq!(err.http_status(), 401);
        assert!(err.to_string().starts_with("malformed token: "), "{err}");
    }
}

#[test]
fn join_needs_room_join_room_and_identity() {
    let mut no_join = join_claims();
    no_join.video.room_join = false;
    let mut no_room = join_claims();
    no_room.video.room.clear();
    let mut no_identity = join_claims();
    no_identity.sub.clear();
    let cases = [
        (
            no_join,
            TokenError::MissingRoomJoin,
            "token does not grant roomJoin",
        ),
        (
            no_room,
            TokenError::MissingRoom,
            "token names no room (video.room is empty)",
        ),
        (
            no_identity,
            TokenError::MissingIdentity,
            "token has no identity (sub is empty)",
        ),
    ];
    for (claims, expected, message) in cases {
        let token = issue(KEY, SECRET, &claims).unwrap();
        assert!(
            verify(&token, &keys()).is_ok(),
            "plain verify ignores grants"
        );
        let err = verify_join(&token, &keys()).unwrap_err();
        assert_eq!(err, expected);
        assert_eq!(err.to_string(), message);
        assert_eq!(err.http_status(), 403);
    }
}

#[test]
fn issue_refuses_claims_that_cannot_verify() {
    let claims = join_claims();
    assert!(matches!(
        issue("", SECRET, &claims),
        Err(TokenError::Issue(_))
    ));
    assert!(matches!(issue(KEY, "", &claims), Err(TokenError::Issue(_))));
    let err = issue("APIkeyTwo", OTHER_SECRET, &claims).unwrap_err();
    assert!(err.to_string().contains("differs"), "{err}");
    assert_eq!(err.http_status(), 500);
    let no_exp = Claims {
        exp: 0,
        ..join_claims()
    };
    assert!(matches!(
        issue(KEY, SECRET, &no_exp),
        Err(TokenError::Issue(_))
    ));
}

#[test]
fn key_store_looks_up_secrets_and_never_prints_them() {
    let store = keys();
    assert_eq!(store.secret(KEY), Some(SECRET));
    assert_eq!(store.secret("APIkeyThree"), None);
    assert!(!store.is_empty());
    assert!(KeyStore::default().is_empty());
    let debug = format!("{store:?}");
    assert!(debug.contains(KEY) && !debug.contains(SECRET), "{debug}");
}

#[test]
fn rfc3339_formats_utc_dates() {
    let cases = [
        (0, "1970-01-01T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (1_795_237_200, "2026-11-21T05:00:00Z"),
        (4_107_587_696, "2100-03-01T12:34:56Z"),
        (253_402_300_799, "9999-12-31T23:59:59Z"),
    ];
    for (secs, expected) in cases {
        assert_eq!(Rfc3339(secs).to_string(), expected);
    }
    assert_eq!(
        TokenError::Expired { exp: 1_795_237_200 }.to_string(),
        "token expired at 2026-11-21T05:00:00Z"
    );
}
