//! HTTP and gRPC routes: the proto gives both the same shape (routes → rules → distribution →
//! route backends) with their own match, filter and retry-condition types, so one definition
//! ([`route_table!`]) converts both; what differs is below it.

use super::*;

/// Defines `$routes` (the route list), `$rule` and `$dist` for one route protocol.
macro_rules! route_table {
    ($routes:ident, $rule:ident, $dist:ident, $Route:ident, $proto:ident, $M:ty, $kind:literal,
     $match_fn:ident, $filter_fn:ident, $conditions:ident, $index_fn:path) => {
        pub(super) fn $routes(
            routes: Vec<api::$Route>,
            accrual: Option<api::FailureAccrual>,
        ) -> Routes<$M> {
            let routes: Vec<Route<$M>> = routes
                .into_iter()
                .map(|r| {
                    let meta = Arc::new(meta(r.metadata));
                    Route {
                        hosts: hosts(r.hosts, &meta),
                        rules: r.rules.into_iter().map(|rule| $rule(rule, &meta)).collect(),
                        meta,
                    }
                })
                .collect();
            Routes {
                index: Arc::new($index_fn(&routes)),
                routes: Arc::from(routes),
                failure_accrual: failure_accrual(accrual),
            }
        }

        fn $rule(rule: api::$proto::Rule, route: &Meta) -> Rule<$M> {
            let matches: Vec<$M> = $match_fn(rule.matches, route);
            let mut filters: Vec<Filter> = rule.filters.into_iter().map($filter_fn).collect();
            let (timeouts, timeout_error) = timeouts(rule.timeouts, rule.request_timeout);
            filters.extend(timeout_error.map(Filter::Invalid));
            let retry = rule.retry.and_then(|r| match $conditions(&r) {
                Ok(policy) => Some(Arc::new(policy)),
                Err(e) => {
                    tracing::warn!(%route, error = %e, kind = $kind, "policy: a rule without its retry");
                    None
                }
            });
            Rule {
                matches,
                filters,
                distribution: $dist(rule.backends, route),
                timeouts,
                retry,
                allow_l5d_request_headers: rule.allow_l5d_request_headers,
            }
        }

        fn $dist(d: Option<api::$proto::Distribution>, route: &Meta) -> Distribution {
            use api::$proto::distribution::Kind;
            let rb = |b: api::$proto::RouteBackend| {
                let filters = b.filters.into_iter().map($filter_fn).collect();
                let timeout = opt_duration(b.request_timeout, "backend request_timeout");
                route_backend(b.backend, filters, timeout, route)
            };
            match d.and_then(|d| d.kind) {
                None | Some(Kind::Empty(_)) => Distribution::Empty,
                Some(Kind::FirstAvailable(f)) => {
                    Distribution::FirstAvailable(f.backends.into_iter().map(rb).collect())
                }
                Some(Kind::RandomAvailable(r)) => weighted(
                    r.backends
                        .into_iter()
                        .map(|w| (w.backend.map(rb).unwrap_or_else(|| missing(route)), w.weight))
                        .collect(),
                ),
            }
        }
    };
}

route_table!(
    http_routes,
    http_rule,
    http_distribution,
    HttpRoute,
    http_route,
    HttpMatch,
    "HTTP",
    http_rule_matches,
    http_filter,
    http_retry,
    crate::policy::route::PathIndex::build
);
route_table!(
    grpc_routes,
    grpc_rule,
    grpc_distribution,
    GrpcRoute,
    grpc_route,
    GrpcMatch,
    "gRPC",
    grpc_rule_matches,
    grpc_filter,
    grpc_retry,
    no_index
);

/// A rule's matches as the matcher takes them (inbound routes use the same conversion): an
/// invalid match is dropped with a log line; a rule whose every match was invalid never matches.
macro_rules! rule_matches {
    ($name:ident, $proto:ty, $M:ty, $match_fn:ident, $kind:literal) => {
        pub(crate) fn $name(matches: Vec<$proto>, route: &Meta) -> Vec<$M> {
            let had = !matches.is_empty();
            let valid = matches
                .into_iter()
                .filter_map(|m| {
                    $match_fn(m)
                        .map_err(|e| {
                            tracing::warn!(%route, error = %e, kind = $kind, "policy: dropping an invalid match");
                        })
                        .ok()
                })
                .collect();
            never_if_all_invalid(valid, had)
        }
    };
}
rule_matches!(
    http_rule_matches,
    http_api::HttpRouteMatch,
    HttpMatch,
    http_match,
    "HTTP"
);
rule_matches!(
    grpc_rule_matches,
    grpc_api::GrpcRouteMatch,
    GrpcMatch,
    grpc_match,
    "gRPC"
);

/// gRPC routes are few and matched by service and method: weighed in full.
fn no_index(_: &[Route<GrpcMatch>]) -> crate::policy::route::PathIndex {
    crate::policy::route::PathIndex::default()
}

