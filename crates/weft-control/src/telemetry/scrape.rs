//! One `GET /metrics` of a proxy's admin server: plain HTTP/1 over a fresh TCP connection, with
//! a time limit over the whole exchange and a cap on the body.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;

/// A scrape that has not finished in this long fails.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `/metrics` body read (a proxy with a thousand label sets serves about 2 MB).
pub const MAX_BODY: usize = 8 << 20;

/// Why a scrape failed (kept as the proxy's last error, in words).
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("GET http://{addr}/metrics: {source}")]
    Http {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("GET http://{addr}/metrics answered {status}")]
    Status {
        addr: SocketAddr,
        status: StatusCode,
    },
    #[error("GET http://{addr}/metrics: the body is larger than {MAX_BODY} bytes")]
    TooLarge { addr: SocketAddr },
    #[error("GET http://{addr}/metrics: reading the body: {message}")]
    Body { addr: SocketAddr, message: String },
}

/// The `/metrics` text of the admin server at `addr`.
pub async fn metrics(addr: SocketAddr) -> Result<String, ScrapeError> {
    tokio::time::timeout(TIMEOUT, fetch(addr))
        .await
        .unwrap_or(Err(ScrapeError::Timeout {
            addr,
            timeout: TIMEOUT,
        }))
}

async fn fetch(addr: SocketAddr) -> Result<String, ScrapeError> {
    let http = |source| ScrapeError::Http { addr, source };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ScrapeError::Connect { addr, source })?;
    // As on every socket carrying requests: the request must not wait for a delayed ACK.
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let exchange = async move {
        let request = Request::get("/metrics")
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .expect("a valid request");
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        if !status.is_success() {
            return Err(ScrapeError::Status { addr, status });
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    ScrapeError::TooLarge { addr }
                } else {
                    ScrapeError::Body {
                        addr,
                        message: e.to_string(),
                    }
                }
            })?
            .to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    // The connection is driven here, not by a task of its own, so that it closes with this
    // future (after the answer, or when the time limit drops it).
    let mut exchange = std::pin::pin!(exchange);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = &mut exchange => return result,
        closed = &mut conn => closed.map_err(http)?,
    }
    // The connection ended cleanly; what it delivered is still to be read.
    exchange.await
}
