//! Route resources — Gateway API `HTTPRoute`/`GRPCRoute`/`TLSRoute`/`TCPRoute`, Linkerd's
//! `policy.linkerd.io` `HTTPRoute`, and Weft's `FaultInjection` filter extension — as typed
//! values; `parse` turns documents into them (`filters` for the filters and the FaultInjection
//! resource).
//! Which routes apply to which service port, and whether their references resolve, is the
//! index's business (`index::routes`); the Linkerd annotations that routes and Services share
//! (timeouts, retries, failure accrual) are parsed in [`super::policy`].

use super::policy::{Retry, Timeouts};
use std::time::Duration;

mod filters;
mod parse;

pub(super) use parse::validate;
/// Field helpers the other resource kinds share.
pub(super) use parse::{creation_timestamp, list, object, opt_str, parse_rfc3339};

/// API group of Gateway API routes.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// API group of Linkerd's own `HTTPRoute`.
pub const POLICY_GROUP: &str = "policy.linkerd.io";
/// API group of Weft's extension resources: ours, deliberately outside every upstream group.
pub const WEFT_EXTENSIONS_GROUP: &str = "extensions.weft.dev";
pub const FAULT_INJECTION_KIND: &str = "FaultInjection";

/// Largest backend weight the Gateway API allows.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// gRPC status of a [`FaultInjection`] that does not name one: INTERNAL, the code closest to
/// the HTTP 500 it injects by default.
pub const DEFAULT_FAULT_GRPC_CODE: u32 = 13;
pub const DEFAULT_FAULT_STATUS: u16 = 500;

/// The route kinds the control plane reads. Ordered so that a [`RouteKey`] sorts by kind first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    /// `gateway.networking.k8s.io` `HTTPRoute`.
    GatewayHttp,
    /// `policy.linkerd.io` `HTTPRoute` (same schema).
    LinkerdHttp,
    /// `gateway.networking.k8s.io` `GRPCRoute`.
    Grpc,
    /// `gateway.networking.k8s.io` `TLSRoute` (v1alpha2, v1alpha3): connections by SNI name.
    Tls,
    /// `gateway.networking.k8s.io` `TCPRoute` (v1alpha2): every connection to the parent port.
    Tcp,
}

/// What a route kind routes, in Linkerd's precedence order: when routes of several kinds attach
/// to one parent port, the first kind wins and the others are not used there (GEP-1426; Linkerd's
/// policy controller, `grpc/src/outbound.rs` `to_proto`: GRPCRoute > HTTPRoute > TLSRoute >
/// TCPRoute). `Http` is also what a port without routes gets: detection and the default HTTP
/// route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteProtocol {
    Grpc,
    #[default]
    Http,
    Tls,
    Tcp,
}

impl RouteKind {
    pub fn group(self) -> &'static str {
        match self {
            RouteKind::LinkerdHttp => POLICY_GROUP,
            RouteKind::GatewayHttp | RouteKind::Grpc | RouteKind::Tls | RouteKind::Tcp => {
                GATEWAY_GROUP
            }
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            RouteKind::GatewayHttp | RouteKind::LinkerdHttp => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
            RouteKind::Tls => "TLSRoute",
            RouteKind::Tcp => "TCPRoute",
        }
    }

    /// `KIND.GROUP`, how the store names the kind (two `HTTPRoute` kinds exist).
    pub fn qualified(self) -> &'static str {
        match self {
            RouteKind::GatewayHttp => "HTTPRoute.gateway.networking.k8s.io",
            RouteKind::LinkerdHttp => "HTTPRoute.policy.linkerd.io",
            RouteKind::Grpc => "GRPCRoute.gateway.networking.k8s.io",
            RouteKind::Tls => "TLSRoute.gateway.networking.k8s.io",
            RouteKind::Tcp => "TCPRoute.gateway.networking.k8s.io",
        }
    }

    pub fn protocol(self) -> RouteProtocol {
        match self {
            RouteKind::GatewayHttp | RouteKind::LinkerdHttp => RouteProtocol::Http,
            RouteKind::Grpc => RouteProtocol::Grpc,
            RouteKind::Tls => RouteProtocol::Tls,
            RouteKind::Tcp => RouteProtocol::Tcp,
        }
    }

    pub fn is_grpc(self) -> bool {
        self == RouteKind::Grpc
    }

    /// A `TLSRoute` or `TCPRoute`: it routes whole connections, so it has no matches, filters,
    /// timeouts or retries.
    pub fn is_connection(self) -> bool {
        matches!(self, RouteKind::Tls | RouteKind::Tcp)
    }

    /// Every route kind.
    pub const ALL: [RouteKind; 5] = [
        RouteKind::GatewayHttp,
        RouteKind::LinkerdHttp,
        RouteKind::Grpc,
        RouteKind::Tls,
        RouteKind::Tcp,
    ];

    /// Whether `kind` (a document's `kind`) is a route kind, whatever its version.
    pub fn is_route_kind(kind: &str) -> bool {
        RouteKind::ALL.iter().any(|r| r.kind() == kind)
    }

    /// The route kind of a document, from its `kind` and `apiVersion` and the versions the
    /// table of kinds lists (`resource::kinds`); `Err` names the versions accepted for that
    /// kind. `None`: not a route kind.
    pub fn of(kind: &str, api_version: &str) -> Option<Result<RouteKind, String>> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let rows: Vec<(RouteKind, &super::kinds::Kind)> = RouteKind::ALL
            .into_iter()
            .filter(|r| r.kind() == kind)
            .filter_map(|r| Some((r, super::kinds::by_key(r.qualified())?)))
            .collect();
        if rows.is_empty() {
            return None;
        }
        let found = rows
            .iter()
            .find(|(_, row)| row.group == group && row.versions.contains(&version));
        if let Some((r, _)) = found {
            return Some(Ok(*r));
        }
        let expected: Vec<String> = rows
            .iter()
            .filter_map(|(_, row)| {
                let (first, rest) = row.versions.split_first()?;
                Some(match rest {
                    [] => format!("{}/{first}", row.group),
                    rest => format!("{}/{first} (or {})", row.group, rest.join(", ")),
                })
            })
            .collect();
        Some(Err(expected.join(", or ")))
    }
}

