//! Opaque and TLS routes: their backends take whole connections (TLS routes' SNI matches are
//! not used: the first rule of the first route takes the connection, as for opaque routes).
//! Both have the same proto shape, converted by one definition ([`connection_routes!`]).

use super::*;

/// Defines `$routes` for one connection route protocol (`$proto`: its proto module).
macro_rules! connection_routes {
    ($routes:ident, $Route:ident, $proto:ident) => {
        pub(super) fn $routes(routes: Vec<api::$Route>) -> OpaqueRoutes {
            use api::$proto::{distribution::Kind, filter::Kind as FilterKind};
            let filters = |filters: Vec<api::$proto::Filter>| -> Vec<Filter> {
                filters
                    .into_iter()
                    .map(|f| match f.kind {
                        Some(FilterKind::Invalid(i)) => {
                            Filter::Invalid(format!("invalid opaque route: {}", i.message))
                        }
                        Some(FilterKind::Forbidden(_)) => Filter::Forbidden,
                        None => Filter::Invalid("an opaque filter with no kind".into()),
                    })
                    .collect()
            };
            let rule = |rule: api::$proto::Rule| {
                let backends = rule.backends.and_then(|d| d.kind).and_then(|k| match k {
                    Kind::Empty(_) => None,
                    Kind::FirstAvailable(f) => Some((
                        false,
                        f.backends
                            .into_iter()
                            .map(|b| (b.backend, 1, filters(b.filters)))
                            .collect(),
                    )),
                    Kind::RandomAvailable(r) => Some((
                        true,
                        r.backends
                            .into_iter()
                            .map(|w| {
                                let (b, f) = w
                                    .backend
                                    .map(|b| (b.backend, filters(b.filters)))
                                    .unwrap_or((None, Vec::new()));
                                (b, w.weight, f)
                            })
                            .collect(),
                    )),
                });
                OpaqueRule {
                    distribution: distribution(backends),
                    filters: filters(rule.filters),
                }
            };
            OpaqueRoutes {
                routes: routes
                    .into_iter()
                    .map(|r| OpaqueRoute {
                        meta: Arc::new(meta(r.metadata)),
                        rules: r.rules.into_iter().map(rule).collect(),
                    })
                    .collect(),
            }
        }
    };
}

connection_routes!(opaque_routes, OpaqueRoute, opaque_route);
connection_routes!(tls_routes, TlsRoute, tls_route);

/// `(random?, [(backend, weight, filters)])`, from either protocol.
type Backends = (bool, Vec<(Option<api::Backend>, u32, Vec<Filter>)>);

fn distribution(d: Option<Backends>) -> Distribution {
    let Some((random, backends)) = d else {
        return Distribution::Empty;
    };
    let route = Meta::default_named("opaque");
    let list: Vec<(RouteBackend, u32)> = backends
        .into_iter()
        .map(|(b, w, filters)| (route_backend(b, filters, Ok(None), &route), w))
        .collect();
    if random {
        weighted(list)
    } else {
        Distribution::FirstAvailable(list.into_iter().map(|(b, _)| b).collect())
    }
}
