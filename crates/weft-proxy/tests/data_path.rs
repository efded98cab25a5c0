//! Component tests: an outbound proxy and an inbound proxy (the real `outbound::handle` and
//! `inbound::handle`) in front of a test application, over loopback sockets, with a static
//! endpoint set standing in for discovery.
//!
//! client ──> outbound (upstream port for web:8080) ──> inbound ──> app on 127.0.0.1:APP

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, header, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use weft_proxy::{
    accept::Accepted,
    config::PortSet,
    discovery::{Endpoint, EndpointSet, ProtocolHint, Resolution, Target},
    inbound::{self, Inbound},
    metrics::Metrics,
    outbound::{self, Origin, Outbound, Resolve},
};

const WEB: &str = "web.default.svc.cluster.local";

struct StaticResolver(HashMap<Target, watch::Receiver<EndpointSet>>);

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Resolution> {
        let r = match self.0.get(target) {
            Some(rx) => Resolution::Endpoints(rx.clone()),
            None => Resolution::Rejected,
        };
        Box::pin(async move { r })
    }
    fn canonicalize(&self, host: &str, port: u16) -> Option<Target> {
        let host = match host.split('.').count() {
            1 => format!("{host}.default.svc.cluster.local"),
            2 => format!("{host}.svc.cluster.local"),
            _ => host.to_string(),
        };
        host.ends_with(".svc.cluster.local")
            .then_some(Target::Name { host, port })
    }
}

fn endpoint(addr: SocketAddr, hint: ProtocolHint) -> Endpoint {
    let labels = BTreeMap::from([("service".to_string(), "web".to_string())]);
    Endpoint {
        addr,
        weight: 10000,
        hint,
        identity: None,
        opaque_transport_port: None,
        authority_override: None,
        labels: Arc::new(labels),
    }
}

fn set(endpoints: Vec<Endpoint>, opaque: bool) -> EndpointSet {
    EndpointSet {
        resolved: true,
        exists: true,
        opaque,
        fqn: None,
        endpoints,
    }
}

fn accepted(stream: TcpStream, drain: &watch::Receiver<bool>) -> Accepted {
    Accepted {
        peer: stream.peer_addr().unwrap(),
        local: stream.local_addr().unwrap(),
        orig_dst: None,
        stream,
        drain: drain.clone(),
    }
}

/// The test application: answers HTTP/1 and HTTP/2 with what it saw, echoes upgraded streams,
/// and (on opaque ports) answers a half-closed byte stream.
async fn app_http(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut req = req;
    if req.headers().contains_key(header::UPGRADE) {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let mut io = TokioIo::new(upgraded);
            let mut got = Vec::new();
            io.read_to_end(&mut got).await.unwrap();
            io.write_all(format!("echo:{}", String::from_utf8_lossy(&got)).as_bytes())
                .await
                .unwrap();
            io.shutdown().await.unwrap();
        });
        let mut resp = Response::new(Full::default());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert(header::UPGRADE, "echo".parse().unwrap());
        resp.headers_mut()
            .insert(header::CONNECTION, "upgrade".parse().unwrap());
        return Ok(resp);
    }
    let version = req.version();
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap().to_string())
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let seen = |name: &str| req.headers().contains_key(name);
    let summary = format!(
        "version={version:?} host={host} path={} orig_proto={} client_id={}",
        req.uri().path(),
        seen("l5d-orig-proto"),
        seen("l5d-client-id"),
    );
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let text = format!("{summary} body={}", String::from_utf8_lossy(&body));
    Ok(Response::new(Full::new(Bytes::from(text))))
}

async fn start_app_http1() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), hyper::service::service_fn(app_http))
                    .with_upgrades(),
            );
        }
    });
    addr
}

async fn start_app_h2() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), hyper::service::service_fn(app_http)),
            );
        }
    });
    addr
}

