//! A single-PC participant's receive lines, negotiated against str0m client offers.

use std::time::{Duration, Instant};

use str0m::media::{Direction, MediaKind};

use super::*;
use crate::api::{DtlsPeers, ExpectedTrack, JoinOptions};
use crate::worker::testing;

const TWCC: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// A single-PC client: str0m, offering receive lines and a data channel.
struct Client {
    rtc: str0m::Rtc,
    pending: Option<str0m::change::SdpPendingOffer>,
    offered: bool,
    lines: Vec<str0m::media::Mid>,
}

impl Client {
    fn new() -> Self {
        crate::rtc_config::install_crypto();
        Self {
            rtc: str0m::Rtc::builder().build(Instant::now()),
            pending: None,
            offered: false,
            lines: Vec::new(),
        }
    }

    /// An offer that adds receive lines of `kinds` (the first one also a data channel, as
    /// livekit-client's); with none, the same lines again.
    fn offer(&mut self, kinds: &[MediaKind]) -> String {
        let first = !std::mem::replace(&mut self.offered, true);
        let mut api = self.rtc.sdp_api();
        // str0m, unlike a browser, offers a line answered inactive as inactive: its
        // transceiver stays recvonly in a browser.
        for mid in &self.lines {
            api.set_direction(*mid, Direction::RecvOnly);
        }
        for kind in kinds {
            let mid = api.add_media(*kind, Direction::RecvOnly, None, None, None);
            self.lines.push(mid);
        }
        if first {
            api.add_channel("_reliable".into());
        }
        if kinds.is_empty() {
            api.ice_restart(false);
        }
        let (offer, pending) = api.apply().expect("an offer");
        self.pending = Some(pending);
        offer.to_sdp_string()
    }

    fn accept(&mut self, answer: &Answer) {
        let answer = str0m::change::SdpAnswer::from_sdp_string(&answer.sdp).expect("parses");
        let pending = self.pending.take().expect("an offer out");
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("the client takes our answer");
    }
}

fn single_pc(worker: &mut Worker, key: &str) -> tokio::sync::mpsc::UnboundedReceiver<PeerEvent> {
    testing::join_with(
        worker,
        key,
        JoinOptions {
            auto_subscribe: true,
            can_subscribe: true,
            can_publish: true,
            single_pc: true,
            dtls: DtlsPeers::Ecdsa,
        },
    )
}

/// `PA_pub` (two PCs) publishes a camera track `TR_cam`.
fn publish_camera(worker: &mut Worker) {
    let _events = testing::join(worker, "PA_pub");
    worker.handle_command(
        crate::api::Command::ExpectTrack {
            participant: "PA_pub".into(),
            track: ExpectedTrack {
                cid: "camera".into(),
                codec_cids: Vec::new(),
                sid: "TR_cam".into(),
                kind: TrackKind::Video,
                codec: None,
                screen: false,
                layers: Vec::new(),
            },
        },
        Instant::now(),
    );
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(
        MediaKind::Video,
        Direction::SendOnly,
        Some("stream".into()),
        Some("camera".into()),
        None,
    );
    let (offer, _) = api.apply().expect("an offer");
    let offer = offer.to_sdp_string();
    worker.publisher_offer("PA_pub", &offer).expect("answered");
    // str0m reports the new m-line once its peer connects, which nothing does here.
    let mid = crate::sdp_order::mids(&offer).remove(0);
    worker.bind_track(worker.by_key["PA_pub"], mid.as_str().into());
    // Renegotiations are spaced; run every one that is queued.
    worker.renegotiate_due(Instant::now() + Duration::from_secs(60));
}

/// The m-section of `sdp` with mid `mid`.
fn section<'a>(sdp: &'a str, mid: &str) -> &'a str {
    let start = sdp.find(&format!("a=mid:{mid}\r\n")).expect("the mid");
    let begin = sdp[..start].rfind("m=").expect("its m-line");
    let end = sdp[start..].find("m=").map_or(sdp.len(), |e| start + e);
    &sdp[begin..end]
}

fn requirements(events: &mut tokio::sync::mpsc::UnboundedReceiver<PeerEvent>) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let PeerEvent::MediaSectionsRequirement { audios, videos } = event {
            out.push((audios, videos));
        }
    }
    out
}

fn receive_mids(worker: &Worker) -> Vec<String> {
    let slot = worker.by_key["PA_sub"];
    let part = worker.parts[slot].as_ref().expect("joined");
    part.receive_lines
        .iter()
        .map(|l| l.mid.to_string())
        .collect()
}

