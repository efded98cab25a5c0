//! The request path against a scripted in-process control plane (Destination and
//! OutboundPolicies over tonic on 127.0.0.1) and real local HTTP servers: header routing,
//! weighted splits, no route, timeouts, gRPC deadlines, fault injection, live policy updates,
//! and the fallback when the control plane has no policy (balancing and egress in child
//! modules).
#![allow(deprecated)] // the proto's deprecated `request_timeout` fields must be filled

use super::*;
use crate::{discovery::Discovery, metrics::Metrics};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use linkerd2_proxy_api::{
    destination::{self as dst, destination_server::DestinationServer},
    http_route as hr, meta,
    outbound::{
        self as api, backend, http_route as ohr,
        outbound_policies_server::{OutboundPolicies, OutboundPoliciesServer},
        proxy_protocol, traffic_spec,
    },
};
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
};
use tokio::{net::TcpListener, sync::watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::Status;

const WEB: &str = "web.default.svc.cluster.local:8080";
const URL: &str = "http://web:8080/";

type Policies = HashMap<String, api::OutboundPolicy>;

/// A scripted control plane: endpoints per Destination path, a policy per authority.
#[derive(Clone)]
struct Ctl {
    endpoints: Arc<Mutex<HashMap<String, Vec<SocketAddr>>>>,
    policies: watch::Sender<Policies>,
    watches: Arc<AtomicUsize>,
    /// `Destination.Get` calls so far.
    gets: Arc<AtomicUsize>,
    /// Policy streams open right now.
    open: Arc<AtomicUsize>,
    /// `true`: policy streams fail with UNAVAILABLE and the server stops accepting.
    kill: watch::Sender<bool>,
}

#[tonic::async_trait]
impl dst::destination_server::Destination for Ctl {
    type GetStream = ReceiverStream<Result<dst::Update, Status>>;
    type GetProfileStream = ReceiverStream<Result<dst::DestinationProfile, Status>>;

    async fn get(
        &self,
        req: tonic::Request<dst::GetDestination>,
    ) -> Result<tonic::Response<Self::GetStream>, Status> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let path = req.into_inner().path;
        let addrs = self.endpoints.lock().unwrap().get(&path).cloned();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let update = match addrs {
            None => dst::update::Update::NoEndpoints(dst::NoEndpoints { exists: false }),
            Some(addrs) => dst::update::Update::Add(dst::WeightedAddrSet {
                addrs: addrs
                    .into_iter()
                    .map(|a| dst::WeightedAddr {
                        addr: Some(a.into()),
                        weight: 10_000,
                        ..Default::default()
                    })
                    .collect(),
                metric_labels: HashMap::new(),
            }),
        };
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(dst::Update {
                    update: Some(update),
                }))
                .await;
            tx.closed().await;
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }

    async fn get_profile(
        &self,
        _req: tonic::Request<dst::GetDestination>,
    ) -> Result<tonic::Response<Self::GetProfileStream>, Status> {
        Err(Status::unimplemented("no profiles here"))
    }
}

#[tonic::async_trait]
impl OutboundPolicies for Ctl {
    type WatchStream = ReceiverStream<Result<api::OutboundPolicy, Status>>;

    async fn get(
        &self,
        _req: tonic::Request<api::TrafficSpec>,
    ) -> Result<tonic::Response<api::OutboundPolicy>, Status> {
        Err(Status::unimplemented("watch only"))
    }

