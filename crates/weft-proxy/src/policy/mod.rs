//! Outbound policy: what the control plane's `OutboundPolicies` says about one target, as plain
//! Rust values validated once per update.
//!
//! - [`client`]: one `OutboundPolicies.Watch` stream per target, shared, published on a `watch`
//!   channel; "no policy" (NotFound, InvalidArgument, Unimplemented, no first answer in time)
//!   leaves the target on today's path (Destination.Get or passthrough).
//! - [`convert`]: protobuf → these types. A bad part of an update never fails the update: the
//!   route, rule, filter or backend it belongs to becomes one that fails requests with a precise
//!   `l5d-proxy-error` ([`Filter::Invalid`], [`BackendKind::Invalid`]).
//! - [`route`]: which route and rule a request takes (Gateway API precedence), and which
//!   connection route a TLS ClientHello's SNI takes; pure functions.
//! - [`inbound`]: the inbound side: `InboundServerPolicies.WatchPort` per application port, the
//!   server/route/authorization model and the authorization decision (same routes and matcher).
//!
//! The types carry no I/O state: the request path keeps its per-policy-version state (balancers,
//! metric handles) beside them.

use crate::balance::{AccrualConfig, LoadConfig, QueueConfig};
use crate::discovery::Endpoint;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use std::{fmt, sync::Arc, time::Duration};

pub mod client;
pub mod convert;
pub mod inbound;
pub mod route;

pub use client::{Lookup, PolicyClient, PolicyState};

/// One target's policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The parent the policy is for (a Service, or an `EgressNetwork` for egress traffic):
    /// `parent_*` metric labels.
    pub parent: Arc<Meta>,
    pub protocol: Protocol,
}

/// Where a policy object came from: a resource, or a default the control plane made up.
/// Rendered as Linkerd's `*_group`, `*_kind`, `*_namespace`, `*_name`, `*_port`,
/// `*_section_name` labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Meta {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub section: String,
    /// 0 = none.
    pub port: u16,
}

impl Meta {
    /// A default (not a resource): Linkerd labels it `kind="default"` with the default's name.
    pub fn default_named(name: &str) -> Meta {
        Meta {
            kind: "default".into(),
            name: name.into(),
            ..Meta::default()
        }
    }
}

impl fmt::Display for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// How the target's connections are spoken and routed.
#[derive(Clone, Debug)]
pub enum Protocol {
    /// Detect HTTP; HTTP/1 requests take `http1`'s routes, HTTP/2 `http2`'s, anything else is
    /// opaque. (The proxy detects with its own `WEFT_PROXY_OUTBOUND_DETECT_TIMEOUT`; `timeout` is
    /// kept for display.)
    Detect {
        timeout: Duration,
        http1: HttpRoutes,
        http2: HttpRoutes,
        opaque: OpaqueRoutes,
    },
    /// Opaque TCP: no detection; balanced per connection over the opaque route's backends.
    Opaque(OpaqueRoutes),
    /// TLS the application originates (Gateway API `TLSRoute`s): no HTTP detection; the
    /// ClientHello's SNI selects the route ([`route::find_sni`]), whose backends take the
    /// connection as an opaque route's would. The proxy neither terminates nor originates TLS.
    Tls(OpaqueRoutes),
    Http1(HttpRoutes),
    Http2(HttpRoutes),
    Grpc(GrpcRoutes),
}

impl Protocol {
    /// The routes that take whole connections (opaque, or TLS by SNI), if the policy has any.
    pub fn connection_routes(&self) -> Option<&OpaqueRoutes> {
        match self {
            Protocol::Detect { opaque, .. } => Some(opaque),
            Protocol::Opaque(o) | Protocol::Tls(o) => Some(o),
            Protocol::Http1(_) | Protocol::Http2(_) | Protocol::Grpc(_) => None,
        }
    }
}

pub type HttpRoutes = Routes<HttpMatch>;
pub type GrpcRoutes = Routes<GrpcMatch>;

/// HTTP or gRPC routes, and the failure accrual their backends' balancers use.
#[derive(Clone, Debug)]
pub struct Routes<M> {
    pub routes: Arc<[Route<M>]>,
    /// Which HTTP rules can match a path (`route::PathIndex`; empty for gRPC routes).
    pub index: Arc<route::PathIndex>,
    /// For every backend balancer of these routes.
    pub failure_accrual: AccrualConfig,
}

impl<M> Default for Routes<M> {
    fn default() -> Self {
        Routes {
            routes: Arc::from(Vec::new()),
            index: Arc::default(),
            failure_accrual: AccrualConfig::default(),
        }
    }
}

