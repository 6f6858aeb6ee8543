//! Relaying data-channel messages between participants, the way a LiveKit server does:
//! the server stamps the sender and picks the recipients.

use std::sync::Arc;
use std::time::Instant;

use livekit_protocol as proto;
use prost::Message as _;
use tracing::debug;

use crate::session::Session;

/// The default of `max_data_packet_bytes`. livekit-client caps payloads at 64,000 bytes;
/// the rest is room for the envelope.
pub const MAX_DATA_PACKET: usize = 65_536;

/// Checks, stamps and forwards one DataPacket sent by `session`'s participant. A packet
/// over `max_data_packet_bytes`, or beyond the participant's data rate, is dropped: a data
/// channel has no way to refuse one, and every packet relayed is multiplied by the room.
pub(crate) fn relay(session: &mut Session, reliable: bool, payload: &[u8]) {
    let max = session.sig.limits.max_data_packet_bytes;
    if payload.len() > max {
        debug!(participant = %session.sid, len = payload.len(), max, "data packet too large; dropped");
        metrics::counter!("switchboard_data_dropped_total", "why" => "size").increment(1);
        return;
    }
    let now = Instant::now();
    if !session.data_packets.take(1.0, now) {
        metrics::counter!("switchboard_data_dropped_total", "why" => "rate").increment(1);
        debug!(participant = %session.sid, "over data_packets_per_second; packet dropped");
        return;
    }
    if !session.data_bytes.take(payload.len() as f64, now) {
        metrics::counter!("switchboard_data_dropped_total", "why" => "rate").increment(1);
        debug!(participant = %session.sid, "over data_bytes_per_second; packet dropped");
        return;
    }
    if !session.claims.video.can_publish_data() {
        debug!(participant = %session.sid, "data packet dropped: no canPublishData");
        return;
    }
    let mut packet = match proto::DataPacket::decode(payload) {
        Ok(packet) => packet,
        Err(e) => {
            debug!(participant = %session.sid, "unreadable data packet dropped: {e}");
            return;
        }
    };
    let (destinations, destination_sids) = stamp(&mut packet, &session.identity, &session.sid);
    let everyone = session.sig.rooms.sids_for(&session.room, &[], &session.sid);
    let recipients: Vec<String> = if destinations.is_empty() && destination_sids.is_empty() {
        everyone
    } else {
        // Addressed: only the named ones — never everyone because a name did not match.
        let by_identity = if destinations.is_empty() {
            Vec::new()
        } else {
            session
                .sig
                .rooms
                .sids_for(&session.room, &destinations, &session.sid)
        };
        everyone
            .into_iter()
            .filter(|sid| by_identity.contains(sid) || destination_sids.contains(sid))
            .collect()
    };
    if recipients.is_empty() {
        return;
    }
    let bytes: Arc<[u8]> = packet.encode_to_vec().into();
    let _ = session.media.send_data(recipients, reliable, bytes);
}

/// Sets the sender on `packet` and takes its addressing out: the identities (sorted, no
/// duplicates) and the sids it is meant for, both empty for everyone.
pub(crate) fn stamp(
    packet: &mut proto::DataPacket,
    identity: &str,
    sid: &str,
) -> (Vec<String>, Vec<String>) {
    let mut destinations = std::mem::take(&mut packet.destination_identities);
    let mut destination_sids = Vec::new();
    // Clients never speak for someone else: identity and sid are the server's to set.
    packet.participant_identity = identity.to_owned();
    packet.participant_sid = sid.to_owned();
    // The fields inside UserPacket are deprecated upstream but still read by older clients,
    // and older clients address by sid.
    #[allow(deprecated)]
    if let Some(proto::data_packet::Value::User(user)) = packet.value.as_mut() {
        user.participant_identity = identity.to_owned();
        user.participant_sid = sid.to_owned();
        destinations.append(&mut user.destination_identities);
        destination_sids.append(&mut user.destination_sids);
    }
    destinations.sort();
    destinations.dedup();
    (destinations, destination_sids)
}
