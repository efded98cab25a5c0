//! Gateway mode over real sockets, mTLS on every hop, one trust root: a client proxy ("east")
//! calls mirrored services whose endpoint is a gateway proxy ("west", with
//! `WEFT_PROXY_INBOUND_GATEWAY_SUFFIXES`), which forwards through its outbound path to the target
//! proxy in front of the applications.
//!
//! - HTTP/1, HTTP/2, gRPC-ish (trailers) and opaque TCP go through and come back;
//! - a mirror whose override is outside the gateway's suffixes gets 403 with `l5d-proxy-error`;
//! - a client without a certificate gets 403 too, and a plaintext client is closed unanswered;
//! - the gateway counts the refusals in `inbound_gateway_refused_total{reason}`;
//! - forwarded identity: the target application sees `l5d-client-id` = the client proxy's
//!   identity when the target trusts the gateway (`WEFT_PROXY_INBOUND_TRUSTED_GATEWAY_IDENTITIES`),
//!   the gateway's own identity when it does not, and never what the application forged;
//! - the gateway's own inbound policy (a scripted Server on its port) admits the caller it
//!   names and refuses another east identity (HTTP 403, opaque closed, counted);
//! - opaque TCP carries the caller in the transport header: a target trusting the gateway
//!   authorizes the caller on an opaque port, one that does not authorizes the gateway, and a
//!   peer that is no gateway naming somebody else in the header is taken for itself.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::ca::Ca;
use common::mesh::{self, Hint, Scripted};
use http_body_util::{BodyExt as _, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::mtls::{self, SessionProtocol, TransportHeader};
use weft_proxy::runtime::Running;

const CLIENT: &str = "frontend.east.serviceaccount.identity.weft.cluster.local";
/// Another workload of east.
const OTHER: &str = "backend.east.serviceaccount.identity.weft.cluster.local";
const GATEWAY: &str =
    "linkerd-gateway.weft-multicluster.serviceaccount.identity.weft.cluster.local";
const TARGET: &str = "web.default.serviceaccount.identity.weft.cluster.local";
/// Bound for waits on events; not a timing assertion.
const LIMIT: Duration = Duration::from_secs(20);

/// The HTTP/1 application: answers `VERSION CLIENT-ID HOST`.
async fn http1_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(describe(&req)))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc),
            );
        }
    });
    addr
}

/// The HTTP/2 application: answers `VERSION CLIENT-ID AUTHORITY`, and for gRPC requests ends
/// with the trailer `grpc-status: 0`.
async fn http2_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let mut frames = vec![Ok::<_, Infallible>(Frame::data(Bytes::from(describe(
                    &req,
                ))))];
                if req
                    .headers()
                    .get("content-type")
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
                {
                    let mut trailers = hyper::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    frames.push(Ok(Frame::trailers(trailers)));
                }
                let body = StreamBody::new(futures_util::stream::iter(frames));
                Ok::<_, Infallible>(Response::new(body))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc),
            );
        }
    });
    addr
}

fn describe(req: &Request<Incoming>) -> String {
    let id = req
        .headers()
        .get("l5d-client-id")
        .map_or("none", |v| v.to_str().unwrap());
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get("host")
                .map(|h| h.to_str().unwrap().to_string())
        })
        .unwrap_or_default();
    format!("{:?} {id} {host}", req.version())
}

/// The proxies and what the test reaches them by.
struct Chain {
    client: Running,
    /// A second east workload ([`OTHER`]) calling the same mirrors.
    other: Running,
    gateway: Running,
    target: Running,
    /// The client's upstream listener for the database mirror.
    db: SocketAddr,
    /// The other workload's.
    other_db: SocketAddr,
    /// The database application's port (the target's inbound policy port for it).
    db_port: u16,
}

/// Who the west proxies' inbound policies admit (`None`: the default policy, everybody).
#[derive(Clone, Copy, Default)]
struct Admits<'a> {
    /// Every port of the gateway: a Server `gateway` (detecting HTTP, as Linkerd's).
    gateway: Option<&'a [&'a str]>,
    /// The target's database port: an opaque Server `db`.
    db: Option<&'a [&'a str]>,
}

impl Chain {
    async fn stop(self) {
        for running in [self.client, self.other, self.gateway, self.target] {
            running.shutdown();
            running.wait().await;
        }
    }
}