// === HTTP ===

/// A rule's retry, as the retry layer applies it.
fn http_retry(
    r: &api::http_route::Retry,
) -> Result<crate::retry::RetryPolicy, crate::retry::Error> {
    crate::retry::RetryPolicy::from_http_proto(r)
}

fn http_match(m: http_api::HttpRouteMatch) -> Result<HttpMatch, String> {
    let path = match m.path.and_then(|p| p.kind) {
        None => None,
        Some(http_api::path_match::Kind::Exact(p)) => {
            if !p.starts_with('/') {
                return Err(format!("exact path {p:?} does not start with '/'"));
            }
            Some(PathMatch::Exact(p))
        }
        Some(http_api::path_match::Kind::Prefix(p)) => {
            if !p.starts_with('/') {
                return Err(format!("path prefix {p:?} does not start with '/'"));
            }
            Some(PathMatch::Prefix(p))
        }
        Some(http_api::path_match::Kind::Regex(r)) => Some(PathMatch::Regex(
            Regex::new(&r).map_err(|e| format!("path regex {r:?}: {e}"))?,
        )),
    };
    let headers = m
        .headers
        .into_iter()
        .map(header_match)
        .collect::<Result<_, _>>()?;
    let query = m
        .query_params
        .into_iter()
        .map(|q| {
            let value = match q.value {
                Some(http_api::query_param_match::Value::Exact(v)) => {
                    ValueMatch::Exact(v.into_bytes())
                }
                Some(http_api::query_param_match::Value::Regex(r)) => ValueMatch::Regex(
                    Regex::new(&r)
                        .map_err(|e| format!("query param {:?} regex {r:?}: {e}", q.name))?,
                ),
                None => return Err(format!("query param {:?} has no value match", q.name)),
            };
            Ok(QueryMatch {
                name: q.name,
                value,
            })
        })
        .collect::<Result<_, String>>()?;
    let method = m.method.map(method).transpose()?;
    Ok(HttpMatch {
        path,
        headers,
        query,
        method,
    })
}

fn http_filter(f: api::http_route::Filter) -> Filter {
    use api::http_route::filter::Kind;
    match f.kind {
        Some(Kind::RequestHeaderModifier(m)) => header_modifier(m.add, m.set, m.remove)
            .map_or_else(Filter::Invalid, Filter::RequestHeaders),
        Some(Kind::ResponseHeaderModifier(m)) => header_modifier(m.add, m.set, m.remove)
            .map_or_else(Filter::Invalid, Filter::ResponseHeaders),
        Some(Kind::Redirect(r)) => redirect(r).unwrap_or_else(Filter::Invalid),
        Some(Kind::FailureInjector(f)) => match u16::try_from(f.status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
        {
            Some(status) => match ratio(f.ratio) {
                Ok(ratio) => Filter::Fail(FailureInjector {
                    response: InjectedResponse::Http(status),
                    message: f.message,
                    ratio,
                }),
                Err(e) => Filter::Invalid(e),
            },
            None => Filter::Invalid(format!(
                "failure injector status {} is not an HTTP status",
                f.status
            )),
        },
        None => Filter::Invalid("a filter with no kind (unknown to this proxy)".into()),
    }
}

// === gRPC ===

/// A rule's retry, as the retry layer applies it.
fn grpc_retry(
    r: &api::grpc_route::Retry,
) -> Result<crate::retry::RetryPolicy, crate::retry::Error> {
    crate::retry::RetryPolicy::from_grpc_proto(r)
}

fn grpc_match(m: grpc_api::GrpcRouteMatch) -> Result<GrpcMatch, String> {
    let (service, method) = m
        .rpc
        .map(|r| {
            (
                Some(r.service).filter(|s| !s.is_empty()),
                Some(r.method).filter(|s| !s.is_empty()),
            )
        })
        .unwrap_or((None, None));
    Ok(GrpcMatch {
        service,
        method,
        headers: m
            .headers
            .into_iter()
            .map(header_match)
            .collect::<Result<_, _>>()?,
    })
}

fn grpc_filter(f: api::grpc_route::Filter) -> Filter {
    use api::grpc_route::filter::Kind;
    match f.kind {
        Some(Kind::RequestHeaderModifier(m)) => header_modifier(m.add, m.set, m.remove)
            .map_or_else(Filter::Invalid, Filter::RequestHeaders),
        Some(Kind::FailureInjector(f)) => match ratio(f.ratio) {
            Ok(ratio) if f.code <= 16 => Filter::Fail(FailureInjector {
                response: InjectedResponse::Grpc(f.code),
                message: f.message,
                ratio,
            }),
            Ok(_) => Filter::Invalid(format!(
                "failure injector code {} is not a gRPC status",
                f.code
            )),
            Err(e) => Filter::Invalid(e),
        },
        None => Filter::Invalid("a filter with no kind (unknown to this proxy)".into()),
    }
}
