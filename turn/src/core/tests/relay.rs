//! Permissions, channels, the peer policy, relaying both ways, and expiry.

use std::time::Duration;

use stun_types::message::{Message, MessageClass, MessageWriteExt};
use turn_types::attribute::{ChannelNumber, Data, XorPeerAddress};
use turn_types::message::{CHANNEL_BIND, CREATE_PERMISSION, DATA, SEND};

use super::*;
use crate::Cidr;

pub(super) const PEER: &str = "8.8.8.8:9000";

type Fill = Box<dyn FnOnce(&mut MessageWriteVec, TransactionId)>;

pub(super) fn permission(
    peers: &[SocketAddr],
) -> impl FnOnce(&mut MessageWriteVec, TransactionId) + '_ {
    move |m, t| {
        for p in peers {
            m.add_attribute(&XorPeerAddress::new(*p, t)).expect("attr");
        }
    }
}

pub(super) fn bind(
    channel: u16,
    peer: SocketAddr,
) -> impl FnOnce(&mut MessageWriteVec, TransactionId) {
    move |m, t| {
        m.add_attribute(&ChannelNumber::new(channel)).expect("attr");
        m.add_attribute(&XorPeerAddress::new(peer, t))
            .expect("attr");
    }
}

pub(super) fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut m = Message::builder_indication(SEND, MessageWriteVec::new());
    let t = m.transaction_id();
    m.add_attribute(&XorPeerAddress::new(peer, t))
        .expect("attr");
    m.add_attribute(&Data::new(data)).expect("attr");
    m.finish()
}

pub(super) fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut out = channel.to_be_bytes().to_vec();
    out.extend_from_slice(&u16::try_from(data.len()).expect("small").to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// What went to the peer, if anything.
pub(super) fn to_peer(outs: &[Output]) -> Option<(AllocationId, SocketAddr, Vec<u8>)> {
    outs.iter().find_map(|o| match o {
        Output::ToPeer {
            allocation,
            to,
            data,
        } => Some((*allocation, *to, data.clone())),
        _ => None,
    })
}

pub(super) fn to_client(outs: &[Output]) -> Option<Vec<u8>> {
    outs.iter().find_map(|o| match o {
        Output::ToClient { data, .. } => Some(data.clone()),
        _ => None,
    })
}

/// An allocation for alice with a permission for `PEER`.
pub(super) fn with_permission(rig: &mut Rig, client: impl Into<Client>) -> (AllocationId, String) {
    let client = client.into();
    let (relay, id, nonce) = rig.allocate(client, "alice");
    assert_eq!(
        relay.ip(),
        addr(RELAY).ip(),
        "the public address is what clients are told"
    );
    let resp = rig.ask(
        client,
        &signed(
            CREATE_PERMISSION,
            "alice",
            &nonce,
            permission(&[addr(PEER)]),
        ),
    );
    assert_eq!(resp.code(), None);
    assert!(resp.signed_by("alice"));
    (id, nonce)
}

#[test]
fn send_and_data_indications_relay_both_ways() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let (id, _) = with_permission(&mut rig, client);
    let outs = rig.client_sends(client, &send_indication(addr(PEER), b"hello"));
    assert_eq!(to_peer(&outs), Some((id, addr(PEER), b"hello".to_vec())));
    // A permission is per IP: another port of the same peer may answer.
    let other_port = addr("8.8.8.8:9001");
    let data = to_client(&rig.peer_sends(id, other_port, b"hi")).expect("a Data indication");
    let msg = Message::from_bytes(&data).expect("stun");
    assert!(msg.has_method(DATA) && msg.has_class(MessageClass::Indication));
    assert_eq!(
        msg.attribute::<XorPeerAddress>()
            .expect("peer")
            .addr(msg.transaction_id()),
        other_port
    );
    assert_eq!(msg.attribute::<Data>().expect("data").data(), b"hi");
}

