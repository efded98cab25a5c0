//! Clients the tests drive the mesh with: a tiny HTTP/1 client for admin/API calls, an HTTP/1
//! client that speaks to the outbound proxy in absolute-form (what `HTTP_PROXY` clients send),
//! an h2c prior-knowledge client, and body helpers (streaming, checksums).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{BoxError, Fnv};

/// The request body type every client here uses.
pub type Body = BoxBody<Bytes, BoxError>;

/// Bound on one request/response exchange made by these clients.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

pub fn empty() -> Body {
    full(Bytes::new())
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// A body of `total` deterministic bytes sent in 64 KiB frames, and the checksum of what it sends.
pub fn streaming_body(total: usize) -> (Body, Fnv) {
    const CHUNK: usize = 64 * 1024;
    let mut sum = Fnv::default();
    let mut chunks = Vec::new();
    let mut offset = 0;
    while offset < total {
        let len = CHUNK.min(total - offset);
        let chunk: Vec<u8> = (offset..offset + len)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8)
            .collect();
        sum.update(&chunk);
        chunks.push(Ok::<_, BoxError>(Frame::data(Bytes::from(chunk))));
        offset += len;
    }
    let stream = futures_util::stream::iter(chunks);
    (BodyExt::boxed(StreamBody::new(stream)), sum)
}

/// Reads a response body to the end, returning its length and checksum.
pub async fn body_checksum(body: Incoming) -> Result<(usize, Fnv), BoxError> {
    let mut body = body;
    let mut sum = Fnv::default();
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            sum.update(&data);
            len += data.len();
        }
    }
    Ok((len, sum))
}

/// Reads a whole response body.
pub async fn body_bytes(body: Incoming) -> Result<Bytes, BoxError> {
    Ok(body.collect().await?.to_bytes())
}

/// An HTTP/1.1 connection (to a proxy or a server).
pub struct H1 {
    sender: hyper::client::conn::http1::SendRequest<Body>,
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> Result<H1, BoxError> {
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr)).await??;
        H1::handshake(stream).await
    }

    /// HTTP/1.1 over an already connected stream.
    pub async fn handshake(stream: TcpStream) -> Result<H1, BoxError> {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(H1 { sender })
    }

    /// Sends one request (the URI is written as given: absolute-form reaches the proxy).
    pub async fn send(&mut self, req: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            self.sender.ready().await?;
            Ok::<_, BoxError>(self.sender.send_request(req).await?)
        })
        .await?
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// An HTTP/2 prior-knowledge (h2c) connection.
#[derive(Clone)]
pub struct H2 {
    sender: hyper::client::conn::http2::SendRequest<Body>,
}

impl H2 {
    pub async fn connect(addr: SocketAddr) -> Result<H2, BoxError> {
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr)).await??;
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H2 { sender })
    }

    pub async fn send(&mut self, req: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            self.sender.ready().await?;
            Ok::<_, BoxError>(self.sender.send_request(req).await?)
        })
        .await?
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// A complete response: status, headers and body as text.
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub async fn read(resp: Response<Incoming>) -> Result<Reply, BoxError> {
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, body_bytes(body)).await??;
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Every header as `name: value` lines, for assertion messages.
    pub fn describe(&self) -> String {
        let mut out = format!("status {}\n", self.status);
        for (k, v) in &self.headers {
            out += &format!("{k}: {}\n", v.to_str().unwrap_or("<bin>"));
        }
        out += &format!("body: {:?}", String::from_utf8_lossy(&self.body));
        out
    }
}

/// One request on a fresh HTTP/1 connection; returns (status, body text).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<(u16, String), BoxError> {
    let mut conn = H1::connect(addr).await?;
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(match body {
        Some(text) => full(text),
        None => empty(),
    })?;
    let reply = Reply::read(conn.send(req).await?).await?;
    Ok((reply.status, reply.text()))
}

pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), BoxError> {
    http_request(addr, "GET", path, None).await
}

/// A request in absolute-form for `authority` (what an `HTTP_PROXY` client sends the proxy).
pub fn proxy_request(method: &str, authority: &str, path: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(format!("http://{authority}{path}"))
        .header("host", authority)
        .body(body)
        .expect("valid request")
}

/// An h2 request whose `:authority` is `authority`.
pub fn h2_request(method: &str, authority: &str, path: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(format!("http://{authority}{path}"))
        .version(hyper::Version::HTTP_2)
        .body(body)
        .expect("valid request")
}

/// A tonic channel to `addr` (e.g. a proxy upstream port).
pub async fn grpc_channel(addr: SocketAddr) -> Result<tonic::transport::Channel, BoxError> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(REQUEST_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    Ok(endpoint.connect().await?)
}

/// One opaque exchange on a fresh connection (so a fresh mTLS handshake between proxies): write
/// `payload`, half-close, read everything back (bounded by 10 s).
pub async fn tcp_roundtrip(addr: SocketAddr, payload: &[u8]) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream.write_all(payload).await.map_err(|e| e.to_string())?;
        stream.shutdown().await.map_err(|e| e.to_string())?;
        let mut back = Vec::new();
        stream
            .read_to_end(&mut back)
            .await
            .map_err(|e| e.to_string())?;
        Ok(back)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// A WebSocket through the outbound listener `outbound` to `ws://AUTHORITY/socket` (the Host
/// header naming the service): the upgrade answers 101, every message comes back unchanged, then
/// the socket is closed.
pub async fn websocket_echo(
    outbound: SocketAddr,
    authority: &str,
    messages: Vec<tokio_tungstenite::tungstenite::Message>,
) {
    use futures_util::{SinkExt, StreamExt};
    let stream = TcpStream::connect(outbound)
        .await
        .expect("connect outbound");
    let url = format!("ws://{authority}/socket");
    let handshake = tokio_tungstenite::client_async(url, stream);
    let (mut ws, resp) = tokio::time::timeout(super::SOON, handshake)
        .await
        .expect("websocket handshake timed out")
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    for msg in messages {
        ws.send(msg.clone()).await.expect("ws send");
        let echoed = tokio::time::timeout(super::SOON, ws.next())
            .await
            .expect("ws echo timed out")
            .expect("ws closed")
            .expect("ws error");
        assert_eq!(echoed, msg);
    }
    ws.close(None).await.expect("ws close");
}

/// A 10 MB-style echo check: the response is 200 and its body is `sent_len` bytes with the
/// checksum `sent` of what was streamed up.
pub async fn assert_body_echoed(resp: Response<Incoming>, sent_len: usize, sent: Fnv) {
    assert_eq!(resp.status(), 200);
    let (len, got) = body_checksum(resp.into_body()).await.expect("big body");
    assert_eq!(len, sent_len, "echoed length");
    assert_eq!(got.0, sent.0, "echoed checksum");
}
