//! Time-limited TURN credentials for a TURN server that shares a secret with us (the "TURN
//! REST API" scheme, draft-uberti-behave-turn-rest-00, which coturn implements as
//! `use-auth-secret` / `static-auth-secret`): the username is the expiry time in Unix seconds
//! and the participant's identity, `EXPIRY:IDENTITY`; the password is the base64 of the
//! HMAC-SHA1 of that username under the secret. The TURN server recomputes the password and
//! refuses a username whose time has passed, so a credential handed to one participant
//! stops working by itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine;

/// The secret shared with the TURN server, and how long a minted credential lasts.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnRestSecret {
    secret: String,
    ttl: Duration,
}

/// Settings are logged: the secret never is.
impl std::fmt::Debug for TurnRestSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnRestSecret")
            .field("secret", &"***")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl TurnRestSecret {
    pub fn new(secret: impl Into<String>, ttl: Duration) -> Self {
        Self {
            secret: secret.into(),
            ttl,
        }
    }

    /// The username and password `identity` may use until `now` + the TTL.
    pub fn mint(&self, identity: &str, now: SystemTime) -> (String, String) {
        let expiry = now
            .checked_add(self.ttl)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        self.credential_for(&format!("{expiry}:{identity}"))
    }

    /// What a TURN server sharing this secret accepts for `username` at `now`: the identity
    /// it was minted for and its password; `None` when the username is not `EXPIRY:IDENTITY`
    /// or its expiry has passed.
    pub fn password(&self, username: &str, now: SystemTime) -> Option<(String, String)> {
        let (expiry, identity) = username.split_once(':')?;
        let expiry: u64 = expiry.parse().ok()?;
        let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
        if expiry <= now || identity.is_empty() {
            return None;
        }
        Some((identity.to_owned(), self.credential_for(username).1))
    }

    fn credential_for(&self, username: &str) -> (String, String) {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, self.secret.as_bytes());
        let tag = hmac::sign(&key, username.as_bytes());
        let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        (username.to_owned(), password)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_username_carries_the_expiry_and_the_password_its_hmac() {
        let secret = TurnRestSecret::new("north", Duration::from_secs(3600));
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (user, password) = secret.mint("alice", now);
        assert_eq!(user, "1800003600:alice");
        // `printf '1800003600:alice' | openssl dgst -sha1 -hmac north -binary | base64`
        assert_eq!(password, "qe6uQh2FdtYywRuncfIrYF8O4Rk=");
        let (_, other) = TurnRestSecret::new("south", Duration::from_secs(3600)).mint("alice", now);
        assert_ne!(password, other, "another secret, another password");
    }

    #[test]
    fn a_minted_username_is_accepted_until_it_expires() {
        let secret = TurnRestSecret::new("north", Duration::from_secs(600));
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (user, password) = secret.mint("bob:b", now);
        assert_eq!(
            secret.password(&user, now),
            Some(("bob:b".to_owned(), password)),
            "an identity may contain ':'; the expiry is what comes before the first"
        );
        let later = now + Duration::from_secs(600);
        assert_eq!(secret.password(&user, later), None, "expired");
        for bad in ["bob", ":bob", "soon:bob", "1800000600:", ""] {
            assert_eq!(secret.password(bad, now), None, "{bad:?}");
        }
    }
}
