//! DTLS 1.2 on OpenSSL, for peers that present RSA certificates.
//!
//! str0m's own DTLS (dimpl 0.9) accepts only ECDSA peer certificates. Browsers and libwebrtc
//! present ECDSA ones, but GStreamer's webrtcbin, many hardware encoders and older tools
//! present RSA ones, and WHIP and WHEP exist for exactly those tools. Their peers handshake
//! here instead; everything after the handshake (SRTP, ICE, hashing) stays on str0m's
//! aws-lc-rs provider. Our own certificate stays ECDSA (every stack accepts it). Peers of the
//! LiveKit protocol keep dimpl, which costs less memory per peer (docs/decisions.md).
//!
//! OpenSSL drives the handshake from its own clock: retransmissions are due when its timer
//! has run out and a handshake call notices. While a handshake is in progress we ask str0m
//! for a timeout every [`HANDSHAKE_TICK`] and poke OpenSSL then.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use openssl::pkey::PKey;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::X509;
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, KeyingMaterial,
    ProtocolVersion, SrtpProfile,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// How often an unfinished handshake is given the chance to retransmit.
const HANDSHAKE_TICK: Duration = Duration::from_millis(100);

/// Cipher suites we accept, strongest first. Our certificate is ECDSA, so as a server we
/// pick an ECDSA suite; the RSA ones serve us as a client of a server with an RSA key.
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA";

/// The SRTP profiles str0m can run, in the order browsers prefer them.
const SRTP_PROFILES: &str = "SRTP_AEAD_AES_128_GCM:SRTP_AEAD_AES_256_GCM:SRTP_AES128_CM_SHA1_80";

/// The exporter label of DTLS-SRTP (RFC 5764 §4.2).
const SRTP_EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// The crypto provider of peers whose DTLS must accept RSA peer certificates: str0m's
/// default provider with this module's DTLS.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = str0m::crypto::from_feature_flags();
            provider.dtls_provider = &OpensslDtlsProvider;
            Arc::new(provider)
        })
        .clone()
}

#[derive(Debug)]
struct OpensslDtlsProvider;

impl DtlsProvider for OpensslDtlsProvider {
    /// The process's one certificate, as LiveKit-protocol peers present (`switchboard-dtls`).
    fn generate_certificate(&self) -> Option<DtlsCert> {
        switchboard_dtls::provider()
            .dtls_provider
            .generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        _now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        if dtls_version == DtlsVersion::Dtls13 {
            return Err(CryptoError::Other(
                "the OpenSSL DTLS of WHIP/WHEP peers speaks DTLS 1.2 only".into(),
            ));
        }
        let context = context(cert).map_err(|e| CryptoError::Other(format!("OpenSSL: {e}")))?;
        let mut ssl = Ssl::new(&context).map_err(|e| CryptoError::Other(e.to_string()))?;
        if let Some(mtu) = mtu {
            let mtu = u32::try_from(mtu).unwrap_or(u32::MAX);
            ssl.set_mtu(mtu)
                .map_err(|e| CryptoError::Other(e.to_string()))?;
        }
        Ok(Box::new(OpensslDtls {
            inner: Mutex::new(Inner {
                phase: Phase::Unstarted(ssl),
                outgoing: VecDeque::new(),
                events: VecDeque::new(),
                tick_from: None,
            }),
            active: None,
        }))
    }
}

/// One context per certificate; the peer's certificate is accepted whatever signs it,
/// because str0m checks it against the fingerprint of the SDP.
fn context(cert: &DtlsCert) -> Result<SslContext, openssl::error::ErrorStack> {
    let mut builder = SslContextBuilder::new(SslMethod::dtls())?;
    builder.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    builder.set_max_proto_version(Some(SslVersion::DTLS1_2))?;
    builder.set_cipher_list(CIPHERS)?;
    builder.set_tlsext_use_srtp(SRTP_PROFILES)?;
    builder.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        |_preverified, _chain| true,
    );
    let certificate = X509::from_der(&cert.certificate)?;
    builder.set_certificate(&certificate)?;
    let key = PKey::private_key_from_pkcs8(&cert.private_key)
        .or_else(|_| PKey::private_key_from_der(&cert.private_key))?;
    builder.set_private_key(&key)?;
    builder.check_private_key()?;
    Ok(builder.build())
}

/// The DTLS of one peer. OpenSSL's stream is not `Sync`; str0m's trait asks for it, so the
/// state sits behind a mutex nobody else ever holds.
#[derive(Debug)]
struct OpensslDtls {
    inner: Mutex<Inner>,
    active: Option<bool>,
}

struct Inner {
    phase: Phase,
    /// Datagrams OpenSSL wrote that str0m has yet to poll (they outlive the stream when a
    /// close_notify is the last of them).
    outgoing: VecDeque<Vec<u8>>,
    /// What str0m has yet to poll, besides datagrams.
    events: VecDeque<Event>,
    /// The last time str0m gave us; handshake ticks count from it.
    tick_from: Option<Instant>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("phase", &self.phase.name())
            .field("events", &self.events.len())
            .finish()
    }
}

