//! The OutboundPolicy mapping, from validated documents: the default route unchanged, routes in
//! both HTTP protocols, gRPC routes as the gRPC protocol, failing backends, metadata.

use super::*;
use crate::index::Target;
use crate::resource::{validate_one, Defaults, Resource, State};
use linkerd2_proxy_api::outbound::{http_route as ohr, proxy_protocol::Kind};

fn state(docs: &[&str]) -> State {
    let defaults = Defaults {
        trust_domain: "cluster.local".into(),
        control_namespace: "weft".into(),
    };
    let mut s = State::default();
    for d in docs {
        let v: serde_json::Value = yaml_serde::from_str(d).unwrap();
        match validate_one(&v, "test", &defaults).unwrap_or_else(|e| panic!("{e:?}")) {
            Resource::Service(x) => {
                s.services.insert((x.namespace.clone(), x.name.clone()), x);
            }
            Resource::Route(mut r) => {
                r.created.get_or_insert(0);
                s.routes.insert(r.key(), r);
            }
            Resource::Fault(f) => {
                s.faults.insert((f.namespace.clone(), f.name.clone()), f);
            }
            other => unreachable!("{other:?}"),
        }
    }
    s
}

fn policy(s: &State, name: &str, port: u16) -> out::OutboundPolicy {
    let target = Target::Name {
        name: name.into(),
        namespace: "default".into(),
        port,
    };
    outbound_policy(&index::outbound(s, "cluster.local", &target)).unwrap()
}

const WEB: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n";
const V1: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: v1}\nspec: {selector: {app: v1}, ports: [{port: 80}]}\n";

fn detect(p: out::OutboundPolicy) -> proxy_protocol::Detect {
    match p.protocol.unwrap().kind.unwrap() {
        Kind::Detect(d) => d,
        other => panic!("expected detect, got {other:?}"),
    }
}

#[test]
fn default_route_is_unchanged_and_has_no_failure_accrual() {
    let d = detect(policy(&state(&[WEB]), "web", 80));
    let http1 = d.http1.unwrap();
    assert_eq!(
        http1.failure_accrual, None,
        "no annotation, no failure accrual"
    );
    assert_eq!(http1.routes, d.http2.unwrap().routes);
    let route = &http1.routes[0];
    assert_eq!(route.metadata, Some(default_meta("http")));
    let rule = &route.rules[0];
    assert_eq!(rule.matches, vec![match_all()]);
    assert_eq!((rule.timeouts, rule.retry.as_ref()), (None, None));
    let Some(ohr::distribution::Kind::FirstAvailable(fa)) = &rule.backends.as_ref().unwrap().kind
    else {
        panic!()
    };
    let be = fa.backends[0].backend.as_ref().unwrap();
    assert_eq!(be.metadata, Some(service_meta("default", "web", 80)));
    let Some(backend::Kind::Balancer(b)) = &be.kind else {
        panic!()
    };
    assert_eq!(
        b.load,
        Some(backend::balance_p2c::Load::PeakEwma(
            backend::balance_p2c::PeakEwma {
                default_rtt: duration(Duration::from_millis(30)),
                decay: duration(Duration::from_secs(10)),
            }
        ))
    );
}

#[test]
fn service_annotations_reach_the_default_route() {
    let web = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations:\n    retry.linkerd.io/http: 5xx\n    timeout.linkerd.io/response: 2s\n    balancer.linkerd.io/failure-accrual: consecutive\nspec: {selector: {app: web}, ports: [{port: 80}]}\n";
    let d = detect(policy(&state(&[web]), "web", 80));
    let http2 = d.http2.unwrap();
    let fa = http2.failure_accrual.unwrap();
    let Some(out::failure_accrual::Kind::ConsecutiveFailures(c)) = fa.kind else {
        panic!()
    };
    assert_eq!(c.max_failures, 7);
    let backoff = c.backoff.unwrap();
    assert_eq!(
        (
            backoff.min_backoff,
            backoff.max_backoff,
            backoff.jitter_ratio
        ),
        (
            duration(Duration::from_secs(1)),
            duration(Duration::from_secs(60)),
            0.5
        )
    );
    let rule = &http2.routes[0].rules[0];
    assert_eq!(
        rule.timeouts.unwrap().response,
        duration(Duration::from_secs(2))
    );
    let retry = rule.retry.as_ref().unwrap();
    assert_eq!((retry.max_retries, retry.max_request_bytes), (1, 65536));
    let ranges = &retry.conditions.as_ref().unwrap().status_ranges;
    assert_eq!((ranges[0].start, ranges[0].end), (500, 599));
}

