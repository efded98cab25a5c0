//! Egress through an `EgressNetwork` policy, with the scripted control plane of the policy tests
//! (this module is their child) answering for an address outside the cluster, and local servers
//! on 127.0.0.x standing for the internet host: HTTP routes by hostname forwarded to the
//! original destination, `Deny`'s failure injector, opaque `Forbidden` and `Allow`, TLS routes
//! selected by the ClientHello's SNI, and the `parent_*` labels of the route metrics.

use super::*;
use crate::metrics::DetectResult;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NETWORK: &str = "internet";
const DENIED: &str = "traffic is not allowed by EgressNetwork default/internet";

/// The internet host's HTTP server on `ip`: answers `internet <host>`.
async fn internet_http(ip: [u8; 4]) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from((ip, 0))).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc =
                hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let host = req
                        .headers()
                        .get(hyper::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let body =
                        http_body_util::Full::new(bytes::Bytes::from(format!("internet {host}")));
                    Ok::<_, Infallible>(Response::new(http::boxed(body)))
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    addr
}

/// The internet host's TCP server on `ip`: answers each connection's first bytes with
/// `internet:` + those bytes, then closes.
async fn internet_echo(ip: [u8; 4]) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from((ip, 0))).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = s.write_all(b"internet:").await;
                let _ = s.write_all(&buf[..n]).await;
            });
        }
    });
    addr
}

fn egress_meta(port: u16) -> Option<meta::Metadata> {
    Some(meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "policy.linkerd.io".into(),
            kind: "EgressNetwork".into(),
            name: NETWORK.into(),
            namespace: "default".into(),
            section: String::new(),
            port: u32::from(port),
        })),
    })
}

fn default_meta() -> Option<meta::Metadata> {
    Some(meta::Metadata {
        kind: Some(meta::metadata::Kind::Default("default".into())),
    })
}

/// The `Forward` backend to the original destination (no discovery, no identity).
fn forward(addr: SocketAddr) -> api::Backend {
    api::Backend {
        metadata: egress_meta(addr.port()),
        queue: Some(api::Queue {
            capacity: 100,
            failfast_timeout: pd(Duration::from_secs(2)),
        }),
        kind: Some(backend::Kind::Forward(dst::WeightedAddr {
            addr: Some(addr.into()),
            weight: 1,
            ..Default::default()
        })),
    }
}

fn to_forward(addr: SocketAddr) -> Option<ohr::Distribution> {
    Some(ohr::Distribution {
        kind: Some(ohr::distribution::Kind::FirstAvailable(
            ohr::distribution::FirstAvailable {
                backends: vec![ohr::RouteBackend {
                    backend: Some(forward(addr)),
                    filters: vec![],
                    request_timeout: None,
                }],
            },
        )),
    })
}

/// The OutboundPolicies answer of the contract for an address `addr` in EgressNetwork
/// `default/internet`: an HTTPRoute for `example.org`, then the default route; one opaque
/// route. `allow`: the network's `trafficPolicy`.
fn egress_policy(addr: SocketAddr, allow: bool) -> api::OutboundPolicy {
    let example = api::HttpRoute {
        metadata: svc_meta("HTTPRoute", "example-org"),
        hosts: vec![hr::HostMatch {
            r#match: Some(hr::host_match::Match::Exact("example.org".into())),
        }],
        rules: vec![rule(vec![], to_forward(addr))],
    };
    let mut default_rule = if allow {
        rule(vec![], to_forward(addr))
    } else {
        rule(
            vec![],
            Some(ohr::Distribution {
                kind: Some(ohr::distribution::Kind::Empty(ohr::distribution::Empty {})),
            }),
        )
    };
    if !allow {
        default_rule.filters = vec![ohr::Filter {
            kind: Some(ohr::filter::Kind::FailureInjector(
                hr::HttpFailureInjector {
                    status: 403,
                    message: DENIED.into(),
                    ratio: Some(hr::Ratio {
                        numerator: 1,
                        denominator: 1,
                    }),
                },
            )),
        }];
    }
    let default = api::HttpRoute {
        metadata: default_meta(),
        hosts: vec![],
        rules: vec![default_rule],
    };
    let routes = vec![example, default];
    use api::opaque_route as or;
    let opaque_rule = if allow {
        or::Rule {
            backends: Some(or::Distribution {
                kind: Some(or::distribution::Kind::FirstAvailable(
                    or::distribution::FirstAvailable {
                        backends: vec![or::RouteBackend {
                            backend: Some(forward(addr)),
                            filters: vec![],
                        }],
                    },
                )),
            }),
            filters: vec![],
        }
    } else {
        or::Rule {
            backends: Some(or::Distribution {
                kind: Some(or::distribution::Kind::Empty(or::distribution::Empty {})),
            }),
            filters: vec![or::Filter {
                kind: Some(or::filter::Kind::Forbidden(
                    linkerd2_proxy_api::opaque_route::Forbidden {},
                )),
            }],
        }
    };
    api::OutboundPolicy {
        metadata: egress_meta(addr.port()),
        protocol: Some(api::ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Detect(proxy_protocol::Detect {
                timeout: pd(Duration::from_secs(10)),
                opaque: Some(proxy_protocol::Opaque {
                    routes: vec![api::OpaqueRoute {
                        metadata: default_meta(),
                        rules: vec![opaque_rule],
                    }],
                }),
                http1: Some(proxy_protocol::Http1 {
                    routes: routes.clone(),
                    failure_accrual: None,
                }),
                http2: Some(proxy_protocol::Http2 {
                    routes,
                    failure_accrual: None,
                }),
            })),
        }),
    }
}

