//! One allocation: its relay address, its owner's credentials, and its permissions and
//! channels, each table capped by [`crate::Limits`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun_types::message::{IntegrityKey, TransactionId};

use super::AllocationId;

/// After a channel binding expires, neither its number nor its peer may be bound to
/// anything else for this long (RFC 8656 §12), so late packets are not misdelivered.
const CHANNEL_QUARANTINE: Duration = Duration::from_secs(300);

pub(super) struct Allocation {
    pub(super) id: AllocationId,
    /// The USERNAME every later request on this allocation must present (RFC 8656 §5).
    pub(super) username: String,
    pub(super) identity: String,
    /// The long-term key of the Allocate, to sign the success sent once the relay is bound
    /// and any retransmission of it.
    pub(super) key: IntegrityKey,
    /// The Allocate's transaction: a retransmission of it gets the success again, not 437.
    pub(super) txid: TransactionId,
    /// What clients give their peers; `None` while the front is binding the relay socket.
    pub(super) relay: Option<SocketAddr>,
    pub(super) expires: Instant,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, Channel>,
    channel_of_peer: HashMap<SocketAddr, u16>,
}

#[derive(Clone, Copy)]
struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

/// Why a permission or channel cannot be installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InstallError {
    /// The channel number is bound to another peer, or the peer to another number (400).
    Conflict,
    /// The table is full (508).
    Full,
}

impl Allocation {
    pub(super) fn new(
        id: AllocationId,
        username: String,
        identity: String,
        key: IntegrityKey,
        txid: TransactionId,
        expires: Instant,
    ) -> Self {
        Self {
            id,
            username,
            identity,
            key,
            txid,
            relay: None,
            expires,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            channel_of_peer: HashMap::new(),
        }
    }

    pub(super) fn has_permission(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|&exp| now < exp)
    }

    /// Installs or refreshes permissions for all of `ips`, or for none of them when the
    /// new ones would not fit in `max`.
    pub(super) fn install_permissions(
        &mut self,
        ips: &[IpAddr],
        now: Instant,
        lifetime: Duration,
        max: usize,
    ) -> Result<(), InstallError> {
        self.expire(now);
        let mut new: Vec<IpAddr> = ips
            .iter()
            .copied()
            .filter(|ip| !self.permissions.contains_key(ip))
            .collect();
        new.sort_unstable();
        new.dedup();
        if self.permissions.len() + new.len() > max {
            return Err(InstallError::Full);
        }
        for ip in ips {
            self.permissions.insert(*ip, now + lifetime);
        }
        Ok(())
    }

    /// The peer of a channel usable now.
    pub(super) fn channel_peer(&self, channel: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&channel)
            .filter(|c| now < c.expires)
            .map(|c| c.peer)
    }

    /// The channel usable now for a peer.
    pub(super) fn channel_of(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let channel = *self.channel_of_peer.get(&peer)?;
        self.channel_peer(channel, now).map(|_| channel)
    }

    /// Binds or refreshes `channel` to `peer` (and its permission), RFC 8656 §11.2.
    pub(super) fn bind_channel(
        &mut self,
        channel: u16,
        peer: SocketAddr,
        now: Instant,
        lifetimes: (Duration, Duration),
        max_channels: usize,
        max_permissions: usize,
    ) -> Result<(), InstallError> {
        self.expire(now);
        let number_taken = self.channels.get(&channel).is_some_and(|c| c.peer != peer);
        let peer_taken = self
            .channel_of_peer
            .get(&peer)
            .is_some_and(|&c| c != channel);
        if number_taken || peer_taken {
            return Err(InstallError::Conflict);
        }
        let is_new = !self.channels.contains_key(&channel);
        if is_new && self.channels.len() >= max_channels {
            return Err(InstallError::Full);
        }
        let (channel_lifetime, permission_lifetime) = lifetimes;
        self.install_permissions(&[peer.ip()], now, permission_lifetime, max_permissions)?;
        self.channels.insert(
            channel,
            Channel {
                peer,
                expires: now + channel_lifetime,
            },
        );
        self.channel_of_peer.insert(peer, channel);
        Ok(())
    }

    /// Drops expired permissions, and channels whose quarantine is over.
    pub(super) fn expire(&mut self, now: Instant) {
        self.permissions.retain(|_, exp| now < *exp);
        let peers = &mut self.channel_of_peer;
        self.channels.retain(|_, c| {
            let keep = now < c.expires + CHANNEL_QUARANTINE;
            if !keep {
                peers.remove(&c.peer);
            }
            keep
        });
    }

    #[cfg(test)]
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.permissions.len(), self.channels.len())
    }
}
