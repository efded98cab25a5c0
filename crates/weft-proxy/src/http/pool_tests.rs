//! Pool tests over real sockets: retries of never-processed requests, idle timeouts, the idle
//! cap, retiring endpoints.

use super::*;
use crate::metrics::{Direction, TlsLabel};
use http_body_util::{BodyExt, Full};
use std::{collections::BTreeMap, convert::Infallible};
use tokio::{net::TcpListener, sync::watch};

fn labels(addr: SocketAddr) -> Labels {
    Labels {
        direction: Direction::Outbound,
        authority: None,
        target_addr: addr,
        tls: TlsLabel::NoIdentity("test"),
        dst: Arc::new(BTreeMap::new()),
    }
}

fn request(version: Version, body: &'static [u8]) -> Request<Body> {
    let mut req = Request::post("http://svc.test/x")
        .body(boxed(Full::new(Bytes::from_static(body))))
        .unwrap();
    *req.version_mut() = version;
    req
}

/// POSTs `body` to `addr` over `wire` (HTTP/2 or HTTP/1.1 to match) and returns the response
/// body (the test servers answer with the length of what they received).
async fn post(pool: &Pool, addr: SocketAddr, wire: Wire, body: &'static [u8]) -> String {
    let version = match wire {
        Wire::Http2 => Version::HTTP_2,
        Wire::Http1 => Version::HTTP_11,
    };
    let resp = pool
        .send(addr, wire, request(version, body), &labels(addr))
        .await
        .unwrap_or_else(|e| panic!("POST to {addr} failed: {e}"));
    text(resp).await
}

/// Counts accepted and closed connections; tests await the counts.
#[derive(Clone, Default)]
struct Conns {
    opened: Arc<watch::Sender<usize>>,
    closed: Arc<watch::Sender<usize>>,
}

impl Conns {
    async fn wait_closed(&self, n: usize) {
        let mut rx = self.closed.subscribe();
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|c| *c >= n))
            .await
            .expect("connections did not close in time")
            .unwrap();
    }
    fn opened(&self) -> usize {
        *self.opened.borrow()
    }
    fn closed(&self) -> usize {
        *self.closed.borrow()
    }
}

/// A hyper server (HTTP/1 or HTTP/2) answering `200` with the request body's length.
async fn server(h2: bool) -> (SocketAddr, Conns) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Conns::default();
    let c = conns.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            c.opened.send_modify(|n| *n += 1);
            let c = c.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async {
                    let len = req
                        .into_body()
                        .collect()
                        .await
                        .map_or(0, |b| b.to_bytes().len());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(len.to_string()))))
                });
                let io = TokioIo::new(stream);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(io, svc)
                    .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
                c.closed.send_modify(|n| *n += 1);
            });
        }
    });
    (addr, conns)
}

async fn text(resp: Response<Body>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// An HTTP/2 server that sends GOAWAY before answering each connection's first request
/// (a peer proxy shutting down): the connection then refuses new streams. The next request
/// through the pool must be sent again on a fresh connection, body and all.
#[tokio::test]
async fn h2_peer_going_away_between_requests_loses_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (served_tx, served) = watch::channel(0usize);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let served_tx = served_tx.clone();
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(stream).await.unwrap();
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    conn.graceful_shutdown();
                    let mut body = req.into_body();
                    let mut len = 0;
                    while let Some(Ok(chunk)) = body.data().await {
                        len += chunk.len();
                        let _ = body.flow_control().release_capacity(chunk.len());
                    }
                    let mut send = respond.send_response(Response::new(()), false).unwrap();
                    send.send_data(Bytes::from(len.to_string()), true).unwrap();
                    served_tx.send_modify(|n| *n += 1);
                }
            });
        }
    });
    let pool = Pool::new(Duration::from_secs(1), Metrics::new());
    for (i, body) in [&b"first"[..], b"second!", b"", b"fourth"]
        .iter()
        .enumerate()
    {
        let resp = pool
            .send(
                addr,
                Wire::Http2,
                request(Version::HTTP_2, body),
                &labels(addr),
            )
            .await
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(resp.status(), 200);
        assert_eq!(text(resp).await, body.len().to_string());
    }
    assert_eq!(*served.borrow(), 4);
}

