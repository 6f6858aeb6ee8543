//! The signaling WebSocket: the RFC 6455 upgrade of an `/rtc` request, and a socket that
//! sends large messages in fragments.
//!
//! Why not axum's `WebSocket`: tungstenite's write buffer keeps the capacity of the largest
//! frame a connection ever sent. A JoinResponse lists everyone already in the room, so in a
//! room of 300 each participant kept 15–30 KB for the rest of its session (issue 4's memory
//! per participant). Sent as frames of at most [`FRAGMENT`] bytes the buffer stays small;
//! axum's `Message` cannot express a fragment, tungstenite's raw frames can. Receivers
//! (browsers, livekit-client, tungstenite) reassemble fragments as RFC 6455 requires.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

pub(crate) use tokio_tungstenite::tungstenite::protocol::CloseFrame;
pub(crate) use tokio_tungstenite::tungstenite::{Error, Message};

/// Largest frame this server sends; a longer message goes out as several frames.
pub(crate) const FRAGMENT: usize = 4 * 1024;

/// Largest message accepted from a client (an SDP offer of a big room is tens of KB).
pub(crate) const MAX_MESSAGE: usize = 1 << 20;

/// Socket settings. Signaling frames are small: tungstenite's default 128 KiB read buffer,
/// resident for every connection, was half of an idle participant's memory; it grows for a
/// large frame when needed. A zero write threshold writes each frame as it is queued, so
/// the write buffer holds one fragment, not a message.
pub(crate) fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Whether a send failed because the client did not take it within the write timeout.
pub(crate) fn is_timeout(error: &Error) -> bool {
    matches!(error, Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut)
}

/// Whether reading failed because the client sent a message or frame over [`MAX_MESSAGE`].
pub(crate) fn is_too_big(error: &Error) -> bool {
    matches!(error, Error::Capacity(_))
}

/// A request that asked for a WebSocket, accepted: the `101 Switching Protocols` to return
/// and the connection it hands over once the response is sent.
pub(crate) struct Accepted {
    pub response: Response,
    pub upgrade: OnUpgrade,
}

/// Why an `/rtc` request cannot become a WebSocket, in words for the person reading the
/// client's log.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotWebSocket {
    #[error("/rtc expects a WebSocket upgrade: use GET, not {0}")]
    Method(Method),
    #[error("/rtc expects a WebSocket upgrade: the request has no `Upgrade: websocket` and `Connection: upgrade` headers")]
    NoUpgrade,
    #[error("/rtc expects a WebSocket upgrade: Sec-WebSocket-Version must be 13")]
    Version,
    #[error("/rtc expects a WebSocket upgrade: the request has no Sec-WebSocket-Key")]
    NoKey,
    #[error("/rtc expects a WebSocket upgrade: this connection cannot be upgraded (HTTP/1.1 is required)")]
    NotUpgradable,
}

