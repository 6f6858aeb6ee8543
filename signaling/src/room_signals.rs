//! What the media plane observes about a room's members, as LiveKit messages: their
//! connection quality and who is speaking.

use livekit_protocol as proto;
use proto::signal_response::Message as Resp;
use switchboard_sfu::{ConnectionQuality, Speaker};

/// Ratings that changed: (participant sid, rating, score 0 … 100).
pub(crate) fn connection_quality(updates: Vec<(String, ConnectionQuality, u8)>) -> Resp {
    let updates = updates
        .into_iter()
        .map(|(sid, quality, score)| proto::ConnectionQualityInfo {
            participant_sid: sid,
            quality: match quality {
                ConnectionQuality::Excellent => proto::ConnectionQuality::Excellent,
                ConnectionQuality::Good => proto::ConnectionQuality::Good,
                ConnectionQuality::Poor => proto::ConnectionQuality::Poor,
                ConnectionQuality::Lost => proto::ConnectionQuality::Lost,
            } as i32,
            score: f32::from(score),
        })
        .collect();
    Resp::ConnectionQuality(proto::ConnectionQualityUpdate { updates })
}

/// Speakers that started, changed level or stopped (livekit-client applies them as
/// changes to the set it has).
pub(crate) fn speakers_changed(speakers: Vec<Speaker>) -> Resp {
    let speakers = speakers
        .into_iter()
        .map(|s| proto::SpeakerInfo {
            sid: s.participant,
            level: f32::from(s.eighths) / 8.0,
            active: s.active,
        })
        .collect();
    Resp::SpeakersChanged(proto::SpeakersChanged { speakers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratings_and_levels_map_to_livekits_values() {
        let Resp::ConnectionQuality(update) =
            connection_quality(vec![("PA_a".into(), ConnectionQuality::Poor, 31)])
        else {
            panic!("a connection quality update");
        };
        // POOR is 0 on the wire: it must be set explicitly, not left to the default.
        assert_eq!(
            update.updates[0].quality,
            proto::ConnectionQuality::Poor as i32
        );
        assert_eq!(update.updates[0].score, 31.0);
        let Resp::SpeakersChanged(changed) = speakers_changed(vec![Speaker {
            participant: "PA_b".into(),
            eighths: 3,
            active: true,
        }]) else {
            panic!("a speakers update");
        };
        assert_eq!(changed.speakers[0].level, 0.375);
    }
}
