//! The load generator.
//!
//! Fixed rate (`--rate R`, open loop): a dispatcher computes the intended send time of request `i`
//! as `start + i/R` and hands it to the connections; latency is measured from that intended time,
//! not from when a connection got round to sending it. A stalled proxy therefore shows up as
//! queueing delay on every request that should have been sent during the stall, instead of being
//! hidden by a client that politely waited (coordinated omission, as wrk2 and `oha
//! --latency-correction` avoid it). HTTP/1.1 uses a fixed pool of keep-alive connections fed from
//! one queue; HTTP/2 multiplexes every request as a stream over `--connections` connections.
//!
//! Maximum throughput (`--rate 0`, closed loop): every connection (every stream slot for HTTP/2)
//! sends back to back; the result is the completed requests per second.
//!
//! Requests sent during `--warmup` are counted in `total_ok` (the harness divides proxy CPU by it)
//! but not in the latency histogram.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    H1,
    H2,
}

#[derive(clap::Args)]
pub struct Args {
    /// Where to send (the backend, or a proxy's listener).
    #[arg(long)]
    addr: SocketAddr,
    /// Host header / :authority.
    #[arg(long, default_value = "backend.default.svc.cluster.local:8080")]
    authority: String,
    #[arg(long, value_enum, default_value = "h1")]
    proto: Proto,
    /// Requests per second; 0 = closed-loop maximum throughput.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Measured seconds (after the warmup).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Connections (default: HTTP/1.1 32, HTTP/2 fixed-rate 1, HTTP/2 maximum 2).
    #[arg(long)]
    connections: Option<usize>,
    /// Closed loop, HTTP/2: concurrent streams per connection.
    #[arg(long, default_value_t = 16)]
    streams: usize,
    /// A request not answered within this many seconds is an error.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

/// What every request shares.
struct Shared {
    authority: String,
    timeout: Duration,
    stats: Mutex<Stats>,
}

struct Stats {
    latency_us: Histogram<u64>,
    /// Successful responses in the measured window / in total (warmup included).
    ok: u64,
    total_ok: u64,
    errors: u64,
    first_error: Option<String>,
}

#[derive(Clone)]
enum Conn {
    H1(Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    println!("{}", measure(&args).await?);
    Ok(())
}

/// Runs the load `args` describe and returns the result line.
pub async fn measure(args: &Args) -> anyhow::Result<serde_json::Value> {
    let connections = args
        .connections
        .unwrap_or(match (args.proto, args.rate > 0.0) {
            (Proto::H1, _) => 32,
            (Proto::H2, true) => 1,
            (Proto::H2, false) => 2,
        });
    let shared = Arc::new(Shared {
        authority: args.authority.clone(),
        timeout: Duration::from_secs_f64(args.timeout),
        stats: Mutex::new(Stats {
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3)?,
            ok: 0,
            total_ok: 0,
            errors: 0,
            first_error: None,
        }),
    });
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(connect(args.addr, args.proto).await?);
    }
    let cpu_before = crate::self_cpu_seconds();
    let issued = if args.rate > 0.0 {
        fixed_rate(args, &shared, conns).await
    } else {
        closed_loop(args, &shared, conns).await
    };
    let cpu = crate::self_cpu_seconds() - cpu_before;
    let stats = shared
        .stats
        .lock()
        .map_err(|_| anyhow::anyhow!("stats lock poisoned"))?;
    let ms = |q: f64| stats.latency_us.value_at_quantile(q) as f64 / 1000.0;
    let line = serde_json::json!({
        "mode": if args.rate > 0.0 { "fixed" } else { "max" },
        "proto": match args.proto { Proto::H1 => "h1", Proto::H2 => "h2" },
        "rate": args.rate,
        "duration_s": args.duration,
        "connections": connections,
        "issued": issued,
        "ok": stats.ok,
        "total_ok": stats.total_ok,
        "errors": stats.errors,
        "first_error": stats.first_error,
        "achieved_rps": stats.ok as f64 / args.duration,
        "p50_ms": ms(0.5),
        "p90_ms": ms(0.9),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": stats.latency_us.max() as f64 / 1000.0,
        "cpu_s": cpu,
    });
    Ok(line)
}

