//! The part of the outbound request path that a target's outbound policy drives: route match,
//! request filters, backend choice, backend filters, timeouts and response filters, plus the
//! per-policy-version state they read ([`Router`]: compiled matches live in the policy; this
//! adds the backends' balancers and the route metric handles, rebuilt only when the policy
//! changes).
//!
//! Requests read the target's policy when they start, so an update applies to new requests and
//! never fails one already in flight (it keeps the [`Router`] it started with).

use super::{Dest, Outbound};
use crate::{
    balance::{AccrualConfig, BalancerConfig},
    discovery::Target,
    http::{self, Body, Error},
    metrics::balancer::BackendLabels,
    metrics::route::{BackendMetrics, ErrorLabel, Outcome, Proto, RouteMetrics},
    mtls::Peeked,
    policy::{
        route::{self as matching, Matched, RequestHead},
        Backend, BackendKind, Distribution, Filter, GrpcMatch, HeaderModifier, HttpMatch,
        InjectedResponse, Meta, PathModifier, Policy, PolicyState, Protocol, Redirect, Route,
        RouteBackend, Routes, Timeouts,
    },
};
use hyper::{header, HeaderMap, Request, Response, StatusCode};
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{sync::watch, time::Instant};

mod exchange;
mod idle;

use exchange::grpc_timeout;
pub(super) use exchange::{within, Limit, RouteEnd};
pub(super) use idle::{bounded as idle_bounded, Idle};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A target with a policy, shared by every connection and request to it.
pub(super) struct PolicyDest {
    target: Target,
    current: Mutex<Current>,
}

struct Current {
    rx: watch::Receiver<PolicyState>,
    router: Arc<Router>,
}

impl PolicyDest {
    /// `None` if the channel no longer holds a policy (the target lost it meanwhile).
    pub(super) fn new(
        ob: &Outbound,
        target: &Target,
        mut rx: watch::Receiver<PolicyState>,
    ) -> Option<PolicyDest> {
        let PolicyState::Policy(policy) = rx.borrow_and_update().clone() else {
            return None;
        };
        let router = Arc::new(Router::build(ob, policy, None));
        Some(PolicyDest {
            target: target.clone(),
            current: Mutex::new(Current { rx, router }),
        })
    }

    /// The state of the current policy version: an atomic version check per call, a rebuild
    /// only after an update. A target that lost its policy (`NoPolicy`) keeps the last one.
    pub(super) fn router(&self, ob: &Outbound) -> Arc<Router> {
        let mut guard = lock(&self.current);
        let cur = &mut *guard;
        if cur.rx.has_changed().unwrap_or(false) {
            let state = cur.rx.borrow_and_update().clone();
            if let PolicyState::Policy(p) = state {
                let next = Router::build(ob, p, Some(&cur.router));
                cur.router = Arc::new(next);
            }
        }
        cur.router.clone()
    }

    pub(super) fn target(&self) -> &Target {
        &self.target
    }

    /// How the policy (as last built) says the target's connections are read (one lock).
    pub(super) fn router_reads(&self) -> Reads {
        lock(&self.current).router.reads()
    }
}

/// Policy targets in use, shared by every connection and request. An entry is kept while
/// anything holds it or for `keep` after its last use, so explicit-mode requests (which look
/// their target up one by one) reuse one policy version's state instead of rebuilding it per
/// request; after that it is dropped, and its policy stream closes after the idle timeout.
pub(super) struct PolicyDests {
    keep: Duration,
    map: Mutex<Kept>,
}

struct Kept {
    map: HashMap<Target, (Arc<PolicyDest>, Instant)>,
    swept: Instant,
}

