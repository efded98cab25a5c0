//! The client side: an open-loop request stream of several kinds (HTTP/1.1, HTTP/2, gRPC; GET
//! and POST) at a fixed total rate from inside a pod, every outcome sent to a channel with its
//! cause, and one long-lived opaque TCP stream that checks every byte it gets back.
//!
//! Open loop, as `load.rs`: request `i` is due at `start + i/rate` whatever happened to earlier
//! ones, and its latency counts from that time, so a stall is charged to every request due
//! during it. (The dispatcher sleeps on tokio's millisecond timer; its lateness is charged too.)

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use weft_testbed::NamedNetns;

use super::apps::Task;

/// A request longer than this is a failure (`timeout`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What is sent: protocol and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    H1Get,
    H1Post,
    H2Get,
    H2Post,
    /// A unary gRPC call: always a POST, so counted as non-idempotent.
    Grpc,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::H1Get,
        Kind::H1Post,
        Kind::H2Get,
        Kind::H2Post,
        Kind::Grpc,
    ];

    pub fn protocol(self) -> &'static str {
        match self {
            Kind::H1Get | Kind::H1Post => "http1",
            Kind::H2Get | Kind::H2Post => "http2",
            Kind::Grpc => "grpc",
        }
    }

    /// GET is idempotent; POST (and so every gRPC call) is not.
    pub fn idempotent(self) -> bool {
        matches!(self, Kind::H1Get | Kind::H2Get)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::H1Get => "http1 GET",
            Kind::H1Post => "http1 POST",
            Kind::H2Get => "http2 GET",
            Kind::H2Post => "http2 POST",
            Kind::Grpc => "grpc POST",
        }
    }
}

/// One request's fate.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub kind: Kind,
    /// When it was due.
    pub due: Instant,
    /// From due to the last byte of the answer (or the failure).
    pub latency: Duration,
    /// `Ok(backend)` (its `x-backend`) or `Err(cause)`: `status N`, with `l5d-proxy-error: ...`
    /// when the proxy made the answer, `grpc-status N`, `io: ...`, `timeout`.
    pub result: Result<String, String>,
}

/// Where the requests go: a service address, as seen from inside a pod.
#[derive(Clone)]
pub struct Target {
    pub netns: Arc<NamedNetns>,
    pub addr: SocketAddr,
    /// `Host` / `:authority`.
    pub authority: String,
}

type H1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// A running request stream; stops when dropped or [`Traffic::stop`]ped.
pub struct Traffic {
    stop: watch::Sender<bool>,
    dispatcher: Option<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// Sends `rate` requests a second in total to `target`, cycling through `kinds`, over
    /// `h1_conns` HTTP/1.1 keep-alive connections and one HTTP/2 connection; every outcome goes
    /// to `out`.
    pub fn start(
        target: Target,
        rate: f64,
        kinds: &[Kind],
        h1_conns: usize,
        out: mpsc::UnboundedSender<Outcome>,
    ) -> Traffic {
        let (stop, mut stopped) = watch::channel(false);
        let kinds = kinds.to_vec();
        let dispatcher = tokio::spawn(async move {
            let (h1_tx, h1_rx) = mpsc::unbounded_channel::<(Kind, Instant, u64)>();
            let h1_rx = Arc::new(tokio::sync::Mutex::new(h1_rx));
            let mut workers = Vec::new();
            if kinds.iter().any(|k| k.protocol() == "http1") {
                for _ in 0..h1_conns.max(1) {
                    let (rx, target, out) = (h1_rx.clone(), target.clone(), out.clone());
                    workers.push(Task(tokio::spawn(h1_worker(rx, target, out))));
                }
            }
            let h2 = Arc::new(tokio::sync::Mutex::new(None::<H2>));
            let start = Instant::now() + Duration::from_millis(10);
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut streams = tokio::task::JoinSet::new();
            for i in 0u64.. {
                let due = start + interval.mul_f64(i as f64);
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = stopped.wait_for(|s| *s) => break,
                }
                let kind = kinds[i as usize % kinds.len()];
                if kind.protocol() == "http1" {
                    let _ = h1_tx.send((kind, due, i));
                } else {
                    let (h2, target, out) = (h2.clone(), target.clone(), out.clone());
                    streams.spawn(async move {
                        let result = h2_request(&h2, &target, kind, i).await;
                        let _ = out.send(Outcome {
                            kind,
                            due,
                            latency: due.elapsed(),
                            result,
                        });
                    });
                    while streams.try_join_next().is_some() {}
                }
            }
            drop(h1_tx);
            // Requests in flight finish within their own timeout.
            let drain = async {
                while streams.join_next().await.is_some() {}
                for w in &mut workers {
                    let _ = (&mut w.0).await;
                }
            };
            let _ = tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), drain).await;
        });
        Traffic {
            stop,
            dispatcher: Some(dispatcher),
        }
    }

    /// Stops sending and waits for the requests in flight.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(d) = self.dispatcher.take() {
            let _ = d.await;
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        if let Some(d) = self.dispatcher.take() {
            d.abort();
        }
    }
}

