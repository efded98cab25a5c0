//! OutboundPolicies: the index's [`index::Outbound`] snapshot of a target as `OutboundPolicy`,
//! following the proto comments. The attached route kind decides the protocol, as in Linkerd's
//! policy controller (`grpc/src/outbound.rs` `to_proto`): GRPCRoutes make it `Grpc`, HTTPRoutes
//! go into both `http1` and `http2` of `Detect`, TLSRoutes make it `Tls` and TCPRoutes `Opaque`
//! (their builders are in [`connection`]). A service without routes gets `Detect` with the
//! default route (one `/` route to the service itself, metadata `default`/`http`), as before
//! routes existed; opaque ports get `Opaque` with their TCPRoutes, else the default opaque
//! route. Failure accrual is sent only when the Service's annotations ask for it (Linkerd).
//! An address outside the mesh answered by an `EgressNetwork` (for the client's namespace, from
//! the `source_workload` `NS:NAME`) gets the same protocol choice with the network's routes,
//! each followed by a default route that forwards to the original destination (`Allow`) or
//! refuses (`Deny`: 403, gRPC `PERMISSION_DENIED`, or a `Forbidden` connection).

mod connection;
mod egress;

use super::meta::{default_meta, duration, match_all, service_meta, DETECT_TIMEOUT};
use super::stream::{stream, Stream};
use crate::index::routes::{
    OutBackend, OutFilter, OutRoute, Policy, RetryConditions, RetryPolicy, RulePolicy,
};
use crate::index::{self, Egress, Index};
use crate::resource::policy::{AccrualKind, FailureAccrual, Timeouts};
use crate::resource::route::{
    FaultInjection, GrpcMatch, HeaderMatch, HeaderModifier, HttpMatch, Matches, PathMatch,
    PathModifier, Redirect, RouteProtocol, ValueMatch,
};
use linkerd2_proxy_api::meta::{self, Metadata};
use linkerd2_proxy_api::outbound::{
    self as out, backend, outbound_policies_server::OutboundPolicies, proxy_protocol, traffic_spec,
};
use linkerd2_proxy_api::{grpc_route as grpc, http_route as http, http_types};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

const QUEUE_CAPACITY: u32 = 100;
const FAILFAST_TIMEOUT: Duration = Duration::from_secs(3);
/// Linkerd's peak-EWMA defaults.
const EWMA_DEFAULT_RTT: Duration = Duration::from_millis(30);
const EWMA_DECAY: Duration = Duration::from_secs(10);
/// Request bodies larger than this are never retried (Linkerd's bound).
pub const RETRY_MAX_REQUEST_BYTES: u32 = 64 * 1024;
/// Backoff between retries (Linkerd's): 25 ms doubling up to 250 ms, full jitter.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(25);
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(250);
const RETRY_BACKOFF_JITTER: f32 = 1.0;
/// gRPC status of requests to a backend that does not exist: INTERNAL (HTTP gets 500).
const MISSING_BACKEND_GRPC_CODE: u32 = 13;

pub struct OutboundService {
    index: Arc<Index>,
    shutdown: watch::Receiver<bool>,
}

impl OutboundService {
    pub fn new(index: Arc<Index>, shutdown: watch::Receiver<bool>) -> Self {
        Self { index, shutdown }
    }

    fn subscribe(
        &self,
        spec: out::TrafficSpec,
    ) -> Result<(String, watch::Receiver<index::Outbound>), Status> {
        let target = match spec.target {
            Some(traffic_spec::Target::Addr(a)) => {
                let addr = SocketAddr::try_from(a)
                    .map_err(|_| Status::invalid_argument("invalid target address"))?;
                index::Target::Addr(addr)
            }
            Some(traffic_spec::Target::Authority(a)) => {
                index::parse_target(&a, self.index.cluster_domain()).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "{a:?} is not a NAME.NS.svc.{}[:PORT] authority",
                        self.index.cluster_domain()
                    ))
                })?
            }
            None => return Err(Status::invalid_argument("target is required")),
        };
        let label = format!("{target:?}");
        let rx = self
            .index
            .outbound_from(&target, client_namespace(&spec.source_workload));
        if *rx.borrow() == index::Outbound::NotFound {
            return Err(not_found(&label));
        }
        Ok((label, rx))
    }
}

