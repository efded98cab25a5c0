//! One `GET` of a proxy's admin server (`/metrics` for telemetry, `/ready` for `weft check`):
//! plain HTTP/1 over a fresh TCP connection, with a time limit over the whole exchange and a cap
//! on the body.

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
    #[error("GET http://{addr}{path}: {source}")]
    Http {
        addr: SocketAddr,
        path: &'static str,
        source: hyper::Error,
    },
    #[error("GET http://{addr}{path} answered {status}")]
    Status {
        addr: SocketAddr,
        path: &'static str,
        status: StatusCode,
    },
    #[error("GET http://{addr}{path}: the body is larger than {MAX_BODY} bytes")]
    TooLarge {
        addr: SocketAddr,
        path: &'static str,
    },
    #[error("GET http://{addr}{path}: reading the body: {message}")]
    Body {
        addr: SocketAddr,
        path: &'static str,
        message: String,
    },
}

/// The `/metrics` text of the admin server at `addr`.
pub async fn metrics(addr: SocketAddr) -> Result<String, ScrapeError> {
    let path = "/metrics";
    let response = get(addr, path).await?;
    let status = response.status();
    if !status.is_success() {
        return Err(ScrapeError::Status { addr, path, status });
    }
    Ok(String::from_utf8_lossy(response.body()).into_owned())
}

/// `GET path` of the admin server at `addr`, whatever its status, within [`TIMEOUT`].
pub async fn get(
    addr: SocketAddr,
    path: &'static str,
) -> Result<http::Response<Bytes>, ScrapeError> {
    tokio::time::timeout(TIMEOUT, fetch(addr, path))
        .await
        .unwrap_or(Err(ScrapeError::Timeout {
            addr,
            timeout: TIMEOUT,
        }))
}

async fn fetch(addr: SocketAddr, path: &'static str) -> Result<http::Response<Bytes>, ScrapeError> {
    let http = |source| ScrapeError::Http { addr, path, source };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ScrapeError::Connect { addr, source })?;
    // As on every socket carrying requests: the request must not wait for a delayed ACK.
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let exchange = async move {
        let request = Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .expect("a valid request");
        let response = sender.send_request(request).await.map_err(http)?;
        let (head, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    ScrapeError::TooLarge { addr, path }
                } else {
                    ScrapeError::Body {
                        addr,
                        path,
                        message: e.to_string(),
                    }
                }
            })?
            .to_bytes();
        Ok(http::Response::from_parts(head, body))
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
