//! Track publication as LiveKit clients do it: AddTrackRequest → TrackPublishedResponse,
//! mute, and unpublish noticed by the media plane.

use std::time::SystemTime;

use livekit_protocol as proto;
use proto::signal_response::Message as Resp;
use switchboard_sfu::{ExpectedTrack, LayerSize, TrackKind};
use tracing::debug;

use crate::events::SignalEvent;
use crate::ids;
use crate::limits::merge_attributes;
use crate::session::Session;
use crate::token::VideoGrant;

/// LiveKit spells mime types as `video/VP8`, `audio/opus`.
pub(crate) fn mime_type(kind: TrackKind, codec: &str) -> String {
    let codec = codec.trim().to_ascii_lowercase();
    match (kind, codec.as_str()) {
        (TrackKind::Audio, "" | "opus") => "audio/opus".into(),
        (TrackKind::Audio, other) => format!("audio/{other}"),
        (TrackKind::Video, "" | "vp8") => "video/VP8".into(),
        (TrackKind::Video, "h264") => "video/H264".into(),
        (TrackKind::Video, "vp9") => "video/VP9".into(),
        (TrackKind::Video, "av1") => "video/AV1".into(),
        (TrackKind::Video, other) => format!("video/{}", other.to_ascii_uppercase()),
    }
}

/// Handles AddTrackRequest: assigns the track sid, tells the media plane which msid to
/// expect, and announces the track to the room. Refusals come back as a RequestResponse.
pub(crate) fn add_track(session: &mut Session, request: proto::AddTrackRequest) -> Resp {
    let kind = match proto::TrackType::try_from(request.r#type) {
        Ok(proto::TrackType::Audio) => TrackKind::Audio,
        Ok(proto::TrackType::Video) => TrackKind::Video,
        _ => return refuse(session, "only audio and video tracks can be published"),
    };
    if !session.claims.video.can_publish() {
        return refuse(
            session,
            "the token does not allow publishing (canPublish is false)",
        );
    }
    let allowed_sources = &session.claims.video.can_publish_sources;
    let source =
        proto::TrackSource::try_from(request.source).unwrap_or(proto::TrackSource::Unknown);
    if !allowed_sources.is_empty()
        && !allowed_sources
            .iter()
            .any(|s| s.eq_ignore_ascii_case(source.as_str_name()))
    {
        return refuse(
            session,
            &format!(
                "the token does not allow publishing {}",
                source.as_str_name()
            ),
        );
    }
    if let Some(refusal) = oversize_track_fields(session, &request) {
        return refusal;
    }
    let sid = ids::track_sid();
    let codec = request
        .simulcast_codecs
        .first()
        .map(|c| c.codec.clone())
        .unwrap_or_default();
    let mime = mime_type(kind, &codec);
    // `simulcast`, `layers`, `stereo` and `disable_dtx` are deprecated upstream in favour of
    // per-codec layers and audio features, but clients before 2.x still read them.
    #[allow(deprecated)]
    let track = proto::TrackInfo {
        sid: sid.clone(),
        r#type: request.r#type,
        name: request.name.clone(),
        muted: request.muted,
        width: request.width,
        height: request.height,
        simulcast: request.layers.len() > 1,
        disable_dtx: request.disable_dtx,
        source: request.source,
        layers: request.layers.clone(),
        mime_type: mime.clone(),
        codecs: vec![proto::SimulcastCodecInfo {
            mime_type: mime,
            cid: request.cid.clone(),
            layers: request.layers.clone(),
            ..Default::default()
        }],
        stereo: request.stereo,
        disable_red: request.disable_red,
        encryption: request.encryption,
        stream: request.stream.clone(),
        ..Default::default()
    };
    // Announced tracks count whether or not media ever binds them, so the media plane's
    // pending expectations are bounded by the same limit.
    let published = track.clone();
    let max = session.sig.limits.max_tracks;
    let added = session
        .sig
        .rooms
        .try_update(&session.room, &session.sid, move |info| {
            if info.tracks.len() >= max as usize {
                return Err(());
            }
            info.tracks.push(published);
            info.is_publisher = true;
            info.state = proto::participant_info::State::Active as i32;
            Ok(())
        });
    if let Some(Err(())) = added {
        metrics::counter!("switchboard_signal_refusals_total", "limit" => "max_tracks_per_participant")
            .increment(1);
        return refuse_request(
            session,
            proto::request_response::Reason::LimitExceeded,
            format!("a participant may publish at most {max} tracks; unpublish one first"),
            proto::request_response::Request::AddTrack(request),
        );
    }
    let _ = session.media.expect_track(ExpectedTrack {
        cid: request.cid.clone(),
        codec_cids: request
            .simulcast_codecs
            .iter()
            .filter(|c| !c.cid.is_empty() && c.cid != request.cid)
            .map(|c| c.cid.clone())
            .collect(),
        sid: sid.clone(),
        kind,
        // The codec the publisher's answer puts first. Audio goes as RED (Opus with the
        // previous frame inside, so a lost packet costs nothing) unless the client turned it
        // off, as LiveKit does; subscribers without RED get plain Opus (sfu/src/red.rs).
        codec: if kind == TrackKind::Audio && !request.disable_red {
            Some("red".to_owned())
        } else {
            (!codec.is_empty()).then(|| codec.to_ascii_lowercase())
        },
        screen: source == proto::TrackSource::ScreenShare,
        layers: layer_sizes(&request),
    });
    let _ = session.sig.events.send(SignalEvent::TrackPublished {
        room_id: session.room.clone(),
        participant_sid: session.sid.clone(),
        identity: session.identity.clone(),
        track_sid: sid,
        kind: match kind {
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
        },
        source: source.as_str_name().to_owned(),
        at: SystemTime::now(),
    });
    Resp::TrackPublished(proto::TrackPublishedResponse {
        cid: request.cid,
        track: Some(track),
    })
}

