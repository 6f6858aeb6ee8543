//! SRTP encryption of the RTP packets the media plane sends itself: session keys derived
//! from the DTLS-exported master keys (RFC 3711 §4.3, RFC 7714 §11), then AEAD-AES-GCM
//! (RFC 7714) or AES-CM with HMAC-SHA1-80 (RFC 3711), on aws-lc-rs like str0m's own SRTP.
//!
//! The sending direction of RTP, and the receiving direction of SRTCP for the transport-wide
//! feedback our estimator takes before str0m ([`SrtcpReceiver`]): str0m keeps decrypting
//! everything else the peer sends, and encrypting RTCP, with its own context derived from
//! the same master keys. Sharing the sending keys is safe because an SRTP IV is unique per
//! (SSRC, packet index), and every index of a stream is sent once, by one of the two.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
use aws_lc_rs::hmac;
use str0m::crypto::dtls::SrtpProfile;
use switchboard_dtls::ExportedKeys;

/// RFC 3711 §4.3.1 key derivation labels of SRTP (SRTCP's are in `receive.rs`).
const LABEL_ENCRYPTION: u8 = 0x00;
const LABEL_AUTH: u8 = 0x01;
const LABEL_SALT: u8 = 0x02;

/// Bytes of the HMAC-SHA1 tag AES_CM_128_HMAC_SHA1_80 appends.
const CM_TAG: usize = 10;
/// Bytes of the GCM tag.
const GCM_TAG: usize = 16;

/// Why a peer's keys cannot drive our own encryption (the peer then stays on str0m's path).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum KeysError {
    #[error("keying material of {got} bytes, {profile:?} needs {want}")]
    Length {
        profile: SrtpProfile,
        got: usize,
        want: usize,
    },
    #[error("an SRTP profile we do not encrypt ourselves: {0:?}")]
    Profile(SrtpProfile),
    #[error("the crypto library refused the derived key")]
    Crypto,
}

enum Cipher {
    Gcm(LessSafeKey),
    /// Boxed: the AES key schedule and the HMAC state are ~2 KB, the GCM key a pointer.
    CmSha1(Box<CmSha1>),
}

/// The key derivation labels of one kind of packet: encryption, authentication, salt.
type Labels = [u8; 3];
const SRTP_LABELS: Labels = [LABEL_ENCRYPTION, LABEL_AUTH, LABEL_SALT];

impl Cipher {
    /// The session keys for `profile` under `labels`, and the session salt (12 bytes for
    /// GCM, 14 for AES-CM, the rest zero).
    fn derive(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
        [encryption, authentication, salting]: Labels,
    ) -> Result<(Self, [u8; 14]), KeysError> {
        let mut session_key = [0u8; 32];
        let session_key = &mut session_key[..master_key.len()];
        derive(master_key, master_salt, encryption, session_key)?;
        let mut salt = [0u8; 14];
        derive(
            master_key,
            master_salt,
            salting,
            &mut salt[..master_salt.len()],
        )?;
        let cipher = match profile {
            SrtpProfile::AES128_CM_SHA1_80 => {
                let mut auth_key = [0u8; 20];
                derive(master_key, master_salt, authentication, &mut auth_key)?;
                Cipher::CmSha1(Box::new(CmSha1 {
                    ctr: UnboundCipherKey::new(&AES_128, session_key)
                        .and_then(EncryptingKey::ctr)
                        .map_err(|_| KeysError::Crypto)?,
                    auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &auth_key),
                }))
            }
            SrtpProfile::AEAD_AES_128_GCM => Cipher::Gcm(LessSafeKey::new(
                UnboundKey::new(&AES_128_GCM, session_key).map_err(|_| KeysError::Crypto)?,
            )),
            SrtpProfile::AEAD_AES_256_GCM => Cipher::Gcm(LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, session_key).map_err(|_| KeysError::Crypto)?,
            )),
            other => return Err(KeysError::Profile(other)),
        };
        Ok((cipher, salt))
    }
}

struct CmSha1 {
    ctr: EncryptingKey,
    auth: hmac::Key,
}

/// The sending half of an SRTP session for RTP packets.
pub(crate) struct SrtpSender {
    cipher: Cipher,
    /// Session salt: 12 bytes for GCM, 14 for AES-CM (the rest stays zero).
    salt: [u8; 14],
}

impl SrtpSender {
    /// The sender for this side of a DTLS-SRTP association (the DTLS client writes with
    /// the first key and salt of the exported material, the server with the second).
    pub(crate) fn new(keys: &ExportedKeys) -> Result<Self, KeysError> {
        let (master_key, master_salt) = master(keys, Direction::Ours)?;
        Self::from_master(keys.profile, master_key, master_salt)
    }

