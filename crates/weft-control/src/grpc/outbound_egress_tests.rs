//! The OutboundPolicy of an address an EgressNetwork answers: Detect, the network's routes to
//! the original destination first, then the default route that forwards (Allow) or refuses
//! (Deny); the opaque route that forwards or is Forbidden; and the client's namespace read from
//! `source_workload`.

use super::*;
use crate::documents::state_of;
use crate::index::Target;
use linkerd2_proxy_api::outbound::{http_route as ohr, opaque_route as oor, proxy_protocol::Kind};

const ADDR: &str = "93.184.216.34:80";

fn state(policy: &str) -> crate::resource::State {
    state_of(&format!(
        "apiVersion: policy.linkerd.io/v1alpha1
kind: EgressNetwork
metadata: {{name: internet, namespace: shop, creationTimestamp: '2024-01-01T00:00:00Z'}}
spec: {{trafficPolicy: {policy}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: example, namespace: shop, creationTimestamp: '2024-01-02T00:00:00Z'}}
spec:
  parentRefs: [{{group: policy.linkerd.io, kind: EgressNetwork, name: internet}}]
  hostnames: [example.org]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-egress, value: '1'}}]}}}}]
"
    ))
}

fn policy(policy: &str) -> out::OutboundPolicy {
    let target = Target::Addr(ADDR.parse().unwrap());
    outbound_policy(&index::outbound_from(
        &state(policy),
        "cluster.local",
        &target,
        Some("shop"),
    ))
    .unwrap()
}

fn detect(p: &out::OutboundPolicy) -> proxy_protocol::Detect {
    match p.protocol.clone().unwrap().kind.unwrap() {
        Kind::Detect(d) => d,
        other => panic!("expected detect, got {other:?}"),
    }
}

fn forward_addr(b: &out::Backend) -> SocketAddr {
    match b.kind.as_ref().unwrap() {
        backend::Kind::Forward(w) => {
            assert_eq!(w.weight, 1);
            assert!(w.tls_identity.is_none(), "plaintext");
            SocketAddr::try_from(w.addr.unwrap()).unwrap()
        }
        other => panic!("expected forward, got {other:?}"),
    }
}

fn egress_meta() -> Metadata {
    Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "policy.linkerd.io".into(),
            kind: "EgressNetwork".into(),
            name: "internet".into(),
            namespace: "shop".into(),
            section: String::new(),
            port: 80,
        })),
    }
}

/// The attached route: first, for `example.org`, its match and filter, to the destination.
fn check_example_route(r: &out::HttpRoute) {
    assert_eq!(r.hosts, vec![host_match("example.org")]);
    let rule = &r.rules[0];
    assert_eq!(rule.matches.len(), 1);
    assert_eq!(rule.filters.len(), 1, "the route's header filter");
    let Some(ohr::distribution::Kind::RandomAvailable(d)) =
        rule.backends.as_ref().unwrap().kind.as_ref()
    else {
        panic!("{:?}", rule.backends)
    };
    assert_eq!(d.backends.len(), 1);
    let b = d.backends[0].backend.as_ref().unwrap();
    assert_eq!(
        forward_addr(b.backend.as_ref().unwrap()),
        ADDR.parse().unwrap()
    );
}

