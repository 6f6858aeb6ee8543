//! Joining a room the way livekit-client does (v0), and the handle to a joined participant.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use livekit_protocol as proto;
use proto::signal_request::Message as Req;
use tokio::sync::{mpsc, oneshot};

use crate::driver::{Command, Driver};
use crate::signal::{self, SignalCmd, SignalTask};
use crate::{
    AudioConfig, ClientError, ParticipantEvent, TrackKind, TrackSpec, TrackStats, Transport,
    VideoConfig,
};

/// How to join.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// The media loop to run this participant's PeerConnections on; `None` starts one for
    /// it on the current runtime.
    pub driver: Option<Driver>,
    /// Ask the server to subscribe us to every track (`auto_subscribe=1`).
    pub auto_subscribe: bool,
    /// Publish a synthetic VP8 camera track.
    pub video: Option<VideoConfig>,
    /// Publish a synthetic Opus microphone track.
    pub audio: Option<AudioConfig>,
    /// Open livekit-client's `_reliable` and `_lossy` data channels on the publisher PC.
    /// Without them and without tracks no publisher PC is made.
    pub data_channels: bool,
    /// Local address of the UDP sockets or TCP connections (the server's candidates must be
    /// reachable from it).
    pub bind_ip: IpAddr,
    /// UDP, or ICE-TCP only.
    pub transport: Transport,
    /// Seeds the synthetic media (sizes, phases, first sequence numbers).
    pub seed: u64,
    /// Limit for each step of the join.
    pub timeout: Duration,
    /// When the join began, for [`JoinTimings`]; `None` is the call to [`Participant::join`].
    /// The load tester sets it before minting the token.
    pub started: Option<Instant>,
    /// Puts the subscriber PC's incoming datagrams through a simulated bottleneck of this
    /// capacity (`link.rs`); `None`: as they come. UDP only: the bottleneck drops datagrams
    /// as a congested UDP link does, which no TCP connection would.
    pub downlink: Option<crate::LinkCap>,
}

impl Default for JoinOptions {
    fn default() -> Self {
        Self {
            driver: None,
            auto_subscribe: true,
            video: None,
            audio: None,
            data_channels: true,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            transport: Transport::Udp,
            seed: 0,
            timeout: Duration::from_secs(10),
            started: None,
            downlink: None,
        }
    }
}

/// How long the steps of a join took, from its start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JoinTimings {
    /// The JoinResponse arrived.
    pub signaled: Duration,
    /// The publisher PC was connected with its data channels open.
    pub connected: Option<Duration>,
    /// The first media packet arrived on the subscriber PC.
    pub first_media: Option<Duration>,
    /// The subscriber PC's steps, for breaking `first_media` down.
    pub subscriber: SubscriberTimings,
}

/// When the subscriber PeerConnection got through each step, from the start of the join.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriberTimings {
    /// The server's first offer reached the media loop (and was answered).
    pub offer: Option<Duration>,
    /// ICE found a working, nominated pair (str0m's ICE state became connected).
    pub ice: Option<Duration>,
    /// DTLS finished and SRTP keys exist (str0m's `Connected`).
    pub connected: Option<Duration>,
}

/// Everything measured about one participant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParticipantStats {
    /// The server's `PA_…` sid for it (from the JoinResponse).
    pub sid: String,
    pub timings: JoinTimings,
    /// One entry per incoming stream.
    pub tracks: Vec<TrackStats>,
    pub packets_sent: u64,
    /// RTP payload bytes sent.
    pub bytes_sent: u64,
}

/// A track we published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTrack {
    pub cid: String,
    pub sid: String,
    pub kind: TrackKind,
}

/// A joined participant. Dropping it leaves the room (without waiting).
pub struct Participant {
    id: u64,
    driver: Driver,
    signal: mpsc::UnboundedSender<SignalCmd>,
    join: proto::JoinResponse,
    published: Vec<PublishedTrack>,
    signaled: Duration,
    left: bool,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participant")
            .field("sid", &self.sid())
            .field("identity", &self.identity())
            .finish()
    }
}

async fn within<T>(
    limit: Duration,
    what: &'static str,
    future: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| ClientError::Timeout(what))?
}

async fn reply<T>(rx: oneshot::Receiver<T>) -> Result<T, ClientError> {
    rx.await
        .map_err(|_| ClientError::Closed("signaling stopped".into()))
}

