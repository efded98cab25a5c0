//! Edges of the data path through real proxies, explicit mode:
//! - `CONNECT host:port` to the outbound listener (an `HTTPS_PROXY` client): the proxy answers
//!   200 itself and relays the tunnel as opaque TCP: to a server-speaks-first TCP service, to
//!   the HTTP echo app (an HTTP/1.1 request inside the tunnel), and to an address discovery
//!   rejects (forwarded as-is); the same as a CONNECT stream of an HTTP/2 connection;
//! - an endpoint's proxy restarting between requests: no request fails;
//! - an application port that refuses connections: a quick 502 with `l5d-proxy-error`, and the
//!   peer's shared HTTP/2 connection keeps working for the other streams and later requests;
//! - the `/metrics` of both proxies after the tunnels (HTTP and opaque TCP, errors among them)
//!   read by the exposition format's reference parser, `promtool check metrics` (Debian's
//!   `prometheus` package): no parse error, no lint finding but the deliberate ones.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::apps::{EchoServer, Greeter};
use support::clients::{empty, h2_request, proxy_request, Reply, H1, H2};
use support::{
    authority, free_port, service, which, workload_doc, write_docs, Control, Proxy, ProxySpec,
    ServiceDoc, TempDir, SOON,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::config;

/// Sends `CONNECT target` on a fresh connection to `proxy` and reads the response head byte by
/// byte (so no tunnel byte is consumed). Returns the status line and the stream.
async fn connect_tunnel(proxy: SocketAddr, target: &str) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(proxy).await.expect("connect to proxy");
    let head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("write CONNECT");
    let mut got = Vec::new();
    let read_head = async {
        while !got.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = stream.read(&mut byte).await.expect("read CONNECT response");
            assert!(n == 1, "proxy closed during the CONNECT response: {got:?}");
            got.push(byte[0]);
        }
    };
    tokio::time::timeout(SOON, read_head)
        .await
        .expect("CONNECT response in time");
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text.lines().next().unwrap_or_default().to_string();
    (status, stream)
}

/// Reads exactly `n` bytes within a short bound.
async fn read_n(stream: &mut TcpStream, n: usize, within: Duration) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(within, stream.read_exact(&mut buf))
        .await
        .expect("bytes in time")
        .expect("read");
    buf
}

/// Lint findings kept on purpose: Linkerd's metric names, which dashboards and queries written
/// for Linkerd use as they are (`docs/proxy-config.md`, Metrics).
const DELIBERATE_LINTS: &[&str] = &[
    "response_latency_ms metric names should not contain abbreviated units",
    "tcp_connection_duration_ms metric names should not contain abbreviated units",
];

