//! TURN over TLS ("turns:" URLs with `?transport=tcp`, which is what browsers behind a
//! firewall that only lets HTTPS out can reach): its configuration, the rustls server
//! configuration built from it, the stream framing, and the listener.
//!
//! Only the client side is TLS: relaying to peers stays UDP (REQUESTED-TRANSPORT UDP), and
//! an allocation made over a connection ends when the connection does.

mod framing;
mod listener;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub(crate) use listener::{spawn_acceptor, ConnectionCount, TlsEvent, TlsLink};

use crate::TurnError;

/// The smallest [`TlsLimits::max_buffered_bytes`] accepted: room for any Data indication
/// the relay can produce (its 4 KiB peer buffer plus headers) and a request behind it.
pub const MIN_BUFFERED_BYTES: usize = 8 * 1024;

/// The TLS listener.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Where TLS clients connect (e.g. `0.0.0.0:443` or `0.0.0.0:5349`). TCP; it may share
    /// its port number with the UDP listener.
    pub listen: SocketAddr,
    pub certificate: TlsCertificate,
    pub limits: TlsLimits,
}

impl TlsConfig {
    pub fn new(listen: SocketAddr, certificate: TlsCertificate) -> Self {
        Self {
            listen,
            certificate,
            limits: TlsLimits::default(),
        }
    }
}

/// The server's certificate chain and private key. The key is never printed by `Debug`.
pub enum TlsCertificate {
    /// PEM text as read from files: the chain (leaf first, then intermediates) and the
    /// private key (PKCS#8, PKCS#1 or SEC1).
    Pem { chain: Vec<u8>, key: Vec<u8> },
    /// Already parsed (e.g. by a certificate manager).
    Der {
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    },
}

impl Clone for TlsCertificate {
    fn clone(&self) -> Self {
        match self {
            Self::Pem { chain, key } => Self::Pem {
                chain: chain.clone(),
                key: key.clone(),
            },
            Self::Der { chain, key } => Self::Der {
                chain: chain.clone(),
                key: key.clone_key(),
            },
        }
    }
}

impl fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (form, chain) = match self {
            Self::Pem { chain, .. } => ("Pem", format!("{} bytes", chain.len())),
            Self::Der { chain, .. } => ("Der", format!("{} certificates", chain.len())),
        };
        f.debug_struct("TlsCertificate")
            .field("form", &form)
            .field("chain", &chain)
            .field("key", &"[secret key elided]")
            .finish()
    }
}

/// Caps and timers of the TLS listener: every connection costs a socket, a task and up to
/// twice `max_buffered_bytes` of memory, so all of them are bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsLimits {
    /// Connections open at once, handshaking or not. Beyond this a new connection is
    /// closed as soon as it is accepted.
    pub max_connections: usize,
    /// Connections open at once from one IP address (IPv4-mapped IPv6 counts as IPv4).
    pub max_connections_per_ip: usize,
    /// A connection that has not completed its TLS handshake by then is closed.
    pub handshake_timeout: Duration,
    /// A connection that sends no whole message for this long is closed, and with it its
    /// allocation; so is one that does not take what we write to it for this long.
    pub idle_timeout: Duration,
    /// Bytes buffered per connection in each direction: a partial incoming message (a
    /// message longer than this closes the connection) and outgoing messages the client
    /// has not taken yet (beyond it they are dropped whole, as a congested UDP path would).
    pub max_buffered_bytes: usize,
}

impl Default for TlsLimits {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            // Many browsers share one address behind a corporate NAT, the very networks
            // that need TURN over TLS; a participant needs one or two connections.
            max_connections_per_ip: 64,
            handshake_timeout: Duration::from_secs(10),
            // A live PeerConnection sends ICE consent checks through its relay every few
            // seconds (RFC 7675), so two minutes of silence is a session that is gone.
            idle_timeout: Duration::from_secs(120),
            // Some 20 full-size media packets each way.
            max_buffered_bytes: 32 * 1024,
        }
    }
}