/// The namespace of a `source_workload` (`NS:NAME`); `None` when absent or malformed (the
/// client then gets no egress answers).
fn client_namespace(source_workload: &str) -> Option<&str> {
    let (ns, name) = source_workload.split_once(':')?;
    (crate::resource::dns_label(ns).is_ok() && !name.is_empty()).then_some(ns)
}

fn not_found(target: &str) -> Status {
    Status::not_found(format!("no service or endpoint for {target}"))
}

#[tonic::async_trait]
impl OutboundPolicies for OutboundService {
    type WatchStream = Stream<out::OutboundPolicy>;

    async fn get(
        &self,
        req: Request<out::TrafficSpec>,
    ) -> Result<Response<out::OutboundPolicy>, Status> {
        let (label, rx) = self.subscribe(req.into_inner())?;
        let snapshot = rx.borrow().clone();
        outbound_policy(&snapshot)
            .map(Response::new)
            .ok_or_else(|| not_found(&label))
    }

    async fn watch(
        &self,
        req: Request<out::TrafficSpec>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (label, rx) = self.subscribe(req.into_inner())?;
        Ok(Response::new(stream(rx, self.shutdown.clone(), move |s| {
            vec![outbound_policy(s).ok_or_else(|| not_found(&label))]
        })))
    }
}

pub(crate) fn outbound_policy(s: &index::Outbound) -> Option<out::OutboundPolicy> {
    let (metadata, parent, opaque, policy) = match s {
        index::Outbound::NotFound => return None,
        index::Outbound::Service {
            service,
            authority,
            port,
            opaque,
            policy,
        } => {
            let metadata = match service {
                Some((ns, name)) => service_meta(ns, name, *port),
                None => default_meta("unknown"),
            };
            let backend = balancer(metadata.clone(), authority);
            (metadata, backend, *opaque, policy.clone())
        }
        index::Outbound::Endpoint(ep) => {
            let metadata = default_meta("endpoint");
            let kind = backend::Kind::Forward(super::destination::weighted_addr(ep));
            let backend = with_queue(metadata.clone(), kind);
            (metadata, backend, ep.opaque, Arc::default())
        }
        index::Outbound::Egress(e) => return Some(egress::policy(e)),
    };
    let opaque_routes = proxy_protocol::Opaque {
        routes: vec![connection::opaque::forward(default_meta("opaque"), &parent)],
    };
    let failure_accrual = policy.failure_accrual.as_ref().map(failure_accrual);
    let kind = match policy.protocol {
        // TCPRoutes also apply to an opaque port (the routes of other kinds need detection).
        RouteProtocol::Tcp => tcp(&policy.routes, None),
        _ if opaque => proxy_protocol::Kind::Opaque(opaque_routes),
        RouteProtocol::Tls => tls(&policy.routes, None),
        RouteProtocol::Grpc => grpc(&policy.routes, failure_accrual, None),
        RouteProtocol::Http => {
            let routes = http_routes(&policy, &parent);
            proxy_protocol::Kind::Detect(proxy_protocol::Detect {
                timeout: duration(DETECT_TIMEOUT),
                opaque: Some(opaque_routes),
                http1: Some(proxy_protocol::Http1 {
                    routes: routes.clone(),
                    failure_accrual,
                }),
                http2: Some(proxy_protocol::Http2 {
                    routes,
                    failure_accrual,
                }),
            })
        }
    };
    Some(out::OutboundPolicy {
        protocol: Some(out::ProxyProtocol { kind: Some(kind) }),
        metadata: Some(metadata),
    })
}

/// The EgressNetwork answering for an address and its original destination (the backend of
/// the network's routes and of its default route); `None` for a Service.
type EgressOf<'a> = Option<(&'a Egress, &'a out::Backend)>;

