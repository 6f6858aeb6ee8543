//! What a media worker knows about one participant: its peers (two, or one in a single-PC
//! session), the tracks it publishes and the tracks it receives.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::SdpPendingOffer;
use str0m::channel::ChannelId;
use str0m::media::{Mid, Rid};
use str0m::Rtc;
use tokio::sync::mpsc;

use crate::api::{ExpectedTrack, JoinOptions, ParticipantStats, PeerEvent, PeerRole};
use crate::down_track::DownTrack;
use crate::ids::TrackId;
use crate::published_track::PublishedTrack;
use crate::rtp_out::DirectSend;

/// Index of a participant slot in its worker. Slots are reused only after every reference
/// to the old occupant has been removed.
pub(crate) type Slot = usize;

/// One str0m peer connection. The deadline it asked to be woken at lives in the worker's
/// timer heap.
pub(crate) struct Peer {
    pub rtc: Rtc,
    /// The send path for forwarded RTP that bypasses str0m (subscriber peers, once DTLS
    /// has exported keys); `None` sends through str0m.
    pub direct: Option<DirectSend>,
    /// Where str0m last sent this peer DTLS, RTP or RTCP: where our own packets go too.
    pub media_to: Option<crate::ice_tcp::Route>,
    /// Remote addresses seen for this peer, so the worker's demultiplexer can forget them.
    pub addrs: Vec<SocketAddr>,
    pub disconnected_reported: bool,
    /// Candidates trickled to this peer since its last ICE restart (`max_remote_candidates`).
    pub trickled: usize,
    /// The ICE ufrag of the client's last SDP: a new one is an ICE restart.
    pub remote_ufrag: Option<String>,
    /// Decrypts the transport-wide feedback this (subscriber) peer sends, which the worker
    /// reads before str0m (`feedback_in.rs`); set with `direct`.
    pub srtcp_in: Option<Box<crate::rtp_out::srtp::SrtcpReceiver>>,
    /// The header extension id of the dependency descriptor, when this (subscriber) peer
    /// negotiated it: AV1 packets forwarded to it carry their publisher's descriptor.
    pub descriptor_id: Option<u8>,
}

impl Peer {
    /// Starts the send path that bypasses str0m with the keys its handshake exported.
    pub fn start_direct_send(
        &mut self,
        keys: &switchboard_dtls::ExportedKeys,
    ) -> Result<(), crate::rtp_out::srtp::KeysError> {
        let srtp = crate::rtp_out::srtp::SrtpSender::new(keys)?;
        self.srtcp_in = Some(Box::new(crate::rtp_out::srtp::SrtcpReceiver::new(keys)?));
        self.direct = Some(DirectSend::new(srtp));
        Ok(())
    }

    /// Notes the ICE ufrag of an SDP the client sent. A new one restarts ICE, and with it
    /// the count of candidates the client may trickle (`max_remote_candidates`).
    pub fn remote_sdp(&mut self, sdp: &str) {
        let ufrag = sdp
            .lines()
            .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
            .map(str::to_owned);
        if ufrag.is_some() && ufrag != self.remote_ufrag {
            self.trickled = 0;
            self.remote_ufrag = ufrag;
        }
    }

    pub fn new(rtc: Rtc) -> Self {
        Self {
            rtc,
            direct: None,
            media_to: None,
            addrs: Vec::new(),
            disconnected_reported: false,
            trickled: 0,
            remote_ufrag: None,
            srtcp_in: None,
            descriptor_id: None,
        }
    }
}

/// Labels of the data channels LiveKit clients open on their publisher PC.
#[derive(Default)]
pub(crate) struct DataChannels {
    pub reliable: Option<ChannelId>,
    pub lossy: Option<ChannelId>,
}

