//! A signal response encoded once and shared by every session it goes to.
//!
//! A change in a room of N members used to be cloned N times and encoded by each of the N
//! session tasks; encoded once, each session hands the same bytes to its WebSocket (a
//! reference count: the message takes `Bytes`; the WebSocket still copies them into its
//! write buffer).

use bytes::Bytes;
use livekit_protocol as proto;
use prost::Message as _;
use proto::signal_response::Message as Resp;

/// An encoded `SignalResponse`, ready to be written as one binary WebSocket message.
#[derive(Debug, Clone)]
pub(crate) struct SharedFrame(Bytes);

impl SharedFrame {
    pub(crate) fn encode(message: Resp) -> Self {
        let response = proto::SignalResponse {
            message: Some(message),
        };
        Self(Bytes::from(response.encode_to_vec()))
    }

    /// The bytes to send, shared with every other holder of this frame.
    pub(crate) fn bytes(&self) -> Bytes {
        self.0.clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The response back, for tests that look at what a session was given.
    #[cfg(test)]
    pub(crate) fn decode(&self) -> Resp {
        // The bytes were encoded by `encode` from a response with a message.
        proto::SignalResponse::decode(self.0.clone())
            .ok()
            .and_then(|r| r.message)
            .expect("a frame decodes to the response it was encoded from")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_the_encoded_signal_response_and_clones_share_it() {
        let update = proto::ParticipantUpdate {
            participants: vec![proto::ParticipantInfo {
                sid: "PA_one".into(),
                identity: "one".into(),
                ..Default::default()
            }],
        };
        let frame = SharedFrame::encode(Resp::Update(update.clone()));
        let expected = proto::SignalResponse {
            message: Some(Resp::Update(update.clone())),
        }
        .encode_to_vec();
        assert_eq!(frame.bytes().as_ref(), expected.as_slice());
        assert_eq!(frame.len(), expected.len());
        let copy = frame.clone();
        assert_eq!(
            copy.bytes().as_ptr(),
            frame.bytes().as_ptr(),
            "clones share one buffer"
        );
        assert!(matches!(frame.decode(), Resp::Update(u) if u == update));
    }
}