async fn h1_worker(
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<(Kind, Instant, u64)>>>,
    target: Target,
    out: mpsc::UnboundedSender<Outcome>,
) {
    let mut conn: Option<H1> = None;
    loop {
        let next = rx.lock().await.recv().await;
        let Some((kind, due, i)) = next else {
            return;
        };
        let result = tokio::time::timeout(REQUEST_TIMEOUT, h1_request(&mut conn, &target, kind, i))
            .await
            .unwrap_or_else(|_| Err("timeout".into()));
        if result.is_err() {
            // The connection may be broken or in an unknown state: the next request opens one.
            conn = None;
        }
        let _ = out.send(Outcome {
            kind,
            due,
            latency: due.elapsed(),
            result,
        });
    }
}

fn request(kind: Kind, target: &Target, i: u64, absolute: bool) -> Request<Full<Bytes>> {
    let path = match kind {
        Kind::Grpc => "/soak.Soak/Echo".to_string(),
        _ => format!("/soak/{}/{i}", kind.protocol()),
    };
    let uri = if absolute {
        format!("http://{}{path}", target.authority)
    } else {
        path
    };
    let builder = Request::builder().uri(uri);
    let builder = if absolute {
        builder
    } else {
        builder.header(http::header::HOST, &target.authority)
    };
    let r = match kind {
        Kind::H1Get | Kind::H2Get => builder.method("GET").body(Full::new(Bytes::new())),
        Kind::H1Post | Kind::H2Post => builder
            .method("POST")
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(vec![b'p'; 256]))),
        Kind::Grpc => {
            // One length-prefixed, uncompressed 16-byte message.
            let mut msg = vec![0u8, 0, 0, 0, 16];
            msg.extend_from_slice(&i.to_be_bytes());
            msg.extend_from_slice(&i.to_le_bytes());
            builder
                .method("POST")
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header("te", "trailers")
                .body(Full::new(Bytes::from(msg)))
        }
    };
    r.expect("a well-formed request")
}

async fn h1_request(
    conn: &mut Option<H1>,
    target: &Target,
    kind: Kind,
    i: u64,
) -> Result<String, String> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        let stream = target
            .netns
            .connect(target.addr, CONNECT_TIMEOUT)
            .await
            .map_err(|e| format!("io: connect: {e}"))?;
        let (send, c) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| io_cause("handshake", &e))?;
        tokio::spawn(c);
        *conn = Some(send);
    }
    let send = conn.as_mut().ok_or("io: no connection")?;
    send.ready().await.map_err(|e| io_cause("ready", &e))?;
    let resp = send
        .send_request(request(kind, target, i, false))
        .await
        .map_err(|e| io_cause("request", &e))?;
    read_answer(kind, resp).await
}

