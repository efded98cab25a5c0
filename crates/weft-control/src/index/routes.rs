//! The outbound policy of one service port: which routes attach to it (Service parent, port,
//! one route kind per parent port: [`in_force`]), their references resolved against the state
//! (backend Services, `FaultInjection` filters), the Linkerd annotations merged (route over
//! Service); and the status of every route, shaped like Gateway API
//! `status.parents[].conditions`. The same attachment rule decides both, so what the status
//! says is what the proxies get.

use super::lookup::{Key, Lookup};
use crate::resource::policy::{self, FailureAccrual, GrpcConditions, Retry, Timeouts};
use crate::resource::route::{
    BackendRef, FaultInjection, Filter, HeaderModifier, Matches, ParentRef, Redirect, Route,
    RouteKind, RouteProtocol, Rule,
};
use crate::resource::{Service, State};
use std::time::Duration;

/// Who writes the statuses (Gateway API `controllerName`).
pub const CONTROLLER_NAME: &str = "weft.dev/control-plane";

/// The outbound policy of a service port. Plain data: `grpc` maps it to protobuf.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// The routes in force, in precedence tie-break order (oldest first, then namespace/name).
    /// Empty: the default route (everything to the service itself).
    pub routes: Vec<OutRoute>,
    /// The protocol `routes` decide (as in Linkerd: GRPCRoutes make it gRPC, TLSRoutes TLS,
    /// TCPRoutes opaque); `Http` without routes.
    pub protocol: RouteProtocol,
    /// The Service's timeouts and retry: the default route's policy.
    pub default_rule: RulePolicy,
    pub failure_accrual: Option<FailureAccrual>,
}

/// Timeouts and retries of one rule (or of the default route).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RulePolicy {
    pub timeouts: Timeouts,
    pub retry: Option<RetryPolicy>,
}

