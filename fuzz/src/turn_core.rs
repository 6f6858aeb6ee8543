//! The embedded TURN server's sans-IO core (`turn/src/core/`) driven by a script of
//! operations decoded from the input (target `turn_core`).
//!
//! Random bytes almost never carry a valid MESSAGE-INTEGRITY: fed raw, they would only reach
//! the 401. So the harness plays the client where the fuzzer cannot: it takes a NONCE from
//! the core's 401 (a new one after a 438) and signs the requests it builds from fuzzed fields
//! with a known user's long-term key. The fuzzer picks methods, attributes, peers, channels,
//! lifetimes, payloads and the order of events.
//!
//! Input: a configuration byte (bit 0: IPv6 relay; bit 1: listener on a public address),
//! then operations (`op % 8`), each followed by its fields:
//! 0 raw datagram (client, u16 length, bytes); 1 signed request (client, user, flags: 1 wrong
//! password, 2 bogus nonce, 4 resend the last Allocate's transaction; method % 4: Allocate,
//! Refresh, CreatePermission, ChannelBind; its fields); 2 Send indication (client, peer, flags:
//! 1 DONT-FRAGMENT, data); 3 ChannelData (client, channel, flags: 1 pad, 2 wrong length, data);
//! 4 peer datagram (allocation, peer, data); 5 relay bound (bit 7: any allocation, else the
//! oldest waiting; 0: no socket; port); 6 connection closed (client); 7 time passes (flags: 1
//! sweep; u16: bit 15 seconds, else ms). `data` is a u8 length and the bytes.
//!
//! After every operation the outputs are drained and checked (see `drain`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stun_types::attribute::{ErrorCode, Nonce, Realm, Username};
use stun_types::message::{
    IntegrityAlgorithm, IntegrityKey, LongTermKeyCredentials, Message, MessageClass, MessageType,
    MessageWrite, MessageWriteExt, MessageWriteVec, Method, TransactionId, BINDING,
};
use stun_types::prelude::AttributeWrite;
use stun_types::AddressFamily;
use switchboard_sfu::fuzzing::Input;
use switchboard_turn::core::{
    AllocationId, Client, ClientTransport, ConnectionId, Output, TurnCore,
};
use switchboard_turn::{Cidr, Limits, PeerPolicy, TurnAuth, TurnConfig};
use turn_types::attribute::{
    ChannelNumber, Data, DontFragment, EvenPort, Lifetime, RequestedAddressFamily,
    RequestedTransport, XorPeerAddress,
};
use turn_types::channel::ChannelData;
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};

const REALM: &str = "switchboard";
const LISTEN_PORT: u16 = 3478;
/// Small caps, so that an input of a few operations reaches every one of them.
const LIMITS: Limits = Limits {
    default_lifetime: Duration::from_secs(60),
    max_lifetime: Duration::from_secs(600),
    max_allocations: 3,
    max_allocations_per_identity: 2,
    max_permissions_per_allocation: 3,
    max_channels_per_allocation: 2,
    nonce_lifetime: Duration::from_secs(300),
};
/// (username, identity): two usernames of one identity share its quota; `old` expires
/// two minutes in, so credentials run out under a live allocation.
const USERS: [(&str, &str); 4] = [
    ("alice", "alice"),
    ("alice2", "alice"),
    ("bob", "bob"),
    ("old", "old"),
];
const METHODS: [Method; 4] = [ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND];

fn wall0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

struct Users;

impl TurnAuth for Users {
    fn password(&self, username: &str, now: SystemTime) -> Option<(String, String)> {
        let (_, identity) = USERS.iter().find(|(user, _)| *user == username)?;
        if username == "old" && now >= wall0() + Duration::from_secs(120) {
            return None;
        }
        Some((identity.to_string(), format!("{username}-pw")))
    }
}

/// Up to 255 bytes, length first.
fn short<'a>(input: &mut Input<'a>) -> &'a [u8] {
    let len = input.u8();
    input.bytes(len.into())
}

fn key(user: &str, password: &str) -> IntegrityKey {
    LongTermKeyCredentials::new(user.into(), password.into(), REALM.into())
        .make_key(IntegrityAlgorithm::Sha1)
}