    async fn watch(
        &self,
        req: tonic::Request<api::TrafficSpec>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        self.watches.fetch_add(1, Ordering::SeqCst);
        let key = match req.into_inner().target {
            Some(traffic_spec::Target::Authority(a)) => a,
            Some(traffic_spec::Target::Addr(a)) => SocketAddr::try_from(a)
                .map_err(|_| Status::invalid_argument("bad address"))?
                .to_string(),
            None => return Err(Status::invalid_argument("no target")),
        };
        let mut policies = self.policies.subscribe();
        if !policies.borrow_and_update().contains_key(&key) {
            return Err(Status::not_found(format!("no policy for {key}")));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut kill = self.kill.subscribe();
        let open = self.open.clone();
        open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            loop {
                let current = policies.borrow_and_update().get(&key).cloned();
                let Some(p) = current else {
                    let _ = tx.send(Err(Status::not_found("gone"))).await;
                    break;
                };
                if tx.send(Ok(p)).await.is_err() {
                    break;
                }
                tokio::select! {
                    r = policies.changed() => if r.is_err() { break },
                    _ = tx.closed() => break,
                    _ = kill.changed() => {
                        let _ = tx.send(Err(Status::unavailable("going away"))).await;
                        break;
                    }
                }
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

/// Starts the control plane; `policy`: serve OutboundPolicies (else only Destination, as a
/// control plane without policy support would: its clients get `Unimplemented`).
async fn control_plane(policy: bool) -> (SocketAddr, Ctl) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ctl = Ctl {
        endpoints: Arc::default(),
        policies: watch::Sender::new(Policies::new()),
        watches: Arc::default(),
        gets: Arc::default(),
        open: Arc::default(),
        kill: watch::Sender::new(false),
    };
    let mut killed = ctl.kill.subscribe();
    let router =
        tonic::transport::Server::builder().add_service(DestinationServer::new(ctl.clone()));
    let router = if policy {
        router.add_service(OutboundPoliciesServer::new(ctl.clone()))
    } else {
        router
    };
    tokio::spawn(router.serve_with_incoming_shutdown(
        TcpListenerStream::new(listener),
        async move {
            let _ = killed.wait_for(|k| *k).await;
        },
    ));
    (addr, ctl)
}

fn outbound_for(policy_addr: SocketAddr, dst_addr: SocketAddr) -> Arc<Outbound> {
    let (p, d) = (policy_addr.to_string(), dst_addr.to_string());
    let env: HashMap<&str, &str> = HashMap::from([
        ("WEFT_PROXY_DESTINATION_SVC_ADDR", d.as_str()),
        ("WEFT_PROXY_POLICY_SVC_ADDR", p.as_str()),
        ("WEFT_PROXY_POLICY_WORKLOAD", "default:client-1"),
        ("WEFT_PROXY_OUTBOUND_FAILFAST_TIMEOUT", "2s"),
        ("WEFT_PROXY_CONTROL_BACKOFF_MIN", "50ms"),
        ("WEFT_PROXY_CONTROL_BACKOFF_MAX", "200ms"),
    ]);
    let cfg = Config::from_env(&env).expect("config");
    Outbound::new(
        &cfg,
        Discovery::new(&cfg, None),
        Metrics::new(),
        None,
        OwnAddrs::default(),
        Taps::new(Metrics::new()),
        None,
    )
}

/// An HTTP/1 (and HTTP/2 prior knowledge, by hyper's auto-detection... no: HTTP/1 only)
/// server answering its `name` after `delay`, echoing `x-added` from the request.
async fn server(name: &'static str, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc =
                hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    tokio::time::sleep(delay).await;
                    let mut resp = Response::new(http::boxed(http_body_util::Full::new(
                        bytes::Bytes::from_static(name.as_bytes()),
                    )));
                    if let Some(v) = req.headers().get("x-added") {
                        resp.headers_mut().insert("x-echo-added", v.clone());
                    }
                    Ok::<_, Infallible>(resp)
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    addr
}

/// An HTTP/2 server that never answers.
async fn hung_h2_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(|_req| async {
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(Response::new(http::empty()))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    addr
}

fn svc_meta(kind: &str, name: &str) -> Option<meta::Metadata> {
    Some(meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: if kind == "Service" {
                "core"
            } else {
                "gateway.networking.k8s.io"
            }
            .into(),
            kind: kind.into(),
            name: name.into(),
            namespace: "default".into(),
            section: String::new(),
            port: if kind == "Service" { 8080 } else { 0 },
        })),
    })
}

fn pd(d: Duration) -> Option<prost_types::Duration> {
    Some(prost_types::Duration::try_from(d).unwrap())
}