impl Participant {
    /// Joins with `token` at the server `url` (`ws://host:port`), publishes what `options`
    /// asks for, and returns once the publisher PeerConnection is connected (what
    /// livekit-client's `connect()` waits for). Subscriber offers are answered as they come.
    pub async fn join(
        url: &str,
        token: &str,
        options: JoinOptions,
    ) -> Result<(Participant, mpsc::UnboundedReceiver<ParticipantEvent>), ClientError> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        if options.transport == Transport::Tcp && options.downlink.is_some() {
            return Err(ClientError::Unsupported(
                "a simulated downlink drops datagrams as a congested UDP link does, which a \
                 TCP connection never would: use it with Transport::Udp",
            ));
        }
        let started = options.started.unwrap_or_else(Instant::now);
        let url = signal::rtc_url(url, token, options.auto_subscribe)?;
        let (ws, join) = within(options.timeout, "the JoinResponse", signal::connect(&url)).await?;
        let signaled = started.elapsed();
        let driver = options.driver.clone().unwrap_or_else(Driver::spawn);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (events_tx, events) = mpsc::unbounded_channel();
        driver
            .ask(|reply| Command::Add {
                id,
                events: events_tx.clone(),
                started,
                bind: options.bind_ip,
                downlink: options.downlink.clone(),
                transport: options.transport,
                reply,
            })
            .await?;
        let (signal_tx, signal_rx) = mpsc::unbounded_channel();
        let task = SignalTask {
            ws,
            driver: driver.clone(),
            id,
            events: events_tx,
            ping_interval: Duration::from_secs(
                u64::try_from(join.ping_interval).unwrap_or(5).max(1),
            ),
            tracks: HashMap::new(),
            answers: HashMap::new(),
            rtt_ms: 0,
        };
        tokio::spawn(task.run(signal_rx));
        let mut participant = Participant {
            id,
            driver,
            signal: signal_tx,
            join,
            published: Vec::new(),
            signaled,
            left: false,
        };
        // On failure `participant` is dropped, which leaves and frees the media.
        participant.publish(&options).await?;
        Ok((participant, events))
    }

    fn command(&self, command: SignalCmd) -> Result<(), ClientError> {
        self.signal
            .send(command)
            .map_err(|_| ClientError::Closed("signaling stopped".into()))
    }

    /// AddTrack for each track, then the publisher offer and answer, then waits until the
    /// publisher PC is connected.
    async fn publish(&mut self, options: &JoinOptions) -> Result<(), ClientError> {
        let mut specs = Vec::new();
        if let Some(video) = &options.video {
            let cid = format!("video-{}", self.id);
            let sid = self
                .add_track(options.timeout, video_request(&cid, video))
                .await?;
            self.published.push(PublishedTrack {
                cid: cid.clone(),
                sid,
                kind: TrackKind::Video,
            });
            specs.push(TrackSpec::Video {
                cid,
                config: video.clone(),
                seed: options.seed,
            });
        }
        if let Some(audio) = options.audio {
            let cid = format!("audio-{}", self.id);
            let sid = self.add_track(options.timeout, audio_request(&cid)).await?;
            self.published.push(PublishedTrack {
                cid: cid.clone(),
                sid,
                kind: TrackKind::Audio,
            });
            specs.push(TrackSpec::Audio {
                cid,
                config: audio,
                seed: options.seed.wrapping_add(1000),
            });
        }
        if specs.is_empty() && !options.data_channels {
            return Ok(());
        }
        let (id, data_channels) = (self.id, options.data_channels);
        let offer = self
            .driver
            .ask(|reply| Command::PublisherOffer {
                id,
                tracks: specs,
                data_channels,
                reply,
            })
            .await??;
        let (answer_tx, answer_rx) = oneshot::channel();
        self.command(SignalCmd::AwaitAnswer {
            id: 1,
            reply: answer_tx,
        })?;
        self.command(SignalCmd::Send(Box::new(Req::Offer(
            proto::SessionDescription {
                r#type: "offer".into(),
                sdp: offer,
                id: 1,
                ..Default::default()
            },
        ))))?;
        let answer = within(options.timeout, "the publisher answer", async {
            reply(answer_rx).await?
        })
        .await?;
        let (ready_tx, ready_rx) = oneshot::channel();
        self.driver.send(Command::PublisherAnswer {
            id,
            sdp: answer,
            ready: ready_tx,
        })?;
        within(options.timeout, "the publisher connection", async {
            ready_rx.await.map_err(|_| ClientError::DriverGone)?
        })
        .await
    }

    async fn add_track(
        &self,
        limit: Duration,
        request: proto::AddTrackRequest,
    ) -> Result<String, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.command(SignalCmd::AwaitTrack {
            cid: request.cid.clone(),
            reply: tx,
        })?;
        self.command(SignalCmd::Send(Box::new(Req::AddTrack(request))))?;
        let track = within(limit, "TrackPublished", async { reply(rx).await? }).await?;
        Ok(track.sid)
    }

    /// Our `PA_…` sid.
    pub fn sid(&self) -> &str {
        self.join
            .participant
            .as_ref()
            .map_or("", |p| p.sid.as_str())
    }

    pub fn identity(&self) -> &str {
        self.join
            .participant
            .as_ref()
            .map_or("", |p| p.identity.as_str())
    }

    pub fn join_response(&self) -> &proto::JoinResponse {
        &self.join
    }

    pub fn published(&self) -> &[PublishedTrack] {
        &self.published
    }

    pub fn driver(&self) -> &Driver {
        &self.driver
    }

    /// Sends any signal request (mute, data, subscription changes…).
    pub fn send(&self, request: Req) -> Result<(), ClientError> {
        self.command(SignalCmd::Send(Box::new(request)))
    }

    /// Join timings and what was sent and received so far.
    pub async fn stats(&self) -> Result<ParticipantStats, ClientError> {
        let id = self.id;
        let stats = self
            .driver
            .ask(|reply| Command::Stats { id, reply })
            .await?;
        Ok(self.merge(stats.unwrap_or_default()))
    }

    fn merge(&self, stats: crate::DriverStats) -> ParticipantStats {
        ParticipantStats {
            sid: self
                .join
                .participant
                .as_ref()
                .map(|p| p.sid.clone())
                .unwrap_or_default(),
            timings: JoinTimings {
                signaled: self.signaled,
                connected: stats.connected,
                first_media: stats.first_media,
                subscriber: stats.subscriber,
            },
            tracks: stats.tracks,
            packets_sent: stats.packets_sent,
            bytes_sent: stats.bytes_sent,
        }
    }

    /// Sends a LeaveRequest, closes the WebSocket and the PeerConnections, and returns the
    /// final stats.
    pub async fn leave(mut self) -> Result<ParticipantStats, ClientError> {
        self.left = true;
        let (tx, rx) = oneshot::channel();
        if self.command(SignalCmd::Leave { reply: tx }).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        let id = self.id;
        let stats = self
            .driver
            .ask(|reply| Command::Remove { id, reply })
            .await?;
        Ok(self.merge(stats.unwrap_or_default()))
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        if !self.left {
            // The signaling task leaves when its channel closes; the media goes now.
            let (reply, _) = oneshot::channel();
            let _ = self.driver.send(Command::Remove { id: self.id, reply });
        }
    }
}

