//! What can go wrong in session control, phrased for the person calling the API.

use crate::store::{SessionState, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// The room exists but is closed (412, seed 000).
    #[error("room {room_id} is not active")]
    RoomNotActive { room_id: String },
    #[error("{0}")]
    Conflict(String),
    /// The requested transition does not exist from the session's current state.
    #[error("session {session_id} is {current}: cannot {requested}")]
    IllegalTransition {
        session_id: String,
        current: SessionState,
        requested: &'static str,
    },
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// A node-wide capacity is used up (503 with Retry-After).
    #[error("{detail}")]
    Busy {
        detail: String,
        retry_after_secs: u64,
    },
    #[error("the session store failed: {0}")]
    Store(StoreError),
}

impl ControlError {
    /// True when the database was unreachable (see [`StoreError::is_unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ControlError::Store(e) if e.is_unavailable())
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what } => ControlError::NotFound(format!("{what} not found")),
            StoreError::Conflict { what } => ControlError::Conflict(what),
            StoreError::RoomNotActive { room_id } => ControlError::RoomNotActive { room_id },
            StoreError::StateConflict {
                session_id,
                current,
            } => ControlError::IllegalTransition {
                session_id,
                current,
                requested: "change it concurrently",
            },
            other => ControlError::Store(other),
        }
    }
}

impl From<switchboard_signaling::AdminError> for ControlError {
    fn from(e: switchboard_signaling::AdminError) -> Self {
        use switchboard_signaling::AdminError as A;
        let detail = e.to_string();
        match e {
            A::RoomNotFound { .. }
            | A::ParticipantNotFound { .. }
            | A::TrackNotFound { .. }
            | A::NoSuchTrack { .. } => ControlError::NotFound(detail),
            A::RoomClosing { .. } => ControlError::Conflict(detail),
            A::TooManyRooms { .. } => ControlError::Busy {
                detail,
                retry_after_secs: 30,
            },
            A::PayloadTooLarge { .. }
            | A::RoomMetadataTooLarge { .. }
            | A::ParticipantTooLarge(_) => ControlError::BadRequest(detail),
        }
    }
}
