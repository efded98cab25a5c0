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