/// What identifies a route in the state: kind, namespace, name.
pub type RouteKey = (RouteKind, String, String);

/// A validated route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub kind: RouteKind,
    pub name: String,
    pub namespace: String,
    /// Unix seconds of `metadata.creationTimestamp`; in a [`super::State`] a route without one
    /// carries the time the store first saw it (the precedence tie-break: oldest first).
    pub created: Option<i64>,
    pub parents: Vec<ParentRef>,
    /// `spec.hostnames`, lower case; `*.example.com` is a suffix match. A TLSRoute's are SNI
    /// names; a TCPRoute has none.
    pub hostnames: Vec<String>,
    pub rules: Vec<Rule>,
    /// `timeout.linkerd.io/*` annotations; `Some` if the route has any (they then replace the
    /// Service's, as in Linkerd).
    pub timeouts: Option<Timeouts>,
    /// `retry.linkerd.io/*` annotations; `Some` if the route has any (they then replace the
    /// Service's).
    pub retry: Option<Retry>,
}

impl Route {
    pub fn key(&self) -> RouteKey {
        (self.kind, self.namespace.clone(), self.name.clone())
    }
}

/// `spec.parentRefs[]`, with the Gateway API defaults applied (group
/// `gateway.networking.k8s.io`, kind `Gateway`, the route's namespace).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParentRef {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub port: Option<u16>,
}

impl ParentRef {
    /// A core `Service`: the only parent that carries outbound policy.
    pub fn is_service(&self) -> bool {
        is_core(&self.group) && self.kind == "Service"
    }
}

fn is_core(group: &str) -> bool {
    group.is_empty() || group == "core"
}

/// `spec.rules[]` (a TLSRoute or TCPRoute has exactly one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Never empty: a rule without matches gets the match-all one (`PathPrefix /`, or any RPC).
    pub matches: Matches,
    pub filters: Vec<Filter>,
    /// Empty: the parent itself (a Service; an EgressNetwork's original destination).
    pub backends: Vec<BackendRef>,
    /// `timeouts.request` (Gateway API); `None` also for `0s`, which means no timeout.
    pub request_timeout: Option<Duration>,
    /// `timeouts.backendRequest`.
    pub backend_request_timeout: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Matches {
    Http(Vec<HttpMatch>),
    Grpc(Vec<GrpcMatch>),
    /// A TLSRoute or TCPRoute rule: every connection the route takes (a TLSRoute takes those
    /// whose SNI its `hostnames` match).
    Connection,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpMatch {
    pub path: PathMatch,
    pub headers: Vec<HeaderMatch>,
    pub query_params: Vec<HeaderMatch>,
    /// Upper-case HTTP method.
    pub method: Option<String>,
}

impl HttpMatch {
    fn all() -> Self {
        HttpMatch {
            path: PathMatch::Prefix("/".into()),
            headers: Vec::new(),
            query_params: Vec::new(),
            method: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    /// A Rust `regex` pattern, checked to compile.
    Regex(String),
}

/// A header (or query parameter) match by name and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: String,
    pub value: ValueMatch,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueMatch {
    Exact(String),
    Regex(String),
}

/// A gRPC match: an exact service and/or method (either absent matches any) and headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcMatch {
    pub service: Option<String>,
    pub method: Option<String>,
    pub headers: Vec<HeaderMatch>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    RequestHeaders(HeaderModifier),
    ResponseHeaders(HeaderModifier),
    Redirect(Redirect),
    /// `ExtensionRef` to a [`FaultInjection`] of this name in the route's namespace.
    Fault(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderModifier {
    pub add: Vec<(String, String)>,
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// `http` or `https`.
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    pub port: Option<u16>,
    /// 301 when `None`.
    pub status: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathModifier {
    Full(String),
    /// Only on rules whose every match is a path prefix (validated).
    Prefix(String),
}

/// `backendRefs[]`, defaults applied (group core, kind Service, the route's namespace, weight 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendRef {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Required for a Service (validated); optional for other kinds, which never resolve.
    pub port: Option<u16>,
    pub weight: u32,
    pub filters: Vec<Filter>,
}

impl BackendRef {
    pub fn is_service(&self) -> bool {
        is_core(&self.group) && self.kind == "Service"
    }
}

/// Weft's fault-injection filter (`extensions.weft.dev/v1alpha1` `FaultInjection`), used from a
/// route rule or backend as `{type: ExtensionRef, extensionRef: {group: extensions.weft.dev,
/// kind: FaultInjection, name: NAME}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultInjection {
    pub name: String,
    pub namespace: String,
    /// HTTP status of injected errors (HTTP routes).
    pub status: u16,
    /// gRPC status code of injected errors (gRPC routes).
    pub grpc_code: u32,
    pub message: String,
    /// (numerator, denominator) of the requests to fail; `None`: all of them.
    pub ratio: Option<(u32, u32)>,
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