#[test]
fn nothing_is_relayed_without_a_permission() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let (id, _) = with_permission(&mut rig, client);
    let stranger = addr("9.9.9.9:9000");
    assert!(rig
        .client_sends(client, &send_indication(stranger, b"x"))
        .is_empty());
    assert!(rig.peer_sends(id, stranger, b"x").is_empty());
    // A Send from an address without an allocation.
    assert!(rig
        .client_sends(addr("198.51.100.7:1"), &send_indication(addr(PEER), b"x"))
        .is_empty());
}

#[test]
fn channels_carry_channel_data_both_ways() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let (id, nonce) = with_permission(&mut rig, client);
    let resp = rig.ask(
        client,
        &signed(CHANNEL_BIND, "alice", &nonce, bind(0x4001, addr(PEER))),
    );
    assert_eq!(resp.code(), None);
    let outs = rig.client_sends(client, &channel_data(0x4001, b"media"));
    assert_eq!(to_peer(&outs), Some((id, addr(PEER), b"media".to_vec())));
    let back = to_client(&rig.peer_sends(id, addr(PEER), b"reply")).expect("relayed");
    assert_eq!(back, channel_data(0x4001, b"reply"));
    // Another port of the same IP has a permission but no channel: Data indication.
    let other = to_client(&rig.peer_sends(id, addr("8.8.8.8:9001"), b"x")).expect("relayed");
    assert!(Message::from_bytes(&other).is_ok());
    assert!(rig
        .client_sends(client, &channel_data(0x4002, b"unbound"))
        .is_empty());
}

#[test]
fn a_channel_number_and_a_peer_bind_to_each_other_only() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let (_, nonce) = with_permission(&mut rig, client);
    let mut ask = |channel, peer| {
        rig.ask(
            client,
            &signed(CHANNEL_BIND, "alice", &nonce, bind(channel, addr(peer))),
        )
        .code()
    };
    assert_eq!(ask(0x4001, PEER), None);
    assert_eq!(ask(0x4001, PEER), None, "a refresh");
    assert_eq!(ask(0x4001, "8.8.4.4:1"), Some(400));
    assert_eq!(ask(0x4002, PEER), Some(400));
    assert_eq!(ask(0x3fff, "8.8.4.4:1"), Some(400));
    assert_eq!(ask(0x5000, "8.8.4.4:1"), Some(400));
}

#[test]
fn denied_peers_get_403_and_allowed_ones_succeed() {
    let mut cfg = config();
    cfg.peers.allowed = vec!["10.1.2.3".parse::<Cidr>().expect("cidr")];
    let mut rig = Rig::new(cfg);
    let client = addr("198.51.100.7:40000");
    let (_, _, nonce) = rig.allocate(client, "alice");
    let mut ask = |method, fill: Fill| {
        rig.ask(client, &signed(method, "alice", &nonce, fill))
            .code()
    };
    for denied in [
        "127.0.0.1:1",
        "10.0.0.1:1",
        "169.254.169.254:80",
        "100.64.0.1:1",
        "0.0.0.0:1",
    ] {
        let peers = vec![addr(denied)];
        assert_eq!(
            ask(
                CREATE_PERMISSION,
                Box::new(move |m, t| permission(&peers)(m, t))
            ),
            Some(403),
            "{denied}"
        );
        assert_eq!(
            ask(CHANNEL_BIND, Box::new(bind(0x4000, addr(denied)))),
            Some(403),
            "{denied}"
        );
    }
    // One denied peer among allowed ones: none is installed.
    let mixed = vec![addr(PEER), addr("192.168.1.1:1")];
    assert_eq!(
        ask(
            CREATE_PERMISSION,
            Box::new(move |m, t| permission(&mixed)(m, t))
        ),
        Some(403)
    );
    let allowed = vec![addr(PEER), addr("10.1.2.3:5")];
    assert_eq!(
        ask(
            CREATE_PERMISSION,
            Box::new(move |m, t| permission(&allowed)(m, t))
        ),
        None
    );
    let v6 = vec![addr("[2a00:1450::1]:1")];
    assert_eq!(
        ask(
            CREATE_PERMISSION,
            Box::new(move |m, t| permission(&v6)(m, t))
        ),
        Some(443)
    );
    assert_eq!(ask(CREATE_PERMISSION, Box::new(|_, _| {})), Some(400));
}

