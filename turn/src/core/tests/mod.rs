//! The core with time handed in: a scripted client, a fake relay socket, no I/O.

mod auth;
mod relay;
mod transport;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stun_types::attribute::{ErrorCode, Nonce, Realm, Username};
use stun_types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageWriteExt,
    MessageWriteVec, Method, TransactionId,
};
use stun_types::prelude::{AttributeWrite, MessageWrite};
use turn_types::attribute::{Lifetime, RequestedTransport, XorRelayedAddress};
use turn_types::message::ALLOCATE;

use super::{AllocationId, Client, Output, TurnCore};
use crate::{PeerPolicy, TurnAuth, TurnConfig};

/// Usernames and their (identity, password, valid until).
#[derive(Default)]
pub(super) struct Users(HashMap<String, (String, String, SystemTime)>);

impl TurnAuth for Users {
    fn password(&self, username: &str, now: SystemTime) -> Option<(String, String)> {
        let (identity, password, until) = self.0.get(username)?;
        (now < *until).then(|| (identity.clone(), password.clone()))
    }
}

pub(super) fn wall0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub(super) fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

pub(super) const RELAY: &str = "203.0.113.50:50000";

/// A core and its clock. `relay_ports` hands out relay addresses as the front would.
pub(super) struct Rig {
    pub(super) core: TurnCore,
    t0: Instant,
    pub(super) elapsed: Duration,
    next_relay_port: u16,
}

pub(super) fn config() -> TurnConfig {
    TurnConfig {
        listen: addr("192.0.2.1:3478"),
        relay_ip: "192.0.2.1".parse().expect("ip"),
        relay_public_ip: Some("203.0.113.50".parse().expect("ip")),
        ..TurnConfig::default()
    }
}

impl Rig {
    pub(super) fn new(config: TurnConfig) -> Self {
        let mut users = Users::default();
        let until = wall0() + Duration::from_secs(86_400);
        for (user, identity) in [("alice", "alice"), ("alice2", "alice"), ("bob", "bob")] {
            users
                .0
                .insert(user.into(), (identity.into(), format!("{user}-pw"), until));
        }
        users
            .0
            .insert("old".into(), ("old".into(), "old-pw".into(), wall0()));
        let t0 = Instant::now();
        Self {
            core: TurnCore::new(config, Arc::new(users), &[9; 32], t0),
            t0,
            elapsed: Duration::ZERO,
            next_relay_port: 50_000,
        }
    }

    pub(super) fn now(&self) -> Instant {
        self.t0 + self.elapsed
    }

    /// Moves the clock and sweeps, as the front does every second; returns the releases.
    pub(super) fn advance(&mut self, d: Duration) -> Vec<Output> {
        self.elapsed += d;
        let now = self.now();
        self.core.handle_timeout(now);
        self.drain()
    }

    /// Feeds a client datagram; returns what the core asked for, binding relays on the way.
    pub(super) fn client_sends(&mut self, from: impl Into<Client>, data: &[u8]) -> Vec<Output> {
        let (now, wall) = (self.now(), wall0() + self.elapsed);
        self.core.handle_client(now, wall, from.into(), data);
        self.drain()
    }

    pub(super) fn peer_sends(
        &mut self,
        alloc: AllocationId,
        from: SocketAddr,
        data: &[u8],
    ) -> Vec<Output> {
        let now = self.now();
        self.core.handle_peer(now, alloc, from, data);
        self.drain()
    }

    pub(super) fn drain(&mut self) -> Vec<Output> {
        let mut outs = Vec::new();
        while let Some(out) = self.core.poll_output() {
            if let Output::BindRelay { allocation } = out {
                let local = SocketAddr::new("192.0.2.1".parse().expect("ip"), self.next_relay_port);
                self.next_relay_port += 1;
                let now = self.now();
                self.core.relay_bound(now, allocation, Some(local));
            }
            outs.push(out);
        }
        outs
    }