/// A peer proxy that is shutting down serves the streams it has and refuses new ones with
/// REFUSED_STREAM (not processed, RFC 9113 §8.7), then closes: every request must still
/// succeed, sent again on a fresh connection.
#[tokio::test]
async fn h2_refused_stream_is_retried_on_a_fresh_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Conns::default();
    let c = conns.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            c.opened.send_modify(|n| *n += 1);
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(stream).await.unwrap();
                let mut served = false;
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    if served {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        conn.graceful_shutdown();
                        continue;
                    }
                    served = true;
                    let mut send = respond.send_response(Response::new(()), false).unwrap();
                    send.send_data(Bytes::from_static(b"ok"), true).unwrap();
                }
            });
        }
    });
    let pool = Pool::new(Duration::from_secs(1), Metrics::new());
    for i in 0..5 {
        let mut req = Request::get("http://svc.test/x")
            .body(super::super::empty())
            .unwrap();
        *req.version_mut() = Version::HTTP_2;
        let resp = pool
            .send(addr, Wire::Http2, req, &labels(addr))
            .await
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(text(resp).await, "ok");
    }
    assert_eq!(conns.opened(), 5);
}

/// Idle HTTP/1 connections close after the idle timeout.
#[tokio::test]
async fn idle_h1_connections_close_after_the_idle_timeout() {
    let (addr, conns) = server(false).await;
    let limits = PoolLimits {
        h1_idle_timeout: Duration::from_millis(200),
        ..PoolLimits::default()
    };
    let pool = Pool::with_limits(Duration::from_secs(1), limits, Metrics::new());
    let mut before_idle = Instant::now();
    for _ in 0..3 {
        before_idle = Instant::now();
        assert_eq!(post(&pool, addr, Wire::Http1, b"abc").await, "3");
    }
    // Sequential requests reuse one connection.
    assert_eq!(conns.opened(), 1);
    assert_eq!(pool.idle_h1(addr), 1);
    conns.wait_closed(1).await;
    // It went idle after `before_idle`, and a timer never fires early: not closed too soon.
    assert!(before_idle.elapsed() >= Duration::from_millis(200));
    assert_eq!(pool.idle_h1(addr), 0);
    // The next request simply opens a new connection.
    assert_eq!(post(&pool, addr, Wire::Http1, b"ab").await, "2");
    assert_eq!(conns.opened(), 2);
}

/// The idle timeout runs from the last time the connection went back to the pool: a timer set
/// for an earlier idle period does not close a connection used since.
#[tokio::test]
async fn reuse_restarts_the_h1_idle_timeout() {
    let (addr, conns) = server(false).await;
    let limits = PoolLimits {
        h1_idle_timeout: Duration::from_millis(600),
        ..PoolLimits::default()
    };
    let pool = Pool::with_limits(Duration::from_secs(1), limits, Metrics::new());
    assert_eq!(post(&pool, addr, Wire::Http1, b"abc").await, "3");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(post(&pool, addr, Wire::Http1, b"ab").await, "2");
    // 700 ms after it first went idle, 300 ms after the second time: still pooled.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pool.idle_h1(addr), 1);
    assert_eq!(post(&pool, addr, Wire::Http1, b"a").await, "1");
    assert_eq!(conns.opened(), 1);
    // Left idle, it closes.
    conns.wait_closed(1).await;
    assert_eq!(pool.idle_h1(addr), 0);
}

/// More concurrent HTTP/1 requests than the idle cap: the surplus connections close when
/// their responses end.
#[tokio::test]
async fn idle_h1_connections_are_capped_per_endpoint() {
    const CAP: usize = 16;
    let (addr, conns) = server(false).await;
    let limits = PoolLimits {
        max_idle_h1_per_endpoint: CAP,
        ..PoolLimits::default()
    };
    let pool = Pool::with_limits(Duration::from_secs(1), limits, Metrics::new());
    let n = CAP + 4;
    // Hold every response (headers only) so each request needs its own connection.
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(
            pool.send(
                addr,
                Wire::Http1,
                request(Version::HTTP_11, b"x"),
                &labels(addr),
            )
            .await
            .unwrap(),
        );
    }
    assert_eq!(conns.opened(), n);
    for resp in held {
        assert_eq!(text(resp).await, "1");
    }
    conns.wait_closed(4).await;
    assert_eq!(pool.idle_h1(addr), CAP);
    assert_eq!(conns.closed(), 4);
}

