//! Handshakes between this module's DTLS and itself or str0m's own (dimpl), in memory.

use std::time::Instant;

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::{X509Builder, X509NameBuilder};
use str0m::crypto::dtls::{DtlsCert, DtlsInstance, DtlsOutput, DtlsVersion, SrtpProfile};

use super::provider;

/// A self-signed RSA certificate like the one GStreamer's webrtcbin makes for itself.
fn rsa_certificate() -> DtlsCert {
    let key = PKey::from_rsa(Rsa::generate(2048).expect("RSA key")).expect("key");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", "gstreamer").expect("CN");
    let name = name.build();
    let mut cert = X509Builder::new().expect("builder");
    cert.set_version(2).expect("version");
    let serial = BigNum::from_u32(1)
        .expect("serial")
        .to_asn1_integer()
        .expect("serial");
    cert.set_serial_number(&serial).expect("serial");
    cert.set_subject_name(&name).expect("subject");
    cert.set_issuer_name(&name).expect("issuer");
    cert.set_pubkey(&key).expect("pubkey");
    cert.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
        .expect("not before");
    cert.set_not_after(&Asn1Time::days_from_now(30).expect("time"))
        .expect("not after");
    cert.sign(&key, MessageDigest::sha256()).expect("sign");
    DtlsCert {
        certificate: cert.build().to_der().expect("der"),
        private_key: key.private_key_to_pkcs8().expect("pkcs8"),
    }
}

fn ecdsa_certificate() -> DtlsCert {
    provider()
        .dtls_provider
        .generate_certificate()
        .expect("the provider makes ECDSA certificates")
}

fn openssl_dtls(cert: &DtlsCert) -> Box<dyn DtlsInstance> {
    provider()
        .dtls_provider
        .new_dtls(cert, Instant::now(), DtlsVersion::Dtls12, Some(1150))
        .expect("OpenSSL DTLS")
}

fn dimpl_dtls(cert: &DtlsCert) -> Box<dyn DtlsInstance> {
    str0m::crypto::from_feature_flags()
        .dtls_provider
        .new_dtls(cert, Instant::now(), DtlsVersion::Dtls12, Some(1150))
        .expect("dimpl DTLS")
}

/// What one side surfaced to str0m.
#[derive(Default, Debug)]
struct Seen {
    peer_cert: Option<Vec<u8>>,
    keying: Option<(Vec<u8>, SrtpProfile)>,
    connected: bool,
    data: Vec<Vec<u8>>,
    close_notify: bool,
}

/// Polls one side until its timeout, returning the datagrams it wrote.
fn poll(side: &mut dyn DtlsInstance, seen: &mut Seen) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 2048];
    let mut datagrams = Vec::new();
    loop {
        match side.poll_output(&mut buf) {
            DtlsOutput::Packet(p) => datagrams.push(p.to_vec()),
            DtlsOutput::PeerCert(der) => seen.peer_cert = Some(der.to_vec()),
            DtlsOutput::KeyingMaterial(km, profile) => seen.keying = Some((km.to_vec(), profile)),
            DtlsOutput::Connected => seen.connected = true,
            DtlsOutput::ApplicationData(d) => seen.data.push(d.to_vec()),
            DtlsOutput::CloseNotify => seen.close_notify = true,
            DtlsOutput::Timeout(_) => return datagrams,
            other => panic!("unexpected output {other:?}"),
        }
    }
}

/// Exchanges datagrams until neither side has anything more to say.
fn exchange(client: &mut dyn DtlsInstance, server: &mut dyn DtlsInstance) -> (Seen, Seen) {
    let (mut c, mut s) = (Seen::default(), Seen::default());
    exchange_into(client, server, &mut c, &mut s);
    (c, s)
}

fn exchange_into(
    client: &mut dyn DtlsInstance,
    server: &mut dyn DtlsInstance,
    c: &mut Seen,
    s: &mut Seen,
) {
    for _ in 0..50 {
        let now = Instant::now();
        client.handle_timeout(now).expect("client timeout");
        server.handle_timeout(now).expect("server timeout");
        let to_server = poll(client, c);
        let to_client = poll(server, s);
        if to_server.is_empty() && to_client.is_empty() {
            return;
        }
        for d in to_server {
            server
                .handle_packet(&d)
                .expect("server takes the client's datagram");
        }
        for d in to_client {
            client
                .handle_packet(&d)
                .expect("client takes the server's datagram");
        }
    }
    panic!("the handshake did not settle in 50 rounds");
}

/// Starts both sides in their roles and exchanges until the handshake settles.
fn connect(
    mut client: Box<dyn DtlsInstance>,
    mut server: Box<dyn DtlsInstance>,
) -> (Box<dyn DtlsInstance>, Box<dyn DtlsInstance>, Seen, Seen) {
    client.set_active(true);
    server.set_active(false);
    let (c, s) = exchange(client.as_mut(), server.as_mut());
    (client, server, c, s)
}

