//! SRTCP decryption of what a subscriber sends us, for the one kind of RTCP we read before
//! str0m does: transport-wide feedback (`feedback_in.rs`). RFC 3711 §3.4 (AES-CM with
//! HMAC-SHA1-80) and RFC 7714 §9 (AEAD-AES-GCM), keys from the peer's half of the DTLS
//! export under the SRTCP labels.

use aws_lc_rs::aead::{Aad, Nonce};
use aws_lc_rs::cipher::EncryptionContext;
use aws_lc_rs::{constant_time, hmac};
use str0m::crypto::dtls::SrtpProfile;
use switchboard_dtls::ExportedKeys;

use super::{master, Cipher, CmSha1, Direction, KeysError, Labels, CM_TAG, GCM_TAG};

/// RFC 3711 §4.3.2: SRTCP encryption, authentication and salt labels.
const SRTCP_LABELS: Labels = [0x03, 0x04, 0x05];

/// The first RTCP header and the sender's SSRC, sent in the clear.
const CLEAR_HEADER: usize = 8;
/// The E flag and the 31-bit SRTCP index.
const INDEX_LEN: usize = 4;

/// How far back an SRTCP index may be and still be taken once (RFC 3711 §3.3.2).
const REPLAY_WINDOW: u32 = 64;

/// The receiving half of a peer's SRTCP session.
pub(crate) struct SrtcpReceiver {
    cipher: Cipher,
    salt: [u8; 14],
    /// The highest index taken, and which of the [`REPLAY_WINDOW`] below it were taken.
    highest: Option<u32>,
    seen: u64,
}

impl SrtcpReceiver {
    /// The receiver for what the other side of this DTLS-SRTP association sends.
    pub(crate) fn new(keys: &ExportedKeys) -> Result<Self, KeysError> {
        let (master_key, master_salt) = master(keys, Direction::Theirs)?;
        Self::from_master(keys.profile, master_key, master_salt)
    }