/// Applications behind the target proxy (explicit mode: a forward port each); the gateway's
/// Destination knows the services in its cluster; the client's knows their mirrors, whose
/// endpoint is the gateway's inbound listener with the override naming the service.
/// The database is reached through the target's inbound listener with a transport header
/// (opaque transport, as Linkerd's proxies reach an opaque port). `target_vars`: the target
/// proxy's extra environment.
async fn chain(ca: &Arc<Ca>, target_vars: &[(&str, &str)], admits: Admits<'_>) -> Chain {
    let (h1, h2, tcp) = (
        http1_app().await,
        http2_app().await,
        common::tcp_echo_app().await,
    );
    let forward = format!("{}=0,{}=0", h1.port(), h2.port());
    let mut vars = vec![("WEFT_PROXY_INBOUND_FORWARD_PORTS", forward.as_str())];
    vars.extend_from_slice(target_vars);
    let policies = |port: u16, name: &str, opaque: bool, admits: Option<&[&str]>| {
        mesh::Policies::new(admits.map(|ids| (port, mesh::server(name, opaque, ids))))
    };
    let target_policies = policies(tcp.port(), "db", true, admits.db);
    let cp = mesh::control_plane_with(ca, Scripted::default(), target_policies).await;
    let target = mesh::proxy(ca, &cp, TARGET, &vars).await;
    let target_inbound = target.listening.inbound.port();
    let fwd = |app: SocketAddr| {
        let (_, at) = target
            .listening
            .forward
            .iter()
            .find(|(port, _)| *port == app.port())
            .expect("forward port");
        *at
    };
    let west = Scripted::new([
        (
            "web.default.svc.west.local:8080".to_string(),
            vec![mesh::endpoint(fwd(h1), TARGET, Hint::H2, None, None)],
        ),
        (
            "api.default.svc.west.local:8080".to_string(),
            vec![mesh::endpoint(fwd(h2), TARGET, Hint::H2, None, None)],
        ),
        (
            "db.default.svc.west.local:5432".to_string(),
            vec![mesh::endpoint(
                tcp,
                TARGET,
                Hint::Opaque,
                Some(target_inbound),
                None,
            )],
        ),
    ]);
    let cp =
        mesh::control_plane_with(ca, west, policies(0, "gateway", false, admits.gateway)).await;
    let gateway = mesh::proxy(
        ca,
        &cp,
        GATEWAY,
        &[
            ("WEFT_PROXY_INBOUND_GATEWAY_SUFFIXES", "svc.west.local."),
            ("WEFT_PROXY_DESTINATION_PROFILE_SUFFIXES", "svc.west.local."),
        ],
    )
    .await;
    let gw = gateway.listening.inbound;
    let mirror = |name: &str, hint, remote: &str| {
        (
            name.to_string(),
            vec![mesh::endpoint(
                gw,
                GATEWAY,
                hint,
                Some(gw.port()),
                Some(remote),
            )],
        )
    };
    let east = Scripted::new([
        mirror(
            "web-west.default.svc.cluster.local:8080",
            Hint::H2,
            "web.default.svc.west.local:8080",
        ),
        mirror(
            "api-west.default.svc.cluster.local:8080",
            Hint::H2,
            "api.default.svc.west.local:8080",
        ),
        mirror(
            "db-west.default.svc.cluster.local:5432",
            Hint::Opaque,
            "db.default.svc.west.local:5432",
        ),
        mirror(
            "stray-west.default.svc.cluster.local:8080",
            Hint::H2,
            "web.default.svc.elsewhere.local:8080",
        ),
    ]);
    let cp = mesh::control_plane(ca, east).await;
    let upstreams = [(
        "WEFT_PROXY_OUTBOUND_UPSTREAMS",
        "db-west.default.svc.cluster.local:5432=0",
    )];
    let client = mesh::proxy(ca, &cp, CLIENT, &upstreams).await;
    let other = mesh::proxy(ca, &cp, OTHER, &upstreams).await;
    Chain {
        db: client.listening.upstreams[0].1,
        other_db: other.listening.upstreams[0].1,
        db_port: tcp.port(),
        client,
        other,
        gateway,
        target,
    }
}

/// (status, `l5d-proxy-error`, body, `grpc-status` trailer) of one request.
async fn answer(resp: Response<Incoming>) -> (u16, Option<String>, String, Option<String>) {
    let status = resp.status().as_u16();
    let error = resp
        .headers()
        .get("l5d-proxy-error")
        .map(|v| v.to_str().unwrap().to_string());
    let collected = resp.into_body().collect().await.unwrap();
    let grpc = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_string());
    let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    (status, error, body, grpc)
}

