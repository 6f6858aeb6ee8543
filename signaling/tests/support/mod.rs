//! An in-process Switchboard signaling server over a real media plane, and real clients for
//! it: WebSocket signaling in binary protobuf frames, plus a str0m WebRTC peer for the data
//! channels of the publisher PeerConnection (as livekit-client opens them).
//!
//! The WebRTC side lives in [`peer`].
//!
//! Every wait here waits for something to happen under a timeout; nothing sleeps to
//! synchronize.

#![allow(dead_code)]

mod peer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use livekit_protocol as proto;
use prost::Message as _;
use switchboard_sfu::{Sfu, SfuConfig};
use switchboard_signaling::token::{self, Claims};
use switchboard_signaling::{KeyStore, RoomDefaults, SignalEvent, Signaling, SignalingConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use proto::signal_request::Message as Req;
pub use proto::signal_response::Message as Resp;

/// How long any single expected thing may take.
pub const WAIT: Duration = Duration::from_secs(10);
pub const KEY: &str = "APIadmintest";
pub const SECRET: &str = "admin-test-secret-long-enough-for-hs256";

/// Signaling on 127.0.0.1:<free port>, over a real media plane on a free UDP port.
pub struct Server {
    pub sig: Arc<Signaling>,
    pub events: mpsc::UnboundedReceiver<SignalEvent>,
    pub addr: SocketAddr,
    http: JoinHandle<()>,
    _sfu: Arc<Sfu>,
}

impl Server {
    pub async fn start() -> Server {
        let sfu = Arc::new(Sfu::start(&SfuConfig::default()).expect("start the media plane"));
        let config = SignalingConfig {
            ice_servers: Vec::new(),
            keys: KeyStore::new([(KEY.to_owned(), SECRET.to_owned())]),
            rooms: RoomDefaults {
                empty_timeout: Duration::from_secs(300),
                max_participants: 0,
            },
            ping_interval: Duration::from_secs(5),
            // Test clients do not ping unless asked to.
            ping_timeout: Duration::from_secs(120),
            node_id: "admin-test".into(),
            names: Default::default(),
            limits: Default::default(),
            single_pc: true,
        };
        let (sig, events) = Signaling::new(config, Arc::clone(&sfu));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the HTTP listener");
        let addr = listener.local_addr().expect("listener address");
        let app = sig.router();
        let http = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server {
            sig,
            events,
            addr,
            http,
            _sfu: sfu,
        }
    }

    /// A client joined to `room` as `identity` with a default token.
    pub async fn join(&self, room: &str, identity: &str) -> (Client, proto::JoinResponse) {
        Client::join(self, &token(room, identity, |_| {})).await
    }

    /// `GET /rtc/validate?access_token=…` over plain HTTP/1.1: (status, body).
    pub async fn validate(&self, token: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        let request = format!(
            "GET /rtc/validate?access_token={token}&protocol=16 HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
            .await
            .expect("validate timed out")
            .expect("read the response");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, body.to_owned())
    }

    /// The next event `pick` accepts, skipping others; panics after [`WAIT`].
    pub async fn event<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&SignalEvent) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                }
                Ok(None) => panic!("the event channel closed while waiting for {what}"),
                Err(_) => panic!("no {what} event within {WAIT:?}"),
            }
        }
    }

    /// Events already emitted, without waiting.
    pub fn drain_events(&mut self) -> Vec<SignalEvent> {
        std::iter::from_fn(|| self.events.try_recv().ok()).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.http.abort();
    }
}

