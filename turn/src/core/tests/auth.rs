//! Credentials, nonces, quotas and the Allocate rules.

use std::time::Duration;

use stun_types::attribute::{Realm, UnknownAttributes, XorMappedAddress};
use stun_types::message::{Message, MessageWriteExt, BINDING};
use stun_types::prelude::AttributeStaticType;
use turn_types::attribute::{
    DontFragment, EvenPort, Lifetime, RequestedAddressFamily, RequestedTransport,
};
use turn_types::message::{ALLOCATE, REFRESH};
use turn_types::AddressFamily;

use super::*;

fn udp(m: &mut MessageWriteVec, _: TransactionId) {
    m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .expect("attr");
}

#[test]
fn binding_needs_no_credentials_and_reports_the_mapped_address() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let resp = rig.ask(client, &request(BINDING, None, |_, _| {}));
    assert_eq!(resp.code(), None);
    let msg = resp.msg();
    let mapped = msg
        .attribute::<XorMappedAddress>()
        .expect("mapped")
        .addr(msg.transaction_id());
    assert_eq!(mapped, client);
}

#[test]
fn without_integrity_the_client_gets_401_with_realm_and_nonce_and_nothing_is_stored() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let resp = rig.ask(client, &request(ALLOCATE, None, udp));
    assert_eq!(resp.code(), Some(401));
    assert_eq!(
        resp.msg().attribute::<Realm>().expect("realm").realm(),
        "switchboard"
    );
    assert!(resp.nonce().is_some_and(|n| !n.is_empty()));
    assert!(!resp.signed_by("alice"), "nothing to sign with");
    assert_eq!(rig.core.allocation_count(), 0);
}

#[test]
fn a_wrong_password_an_unknown_user_or_an_expired_credential_gets_401() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let nonce = rig.challenge(client);
    let wrong = request(ALLOCATE, Some(("alice", "guess", &nonce)), udp);
    assert_eq!(rig.ask(client, &wrong).code(), Some(401));
    let unknown = request(ALLOCATE, Some(("mallory", "mallory-pw", &nonce)), udp);
    assert_eq!(rig.ask(client, &unknown).code(), Some(401));
    // "old" expired at wall0(): the auth hook sees the wall time handed in.
    let expired = signed(ALLOCATE, "old", &nonce, udp);
    let resp = rig.ask(client, &expired);
    assert_eq!(resp.code(), Some(401));
    assert!(
        resp.nonce().is_some(),
        "a 401 always lets the client try again"
    );
    assert_eq!(rig.core.allocation_count(), 0);
}

#[test]
fn integrity_without_username_realm_or_nonce_is_a_bad_request() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let mut msg = Message::builder_request(ALLOCATE, MessageWriteVec::new());
    let creds =
        LongTermKeyCredentials::new("alice".into(), "alice-pw".into(), "switchboard".into()).into();
    msg.add_message_integrity(&creds, IntegrityAlgorithm::Sha1)
        .expect("integrity");
    assert_eq!(rig.ask(client, &msg.finish()).code(), Some(400));
}

#[test]
fn an_old_forged_or_foreign_nonce_gets_438_and_a_fresh_one() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let (_, _, nonce) = rig.allocate(client, "alice");
    // Nonce lifetime 600 s; the allocation (600 s) is refreshed just before it lapses.
    rig.advance(Duration::from_secs(599));
    let refresh = signed(REFRESH, "alice", &nonce, |_, _| {});
    assert_eq!(rig.ask(client, &refresh).code(), None);
    rig.advance(Duration::from_secs(2));
    let resp = rig.ask(client, &signed(REFRESH, "alice", &nonce, |_, _| {}));
    assert_eq!(resp.code(), Some(438));
    let fresh = resp.nonce().expect("a new nonce");
    assert_ne!(fresh, nonce);
    assert_eq!(
        rig.ask(client, &signed(REFRESH, "alice", &fresh, |_, _| {}))
            .code(),
        None
    );
    // Issued to another client address, or made up: both stale.
    let elsewhere = rig.challenge(addr("198.51.100.7:40001"));
    assert_eq!(
        rig.ask(client, &signed(REFRESH, "alice", &elsewhere, |_, _| {}))
            .code(),
        Some(438)
    );
    assert_eq!(
        rig.ask(client, &signed(REFRESH, "alice", "0123", |_, _| {}))
            .code(),
        Some(438)
    );
}

