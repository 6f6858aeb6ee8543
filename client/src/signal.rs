//! One participant's signaling: the WebSocket to `/rtc`, binary protobuf frames, answers to
//! the server's subscriber offers, pings, and the leave.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt as _, StreamExt as _};
use livekit_protocol as proto;
use prost::Message as _;
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::driver::{Command, Driver};
use crate::{ClientError, ParticipantEvent};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Requests from the participant handle to its signaling task.
pub(crate) enum SignalCmd {
    Send(Box<Req>),
    /// Resolves with the track of the `TrackPublishedResponse` for `cid`.
    AwaitTrack {
        cid: String,
        reply: oneshot::Sender<Result<proto::TrackInfo, ClientError>>,
    },
    /// Resolves with the SDP of the answer echoing offer `id`.
    AwaitAnswer {
        id: u32,
        reply: oneshot::Sender<Result<String, ClientError>>,
    },
    Leave {
        reply: oneshot::Sender<()>,
    },
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `ws://host[/path]/rtc?…` from the server URL (`http(s)://` is accepted as well).
pub(crate) fn rtc_url(url: &str, token: &str, auto_subscribe: bool) -> Result<String, ClientError> {
    let bad = |reason: &str| ClientError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let scheme = match scheme {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        _ => return Err(bad("the scheme must be ws, wss, http or https")),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('?') {
        return Err(bad("expected a host and optional path, without a query"));
    }
    let version = env!("CARGO_PKG_VERSION");
    Ok(format!(
        "{scheme}://{rest}/rtc?access_token={token}&auto_subscribe={}&sdk=rust&version={version}&protocol=16",
        u8::from(auto_subscribe)
    ))
}

/// Opens the WebSocket and reads the JoinResponse, which must come first.
pub(crate) async fn connect(url: &str) -> Result<(Ws, proto::JoinResponse), ClientError> {
    // Nagle's algorithm off (`true`), as browsers have it: a small signaling message must
    // not wait for the server to acknowledge the one before it.
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .map_err(|e| match e {
            tungstenite::Error::Http(response) => ClientError::Refused {
                status: response.status().as_u16(),
                body: response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            },
            other => ClientError::WebSocket(other.to_string()),
        })?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => {
                let response = proto::SignalResponse::decode(bytes.as_ref())
                    .map_err(|e| ClientError::Protocol(format!("undecodable frame: {e}")))?;
                return match response.message {
                    Some(Resp::Join(join)) => Ok((ws, join)),
                    other => Err(ClientError::Protocol(format!(
                        "the first message was not a JoinResponse: {other:?}"
                    ))),
                };
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(ClientError::Closed(close_reason(frame.as_ref())));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ClientError::WebSocket(e.to_string())),
            None => return Err(ClientError::Closed("before the JoinResponse".into())),
        }
    }
}

fn close_reason(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(f) => format!("closed by the server ({}: {})", u16::from(f.code), f.reason),
        None => "closed by the server".into(),
    }
}

pub(crate) struct SignalTask {
    pub ws: Ws,
    pub driver: Driver,
    pub id: u64,
    pub events: mpsc::UnboundedSender<ParticipantEvent>,
    pub ping_interval: Duration,
    pub tracks: HashMap<String, oneshot::Sender<Result<proto::TrackInfo, ClientError>>>,
    pub answers: HashMap<u32, oneshot::Sender<Result<String, ClientError>>>,
    pub rtt_ms: i64,
}

