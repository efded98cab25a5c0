//! Conversion: a full policy, and every kind of bad part failing only where it belongs.
#![allow(deprecated)] // the proto's deprecated `request_timeout` fields must be filled

use super::*;
use linkerd2_proxy_api::{
    http_route as hr, meta as m,
    outbound::{backend, http_route as ohr},
    tls_route as tls_api,
};

fn resource(kind: &str, name: &str) -> Option<m::Metadata> {
    Some(m::Metadata {
        kind: Some(m::metadata::Kind::Resource(m::Resource {
            group: "gateway.networking.k8s.io".into(),
            kind: kind.into(),
            name: name.into(),
            namespace: "default".into(),
            section: String::new(),
            port: 8080,
        })),
    })
}

fn pd(ms: u64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration::try_from(Duration::from_millis(ms)).unwrap())
}

fn balancer(name: &str) -> api::Backend {
    api::Backend {
        metadata: resource("Service", name),
        queue: Some(api::Queue {
            capacity: 100,
            failfast_timeout: pd(3000),
        }),
        kind: Some(backend::Kind::Balancer(backend::BalanceP2c {
            discovery: Some(backend::EndpointDiscovery {
                kind: Some(backend::endpoint_discovery::Kind::Dst(
                    backend::endpoint_discovery::DestinationGet {
                        path: format!("{name}.default.svc.cluster.local:8080"),
                    },
                )),
            }),
            load: Some(backend::balance_p2c::Load::PeakEwma(
                backend::balance_p2c::PeakEwma {
                    default_rtt: pd(30),
                    decay: pd(10_000),
                },
            )),
        })),
    }
}

fn weighted(name: &str, weight: u32) -> ohr::WeightedRouteBackend {
    ohr::WeightedRouteBackend {
        backend: Some(ohr::RouteBackend {
            backend: Some(balancer(name)),
            filters: Vec::new(),
            request_timeout: pd(500),
        }),
        weight,
    }
}

fn rule(matches: Vec<hr::HttpRouteMatch>, filters: Vec<ohr::Filter>) -> ohr::Rule {
    ohr::Rule {
        matches,
        filters,
        backends: Some(ohr::Distribution {
            kind: Some(ohr::distribution::Kind::RandomAvailable(
                ohr::distribution::RandomAvailable {
                    backends: vec![weighted("web", 90), weighted("web-canary", 10)],
                },
            )),
        }),
        request_timeout: None,
        timeouts: Some(hr::Timeouts {
            request: pd(2000),
            response: None,
            idle: None,
        }),
        retry: Some(ohr::Retry {
            max_retries: 3,
            max_request_bytes: 65536,
            conditions: Some(ohr::retry::Conditions {
                status_ranges: vec![
                    ohr::retry::conditions::StatusRange {
                        start: 500,
                        end: 599,
                    },
                    ohr::retry::conditions::StatusRange { start: 429, end: 0 },
                ],
            }),
            timeout: pd(300),
            backoff: Some(api::ExponentialBackoff {
                min_backoff: pd(25),
                max_backoff: pd(250),
                jitter_ratio: 1.0,
                respect_retry_after_hint: false,
            }),
        }),
        allow_l5d_request_headers: false,
    }
}

fn http_policy(rules: Vec<ohr::Rule>) -> api::OutboundPolicy {
    let route = api::HttpRoute {
        metadata: resource("HTTPRoute", "web-route"),
        hosts: vec![hr::HostMatch {
            r#match: Some(hr::host_match::Match::Suffix(hr::host_match::Suffix {
                reverse_labels: vec!["com".into(), "example".into()],
            })),
        }],
        rules,
    };
    api::OutboundPolicy {
        metadata: resource("Service", "web"),
        protocol: Some(api::ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Detect(proxy_protocol::Detect {
                timeout: pd(10_000),
                opaque: None,
                http1: Some(proxy_protocol::Http1 {
                    routes: vec![route.clone()],
                    failure_accrual: Some(api::FailureAccrual {
                        ejection: Some(api::EjectionConfig {
                            min_ready_endpoints: 1,
                        }),
                        kind: Some(api::failure_accrual::Kind::ConsecutiveFailures(
                            api::failure_accrual::ConsecutiveFailures {
                                max_failures: 7,
                                backoff: None,
                            },
                        )),
                    }),
                }),
                http2: Some(proxy_protocol::Http2 {
                    routes: vec![route],
                    failure_accrual: None,
                }),
            })),
        }),
    }
}