#[test]
fn loopback_peers_are_allowed_when_switched_on_but_never_our_own_listener() {
    let mut cfg = config();
    cfg.peers = open_peers();
    cfg.listen = addr("127.0.0.1:3478");
    let mut rig = Rig::new(cfg);
    let client = addr("127.0.0.1:40000");
    let (_, id, nonce) = rig.allocate(client, "alice");
    let peers = [addr("127.0.0.1:9000")];
    assert_eq!(
        rig.ask(
            client,
            &signed(CREATE_PERMISSION, "alice", &nonce, permission(&peers))
        )
        .code(),
        None
    );
    assert!(to_peer(&rig.client_sends(client, &send_indication(peers[0], b"x"))).is_some());
    assert!(rig
        .client_sends(client, &send_indication(addr("127.0.0.1:3478"), b"loop"))
        .is_empty());
    assert!(rig
        .peer_sends(id, addr("127.0.0.1:3478"), b"loop")
        .is_empty());
}

#[test]
fn permissions_and_channels_are_capped_per_allocation() {
    let mut cfg = config();
    cfg.limits.max_permissions_per_allocation = 2;
    cfg.limits.max_channels_per_allocation = 1;
    let mut rig = Rig::new(cfg);
    let client = addr("198.51.100.7:40000");
    let (_, _, nonce) = rig.allocate(client, "alice");
    let two = [addr("8.8.8.1:1"), addr("8.8.8.2:1")];
    assert_eq!(
        rig.ask(
            client,
            &signed(CREATE_PERMISSION, "alice", &nonce, permission(&two))
        )
        .code(),
        None
    );
    let third = [addr("8.8.8.3:1")];
    assert_eq!(
        rig.ask(
            client,
            &signed(CREATE_PERMISSION, "alice", &nonce, permission(&third))
        )
        .code(),
        Some(508)
    );
    assert_eq!(
        rig.ask(
            client,
            &signed(CREATE_PERMISSION, "alice", &nonce, permission(&two))
        )
        .code(),
        None,
        "refreshing is no growth"
    );
    assert_eq!(
        rig.ask(
            client,
            &signed(CHANNEL_BIND, "alice", &nonce, bind(0x4000, two[0]))
        )
        .code(),
        None
    );
    assert_eq!(
        rig.ask(
            client,
            &signed(CHANNEL_BIND, "alice", &nonce, bind(0x4001, two[1]))
        )
        .code(),
        Some(508)
    );
    // Permissions that expired make room again.
    rig.advance(Duration::from_secs(301));
    assert_eq!(
        rig.ask(
            client,
            &signed(CREATE_PERMISSION, "alice", &nonce, permission(&third))
        )
        .code(),
        None
    );
}

#[test]
fn permissions_expire_after_300_seconds_unless_refreshed() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let (id, nonce) = with_permission(&mut rig, client);
    let longer = signed(REFRESH_METHOD, "alice", &nonce, |m, _| {
        m.add_attribute(&Lifetime::new(3600)).expect("attr");
    });
    assert_eq!(
        rig.ask(client, &longer).code(),
        None,
        "so only the permission can lapse"
    );
    rig.advance(Duration::from_secs(299));
    assert!(!rig.peer_sends(id, addr(PEER), b"x").is_empty());
    assert_eq!(
        rig.ask(
            client,
            &signed(
                CREATE_PERMISSION,
                "alice",
                &nonce,
                permission(&[addr(PEER)])
            )
        )
        .code(),
        None
    );
    rig.advance(Duration::from_secs(299));
    assert!(
        !rig.peer_sends(id, addr(PEER), b"x").is_empty(),
        "refreshed at 299 s"
    );
    rig.advance(Duration::from_secs(2));
    assert!(rig.peer_sends(id, addr(PEER), b"x").is_empty());
    assert!(rig
        .client_sends(client, &send_indication(addr(PEER), b"x"))
        .is_empty());
}

