//! Opaque and TLS routes: their backends take whole connections. Both have the same proto
//! shape, converted by one definition ([`connection_routes!`]); a TLS route adds its SNI
//! matches (`*.example.com` as the suffix `.example.com`, as HTTP hosts), which select the
//! route a connection takes ([`crate::policy::route::find_sni`]). An opaque route has none.

use super::*;
use linkerd2_proxy_api::tls_route as sni_api;

/// Defines `$routes` for one connection route protocol (`$proto`: its proto module; `$snis`:
/// the route's SNI matches, given the proto route and its metadata).
macro_rules! connection_routes {
    ($routes:ident, $Route:ident, $proto:ident, $snis:expr) => {
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
                    .map(|mut r| {
                        let meta = Arc::new(meta(r.metadata.take()));
                        OpaqueRoute {
                            snis: $snis(&mut r, &meta),
                            meta,
                            rules: r.rules.into_iter().map(rule).collect(),
                        }
                    })
                    .collect(),
            }
        }
    };
}

connection_routes!(opaque_routes, OpaqueRoute, opaque_route, no_snis);
connection_routes!(tls_routes, TlsRoute, tls_route, tls_snis);

fn no_snis(_: &mut api::OpaqueRoute, _: &Meta) -> Vec<HostMatch> {
    Vec::new()
}

/// A TLS route's SNI matches, normalised as HTTP host matches are ([`hosts`]). A route whose
/// every SNI match was invalid matches no SNI rather than every one.
fn tls_snis(r: &mut api::TlsRoute, route: &Meta) -> Vec<HostMatch> {
    use http_api::host_match::{Match as Host, Suffix};
    use sni_api::sni_match::Match as Sni;
    let had = !r.snis.is_empty();
    let as_hosts = std::mem::take(&mut r.snis)
        .into_iter()
        .map(|s| http_api::HostMatch {
            r#match: s.r#match.map(|m| match m {
                Sni::Exact(e) => Host::Exact(e),
                Sni::Suffix(s) => Host::Suffix(Suffix {
                    reverse_labels: s.reverse_labels,
                }),
            }),
        })
        .collect();
    never_if_all_invalid(hosts(as_hosts, route), had)
}

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