    pub(super) fn from_master(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<Self, KeysError> {
        let (cipher, salt) = Cipher::derive(profile, master_key, master_salt, SRTCP_LABELS)?;
        Ok(Self {
            cipher,
            salt,
            highest: None,
            seen: 0,
        })
    }

    /// The plain compound RTCP packet in `srtcp`, written into `out`; false (and `out`
    /// unspecified) when it does not authenticate, is not encrypted, or replays an index
    /// already taken. Only a packet that authenticates moves the replay window.
    pub(crate) fn unprotect(&mut self, srtcp: &[u8], out: &mut Vec<u8>) -> bool {
        let tag = match self.cipher {
            Cipher::Gcm(_) => 0,
            Cipher::CmSha1(_) => CM_TAG,
        };
        let Some(index_at) = srtcp.len().checked_sub(tag + INDEX_LEN) else {
            return false;
        };
        if index_at < CLEAR_HEADER {
            return false;
        }
        let mut e_and_index = [0u8; INDEX_LEN];
        e_and_index.copy_from_slice(&srtcp[index_at..index_at + INDEX_LEN]);
        let e_and_index = u32::from_be_bytes(e_and_index);
        // Unencrypted SRTCP is allowed by the RFCs but sent by no browser: left to str0m.
        if e_and_index & 0x8000_0000 == 0 {
            return false;
        }
        let index = e_and_index & 0x7fff_ffff;
        if !self.fresh(index) {
            return false;
        }
        let ssrc = [srtcp[4], srtcp[5], srtcp[6], srtcp[7]];
        out.clear();
        let authentic = match &self.cipher {
            Cipher::Gcm(key) => {
                // RFC 7714 §9.1: 00 00 | SSRC | 00 00 | 0 and the 31-bit index, XOR the salt;
                // the clear header and the E flag with the index are the associated data.
                if index_at < CLEAR_HEADER + GCM_TAG {
                    return false;
                }
                let mut iv = [0u8; 12];
                iv[2..6].copy_from_slice(&ssrc);
                iv[8..12].copy_from_slice(&index.to_be_bytes());
                for (byte, salt) in iv.iter_mut().zip(&self.salt[..12]) {
                    *byte ^= salt;
                }
                let mut aad = [0u8; CLEAR_HEADER + INDEX_LEN];
                aad[..CLEAR_HEADER].copy_from_slice(&srtcp[..CLEAR_HEADER]);
                aad[CLEAR_HEADER..].copy_from_slice(&srtcp[index_at..index_at + INDEX_LEN]);
                out.extend_from_slice(&srtcp[..index_at]);
                let opened = key
                    .open_in_place(
                        Nonce::assume_unique_for_key(iv),
                        Aad::from(aad),
                        &mut out[CLEAR_HEADER..],
                    )
                    .map(|plain| plain.len());
                match opened {
                    Ok(len) => {
                        out.truncate(CLEAR_HEADER + len);
                        true
                    }
                    Err(_) => false,
                }
            }
            Cipher::CmSha1(keys) => {
                let CmSha1 { ctr, auth } = keys.as_ref();
                // The tag covers everything before it, the index included.
                let signed = hmac::sign(auth, &srtcp[..index_at + INDEX_LEN]);
                let authentic = constant_time::verify_slices_are_equal(
                    &signed.as_ref()[..CM_TAG],
                    &srtcp[index_at + INDEX_LEN..],
                )
                .is_ok();
                if authentic {
                    // RFC 3711 §4.1.1, with the SRTCP index in the packet index's place.
                    let mut iv = [0u8; 16];
                    iv[..14].copy_from_slice(&self.salt);
                    for (byte, s) in iv[4..8].iter_mut().zip(ssrc) {
                        *byte ^= s;
                    }
                    for (byte, i) in iv[10..14].iter_mut().zip(index.to_be_bytes()) {
                        *byte ^= i;
                    }
                    out.extend_from_slice(&srtcp[..index_at]);
                    // CTR mode accepts any length; the context only fails on a wrong IV size.
                    let _ = ctr.less_safe_encrypt(
                        &mut out[CLEAR_HEADER..],
                        EncryptionContext::Iv128(iv.into()),
                    );
                }
                authentic
            }
        };
        if authentic {
            self.take(index);
        }
        authentic
    }

    /// Whether `index` may be taken: above the highest, or within the window below it and
    /// not taken yet.
    fn fresh(&self, index: u32) -> bool {
        match self.highest {
            None => true,
            Some(highest) if index > highest => true,
            Some(highest) => {
                let behind = highest - index;
                behind < REPLAY_WINDOW && self.seen & (1 << behind) == 0
            }
        }
    }

    fn take(&mut self, index: u32) {
        match self.highest {
            Some(highest) if index <= highest => self.seen |= 1 << (highest - index),
            Some(highest) => {
                let ahead = index - highest;
                self.seen = if ahead >= REPLAY_WINDOW {
                    0
                } else {
                    self.seen << ahead
                } | 1;
                self.highest = Some(index);
            }
            None => {
                self.seen = 1;
                self.highest = Some(index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;

    /// A transport-wide feedback packet (one packet reported), protected twice by libsrtp 2
    /// (pylibsrtp 1.0.0) under each profile with the keys of `super::tests`: SRTCP indices
    /// 1 and 2.
    const PLAIN: &str = "8fcd00050000000100000002000000010000000020010400";
    const LIBSRTP: [(SrtpProfile, &str, &str, &str, &str); 3] = [
        (
            SrtpProfile::AES128_CM_SHA1_80,
            "01080f161d242b323940474e555c636a",
            "05121f2c394653606d7a8794a1ae",
            "8fcd0005000000013be093d3ccd584f3c69b572bb740de9f80000001c6a4d7c52ad0ec94bbcd",
            "8fcd000500000001abc424a7c73c52710c70c6ce601e6e1980000002030f35f16aa06896a71f",
        ),
        (
            SrtpProfile::AEAD_AES_128_GCM,
            "01080f161d242b323940474e555c636a",
            "05121f2c394653606d7a8794",
            "8fcd000500000001a8891e4735cade0dc7e06a5d8fcf2f9e90e80e6f2e17e1e96608ca4e8b1b750e80000001",
            "8fcd0005000000014310ce21b74c12bcd9e21949394522089aadef2af9fd501f8c0d96690e144cf280000002",
        ),
        (
            SrtpProfile::AEAD_AES_256_GCM,
            "01080f161d242b323940474e555c636a71787f868d949ba2a9b0b7bec5ccd3da",
            "05121f2c394653606d7a8794",
            "8fcd0005000000012634fe5b3d8b18fe25704bddf6ff57ed22cad151e8b321c992623bf65ebd5d2c80000001",
            "8fcd000500000001a200371550e8654f8d98505d29530ac1edf17d38abf45c3e1ca265b31c0ac8c280000002",
        ),
    ];

    #[test]
    fn libsrtp_packets_decrypt_in_every_profile_and_each_only_once() {
        for (profile, key, salt, first, second) in LIBSRTP {
            let mut receiver = SrtcpReceiver::from_master(profile, &hex(key), &hex(salt)).unwrap();
            let mut out = Vec::new();
            // The second first: indices may arrive out of order.
            assert!(receiver.unprotect(&hex(second), &mut out), "{profile:?}");
            assert_eq!(out, hex(PLAIN), "{profile:?}");
            assert!(receiver.unprotect(&hex(first), &mut out), "{profile:?}");
            assert_eq!(out, hex(PLAIN), "{profile:?}");
            assert!(
                !receiver.unprotect(&hex(first), &mut out),
                "{profile:?} replayed"
            );
            let mut forged = hex(second);
            forged[10] ^= 1;
            let mut fresh = SrtcpReceiver::from_master(profile, &hex(key), &hex(salt)).unwrap();
            assert!(!fresh.unprotect(&forged, &mut out), "{profile:?} forged");
            assert!(
                !fresh.unprotect(&forged[..11], &mut out),
                "{profile:?} cut short"
            );
            assert!(
                fresh.unprotect(&hex(second), &mut out),
                "a forgery moves no window"
            );
        }
    }

    #[test]
    fn the_replay_window_takes_each_index_once_and_forgets_the_far_past() {
        let (profile, key, salt, ..) = LIBSRTP[0];
        let mut receiver = SrtcpReceiver::from_master(profile, &hex(key), &hex(salt)).unwrap();
        for index in [10, 12, 11, 200, 137] {
            assert!(receiver.fresh(index), "{index}");
            receiver.take(index);
            assert!(!receiver.fresh(index), "{index} again");
        }
        assert!(receiver.fresh(199) && receiver.fresh(138));
        assert!(!receiver.fresh(136), "64 behind the highest");
        assert!(!receiver.fresh(12));
    }
}
