//! Connection reuse under steady concurrency (issue 15): 64 keep-alive clients sending requests
//! back to back for a few seconds make the proxies open at most 64 + a small constant connections
//! to the app, on every HTTP/1.1 hop the proxies own:
//! - HTTP/1.1 carried over HTTP/2 between a proxy pair, downgraded to HTTP/1.1 towards the app
//!   (the inbound pool);
//! - HTTP/1.1 straight into the inbound proxy (the inbound pool, without the HTTP/2 hop);
//! - HTTP/1.1 from the outbound proxy to an endpoint outside discovery (the outbound pool).
//!
//! Each case asserts both the app's own count of accepted connections and the proxy's
//! `tcp_open_total{peer="dst"}` for the app's address (the metric docs/proxy-config.md names for
//! connection reuse), so the metric is checked against the truth too.

mod support;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use support::apps::EchoServer;
use support::clients::{empty, proxy_request, Reply, H1};
use support::{authority, service, workload_doc, write_docs, Control, Proxy, ProxySpec, TempDir};

/// Concurrent keep-alive clients, as in the measurement that found the churn.
const CLIENTS: usize = 64;
/// How long every client sends requests back to back.
const LOAD: Duration = Duration::from_secs(3);
/// Connections beyond one per client that a case may open: a handful of connections can be
/// replaced while a response is still finishing when the next request arrives.
const SLACK: u64 = 8;

/// `CLIENTS` keep-alive connections to `addr`, each sending `request()` back to back for `LOAD`.
/// Returns the number of successful responses; panics on any failure.
async fn load(addr: SocketAddr, request: fn() -> http::Request<support::clients::Body>) -> u64 {
    let ok = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let ok = ok.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = H1::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("client {i}: connect {addr}: {e}"));
            let end = tokio::time::Instant::now() + LOAD;
            while tokio::time::Instant::now() < end {
                let reply = Reply::read(
                    conn.send(request())
                        .await
                        .unwrap_or_else(|e| panic!("client {i}: request through {addr}: {e}")),
                )
                .await
                .unwrap_or_else(|e| panic!("client {i}: response body: {e}"));
                assert_eq!(reply.status, 200, "client {i}: {}", reply.describe());
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    ok.load(Ordering::Relaxed)
}

/// Asserts that `echo` accepted at most `CLIENTS + SLACK` connections during a load of
/// `requests` requests, and that `proxy` counted the same connections to it.
async fn assert_reused(
    case: &str,
    echo: &EchoServer,
    proxy: &Proxy,
    direction: &str,
    requests: u64,
) {
    let accepted = echo.connections.get();
    eprintln!("{case}: {requests} requests, {accepted} connections to the app");
    // Enough requests that churn would show: with no reuse there would be one connection per
    // request or per two.
    assert!(
        requests >= 4 * (CLIENTS as u64 + SLACK),
        "{case}: only {requests} requests completed; the load is too small to show churn"
    );
    assert!(
        accepted >= 1 && accepted <= CLIENTS as u64 + SLACK,
        "{case}: {accepted} connections opened to the app for {requests} requests \
         from {CLIENTS} keep-alive clients (at most {} expected)",
        CLIENTS as u64 + SLACK
    );
    let target = echo.addr.to_string();
    let opened = proxy
        .metric_sum(
            "tcp_open_total",
            &[
                ("direction", direction),
                ("peer", "dst"),
                ("target_addr", target.as_str()),
            ],
        )
        .await;
    assert_eq!(
        opened, accepted as f64,
        "{case}: the proxy's tcp_open_total{{peer=\"dst\"}} for {target} disagrees with the app's count"
    );
}

/// HTTP/1.1 → client proxy → HTTP/2 (l5d-orig-proto) → server proxy → HTTP/1.1 → app, and
/// HTTP/1.1 → server proxy → app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_keeps_app_connections_open_under_concurrency() {
    let tmp = TempDir::new("app-connections-inbound");
    let store = tmp.subdir("store");
    write_docs(
        &store,
        "services.yaml",
        &[service("echo", "backend", 8080, "http")],
    );
    let control = Control::start(&store, tmp.path()).await;
    let echo = EchoServer::start("backend-1").await;
    let server = ProxySpec::new("backend-1", control.grpc)
        .forward(&[echo.port()])
        .spawn(tmp.path())
        .await;
    let doc = workload_doc(
        "default",
        "backend-1",
        &[("app", "backend")],
        "127.0.0.1",
        &[("http", server.forward_addr(echo.port()).port())],
    );
    control.register("default", "backend-1", &doc).await;
    let client = ProxySpec::new("client", control.grpc)
        .spawn(tmp.path())
        .await;

    fn meshed() -> http::Request<support::clients::Body> {
        proxy_request("GET", &authority("echo", 8080), "/", empty())
    }
    let requests = load(client.outbound, meshed).await;
    assert!(
        echo.orig_protos() == 0,
        "l5d-orig-proto reached the app: the requests did not take the HTTP/2 hop as expected"
    );
    assert_reused(
        "HTTP/1.1 over HTTP/2 between proxies",
        &echo,
        &server,
        "inbound",
        requests,
    )
    .await;
    // The requests crossed the proxies as HTTP/2: one multiplexed connection, not one per client.
    let h2_conns = server
        .metric_sum(
            "tcp_open_total",
            &[("direction", "inbound"), ("peer", "src")],
        )
        .await;
    assert!(
        h2_conns <= 2.0,
        "the client proxy opened {h2_conns} connections to the server proxy (one HTTP/2 expected)"
    );

    // Straight into the inbound proxy's forward port as HTTP/1.1: a fresh app, a fresh count.
    let direct = EchoServer::start("backend-2").await;
    let server2 = ProxySpec::new("backend-2", control.grpc)
        .forward(&[direct.port()])
        .spawn(tmp.path())
        .await;
    fn plain() -> http::Request<support::clients::Body> {
        http::Request::builder()
            .uri("/")
            .header("host", "backend-2")
            .body(empty())
            .expect("request")
    }
    let requests = load(server2.forward_addr(direct.port()), plain).await;
    assert_reused(
        "HTTP/1.1 into the inbound proxy",
        &direct,
        &server2,
        "inbound",
        requests,
    )
    .await;
}

/// HTTP/1.1 → outbound proxy → HTTP/1.1 → an endpoint outside discovery (forwarded to the original
/// address through the outbound pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_keeps_endpoint_connections_open_under_concurrency() {
    let tmp = TempDir::new("app-connections-outbound");
    let store = tmp.subdir("store");
    write_docs(&store, "services.yaml", &[]);
    let control = Control::start(&store, tmp.path()).await;
    let echo = EchoServer::start("outside").await;
    let client = ProxySpec::new("client", control.grpc)
        .spawn(tmp.path())
        .await;
    // The request names the endpoint by IP:port; discovery rejects it (not a mesh address) and
    // the proxy forwards to it as it is.
    static TARGET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TARGET.set(echo.addr.to_string()).expect("set once");
    fn outside() -> http::Request<support::clients::Body> {
        proxy_request("GET", TARGET.get().expect("target"), "/", empty())
    }
    let requests = load(client.outbound, outside).await;
    assert_reused(
        "HTTP/1.1 from the outbound proxy",
        &echo,
        &client,
        "outbound",
        requests,
    )
    .await;
}
