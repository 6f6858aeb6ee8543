//! Whether a participant's media is alive, and when it is not, how long that has lasted.
//!
//! A participant is alive while at least one of its peer connections is up: ICE connected
//! (or completed) and DTLS established. A participant that has never been up is given
//! `ice_connect_timeout` from its join; one that was up and has no peer up any more is given
//! `peer_departure_timeout` from the moment the last one went down. Either way, past the
//! deadline the worker reports [`MediaTimeout`] once and signaling ends the participant.
//!
//! Participant-wide rather than per peer because the two peers of a LiveKit client are not
//! equal: its subscriber PC is only negotiated once there is something to receive, and a
//! WHIP publisher or WHEP viewer uses only one of the two. One live peer is proof enough
//! that the client is there (a client whose signaling died is ended by the ping timeout).
//!
//! The state here is plain data with time handed in, so the rules are tested without a
//! worker or a clock.

use std::time::{Duration, Instant};

use tracing::info;

use crate::api::{MediaTimeout, PeerEvent, PeerRole};
use crate::participant::Participant;
use crate::worker::Worker;

/// The two deadlines (`ice_connect_timeout`, `peer_departure_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessLimits {
    /// From the join until some peer connection must be up.
    pub connect: Duration,
    /// How long a participant that was up may have no peer connection up.
    pub departure: Duration,
}

impl Default for LivenessLimits {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(30),
            departure: Duration::from_secs(20),
        }
    }
}

/// What the worker knows about one peer connection's transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PeerLink {
    /// ICE is connected or completed.
    ice: bool,
    /// DTLS completed once (str0m's `Event::Connected`); it does not go down without the
    /// peer closing, which the worker reports separately.
    dtls: bool,
}

impl PeerLink {
    fn up(self) -> bool {
        self.ice && self.dtls
    }
}

/// One participant's liveness.
#[derive(Debug, Clone)]
pub(crate) struct Liveness {
    joined: Instant,
    publisher: PeerLink,
    subscriber: PeerLink,
    /// Some peer was up at least once.
    ever_up: bool,
    /// When the last peer that was up went down; `None` while one is up (or before any was).
    down_since: Option<Instant>,
    /// A timeout was reported: nothing more is (signaling is ending the participant).
    reported: bool,
}

impl Liveness {
    pub fn new(joined: Instant) -> Self {
        Self {
            joined,
            publisher: PeerLink::default(),
            subscriber: PeerLink::default(),
            ever_up: false,
            down_since: None,
            reported: false,
        }
    }

    fn link(&mut self, role: PeerRole) -> &mut PeerLink {
        match role {
            PeerRole::Publisher => &mut self.publisher,
            PeerRole::Subscriber => &mut self.subscriber,
        }
    }

    fn any_up(&self) -> bool {
        self.publisher.up() || self.subscriber.up()
    }

    /// A peer's ICE state changed: `connected` is str0m's connected or completed.
    pub fn ice_changed(&mut self, role: PeerRole, connected: bool, now: Instant) {
        let was_up = self.any_up();
        self.link(role).ice = connected;
        self.settle(was_up, now);
    }

    /// A peer's DTLS handshake completed (str0m's `Event::Connected`).
    pub fn dtls_connected(&mut self, role: PeerRole, now: Instant) {
        let was_up = self.any_up();
        self.link(role).dtls = true;
        self.settle(was_up, now);
    }

    fn settle(&mut self, was_up: bool, now: Instant) {
        let up = self.any_up();
        if up {
            self.ever_up = true;
            self.down_since = None;
        } else if was_up {
            self.down_since = Some(now);
        }
    }

    /// The timeout that has passed at `now`, the first time it has; `None` after that.
    pub fn check(&mut self, now: Instant, limits: &LivenessLimits) -> Option<MediaTimeout> {
        if self.reported || self.any_up() {
            return None;
        }
        let expired = if !self.ever_up {
            now.saturating_duration_since(self.joined) >= limits.connect
        } else {
            self.down_since
                .is_some_and(|since| now.saturating_duration_since(since) >= limits.departure)
        };
        let cause = match (expired, self.ever_up) {
            (false, _) => return None,
            (true, false) => MediaTimeout::NeverConnected,
            (true, true) => MediaTimeout::Departed,
        };
        self.reported = true;
        Some(cause)
    }
}

impl Worker {
    /// Tells signaling about every participant whose media missed a liveness deadline
    /// (`liveness.rs`); signaling ends it, and its leave removes it from the worker.
    pub(crate) fn check_liveness(&mut self, now: Instant) {
        let limits = self.limits.liveness;
        for part in self.parts.iter_mut().flatten() {
            if let Some(cause) = part.liveness.check(now, &limits) {
                info!(
                    worker = self.index,
                    participant = %part.key,
                    "ending a participant: {}",
                    cause.describe()
                );
                part.emit(PeerEvent::MediaTimedOut { cause });
            }
        }
    }