/// Reads to EOF, then answers with the byte count and closes.
async fn start_app_tcp() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                s.write_all(format!("got {} bytes", got.len()).as_bytes())
                    .await
                    .unwrap();
                s.shutdown().await.unwrap();
            });
        }
    });
    addr
}

/// An outbound proxy whose resolver knows only `target`, resolved to `endpoints` for the whole
/// test (not opaque).
fn outbound_to(
    target: &Target,
    endpoints: Vec<Endpoint>,
    failfast_timeout: Duration,
    opaque_ports: PortSet,
    metrics: Metrics,
) -> Arc<Outbound> {
    let (set_tx, set_rx) = watch::channel(set(endpoints, false));
    // The set never changes: keep the channel open for as long as the test runs.
    std::mem::forget(set_tx);
    Outbound::with_resolver(
        outbound::Settings {
            detect_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            failfast_timeout,
            opaque_ports,
            pool: Default::default(),
            own: outbound::OwnAddrs::default(),
            retry_budget: Default::default(),
            connect_backoff: weft_proxy::balance::DEFAULT_CONNECT_BACKOFF,
            balancer_idle_timeout: Duration::from_secs(60),
        },
        Box::new(StaticResolver(HashMap::from([(target.clone(), set_rx)]))),
        metrics,
    )
}

/// A listener whose one connection `ob` handles as coming from `origin`.
async fn serve_one(ob: Arc<Outbound>, origin: Origin) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (drain_tx, drain) = watch::channel(false);
        let (s, _) = l.accept().await.unwrap();
        outbound::handle(ob, accepted(s, &drain), origin).await;
        drop(drain_tx);
    });
    addr
}

struct Mesh {
    /// The client's way in: an outbound upstream port for `web:PORT`.
    outbound: SocketAddr,
    /// The outbound listener itself in explicit (HTTP_PROXY) mode.
    explicit: SocketAddr,
    /// The inbound listener, for tests that play the peer proxy themselves.
    inbound_addr: SocketAddr,
    /// Whether each connection the inbound proxy accepted started with the HTTP/2 preface.
    inbound_saw_h2: Arc<Mutex<Vec<bool>>>,
    _drain: watch::Sender<bool>,
    metrics: Metrics,
}

/// Starts inbound (forwarding to `app_port`) and outbound (an upstream port for `web:svc_port`)
/// with the given endpoint hint; `opaque` marks the service/port opaque on both sides.
async fn mesh(app_port: u16, svc_port: u16, hint: ProtocolHint, opaque: bool) -> Mesh {
    let (drain_tx, drain) = watch::channel(false);
    let metrics = Metrics::new();
    let opaque_ports = |p: u16| PortSet(if opaque { vec![p..=p] } else { vec![] });

    let ib = Inbound::with_settings(
        inbound::Settings {
            detect_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            opaque_ports: opaque_ports(app_port),
            pool: Default::default(),
        },
        metrics.clone(),
    );
    let inbound_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let inbound_addr = inbound_l.local_addr().unwrap();
    let inbound_saw_h2 = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn({
        let drain = drain.clone();
        let saw = inbound_saw_h2.clone();
        async move {
            loop {
                let (s, _) = inbound_l.accept().await.unwrap();
                let mut first = [0u8; 24];
                let n = s.peek(&mut first).await.unwrap();
                saw.lock()
                    .unwrap()
                    .push(first[..n] == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..n] && n > 0);
                tokio::spawn(inbound::handle_any(
                    ib.clone(),
                    accepted(s, &drain),
                    Some(app_port),
                ));
            }
        }
    });

    let target = Target::Name {
        host: WEB.to_string(),
        port: svc_port,
    };
    let ob = outbound_to(
        &target,
        vec![endpoint(inbound_addr, hint)],
        Duration::from_millis(200),
        opaque_ports(svc_port),
        metrics.clone(),
    );
    let outbound_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outbound_addr = outbound_l.local_addr().unwrap();
    tokio::spawn({
        let drain = drain.clone();
        let ob = ob.clone();
        async move {
            loop {
                let (s, _) = outbound_l.accept().await.unwrap();
                let origin = Origin::Upstream(target.clone());
                tokio::spawn(outbound::handle(ob.clone(), accepted(s, &drain), origin));
            }
        }
    });
    let explicit_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let explicit = explicit_l.local_addr().unwrap();
    tokio::spawn({
        let drain = drain.clone();
        async move {
            loop {
                let (s, _) = explicit_l.accept().await.unwrap();
                tokio::spawn(outbound::handle(
                    ob.clone(),
                    accepted(s, &drain),
                    Origin::Explicit,
                ));
            }
        }
    });
    Mesh {
        outbound: outbound_addr,
        explicit,
        inbound_addr,
        inbound_saw_h2,
        _drain: drain_tx,
        metrics,
    }
}