impl SignalTask {
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<SignalCmd>) {
        let interval = self.ping_interval.max(Duration::from_secs(1));
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reason = loop {
            tokio::select! {
                frame = self.ws.next() => match frame {
                    Some(Ok(Message::Binary(bytes))) => {
                        let Ok(response) = proto::SignalResponse::decode(bytes.as_ref()) else {
                            tracing::debug!("undecodable signal frame ignored");
                            continue;
                        };
                        if let Some(message) = response.message {
                            if let Some(reason) = self.on_response(message).await {
                                break reason;
                            }
                        }
                    }
                    Some(Ok(Message::Close(frame))) => break close_reason(frame.as_ref()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break format!("WebSocket error: {e}"),
                    None => break "the server closed the connection".into(),
                },
                command = commands.recv() => match command {
                    Some(SignalCmd::Send(request)) => {
                        if let Err(e) = self.send(*request).await {
                            break e.to_string();
                        }
                    }
                    Some(SignalCmd::AwaitTrack { cid, reply }) => {
                        self.tracks.insert(cid, reply);
                    }
                    Some(SignalCmd::AwaitAnswer { id, reply }) => {
                        self.answers.insert(id, reply);
                    }
                    Some(SignalCmd::Leave { reply }) => {
                        self.leave().await;
                        let _ = reply.send(());
                        return;
                    }
                    // The handle is gone without leaving: leave for it.
                    None => {
                        self.leave().await;
                        return;
                    }
                },
                _ = ping.tick() => {
                    let now = now_ms();
                    let sent = self.send(Req::Ping(now)).await.and(
                        self.send(Req::PingReq(proto::Ping { timestamp: now, rtt: self.rtt_ms })).await,
                    );
                    if let Err(e) = sent {
                        break e.to_string();
                    }
                }
            }
        };
        for (_, waiter) in self.tracks.drain() {
            let _ = waiter.send(Err(ClientError::Closed(reason.clone())));
        }
        for (_, waiter) in self.answers.drain() {
            let _ = waiter.send(Err(ClientError::Closed(reason.clone())));
        }
        let _ = self.events.send(ParticipantEvent::Disconnected { reason });
    }

    async fn send(&mut self, request: Req) -> Result<(), ClientError> {
        let frame = proto::SignalRequest {
            message: Some(request),
        };
        self.ws
            .send(Message::Binary(frame.encode_to_vec().into()))
            .await
            .map_err(|e| ClientError::WebSocket(e.to_string()))
    }

    async fn leave(&mut self) {
        let leave = proto::LeaveRequest {
            reason: proto::DisconnectReason::ClientInitiated as i32,
            action: proto::leave_request::Action::Disconnect as i32,
            ..Default::default()
        };
        let _ = self.send(Req::Leave(leave)).await;
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = self.ws.close(Some(frame)).await;
    }

    /// Handles one server message; `Some(reason)` ends the session.
    async fn on_response(&mut self, message: Resp) -> Option<String> {
        match message {
            Resp::Offer(offer) => {
                let mid_to_track: HashMap<String, String> =
                    offer.mid_to_track_id.into_iter().collect();
                let (id, sdp) = (self.id, offer.sdp);
                let answer = self
                    .driver
                    .ask(|reply| Command::SubscriberOffer {
                        id,
                        sdp,
                        mid_to_track,
                        reply,
                    })
                    .await
                    .and_then(|r| r);
                let sdp = match answer {
                    Ok(sdp) => sdp,
                    Err(e) => return Some(format!("cannot answer the subscriber offer: {e}")),
                };
                let answer = proto::SessionDescription {
                    r#type: "answer".into(),
                    sdp,
                    id: offer.id,
                    ..Default::default()
                };
                if let Err(e) = self.send(Req::Answer(answer)).await {
                    return Some(e.to_string());
                }
            }
            Resp::Answer(answer) => {
                if let Some(waiter) = self.answers.remove(&answer.id) {
                    let _ = waiter.send(Ok(answer.sdp));
                }
            }
            Resp::TrackPublished(published) => {
                if let Some(waiter) = self.tracks.remove(&published.cid) {
                    let track = published.track.ok_or_else(|| {
                        ClientError::Protocol("TrackPublished without a track".into())
                    });
                    let _ = waiter.send(track);
                }
            }
            Resp::RequestResponse(response) if !self.tracks.is_empty() => {
                // A refused AddTrack comes back as a RequestResponse without the cid.
                let refused =
                    ClientError::Protocol(format!("request refused: {}", response.message));
                for (_, waiter) in self.tracks.drain() {
                    let _ = waiter.send(Err(ClientError::Protocol(refused.to_string())));
                }
            }
            Resp::Leave(leave) => {
                return Some(format!(
                    "the server asked us to leave (reason {}, action {})",
                    leave.reason, leave.action
                ));
            }
            Resp::Update(update) => {
                let _ = self
                    .events
                    .send(ParticipantEvent::ParticipantUpdate(update.participants));
            }
            Resp::PongResp(pong) => self.rtt_ms = (now_ms() - pong.last_ping_timestamp).max(0),
            // ICE-lite server: its candidates are in the SDP, trickle adds nothing.
            Resp::Pong(_) | Resp::Trickle(_) => {}
            other => {
                let _ = self.events.send(ParticipantEvent::Signal(Box::new(other)));
            }
        }
        None
    }
}
