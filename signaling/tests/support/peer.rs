//! Real WebRTC peers (str0m, full ICE, against the server's ICE-lite media plane) for the
//! test clients: the publisher PeerConnection with livekit-client's `_reliable` and `_lossy`
//! data channels and optionally an Opus track, and the subscriber PeerConnection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use livekit_protocol as proto;
use prost::Message as _;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Client, Req, Resp, WAIT};

/// An Opus packet that decodes to 20 ms of silence.
const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

/// The publisher side of one client: DataPackets received, with their channel's label.
pub struct DataPeer {
    packets: mpsc::UnboundedReceiver<(String, proto::DataPacket)>,
    outgoing: mpsc::UnboundedSender<(String, Vec<u8>)>,
    task: JoinHandle<()>,
}

impl DataPeer {
    /// The next DataPacket and the label of its channel; panics after [`WAIT`].
    pub async fn next(&mut self) -> (String, proto::DataPacket) {
        tokio::time::timeout(WAIT, self.packets.recv())
            .await
            .expect("no data packet arrived")
            .expect("the peer stopped")
    }

    /// Sends `packet` on the channel labelled `label` (`_reliable` or `_lossy`).
    pub fn send(&self, label: &str, packet: &proto::DataPacket) {
        self.outgoing
            .send((label.to_owned(), packet.encode_to_vec()))
            .expect("the peer stopped");
    }
}

impl Drop for DataPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The subscriber side of one client: counts the audio frames it receives.
pub struct MediaPeer {
    received: Arc<AtomicU64>,
    intact: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl MediaPeer {
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Frames received byte for byte as the test publishers send them.
    pub fn intact(&self) -> u64 {
        self.intact.load(Ordering::Relaxed)
    }

    /// Waits until more than `count` frames have arrived; panics after [`WAIT`].
    pub async fn wait_beyond(&self, count: u64) {
        let deadline = Instant::now() + WAIT;
        while self.received() <= count {
            assert!(Instant::now() < deadline, "no media beyond {count} frames");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for MediaPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A str0m peer with its default codecs; `red` also offers (and then sends) Opus wrapped in
/// RED (RFC 2198), as livekit-client asks for.
async fn new_peer(red: bool) -> (Rtc, UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
    let local = socket.local_addr().expect("UDP address");
    let mut rtc = Rtc::builder().enable_opus(true, red).build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").expect("host candidate"));
    (rtc, socket, local)
}

impl Client {
    /// Connects the publisher PeerConnection with livekit-client's two data channels and
    /// returns once both are open on the server too.
    pub async fn open_data(&mut self) -> DataPeer {
        self.connect_publisher(None).await
    }

    /// Like [`Client::open_data`], and with `audio_cid` also sends an Opus track (announced
    /// before with AddTrackRequest under that cid) every 20 ms until the peer is dropped.
    pub async fn connect_publisher(&mut self, audio_cid: Option<&str>) -> DataPeer {
        self.connect_publisher_with_video(audio_cid, None).await
    }

    /// Like [`Client::connect_publisher`] with an audio track, sent as RED: panics unless the
    /// server's answer accepted RED.
    pub async fn connect_publisher_with_red(&mut self, audio_cid: &str) -> DataPeer {
        self.connect_publisher_as(Some(audio_cid), None, true).await
    }

    /// Like [`Client::connect_publisher`], with also a VP8 m-line under `video_cid` in the
    /// same offer (on which nothing is sent).
    pub async fn connect_publisher_with_video(
        &mut self,
        audio_cid: Option<&str>,
        video_cid: Option<&str>,
    ) -> DataPeer {
        self.connect_publisher_as(audio_cid, video_cid, false).await
    }

    async fn connect_publisher_as(
        &mut self,
        audio_cid: Option<&str>,
        video_cid: Option<&str>,
        red: bool,
    ) -> DataPeer {
        let (mut rtc, socket, local) = new_peer(red).await;
        let mut api = rtc.sdp_api();
        if let Some(cid) = video_cid {
            api.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                Some(format!("stream-{cid}")),
                Some(cid.to_owned()),
                None,
            );
        }
        let audio = audio_cid.map(|cid| {
            let stream = format!("stream-{cid}");
            let mid = api.add_media(
                MediaKind::Audio,
                Direction::SendOnly,
                Some(stream),
                Some(cid.to_owned()),
                None,
            );
            (mid, 0)
        });
        api.add_channel("_reliable".into());
        api.add_channel_with_config(ChannelConfig {
            label: "_lossy".into(),
            ordered: false,
            reliability: Reliability::MaxRetransmits { retransmits: 0 },
            ..Default::default()
        });
        let (offer, pending) = api.apply().expect("an offer");
        self.send(Req::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            sdp: offer.to_sdp_string(),
            id: 1,
            ..Default::default()
        }))
        .await;
        let answer = self
            .expect("publisher answer", |r| match r {
                Resp::Answer(answer) => Some(answer.clone()),
                _ => None,
            })
            .await;
        assert_eq!(answer.id, 1, "the answer echoes the offer id");
        let answer = SdpAnswer::from_sdp_string(&answer.sdp).expect("parse the answer");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("accept the answer");
        if red {
            let opus = rtc.codec_config().find(|p| p.spec().codec == Codec::Opus);
            assert!(
                opus.is_some_and(|p| p.red().is_some()),
                "the server's answer accepts RED: {opus:?}"
            );
        }
        let (opened_tx, opened) = oneshot::channel();
        let (packets_tx, packets) = mpsc::unbounded_channel();
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            outgoing: Some(outgoing_rx),
            rtc,
            socket,
            local,
            opened: Some(opened_tx),
            wanted_channels: 2,
            labels: HashMap::new(),
            packets: Some(packets_tx),
            received: Arc::default(),
            intact: Arc::default(),
            audio,
        };
        let task = tokio::spawn(driver.run());
        tokio::time::timeout(WAIT, opened)
            .await
            .expect("the data channels did not open")
            .expect("the peer stopped");
        DataPeer {
            packets,
            outgoing,
            task,
        }
    }