/// Two UDP clients behind one address, a TLS connection from that address too (another
/// 5-tuple, the same nonce), and two TLS connections from one IPv6 address.
fn client(n: u8) -> Client {
    let v4 = SocketAddr::from(([198, 51, 100, 1], 5000));
    let v6 = SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2), 6000));
    match n % 5 {
        0 => Client::udp(v4),
        1 => Client::udp(SocketAddr::from(([198, 51, 100, 1], 5001))),
        2 => Client::tls(ConnectionId(1), v4),
        3 => Client::tls(ConnectionId(2), v6),
        _ => Client::tls(ConnectionId(3), v6),
    }
}

/// Peers the policy must tell apart (public, on our listener's port, allow-listed and plain
/// private, loopback, metadata, IPv4 inside IPv6), or any address.
const PEERS: [&str; 12] = [
    "1.1.1.1:9",
    "1.1.1.1:3478",
    "1.2.3.4:3478",
    "[::ffff:1.2.3.4]:3478",
    "10.0.0.7:5000",
    "10.0.0.8:5000",
    "127.0.0.1:5000",
    "[::ffff:127.0.0.1]:5000",
    "169.254.169.254:80",
    "[2606:4700::1111]:443",
    "[::1]:5000",
    "[64:ff9b::a00:8]:5000",
];

fn peer(input: &mut Input<'_>) -> SocketAddr {
    let ip: IpAddr = match input.u8() {
        pick if usize::from(pick) < PEERS.len() => {
            return PEERS[usize::from(pick)].parse().expect("a peer");
        }
        pick if pick & 1 == 0 => Ipv4Addr::from(input.u32()).into(),
        _ => Ipv6Addr::from(u128::from(input.u64()) << 64).into(),
    };
    SocketAddr::new(ip, input.u16())
}

/// Mostly the first few valid numbers, so that binds and ChannelData meet; else any.
fn channel(input: &mut Input<'_>) -> u16 {
    match input.u8() {
        b if b & 0x80 == 0 => 0x4000 | u16::from(b & 3),
        _ => input.u16(),
    }
}

/// How far the input got into the server, for the seeds' test and debug runs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reached {
    /// Allocate successes (the relay bound).
    pub allocated: usize,
    /// CreatePermission and ChannelBind successes.
    pub permitted: usize,
    /// Refresh successes, of which LIFETIME 0.
    pub refreshed: usize,
    pub deleted: usize,
    /// Datagrams relayed to a peer, and from a peer to a client.
    pub to_peer: usize,
    pub to_client: usize,
}

/// An allocation as the caller sees it, from `BindRelay` to `ReleaseRelay`.
struct Tracked {
    id: AllocationId,
    client: Client,
    identity: &'static str,
    live: bool,
    waiting: bool,
    bound: bool,
    /// Peer addresses a CreatePermission or ChannelBind of this allocation succeeded for.
    permitted: Vec<IpAddr>,
}

/// Who caused the outputs being drained.
#[derive(Clone, Copy)]
enum Origin {
    /// A client's datagram, signed by a user of this identity or not at all ("nobody").
    Request(Client, &'static str),
    Peer(Client),
    Other,
}

struct Harness {
    core: TurnCore,
    config: TurnConfig,
    t0: Instant,
    elapsed: Duration,
    nonces: HashMap<SocketAddr, String>,
    next_txid: u128,
    last_allocate: HashMap<Client, TransactionId>,
    allocations: Vec<Tracked>,
    /// The users' long-term keys, derived once per input (MD5 each).
    keys: Vec<IntegrityKey>,
    reached: Reached,
}

/// Runs one input; never panics unless the server breaks a rule.
pub fn turn_core(data: &[u8]) {
    run(data);
}

pub fn run(data: &[u8]) -> Reached {
    let mut input = Input::new(data);
    let flags = input.u8();
    let relay_v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let relay_ip = [IpAddr::from([192, 0, 2, 1]), relay_v6.into()][usize::from(flags & 1)];
    let listen_ip = [[0; 4], [1, 2, 3, 4]][usize::from(flags & 2 != 0)];
    let config = TurnConfig {
        listen: SocketAddr::from((listen_ip, LISTEN_PORT)),
        relay_ip,
        limits: LIMITS,
        peers: PeerPolicy {
            allowed: vec![Cidr::new([10, 0, 0, 7].into(), 32).expect("a host")],
            ..PeerPolicy::default()
        },
        ..TurnConfig::default()
    };
    let t0 = Instant::now();
    let mut h = Harness {
        core: TurnCore::new(config.clone(), Arc::new(Users), &[7; 32], t0),
        config,
        t0,
        elapsed: Duration::ZERO,
        nonces: HashMap::new(),
        next_txid: 1,
        last_allocate: HashMap::new(),
        allocations: Vec::new(),
        keys: USERS
            .iter()
            .map(|(u, _)| key(u, &format!("{u}-pw")))
            .collect(),
        reached: Reached::default(),
    };
    // Bounded work per input, whatever its length.
    for _ in 0..64 {
        if input.is_empty() {
            break;
        }
        h.step(&mut input);
    }
    h.reached
}

impl Harness {
    fn now(&self) -> Instant {
        self.t0 + self.elapsed
    }

