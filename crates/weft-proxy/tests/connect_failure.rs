//! An endpoint no connection can be made to costs no request and no stream: with one of three
//! endpoints refusing connections and one accepting TCP but never answering TLS, every HTTP
//! request and every opaque connection through a client proxy with identity reaches the live
//! endpoint (no retry policy: nothing was sent to the dead ones, so the proxy picks again). The
//! dead endpoints leave rotation (`outbound_http_balancer_endpoints{endpoint_state="pending"}`)
//! and stay out while they reconnect in the background, across client connections; a service
//! whose only endpoint refuses fails with that cause once the fail-fast timeout has passed.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ca::Ca;
use common::hostile;
use common::mesh::{self, Hint, Scripted};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WEB: &str = "web.default.serviceaccount.identity.weft.cluster.local";
const CLIENT: &str = "client.default.serviceaccount.identity.weft.cluster.local";
const DB: &str = "db.default.svc.cluster.local:5432";
/// Bound for waits on events; not a timing assertion.
const LIMIT: Duration = Duration::from_secs(20);

/// An address nobody listens on.
async fn refusing() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A listener that accepts connections and never sends a byte: a TLS handshake to it times out.
async fn silent() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

/// One opaque round trip through `upstream`: what came back.
async fn echo(upstream: SocketAddr, msg: String) -> String {
    let mut s = TcpStream::connect(upstream).await.unwrap();
    s.write_all(msg.as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut got))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

/// One HTTP/1.1 GET for `authority` through the outbound listener (explicit mode): its status
/// and `l5d-proxy-error`.
async fn get(outbound: SocketAddr, authority: &str) -> (u16, Option<String>) {
    let mut s = TcpStream::connect(outbound).await.unwrap();
    let req = format!("GET / HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut resp))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let error = text
        .lines()
        .find_map(|l| l.strip_prefix("l5d-proxy-error: "))
        .map(str::to_string);
    (status, error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_streams_go_around_endpoints_that_cannot_be_connected_to() {
    let ca = Arc::new(Ca::new());
    let (app, tcp) = (hostile::start_app().await, common::tcp_echo_app().await);
    let cp = mesh::control_plane(&ca, Scripted::default()).await;
    let forward = format!("{}=0", app.port());
    let server = mesh::proxy(
        &ca,
        &cp,
        WEB,
        &[("WEFT_PROXY_INBOUND_FORWARD_PORTS", forward.as_str())],
    )
    .await;
    let web = server.listening.forward[0].1;
    let inbound = server.listening.inbound.port();
    let (refused, silent) = (refusing().await, silent().await);
    let http = |addr| mesh::endpoint(addr, WEB, Hint::H2, None, None);
    // Opaque transport: to the server proxy's inbound port for the live one, to the dead
    // endpoints' own ports for the others.
    let opaque = |addr: SocketAddr, port| mesh::endpoint(addr, WEB, Hint::Opaque, Some(port), None);
    let names = Scripted::new([
        (
            "web.default.svc.cluster.local:8080".to_string(),
            vec![http(web), http(refused), http(silent)],
        ),
        (
            DB.to_string(),
            vec![
                opaque(tcp, inbound),
                opaque(refused, refused.port()),
                opaque(silent, silent.port()),
            ],
        ),
        (
            "gone.default.svc.cluster.local:8080".to_string(),
            vec![http(refused)],
        ),
    ]);
    let cp = mesh::control_plane(&ca, names).await;
    let upstream = format!("{DB}=0");
    let client = mesh::proxy(
        &ca,
        &cp,
        CLIENT,
        &[("WEFT_PROXY_OUTBOUND_UPSTREAMS", upstream.as_str())],
    )
    .await;
    let outbound = client.listening.outbound;
    let db = client.listening.upstreams[0].1;

    // Concurrent first requests (they share the connects that fail), then a steady stream
    // while the dead endpoints reconnect in the background. Each request is a new client
    // connection: the balancer, and what it learnt, outlives them.
    let first: Vec<_> = (0..20)
        .map(|_| tokio::spawn(get(outbound, "web:8080")))
        .collect();
    for r in first {
        assert_eq!(r.await.unwrap(), (200, None), "a first request");
    }
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(2) || sent < 100 {
        assert_eq!(
            get(outbound, "web:8080").await,
            (200, None),
            "request {sent}"
        );
        sent += 1;
    }
    let streams: Vec<_> = (0..20)
        .map(|i| tokio::spawn(echo(db, format!("ping {i}"))))
        .collect();
    for (i, s) in streams.into_iter().enumerate() {
        assert_eq!(s.await.unwrap(), format!("got:ping {i}"), "stream {i}");
    }

    // Two of three endpoints out of rotation (the series of web's balancer).
    let (_, metrics) = common::admin(client.listening.admin, "GET", "/metrics").await;
    let pending = metrics
        .lines()
        .filter(|l| l.starts_with("outbound_http_balancer_endpoints{"))
        .filter(|l| l.contains("backend_name=\"web\"") && l.contains("endpoint_state=\"pending\""))
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(pending, ["2"], "{metrics}");

    // Only a refusing endpoint: the request waits the fail-fast timeout for one to come back,
    // then fails with the cause.
    let (status, error) = get(outbound, "gone:8080").await;
    assert_eq!(status, 502);
    assert_eq!(
        error.as_deref(),
        Some(format!("connection refused by {refused}").as_str())
    );

    for running in [client, server] {
        running.shutdown();
        running.wait().await;
    }
}
