//! **Not public API.** Entry points for the fuzz targets in `fuzz/` (feature `fuzz`); they
//! may change at any time.
//!
//! What a client sends reaches the server as bytes: a token, a v1 `join_request`,
//! SignalRequest frames, data packets, a WHIP/WHEP offer or PATCH body. Each entry point takes the fuzzer's bytes through
//! the same functions the server runs, with the media plane as a worker in memory
//! (`switchboard_sfu::fuzzing::SdpRig`), so no socket or runtime is involved. A panic is a
//! finding; so is a failed assertion about what the server must always do.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use livekit_protocol as proto;
use prost::Message as _;
use proto::signal_request::Message as Req;
use switchboard_sfu::fuzzing::{Input, SdpRig, PUBLISHER, SUBSCRIBER};
use switchboard_sfu::PeerRole;

use crate::token::{self, Claims, KeyStore, TokenError};
use crate::{data, publish, requests, session};

const API_KEY: &str = "devkey";
const SECRET: &str = "secret";

fn keys() -> KeyStore {
    KeyStore::new([(API_KEY.to_owned(), SECRET.to_owned())])
}

/// A signaling v1 `join_request` parameter: the fuzzer's text as it is, or its bytes as the
/// encoded `WrappedJoinRequest` (so the protobuf and gzip layers are reached).
pub fn join_request(data: &[u8]) {
    let mut input = Input::new(data);
    let param = if input.bool() {
        String::from_utf8_lossy(input.rest()).into_owned()
    } else {
        base64::engine::general_purpose::URL_SAFE.encode(input.rest())
    };
    crate::v1::fuzz_decode(&param);
}

/// A token as a client presents it: either raw text, or a header and payload of the
/// fuzzer's choosing signed with the right secret (so the checks after the signature run
/// on arbitrary JSON), with a valid or an arbitrary signature.
pub fn token(data: &[u8]) {
    let keys = keys();
    let mut input = Input::new(data);
    let token = if !input.bool() {
        String::from_utf8_lossy(input.rest()).into_owned()
    } else {
        let header = URL_SAFE_NO_PAD.encode(input.field());
        let payload = URL_SAFE_NO_PAD.encode(input.field());
        let signing_input = format!("{header}.{payload}");
        let signature = if input.bool() {
            URL_SAFE_NO_PAD.encode(input.rest())
        } else {
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256)
                .unwrap_or_default()
        };
        format!("{signing_input}.{signature}")
    };
    match token::verify(&token, &keys) {
        Ok(claims) => verified(&claims, &keys),
        Err(e) => refused(&e),
    }
    match token::verify_join(&token, &keys) {
        Ok(claims) => {
            assert!(claims.video.room_join && !claims.video.room.is_empty());
            assert!(!claims.sub.is_empty());
            let info = session::participant_info("PA_fuzz", &claims);
            assert_eq!(info.identity, claims.sub);
        }
        Err(e) => refused(&e),
    }
}

/// A verified token names our key and expires; what we issue from its claims verifies
/// again to the same claims.
fn verified(claims: &Claims, keys: &KeyStore) {
    assert_eq!(claims.iss, API_KEY);
    assert!(claims.exp > 0, "a verified token has an expiry");
    let reissued = token::issue(API_KEY, SECRET, claims).expect("verified claims can be issued");
    match token::verify(&reissued, keys) {
        Ok(again) => assert_eq!(&again, claims, "claims survive issue → verify"),
        // Only time can differ: a token valid a moment ago may expire meanwhile.
        Err(TokenError::Expired { .. } | TokenError::NotYetValid { .. }) => {}
        Err(e) => panic!("reissued claims refused: {e}"),
    }
}

fn refused(error: &TokenError) {
    // The message goes back to the client as it is (`/rtc/validate`, close reasons).
    let message = error.to_string();
    assert!(!message.is_empty());
    assert!(matches!(error.http_status(), 401 | 403));
}