/// An HTTP/1 GET through the client's outbound listener (explicit mode, absolute form).
async fn get_h1(outbound: SocketAddr, authority: &str) -> (u16, Option<String>, String) {
    let s = TcpStream::connect(outbound).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://{authority}/"))
        .header("host", authority)
        .header("l5d-client-id", "forged.by.the.application")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(LIMIT, send.send_request(req))
        .await
        .expect("an answer")
        .unwrap();
    let (status, error, body, _) = answer(resp).await;
    (status, error, body)
}

/// An HTTP/2 request (prior knowledge) through the client's outbound listener; gRPC-shaped
/// when `grpc`.
async fn h2(
    outbound: SocketAddr,
    authority: &str,
    grpc: bool,
) -> (u16, Option<String>, String, Option<String>) {
    let s = TcpStream::connect(outbound).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::post(format!("http://{authority}/pkg.Svc/Call"));
    if grpc {
        req = req
            .header("content-type", "application/grpc")
            .header("te", "trailers");
    }
    let req = req
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let resp = tokio::time::timeout(LIMIT, send.send_request(req))
        .await
        .expect("an answer")
        .unwrap();
    answer(resp).await
}

/// `select 1` through an upstream listener for the database mirror, half-closed; what came back
/// (nothing when a proxy closed the connection).
async fn query(db: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(db).await.unwrap();
    s.write_all(b"select 1").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    // A reset is a refusal too: what was read before it is the answer.
    let _ = tokio::time::timeout(LIMIT, s.read_to_end(&mut back))
        .await
        .expect("an answer or the connection closed");
    back
}