fn video_request(cid: &str, video: &VideoConfig) -> proto::AddTrackRequest {
    let qualities = [
        proto::VideoQuality::Low,
        proto::VideoQuality::Medium,
        proto::VideoQuality::High,
    ];
    let layers: Vec<proto::VideoLayer> = video
        .layers()
        .iter()
        .enumerate()
        .map(|(i, (rid, bitrate, width, height))| proto::VideoLayer {
            // Without simulcast the single layer is the high one, as livekit-client says.
            quality: if video.simulcast {
                qualities[i.min(2)]
            } else {
                proto::VideoQuality::High
            } as i32,
            width: *width,
            height: *height,
            bitrate: *bitrate,
            rid: rid.unwrap_or_default().to_owned(),
            ..Default::default()
        })
        .collect();
    proto::AddTrackRequest {
        cid: cid.to_owned(),
        name: "camera".into(),
        r#type: proto::TrackType::Video as i32,
        source: proto::TrackSource::Camera as i32,
        width: video.width,
        height: video.height,
        simulcast_codecs: vec![proto::SimulcastCodec {
            codec: "vp8".into(),
            cid: cid.to_owned(),
            layers: layers.clone(),
            ..Default::default()
        }],
        layers,
        ..Default::default()
    }
}

fn audio_request(cid: &str) -> proto::AddTrackRequest {
    proto::AddTrackRequest {
        cid: cid.to_owned(),
        name: "microphone".into(),
        r#type: proto::TrackType::Audio as i32,
        source: proto::TrackSource::Microphone as i32,
        simulcast_codecs: vec![proto::SimulcastCodec {
            codec: "opus".into(),
            cid: cid.to_owned(),
            ..Default::default()
        }],
        ..Default::default()
    }
}