    /// The one response to a request, parsed.
    pub(super) fn ask(&mut self, from: impl Into<Client>, req: &[u8]) -> Response {
        let from = from.into();
        let outs = self.client_sends(from, req);
        let data = outs
            .iter()
            .find_map(|o| match o {
                Output::ToClient { to, data } if *to == from => Some(data.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no response in {outs:?}"));
        Response { data, outs }
    }

    /// Allocates for `user` from `from` the way clients do (401 first); returns the relay
    /// address, the allocation's id and the nonce to use next.
    pub(super) fn allocate(
        &mut self,
        from: impl Into<Client>,
        user: &str,
    ) -> (SocketAddr, AllocationId, String) {
        let from = from.into();
        let nonce = self.challenge(from);
        let req = request(
            ALLOCATE,
            Some((user, &format!("{user}-pw"), &nonce)),
            |m, _| {
                m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                    .expect("attr");
            },
        );
        let resp = self.ask(from, &req);
        assert_eq!(resp.code(), None, "allocate for {user}: {:?}", resp.code());
        let id = resp
            .outs
            .iter()
            .find_map(|o| match o {
                Output::BindRelay { allocation } => Some(*allocation),
                _ => None,
            })
            .expect("a relay was bound");
        let msg = resp.msg();
        let relay = msg
            .attribute::<XorRelayedAddress>()
            .expect("relayed address")
            .addr(msg.transaction_id());
        (relay, id, nonce)
    }

    /// The nonce a 401 gives `from`.
    pub(super) fn challenge(&mut self, from: impl Into<Client>) -> String {
        let resp = self.ask(from, &request(ALLOCATE, None, |_, _| {}));
        assert_eq!(resp.code(), Some(401));
        resp.nonce().expect("a 401 carries a nonce")
    }
}

pub(super) struct Response {
    pub(super) data: Vec<u8>,
    pub(super) outs: Vec<Output>,
}

impl Response {
    pub(super) fn msg(&self) -> Message<'_> {
        Message::from_bytes(&self.data).expect("a STUN response")
    }

    /// The error code, `None` for a success.
    pub(super) fn code(&self) -> Option<u16> {
        let msg = self.msg();
        match msg.class() {
            MessageClass::Success => None,
            MessageClass::Error => Some(msg.attribute::<ErrorCode>().expect("error code").code()),
            other => panic!("not a response: {other:?}"),
        }
    }

    pub(super) fn nonce(&self) -> Option<String> {
        self.msg()
            .attribute::<Nonce>()
            .ok()
            .map(|n| n.nonce().to_owned())
    }

    pub(super) fn lifetime(&self) -> u32 {
        self.msg()
            .attribute::<Lifetime>()
            .expect("lifetime")
            .seconds()
    }

    pub(super) fn signed_by(&self, user: &str) -> bool {
        let key =
            LongTermKeyCredentials::new(user.into(), format!("{user}-pw"), "switchboard".into())
                .make_key(IntegrityAlgorithm::Sha1);
        self.msg().validate_integrity_with_key(&key).is_ok()
    }
}

/// A request; `cred` = (username, password, nonce) signs it. `fill` adds attributes.
pub(super) fn request(
    method: Method,
    cred: Option<(&str, &str, &str)>,
    fill: impl FnOnce(&mut MessageWriteVec, TransactionId),
) -> Vec<u8> {
    let mut msg = Message::builder_request(method, MessageWriteVec::new());
    let txid = msg.transaction_id();
    fill(&mut msg, txid);
    if let Some((user, password, nonce)) = cred {
        let attrs: [&dyn AttributeWrite; 3] = [
            &Username::new(user).expect("username"),
            &Realm::new("switchboard").expect("realm"),
            &Nonce::new(nonce).expect("nonce"),
        ];
        for a in attrs {
            msg.add_attribute(a).expect("attr");
        }
        let creds =
            LongTermKeyCredentials::new(user.into(), password.into(), "switchboard".into()).into();
        msg.add_message_integrity(&creds, IntegrityAlgorithm::Sha1)
            .expect("integrity");
    }
    msg.finish()
}

/// A request signed as `user` with its right password.
pub(super) fn signed(
    method: Method,
    user: &str,
    nonce: &str,
    fill: impl FnOnce(&mut MessageWriteVec, TransactionId),
) -> Vec<u8> {
    request(method, Some((user, &format!("{user}-pw"), nonce)), fill)
}

/// A policy allowing loopback and private peers, as tests of the front use.
pub(super) fn open_peers() -> PeerPolicy {
    PeerPolicy {
        allow_loopback: true,
        allow_private: true,
        ..PeerPolicy::default()
    }
}