pub(crate) fn validate(tls: &TlsConfig) -> Result<(), TurnError> {
    let bad = |what: &str| Err(TurnError::Config(format!("tls: {what}")));
    let limits = &tls.limits;
    if limits.max_connections == 0 || limits.max_connections_per_ip == 0 {
        return bad("max_connections and max_connections_per_ip must be positive");
    }
    if limits.handshake_timeout.is_zero() || limits.idle_timeout.is_zero() {
        return bad("handshake_timeout and idle_timeout must be positive");
    }
    if limits.max_buffered_bytes < MIN_BUFFERED_BYTES {
        return bad(&format!(
            "max_buffered_bytes must be at least {MIN_BUFFERED_BYTES}"
        ));
    }
    Ok(())
}

/// The rustls configuration: aws-lc-rs, the safe default protocol versions (TLS 1.2 and
/// 1.3), no client authentication (TURN authenticates in its own messages).
pub(crate) fn server_config(
    certificate: &TlsCertificate,
) -> Result<Arc<rustls::ServerConfig>, TurnError> {
    let (chain, key) = match certificate {
        TlsCertificate::Pem { chain, key } => {
            let chain = CertificateDer::pem_slice_iter(chain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| TurnError::Pem {
                    what: "certificate chain",
                    source,
                })?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|source| TurnError::Pem {
                what: "private key",
                source,
            })?;
            (chain, key)
        }
        TlsCertificate::Der { chain, key } => (chain.clone(), key.clone_key()),
    };
    if chain.is_empty() {
        return Err(TurnError::Config(
            "tls: the certificate chain is empty".to_owned(),
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TurnError::Tls)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TurnError::Tls)?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &[u8] = include_bytes!("../../tests/data/cert.pem");
    const KEY: &[u8] = include_bytes!("../../tests/data/key.pem");

    fn pem(chain: &[u8], key: &[u8]) -> TlsCertificate {
        TlsCertificate::Pem {
            chain: chain.to_vec(),
            key: key.to_vec(),
        }
    }

    #[test]
    fn a_certificate_loads_from_pem_or_der_and_bad_ones_say_why() {
        assert!(server_config(&pem(CERT, KEY)).is_ok());
        let der = TlsCertificate::Der {
            chain: vec![CertificateDer::from_pem_slice(CERT).expect("cert")],
            key: PrivateKeyDer::from_pem_slice(KEY).expect("key"),
        };
        assert!(server_config(&der.clone()).is_ok());
        let err = server_config(&pem(CERT, b"not a key")).expect_err("no key");
        assert!(err.to_string().contains("private key"), "{err}");
        let err = server_config(&pem(b"", KEY)).expect_err("no chain");
        assert!(err.to_string().contains("empty"), "{err}");
        // A well-formed key that is not the certificate's (generated for this test only).
        let other_key = b"-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgg8ClM5SIYwWZIUve
/vgR9lNm1kyqEa3hS01V94ZlHPihRANCAAQy1vOuKFOumWL2MkFl+kPjaqOOJWZw
AhktT0IlKmm/SGf73Xe8ruE6++3Cu6OQJVbo9oXk2Z61Nq4UQI9Ca9OI
-----END PRIVATE KEY-----
";
        let err = server_config(&pem(CERT, other_key)).expect_err("mismatched key");
        assert!(matches!(err, TurnError::Tls(_)), "{err}");
    }

    #[test]
    fn debug_never_prints_the_key() {
        let shown = format!("{:?}", pem(CERT, KEY));
        assert!(!shown.contains("PRIVATE"), "{shown}");
        assert!(shown.contains("elided"), "{shown}");
    }

    #[test]
    fn limits_are_checked() {
        let config = TlsConfig::new("127.0.0.1:0".parse().expect("addr"), pem(CERT, KEY));
        assert!(validate(&config).is_ok());
        for limits in [
            TlsLimits {
                max_connections_per_ip: 0,
                ..TlsLimits::default()
            },
            TlsLimits {
                idle_timeout: Duration::ZERO,
                ..TlsLimits::default()
            },
            TlsLimits {
                max_buffered_bytes: 1024,
                ..TlsLimits::default()
            },
        ] {
            let config = TlsConfig {
                limits: limits.clone(),
                ..config.clone()
            };
            assert!(validate(&config).is_err(), "{limits:?}");
        }
    }
}