    fn step(&mut self, input: &mut Input<'_>) {
        let now = self.now();
        match input.u8() % 8 {
            0 => {
                let from = client(input.u8());
                let data = input.field();
                self.client_sends(from, data, Origin::Request(from, "nobody"));
            }
            1 => self.signed_request(input),
            2 => {
                let from = client(input.u8());
                let (to, flags, data) = (peer(input), input.u8(), short(input));
                let txid = self.txid();
                let mut attrs: Vec<Box<dyn AttributeWrite>> = vec![Box::new(Data::new(data))];
                attrs.push(Box::new(XorPeerAddress::new(to, txid)));
                if flags & 1 == 1 {
                    attrs.push(Box::new(DontFragment::new()));
                }
                let msg = message(MessageClass::Indication, SEND, txid, &attrs);
                self.client_sends(from, &msg.finish(), Origin::Request(from, "nobody"));
            }
            3 => {
                let from = client(input.u8());
                let (number, flags, payload) = (channel(input), input.u8(), short(input));
                let len = payload.len() as u16 + u16::from(flags & 2);
                let mut data = [number.to_be_bytes(), len.to_be_bytes()].concat();
                data.extend_from_slice(payload);
                if flags & 1 == 1 {
                    data.resize(data.len().next_multiple_of(4), 0);
                }
                self.client_sends(from, &data, Origin::Request(from, "nobody"));
            }
            4 => {
                let pick = usize::from(input.u8());
                let (from, data) = (peer(input), short(input));
                let Some(alloc) = self.allocations.get(pick % self.allocations.len().max(1)) else {
                    return;
                };
                let (id, client) = (alloc.id, alloc.client);
                self.core.handle_peer(now, id, from, data);
                self.drain(Origin::Peer(client), 1);
            }
            5 => {
                let (pick, answer, port) = (input.u8(), input.u8(), input.u16());
                let alloc = if pick & 0x80 == 0 {
                    self.allocations.iter_mut().find(|a| a.waiting)
                } else {
                    let n = self.allocations.len().max(1);
                    self.allocations.get_mut(usize::from(pick & 0x7f) % n)
                };
                let Some(alloc) = alloc else { return };
                alloc.waiting = false;
                alloc.bound |= answer != 0 && alloc.live;
                let local = (answer != 0).then(|| SocketAddr::new(self.config.relay_ip, port));
                let id = alloc.id;
                self.core.relay_bound(now, id, local);
                self.drain(Origin::Other, 2);
            }
            6 => {
                self.core.connection_closed(client(input.u8()));
                self.drain(Origin::Other, 1);
            }
            _ => {
                let (flags, step) = (input.u8(), input.u16());
                self.elapsed += match step & 0x8000 {
                    0 => Duration::from_millis(step.into()),
                    _ => Duration::from_secs((step & 0x7fff).into()),
                };
                if flags & 1 == 1 {
                    self.core.handle_timeout(self.now());
                    self.drain(Origin::Other, LIMITS.max_allocations);
                }
            }
        }
    }

    fn txid(&mut self) -> TransactionId {
        self.next_txid += 1;
        TransactionId::from(self.next_txid)
    }

    fn client_sends(&mut self, from: Client, data: &[u8], origin: Origin) -> Vec<Vec<u8>> {
        let wall = wall0() + self.elapsed;
        self.core.handle_client(self.now(), wall, from, data);
        self.drain(origin, 2)
    }