/// Open loop. Returns how many requests were issued in the measured window.
async fn fixed_rate(args: &Args, shared: &Arc<Shared>, conns: Vec<Conn>) -> u64 {
    let interval = 1.0 / args.rate;
    let warmup_n = (args.warmup * args.rate).round() as u64;
    let total_n = warmup_n + (args.duration * args.rate).round() as u64;
    let start = Instant::now() + Duration::from_millis(10);
    let mut workers = Vec::new();
    // HTTP/1.1: one queue, each connection takes the next intended time when it is free.
    let (tx, rx) = mpsc::unbounded_channel::<(Instant, bool)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    if args.proto == Proto::H1 {
        for conn in &conns {
            let (conn, rx, shared) = (conn.clone(), rx.clone(), shared.clone());
            let addr = args.addr;
            workers.push(tokio::spawn(async move {
                let mut conn = conn;
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some((intended, measured)) = next else {
                        break;
                    };
                    if !one(&shared, &conn, intended, measured).await {
                        // A broken connection is replaced; the queue keeps its intended times.
                        if let Ok(fresh) = connect(addr, Proto::H1).await {
                            conn = fresh;
                        }
                    }
                }
            }));
        }
    }
    // The dispatcher is a plain thread sleeping with nanosleep (timer slack 1 ns): tokio's timer
    // ticks in whole milliseconds, which would add up to 1 ms of the client's own lateness to
    // every request and drown the sub-millisecond differences being measured. Lateness that is
    // left is still charged to the request, as it must be.
    let handle = tokio::runtime::Handle::current();
    let (proto, shared_d, conns_d) = (args.proto, shared.clone(), conns.clone());
    let start_std = start.into_std();
    let dispatcher = tokio::task::spawn_blocking(move || {
        // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
        let mut streams: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        for i in 0..total_n {
            let intended = start_std + Duration::from_secs_f64(i as f64 * interval);
            let now = std::time::Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            let intended = Instant::from_std(intended);
            let measured = i >= warmup_n;
            match proto {
                Proto::H1 => {
                    let _ = tx.send((intended, measured));
                }
                Proto::H2 => {
                    let conn = conns_d[(i as usize) % conns_d.len()].clone();
                    let shared = shared_d.clone();
                    streams.push(handle.spawn(async move {
                        one(&shared, &conn, intended, measured).await;
                    }));
                    // Keep the handle list short: finished streams are dropped as we go.
                    if streams.len() > 4096 {
                        streams.retain(|s| !s.is_finished());
                    }
                }
            }
        }
        // Closing the queue lets the HTTP/1.1 workers finish once it is drained.
        drop(tx);
        streams
    });
    let streams = dispatcher.await.unwrap_or_default();
    let drain = async {
        for worker in workers.into_iter().chain(streams) {
            let _ = worker.await;
        }
    };
    // Every request has its own timeout; this bounds a queue that is still long at the end.
    let _ = tokio::time::timeout(shared.timeout + Duration::from_secs(10), drain).await;
    total_n - warmup_n
}

/// Closed loop: every slot sends back to back until the end. Returns the requests issued.
async fn closed_loop(args: &Args, shared: &Arc<Shared>, conns: Vec<Conn>) -> u64 {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let slots = match args.proto {
        Proto::H1 => 1,
        Proto::H2 => args.streams.max(1),
    };
    let mut tasks = Vec::new();
    for conn in conns {
        for _ in 0..slots {
            let (conn, shared) = (conn.clone(), shared.clone());
            let addr = args.addr;
            let proto = args.proto;
            tasks.push(tokio::spawn(async move {
                let mut conn = conn;
                let mut issued = 0u64;
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    let measured = now >= measure_from;
                    issued += u64::from(measured);
                    if !one(&shared, &conn, now, measured).await && proto == Proto::H1 {
                        if let Ok(fresh) = connect(addr, proto).await {
                            conn = fresh;
                        }
                    }
                }
                issued
            }));
        }
    }
    let mut issued = 0;
    for task in tasks {
        issued += task.await.unwrap_or(0);
    }
    issued
}

