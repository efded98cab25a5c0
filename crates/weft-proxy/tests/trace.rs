//! Tracing across two real proxies: a client sends through the client proxy's outbound side
//! (explicit mode) → mTLS → the server proxy's inbound side (a forward port) → an application
//! on 127.0.0.1. Both export to an OTLP receiver served in the test from the upstream
//! OpenTelemetry protobufs (`opentelemetry-proto`), and the test checks the spans' links,
//! kinds and attributes, the headers the application received, and the exporter's metrics.

mod common;

use common::ca::{Ca, Certifier};

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use linkerd2_proxy_api::{
    destination::{
        self as dst,
        destination_server::{Destination, DestinationServer},
    },
    identity::{
        identity_server::{Identity, IdentityServer},
        CertifyRequest, CertifyResponse,
    },
    net::TcpAddress,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
    common::v1::any_value::Value,
    trace::v1::{span::SpanKind, status::StatusCode, Span},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use weft_proxy::{config as cfg, runtime};

const CLIENT_NAME: &str = "client.default.serviceaccount.identity.weft.cluster.local";
const SERVER_NAME: &str = "web.default.serviceaccount.identity.weft.cluster.local";
const SERVICE: &str = "web.default.svc.cluster.local";
const TOKEN: &str = "weft-trace-test-token";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const LIMIT: Duration = Duration::from_secs(15);

/// The control plane: `Identity.Certify` for any name, and `Destination.Get` answering the
/// server proxy's forward port (with its identity) for the service, "not meshed" otherwise.
#[derive(Clone)]
struct ControlPlane {
    certifier: Arc<Certifier>,
    server: Arc<Mutex<Option<SocketAddr>>>,
}

#[tonic::async_trait]
impl Identity for ControlPlane {
    async fn certify(
        &self,
        req: tonic::Request<CertifyRequest>,
    ) -> Result<tonic::Response<CertifyResponse>, tonic::Status> {
        self.certifier.certify(req).await
    }
}

type Stream<T> = Pin<Box<dyn futures_util::Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl Destination for ControlPlane {
    type GetStream = Stream<dst::Update>;
    type GetProfileStream = Stream<dst::DestinationProfile>;

    async fn get(
        &self,
        req: tonic::Request<dst::GetDestination>,
    ) -> Result<tonic::Response<Self::GetStream>, tonic::Status> {
        let server = *self.server.lock().unwrap();
        let (Some(server), true) = (server, req.into_inner().path == format!("{SERVICE}:80"))
        else {
            return Err(tonic::Status::invalid_argument("not meshed"));
        };
        let add = dst::Update {
            update: Some(dst::update::Update::Add(dst::WeightedAddrSet {
                addrs: vec![dst::WeightedAddr {
                    addr: Some(TcpAddress::from(server)),
                    weight: 10000,
                    tls_identity: Some(dst::TlsIdentity {
                        strategy: Some(dst::tls_identity::Strategy::DnsLikeIdentity(
                            dst::tls_identity::DnsLikeIdentity {
                                name: SERVER_NAME.into(),
                            },
                        )),
                        server_name: None,
                    }),
                    ..Default::default()
                }],
                metric_labels: HashMap::from([("service".into(), "web".into())]),
            })),
        };
        // One Add, then the stream stays open.
        let stream =
            futures_util::stream::once(async { Ok(add) }).chain(futures_util::stream::pending());
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn get_profile(
        &self,
        _: tonic::Request<dst::GetDestination>,
    ) -> Result<tonic::Response<Self::GetProfileStream>, tonic::Status> {
        Err(tonic::Status::invalid_argument("no profiles"))
    }
}

use futures_util::StreamExt;

/// The OTLP receiver: every span exported, with its resource's `service.name`.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn serve() -> (Collector, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let c = Collector::default();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(c.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
        );
        (c, addr)
    }

    /// The spans of trace `trace` (hex), once there are `n` of them (within 15 s).
    async fn trace(&self, trace: &str, n: usize) -> Vec<(String, Span)> {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let spans: Vec<_> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, s)| hex(&s.trace_id) == trace)
                .cloned()
                .collect();
            if spans.len() >= n {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} spans of {trace} within {LIMIT:?}; got {spans:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The application: answers 200 `hello` and reports each request's headers.
async fn app() -> (SocketAddr, mpsc::UnboundedReceiver<HeaderMap>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                TokioIo::new(s),
                hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let _ = tx.send(req.headers().clone());
                    async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"hello",
                        ))))
                    }
                }),
            ));
        }
    });
    (addr, rx)
}