    /// A request built from fuzzed fields and signed as a known user, with the nonce the
    /// core gave this address (asked for with an unsigned Allocate the first time).
    fn signed_request(&mut self, input: &mut Input<'_>) {
        let (from, user, flags) = (client(input.u8()), usize::from(input.u8()) % 4, input.u8());
        let method = METHODS[usize::from(input.u8() % 4)];
        // The transaction is fixed first: XOR-PEER-ADDRESS is written with it. Resending the
        // last Allocate's is what a client does when the success got lost.
        let txid = match self.last_allocate.get(&from) {
            Some(&txid) if method == ALLOCATE && flags & 4 != 0 => txid,
            _ => self.txid(),
        };
        let family = |v6: bool| {
            let family = [AddressFamily::IPV4, AddressFamily::IPV6][usize::from(v6)];
            Box::new(RequestedAddressFamily::new(family))
        };
        let mut attrs: Vec<Box<dyn AttributeWrite>> = Vec::new();
        let mut peers = Vec::new();
        match method {
            ALLOCATE => {
                self.last_allocate.insert(from, txid);
                let f = input.u8();
                if f & 3 != 0 {
                    let udp = f & 3 != 3;
                    attrs.push(Box::new(RequestedTransport::new(if udp { 17 } else { 6 })));
                }
                if f & 4 != 0 {
                    attrs.push(Box::new(Lifetime::new(input.u32())));
                }
                if f & 8 != 0 {
                    attrs.push(family(f & 16 != 0));
                }
                if f & 32 != 0 {
                    attrs.push(Box::new(EvenPort::new(true)));
                }
                if f & 64 != 0 {
                    attrs.push(Box::new(DontFragment::new()));
                }
            }
            REFRESH => {
                let f = input.u8();
                if f & 1 != 0 {
                    attrs.push(Box::new(Lifetime::new(input.u32())));
                }
                if f & 2 != 0 {
                    attrs.push(family(f & 4 != 0));
                }
            }
            CREATE_PERMISSION => peers.extend((0..input.u8() % 5).map(|_| peer(input))),
            _ => {
                attrs.push(Box::new(ChannelNumber::new(channel(input))));
                peers.push(peer(input));
            }
        }
        for &p in &peers {
            attrs.push(Box::new(XorPeerAddress::new(p, txid)));
        }
        let (name, identity) = USERS[user];
        let key = match flags & 1 {
            0 => self.keys[user].clone(),
            _ => key(name, "wrong"),
        };
        // 438 (the nonce went stale as time passed): a client retries with the new one.
        for _attempt in 0..2 {
            let nonce = match (flags & 2, self.nonce(from)) {
                (0, Some(nonce)) => nonce,
                _ => "0123456789abcdef".repeat(3),
            };
            let mut msg = message(MessageClass::Request, method, txid, &attrs);
            let _ = msg.add_attribute(&Username::new(name).expect("a short username"));
            let _ = msg.add_attribute(&Realm::new(REALM).expect("a short realm"));
            let _ = msg.add_attribute(&Nonce::new(&nonce).expect("a short nonce"));
            let _ = msg.add_message_integrity_with_key(&key, IntegrityAlgorithm::Sha1);
            let replies = self.client_sends(from, &msg.finish(), Origin::Request(from, identity));
            let Some(reply) = replies.iter().find_map(|r| Message::from_bytes(r).ok()) else {
                return;
            };
            if reply.class() == MessageClass::Success && !peers.is_empty() {
                let mut live = self.allocations.iter_mut().filter(|a| a.live);
                let alloc = live.find(|a| a.client == from).expect("an allocation");
                alloc.permitted.extend(peers.iter().map(|p| p.ip()));
            }
            let code = reply.attribute::<ErrorCode>().map(|e| e.code());
            if code.ok() != Some(ErrorCode::STALE_NONCE) {
                return;
            }
        }
    }

    /// The nonce for `from`'s address, from a 401 to an unsigned request if none is known.
    fn nonce(&mut self, from: Client) -> Option<String> {
        if !self.nonces.contains_key(&from.addr) {
            let msg = message(MessageClass::Request, ALLOCATE, self.txid(), &[]);
            self.client_sends(from, &msg.finish(), Origin::Request(from, "nobody"));
        }
        self.nonces.get(&from.addr).cloned()
    }