impl PolicyDests {
    pub(super) fn new(keep: Duration) -> PolicyDests {
        PolicyDests {
            keep,
            map: Mutex::new(Kept {
                map: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    pub(super) fn get(&self, target: &Target) -> Option<Arc<PolicyDest>> {
        let now = Instant::now();
        let mut kept = lock(&self.map);
        self.sweep(&mut kept, now);
        let (pd, used) = kept.map.get_mut(target)?;
        *used = now;
        Some(pd.clone())
    }

    /// Keeps the first one made for a target (another connection may have raced this one).
    pub(super) fn insert(&self, pd: PolicyDest) -> Arc<PolicyDest> {
        let now = Instant::now();
        let mut kept = lock(&self.map);
        let (pd, used) = kept
            .map
            .entry(pd.target.clone())
            .or_insert_with(|| (Arc::new(pd), now));
        *used = now;
        pd.clone()
    }

    /// At most once per `keep`: drops entries nothing holds that were unused for `keep`.
    fn sweep(&self, kept: &mut Kept, now: Instant) {
        if now.duration_since(kept.swept) < self.keep {
            return;
        }
        kept.swept = now;
        let keep = self.keep;
        kept.map
            .retain(|_, (pd, used)| Arc::strong_count(pd) > 1 || now.duration_since(*used) < keep);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        lock(&self.map).map.len()
    }
}

/// What one policy version needs at request time.
pub(super) struct Router {
    pub(super) policy: Arc<Policy>,
    http1: Option<Table<HttpMatch>>,
    http2: Option<Table<HttpMatch>>,
    grpc: Option<Table<GrpcMatch>>,
    /// Connection routes (opaque or TLS), one per route of the policy, in its order.
    opaque: Vec<OpaqueTable>,
    /// Every backend slot of this version by [`BackendKind::key`], so the next version keeps
    /// the balancers of the backends it still names.
    slots: HashMap<String, Arc<Slot>>,
}

struct Table<M> {
    routes: Arc<[Route<M>]>,
    index: Arc<crate::policy::route::PathIndex>,
    state: Vec<RouteState>,
}

struct RouteState {
    metrics: RouteMetrics,
    /// The route's retry budget and counters, shared by its requests.
    retry: Arc<RouteRetry>,
    /// Per rule, per backend of its distribution.
    rules: Vec<Vec<BackendState>>,
}

struct BackendState {
    slot: Arc<Slot>,
    metrics: BackendMetrics,
}

/// One connection route's first rule (the one that takes its connections).
struct OpaqueTable {
    /// The opaque or TLS route (`route_*` labels of a forbidden connection).
    route: Arc<Meta>,
    distribution: Distribution,
    filters: Vec<Filter>,
    slots: Vec<Arc<Slot>>,
}

/// How a target's connections are read before they are routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reads {
    /// Detect HTTP (the policy may still make some connections opaque).
    Detect,
    /// Opaque: no detection.
    Opaque,
    /// TLS routed by SNI: the ClientHello is read, no HTTP detection.
    ClientHello,
}

/// What an opaque connection shows the route selection.
#[derive(Clone, Copy, Debug)]
pub(super) enum Hello<'a> {
    /// Nothing read: opaque routes have no SNI matches, and a CONNECT tunnel's bytes start only
    /// after the proxy answered. TLS routes then select as for a ClientHello without SNI.
    Unread,
    /// A ClientHello, and its SNI if it has one.
    Sni(Option<&'a str>),
    /// The first bytes are not a ClientHello the proxy can read (why).
    NotTls(&'static str),
}

impl<'a> Hello<'a> {
    /// What a peek at the connection's first bytes found (`None`: none was taken).
    pub(super) fn of(peeked: Option<&'a Peeked>) -> Hello<'a> {
        match peeked {
            None => Hello::Unread,
            Some(Peeked::Hello(h)) => Hello::Sni(h.sni.as_deref()),
            Some(Peeked::NotTls) => Hello::NotTls("the connection is not TLS"),
            Some(Peeked::Silent) => Hello::NotTls("no ClientHello within the detect timeout"),
            Some(Peeked::Malformed) => Hello::NotTls("the ClientHello cannot be read"),
        }
    }
}

/// One concrete backend's way to its endpoints, resolved on first use and kept across policy
/// versions that still name it.
pub(super) struct Slot {
    backend: Arc<Backend>,
    /// A balanced backend's Destination target.
    target: Option<Target>,
    /// Its protocol's failure accrual (the policy gives it per protocol, not per backend).
    accrual: AccrualConfig,
    dest: Arc<tokio::sync::OnceCell<Dest>>,
}

impl Slot {
    /// Where the backend's requests go: its own balancer (from `Balancers`, so two rules or two
    /// connections naming one backend share it), a forwarded endpoint, or why it cannot be used.
    pub(super) async fn dest(&self, ob: &Outbound) -> Result<Dest, Error> {
        match &self.backend.kind {
            BackendKind::Invalid(reason) => Err(Error::BadPolicy {
                reason: reason.clone(),
            }),
            BackendKind::Forward(ep) => Ok(Dest::Endpoint(ep.clone())),
            BackendKind::Balancer { path, .. } => {
                let Some(target) = &self.target else {
                    return Err(Error::BadPolicy {
                        reason: format!("backend {}: {path:?} is not HOST:PORT", self.backend.meta),
                    });
                };
                Ok(self
                    .dest
                    .get_or_init(|| ob.discovered_dest_with(target, self.balancer_config()))
                    .await
                    .clone())
            }
        }
    }

    /// The policy's settings for this backend's balancer: its load estimate and queue, its
    /// protocol's failure accrual; `backend_*` labels from its metadata.
    fn balancer_config(&self) -> Option<BalancerConfig> {
        let BackendKind::Balancer { load, .. } = &self.backend.kind else {
            return None;
        };
        let m = &self.backend.meta;
        Some(BalancerConfig {
            load: *load,
            accrual: self.accrual,
            queue: self.backend.queue,
            labels: Arc::new(BackendLabels {
                group: m.group.clone(),
                kind: m.kind.clone(),
                namespace: m.namespace.clone(),
                name: m.name.clone(),
                port: m.port,
                section_name: m.section.clone(),
            }),
        })
    }

    pub(super) fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The balanced backend's Destination target, if it is one.
    pub(super) fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }
}

/// A Destination path (`name:port`, `ip:port`, `[v6]:port`) as a target.
fn path_target(path: &str) -> Option<Target> {
    if let Ok(addr) = path.parse::<SocketAddr>() {
        return Some(Target::Addr(addr));
    }
    let (host, port) = path.rsplit_once(':')?;
    let port = port.parse().ok()?;
    if host.is_empty() || host.parse::<IpAddr>().is_ok() {
        return None;
    }
    Some(Target::Name {
        host: host.trim_end_matches('.').to_ascii_lowercase(),
        port,
    })
}

impl Router {
    fn build(ob: &Outbound, policy: Arc<Policy>, previous: Option<&Router>) -> Router {
        let mut slots = HashMap::new();
        let mut slot = |backend: &Arc<Backend>, accrual: AccrualConfig| -> Arc<Slot> {
            let key = backend.kind.key();
            slots
                .entry(key.clone())
                .or_insert_with(|| {
                    let slot = Slot {
                        target: match &backend.kind {
                            BackendKind::Balancer { path, .. } => path_target(path),
                            _ => None,
                        },
                        backend: backend.clone(),
                        accrual,
                        // Same backend as before: keep its balancer, with this version's
                        // settings (once per policy update, not per request).
                        dest: previous
                            .and_then(|p| p.slots.get(&key))
                            .map_or_else(Default::default, |old| old.dest.clone()),
                    };
                    if let Some(Dest::Balanced(b)) = slot.dest.get() {
                        if let Some(config) = slot.balancer_config() {
                            b.reconfigure(config);
                        }
                    }
                    Arc::new(slot)
                })
                .clone()
        };
        let parent = &policy.parent;
        let metrics = ob.metrics.routes();
        let budget = ob.settings.retry_budget;
        let (http1, http2, grpc, opaque_routes) = match &policy.protocol {
            Protocol::Detect {
                http1,
                http2,
                opaque,
                ..
            } => (
                Some(table(
                    http1,
                    Proto::Http,
                    parent,
                    metrics,
                    budget,
                    &mut slot,
                )),
                Some(table(
                    http2,
                    Proto::Http,
                    parent,
                    metrics,
                    budget,
                    &mut slot,
                )),
                None,
                Some(opaque),
            ),
            // One table serves both HTTP versions.
            Protocol::Http1(r) | Protocol::Http2(r) => (
                Some(table(r, Proto::Http, parent, metrics, budget, &mut slot)),
                None,
                None,
                None,
            ),
            Protocol::Grpc(g) => (
                None,
                None,
                Some(table(g, Proto::Grpc, parent, metrics, budget, &mut slot)),
                None,
            ),
            Protocol::Opaque(o) | Protocol::Tls(o) => (None, None, None, Some(o)),
        };
        let opaque = opaque_routes
            .map_or(&[][..], |o| &o.routes)
            .iter()
            .map(|route| {
                let (distribution, filters) = match route.rules.first() {
                    Some(rule) => (rule.distribution.clone(), rule.filters.clone()),
                    // The proto requires a rule: a route without one fails its connections
                    // rather than let them bypass the policy.
                    None => (
                        Distribution::Empty,
                        vec![Filter::Invalid(format!("route {} has no rule", route.meta))],
                    ),
                };
                OpaqueTable {
                    route: route.meta.clone(),
                    slots: distribution
                        .backends()
                        .iter()
                        .map(|b| slot(&b.backend, AccrualConfig::default()))
                        .collect(),
                    distribution,
                    filters,
                }
            })
            .collect();
        Router {
            policy,
            http1,
            http2,
            grpc,
            opaque,
            slots,
        }
    }

    /// HTTP/2 requests use the HTTP/2 routes when the policy detects, else the one table.
    fn http_table(&self, which: Which) -> Option<&Table<HttpMatch>> {
        match which {
            Which::Http2 => self.http2.as_ref().or(self.http1.as_ref()),
            _ => self.http1.as_ref(),
        }
    }

    /// How the policy says the target's connections are read.
    pub(super) fn reads(&self) -> Reads {
        match self.policy.protocol {
            Protocol::Opaque(_) => Reads::Opaque,
            Protocol::Tls(_) => Reads::ClientHello,
            Protocol::Detect { .. }
            | Protocol::Http1(_)
            | Protocol::Http2(_)
            | Protocol::Grpc(_) => Reads::Detect,
        }
    }

    /// Does the policy have routes for opaque (or TLS) connections?
    pub(super) fn has_opaque_backends(&self) -> bool {
        !self.opaque.is_empty()
    }

    /// The backend an opaque connection to `target` goes to, or why it cannot go anywhere.
    /// The route: the first opaque route, or the TLS route `hello`'s SNI selects. A connection
    /// the policy does not admit is refused and counted in `outbound_tcp_forbidden_total` here,
    /// for opaque connections and CONNECT tunnels alike: a `Forbidden` filter (the rule's, then
    /// the chosen backend's; logged at info), and for TLS routes a connection that is not TLS
    /// (debug) or whose SNI no route matches (warn; the control plane's default route matches
    /// any). An `Invalid` filter is an invalid-policy error.
    pub(super) fn opaque_backend(
        &self,
        ob: &Outbound,
        target: &Target,
        hello: Hello<'_>,
    ) -> Result<Arc<Slot>, Error> {
        let routes = match self.policy.protocol.connection_routes() {
            Some(o) if !o.routes.is_empty() => &o.routes,
            _ => {
                return Err(Error::BadPolicy {
                    reason: "the policy has no opaque route".into(),
                })
            }
        };
        let sni = match hello {
            Hello::NotTls(why) if self.reads() == Reads::ClientHello => {
                let e = self.refuse(ob, target, &Meta::default(), why);
                tracing::debug!("{e}");
                return Err(e);
            }
            Hello::Sni(sni) => sni,
            Hello::Unread | Hello::NotTls(_) => None,
        };
        let Some(t) = matching::find_sni(routes, sni).and_then(|i| self.opaque.get(i)) else {
            let why = format!("no TLS route matches SNI {:?}", sni.unwrap_or(""));
            let e = self.refuse(ob, target, &Meta::default(), &why);
            tracing::warn!("{e}");
            return Err(e);
        };
        if self.reads() == Reads::ClientHello {
            tracing::debug!(%target, sni = sni.unwrap_or(""), route = %t.route, "TLS route");
        }
        self.opaque_filters(ob, target, t, &t.filters)?;
        let i = choose(&t.distribution)?;
        self.opaque_filters(ob, target, t, &t.distribution.backends()[i].filters)?;
        Ok(t.slots[i].clone())
    }

    /// The first refusing opaque filter of `filters`, as the connection's error.
    fn opaque_filters(
        &self,
        ob: &Outbound,
        target: &Target,
        t: &OpaqueTable,
        filters: &[Filter],
    ) -> Result<(), Error> {
        for f in filters {
            match f {
                Filter::Invalid(reason) => {
                    return Err(Error::BadPolicy {
                        reason: reason.clone(),
                    })
                }
                Filter::Forbidden => {
                    let route = format!("route {}", t.route);
                    let e = self.refuse(ob, target, &t.route, &route);
                    tracing::info!("{e}");
                    return Err(e);
                }
                // HTTP filters have no meaning for a byte stream.
                _ => {}
            }
        }
        Ok(())
    }

    /// Counts a connection the policy refuses; `route`: the route that refused it (empty
    /// labels when no route took it), `why`: what refused it.
    fn refuse(&self, ob: &Outbound, target: &Target, route: &Meta, why: &str) -> Error {
        let parent = &self.policy.parent;
        let e = Error::Forbidden {
            target: target.to_string(),
            by: format!("{parent}, {why}"),
        };
        let port = |p: u16| if p == 0 { String::new() } else { p.to_string() };
        let (target_addr, parent_port) = (target.to_string(), port(parent.port));
        ob.metrics.count(
            crate::metrics::OUTBOUND_TCP_FORBIDDEN,
            None,
            &[
                ("direction", "outbound"),
                ("target_addr", &target_addr),
                ("parent_group", &parent.group),
                ("parent_kind", &parent.kind),
                ("parent_namespace", &parent.namespace),
                ("parent_name", &parent.name),
                ("parent_port", &parent_port),
                ("route_group", &route.group),
                ("route_kind", &route.kind),
                ("route_namespace", &route.namespace),
                ("route_name", &route.name),
            ],
        );
        e
    }
}

/// One route's retries: its budget (ratio of its requests plus a floor) and its metrics, whose
/// retry counters the loop counts into.
pub(super) struct RouteRetry {
    pub(super) budget: crate::retry::Budget,
    pub(super) metrics: RouteMetrics,
}

/// Per-version state of one route table: metric handles, retry budgets and backend slots.
fn table<M>(
    routes: &Routes<M>,
    proto: Proto,
    parent: &Arc<Meta>,
    metrics: &crate::metrics::route::Registry,
    budget: crate::config::RetryBudget,
    slot: &mut dyn FnMut(&Arc<Backend>, AccrualConfig) -> Arc<Slot>,
) -> Table<M> {
    Table {
        routes: routes.routes.clone(),
        index: routes.index.clone(),
        state: routes
            .routes
            .iter()
            .map(|r| {
                let route_metrics = metrics.route(proto, parent, &r.meta);
                RouteState {
                    retry: Arc::new(RouteRetry {
                        budget: crate::retry::Budget::new(budget),
                        metrics: route_metrics.clone(),
                    }),
                    metrics: route_metrics,
                    rules: r
                        .rules
                        .iter()
                        .map(|rule| {
                            rule.distribution
                                .backends()
                                .iter()
                                .map(|b| BackendState {
                                    slot: slot(&b.backend, routes.failure_accrual),
                                    metrics: metrics.backend(
                                        proto,
                                        parent,
                                        &r.meta,
                                        &b.backend.meta,
                                    ),
                                })
                                .collect()
                        })
                        .collect(),
                }
            })
            .collect(),
    }
}

/// Picks a backend index of a distribution.
fn choose(d: &Distribution) -> Result<usize, Error> {
    match d {
        Distribution::Empty => Err(Error::BadPolicy {
            reason: "the route has no backends".into(),
        }),
        // The first backend that can be used at all; endpoint availability is the balancer's
        // (and its fail-fast's) business.
        Distribution::FirstAvailable(bs) => bs
            .iter()
            .position(|b| !matches!(b.backend.kind, BackendKind::Invalid(_)))
            .ok_or_else(|| Error::BadPolicy {
                reason: "no usable backend in the route".into(),
            }),
        Distribution::RandomAvailable { cumulative, .. } => {
            let total = cumulative.last().copied().unwrap_or(0);
            if total == 0 {
                return Err(Error::BadPolicy {
                    reason: "every backend of the route has weight 0".into(),
                });
            }
            Distribution::weighted_index(cumulative, fastrand::u64(..total)).ok_or_else(|| {
                Error::BadPolicy {
                    reason: "weighted choice out of range".into(),
                }
            })
        }
    }
}

/// The outcome of routing a request: answered by the policy itself, or sent to a backend.
pub(super) enum Decision {
    Respond(Response<Body>),
    Forward(Forwarded),
}

/// Everything the rest of the request path needs about the chosen route and backend.
pub(super) struct Forwarded {
    router: Arc<Router>,
    loc: Loc,
    pub(super) slot: Arc<Slot>,
    pub(super) grpc: bool,
    timeouts: Timeouts,
    backend_timeout: Option<Duration>,
    route_metrics: RouteMetrics,
    backend_metrics: BackendMetrics,
    started: Instant,
    /// The rule's retry policy with the route's budget and counters.
    pub(super) retry: Option<(Arc<crate::retry::RetryPolicy>, Arc<RouteRetry>)>,
}

#[derive(Clone, Copy)]
enum Which {
    Http1,
    Http2,
    Grpc,
}

#[derive(Clone, Copy)]
struct Loc {
    which: Which,
    route: usize,
    rule: usize,
    backend: usize,
}

/// Steps 1–4 of a routed request: route match, request filters, backend choice, backend
/// filters. Redirects, injected failures and invalid policy parts answer here.
pub(super) fn route(
    ob: &Outbound,
    pd: &PolicyDest,
    req: &mut Request<Body>,
    started: Instant,
) -> Decision {
    let router = pd.router(ob);
    let grpc_req = http::is_grpc(req);
    // 1. Route match.
    let (which, matched) = {
        let head = RequestHead::of(req);
        match (&router.grpc, req.version() == hyper::Version::HTTP_2) {
            (Some(t), _) => (Which::Grpc, matching::find_grpc(&t.routes, &head)),
            (None, true) => (
                Which::Http2,
                router
                    .http_table(Which::Http2)
                    .and_then(|t| matching::find_http_indexed(&t.routes, &t.index, &head)),
            ),
            (None, false) => (
                Which::Http1,
                router
                    .http1
                    .as_ref()
                    .and_then(|t| matching::find_http_indexed(&t.routes, &t.index, &head)),
            ),
        }
    };
    let Some(matched) = matched else {
        let e = Error::NoRoute {
            target: pd.target().to_string(),
        };
        return Decision::Respond(e.into_response_for(grpc_req));
    };
    match which {
        Which::Grpc => {
            let t = router.grpc.as_ref().expect("matched a gRPC route");
            decide(&router, which, t, matched, req, grpc_req, started)
        }
        Which::Http1 | Which::Http2 => {
            let t = router.http_table(which).expect("matched an HTTP route");
            decide(&router, which, t, matched, req, grpc_req, started)
        }
    }
}

fn decide<M>(
    router: &Arc<Router>,
    which: Which,
    table: &Table<M>,
    matched: Matched,
    req: &mut Request<Body>,
    grpc_req: bool,
    started: Instant,
) -> Decision {
    let rule = &table.routes[matched.route].rules[matched.rule];
    let state = &table.state[matched.route];
    let answered = |resp: Response<Body>, error: ErrorLabel| {
        state
            .metrics
            .done(outcome_of(&resp, grpc_req, error), started.elapsed());
        Decision::Respond(resp)
    };
    // 2. Request filters (a redirect or an injected failure answers here).
    if let Some(resp) = request_filters(&rule.filters, req, matched, grpc_req) {
        return answered(resp, ErrorLabel::None);
    }
    // 3. Backend choice (weighted).
    let backend = match choose(&rule.distribution) {
        Ok(i) => i,
        Err(e) => return answered(e.into_response_for(grpc_req), ErrorLabel::Unexpected),
    };
    let route_backend: &RouteBackend = &rule.distribution.backends()[backend];
    let bstate = &state.rules[matched.rule][backend];
    // 4. Backend filters.
    if let Some(resp) = request_filters(&route_backend.filters, req, matched, grpc_req) {
        bstate.metrics.request();
        bstate.metrics.done(
            outcome_of(&resp, grpc_req, ErrorLabel::None),
            started.elapsed(),
        );
        return answered(resp, ErrorLabel::None);
    }
    Decision::Forward(Forwarded {
        router: router.clone(),
        loc: Loc {
            which,
            route: matched.route,
            rule: matched.rule,
            backend,
        },
        slot: bstate.slot.clone(),
        grpc: grpc_req,
        timeouts: rule.timeouts,
        backend_timeout: route_backend.request_timeout,
        route_metrics: state.metrics.clone(),
        backend_metrics: bstate.metrics.clone(),
        started,
        retry: rule.retry.clone().map(|p| (p, state.retry.clone())),
    })
}

/// Applies request filters in order; `Some` is the response that answers the request instead.
fn request_filters(
    filters: &[Filter],
    req: &mut Request<Body>,
    matched: Matched,
    grpc_req: bool,
) -> Option<Response<Body>> {
    for f in filters {
        match f {
            Filter::RequestHeaders(m) => modify(req.headers_mut(), m),
            Filter::ResponseHeaders(_) => {}
            Filter::Redirect(r) => return Some(redirect(r, req, matched, grpc_req)),
            Filter::Fail(f) => {
                if f.ratio.sample() {
                    let (status, grpc) = match f.response {
                        InjectedResponse::Http(s) => (s, None),
                        InjectedResponse::Grpc(c) => (StatusCode::OK, Some(c)),
                    };
                    let message = if f.message.is_empty() {
                        "by the route's failure injector".to_string()
                    } else {
                        f.message.clone()
                    };
                    let e = Error::Injected {
                        status,
                        grpc,
                        message,
                    };
                    return Some(e.into_response_for(grpc.is_some()));
                }
            }
            Filter::Invalid(reason) => {
                let e = Error::BadPolicy {
                    reason: reason.clone(),
                };
                return Some(e.into_response_for(grpc_req));
            }
            // Opaque routes only; an HTTP route carrying it refuses the request the same way.
            Filter::Forbidden => {
                let e = Error::Forbidden {
                    target: http::authority_of(req).unwrap_or_default(),
                    by: "the route's Forbidden filter".into(),
                };
                return Some(e.into_response_for(grpc_req));
            }
        }
    }
    None
}

/// Add, then set, then remove.
fn modify(headers: &mut HeaderMap, m: &HeaderModifier) {
    for (k, v) in &m.add {
        headers.append(k.clone(), v.clone());
    }
    for (k, v) in &m.set {
        headers.insert(k.clone(), v.clone());
    }
    for k in &m.remove {
        headers.remove(k);
    }
}

fn redirect(r: &Redirect, req: &Request<Body>, matched: Matched, grpc_req: bool) -> Response<Body> {
    let uri = req.uri();
    let head = RequestHead::of(req);
    let scheme = r
        .scheme
        .clone()
        .or_else(|| uri.scheme().cloned())
        .unwrap_or(::http::uri::Scheme::HTTP);
    let host = r.host.as_deref().or(head.host).unwrap_or("");
    let port = r.port.or_else(|| {
        uri.port_u16().or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.rsplit_once(':'))
                .and_then(|(_, p)| p.parse().ok())
        })
    });
    let path = match &r.path {
        None => uri.path().to_string(),
        Some(PathModifier::Full(p)) => p.clone(),
        Some(PathModifier::Prefix(p)) => match matched.prefix_len {
            Some(n) if n <= uri.path().len() => {
                let rest = &uri.path()[n.min(uri.path().len())..];
                let p = p.trim_end_matches('/');
                if rest.is_empty() {
                    if p.is_empty() {
                        "/".to_string()
                    } else {
                        p.to_string()
                    }
                } else {
                    format!("{p}{rest}")
                }
            }
            _ => {
                let e = Error::BadPolicy {
                    reason: "a prefix redirect on a rule that did not match a path prefix".into(),
                };
                return e.into_response_for(grpc_req);
            }
        },
    };
    let mut location = format!("{scheme}://{host}");
    if let Some(port) = port {
        location.push_str(&format!(":{port}"));
    }
    location.push_str(&path);
    if let Some(q) = uri.query() {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = Response::new(http::empty());
    *resp.status_mut() = r.status;
    match header::HeaderValue::try_from(location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
            resp
        }
        Err(_) => Error::BadPolicy {
            reason: "the redirect's location is not a valid header value".into(),
        }
        .into_response_for(grpc_req),
    }
}

/// The status a route metric records for a response.
fn outcome_of(resp: &Response<Body>, grpc: bool, error: ErrorLabel) -> Outcome {
    let status = if grpc {
        http::grpc_status(resp.headers()).and_then(|g| u32::try_from(g).ok())
    } else {
        Some(u32::from(resp.status().as_u16()))
    };
    Outcome { status, error }
}

impl Forwarded {
    /// Step 5's bounds: the whole exchange (the rule's request timeout, or the client's
    /// `grpc-timeout` if shorter) and one attempt (the backend's request timeout, or the rule's
    /// response timeout if shorter).
    /// The route's idle timeout, started for one request.
    pub(super) fn idle(&self) -> Option<Idle> {
        self.timeouts.idle.map(Idle::start)
    }