pub(crate) struct Participant {
    pub key: String,
    pub identity: String,
    /// A viewer's chosen publisher (its key): its fixed m-lines carry that publisher's
    /// first audio and first video track.
    pub viewing: Option<String>,
    pub room: String,
    pub options: JoinOptions,
    pub events: mpsc::UnboundedSender<PeerEvent>,
    /// The PC the client publishes on; in a single-PC (v1) session, its only PC, which also
    /// carries what it receives.
    pub publisher: Peer,
    /// The PC the server offers received tracks on (v0); `None` in a single-PC session
    /// (`single_pc.rs`). Reached through [`Participant::sender_mut`] and friends.
    pub subscriber: Option<Peer>,
    /// A single-PC session's receive m-lines: the client's `recvonly` sections, in offer
    /// order (`single_pc.rs`).
    pub receive_lines: Vec<crate::single_pc::ReceiveLine>,
    /// A single-PC session asked the client for a new offer and has not had it yet.
    pub awaiting_offer: bool,
    pub expected: Vec<ExpectedTrack>,
    /// Subscriptions asked for announced tracks before their media arrived: (track sid,
    /// subscriber key), taken when the track binds. At most one per subscriber and track.
    pub early_subscribers: Vec<(String, String)>,
    /// Published tracks; `None` slots keep the ids subscribers hold stable.
    pub tracks: Vec<Option<PublishedTrack>>,
    /// Whom it lets subscribe to its tracks; `None`: everyone (`permissions.rs`).
    pub permission: Option<crate::permissions::SubscribePermission>,
    /// (SSRC, index into `tracks`), learned from the first packet of each stream. A few
    /// entries (tracks × simulcast layers): a scan beats hashing on every packet.
    pub ssrc_tracks: Vec<(u32, usize)>,
    /// Received tracks; `None` slots keep the ids publishers hold stable.
    pub down_tracks: Vec<Option<DownTrack>>,
    /// Which layer of each received track this subscriber gets.
    pub allocator: crate::allocator::Allocator,
    /// Its connection quality (`quality.rs`).
    pub quality: crate::quality::QualityMeter,
    /// The speaking level last sent to its room (0: not speaking).
    pub speaking: u8,
    /// Transport-wide congestion control on the subscriber PC, once its answer accepted it.
    /// Boxed: a kilobyte that participants without it (WHEP viewers, subscribers that
    /// refused the extension, publishers only) do not carry.
    pub congestion: Option<Box<crate::congestion::Congestion>>,
    /// A subscriber link without transport-wide feedback whose receiver reports REMB
    /// (`remb.rs`).
    pub remb: Option<Box<crate::remb::RembLink>>,
    pub pending_offer: Option<SdpPendingOffer>,
    /// The subscriber m-line kept inactive so its BUNDLE group is never empty
    /// (`subscriptions.rs`).
    pub inactive_placeholder: Option<Mid>,
    /// When the last subscriber offer went out (renegotiations are spaced by
    /// `RENEGOTIATION_INTERVAL`).
    pub last_offer: Option<Instant>,
    /// The next subscriber offer restarts ICE (a resumed client: its address may have
    /// changed, and its subscriber PC may have given up on the old pair).
    pub restart_subscriber_ice: bool,
    pub channels: DataChannels,
    /// Data-channel messages handed to signaling and not yet dropped by it.
    pub data_budget: crate::data_budget::DataBudget,
    pub stats: ParticipantStats,
    /// Whether [`PeerEvent::FirstMediaSent`] was emitted.
    pub first_media_sent: bool,
    /// Cumulative counters of each stream at its last stats report, to report differences:
    /// (role, mid, rid, NACKs, packets lost as reported by the receiver).
    pub stream_totals: Vec<(PeerRole, Mid, Option<Rid>, u64, u64)>,
    /// Whether its media is alive, and since when it is not (`liveness.rs`).
    pub liveness: crate::liveness::Liveness,
    /// m-lines in the last subscriber offer: its answer may carry as many, even beyond
    /// `max_media_sections` (a big room's subscriber has one per track it receives).
    pub offered_sections: usize,
}

