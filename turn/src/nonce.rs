//! Stateless nonces: `hex(issued || MAC(key, issued || client address))`.
//!
//! A nonce table keyed by client address grows with every spoofed source (pion/turn#361 and
//! the crates we evaluated have that leak). Here the server remembers nothing: a nonce
//! proves by its MAC that we issued it, to this client address, at the time it carries.
//! The key is random per process, so a restart invalidates every nonce and clients get 438
//! and a fresh one, which they handle as a matter of course.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;

/// Bytes of HMAC-SHA256 kept: 128 bits is far beyond what an online forger can try.
const MAC_LEN: usize = 16;
const NONCE_HEX_LEN: usize = 2 * (8 + MAC_LEN);

pub(crate) struct Nonces {
    key: hmac::Key,
    /// Timestamps count seconds from here: the clock is monotonic and handed in.
    epoch: Instant,
    lifetime: Duration,
}

/// Why a presented nonce is refused (both get 438 Stale Nonce and a fresh nonce).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NonceError {
    /// Not one of ours, or issued to another client address.
    Invalid,
    /// Ours, but older than its lifetime.
    Expired,
}

impl Nonces {
    pub(crate) fn new(key: &[u8; 32], epoch: Instant, lifetime: Duration) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            epoch,
            lifetime,
        }
    }

    pub(crate) fn issue(&self, client: SocketAddr, now: Instant) -> String {
        let issued = now.saturating_duration_since(self.epoch).as_secs();
        let mac = self.mac(issued, client);
        let mut out = String::with_capacity(NONCE_HEX_LEN);
        for b in issued.to_be_bytes().iter().chain(&mac.as_ref()[..MAC_LEN]) {
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0xf));
        }
        out
    }

    pub(crate) fn check(
        &self,
        nonce: &str,
        client: SocketAddr,
        now: Instant,
    ) -> Result<(), NonceError> {
        let bytes = decode_hex::<{ 8 + MAC_LEN }>(nonce).ok_or(NonceError::Invalid)?;
        let (issued, mac) = bytes.split_at(8);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(issued);
        let issued = u64::from_be_bytes(ts);
        let expected = self.mac(issued, client);
        // Constant-time comparison: the MAC is the secret part.
        if aws_lc_rs::constant_time::verify_slices_are_equal(&expected.as_ref()[..MAC_LEN], mac)
            .is_err()
        {
            return Err(NonceError::Invalid);
        }
        let age = now
            .saturating_duration_since(self.epoch)
            .as_secs()
            .checked_sub(issued);
        match age {
            Some(age) if age <= self.lifetime.as_secs() => Ok(()),
            // A timestamp from the future cannot be ours; treat it as stale anyway.
            _ => Err(NonceError::Expired),
        }
    }

    fn mac(&self, issued: u64, client: SocketAddr) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&issued.to_be_bytes());
        match client.ip() {
            IpAddr::V4(ip) => ctx.update(&ip.octets()),
            IpAddr::V6(ip) => ctx.update(&ip.octets()),
        }
        ctx.update(&client.port().to_be_bytes());
        ctx.sign()
    }
}

fn hex_digit(n: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(n & 0xf)])
}

fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn a_nonce_is_bound_to_its_client_and_expires() {
        let t0 = Instant::now();
        let nonces = Nonces::new(&[7; 32], t0, Duration::from_secs(600));
        let alice = addr("198.51.100.1:5000");
        let nonce = nonces.issue(alice, t0 + Duration::from_secs(10));
        assert_eq!(nonce.len(), NONCE_HEX_LEN);
        assert_eq!(
            nonces.check(&nonce, alice, t0 + Duration::from_secs(610)),
            Ok(())
        );
        assert_eq!(
            nonces.check(&nonce, alice, t0 + Duration::from_secs(611)),
            Err(NonceError::Expired)
        );
        assert_eq!(
            nonces.check(&nonce, addr("198.51.100.1:5001"), t0),
            Err(NonceError::Invalid),
            "another port is another client"
        );
        let other_key = Nonces::new(&[8; 32], t0, Duration::from_secs(600));
        assert_eq!(other_key.check(&nonce, alice, t0), Err(NonceError::Invalid));
    }

    #[test]
    fn forged_or_malformed_nonces_are_invalid() {
        let t0 = Instant::now();
        let nonces = Nonces::new(&[7; 32], t0, Duration::from_secs(600));
        let alice = addr("[2001:db8::1]:5000");
        let mut nonce = nonces.issue(alice, t0).into_bytes();
        nonce[0] = b'1'; // move the timestamp: the MAC no longer matches
        let forged = String::from_utf8(nonce).expect("hex");
        assert_eq!(nonces.check(&forged, alice, t0), Err(NonceError::Invalid));
        for bad in [
            "",
            "zz",
            &"0".repeat(NONCE_HEX_LEN + 2),
            &"G".repeat(NONCE_HEX_LEN),
        ] {
            assert_eq!(
                nonces.check(bad, alice, t0),
                Err(NonceError::Invalid),
                "{bad:?}"
            );
        }
    }
}