fn assert_handshake(c: &Seen, s: &Seen, client_cert: &DtlsCert, server_cert: &DtlsCert) {
    assert!(c.connected && s.connected, "both sides connected");
    assert_eq!(s.peer_cert.as_deref(), Some(&client_cert.certificate[..]));
    assert_eq!(c.peer_cert.as_deref(), Some(&server_cert.certificate[..]));
    let (client_keys, client_profile) = c.keying.clone().expect("client keys");
    let (server_keys, server_profile) = s.keying.clone().expect("server keys");
    assert_eq!(client_profile, server_profile);
    assert_eq!(
        client_keys, server_keys,
        "both sides derive the same SRTP keys"
    );
    let expected_len = match client_profile {
        SrtpProfile::AES128_CM_SHA1_80 => 60,
        SrtpProfile::AEAD_AES_128_GCM => 56,
        SrtpProfile::AEAD_AES_256_GCM => 88,
        other => panic!("unexpected profile {other:?}"),
    };
    assert_eq!(client_keys.len(), expected_len);
}

#[test]
fn an_rsa_client_handshakes_with_our_ecdsa_server() {
    let (client_cert, server_cert) = (rsa_certificate(), ecdsa_certificate());
    let (_client, server, c, s) = connect(openssl_dtls(&client_cert), openssl_dtls(&server_cert));
    assert_handshake(&c, &s, &client_cert, &server_cert);
    assert!(server.protocol_version().is_some());
}

#[test]
fn a_dimpl_client_handshakes_with_the_openssl_server_and_back() {
    // str0m's own DTLS on one side, as a browser-like ECDSA peer; both roles.
    let (a_cert, b_cert) = (ecdsa_certificate(), ecdsa_certificate());
    let (.., c, s) = connect(dimpl_dtls(&a_cert), openssl_dtls(&b_cert));
    assert_handshake(&c, &s, &a_cert, &b_cert);
    let (.., c, s) = connect(openssl_dtls(&a_cert), dimpl_dtls(&b_cert));
    assert_handshake(&c, &s, &a_cert, &b_cert);
}

#[test]
fn application_data_flows_and_close_notify_reaches_the_peer() {
    let (client_cert, server_cert) = (rsa_certificate(), ecdsa_certificate());
    let mut early = openssl_dtls(&client_cert);
    early.set_active(true);
    assert_eq!(
        early.send_application_data(b"early").expect("no error"),
        0,
        "nothing is accepted before the handshake"
    );
    let (mut client, mut server, mut c, mut s) = connect(early, openssl_dtls(&server_cert));
    assert!(c.connected && s.connected);

    let accepted = client.send_application_data(b"sctp").expect("write");
    assert_eq!(accepted, 4);
    exchange_into(client.as_mut(), server.as_mut(), &mut c, &mut s);
    assert_eq!(s.data, vec![b"sctp".to_vec()]);

    client.close().expect("close");
    assert!(client.is_closing(), "the close_notify waits to be polled");
    exchange_into(client.as_mut(), server.as_mut(), &mut c, &mut s);
    assert!(client.is_closed());
    assert!(s.close_notify, "the server saw close_notify");
    assert!(client.send_application_data(b"late").is_err());
}

#[test]
fn stray_records_are_ignored_and_a_broken_handshake_fails_only_its_peer() {
    let (client_cert, server_cert) = (rsa_certificate(), ecdsa_certificate());
    let mut client = openssl_dtls(&client_cert);
    let mut server = openssl_dtls(&server_cert);
    client.set_active(true);
    server.set_active(false);
    // Datagrams that are no DTLS record: a bad version, a cut-off header.
    server
        .handle_packet(&[22, 1, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 2, 1, 0])
        .expect("a record of no DTLS version is dropped");
    server
        .handle_packet(&[22, 254, 253, 0])
        .expect("a truncated header is dropped");
    let (c, s) = exchange(client.as_mut(), server.as_mut());
    assert_handshake(&c, &s, &client_cert, &server_cert);

    // A handshake record whose message is cut short is fatal for that peer: an error, no panic.
    let mut server = openssl_dtls(&ecdsa_certificate());
    server.set_active(false);
    let broken = [22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3];
    assert!(server.handle_packet(&broken).is_err());
    assert!(server.is_closing(), "an alert is on its way out");
    let alert = poll(server.as_mut(), &mut Seen::default());
    assert_eq!(alert.len(), 1);
    assert_eq!(alert[0][0], 21, "a DTLS alert record");
    assert!(server.is_closed());
}