/// A control plane answering `policy` for the address `addr`, and an outbound proxy using it.
async fn egress_setup(addr: SocketAddr, allow: bool) -> (Arc<Outbound>, Ctl) {
    let (cp, ctl) = control_plane(true).await;
    ctl.policies.send_modify(|m| {
        m.insert(addr.to_string(), egress_policy(addr, allow));
    });
    (outbound_for(cp, cp), ctl)
}

/// One HTTP/1 request as a transparently redirected connection to `addr` carries it.
async fn request_to(ob: &Arc<Outbound>, addr: SocketAddr, host: &str) -> Response<Body> {
    let target = Target::Addr(addr);
    let dest = ob.dest(&target).await;
    let req = Request::get("/")
        .header(hyper::header::HOST, host)
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    proxy_request(ob.clone(), test_client(), Some((target, dest)), req).await
}

/// The internet host's TCP server on `ip` that answers each connection with every byte it
/// received, once the client has finished sending.
async fn internet_mirror(ip: [u8; 4]) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from((ip, 0))).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got).await;
                let _ = s.write_all(&got).await;
            });
        }
    });
    addr
}

/// An opaque connection to `addr` through [`handle`] (transparent, detected as not HTTP):
/// what the client reads back before the connection closes.
async fn opaque_to(ob: &Arc<Outbound>, addr: SocketAddr) -> Vec<u8> {
    // A TLS-like first byte: detection says opaque at once.
    send_through(ob, addr, b"\x16\x03\x01ping").await
}

/// A connection to `addr` through [`handle`] (transparent) that sends `first` and finishes
/// sending: what the client reads back before the connection closes.
async fn send_through(ob: &Arc<Outbound>, addr: SocketAddr, first: &[u8]) -> Vec<u8> {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = l.local_addr().unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(local), l.accept());
    let (stream, peer) = accepted.unwrap();
    let (_drain_tx, drain) = watch::channel(false);
    let conn = Accepted {
        stream,
        peer,
        local,
        orig_dst: Some(addr),
        drain,
    };
    let task = tokio::spawn(handle(ob.clone(), conn, Origin::Transparent(addr)));
    let mut client = client.unwrap();
    client.write_all(first).await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), client.read_to_end(&mut got))
        .await
        .expect("the connection stayed open")
        .unwrap_or_default();
    // Half-closed by the server: the relay ends once the client closes too.
    drop(client);
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("the connection's task did not end")
        .unwrap();
    got
}

