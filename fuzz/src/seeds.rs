//! The valid inputs the corpus starts from (`tests/corpus.rs` writes them into `corpus/`):
//! real SignalRequests, tokens, SDP offers from a real WebRTC stack (str0m, as a client),
//! RTP payloads and RTCP as encoders and receivers send them, TURN client scripts.

use std::net::SocketAddr;
use std::time::Instant;

use livekit_protocol as proto;
use prost::Message as _;
use proto::signal_request::Message as Req;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};
use switchboard_signaling::token::{self, Claims, VideoGrant};

/// (target, file name, bytes).
pub type Seed = (&'static str, &'static str, Vec<u8>);

pub fn all() -> Vec<Seed> {
    let mut seeds = Vec::new();
    seeds.extend(signal_request());
    seeds.extend(tokens());
    seeds.extend(whip());
    seeds.extend(rtp_forward());
    seeds.extend(forward());
    seeds.extend(depacketize());
    seeds.extend(containers());
    seeds.extend(turn_core());
    seeds
}

/// A client's offer as a browser-like stack writes it: `audio`/`video` m-lines in
/// `direction`, with a host candidate.
fn offer(audio: bool, video: bool, direction: Direction) -> String {
    let mut rtc = small_config().build(Instant::now());
    let addr: SocketAddr = "127.0.0.1:50000".parse().expect("a literal address");
    if let Ok(candidate) = Candidate::host(addr, "udp") {
        rtc.add_local_candidate(candidate);
    }
    let mut api = rtc.sdp_api();
    if audio {
        api.add_media(
            MediaKind::Audio,
            direction,
            Some("stream".into()),
            Some("mic".into()),
            None,
        );
    }
    if video {
        api.add_media(
            MediaKind::Video,
            direction,
            Some("stream".into()),
            Some("cam".into()),
            None,
        );
    }
    api.apply()
        .map(|(offer, _)| offer.to_sdp_string())
        .unwrap_or_default()
}

/// Opus and VP8 only: an offer of a few hundred bytes instead of a few KiB parses several
/// times faster, and the mutations of one codec's lines reach the others' code anyway.
fn small_config() -> str0m::RtcConfig {
    Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
}

/// An answer to an offer of ours, as a subscriber's stack writes it.
fn answer() -> String {
    let offer_text = offer(true, true, Direction::SendOnly);
    let mut rtc = small_config().build(Instant::now());
    let Ok(offer) = str0m::change::SdpOffer::from_sdp_string(&offer_text) else {
        return String::new();
    };
    rtc.sdp_api()
        .accept_offer(offer)
        .map(|a| a.to_sdp_string())
        .unwrap_or_default()
}

/// The fuzzing modules' field: a 16-bit length, then the bytes.
fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&bytes[..len]);
}

fn frames(requests: &[Req]) -> Vec<u8> {
    let mut out = Vec::new();
    for message in requests {
        out.push(0); // a SignalRequest, not a data packet
        let request = proto::SignalRequest {
            message: Some(message.clone()),
        };
        field(&mut out, &request.encode_to_vec());
    }
    out
}

const CANDIDATE: &str = r#"{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}"#;