/// `Grpc` with the GRPCRoutes, then an EgressNetwork's default route.
fn grpc(
    routes: &[OutRoute],
    failure_accrual: Option<out::FailureAccrual>,
    egress: EgressOf,
) -> proxy_protocol::Kind {
    let forward = egress.map(|(_, forward)| forward);
    let routes = routes.iter().map(|r| grpc_route(r, forward));
    let last = egress.map(|(e, forward)| egress::default_grpc_route(e, forward));
    proxy_protocol::Kind::Grpc(proxy_protocol::Grpc {
        routes: routes.chain(last).collect(),
        failure_accrual,
    })
}

/// `Tls` with the TLSRoutes, then an EgressNetwork's default route. A Service's TLSRoutes get
/// none: a connection whose SNI no route matches fails, as in Linkerd (`outbound/tls.rs`).
fn tls(routes: &[OutRoute], egress: EgressOf) -> proxy_protocol::Kind {
    let forward = egress.map(|(_, forward)| forward);
    let routes = routes.iter().map(|r| connection::tls_route(r, forward));
    let last = egress.map(|(e, forward)| {
        connection::tls::egress_default(e.traffic_policy, forward, egress::TLS_DEFAULT)
    });
    proxy_protocol::Kind::Tls(proxy_protocol::Tls {
        routes: routes.chain(last).collect(),
    })
}

/// `Opaque` with the TCPRoutes, then an EgressNetwork's default route (Linkerd's
/// `outbound/tcp.rs`). The proxy uses the first opaque route: the oldest TCPRoute takes every
/// connection.
fn tcp(routes: &[OutRoute], egress: EgressOf) -> proxy_protocol::Kind {
    let forward = egress.map(|(_, forward)| forward);
    let routes = routes.iter().map(|r| connection::opaque::of(r, forward));
    let last = egress.map(|(e, forward)| {
        connection::opaque::egress_default(e.traffic_policy, forward, egress::TCP_DEFAULT)
    });
    proxy_protocol::Kind::Opaque(proxy_protocol::Opaque {
        routes: routes.chain(last).collect(),
    })
}

/// A load-balanced backend discovered with `Destination.Get` of `authority`.
fn balancer(metadata: Metadata, authority: &str) -> out::Backend {
    let balancer = backend::BalanceP2c {
        discovery: Some(backend::EndpointDiscovery {
            kind: Some(backend::endpoint_discovery::Kind::Dst(
                backend::endpoint_discovery::DestinationGet {
                    path: authority.to_string(),
                },
            )),
        }),
        load: Some(backend::balance_p2c::Load::PeakEwma(
            backend::balance_p2c::PeakEwma {
                default_rtt: duration(EWMA_DEFAULT_RTT),
                decay: duration(EWMA_DECAY),
            },
        )),
    };
    with_queue(metadata, backend::Kind::Balancer(balancer))
}

fn with_queue(metadata: Metadata, kind: backend::Kind) -> out::Backend {
    out::Backend {
        metadata: Some(metadata),
        queue: Some(out::Queue {
            capacity: QUEUE_CAPACITY,
            failfast_timeout: duration(FAILFAST_TIMEOUT),
        }),
        kind: Some(kind),
    }
}

fn failure_accrual(fa: &FailureAccrual) -> out::FailureAccrual {
    use out::failure_accrual::{ConsecutiveFailures, Kind, Unified};
    let backoff = Some(out::ExponentialBackoff {
        min_backoff: duration(fa.min_penalty),
        max_backoff: duration(fa.max_penalty),
        jitter_ratio: fa.jitter,
        respect_retry_after_hint: false,
    });
    let kind = match &fa.kind {
        AccrualKind::Consecutive { max_failures } => {
            Kind::ConsecutiveFailures(ConsecutiveFailures {
                max_failures: *max_failures,
                backoff,
            })
        }
        AccrualKind::Unified {
            success_rate_threshold,
            decay,
            min_requests,
            max_failures,
        } => Kind::Unified(Unified {
            success_rate_threshold: *success_rate_threshold,
            decay: duration(*decay),
            min_requests: *min_requests,
            max_consecutive_failures: *max_failures,
            backoff,
        }),
    };
    out::FailureAccrual {
        kind: Some(kind),
        ejection: (fa.min_ready_endpoints > 0).then_some(out::EjectionConfig {
            min_ready_endpoints: fa.min_ready_endpoints,
        }),
    }
}