#[test]
fn another_username_on_an_allocation_gets_441() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let (_, _, nonce) = rig.allocate(client, "alice");
    let resp = rig.ask(client, &signed(REFRESH, "bob", &nonce, |_, _| {}));
    assert_eq!(resp.code(), Some(441));
    assert!(
        resp.signed_by("bob"),
        "an authenticated request's error is signed"
    );
    // Even a username of the same identity is another username.
    assert_eq!(
        rig.ask(client, &signed(REFRESH, "alice2", &nonce, |_, _| {}))
            .code(),
        Some(441)
    );
}

#[test]
fn the_quota_counts_allocations_per_identity_and_the_cap_counts_them_all() {
    let mut cfg = config();
    cfg.limits.max_allocations_per_identity = 2;
    cfg.limits.max_allocations = 3;
    let mut rig = Rig::new(cfg);
    rig.allocate(addr("198.51.100.7:40000"), "alice");
    rig.allocate(addr("198.51.100.7:40001"), "alice2");
    let third = addr("198.51.100.7:40002");
    let nonce = rig.challenge(third);
    assert_eq!(
        rig.ask(third, &signed(ALLOCATE, "alice", &nonce, udp))
            .code(),
        Some(486)
    );
    rig.allocate(addr("198.51.100.8:40000"), "bob");
    let fourth = addr("198.51.100.9:40000");
    let nonce = rig.challenge(fourth);
    assert_eq!(
        rig.ask(fourth, &signed(ALLOCATE, "bob", &nonce, udp))
            .code(),
        Some(508)
    );
    // Deleting one of alice's frees her quota.
    let first = addr("198.51.100.7:40000");
    let nonce = rig.challenge(first);
    let delete = signed(REFRESH, "alice", &nonce, |m, _| {
        m.add_attribute(&Lifetime::new(0)).expect("attr");
    });
    let resp = rig.ask(first, &delete);
    assert_eq!((resp.code(), resp.lifetime()), (None, 0));
    assert!(resp
        .outs
        .iter()
        .any(|o| matches!(o, Output::ReleaseRelay { .. })));
    let nonce = rig.challenge(third);
    assert_eq!(
        rig.ask(third, &signed(ALLOCATE, "alice", &nonce, udp))
            .code(),
        None
    );
}

#[test]
fn lifetimes_are_clamped_between_the_default_and_the_maximum() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let nonce = rig.challenge(client);
    let with = |secs: u32| {
        move |m: &mut MessageWriteVec, t: TransactionId| {
            udp(m, t);
            m.add_attribute(&Lifetime::new(secs)).expect("attr");
        }
    };
    let resp = rig.ask(client, &signed(ALLOCATE, "alice", &nonce, with(1_000_000)));
    assert_eq!(resp.lifetime(), 3600);
    assert!(resp.signed_by("alice"));
    let refresh = |secs: u32| {
        signed(REFRESH, "alice", &nonce, move |m, _| {
            m.add_attribute(&Lifetime::new(secs)).expect("attr");
        })
    };
    assert_eq!(rig.ask(client, &refresh(10)).lifetime(), 600);
    assert_eq!(rig.ask(client, &refresh(1200)).lifetime(), 1200);
    assert_eq!(
        rig.ask(client, &signed(REFRESH, "alice", &nonce, |_, _| {}))
            .lifetime(),
        600
    );
}