async fn h1_client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    sender
}

async fn body_text(resp: Response<Incoming>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn http1_travels_as_h2_between_proxies_and_is_restored() {
    let app = start_app_http1().await;
    let mesh = mesh(app.port(), 8080, ProtocolHint::H2, false).await;

    let mut client = h1_client(mesh.outbound).await;
    for i in 0..3 {
        let req = Request::post("/hello")
            .header(header::HOST, format!("{WEB}:8080"))
            .header("l5d-client-id", "forged.identity")
            .body(Full::new(Bytes::from(format!("payload-{i}"))))
            .unwrap();
        let resp = client.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().get("l5d-orig-proto").is_none());
        assert_eq!(
            body_text(resp).await,
            format!(
                "version=HTTP/1.1 host={WEB}:8080 path=/hello orig_proto=false client_id=false body=payload-{i}"
            )
        );
    }
    // All three requests shared one multiplexed HTTP/2 connection between the proxies.
    assert_eq!(*mesh.inbound_saw_h2.lock().unwrap(), vec![true]);
    let text = mesh.metrics.render();
    assert!(text.contains("request_total{"), "{text}");
}

#[tokio::test]
async fn explicit_mode_routes_absolute_form_requests() {
    let app = start_app_http1().await;
    let mesh = mesh(app.port(), 8080, ProtocolHint::H2, false).await;
    let mut client = h1_client(mesh.explicit).await;
    // What an HTTP_PROXY client sends: absolute-form with a short service name.
    let req = Request::get("http://web:8080/via-proxy")
        .header(header::HOST, "web:8080")
        .body(Full::default())
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        body_text(resp).await,
        "version=HTTP/1.1 host=web:8080 path=/via-proxy orig_proto=false client_id=false body="
    );
    assert_eq!(*mesh.inbound_saw_h2.lock().unwrap(), vec![true]);
}

#[tokio::test]
async fn unmeshed_endpoint_gets_the_original_http1() {
    let app = start_app_http1().await;
    let mesh = mesh(app.port(), 8080, ProtocolHint::Unknown, false).await;
    let mut client = h1_client(mesh.outbound).await;
    let req = Request::get("/plain")
        .header(header::HOST, "web:8080")
        .body(Full::default())
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(body_text(resp)
        .await
        .starts_with("version=HTTP/1.1 host=web:8080 path=/plain"));
    assert_eq!(*mesh.inbound_saw_h2.lock().unwrap(), vec![false]);
}

