//! LiveKit's signaling v1 (`/rtc/v1`): the join arrives as one `join_request` query
//! parameter, a `WrappedJoinRequest` in URL-safe base64 whose `JoinRequest` may be
//! gzip-compressed and usually carries the client's first offer; the session then runs one
//! PeerConnection (`switchboard_sfu`'s `single_pc.rs`).

use std::io::Read;

use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use livekit_protocol as proto;
use prost::Message as _;
use proto::wrapped_join_request::Compression;

/// The largest `JoinRequest` accepted once decompressed: what a WebSocket message may be.
pub(crate) const MAX_JOIN_REQUEST: usize = crate::websocket::MAX_MESSAGE;

/// URL-safe base64 as the SDKs write it: livekit-client and the Rust SDK keep the `=`
/// padding, other encoders drop it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a `join_request` cannot be read; said to the client as a 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum BadJoinRequest {
    #[error("/rtc/v1 needs a join_request query parameter")]
    Missing,
    #[error("join_request is not URL-safe base64")]
    NotBase64,
    #[error("join_request is not a WrappedJoinRequest")]
    NotWrapped,
    #[error("join_request names an unknown compression ({0})")]
    UnknownCompression(i32),
    #[error("join_request is not valid gzip")]
    NotGzip,
    #[error("join_request is larger than {MAX_JOIN_REQUEST} bytes once decompressed")]
    TooLarge,
    #[error("join_request does not hold a JoinRequest")]
    NotJoinRequest,
}

/// Decodes the `join_request` query parameter.
pub(crate) fn decode(param: Option<&str>) -> Result<proto::JoinRequest, BadJoinRequest> {
    let param = param.ok_or(BadJoinRequest::Missing)?;
    // The encoded text is already bounded by the HTTP request's size.
    let wrapped = BASE64
        .decode(param.trim())
        .map_err(|_| BadJoinRequest::NotBase64)?;
    let wrapped = proto::WrappedJoinRequest::decode(wrapped.as_slice())
        .map_err(|_| BadJoinRequest::NotWrapped)?;
    let inner = match Compression::try_from(wrapped.compression) {
        Ok(Compression::None) => wrapped.join_request,
        Ok(Compression::Gzip) => gunzip(&wrapped.join_request)?,
        Err(_) => return Err(BadJoinRequest::UnknownCompression(wrapped.compression)),
    };
    proto::JoinRequest::decode(inner.as_slice()).map_err(|_| BadJoinRequest::NotJoinRequest)
}

/// Inflates at most [`MAX_JOIN_REQUEST`] bytes: a small request can claim to inflate to
/// gigabytes.
fn gunzip(compressed: &[u8]) -> Result<Vec<u8>, BadJoinRequest> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(compressed)
        .take(MAX_JOIN_REQUEST as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| BadJoinRequest::NotGzip)?;
    if out.len() > MAX_JOIN_REQUEST {
        return Err(BadJoinRequest::TooLarge);
    }
    Ok(out)
}

/// The name LiveKit gives a reconnect reason, as v0 clients send it in the query.
pub(crate) fn reconnect_reason(request: &proto::JoinRequest) -> Option<String> {
    (request.reconnect_reason != 0).then(|| request.reconnect_reason.to_string())
}

/// For `fuzzing.rs`: decodes any text as a `join_request`; what decodes stays within the
/// bound.
#[cfg(feature = "fuzz")]
pub(crate) fn fuzz_decode(param: &str) {
    if let Ok(request) = decode(Some(param)) {
        assert!(request.encoded_len() <= MAX_JOIN_REQUEST + param.len());
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn request() -> proto::JoinRequest {
        proto::JoinRequest {
            connection_settings: Some(proto::ConnectionSettings {
                auto_subscribe: true,
                ..Default::default()
            }),
            publisher_offer: Some(proto::SessionDescription {
                r#type: "offer".into(),
                sdp: "v=0\r\n".into(),
                id: 1,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn wrap(compression: Compression, bytes: Vec<u8>) -> String {
        let wrapped = proto::WrappedJoinRequest {
            compression: compression as i32,
            join_request: bytes,
        };
        base64::engine::general_purpose::URL_SAFE.encode(wrapped.encode_to_vec())
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(bytes).expect("in memory");
        encoder.finish().expect("in memory")
    }

    #[test]
    fn plain_and_gzipped_requests_decode_padded_or_not() {
        let plain = wrap(Compression::None, request().encode_to_vec());
        assert_eq!(decode(Some(&plain)), Ok(request()));
        let zipped = wrap(Compression::Gzip, gzip(&request().encode_to_vec()));
        assert_eq!(decode(Some(&zipped)), Ok(request()));
        assert_eq!(decode(Some(zipped.trim_end_matches('='))), Ok(request()));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        assert_eq!(decode(None), Err(BadJoinRequest::Missing));
        assert_eq!(decode(Some("not base64!")), Err(BadJoinRequest::NotBase64));
        let not_gzip = wrap(Compression::Gzip, b"plain".to_vec());
        assert_eq!(decode(Some(&not_gzip)), Err(BadJoinRequest::NotGzip));
        let unknown = proto::WrappedJoinRequest {
            compression: 7,
            join_request: Vec::new(),
        };
        let unknown = base64::engine::general_purpose::URL_SAFE.encode(unknown.encode_to_vec());
        assert_eq!(
            decode(Some(&unknown)),
            Err(BadJoinRequest::UnknownCompression(7))
        );
    }

    #[test]
    fn a_gzip_bomb_is_refused_without_inflating_it_all() {
        // 16 MiB in about 16 KB: a URL carries that.
        let bomb = gzip(&vec![0u8; 16 * MAX_JOIN_REQUEST]);
        assert!(bomb.len() < 32 * 1024, "{}", bomb.len());
        let param = wrap(Compression::Gzip, bomb);
        assert_eq!(decode(Some(&param)), Err(BadJoinRequest::TooLarge));
    }
}
