//! LiveKit types as JSON in our API responses: protojson (camelCase, enums by name), the
//! shape LiveKit's own API returns, via the serde implementations livekit-protocol ships.

use serde_json::Value;

pub fn participant(info: &livekit_protocol::ParticipantInfo) -> Value {
    serde_json::to_value(info).unwrap_or(Value::Null)
}

pub fn track(info: &livekit_protocol::TrackInfo) -> Value {
    serde_json::to_value(info).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participants_serialize_as_protojson() {
        let info = livekit_protocol::ParticipantInfo {
            sid: "PA_x".into(),
            identity: "ann".into(),
            joined_at: 5,
            state: livekit_protocol::participant_info::State::Active as i32,
            ..Default::default()
        };
        let json = participant(&info);
        assert_eq!(json["identity"], "ann");
        assert_eq!(json["state"], "ACTIVE");
        assert!(json.get("joinedAt").is_some(), "{json}");
    }
}