impl IntoResponse for NotWebSocket {
    fn into_response(self) -> Response {
        let status = match self {
            NotWebSocket::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            NotWebSocket::Version => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.to_string(),
        )
            .into_response();
        if status == StatusCode::UPGRADE_REQUIRED {
            // RFC 6455 §4.4: name the version this server speaks.
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

/// Whether a comma-separated header of `name` contains `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|part| part.trim().eq_ignore_ascii_case(token))
}

/// Whether `request` is a valid RFC 6455 handshake (without taking it over).
pub(crate) fn check(request: &Request) -> Result<(), NotWebSocket> {
    key(request).map(drop)
}

fn key(request: &Request) -> Result<&HeaderValue, NotWebSocket> {
    if request.method() != Method::GET {
        return Err(NotWebSocket::Method(request.method().clone()));
    }
    let headers = request.headers();
    if !has_token(headers, header::UPGRADE, "websocket")
        || !has_token(headers, header::CONNECTION, "upgrade")
    {
        return Err(NotWebSocket::NoUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(NotWebSocket::Version);
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(NotWebSocket::NoKey)
}

/// Checks the RFC 6455 handshake of `request` and prepares the switch.
pub(crate) fn accept(mut request: Request) -> Result<Accepted, NotWebSocket> {
    let accept_key = derive_accept_key(key(&request)?.as_bytes());
    let upgrade = request
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or(NotWebSocket::NotUpgradable)?;
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    // The accept key is base64: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&accept_key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    Ok(Accepted { response, upgrade })
}

/// One participant's signaling connection.
pub(crate) struct SignalSocket<S = TokioIo<Upgraded>> {
    stream: WebSocketStream<S>,
    /// Longest one message may take to leave; without it a client that stops reading
    /// blocks its session's task in a send for as long as the connection lasts.
    write_timeout: Option<Duration>,
}

impl SignalSocket {
    /// Waits for the 101 to be sent and takes over the connection.
    pub async fn upgraded(upgrade: OnUpgrade) -> Result<Self, hyper::Error> {
        let io = TokioIo::new(upgrade.await?);
        Ok(Self::over(io).await)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> SignalSocket<S> {
    /// A server-side socket over an already upgraded connection.
    pub async fn over(io: S) -> Self {
        let stream = WebSocketStream::from_raw_socket(io, Role::Server, Some(config())).await;
        Self {
            stream,
            write_timeout: None,
        }
    }

    pub fn set_write_timeout(&mut self, limit: Duration) {
        self.write_timeout = Some(limit);
    }

    /// The next frame from the client; `None` once the connection is gone.
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        self.stream.next().await
    }

    /// Sends one binary message, in fragments of at most [`FRAGMENT`] bytes; fails with a
    /// `TimedOut` I/O error (see [`is_timeout`]) if it is not written within the write
    /// timeout, after which the socket is unusable.
    pub async fn send(&mut self, message: Bytes) -> Result<(), Error> {
        match self.write_timeout {
            None => self.send_fragments(message).await,
            Some(limit) => tokio::time::timeout(limit, self.send_fragments(message))
                .await
                .unwrap_or_else(|_| Err(Error::Io(std::io::ErrorKind::TimedOut.into()))),
        }
    }

    async fn send_fragments(&mut self, mut message: Bytes) -> Result<(), Error> {
        if message.len() <= FRAGMENT {
            return self.stream.send(Message::Binary(message)).await;
        }
        let mut opcode = OpCode::Data(Data::Binary);
        while message.len() > FRAGMENT {
            let fragment = message.split_to(FRAGMENT);
            let frame = Frame::message(fragment, opcode, false);
            self.stream.feed(Message::Frame(frame)).await?;
            opcode = OpCode::Data(Data::Continue);
        }
        let last = Frame::message(message, opcode, true);
        self.stream.send(Message::Frame(last)).await
    }

    /// Sends a message as it is (a relayed text message), within the write timeout.
    pub async fn forward(&mut self, message: Message) -> Result<(), Error> {
        match self.write_timeout {
            None => self.stream.send(message).await,
            Some(limit) => tokio::time::timeout(limit, self.stream.send(message))
                .await
                .unwrap_or_else(|_| Err(Error::Io(std::io::ErrorKind::TimedOut.into()))),
        }
    }

    /// Starts the closing handshake (best effort: the peer may be gone already).
    pub async fn close(&mut self, frame: Option<CloseFrame>) {
        let closing = self.stream.send(Message::Close(frame));
        match self.write_timeout {
            None => drop(closing.await),
            Some(limit) => drop(tokio::time::timeout(limit, closing).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, DuplexStream};

    /// A server socket and the raw client end of its connection.
    async fn pair() -> (SignalSocket<DuplexStream>, DuplexStream) {
        let (server, client) = tokio::io::duplex(256 * 1024);
        (SignalSocket::over(server).await, client)
    }

    /// Reads one unmasked server frame: (FIN, opcode, payload).
    async fn read_frame(raw: &mut DuplexStream) -> (bool, u8, Vec<u8>) {
        let mut head = [0u8; 2];
        raw.read_exact(&mut head).await.expect("frame header");
        assert_eq!(head[1] & 0x80, 0, "a server's frames are not masked");
        let len = match head[1] & 0x7f {
            126 => u64::from(raw.read_u16().await.expect("16-bit length")),
            127 => raw.read_u64().await.expect("64-bit length"),
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        raw.read_exact(&mut payload).await.expect("payload");
        (head[0] & 0x80 != 0, head[0] & 0x0f, payload)
    }

    fn message(len: usize) -> Bytes {
        (0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>().into()
    }

    #[tokio::test]
    async fn a_small_message_is_one_binary_frame() {
        let (mut socket, mut raw) = pair().await;
        let sent = message(FRAGMENT);
        socket.send(sent.clone()).await.expect("send");
        let (fin, opcode, payload) = read_frame(&mut raw).await;
        assert!(fin);
        assert_eq!(opcode, 2, "binary");
        assert_eq!(payload, sent);
    }

    #[tokio::test]
    async fn a_large_message_goes_out_in_fragments_of_at_most_fragment_bytes() {
        let (mut socket, mut raw) = pair().await;
        let sent = message(3 * FRAGMENT + 100);
        socket.send(sent.clone()).await.expect("send");
        let mut frames = Vec::new();
        loop {
            let frame = read_frame(&mut raw).await;
            let fin = frame.0;
            frames.push(frame);
            if fin {
                break;
            }
        }
        assert_eq!(frames.len(), 4);
        assert_eq!(
            frames[0].1, 2,
            "the first fragment carries the binary opcode"
        );
        assert!(
            frames[1..].iter().all(|f| f.1 == 0),
            "the rest are continuations"
        );
        assert!(frames.iter().all(|f| f.2.len() <= FRAGMENT));
        let joined: Vec<u8> = frames.into_iter().flat_map(|f| f.2).collect();
        assert_eq!(joined, sent);
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_the_client_does_not_read_times_out() {
        let (server, _client) = tokio::io::duplex(16 * 1024);
        let mut socket = SignalSocket::over(server).await;
        socket.set_write_timeout(Duration::from_secs(3));
        let started = tokio::time::Instant::now();
        let mut sent = 0;
        let error = loop {
            match socket.send(message(FRAGMENT)).await {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
        };
        assert!(is_timeout(&error), "{error}");
        assert!(
            sent < 8,
            "the pipe holds 16 KiB: {sent} messages went through"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_websocket_client_receives_the_fragments_as_one_message() {
        let (server, client) = tokio::io::duplex(256 * 1024);
        let mut socket = SignalSocket::over(server).await;
        let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let sent = message(10 * FRAGMENT + 7);
        socket.send(sent.clone()).await.expect("send");
        socket.send(message(5)).await.expect("send");
        match client.next().await {
            Some(Ok(Message::Binary(received))) => assert_eq!(received, sent),
            other => panic!("expected the whole message, got {other:?}"),
        }
        match client.next().await {
            Some(Ok(Message::Binary(received))) => assert_eq!(received, message(5)),
            other => panic!("expected the next message, got {other:?}"),
        }
    }
}