#[test]
fn http_routes_in_both_protocols() {
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split}
spec:
  parentRefs: [{group: core, kind: Service, name: web, port: 80}]
  hostnames: ["*.example.com"]
  rules:
  - matches: [{path: {type: Exact, value: /a}, method: POST}]
    backendRefs: [{name: v1, port: 80, weight: 9}, {name: gone, port: 80, weight: 1}]
"#;
    let d = detect(policy(&state(&[WEB, V1, route]), "web", 80));
    assert_eq!(
        d.http1.as_ref().unwrap().routes,
        d.http2.as_ref().unwrap().routes
    );
    let r = &d.http1.unwrap().routes[0];
    assert_eq!(
        r.metadata,
        Some(Metadata {
            kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                group: "gateway.networking.k8s.io".into(),
                kind: "HTTPRoute".into(),
                name: "split".into(),
                namespace: "default".into(),
                section: String::new(),
                port: 0,
            })),
        })
    );
    assert_eq!(
        r.hosts,
        vec![http::HostMatch {
            r#match: Some(http::host_match::Match::Suffix(http::host_match::Suffix {
                reverse_labels: vec!["com".into(), "example".into()],
            })),
        }]
    );
    let rule = &r.rules[0];
    assert_eq!(
        rule.matches[0].path,
        Some(http::PathMatch {
            kind: Some(http::path_match::Kind::Exact("/a".into()))
        })
    );
    assert!(rule.matches[0].method.is_some());
    let Some(ohr::distribution::Kind::RandomAvailable(ra)) = &rule.backends.as_ref().unwrap().kind
    else {
        panic!("weighted backends are RandomAvailable")
    };
    let weights: Vec<u32> = ra.backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [9, 1]);
    let ok = ra.backends[0].backend.as_ref().unwrap();
    assert!(ok.filters.is_empty());
    assert_eq!(
        ok.backend.as_ref().unwrap().metadata,
        Some(service_meta("default", "v1", 80))
    );
    let gone = ra.backends[1].backend.as_ref().unwrap();
    let gone_backend = gone.backend.as_ref().unwrap();
    assert_eq!(
        gone_backend.kind, None,
        "no dispatcher for a missing Service (Linkerd)"
    );
    assert_eq!(
        gone_backend.metadata,
        Some(service_meta("default", "gone", 80))
    );
    assert!(gone_backend.queue.is_some());
    assert_eq!(
        gone.filters,
        vec![ohr::Filter {
            kind: Some(ohr::filter::Kind::FailureInjector(
                http::HttpFailureInjector {
                    status: 500,
                    message: "backend Service default/gone not found".into(),
                    ratio: Some(http::Ratio {
                        numerator: 1,
                        denominator: 1
                    }),
                }
            )),
        }]
    );
}

#[test]
fn grpc_routes_make_the_protocol_grpc() {
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc, annotations: {retry.linkerd.io/limit: "2"}}
spec:
  parentRefs: [{group: core, kind: Service, name: web}]
  rules:
  - matches: [{method: {service: shop.Books, method: Get}}]
    filters: [{type: ExtensionRef, extensionRef: {group: extensions.weft.dev, kind: FaultInjection, name: f}}]
"#;
    let fault = "apiVersion: extensions.weft.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: f}\nspec: {grpcCode: 14, message: boom, ratio: {numerator: 1, denominator: 10}}\n";
    let p = policy(&state(&[WEB, route, fault]), "web", 80);
    let Some(Kind::Grpc(g)) = p.protocol.unwrap().kind else {
        panic!("expected gRPC")
    };
    let rule = &g.routes[0].rules[0];
    assert_eq!(
        rule.matches[0].rpc,
        Some(grpc::GrpcRpcMatch {
            service: "shop.Books".into(),
            method: "Get".into()
        })
    );
    let Some(out::grpc_route::filter::Kind::FailureInjector(fi)) = &rule.filters[0].kind else {
        panic!()
    };
    assert_eq!((fi.code, fi.message.as_str()), (14, "boom"));
    assert_eq!(
        fi.ratio,
        Some(http::Ratio {
            numerator: 1,
            denominator: 10
        })
    );
    let c = rule.retry.as_ref().unwrap().conditions.unwrap();
    assert!(
        c.cancelled && c.deadine_exceeded && c.internal && c.resource_exhausted && c.unavailable
    );
}

