//! Requests (Binding, Allocate, Refresh, CreatePermission, ChannelBind), their long-term
//! credential check, and Send indications.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use stun_types::attribute::{
    AttributeType, ErrorCode, MessageIntegrity, MessageIntegritySha256, Nonce, Realm, Username,
};
use stun_types::message::{
    IntegrityAlgorithm, IntegrityKey, LongTermKeyCredentials, Message, BINDING,
};
use stun_types::prelude::{Attribute, AttributeStaticType};
use stun_types::AddressFamily;
use turn_types::attribute::{
    AdditionalAddressFamily, ChannelNumber, Data, DontFragment, EvenPort, Lifetime,
    RequestedAddressFamily, RequestedTransport, ReservationToken, XorPeerAddress,
    XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH};

use super::allocation::{Allocation, InstallError};
use super::reply::Reply;
use super::{AllocationId, Client, Output, TurnCore};
use crate::nonce::NonceError;
use crate::{CHANNEL_LIFETIME, PERMISSION_LIFETIME};

/// Attributes every authenticated request may carry. FINGERPRINT and the other
/// comprehension-optional ones need not be listed: unknown ones are ignored.
const AUTH_ATTRS: [AttributeType; 5] = [
    Username::TYPE,
    Realm::TYPE,
    Nonce::TYPE,
    MessageIntegrity::TYPE,
    MessageIntegritySha256::TYPE,
];

/// At most this many unknown attributes are listed in a 420, and this many peer addresses
/// read from one CreatePermission: a client cannot make us do unbounded work per packet.
const MAX_LISTED: usize = 16;

/// A request that passed the long-term credential check.
struct Authed {
    username: String,
    identity: String,
    key: IntegrityKey,
}

impl TurnCore {
    pub(super) fn handle_request(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: Client,
        msg: &Message<'_>,
    ) {
        let method = msg.method();
        let extra: &[AttributeType] = match method {
            BINDING => {
                return self.answer_unauthenticated(from, msg, &[], |reply| {
                    reply.mapped(from.addr);
                })
            }
            ALLOCATE => &[
                RequestedTransport::TYPE,
                Lifetime::TYPE,
                RequestedAddressFamily::TYPE,
                AdditionalAddressFamily::TYPE,
                EvenPort::TYPE,
                ReservationToken::TYPE,
            ],
            REFRESH => &[Lifetime::TYPE, RequestedAddressFamily::TYPE],
            CREATE_PERMISSION => &[XorPeerAddress::TYPE],
            CHANNEL_BIND => &[ChannelNumber::TYPE, XorPeerAddress::TYPE],
            _ => {
                let reply = Reply::error(method, msg.transaction_id(), ErrorCode::BAD_REQUEST);
                return self.send(from, reply, None);
            }
        };
        let auth = match self.authenticate(now, wall, from, msg) {
            Ok(auth) => auth,
            Err(reply) => return self.send(from, reply, None),
        };
        let unknown = unknown_required(msg, extra);
        if !unknown.is_empty() {
            let mut reply =
                Reply::error(method, msg.transaction_id(), ErrorCode::UNKNOWN_ATTRIBUTE);
            reply.unknown(&unknown);
            return self.send(from, reply, Some(&auth.key));
        }
        let result = match method {
            ALLOCATE => self.allocate(now, from, msg, auth),
            REFRESH => self.refresh(now, from, msg, &auth),
            CREATE_PERMISSION => self.create_permission(now, from, msg, &auth),
            _ => self.channel_bind(now, from, msg, &auth),
        };
        if let Err((code, key)) = result {
            let reply = Reply::error(method, msg.transaction_id(), code);
            self.send(from, reply, key.as_ref());
        }
    }

    /// Binding needs no credentials (RFC 8656 §5 leaves it to STUN).
    fn answer_unauthenticated(
        &mut self,
        from: Client,
        msg: &Message<'_>,
        extra: &[AttributeType],
        fill: impl FnOnce(&mut Reply),
    ) {
        let unknown = unknown_required(msg, extra);
        if !unknown.is_empty() {
            let mut reply = Reply::error(
                msg.method(),
                msg.transaction_id(),
                ErrorCode::UNKNOWN_ATTRIBUTE,
            );
            reply.unknown(&unknown);
            return self.send(from, reply, None);
        }
        let mut reply = Reply::success(msg.method(), msg.transaction_id());
        fill(&mut reply);
        self.send(from, reply, None);
    }