async fn h2_request(
    shared: &tokio::sync::Mutex<Option<H2>>,
    target: &Target,
    kind: Kind,
    i: u64,
) -> Result<String, String> {
    let exchange = async {
        let mut send = {
            let mut guard = shared.lock().await;
            if guard.as_ref().is_none_or(|c| c.is_closed()) {
                let stream = target
                    .netns
                    .connect(target.addr, CONNECT_TIMEOUT)
                    .await
                    .map_err(|e| format!("io: connect: {e}"))?;
                let (send, c) = hyper::client::conn::http2::handshake(
                    TokioExecutor::new(),
                    TokioIo::new(stream),
                )
                .await
                .map_err(|e| io_cause("handshake", &e))?;
                tokio::spawn(c);
                *guard = Some(send);
            }
            guard.clone().ok_or("io: no connection")?
        };
        send.ready().await.map_err(|e| io_cause("ready", &e))?;
        let resp = send
            .send_request(request(kind, target, i, true))
            .await
            .map_err(|e| io_cause("request", &e))?;
        read_answer(kind, resp).await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

/// The backend's name, or why the answer is a failure.
async fn read_answer(
    kind: Kind,
    resp: hyper::Response<hyper::body::Incoming>,
) -> Result<String, String> {
    let header = |h: &http::HeaderMap, name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let status = resp.status().as_u16();
    let backend = header(resp.headers(), "x-backend").unwrap_or_default();
    let proxy_error = header(resp.headers(), "l5d-proxy-error");
    let head_grpc = header(resp.headers(), "grpc-status");
    let collected = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| io_cause("body", &e))?;
    if status != 200 {
        return Err(match proxy_error {
            Some(e) => format!("status {status}, l5d-proxy-error: {e}"),
            None => format!("status {status}"),
        });
    }
    if kind == Kind::Grpc {
        let grpc = collected
            .trailers()
            .and_then(|t| header(t, "grpc-status"))
            .or(head_grpc);
        match grpc.as_deref() {
            Some("0") => {}
            Some(code) => return Err(format!("grpc-status {code}")),
            None => return Err("grpc: no grpc-status".into()),
        }
        if collected.to_bytes().len() != 21 {
            return Err("grpc: the echoed message is not the one sent".into());
        }
    }
    Ok(backend)
}

/// `io: WHAT: error: source: ...`, the whole chain (hyper's top-level messages alone say little).
fn io_cause(what: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = format!("io: {what}: {e}");
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

/// The opaque stream's tally.
#[derive(Default)]
pub struct StreamStats {
    /// Bytes that came back exactly as sent.
    pub verified: AtomicU64,
    /// Bytes that came back different (corruption: never expected).
    pub corrupted: AtomicU64,
    /// Each time the stream broke (and was opened again): when and why.
    pub breaks: Mutex<Vec<(Instant, String)>>,
}

/// Chunk size and pace of the opaque stream: 4 KiB every 20 ms (200 KiB/s).
const CHUNK: usize = 4096;
const PACE: Duration = Duration::from_millis(20);

/// One long-lived TCP connection to `addr` from inside `netns` that writes a known byte sequence
/// and reads it back (an echo at the far end), checking every byte; reopened when it breaks.
pub fn opaque_stream(netns: Arc<NamedNetns>, addr: SocketAddr, stats: Arc<StreamStats>) -> Task {
    Task(tokio::spawn(async move {
        let mut seq = 0u64;
        loop {
            let cause = match netns.connect(addr, CONNECT_TIMEOUT).await {
                Ok(mut stream) => loop {
                    let chunk = pattern(seq);
                    let exchange = async {
                        stream.write_all(&chunk).await?;
                        let mut back = vec![0u8; CHUNK];
                        stream.read_exact(&mut back).await?;
                        Ok::<_, std::io::Error>(back)
                    };
                    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
                        Ok(Ok(back)) if back == chunk => {
                            stats.verified.fetch_add(CHUNK as u64, Ordering::Relaxed);
                        }
                        Ok(Ok(_)) => {
                            stats.corrupted.fetch_add(CHUNK as u64, Ordering::Relaxed);
                            break "bytes came back different".to_string();
                        }
                        Ok(Err(e)) => break format!("io: {e}"),
                        Err(_) => break "timeout: no echo within 10 s".to_string(),
                    }
                    seq += 1;
                    tokio::time::sleep(PACE).await;
                },
                Err(e) => format!("io: connect: {e}"),
            };
            stats
                .breaks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Instant::now(), cause));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }))
}

/// The `seq`th chunk of the stream: a xorshift sequence seeded by `seq` (any lost, duplicated
/// or reordered chunk shows).
fn pattern(seq: u64) -> Vec<u8> {
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..CHUNK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
