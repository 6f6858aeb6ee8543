//! The floor: what forwarding one 1200-byte packet must cost on this machine at the very
//! least — one `sendto` on loopback and one SRTP encryption — measured in CPU time of the
//! measuring thread, the same kind of time as the server's utime+stime.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128};
use aws_lc_rs::hmac;
use serde::Serialize;

/// Bytes of the measured packet: a 12-byte RTP header and its payload.
const PACKET: usize = 1200;
const RTP_HEADER: usize = 12;
/// Operations per batch, and batches (the median batch is reported).
const BATCH: u32 = 20_000;
const BATCHES: usize = 5;

#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    /// One `sendto` of 1200 bytes to a socket on 127.0.0.1 (microseconds of CPU).
    pub sendto_us: f64,
    /// SRTP AEAD_AES_128_GCM: seal 1188 bytes with the 12-byte header as AAD.
    pub srtp_aes128_gcm_us: f64,
    /// SRTP AES_CM_128_HMAC_SHA1_80: AES-128-CTR over the payload, HMAC-SHA1 over
    /// header, payload and ROC, truncated to 80 bits.
    pub srtp_aes128_cm_sha1_80_us: f64,
    /// The cheaper of the two SRTP profiles.
    pub srtp_cheaper: &'static str,
    /// `sendto_us` + the cheaper SRTP encryption.
    pub floor_us: f64,
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; the clock id is valid.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Median over [`BATCHES`] of the CPU microseconds one call of `op` takes.
fn per_op_us(mut op: impl FnMut(u32) -> anyhow::Result<()>) -> anyhow::Result<f64> {
    for i in 0..BATCH / 10 {
        op(i)?; // warm caches and the socket path
    }
    let mut samples = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        let start = thread_cpu();
        for i in 0..BATCH {
            op(i)?;
        }
        let spent = thread_cpu().saturating_sub(start);
        samples.push(spent.as_secs_f64() * 1e6 / f64::from(BATCH));
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[BATCHES / 2])
}

fn sendto_us() -> anyhow::Result<f64> {
    let receiver = UdpSocket::bind("127.0.0.1:0").context("bind the floor's receiver")?;
    receiver.set_read_timeout(Some(Duration::from_millis(50)))?;
    let target = receiver.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let drain = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let _ = receiver.recv(&mut buf);
            }
        })
    };
    let sender = UdpSocket::bind("127.0.0.1:0").context("bind the floor's sender")?;
    let packet = [0x5au8; PACKET];
    let result = per_op_us(|_| {
        match sender.send_to(&packet, target) {
            Ok(_) => Ok(()),
            // A full receive buffer drops the datagram after the work was done: count it.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(()),
            Err(e) => Err(e.into()),
        }
    });
    stop.store(true, Ordering::Relaxed);
    let _ = drain.join();
    result
}

fn gcm_us() -> anyhow::Result<f64> {
    let key = UnboundKey::new(&AES_128_GCM, &[7u8; 16])
        .map_err(|_| anyhow::anyhow!("AES-128-GCM key"))?;
    let key = LessSafeKey::new(key);
    let mut packet = [0x5au8; PACKET];
    let mut salt = [3u8; 12];
    per_op_us(|i| {
        // A fresh IV per packet, as SRTP derives it from SSRC and index.
        salt[8..].copy_from_slice(&i.to_be_bytes());
        let nonce = Nonce::assume_unique_for_key(salt);
        let (header, payload) = packet.split_at_mut(RTP_HEADER);
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::from(&header[..]), payload)
            .map_err(|_| anyhow::anyhow!("AES-GCM seal"))?;
        let _ = std::hint::black_box(tag);
        Ok(())
    })
}

fn cm_sha1_us() -> anyhow::Result<f64> {
    let cipher = UnboundCipherKey::new(&AES_128, &[7u8; 16])
        .and_then(EncryptingKey::ctr)
        .map_err(|_| anyhow::anyhow!("AES-128-CTR key"))?;
    let auth = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &[9u8; 20]);
    let mut packet = [0x5au8; PACKET];
    let mut iv = [1u8; 16];
    per_op_us(|i| {
        iv[10..14].copy_from_slice(&i.to_be_bytes());
        let context = EncryptionContext::Iv128(iv.into());
        cipher
            .less_safe_encrypt(&mut packet[RTP_HEADER..], context)
            .map_err(|_| anyhow::anyhow!("AES-CTR"))?;
        let mut mac = hmac::Context::with_key(&auth);
        mac.update(&packet);
        mac.update(&0u32.to_be_bytes()); // rollover counter
        let tag = mac.sign();
        std::hint::black_box(&tag.as_ref()[..10]);
        Ok(())
    })
}

/// Measures the floor (about a second of CPU). Run it while the machine is otherwise quiet.
pub fn measure() -> anyhow::Result<Floor> {
    let sendto = sendto_us()?;
    let gcm = gcm_us()?;
    let cm = cm_sha1_us()?;
    let (srtp_cheaper, cheaper) = if gcm <= cm {
        ("AEAD_AES_128_GCM", gcm)
    } else {
        ("AES_CM_128_HMAC_SHA1_80", cm)
    };
    Ok(Floor {
        sendto_us: sendto,
        srtp_aes128_gcm_us: gcm,
        srtp_aes128_cm_sha1_80_us: cm,
        srtp_cheaper,
        floor_us: sendto + cheaper,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_floor_is_positive_and_adds_up() {
        let floor = super::measure().expect("measure the floor");
        assert!(floor.sendto_us > 0.0 && floor.srtp_aes128_gcm_us > 0.0);
        assert!(floor.srtp_aes128_cm_sha1_80_us > 0.0);
        let cheaper = floor
            .srtp_aes128_gcm_us
            .min(floor.srtp_aes128_cm_sha1_80_us);
        assert!((floor.floor_us - floor.sendto_us - cheaper).abs() < 1e-9);
    }
}
