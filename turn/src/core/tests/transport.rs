//! The transport in the 5-tuple: a TLS connection is a client of its own, its ChannelData
//! is padded, and its allocation ends with the connection.

use turn_types::message::CHANNEL_BIND;

use super::relay::{bind, channel_data, to_client, to_peer, with_permission, PEER};
use super::*;
use crate::core::{ClientTransport, ConnectionId};

fn tls(id: u64) -> Client {
    Client::tls(ConnectionId(id), addr("198.51.100.7:40000"))
}

#[test]
fn a_tls_client_and_a_udp_client_at_the_same_address_are_two_clients() {
    let mut rig = Rig::new(config());
    let udp = Client::udp(tls(1).addr);
    let (udp_id, _) = with_permission(&mut rig, udp);
    let (tls_id, _) = with_permission(&mut rig, tls(1));
    assert_ne!(udp_id, tls_id);
    assert_eq!(rig.core.allocation_count(), 2);
    // Peer data for each goes back over its own transport.
    let outs = rig.peer_sends(tls_id, addr(PEER), b"x");
    assert!(matches!(
        outs.as_slice(),
        [Output::ToClient { to, .. }] if to.transport == ClientTransport::Tls(ConnectionId(1))
    ));
    let outs = rig.peer_sends(udp_id, addr(PEER), b"x");
    assert!(matches!(outs.as_slice(), [Output::ToClient { to, .. }] if *to == udp));
}

#[test]
fn closing_a_connection_ends_its_allocation_at_once_and_nothing_else() {
    let mut rig = Rig::new(config());
    let (udp_id, _) = with_permission(&mut rig, Client::udp(tls(1).addr));
    let (tls_id, _) = with_permission(&mut rig, tls(1));
    // Another connection from the same address (a reconnect) is not the one that closed.
    rig.core.connection_closed(tls(2));
    assert!(rig.drain().is_empty());
    rig.core.connection_closed(tls(1));
    assert_eq!(
        rig.drain(),
        vec![Output::ReleaseRelay { allocation: tls_id }]
    );
    assert_eq!(rig.core.allocation_count(), 1);
    assert!(rig.peer_sends(tls_id, addr(PEER), b"x").is_empty());
    assert!(to_client(&rig.peer_sends(udp_id, addr(PEER), b"x")).is_some());
    // The quota counted it: alice can allocate again over a new connection.
    rig.core.connection_closed(tls(1));
    assert!(rig.drain().is_empty(), "a second close is a no-op");
    with_permission(&mut rig, tls(3));
}

#[test]
fn channel_data_is_padded_to_four_bytes_over_tls_only() {
    let mut rig = Rig::new(config());
    for client in [tls(1), Client::udp(tls(1).addr)] {
        let (id, nonce) = with_permission(&mut rig, client);
        let resp = rig.ask(
            client,
            &signed(CHANNEL_BIND, "alice", &nonce, bind(0x4001, addr(PEER))),
        );
        assert_eq!(resp.code(), None);
        let back = to_client(&rig.peer_sends(id, addr(PEER), b"reply")).expect("relayed");
        let mut expected = channel_data(0x4001, b"reply");
        if client.transport != ClientTransport::Udp {
            expected.extend_from_slice(&[0, 0, 0]);
        }
        assert_eq!(back, expected, "{client}");
        // What the client sends arrives unpadded (the front strips stream padding).
        let outs = rig.client_sends(client, &channel_data(0x4001, b"media"));
        assert_eq!(to_peer(&outs), Some((id, addr(PEER), b"media".to_vec())));
    }
}