#[test]
fn opaque_ports_stay_opaque() {
    let db = "apiVersion: v1\nkind: Service\nmetadata: {name: db, annotations: {config.linkerd.io/opaque-ports: '5432'}}\nspec: {selector: {app: db}, ports: [{port: 5432}]}\n";
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {parentRefs: [{group: core, kind: Service, name: db}]}\n";
    let p = policy(&state(&[db, route]), "db", 5432);
    assert!(matches!(p.protocol.unwrap().kind, Some(Kind::Opaque(_))));
}

#[test]
fn tls_and_tcp_routes_of_a_service() {
    use linkerd2_proxy_api::outbound::{opaque_route as oor, tls_route as otr};
    let api = "apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec: {selector: {app: api}, ports: [{port: 443}]}\n";
    let tls = "apiVersion: gateway.networking.k8s.io/v1alpha3\nkind: TLSRoute\nmetadata: {name: sni}\nspec:\n  parentRefs: [{group: core, kind: Service, name: api}]\n  hostnames: ['*.example.com']\n  rules: [{backendRefs: [{name: v1, port: 80, weight: 9}, {name: ghost, port: 80}]}]\n";
    let p = policy(&state(&[api, V1, tls]), "api", 443);
    assert_eq!(
        p.metadata,
        Some(service_meta("default", "api", 443)),
        "the parent"
    );
    let Some(Kind::Tls(t)) = p.protocol.unwrap().kind else {
        panic!("expected TLS")
    };
    assert_eq!(
        t.routes.len(),
        1,
        "no default route for a Service, as Linkerd"
    );
    let route = &t.routes[0];
    assert_eq!(route.snis.len(), 1);
    let Some(otr::distribution::Kind::RandomAvailable(d)) =
        route.rules[0].backends.as_ref().unwrap().kind.as_ref()
    else {
        panic!("{:?}", route.rules[0].backends)
    };
    let (v1, ghost) = (&d.backends[0], &d.backends[1]);
    assert_eq!((v1.weight, ghost.weight), (9, 1));
    let v1 = v1.backend.as_ref().unwrap();
    assert!(v1.filters.is_empty());
    let v1 = v1.backend.as_ref().unwrap();
    assert_eq!(v1.metadata, Some(service_meta("default", "v1", 80)));
    let Some(backend::Kind::Balancer(b)) = &v1.kind else {
        panic!("{v1:?}")
    };
    let Some(backend::endpoint_discovery::Kind::Dst(dst)) =
        b.discovery.as_ref().unwrap().kind.as_ref()
    else {
        panic!()
    };
    assert_eq!(dst.path, "v1.default.svc.cluster.local:80");
    // A backend that does not resolve: no kind, and an Invalid filter saying why.
    let ghost = ghost.backend.as_ref().unwrap();
    assert_eq!(ghost.backend.as_ref().unwrap().kind, None);
    let Some(otr::filter::Kind::Invalid(i)) = &ghost.filters[0].kind else {
        panic!("{:?}", ghost.filters)
    };
    assert_eq!(i.message, "backend Service default/ghost not found");

    // A TCPRoute also applies to an opaque port; without backendRefs, to the Service itself.
    let db = "apiVersion: v1\nkind: Service\nmetadata: {name: db, annotations: {config.linkerd.io/opaque-ports: '5432'}}\nspec: {selector: {app: db}, ports: [{port: 5432}]}\n";
    let tcp = "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: pg}\nspec:\n  parentRefs: [{group: core, kind: Service, name: db}]\n  rules: [{}]\n";
    let p = policy(&state(&[db, tcp]), "db", 5432);
    let Some(Kind::Opaque(o)) = p.protocol.unwrap().kind else {
        panic!("expected opaque")
    };
    assert_eq!(o.routes.len(), 1);
    assert_eq!(o.routes[0].metadata, Some(route_meta_of("TCPRoute", "pg")));
    let Some(oor::distribution::Kind::RandomAvailable(d)) = o.routes[0].rules[0]
        .backends
        .as_ref()
        .unwrap()
        .kind
        .as_ref()
    else {
        panic!()
    };
    let be = d.backends[0]
        .backend
        .as_ref()
        .unwrap()
        .backend
        .as_ref()
        .unwrap();
    assert_eq!(be.metadata, Some(service_meta("default", "db", 5432)));
}

fn route_meta_of(kind: &str, name: &str) -> Metadata {
    Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "gateway.networking.k8s.io".into(),
            kind: kind.into(),
            name: name.into(),
            namespace: "default".into(),
            section: String::new(),
            port: 0,
        })),
    }
}
