//! The benchmark backend: the cheapest correct HTTP server we can write with hyper, so the proxies
//! dominate what is measured. One listener serves HTTP/1.1 and h2c (prior knowledge) via hyper's
//! auto builder; a second is a TCP sink for the opaque-throughput test (protocol in `tcp.rs`).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The response body: small, fixed, like a typical JSON API answer.
const BODY: &[u8] = b"{\"ok\":true,\"from\":\"bench-backend\"}\n";

#[derive(clap::Args)]
pub struct Args {
    /// HTTP/1.1 + h2c listener.
    #[arg(long, default_value = "127.0.0.1:0")]
    http: SocketAddr,
    /// TCP sink listener.
    #[arg(long, default_value = "127.0.0.1:0")]
    tcp: SocketAddr,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let http = TcpListener::bind(args.http).await?;
    let tcp = TcpListener::bind(args.tcp).await?;
    println!(
        "{}",
        serde_json::json!({
            "event": "listening",
            "http": http.local_addr()?.to_string(),
            "tcp": tcp.local_addr()?.to_string(),
        })
    );
    tokio::spawn(sink_accept(tcp));
    serve_http(http).await
}

/// Serves HTTP/1.1 and h2c on `http` until the process ends.
pub async fn serve_http(http: TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, _) = match http.accept().await {
            Ok(accepted) => accepted,
            // EMFILE and friends: keep serving the connections we have.
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A client going away mid-request is normal in a benchmark; nothing to report.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

async fn answer(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Runs the TCP sink on `listener` until the process ends.
pub async fn sink_accept(listener: TcpListener) {
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(sink(stream));
        }
    }
}

/// Reads an 8-byte big-endian length, then that many bytes, then answers the count it read.
/// Framing instead of EOF because a proxy need not forward a half-close.
async fn sink(mut stream: TcpStream) -> std::io::Result<()> {
    let expected = stream.read_u64().await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut read = 0u64;
    while read < expected {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    stream.write_u64(read).await?;
    stream.flush().await
}
