//! **Not public API.** Entry points for the fuzz targets in `fuzz/` (feature `fuzz`); they
//! may change at any time.
//!
//! Each takes the fuzzer's bytes and drives the crate's own code with them: the forward
//! path's packet reading and rewriting without a socket, and a media worker answering SDP
//! in memory. A panic anywhere is a finding: a bad packet or offer must never panic a worker
//! (the worker's panic guard would drop the peer, but that is a last resort, not handling).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::crypto::dtls::SrtpProfile;
use str0m::format::Codec;
use str0m::rtp::rtcp::Rtcp;
use tokio::sync::{mpsc, oneshot};

use crate::api::{
    Command, DtlsPeers, ExpectedTrack, JoinOptions, PeerEvent, PeerRole, SfuError, TrackKind,
};
use crate::codec::starts_keyframe;
use crate::rewrite::Rewriter;
use crate::rtp_out::srtp::SrtpSender;
use crate::rtp_out::{nacked, DescriptorOut, DirectSend, RtpOut, Stamp, StreamSend, TransportSeq};
use crate::svc::dependency_descriptor;
use crate::svc::vp9 as vp9_svc;
use crate::vp8_ids::{descriptor, Vp8Ids};
use crate::worker::{DatagramSink, Worker};

/// Reads the fuzzer's bytes as a sequence of small fields; past the end everything is 0 or
/// empty, so every input means something.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        let Some((&first, rest)) = self.data.split_first() else {
            return 0;
        };
        self.data = rest;
        first
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) << 32 | u64::from(self.u32())
    }

    /// Up to `len` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// A field prefixed by its 16-bit length.
    pub fn field(&mut self) -> &'a [u8] {
        let len = usize::from(self.u16());
        self.bytes(len)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }
}

const CODECS: [Codec; 6] = [
    Codec::Vp8,
    Codec::Vp9,
    Codec::H264,
    Codec::Av1,
    Codec::Opus,
    Codec::H265,
];

/// Fixed keys for the send path's SRTP: what is fuzzed is the packet building around it.
fn srtp_sender(gcm: bool) -> Option<SrtpSender> {
    let (profile, len) = if gcm {
        (SrtpProfile::AEAD_AES_128_GCM, 2 * (16 + 12))
    } else {
        (SrtpProfile::AES128_CM_SHA1_80, 2 * (16 + 14))
    };
    let keys = switchboard_dtls::ExportedKeys {
        material: (0..len as u8).collect(),
        profile,
        active: false,
    };
    SrtpSender::new(&keys).ok()
}