/// Feeds `proxy`'s scrape to `promtool check metrics`: exit 0 (clean) or 3 (lint findings only),
/// and every finding deliberate. Exit 1 is a parse error.
async fn assert_promtool_accepts(promtool: &Path, who: &str, proxy: &Proxy) {
    let text = proxy.metrics().await;
    let mut child = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start promtool");
    let mut stdin = child.stdin.take().expect("promtool stdin");
    stdin
        .write_all(text.as_bytes())
        .await
        .expect("feed promtool");
    drop(stdin);
    let out = child.wait_with_output().await.expect("promtool output");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let problems: Vec<&str> = printed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !DELIBERATE_LINTS.contains(l))
        .collect();
    assert!(
        matches!(out.status.code(), Some(0 | 3)) && problems.is_empty(),
        "promtool on the {who} proxy's scrape ({}): {printed}\n--- scrape ---\n{text}",
        out.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_reach_tcp_and_http_services() {
    let tmp = TempDir::new("connect");
    let store = tmp.subdir("store");
    write_docs(
        &store,
        "services.yaml",
        &[
            service("echo", "backend", 8080, "http"),
            ServiceDoc {
                name: "greet",
                app: "backend",
                port: 2525,
                target: "greet",
                app_protocol: None,
                opaque: true,
                cluster_ip: None,
            }
            .yaml(),
        ],
    );
    let control = Control::start(&store, tmp.path()).await;
    let echo = EchoServer::start("backend-1").await;
    let greeter = Greeter::start().await;
    let server = ProxySpec::new("backend-1", control.grpc)
        .forward(&[echo.port(), greeter.addr.port()])
        // The greeter speaks first: its inbound port is opaque, so no detection wait.
        .env(
            config::ENV_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION,
            &greeter.addr.port().to_string(),
        )
        .env(config::ENV_INBOUND_DETECT_TIMEOUT, "10s")
        .spawn(tmp.path())
        .await;
    let doc = workload_doc(
        "default",
        "backend-1",
        &[("app", "backend")],
        "127.0.0.1",
        &[
            ("http", server.forward_addr(echo.port()).port()),
            ("greet", server.forward_addr(greeter.addr.port()).port()),
        ],
    );
    control.register("default", "backend-1", &doc).await;
    let client = ProxySpec::new("client", control.grpc)
        .env(config::ENV_OUTBOUND_DETECT_TIMEOUT, "10s")
        .spawn(tmp.path())
        .await;

    // 1. A server-speaks-first TCP service through the mesh: the greeting arrives at once.
    for target in [authority("greet", 2525), "greet:2525".to_string()] {
        let (status, mut tunnel) = connect_tunnel(client.outbound, &target).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{target}: {status}");
        let greeting = read_n(&mut tunnel, Greeter::GREETING.len(), Duration::from_secs(3)).await;
        assert_eq!(greeting, Greeter::GREETING);
        tunnel.write_all(b"ping over the tunnel\n").await.unwrap();
        let echoed = read_n(&mut tunnel, 21, Duration::from_secs(3)).await;
        assert_eq!(echoed, b"ping over the tunnel\n");
    }

    // 1b. The same as a CONNECT stream of an HTTP/2 connection: the stream is the tunnel.
    let mut h2 = H2::connect(client.outbound)
        .await
        .expect("HTTP/2 to the proxy");
    let connect = hyper::Request::connect(authority("greet", 2525))
        .body(empty())
        .unwrap();
    let resp = h2.send(connect).await.expect("CONNECT over HTTP/2");
    assert_eq!(resp.status(), 200);
    let mut tunnel = hyper_util::rt::TokioIo::new(
        hyper::upgrade::on(resp)
            .await
            .expect("the CONNECT stream is a tunnel"),
    );
    let mut greeting = vec![0; Greeter::GREETING.len()];
    tokio::time::timeout(Duration::from_secs(3), tunnel.read_exact(&mut greeting))
        .await
        .expect("the greeting in time")
        .unwrap();
    assert_eq!(greeting, Greeter::GREETING);
    tunnel.write_all(b"ping over the stream\n").await.unwrap();
    let mut echoed = vec![0; 21];
    tokio::time::timeout(Duration::from_secs(3), tunnel.read_exact(&mut echoed))
        .await
        .expect("the echo in time")
        .unwrap();
    assert_eq!(echoed, b"ping over the stream\n");

    // 2. Plain HTTP/1.1 inside a tunnel to the echo app (through the peer's inbound proxy).
    let (status, tunnel) = connect_tunnel(client.outbound, &authority("echo", 8080)).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut h1 = H1::handshake(tunnel).await.expect("HTTP/1.1 in the tunnel");
    for path in ["/first", "/second"] {
        let req = hyper::Request::get(path)
            .header("host", authority("echo", 8080))
            .body(empty())
            .unwrap();
        let reply = Reply::read(h1.send(req).await.expect("request in the tunnel"))
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.describe());
        assert_eq!(reply.header("x-echo-path"), path);
        assert_eq!(reply.header("x-echo-version"), "HTTP/1.1");
    }
    assert_eq!(echo.orig_protos(), 0);

    // 3. An address discovery rejects (not a service or workload address) goes straight to
    // host:port. (A bare `localhost` would be a short name: `localhost.default.svc...`.)
    let direct = format!("127.0.0.1:{}", greeter.addr.port());
    let (status, mut tunnel) = connect_tunnel(client.outbound, &direct).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let greeting = read_n(&mut tunnel, Greeter::GREETING.len(), Duration::from_secs(3)).await;
    assert_eq!(greeting, Greeter::GREETING);

    // 4. Nothing listening: an error response instead of 200, with the proxy's reason.
    let (status, _) = connect_tunnel(client.outbound, &format!("127.0.0.1:{}", free_port())).await;
    assert!(status.starts_with("HTTP/1.1 502"), "{status}");

    // The tunnels count as requests on the client's outbound side.
    let counted = client
        .metric_sum(
            "request_total",
            &[("direction", "outbound"), ("dst_service", "greet")],
        )
        .await;
    assert!(counted >= 2.0, "greet tunnels counted: {counted}");

    // 5. Both scrapes, now holding HTTP and TCP series, pass the reference parser.
    let Some(promtool) = which("promtool") else {
        support::skip_or_fail("promtool is not installed (apt-get install prometheus)");
        return;
    };
    support::eventually(
        "the server proxy counted the tunnel's HTTP",
        SOON,
        || async {
            let n = server
                .metric_sum("response_total", &[("direction", "inbound")])
                .await;
            (n >= 2.0).then_some(())
        },
    )
    .await;
    let scrape = server.metrics().await;
    for family in ["response_latency_ms_bucket{", "tcp_read_bytes_total{"] {
        assert!(scrape.contains(family), "no {family} in:\n{scrape}");
    }
    assert_promtool_accepts(&promtool, "client", &client).await;
    assert_promtool_accepts(&promtool, "server", &server).await;
}

