//! The OutboundPolicy of an address an EgressNetwork answers: the protocol its routes decide
//! (as for a Service), their rules sent to the original destination, each protocol's routes
//! followed by a default route that forwards everything else (`Allow`) or refuses it (`Deny`).

use super::*;
use crate::resource::egress::{TrafficPolicy, EGRESS_NETWORK_KIND};
use crate::resource::route::POLICY_GROUP;
use linkerd2_proxy_api::destination::WeightedAddr;

/// gRPC status of calls a `Deny` EgressNetwork refuses: PERMISSION_DENIED (HTTP gets 403), as
/// Linkerd's `grpc-egress-deny` route.
const DENIED_GRPC_CODE: u32 = 7;
/// Names of the default connection routes, (`Allow`, `Deny`): Linkerd's (`outbound/tls.rs`,
/// `outbound/tcp.rs`).
pub(super) const TLS_DEFAULT: [&str; 2] = ["tls-egress-allow", "tls-egress-deny"];
pub(super) const TCP_DEFAULT: [&str; 2] = ["tcp-egress-allow", "tcp-egress-deny"];
/// The opaque route of `Detect`: `default`, as the default HTTP route.
const DETECT_DEFAULT: [&str; 2] = ["default", "default"];

/// The policy of an address an EgressNetwork answers. Without routes (or with HTTPRoutes) it is
/// `Detect`, and the proxy's own opaque-port configuration still makes a port opaque.
pub(super) fn policy(e: &Egress) -> out::OutboundPolicy {
    let metadata = Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: POLICY_GROUP.into(),
            kind: EGRESS_NETWORK_KIND.into(),
            name: e.name.clone(),
            namespace: e.namespace.clone(),
            section: String::new(),
            port: e.addr.port().into(),
        })),
    };
    // The original destination, in plaintext and without discovery.
    let forward = with_queue(
        metadata.clone(),
        backend::Kind::Forward(WeightedAddr {
            addr: Some(e.addr.into()),
            weight: 1,
            ..Default::default()
        }),
    );
    let egress = Some((e, &forward));
    let kind = match e.protocol {
        RouteProtocol::Grpc => grpc(&e.routes, None, egress),
        RouteProtocol::Http => detect(e, &forward),
        RouteProtocol::Tls => tls(&e.routes, egress),
        RouteProtocol::Tcp => tcp(&e.routes, egress),
    };
    out::OutboundPolicy {
        protocol: Some(out::ProxyProtocol { kind: Some(kind) }),
        metadata: Some(metadata),
    }
}

/// `Detect` for an EgressNetwork: its HTTPRoutes, then the default HTTP route, in both `http1`
/// and `http2`; the opaque route forwards or is `Forbidden`.
fn detect(e: &Egress, forward: &out::Backend) -> proxy_protocol::Kind {
    let mut routes: Vec<_> = e
        .routes
        .iter()
        .map(|r| http_route(r, Some(forward)))
        .collect();
    routes.push(default_http_route(e, forward));
    let opaque = connection::opaque::egress_default(e.traffic_policy, forward, DETECT_DEFAULT);
    proxy_protocol::Kind::Detect(proxy_protocol::Detect {
        timeout: duration(DETECT_TIMEOUT),
        opaque: Some(proxy_protocol::Opaque {
            routes: vec![opaque],
        }),
        http1: Some(proxy_protocol::Http1 {
            routes: routes.clone(),
            failure_accrual: None,
        }),
        http2: Some(proxy_protocol::Http2 {
            routes,
            failure_accrual: None,
        }),
    })
}

/// The last HTTP route of an EgressNetwork: every request the routes before it did not match,
/// forwarded (`Allow`) or answered 403 (`Deny`).
fn default_http_route(e: &Egress, forward: &out::Backend) -> out::HttpRoute {
    use out::http_route::{distribution, Distribution, Rule};
    let rule = match e.traffic_policy {
        TrafficPolicy::Allow => super::default_http_route(forward, &RulePolicy::default())
            .rules
            .remove(0),
        TrafficPolicy::Deny => Rule {
            matches: vec![match_all()],
            filters: vec![http_fail(403, &e.deny_message(), Some((1, 1)))],
            backends: Some(Distribution {
                kind: Some(distribution::Kind::Empty(distribution::Empty {})),
            }),
            ..Default::default()
        },
    };
    out::HttpRoute {
        metadata: Some(default_meta("default")),
        hosts: Vec::new(),
        rules: vec![rule],
    }
}

/// The last gRPC route of an EgressNetwork: every call the routes before it did not match,
/// forwarded (`Allow`) or failed with `PERMISSION_DENIED` and [`Egress::deny_message`]
/// (`Deny`); named as Linkerd's (`outbound/grpc.rs`).
pub(super) fn default_grpc_route(e: &Egress, forward: &out::Backend) -> out::GrpcRoute {
    use out::grpc_route::{distribution, Distribution, RouteBackend, Rule};
    let (name, filters, kind) = match e.traffic_policy {
        TrafficPolicy::Allow => (
            "grpc-egress-allow",
            Vec::new(),
            distribution::Kind::FirstAvailable(distribution::FirstAvailable {
                backends: vec![RouteBackend {
                    backend: Some(forward.clone()),
                    ..Default::default()
                }],
            }),
        ),
        // No backend, as the HTTP route's 403: nothing of a refused call leaves the proxy.
        TrafficPolicy::Deny => (
            "grpc-egress-deny",
            vec![grpc_fail(DENIED_GRPC_CODE, &e.deny_message(), Some((1, 1)))],
            distribution::Kind::Empty(distribution::Empty {}),
        ),
    };
    out::GrpcRoute {
        metadata: Some(default_meta(name)),
        hosts: Vec::new(),
        rules: vec![Rule {
            matches: vec![grpc::GrpcRouteMatch::default()],
            filters,
            backends: Some(Distribution { kind: Some(kind) }),
            ..Default::default()
        }],
    }
}
