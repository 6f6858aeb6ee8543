//! How a signaling session ends: the reason recorded, whether the client is told with a
//! LeaveRequest, and the WebSocket close frame.

use std::time::Duration;

use crate::events::LeaveReason;
use crate::websocket::{self, CloseFrame};

/// Close code for a frame we could not understand (RFC 6455 "unsupported data").
pub(crate) const CLOSE_UNSUPPORTED: u16 = 1003;
/// Close code for a message over the size limit (RFC 6455 "message too big").
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;
/// Close code for a client over its request rate (RFC 6455 "policy violation").
pub(crate) const CLOSE_POLICY: u16 = 1008;

/// How a session ended, and whether the client must be told.
pub(crate) struct Ending {
    pub reason: LeaveReason,
    /// Send a LeaveRequest before closing (server-initiated endings).
    pub notify: bool,
    pub close: Option<CloseFrame>,
}

impl Ending {
    /// The client closed the socket or it failed: nothing more can be sent.
    pub(crate) fn signal_closed() -> Self {
        Ending {
            reason: LeaveReason::SignalClosed,
            notify: false,
            close: None,
        }
    }

    /// A send failed: a write that timed out is a client that does not keep up (nothing
    /// more can be written to it either); anything else, the socket is gone.
    pub(crate) fn send_failed(error: &websocket::Error) -> Self {
        if websocket::is_timeout(error) {
            Ending {
                reason: LeaveReason::SlowClient,
                ..Self::signal_closed()
            }
        } else {
            Self::signal_closed()
        }
    }
}

/// How long a session outlives its lost media connection waiting for the client's Leave or
/// socket close. LiveKit's Rust core (its Python, Node and native SDKs) closes its
/// PeerConnections before its signal socket when it disconnects, so a clean close looks
/// like a lost peer for a few milliseconds; it is recorded as the client's leave, not as
/// a media failure.
pub(crate) const MEDIA_CLOSE_GRACE: Duration = Duration::from_secs(2);

pub(crate) fn protocol_error(code: u16, reason: &str) -> Ending {
    // Close reasons are capped at 123 bytes by the WebSocket protocol.
    let mut text = reason.to_owned();
    while text.len() > 123 {
        text.pop();
    }
    Ending {
        reason: LeaveReason::ProtocolError,
        notify: false,
        close: Some(CloseFrame {
            code: code.into(),
            reason: text.into(),
        }),
    }
}