/// `Resource` metadata of a route: the proxy labels route metrics with it.
fn route_meta(r: &OutRoute) -> Metadata {
    Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: r.kind.group().into(),
            kind: r.kind.kind().into(),
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            section: String::new(),
            port: 0,
        })),
    }
}

pub(super) fn host_match(h: &str) -> http::HostMatch {
    use http::host_match::{Match, Suffix};
    let m = match h.strip_prefix("*.") {
        Some(suffix) => Match::Suffix(Suffix {
            reverse_labels: suffix.rsplit('.').map(String::from).collect(),
        }),
        None => Match::Exact(h.to_string()),
    };
    http::HostMatch { r#match: Some(m) }
}

fn timeouts(t: &Timeouts) -> http::Timeouts {
    http::Timeouts {
        response: t.response.and_then(duration),
        request: t.request.and_then(duration),
        idle: t.idle.and_then(duration),
    }
}

fn backoff() -> out::ExponentialBackoff {
    out::ExponentialBackoff {
        min_backoff: duration(RETRY_BACKOFF_MIN),
        max_backoff: duration(RETRY_BACKOFF_MAX),
        jitter_ratio: RETRY_BACKOFF_JITTER,
        respect_retry_after_hint: false,
    }
}

fn http_retry(r: &RetryPolicy) -> out::http_route::Retry {
    use out::http_route::retry::{conditions::StatusRange, Conditions};
    let status_ranges = match &r.conditions {
        RetryConditions::Http(ranges) => ranges
            .iter()
            .map(|(start, end)| StatusRange {
                start: (*start).into(),
                end: (*end).into(),
            })
            .collect(),
        RetryConditions::Grpc(_) => Vec::new(),
    };
    out::http_route::Retry {
        max_retries: r.limit,
        max_request_bytes: RETRY_MAX_REQUEST_BYTES,
        conditions: Some(Conditions { status_ranges }),
        timeout: r.timeout.and_then(duration),
        backoff: Some(backoff()),
    }
}

fn grpc_retry(r: &RetryPolicy) -> out::grpc_route::Retry {
    let c = match &r.conditions {
        RetryConditions::Grpc(c) => *c,
        RetryConditions::Http(_) => Default::default(),
    };
    out::grpc_route::Retry {
        max_retries: r.limit,
        max_request_bytes: RETRY_MAX_REQUEST_BYTES,
        conditions: Some(out::grpc_route::retry::Conditions {
            cancelled: c.cancelled,
            deadine_exceeded: c.deadline_exceeded,
            resource_exhausted: c.resource_exhausted,
            internal: c.internal,
            unavailable: c.unavailable,
        }),
        timeout: r.timeout.and_then(duration),
        backoff: Some(backoff()),
    }
}

/// The HTTP routes of a service: its routes, or the default route to `parent`.
fn http_routes(policy: &Policy, parent: &out::Backend) -> Vec<out::HttpRoute> {
    if policy.routes.is_empty() {
        return vec![default_http_route(parent, &policy.default_rule)];
    }
    policy.routes.iter().map(|r| http_route(r, None)).collect()
}

/// The route of a service without routes: everything to the service itself, with the
/// Service's own timeouts and retry. Without annotations this is exactly the policy served
/// before routes existed, so the proxy's default path is unchanged.
#[allow(deprecated)] // `request_timeout`: servers still set it, to `timeouts.response`.
fn default_http_route(parent: &out::Backend, rule: &RulePolicy) -> out::HttpRoute {
    use out::http_route::{distribution, Distribution, RouteBackend, Rule};
    out::HttpRoute {
        metadata: Some(default_meta("http")),
        hosts: Vec::new(),
        rules: vec![Rule {
            matches: vec![match_all()],
            backends: Some(Distribution {
                kind: Some(distribution::Kind::FirstAvailable(
                    distribution::FirstAvailable {
                        backends: vec![RouteBackend {
                            backend: Some(parent.clone()),
                            ..Default::default()
                        }],
                    },
                )),
            }),
            request_timeout: rule.timeouts.response.and_then(duration),
            timeouts: (rule.timeouts != Timeouts::default()).then(|| timeouts(&rule.timeouts)),
            retry: rule.retry.as_ref().map(http_retry),
            ..Default::default()
        }],
    }
}

/// An HTTPRoute. `forward`: the backend of rules without backends (an EgressNetwork's route,
/// whose rules go to the original destination).
#[allow(deprecated)] // `request_timeout` of rules and backends, see the proto.
fn http_route(r: &OutRoute, forward: Option<&out::Backend>) -> out::HttpRoute {
    use out::http_route::{distribution, Distribution, Rule, WeightedRouteBackend};
    let rules = r
        .rules
        .iter()
        .map(|rule| {
            let Matches::Http(matches) = &rule.matches else {
                return Rule::default();
            };
            let mut backends: Vec<_> = rule
                .backends
                .iter()
                .map(|b| WeightedRouteBackend {
                    weight: b.weight,
                    backend: Some(out::http_route::RouteBackend {
                        backend: Some(route_backend(b)),
                        filters: backend_http_filters(b),
                        request_timeout: rule.backend_request_timeout.and_then(duration),
                    }),
                })
                .collect();
            if let Some(forward) = forward.filter(|_| backends.is_empty()) {
                backends.push(WeightedRouteBackend {
                    weight: 1,
                    backend: Some(out::http_route::RouteBackend {
                        backend: Some(forward.clone()),
                        filters: Vec::new(),
                        request_timeout: rule.backend_request_timeout.and_then(duration),
                    }),
                });
            }
            Rule {
                matches: matches.iter().map(http_match).collect(),
                filters: rule.filters.iter().map(http_filter).collect(),
                backends: Some(Distribution {
                    kind: Some(distribution::Kind::RandomAvailable(
                        distribution::RandomAvailable { backends },
                    )),
                }),
                request_timeout: rule.policy.timeouts.response.and_then(duration),
                timeouts: Some(timeouts(&rule.policy.timeouts)),
                retry: rule.policy.retry.as_ref().map(http_retry),
                allow_l5d_request_headers: false,
            }
        })
        .collect();
    out::HttpRoute {
        metadata: Some(route_meta(r)),
        hosts: r.hostnames.iter().map(|h| host_match(h)).collect(),
        rules,
    }
}

/// A GRPCRoute. `forward`: the backend of rules without backends (an EgressNetwork's route,
/// whose rules go to the original destination).
#[allow(deprecated)] // `request_timeout` of rules and backends, see the proto.
fn grpc_route(r: &OutRoute, forward: Option<&out::Backend>) -> out::GrpcRoute {
    use out::grpc_route::{distribution, Distribution, Rule, WeightedRouteBackend};
    let rules = r
        .rules
        .iter()
        .map(|rule| {
            let Matches::Grpc(matches) = &rule.matches else {
                return Rule::default();
            };
            let mut backends: Vec<_> = rule
                .backends
                .iter()
                .map(|b| {
                    let mut filters: Vec<_> = b.filters.iter().filter_map(grpc_filter).collect();
                    if let Some(msg) = &b.error {
                        filters.insert(0, grpc_fail(MISSING_BACKEND_GRPC_CODE, msg, Some((1, 1))));
                    }
                    WeightedRouteBackend {
                        weight: b.weight,
                        backend: Some(out::grpc_route::RouteBackend {
                            backend: Some(route_backend(b)),
                            filters,
                            request_timeout: rule.backend_request_timeout.and_then(duration),
                        }),
                    }
                })
                .collect();
            if let Some(forward) = forward.filter(|_| backends.is_empty()) {
                backends.push(WeightedRouteBackend {
                    weight: 1,
                    backend: Some(out::grpc_route::RouteBackend {
                        backend: Some(forward.clone()),
                        filters: Vec::new(),
                        request_timeout: rule.backend_request_timeout.and_then(duration),
                    }),
                });
            }
            Rule {
                matches: matches.iter().map(grpc_match).collect(),
                filters: rule.filters.iter().filter_map(grpc_filter).collect(),
                backends: Some(Distribution {
                    kind: Some(distribution::Kind::RandomAvailable(
                        distribution::RandomAvailable { backends },
                    )),
                }),
                request_timeout: rule.policy.timeouts.response.and_then(duration),
                timeouts: Some(timeouts(&rule.policy.timeouts)),
                retry: rule.policy.retry.as_ref().map(grpc_retry),
                allow_l5d_request_headers: false,
            }
        })
        .collect();
    out::GrpcRoute {
        metadata: Some(route_meta(r)),
        hosts: r.hostnames.iter().map(|h| host_match(h)).collect(),
        rules,
    }
}

/// A route's backend: the Service balanced by discovery. A backend that does not resolve has
/// no `kind`, as Linkerd's controller sends it (Linkerd's proxy makes such a backend fail with
/// "has no dispatcher"); the failure filter in front of it fails its requests with the reason
/// first, and no proxy looks up a Service that does not exist.
fn route_backend(b: &OutBackend) -> out::Backend {
    let meta = service_meta(&b.namespace, &b.name, b.port);
    let mut backend = balancer(meta, &b.authority);
    if b.error.is_some() {
        backend.kind = None;
    }
    backend
}

fn backend_http_filters(b: &OutBackend) -> Vec<out::http_route::Filter> {
    let mut filters: Vec<_> = b.filters.iter().map(http_filter).collect();
    if let Some(msg) = &b.error {
        // Ratio 1/1: every request to a missing backend fails with 500, saying which (Linkerd).
        filters.insert(0, http_fail(500, msg, Some((1, 1))));
    }
    filters
}

fn http_fail(status: u32, message: &str, ratio: Option<(u32, u32)>) -> out::http_route::Filter {
    out::http_route::Filter {
        kind: Some(out::http_route::filter::Kind::FailureInjector(
            http::HttpFailureInjector {
                status,
                message: message.to_string(),
                ratio: ratio.map(|(numerator, denominator)| http::Ratio {
                    numerator,
                    denominator,
                }),
            },
        )),
    }
}

fn grpc_fail(code: u32, message: &str, ratio: Option<(u32, u32)>) -> out::grpc_route::Filter {
    out::grpc_route::Filter {
        kind: Some(out::grpc_route::filter::Kind::FailureInjector(
            grpc::GrpcFailureInjector {
                code,
                message: message.to_string(),
                ratio: ratio.map(|(numerator, denominator)| http::Ratio {
                    numerator,
                    denominator,
                }),
            },
        )),
    }
}

fn fault_message(f: &FaultInjection) -> String {
    if f.message.is_empty() {
        format!(
            "fault injected by FaultInjection {}/{}",
            f.namespace, f.name
        )
    } else {
        f.message.clone()
    }
}

fn headers(list: &[(String, String)]) -> Option<http_types::Headers> {
    (!list.is_empty()).then(|| http_types::Headers {
        headers: list
            .iter()
            .map(|(name, value)| http_types::headers::Header {
                name: name.clone(),
                value: value.clone().into_bytes(),
            })
            .collect(),
    })
}

fn request_headers(m: &HeaderModifier) -> http::RequestHeaderModifier {
    http::RequestHeaderModifier {
        add: headers(&m.add),
        set: headers(&m.set),
        remove: m.remove.clone(),
    }
}

fn redirect(r: &Redirect) -> http::RequestRedirect {
    use http_types::scheme::{Registered, Type};
    http::RequestRedirect {
        scheme: r.scheme.as_deref().map(|s| http_types::Scheme {
            r#type: Some(Type::Registered(if s == "https" {
                Registered::Https as i32
            } else {
                Registered::Http as i32
            })),
        }),
        host: r.hostname.clone().unwrap_or_default(),
        path: r.path.as_ref().map(|p| http::PathModifier {
            replace: Some(match p {
                PathModifier::Full(s) => http::path_modifier::Replace::Full(s.clone()),
                PathModifier::Prefix(s) => http::path_modifier::Replace::Prefix(s.clone()),
            }),
        }),
        port: r.port.map(u32::from).unwrap_or(0),
        status: r.status.map(u32::from).unwrap_or(0),
    }
}

