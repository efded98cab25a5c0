//! HTTP through the mesh in explicit mode: client → outbound proxy → inbound proxy (forward port)
//! → app, once per protocol: HTTP/1.1 (absolute-form, as an `HTTP_PROXY` client sends it), h2c
//! (prior knowledge, through an upstream port), gRPC unary and server streaming (upstream port),
//! and WebSocket (HTTP/1 upgrade). Each asserts status, headers and bodies intact, that
//! `l5d-orig-proto` never reaches the app, a 10 MB body both ways, and both proxies' counters.

mod support;

use std::time::Duration;

use linkerd2_proxy_api::{destination as dst, identity as id};
use support::apps::{seq_of, EchoServer, GrpcServer, WsEchoServer};
use support::clients::{
    assert_body_echoed, empty, full, h2_request, proxy_request, streaming_body, websocket_echo,
    Body, Reply, H1, H2,
};
use support::{
    authority, service, workload_doc, write_docs, Control, Proxy, ProxySpec, ServiceDoc, TempDir,
    SOON,
};

const TEN_MB: usize = 10 * 1024 * 1024;

/// Control plane, one backend workload (echo + gRPC + WebSocket apps behind its proxy) and a
/// client proxy with upstream ports for the three services.
struct HttpMesh {
    _control: Control,
    echo: EchoServer,
    grpc: GrpcServer,
    ws: WsEchoServer,
    server: Proxy,
    client: Proxy,
    _tmp: TempDir,
}

async fn http_mesh(test: &str) -> HttpMesh {
    let tmp = TempDir::new(test);
    let store = tmp.subdir("store");
    let grpc_service = ServiceDoc {
        name: "grpc",
        app: "backend",
        port: 9090,
        target: "grpc",
        app_protocol: Some("grpc"),
        opaque: false,
        cluster_ip: None,
    };
    write_docs(
        &store,
        "services.yaml",
        &[
            service("echo", "backend", 8080, "http"),
            grpc_service.yaml(),
            service("ws", "backend", 8081, "ws"),
        ],
    );
    let control = Control::start(&store, tmp.path()).await;
    let echo = EchoServer::start("backend-1").await;
    let grpc = GrpcServer::start("backend-1").await;
    let ws = WsEchoServer::start().await;
    let server = ProxySpec::new("backend-1", control.grpc)
        .forward(&[echo.port(), grpc.port(), ws.addr.port()])
        .spawn(tmp.path())
        .await;
    let ports = [
        ("http", server.forward_addr(echo.port()).port()),
        ("grpc", server.forward_addr(grpc.port()).port()),
        ("ws", server.forward_addr(ws.addr.port()).port()),
    ];
    let doc = workload_doc(
        "default",
        "backend-1",
        &[("app", "backend")],
        "127.0.0.1",
        &ports,
    );
    control.register("default", "backend-1", &doc).await;
    let client = ProxySpec::new("client", control.grpc)
        .upstreams(&[
            authority("echo", 8080),
            authority("grpc", 9090),
            authority("ws", 8081),
        ])
        .spawn(tmp.path())
        .await;
    HttpMesh {
        _control: control,
        echo,
        grpc,
        ws,
        server,
        client,
        _tmp: tmp,
    }
}

/// Counter values before traffic, to assert they moved.
struct Before {
    outbound: f64,
    inbound: f64,
}

async fn request_totals(mesh: &HttpMesh) -> Before {
    Before {
        outbound: mesh
            .client
            .metric_sum("request_total", &[("direction", "outbound")])
            .await,
        inbound: mesh
            .server
            .metric_sum("request_total", &[("direction", "inbound")])
            .await,
    }
}

/// Both proxies counted at least `n` more requests (outbound on the client, inbound on the
/// server), and the client's outbound series carries the discovery labels.
async fn assert_counted(mesh: &HttpMesh, before: &Before, n: f64, dst_service: &str) {
    support::eventually("request_total moved in both proxies", SOON, || async {
        let after = request_totals(mesh).await;
        (after.outbound >= before.outbound + n && after.inbound >= before.inbound + n).then_some(())
    })
    .await;
    let labelled = mesh
        .client
        .metric_sum(
            "request_total",
            &[("direction", "outbound"), ("dst_service", dst_service)],
        )
        .await;
    assert!(
        labelled >= n,
        "outbound request_total with dst_service={dst_service} is {labelled}; metrics:\n{}",
        mesh.client.metrics().await
    );
}