/// The refusal of a track whose fields (broadcast with the participant) are oversize.
// `layers` is deprecated upstream but still sent by clients before 2.x.
#[allow(deprecated)]
fn oversize_track_fields(session: &Session, request: &proto::AddTrackRequest) -> Option<Resp> {
    /// Longest track name, cid or stream name: clients use short labels and UUIDs.
    const MAX_FIELD: usize = 256;
    /// More simulcast layers or codecs than any encoder produces.
    const MAX_LIST: usize = 8;
    let fields = [
        ("name", request.name.len()),
        ("cid", request.cid.len()),
        ("stream", request.stream.len()),
    ];
    let refusal = if let Some((field, len)) = fields.iter().find(|(_, len)| *len > MAX_FIELD) {
        format!("the track {field} is {len} bytes; at most {MAX_FIELD} are allowed")
    } else if request.layers.len() > MAX_LIST || request.simulcast_codecs.len() > MAX_LIST {
        format!("a track may have at most {MAX_LIST} layers and {MAX_LIST} codecs")
    } else {
        return None;
    };
    Some(refuse_request(
        session,
        proto::request_response::Reason::InvalidRequest,
        refusal,
        proto::request_response::Request::AddTrack(request.clone()),
    ))
}

/// A RequestResponse refusing `request`, which livekit-client matches to the pending call
/// (by cid for a track, by request id for a metadata update) and raises as an error.
fn refuse_request(
    session: &Session,
    reason: proto::request_response::Reason,
    message: String,
    request: proto::request_response::Request,
) -> Resp {
    debug!(participant = %session.sid, "refused a request: {message}");
    let request_id = match &request {
        proto::request_response::Request::UpdateMetadata(update) => update.request_id,
        _ => 0,
    };
    Resp::RequestResponse(proto::RequestResponse {
        request_id,
        reason: reason as i32,
        message,
        request: Some(request),
    })
}

fn refuse(session: &Session, message: &str) -> Resp {
    debug!(participant = %session.sid, "refused a track: {message}");
    Resp::RequestResponse(proto::RequestResponse {
        reason: proto::request_response::Reason::NotAllowed as i32,
        message: message.to_owned(),
        ..Default::default()
    })
}

/// The client muted or unmuted one of its tracks: the media plane follows (as LiveKit's
/// does, so a client unmuting after an admin's mute is heard again) and everyone sees the
/// new state.
pub(crate) fn mute(session: &Session, request: &proto::MuteTrackRequest) {
    let (sid, muted) = (request.sid.clone(), request.muted);
    let _ = session.media.set_track_muted(sid.clone(), muted);
    session
        .sig
        .rooms
        .update(&session.room, &session.sid, move |info| {
            if let Some(track) = info.tracks.iter_mut().find(|t| t.sid == sid) {
                track.muted = muted;
            }
        });
}

/// The media plane saw the client stop sending a track.
pub(crate) fn track_unpublished(session: &Session, track_sid: &str) {
    let sid = track_sid.to_owned();
    session
        .sig
        .rooms
        .update(&session.room, &session.sid, move |info| {
            info.tracks.retain(|t| t.sid != sid);
        });
    let _ = session.sig.events.send(SignalEvent::TrackUnpublished {
        room_id: session.room.clone(),
        participant_sid: session.sid.clone(),
        identity: session.identity.clone(),
        track_sid: track_sid.to_owned(),
        at: SystemTime::now(),
    });
}

