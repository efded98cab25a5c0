//! Inbound authorization end to end, in process: real TLS clients (a CA minted here), a scripted
//! `InboundServerPolicies`, a local application. Observed: status codes, `l5d-proxy-error`, what
//! the application saw, bytes relayed, and the authorization counters.

use super::*;
use crate::{
    identity::tests::TestCa,
    mtls::tests::{identity, inbound_listener, tcp_app, tls_client, CLIENT, OTHER},
    policy::inbound::{
        client::Defaults,
        tests::{
            all, authz, control_plane, default_server, detect_server, http_route, mesh, prefix,
            resource, settings, unauthenticated, Ctl,
        },
    },
};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use linkerd2_proxy_api::inbound::{self as inb, proxy_protocol};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const DENIED_TO_OTHER: &str = "client other.default.serviceaccount.identity.weft.cluster.local \
     is not authorized to access route default on server server:web-http";

/// An HTTP/1 application answering `ok:` + the `l5d-client-id` it was given.
async fn http_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let id = req
                    .headers()
                    .get(http::L5D_CLIENT_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_string();
                let body = http_body_util::Full::new(Bytes::from(format!("ok:{id}")));
                Ok::<_, Infallible>(Response::new(body))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    addr
}

/// Only `CLIENT` may call the server `web-http` (one default route).
fn only_client() -> inb::Server {
    detect_server(
        ("policy.linkerd.io", "server", "web-http"),
        vec![authz(
            resource("policy.linkerd.io", "authorizationpolicy", "only-client"),
            all(),
            mesh(&[CLIENT], &[]),
        )],
        Vec::new(),
    )
}

async fn inbound_with(
    metrics: &Metrics,
    ca: &Arc<TestCa>,
    server: inb::Server,
    require_identity: PortSet,
) -> (Arc<Inbound>, Ctl) {
    let id = identity(ca, metrics.clone()).await;
    let (cp, ctl) = control_plane(Some(server)).await;
    let ib = Inbound::with_policies(
        Settings {
            detect_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            opaque_ports: PortSet::default(),
            pool: Default::default(),
        },
        metrics.clone(),
        Some(id),
        require_identity,
        InboundPolicies::new(settings(cp, Defaults::default())),
    );
    (ib, ctl)
}

/// (status, `l5d-proxy-error`, body) of one GET carrying a forged `l5d-client-id`.
async fn get(send: &mut http1::SendRequest<Empty<Bytes>>) -> (u16, String, String) {
    get_path(send, "/").await
}