#[test]
fn deny_refuses_what_no_route_admits() {
    let p = policy("Deny");
    assert_eq!(p.metadata, Some(egress_meta()));
    let d = detect(&p);
    let routes = d.http1.unwrap().routes;
    assert_eq!(routes, d.http2.unwrap().routes, "same routes for both");
    assert_eq!(routes.len(), 2, "the route, then the default route");
    check_example_route(&routes[0]);
    let default = &routes[1];
    assert_eq!(default.metadata, Some(default_meta("default")));
    assert!(default.hosts.is_empty());
    let rule = &default.rules[0];
    assert_eq!(rule.matches, vec![match_all()]);
    assert_eq!(
        rule.backends.as_ref().unwrap().kind,
        Some(ohr::distribution::Kind::Empty(ohr::distribution::Empty {}))
    );
    let Some(ohr::filter::Kind::FailureInjector(fi)) = &rule.filters[0].kind else {
        panic!("{:?}", rule.filters)
    };
    assert_eq!(fi.status, 403);
    assert_eq!(
        fi.message,
        format!("traffic to {ADDR} is not allowed by EgressNetwork shop/internet")
    );
    assert_eq!(
        fi.ratio,
        Some(http::Ratio {
            numerator: 1,
            denominator: 1
        })
    );

    let opaque = &d.opaque.unwrap().routes[0];
    assert_eq!(opaque.metadata, Some(default_meta("default")));
    let rule = &opaque.rules[0];
    assert_eq!(
        rule.backends.as_ref().unwrap().kind,
        Some(oor::distribution::Kind::Empty(oor::distribution::Empty {}))
    );
    assert_eq!(
        rule.filters,
        vec![oor::Filter {
            kind: Some(oor::filter::Kind::Forbidden(
                linkerd2_proxy_api::opaque_route::Forbidden {}
            ))
        }]
    );
}

#[test]
fn allow_forwards_everything_to_the_original_destination() {
    let d = detect(&policy("Allow"));
    let routes = d.http1.unwrap().routes;
    assert_eq!(routes.len(), 2);
    check_example_route(&routes[0]);
    let default = &routes[1];
    assert_eq!(default.metadata, Some(default_meta("default")));
    let rule = &default.rules[0];
    assert!(rule.filters.is_empty());
    let Some(ohr::distribution::Kind::FirstAvailable(f)) =
        rule.backends.as_ref().unwrap().kind.as_ref()
    else {
        panic!("{:?}", rule.backends)
    };
    let b = f.backends[0].backend.as_ref().unwrap();
    assert_eq!(b.metadata, Some(egress_meta()));
    assert_eq!(forward_addr(b), ADDR.parse().unwrap());

    let opaque = &d.opaque.unwrap().routes[0];
    assert_eq!(opaque.metadata, Some(default_meta("default")));
    let rule = &opaque.rules[0];
    assert!(rule.filters.is_empty());
    let Some(oor::distribution::Kind::FirstAvailable(f)) =
        rule.backends.as_ref().unwrap().kind.as_ref()
    else {
        panic!("{:?}", rule.backends)
    };
    assert_eq!(
        forward_addr(f.backends[0].backend.as_ref().unwrap()),
        ADDR.parse().unwrap()
    );
}

#[test]
fn the_client_namespace_comes_from_source_workload() {
    assert_eq!(client_namespace("shop:web"), Some("shop"));
    assert_eq!(client_namespace(""), None);
    assert_eq!(client_namespace("shop"), None);
    assert_eq!(client_namespace("Shop:web"), None);
    assert_eq!(client_namespace("shop:"), None);
}

#[tokio::test]
async fn get_answers_per_client_namespace() {
    let index = Index::new("cluster.local");
    index.apply(Arc::new(state("Deny")));
    let (_tx, shutdown) = watch::channel(false);
    let svc = OutboundService::new(index, shutdown);
    let spec = |source: &str| {
        Request::new(out::TrafficSpec {
            source_workload: source.into(),
            target: Some(traffic_spec::Target::Addr(
                ADDR.parse::<SocketAddr>().unwrap().into(),
            )),
        })
    };
    let p = svc.get(spec("shop:web")).await.unwrap().into_inner();
    assert_eq!(p.metadata, Some(egress_meta()));
    // Another namespace has no EgressNetwork (none in the egress namespace): passthrough.
    let e = svc.get(spec("other:web")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = svc.get(spec("")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

/// The policy of `addr` for a client of `shop` when the EgressNetwork `internet` has
/// `trafficPolicy: policy` and the routes `routes`.
fn policy_of(policy: &str, routes: &str, addr: &str) -> out::OutboundPolicy {
    let s = state_of(&format!(
        "apiVersion: policy.linkerd.io/v1alpha1
kind: EgressNetwork
metadata: {{name: internet, namespace: shop, creationTimestamp: '2024-01-01T00:00:00Z'}}
spec: {{trafficPolicy: {policy}}}
---
{routes}"
    ));
    let target = Target::Addr(addr.parse().unwrap());
    outbound_policy(&index::outbound_from(
        &s,
        "cluster.local",
        &target,
        Some("shop"),
    ))
    .unwrap()
}

const TLS_ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: api, namespace: shop}
spec:
  parentRefs: [{group: policy.linkerd.io, kind: EgressNetwork, name: internet, port: 443}]
  hostnames: [api.example.com, '*.example.org']
  rules:
  - backendRefs: [{group: policy.linkerd.io, kind: EgressNetwork, name: internet}]
";

const TCP_ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: shop}
spec:
  parentRefs: [{group: policy.linkerd.io, kind: EgressNetwork, name: internet, port: 5432}]
  rules: [{}]
";

fn resource_meta(group: &str, kind: &str, name: &str) -> Metadata {
    Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
            namespace: "shop".into(),
            section: String::new(),
            port: 0,
        })),
    }
}