/// A retry policy with its conditions resolved for the route's protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub limit: u32,
    /// Per-try timeout: `retry.linkerd.io/timeout`, else the rule's `timeouts.backendRequest`.
    pub timeout: Option<Duration>,
    pub conditions: RetryConditions,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryConditions {
    /// Inclusive status ranges.
    Http(Vec<(u16, u16)>),
    Grpc(GrpcConditions),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutRoute {
    pub kind: RouteKind,
    pub namespace: String,
    pub name: String,
    pub hostnames: Vec<String>,
    pub rules: Vec<OutRule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutRule {
    pub matches: Matches,
    pub filters: Vec<OutFilter>,
    /// Never empty: a rule without backendRefs goes to the parent Service itself.
    pub backends: Vec<OutBackend>,
    pub policy: RulePolicy,
    /// `timeouts.backendRequest` (also the retry's per-try timeout when it sets none).
    pub backend_request_timeout: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutFilter {
    RequestHeaders(HeaderModifier),
    ResponseHeaders(HeaderModifier),
    Redirect(Redirect),
    Fault(FaultInjection),
    /// An `ExtensionRef` whose resource does not exist: the Gateway API says its requests get an
    /// error (500) rather than the filter being skipped. The message says which.
    Unresolved(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutBackend {
    pub namespace: String,
    pub name: String,
    pub port: u16,
    pub weight: u32,
    /// `NAME.NS.svc.DOMAIN:PORT`, what the proxy discovers.
    pub authority: String,
    /// Why this backend cannot be used (no such Service or port, not a Service): its requests
    /// fail with 500 and this message, as Linkerd does. `None`: it exists.
    pub error: Option<String>,
    pub filters: Vec<OutFilter>,
}

/// The policy of `svc` at `port`.
pub(super) fn policy(
    state: &State,
    lookup: &Lookup,
    svc: &Service,
    port: u16,
    domain: &str,
) -> Policy {
    let sp = policy::service_policy_of(&svc.annotations);
    let key: Key = (svc.namespace.clone(), svc.name.clone());
    let attached = lookup.routes_of(state, &key).filter(|r| {
        r.parents.iter().any(|p| {
            p.is_service()
                && p.namespace == svc.namespace
                && p.name == svc.name
                && p.port.is_none_or(|pp| pp == port)
                && attach(state, lookup, r, p).is_ok()
        })
    });
    let (protocol, attached) = in_force(attached);
    let default_rule = RulePolicy {
        timeouts: sp.timeouts.unwrap_or_default(),
        retry: sp.retry.as_ref().map(|r| retry_policy(r, false)),
    };
    let routes = attached
        .into_iter()
        .map(|r| out_route(state, r, svc, port, &sp, domain))
        .collect();
    Policy {
        routes,
        protocol,
        default_rule,
        failure_accrual: sp.failure_accrual,
    }
}

/// Oldest first, then `namespace/name` (and kind, so the order is total).
pub(super) fn precedence(r: &Route) -> (i64, &str, &str, RouteKind) {
    (r.created.unwrap_or(i64::MAX), &r.namespace, &r.name, r.kind)
}

/// The routes attached to one parent port that are in force, in [`precedence`] order, and the
/// protocol they decide: those of the kind first in Linkerd's order ([`RouteProtocol`]); the
/// others are not used on this port (and `Conflicted` when they lose every port: [`outranked`]).
pub(super) fn in_force<'a>(
    attached: impl Iterator<Item = &'a Route>,
) -> (RouteProtocol, Vec<&'a Route>) {
    let mut attached: Vec<&Route> = attached.collect();
    let protocol = attached
        .iter()
        .map(|r| r.kind.protocol())
        .min()
        .unwrap_or_default();
    attached.retain(|r| r.kind.protocol() == protocol);
    attached.sort_by(|a, b| precedence(a).cmp(&precedence(b)));
    (protocol, attached)
}

/// `Err` (`Conflicted`) when routes of kinds that win over `route`'s take every port its
/// parentRef `p` covers: a parent port serves one route kind (GEP-1426), the first in Linkerd's
/// order (GRPCRoute > HTTPRoute > TLSRoute > TCPRoute, [`RouteProtocol`]). A route that loses
/// only some of its ports is accepted and used on the others ([`in_force`] decides per port).
/// `p` covers its `port`, else every port of the parent: `ports`, the Service's (`None`: any,
/// an EgressNetwork's, which only a winner without `port` takes entirely). `others`: the routes
/// with a parentRef to that parent; `same_kind`: whether a parentRef is of the parent's kind
/// (`label`).
pub(super) fn outranked<'a>(
    route: &Route,
    p: &ParentRef,
    label: &str,
    same_kind: fn(&ParentRef) -> bool,
    ports: Option<&[u16]>,
    others: impl IntoIterator<Item = &'a Route>,
) -> Result<(), (&'static str, String)> {
    // (winner, the port its parentRef names: `None` for all).
    let winners: Vec<(&Route, Option<u16>)> = others
        .into_iter()
        .filter(|w| w.kind.protocol() < route.kind.protocol())
        .flat_map(|w| {
            w.parents
                .iter()
                .filter(move |q| {
                    same_kind(q)
                        && q.namespace == p.namespace
                        && q.name == p.name
                        && w.namespace == q.namespace
                })
                .map(move |q| (w, q.port))
        })
        .collect();
    let winner_at = |port: Option<u16>| {
        winners
            .iter()
            .find(|(_, q)| q.is_none() || (port.is_some() && *q == port))
            .map(|(w, _)| *w)
    };
    let covered: Vec<Option<u16>> = match (p.port, ports) {
        (Some(port), _) => vec![Some(port)],
        (None, Some(ports)) => ports.iter().map(|port| Some(*port)).collect(),
        (None, None) => vec![None],
    };
    let everywhere: Option<Vec<&Route>> = covered.into_iter().map(winner_at).collect();
    match everywhere.and_then(|w| w.first().copied()) {
        None => Ok(()),
        Some(w) => Err((
            "Conflicted",
            format!(
                "{} {}/{} also attaches to {label} {}/{}: each port serves one route kind, and {} wins over {} (GEP-1426; as in Linkerd: GRPCRoute > HTTPRoute > TLSRoute > TCPRoute)",
                w.kind.kind(),
                w.namespace,
                w.name,
                p.namespace,
                p.name,
                w.kind.kind(),
                route.kind.kind()
            ),
        )),
    }
}

pub(super) fn retry_policy(r: &Retry, grpc: bool) -> RetryPolicy {
    let conditions = if grpc {
        RetryConditions::Grpc(r.grpc.unwrap_or(GrpcConditions::DEFAULT))
    } else {
        RetryConditions::Http(r.http.clone().unwrap_or_else(|| vec![(500, 599)]))
    };
    RetryPolicy {
        limit: r.limit,
        timeout: r.timeout,
        conditions,
    }
}

fn out_route(
    state: &State,
    r: &Route,
    svc: &Service,
    port: u16,
    sp: &policy::ServicePolicy,
    domain: &str,
) -> OutRoute {
    // Linkerd: any timeout (retry) annotation on the route replaces all of the Service's.
    let timeouts = r.timeouts.or(sp.timeouts).unwrap_or_default();
    let retry = r.retry.as_ref().or(sp.retry.as_ref());
    rules_of(state, r, timeouts, retry, |rule| {
        if rule.backends.is_empty() {
            vec![OutBackend {
                namespace: svc.namespace.clone(),
                name: svc.name.clone(),
                port,
                weight: 1,
                authority: authority(&svc.name, &svc.namespace, port, domain),
                error: None,
                filters: Vec::new(),
            }]
        } else {
            rule.backends
                .iter()
                .map(|b| backend(state, &r.namespace, b, domain))
                .collect()
        }
    })
}

/// `r` with its rules as proxies get them: matches, filters, the route's `timeouts` with each
/// rule's own request timeout under them (an annotation wins over the Gateway API field, as in
/// Linkerd), `retry` with the rule's backend request timeout as its per-try timeout, and the
/// backends `backends` gives each rule.
pub(super) fn rules_of(
    state: &State,
    r: &Route,
    timeouts: Timeouts,
    retry: Option<&Retry>,
    backends: impl Fn(&Rule) -> Vec<OutBackend>,
) -> OutRoute {
    let rules = r
        .rules
        .iter()
        .map(|rule| {
            let mut timeouts = timeouts;
            timeouts.request = timeouts.request.or(rule.request_timeout);
            let mut retry = retry.map(|x| retry_policy(x, r.kind.is_grpc()));
            if let Some(rp) = retry.as_mut() {
                rp.timeout = rp.timeout.or(rule.backend_request_timeout);
            }
            OutRule {
                matches: rule.matches.clone(),
                filters: filters(state, &r.namespace, &rule.filters),
                backends: backends(rule),
                policy: RulePolicy { timeouts, retry },
                backend_request_timeout: rule.backend_request_timeout,
            }
        })
        .collect();
    OutRoute {
        kind: r.kind,
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        hostnames: r.hostnames.clone(),
        rules,
    }
}

fn authority(name: &str, namespace: &str, port: u16, domain: &str) -> String {
    format!("{name}.{namespace}.svc.{domain}:{port}")
}

fn backend(state: &State, route_ns: &str, b: &BackendRef, domain: &str) -> OutBackend {
    let port = b.port.unwrap_or(0);
    OutBackend {
        namespace: b.namespace.clone(),
        name: b.name.clone(),
        port,
        weight: b.weight,
        authority: authority(&b.name, &b.namespace, port, domain),
        error: backend_error(state, b),
        filters: filters(state, route_ns, &b.filters),
    }
}

/// Why a backendRef does not resolve, with the Gateway API reason.
fn backend_problem(state: &State, b: &BackendRef) -> Option<(&'static str, String)> {
    if !b.is_service() {
        let group = if b.group.is_empty() { "core" } else { &b.group };
        return Some((
            "InvalidKind",
            format!(
                "backend {group}/{} {}/{} is not a Service",
                b.kind, b.namespace, b.name
            ),
        ));
    }
    let port = b.port.unwrap_or(0);
    match state.services.get(&(b.namespace.clone(), b.name.clone())) {
        None => Some((
            "BackendNotFound",
            format!("backend Service {}/{} not found", b.namespace, b.name),
        )),
        Some(s) if s.port(port).is_none() => Some((
            "BackendNotFound",
            format!(
                "backend Service {}/{} has no port {port}",
                b.namespace, b.name
            ),
        )),
        Some(_) => None,
    }
}

fn backend_error(state: &State, b: &BackendRef) -> Option<String> {
    backend_problem(state, b).map(|(_, m)| m)
}

fn fault_message(ns: &str, name: &str) -> String {
    format!("FaultInjection {ns}/{name} not found")
}

pub(super) fn filters(state: &State, route_ns: &str, filters: &[Filter]) -> Vec<OutFilter> {
    filters
        .iter()
        .map(|f| match f {
            Filter::RequestHeaders(m) => OutFilter::RequestHeaders(m.clone()),
            Filter::ResponseHeaders(m) => OutFilter::ResponseHeaders(m.clone()),
            Filter::Redirect(r) => OutFilter::Redirect(r.clone()),
            Filter::Fault(name) => match state.faults.get(&(route_ns.to_string(), name.clone())) {
                Some(fi) => OutFilter::Fault(fi.clone()),
                None => OutFilter::Unresolved(fault_message(route_ns, name)),
            },
        })
        .collect()
}

/// Whether `route` attaches to its parent `p` for outbound traffic; `Err((reason, message))`
/// says why not (the `Accepted` condition).
fn attach(
    state: &State,
    lookup: &Lookup,
    route: &Route,
    p: &ParentRef,
) -> Result<(), (&'static str, String)> {
    if super::egress::is_egress_ref(p) {
        // An egress route: it applies to the EgressNetwork's addresses, never to a Service.
        return super::egress::attach(state, lookup, route, p);
    }
    if super::inbound::is_server_ref(p) {
        // An inbound route: it authorizes requests to a Server, never outbound policy.
        return super::inbound::attach_server(state, route, p);
    }
    if !p.is_service() {
        return Err((
            "UnsupportedValue",
            format!(
                "parent {}/{} {}/{} is not a Service, a policy.linkerd.io Server or EgressNetwork",
                p.group, p.kind, p.namespace, p.name
            ),
        ));
    }
    if p.namespace != route.namespace {
        return Err((
            "UnsupportedValue",
            format!(
                "parent Service {}/{} is in another namespace: consumer routes are not supported, put the route in namespace {}",
                p.namespace, p.name, p.namespace
            ),
        ));
    }
    let Some(svc) = state.services.get(&(p.namespace.clone(), p.name.clone())) else {
        return Err((
            "NoMatchingParent",
            format!("no Service {}/{}", p.namespace, p.name),
        ));
    };
    if let Some(port) = p.port.filter(|port| svc.port(*port).is_none()) {
        return Err((
            "NoMatchingParent",
            format!("Service {}/{} has no port {port}", p.namespace, p.name),
        ));
    }
    let key = (p.namespace.clone(), p.name.clone());
    let ports: Vec<u16> = svc.ports.iter().map(|sp| sp.port).collect();
    outranked(
        route,
        p,
        "Service",
        ParentRef::is_service,
        Some(&ports),
        lookup.routes_of(state, &key),
    )
}

/// The status of one route, as `GET /v1/store` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    pub group: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// One entry per parentRef, like Gateway API `status.parents`.
    pub parents: Vec<ParentStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentStatus {
    pub parent_ref: ParentRefStatus,
    pub controller_name: &'static str,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ParentRefStatus {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Condition {
    /// `Accepted` or `ResolvedRefs`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `True` or `False`.
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// The status of every route of `state`, in state order.
pub fn statuses(state: &State) -> Vec<RouteStatus> {
    let lookup = Lookup::new(state);
    state
        .routes
        .values()
        .map(|r| {
            let resolved = resolved_refs(state, r);
            let parents = r
                .parents
                .iter()
                .map(|p| {
                    let accepted = match attach(state, &lookup, r, p) {
                        Ok(()) => Condition {
                            kind: "Accepted",
                            status: "True",
                            reason: "Accepted",
                            message: String::new(),
                        },
                        Err((reason, message)) => Condition {
                            kind: "Accepted",
                            status: "False",
                            reason,
                            message,
                        },
                    };
                    ParentStatus {
                        parent_ref: ParentRefStatus {
                            group: if p.group.is_empty() {
                                "core".into()
                            } else {
                                p.group.clone()
                            },
                            kind: p.kind.clone(),
                            namespace: p.namespace.clone(),
                            name: p.name.clone(),
                            port: p.port,
                        },
                        controller_name: CONTROLLER_NAME,
                        conditions: vec![accepted, resolved.clone()],
                    }
                })
                .collect();
            RouteStatus {
                group: r.kind.group(),
                kind: r.kind.kind(),
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                parents,
            }
        })
        .collect()
}

/// `ResolvedRefs`: every backend Service (with its port) and every `FaultInjection` exists.
fn resolved_refs(state: &State, r: &Route) -> Condition {
    let mut problems: Vec<(&'static str, String)> = Vec::new();
    let outbound = r.parents.iter().any(ParentRef::is_service);
    let fault = |name: &String, problems: &mut Vec<(&'static str, String)>| {
        if !state
            .faults
            .contains_key(&(r.namespace.clone(), name.clone()))
        {
            problems.push(("FilterNotFound", fault_message(&r.namespace, name)));
        }
    };
    for rule in &r.rules {
        for f in &rule.filters {
            if let Filter::Fault(name) = f {
                fault(name, &mut problems);
            }
        }
        // Backends only matter to outbound (Service) parents; inbound routes only match.
        for b in rule.backends.iter().filter(|_| outbound) {
            problems.extend(backend_problem(state, b));
            for f in &b.filters {
                if let Filter::Fault(name) = f {
                    fault(name, &mut problems);
                }
            }
        }
    }
    problems.dedup();
    match problems.first() {
        None => Condition {
            kind: "ResolvedRefs",
            status: "True",
            reason: "ResolvedRefs",
            message: String::new(),
        },
        Some((reason, _)) => Condition {
            kind: "ResolvedRefs",
            status: "False",
            reason,
            message: problems
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        },
    }
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