    /// Answers the server's next subscriber offer and returns once connected.
    pub async fn accept_subscriber(&mut self) -> MediaPeer {
        self.accept_subscriber_as(false).await
    }

    /// Like [`Client::accept_subscriber`], accepting RED audio.
    pub async fn accept_subscriber_with_red(&mut self) -> MediaPeer {
        self.accept_subscriber_as(true).await
    }

    async fn accept_subscriber_as(&mut self, red: bool) -> MediaPeer {
        let offer = self
            .expect("subscriber offer", |r| match r {
                Resp::Offer(offer) => Some(offer.clone()),
                _ => None,
            })
            .await;
        let (mut rtc, socket, local) = new_peer(red).await;
        let sdp = SdpOffer::from_sdp_string(&offer.sdp).expect("parse the offer");
        let answer = rtc.sdp_api().accept_offer(sdp).expect("answer the offer");
        self.send(Req::Answer(proto::SessionDescription {
            r#type: "answer".into(),
            sdp: answer.to_sdp_string(),
            id: offer.id,
            ..Default::default()
        }))
        .await;
        let (opened_tx, opened) = oneshot::channel();
        let received = Arc::new(AtomicU64::new(0));
        let intact = Arc::new(AtomicU64::new(0));
        let driver = Driver {
            rtc,
            socket,
            local,
            opened: Some(opened_tx),
            wanted_channels: 0,
            labels: HashMap::new(),
            packets: None,
            outgoing: None,
            received: Arc::clone(&received),
            intact: Arc::clone(&intact),
            audio: None,
        };
        let task = tokio::spawn(driver.run());
        tokio::time::timeout(WAIT, opened)
            .await
            .expect("the subscriber connection did not come up")
            .expect("the peer stopped");
        MediaPeer {
            received,
            intact,
            task,
        }
    }
}