/// The idle cap comes from the pool's limits (the `*_MAX_IDLE_CONNS_PER_ENDPOINT` variables):
/// with 0 no HTTP/1 connection is reused, with 1 one is.
#[tokio::test]
async fn idle_h1_cap_follows_the_limits() {
    for (max_idle, opened) in [(0, 3), (1, 1)] {
        let (addr, conns) = server(false).await;
        let limits = PoolLimits {
            max_idle_h1_per_endpoint: max_idle,
            ..PoolLimits::default()
        };
        let pool = Pool::with_limits(Duration::from_secs(1), limits, Metrics::new());
        for _ in 0..3 {
            assert_eq!(post(&pool, addr, Wire::Http1, b"ab").await, "2");
        }
        assert_eq!(conns.opened(), opened, "max idle {max_idle}");
        assert_eq!(pool.idle_h1(addr), max_idle, "max idle {max_idle}");
    }
}

/// An endpoint that left discovery: its HTTP/2 connection closes once its stream ends.
#[tokio::test]
async fn retired_h2_connection_closes_once_idle() {
    let (addr, conns) = server(true).await;
    let pool = Pool::new(Duration::from_secs(1), Metrics::new());
    let resp = pool
        .send(
            addr,
            Wire::Http2,
            request(Version::HTTP_2, b"abcd"),
            &labels(addr),
        )
        .await
        .unwrap();
    pool.retire(addr);
    assert_eq!(pool.h2_endpoints(), 0);
    // The in-flight response still completes.
    assert_eq!(text(resp).await, "4");
    conns.wait_closed(1).await;
}

/// An HTTP/2 connection that carries no request for a whole idle period closes.
#[tokio::test]
async fn unused_h2_connection_closes_after_the_idle_timeout() {
    let (addr, conns) = server(true).await;
    let limits = PoolLimits {
        h2_idle_timeout: Duration::from_millis(100),
        ..PoolLimits::default()
    };
    let pool = Pool::with_limits(Duration::from_secs(1), limits, Metrics::new());
    assert_eq!(post(&pool, addr, Wire::Http2, b"ab").await, "2");
    conns.wait_closed(1).await;
    assert_eq!(pool.h2_endpoints(), 0);
}

/// Pooled connections are per worker (thread per core): requests from two workers open two
/// HTTP/2 connections, and each worker keeps reusing its own; retiring the endpoint drops both.
#[tokio::test]
async fn each_worker_has_its_own_pooled_h2_connection() {
    let (addr, conns) = server(true).await;
    let pool = Pool::new(Duration::from_secs(1), Metrics::new());
    let workers = crate::workers::Workers::start(2).expect("workers");
    // A connection handed to worker 0 (this runtime) and one to worker 1; each sends three
    // requests through the shared pool from its own thread.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut shards = Vec::new();
    for _ in 0..2 {
        let _client = tokio::net::TcpStream::connect(local).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let (pool, done) = (pool.clone(), done_tx.clone());
        let drain = watch::channel(false).1;
        workers.spawn((stream, peer, drain), move |_conn| async move {
            for _ in 0..3 {
                assert_eq!(post(&pool, addr, Wire::Http2, b"abc").await, "3");
            }
            done.send(crate::workers::shard()).unwrap();
        });
        shards.push(done_rx.recv().await.expect("worker done"));
    }
    assert_eq!(shards, vec![0, 1]);
    assert_eq!(conns.opened(), 2, "one HTTP/2 connection per worker");
    assert_eq!(pool.h2_endpoints(), 2);
    pool.retire(addr);
    assert_eq!(pool.h2_endpoints(), 0);
    conns.wait_closed(2).await;
}