/// Two proxies, their control plane, the application and the collector.
struct Mesh {
    client: runtime::Running,
    server: runtime::Running,
    collector: Collector,
    app_headers: mpsc::UnboundedReceiver<HeaderMap>,
    token_file: PathBuf,
}

/// The mesh; `client_rate`: the client proxy's `WEFT_PROXY_TRACE_SAMPLE_RATE`; `collector`:
/// where both proxies export (`None`: a live in-test receiver).
async fn mesh(client_rate: &str, collector_addr: Option<SocketAddr>) -> Mesh {
    let ca = Arc::new(Ca::new());
    let cp = ControlPlane {
        certifier: Arc::new(Certifier::new(ca.clone(), TOKEN)),
        server: Arc::default(),
    };
    let cp_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp_addr = cp_l.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IdentityServer::new(cp.clone()))
            .add_service(DestinationServer::new(cp.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(cp_l)),
    );
    let (collector, live_addr) = Collector::serve().await;
    let collector_addr = collector_addr.unwrap_or(live_addr).to_string();
    let token_file = std::env::temp_dir().join(format!(
        "weft-trace-it-{}-{}",
        std::process::id(),
        cp_addr.replace([':', '.'], "-")
    ));
    std::fs::write(&token_file, TOKEN).unwrap();
    let token = token_file.display().to_string();
    let (app, app_headers) = app().await;
    let forward = format!("{}=0", app.port());
    let proxy = |name: &'static str, service: &'static str, rate: &str, more: &[(&str, &str)]| {
        let mut vars = vec![
            ("WEFT_PROXY_DESTINATION_SVC_ADDR", cp_addr.as_str()),
            ("WEFT_PROXY_IDENTITY_TOKEN_FILE", token.as_str()),
            ("WEFT_PROXY_IDENTITY_LOCAL_NAME", name),
            ("WEFT_PROXY_IDENTITY_TRUST_ANCHORS", ca.anchor_pem.as_str()),
            ("WEFT_PROXY_INBOUND_FAILFAST_TIMEOUT", "100ms"),
            (cfg::ENV_TRACE_COLLECTOR_SVC_ADDR, collector_addr.as_str()),
            (cfg::ENV_TRACE_SERVICE_NAME, service),
            (cfg::ENV_TRACE_SAMPLE_RATE, rate),
        ];
        vars.extend_from_slice(more);
        common::config(&vars)
    };
    let server = runtime::start(proxy(
        SERVER_NAME,
        "web",
        "0",
        &[("WEFT_PROXY_INBOUND_FORWARD_PORTS", forward.as_str())],
    ))
    .await
    .expect("server proxy");
    *cp.server.lock().unwrap() = Some(server.listening.forward[0].1);
    let client = runtime::start(proxy(CLIENT_NAME, "client", client_rate, &[]))
        .await
        .expect("client proxy");
    for p in [&client, &server] {
        let id = p.identity.clone().expect("identity");
        tokio::time::timeout(LIMIT, id.wait_ready())
            .await
            .expect("certificate");
    }
    Mesh {
        client,
        server,
        collector,
        app_headers,
        token_file,
    }
}

impl Mesh {
    /// One HTTP/1.1 request to the service through the client proxy, with `headers`; returns
    /// the status and the headers the application received.
    async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap) {
        let s = TcpStream::connect(self.client.listening.outbound)
            .await
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req =
            hyper::Request::get(format!("http://{SERVICE}{path}")).header("host", SERVICE);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(http_body_util::Empty::<Bytes>::new()).unwrap();
        let resp = tokio::time::timeout(LIMIT, send.send_request(req))
            .await
            .expect("an answer")
            .unwrap();
        let status = resp.status().as_u16();
        resp.into_body().collect().await.unwrap();
        let seen = match status {
            200 => tokio::time::timeout(LIMIT, self.app_headers.recv())
                .await
                .expect("the app saw the request")
                .unwrap(),
            _ => HeaderMap::new(),
        };
        (status, seen)
    }

    async fn stop(self) {
        for p in [self.client, self.server] {
            p.shutdown();
            p.wait().await;
        }
        let _ = std::fs::remove_file(&self.token_file);
    }
}

fn attr(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.clone()?.value)
}

fn string(span: &Span, key: &str) -> String {
    match attr(span, key) {
        Some(Value::StringValue(s)) => s,
        other => panic!("{key}: {other:?} in {span:?}"),
    }
}