    /// Drains the outputs of one call, checks them, and returns the STUN replies and
    /// ChannelData the client got.
    fn drain(&mut self, origin: Origin, max_outputs: usize) -> Vec<Vec<u8>> {
        let mut replies = Vec::new();
        let mut outputs = 0;
        while let Some(out) = self.core.poll_output() {
            outputs += 1;
            match out {
                Output::BindRelay { allocation } => {
                    let Origin::Request(client, identity) = origin else {
                        panic!("a relay asked for outside a request");
                    };
                    assert_ne!(identity, "nobody", "an allocation without credentials");
                    let mut ids = self.allocations.iter().map(|a| a.id);
                    assert!(ids.all(|id| id != allocation), "id reused");
                    self.allocations.push(Tracked {
                        id: allocation,
                        client,
                        identity,
                        live: true,
                        waiting: true,
                        bound: false,
                        permitted: Vec::new(),
                    });
                }
                Output::ReleaseRelay { allocation } => {
                    let alloc = self.allocations.iter_mut().find(|a| a.id == allocation);
                    alloc.expect("a release of an id never handed out").live = false;
                }
                Output::ToPeer { allocation, to, .. } => {
                    let alloc = self.allocations.iter().find(|a| a.id == allocation);
                    let alloc = alloc.expect("relayed by an unknown allocation");
                    assert!(alloc.live && alloc.bound, "relayed by {allocation:?}");
                    assert!(alloc.permitted.contains(&to.ip()), "no permission for {to}");
                    assert!(self.config.peers.allows(to.ip()), "denied peer {to}");
                    let listen = self.config.listen;
                    let same_ip = listen.ip().to_canonical() == to.ip().to_canonical();
                    let to_listener = listen.ip().is_unspecified() || same_ip;
                    assert!(to.port() != listen.port() || !to_listener, "relayed to us");
                    self.reached.to_peer += 1;
                }
                Output::ToClient { to, data } => {
                    if let Origin::Peer(client) = origin {
                        assert_eq!(to, client, "a peer's datagram went to another client");
                        self.reached.to_client += 1;
                    }
                    self.check_reply(to, &data);
                    replies.push(data);
                }
            }
        }
        assert!(outputs <= max_outputs, "{outputs} outputs from one call");
        let live = || self.allocations.iter().filter(|a| a.live);
        assert_eq!(self.core.allocation_count(), live().count());
        assert!(live().count() <= LIMITS.max_allocations);
        for (_, identity) in USERS {
            let held = live().filter(|a| a.identity == identity).count();
            assert!(
                held <= LIMITS.max_allocations_per_identity,
                "{identity}: {held}"
            );
        }
        replies
    }

    /// Every reply parses; a success (but Binding's) is signed with the user's key; an
    /// error with a NONCE gives the harness the nonce to use next.
    fn check_reply(&mut self, to: Client, data: &[u8]) {
        if data.first().is_some_and(|b| b >> 6 == 1) {
            ChannelData::parse(data).expect("ChannelData we sent parses");
            let over_tls = matches!(to.transport, ClientTransport::Tls(_));
            assert!(!over_tls || data.len() % 4 == 0, "unpadded over TLS");
            return;
        }
        let msg = Message::from_bytes(data).expect("a reply we sent parses");
        match msg.class() {
            MessageClass::Success if !msg.has_method(BINDING) => {
                let mut keys = self.keys.iter();
                let signed = keys.any(|k| msg.validate_integrity_with_key(k).is_ok());
                assert!(signed, "an unsigned success to {to}");
                let r = &mut self.reached;
                match msg.method() {
                    ALLOCATE => r.allocated += 1,
                    REFRESH if msg.attribute::<Lifetime>().is_ok_and(|l| l.seconds() == 0) => {
                        r.deleted += 1
                    }
                    REFRESH => r.refreshed += 1,
                    _ => r.permitted += 1,
                }
            }
            MessageClass::Error => {
                if let Ok(nonce) = msg.attribute::<Nonce>() {
                    self.nonces.insert(to.addr, nonce.nonce().to_owned());
                }
            }
            _ => {}
        }
    }
}

/// A STUN message of ours: the transaction fixed (no random ids, so runs replay), `attrs`
/// in order, open for the credentials.
fn message(
    class: MessageClass,
    method: Method,
    txid: TransactionId,
    attrs: &[Box<dyn AttributeWrite + '_>],
) -> MessageWriteVec {
    let kind = MessageType::from_class_method(class, method);
    let mut msg = Message::builder(kind, txid, MessageWriteVec::new());
    for attr in attrs {
        let _ = msg.add_attribute(attr.as_ref());
    }
    msg
}