    /// Long-term credentials, in the order of RFC 8489 §9.2.4. An error is the reply to
    /// send, unsigned (the client may not have, or may have the wrong, key).
    fn authenticate(
        &self,
        now: Instant,
        wall: SystemTime,
        from: Client,
        msg: &Message<'_>,
    ) -> Result<Authed, Reply> {
        let method = msg.method();
        let txid = msg.transaction_id();
        let challenge = |code| {
            let mut reply = Reply::error(method, txid, code);
            reply.challenge(&self.config.realm, &self.nonces.issue(from.addr, now));
            reply
        };
        // Only SHA-1 integrity is offered (no PASSWORD-ALGORITHMS in our 401), which every
        // browser uses; a request signed otherwise is treated as unsigned.
        if !msg.has_attribute(MessageIntegrity::TYPE) {
            return Err(challenge(ErrorCode::UNAUTHORIZED));
        }
        let (Ok(username), Ok(realm), Ok(nonce)) = (
            msg.attribute::<Username>(),
            msg.attribute::<Realm>(),
            msg.attribute::<Nonce>(),
        ) else {
            return Err(Reply::error(method, txid, ErrorCode::BAD_REQUEST));
        };
        match self.nonces.check(nonce.nonce(), from.addr, now) {
            Ok(()) => {}
            Err(NonceError::Expired | NonceError::Invalid) => {
                return Err(challenge(ErrorCode::STALE_NONCE));
            }
        }
        if realm.realm() != self.config.realm {
            return Err(challenge(ErrorCode::UNAUTHORIZED));
        }
        let Some((identity, password)) = self.auth.password(username.username(), wall) else {
            tracing::debug!(%from, "TURN credential refused");
            return Err(challenge(ErrorCode::UNAUTHORIZED));
        };
        let key = LongTermKeyCredentials::new(
            username.username().to_owned(),
            password,
            self.config.realm.clone(),
        )
        .make_key(IntegrityAlgorithm::Sha1);
        if msg.validate_integrity_with_key(&key).is_err() {
            tracing::debug!(%from, "TURN message integrity check failed");
            return Err(challenge(ErrorCode::UNAUTHORIZED));
        }
        Ok(Authed {
            username: username.username().to_owned(),
            identity,
            key,
        })
    }

    /// RFC 8656 §7.2. The success is sent by `answer_allocate` once the relay is bound.
    fn allocate(
        &mut self,
        now: Instant,
        from: Client,
        msg: &Message<'_>,
        auth: Authed,
    ) -> Result<(), (u16, Option<IntegrityKey>)> {
        let key = Some(auth.key.clone());
        if let Some(existing) = self.allocations.get(&from) {
            if existing.txid == msg.transaction_id() && existing.username == auth.username {
                // A retransmission: answer again (or wait, if the relay is still binding).
                if existing.relay.is_some() {
                    self.answer_allocate(now, from);
                }
                return Ok(());
            }
            return Err((ErrorCode::ALLOCATION_MISMATCH, key));
        }
        match msg.attribute::<RequestedTransport>() {
            Ok(t) if t.protocol() == RequestedTransport::UDP => {}
            Ok(_) => return Err((ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL, key)),
            Err(_) => return Err((ErrorCode::BAD_REQUEST, key)),
        }
        // DONT-FRAGMENT is not in our list of known attributes: it got 420 above, as RFC
        // 8656 §7.2 asks of a server that cannot set DF on its relay sockets.
        let even_port = msg.has_attribute(EvenPort::TYPE);
        let token = msg.has_attribute(ReservationToken::TYPE);
        if even_port && token {
            return Err((ErrorCode::BAD_REQUEST, key));
        }
        if even_port || token {
            // We keep no reservations and pick ports by range only: neither a reserved port
            // nor an even/odd pair can be granted (RFC 8656 §7.2: 508).
            return Err((ErrorCode::INSUFFICIENT_CAPACITY, key));
        }
        if let Ok(family) = msg.attribute::<RequestedAddressFamily>() {
            if msg.has_attribute(AdditionalAddressFamily::TYPE) {
                return Err((ErrorCode::BAD_REQUEST, key));
            }
            if family.family() != self.relay_family() {
                return Err((ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED, key));
            }
        }
        let limits = &self.config.limits;
        let held = self.per_identity.get(&auth.identity).copied().unwrap_or(0);
        if held >= limits.max_allocations_per_identity {
            tracing::debug!(identity = ?auth.identity, "TURN allocation quota reached");
            return Err((ErrorCode::ALLOCATION_QUOTA_REACHED, key));
        }
        if self.allocations.len() >= limits.max_allocations {
            tracing::warn!("TURN allocation cap reached");
            return Err((ErrorCode::INSUFFICIENT_CAPACITY, key));
        }
        let lifetime = self.lifetime(msg);
        let id = AllocationId(self.next_id);
        self.next_id += 1;
        *self.per_identity.entry(auth.identity.clone()).or_insert(0) += 1;
        let alloc = Allocation::new(
            id,
            auth.username,
            auth.identity,
            auth.key,
            msg.transaction_id(),
            now + lifetime,
        );
        self.allocations.insert(from, alloc);
        self.by_id.insert(id, from);
        self.out.push_back(Output::BindRelay { allocation: id });
        Ok(())
    }