/// The forward path of one subscriber's stream, packet by packet: keyframe detection on the
/// payload, the rewriter's renumbering across source switches, the SRTP packet built for
/// it, the retransmission history, and NACKs (raw RTCP through str0m's parser, or entries
/// given directly) answered from that history.
pub fn rtp_forward(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(srtp) = srtp_sender(input.bool()) else {
        return;
    };
    let direct = DirectSend::new(srtp);
    // The clock rates of the codecs a room forwards (str0m answers only those).
    let clock_rate = match input.u8() % 3 {
        0 => 48_000,
        1 => 90_000,
        _ => 8_000,
    };
    let codec = CODECS[usize::from(input.u8()) % CODECS.len()];
    let mut rewriter = Rewriter::default();
    let mut vp8_ids = Vp8Ids::default();
    let mut stream = StreamSend::default();
    let start = Instant::now();
    let mut now = start;
    // Per source: the last extended sequence number seen, so most packets are near it.
    let mut last_seq = [0u64; 4];
    let mut templates = None;
    while !input.is_empty() {
        match input.u8() % 6 {
            0 | 1 => {
                let source = usize::from(input.u8() % 4);
                let step = i64::from(input.u16() as i16);
                let seq = if input.u8() == 0xff {
                    input.u64() & 0xffff_ffff_ffff
                } else {
                    (last_seq[source] as i64).saturating_add(step).max(0) as u64
                };
                last_seq[source] = seq;
                let ts = input.u32();
                let marker = input.bool();
                let payload: Arc<[u8]> = input.field().into();
                let keyframe = starts_keyframe(codec, &payload);
                let ssrc = 0x1000 + source as u32;
                if let Some(primary) = crate::red::primary_block(&payload) {
                    assert!(primary <= payload.len(), "the primary block lies inside");
                }
                // The payload read as a dependency descriptor too: AV1 layers.
                let av1 = dependency_descriptor::layer_of(&payload, &mut templates, &payload);
                // An SVC layer above what this subscriber gets is left out.
                let svc = vp9_svc::layer_of(&payload).or(av1);
                if svc.is_some_and(|l| l.spatial > 0 && marker) {
                    rewriter.skip(ssrc, seq);
                    continue;
                }
                let Some((out_seq, out_ts)) = rewriter.rewrite(ssrc, seq, ts, now, clock_rate)
                else {
                    continue;
                };
                assert!(out_seq >= 1, "the rewriter numbers from 1");
                assert_eq!(rewriter.source(), Some(ssrc));
                let _ = rewriter.map_timestamp(ts);
                let rtp = RtpOut {
                    ssrc: 0xabcd,
                    pt: 96,
                    marker: marker || keyframe,
                    seq: out_seq,
                    timestamp: out_ts,
                    payload: &payload,
                    // A third of the packets with a transport-wide number, a third with a send
                    // time, and some padded.
                    stamp: match out_seq % 3 {
                        0 => Some(Stamp::Transport(TransportSeq {
                            id: 3,
                            seq: out_seq as u16,
                        })),
                        1 => Some(Stamp::AbsSendTime {
                            id: 2,
                            time: out_ts & 0x00ff_ffff,
                        }),
                        _ => None,
                    },
                    padding: if keyframe { 0 } else { (out_ts % 4) as u8 * 60 },
                    vp8: descriptor(&payload).and_then(|d| vp8_ids.rewrite(ssrc, &d)),
                    // Every fifth packet carries a descriptor (its payload), some under ids
                    // only the two-byte form can write.
                    descriptor: (out_seq % 5 == 0 && payload.len() >= 3).then(|| DescriptorOut {
                        id: 1 + (out_ts % 20) as u8,
                        bytes: &payload,
                    }),
                };
                let packet = direct.packet(Vec::new(), &rtp);
                assert_eq!(&packet[2..4], &(out_seq as u16).to_be_bytes());
                stream.sent(&rtp, &payload, now, true);
            }
            2 => {
                // A NACK as str0m hands it over, from raw RTCP; the same bytes as a compound
                // our own path would read as transport-wide feedback.
                let field = input.field();
                let _ = crate::feedback_in::fuzz_compound(field);
                if let Ok(Rtcp::Nack(nack)) = Rtcp::try_from(field) {
                    let seqs = nack.reports.iter().flat_map(|e| nacked(e.pid, e.blp));
                    answer(&direct, &mut stream, seqs, now);
                }
            }
            3 => {
                let (pid, blp) = (input.u16(), input.u16());
                answer(&direct, &mut stream, nacked(pid, blp), now);
            }
            4 => now += Duration::from_millis(u64::from(input.u16())),
            _ => {
                rewriter.resync();
                vp8_ids.restart();
            }
        }
    }
}

fn answer(
    direct: &DirectSend,
    stream: &mut StreamSend,
    seqs: impl Iterator<Item = u16>,
    now: Instant,
) {
    let StreamSend {
        history, allowance, ..
    } = stream;
    history.find(0xabcd, seqs, now, |rtp| {
        if allowance.take(rtp.payload.len()) {
            let packet = direct.packet(Vec::new(), rtp);
            assert_eq!(&packet[2..4], &(rtp.seq as u16).to_be_bytes());
        }
    });
}

struct NullSink;

impl DatagramSink for NullSink {
    fn send(&mut self, _data: Vec<u8>, _to: crate::ice_tcp::Route) {}
}

/// A media worker in memory with one room, `fuzz`, in which up to three participants join
/// when first used: `PA_pub` (publishes), `PA_sub` (subscribes) and `PA_view` (a WHEP
/// viewer). Nothing is connected: what can be fuzzed is what the signaling hands the worker
/// (SDP, candidates, announced tracks, ICE restarts, data).
pub struct SdpRig {
    worker: Worker,
    rsa: bool,
    joined: Vec<&'static str>,
    events: Vec<mpsc::UnboundedReceiver<PeerEvent>>,
}

pub const PUBLISHER: &str = "PA_pub";
pub const SUBSCRIBER: &str = "PA_sub";
pub const VIEWER: &str = "PA_view";

fn role(publisher: bool) -> PeerRole {
    if publisher {
        PeerRole::Publisher
    } else {
        PeerRole::Subscriber
    }
}

