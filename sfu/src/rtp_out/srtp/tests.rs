//! Known answers: the key derivation vector of RFC 3711 (B.3), and packets protected by
//! libsrtp 2 (through pylibsrtp 1.0.0, the library aiortc runs) with the keys below, so our
//! encryption is checked against an independent implementation, rollover counter included.

use str0m::crypto::dtls::SrtpProfile;
use switchboard_dtls::ExportedKeys;

use crate::hex;

use super::{derive, SrtpSender, LABEL_AUTH, LABEL_ENCRYPTION, LABEL_SALT};

#[test]
fn key_derivation_matches_rfc_3711() {
    let key = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
    let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
    let mut out = [0u8; 16];
    derive(&key, &salt, LABEL_ENCRYPTION, &mut out).unwrap();
    assert_eq!(out.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
    derive(&key, &salt, LABEL_AUTH, &mut out).unwrap();
    assert_eq!(out.to_vec(), hex("CEBE321F6FF7716B6FD4AB49AF256A15"));
    let mut out = [0u8; 14];
    derive(&key, &salt, LABEL_SALT, &mut out).unwrap();
    assert_eq!(out.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
}

const HEADER_SEQ_1234: &str = "8060123411223344cafebabe";
const HEADER_SEQ_0001: &str = "8060000111223344cafebabe";

/// (profile, master key, master salt, protected seq 0x1234 with ROC 0, protected seq 1
/// with ROC 1), from libsrtp.
const LIBSRTP: [(SrtpProfile, &str, &str, &str, &str); 3] = [
    (
        SrtpProfile::AES128_CM_SHA1_80,
        "01080f161d242b323940474e555c636a",
        "05121f2c394653606d7a8794a1ae",
        "c1ccbc60272d1a34a7c4caed6ce6ebcc0ac337c41662dbf41b08e11a7bc1b7b09c291748fcc57dbafb799abf095bcd",
        "2770e9c0f5e11375b66a624d2242b6eb18d4f323653c6863c33d996f51f332b39cd5289ff8e22066d8b2123f0f2c7e",
    ),
    (
        SrtpProfile::AEAD_AES_128_GCM,
        "01080f161d242b323940474e555c636a",
        "05121f2c394653606d7a8794",
        "e81b4e645067eac5f34fd8c2120fcb5214dd678fe4c269eb8d2af29972c5c822b83a720af1bc964cf3a5e9ec599beee378b251ebec",
        "756fe517c62a40c8414ed74087be91aa0f957fdae0e9e737b87fbd3dfb17786321780fe7939c7eb942b7d50010c3858e3fed8fa8b2",
    ),
    (
        SrtpProfile::AEAD_AES_256_GCM,
        "01080f161d242b323940474e555c636a71787f868d949ba2a9b0b7bec5ccd3da",
        "05121f2c394653606d7a8794",
        "790d055002a81c35ea5fd988c6c42cce85ca8bfd5e16a154d8ed674fd095bfa7513f59bc8dbeb93de204e2c1990282afe80c031000",
        "1347480ed4289c5605bbca8eb986d28e077a3c4f9294c4ec3cc47fea46d564d8ed0672bc599bb14b75f089b6e49aee37453398c036",
    ),
];

fn protected(sender: &SrtpSender, header: &str, index: u64) -> Vec<u8> {
    let mut packet = hex(header);
    packet.extend(0u8..37);
    sender.protect(&mut packet, 12, 0xcafe_babe, index);
    packet
}

#[test]
fn packets_match_libsrtp_in_every_profile() {
    for (profile, key, salt, first, wrapped) in LIBSRTP {
        let sender = SrtpSender::from_master(profile, &hex(key), &hex(salt)).unwrap();
        let first_packet = protected(&sender, HEADER_SEQ_1234, 0x1234);
        assert_eq!(
            first_packet,
            hex(&format!("{HEADER_SEQ_1234}{first}")),
            "{profile:?}"
        );
        assert_eq!(
            first_packet.len(),
            12 + 37 + sender.overhead(),
            "{profile:?}"
        );
        let wrapped_packet = protected(&sender, HEADER_SEQ_0001, 0x1_0001);
        assert_eq!(
            wrapped_packet,
            hex(&format!("{HEADER_SEQ_0001}{wrapped}")),
            "{profile:?}"
        );
    }
}

#[test]
fn each_side_writes_with_its_own_half_of_the_exported_material() {
    let (_, key, salt, first, _) = &LIBSRTP[1];
    let (key, salt) = (hex(key), hex(salt));
    let other_key = [0x55u8; 16];
    let other_salt = [0x66u8; 12];
    // client key | server key | client salt | server salt
    let as_client = [&key[..], &other_key, &salt, &other_salt].concat();
    let as_server = [&other_key[..], &key, &other_salt, &salt].concat();
    let expected = hex(&format!("{HEADER_SEQ_1234}{first}"));
    for (material, active) in [(as_client, true), (as_server, false)] {
        let keys = ExportedKeys {
            material,
            profile: SrtpProfile::AEAD_AES_128_GCM,
            active,
        };
        let sender = SrtpSender::new(&keys).unwrap();
        assert_eq!(
            protected(&sender, HEADER_SEQ_1234, 0x1234),
            expected,
            "active: {active}"
        );
    }
}

#[test]
fn material_of_the_wrong_length_is_refused() {
    let keys = ExportedKeys {
        material: vec![0; 59],
        profile: SrtpProfile::AES128_CM_SHA1_80,
        active: true,
    };
    assert!(matches!(
        SrtpSender::new(&keys),
        Err(super::KeysError::Length {
            got: 59,
            want: 60,
            ..
        })
    ));
}
