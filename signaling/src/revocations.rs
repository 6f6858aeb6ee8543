//! Tokens revoked by removing a participant: (room, identity) → the time before which (and
//! at which) that identity's tokens for the room are refused, on every surface
//! (`Signaling::verify`). In memory; the server stores the times, loads them back at start
//! and reads those other nodes recorded every few seconds (src/control/maintenance.rs).
//!
//! "Revoked at second X" refuses tokens issued at or before X: the same second too, since
//! `iat` has one-second resolution and a token minted in the removal's second may predate it.
//! A token without `iat` is dated by its `nbf`; one with neither cannot be dated and stays
//! refused (the tokens Switchboard mints carry both). Tokens with no room or no identity are
//! never matched.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::token::Claims;

#[derive(Debug, Default)]
pub(crate) struct Revocations(Mutex<HashMap<(String, String), u64>>);

impl Revocations {
    pub fn revoke(&self, room: &str, identity: &str, at: u64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map
            .entry((room.to_owned(), identity.to_owned()))
            .or_insert(at);
        *entry = (*entry).max(at);
    }

    /// True when `claims` were issued at or before the revocation of their room and
    /// identity. Without `iat` the issue time is taken from `nbf`; a token with neither
    /// cannot be dated and is refused.
    pub fn refuses(&self, claims: &Claims) -> bool {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(&at) = map.get(&(claims.video.room.clone(), claims.sub.clone())) else {
            return false;
        };
        claims.iat.or(claims.nbf).is_none_or(|issued| issued <= at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn claims(iat: Option<u64>, nbf: Option<u64>) -> Claims {
        let mut claims = Claims::for_join("key", "ann", "r", Duration::from_secs(60));
        claims.iat = iat;
        claims.nbf = nbf;
        claims
    }

    #[test]
    fn tokens_issued_up_to_the_removal_are_refused() {
        let revoked = Revocations::default();
        assert!(!revoked.refuses(&claims(Some(100), None)));
        revoked.revoke("r", "ann", 100);
        assert!(revoked.refuses(&claims(Some(99), None)));
        assert!(revoked.refuses(&claims(Some(100), None)), "same second");
        assert!(!revoked.refuses(&claims(Some(101), None)));
        // iat wins over nbf; nbf dates the token when iat is missing; neither → refused.
        assert!(revoked.refuses(&claims(Some(100), Some(200))));
        assert!(!revoked.refuses(&claims(None, Some(101))));
        assert!(revoked.refuses(&claims(None, Some(100))));
        assert!(revoked.refuses(&claims(None, None)));
    }

    #[test]
    fn revocations_are_per_room_and_identity_and_keep_the_latest_time() {
        let revoked = Revocations::default();
        revoked.revoke("r", "ann", 200);
        revoked.revoke("r", "ann", 100);
        assert!(revoked.refuses(&claims(Some(150), None)));
        let mut other_room = claims(Some(1), None);
        other_room.video.room = "s".into();
        assert!(!revoked.refuses(&other_room));
        let mut other_identity = claims(Some(1), None);
        other_identity.sub = "bob".into();
        assert!(!revoked.refuses(&other_identity));
    }
}