fn header_match(name: &str, value: &str) -> hr::HttpRouteMatch {
    hr::HttpRouteMatch {
        headers: vec![hr::HeaderMatch {
            name: name.into(),
            value: Some(hr::header_match::Value::Exact(value.as_bytes().to_vec())),
        }],
        ..Default::default()
    }
}

fn http1_routes(p: &Policy) -> &HttpRoutes {
    match &p.protocol {
        Protocol::Detect { http1, .. } => http1,
        other => panic!("expected detect, got {other:?}"),
    }
}

#[test]
fn a_full_http_policy_converts() {
    let p = policy(http_policy(vec![rule(
        vec![header_match("x-canary", "1")],
        vec![],
    )]))
    .unwrap();
    assert_eq!(p.parent.kind, "Service");
    assert_eq!(p.parent.port, 8080);
    let routes = http1_routes(&p);
    assert_eq!(
        routes.failure_accrual,
        crate::balance::AccrualConfig {
            policy: crate::balance::Accrual::ConsecutiveFailures {
                max_failures: 7,
                backoff: crate::balance::config::DEFAULT_ACCRUAL_BACKOFF,
            },
            min_ready_endpoints: 1,
        }
    );
    let route = &routes.routes[0];
    assert_eq!(route.meta.name, "web-route");
    assert_eq!(route.hosts, vec![HostMatch::Suffix(".example.com".into())]);
    let rule = &route.rules[0];
    assert_eq!(rule.matches.len(), 1);
    assert_eq!(rule.timeouts.request, Some(Duration::from_secs(2)));
    let retry = rule.retry.as_ref().unwrap();
    assert_eq!(retry.max_retries, 3);
    assert_eq!(retry.timeout, Some(Duration::from_millis(300)));
    assert_eq!(
        retry.conditions,
        crate::retry::Conditions::Http(vec![500..=599, 429..=429])
    );
    let Distribution::RandomAvailable {
        backends,
        cumulative,
    } = &rule.distribution
    else {
        panic!("expected a weighted distribution");
    };
    assert_eq!(cumulative, &vec![90, 100]);
    assert_eq!(backends[1].backend.meta.name, "web-canary");
    assert_eq!(
        backends[0].request_timeout,
        Some(Duration::from_millis(500))
    );
    match &backends[0].backend.kind {
        BackendKind::Balancer { path, load } => {
            assert_eq!(path, "web.default.svc.cluster.local:8080");
            assert_eq!(*load, crate::balance::LoadConfig::default());
        }
        other => panic!("expected a balancer, got {other:?}"),
    }
    assert_eq!(backends[0].backend.queue.capacity, 100);
}

#[test]
fn weighted_index_follows_the_cumulative_weights() {
    let c = [90, 90, 100];
    assert_eq!(Distribution::weighted_index(&c, 0), Some(0));
    assert_eq!(Distribution::weighted_index(&c, 89), Some(0));
    // The zero-weight backend in the middle is never chosen.
    assert_eq!(Distribution::weighted_index(&c, 90), Some(2));
    assert_eq!(Distribution::weighted_index(&c, 99), Some(2));
    assert_eq!(Distribution::weighted_index(&[0, 0], 0), None);
}

#[test]
fn an_invalid_regex_drops_its_match_and_a_rule_left_without_matches_never_matches() {
    let bad = hr::HttpRouteMatch {
        path: Some(hr::PathMatch {
            kind: Some(hr::path_match::Kind::Regex("(unclosed".into())),
        }),
        ..Default::default()
    };
    let p = policy(http_policy(vec![
        rule(vec![bad.clone(), header_match("x-a", "1")], vec![]),
        rule(vec![bad], vec![]),
    ]))
    .unwrap();
    let rules = &http1_routes(&p).routes[0].rules;
    assert_eq!(rules[0].matches.len(), 1);
    assert_eq!(rules[1].matches.len(), 1);
    let head = http::Request::get("/").body(()).unwrap();
    assert!(
        crate::policy::route::find_http(
            &[Route {
                meta: Arc::new(Meta::default()),
                hosts: vec![],
                rules: vec![rules[1].clone()],
            }],
            &crate::policy::route::RequestHead::of(&head)
        )
        .is_none(),
        "a rule whose only match was invalid must not match everything"
    );
}