/// The app saw what the client sent, and answered through both proxies intact.
fn assert_echo(reply: &Reply, method: &str, path: &str, version: &str) {
    let what = reply.describe();
    assert_eq!(reply.header("x-echo-method"), method, "{what}");
    assert_eq!(reply.header("x-echo-path"), path, "{what}");
    assert_eq!(reply.header("x-echo-version"), version, "{what}");
    assert_eq!(reply.header("x-echo-server"), "backend-1", "{what}");
    assert_eq!(reply.header("x-echo-hdr-x-test-token"), "tok-123", "{what}");
    assert!(
        !reply.headers.contains_key("x-echo-hdr-l5d-orig-proto"),
        "l5d-orig-proto reached the app: {what}"
    );
    assert!(
        !reply.headers.contains_key("l5d-proxy-error"),
        "proxy error: {what}"
    );
}

fn with_token(mut req: hyper::Request<Body>) -> hyper::Request<Body> {
    req.headers_mut().insert(
        "x-test-token",
        hyper::header::HeaderValue::from_static("tok-123"),
    );
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_absolute_form_through_mesh() {
    let mesh = http_mesh("http1").await;
    let before = request_totals(&mesh).await;
    let target = authority("echo", 8080);
    let mut conn = H1::connect(mesh.client.outbound)
        .await
        .expect("connect outbound");

    let req = with_token(proxy_request("GET", &target, "/hello?x=1", empty()));
    let reply = Reply::read(conn.send(req).await.expect("GET"))
        .await
        .expect("GET body");
    assert_eq!(reply.status, 200, "{}", reply.describe());
    assert_echo(&reply, "GET", "/hello?x=1", "HTTP/1.1");

    let req = with_token(proxy_request("POST", &target, "/post", full("hello weft")));
    let reply = Reply::read(conn.send(req).await.expect("POST"))
        .await
        .expect("POST body");
    assert_eq!(reply.status, 200, "{}", reply.describe());
    assert_echo(&reply, "POST", "/post", "HTTP/1.1");
    assert_eq!(reply.text(), "hello weft");

    // A non-2xx answer from the app crosses the mesh as it is.
    let mut req = with_token(proxy_request(
        "PUT",
        &target,
        "/teapot",
        full("short and stout"),
    ));
    req.headers_mut().insert(
        "x-echo-status",
        hyper::header::HeaderValue::from_static("418"),
    );
    let reply = Reply::read(conn.send(req).await.expect("PUT"))
        .await
        .expect("PUT body");
    assert_eq!(reply.status, 418, "{}", reply.describe());
    assert_echo(&reply, "PUT", "/teapot", "HTTP/1.1");
    assert_eq!(reply.text(), "short and stout");

    // 10 MB streamed up and echoed back down.
    let (body, sent) = streaming_body(TEN_MB);
    let req = with_token(proxy_request("POST", &target, "/big", body));
    assert_body_echoed(conn.send(req).await.expect("big POST"), TEN_MB, sent).await;

    assert_eq!(mesh.echo.requests.get(), 4);
    assert_eq!(mesh.echo.orig_protos(), 0);
    assert_counted(&mesh, &before, 4.0, "echo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_through_mesh() {
    let mesh = http_mesh("h2c").await;
    let before = request_totals(&mesh).await;
    let target = authority("echo", 8080);
    let mut conn = H2::connect(mesh.client.upstream_addr(&target))
        .await
        .expect("connect upstream port");

    let req = with_token(h2_request("GET", &target, "/hello?x=2", empty()));
    let reply = Reply::read(conn.send(req).await.expect("GET"))
        .await
        .expect("GET body");
    assert_eq!(reply.status, 200, "{}", reply.describe());
    assert_echo(&reply, "GET", "/hello?x=2", "HTTP/2.0");

    let req = with_token(h2_request("POST", &target, "/post", full("hello h2")));
    let reply = Reply::read(conn.send(req).await.expect("POST"))
        .await
        .expect("POST body");
    assert_eq!(reply.status, 200, "{}", reply.describe());
    assert_echo(&reply, "POST", "/post", "HTTP/2.0");
    assert_eq!(reply.text(), "hello h2");

    let mut req = with_token(h2_request("DELETE", &target, "/teapot", empty()));
    req.headers_mut().insert(
        "x-echo-status",
        hyper::header::HeaderValue::from_static("418"),
    );
    let reply = Reply::read(conn.send(req).await.expect("DELETE"))
        .await
        .expect("body");
    assert_eq!(reply.status, 418, "{}", reply.describe());
    assert_echo(&reply, "DELETE", "/teapot", "HTTP/2.0");

    let (body, sent) = streaming_body(TEN_MB);
    let req = with_token(h2_request("POST", &target, "/big", body));
    assert_body_echoed(conn.send(req).await.expect("big POST"), TEN_MB, sent).await;

    assert_eq!(mesh.echo.requests.get(), 4);
    assert_eq!(mesh.echo.orig_protos(), 0);
    assert_counted(&mesh, &before, 4.0, "echo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_streaming_through_mesh() {
    let mesh = http_mesh("grpc").await;
    let before = request_totals(&mesh).await;
    let target = authority("grpc", 9090);
    let channel = support::clients::grpc_channel(mesh.client.upstream_addr(&target))
        .await
        .expect("grpc channel");
    let mut identity = id::identity_client::IdentityClient::new(channel.clone());
    let mut destination = dst::destination_client::DestinationClient::new(channel);

    // Unary: the request comes back field by field.
    let reply = identity
        .certify(id::CertifyRequest {
            identity: "alice".into(),
            token: b"token-bytes".to_vec(),
            certificate_signing_request: vec![7u8; 100_000],
        })
        .await
        .expect("certify through the mesh")
        .into_inner();
    assert_eq!(reply.leaf_certificate, vec![7u8; 100_000]);
    assert_eq!(
        reply.intermediate_certificates,
        vec![
            b"alice".to_vec(),
            b"token-bytes".to_vec(),
            b"backend-1".to_vec()
        ]
    );

    // Unary error: the status code and message cross the mesh.
    let err = identity
        .certify(id::CertifyRequest {
            identity: "fail".into(),
            ..Default::default()
        })
        .await
        .expect_err("asked to fail");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert_eq!(err.message(), "asked to fail");

    // Server streaming: every message in order, then a clean end.
    let mut stream = destination
        .get(dst::GetDestination {
            path: "50".into(),
            ..Default::default()
        })
        .await
        .expect("streaming get")
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(update) = tokio::time::timeout(SOON, stream.message())
        .await
        .expect("stream stalled")
        .expect("stream status")
    {
        seqs.push(seq_of(&update).expect("update has seq"));
    }
    assert_eq!(seqs, (0..50).collect::<Vec<u64>>());

    // Streaming is not buffered: the first message arrives while the server holds the rest.
    let mut stream = destination
        .get(dst::GetDestination {
            path: "gated:3".into(),
            ..Default::default()
        })
        .await
        .expect("gated get")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("first message held back by the mesh")
        .expect("status")
        .expect("a first message");
    assert_eq!(seq_of(&first), Some(0));
    mesh.grpc.gate.notify_one();
    let mut rest = Vec::new();
    while let Some(update) = tokio::time::timeout(SOON, stream.message())
        .await
        .expect("stream stalled")
        .expect("stream status")
    {
        rest.push(seq_of(&update).expect("seq"));
    }
    assert_eq!(rest, vec![1, 2]);

    // A streaming call that fails before any message.
    let err = destination
        .get_profile(dst::GetDestination::default())
        .await
        .expect_err("get_profile fails");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert_eq!(err.message(), "no profile here");

    assert_eq!(mesh.grpc.calls.get(), 5);
    assert_counted(&mesh, &before, 5.0, "grpc").await;
    let grpc_failures = mesh
        .client
        .metric_sum(
            "response_total",
            &[("direction", "outbound"), ("classification", "failure")],
        )
        .await;
    assert!(
        grpc_failures >= 2.0,
        "non-zero grpc-status responses should be classified as failures, got {grpc_failures}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_through_mesh() {
    let mesh = http_mesh("ws").await;
    let before = request_totals(&mesh).await;
    use tokio_tungstenite::tungstenite::Message;
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let messages = vec![
        Message::text("hello websocket"),
        Message::binary(big),
        Message::text("bye"),
    ];
    // Through the outbound listener, the Host header naming the service.
    websocket_echo(mesh.client.outbound, &authority("ws", 8081), messages).await;
    assert_eq!(mesh.ws.connections.get(), 1);
    assert_counted(&mesh, &before, 1.0, "ws").await;
}