enum Phase {
    /// Created; the role is not known yet.
    Unstarted(Ssl),
    Handshaking(SslStream<Datagrams>),
    Connected(SslStream<Datagrams>),
    /// close_notify sent or received, or the handshake failed.
    Closed,
    /// Only while switching phases.
    Switching,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Unstarted(_) => "unstarted",
            Phase::Handshaking(_) => "handshaking",
            Phase::Connected(_) => "connected",
            Phase::Closed => "closed",
            Phase::Switching => "switching",
        }
    }

    fn stream(&mut self) -> Option<&mut SslStream<Datagrams>> {
        match self {
            Phase::Handshaking(stream) | Phase::Connected(stream) => Some(stream),
            _ => None,
        }
    }
}

enum Event {
    PeerCert(Vec<u8>),
    Keying(KeyingMaterial, SrtpProfile),
    Connected,
    Data(Vec<u8>),
    CloseNotify,
}

/// The datagram "socket" OpenSSL reads and writes: whole datagrams in, whole datagrams out.
#[derive(Default)]
struct Datagrams {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(datagram) = self.incoming.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        // A datagram larger than OpenSSL's read buffer is truncated, as a UDP socket would.
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok(n)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A handshake or record failure. The detail is logged; dimpl's error type has no variant
/// that carries an OpenSSL message, and str0m only needs to know the connection is over.
fn failed(what: &str, error: &dyn std::fmt::Display) -> DtlsImplError {
    tracing::warn!(%error, "OpenSSL DTLS {what} failed");
    DtlsImplError::ConnectionClosed
}

fn would_block(error: &openssl::ssl::Error) -> bool {
    matches!(error.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE)
}

impl Inner {
    /// Takes what OpenSSL wrote since the last call.
    fn collect(&mut self) {
        if let Some(stream) = self.phase.stream() {
            let written = std::mem::take(&mut stream.get_mut().outgoing);
            self.outgoing.extend(written);
        }
    }

    /// Runs OpenSSL on what arrived and collects what it wrote.
    fn drive(&mut self) -> Result<(), DtlsImplError> {
        let result = self.run();
        self.collect();
        result
    }

    /// Runs OpenSSL on whatever arrived: the handshake until it completes, then reads of
    /// application data.
    fn run(&mut self) -> Result<(), DtlsImplError> {
        if let Phase::Handshaking(stream) = &mut self.phase {
            match stream.do_handshake() {
                Ok(()) => self.handshake_done()?,
                Err(e) if would_block(&e) => return Ok(()),
                Err(e) => {
                    self.collect(); // an alert may be on its way out
                    self.phase = Phase::Closed;
                    return Err(failed("handshake", &e));
                }
            }
        }
        let Phase::Connected(stream) = &mut self.phase else {
            return Ok(());
        };
        // One record's plaintext at most (DTLS caps it at 16 KiB); on the stack, no
        // allocation per record.
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.ssl_read(&mut buf) {
                Ok(n) => self.events.push_back(Event::Data(buf[..n].to_vec())),
                Err(e) if would_block(&e) => return Ok(()),
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    self.events.push_back(Event::CloseNotify);
                    self.phase = Phase::Closed;
                    return Ok(());
                }
                Err(e) => {
                    self.phase = Phase::Closed;
                    return Err(failed("read", &e));
                }
            }
        }
    }

    /// Hands str0m the peer's certificate (it checks the SDP fingerprint) and the SRTP keys.
    fn handshake_done(&mut self) -> Result<(), DtlsImplError> {
        let Phase::Handshaking(stream) = std::mem::replace(&mut self.phase, Phase::Switching)
        else {
            unreachable!("handshake_done is only called while handshaking");
        };
        let ssl = stream.ssl();
        let peer = ssl
            .peer_certificate()
            .ok_or_else(|| failed("handshake", &"the peer sent no certificate"))?;
        let der = peer.to_der().map_err(|e| failed("certificate", &e))?;
        let profile = ssl
            .selected_srtp_profile()
            .ok_or_else(|| failed("handshake", &"no SRTP profile was negotiated"))?;
        let (profile, key_len, salt_len) = match profile.name() {
            "SRTP_AEAD_AES_128_GCM" => (SrtpProfile::AEAD_AES_128_GCM, 16, 12),
            "SRTP_AEAD_AES_256_GCM" => (SrtpProfile::AEAD_AES_256_GCM, 32, 12),
            "SRTP_AES128_CM_SHA1_80" => (SrtpProfile::AES128_CM_SHA1_80, 16, 14),
            other => return Err(failed("handshake", &format!("SRTP profile {other}"))),
        };
        // Client and server write keys, then client and server salts (RFC 5764 §4.2).
        let mut material = vec![0u8; 2 * (key_len + salt_len)];
        ssl.export_keying_material(&mut material, SRTP_EXPORTER_LABEL, None)
            .map_err(|e| failed("key export", &e))?;
        self.events.push_back(Event::PeerCert(der));
        self.events
            .push_back(Event::Keying(KeyingMaterial::new(&material), profile));
        self.events.push_back(Event::Connected);
        self.phase = Phase::Connected(stream);
        Ok(())
    }
}