    fn from_master(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<Self, KeysError> {
        let (cipher, salt) = Cipher::derive(profile, master_key, master_salt, SRTP_LABELS)?;
        Ok(Self { cipher, salt })
    }

    /// Bytes the encryption appends to a packet.
    pub(crate) fn overhead(&self) -> usize {
        match self.cipher {
            Cipher::Gcm(_) => GCM_TAG,
            Cipher::CmSha1(_) => CM_TAG,
        }
    }

    /// Encrypts the RTP packet in `packet` (a `header_len`-byte header, then the payload)
    /// in place and appends its tag. `index` is the packet's 48-bit SRTP index: rollover
    /// counter × 65536 + sequence number.
    pub(crate) fn protect(&self, packet: &mut Vec<u8>, header_len: usize, ssrc: u32, index: u64) {
        let roc = (index >> 16) as u32;
        match &self.cipher {
            Cipher::Gcm(key) => {
                // RFC 7714 §8.1: 00 00 | SSRC | ROC | SEQ, XOR the session salt.
                let mut iv = [0u8; 12];
                iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
                iv[6..10].copy_from_slice(&roc.to_be_bytes());
                iv[10..12].copy_from_slice(&(index as u16).to_be_bytes());
                for (byte, salt) in iv.iter_mut().zip(&self.salt[..12]) {
                    *byte ^= salt;
                }
                let (header, payload) = packet.split_at_mut(header_len);
                let tag = key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(iv),
                    Aad::from(&header[..]),
                    payload,
                );
                // Sealing only fails for inputs over 2^36 bytes; a datagram is never one.
                if let Ok(tag) = tag {
                    packet.extend_from_slice(tag.as_ref());
                }
            }
            Cipher::CmSha1(keys) => {
                let CmSha1 { ctr, auth } = keys.as_ref();
                // RFC 3711 §4.1.1: salt·2^16 XOR SSRC·2^64 XOR index·2^16.
                let mut iv = [0u8; 16];
                iv[..14].copy_from_slice(&self.salt);
                for (byte, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
                    *byte ^= s;
                }
                for (byte, i) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
                    *byte ^= i;
                }
                // CTR mode accepts any length; the context only fails on a wrong IV size.
                let _ = ctr.less_safe_encrypt(
                    &mut packet[header_len..],
                    EncryptionContext::Iv128(iv.into()),
                );
                let mut mac = hmac::Context::with_key(auth);
                mac.update(packet);
                mac.update(&roc.to_be_bytes());
                let tag = mac.sign();
                packet.extend_from_slice(&tag.as_ref()[..CM_TAG]);
            }
        }
    }
}

/// Which half of the exported keying material.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// What this side writes with.
    Ours,
    /// What the peer writes with (and this side reads with).
    Theirs,
}

/// The master key and salt of one direction: the DTLS client writes with the first key and
/// salt of the exported material, the server with the second (RFC 5764 §4.2).
fn master(keys: &ExportedKeys, direction: Direction) -> Result<(&[u8], &[u8]), KeysError> {
    let (key_len, salt_len) = match keys.profile {
        SrtpProfile::AES128_CM_SHA1_80 => (16, 14),
        SrtpProfile::AEAD_AES_128_GCM => (16, 12),
        SrtpProfile::AEAD_AES_256_GCM => (32, 12),
        other => return Err(KeysError::Profile(other)),
    };
    let want = 2 * (key_len + salt_len);
    if keys.material.len() != want {
        return Err(KeysError::Length {
            profile: keys.profile,
            got: keys.material.len(),
            want,
        });
    }
    let first = keys.active == (direction == Direction::Ours);
    let (key_at, salt_at) = if first {
        (0, 2 * key_len)
    } else {
        (key_len, 2 * key_len + salt_len)
    };
    Ok((
        &keys.material[key_at..key_at + key_len],
        &keys.material[salt_at..salt_at + salt_len],
    ))
}

/// RFC 3711 §4.3.1 with a key derivation rate of zero: the AES-CM keystream under the master
/// key, starting at (master salt XOR label·2^48)·2^16. RFC 7714 §11 runs the same function
/// with its 12-byte salt (the two bytes after it are zero).
fn derive(
    master_key: &[u8],
    master_salt: &[u8],
    label: u8,
    out: &mut [u8],
) -> Result<(), KeysError> {
    let mut iv = [0u8; 16];
    iv[..master_salt.len()].copy_from_slice(master_salt);
    iv[7] ^= label;
    let algorithm = if master_key.len() == 32 {
        &AES_256
    } else {
        &AES_128
    };
    let ctr = UnboundCipherKey::new(algorithm, master_key)
        .and_then(EncryptingKey::ctr)
        .map_err(|_| KeysError::Crypto)?;
    out.fill(0);
    ctr.less_safe_encrypt(out, EncryptionContext::Iv128(iv.into()))
        .map_err(|_| KeysError::Crypto)?;
    Ok(())
}

mod receive;
pub(crate) use receive::SrtcpReceiver;

#[cfg(test)]
mod tests;
