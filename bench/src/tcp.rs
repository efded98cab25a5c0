//! Connection-level clients: opaque TCP throughput, and idle keep-alive connections for the
//! memory-per-connection measurement.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(clap::Args)]
pub struct ThroughputArgs {
    /// Where to connect (the TCP sink, or a proxy listener leading to it).
    #[arg(long)]
    addr: SocketAddr,
    /// Bytes to send.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
}

/// Sends an 8-byte length and that many bytes, waits for the sink's 8-byte count (see
/// `backend::sink`), and reports MB/s (10^6 bytes) from connect to acknowledgement.
pub async fn throughput(args: ThroughputArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(args.addr).await?;
    stream.write_u64(args.bytes).await?;
    // Not all zeros: no layer gets to compress or special-case it.
    let chunk: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut left = args.bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    stream.flush().await?;
    let received = stream.read_u64().await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        received == args.bytes,
        "sink received {received} of {} bytes",
        args.bytes
    );
    println!(
        "{}",
        serde_json::json!({
            "bytes": args.bytes,
            "seconds": seconds,
            "mb_per_s": args.bytes as f64 / 1e6 / seconds,
            "cpu_s": crate::self_cpu_seconds(),
        })
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct IdleArgs {
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, default_value = "backend.default.svc.cluster.local:8080")]
    authority: String,
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Exit after this many seconds at the latest (the harness normally kills it sooner).
    #[arg(long, default_value_t = 120)]
    hold: u64,
}

/// Opens the connections, sends one request on each so every hop has really set its connection
/// up, prints `{"event":"idle","open":N,"errors":E}` and then holds them, idle.
pub async fn idle(args: IdleArgs) -> anyhow::Result<()> {
    let mut held = Vec::with_capacity(args.connections);
    let mut errors = 0u64;
    let mut first_error = None;
    // Batches: a thousand simultaneous SYNs would measure the accept queue, not idle memory.
    for batch in (0..args.connections).collect::<Vec<_>>().chunks(50) {
        let opens: Vec<_> = batch
            .iter()
            .map(|_| tokio::spawn(open_one(args.addr, args.authority.clone())))
            .collect();
        for open in opens {
            match open.await {
                Ok(Ok(sender)) => held.push(sender),
                Ok(Err(error)) => {
                    errors += 1;
                    first_error.get_or_insert_with(|| format!("{error:#}"));
                }
                Err(error) => {
                    errors += 1;
                    first_error.get_or_insert_with(|| error.to_string());
                }
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({"event": "idle", "open": held.len(), "errors": errors, "first_error": first_error})
    );
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    drop(held);
    Ok(())
}

async fn open_one(
    addr: SocketAddr,
    authority: String,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get("/")
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())?;
    let response =
        tokio::time::timeout(Duration::from_secs(10), sender.send_request(request)).await??;
    let status = response.status();
    response.into_body().collect().await?;
    anyhow::ensure!(status == hyper::StatusCode::OK, "status {status}");
    Ok(sender)
}