#[test]
fn allocate_refuses_what_it_does_not_do_with_the_rfc_codes() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let nonce = rig.challenge(client);
    let tcp = signed(ALLOCATE, "alice", &nonce, |m, _| {
        m.add_attribute(&RequestedTransport::new(RequestedTransport::TCP))
            .expect("attr");
    });
    assert_eq!(rig.ask(client, &tcp).code(), Some(442));
    assert_eq!(
        rig.ask(client, &signed(ALLOCATE, "alice", &nonce, |_, _| {}))
            .code(),
        Some(400)
    );
    let df = rig.ask(
        client,
        &signed(ALLOCATE, "alice", &nonce, |m, t| {
            udp(m, t);
            m.add_attribute(&DontFragment::new()).expect("attr");
        }),
    );
    assert_eq!(df.code(), Some(420));
    let unknown = df
        .msg()
        .attribute::<UnknownAttributes>()
        .expect("unknown attributes");
    assert!(unknown.has_attribute(DontFragment::TYPE));
    let even = signed(ALLOCATE, "alice", &nonce, |m, t| {
        udp(m, t);
        m.add_attribute(&EvenPort::new(true)).expect("attr");
    });
    assert_eq!(rig.ask(client, &even).code(), Some(508));
    let v6 = signed(ALLOCATE, "alice", &nonce, |m, t| {
        udp(m, t);
        m.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
            .expect("attr");
    });
    assert_eq!(rig.ask(client, &v6).code(), Some(440));
    assert_eq!(
        rig.core.allocation_count(),
        0,
        "no refusal leaves state behind"
    );
}

#[test]
fn a_retransmitted_allocate_gets_its_success_again_and_a_new_one_gets_437() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let nonce = rig.challenge(client);
    let req = signed(ALLOCATE, "alice", &nonce, udp);
    let first = rig.ask(client, &req);
    let again = rig.ask(client, &req);
    assert_eq!((first.code(), again.code()), (None, None));
    assert_eq!(
        first
            .msg()
            .attribute::<XorRelayedAddress>()
            .map(|a| a.addr(first.msg().transaction_id())),
        again
            .msg()
            .attribute::<XorRelayedAddress>()
            .map(|a| a.addr(again.msg().transaction_id())),
    );
    assert!(
        !again
            .outs
            .iter()
            .any(|o| matches!(o, Output::BindRelay { .. })),
        "one relay only"
    );
    assert_eq!(
        rig.ask(client, &signed(ALLOCATE, "alice", &nonce, udp))
            .code(),
        Some(437)
    );
    let stranger = addr("198.51.100.7:40001");
    let nonce = rig.challenge(stranger);
    assert_eq!(
        rig.ask(stranger, &signed(REFRESH, "alice", &nonce, |_, _| {}))
            .code(),
        Some(437)
    );
}

#[test]
fn a_relay_that_cannot_be_bound_answers_508_and_frees_the_quota() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let nonce = rig.challenge(client);
    let (now, wall) = (rig.now(), wall0());
    rig.core.handle_client(
        now,
        wall,
        client.into(),
        &signed(ALLOCATE, "alice", &nonce, udp),
    );
    let Some(Output::BindRelay { allocation }) = rig.core.poll_output() else {
        panic!("expected a bind request");
    };
    rig.core.relay_bound(now, allocation, None);
    let Some(Output::ReleaseRelay { .. }) = rig.core.poll_output() else {
        panic!("expected a release");
    };
    let Some(Output::ToClient { data, .. }) = rig.core.poll_output() else {
        panic!("expected a response");
    };
    let resp = Response {
        data,
        outs: Vec::new(),
    };
    assert_eq!(resp.code(), Some(508));
    assert_eq!(rig.core.allocation_count(), 0);
}

#[test]
fn unknown_methods_get_400_and_garbage_is_dropped() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let odd = request(stun_types::message::Method::new(0x0123), None, |_, _| {});
    assert_eq!(rig.ask(client, &odd).code(), Some(400));
    for junk in [
        &[][..],
        &[0xff; 40],
        &[0, 1, 0, 4, 0x21, 0x12],
        &[0x40, 0, 0, 8, 1],
    ] {
        assert!(rig.client_sends(client, junk).is_empty(), "{junk:?}");
    }
}