/// Sends one request and records it. Returns false when the connection should be replaced.
async fn one(shared: &Shared, conn: &Conn, intended: Instant, measured: bool) -> bool {
    let outcome = tokio::time::timeout(shared.timeout, send(shared, conn)).await;
    let latency = intended.elapsed();
    let mut stats = match shared.stats.lock() {
        Ok(stats) => stats,
        Err(_) => return false,
    };
    let result = match outcome {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!("timed out after {:?}", shared.timeout)),
    };
    match result {
        Ok(()) => {
            stats.total_ok += 1;
            if measured {
                stats.ok += 1;
                let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
                stats.latency_us.saturating_record(us.max(1));
            }
            true
        }
        Err(error) => {
            stats.errors += 1;
            stats
                .first_error
                .get_or_insert_with(|| format!("{error:#}"));
            false
        }
    }
}

async fn send(shared: &Shared, conn: &Conn) -> anyhow::Result<()> {
    let response = match conn {
        Conn::H1(sender) => {
            let request = Request::get("/")
                .header(hyper::header::HOST, &shared.authority)
                .body(Empty::<Bytes>::new())?;
            let mut sender = sender.lock().await;
            sender.ready().await?;
            sender.send_request(request).await?
        }
        Conn::H2(sender) => {
            let request =
                Request::get(format!("http://{}/", shared.authority)).body(Empty::<Bytes>::new())?;
            let mut sender = sender.clone();
            sender.ready().await?;
            sender.send_request(request).await?
        }
    };
    let status = response.status();
    // The body is read in full: a request is done when the last byte arrived.
    response.into_body().collect().await?;
    anyhow::ensure!(status == hyper::StatusCode::OK, "status {status}");
    Ok(())
}

async fn connect(addr: SocketAddr, proto: Proto) -> anyhow::Result<Conn> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let io = TokioIo::new(stream);
    Ok(match proto {
        Proto::H1 => {
            let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(connection);
            Conn::H1(Arc::new(tokio::sync::Mutex::new(sender)))
        }
        Proto::H2 => {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            Conn::H2(sender)
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use http_body_util::Full;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    fn args(addr: SocketAddr, proto: Proto, rate: f64, duration: f64, warmup: f64) -> Args {
        Args {
            addr,
            authority: "backend.default.svc.cluster.local:8080".into(),
            proto,
            rate,
            duration,
            warmup,
            connections: None,
            streams: 4,
            timeout: 5.0,
        }
    }

    async fn backend() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(crate::backend::serve_http(listener));
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fixed_rate_sends_rate_times_duration_over_http1_and_http2() {
        let addr = backend().await;
        for proto in [Proto::H1, Proto::H2] {
            let line = measure(&args(addr, proto, 200.0, 0.5, 0.2))
                .await
                .expect("load");
            assert_eq!(line["issued"], 100, "{line}");
            assert_eq!(line["ok"], 100, "{line}");
            assert_eq!(line["total_ok"], 140, "warmup requests are counted: {line}");
            assert_eq!(line["errors"], 0, "{line}");
            assert!(line["p50_ms"].as_f64().unwrap_or(0.0) > 0.0, "{line}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_reports_throughput() {
        let addr = backend().await;
        let line = measure(&args(addr, Proto::H2, 0.0, 0.3, 0.1))
            .await
            .expect("load");
        assert_eq!(line["mode"], "max");
        assert_eq!(line["errors"], 0, "{line}");
        assert!(
            line["achieved_rps"].as_f64().unwrap_or(0.0) > 100.0,
            "{line}"
        );
    }

    /// One 200 ms stall on a single connection at 100 req/s: the ~20 requests due during it must
    /// be charged their wait (an open loop), not just the one that stalled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stall_is_charged_to_every_request_due_during_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let stalled = Arc::new(AtomicBool::new(false));
            while let Ok((stream, _)) = listener.accept().await {
                let stalled = stalled.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let stalled = stalled.clone();
                        async move {
                            if !stalled.swap(true, Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let mut a = args(addr, Proto::H1, 100.0, 1.0, 0.0);
        a.connections = Some(1);
        let line = measure(&a).await.expect("load");
        assert_eq!(line["ok"], 100, "{line}");
        // More than 10% of the requests waited over 50 ms behind the stall.
        assert!(line["p90_ms"].as_f64().unwrap_or(0.0) >= 50.0, "{line}");
        assert!(line["max_ms"].as_f64().unwrap_or(0.0) >= 200.0, "{line}");
    }
}