#[test]
fn bad_filters_become_invalid_filters_with_the_reason() {
    let bad_header = ohr::Filter {
        kind: Some(ohr::filter::Kind::RequestHeaderModifier(
            hr::RequestHeaderModifier {
                add: Some(linkerd2_proxy_api::http_types::Headers {
                    headers: vec![linkerd2_proxy_api::http_types::headers::Header {
                        name: "bad header".into(),
                        value: b"v".to_vec(),
                    }],
                }),
                set: None,
                remove: vec![],
            },
        )),
    };
    let bad_status = ohr::Filter {
        kind: Some(ohr::filter::Kind::FailureInjector(
            hr::HttpFailureInjector {
                status: 70_000,
                message: String::new(),
                ratio: None,
            },
        )),
    };
    let zero_ratio = ohr::Filter {
        kind: Some(ohr::filter::Kind::FailureInjector(
            hr::HttpFailureInjector {
                status: 503,
                message: "boom".into(),
                ratio: Some(hr::Ratio {
                    numerator: 1,
                    denominator: 0,
                }),
            },
        )),
    };
    let redirect_200 = ohr::Filter {
        kind: Some(ohr::filter::Kind::Redirect(hr::RequestRedirect {
            status: 200,
            ..Default::default()
        })),
    };
    let unknown = ohr::Filter { kind: None };
    let p = policy(http_policy(vec![rule(
        vec![],
        vec![bad_header, bad_status, zero_ratio, redirect_200, unknown],
    )]))
    .unwrap();
    let filters = &http1_routes(&p).routes[0].rules[0].filters;
    let reasons: Vec<&str> = filters
        .iter()
        .map(|f| match f {
            Filter::Invalid(r) => r.as_str(),
            other => panic!("expected invalid, got {other:?}"),
        })
        .collect();
    assert!(reasons[0].contains("invalid header name"), "{}", reasons[0]);
    assert!(reasons[1].contains("70000"), "{}", reasons[1]);
    assert!(reasons[2].contains("zero denominator"), "{}", reasons[2]);
    assert!(reasons[3].contains("not a 3xx"), "{}", reasons[3]);
    assert!(reasons[4].contains("no kind"), "{}", reasons[4]);
}

