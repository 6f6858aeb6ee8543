//! The embedded TURN server (`switchboard-turn`), run beside the media plane when
//! `--turn-udp-port` is set.
//!
//! Its credentials are the TURN REST ones signaling already mints for each participant
//! (`EXPIRY:IDENTITY`, HMAC-SHA1 under a secret): the server recomputes the password of a
//! username at every request, so a credential stops working when it expires, and its quota
//! counts allocations per identity. The secret is `--turn-secret` when given (an external
//! TURN server may share it), else one made at start. It relays to this node's media
//! addresses and the public internet only. With `--turn-tls-port` it also serves TURN over
//! TLS (`turns:`), for networks that let only HTTPS out.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use switchboard_signaling::{IceServer, TurnRestSecret};
use switchboard_turn::{
    Cidr, Limits, PeerPolicy, TlsCertificate, TlsConfig, TurnAuth, TurnConfig, TurnServer,
};

use crate::config::Settings;

/// TURN REST credentials checked with the shared secret.
struct RestAuth(TurnRestSecret);

impl TurnAuth for RestAuth {
    fn password(&self, username: &str, now: SystemTime) -> Option<(String, String)> {
        self.0.password(username, now)
    }
}

/// A running embedded TURN server and what participants are told about it.
pub struct EmbeddedTurn {
    pub server: TurnServer,
    pub announced: Vec<IceServer>,
}

/// Starts the embedded TURN server if it is configured.
pub async fn start(settings: &Settings) -> anyhow::Result<Option<EmbeddedTurn>> {
    let Some(turn) = &settings.turn else {
        return Ok(None);
    };
    let rtc = &settings.rtc;
    let secret = match &rtc.turn_rest {
        Some(shared) => shared.clone(),
        None => TurnRestSecret::new(random_secret(), rtc.turn_credential_ttl),
    };
    let advertised = rtc.advertised_ips();
    // Relay sockets bind the media IP; behind a wildcard, peers reach them at the first
    // address participants are told about.
    let relay_public_ip = rtc
        .ip
        .is_unspecified()
        .then(|| advertised.first().copied())
        .flatten();
    let tls = match &turn.tls {
        Some(tls) => {
            let read = |path: &std::path::Path, what: &str| {
                std::fs::read(path)
                    .with_context(|| format!("cannot read the TURN TLS {what} {}", path.display()))
            };
            let certificate = TlsCertificate::Pem {
                chain: read(&tls.cert_file, "certificate")?,
                key: read(&tls.key_file, "key")?,
            };
            Some(TlsConfig::new(
                SocketAddr::new(rtc.ip, tls.port),
                certificate,
            ))
        }
        None => None,
    };
    let config = TurnConfig {
        tls,
        listen: SocketAddr::new(rtc.ip, turn.udp_port),
        relay_ip: rtc.ip,
        relay_public_ip,
        relay_ports: turn.relay_ports.clone(),
        realm: "switchboard".to_owned(),
        limits: Limits {
            max_allocations: settings.limits.turn_max_allocations as usize,
            max_allocations_per_identity: settings.limits.turn_allocations_per_participant as usize,
            ..Limits::default()
        },
        // Private and loopback peers stay refused, but this node's own media addresses are
        // what participants relay to, wherever they are.
        peers: PeerPolicy {
            allowed: advertised.iter().map(|ip| host_cidr(*ip)).collect(),
            ..PeerPolicy::default()
        },
        ..TurnConfig::default()
    };
    let server = switchboard_turn::start(config, Arc::new(RestAuth(secret.clone())))
        .await
        .context("cannot start the embedded TURN server")?;
    let port = server.local_addr().port();
    let mut urls: Vec<String> = advertised
        .iter()
        .map(|ip| format!("turn:{}?transport=udp", SocketAddr::new(*ip, port)))
        .collect();
    if let (Some(tls), Some(bound)) = (&turn.tls, server.tls_local_addr()) {
        // The name on the certificate, or the addresses (then the certificate must name them).
        let hosts: Vec<String> = match &tls.domain {
            Some(domain) => vec![format!("{domain}:{}", bound.port())],
            None => advertised
                .iter()
                .map(|ip| SocketAddr::new(*ip, bound.port()).to_string())
                .collect(),
        };
        urls.extend(hosts.iter().map(|h| format!("turns:{h}?transport=tcp")));
        tracing::info!(addr = %bound, "embedded TURN server listening (TLS)");
    }
    let announced = urls
        .into_iter()
        .map(|url| IceServer {
            url,
            username: None,
            credential: None,
            rest: Some(secret.clone()),
        })
        .collect();
    tracing::info!(addr = %server.local_addr(), "embedded TURN server listening (UDP)");
    Ok(Some(EmbeddedTurn { server, announced }))
}

fn host_cidr(ip: IpAddr) -> Cidr {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    // Invariant: a full-length prefix is valid for its own family.
    Cidr::new(ip, prefix).expect("a host prefix is a valid CIDR")
}

/// 32 random bytes, hex: the secret when no `--turn-secret` is shared with anyone.
fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