/// One HTTPRoute / GRPCRoute, in the order the control plane sent them (oldest first).
#[derive(Clone, Debug)]
pub struct Route<M> {
    pub meta: Arc<Meta>,
    /// Empty: every host.
    pub hosts: Vec<HostMatch>,
    pub rules: Vec<Rule<M>>,
}

#[derive(Clone, Debug)]
pub struct Rule<M> {
    /// Any of them; empty = every request (a `/` prefix).
    pub matches: Vec<M>,
    pub filters: Vec<Filter>,
    pub distribution: Distribution,
    pub timeouts: Timeouts,
    /// Shared: a request takes a reference, not a copy.
    pub retry: Option<Arc<crate::retry::RetryPolicy>>,
    /// `allow_l5d_request_headers`: Linkerd lets `l5d-retry-*` / `l5d-timeout` request headers
    /// override the policy when set. Kept for the retry layer; not yet honoured.
    pub allow_l5d_request_headers: bool,
}

/// `:authority` / `host` match, and a TLS route's SNI match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    /// Lower case.
    Exact(String),
    /// `*.example.com` as `.example.com` (lower case); matches any name with that suffix.
    Suffix(String),
}

#[derive(Clone, Debug, Default)]
pub struct HttpMatch {
    pub path: Option<PathMatch>,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
    pub method: Option<Method>,
}

#[derive(Clone, Debug)]
pub enum PathMatch {
    Exact(String),
    /// Whole path segments: `/foo` matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`.
    Prefix(String),
    /// Must match the whole path.
    Regex(Regex),
}

#[derive(Clone, Debug)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: ValueMatch,
}

#[derive(Clone, Debug)]
pub struct QueryMatch {
    pub name: String,
    pub value: ValueMatch,
}

#[derive(Clone, Debug)]
pub enum ValueMatch {
    Exact(Vec<u8>),
    /// Must match the whole value.
    Regex(Regex),
}

/// gRPC: `/SERVICE/METHOD` on a POST; an empty part matches any.
#[derive(Clone, Debug, Default)]
pub struct GrpcMatch {
    pub service: Option<String>,
    pub method: Option<String>,
    pub headers: Vec<HeaderMatch>,
}

/// A regular expression that must match a whole value (compiled anchored once per update).
#[derive(Clone)]
pub struct Regex {
    source: Arc<str>,
    re: Arc<regex_automata::meta::Regex>,
}

impl Regex {
    pub fn new(source: &str) -> Result<Regex, String> {
        let re = regex_automata::meta::Regex::new(&format!("^(?:{source})$"))
            .map_err(|e| e.to_string())?;
        Ok(Regex {
            source: source.into(),
            re: Arc::new(re),
        })
    }

    pub fn is_full_match(&self, value: &[u8]) -> bool {
        self.re.is_match(value)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Regex({:?})", self.source)
    }
}

/// Route and backend filters, applied in the order the policy lists them.
#[derive(Clone, Debug)]
pub enum Filter {
    RequestHeaders(HeaderModifier),
    ResponseHeaders(HeaderModifier),
    /// Answers the request itself with a 3xx and a `location`.
    Redirect(Redirect),
    /// Answers `ratio` of the requests itself with `status` (HTTP) or `grpc-status` (gRPC),
    /// marked in `l5d-proxy-error` as injected.
    Fail(FailureInjector),
    /// A filter the proxy could not use (bad value, unknown kind, opaque `Invalid`): every
    /// request or connection taking it fails with this reason.
    Invalid(String),
    /// The opaque or TLS route's `Forbidden`: the policy refuses the connection on purpose (an
    /// `EgressNetwork` under `Deny`). Not an error in the policy, so kept apart from
    /// [`Filter::Invalid`]: the connection is closed, logged and counted as forbidden.
    Forbidden,
}

/// Add, then set, then remove (the proto's order).
#[derive(Clone, Debug, Default)]
pub struct HeaderModifier {
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

#[derive(Clone, Debug)]
pub struct Redirect {
    /// `None`: the request's scheme.
    pub scheme: Option<http::uri::Scheme>,
    /// `None`: the request's host.
    pub host: Option<String>,
    pub path: Option<PathModifier>,
    /// `None`: the request's port (if any).
    pub port: Option<u16>,
    pub status: StatusCode,
}

#[derive(Clone, Debug)]
pub enum PathModifier {
    Full(String),
    /// Replaces the part of the path the rule's prefix match matched.
    Prefix(String),
}

#[derive(Clone, Debug)]
pub struct FailureInjector {
    pub response: InjectedResponse,
    pub message: String,
    pub ratio: Ratio,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedResponse {
    Http(StatusCode),
    /// A `grpc-status` code (answered trailers-only with HTTP 200).
    Grpc(u32),
}

/// A fraction in [0, 1]; `numerator / denominator` with a non-zero denominator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ratio {
    pub numerator: u32,
    pub denominator: u32,
}

impl Ratio {
    pub const ALWAYS: Ratio = Ratio {
        numerator: 1,
        denominator: 1,
    };