/// A join token for `room` and `identity`, valid for ten minutes; `edit` changes claims.
pub fn token(room: &str, identity: &str, edit: impl FnOnce(&mut Claims)) -> String {
    let mut claims = Claims::for_join(KEY, identity, room, Duration::from_secs(600));
    edit(&mut claims);
    token::issue(KEY, SECRET, &claims).expect("issue a token")
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What reading the socket produced.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum WsEvent {
    Response(Resp),
    Closed(Option<CloseFrame>),
    Ended(String),
}

/// One signaling connection, as livekit-client speaks it (v0).
pub struct Client {
    pub ws: Ws,
    pub sid: String,
}

impl Client {
    /// Connects with `token` and returns the JoinResponse, which must come first.
    pub async fn join(server: &Server, token: &str) -> (Client, proto::JoinResponse) {
        let url = format!(
            "ws://{}/rtc?access_token={token}&auto_subscribe=1&sdk=js&protocol=16",
            server.addr
        );
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("WebSocket connect timed out")
            .expect("upgrade to /rtc");
        let mut client = Client {
            ws,
            sid: String::new(),
        };
        match client.next_event().await {
            WsEvent::Response(Resp::Join(join)) => {
                client.sid = join.participant.as_ref().expect("participant").sid.clone();
                (client, join)
            }
            other => panic!("the first message was not a JoinResponse: {other:?}"),
        }
    }

    pub async fn send(&mut self, message: Req) {
        let request = proto::SignalRequest {
            message: Some(message),
        };
        let frame = Message::Binary(request.encode_to_vec().into());
        tokio::time::timeout(WAIT, self.ws.send(frame))
            .await
            .expect("send timed out")
            .expect("send a frame");
    }

    /// The next response, close or end of stream; panics after [`WAIT`].
    pub async fn next_event(&mut self) -> WsEvent {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("nothing from the server within {WAIT:?}"),
                Ok(None) => return WsEvent::Ended("stream ended".into()),
                Ok(Some(Err(e))) => return WsEvent::Ended(e.to_string()),
                Ok(Some(Ok(frame))) => frame,
            };
            match frame {
                Message::Binary(bytes) => {
                    let response = proto::SignalResponse::decode(bytes.as_ref())
                        .expect("an undecodable SignalResponse");
                    return WsEvent::Response(response.message.expect("an empty SignalResponse"));
                }
                Message::Close(frame) => return WsEvent::Closed(frame),
                Message::Text(text) => panic!("the server sent a text frame: {text}"),
                _ => {}
            }
        }
    }

    /// Skips responses until `pick` accepts one; panics on close, on a LeaveRequest, or
    /// after [`WAIT`].
    pub async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(&Resp) -> Option<T>) -> T {
        let mut skipped = Vec::new();
        loop {
            match self.next_event().await {
                WsEvent::Response(response) => {
                    if let Some(found) = pick(&response) {
                        return found;
                    }
                    if matches!(response, Resp::Leave(_)) {
                        panic!("told to leave while waiting for {what}: {response:?}");
                    }
                    skipped.push(response);
                }
                other => panic!("waiting for {what}, got {other:?}; skipped: {skipped:#?}"),
            }
        }
    }

    /// The next snapshot of participant `sid` that satisfies `check`.
    pub async fn expect_participant(
        &mut self,
        what: &str,
        sid: &str,
        mut check: impl FnMut(&proto::ParticipantInfo) -> bool,
    ) -> proto::ParticipantInfo {
        self.expect(what, |response| match response {
            Resp::Update(update) => update
                .participants
                .iter()
                .find(|p| p.sid == sid && check(p))
                .cloned(),
            _ => None,
        })
        .await
    }

    /// The server's LeaveRequest, then its close of the socket.
    pub async fn expect_leave(&mut self) -> proto::LeaveRequest {
        let leave = loop {
            match self.next_event().await {
                WsEvent::Response(Resp::Leave(leave)) => break leave,
                WsEvent::Response(_) => {}
                other => panic!("closed without a LeaveRequest: {other:?}"),
            }
        };
        match self.next_event().await {
            WsEvent::Closed(_) | WsEvent::Ended(_) => {}
            other => panic!("the socket stayed open after the LeaveRequest: {other:?}"),
        }
        leave
    }

    /// Pings and waits for the pong: the session is alive and was not told to leave.
    pub async fn assert_alive(&mut self) {
        let value = 0x5eed_1234_i64;
        self.send(Req::Ping(value)).await;
        let pong = self
            .expect("pong", |r| match r {
                Resp::Pong(v) => Some(*v),
                _ => None,
            })
            .await;
        assert_eq!(pong, value);
    }

    /// Publishes an audio track by AddTrackRequest and returns its sid.
    pub async fn add_audio_track(&mut self, cid: &str) -> String {
        self.send(Req::AddTrack(proto::AddTrackRequest {
            cid: cid.to_owned(),
            name: "microphone".into(),
            r#type: proto::TrackType::Audio as i32,
            source: proto::TrackSource::Microphone as i32,
            ..Default::default()
        }))
        .await;
        self.expect("TrackPublishedResponse", |r| match r {
            Resp::TrackPublished(p) => p.track.as_ref().map(|t| t.sid.clone()),
            _ => None,
        })
        .await
    }
}