/// An address outside the cluster has an EgressNetwork policy: a request for a routed host
/// goes to the original destination through the `Forward` backend, in plaintext, with no
/// Destination lookup; under `Deny` any other host gets the failure injector's 403 with
/// `l5d-proxy-error`. Both show in the route metrics under `parent_kind="EgressNetwork"`.
#[tokio::test]
async fn egress_http_routes_forward_to_the_original_destination_and_deny_the_rest() {
    let addr = internet_http([127, 0, 0, 2]).await;
    let (ob, ctl) = egress_setup(addr, false).await;

    let resp = request_to(&ob, addr, "example.org").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get(http::L5D_PROXY_ERROR).is_none());
    assert_eq!(body(resp).await, "internet example.org");

    let resp = request_to(&ob, addr, "example.com").await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.headers()[http::L5D_PROXY_ERROR],
        format!("injected failure: {DENIED}").as_str()
    );
    assert_eq!(ctl.watches.load(Ordering::SeqCst), 1, "one policy stream");
    assert_eq!(ctl.gets.load(Ordering::SeqCst), 0, "no Destination lookup");

    let text = ob.metrics.render();
    let parent = format!(
        "parent_group=\"policy.linkerd.io\",parent_kind=\"EgressNetwork\",\
         parent_namespace=\"default\",parent_name=\"{NETWORK}\",parent_port=\"{}\",\
         parent_section_name=\"\"",
        addr.port()
    );
    let allowed = format!(
        "outbound_http_route_request_statuses_total{{{parent},route_group=\"gateway.networking.k8s.io\",\
         route_kind=\"HTTPRoute\",route_namespace=\"default\",route_name=\"example-org\",\
         http_status=\"200\",error=\"\"}} 1\n"
    );
    let denied = format!(
        "outbound_http_route_request_statuses_total{{{parent},route_group=\"\",\
         route_kind=\"default\",route_namespace=\"\",route_name=\"default\",\
         http_status=\"403\",error=\"\"}} 1\n"
    );
    assert!(text.contains(&allowed), "{allowed}\nnot in\n{text}");
    assert!(text.contains(&denied), "{denied}\nnot in\n{text}");
    // The forwarded request went out in plaintext (the endpoint has no identity).
    let plain = format!("target_addr=\"{addr}\",tls=\"no_identity\"");
    assert!(
        text.lines()
            .any(|l| l.starts_with("request_total{") && l.contains(&plain)),
        "{plain} not in\n{text}"
    );
}

/// `Allow`: every host is forwarded to the original destination (the default route).
#[tokio::test]
async fn egress_http_under_allow_forwards_every_host() {
    let addr = internet_http([127, 0, 0, 3]).await;
    let (ob, ctl) = egress_setup(addr, true).await;
    for host in ["example.org", "example.com"] {
        let resp = request_to(&ob, addr, host).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(body(resp).await, format!("internet {host}"));
    }
    assert_eq!(ctl.gets.load(Ordering::SeqCst), 0, "no Destination lookup");
}

/// `Deny`: an opaque connection is closed at once, without reaching the host, and counted in
/// `outbound_tcp_forbidden_total` with the target and the policy's parent.
#[tokio::test]
async fn egress_opaque_forbidden_closes_the_connection_and_counts_it() {
    let addr = internet_echo([127, 0, 0, 4]).await;
    let (ob, ctl) = egress_setup(addr, false).await;
    let started = Instant::now();
    assert_eq!(opaque_to(&ob, addr).await, b"");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not closed at once"
    );
    assert_eq!(ctl.gets.load(Ordering::SeqCst), 0, "no Destination lookup");
    let with = [
        ("target_addr", addr.to_string()),
        ("parent_kind", "EgressNetwork".to_string()),
        ("parent_name", NETWORK.to_string()),
        ("route_kind", "default".to_string()),
    ];
    let with: Vec<(&str, &str)> = with.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        ob.metrics
            .counter_sum(crate::metrics::OUTBOUND_TCP_FORBIDDEN, &with),
        1
    );
    // An explicit-mode CONNECT tunnel to the address is refused the same way, with 403.
    let connect = Request::connect(addr.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = proxy_request(ob.clone(), test_client(), None, connect).await;
    assert_eq!(resp.status(), 403);
    let reason = resp.headers()[http::L5D_PROXY_ERROR].to_str().unwrap();
    assert!(
        reason.starts_with(&format!(
            "connection to {addr} forbidden by policy (EgressNetwork"
        )),
        "{reason}"
    );
    assert_eq!(
        ob.metrics
            .counter_sum(crate::metrics::OUTBOUND_TCP_FORBIDDEN, &with),
        2
    );
    let text = ob.metrics.render();
    assert!(
        text.contains("# TYPE outbound_tcp_forbidden_total counter"),
        "{text}"
    );
}