    /// The success of an Allocate whose relay is bound.
    pub(super) fn answer_allocate(&mut self, now: Instant, client: Client) {
        let Some(alloc) = self.allocations.get(&client) else {
            return;
        };
        let Some(relay) = alloc.relay else {
            return;
        };
        let mut reply = Reply::success(ALLOCATE, alloc.txid);
        reply
            .add(&XorRelayedAddress::new(relay, alloc.txid))
            .add(&Lifetime::new(secs_left(alloc.expires, now)))
            .mapped(client.addr);
        let key = alloc.key.clone();
        self.send(client, reply, Some(&key));
    }

    /// RFC 8656 §7.3: LIFETIME 0 deletes, any other is clamped like Allocate's.
    fn refresh(
        &mut self,
        now: Instant,
        from: Client,
        msg: &Message<'_>,
        auth: &Authed,
    ) -> Result<(), (u16, Option<IntegrityKey>)> {
        let key = Some(auth.key.clone());
        let alloc = self.owned_allocation(from, auth)?;
        if let Ok(family) = msg.attribute::<RequestedAddressFamily>() {
            let ours = alloc.relay.map(|r| AddressFamily::from(&r.ip()));
            if ours.is_some_and(|f| f != family.family()) {
                return Err((ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH, key));
            }
        }
        let requested = msg.attribute::<Lifetime>().ok().map(|l| l.seconds());
        let granted = if requested == Some(0) {
            tracing::debug!(%from, "TURN allocation deleted by its client");
            self.remove(from);
            0
        } else {
            let lifetime = self.lifetime(msg);
            if let Some(alloc) = self.allocations.get_mut(&from) {
                alloc.expires = now + lifetime;
            }
            secs(lifetime)
        };
        let mut reply = Reply::success(REFRESH, msg.transaction_id());
        reply.add(&Lifetime::new(granted));
        self.send(from, reply, key.as_ref());
        Ok(())
    }

    /// RFC 8656 §9: all the peers get a permission, or none does.
    fn create_permission(
        &mut self,
        now: Instant,
        from: Client,
        msg: &Message<'_>,
        auth: &Authed,
    ) -> Result<(), (u16, Option<IntegrityKey>)> {
        let key = Some(auth.key.clone());
        let relay = self.owned_relay(from, auth, now)?;
        let mut peers: Vec<IpAddr> = Vec::new();
        for n in 0..MAX_LISTED {
            match msg.nth_attribute::<XorPeerAddress>(n) {
                Ok(peer) => peers.push(peer.addr(msg.transaction_id()).ip()),
                Err(stun_types::message::StunParseError::MissingAttribute(_)) => break,
                Err(_) => return Err((ErrorCode::BAD_REQUEST, key)),
            }
        }
        if peers.is_empty() {
            return Err((ErrorCode::BAD_REQUEST, key));
        }
        for ip in &peers {
            self.check_peer(relay, *ip)
                .map_err(|code| (code, key.clone()))?;
        }
        let max = self.config.limits.max_permissions_per_allocation;
        let alloc = self
            .allocations
            .get_mut(&from)
            .ok_or((ErrorCode::ALLOCATION_MISMATCH, key.clone()))?;
        alloc
            .install_permissions(&peers, now, PERMISSION_LIFETIME, max)
            .map_err(|_| (ErrorCode::INSUFFICIENT_CAPACITY, key.clone()))?;
        let reply = Reply::success(CREATE_PERMISSION, msg.transaction_id());
        self.send(from, reply, key.as_ref());
        Ok(())
    }

    /// RFC 8656 §11.2.
    fn channel_bind(
        &mut self,
        now: Instant,
        from: Client,
        msg: &Message<'_>,
        auth: &Authed,
    ) -> Result<(), (u16, Option<IntegrityKey>)> {
        let key = Some(auth.key.clone());
        let relay = self.owned_relay(from, auth, now)?;
        let bad = || (ErrorCode::BAD_REQUEST, key.clone());
        let channel = msg
            .attribute::<ChannelNumber>()
            .map_err(|_| bad())?
            .channel();
        if !(0x4000..=0x4fff).contains(&channel) {
            return Err(bad());
        }
        let peer = msg
            .attribute::<XorPeerAddress>()
            .map_err(|_| bad())?
            .addr(msg.transaction_id());
        self.check_peer(relay, peer.ip())
            .map_err(|code| (code, key.clone()))?;
        let limits = &self.config.limits;
        let (max_channels, max_permissions) = (
            limits.max_channels_per_allocation,
            limits.max_permissions_per_allocation,
        );
        let alloc = self
            .allocations
            .get_mut(&from)
            .ok_or((ErrorCode::ALLOCATION_MISMATCH, key.clone()))?;
        let lifetimes = (CHANNEL_LIFETIME, PERMISSION_LIFETIME);
        match alloc.bind_channel(channel, peer, now, lifetimes, max_channels, max_permissions) {
            Ok(()) => {}
            Err(InstallError::Conflict) => return Err(bad()),
            Err(InstallError::Full) => return Err((ErrorCode::INSUFFICIENT_CAPACITY, key)),
        }
        let reply = Reply::success(CHANNEL_BIND, msg.transaction_id());
        self.send(from, reply, key.as_ref());
        Ok(())
    }

