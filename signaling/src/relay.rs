//! Relaying a client's signaling to the node that serves its room. A client may reach any
//! node (a load balancer, a stale URL, a reconnect); when another node holds the room, this
//! node verifies the token as usual, then opens the same `/rtc` (or `/rtc/v1`, or its
//! `validate`) on the owner, node to node over plain HTTP, and copies messages both ways
//! until either side closes. Media does not pass here: the owner's offers carry its own
//! ICE candidates, so the client's media goes straight to the owner.
//!
//! A relayed request carries [`FORWARDED_BY`]; a node never relays such a request again
//! (one hop at most): if the room moved meanwhile, the owner refuses it and the client
//! reconnects.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::WebSocketStream;

use crate::placement::Owner;
use crate::websocket::{self, Message, SignalSocket};

/// Marks a request one node relayed or forwarded to another; its value is the sender's id.
pub const FORWARDED_BY: &str = "x-switchboard-forwarded-by";

/// How long reaching the owner may take (TCP connect plus the WebSocket handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the owner may take to accept one message before the relay gives up on it.
const OWNER_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest validate answer read from the owner (it is one line of text).
const MAX_VALIDATE_BODY: usize = 64 * 1024;

/// Whether another node relayed this request here.
pub(crate) fn was_relayed(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED_BY)
}

/// The socket to the owner.
pub(crate) type Upstream = WebSocketStream<TcpStream>;

/// Why the owner's signaling could not be opened, with the answer to give the client.
#[derive(Debug)]
pub(crate) enum RelayRefused {
    /// The owner answered with a refusal: passed on as it is.
    ByOwner(Response),
    /// The owner could not be reached (dead, or cut off): a 503 naming it.
    Unreachable(Response),
}

impl IntoResponse for RelayRefused {
    fn into_response(self) -> Response {
        match self {
            RelayRefused::ByOwner(answer) | RelayRefused::Unreachable(answer) => answer,
        }
    }
}

fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

fn unreachable(owner: &Owner, room: &str, why: impl std::fmt::Display) -> RelayRefused {
    RelayRefused::Unreachable(text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "room {room} is served by node {}, which cannot be reached right now ({why}); \
             try again",
            owner.node_id
        ),
    ))
}

/// `host:port` of the owner's node-to-node URL (`http://host:port`).
fn authority(owner: &Owner) -> Option<&str> {
    let url = owner.http_url.as_deref()?.strip_prefix("http://")?;
    let authority = url.split('/').next()?;
    (!authority.is_empty()).then_some(authority)
}

/// The request headers passed on: the client's credentials, and who relayed it.
fn relayed_headers(from: &HeaderMap, node_id: &str, to: &mut HeaderMap) {
    if let Some(auth) = from.get(header::AUTHORIZATION) {
        to.insert(header::AUTHORIZATION, auth.clone());
    }
    if let Ok(value) = HeaderValue::from_str(node_id) {
        to.insert(FORWARDED_BY, value);
    }
}

fn path_and_query(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

async fn connect(owner: &Owner, room: &str) -> Result<(TcpStream, String), RelayRefused> {
    let Some(authority) = authority(owner) else {
        return Err(unreachable(owner, room, "its node-to-node URL is unknown"));
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority)).await {
        Ok(Ok(stream)) => {
            // Signaling messages are small and latency-bound, as on the client's socket.
            let _ = stream.set_nodelay(true);
            Ok((stream, authority.to_owned()))
        }
        Ok(Err(e)) => Err(unreachable(owner, room, e)),
        Err(_) => Err(unreachable(owner, room, "connecting timed out")),
    }
}