#[test]
fn a_channel_expires_after_600_seconds_and_its_number_stays_reserved_for_five_minutes() {
    let mut cfg = config();
    cfg.limits.nonce_lifetime = Duration::from_secs(3600);
    let mut rig = Rig::new(cfg);
    let client = addr("198.51.100.7:40000");
    let (id, nonce) = with_permission(&mut rig, client);
    let refresh_allocation = signed(REFRESH_METHOD, "alice", &nonce, |m, _| {
        m.add_attribute(&Lifetime::new(3600)).expect("attr");
    });
    assert_eq!(rig.ask(client, &refresh_allocation).code(), None);
    assert_eq!(
        rig.ask(
            client,
            &signed(CHANNEL_BIND, "alice", &nonce, bind(0x4001, addr(PEER)))
        )
        .code(),
        None
    );
    for _ in 0..2 {
        rig.advance(Duration::from_secs(290));
        let perm = signed(
            CREATE_PERMISSION,
            "alice",
            &nonce,
            permission(&[addr(PEER)]),
        );
        assert_eq!(rig.ask(client, &perm).code(), None);
    }
    rig.advance(Duration::from_secs(21)); // 601 s after the bind; the permission is fresh
    assert!(rig
        .client_sends(client, &channel_data(0x4001, b"x"))
        .is_empty());
    let data = to_client(&rig.peer_sends(id, addr(PEER), b"x")).expect("relayed");
    assert!(
        Message::from_bytes(&data).is_ok(),
        "a Data indication, not ChannelData"
    );
    let other = addr("8.8.8.8:9999");
    assert_eq!(
        rig.ask(
            client,
            &signed(CHANNEL_BIND, "alice", &nonce, bind(0x4001, other))
        )
        .code(),
        Some(400)
    );
    rig.advance(Duration::from_secs(300));
    assert_eq!(
        rig.ask(
            client,
            &signed(CHANNEL_BIND, "alice", &nonce, bind(0x4001, other))
        )
        .code(),
        None
    );
}

const REFRESH_METHOD: Method = turn_types::message::REFRESH;

#[test]
fn an_allocation_expires_with_its_lifetime_and_releases_its_relay() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let (id, _) = with_permission(&mut rig, client);
    assert!(rig.advance(Duration::from_secs(599)).is_empty());
    assert_eq!(rig.core.allocation_count(), 1);
    assert_eq!(
        rig.advance(Duration::from_secs(1)),
        vec![Output::ReleaseRelay { allocation: id }]
    );
    assert_eq!(rig.core.allocation_count(), 0);
    assert!(rig.peer_sends(id, addr(PEER), b"x").is_empty());
    assert!(rig
        .client_sends(client, &send_indication(addr(PEER), b"x"))
        .is_empty());
}

#[test]
fn tables_shrink_when_entries_expire() {
    let mut rig = Rig::new(config());
    let client = addr("198.51.100.7:40000");
    let (_, nonce) = with_permission(&mut rig, client);
    assert_eq!(
        rig.ask(
            client,
            &signed(CHANNEL_BIND, "alice", &nonce, bind(0x4001, addr(PEER)))
        )
        .code(),
        None
    );
    let counts = |rig: &Rig| {
        rig.core
            .allocations
            .get(&Client::udp(client))
            .map(|a| a.counts())
    };
    assert_eq!(counts(&rig), Some((1, 1)));
    rig.advance(Duration::from_secs(301));
    assert_eq!(
        counts(&rig),
        Some((0, 1)),
        "the channel outlives its permission"
    );
    let refresh = signed(REFRESH_METHOD, "alice", &nonce, |m, _| {
        m.add_attribute(&Lifetime::new(3600)).expect("attr");
    });
    assert_eq!(rig.ask(client, &refresh).code(), None);
    rig.advance(Duration::from_secs(600));
    assert_eq!(
        counts(&rig),
        Some((0, 0)),
        "channel gone after its quarantine"
    );
}