    pub(super) fn limits(&self, headers: &HeaderMap) -> (Option<Limit>, Option<Limit>) {
        let client = grpc_timeout(headers).map(|d| Limit {
            what: "grpc-timeout",
            timeout: d,
        });
        let rule = self.timeouts.request.map(|d| Limit {
            what: "route request",
            timeout: d,
        });
        let whole = match (rule, client) {
            (Some(r), Some(c)) => Some(if c.timeout < r.timeout { c } else { r }),
            (r, c) => r.or(c),
        };
        let backend = self.backend_timeout.map(|d| Limit {
            what: "backend request",
            timeout: d,
        });
        let response = self.timeouts.response.map(|d| Limit {
            what: "route response",
            timeout: d,
        });
        let attempt = match (backend, response) {
            (Some(b), Some(r)) => Some(if r.timeout < b.timeout { r } else { b }),
            (b, r) => b.or(r),
        };
        (whole, attempt)
    }

    /// The backend's fail-fast from when the request started: its queue's timeout, bounded by
    /// the proxy's own (`WEFT_PROXY_OUTBOUND_FAILFAST_TIMEOUT`).
    pub(super) fn deadline(&self, proxy_failfast: Duration) -> Instant {
        self.started + self.slot.backend().queue.failfast.min(proxy_failfast)
    }