#[test]
fn free_lines_are_inactive_and_a_bound_line_sends_the_track_under_its_msid() {
    let mut worker = testing::worker();
    let mut events = single_pc(&mut worker, "PA_sub");
    let mut client = Client::new();
    let offer = client.offer(&[MediaKind::Audio, MediaKind::Video]);
    let answer = worker.single_pc_offer(0, &offer).expect("answered");
    client.accept(&answer);
    let mids = receive_mids(&worker);
    assert_eq!(mids.len(), 2, "{answer:?}");
    for mid in &mids {
        let s = section(&answer.sdp, mid);
        assert!(s.contains("a=inactive"), "{s}");
        assert!(!s.contains("a=msid") && !s.contains("a=ssrc"), "{s}");
        // Our send path stamps transport-wide numbers on the lines we send on, under the
        // client's id; str0m, which would stamp a second sequence, does not know them there.
        assert_eq!(s.matches(&format!("a=extmap:3 {TWCC}")).count(), 1, "{s}");
        let part = worker.parts[0].as_ref().expect("joined");
        let media = part
            .publisher
            .rtc
            .media(mid.as_str().into())
            .expect("the line");
        let str0m_knows = media
            .remote_extmap()
            .id_of(str0m::rtp::Extension::TransportSequenceNumber);
        assert_eq!(str0m_knows, None);
    }
    assert!(answer.mid_to_track.is_empty());

    publish_camera(&mut worker);
    // The camera took the free video line; the client is asked to offer again.
    assert_eq!(requirements(&mut events), vec![(0, 0)]);
    let answer = worker
        .single_pc_offer(0, &client.offer(&[]))
        .expect("answered");
    client.accept(&answer);
    let video = section(&answer.sdp, &mids[1]);
    assert!(video.contains("a=sendonly"), "{video}");
    assert!(video.contains("a=msid:PA_pub|TR_cam TR_cam"), "{video}");
    assert!(video.contains(&format!("a=extmap:3 {TWCC}")), "{video}");
    assert!(section(&answer.sdp, &mids[0]).contains("a=inactive"));
    assert_eq!(
        answer.mid_to_track.get(&mids[1]).map(String::as_str),
        Some("TR_cam")
    );
    let part = worker.parts[0].as_ref().expect("joined");
    assert!(part.congestion.is_some(), "the link is estimated");
    let open = part
        .down_tracks
        .iter()
        .flatten()
        .filter_map(|d| d.open_mid());
    assert_eq!(open.count(), 1);
    // Nothing more to ask.
    assert_eq!(requirements(&mut events), vec![]);
}

#[test]
fn a_track_without_a_free_line_asks_for_one_and_an_unsubscribed_line_is_freed() {
    let mut worker = testing::worker();
    let mut events = single_pc(&mut worker, "PA_sub");
    let mut client = Client::new();
    let answer = worker
        .single_pc_offer(0, &client.offer(&[MediaKind::Audio]))
        .expect("answered");
    client.accept(&answer);
    publish_camera(&mut worker);
    assert_eq!(requirements(&mut events), vec![(0, 1)]);

    // The client adds the video line it was asked for.
    let answer = worker
        .single_pc_offer(0, &client.offer(&[MediaKind::Video]))
        .expect("answered");
    client.accept(&answer);
    let video = receive_mids(&worker)[1].clone();
    assert_eq!(
        answer.mid_to_track.get(&video).map(String::as_str),
        Some("TR_cam")
    );

    worker.set_subscriptions("PA_sub", &["TR_cam".into()], false);
    assert_eq!(requirements(&mut events), vec![(0, 0)]);
    let answer = worker
        .single_pc_offer(0, &client.offer(&[]))
        .expect("answered");
    client.accept(&answer);
    assert!(section(&answer.sdp, &video).contains("a=inactive"));
    assert!(answer.mid_to_track.is_empty());
    let part = worker.parts[0].as_ref().expect("joined");
    assert_eq!(
        part.down_tracks.iter().flatten().count(),
        0,
        "the line is free"
    );
}

#[test]
fn receive_lines_are_bounded_by_the_m_line_limit_plus_what_the_participant_receives() {
    let mut worker = testing::worker();
    worker.limits.max_media_sections = 4;
    let _events = single_pc(&mut worker, "PA_sub");
    // A client that offers lines beyond the bound is refused before str0m reads the offer.
    let lines = |n: usize| format!("v=0\r\n{}", "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n".repeat(n));
    assert_eq!(
        worker.single_pc_offer(0, &lines(5)),
        Err(SfuError::TooManyMediaSections { sent: 5, limit: 4 })
    );
    // Each track it receives allows one more line: a big room's subscriber needs them.
    publish_camera(&mut worker);
    let receiving = worker.parts[0].as_ref().map(|p| p.down_tracks.len());
    assert_eq!(receiving, Some(1));
    assert!(matches!(
        worker.single_pc_offer(0, &lines(5)),
        Err(SfuError::BadSdp(_))
    ));
    assert_eq!(
        worker.single_pc_offer(0, &lines(6)),
        Err(SfuError::TooManyMediaSections { sent: 6, limit: 5 })
    );
}