/// The two spans of a trace, (outbound, inbound), checked for kinds, services and the
/// attributes every hop of this mesh has.
fn hops(spans: &[(String, Span)]) -> (Span, Span) {
    assert_eq!(spans.len(), 2, "exactly two spans: {spans:?}");
    let find = |kind: SpanKind| {
        spans
            .iter()
            .find(|(_, s)| s.kind == kind as i32)
            .unwrap_or_else(|| panic!("a {kind:?} span in {spans:?}"))
            .clone()
    };
    let (out_service, out) = find(SpanKind::Client);
    let (in_service, inb) = find(SpanKind::Server);
    assert_eq!(
        (out_service.as_str(), in_service.as_str()),
        ("client", "web")
    );
    for (s, direction) in [(&out, "outbound"), (&inb, "inbound")] {
        assert_eq!(string(s, "weft.direction"), direction);
        assert_eq!(string(s, "http.request.method"), "GET");
        assert_eq!(string(s, "weft.client.id"), CLIENT_NAME, "{direction}");
        assert_eq!(string(s, "weft.server.id"), SERVER_NAME, "{direction}");
        assert_eq!(
            attr(s, "weft.tls"),
            Some(Value::BoolValue(true)),
            "{direction}"
        );
        assert_eq!(
            attr(s, "http.response.status_code"),
            Some(Value::IntValue(200))
        );
        assert_ne!(
            s.status.as_ref().map(|st| st.code),
            Some(StatusCode::Error as i32)
        );
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano && s.start_time_unix_nano > 0);
    }
    assert_eq!(string(&out, "server.address"), SERVICE);
    // The outbound span names the endpoint: the server proxy's forward port.
    assert_eq!(string(&out, "network.peer.address"), "127.0.0.1");
    (out, inb)
}