    /// Counts the dispatch; the returned guard records the route and backend outcome when the
    /// response ends (or when it is dropped unanswered).
    /// The route that took the request (tap's route labels).
    pub(super) fn route_meta(&self) -> Option<Arc<crate::policy::Meta>> {
        let r = &self.router;
        match self.loc.which {
            Which::Grpc => r
                .grpc
                .as_ref()
                .map(|t| t.routes[self.loc.route].meta.clone()),
            which => r
                .http_table(which)
                .map(|t| t.routes[self.loc.route].meta.clone()),
        }
    }

    pub(super) fn dispatch(&self) -> RouteEnd {
        self.backend_metrics.request();
        RouteEnd {
            route: self.route_metrics.clone(),
            backend: self.backend_metrics.clone(),
            started: self.started,
            dispatched: Instant::now(),
            grpc: self.grpc,
            status: None,
            error: ErrorLabel::None,
        }
    }

    /// Step 7: response filters (the rule's, then the backend's).
    pub(super) fn response_filters(&self, resp: &mut Response<Body>) {
        let (rule_filters, backend_filters): (&[Filter], &[Filter]) = match self.loc.which {
            Which::Grpc => {
                let t = self.router.grpc.as_ref().expect("gRPC table");
                let rule = &t.routes[self.loc.route].rules[self.loc.rule];
                (
                    &rule.filters,
                    &rule.distribution.backends()[self.loc.backend].filters,
                )
            }
            w => {
                let t = self.router.http_table(w).expect("HTTP table");
                let rule = &t.routes[self.loc.route].rules[self.loc.rule];
                (
                    &rule.filters,
                    &rule.distribution.backends()[self.loc.backend].filters,
                )
            }
        };
        for f in rule_filters.iter().chain(backend_filters) {
            if let Filter::ResponseHeaders(m) = f {
                modify(resp.headers_mut(), m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_paths_become_targets() {
        assert_eq!(
            path_target("web.default.svc.cluster.local:8080"),
            Some(Target::Name {
                host: "web.default.svc.cluster.local".into(),
                port: 8080
            })
        );
        assert_eq!(
            path_target("10.0.0.1:80"),
            Some(Target::Addr("10.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(
            path_target("[::1]:80"),
            Some(Target::Addr("[::1]:80".parse().unwrap()))
        );
        assert_eq!(path_target("web"), None);
        assert_eq!(path_target("web:http"), None);
    }
}
