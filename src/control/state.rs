//! The broadcast session state machine (seed 002), in one place.
//!
//! ```text
//! IDLE ──host joins──▶ READY ──live──▶ PUBLISHING ──egress active──▶ LIVE
//!   │                    │                  │                           │ end
//!   └──cancel──▶ CANCELLED ◀──cancel─────────┘                           ▼
//!                                                  STOPPED ◀──egress ended── ENDING
//! ```
//! The store applies a transition only if the session is still in the state it was read in
//! (compare-and-set), so two concurrent requests never both win; this module decides which
//! transitions exist at all.

use crate::store::SessionState::{self, *};

/// What asks a session to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A host (roomAdmin token or role attribute) joined the room.
    HostJoined,
    /// `POST /v1/sessions/{id}/live`: the egress is starting.
    LiveRequested,
    /// The egress reports that media is being written.
    EgressActive,
    /// `POST /v1/sessions/{id}/end`.
    EndRequested,
    /// The egress finished (file finalized) or failed.
    EgressEnded,
    /// `POST /v1/sessions/{id}/cancel`, or the room closed before going live.
    Cancel,
}

impl Trigger {
    pub fn describe(self) -> &'static str {
        match self {
            Trigger::HostJoined => "host joined",
            Trigger::LiveRequested => "go live",
            Trigger::EgressActive => "egress active",
            Trigger::EndRequested => "end",
            Trigger::EgressEnded => "egress ended",
            Trigger::Cancel => "cancel",
        }
    }
}

/// The state `trigger` moves a session in `from` to, or `None` when the transition does not
/// exist (the API answers 409 with the current state).
pub fn next(from: SessionState, trigger: Trigger) -> Option<SessionState> {
    match (from, trigger) {
        (Idle, Trigger::HostJoined) => Some(Ready),
        (Ready, Trigger::LiveRequested) => Some(Publishing),
        (Publishing, Trigger::EgressActive) => Some(Live),
        (Live, Trigger::EndRequested) => Some(Ending),
        (Ending, Trigger::EgressEnded) => Some(Stopped),
        (Idle | Ready | Publishing, Trigger::Cancel) => Some(Cancelled),
        _ => None,
    }
}

/// The triggers that end an open session when its egress ended, its room went away or the
/// server restarted: not-yet-live sessions are cancelled, live ones pass through ENDING to
/// STOPPED.
pub fn closing_triggers(from: SessionState) -> &'static [Trigger] {
    match from {
        Idle | Ready | Publishing => &[Trigger::Cancel],
        Live => &[Trigger::EndRequested, Trigger::EgressEnded],
        Ending => &[Trigger::EgressEnded],
        Stopped | Cancelled => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [SessionState; 7] = [Idle, Ready, Publishing, Live, Ending, Stopped, Cancelled];
    const TRIGGERS: [Trigger; 6] = [
        Trigger::HostJoined,
        Trigger::LiveRequested,
        Trigger::EgressActive,
        Trigger::EndRequested,
        Trigger::EgressEnded,
        Trigger::Cancel,
    ];

    #[test]
    fn the_happy_path_walks_the_lifecycle() {
        let mut state = Idle;
        for trigger in [
            Trigger::HostJoined,
            Trigger::LiveRequested,
            Trigger::EgressActive,
            Trigger::EndRequested,
            Trigger::EgressEnded,
        ] {
            state = next(state, trigger).unwrap();
        }
        assert_eq!(state, Stopped);
    }

    #[test]
    fn cancel_only_before_live() {
        for from in ALL {
            let allowed = matches!(from, Idle | Ready | Publishing);
            assert_eq!(next(from, Trigger::Cancel).is_some(), allowed, "{from:?}");
        }
    }

    #[test]
    fn terminal_states_never_move_and_exactly_eight_transitions_exist() {
        let mut count = 0;
        for from in ALL {
            for trigger in TRIGGERS {
                if let Some(to) = next(from, trigger) {
                    count += 1;
                    assert!(from.is_open(), "{from:?} is terminal");
                    assert_ne!(from, to);
                }
            }
        }
        assert_eq!(count, 8);
    }

    #[test]
    fn illegal_examples_are_refused() {
        assert_eq!(next(Idle, Trigger::LiveRequested), None);
        assert_eq!(next(Ready, Trigger::EndRequested), None);
        assert_eq!(next(Live, Trigger::Cancel), None);
        assert_eq!(next(Stopped, Trigger::HostJoined), None);
        assert_eq!(next(Publishing, Trigger::EndRequested), None);
    }

    /// The store closes sessions on its own inside a transaction (room close, crash
    /// recovery); its steps must be exactly the ones this state machine allows.
    #[test]
    fn the_stores_closing_steps_follow_this_state_machine() {
        for from in ALL {
            let mut state = from;
            let mut path = Vec::new();
            for &trigger in closing_triggers(from) {
                state = next(state, trigger).expect("each closing step is legal");
                path.push(state);
            }
            assert_eq!(path, from.closing_steps(), "closing {from:?}");
        }
    }

    #[test]
    fn closing_triggers_end_in_a_terminal_state() {
        for from in ALL {
            let mut state = from;
            for &trigger in closing_triggers(from) {
                state = next(state, trigger).expect("each closing step is legal");
            }
            assert!(!state.is_open(), "{from:?} ends in {state:?}");
        }
    }
}