/// What a client sends after joining, frame by frame (a kind byte, then the frame with a
/// 16-bit length): SignalRequests from the WebSocket (even kinds) and DataPackets from its data
/// channel (odd kinds). Each SignalRequest is decoded, re-encoded (the same message must come
/// back) and handed to what the session hands it to: the media worker (offers, answers,
/// candidates, announced tracks, mutes, subscriptions) and the pure parts of publishing. Each
/// DataPacket is decoded, stamped with the sender as the server does, and relayed.
pub fn signal_request(data: &[u8]) {
    let mut input = Input::new(data);
    let mut rig: Option<SdpRig> = None;
    while !input.is_empty() {
        let data_channel = input.bool();
        let frame = input.field();
        let rig = rig.get_or_insert_with(|| SdpRig::new(false));
        if data_channel {
            data_packet(rig, frame);
            continue;
        }
        let Ok(request) = proto::SignalRequest::decode(frame) else {
            continue;
        };
        let again = proto::SignalRequest::decode(request.encode_to_vec().as_slice())
            .expect("a decoded SignalRequest encodes to bytes that decode");
        assert_eq!(again, request);
        let Some(message) = request.message else {
            continue;
        };
        handle(rig, message);
        // Renegotiations and timers the requests set off.
        for offer in rig.turn() {
            assert!(offer.starts_with("v=0"));
        }
    }
}

fn handle(rig: &mut SdpRig, message: Req) {
    match message {
        Req::Offer(offer) => {
            if let Ok(answer) = rig.publisher_offer(&offer.sdp) {
                assert!(answer.starts_with("v=0"));
            }
        }
        Req::Answer(answer) => {
            let _ = rig.subscriber_answer(&answer.sdp);
        }
        Req::Trickle(trickle) => {
            if let Ok(Some((role, candidate))) = session::trickle_candidate(&trickle) {
                let participant = match role {
                    PeerRole::Publisher => PUBLISHER,
                    PeerRole::Subscriber => SUBSCRIBER,
                };
                rig.remote_candidate(participant, role == PeerRole::Publisher, &candidate);
            }
        }
        Req::AddTrack(request) => {
            let codec = request.simulcast_codecs.first().map(|c| c.codec.as_str());
            let video = request.r#type == proto::TrackType::Video as i32;
            let kind = if video {
                switchboard_sfu::TrackKind::Video
            } else {
                switchboard_sfu::TrackKind::Audio
            };
            let _ = publish::mime_type(kind, codec.unwrap_or_default());
            rig.expect_track(&request.cid, "TR_fuzz", video, codec);
        }
        Req::Mute(mute) => rig.track_commands(&mute.sid, mute.muted),
        Req::Subscription(update) => {
            for sid in update.track_sids {
                rig.track_commands(&sid, update.subscribe);
            }
        }
        Req::SubscriptionPermission(permission) => {
            if let Some(permission) = requests::permission_of(permission) {
                rig.subscribe_permission(permission);
            }
        }
        _ => {}
    }
}

fn data_packet(rig: &mut SdpRig, frame: &[u8]) {
    if frame.len() > data::MAX_DATA_PACKET {
        return;
    }
    let Ok(mut packet) = proto::DataPacket::decode(frame) else {
        return;
    };
    let (destinations, sids) = data::stamp(&mut packet, "sender", "PA_sender");
    assert!(destinations.windows(2).all(|w| w[0] < w[1]));
    assert!(packet.destination_identities.is_empty());
    let bytes = packet.encode_to_vec();
    let relayed = proto::DataPacket::decode(bytes.as_slice()).expect("what we encode decodes");
    assert_eq!(relayed.participant_identity, "sender");
    let to = if sids.is_empty() {
        vec![SUBSCRIBER.to_owned()]
    } else {
        sids
    };
    rig.send_data(to, true, &bytes);
}

/// A WHIP or WHEP request body (see `whip::fuzz`).
pub fn whip(data: &[u8]) {
    crate::whip::fuzz::request(data);
}