fn signal_request() -> Vec<Seed> {
    let add_track = |cid: &str, video: bool, codec: &str| {
        Req::AddTrack(proto::AddTrackRequest {
            cid: cid.into(),
            name: cid.into(),
            r#type: if video {
                proto::TrackType::Video
            } else {
                proto::TrackType::Audio
            } as i32,
            source: if video {
                proto::TrackSource::Camera
            } else {
                proto::TrackSource::Microphone
            } as i32,
            width: 1280,
            height: 720,
            simulcast_codecs: vec![proto::SimulcastCodec {
                codec: codec.into(),
                cid: cid.into(),
                ..Default::default()
            }],
            ..Default::default()
        })
    };
    let publish = frames(&[
        add_track("mic", false, "opus"),
        add_track("cam", true, "vp8"),
        Req::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            sdp: offer(true, true, Direction::SendOnly),
            id: 1,
            ..Default::default()
        }),
        Req::Trickle(proto::TrickleRequest {
            candidate_init: CANDIDATE.into(),
            target: proto::SignalTarget::Publisher as i32,
            r#final: false,
        }),
    ]);
    let subscribe = frames(&[
        Req::Answer(proto::SessionDescription {
            r#type: "answer".into(),
            sdp: answer(),
            id: 1,
            ..Default::default()
        }),
        Req::Trickle(proto::TrickleRequest {
            candidate_init: r#"{"candidate":""}"#.into(),
            target: proto::SignalTarget::Subscriber as i32,
            r#final: true,
        }),
        Req::Subscription(proto::UpdateSubscription {
            track_sids: vec!["TR_abc".into()],
            subscribe: false,
            ..Default::default()
        }),
    ]);
    let mut attributes = std::collections::HashMap::new();
    attributes.insert("role".to_owned(), "host".to_owned());
    let control = frames(&[
        Req::Mute(proto::MuteTrackRequest {
            sid: "TR_fuzz".into(),
            muted: true,
        }),
        Req::Ping(1_700_000_000_000),
        Req::PingReq(proto::Ping {
            timestamp: 1_700_000_000_000,
            rtt: 20,
        }),
        Req::UpdateMetadata(proto::UpdateParticipantMetadata {
            metadata: r#"{"hand":"raised"}"#.into(),
            name: "Ada".into(),
            attributes,
            request_id: 7,
        }),
        Req::Leave(proto::LeaveRequest::default()),
    ]);
    // A chat message addressed to one identity, as livekit-client sends it on its channel.
    #[allow(deprecated)]
    let packet = proto::DataPacket {
        kind: proto::data_packet::Kind::Reliable as i32,
        destination_identities: vec!["bob".into()],
        value: Some(proto::data_packet::Value::User(proto::UserPacket {
            payload: b"hello".to_vec(),
            topic: Some("chat".into()),
            destination_sids: vec!["PA_sub".into()],
            ..Default::default()
        })),
        ..Default::default()
    };
    let mut data = vec![1]; // a data packet
    field(&mut data, &packet.encode_to_vec());
    vec![
        ("signal_request", "publish", publish),
        ("signal_request", "subscribe", subscribe),
        ("signal_request", "control", control),
        ("signal_request", "data", data),
    ]
}

