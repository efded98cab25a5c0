//! Mutual TLS on the data path, end to end: real `weft control` and `weft-proxy` processes with
//! identity (tokens, trust anchors, certificates from `Identity.Certify`). What is refused
//! (foreign CA, expired or wrong identity, plaintext on a port requiring identity) is in
//! `tests/mtls_refusals.rs`.
//!
//! - HTTP/1.1, h2c, gRPC, WebSocket and opaque TCP (redis) cross the mesh inside mTLS: the app
//!   sees the caller's verified identity as `l5d-client-id` (a spoofed one is replaced), the
//!   inbound proxy's metrics say `tls="true"` with the right `client_id`, the outbound proxy's
//!   `tls="true"` with `server_id`;
//! - a packet capture (tshark) of requests carrying a marker shows a TLS 1.3 handshake and no
//!   plaintext marker;
//! - certificates renewed every few seconds under steady load: zero failed requests.

#[path = "support/mtls_mesh.rs"]
mod mtls_mesh;
mod support;

use std::time::{Duration, Instant};

use linkerd2_proxy_api::identity as id;
use mtls_mesh::{identity_of, ControlOpts, IdentitySource};
use support::apps::{tcp_echo, AbortOnDrop, EchoServer, GrpcServer, WsEchoServer};
use support::capture::{contains, Capture};
use support::clients::{
    empty, full, h2_request, proxy_request, tcp_roundtrip, websocket_echo, Reply, H1, H2,
};
use support::{
    authority, grpc_service, metric_sum, opaque_service, service, write_docs, ChildProc, Control,
    Proxy, TempDir, SOON,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A control plane (ephemeral CA), a `backend` server (echo + gRPC apps) and a `client`, all
/// with identity.
struct Mesh {
    _control: Control,
    echo: EchoServer,
    _grpc: GrpcServer,
    _tcp: AbortOnDrop,
    ws: WsEchoServer,
    server: Proxy,
    client: Proxy,
    _tmp: TempDir,
}

const SERVER: &str = "backend-1";
const CLIENT: &str = "client";

async fn mesh(test: &str) -> Mesh {
    mesh_with(test, None).await
}

/// [`mesh`] with leaf certificates living `cert_lifetime` (e.g. `4s`).
async fn mesh_with(test: &str, cert_lifetime: Option<&str>) -> Mesh {
    let tmp = TempDir::new(test);
    let store = tmp.subdir("store");
    write_docs(
        &store,
        "services.yaml",
        &[
            service("echo", "backend", 8080, "http"),
            grpc_service("grpc", "backend", 9090, "grpc"),
            opaque_service("tcp", "backend", 7000, "tcp"),
            service("ws", "backend", 8081, "ws"),
        ],
    );
    let control = mtls_mesh::start_control(
        &store,
        tmp.path(),
        ControlOpts {
            cert_lifetime,
            ..Default::default()
        },
    )
    .await;
    let anchors = mtls_mesh::trust_anchors(&control).await;
    let id = IdentitySource::new(&control, &anchors);
    let echo = EchoServer::start(SERVER).await;
    let grpc = GrpcServer::start(SERVER).await;
    let (tcp_app, tcp_task) = tcp_echo().await;
    let ws = WsEchoServer::start().await;
    let server = mtls_mesh::server(
        &control,
        &id,
        tmp.path(),
        SERVER,
        "backend",
        &[
            ("http", echo.port()),
            ("grpc", grpc.port()),
            ("tcp", tcp_app.port()),
            ("ws", ws.addr.port()),
        ],
        |spec| spec,
    )
    .await;
    let client = mtls_mesh::client(
        &control,
        &id,
        tmp.path(),
        CLIENT,
        &[
            authority("echo", 8080),
            authority("grpc", 9090),
            authority("tcp", 7000),
        ],
    )
    .await;
    Mesh {
        _control: control,
        echo,
        _grpc: grpc,
        _tcp: tcp_task,
        ws,
        server,
        client,
        _tmp: tmp,
    }
}

/// The inbound proxy counted `n` requests as mTLS from the client, and the outbound proxy as
/// mTLS to the server.
async fn assert_mtls_requests(mesh: &Mesh, n: f64) {
    let client_id = identity_of(CLIENT);
    let server_id = identity_of(SERVER);
    mtls_mesh::metrics_until(&mesh.server, "inbound mTLS requests", |m| {
        metric_sum(
            m,
            "request_total",
            &[
                ("direction", "inbound"),
                ("tls", "true"),
                ("client_id", &client_id),
            ],
        ) >= n
    })
    .await;
    let inbound = mesh.server.metrics().await;
    assert_eq!(
        metric_sum(
            &inbound,
            "request_total",
            &[("direction", "inbound"), ("tls", "no_identity")]
        ),
        0.0,
        "plaintext inbound requests:\n{inbound}"
    );
    assert!(
        mtls_mesh::inbound_mtls_tcp(&inbound, &client_id) >= 1.0,
        "inbound TCP metrics without mTLS labels:\n{inbound}"
    );
    let outbound = mesh.client.metrics().await;
    assert!(
        metric_sum(
            &outbound,
            "request_total",
            &[
                ("direction", "outbound"),
                ("tls", "true"),
                ("server_id", &server_id)
            ]
        ) >= n,
        "outbound requests without tls=true, server_id:\n{outbound}"
    );
    assert!(
        mtls_mesh::outbound_mtls_tcp(&outbound, &server_id) >= 1.0,
        "outbound TCP metrics without mTLS labels:\n{outbound}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_h2c_and_grpc_cross_the_mesh_in_mtls_with_the_client_identity() {
    let mesh = mesh("mtls-http").await;
    let echo = authority("echo", 8080);

    // HTTP/1.1, absolute-form to the outbound listener (HTTP_PROXY style), with a spoofed
    // l5d-client-id that must not survive.
    let mut h1 = H1::connect(mesh.client.outbound).await.expect("connect h1");
    let mut req = proxy_request("POST", &echo, "/h1", full("hello over mtls"));
    req.headers_mut()
        .insert("l5d-client-id", "spoofed.example".parse().expect("header"));
    let reply = Reply::read(h1.send(req).await.expect("h1 request"))
        .await
        .expect("h1 body");
    assert_eq!(reply.status, 200, "{}", reply.describe());
    assert_eq!(reply.text(), "hello over mtls");
    assert_eq!(
        reply.header("x-echo-hdr-l5d-client-id"),
        identity_of(CLIENT),
        "{}",
        reply.describe()
    );
    assert_eq!(reply.header("x-echo-version"), "HTTP/1.1");

    // h2c through the upstream port.
    let mut h2 = H2::connect(mesh.client.upstream_addr(&echo))
        .await
        .expect("connect h2");
    let reply = Reply::read(
        h2.send(h2_request("GET", &echo, "/h2", empty()))
            .await
            .expect("h2 request"),
    )
    .await
    .expect("h2 body");
    assert_eq!(reply.status, 200, "{}", reply.describe());
    assert_eq!(
        reply.header("x-echo-hdr-l5d-client-id"),
        identity_of(CLIENT)
    );
    assert_eq!(reply.header("x-echo-version"), "HTTP/2.0");

    // gRPC unary through the upstream port.
    let grpc = authority("grpc", 9090);
    let channel = support::clients::grpc_channel(mesh.client.upstream_addr(&grpc))
        .await
        .expect("grpc channel");
    let answer = id::identity_client::IdentityClient::new(channel)
        .certify(id::CertifyRequest {
            identity: "alice".into(),
            token: b"t".to_vec(),
            certificate_signing_request: vec![1u8; 1000],
        })
        .await
        .expect("grpc through mtls")
        .into_inner();
    assert_eq!(answer.leaf_certificate, vec![1u8; 1000]);

    assert_eq!(mesh.echo.orig_protos(), 0);
    assert_mtls_requests(&mesh, 3.0).await;
}

/// Encodes one RESP command.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

/// Reads until `want` bytes arrived (bounded).
async fn read_exactly(stream: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut buf = vec![0u8; want];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut buf))
        .await
        .expect("redis reply in time")
        .expect("redis reply");
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crosses_the_mesh_as_opaque_tcp_in_mtls() {
    let Some(redis_bin) = support::which("redis-server") else {
        support::skip_or_fail("redis-server is not installed (apt-get install redis-server)");
        return;
    };
    let tmp = TempDir::new("mtls-redis");
    let store = tmp.subdir("store");
    let redis_port = support::free_port();
    let mut cmd = tokio::process::Command::new(redis_bin);
    cmd.args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(tmp.subdir("redis"));
    support::set_pdeathsig(&mut cmd);
    let _redis = ChildProc::spawn("redis-server", cmd, tmp.path());
    support::eventually("redis-server listens", SOON, || async {
        TcpStream::connect(("127.0.0.1", redis_port)).await.ok()
    })
    .await;

    write_docs(
        &store,
        "services.yaml",
        &[opaque_service("redis", "cache", 6379, "redis")],
    );
    let control = mtls_mesh::start_control(&store, tmp.path(), ControlOpts::default()).await;
    let anchors = mtls_mesh::trust_anchors(&control).await;
    let id = IdentitySource::new(&control, &anchors);
    let server = mtls_mesh::server(
        &control,
        &id,
        tmp.path(),
        "cache-1",
        "cache",
        &[("redis", redis_port)],
        |spec| spec,
    )
    .await;
    let target = authority("redis", 6379);
    let client = mtls_mesh::client(
        &control,
        &id,
        tmp.path(),
        CLIENT,
        std::slice::from_ref(&target),
    )
    .await;

    let mut conn = TcpStream::connect(client.upstream_addr(&target))
        .await
        .expect("connect upstream");
    conn.write_all(&resp(&["SET", "weft:mtls", "sealed"]))
        .await
        .expect("SET");
    assert_eq!(read_exactly(&mut conn, 5).await, b"+OK\r\n");
    conn.write_all(&resp(&["GET", "weft:mtls"]))
        .await
        .expect("GET");
    assert_eq!(read_exactly(&mut conn, 12).await, b"$6\r\nsealed\r\n");
    drop(conn);

    let client_id = identity_of(CLIENT);
    mtls_mesh::metrics_until(&server, "inbound mTLS TCP from the client", |m| {
        mtls_mesh::inbound_mtls_tcp(m, &client_id) >= 1.0
    })
    .await;
    let outbound = client.metrics().await;
    assert!(
        mtls_mesh::outbound_mtls_tcp(&outbound, &identity_of("cache-1")) >= 1.0,
        "outbound redis connection not mTLS:\n{outbound}"
    );
}

/// `tshark` on the mesh port while requests carrying a marker cross it: a TLS 1.3 handshake,
/// and the marker only on the plaintext leg to the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_capture_shows_tls13_and_no_plaintext() {
    let Some(tshark) = support::which("tshark") else {
        support::skip_or_fail("tshark is not installed (apt-get install tshark)");
        return;
    };
    let mesh = mesh("mtls-capture").await;
    let mesh_port = mesh.server.forward_addr(mesh.echo.port()).port();
    let app_port = mesh.echo.port();
    let dir = support::TempDir::new("capture");
    let capture = Capture::start(
        &tshark,
        &format!("tcp port {mesh_port} or tcp port {app_port}"),
        dir.path(),
        "all.pcap",
        ([127, 0, 0, 1], app_port).into(),
    )
    .await;

    let marker = "weft-capture-marker-7f3a9c";
    let echo = authority("echo", 8080);
    for i in 0..5 {
        let mut h1 = H1::connect(mesh.client.outbound).await.expect("connect");
        let mut req = proxy_request("POST", &echo, &format!("/{marker}/{i}"), full(marker));
        req.headers_mut()
            .insert("x-marker", marker.parse().expect("header"));
        let reply = Reply::read(h1.send(req).await.expect("h1"))
            .await
            .expect("body");
        assert_eq!(reply.status, 200, "{}", reply.describe());
        assert_eq!(reply.text(), marker);
    }
    let mut h2 = H2::connect(mesh.client.upstream_addr(&echo))
        .await
        .expect("h2");
    let reply = Reply::read(
        h2.send(h2_request(
            "POST",
            &echo,
            &format!("/{marker}"),
            full(marker),
        ))
        .await
        .expect("h2 request"),
    )
    .await
    .expect("h2 body");
    assert_eq!(reply.status, 200);

    let all = capture.file.clone();
    let raw_all = capture.stop().await;

    // The mesh leg alone.
    let mesh_only = dir.path().join("mesh.pcap");
    let filter = std::process::Command::new(&tshark)
        .arg("-r")
        .arg(&all)
        .args(["-Y", &format!("tcp.port == {mesh_port}"), "-w"])
        .arg(&mesh_only)
        .output()
        .expect("tshark -r");
    assert!(filter.status.success(), "{filter:?}");
    let raw_mesh = std::fs::read(&mesh_only).expect("read mesh capture");
    let contains = |hay: &[u8]| contains(hay, marker.as_bytes());
    assert!(
        contains(&raw_all),
        "the capture missed the plaintext app leg"
    );
    assert!(raw_mesh.len() > 1000, "the capture missed the mesh leg");
    assert!(
        !contains(&raw_mesh),
        "the marker crossed the mesh in plaintext"
    );

    // TLS 1.3: the ServerHello selects version 0x0304.
    let versions = std::process::Command::new(&tshark)
        .arg("-r")
        .arg(&mesh_only)
        .args(["-d", &format!("tcp.port=={mesh_port},tls")])
        .args(["-Y", "tls.handshake.type == 2", "-T", "fields"])
        .args(["-e", "tls.handshake.extensions.supported_version"])
        .output()
        .expect("tshark fields");
    let versions = String::from_utf8_lossy(&versions.stdout);
    assert!(
        !versions.trim().is_empty() && versions.lines().all(|l| l.contains("0x0304")),
        "ServerHello versions: {versions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renewed_under_steady_load_fail_no_request() {
    let mesh = mesh_with("mtls-renewal", Some("4s")).await;
    let echo = authority("echo", 8080);
    let load = support::load::Load::through(&mesh.client, &echo, Duration::from_secs(60));
    // Opaque connections, each a new mTLS handshake with whatever certificates are current,
    // all along too (the HTTP load rides one long-lived HTTP/2 connection).
    let tcp_addr = mesh.client.upstream_addr(&authority("tcp", 7000));
    let started = Instant::now();
    let mut fresh = 0u64;
    let renewed = |text: &str| {
        metric_sum(
            text,
            "identity_cert_refresh_total",
            &[("result", "success")],
        )
    };
    loop {
        let payload = format!("fresh connection {fresh}");
        let back = tcp_roundtrip(tcp_addr, payload.as_bytes()).await;
        assert_eq!(
            back.as_deref(),
            Ok(payload.as_bytes()),
            "connection {fresh}"
        );
        fresh += 1;
        let (s, c) = (mesh.server.metrics().await, mesh.client.metrics().await);
        // Three renewals on both sides (plus the first certificate).
        if renewed(&s) >= 4.0 && renewed(&c) >= 4.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "certificates were not renewed: server {}, client {}",
            renewed(&s),
            renewed(&c)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = load.stop().await;
    assert!(report.failures.is_empty(), "failed: {:?}", report.failures);
    assert!(report.ok > 100, "only {} requests", report.ok);
    assert!(fresh > 10);
    assert_mtls_requests(&mesh, report.ok as f64).await;
}

/// An HTTP/1 upgrade rides its own fresh connection, in mTLS too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_cross_the_mesh_in_mtls() {
    let mesh = mesh("mtls-ws").await;
    use tokio_tungstenite::tungstenite::Message;
    let messages = vec![Message::text("sealed"), Message::binary(vec![7u8; 100_000])];
    websocket_echo(mesh.client.outbound, &authority("ws", 8081), messages).await;
    assert_eq!(mesh.ws.connections.get(), 1);
    assert_mtls_requests(&mesh, 1.0).await;
}
