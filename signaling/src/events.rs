//! What signaling reports to the rest of the server (the session store, webhooks), as plain
//! data. Sent in the order things happened in each room.

use std::collections::BTreeMap;
use std::time::SystemTime;

pub use switchboard_sfu::ParticipantStats;

/// Why a participant left, in LiveKit's vocabulary (`DisconnectReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    ClientInitiated,
    DuplicateIdentity,
    ServerShutdown,
    ParticipantRemoved,
    RoomDeleted,
    SignalClosed,
    PingTimeout,
    ProtocolError,
    JoinFailure,
    /// The media plane lost the participant's PeerConnection.
    MediaFailure,
    /// The client did not read its signaling fast enough: a write timed out or its queue
    /// went over `signal_queue_bytes`.
    SlowClient,
    /// The client sent signaling requests faster than `signal_requests_per_second`.
    SignalRateLimited,
    /// No PeerConnection of the participant connected within `ice_connect_timeout`.
    MediaConnectTimeout,
    /// The participant's media was connected, then down for `peer_departure_timeout`.
    MediaDepartureTimeout,
    /// Another node took the room's lease (this node could not renew it): the room closed
    /// here, and its participants are asked to reconnect, which lands them on the owner.
    LeaseLost,
}

impl From<switchboard_sfu::MediaTimeout> for LeaveReason {
    fn from(cause: switchboard_sfu::MediaTimeout) -> Self {
        match cause {
            switchboard_sfu::MediaTimeout::NeverConnected => LeaveReason::MediaConnectTimeout,
            switchboard_sfu::MediaTimeout::Departed => LeaveReason::MediaDepartureTimeout,
        }
    }
}

impl LeaveReason {
    /// The name stored in records and webhooks: LiveKit's spelling, or, for reasons LiveKit
    /// has no name for, our own in lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::ClientInitiated => "CLIENT_INITIATED",
            LeaveReason::DuplicateIdentity => "DUPLICATE_IDENTITY",
            LeaveReason::ServerShutdown => "SERVER_SHUTDOWN",
            LeaveReason::ParticipantRemoved => "PARTICIPANT_REMOVED",
            LeaveReason::RoomDeleted => "ROOM_DELETED",
            LeaveReason::SignalClosed => "SIGNAL_CLOSE",
            LeaveReason::PingTimeout => "CONNECTION_TIMEOUT",
            LeaveReason::ProtocolError => "STATE_MISMATCH",
            LeaveReason::JoinFailure => "JOIN_FAILURE",
            LeaveReason::MediaFailure => "MEDIA_FAILURE",
            // Not LiveKit's: it has no reason for these.
            LeaveReason::SlowClient => "signal_backpressure",
            LeaveReason::SignalRateLimited => "signal_rate_limited",
            LeaveReason::MediaConnectTimeout => "media_connect_timeout",
            LeaveReason::MediaDepartureTimeout => "media_departure_timeout",
            LeaveReason::LeaseLost => "room_lease_lost",
        }
    }

    pub(crate) fn to_proto(self) -> livekit_protocol::DisconnectReason {
        use livekit_protocol::DisconnectReason as D;
        match self {
            LeaveReason::ClientInitiated => D::ClientInitiated,
            LeaveReason::DuplicateIdentity => D::DuplicateIdentity,
            LeaveReason::ServerShutdown => D::ServerShutdown,
            LeaveReason::ParticipantRemoved => D::ParticipantRemoved,
            LeaveReason::RoomDeleted => D::RoomDeleted,
            LeaveReason::SignalClosed => D::SignalClose,
            LeaveReason::PingTimeout => D::ConnectionTimeout,
            LeaveReason::ProtocolError => D::StateMismatch,
            LeaveReason::JoinFailure => D::JoinFailure,
            LeaveReason::MediaFailure => D::MediaFailure,
            LeaveReason::SlowClient => D::SignalClose,
            LeaveReason::SignalRateLimited => D::StateMismatch,
            LeaveReason::MediaConnectTimeout | LeaveReason::MediaDepartureTimeout => {
                D::ConnectionTimeout
            }
            // LiveKit's "the server asked the participant to move elsewhere".
            LeaveReason::LeaseLost => D::Migration,
        }
    }

    /// The client is told to reconnect (LeaveRequest action RECONNECT, which livekit-client
    /// answers with a full rejoin) rather than to disconnect: its session ended for a reason
    /// that a new connection fixes.
    pub(crate) fn asks_reconnect(self) -> bool {
        matches!(self, LeaveReason::MediaFailure | LeaveReason::LeaseLost)
    }
}

/// One thing that happened in a room.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalEvent {
    RoomStarted {
        room_id: String,
        sid: String,
        empty_timeout_secs: u32,
        max_participants: u32,
        at: SystemTime,
    },
    RoomFinished {
        room_id: String,
        at: SystemTime,
    },
    ParticipantJoined {
        room_id: String,
        sid: String,
        identity: String,
        name: String,
        metadata: String,
        /// The token's participant attributes.
        attributes: BTreeMap<String, String>,
        /// A host, in session terms: the token grants roomAdmin for this room, or its
        /// `role` attribute is `host`.
        host: bool,
        at: SystemTime,
    },
    ParticipantLeft {
        room_id: String,
        sid: String,
        identity: String,
        reason: LeaveReason,
        stats: ParticipantStats,
        at: SystemTime,
    },
    TrackPublished {
        room_id: String,
        participant_sid: String,
        identity: String,
        track_sid: String,
        kind: &'static str,
        source: String,
        at: SystemTime,
    },
    TrackUnpublished {
        room_id: String,
        participant_sid: String,
        identity: String,
        track_sid: String,
        at: SystemTime,
    },
}