async fn get_path(
    send: &mut http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> (u16, String, String) {
    let req = Request::get(format!("http://web:8080{path}"))
        .header(http::L5D_CLIENT_ID, OTHER)
        .body(Empty::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let error = resp
        .headers()
        .get(http::L5D_PROXY_ERROR)
        .map(|v| v.to_str().expect("ascii").to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, error, String::from_utf8_lossy(&body).into_owned())
}

async fn h1<I>(io: I) -> http1::SendRequest<Empty<Bytes>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = http1::handshake(TokioIo::new(io)).await.expect("handshake");
    tokio::spawn(conn);
    send
}

#[tokio::test]
async fn http_requests_are_authorized_per_request_against_the_live_policy() {
    let ca = Arc::new(TestCa::new());
    let metrics = Metrics::new();
    let app = http_app().await;
    let (ib, ctl) = inbound_with(&metrics, &ca, only_client(), PortSet::default()).await;
    let listener = inbound_listener(ib, Some(app.port())).await;

    // An identity outside the policy: 403 naming who, where and why.
    let mut other = h1(tls_client(listener, &ca, Some(OTHER), false).await).await;
    let (status, error, _) = get(&mut other).await;
    assert_eq!(status, 403);
    assert_eq!(error, DENIED_TO_OTHER);

    // Plaintext: unauthenticated, named by its address.
    let mut plain = h1(TcpStream::connect(listener).await.expect("connect")).await;
    let (status, error, _) = get(&mut plain).await;
    assert_eq!(status, 403);
    assert!(
        error.starts_with("unauthenticated client from 127.0.0.1 is not authorized"),
        "{error}"
    );

    // gRPC from the same plaintext client: HTTP 200, PERMISSION_DENIED.
    let tcp = TcpStream::connect(listener).await.expect("connect");
    let (mut h2, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::post("http://web:8080/hello.Greeter/SayHello")
        .header("content-type", "application/grpc")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = h2.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "7");
    assert!(resp.headers().contains_key("grpc-message"));
    assert!(resp.headers().contains_key(http::L5D_PROXY_ERROR));

    // The identity inside the policy gets the application's answer; the forged
    // `l5d-client-id` is replaced by the verified identity.
    let mut allowed = h1(tls_client(listener, &ca, Some(CLIENT), false).await).await;
    for _ in 0..3 {
        assert_eq!(
            get(&mut allowed).await,
            (200, String::new(), format!("ok:{CLIENT}"))
        );
    }
    let allow = [
        ("client_id", CLIENT),
        ("srv_kind", "server"),
        ("srv_name", "web-http"),
        ("route_name", "default"),
        ("authz_kind", "authorizationpolicy"),
        ("authz_name", "only-client"),
    ];
    assert_eq!(metrics.counter_sum(m::INBOUND_HTTP_AUTHZ_ALLOW, &allow), 3);
    let denied_other = [("client_id", OTHER), ("srv_name", "web-http")];
    assert_eq!(
        metrics.counter_sum(m::INBOUND_HTTP_AUTHZ_DENY, &denied_other),
        1
    );
    assert_eq!(
        metrics.counter_sum(m::INBOUND_HTTP_AUTHZ_DENY, &[("tls", "no_identity")]),
        2
    );

    // The policy changes: the next request on the same connection is refused.
    ctl.policy
        .send_replace(Some(default_server(crate::config::DefaultPolicy::Deny)));
    let start = tokio::time::Instant::now();
    loop {
        let (status, error, _) = get(&mut allowed).await;
        if status == 403 {
            assert!(error.ends_with("on server default:deny"), "{error}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the update never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And back: allowed again, same connection.
    ctl.policy.send_replace(Some(only_client()));
    let start = tokio::time::Instant::now();
    while get(&mut allowed).await.0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the update never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Routes: a request no route matches is answered 404.
    let admin_only = detect_server(
        ("policy.linkerd.io", "server", "web-http"),
        Vec::new(),
        vec![http_route(
            resource("policy.linkerd.io", "HTTPRoute", "admin"),
            &[],
            vec![prefix("/admin")],
            vec![authz(
                resource("policy.linkerd.io", "authorizationpolicy", "open"),
                all(),
                unauthenticated(),
            )],
        )],
    );
    ctl.policy.send_replace(Some(admin_only));
    let start = tokio::time::Instant::now();
    while get_path(&mut allowed, "/admin/x").await.0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the update never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, error, _) = get_path(&mut allowed, "/other").await;
    assert_eq!(status, 404);
    assert_eq!(
        error,
        "no route found for request to server server:web-http"
    );

    let text = metrics.render();
    let line = text
        .lines()
        .find(|l| l.starts_with("inbound_http_authz_allow_total{"))
        .expect("allow family rendered");
    for label in [
        "target_addr=",
        "srv_group=\"policy.linkerd.io\"",
        "srv_port=",
        "route_group=",
        "route_kind=",
        "authz_group=\"policy.linkerd.io\"",
        "tls=\"true\"",
        "client_id=",
    ] {
        assert!(line.contains(label), "{label} missing in {line}");
    }
}

/// An opaque server: a denied client's connection is closed (nothing relayed), an allowed
/// one is relayed; both counted.
#[tokio::test]
async fn opaque_connections_are_authorized_once_against_the_server() {
    let ca = Arc::new(TestCa::new());
    let metrics = Metrics::new();
    let app = tcp_app().await;
    let mut server = only_client();
    server.protocol = Some(inb::ProxyProtocol {
        kind: Some(proxy_protocol::Kind::Opaque(proxy_protocol::Opaque {})),
    });
    let (ib, _ctl) = inbound_with(&metrics, &ca, server, PortSet::default()).await;
    let listener = inbound_listener(ib, Some(app.port())).await;

    let mut tls = tls_client(listener, &ca, Some(OTHER), false).await;
    let _ = tls.write_all(b"sneaky").await;
    let _ = tls.shutdown().await;
    let mut back = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut back))
        .await
        .expect("closed in time");
    assert!(back.is_empty(), "relayed: {back:?}");
    assert_eq!(
        metrics.counter_sum(
            m::INBOUND_TCP_AUTHZ_DENY,
            &[("client_id", OTHER), ("srv_name", "web-http")]
        ),
        1
    );

    let mut tls = tls_client(listener, &ca, Some(CLIENT), false).await;
    tls.write_all(b"hello").await.expect("write");
    tls.shutdown().await.expect("half-close");
    let mut back = Vec::new();
    tls.read_to_end(&mut back).await.expect("read");
    assert_eq!(back, b"got:hello");
    assert_eq!(
        metrics.counter_sum(
            m::INBOUND_TCP_AUTHZ_ALLOW,
            &[("client_id", CLIENT), ("authz_name", "only-client")]
        ),
        1
    );
    // Neither connection was read for detection: the policy said opaque.
    let opaque = metrics.detections(m::Direction::Inbound, m::DetectResult::OpaquePolicy);
    assert_eq!(opaque, 2);
    assert_eq!(
        metrics.detections(m::Direction::Inbound, m::DetectResult::Http1),
        0
    );
}

/// `WEFT_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY` refuses unauthenticated clients even when the
/// control plane allows everyone.
#[tokio::test]
async fn a_port_requiring_identity_refuses_unauthenticated_requests_whatever_the_policy() {
    let ca = Arc::new(TestCa::new());
    let metrics = Metrics::new();
    let app = http_app().await;
    let (ib, _ctl) = inbound_with(
        &metrics,
        &ca,
        default_server(crate::config::DefaultPolicy::AllUnauthenticated),
        PortSet(vec![app.port()..=app.port()]),
    )
    .await;
    let listener = inbound_listener(ib, Some(app.port())).await;
    let mut anonymous = h1(tls_client(listener, &ca, None, false).await).await;
    let (status, error, _) = get(&mut anonymous).await;
    assert_eq!(status, 403);
    assert!(error.contains("requires a client identity"), "{error}");
    assert_eq!(
        metrics.counter_sum(
            m::INBOUND_HTTP_AUTHZ_DENY,
            &[("tls", "true"), ("srv_name", "all-unauthenticated")]
        ),
        1
    );
    let mut authenticated = h1(tls_client(listener, &ca, Some(CLIENT), false).await).await;
    assert_eq!(get(&mut authenticated).await.0, 200);
}

/// A Server with `proxyProtocol: HTTP/1` still takes HTTP/2 from meshed peers: they carry HTTP/1
/// requests over HTTP/2 marked `l5d-orig-proto` (the port is detected, not assumed HTTP/1).
#[tokio::test]
async fn an_http1_server_takes_http1_and_meshed_http2() {
    let ca = Arc::new(TestCa::new());
    let metrics = Metrics::new();
    let app = http_app().await;
    let mut server = only_client();
    let Some(proxy_protocol::Kind::Detect(detect)) = server.protocol.take().and_then(|p| p.kind)
    else {
        panic!("only_client is a detect server");
    };
    server.protocol = Some(inb::ProxyProtocol {
        kind: Some(proxy_protocol::Kind::Http1(proxy_protocol::Http1 {
            routes: detect.http_routes,
            local_rate_limit: None,
        })),
    });
    let (ib, _ctl) = inbound_with(&metrics, &ca, server, PortSet::default()).await;
    let listener = inbound_listener(ib, Some(app.port())).await;

    let mut h1_client = h1(tls_client(listener, &ca, Some(CLIENT), false).await).await;
    assert_eq!(get(&mut h1_client).await.0, 200);

    let io = tls_client(listener, &ca, Some(CLIENT), false).await;
    let (mut send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get("http://web:8080/")
        .header(http::L5D_ORIG_PROTO, "HTTP/1.1")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, format!("ok:{CLIENT}").as_bytes());
}

/// `web-http`, open to everyone (its authorization named `authz_name`, so an update keeping the
/// limit is visible), limited to `total` requests per second (`None`: unlimited).
fn rate_limited(total: Option<u32>, authz_name: &str) -> inb::Server {
    let mut server = detect_server(
        ("policy.linkerd.io", "server", "web-http"),
        vec![authz(
            resource("policy.linkerd.io", "authorizationpolicy", authz_name),
            all(),
            unauthenticated(),
        )],
        Vec::new(),
    );
    let Some(proxy_protocol::Kind::Detect(detect)) =
        server.protocol.as_mut().and_then(|p| p.kind.as_mut())
    else {
        panic!("a detect server");
    };
    detect.http_local_rate_limit = total.map(|rps| inb::HttpLocalRateLimit {
        metadata: resource("policy.linkerd.io", "httplocalratelimitpolicy", "web-rl"),
        total: Some(inb::http_local_rate_limit::Limit {
            requests_per_second: rps,
        }),
        identity: None,
        overrides: Vec::new(),
    });
    server
}

/// (status, headers) of one GET, its body read.
async fn get_head(send: &mut http1::SendRequest<Empty<Bytes>>) -> (u16, hyper::HeaderMap) {
    let req = Request::get("http://web:8080/")
        .body(Empty::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let (head, body) = resp.into_parts();
    body.collect().await.expect("body");
    (head.status.as_u16(), head.headers)
}

/// Requests until the first refusal: how many passed, and the refusal's headers.
async fn until_refused(send: &mut http1::SendRequest<Empty<Bytes>>) -> (usize, hyper::HeaderMap) {
    for passed in 0..100 {
        let (status, headers) = get_head(send).await;
        if status != 200 {
            assert_eq!(status, 429, "{headers:?}");
            return (passed, headers);
        }
    }
    panic!("never rate limited");
}

#[tokio::test]
async fn requests_beyond_the_servers_rate_limit_get_429_or_resource_exhausted() {
    const LIMITED: &str = "rate limit exceeded on server server:web-http: the total limit of 10 \
         requests per second (httplocalratelimitpolicy default/web-rl)";
    let ca = Arc::new(TestCa::new());
    let metrics = Metrics::new();
    let app = http_app().await;
    let server = rate_limited(Some(10), "open");
    let (ib, ctl) = inbound_with(&metrics, &ca, server, PortSet::default()).await;
    // The policy in force, as connections see it (to know when an update applied).
    let policy = ib.policies.port(app.port()).await;
    let listener = inbound_listener(ib, Some(app.port())).await;
    let mut client = h1(TcpStream::connect(listener).await.expect("connect")).await;

    // A burst of 10: the 11th request within the same tenth of a second (one token's refill)
    // is refused; a machine slower than that may have earned a token or two meanwhile.
    let start = tokio::time::Instant::now();
    let (passed, refused) = until_refused(&mut client).await;
    let earned = start.elapsed().as_millis() as usize / 100;
    assert!((10..=10 + earned).contains(&passed), "{passed} passed");
    assert_eq!(refused["retry-after"], "1");
    assert_eq!(refused[http::L5D_PROXY_ERROR], LIMITED);
    let mut limited = 1;

    // gRPC: HTTP 200, RESOURCE_EXHAUSTED (a request earning a token meanwhile would reach the
    // HTTP/1 application and fail otherwise).
    let tcp = TcpStream::connect(listener).await.expect("connect");
    let (mut h2, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let mut attempts = 0;
    let resp = loop {
        let req = Request::post("http://web:8080/hello.Greeter/SayHello")
            .header("content-type", "application/grpc")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = h2.send_request(req).await.expect("response");
        if resp.headers().get("grpc-status").is_some_and(|s| s == "8") {
            break resp;
        }
        attempts += 1;
        assert!(attempts < 10, "gRPC never limited: {resp:?}");
    };
    limited += 1;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[http::L5D_PROXY_ERROR], LIMITED);

    let series = [
        ("srv_kind", "server"),
        ("srv_name", "web-http"),
        ("ratelimit_group", "policy.linkerd.io"),
        ("ratelimit_kind", "httplocalratelimitpolicy"),
        ("ratelimit_name", "web-rl"),
        ("ratelimit_scope", "total"),
    ];
    assert_eq!(
        metrics.counter_sum(m::INBOUND_HTTP_LOCAL_RATELIMIT, &series),
        limited
    );
    let text = metrics.render();
    let line = text
        .lines()
        .find(|l| l.starts_with("inbound_http_local_ratelimit_rate_limited_total{"))
        .expect("rendered");
    for label in [
        "target_addr=",
        "srv_group=",
        "srv_port=",
        "tls=\"no_identity\"",
    ] {
        assert!(line.contains(label), "{label} missing in {line}");
    }

    // An update keeping the limit (another authorization name) keeps the buckets: drained
    // now, at most the tokens earned since pass after it applies (a reset would let 10 pass).
    let limiter = policy.current().rate_limit.clone().expect("limited");
    until_refused(&mut client).await;
    limited += 1;
    let drained = tokio::time::Instant::now();
    ctl.policy
        .send_replace(Some(rate_limited(Some(10), "open-again")));
    while policy.current().authorizations[0].meta.name != "open-again" {
        assert!(drained.elapsed() < Duration::from_secs(3), "no update");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let kept = policy.current().rate_limit.clone().expect("limited");
    assert!(Arc::ptr_eq(&kept, &limiter), "the buckets were replaced");
    let (passed, _) = until_refused(&mut client).await;
    limited += 1;
    let earned = drained.elapsed().as_millis() as usize / 100;
    assert!(
        passed <= 1 + earned,
        "{passed} passed: the buckets were reset"
    );
    assert_eq!(
        metrics.counter_sum(m::INBOUND_HTTP_LOCAL_RATELIMIT, &series),
        limited
    );

    // An update removing the limit: everything passes.
    ctl.policy.send_replace(Some(rate_limited(None, "open")));
    let start = tokio::time::Instant::now();
    while policy.current().rate_limit.is_some() {
        assert!(start.elapsed() < Duration::from_secs(3), "no update");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..30 {
        assert_eq!(get_head(&mut client).await.0, 200);
    }
    assert_eq!(
        metrics.counter_sum(m::INBOUND_HTTP_LOCAL_RATELIMIT, &series),
        limited
    );
}

/// Explicit mode: a connection to a forward port is decided by that port's policy (the workload
/// registers its forward ports, so Servers name those), not by the app port it reaches.
#[tokio::test]
async fn a_forward_port_asks_for_its_own_policy() {
    let ca = Arc::new(TestCa::new());
    let metrics = Metrics::new();
    let app = http_app().await;
    let (ib, ctl) = inbound_with(&metrics, &ca, only_client(), PortSet::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let forward = listener.local_addr().expect("addr");
    let app_port = app.port();
    tokio::spawn(async move {
        let (_drain_tx, drain) = tokio::sync::watch::channel(false);
        while let Ok((stream, peer)) = listener.accept().await {
            let conn = Accepted {
                local: stream.local_addr().expect("local"),
                stream,
                peer,
                orig_dst: None,
                drain: drain.clone(),
            };
            tokio::spawn(handle_forward(ib.clone(), conn, app_port));
        }
    });
    let mut client = h1(tls_client(forward, &ca, Some(CLIENT), false).await).await;
    let (status, _, body) = get(&mut client).await;
    assert_eq!(
        (status, body.as_str()),
        (200, format!("ok:{CLIENT}").as_str())
    );
    let asked: Vec<u32> = ctl.ports.lock().unwrap().iter().map(|(_, p)| *p).collect();
    assert_eq!(
        asked,
        [u32::from(forward.port())],
        "the app port is {app_port}"
    );
}

/// `GET /` carrying `l5d-client-id: id`; (status, `l5d-proxy-error`, body).
async fn get_as(send: &mut http1::SendRequest<Empty<Bytes>>, id: &str) -> (u16, String, String) {
    let req = Request::get("http://web:8080/")
        .header(http::L5D_CLIENT_ID, id)
        .body(Empty::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let error = resp
        .headers()
        .get(http::L5D_PROXY_ERROR)
        .map(|v| v.to_str().expect("ascii").to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, error, String::from_utf8_lossy(&body).into_owned())
}

/// A trusted gateway (here `OTHER`) speaks for its callers: the `l5d-client-id` it sends is the
/// client for the policy (admitting only `CLIENT`), the metrics and the application. The same
/// header from a peer that is not trusted is replaced by that peer's own identity.
#[tokio::test]
async fn a_trusted_gateways_client_id_is_the_client_and_anyone_elses_is_replaced() {
    const THIRD: &str = "third.default.serviceaccount.identity.weft.cluster.local";
    let ca = Arc::new(TestCa::new());
    let metrics = Metrics::new();
    let app = http_app().await;
    let (ib, _ctl) = inbound_with(&metrics, &ca, only_client(), PortSet::default()).await;
    let ib = ib.trusting_gateways(vec![OTHER.to_string()]);
    let listener = inbound_listener(ib, Some(app.port())).await;

    // Through the gateway, for CLIENT: admitted, and the application sees CLIENT.
    let mut gateway = h1(tls_client(listener, &ca, Some(OTHER), false).await).await;
    assert_eq!(
        get_as(&mut gateway, CLIENT).await,
        (200, String::new(), format!("ok:{CLIENT}"))
    );
    let allow = [("client_id", CLIENT), ("authz_name", "only-client")];
    assert_eq!(metrics.counter_sum(m::INBOUND_HTTP_AUTHZ_ALLOW, &allow), 1);

    // For another caller on the same connection: refused, naming that caller.
    let (status, error, _) = get_as(&mut gateway, THIRD).await;
    assert_eq!(status, 403);
    assert!(
        error.starts_with(&format!("client {THIRD} is not")),
        "{error}"
    );
    let deny = [("client_id", THIRD), ("srv_name", "web-http")];
    assert_eq!(metrics.counter_sum(m::INBOUND_HTTP_AUTHZ_DENY, &deny), 1);

    // Callers alternate on the gateway's connection: each is still itself (their per-caller
    // state is kept for the connection, never mixed up).
    for _ in 0..2 {
        assert_eq!(get_as(&mut gateway, CLIENT).await.0, 200);
        assert_eq!(get_as(&mut gateway, THIRD).await.0, 403);
    }
    assert_eq!(metrics.counter_sum(m::INBOUND_HTTP_AUTHZ_ALLOW, &allow), 3);
    assert_eq!(metrics.counter_sum(m::INBOUND_HTTP_AUTHZ_DENY, &deny), 3);

    // Without the header the gateway itself is the client (not admitted here).
    let req = Request::get("http://web:8080/")
        .body(Empty::new())
        .expect("request");
    let resp = gateway.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 403);

    // A peer that is not trusted claims to be CLIENT: it is itself, and refused.
    let mut forger = h1(tls_client(listener, &ca, Some(THIRD), false).await).await;
    let (status, error, _) = get_as(&mut forger, CLIENT).await;
    assert_eq!(status, 403);
    assert!(
        error.starts_with(&format!("client {THIRD} is not")),
        "{error}"
    );
    assert_eq!(metrics.counter_sum(m::INBOUND_HTTP_AUTHZ_ALLOW, &allow), 3);
}

/// A connection keeps its last request's metric series (`Conn::last_http`): a request naming
/// another authority on the same connection still counts in its own series, and the first
/// authority's series goes on counting when it comes back.
#[tokio::test]
async fn requests_on_one_connection_count_per_authority() {
    let ca = Arc::new(TestCa::new());
    let metrics = Metrics::new();
    let app = http_app().await;
    let (ib, _ctl) = inbound_with(&metrics, &ca, only_client(), PortSet::default()).await;
    let listener = inbound_listener(ib, Some(app.port())).await;
    let mut send = h1(tls_client(listener, &ca, Some(CLIENT), false).await).await;
    for host in ["web:8080", "api:8080", "web:8080", "web:8080"] {
        let req = Request::get(format!("http://{host}/"))
            .body(Empty::new())
            .expect("request");
        let resp = send.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.expect("body");
    }
    let text = metrics.render();
    let count = |authority: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("request_total{direction=\"inbound\"")
                    && l.contains(&format!("authority=\"{authority}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_else(|| panic!("no request_total for {authority}:\n{text}"))
            .to_string()
    };
    assert_eq!(count("web:8080"), "3");
    assert_eq!(count("api:8080"), "1");
}