/// A balanced backend for Service `name` (Destination path `name.default.svc...:8080`).
fn backend_to(name: &str) -> api::Backend {
    api::Backend {
        metadata: svc_meta("Service", name),
        queue: Some(api::Queue {
            capacity: 100,
            failfast_timeout: pd(Duration::from_secs(2)),
        }),
        kind: Some(backend::Kind::Balancer(backend::BalanceP2c {
            discovery: Some(backend::EndpointDiscovery {
                kind: Some(backend::endpoint_discovery::Kind::Dst(
                    backend::endpoint_discovery::DestinationGet {
                        path: format!("{name}.default.svc.cluster.local:8080"),
                    },
                )),
            }),
            load: None,
        })),
    }
}

fn split(weights: &[(&str, u32)]) -> Option<ohr::Distribution> {
    Some(ohr::Distribution {
        kind: Some(ohr::distribution::Kind::RandomAvailable(
            ohr::distribution::RandomAvailable {
                backends: weights
                    .iter()
                    .map(|(name, weight)| ohr::WeightedRouteBackend {
                        backend: Some(ohr::RouteBackend {
                            backend: Some(backend_to(name)),
                            filters: vec![],
                            request_timeout: None,
                        }),
                        weight: *weight,
                    })
                    .collect(),
            },
        )),
    })
}

fn rule(matches: Vec<hr::HttpRouteMatch>, backends: Option<ohr::Distribution>) -> ohr::Rule {
    ohr::Rule {
        matches,
        filters: vec![],
        backends,
        request_timeout: None,
        timeouts: None,
        retry: None,
        allow_l5d_request_headers: false,
    }
}

fn policy(rules: Vec<ohr::Rule>) -> api::OutboundPolicy {
    let route = api::HttpRoute {
        metadata: svc_meta("HTTPRoute", "web-route"),
        hosts: vec![],
        rules,
    };
    api::OutboundPolicy {
        metadata: svc_meta("Service", "web"),
        protocol: Some(api::ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Detect(proxy_protocol::Detect {
                timeout: pd(Duration::from_secs(10)),
                opaque: None,
                http1: Some(proxy_protocol::Http1 {
                    routes: vec![route.clone()],
                    failure_accrual: None,
                }),
                http2: Some(proxy_protocol::Http2 {
                    routes: vec![route],
                    failure_accrual: None,
                }),
            })),
        }),
    }
}

/// Control plane + outbound with backends `web-a` and `web-b` on two local servers.
async fn setup(delay_a: Duration) -> (Arc<Outbound>, Ctl) {
    let (cp, ctl) = control_plane(true).await;
    let a = server("a", delay_a).await;
    let b = server("b", Duration::ZERO).await;
    {
        let mut eps = ctl.endpoints.lock().unwrap();
        eps.insert("web-a.default.svc.cluster.local:8080".into(), vec![a]);
        eps.insert("web-b.default.svc.cluster.local:8080".into(), vec![b]);
        eps.insert(WEB.into(), vec![a]);
    }
    (outbound_for(cp, cp), ctl)
}

fn set_policy(ctl: &Ctl, p: api::OutboundPolicy) {
    ctl.policies.send_modify(|m| {
        m.insert(WEB.into(), p);
    });
}

fn get_with(headers: &[(&str, &str)]) -> Request<Empty<bytes::Bytes>> {
    let mut b = Request::get(URL);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Empty::new()).unwrap()
}