/// Control plane, the echo app behind a proxy on a FIXED forward port (so it can restart in
/// place), and a client proxy.
async fn restart_mesh(tmp: &TempDir, forward_port: u16) -> (Control, EchoServer, Proxy, Proxy) {
    let store = tmp.subdir("store");
    write_docs(
        &store,
        "services.yaml",
        &[service("echo", "backend", 8080, "http")],
    );
    let control = Control::start(&store, tmp.path()).await;
    let echo = EchoServer::start("backend-1").await;
    let server = backend_proxy(tmp, &control, &echo, forward_port, 0).await;
    let doc = workload_doc(
        "default",
        "backend-1",
        &[("app", "backend")],
        "127.0.0.1",
        &[("http", forward_port)],
    );
    control.register("default", "backend-1", &doc).await;
    let client = ProxySpec::new("client", control.grpc)
        .spawn(tmp.path())
        .await;
    (control, echo, server, client)
}

async fn backend_proxy(
    tmp: &TempDir,
    control: &Control,
    echo: &EchoServer,
    forward_port: u16,
    generation: usize,
) -> Proxy {
    ProxySpec::new(&format!("backend-1-gen{generation}"), control.grpc)
        .env(config::ENV_POLICY_WORKLOAD, "default:backend-1")
        .env(
            config::ENV_INBOUND_FORWARD_PORTS,
            &format!("{}={forward_port}", echo.port()),
        )
        .spawn(tmp.path())
        .await
}

/// The endpoint's proxy goes away and comes back on the same address between requests: the
/// client proxy's pooled HTTP/2 connection to it is dead; every request must still succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_proxy_restart_between_requests_fails_nothing() {
    let tmp = TempDir::new("restart");
    let forward_port = free_port();
    let (control, echo, mut server, client) = restart_mesh(&tmp, forward_port).await;
    let mut conn = H1::connect(client.outbound).await.unwrap();
    let target = authority("echo", 8080);
    let mut sent = 0;
    for generation in 1..=4 {
        for _ in 0..3 {
            let req = proxy_request("GET", &target, &format!("/r{sent}"), empty());
            let reply = Reply::read(conn.send(req).await.expect("request"))
                .await
                .unwrap();
            assert_eq!(reply.status, 200, "request {sent}: {}", reply.describe());
            sent += 1;
        }
        // SIGTERM: the proxy drains (GOAWAY on its HTTP/2 connections) and exits.
        server.proc.signal(libc::SIGTERM);
        assert!(server.proc.wait(SOON).await.is_some(), "proxy did not exit");
        server = backend_proxy(&tmp, &control, &echo, forward_port, generation).await;
    }
    let req = proxy_request("GET", &target, "/last", empty());
    let reply = Reply::read(conn.send(req).await.expect("request"))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.describe());
    assert_eq!(echo.requests.get(), sent + 1);
}

