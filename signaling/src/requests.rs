//! Signal requests beyond publishing and subscribing: a publisher's subscription
//! permissions, its local track settings, the client SDKs' `Simulate` test hooks, and a clear
//! refusal for what this server does not do. Nothing a client sends is dropped unanswered.

use livekit_protocol as proto;
use proto::request_response::{Reason, Request};
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;
use switchboard_sfu::{AllowedSubscriber, SubscribePermission};
use tracing::{debug, info};

use crate::ending::Ending;
use crate::events::LeaveReason;
use crate::session::Session;

/// Handles a request beyond publishing and subscribing: the answer to send, if any, or how
/// the session ends (a simulated failure).
pub(crate) fn handle(session: &Session, request: Req) -> Result<Option<Resp>, Ending> {
    Ok(match request {
        Req::SubscriptionPermission(permission) => subscription_permission(session, permission),
        Req::UpdateAudioTrack(update) => update_local_audio_track(session, update),
        Req::UpdateVideoTrack(update) => update_local_video_track(session, update),
        Req::Simulate(scenario) => Some(simulate(session, scenario)?),
        // Deprecated upstream; layers come with AddTrackRequest.
        #[allow(deprecated)]
        Req::UpdateLayers(_) => Some(unsupported(session, "UpdateVideoLayers (deprecated)", None)),
        Req::PublishDataTrackRequest(request) => Some(unsupported(
            session,
            "publishing data tracks",
            Some(Request::PublishDataTrack(request)),
        )),
        Req::UnpublishDataTrackRequest(request) => Some(unsupported(
            session,
            "publishing data tracks",
            Some(Request::UnpublishDataTrack(request)),
        )),
        Req::UpdateDataSubscription(_) => {
            Some(unsupported(session, "subscribing to data tracks", None))
        }
        Req::StoreDataBlobRequest(_) | Req::GetDataBlobRequest(_) => {
            Some(unsupported(session, "data blobs", None))
        }
        // The session handles the rest itself; nothing else reaches here.
        other => {
            debug!(participant = %session.sid, "signal request handled elsewhere: {other:?}");
            None
        }
    })
}

/// At most this many entries in one SubscriptionPermission (one per participant allowed):
/// the media plane checks them on every subscription.
pub(crate) const MAX_TRACK_PERMISSIONS: usize = 1_000;

/// A publisher sets whom it lets subscribe to its tracks. Those no longer allowed lose them
/// and are told (SubscriptionPermissionUpdate); those waiting and now allowed get them.
fn subscription_permission(
    session: &Session,
    request: proto::SubscriptionPermission,
) -> Option<Resp> {
    let given = request.track_permissions.len();
    let Some(permission) = permission_of(request) else {
        metrics::counter!("switchboard_signal_refusals_total", "limit" => "track_permissions")
            .increment(1);
        return Some(error(
            Reason::LimitExceeded,
            format!(
                "a SubscriptionPermission may name at most {MAX_TRACK_PERMISSIONS} participants \
                 ({given} given); it was not applied"
            ),
            None,
        ));
    };
    let _ = session.media.set_subscribe_permission(permission);
    None
}

/// The media plane's form of a SubscriptionPermission (`None` inside: everyone may), or
/// `None` when it names more than [`MAX_TRACK_PERMISSIONS`] participants.
pub(crate) fn permission_of(
    request: proto::SubscriptionPermission,
) -> Option<Option<SubscribePermission>> {
    if request.track_permissions.len() > MAX_TRACK_PERMISSIONS {
        return None;
    }
    Some((!request.all_participants).then(|| {
        SubscribePermission {
            all_participants: false,
            allowed: request
                .track_permissions
                .into_iter()
                .map(|p| AllowedSubscriber {
                    sid: p.participant_sid,
                    identity: p.participant_identity,
                    track_sids: (!p.all_tracks).then_some(p.track_sids),
                })
                .collect(),
        }
    }))
}

/// The media plane's verdict on a track this participant wants, as LiveKit reports it.
pub(crate) fn permission_update(publisher: String, track_sid: String, allowed: bool) -> Resp {
    Resp::SubscriptionPermissionUpdate(proto::SubscriptionPermissionUpdate {
        participant_sid: publisher,
        track_sid,
        allowed,
    })
}

/// The client changed its microphone's features (stereo, DTX, noise suppression…): they
/// go in the track's info for everyone.
fn update_local_audio_track(
    session: &Session,
    request: proto::UpdateLocalAudioTrack,
) -> Option<Resp> {
    let features = request.features.clone();
    let found = update_own_track(session, &request.track_sid, proto::TrackType::Audio, |t| {
        t.audio_features = features;
    });
    (!found).then(|| {
        error(
            Reason::NotFound,
            format!("you publish no audio track {:?}", request.track_sid),
            Some(Request::UpdateAudioTrack(request)),
        )
    })
}

/// The client changed its camera's size: the track's info follows, so subscribers can pick
/// layers for it.
fn update_local_video_track(
    session: &Session,
    request: proto::UpdateLocalVideoTrack,
) -> Option<Resp> {
    let (width, height) = (request.width, request.height);
    let found = update_own_track(session, &request.track_sid, proto::TrackType::Video, |t| {
        t.width = width;
        t.height = height;
    });
    (!found).then(|| {
        error(
            Reason::NotFound,
            format!("you publish no video track {:?}", request.track_sid),
            Some(Request::UpdateVideoTrack(request)),
        )
    })
}

/// Applies `change` to the session's own track `sid` of type `kind` and tells the room;
/// false when it publishes no such track.
fn update_own_track(
    session: &Session,
    sid: &str,
    kind: proto::TrackType,
    change: impl FnOnce(&mut proto::TrackInfo),
) -> bool {
    let updated = session
        .sig
        .rooms
        .try_update(&session.room, &session.sid, |info| {
            let track = info
                .tracks
                .iter_mut()
                .find(|t| t.sid == sid && t.r#type == kind as i32)
                .ok_or(())?;
            change(track);
            Ok::<(), ()>(())
        });
    matches!(updated, Some(Ok(_)))
}

/// The client SDKs' test hooks. A node failure drops the signal connection without a word
/// (the client resumes, as after a real failure); a server leave ends the session with a
/// LeaveRequest. Scenarios about other nodes, migrations or artificial limits are refused.
fn simulate(session: &Session, request: proto::SimulateScenario) -> Result<Resp, Ending> {
    use proto::simulate_scenario::Scenario;
    info!(participant = %session.sid, scenario = ?request.scenario, "simulate requested");
    match request.scenario {
        Some(Scenario::NodeFailure(true)) => Err(Ending {
            reason: LeaveReason::SignalClosed,
            notify: false,
            close: None,
        }),
        Some(Scenario::ServerLeave(true)) => Err(Ending {
            reason: LeaveReason::ServerShutdown,
            notify: true,
            close: None,
        }),
        other => Ok(error(
            Reason::UnsupportedType,
            format!("this server does not simulate {other:?}; it simulates node_failure and server_leave"),
            None,
        )),
    }
}

/// A request this server does not implement: said so, never silently dropped.
fn unsupported(session: &Session, what: &str, request: Option<Request>) -> Resp {
    debug!(participant = %session.sid, "unsupported signal request: {what}");
    metrics::counter!("switchboard_signal_unsupported_total").increment(1);
    error(
        Reason::UnsupportedType,
        format!("{what} is not supported by this server"),
        request,
    )
}

fn error(reason: Reason, message: String, request: Option<Request>) -> Resp {
    Resp::RequestResponse(proto::RequestResponse {
        request_id: 0,
        reason: reason as i32,
        message,
        request,
    })
}