fn http_filter(f: &OutFilter) -> out::http_route::Filter {
    use out::http_route::filter::Kind;
    let kind = match f {
        OutFilter::RequestHeaders(m) => Kind::RequestHeaderModifier(request_headers(m)),
        OutFilter::ResponseHeaders(m) => {
            Kind::ResponseHeaderModifier(http::ResponseHeaderModifier {
                add: headers(&m.add),
                set: headers(&m.set),
                remove: m.remove.clone(),
            })
        }
        OutFilter::Redirect(r) => Kind::Redirect(redirect(r)),
        OutFilter::Fault(fi) => return http_fail(fi.status.into(), &fault_message(fi), fi.ratio),
        OutFilter::Unresolved(msg) => return http_fail(500, msg, Some((1, 1))),
    };
    out::http_route::Filter { kind: Some(kind) }
}

/// gRPC routes carry only header modification and failure injection (validation rejects the
/// other filters on a GRPCRoute).
fn grpc_filter(f: &OutFilter) -> Option<out::grpc_route::Filter> {
    use out::grpc_route::filter::Kind;
    match f {
        OutFilter::RequestHeaders(m) => Some(out::grpc_route::Filter {
            kind: Some(Kind::RequestHeaderModifier(request_headers(m))),
        }),
        OutFilter::Fault(fi) => Some(grpc_fail(fi.grpc_code, &fault_message(fi), fi.ratio)),
        OutFilter::Unresolved(msg) => Some(grpc_fail(MISSING_BACKEND_GRPC_CODE, msg, Some((1, 1)))),
        OutFilter::ResponseHeaders(_) | OutFilter::Redirect(_) => None,
    }
}

