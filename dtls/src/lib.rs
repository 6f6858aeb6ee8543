//! str0m's own DTLS (dimpl on aws-lc-rs), set up once per process instead of once per peer.
//!
//! str0m's default provider builds a new dimpl `Config` for every `Rtc`, and building one
//! validates the crypto provider: a key exchange in every supported group (P-384 included)
//! and signature checks, about 0.9 ms of CPU each time — on the server's media worker, for
//! both peers of every join, and in the load tester for each of its peers. It also makes a
//! new self-signed certificate per `Rtc` (~40 µs). Here the validated `Config` and one ECDSA
//! certificate serve every peer of the process: pass [`provider`] to
//! `RtcConfig::set_crypto_provider`. One certificate for all peers is what mediasoup does
//! too: peers check it only against the fingerprint in our SDP, and each handshake still has
//! its own ephemeral ECDHE keys.
//!
//! The handshake itself is dimpl's, configured as str0m's provider configures it (no server
//! cookie: ICE already proved the peer's address).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
    SrtpProfile,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// str0m's aws-lc-rs crypto provider with this crate's DTLS.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = str0m::crypto::from_feature_flags();
            provider.dtls_provider = &SharedDimplProvider;
            Arc::new(provider)
        })
        .clone()
}

/// Makes the certificate and the configuration now, by building one throwaway peer. The
/// first random numbers aws-lc makes in a process cost ~50 ms (it collects CPU-jitter
/// entropy to seed its generator); called at startup, the first join does not wait for it.
pub fn prepare() {
    drop(
        str0m::RtcConfig::new()
            .set_crypto_provider(provider())
            .build(Instant::now()),
    );
}

/// The SRTP keying material a handshake exported (RFC 5764 §4.2), as str0m receives it.
///
/// The media plane encrypts forwarded RTP itself (`sfu/src/rtp_out/`), so it needs the keys
/// str0m derives its own SRTP context from. str0m keeps them private; our DTLS instances see
/// them pass and leave a copy here.
pub struct ExportedKeys {
    /// client write key | server write key | client salt | server salt.
    pub material: Vec<u8>,
    pub profile: SrtpProfile,
    /// Whether this side is the DTLS client: its write key is the first half.
    pub active: bool,
}

impl std::fmt::Debug for ExportedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key bytes themselves.
        f.debug_struct("ExportedKeys")
            .field("profile", &self.profile)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Keys the last handshake driven on this thread exported, until someone takes them.
    /// A str0m peer is driven on one thread at a time, and str0m hands the keys over while
    /// its owner polls it: the owner takes them right after the poll that produced them.
    static EXPORTED: RefCell<Option<ExportedKeys>> = const { RefCell::new(None) };
}

/// Leaves keys for [`take_exported_keys`] (called by the DTLS instances of this process).
pub fn record_exported_keys(keys: ExportedKeys) {
    EXPORTED.with(|slot| *slot.borrow_mut() = Some(keys));
}

/// The keys of the handshake that completed on this thread since the last call, if any.
pub fn take_exported_keys() -> Option<ExportedKeys> {
    EXPORTED.with(|slot| slot.borrow_mut().take())
}

#[derive(Debug)]
struct SharedDimplProvider;

impl DtlsProvider for SharedDimplProvider {
    /// The process's certificate, made on first use. str0m asks for one per `Rtc`.
    fn generate_certificate(&self) -> Option<DtlsCert> {
        static CERT: OnceLock<Option<DtlsCert>> = OnceLock::new();
        CERT.get_or_init(|| {
            str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate()
        })
        .clone()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = config(mtu)?;
        let cert = cert.clone();
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => {
                return Err(CryptoError::Other(format!(
                    "unsupported DTLS version: {other}"
                )))
            }
        };
        Ok(Box::new(DimplInstance(dtls)))
    }
}

/// The validated configuration for `mtu` (str0m passes the same one for every peer, so
/// this holds one or two entries).
fn config(mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
    static CONFIGS: OnceLock<Mutex<HashMap<Option<usize>, Arc<dimpl::Config>>>> = OnceLock::new();
    let configs = CONFIGS.get_or_init(Mutex::default);
    // A poisoned lock only means another thread panicked while inserting; the map is
    // still a valid cache.
    let mut configs = configs.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(config) = configs.get(&mtu) {
        return Ok(Arc::clone(config));
    }
    let mut builder = dimpl::Config::builder().use_server_cookie(false);
    if let Some(mtu) = mtu {
        builder = builder.mtu(mtu);
    }
    let config = Arc::new(
        builder
            .build()
            .map_err(|e| CryptoError::Other(format!("dimpl configuration: {e}")))?,
    );
    configs.insert(mtu, Arc::clone(&config));
    Ok(config)
}

struct DimplInstance(dimpl::Dtls);

impl std::fmt::Debug for DimplInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DimplInstance").finish_non_exhaustive()
    }
}

impl DtlsInstance for DimplInstance {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let output = self.0.poll_output(buf);
        if let DtlsOutput::KeyingMaterial(material, profile) = &output {
            record_exported_keys(ExportedKeys {
                material: material.to_vec(),
                profile: *profile,
                active: self.0.is_active(),
            });
        }
        output
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.0.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use str0m::RtcConfig;

    #[test]
    fn peers_share_one_certificate() {
        let mut a = RtcConfig::new()
            .set_crypto_provider(super::provider())
            .build(Instant::now());
        let mut b = RtcConfig::new()
            .set_crypto_provider(super::provider())
            .build(Instant::now());
        let fingerprint_a = a.direct_api().local_dtls_fingerprint().clone();
        let fingerprint_b = b.direct_api().local_dtls_fingerprint().clone();
        assert_eq!(fingerprint_a, fingerprint_b);
        // And it is not str0m's default, which makes a certificate per peer.
        let mut own = RtcConfig::new().build(Instant::now());
        assert_ne!(
            own.direct_api().local_dtls_fingerprint().clone(),
            fingerprint_a
        );
    }

    #[test]
    fn one_validated_configuration_per_mtu() {
        let first = super::config(None).unwrap();
        assert!(Arc::ptr_eq(&first, &super::config(None).unwrap()));
        let small = super::config(Some(1000)).unwrap();
        assert_eq!(small.mtu(), 1000);
        assert!(!Arc::ptr_eq(&first, &small));
        assert!(Arc::ptr_eq(&small, &super::config(Some(1000)).unwrap()));
    }
}