/// Runs one str0m peer: UDP in and out, timers, audio out, channel messages and media in.
struct Driver {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    /// Fired once connected and `wanted_channels` channels are open. str0m reports a
    /// channel we opened only after the server acknowledged it (DCEP ACK), that is once the
    /// server has registered it.
    opened: Option<oneshot::Sender<()>>,
    wanted_channels: usize,
    labels: HashMap<ChannelId, String>,
    packets: Option<mpsc::UnboundedSender<(String, proto::DataPacket)>>,
    /// DataPackets to send: (channel label, encoded packet).
    outgoing: Option<mpsc::UnboundedReceiver<(String, Vec<u8>)>>,
    received: Arc<AtomicU64>,
    /// Frames received that are exactly the Opus frame the test publishers send.
    intact: Arc<AtomicU64>,
    /// The audio m-line we send on and the next RTP timestamp.
    audio: Option<(Mid, u64)>,
}

async fn next_outgoing(
    outgoing: &mut Option<mpsc::UnboundedReceiver<(String, Vec<u8>)>>,
) -> Option<(String, Vec<u8>)> {
    match outgoing {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Driver {
    async fn run(mut self) {
        let mut buf = vec![0u8; 2048];
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        loop {
            let Some(deadline) = self.poll().await else {
                return;
            };
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((len, source)) = received else { continue };
                    let Ok(contents) = buf[..len].try_into() else { continue };
                    let input = Input::Receive(
                        Instant::now(),
                        Receive { proto: Protocol::Udp, source, destination: self.local, contents },
                    );
                    let _ = self.rtc.handle_input(input);
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                    let _ = self.rtc.handle_input(Input::Timeout(Instant::now()));
                }
                _ = ticker.tick(), if self.audio.is_some() => self.send_audio(),
                Some((label, bytes)) = next_outgoing(&mut self.outgoing) => {
                    let id = self.labels.iter().find(|(_, l)| **l == label).map(|(id, _)| *id);
                    if let Some(mut channel) = id.and_then(|id| self.rtc.channel(id)) {
                        let _ = channel.write(true, &bytes);
                    }
                }
            }
        }
    }

    /// Handles output until str0m asks for time; `None` once the peer is closed.
    async fn poll(&mut self) -> Option<Instant> {
        loop {
            if !self.rtc.is_alive() {
                return None;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => return Some(at),
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(Event::Connected)) if self.wanted_channels == 0 => self.opened(),
                Ok(Output::Event(Event::ChannelOpen(id, label))) => {
                    self.labels.insert(id, label);
                    if self.labels.len() == self.wanted_channels {
                        self.opened();
                    }
                }
                Ok(Output::Event(Event::ChannelData(data))) => {
                    let label = self.labels.get(&data.id).cloned().unwrap_or_default();
                    let packet =
                        proto::DataPacket::decode(data.data.as_slice()).expect("a DataPacket");
                    if let Some(packets) = &self.packets {
                        let _ = packets.send((label, packet));
                    }
                }
                Ok(Output::Event(Event::MediaData(data))) => {
                    self.received.fetch_add(1, Ordering::Relaxed);
                    if *data.data == OPUS_SILENCE[..] {
                        self.intact.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(e) => panic!("the WebRTC peer failed: {e}"),
            }
        }
    }

    fn opened(&mut self) {
        if let Some(tx) = self.opened.take() {
            let _ = tx.send(());
        }
    }

    fn send_audio(&mut self) {
        let Some((mid, timestamp)) = self.audio.as_mut() else {
            return;
        };
        let Some(writer) = self.rtc.writer(*mid) else {
            return;
        };
        let opus = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt());
        if let Some(pt) = opus {
            let rtp_time = MediaTime::new(*timestamp, Frequency::FORTY_EIGHT_KHZ);
            // Before the connection is up str0m refuses the write; the next tick retries.
            let _ = writer.write(pt, Instant::now(), rtp_time, OPUS_SILENCE.to_vec());
            *timestamp += 960;
        }
    }
}