fn header_match(h: &HeaderMatch) -> http::HeaderMatch {
    use http::header_match::Value;
    http::HeaderMatch {
        name: h.name.clone(),
        value: Some(match &h.value {
            ValueMatch::Exact(v) => Value::Exact(v.clone().into_bytes()),
            ValueMatch::Regex(r) => Value::Regex(r.clone()),
        }),
    }
}

pub(super) fn http_match(m: &HttpMatch) -> http::HttpRouteMatch {
    use http::{path_match::Kind, query_param_match::Value};
    http::HttpRouteMatch {
        path: Some(http::PathMatch {
            kind: Some(match &m.path {
                PathMatch::Exact(p) => Kind::Exact(p.clone()),
                PathMatch::Prefix(p) => Kind::Prefix(p.clone()),
                PathMatch::Regex(r) => Kind::Regex(r.clone()),
            }),
        }),
        headers: m.headers.iter().map(header_match).collect(),
        query_params: m
            .query_params
            .iter()
            .map(|q| http::QueryParamMatch {
                name: q.name.clone(),
                value: Some(match &q.value {
                    ValueMatch::Exact(v) => Value::Exact(v.clone()),
                    ValueMatch::Regex(r) => Value::Regex(r.clone()),
                }),
            })
            .collect(),
        method: m
            .method
            .as_deref()
            .and_then(|s| ::http::Method::from_bytes(s.as_bytes()).ok())
            .map(http_types::HttpMethod::from),
    }
}

pub(super) fn grpc_match(m: &GrpcMatch) -> grpc::GrpcRouteMatch {
    grpc::GrpcRouteMatch {
        rpc: (m.service.is_some() || m.method.is_some()).then(|| grpc::GrpcRpcMatch {
            service: m.service.clone().unwrap_or_default(),
            method: m.method.clone().unwrap_or_default(),
        }),
        headers: m.headers.iter().map(header_match).collect(),
    }
}

#[cfg(test)]
#[path = "outbound_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "outbound_egress_tests.rs"]
mod egress_tests;