#[test]
fn good_filters_convert() {
    let inject = ohr::Filter {
        kind: Some(ohr::filter::Kind::FailureInjector(
            hr::HttpFailureInjector {
                status: 503,
                message: "chaos".into(),
                ratio: Some(hr::Ratio {
                    numerator: 1,
                    denominator: 10,
                }),
            },
        )),
    };
    let redirect = ohr::Filter {
        kind: Some(ohr::filter::Kind::Redirect(hr::RequestRedirect {
            host: "new.example.com".into(),
            path: Some(hr::PathModifier {
                replace: Some(hr::path_modifier::Replace::Prefix("/v2".into())),
            }),
            ..Default::default()
        })),
    };
    let p = policy(http_policy(vec![rule(vec![], vec![inject, redirect])])).unwrap();
    let filters = &http1_routes(&p).routes[0].rules[0].filters;
    match &filters[0] {
        Filter::Fail(f) => {
            assert_eq!(
                f.response,
                InjectedResponse::Http(StatusCode::SERVICE_UNAVAILABLE)
            );
            assert_eq!(
                f.ratio,
                Ratio {
                    numerator: 1,
                    denominator: 10
                }
            );
        }
        other => panic!("{other:?}"),
    }
    match &filters[1] {
        Filter::Redirect(r) => {
            assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
            assert_eq!(r.host.as_deref(), Some("new.example.com"));
            assert!(matches!(&r.path, Some(PathModifier::Prefix(p)) if p == "/v2"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_backend_without_discovery_or_kind_is_invalid_not_dropped() {
    let mut b = balancer("web");
    b.kind = Some(backend::Kind::Balancer(backend::BalanceP2c {
        discovery: None,
        load: None,
    }));
    assert!(matches!(&backend(b).kind, BackendKind::Invalid(r) if r.contains("discovery path")));
    let mut b = balancer("web");
    b.kind = None;
    assert!(matches!(&backend(b).kind, BackendKind::Invalid(r) if r.contains("no kind")));
    let mut b = balancer("web");
    b.queue = None;
    assert_eq!(backend(b).queue, crate::balance::QueueConfig::default());
}

#[test]
fn a_bad_timeout_fails_the_rule_instead_of_vanishing() {
    let mut r = rule(vec![], vec![]);
    r.timeouts = Some(hr::Timeouts {
        request: Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        }),
        response: None,
        idle: None,
    });
    let p = policy(http_policy(vec![r])).unwrap();
    let rule = &http1_routes(&p).routes[0].rules[0];
    assert!(
        matches!(rule.filters.last(), Some(Filter::Invalid(r)) if r.contains("timeouts.request"))
    );
}

#[test]
fn a_policy_without_protocol_is_refused() {
    let p = api::OutboundPolicy {
        metadata: None,
        protocol: None,
    };
    assert_eq!(policy(p).unwrap_err(), Error::NoProtocol);
}

#[test]
fn grpc_retry_conditions_default_to_linkerds() {
    let rule = api::grpc_route::Rule {
        matches: vec![],
        filters: vec![],
        backends: None,
        request_timeout: None,
        timeouts: None,
        retry: Some(api::grpc_route::Retry {
            max_retries: 2,
            max_request_bytes: 0,
            conditions: None,
            timeout: None,
            backoff: None,
        }),
        allow_l5d_request_headers: false,
    };
    let p = policy(api::OutboundPolicy {
        metadata: None,
        protocol: Some(api::ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Grpc(proxy_protocol::Grpc {
                routes: vec![api::GrpcRoute {
                    metadata: resource("GRPCRoute", "g"),
                    hosts: vec![],
                    rules: vec![rule],
                }],
                failure_accrual: None,
            })),
        }),
    })
    .unwrap();
    let Protocol::Grpc(g) = &p.protocol else {
        panic!("expected gRPC")
    };
    let retry = g.routes[0].rules[0].retry.as_ref().unwrap();
    let crate::retry::Conditions::Grpc(codes) = &retry.conditions else {
        panic!("expected gRPC conditions")
    };
    assert!(codes.contains(14) && codes.contains(4));
    assert!(!codes.contains(2));
    assert!(matches!(
        g.routes[0].rules[0].distribution,
        Distribution::Empty
    ));
    assert_eq!(p.parent.kind, "default");
}

#[test]
fn opaque_and_tls_routes_keep_their_backends_and_forbidden_filters() {
    use api::opaque_route as or;
    let opaque = api::OutboundPolicy {
        metadata: resource("Service", "db"),
        protocol: Some(api::ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Opaque(proxy_protocol::Opaque {
                routes: vec![api::OpaqueRoute {
                    metadata: resource("TCPRoute", "db"),
                    rules: vec![or::Rule {
                        backends: Some(or::Distribution {
                            kind: Some(or::distribution::Kind::RandomAvailable(
                                or::distribution::RandomAvailable {
                                    backends: vec![or::WeightedRouteBackend {
                                        backend: Some(or::RouteBackend {
                                            backend: Some(balancer("db")),
                                            filters: vec![],
                                        }),
                                        weight: 3,
                                    }],
                                },
                            )),
                        }),
                        filters: vec![or::Filter {
                            kind: Some(or::filter::Kind::Forbidden(
                                linkerd2_proxy_api::opaque_route::Forbidden {},
                            )),
                        }],
                    }],
                }],
            })),
        }),
    };
    let p = policy(opaque).unwrap();
    let Protocol::Opaque(o) = &p.protocol else {
        panic!("{:?}", p.protocol);
    };
    let route = &o.routes[0];
    let rule = &route.rules[0];
    assert_eq!(route.meta.name, "db");
    assert!(route.snis.is_empty());
    assert!(matches!(&rule.filters[0], Filter::Forbidden));
    assert!(
        matches!(&rule.distribution, Distribution::RandomAvailable { cumulative, .. } if cumulative == &vec![3])
    );

    let tls = api::OutboundPolicy {
        metadata: None,
        protocol: Some(api::ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Tls(proxy_protocol::Tls {
                routes: vec![tls_route(None, vec![], Some(balancer("secure")))],
            })),
        }),
    };
    let p = policy(tls).unwrap();
    let Protocol::Tls(t) = &p.protocol else {
        panic!("TLS routes stay TLS routes: {:?}", p.protocol);
    };
    assert_eq!(
        t.routes[0].rules[0].distribution.backends()[0]
            .backend
            .meta
            .name,
        "secure"
    );
}

fn sni_exact(name: &str) -> tls_api::SniMatch {
    tls_api::SniMatch {
        r#match: Some(tls_api::sni_match::Match::Exact(name.into())),
    }
}