impl OpensslDtls {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Only this peer's worker thread ever locks it; a poisoned lock still holds
        // consistent state because every method leaves `phase` valid before returning.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl DtlsInstance for OpensslDtls {
    fn set_active(&mut self, active: bool) {
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        // The role is fixed once the handshake has started; a second call changes nothing.
        if !matches!(inner.phase, Phase::Unstarted(_)) {
            return;
        }
        self.active = Some(active);
        if let Phase::Unstarted(mut ssl) = std::mem::replace(&mut inner.phase, Phase::Switching) {
            if active {
                ssl.set_connect_state();
            } else {
                ssl.set_accept_state();
            }
            match SslStream::new(ssl, Datagrams::default()) {
                Ok(stream) => inner.phase = Phase::Handshaking(stream),
                Err(e) => {
                    tracing::warn!(%e, "OpenSSL DTLS setup failed");
                    inner.phase = Phase::Closed;
                }
            }
            if active {
                // The client speaks first: its ClientHello is queued at once.
                if let Err(e) = inner.drive() {
                    tracing::debug!(?e, "OpenSSL DTLS client could not start");
                }
            }
        }
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        let mut inner = self.inner();
        match inner.phase.stream() {
            Some(stream) => stream.get_mut().incoming.push_back(packet.to_vec()),
            None => return Ok(()),
        }
        inner.drive()
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let mut inner = self.inner();
        if let Some(datagram) = inner.outgoing.pop_front() {
            if datagram.len() > buf.len() {
                let needed = datagram.len();
                inner.outgoing.push_front(datagram);
                return DtlsOutput::BufferTooSmall { needed };
            }
            buf[..datagram.len()].copy_from_slice(&datagram);
            return DtlsOutput::Packet(&buf[..datagram.len()]);
        }
        let needed = match inner.events.front() {
            Some(Event::PeerCert(bytes)) | Some(Event::Data(bytes)) => bytes.len(),
            _ => 0,
        };
        if needed > buf.len() {
            return DtlsOutput::BufferTooSmall { needed };
        }
        match inner.events.pop_front() {
            Some(Event::PeerCert(der)) => {
                buf[..der.len()].copy_from_slice(&der);
                DtlsOutput::PeerCert(&buf[..der.len()])
            }
            Some(Event::Data(data)) => {
                buf[..data.len()].copy_from_slice(&data);
                DtlsOutput::ApplicationData(&buf[..data.len()])
            }
            Some(Event::Keying(material, profile)) => {
                // The media plane encrypts forwarded RTP with these keys itself.
                switchboard_dtls::record_exported_keys(switchboard_dtls::ExportedKeys {
                    material: material.to_vec(),
                    profile,
                    active: self.active.unwrap_or(false),
                });
                DtlsOutput::KeyingMaterial(material, profile)
            }
            Some(Event::Connected) => DtlsOutput::Connected,
            Some(Event::CloseNotify) => DtlsOutput::CloseNotify,
            None => {
                let from = inner.tick_from.unwrap_or_else(Instant::now);
                let next = match inner.phase {
                    Phase::Handshaking(_) => HANDSHAKE_TICK,
                    // Nothing is due until a packet arrives; str0m's own timers run meanwhile.
                    _ => Duration::from_secs(3600),
                };
                DtlsOutput::Timeout(from + next)
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        let mut inner = self.inner();
        inner.tick_from = Some(now);
        if matches!(inner.phase, Phase::Handshaking(_)) {
            inner.drive()?;
        }
        Ok(())
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        let mut inner = self.inner();
        let Phase::Connected(stream) = &mut inner.phase else {
            return match inner.phase {
                Phase::Closed => Err(DtlsImplError::ConnectionClosed),
                _ => Ok(0),
            };
        };
        if data.is_empty() {
            return Ok(0);
        }
        let result = stream.ssl_write(data);
        inner.collect();
        match result {
            Ok(n) => Ok(n),
            Err(e) if would_block(&e) => Ok(0),
            Err(e) => {
                inner.phase = Phase::Closed;
                Err(failed("write", &e))
            }
        }
    }

    fn is_active(&self) -> bool {
        self.active.unwrap_or(false)
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        match self.inner().phase {
            Phase::Connected(_) => Some(ProtocolVersion::DTLS1_2),
            _ => None,
        }
    }

    fn is_closing(&self) -> bool {
        let inner = self.inner();
        matches!(inner.phase, Phase::Closed) && !inner.outgoing.is_empty()
    }

    fn is_closed(&self) -> bool {
        let inner = self.inner();
        matches!(inner.phase, Phase::Closed) && inner.outgoing.is_empty()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        let mut inner = self.inner();
        if let Phase::Connected(stream) = &mut inner.phase {
            // The close_notify goes out as a datagram; str0m polls it like any other.
            if let Err(e) = stream.shutdown() {
                tracing::debug!(%e, "OpenSSL DTLS close_notify not sent");
            }
            inner.collect();
        }
        inner.phase = Phase::Closed;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