fn tokens() -> Vec<Seed> {
    // 2100-01-01: these stay valid as long as the corpus is used.
    let exp = 4_102_444_800;
    let join = Claims {
        exp,
        nbf: Some(1_700_000_000),
        name: Some("Ada".into()),
        attributes: Some([("role".to_owned(), "host".to_owned())].into()),
        ..Claims::for_join(
            "devkey",
            "ada",
            "room-1",
            std::time::Duration::from_secs(60),
        )
    };
    let join = Claims { exp, ..join };
    let raw = |claims: &Claims, secret: &str| {
        let mut out = vec![0];
        out.extend_from_slice(
            token::issue("devkey", secret, claims)
                .unwrap_or_default()
                .as_bytes(),
        );
        out
    };
    let admin = Claims {
        iss: "devkey".into(),
        exp,
        video: VideoGrant {
            room_admin: true,
            room_create: true,
            room_list: true,
            can_publish_sources: vec!["camera".into(), "microphone".into()],
            ..VideoGrant::default()
        },
        ..Claims::default()
    };
    let expired = Claims {
        exp: 1_000_000,
        ..join.clone()
    };
    // Signed here by the fuzzing module: header and claims as JSON text.
    let mut signed = vec![1];
    field(&mut signed, br#"{"alg":"HS256","typ":"JWT"}"#);
    field(
        &mut signed,
        br#"{"iss":"devkey","sub":"ada","exp":4102444800,"nbf":null,"video":{"room":"r","roomJoin":true,"canPublish":false,"canPublishSources":null},"metadata":"m","kind":"standard"}"#,
    );
    signed.push(0); // with the right signature
    let mut unsigned = vec![1];
    field(&mut unsigned, br#"{"alg":"none"}"#);
    field(&mut unsigned, br#"{"iss":"devkey","sub":"x","exp":1}"#);
    unsigned.push(1);
    vec![
        ("token", "join", raw(&join, "secret")),
        ("token", "admin", raw(&admin, "secret")),
        ("token", "expired", raw(&expired, "secret")),
        ("token", "wrong-secret", raw(&join, "another")),
        ("token", "signed-json", signed),
        ("token", "alg-none", unsigned),
    ]
}

const OBS_LIKE: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef0123456789\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\na=rtcp-mux\r\na=msid:s v1\r\n\
a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n";

fn whip() -> Vec<Seed> {
    let body = |mode: u8, text: &str| {
        let mut out = vec![mode];
        out.extend_from_slice(text.as_bytes());
        out
    };
    let sendonly = offer(true, true, Direction::SendOnly);
    let patch = format!(
        "{sendonly}\n\na=ice-ufrag:efgh\r\na=ice-pwd:fedcba9876543210fedcba98\r\n\
         a=candidate:1 1 udp 2130706431 127.0.0.1 50001 typ host\r\na=end-of-candidates\r\n"
    );
    vec![
        ("whip_sdp", "whip-offer", body(0, &sendonly)),
        ("whip_sdp", "whip-obs-like-rsa", body(0x80 | 3, OBS_LIKE)),
        (
            "whip_sdp",
            "whep-offer",
            body(1, &offer(true, true, Direction::RecvOnly)),
        ),
        ("whip_sdp", "whip-patch", body(2, &patch)),
    ]
}

/// VP8 payloads: a keyframe's first packet (descriptor with a picture id, then the
/// keyframe header of a 640x480 frame) and a delta frame's.
const VP8_KEY: [u8; 14] = [
    0x90, 0x80, 0x81, 0x23, 0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01,
];
const VP8_DELTA: [u8; 6] = [0x90, 0x80, 0x81, 0x24, 0x31, 0x00];
/// x264's 1280x720 baseline SPS, and a PPS.
const SPS: [u8; 14] = [
    0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x40, 0, 0, 3, 0,
];
const PPS: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];

fn stap_a() -> Vec<u8> {
    let mut out = vec![0x18];
    for nal in [&SPS[..], &PPS[..]] {
        out.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

fn rtp_forward() -> Vec<Seed> {
    let packet = |out: &mut Vec<u8>, source: u8, step: i16, ts: u32, payload: &[u8]| {
        out.push(0); // a packet
        out.push(source);
        out.extend_from_slice(&step.to_be_bytes());
        out.push(0); // relative sequence number
        out.extend_from_slice(&ts.to_be_bytes());
        out.push(1); // marker
        field(out, payload);
    };
    // VP8 over AES-CM: a keyframe and deltas, a loss, a simulcast switch, NACKs.
    let mut vp8 = vec![0, 1, 0];
    packet(&mut vp8, 0, 1, 3000, &VP8_KEY);
    packet(&mut vp8, 0, 1, 6000, &VP8_DELTA);
    packet(&mut vp8, 0, 2, 9000, &VP8_DELTA);
    vp8.extend_from_slice(&[4, 0, 33]); // 33 ms later
    packet(&mut vp8, 1, 1, 700_000, &VP8_KEY);
    vp8.extend_from_slice(&[3, 0, 3, 0, 1]); // NACK 3 and 4
                                             // The same as RTCP: a generic NACK (RFC 4585) for the stream we send.
    let mut rtcp = vec![0x81, 205, 0, 3];
    rtcp.extend_from_slice(&0x1111_1111u32.to_be_bytes());
    rtcp.extend_from_slice(&0xabcdu32.to_be_bytes());
    rtcp.extend_from_slice(&[0, 2, 0, 1]);
    vp8.push(2);
    field(&mut vp8, &rtcp);
    vp8.push(5); // resync (a mute)
    packet(&mut vp8, 1, 1, 703_000, &VP8_DELTA);
    // H.264 over GCM: parameter sets in a STAP-A, an IDR in two FU-A fragments.
    let mut h264 = vec![1, 1, 2];
    packet(&mut h264, 0, 1, 0, &stap_a());
    packet(&mut h264, 0, 1, 0, &[0x7c, 0x85, 0x88, 0x84]);
    packet(&mut h264, 0, 1, 0, &[0x7c, 0x45, 0x21]);
    h264.extend_from_slice(&[3, 0, 2, 0, 0]);
    // Opus at 48 kHz: small packets, no keyframes.
    let mut opus = vec![0, 0, 4];
    for i in 0..4u32 {
        packet(&mut opus, 0, 1, i * 960, &[0xfc, 0xff, 0xfe]);
    }
    vec![
        ("rtp_forward", "vp8-switch-nack", vp8),
        ("rtp_forward", "h264-gcm", h264),
        ("rtp_forward", "opus", opus),
    ]
}

fn forward() -> Vec<Seed> {
    let packet = |out: &mut Vec<u8>, flags: u8, payload: &[u8]| {
        out.push(flags);
        out.extend_from_slice(&(payload.len() as u16 - 1).to_be_bytes());
        out.extend_from_slice(payload);
    };
    // A keyframe in two packets, deltas, a lost packet (a NACK comes back), a stray
    // RTCP-looking datagram from the publisher.
    let mut vp8 = Vec::new();
    packet(&mut vp8, 0x04, &VP8_KEY);
    packet(&mut vp8, 0x08, &[0x80, 0x80, 0x81, 0x23, 0xaa, 0xbb]);
    packet(&mut vp8, 0x0c, &VP8_DELTA);
    packet(&mut vp8, 0x0d, &VP8_DELTA);
    vp8.push(0xe0);
    vp8.push(0);
    field(&mut vp8, &[0x81, 200, 0, 6, 1, 2, 3, 4]);
    vec![("forward", "vp8", vp8)]
}

fn depacketize() -> Vec<Seed> {
    let packet = |out: &mut Vec<u8>, new_frame: bool, marker: bool, payload: &[u8]| {
        out.push(0); // a packet
        let mut flags = 0x03; // the next sequence number
        if new_frame {
            flags |= 0x08;
        }
        if marker {
            flags |= 0x10;
        }
        out.push(flags);
        if new_frame {
            out.extend_from_slice(&3000u16.to_be_bytes());
        }
        field(out, payload);
    };
    // codec, jitter delay (×4 ms), capacity, first timestamp.
    let header = |codec: u8| vec![codec, 25, 64, 0, 0, 0x10, 0];
    let mut vp8 = header(1);
    packet(&mut vp8, true, false, &VP8_KEY);
    packet(&mut vp8, false, true, &[0x80, 0x80, 0x81, 0x23, 0xaa, 0xbb]);
    packet(&mut vp8, true, true, &VP8_DELTA);
    vp8.push(6); // a loss: a keyframe is due again
    packet(&mut vp8, true, true, &VP8_DELTA);
    let mut h264 = header(3);
    packet(&mut h264, true, false, &stap_a());
    packet(&mut h264, false, false, &[0x7c, 0x85, 0x88, 0x84]);
    packet(&mut h264, false, true, &[0x7c, 0x45, 0x21]);
    packet(&mut h264, true, true, &[0x41, 0x9a, 0x02]);
    h264.push(7);
    field(&mut h264, &SPS);
    field(&mut h264, &PPS);
    // VP9: a keyframe with its scalability structure (two layers), then a delta frame.
    let mut vp9 = header(2);
    packet(
        &mut vp9,
        true,
        true,
        &[
            0xae, 0x80, 0x01, 0x00, 0x07, 0x38, 0x01, 0x40, 0x00, 0xb4, 0x02, 0x80, 0x01, 0x68,
            0x01, 0x04, 0x01, 0x82, 0x49, 0x83, 0x42, 0x00, 0x13, 0xf0, 0x0e, 0xf0,
        ],
    );
    packet(&mut vp9, true, true, &[0xcc, 0x80, 0x02, 0x01, 0x86, 0x00]);
    let mut opus = header(0);
    for _ in 0..3 {
        packet(&mut opus, true, true, &[0xfc, 0xff, 0xfe]);
    }
    opus.extend_from_slice(&[5, 0x01, 0x00]); // 256 ms later
    vec![
        ("depacketize", "vp8", vp8),
        ("depacketize", "h264", h264),
        ("depacketize", "vp9", vp9),
        ("depacketize", "opus", opus),
    ]
}

fn containers() -> Vec<Seed> {
    // Matroska with VP8 (track 1) and Opus (track 2): keyframe, audio, delta, a cluster cut.
    let mut mkv = vec![0, 1, 2];
    mkv.push(0x10); // track 1: VP8, numbered 1
    mkv.extend_from_slice(&[0x02, 0x80, 0x01, 0xe0, 0, 0, 0, 0, 0]);
    mkv.push(0x00); // track 2: Opus
    mkv.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0xbb, 0x80, 2]);
    mkv.extend_from_slice(&[0, 0]); // clock starts at 0
    let frame = |out: &mut Vec<u8>, track: u8, step: u16, key: bool, data: &[u8]| {
        out.push(0);
        out.push(track);
        out.extend_from_slice(&step.to_be_bytes());
        out.push(u8::from(key));
        field(out, data);
    };
    frame(&mut mkv, 0, 0, true, &[0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a]);
    frame(&mut mkv, 1, 20, true, &[0xfc, 0xff, 0xfe]);
    frame(&mut mkv, 0, 13, false, &[0x31, 0x00]);
    mkv.push(7); // close the cluster
    frame(
        &mut mkv,
        0,
        1500,
        true,
        &[0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a],
    );
    // Ogg Opus, stereo: 20 ms packets, a gap, one straggler.
    let mut ogg = vec![1, 1, 0x53, 0x57, 0x42, 0x44];
    for toc in [0xfc, 0xfc, 0x78, 0xfc] {
        ogg.push(2);
        field(&mut ogg, &[toc, 0xff, 0xfe, 0x00]);
    }
    ogg.push(1);
    ogg.extend_from_slice(&48_000u32.to_be_bytes());
    field(&mut ogg, &[0xfc, 0x01]);
    ogg.push(0);
    ogg.extend_from_slice(&100u16.to_be_bytes());
    field(&mut ogg, &[0xfc, 0x02]);
    vec![("containers", "mkv", mkv), ("containers", "ogg", ogg)]
}

/// TURN client scripts (the operations are listed in `src/turn_core.rs`): the first byte
/// configures the server, then one byte per operation and its fields.
fn turn_core() -> Vec<Seed> {
    // A signed request: op 1, client, user, flags, method (0 Allocate, 1 Refresh,
    // 2 CreatePermission, 3 ChannelBind), then its fields. Allocate asks for UDP.
    let allocate = |out: &mut Vec<u8>, client: u8, user: u8| {
        out.extend_from_slice(&[1, client, user, 0, 0, 0x01]);
    };
    // The oldest relay waiting for its socket gets one.
    let bind = |out: &mut Vec<u8>, port: u16| {
        out.extend_from_slice(&[5, 0, 1]);
        out.extend_from_slice(&port.to_be_bytes());
    };
    let short = |out: &mut Vec<u8>, data: &[u8]| {
        out.push(data.len() as u8);
        out.extend_from_slice(data);
    };
    // Peer 0 is 1.1.1.1:9, peer 4 the allow-listed 10.0.0.7:5000.
    let mut send = vec![0];
    allocate(&mut send, 0, 0);
    bind(&mut send, 50_000);
    send.extend_from_slice(&[1, 0, 0, 0, 2, 1, 0]); // CreatePermission for peer 0
    send.extend_from_slice(&[2, 0, 0, 0]); // Send to peer 0
    short(&mut send, b"hello");
    send.extend_from_slice(&[4, 0, 0]); // peer 0 answers
    short(&mut send, b"hello back");

    // Over TLS, as bob: ChannelBind 0x4000 to peer 0, padded ChannelData both ways, close.
    let mut channel = vec![0];
    allocate(&mut channel, 2, 2);
    bind(&mut channel, 50_001);
    channel.extend_from_slice(&[1, 2, 2, 0, 3, 0x00, 0]);
    channel.extend_from_slice(&[3, 2, 0x00, 1]);
    short(&mut channel, b"abc");
    channel.extend_from_slice(&[4, 0, 0]);
    short(&mut channel, b"back");
    channel.extend_from_slice(&[6, 2]);

    let mut refresh = vec![0];
    allocate(&mut refresh, 0, 0);
    bind(&mut refresh, 50_002);
    refresh.extend_from_slice(&[1, 0, 0, 0, 1, 0x01, 0, 0, 0, 0]); // LIFETIME 0

    // IPv6 relay. alice (twice, under two usernames), then alice again (486), bob, then old
    // (508: the cap of 3); two relays bound, one refused; 61 s later all have expired.
    let mut quota = vec![1];
    for (client, user) in [(0, 0), (1, 1), (3, 0), (3, 2), (4, 3)] {
        allocate(&mut quota, client, user);
    }
    bind(&mut quota, 50_003);
    bind(&mut quota, 50_004);
    quota.extend_from_slice(&[5, 0, 0, 0, 0]); // no socket for the third
    quota.extend_from_slice(&[7, 1, 0x80, 61]);

    // Listener on a public address. Refresh to 600 s, 301 s pass (the nonce goes stale),
    // then CreatePermission for peer 4 (438, retried) and a Send to it.
    let mut stale = vec![2];
    allocate(&mut stale, 0, 0);
    bind(&mut stale, 50_005);
    stale.extend_from_slice(&[1, 0, 0, 0, 1, 0x01, 0, 0, 0x02, 0x58]);
    stale.extend_from_slice(&[7, 0, 0x81, 0x2d]);
    stale.extend_from_slice(&[1, 0, 0, 0, 2, 1, 4]);
    stale.extend_from_slice(&[2, 0, 4, 0]);
    short(&mut stale, b"to the allow-listed peer");

    // Raw datagrams: a Binding request, and ChannelData without an allocation.
    let mut raw = vec![0, 0, 0];
    let mut binding = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    binding.extend_from_slice(&[7; 12]);
    field(&mut raw, &binding);
    raw.extend_from_slice(&[0, 1]);
    field(&mut raw, &[0x40, 0x00, 0x00, 0x02, 0xaa, 0xbb]);

    vec![
        ("turn_core", "send", send),
        ("turn_core", "channel", channel),
        ("turn_core", "refresh_zero", refresh),
        ("turn_core", "quota_expiry", quota),
        ("turn_core", "stale_nonce", stale),
        ("turn_core", "raw", raw),
    ]
}
