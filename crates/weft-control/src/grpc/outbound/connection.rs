//! Connection routes — the proto's `OpaqueRoute` and `TlsRoute` — which send whole connections
//! to backends, or refuse them with a `Forbidden` filter. The two protos have the same shape,
//! so `connection_routes!` defines the builders once for both; a TLS route adds the SNI names
//! that select it ([`tls_route`]).

use super::{default_meta, route_backend, route_meta};
use crate::index::routes::{OutBackend, OutRoute};
use crate::resource::egress::TrafficPolicy;
use linkerd2_proxy_api::meta::Metadata;
use linkerd2_proxy_api::outbound as out;
use linkerd2_proxy_api::tls_route::{sni_match, SniMatch};

/// Defines the module `$module` with the builders of `out::$Route` (whose proto module is
/// `$proto`).
macro_rules! connection_routes {
    ($module:ident, $proto:ident, $Route:ident) => {
        pub(super) mod $module {
            use super::*;
            use linkerd2_proxy_api::opaque_route::{Forbidden, Invalid};
            use out::$proto::distribution::{self, Kind};
            use out::$proto::{filter, Distribution, Filter, Rule};
            use out::$proto::{RouteBackend, WeightedRouteBackend};

            // `..Default::default()`: a TlsRoute also has `snis` (an OpaqueRoute has not).
            #[allow(clippy::needless_update)]
            fn route(metadata: Metadata, rules: Vec<Rule>) -> out::$Route {
                out::$Route {
                    metadata: Some(metadata),
                    rules,
                    ..Default::default()
                }
            }

            fn rule(kind: Kind, filters: Vec<Filter>) -> Rule {
                Rule {
                    backends: Some(Distribution { kind: Some(kind) }),
                    filters,
                }
            }

            fn first_available(b: &out::Backend) -> Kind {
                Kind::FirstAvailable(distribution::FirstAvailable {
                    backends: vec![RouteBackend {
                        backend: Some(b.clone()),
                        filters: Vec::new(),
                    }],
                })
            }

            /// A route's backend; one that does not resolve has no kind and an `Invalid`
            /// filter saying why, as Linkerd sends it.
            fn weighted(b: &OutBackend) -> WeightedRouteBackend {
                let invalid = |message: &String| Filter {
                    kind: Some(filter::Kind::Invalid(Invalid {
                        message: message.clone(),
                    })),
                };
                WeightedRouteBackend {
                    weight: b.weight,
                    backend: Some(RouteBackend {
                        backend: Some(route_backend(b)),
                        filters: b.error.iter().map(invalid).collect(),
                    }),
                }
            }

            /// Every connection to `b`.
            pub(in crate::grpc) fn forward(metadata: Metadata, b: &out::Backend) -> out::$Route {
                route(metadata, vec![rule(first_available(b), Vec::new())])
            }

            /// Every connection refused: no backend, and a `Forbidden` filter (the proxy closes
            /// the connection).
            pub(in crate::grpc) fn forbidden(metadata: Metadata) -> out::$Route {
                let forbidden = Filter {
                    kind: Some(filter::Kind::Forbidden(Forbidden {})),
                };
                let empty = Kind::Empty(distribution::Empty {});
                route(metadata, vec![rule(empty, vec![forbidden])])
            }

            /// The last route of an EgressNetwork: every connection the routes before it did
            /// not take, forwarded to `forward` (`Allow`, named `allow`) or refused (`Deny`,
            /// named `deny`).
            pub(in crate::grpc) fn egress_default(
                policy: TrafficPolicy,
                forward: &out::Backend,
                [allow, deny]: [&str; 2],
            ) -> out::$Route {
                match policy {
                    TrafficPolicy::Allow => self::forward(default_meta(allow), forward),
                    TrafficPolicy::Deny => forbidden(default_meta(deny)),
                }
            }

            /// A TLSRoute or TCPRoute (metadata: the route resource). A rule with backends
            /// spreads connections over them by weight; a rule without (an EgressNetwork's)
            /// takes `forward`, the original destination.
            pub(in crate::grpc) fn of(r: &OutRoute, forward: Option<&out::Backend>) -> out::$Route {
                let rules = r
                    .rules
                    .iter()
                    .map(|x| {
                        let kind = match forward.filter(|_| x.backends.is_empty()) {
                            Some(forward) => first_available(forward),
                            None => Kind::RandomAvailable(distribution::RandomAvailable {
                                backends: x.backends.iter().map(weighted).collect(),
                            }),
                        };
                        rule(kind, Vec::new())
                    })
                    .collect();
                route(route_meta(r), rules)
            }
        }
    };
}

connection_routes!(opaque, opaque_route, OpaqueRoute);
connection_routes!(tls, tls_route, TlsRoute);

/// A TLSRoute: [`tls::of`] with its `hostnames` as SNI matches (none: any SNI).
pub(super) fn tls_route(r: &OutRoute, forward: Option<&out::Backend>) -> out::TlsRoute {
    out::TlsRoute {
        snis: r.hostnames.iter().map(|h| sni(h)).collect(),
        ..tls::of(r, forward)
    }
}

/// `api.example.com` exactly; `*.example.com` as the suffix `[com, example]` (Linkerd's
/// `convert_sni_match`).
fn sni(hostname: &str) -> SniMatch {
    let m = match hostname.strip_prefix("*.") {
        Some(suffix) => sni_match::Match::Suffix(sni_match::Suffix {
            reverse_labels: suffix.rsplit('.').map(String::from).collect(),
        }),
        None => sni_match::Match::Exact(hostname.to_string()),
    };
    SniMatch { r#match: Some(m) }
}