/// Opens the owner's WebSocket for the client's request (same path and query, same
/// credentials). A refusal by the owner is passed on as it answered it.
pub(crate) async fn open(
    owner: &Owner,
    room: &str,
    node_id: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Upstream, RelayRefused> {
    let (stream, authority) = connect(owner, room).await?;
    let url = format!("ws://{authority}{}", path_and_query(uri));
    let mut request = url
        .into_client_request()
        .map_err(|e| unreachable(owner, room, e))?;
    relayed_headers(headers, node_id, request.headers_mut());
    let handshake =
        tokio_tungstenite::client_async_with_config(request, stream, Some(websocket::config()));
    match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Ok(Ok((upstream, _))) => Ok(upstream),
        Ok(Err(websocket::Error::Http(answer))) => {
            let status = answer.status();
            let body = answer
                .into_body()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            Err(RelayRefused::ByOwner(text(status, body)))
        }
        Ok(Err(e)) => Err(unreachable(owner, room, e)),
        Err(_) => Err(unreachable(owner, room, "the owner did not answer in time")),
    }
}

/// Copies messages between the client and the owner until either closes; a close on one
/// side closes the other, so a client whose owner died reconnects at once.
pub(crate) async fn pipe(mut client: SignalSocket, upstream: Upstream, room: String) {
    let (mut to_owner, mut from_owner) = upstream.split();
    loop {
        tokio::select! {
            message = client.recv() => match message {
                Some(Ok(message @ (Message::Binary(_) | Message::Text(_)))) => {
                    let sent = tokio::time::timeout(OWNER_WRITE_TIMEOUT, to_owner.send(message));
                    if !matches!(sent.await, Ok(Ok(()))) {
                        tracing::info!(room, "the relayed room's node stopped taking messages");
                        client.close(None).await;
                        return;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let _ = tokio::time::timeout(
                        OWNER_WRITE_TIMEOUT,
                        to_owner.send(Message::Close(frame)),
                    )
                    .await;
                    return;
                }
                // Pings are answered by each socket itself.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let _ = tokio::time::timeout(OWNER_WRITE_TIMEOUT, to_owner.close()).await;
                    return;
                }
            },
            message = from_owner.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    if client.send(bytes).await.is_err() {
                        let _ = tokio::time::timeout(OWNER_WRITE_TIMEOUT, to_owner.close()).await;
                        return;
                    }
                }
                Some(Ok(message @ Message::Text(_))) => {
                    if client.forward(message).await.is_err() {
                        let _ = tokio::time::timeout(OWNER_WRITE_TIMEOUT, to_owner.close()).await;
                        return;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    client.close(frame).await;
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::info!(room, "the relayed room's node closed the connection: {e}");
                    client.close(None).await;
                    return;
                }
                None => {
                    client.close(None).await;
                    return;
                }
            },
        }
    }
}

/// Asks the owner's `validate` endpoint the same question and passes its answer on.
pub(crate) async fn validate(
    owner: &Owner,
    room: &str,
    node_id: &str,
    request_uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    match ask_validate(owner, room, node_id, request_uri, headers).await {
        Ok(response) => response,
        Err(refused) => refused.into_response(),
    }
}

async fn ask_validate(
    owner: &Owner,
    room: &str,
    node_id: &str,
    request_uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, RelayRefused> {
    let (stream, authority) = connect(owner, room).await?;
    let mut request = Request::get(path_and_query(request_uri))
        .header(header::HOST, authority.as_str())
        .body(Body::empty())
        .map_err(|e| unreachable(owner, room, e))?;
    relayed_headers(headers, node_id, request.headers_mut());
    let exchange = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // Drives the connection until the answer is read; it ends when `sender` is dropped.
        tokio::spawn(connection);
        sender.send_request(request).await
    };
    let answer = match tokio::time::timeout(CONNECT_TIMEOUT, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(unreachable(owner, room, e)),
        Err(_) => return Err(unreachable(owner, room, "the owner did not answer in time")),
    };
    let status = answer.status();
    let body = axum::body::to_bytes(Body::new(answer.into_body()), MAX_VALIDATE_BODY)
        .await
        .map_err(|e| unreachable(owner, room, e))?;
    Ok(text(status, String::from_utf8_lossy(&body).into_owned()))
}