impl SdpRig {
    /// `rsa`: the participants' peers accept RSA DTLS certificates (as WHIP/WHEP peers do).
    pub fn new(rsa: bool) -> Self {
        crate::rtc_config::install_crypto();
        let server = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7000);
        SdpRig {
            worker: Worker::new(0, Box::new(NullSink), vec![server]),
            rsa,
            joined: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Joins `key` (one of the three) unless it already did. Joining builds str0m peers,
    /// most of what an input costs, so only the participants an input uses join.
    fn join(&mut self, key: &str) {
        let Some(&key) = [PUBLISHER, SUBSCRIBER, VIEWER].iter().find(|k| **k == key) else {
            return;
        };
        if self.joined.contains(&key) {
            return;
        }
        self.joined.push(key);
        let (tx, rx) = mpsc::unbounded_channel();
        let (reply, _answer) = oneshot::channel();
        self.worker.handle_command(
            Command::Join {
                participant: key.to_owned(),
                identity: key.to_owned(),
                room: "fuzz".to_owned(),
                options: JoinOptions {
                    auto_subscribe: true,
                    can_subscribe: true,
                    can_publish: key == PUBLISHER,
                    single_pc: false,
                    dtls: if self.rsa {
                        DtlsPeers::EcdsaOrRsa
                    } else {
                        DtlsPeers::Ecdsa
                    },
                },
                events: tx,
                reply,
            },
            std::time::Instant::now(),
        );
        self.events.push(rx);
    }

    /// Announces a track `PA_pub` is about to offer (AddTrackRequest, or a WHIP m-line).
    pub fn expect_track(&mut self, cid: &str, sid: &str, video: bool, codec: Option<&str>) {
        self.join(PUBLISHER);
        self.worker.handle_command(
            Command::ExpectTrack {
                participant: PUBLISHER.to_owned(),
                track: ExpectedTrack {
                    cid: cid.to_owned(),
                    codec_cids: Vec::new(),
                    sid: sid.to_owned(),
                    kind: if video {
                        TrackKind::Video
                    } else {
                        TrackKind::Audio
                    },
                    codec: codec.map(str::to_owned),
                    screen: false,
                    layers: Vec::new(),
                },
            },
            std::time::Instant::now(),
        );
    }

    /// `PA_pub`'s offer; the answer or the error the client would get.
    pub fn publisher_offer(&mut self, sdp: &str) -> Result<String, SfuError> {
        self.join(PUBLISHER);
        self.join(SUBSCRIBER);
        self.worker.publisher_offer(PUBLISHER, sdp)
    }

    /// `PA_sub`'s answer to whatever the worker offered it (or to nothing).
    pub fn subscriber_answer(&mut self, sdp: &str) -> Result<(), SfuError> {
        self.join(SUBSCRIBER);
        self.worker.subscriber_answer(SUBSCRIBER, sdp)
    }

    /// `PA_view`'s WHEP offer, watching `PA_pub`.
    pub fn viewer_offer(&mut self, sdp: &str) -> Result<String, SfuError> {
        self.join(PUBLISHER);
        self.join(VIEWER);
        self.worker.handle_command(
            Command::View {
                participant: VIEWER.to_owned(),
                publisher: Some(PUBLISHER.to_owned()),
            },
            std::time::Instant::now(),
        );
        self.worker.viewer_offer(VIEWER, sdp)
    }

    /// A trickled candidate line for `participant`'s publisher or subscriber peer.
    pub fn remote_candidate(&mut self, participant: &str, publisher: bool, candidate: &str) {
        self.join(participant);
        self.worker.handle_command(
            Command::RemoteCandidate {
                participant: participant.to_owned(),
                role: role(publisher),
                candidate: candidate.to_owned(),
            },
            std::time::Instant::now(),
        );
    }

    /// An ICE restart of `participant`'s peer with the client's new credentials; our new
    /// ones, or the refusal.
    pub fn ice_restart(
        &mut self,
        participant: &str,
        publisher: bool,
        ufrag: &str,
        pwd: &str,
    ) -> Option<Result<(String, String), SfuError>> {
        self.join(participant);
        let (reply, mut answer) = oneshot::channel();
        self.worker.handle_command(
            Command::IceRestart {
                participant: participant.to_owned(),
                role: role(publisher),
                ufrag: ufrag.to_owned(),
                pwd: pwd.to_owned(),
                reply,
            },
            std::time::Instant::now(),
        );
        answer.try_recv().ok()
    }

    /// Mutes or unmutes, subscribes or unsubscribes by track sid (as the signaling does).
    pub fn track_commands(&mut self, sid: &str, flag: bool) {
        self.join(PUBLISHER);
        self.join(SUBSCRIBER);
        self.worker.handle_command(
            Command::SetTrackMuted {
                participant: PUBLISHER.to_owned(),
                sid: sid.to_owned(),
                muted: flag,
            },
            std::time::Instant::now(),
        );
        self.worker.handle_command(
            Command::Subscribe {
                participant: SUBSCRIBER.to_owned(),
                track_sids: vec![sid.to_owned()],
                subscribe: flag,
            },
            std::time::Instant::now(),
        );
    }

    /// The publisher sets whom it lets subscribe (`None`: everyone); then the subscriber
    /// asks for every track, as a subscriber refused and later allowed would.
    pub fn subscribe_permission(&mut self, permission: Option<crate::SubscribePermission>) {
        self.join(PUBLISHER);
        self.join(SUBSCRIBER);
        self.worker.handle_command(
            Command::SetSubscribePermission {
                participant: PUBLISHER.to_owned(),
                permission,
            },
            std::time::Instant::now(),
        );
    }

    /// Relays a data message to participants by key.
    pub fn send_data(&mut self, to: Vec<String>, reliable: bool, payload: &[u8]) {
        self.worker.handle_command(
            Command::SendData {
                to,
                reliable,
                payload: payload.into(),
            },
            std::time::Instant::now(),
        );
    }

    /// A datagram from an address the worker may know (a peer's, once candidates named it).
    pub fn datagram(&mut self, data: &[u8], port: u16) {
        let source = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        self.worker
            .handle_datagram(data, source, std::time::Instant::now());
        self.worker.after_wake(std::time::Instant::now());
    }

    /// One loop turn of timers and renegotiations; returns the subscriber offers the worker
    /// made meanwhile.
    pub fn turn(&mut self) -> Vec<String> {
        self.worker.after_wake(std::time::Instant::now());
        let mut offers = Vec::new();
        for events in &mut self.events {
            while let Ok(event) = events.try_recv() {
                if let PeerEvent::SubscriberOffer { sdp, .. } = event {
                    offers.push(sdp);
                }
            }
        }
        offers
    }
}

thread_local! {
    /// Connecting the rig (ICE, DTLS, negotiation) takes far longer than an input, so one rig
    /// serves every input of a run: the stream just goes on.
    static FORWARD_RIG: std::cell::RefCell<Option<crate::bench::ForwardRig>> =
        const { std::cell::RefCell::new(None) };
}

/// The whole forward path of a media worker, connected in memory (`bench::ForwardRig`: one
/// VP8 publisher, two subscribers, real ICE, DTLS and SRTP): packets with the fuzzer's
/// payloads, markers, sequence gaps and timestamps go through str0m's SRTP and RTP parsing,
/// the worker's keyframe gate, layer selection, rewriting and send path, and the
/// subscribers' NACKs come back; raw datagrams of the fuzzer's from the peers' addresses or a
/// stranger's are mixed in.
pub fn forward(data: &[u8]) {
    FORWARD_RIG.with(|cell| {
        let mut rig = cell.borrow_mut();
        if rig.is_none() {
            // Invariant of the harness: without a rig there is nothing to fuzz.
            *rig = Some(crate::bench::ForwardRig::new(2, 0).expect("the rig connects"));
        }
        let Some(rig) = rig.as_mut() else {
            return;
        };
        let mut input = Input::new(data);
        while !input.is_empty() {
            let flags = input.u8();
            if flags & 0xe0 == 0xe0 {
                let source = input.u8();
                rig.fuzz_datagram(input.field(), source);
                continue;
            }
            // Up to a full-size payload (str0m's client does not packetize in RTP mode).
            let len = usize::from(input.u16()) % 1100 + 1;
            let payload = input.bytes(len);
            if payload.is_empty() {
                break;
            }
            let skip = u64::from(flags & 0x03);
            let ticks = if flags & 0x04 != 0 { 3000 } else { 0 };
            rig.fuzz_packet(skip, ticks, flags & 0x08 != 0, payload);
        }
    });
}
