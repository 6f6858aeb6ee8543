//! What a subscriber asks of the tracks it receives: which ones (`UpdateSubscription`), and
//! how (`UpdateTrackSettings`: the size it shows them at, a quality, a frame rate, or none at all), and
//! what it is told back when the media plane pauses or resumes one (`StreamStateUpdate`).

use livekit_protocol as proto;
use proto::signal_response::Message as Resp;
use switchboard_sfu::TrackSettings;

use crate::session::Session;

/// Subscribes to or unsubscribes from tracks by sid.
pub(crate) fn update_subscription(session: &Session, update: proto::UpdateSubscription) {
    let mut sids = update.track_sids;
    sids.extend(
        update
            .participant_tracks
            .into_iter()
            .flat_map(|p| p.track_sids),
    );
    let _ = session.media.subscribe(sids, update.subscribe);
}

/// Hands the client's settings for some of its tracks to the media plane, whose allocator
/// chooses each track's layer from them (adaptive stream sends the size of the element a
/// track plays in, and `disabled` when it is hidden).
pub(crate) fn update_track_settings(session: &Session, update: proto::UpdateTrackSettings) {
    let _ = session
        .media
        .track_settings(update.track_sids.clone(), settings_of(&update));
}

fn settings_of(update: &proto::UpdateTrackSettings) -> TrackSettings {
    let quality = match proto::VideoQuality::try_from(update.quality) {
        Ok(proto::VideoQuality::Low) => Some(0),
        Ok(proto::VideoQuality::Medium) => Some(1),
        Ok(proto::VideoQuality::High) | Err(_) => None,
        Ok(proto::VideoQuality::Off) => None,
    };
    TrackSettings {
        // `quality: OFF` is an older client's way of saying disabled.
        disabled: update.disabled || update.quality == proto::VideoQuality::Off as i32,
        width: update.width,
        height: update.height,
        quality,
        fps: update.fps,
    }
}

/// The message telling the client a track it receives was paused or resumed.
pub(crate) fn stream_state(publisher: String, track_sid: String, paused: bool) -> Resp {
    let state = if paused {
        proto::StreamState::Paused
    } else {
        proto::StreamState::Active
    };
    Resp::StreamStateUpdate(proto::StreamStateUpdate {
        stream_states: vec![proto::StreamStateInfo {
            participant_sid: publisher,
            track_sid,
            state: state as i32,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_say_what_the_client_asked() {
        let hidden = proto::UpdateTrackSettings {
            disabled: true,
            ..Default::default()
        };
        assert!(settings_of(&hidden).disabled);
        let small = proto::UpdateTrackSettings {
            width: 160,
            height: 90,
            ..Default::default()
        };
        let settings = settings_of(&small);
        assert_eq!(
            (settings.disabled, settings.width, settings.height),
            (false, 160, 90)
        );
        let low = proto::UpdateTrackSettings {
            quality: proto::VideoQuality::Low as i32,
            ..Default::default()
        };
        assert_eq!(settings_of(&low).quality, Some(0));
        let off = proto::UpdateTrackSettings {
            quality: proto::VideoQuality::Off as i32,
            ..Default::default()
        };
        assert!(settings_of(&off).disabled);
        let slow = proto::UpdateTrackSettings {
            fps: 15,
            ..Default::default()
        };
        assert_eq!(settings_of(&slow).fps, 15);
    }
}