/// The application is down: requests get a 502 from the inbound proxy quickly, with the reason
/// in `l5d-proxy-error`, and the peer's HTTP/2 connection is not torn down by it — concurrent
/// streams on it all get their answer, and once the app is up the same connection serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_app_answers_502_and_keeps_the_shared_h2_connection() {
    let tmp = TempDir::new("refused");
    let store = tmp.subdir("store");
    write_docs(
        &store,
        "services.yaml",
        &[service("echo", "backend", 8080, "http")],
    );
    let control = Control::start(&store, tmp.path()).await;
    // Reserve the app port but do not listen yet: connections are refused.
    let app_port = free_port();
    let server = ProxySpec::new("backend-1", control.grpc)
        .forward(&[app_port])
        .spawn(tmp.path())
        .await;
    let doc = workload_doc(
        "default",
        "backend-1",
        &[("app", "backend")],
        "127.0.0.1",
        &[("http", server.forward_addr(app_port).port())],
    );
    control.register("default", "backend-1", &doc).await;
    let client = ProxySpec::new("client", control.grpc)
        .spawn(tmp.path())
        .await;
    let target = authority("echo", 8080);

    // As a peer proxy would: one HTTP/2 connection to the forward port, HTTP/1 requests marked
    // `l5d-orig-proto`, several at once.
    let peer = H2::connect(server.forward_addr(app_port)).await.unwrap();
    let started = Instant::now();
    let mut streams = Vec::new();
    for i in 0..8 {
        let mut peer = peer.clone();
        let mut req = h2_request("GET", &target, &format!("/down{i}"), empty());
        req.headers_mut()
            .insert("l5d-orig-proto", "HTTP/1.1".parse().unwrap());
        streams.push(tokio::spawn(async move { peer.send(req).await }));
    }
    for stream in streams {
        let reply = Reply::read(
            stream
                .await
                .unwrap()
                .expect("a response, not a stream error"),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 502, "{}", reply.describe());
        assert!(
            !reply.header("l5d-proxy-error").is_empty(),
            "{}",
            reply.describe()
        );
    }
    // Refused connects are answered at once, with no backoff in between; the bound is loose
    // for a debug build on a busy machine (a correctness bound, not a performance claim).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !peer.is_closed(),
        "the shared HTTP/2 connection was torn down"
    );

    // Through the whole mesh the client sees the same 502 with the reason.
    let mut conn = H1::connect(client.outbound).await.unwrap();
    let reply = Reply::read(
        conn.send(proxy_request("GET", &target, "/m", empty()))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 502, "{}", reply.describe());
    assert!(!reply.header("l5d-proxy-error").is_empty());

    // The app comes up on its port: the very same connections now serve.
    let listener = TcpListener::bind(("127.0.0.1", app_port)).await.unwrap();
    let echo = EchoServer::serve("backend-1", listener);
    let mut peer2 = peer.clone();
    let mut req = h2_request("GET", &target, "/up", empty());
    req.headers_mut()
        .insert("l5d-orig-proto", "HTTP/1.1".parse().unwrap());
    let reply = Reply::read(peer2.send(req).await.unwrap()).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.describe());
    assert_eq!(reply.header("x-echo-version"), "HTTP/1.1");
    let reply = Reply::read(
        conn.send(proxy_request("GET", &target, "/m2", empty()))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.describe());
    assert_eq!(echo.requests.get(), 2);
    // One connection from the client proxy to the backend proxy carried both mesh requests.
    let opened = server
        .metric_sum(
            "tcp_open_total",
            &[("direction", "inbound"), ("peer", "src")],
        )
        .await;
    assert_eq!(
        opened, 2.0,
        "inbound connections: the test's own and the client proxy's"
    );
}