    /// A Send indication: relay its DATA to its peer. Indications are not authenticated;
    /// the client's address and a permission are what let it through.
    pub(super) fn handle_send(&mut self, now: Instant, from: Client, msg: &Message<'_>) {
        let Some(alloc) = self.allocations.get(&from) else {
            return;
        };
        // DONT-FRAGMENT cannot be honoured: RFC 8656 §10.2 has such a Send discarded.
        if alloc.expires <= now || alloc.relay.is_none() || msg.has_attribute(DontFragment::TYPE) {
            return;
        }
        let (Ok(peer), Ok(data)) = (msg.attribute::<XorPeerAddress>(), msg.attribute::<Data>())
        else {
            return;
        };
        let peer = peer.addr(msg.transaction_id());
        if !alloc.has_permission(peer.ip(), now) || !self.peer_allowed(peer) {
            tracing::trace!(%from, %peer, "TURN Send without permission dropped");
            return;
        }
        let allocation = alloc.id;
        self.out.push_back(Output::ToPeer {
            allocation,
            to: peer,
            data: data.data().to_vec(),
        });
    }

    /// The caller's allocation, if it is theirs: 437 without one, 441 under another
    /// USERNAME (RFC 8656 §5).
    fn owned_allocation(
        &self,
        from: Client,
        auth: &Authed,
    ) -> Result<&Allocation, (u16, Option<IntegrityKey>)> {
        let key = Some(auth.key.clone());
        let alloc = self
            .allocations
            .get(&from)
            .ok_or((ErrorCode::ALLOCATION_MISMATCH, key.clone()))?;
        if alloc.username != auth.username {
            return Err((ErrorCode::WRONG_CREDENTIALS, key));
        }
        Ok(alloc)
    }

    /// The relay address of the caller's live allocation.
    fn owned_relay(
        &self,
        from: Client,
        auth: &Authed,
        now: Instant,
    ) -> Result<SocketAddr, (u16, Option<IntegrityKey>)> {
        let alloc = self.owned_allocation(from, auth)?;
        match alloc.relay {
            Some(relay) if now < alloc.expires => Ok(relay),
            _ => Err((ErrorCode::ALLOCATION_MISMATCH, Some(auth.key.clone()))),
        }
    }

    /// A peer must be of the relay's family (443) and allowed by the policy (403).
    fn check_peer(&self, relay: SocketAddr, peer: IpAddr) -> Result<(), u16> {
        if relay.is_ipv4() != peer.is_ipv4() {
            return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        }
        if !self.config.peers.allows(peer) {
            return Err(ErrorCode::FORBIDDEN);
        }
        Ok(())
    }

    fn relay_family(&self) -> AddressFamily {
        AddressFamily::from(&self.config.relay_public_ip.unwrap_or(self.config.relay_ip))
    }

    /// RFC 8656 §7.2: the requested lifetime, at least the default, at most the maximum.
    fn lifetime(&self, msg: &Message<'_>) -> Duration {
        let limits = &self.config.limits;
        match msg.attribute::<Lifetime>() {
            // max then min, not clamp: clamp panics on a misconfigured default > max.
            Ok(l) => Duration::from_secs(l.seconds().into())
                .max(limits.default_lifetime)
                .min(limits.max_lifetime),
            Err(_) => limits.default_lifetime,
        }
    }
}

/// Comprehension-required attributes of `msg` we do not handle (at most `MAX_LISTED`).
fn unknown_required(msg: &Message<'_>, extra: &[AttributeType]) -> Vec<AttributeType> {
    msg.iter_attributes()
        .map(|(_, a)| a.get_type())
        .filter(|t| t.comprehension_required() && !AUTH_ATTRS.contains(t) && !extra.contains(t))
        .take(MAX_LISTED)
        .collect()
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

fn secs_left(expires: Instant, now: Instant) -> u32 {
    secs(expires.saturating_duration_since(now))
}