#[tokio::test]
async fn h2c_stays_http2_end_to_end() {
    let app = start_app_h2().await;
    let mesh = mesh(app.port(), 8080, ProtocolHint::H2, false).await;

    let io = TokioIo::new(TcpStream::connect(mesh.outbound).await.unwrap());
    let (mut client, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://{WEB}:8080/grpc.Svc/Call"))
        .body(Full::new(Bytes::from_static(b"h2-body")))
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(
        body_text(resp).await,
        format!("version=HTTP/2.0 host={WEB}:8080 path=/grpc.Svc/Call orig_proto=false client_id=false body=h2-body")
    );
    assert_eq!(*mesh.inbound_saw_h2.lock().unwrap(), vec![true]);
}

#[tokio::test]
async fn http1_upgrade_is_spliced_through_both_proxies() {
    let app = start_app_http1().await;
    let mesh = mesh(app.port(), 8080, ProtocolHint::H2, false).await;

    let mut client = h1_client(mesh.outbound).await;
    let req = Request::get("/ws")
        .header(header::HOST, format!("{WEB}:8080"))
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "echo")
        .body(Full::default())
        .unwrap();
    let mut resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = hyper::upgrade::on(&mut resp).await.unwrap();
    let mut io = TokioIo::new(upgraded);
    io.write_all(b"ping").await.unwrap();
    // Half-close: the app answers only after it sees EOF.
    io.shutdown().await.unwrap();
    let mut answer = String::new();
    io.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "echo:ping");
    // Upgrades stay HTTP/1 between proxies.
    assert_eq!(*mesh.inbound_saw_h2.lock().unwrap(), vec![false]);
}

#[tokio::test]
async fn opaque_tcp_relays_with_half_close() {
    let app = start_app_tcp().await;
    let mesh = mesh(app.port(), 6379, ProtocolHint::Opaque, true).await;

    let mut client = TcpStream::connect(mesh.outbound).await.unwrap();
    client.write_all(&[b'x'; 50_000]).await.unwrap();
    client.shutdown().await.unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "got 50000 bytes");
    let text = mesh.metrics.render();
    assert!(text.contains("tcp_read_bytes_total{"), "{text}");
}

#[tokio::test]
async fn no_endpoints_fails_fast_with_503() {
    let metrics = Metrics::new();
    let target = Target::Name {
        host: WEB.to_string(),
        port: 8080,
    };
    let ob = outbound_to(
        &target,
        vec![],
        Duration::from_millis(100),
        PortSet(vec![]),
        metrics.clone(),
    );
    let addr = serve_one(ob, Origin::Explicit).await;
    let mut client = h1_client(addr).await;
    // Explicit mode: absolute-form request, as HTTP_PROXY clients send it.
    let req = Request::get(format!("http://{WEB}:8080/x"))
        .body(Full::default())
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let reason = resp
        .headers()
        .get("l5d-proxy-error")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(reason.contains("no endpoints"), "{reason}");
    let text = metrics.render();
    assert!(
        text.lines().any(|l| l.starts_with("response_total{")
            && l.contains("direction=\"outbound\"")
            && l.contains(&format!("authority=\"{WEB}:8080\""))
            && l.contains("status_code=\"503\",classification=\"failure\"")
            && l.ends_with(" 1")),
        "{text}"
    );
}

#[tokio::test]
async fn connect_error_is_502() {
    // A port with nothing listening: bind, learn the port, close.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let target = Target::Name {
        host: WEB.to_string(),
        port: 8080,
    };
    let ob = outbound_to(
        &target,
        vec![endpoint(dead, ProtocolHint::H2)],
        Duration::from_millis(100),
        PortSet(vec![]),
        Metrics::new(),
    );
    let addr = serve_one(ob, Origin::Upstream(target)).await;
    let mut client = h1_client(addr).await;
    let req = Request::get("/x")
        .header(header::HOST, "web")
        .body(Full::default())
        .unwrap();
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let reason = resp
        .headers()
        .get("l5d-proxy-error")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(reason.contains(&dead.to_string()), "{reason}");
}

/// What one HTTP/2 request looked like on the wire: version, `:authority`, every `host` value
/// and `l5d-orig-proto`.
type SeenH2 = (Version, Option<String>, Vec<String>, Option<String>);