/// The value of `name` (summed over its series) in the proxy's `/metrics`.
async fn metric(p: &runtime::Running, name: &str) -> u64 {
    let (_, body) = common::admin(p.listening.admin, "GET", "/metrics").await;
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn w3c_traceparent_links_the_client_outbound_inbound_and_app() {
    let mut mesh = mesh("0", None).await;
    let tp = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let (status, seen) = mesh
        .get(
            "/items/7",
            &[("traceparent", &tp), ("tracestate", "vendor=abc")],
        )
        .await;
    assert_eq!(status, 200);

    let spans = mesh.collector.trace(TRACE, 2).await;
    let (out, inb) = hops(&spans);
    assert_eq!(
        hex(&out.parent_span_id),
        CALLER_SPAN,
        "outbound's parent: the client's span"
    );
    assert_eq!(
        inb.parent_span_id, out.span_id,
        "inbound's parent: the outbound span"
    );
    assert_ne!(inb.span_id, out.span_id);
    assert_eq!(out.trace_state, "vendor=abc");
    assert_eq!(out.name, "GET /items/7");
    assert_eq!(string(&inb, "url.path"), "/items/7");
    // The inbound route (no policy from this control plane: the default's, as metrics label it).
    assert_eq!(string(&inb, "weft.route.kind"), "default");
    assert_eq!(string(&inb, "client.address"), "127.0.0.1");
    // The application continues under the inbound span; tracestate is passed on unchanged.
    let app_tp = seen["traceparent"].to_str().unwrap();
    assert_eq!(app_tp, format!("00-{TRACE}-{}-01", hex(&inb.span_id)));
    assert_eq!(seen["tracestate"], "vendor=abc");

    // Still exactly two after another export interval.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mesh.collector.trace(TRACE, 2).await.len(), 2);
    assert!(metric(&mesh.client, "trace_spans_exported_total").await >= 1);
    assert!(metric(&mesh.server, "trace_spans_exported_total").await >= 1);
    mesh.stop().await;
}

#[tokio::test]
async fn b3_multi_and_single_propagate_the_same_way() {
    let mut mesh = mesh("0", None).await;

    // Multi-header, with a 64-bit trace id: kept 64-bit on the wire, widened in OTLP.
    let short = "a3ce929d0e0e4736";
    let (status, seen) = mesh
        .get(
            "/multi",
            &[
                ("x-b3-traceid", short),
                ("x-b3-spanid", CALLER_SPAN),
                ("x-b3-sampled", "1"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    let spans = mesh.collector.trace(&format!("{:0>32}", short), 2).await;
    let (out, inb) = hops(&spans);
    assert_eq!(hex(&out.parent_span_id), CALLER_SPAN);
    assert_eq!(inb.parent_span_id, out.span_id);
    assert_eq!(seen["x-b3-traceid"], short);
    assert_eq!(seen["x-b3-spanid"], hex(&inb.span_id).as_str());
    assert_eq!(seen["x-b3-parentspanid"], hex(&out.span_id).as_str());
    assert_eq!(seen["x-b3-sampled"], "1");
    assert!(
        seen.get("traceparent").is_none(),
        "only the format that came in"
    );

    // Single header.
    let trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let b3 = format!("{trace}-{CALLER_SPAN}-1");
    let (status, seen) = mesh.get("/single", &[("b3", &b3)]).await;
    assert_eq!(status, 200);
    let spans = mesh.collector.trace(trace, 2).await;
    let (out, inb) = hops(&spans);
    assert_eq!(hex(&out.parent_span_id), CALLER_SPAN);
    assert_eq!(inb.parent_span_id, out.span_id);
    assert_eq!(
        seen["b3"].to_str().unwrap(),
        format!("{trace}-{}-1-{}", hex(&inb.span_id), hex(&out.span_id))
    );
    mesh.stop().await;
}

#[tokio::test]
async fn unsampled_requests_have_no_spans_and_keep_their_headers() {
    let mut mesh = mesh("0", None).await;
    let unsampled = format!("00-{TRACE}-{CALLER_SPAN}-00");
    let b3 = format!("{TRACE}-{CALLER_SPAN}-0");
    let (status, seen) = mesh
        .get("/quiet", &[("traceparent", &unsampled), ("b3", &b3)])
        .await;
    assert_eq!(status, 200);
    assert_eq!(seen["traceparent"], unsampled.as_str());
    assert_eq!(seen["b3"], b3.as_str());
    // No context and a sample rate of 0: nothing either, and no header added.
    let (status, seen) = mesh.get("/none", &[]).await;
    assert_eq!(status, 200);
    assert!(seen.get("traceparent").is_none());
    // A malformed context is ignored (and counted), never an error.
    let (status, seen) = mesh.get("/bad", &[("traceparent", "00-nonsense")]).await;
    assert_eq!(status, 200);
    assert_eq!(seen["traceparent"], "00-nonsense");
    assert_eq!(
        metric(&mesh.client, "trace_context_malformed_total").await,
        1
    );

    // A sampled request after them: once its spans arrived, every earlier span would have.
    let marker = "0af7651916cd43dd8448eb211c80319c";
    let tp = format!("00-{marker}-{CALLER_SPAN}-01");
    mesh.get("/marker", &[("traceparent", &tp)]).await;
    mesh.collector.trace(marker, 2).await;
    let all = mesh.collector.spans.lock().unwrap().clone();
    assert!(
        all.iter().all(|(_, s)| hex(&s.trace_id) == marker),
        "only the marker was traced: {all:?}"
    );
    mesh.stop().await;
}

#[tokio::test]
async fn sample_rate_one_roots_a_trace_at_the_outbound_proxy() {
    let mut mesh = mesh("1", None).await;
    let (status, seen) = mesh.get("/root", &[]).await;
    assert_eq!(status, 200);
    let tp = seen["traceparent"].to_str().unwrap().to_string();
    let trace = tp
        .split('-')
        .nth(1)
        .expect("a traceparent for the app")
        .to_string();
    let spans = mesh.collector.trace(&trace, 2).await;
    let (out, inb) = hops(&spans);
    assert!(
        out.parent_span_id.is_empty(),
        "the outbound span is the root"
    );
    assert_eq!(inb.parent_span_id, out.span_id);
    assert_eq!(tp, format!("00-{trace}-{}-01", hex(&inb.span_id)));
    mesh.stop().await;
}

#[tokio::test]
async fn with_the_collector_down_requests_succeed_and_the_loss_is_counted() {
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = closed.local_addr().unwrap();
    drop(closed);
    let mut mesh = mesh("0", Some(down)).await;
    let tp = format!("00-{TRACE}-{CALLER_SPAN}-01");
    for i in 0..3 {
        let (status, seen) = mesh
            .get(&format!("/down/{i}"), &[("traceparent", &tp)])
            .await;
        assert_eq!(status, 200);
        assert!(seen.contains_key("traceparent"));
    }
    // The first batch's export fails within the export interval plus the connect attempt.
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let errors = metric(&mesh.client, "trace_export_errors_total").await;
        let dropped = metric(
            &mesh.client,
            "trace_spans_dropped_total{reason=\"export_failed\"}",
        )
        .await;
        if errors >= 1 && dropped >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "export errors {errors}, dropped {dropped}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&mesh.client, "trace_spans_exported_total").await, 0);
    mesh.stop().await;
}