/// The backend of a connection route's only rule (first available), or `None` for an empty
/// distribution; and the rule's filters. One definition for opaque and TLS routes.
macro_rules! connection_rule {
    ($route:expr, $proto:ident) => {{
        use $proto::distribution::Kind as D;
        assert_eq!($route.rules.len(), 1);
        let rule = &$route.rules[0];
        let backend = match rule.backends.as_ref().unwrap().kind.as_ref().unwrap() {
            D::FirstAvailable(f) => {
                assert_eq!(f.backends.len(), 1);
                Some(forward_addr(f.backends[0].backend.as_ref().unwrap()))
            }
            D::Empty(_) => None,
            other => panic!("{other:?}"),
        };
        let forbidden = rule
            .filters
            .iter()
            .map(|f| matches!(f.kind, Some($proto::filter::Kind::Forbidden(_))))
            .collect::<Vec<_>>();
        (backend, forbidden)
    }};
}

#[test]
fn a_tls_route_allows_its_sni_names_and_the_default_route_follows_the_policy() {
    use linkerd2_proxy_api::outbound::tls_route as otr;
    use linkerd2_proxy_api::tls_route::{sni_match, SniMatch};

    let addr: SocketAddr = "93.184.216.34:443".parse().unwrap();
    for (policy, default_name, default_rule) in [
        ("Deny", "tls-egress-deny", (None, vec![true])),
        ("Allow", "tls-egress-allow", (Some(addr), vec![])),
    ] {
        let p = policy_of(policy, TLS_ROUTE, "93.184.216.34:443");
        let Some(Kind::Tls(tls)) = p.protocol.unwrap().kind else {
            panic!("expected TLS ({policy})")
        };
        assert_eq!(tls.routes.len(), 2, "the route, then the default route");
        let route = &tls.routes[0];
        assert_eq!(
            route.metadata,
            Some(resource_meta(
                "gateway.networking.k8s.io",
                "TLSRoute",
                "api"
            ))
        );
        let exact = |s: &str| SniMatch {
            r#match: Some(sni_match::Match::Exact(s.into())),
        };
        let suffix = SniMatch {
            r#match: Some(sni_match::Match::Suffix(sni_match::Suffix {
                reverse_labels: vec!["org".into(), "example".into()],
            })),
        };
        assert_eq!(route.snis, vec![exact("api.example.com"), suffix]);
        // Its backendRef (the EgressNetwork itself) is the original destination.
        assert_eq!(connection_rule!(route, otr), (Some(addr), vec![]));

        let default = &tls.routes[1];
        assert_eq!(default.metadata, Some(default_meta(default_name)));
        assert!(default.snis.is_empty(), "any SNI");
        assert_eq!(connection_rule!(default, otr), default_rule);
    }
    // Port 80 has no TLSRoute: Detect, as before.
    let p = policy_of("Deny", TLS_ROUTE, "93.184.216.34:80");
    detect(&p);
}