    /// Draws once: true with probability `numerator / denominator`.
    pub fn sample(&self) -> bool {
        self.numerator >= self.denominator || fastrand::u32(..self.denominator) < self.numerator
    }
}

/// How a rule spreads requests over its backends.
#[derive(Clone, Debug)]
pub enum Distribution {
    /// No backend: requests fail (500, `l5d-proxy-error`).
    Empty,
    /// The first backend (in order) that has endpoints.
    FirstAvailable(Vec<RouteBackend>),
    /// Weighted random choice; `cumulative[i]` is the sum of weights up to and including `i`
    /// (zero-weight backends never chosen).
    RandomAvailable {
        backends: Vec<RouteBackend>,
        cumulative: Vec<u64>,
    },
}

impl Distribution {
    pub fn backends(&self) -> &[RouteBackend] {
        match self {
            Distribution::Empty => &[],
            Distribution::FirstAvailable(b) => b,
            Distribution::RandomAvailable { backends, .. } => backends,
        }
    }

    /// Weighted: the index a draw in `[0, total)` lands on. `None` when every weight is 0.
    pub fn weighted_index(cumulative: &[u64], draw: u64) -> Option<usize> {
        let i = cumulative.partition_point(|c| *c <= draw);
        (i < cumulative.len()).then_some(i)
    }
}

/// A backend as a rule uses it: per-route filters and request timeout.
#[derive(Clone, Debug)]
pub struct RouteBackend {
    pub backend: Arc<Backend>,
    pub filters: Vec<Filter>,
    /// Per-backend request timeout (Gateway API `timeouts.backendRequest`): bounds one attempt.
    pub request_timeout: Option<Duration>,
}

/// A concrete backend: a balanced service, or one forwarded address.
#[derive(Clone, Debug)]
pub struct Backend {
    /// `backend_*` metric labels.
    pub meta: Arc<Meta>,
    pub queue: QueueConfig,
    pub kind: BackendKind,
}

#[derive(Clone, Debug)]
pub enum BackendKind {
    /// Endpoints from `Destination.Get(path)`, P2C-balanced.
    Balancer {
        /// The Destination path (`name.ns.svc.cluster.local:port`, or `ip:port`).
        path: String,
        load: LoadConfig,
    },
    /// One endpoint, no discovery (identity and hint from the policy).
    Forward(Endpoint),
    /// A backend the proxy could not use: requests sent to it fail with this reason.
    Invalid(String),
}

impl BackendKind {
    /// A key that stays equal across policy updates for the same backend (to keep its
    /// balancer).
    pub fn key(&self) -> String {
        match self {
            BackendKind::Balancer { path, .. } => format!("dst:{path}"),
            BackendKind::Forward(e) => format!("fwd:{}", e.addr),
            BackendKind::Invalid(r) => format!("invalid:{r}"),
        }
    }
}

/// Rule timeouts (Gateway API `timeouts`, Linkerd's `timeout.linkerd.io/*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole exchange, retries included (the rule's `request_timeout` when `timeouts` has
    /// none).
    pub request: Option<Duration>,
    /// From the end of the request to the response headers.
    pub response: Option<Duration>,
    /// No frame either way for this long.
    pub idle: Option<Duration>,
}

/// Connection routes, opaque (TCP) or TLS, in the order the control plane sent them (oldest
/// first). The selected route's first rule takes the connection: for opaque routes the first
/// route, for TLS routes the one [`route::find_sni`] picks.
#[derive(Clone, Debug, Default)]
pub struct OpaqueRoutes {
    pub routes: Vec<OpaqueRoute>,
}

#[derive(Clone, Debug)]
pub struct OpaqueRoute {
    pub meta: Arc<Meta>,
    /// A TLS route's SNI matches; empty: any SNI, or none (always empty for opaque routes).
    pub snis: Vec<HostMatch>,
    pub rules: Vec<OpaqueRule>,
}

#[derive(Clone, Debug)]
pub struct OpaqueRule {
    pub distribution: Distribution,
    /// Only [`Filter::Invalid`] and [`Filter::Forbidden`] (the opaque `Invalid` and
    /// `Forbidden` filters).
    pub filters: Vec<Filter>,
}