/// A peer proxy's inbound stand-in: an HTTP/2 server that records each request it receives.
async fn start_h2_inspector() -> (SocketAddr, Arc<Mutex<Vec<SeenH2>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let record = record.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let hosts = req
                    .headers()
                    .get_all(header::HOST)
                    .iter()
                    .map(|v| v.to_str().unwrap().to_string())
                    .collect();
                let orig = req
                    .headers()
                    .get("l5d-orig-proto")
                    .map(|v| v.to_str().unwrap().to_string());
                let authority = req.uri().authority().map(|a| a.to_string());
                record
                    .lock()
                    .unwrap()
                    .push((req.version(), authority, hosts, orig));
                async { Ok::<_, Infallible>(Response::new(Full::<Bytes>::default())) }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc),
            );
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn upgraded_http1_keeps_host_on_the_wire() {
    let (peer, seen) = start_h2_inspector().await;
    let target = Target::Name {
        host: WEB.to_string(),
        port: 8080,
    };
    let ob = outbound_to(
        &target,
        vec![endpoint(peer, ProtocolHint::H2)],
        Duration::from_secs(1),
        PortSet(vec![]),
        Metrics::new(),
    );
    let explicit = serve_one(ob.clone(), Origin::Explicit).await;
    let upstream = serve_one(ob, Origin::Upstream(target)).await;

    // Origin-form through an upstream port: Host becomes `:authority` and stays as `host`.
    let mut client = h1_client(upstream).await;
    let req = Request::get("/a")
        .header(header::HOST, format!("{WEB}:8080"))
        .body(Full::default())
        .unwrap();
    assert_eq!(client.send_request(req).await.unwrap().status(), 200);
    // Absolute-form (HTTP_PROXY client) with a Host that disagrees: the request target wins
    // (RFC 9110 §7.2) and `host` equals `:authority`.
    let mut client = h1_client(explicit).await;
    let req = Request::get(format!("http://{WEB}:8080/b"))
        .header(header::HOST, "stale.example:1")
        .body(Full::default())
        .unwrap();
    assert_eq!(client.send_request(req).await.unwrap().status(), 200);

    let want = (
        Version::HTTP_2,
        Some(format!("{WEB}:8080")),
        vec![format!("{WEB}:8080")],
        Some("HTTP/1.1".to_string()),
    );
    assert_eq!(*seen.lock().unwrap(), vec![want.clone(), want]);
}

/// An HTTP/1 application that answers with every `Host` value it received, in order.
async fn start_app_hosts() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let hosts: Vec<&str> = req
                    .headers()
                    .get_all(header::HOST)
                    .iter()
                    .map(|v| v.to_str().unwrap())
                    .collect();
                let text = format!("{:?} {:?}", req.version(), hosts);
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc),
            );
        }
    });
    addr
}

#[tokio::test]
async fn inbound_downgrade_sends_exactly_one_host() {
    let app = start_app_hosts().await;
    let mesh = mesh(app.port(), 8080, ProtocolHint::H2, false).await;
    let ib = mesh.inbound_addr;

    let io = TokioIo::new(TcpStream::connect(ib).await.unwrap());
    let (mut peer, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let cases: [(&[&str], &str); 3] = [
        // What our outbound (and Linkerd's) sends now: `host` equal to `:authority`.
        (
            &[&format!("{WEB}:8080")],
            "HTTP/1.1 [\"web.default.svc.cluster.local:8080\"]",
        ),
        // An older peer that dropped `host`: it is rebuilt from `:authority`.
        (&[], "HTTP/1.1 [\"web.default.svc.cluster.local:8080\"]"),
        // Disagreeing or repeated `host` values: `:authority` wins (RFC 9113 §8.3.1).
        (
            &["a.example", "b.example"],
            "HTTP/1.1 [\"web.default.svc.cluster.local:8080\"]",
        ),
    ];
    for (hosts, want) in cases {
        let mut req = Request::get(format!("http://{WEB}:8080/x"))
            .header("l5d-orig-proto", "HTTP/1.1")
            .body(Full::<Bytes>::default())
            .unwrap();
        for h in hosts {
            req.headers_mut().append(header::HOST, h.parse().unwrap());
        }
        let resp = peer.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "host {hosts:?}");
        assert_eq!(body_text(resp).await, want, "host {hosts:?}");
    }
}