/// The peer forwarded media leaves by: the subscriber PC, or a single-PC session's one PC.
/// A function of the two fields, so callers can hold other fields of the participant too.
pub(crate) fn sender_mut<'a>(
    subscriber: &'a mut Option<Peer>,
    publisher: &'a mut Peer,
) -> &'a mut Peer {
    match subscriber {
        Some(peer) => peer,
        None => publisher,
    }
}

impl Participant {
    /// Whether one PeerConnection carries both directions (LiveKit's signaling v1).
    pub fn single_pc(&self) -> bool {
        self.subscriber.is_none()
    }

    /// The role whose peer, timers and output `role` means: a single-PC session has only
    /// the publisher's.
    pub fn peer_role(&self, role: PeerRole) -> PeerRole {
        if self.single_pc() {
            PeerRole::Publisher
        } else {
            role
        }
    }

    /// The peer forwarded media leaves by (see [`sender_mut`]).
    pub fn sender(&self) -> &Peer {
        self.subscriber.as_ref().unwrap_or(&self.publisher)
    }

    pub fn sender_mut(&mut self) -> &mut Peer {
        sender_mut(&mut self.subscriber, &mut self.publisher)
    }

    pub fn peer_mut(&mut self, role: PeerRole) -> &mut Peer {
        match role {
            PeerRole::Publisher => &mut self.publisher,
            PeerRole::Subscriber => self.sender_mut(),
        }
    }

    pub fn emit(&self, event: PeerEvent) {
        // A closed receiver means the signaling session is already gone; the worker cleans
        // the participant up on its Leave command.
        let _ = self.events.send(event);
    }

    /// The codec requested for the track with client id `cid`, announced or bound.
    pub fn codec_for_cid(&self, cid: &str) -> Option<&str> {
        self.expected
            .iter()
            .find(|t| t.cid == cid)
            .and_then(|t| t.codec.as_deref())
            .or_else(|| {
                self.tracks
                    .iter()
                    .flatten()
                    .find(|t| t.cid == cid)
                    .and_then(|t| t.codec.as_deref())
            })
    }

    pub fn track_index_by_sid(&self, sid: &str) -> Option<usize> {
        self.tracks
            .iter()
            .position(|t| t.as_ref().is_some_and(|t| t.sid == sid))
    }

    pub fn track_index_by_mid(&self, mid: Mid) -> Option<usize> {
        self.tracks
            .iter()
            .position(|t| t.as_ref().is_some_and(|t| t.mid == mid))
    }

    /// Stores a down-track in a free place and returns its index.
    pub fn add_down_track(&mut self, track: DownTrack) -> usize {
        if let Some(index) = self.down_tracks.iter().position(Option::is_none) {
            self.down_tracks[index] = Some(track);
            index
        } else {
            self.down_tracks.push(Some(track));
            self.down_tracks.len() - 1
        }
    }

    /// Records a stream's cumulative (NACKs, lost) and returns the growth since its last
    /// report. Counters that went back (a restarted stream) count from zero again.
    pub fn stream_delta(
        &mut self,
        role: PeerRole,
        mid: Mid,
        rid: Option<Rid>,
        nacks: u64,
        lost: u64,
    ) -> (u64, u64) {
        let entry = match self
            .stream_totals
            .iter_mut()
            .find(|e| e.0 == role && e.1 == mid && e.2 == rid)
        {
            Some(entry) => entry,
            None => {
                self.stream_totals.push((role, mid, rid, 0, 0));
                let last = self.stream_totals.len() - 1;
                &mut self.stream_totals[last]
            }
        };
        let grow = |old: &mut u64, new: u64| {
            let delta = if new >= *old { new - *old } else { new };
            *old = new;
            delta
        };
        (grow(&mut entry.3, nacks), grow(&mut entry.4, lost))
    }

    pub fn is_subscribed_to(&self, track: TrackId) -> bool {
        self.down_tracks
            .iter()
            .flatten()
            .any(|o| o.source == Some(track))
    }
}