async fn body(resp: Response<Body>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// (status, body) of one request through the outbound path in explicit mode.
async fn send(ob: &Arc<Outbound>, headers: &[(&str, &str)]) -> (u16, String) {
    let resp = proxy_request(ob.clone(), test_client(), None, get_with(headers)).await;
    let status = resp.status().as_u16();
    (status, body(resp).await)
}

#[tokio::test]
async fn a_header_match_sends_only_matching_requests_to_the_canary() {
    let (ob, ctl) = setup(Duration::ZERO).await;
    let canary = hr::HttpRouteMatch {
        headers: vec![hr::HeaderMatch {
            name: "x-canary".into(),
            value: Some(hr::header_match::Value::Exact(b"1".to_vec())),
        }],
        ..Default::default()
    };
    set_policy(
        &ctl,
        policy(vec![
            rule(vec![], split(&[("web-a", 1)])),
            rule(vec![canary], split(&[("web-b", 1)])),
        ]),
    );
    for _ in 0..20 {
        assert_eq!(send(&ob, &[("x-canary", "1")]).await, (200, "b".into()));
        assert_eq!(send(&ob, &[]).await, (200, "a".into()));
        assert_eq!(send(&ob, &[("x-canary", "2")]).await, (200, "a".into()));
    }
    // Route metrics name the route and each backend.
    let text = ob.metrics.render();
    assert!(
        text.contains("outbound_http_route_backend_requests_total{parent_group=\"core\",parent_kind=\"Service\",parent_namespace=\"default\",parent_name=\"web\",parent_port=\"8080\",parent_section_name=\"\",route_group=\"gateway.networking.k8s.io\",route_kind=\"HTTPRoute\",route_namespace=\"default\",route_name=\"web-route\",backend_group=\"core\",backend_kind=\"Service\",backend_namespace=\"default\",backend_name=\"web-b\",backend_port=\"8080\",backend_section_name=\"\"} 20"),
        "{text}"
    );
    assert!(
        text.contains("route_name=\"web-route\",http_status=\"200\",error=\"\"} 60"),
        "{text}"
    );
}

#[tokio::test]
async fn a_weighted_split_lands_within_tolerance() {
    let (ob, ctl) = setup(Duration::ZERO).await;
    set_policy(
        &ctl,
        policy(vec![rule(vec![], split(&[("web-a", 90), ("web-b", 10)]))]),
    );
    let n = 3000;
    let mut to_b = 0;
    for _ in 0..n {
        let (status, who) = send(&ob, &[]).await;
        assert_eq!(status, 200);
        if who == "b" {
            to_b += 1;
        }
    }
    // 10 % of 3000 = 300; 3 standard deviations ≈ 49.
    assert!(
        (250..=350).contains(&to_b),
        "{to_b} of {n} went to the 10 % backend"
    );
}

#[tokio::test]
async fn no_matching_route_is_404_with_l5d_proxy_error() {
    let (ob, ctl) = setup(Duration::ZERO).await;
    let only_api = hr::HttpRouteMatch {
        path: Some(hr::PathMatch {
            kind: Some(hr::path_match::Kind::Prefix("/api".into())),
        }),
        ..Default::default()
    };
    set_policy(
        &ctl,
        policy(vec![rule(vec![only_api], split(&[("web-a", 1)]))]),
    );
    let resp = proxy_request(ob.clone(), test_client(), None, get_with(&[])).await;
    assert_eq!(resp.status(), 404);
    let why = resp.headers()[http::L5D_PROXY_ERROR].to_str().unwrap();
    assert_eq!(why, format!("no route found for request to {WEB}"));
    let resp = proxy_request(
        ob,
        test_client(),
        None,
        Request::get("http://web:8080/api/x")
            .body(Empty::new())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_request_timeout_answers_504_within_the_bound() {
    // web-a answers after 5 s.
    let (ob, ctl) = setup(Duration::from_secs(5)).await;
    let mut r = rule(vec![], split(&[("web-a", 1)]));
    r.timeouts = Some(hr::Timeouts {
        request: pd(Duration::from_millis(300)),
        response: None,
        idle: None,
    });
    set_policy(&ctl, policy(vec![r]));
    // The first request also waits for the policy and endpoints: time a later one.
    let _ = send(&ob, &[]).await;
    let start = Instant::now();
    let resp = proxy_request(ob.clone(), test_client(), None, get_with(&[])).await;
    let took = start.elapsed();
    assert_eq!(resp.status(), 504);
    let why = resp.headers()[http::L5D_PROXY_ERROR].to_str().unwrap();
    assert_eq!(why, "route request timeout of 300ms expired");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(350),
        "took {took:?}"
    );
    let text = ob.metrics.render();
    assert!(
        text.contains("http_status=\"504\",error=\"RESPONSE_HEADERS_TIMEOUT\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn a_grpc_timeout_answers_deadline_exceeded_trailers_only() {
    let (cp, ctl) = control_plane(true).await;
    let hung = hung_h2_server().await;
    ctl.endpoints
        .lock()
        .unwrap()
        .insert("web-a.default.svc.cluster.local:8080".into(), vec![hung]);
    set_policy(&ctl, policy(vec![rule(vec![], split(&[("web-a", 1)]))]));
    let ob = outbound_for(cp, cp);
    let call = || {
        Request::post("http://web:8080/books.Books/Get")
            .version(hyper::Version::HTTP_2)
            .header("content-type", "application/grpc")
            .header("grpc-timeout", "200m")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    // Warm up (policy, discovery, connection).
    let _ = proxy_request(ob.clone(), test_client(), None, call()).await;
    let start = Instant::now();
    let resp = proxy_request(ob.clone(), test_client(), None, call()).await;
    let took = start.elapsed();
    assert_eq!(resp.status(), 200, "gRPC errors are trailers-only");
    assert_eq!(resp.headers()["grpc-status"], "4");
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    assert_eq!(
        resp.headers()[http::L5D_PROXY_ERROR],
        "grpc-timeout timeout of 200ms expired"
    );
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(250),
        "took {took:?}"
    );
}

#[tokio::test]
async fn a_failure_injector_fails_its_ratio_marked_as_injected() {
    let (ob, ctl) = setup(Duration::ZERO).await;
    let mut r = rule(vec![], split(&[("web-a", 1)]));
    r.filters = vec![ohr::Filter {
        kind: Some(ohr::filter::Kind::FailureInjector(
            hr::HttpFailureInjector {
                status: 503,
                message: "chaos test".into(),
                ratio: Some(hr::Ratio {
                    numerator: 1,
                    denominator: 10,
                }),
            },
        )),
    }];
    set_policy(&ctl, policy(vec![r]));
    let n = 3000;
    let mut injected = 0;
    for _ in 0..n {
        let resp = proxy_request(ob.clone(), test_client(), None, get_with(&[])).await;
        match resp.status().as_u16() {
            200 => assert_eq!(body(resp).await, "a"),
            503 => {
                assert_eq!(
                    resp.headers()[http::L5D_PROXY_ERROR],
                    "injected failure: chaos test"
                );
                injected += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        (250..=350).contains(&injected),
        "{injected} of {n} injected"
    );
}

#[tokio::test]
async fn a_weight_change_applies_to_new_requests_and_fails_none_in_flight() {
    // web-a answers after 300 ms, web-b at once.
    let (ob, ctl) = setup(Duration::from_millis(300)).await;
    set_policy(
        &ctl,
        policy(vec![rule(vec![], split(&[("web-a", 1), ("web-b", 0)]))]),
    );
    assert_eq!(send(&ob, &[]).await, (200, "a".into()));
    let in_flight: Vec<_> = (0..20)
        .map(|_| {
            let ob = ob.clone();
            tokio::spawn(async move { send(&ob, &[]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    set_policy(
        &ctl,
        policy(vec![rule(vec![], split(&[("web-a", 0), ("web-b", 1)]))]),
    );
    // The update reaches the proxy within a moment; then every new request goes to web-b.
    let start = Instant::now();
    loop {
        let (status, who) = send(&ob, &[]).await;
        assert_eq!(status, 200);
        if who == "b" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "update not applied"
        );
    }
    for _ in 0..20 {
        assert_eq!(send(&ob, &[]).await, (200, "b".into()));
    }
    for r in in_flight {
        assert_eq!(
            r.await.unwrap(),
            (200, "a".into()),
            "an in-flight request failed"
        );
    }
}

#[tokio::test]
async fn without_policy_the_target_keeps_todays_path() {
    // A control plane that does not serve OutboundPolicies (Unimplemented), one that answers
    // NotFound, and one that cannot be reached: each request still reaches the service
    // through Destination.Get, without waiting for the fail-fast timeout.
    let a = server("a", Duration::ZERO).await;
    let (without, ctl1) = control_plane(false).await;
    let (with, ctl2) = control_plane(true).await;
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    for ctl in [&ctl1, &ctl2] {
        ctl.endpoints.lock().unwrap().insert(WEB.into(), vec![a]);
    }
    for (policy_addr, dst_addr) in [(without, without), (with, with), (closed, without)] {
        let ob = outbound_for(policy_addr, dst_addr);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(send(&ob, &[]).await, (200, "a".into()));
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "fell back only after {:?}",
            start.elapsed()
        );
    }
    // NotFound is remembered: one Watch for three requests.
    assert_eq!(ctl2.watches.load(Ordering::SeqCst), 1);
}

fn canary_policy() -> api::OutboundPolicy {
    let canary = hr::HttpRouteMatch {
        headers: vec![hr::HeaderMatch {
            name: "x-canary".into(),
            value: Some(hr::header_match::Value::Exact(b"1".to_vec())),
        }],
        ..Default::default()
    };
    policy(vec![
        rule(vec![], split(&[("web-a", 1)])),
        rule(vec![canary], split(&[("web-b", 1)])),
    ])
}

/// The policy service goes away after the first policy: routing keeps following it (requests
/// with the header still reach the canary), and the proxy reconnects when it is back.
#[tokio::test]
async fn the_last_policy_stays_in_force_while_the_policy_service_is_away() {
    let (dst_addr, dst_ctl) = control_plane(false).await;
    let (policy_addr, ctl) = control_plane(true).await;
    let a = server("a", Duration::ZERO).await;
    let b = server("b", Duration::ZERO).await;
    {
        let mut eps = dst_ctl.endpoints.lock().unwrap();
        eps.insert("web-a.default.svc.cluster.local:8080".into(), vec![a]);
        eps.insert("web-b.default.svc.cluster.local:8080".into(), vec![b]);
        eps.insert(WEB.into(), vec![a]);
    }
    set_policy(&ctl, canary_policy());
    let ob = outbound_for(policy_addr, dst_addr);
    // A fixed target (as a transparent connection has): the policy outlives each request.
    let target = Target::Name {
        host: "web.default.svc.cluster.local".into(),
        port: 8080,
    };
    let dest = ob.dest(&target).await;
    assert!(matches!(dest, Dest::Policy(_)), "expected a policy");
    let send_fixed = |headers: &'static [(&'static str, &'static str)]| {
        let ob = ob.clone();
        let fixed = Some((target.clone(), dest.clone()));
        async move {
            let resp = proxy_request(ob, test_client(), fixed, get_with(headers)).await;
            (resp.status().as_u16(), body(resp).await)
        }
    };
    assert_eq!(send_fixed(&[("x-canary", "1")]).await, (200, "b".into()));
    ctl.kill.send_replace(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ctl.open.load(Ordering::SeqCst),
        0,
        "the policy stream is still open"
    );
    for _ in 0..10 {
        assert_eq!(send_fixed(&[("x-canary", "1")]).await, (200, "b".into()));
        assert_eq!(send_fixed(&[]).await, (200, "a".into()));
    }
}

/// A policy stream nobody uses closes after the idle timeout.
#[tokio::test]
async fn an_unused_policy_stream_closes_after_the_idle_timeout() {
    let (cp, ctl) = control_plane(true).await;
    set_policy(&ctl, canary_policy());
    let client = crate::policy::PolicyClient::new(crate::policy::client::Settings {
        addr: cp.to_string(),
        tls: None,
        workload: "default:client-1".into(),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        failfast: Duration::from_secs(2),
        idle_timeout: Duration::from_millis(200),
    });
    let target = Target::Name {
        host: "web.default.svc.cluster.local".into(),
        port: 8080,
    };
    let Lookup::Policy(rx) = client.lookup(&target).await else {
        panic!("expected a policy");
    };
    // Shared: a second caller subscribes to the same stream.
    let Lookup::Policy(rx2) = client.lookup(&target).await else {
        panic!("expected a policy");
    };
    assert_eq!(ctl.watches.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.active(), 1, "in use: must stay");
    drop((rx, rx2));
    let start = Instant::now();
    while client.active() > 0 || ctl.open.load(Ordering::SeqCst) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the idle stream stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(start.elapsed() >= Duration::from_millis(200));
}

/// A TCP server that answers each connection's bytes with `name:` + the bytes, then closes.
async fn tagged_echo(name: &'static str) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = s.write_all(format!("{name}:").as_bytes()).await;
                let _ = s.write_all(&buf[..n]).await;
            });
        }
    });
    addr
}

/// An opaque policy: connections skip detection and go, one backend per connection, to the
/// opaque route's backend (not to the target's own endpoints).
#[tokio::test]
async fn an_opaque_policy_sends_connections_to_its_backend() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (cp, ctl) = control_plane(true).await;
    let own = tagged_echo("own").await;
    let backend = tagged_echo("backend").await;
    {
        let mut eps = ctl.endpoints.lock().unwrap();
        eps.insert(WEB.into(), vec![own]);
        eps.insert("web-b.default.svc.cluster.local:8080".into(), vec![backend]);
    }
    let opaque = api::OutboundPolicy {
        metadata: svc_meta("Service", "web"),
        protocol: Some(api::ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Opaque(proxy_protocol::Opaque {
                routes: vec![api::OpaqueRoute {
                    metadata: svc_meta("TCPRoute", "web-tcp"),
                    rules: vec![api::opaque_route::Rule {
                        backends: Some(api::opaque_route::Distribution {
                            kind: Some(api::opaque_route::distribution::Kind::FirstAvailable(
                                api::opaque_route::distribution::FirstAvailable {
                                    backends: vec![api::opaque_route::RouteBackend {
                                        backend: Some(backend_to("web-b")),
                                        filters: vec![],
                                    }],
                                },
                            )),
                        }),
                        filters: vec![],
                    }],
                }],
            })),
        }),
    };
    set_policy(&ctl, opaque);
    let ob = outbound_for(cp, cp);
    let target = Target::Name {
        host: "web.default.svc.cluster.local".into(),
        port: 8080,
    };
    for _ in 0..3 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = l.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(local), l.accept());
        let (stream, peer) = accepted.unwrap();
        let (_drain_tx, drain) = watch::channel(false);
        let conn = Accepted {
            stream,
            peer,
            local,
            orig_dst: None,
            drain,
        };
        tokio::spawn(handle(ob.clone(), conn, Origin::Upstream(target.clone())));
        let mut client = client.unwrap();
        // Not HTTP, and the client speaks first without waiting for detection: the policy
        // says opaque, so nothing waits for the detect timeout.
        client.write_all(b"ping").await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut got))
            .await
            .expect("no answer in time")
            .unwrap();
        assert_eq!(got, b"backend:ping");
    }
}

/// Explicit-mode requests look their target up one by one: they share one policy target (and
/// its per-version state) instead of rebuilding it per request.
#[tokio::test]
async fn explicit_requests_share_one_policy_target() {
    let (ob, ctl) = setup(Duration::ZERO).await;
    set_policy(&ctl, policy(vec![rule(vec![], split(&[("web-a", 1)]))]));
    for _ in 0..5 {
        assert_eq!(send(&ob, &[]).await, (200, "a".into()));
    }
    assert_eq!(ob.policy_dests.len(), 1);
    let target = Target::Name {
        host: "web.default.svc.cluster.local".into(),
        port: 8080,
    };
    let first = ob.policy_dests.get(&target).expect("kept");
    let Dest::Policy(again) = ob.dest(&target).await else {
        panic!("expected the policy target");
    };
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(ctl.watches.load(Ordering::SeqCst), 1);
}

#[path = "balance_tests.rs"]
mod balance_tests;

#[path = "egress_tests.rs"]
mod egress_tests;