#[test]
fn a_tcp_route_allows_its_port() {
    let addr: SocketAddr = "93.184.216.34:5432".parse().unwrap();
    for (policy, default_name, default_rule) in [
        ("Deny", "tcp-egress-deny", (None, vec![true])),
        ("Allow", "tcp-egress-allow", (Some(addr), vec![])),
    ] {
        let p = policy_of(policy, TCP_ROUTE, "93.184.216.34:5432");
        let Some(Kind::Opaque(opaque)) = p.protocol.unwrap().kind else {
            panic!("expected opaque ({policy})")
        };
        let routes = &opaque.routes;
        assert_eq!(
            routes.len(),
            2,
            "the route (first: the one the proxy uses), then the default"
        );
        assert_eq!(
            routes[0].metadata,
            Some(resource_meta("gateway.networking.k8s.io", "TCPRoute", "db"))
        );
        assert_eq!(connection_rule!(routes[0], oor), (Some(addr), vec![]));
        assert_eq!(routes[1].metadata, Some(default_meta(default_name)));
        assert_eq!(connection_rule!(routes[1], oor), default_rule);
    }
}

#[test]
fn grpc_routes_win_and_deny_with_permission_denied() {
    use linkerd2_proxy_api::outbound::grpc_route as ogr;
    let routes = format!(
        "{}---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: books, namespace: shop}}
spec:
  parentRefs: [{{group: policy.linkerd.io, kind: EgressNetwork, name: internet}}]
  rules: [{{matches: [{{method: {{service: shop.Books}}}}]}}]
",
        TLS_ROUTE.replace(", port: 443", "")
    );
    let grpc_of = |policy: &str| {
        let p = policy_of(policy, &routes, "93.184.216.34:443");
        match p.protocol.unwrap().kind.unwrap() {
            Kind::Grpc(g) => g,
            other => panic!("expected gRPC, got {other:?}"),
        }
    };
    let g = grpc_of("Deny");
    assert_eq!(g.failure_accrual, None);
    assert_eq!(
        g.routes.len(),
        2,
        "the GRPCRoute (not the TLSRoute), then the default"
    );
    let route = &g.routes[0];
    assert_eq!(
        route.metadata,
        Some(resource_meta(
            "gateway.networking.k8s.io",
            "GRPCRoute",
            "books"
        ))
    );
    let Some(ogr::distribution::Kind::RandomAvailable(d)) =
        route.rules[0].backends.as_ref().unwrap().kind.as_ref()
    else {
        panic!("{:?}", route.rules[0].backends)
    };
    let b = d.backends[0].backend.as_ref().unwrap();
    assert_eq!(
        forward_addr(b.backend.as_ref().unwrap()),
        "93.184.216.34:443".parse().unwrap()
    );

    let default = &g.routes[1];
    assert_eq!(default.metadata, Some(default_meta("grpc-egress-deny")));
    let rule = &default.rules[0];
    assert_eq!(rule.matches, vec![grpc::GrpcRouteMatch::default()]);
    assert_eq!(
        rule.backends.as_ref().unwrap().kind,
        Some(ogr::distribution::Kind::Empty(ogr::distribution::Empty {}))
    );
    let Some(ogr::filter::Kind::FailureInjector(fi)) = &rule.filters[0].kind else {
        panic!("{:?}", rule.filters)
    };
    assert_eq!(
        (fi.code, fi.message.as_str()),
        (
            7,
            "traffic to 93.184.216.34:443 is not allowed by EgressNetwork shop/internet"
        )
    );

    let g = grpc_of("Allow");
    let default = &g.routes[1];
    assert_eq!(default.metadata, Some(default_meta("grpc-egress-allow")));
    let rule = &default.rules[0];
    assert!(rule.filters.is_empty());
    let Some(ogr::distribution::Kind::FirstAvailable(f)) =
        rule.backends.as_ref().unwrap().kind.as_ref()
    else {
        panic!("{:?}", rule.backends)
    };
    assert_eq!(
        forward_addr(f.backends[0].backend.as_ref().unwrap()),
        "93.184.216.34:443".parse().unwrap()
    );
}
