//! Small HTTP/1.1 client helpers over hyper's connection API: one-shot requests (scrapes,
//! registration) and a tiny keep-alive pool for the demo services, which send every request to
//! one fixed address (their sidecar) in absolute form, as `HTTP_PROXY` clients do.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Limits how long one request may take end to end; the demo never waits on a stuck peer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    handshake(stream, addr).await
}

async fn handshake(
    stream: TcpStream,
    addr: SocketAddr,
) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP handshake with {addr}"))?;
    tokio::spawn(async move {
        // The connection ends when the peer closes or the sender is dropped; nothing to report.
        let _ = conn.await;
    });
    Ok(sender)
}

async fn collect(response: Response<hyper::body::Incoming>) -> anyhow::Result<Response<Bytes>> {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .context("reading response body")?
        .to_bytes();
    Ok(Response::from_parts(parts, body))
}

/// Sends one request on a fresh connection to `addr` and reads the whole response.
pub async fn send(
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<Response<Bytes>> {
    send_within(addr, request, REQUEST_TIMEOUT).await
}

/// [`send`] with another time limit (an answer the server takes long to compute).
pub async fn send_within(
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
    limit: Duration,
) -> anyhow::Result<Response<Bytes>> {
    let exchange = async {
        let mut sender = connect(addr).await?;
        let response = sender
            .send_request(request)
            .await
            .context("sending request")?;
        collect(response).await
    };
    tokio::time::timeout(limit, exchange)
        .await
        .with_context(|| format!("request to {addr} timed out after {limit:?}"))?
}

/// `GET http://ADDR/PATH`, returning status and body.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Response<Bytes>> {
    let request = Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    send(addr, request).await
}

/// `GET PATH` on a connection the caller made (one inside a pod's network namespace, say),
/// within [`REQUEST_TIMEOUT`].
pub async fn get_over(stream: TcpStream, path: &str) -> anyhow::Result<Response<Bytes>> {
    let addr = stream.peer_addr().context("reading the peer address")?;
    let request = Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let exchange = async {
        let mut sender = handshake(stream, addr).await?;
        let response = sender
            .send_request(request)
            .await
            .context("sending request")?;
        collect(response).await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .with_context(|| format!("request to {addr} timed out after {REQUEST_TIMEOUT:?}"))?
}

/// Keep-alive connections to one address, reused in turn. Good enough for a demo client at tens
/// of requests per second; a request that fails drops its connection.
#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Pool {
    pub fn new(addr: SocketAddr) -> Self {
        Pool {
            addr,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Sends `request` (its URI as given: absolute form for a proxy) and reads the response.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> anyhow::Result<Response<Bytes>> {
        let exchange = async {
            let mut sender = match self.take_idle() {
                Some(sender) => sender,
                None => connect(self.addr).await?,
            };
            let response = sender
                .send_request(request)
                .await
                .context("sending request")?;
            let response = collect(response).await?;
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(sender);
            Ok(response)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("request via {} timed out", self.addr))?
    }
}