/// `Allow`: an opaque connection is relayed to the original destination.
#[tokio::test]
async fn egress_opaque_under_allow_relays_to_the_original_destination() {
    let addr = internet_echo([127, 0, 0, 5]).await;
    let (ob, ctl) = egress_setup(addr, true).await;
    assert_eq!(opaque_to(&ob, addr).await, b"internet:\x16\x03\x01ping");
    assert_eq!(ctl.gets.load(Ordering::SeqCst), 0, "no Destination lookup");
    assert_eq!(
        ob.metrics
            .counter_sum(crate::metrics::OUTBOUND_TCP_FORBIDDEN, &[]),
        0
    );
    // Detected from its first byte, which is not HTTP.
    let opaque = ob
        .metrics
        .detections(Direction::Outbound, DetectResult::Opaque);
    assert_eq!(opaque, 1);
}

/// A forbidden opaque route is not an invalid one: `Invalid` stays an invalid-policy error
/// and is not counted as forbidden.
#[tokio::test]
async fn an_invalid_opaque_filter_is_not_counted_as_forbidden() {
    let addr = internet_echo([127, 0, 0, 6]).await;
    let (ob, ctl) = egress_setup(addr, false).await;
    let mut p = egress_policy(addr, false);
    if let Some(proxy_protocol::Kind::Detect(d)) = p.protocol.as_mut().and_then(|p| p.kind.as_mut())
    {
        let rule = &mut d.opaque.as_mut().unwrap().routes[0].rules[0];
        rule.filters = vec![api::opaque_route::Filter {
            kind: Some(api::opaque_route::filter::Kind::Invalid(
                linkerd2_proxy_api::opaque_route::Invalid {
                    message: "broken".into(),
                },
            )),
        }];
    }
    ctl.policies.send_modify(|m| {
        m.insert(addr.to_string(), p);
    });
    let target = Target::Addr(addr);
    let dest = ob.dest(&target).await;
    let Err(e) = ob.opaque_dest(&target, dest, Hello::Unread).await else {
        panic!("an invalid opaque route gave a backend");
    };
    assert!(matches!(e, Error::BadPolicy { .. }), "{e}");
    assert_eq!(
        ob.metrics
            .counter_sum(crate::metrics::OUTBOUND_TCP_FORBIDDEN, &[]),
        0
    );
}

/// The OutboundPolicies answer of the contract for an address `addr` in EgressNetwork
/// `default/internet` with a TLSRoute `example-api` for SNI `api.example.com`: that route, then
/// the default route (any SNI), which forwards under `Allow` (`allow`) and is Empty with
/// `Forbidden` under `Deny`.
fn tls_egress_policy(addr: SocketAddr, allow: bool) -> api::OutboundPolicy {
    use api::tls_route as tr;
    use linkerd2_proxy_api::tls_route::{sni_match, SniMatch};
    let forwarding = || tr::Rule {
        backends: Some(tr::Distribution {
            kind: Some(tr::distribution::Kind::FirstAvailable(
                tr::distribution::FirstAvailable {
                    backends: vec![tr::RouteBackend {
                        backend: Some(forward(addr)),
                        filters: vec![],
                    }],
                },
            )),
        }),
        filters: vec![],
    };
    let example = api::TlsRoute {
        metadata: svc_meta("TLSRoute", "example-api"),
        snis: vec![SniMatch {
            r#match: Some(sni_match::Match::Exact("api.example.com".into())),
        }],
        rules: vec![forwarding()],
    };
    let default = if allow {
        api::TlsRoute {
            metadata: Some(meta::Metadata {
                kind: Some(meta::metadata::Kind::Default("tls-egress-allow".into())),
            }),
            snis: vec![],
            rules: vec![forwarding()],
        }
    } else {
        api::TlsRoute {
            metadata: Some(meta::Metadata {
                kind: Some(meta::metadata::Kind::Default("tls-egress-deny".into())),
            }),
            snis: vec![],
            rules: vec![tr::Rule {
                backends: Some(tr::Distribution {
                    kind: Some(tr::distribution::Kind::Empty(tr::distribution::Empty {})),
                }),
                filters: vec![tr::Filter {
                    kind: Some(tr::filter::Kind::Forbidden(
                        linkerd2_proxy_api::opaque_route::Forbidden {},
                    )),
                }],
            }],
        }
    };
    api::OutboundPolicy {
        metadata: egress_meta(addr.port()),
        protocol: Some(api::ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Tls(proxy_protocol::Tls {
                routes: vec![example, default],
            })),
        }),
    }
}