/// UpdateParticipantMetadata, honoured only with canUpdateOwnMetadata and within the size
/// limits. Returns the RequestResponse refusing it, if it is refused for its size.
pub(crate) fn update_own_metadata(
    session: &Session,
    update: proto::UpdateParticipantMetadata,
) -> Option<Resp> {
    if session.claims.video.can_update_own_metadata != Some(true) {
        return Some(refuse_request(
            session,
            proto::request_response::Reason::NotAllowed,
            "the token does not allow updating your own metadata, name or attributes \
             (canUpdateOwnMetadata is false)"
                .to_owned(),
            proto::request_response::Request::UpdateMetadata(update),
        ));
    }
    let limits = &session.sig.limits;
    let changes = update.clone();
    let result = session
        .sig
        .rooms
        .try_update(&session.room, &session.sid, move |info| {
            if !changes.metadata.is_empty() {
                limits.check_metadata(&changes.metadata)?;
                info.metadata = changes.metadata;
            }
            if !changes.name.is_empty() {
                limits.check_name(&changes.name)?;
                info.name = changes.name;
            }
            merge_attributes(&mut info.attributes, changes.attributes);
            limits.check_attributes(&info.attributes)
        });
    match result {
        Some(Err(too_large)) => {
            metrics::counter!("switchboard_signal_refusals_total", "limit" => "participant_metadata")
                .increment(1);
            Some(refuse_request(
                session,
                proto::request_response::Reason::LimitExceeded,
                too_large.to_string(),
                proto::request_response::Request::UpdateMetadata(update),
            ))
        }
        _ => None,
    }
}

/// Enforces a permission set by an admin through the grants the session checks.
// `recorder` is deprecated upstream but still part of the permission.
#[allow(deprecated)]
pub(crate) fn apply_permission(grant: &mut VideoGrant, permission: &proto::ParticipantPermission) {
    grant.can_publish = Some(permission.can_publish);
    grant.can_subscribe = Some(permission.can_subscribe);
    grant.can_publish_data = Some(permission.can_publish_data);
    grant.can_update_own_metadata = Some(permission.can_update_metadata);
    grant.can_publish_sources = permission
        .can_publish_sources
        .iter()
        .filter_map(|s| proto::TrackSource::try_from(*s).ok())
        .map(|s| s.as_str_name().to_ascii_lowercase())
        .collect();
    grant.hidden = permission.hidden;
    grant.recorder = permission.recorder;
}

/// Tells the publisher which layers of its track `track_sid` subscribers need (dynacast):
/// qualities up to `max_quality` on, the others off. livekit-client reads the per-codec
/// list, matched to its encoder by the codec's lower-case name.
pub(crate) fn subscribed_quality(
    session: &Session,
    track_sid: String,
    max_quality: Option<u8>,
) -> Resp {
    let codec = session
        .sig
        .rooms
        .participant(&session.room, &session.identity)
        .and_then(|p| p.tracks.into_iter().find(|t| t.sid == track_sid))
        .map(|t| t.mime_type.to_ascii_lowercase())
        .map(|mime| mime.trim_start_matches("video/").to_owned())
        .filter(|codec| !codec.is_empty())
        .unwrap_or_else(|| "vp8".to_owned());
    let qualities: Vec<proto::SubscribedQuality> = [
        proto::VideoQuality::Low,
        proto::VideoQuality::Medium,
        proto::VideoQuality::High,
    ]
    .into_iter()
    .map(|quality| proto::SubscribedQuality {
        quality: quality as i32,
        enabled: max_quality.is_some_and(|max| quality as i32 <= i32::from(max)),
    })
    .collect();
    // The deprecated list too: clients before 2.x read it (LiveKit fills both).
    #[allow(deprecated)]
    let update = proto::SubscribedQualityUpdate {
        track_sid,
        subscribed_qualities: qualities.clone(),
        subscribed_codecs: vec![proto::SubscribedCodec { codec, qualities }],
    };
    Resp::SubscribedQualityUpdate(update)
}

/// The sizes of the layers a video track announces (per codec in clients from 2.x, in the
/// deprecated `layers` before), for matching subscribers' requested sizes to layers.
fn layer_sizes(request: &proto::AddTrackRequest) -> Vec<LayerSize> {
    let layers = request
        .simulcast_codecs
        .iter()
        .find(|c| !c.layers.is_empty())
        .map_or(&request.layers, |c| &c.layers);
    layers
        .iter()
        .filter_map(|l| {
            let quality = proto::VideoQuality::try_from(l.quality).ok()?;
            let quality = match quality {
                proto::VideoQuality::Low => 0,
                proto::VideoQuality::Medium => 1,
                proto::VideoQuality::High => 2,
                proto::VideoQuality::Off => return None,
            };
            Some(LayerSize {
                quality,
                width: l.width,
                height: l.height,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types_follow_livekit_spelling() {
        assert_eq!(mime_type(TrackKind::Video, "vp8"), "video/VP8");
        assert_eq!(mime_type(TrackKind::Video, "H264"), "video/H264");
        assert_eq!(mime_type(TrackKind::Video, ""), "video/VP8");
        assert_eq!(mime_type(TrackKind::Audio, ""), "audio/opus");
        assert_eq!(mime_type(TrackKind::Video, "av1"), "video/AV1");
    }
}