    /// Feeds the transport events of a peer to its participant's liveness.
    pub(crate) fn observe_liveness(
        part: &mut Participant,
        role: PeerRole,
        event: &str0m::Event,
        now: Instant,
    ) {
        match event {
            str0m::Event::IceConnectionStateChange(state) => {
                part.liveness.ice_changed(role, state.is_connected(), now);
            }
            str0m::Event::Connected => part.liveness.dtls_connected(role, now),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LivenessLimits = LivenessLimits {
        connect: Duration::from_secs(30),
        departure: Duration::from_secs(20),
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn up(l: &mut Liveness, role: PeerRole, at: Instant) {
        l.ice_changed(role, true, at);
        l.dtls_connected(role, at);
    }

    #[test]
    fn a_peer_that_never_connects_times_out_at_the_connect_deadline_once() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        assert_eq!(l.check(t0 + secs(29), &LIMITS), None);
        assert_eq!(
            l.check(t0 + secs(30), &LIMITS),
            Some(MediaTimeout::NeverConnected)
        );
        assert_eq!(l.check(t0 + secs(60), &LIMITS), None, "reported once");
    }

    #[test]
    fn ice_without_dtls_is_not_connected() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        l.ice_changed(PeerRole::Publisher, true, t0 + secs(1));
        assert_eq!(
            l.check(t0 + secs(31), &LIMITS),
            Some(MediaTimeout::NeverConnected)
        );
    }

    #[test]
    fn a_connected_peer_is_never_timed_out() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        up(&mut l, PeerRole::Publisher, t0 + secs(2));
        assert_eq!(l.check(t0 + secs(3600), &LIMITS), None);
    }

    #[test]
    fn a_departure_counts_from_when_ice_went_down_and_a_return_resets_it() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        up(&mut l, PeerRole::Subscriber, t0 + secs(1));
        l.ice_changed(PeerRole::Subscriber, false, t0 + secs(100));
        assert_eq!(l.check(t0 + secs(119), &LIMITS), None);
        // Back before the deadline: the clock starts over at the next loss.
        l.ice_changed(PeerRole::Subscriber, true, t0 + secs(119));
        assert_eq!(l.check(t0 + secs(125), &LIMITS), None);
        l.ice_changed(PeerRole::Subscriber, false, t0 + secs(200));
        assert_eq!(l.check(t0 + secs(219), &LIMITS), None);
        assert_eq!(
            l.check(t0 + secs(220), &LIMITS),
            Some(MediaTimeout::Departed)
        );
    }

    #[test]
    fn one_live_peer_keeps_the_participant() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        up(&mut l, PeerRole::Publisher, t0 + secs(1));
        up(&mut l, PeerRole::Subscriber, t0 + secs(2));
        l.ice_changed(PeerRole::Subscriber, false, t0 + secs(10));
        assert_eq!(l.check(t0 + secs(100), &LIMITS), None);
        l.ice_changed(PeerRole::Publisher, false, t0 + secs(100));
        assert_eq!(l.check(t0 + secs(119), &LIMITS), None);
        assert_eq!(
            l.check(t0 + secs(120), &LIMITS),
            Some(MediaTimeout::Departed)
        );
    }

    #[test]
    fn a_departure_before_the_connect_deadline_still_waits_the_departure_timeout() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        up(&mut l, PeerRole::Publisher, t0 + secs(1));
        l.ice_changed(PeerRole::Publisher, false, t0 + secs(2));
        // Past the connect deadline, but it did connect: only the departure counts.
        assert_eq!(l.check(t0 + secs(21), &LIMITS), None);
        assert_eq!(
            l.check(t0 + secs(22), &LIMITS),
            Some(MediaTimeout::Departed)
        );
    }
}

/// The rule inside a real worker: a participant that joined and never connected is reported
/// once, at the deadline the worker is configured with, and not before.
#[cfg(test)]
mod worker_tests {
    use super::*;
    use crate::api::PeerEvent;
    use crate::worker::testing;

    #[test]
    fn the_worker_reports_a_participant_that_never_connected_at_its_deadline() {
        let mut worker = testing::worker();
        worker.limits.liveness = LivenessLimits {
            connect: Duration::from_secs(3),
            departure: Duration::from_secs(2),
        };
        let before = Instant::now();
        let mut received = testing::join(&mut worker, "PA_ghost");
        let after = Instant::now();
        worker.check_liveness(before + Duration::from_millis(2900));
        assert!(received.try_recv().is_err(), "reported before its deadline");
        worker.check_liveness(after + Duration::from_secs(3));
        assert_eq!(
            received.try_recv(),
            Ok(PeerEvent::MediaTimedOut {
                cause: MediaTimeout::NeverConnected
            })
        );
        worker.check_liveness(after + Duration::from_secs(60));
        assert!(received.try_recv().is_err(), "reported twice");
    }
}