async fn tls_egress_setup(addr: SocketAddr, allow: bool) -> (Arc<Outbound>, Ctl) {
    let (cp, ctl) = control_plane(true).await;
    ctl.policies.send_modify(|m| {
        m.insert(addr.to_string(), tls_egress_policy(addr, allow));
    });
    (outbound_for(cp, cp), ctl)
}

/// `outbound_tcp_forbidden_total` for the EgressNetwork and a route (`route_kind`,
/// `route_name`; empty: no route took the connection).
fn forbidden(ob: &Outbound, addr: SocketAddr, route: (&str, &str)) -> u64 {
    let target = addr.to_string();
    ob.metrics.counter_sum(
        crate::metrics::OUTBOUND_TCP_FORBIDDEN,
        &[
            ("target_addr", &target),
            ("parent_kind", "EgressNetwork"),
            ("parent_name", NETWORK),
            ("route_kind", route.0),
            ("route_name", route.1),
        ],
    )
}

/// `Deny` with a TLSRoute: the application's TLS to `api.example.com` reaches the original
/// destination byte for byte (its ClientHello included: the proxy neither terminates nor
/// originates TLS); a ClientHello for `other.example.com` takes the default route and is closed
/// at once, counted as forbidden under the default route's labels; a connection that is not
/// TLS is closed and counted with no route.
#[tokio::test]
async fn egress_tls_routes_select_by_sni_and_deny_the_rest() {
    let addr = internet_mirror([127, 0, 0, 7]).await;
    let (ob, ctl) = tls_egress_setup(addr, false).await;

    let hello = crate::mtls::tests::client_hello_to("api.example.com", &[b"h2"]);
    assert_eq!(send_through(&ob, addr, &hello).await, hello);
    assert_eq!(ctl.gets.load(Ordering::SeqCst), 0, "no Destination lookup");

    let other = crate::mtls::tests::client_hello_to("other.example.com", &[b"h2"]);
    let started = Instant::now();
    assert_eq!(send_through(&ob, addr, &other).await, b"");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not closed at once"
    );
    assert_eq!(forbidden(&ob, addr, ("default", "tls-egress-deny")), 1);

    assert_eq!(
        send_through(&ob, addr, b"GET / HTTP/1.1\r\n\r\n").await,
        b""
    );
    assert_eq!(forbidden(&ob, addr, ("", "")), 1);
    assert_eq!(
        ob.metrics
            .counter_sum(crate::metrics::OUTBOUND_TCP_FORBIDDEN, &[]),
        2,
        "the forwarded connection is not counted"
    );
    // The policy routes TLS: the ClientHello was read, not HTTP detection (the last connection
    // was not TLS).
    let detections = |r| ob.metrics.detections(Direction::Outbound, r);
    assert_eq!(detections(DetectResult::Tls), 2);
    assert_eq!(detections(DetectResult::Opaque), 1);
    assert_eq!(detections(DetectResult::Http1), 0);
}

/// `Allow`: a ClientHello no TLSRoute names takes the default route to the original
/// destination, unmodified.
#[tokio::test]
async fn egress_tls_under_allow_forwards_every_sni() {
    let addr = internet_mirror([127, 0, 0, 8]).await;
    let (ob, _ctl) = tls_egress_setup(addr, true).await;
    for sni in ["api.example.com", "other.example.com"] {
        let hello = crate::mtls::tests::client_hello_to(sni, &[]);
        assert_eq!(send_through(&ob, addr, &hello).await, hello, "{sni}");
    }
    assert_eq!(
        ob.metrics
            .counter_sum(crate::metrics::OUTBOUND_TCP_FORBIDDEN, &[]),
        0
    );
}
