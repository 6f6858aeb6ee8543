//! Building responses and indications.
//!
//! We never add SOFTWARE (and keep REALM and NONCE short) so that a response to an
//! unauthenticated request is not much larger than the request: a spoofed source gets
//! little amplification.

use std::net::SocketAddr;

use stun_types::attribute::{
    AttributeType, ErrorCode, Nonce, Realm, UnknownAttributes, XorMappedAddress,
};
use stun_types::message::{
    IntegrityAlgorithm, IntegrityKey, Message, MessageClass, MessageType, MessageWrite,
    MessageWriteExt, MessageWriteVec, Method, StunWriteError, TransactionId,
};
use stun_types::prelude::AttributeWrite;
use turn_types::attribute::{Data, XorPeerAddress};

/// A response being built, for a request's method and transaction.
pub(super) struct Reply {
    msg: MessageWriteVec,
}

impl Reply {
    pub(super) fn success(method: Method, txid: TransactionId) -> Self {
        let mtype = MessageType::from_class_method(MessageClass::Success, method);
        Self {
            msg: Message::builder(mtype, txid, MessageWriteVec::with_capacity(128)),
        }
    }

    pub(super) fn error(method: Method, txid: TransactionId, code: u16) -> Self {
        let mtype = MessageType::from_class_method(MessageClass::Error, method);
        let mut reply = Self {
            msg: Message::builder(mtype, txid, MessageWriteVec::with_capacity(128)),
        };
        // Codes come from our own constants, all within 300..=699, so `new` cannot fail; if
        // one ever did, the reply would go out without a code rather than panic.
        if let Ok(code) = ErrorCode::new(code, ErrorCode::default_reason_for_code(code)) {
            reply.add(&code);
        }
        reply
    }

    /// Adds an attribute. Writing to a `Vec` only fails for a second MESSAGE-INTEGRITY or
    /// FINGERPRINT, which we add only in `finish`; an error is kept and reported there.
    pub(super) fn add(&mut self, attr: &dyn AttributeWrite) -> &mut Self {
        if let Err(e) = self.msg.add_attribute(attr) {
            tracing::debug!(error = %e, "TURN reply attribute not written");
        }
        self
    }

    pub(super) fn mapped(&mut self, client: SocketAddr) -> &mut Self {
        let txid = self.msg.transaction_id();
        self.add(&XorMappedAddress::new(client, txid))
    }

    /// REALM and NONCE, which 401 and 438 carry so the client can (re)try.
    pub(super) fn challenge(&mut self, realm: &str, nonce: &str) -> &mut Self {
        match (Realm::new(realm), Nonce::new(nonce)) {
            (Ok(realm), Ok(nonce)) => self.add(&realm).add(&nonce),
            _ => {
                // The realm is checked at start and the nonce is ours: unreachable in
                // practice, and the client sees a 401 it cannot answer rather than a panic.
                tracing::warn!("TURN realm or nonce does not fit in a STUN attribute");
                self
            }
        }
    }

    pub(super) fn unknown(&mut self, attrs: &[AttributeType]) -> &mut Self {
        self.add(&UnknownAttributes::new(attrs))
    }

    /// The bytes to send, with MESSAGE-INTEGRITY when the request was authenticated.
    pub(super) fn finish(self, key: Option<&IntegrityKey>) -> Result<Vec<u8>, StunWriteError> {
        let mut msg = self.msg;
        if let Some(key) = key {
            msg.add_message_integrity_with_key(key, IntegrityAlgorithm::Sha1)?;
        }
        Ok(msg.finish())
    }
}

/// The largest payload a Data indication can carry: the STUN length field is 16 bits and
/// the header attributes take the rest.
pub(super) const MAX_DATA_INDICATION_PAYLOAD: usize = u16::MAX as usize - 64;

/// A Data indication from `peer` carrying `data` (at most [`MAX_DATA_INDICATION_PAYLOAD`]).
pub(super) fn data_indication(peer: SocketAddr, data: &[u8]) -> Result<Vec<u8>, StunWriteError> {
    if data.len() > MAX_DATA_INDICATION_PAYLOAD {
        return Err(StunWriteError::TooLarge {
            expected: MAX_DATA_INDICATION_PAYLOAD,
            actual: data.len(),
        });
    }
    let mut msg = Message::builder_indication(
        turn_types::message::DATA,
        MessageWriteVec::with_capacity(data.len() + 40),
    );
    let txid = msg.transaction_id();
    msg.add_attribute(&XorPeerAddress::new(peer, txid))?;
    // Checked above: `Data::new` panics beyond 65535 bytes.
    msg.add_attribute(&Data::new(data))?;
    Ok(msg.finish())
}

/// A ChannelData message. Over a stream it is padded to a multiple of 4 bytes, which the
/// receiver's framing counts on; over UDP no padding is needed (RFC 8656 §12.5).
pub(super) fn channel_data(channel: u16, data: &[u8], pad: bool) -> Option<Vec<u8>> {
    let len = u16::try_from(data.len()).ok()?;
    let padding = if pad { (4 - data.len() % 4) % 4 } else { 0 };
    let mut out = Vec::with_capacity(4 + data.len() + padding);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + padding, 0);
    Some(out)
}