fn sni_suffix(reverse_labels: &[&str]) -> tls_api::SniMatch {
    tls_api::SniMatch {
        r#match: Some(tls_api::sni_match::Match::Suffix(
            tls_api::sni_match::Suffix {
                reverse_labels: reverse_labels.iter().map(|l| l.to_string()).collect(),
            },
        )),
    }
}

/// A TLS route with one rule: to `backend`, or (`None`) Empty and `Forbidden`, as the
/// EgressNetwork default under `Deny`.
fn tls_route(
    metadata: Option<m::Metadata>,
    snis: Vec<tls_api::SniMatch>,
    backend: Option<api::Backend>,
) -> api::TlsRoute {
    use api::tls_route as tr;
    let (kind, filters) = match backend {
        Some(b) => (
            tr::distribution::Kind::FirstAvailable(tr::distribution::FirstAvailable {
                backends: vec![tr::RouteBackend {
                    backend: Some(b),
                    filters: vec![],
                }],
            }),
            vec![],
        ),
        None => (
            tr::distribution::Kind::Empty(tr::distribution::Empty {}),
            vec![tr::Filter {
                kind: Some(tr::filter::Kind::Forbidden(
                    linkerd2_proxy_api::opaque_route::Forbidden {},
                )),
            }],
        ),
    };
    api::TlsRoute {
        metadata,
        snis,
        rules: vec![tr::Rule {
            backends: Some(tr::Distribution { kind: Some(kind) }),
            filters,
        }],
    }
}

/// The contract's answer for an EgressNetwork under `Deny` with TLSRoutes: exact and wildcard
/// SNIs become host matches (lower case, no trailing dot; `*.example.com` as `.example.com`),
/// in order, with the route metadata kept for the metric labels; the default route last, with
/// no SNI match, an Empty distribution and `Forbidden`.
#[test]
fn tls_routes_keep_their_sni_matches_metadata_and_order() {
    let p = policy(api::OutboundPolicy {
        metadata: resource("EgressNetwork", "internet"),
        protocol: Some(api::ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Tls(proxy_protocol::Tls {
                routes: vec![
                    tls_route(
                        resource("TLSRoute", "example-api"),
                        vec![
                            sni_exact("API.example.com."),
                            sni_suffix(&["com", "Example"]),
                        ],
                        Some(balancer("internet")),
                    ),
                    tls_route(
                        Some(m::Metadata {
                            kind: Some(m::metadata::Kind::Default("tls-egress-deny".into())),
                        }),
                        vec![],
                        None,
                    ),
                ],
            })),
        }),
    })
    .unwrap();
    assert_eq!(p.parent.kind, "EgressNetwork");
    let Protocol::Tls(t) = &p.protocol else {
        panic!("{:?}", p.protocol);
    };
    let [api, default] = &t.routes[..] else {
        panic!("{:?}", t.routes);
    };
    assert_eq!(api.meta.kind, "TLSRoute");
    assert_eq!(api.meta.name, "example-api");
    assert_eq!(
        api.snis,
        vec![
            HostMatch::Exact("api.example.com".into()),
            HostMatch::Suffix(".example.com".into())
        ]
    );
    assert_eq!(*default.meta, Meta::default_named("tls-egress-deny"));
    assert!(default.snis.is_empty());
    assert!(matches!(default.rules[0].distribution, Distribution::Empty));
    assert!(matches!(default.rules[0].filters[..], [Filter::Forbidden]));
}

/// An empty SNI match is dropped; a route whose SNI matches were all dropped matches no SNI
/// (not every one, which would let it take what its SNIs were meant to restrict).
#[test]
fn a_tls_route_whose_sni_matches_are_all_invalid_matches_nothing() {
    let empty = tls_api::SniMatch { r#match: None };
    let p = policy(api::OutboundPolicy {
        metadata: None,
        protocol: Some(api::ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Tls(proxy_protocol::Tls {
                routes: vec![
                    tls_route(None, vec![empty.clone(), sni_suffix(&[])], None),
                    tls_route(None, vec![empty, sni_exact("a.example")], None),
                ],
            })),
        }),
    })
    .unwrap();
    let Protocol::Tls(t) = &p.protocol else {
        panic!("{:?}", p.protocol);
    };
    assert_eq!(t.routes[0].snis, vec![HostMatch::Exact(String::new())]);
    assert_eq!(t.routes[1].snis, vec![HostMatch::Exact("a.example".into())]);
    for sni in [None, Some(""), Some("a.example"), Some("b.example")] {
        assert_ne!(route::find_sni(&t.routes, sni), Some(0), "{sni:?}");
    }
}