/// The sum of `family`'s series on `proxy` whose labels include every one of `labels`.
async fn counted(proxy: &Running, family: &str, labels: &[(&str, &str)]) -> u64 {
    let (_, metrics) = common::admin(proxy.listening.admin, "GET", "/metrics").await;
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!(r#"{k}="{v}""#)))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `inbound_gateway_refused_total` of the gateway with `reason`.
async fn refused(gateway: &Running, reason: &str) -> u64 {
    counted(
        gateway,
        "inbound_gateway_refused_total",
        &[("reason", reason)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_grpc_and_opaque_go_through_the_gateway() {
    let ca = Arc::new(Ca::new());
    let chain = chain(&ca, &[], Admits::default()).await;
    let outbound = chain.client.listening.outbound;

    // HTTP/1: through as HTTP/1, the authority the service's own name. The target does not
    // trust the gateway: its application sees the gateway's identity, never the forged one.
    let (status, error, body) = get_h1(outbound, "web-west.default.svc.cluster.local:8080").await;
    assert_eq!((status, error), (200, None));
    assert_eq!(
        body,
        format!("HTTP/1.1 {GATEWAY} web.default.svc.west.local:8080")
    );

    // HTTP/2 and gRPC: through as HTTP/2, trailers included.
    let (status, error, body, grpc) =
        h2(outbound, "api-west.default.svc.cluster.local:8080", false).await;
    assert_eq!((status, error, grpc), (200, None, None));
    assert_eq!(
        body,
        format!("HTTP/2.0 {GATEWAY} api.default.svc.west.local:8080")
    );
    let (status, error, _, grpc) =
        h2(outbound, "api-west.default.svc.cluster.local:8080", true).await;
    assert_eq!((status, error, grpc.as_deref()), (200, None, Some("0")));

    // Opaque TCP through the client's upstream listener for the database mirror.
    assert_eq!(query(chain.db).await, b"got:select 1");

    assert_eq!(refused(&chain.gateway, "outside_suffixes").await, 0);
    chain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refuses_names_outside_its_suffixes_and_unauthenticated_clients() {
    let ca = Arc::new(Ca::new());
    let chain = chain(&ca, &[], Admits::default()).await;
    let gw = chain.gateway.listening.inbound;

    // A name outside the suffixes: 403 with the reason, counted.
    let (status, error, _) = get_h1(
        chain.client.listening.outbound,
        "stray-west.default.svc.cluster.local:8080",
    )
    .await;
    assert_eq!(status, 403);
    let error = error.expect("l5d-proxy-error");
    assert!(
        error.contains("web.default.svc.elsewhere.local:8080")
            && error.contains("outside the gateway's suffixes"),
        "{error}"
    );
    assert_eq!(refused(&chain.gateway, "outside_suffixes").await, 1);

    // TLS to the gateway without a client certificate, a header naming a service it serves:
    // 403, counted.
    let provider = weft_proxy::identity::tls::provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.anchor_der.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![mtls::TRANSPORT_ALPN.to_vec()];
    let tcp = TcpStream::connect(gw).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(GATEWAY).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    TransportHeader {
        port: 8080,
        name: Some("web.default.svc.west.local".into()),
        protocol: Some(SessionProtocol::Http2),
        client_id: None,
    }
    .write(&mut tls)
    .await
    .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://web.default.svc.west.local:8080/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(LIMIT, send.send_request(req))
        .await
        .expect("an answer")
        .unwrap();
    let (status, error, _, _) = answer(resp).await;
    assert_eq!(status, 403);
    let error = error.expect("l5d-proxy-error");
    assert!(error.contains("no certificate"), "{error}");
    assert_eq!(refused(&chain.gateway, "no_identity").await, 1);

    // Plaintext: closed without an answer.
    let mut plain = TcpStream::connect(gw).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: web.default.svc.west.local:8080\r\n\r\n")
        .await
        .unwrap();
    let mut back = Vec::new();
    let _ = tokio::time::timeout(LIMIT, plain.read_to_end(&mut back))
        .await
        .expect("closed");
    assert!(
        back.is_empty(),
        "answered: {}",
        String::from_utf8_lossy(&back)
    );

    chain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_trusts_the_gateway_sees_the_callers_identity() {
    let ca = Arc::new(Ca::new());
    let chain = chain(
        &ca,
        &[("WEFT_PROXY_INBOUND_TRUSTED_GATEWAY_IDENTITIES", GATEWAY)],
        Admits::default(),
    )
    .await;
    let outbound = chain.client.listening.outbound;

    let (status, error, body) = get_h1(outbound, "web-west.default.svc.cluster.local:8080").await;
    assert_eq!((status, error), (200, None));
    assert_eq!(
        body,
        format!("HTTP/1.1 {CLIENT} web.default.svc.west.local:8080")
    );
    let (status, _, body, _) = h2(outbound, "api-west.default.svc.cluster.local:8080", false).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        format!("HTTP/2.0 {CLIENT} api.default.svc.west.local:8080")
    );

    // The target's metrics name the caller, not the gateway.
    let (_, metrics) = common::admin(chain.target.listening.admin, "GET", "/metrics").await;
    let from_client = metrics
        .lines()
        .filter(|l| l.starts_with("request_total{") && l.contains(r#"direction="inbound""#))
        .filter(|l| l.contains(&format!(r#"client_id="{CLIENT}""#)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum::<u64>();
    assert_eq!(from_client, 2, "{metrics}");

    chain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_policy_admits_the_caller_it_names_and_refuses_another() {
    let ca = Arc::new(Ca::new());
    let admits = Admits {
        gateway: Some(&[CLIENT]),
        db: None,
    };
    let chain = chain(&ca, &[], admits).await;

    // The named caller: through, HTTP and opaque.
    let (status, error, _) = get_h1(
        chain.client.listening.outbound,
        "web-west.default.svc.cluster.local:8080",
    )
    .await;
    assert_eq!((status, error), (200, None));
    assert_eq!(query(chain.db).await, b"got:select 1");

    // Another east identity: HTTP 403 naming it and the gateway's Server; opaque closed.
    let (status, error, _) = get_h1(
        chain.other.listening.outbound,
        "web-west.default.svc.cluster.local:8080",
    )
    .await;
    assert_eq!(status, 403);
    let error = error.expect("l5d-proxy-error");
    assert!(
        error.contains(OTHER) && error.contains("server:gateway"),
        "{error}"
    );
    assert!(query(chain.other_db).await.is_empty(), "relayed");

    // Counted as any inbound refusal, per connection, under the gateway's Server.
    let tcp = |family, id| {
        let gateway = &chain.gateway;
        async move {
            counted(
                gateway,
                family,
                &[("srv_name", "gateway"), ("client_id", id)],
            )
            .await
        }
    };
    assert_eq!(tcp("inbound_tcp_authz_deny_total", OTHER).await, 2);
    assert_eq!(tcp("inbound_tcp_authz_deny_total", CLIENT).await, 0);
    assert_eq!(tcp("inbound_tcp_authz_allow_total", CLIENT).await, 2);
    assert_eq!(tcp("inbound_tcp_authz_allow_total", OTHER).await, 0);
    chain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_target_trusting_the_gateway_authorizes_the_caller() {
    let ca = Arc::new(Ca::new());
    let admits = Admits {
        gateway: None,
        db: Some(&[CLIENT]),
    };
    let trust = [("WEFT_PROXY_INBOUND_TRUSTED_GATEWAY_IDENTITIES", GATEWAY)];
    let chain = chain(&ca, &trust, admits).await;

    // The admitted caller through the gateway; another east identity refused by the target.
    assert_eq!(query(chain.db).await, b"got:select 1");
    assert!(query(chain.other_db).await.is_empty(), "relayed");

    let db = |family, id| {
        let target = &chain.target;
        async move { counted(target, family, &[("srv_name", "db"), ("client_id", id)]).await }
    };
    assert_eq!(db("inbound_tcp_authz_allow_total", CLIENT).await, 1);
    assert_eq!(db("inbound_tcp_authz_deny_total", OTHER).await, 1);
    assert_eq!(db("inbound_tcp_authz_allow_total", GATEWAY).await, 0);
    assert_eq!(db("inbound_tcp_authz_deny_total", GATEWAY).await, 0);
    chain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_target_not_trusting_the_gateway_authorizes_the_gateway() {
    let ca = Arc::new(Ca::new());
    let admits = Admits {
        gateway: None,
        db: Some(&[CLIENT]),
    };
    let chain = chain(&ca, &[], admits).await;

    // The caller is named in the header, but only a trusted gateway is believed: the client
    // is the gateway, which the policy does not admit.
    assert!(query(chain.db).await.is_empty(), "relayed");
    let deny = &[("srv_name", "db"), ("client_id", GATEWAY)];
    let denied = counted(&chain.target, "inbound_tcp_authz_deny_total", deny).await;
    assert_eq!(denied, 1);
    chain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_is_no_gateway_naming_a_client_is_taken_for_itself() {
    let ca = Arc::new(Ca::new());
    let admits = Admits {
        gateway: None,
        db: Some(&[CLIENT]),
    };
    let trust = [("WEFT_PROXY_INBOUND_TRUSTED_GATEWAY_IDENTITIES", GATEWAY)];
    let chain = chain(&ca, &trust, admits).await;

    // Straight to the target's inbound listener with a certificate of `me`, the header naming
    // `claimed` as the client.
    let direct = |me: &'static str, claimed: &'static str| {
        let (ca, at, port) = (ca.clone(), chain.target.listening.inbound, chain.db_port);
        async move {
            let provider = weft_proxy::identity::tls::provider();
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.anchor_der.clone()).unwrap();
            let (cert, key) = ca.client(me);
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(vec![cert], key)
                .unwrap();
            config.alpn_protocols = vec![mtls::TRANSPORT_ALPN.to_vec()];
            let tcp = TcpStream::connect(at).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from(TARGET).unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .expect("handshake");
            TransportHeader {
                port,
                name: None,
                protocol: None,
                client_id: Some(claimed.into()),
            }
            .write(&mut tls)
            .await
            .unwrap();
            tls.write_all(b"select 1").await.unwrap();
            tls.shutdown().await.unwrap();
            let mut back = Vec::new();
            let _ = tokio::time::timeout(LIMIT, tls.read_to_end(&mut back))
                .await
                .expect("an answer or the connection closed");
            back
        }
    };
    // Claiming the admitted identity does not admit another.
    assert!(direct(OTHER, CLIENT).await.is_empty(), "relayed");
    // Claiming another does not refuse the admitted one: its own certificate decides.
    assert_eq!(direct(CLIENT, OTHER).await, b"got:select 1");

    let db = |family, id| {
        let target = &chain.target;
        async move { counted(target, family, &[("srv_name", "db"), ("client_id", id)]).await }
    };
    assert_eq!(db("inbound_tcp_authz_deny_total", OTHER).await, 1);
    assert_eq!(db("inbound_tcp_authz_allow_total", CLIENT).await, 1);
    assert_eq!(db("inbound_tcp_authz_deny_total", CLIENT).await, 0);
    chain.stop().await;
}
