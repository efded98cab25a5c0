//! The outbound request path: app → target → policy or discover → detect → route → balance →
//! connect.
//!
//! [`handle`] takes one connection from the application. Its target comes from how it arrived
//! ([`Origin`]); in explicit mode (`HTTP_PROXY`) each HTTP request names its own target. A target
//! with an outbound policy routes each request ([`routed`]: route match, filters, a weighted
//! backend, timeouts); one without takes its discovered endpoints. Every target is looked up,
//! addresses outside the cluster included: an `EgressNetwork` answers for those, and its
//! `Forward` backends go to the original destination in plaintext, without discovery; its
//! opaque `Forbidden` closes the connection (counted in `outbound_tcp_forbidden_total`). A policy
//! of TLS routes reads the application's ClientHello instead of detecting HTTP: its SNI selects
//! the route, and the application's own TLS is relayed untouched.
//!
//! Opaque connections pick one endpoint and relay bytes ([`opaque`]); HTTP connections are
//! served by hyper and every request picks its own endpoint (P2C) and goes out over a pooled
//! client connection ([`send_attempt`], the one place a request leaves for a backend). HTTP/1 to
//! a meshed peer (hint H2) travels as HTTP/2 marked `l5d-orig-proto: HTTP/1.1`.
//!
//! In explicit mode the outbound listener is the application's HTTP proxy, so a `CONNECT
//! host:port` is answered by the proxy itself (200) and the tunnel is relayed as opaque TCP to
//! the target ([`tunnel`]). Waiting for a target (discovery's first answer, then endpoints) is
//! bounded by one fail-fast timeout in total.
//!
//! mTLS: when discovery gives the endpoint an identity and this proxy has one, every connection
//! to it (pooled HTTP/2 or HTTP/1, upgrades, opaque TCP, tunnels) is TLS 1.3 with SNI = that
//! identity, and the peer's certificate must chain to our trust anchors and carry exactly it
//! ([`crate::mtls`]); otherwise the request fails with 502 and a precise `l5d-proxy-error`.
//! Opaque bytes to a meshed peer travel inside plain TLS to the endpoint (the peer's inbound
//! terminates it and serves the bytes as it would plaintext), or, when discovery gives the endpoint
//! an opaque-transport port, to that port with ALPN `transport.l5d.io/v1` and a transport header
//! naming the endpoint's port ([`forward_opaque`]).

use crate::{
    accept::Accepted,
    balance::{self, Balancer, BalancerConfig, Balancers, InFlight},
    config::{Config, PortSet, ServerLimits},
    connect::{self, Dial},
    detect::{self, Prefixed, Protocol},
    discovery::Discovery,
    discovery::{Endpoint, ProtocolHint, Resolution, Target},
    http::{self, Body, Dst, Error, HttpMetrics, Metrics, Peer, Pool, PoolLimits, Wire},
    identity::Identity,
    limits::Limits,
    metrics::{DetectResult, Direction, Labels, TlsLabel, NO_TLS_LOOPBACK},
    mtls::{self, ClientTls, Peeked, TransportHeader},
    policy::{Lookup, PolicyClient},
    relay::{self, Metered},
    tap::{Peers, Taps},
    trace::{self, Tracer},
};
use bytes::BytesMut;
use futures_util::future::BoxFuture;
use hyper::{Method, Request, Response};
use routed::{Decision, Hello, PolicyDest, PolicyDests, Reads, RouteEnd};
use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};
#[cfg(test)]
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Connections to an endpoint discovery gave no identity (or to a non-mesh destination).
const NO_TLS: TlsLabel = TlsLabel::NoIdentity(mtls::NO_TLS_FROM_DISCOVERY);

/// How the connection reached us.
#[derive(Clone, Debug)]
pub enum Origin {
    /// iptables redirected it: the original destination.
    Transparent(SocketAddr),
    /// Sent to the outbound listener itself (HTTP_PROXY style): the target comes from HTTP.
    Explicit,
    /// An upstream port bound to a logical service.
    Upstream(Target),
}

/// Discovery as the data path sees it; a trait so tests can serve a fixed endpoint set.
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Resolution>;
    /// Short names → FQDN target; `None` when the name is outside the discovery suffixes.
    fn canonicalize(&self, host: &str, port: u16) -> Option<Target>;
}

impl Resolve for Discovery {
    fn resolve<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Resolution> {
        Box::pin(Discovery::resolve(self, target))
    }
    fn canonicalize(&self, host: &str, port: u16) -> Option<Target> {
        Discovery::canonicalize(self, host, port)
    }
}

/// The outbound timeouts and port lists (the part of `Config` this path reads).
#[derive(Clone, Debug)]
pub struct Settings {
    pub detect_timeout: Duration,
    pub connect_timeout: Duration,
    pub failfast_timeout: Duration,
    pub opaque_ports: PortSet,
    /// The client connection pool towards endpoints.
    pub pool: PoolLimits,
    /// This proxy's outbound listeners: never a destination (see [`OwnAddrs`]).
    pub own: OwnAddrs,
    /// Each route's retry budget (`WEFT_PROXY_OUTBOUND_RETRY_BUDGET_*`).
    pub retry_budget: crate::config::RetryBudget,
    /// How long an endpoint no connection could be made to stays out of rotation
    /// (`WEFT_PROXY_OUTBOUND_CONNECT_BACKOFF_*`).
    pub connect_backoff: crate::backoff::BackoffConfig,
    /// How often unused balancers are swept (`WEFT_PROXY_DISCOVERY_IDLE_TIMEOUT`): one is kept
    /// between one and two of these after its last use.
    pub balancer_idle_timeout: Duration,
}

/// The addresses of this proxy's outbound listeners (the main one and the upstream ports). A
/// request or connection sent to one of them comes back into the outbound side and would be
/// forwarded again, opening a new connection each time until the
/// process runs out of descriptors (an explicit-mode client that sends `Host: <the proxy>`, or an
/// endpoint registered with the proxy's own port). The proxy answers such a request itself: 508
/// Loop Detected with `l5d-proxy-error`; an opaque connection is closed.
#[derive(Clone, Debug, Default)]
pub struct OwnAddrs {
    listeners: Vec<SocketAddr>,
    /// This host's interface addresses, for listeners bound to `0.0.0.0` / `::` (taken once, at
    /// start: a pod's addresses do not change under a running proxy).
    local_ips: Vec<IpAddr>,
}

impl OwnAddrs {
    pub fn new(listeners: Vec<SocketAddr>) -> OwnAddrs {
        let local_ips = if listeners.iter().any(|l| l.ip().is_unspecified()) {
            crate::sys::interface_ips()
        } else {
            Vec::new()
        };
        OwnAddrs {
            listeners,
            local_ips,
        }
    }

    /// Would a connection to `addr` reach one of these listeners?
    pub fn contains(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip();
        self.listeners.iter().any(|l| {
            l.port() == addr.port()
                && (l.ip() == ip
                    || ip.is_unspecified()
                    || (l.ip().is_unspecified()
                        && (ip.is_loopback() || self.local_ips.contains(&ip))))
        })
    }
}

mod opaque;
mod routed;

use opaque::{forward_opaque, tunnel};

pub struct Outbound {
    settings: Settings,
    resolver: Box<dyn Resolve>,
    metrics: Metrics,
    pool: Pool,
    /// mTLS to meshed endpoints; `None` without identity (the transitional mode).
    tls: Option<mtls::Client>,
    /// One balancer per discovered target (or policy backend), shared by every connection.
    balancers: Balancers,
    /// `OutboundPolicies`; `None`: every target takes the path without policy.
    policies: Option<PolicyClient>,
    /// Targets with a policy, shared by every connection.
    policy_dests: PolicyDests,
    /// Live taps (the proxy's one registry; a private one nobody can tap in tests).
    taps: Arc<Taps>,
    /// `WEFT_PROXY_TRACE_*`; `None`: tracing off.
    tracer: Option<Arc<Tracer>>,
    /// `WEFT_PROXY_OUTBOUND_{MAX_CONNECTIONS,SERVER_*}` and their counters.
    limits: Limits,
}

/// Where a target's traffic goes (not a "route": that word is kept for HTTPRoute rules).
#[derive(Clone)]
enum Dest {
    /// Discovered endpoints, balanced.
    Balanced(Arc<Balancer>),
    /// Discovery rejected the target: the original address, or the name resolved by DNS.
    Passthrough(Target),
    /// One endpoint a policy backend forwards to (no discovery).
    Endpoint(Endpoint),
    /// The target has an outbound policy: routes pick a backend per request.
    Policy(Arc<PolicyDest>),
}

impl Outbound {
    /// What the outbound listeners allow their clients.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// `own`: every address the proxy listens on (after binding, so port 0 is resolved).
    pub fn new(
        cfg: &Config,
        discovery: Discovery,
        metrics: Metrics,
        identity: Option<Identity>,
        own: OwnAddrs,
        taps: Arc<Taps>,
        tracer: Option<Arc<Tracer>>,
    ) -> Arc<Outbound> {
        let settings = Settings {
            detect_timeout: cfg.outbound_detect_timeout,
            connect_timeout: cfg.outbound_connect_timeout,
            failfast_timeout: cfg.outbound_failfast_timeout,
            opaque_ports: cfg.outbound_opaque_ports.clone(),
            pool: cfg.outbound_pool,
            own,
            retry_budget: cfg.outbound_retry_budget,
            connect_backoff: crate::backoff::BackoffConfig {
                min: cfg.outbound_connect_backoff.0,
                max: cfg.outbound_connect_backoff.1,
                ..balance::DEFAULT_CONNECT_BACKOFF
            },
            balancer_idle_timeout: cfg.discovery_idle_timeout,
        };
        let policies = PolicyClient::new(crate::policy::client::Settings::from_config(
            cfg,
            identity.as_ref(),
        ));
        Arc::new(Outbound {
            taps,
            tracer,
            limits: Limits::new(cfg.outbound_limits, &metrics, Direction::Outbound),
            ..Outbound::build(
                settings,
                Box::new(discovery),
                metrics,
                identity,
                Some(policies),
            )
        })
    }

    /// Without identity: every connection is plaintext.
    pub fn with_resolver(
        settings: Settings,
        resolver: Box<dyn Resolve>,
        metrics: Metrics,
    ) -> Arc<Outbound> {
        Outbound::with_identity(settings, resolver, metrics, None)
    }

    pub fn with_identity(
        settings: Settings,
        resolver: Box<dyn Resolve>,
        metrics: Metrics,
        identity: Option<Identity>,
    ) -> Arc<Outbound> {
        Outbound::with_policies(settings, resolver, metrics, identity, None)
    }

    /// `policies`: the `OutboundPolicies` client; `None` = no target has a policy.
    pub fn with_policies(
        settings: Settings,
        resolver: Box<dyn Resolve>,
        metrics: Metrics,
        identity: Option<Identity>,
        policies: Option<PolicyClient>,
    ) -> Arc<Outbound> {
        Arc::new(Outbound::build(
            settings, resolver, metrics, identity, policies,
        ))
    }

    fn build(
        settings: Settings,
        resolver: Box<dyn Resolve>,
        metrics: Metrics,
        identity: Option<Identity>,
        policies: Option<PolicyClient>,
    ) -> Outbound {
        // Balancers report `outbound_http_balancer_endpoints` at scrape time.
        let balancers = Balancers::with_metrics(metrics.clone())
            .with_reconnect_backoff(settings.connect_backoff)
            .with_idle_timeout(settings.balancer_idle_timeout);
        Outbound {
            taps: Taps::new(metrics.clone()),
            tracer: None,
            limits: Limits::unmetered(ServerLimits::outbound_default()),
            pool: Pool::with_limits(settings.connect_timeout, settings.pool, metrics.clone()),
            settings,
            resolver,
            metrics,
            tls: identity.map(mtls::Client::new),
            balancers,
            // Before `policies` moves in: the targets are kept as long as their streams.
            policy_dests: PolicyDests::new(
                policies
                    .as_ref()
                    .map_or(Duration::ZERO, PolicyClient::idle_timeout),
            ),
            policies,
        }
    }

    /// The target's policy if the control plane has one for it, else its discovered endpoints
    /// (or passthrough): a control plane without policy leaves the path as it was.
    async fn dest(&self, target: &Target) -> Dest {
        if let Some(pd) = self.policy_dests.get(target) {
            return Dest::Policy(pd);
        }
        if let Some(policies) = &self.policies {
            if let Lookup::Policy(rx) = policies.lookup(target).await {
                if let Some(pd) = PolicyDest::new(self, target, rx) {
                    return Dest::Policy(self.policy_dests.insert(pd));
                }
            }
        }
        self.discovered_dest(target).await
    }

    /// The target's endpoints from Destination.Get (a policy backend's too), balanced.
    async fn discovered_dest(&self, target: &Target) -> Dest {
        self.discovered_dest_with(target, None).await
    }

    /// As [`Outbound::discovered_dest`], the balancer configured by a policy's backend
    /// (`config`; `None`: the defaults). A balancer the target already has takes `config`.
    async fn discovered_dest_with(&self, target: &Target, config: Option<BalancerConfig>) -> Dest {
        if let Some(b) = self.balancers.get(target) {
            if let Some(config) = config {
                b.reconfigure(config);
            }
            return Dest::Balanced(b);
        }
        match self.resolver.resolve(target).await {
            Resolution::Rejected => Dest::Passthrough(target.clone()),
            Resolution::Endpoints(rx) => Dest::Balanced(match config {
                Some(config) => self.balancers.get_or_insert_with(target, rx, || config),
                None => self.balancers.get_or_insert(target, rx),
            }),
        }
    }

    /// Where an opaque connection (or a CONNECT tunnel) to a policy target goes: the backend of
    /// the policy's opaque route, or of the TLS route `hello` selects, when it has such routes;
    /// else the target's own endpoints.
    async fn opaque_dest(
        &self,
        target: &Target,
        dest: Dest,
        hello: Hello<'_>,
    ) -> Result<Dest, Error> {
        let Dest::Policy(pd) = dest else {
            return Ok(dest);
        };
        let router = pd.router(self);
        if !router.has_opaque_backends() {
            return Ok(self.discovered_dest(target).await);
        }
        router.opaque_backend(self, target, hello)?.dest(self).await
    }

    /// Picks where a request or connection goes, waiting for endpoints until `deadline` (one
    /// fail-fast timeout from when the target was first needed). Endpoints that left discovery
    /// since the last pick get their pooled connections retired. `avoid`: the endpoint a
    /// retried request's previous attempt went to, passed over when the balancer has another
    /// one available.
    async fn pick(
        &self,
        target: &Target,
        dest: Dest,
        deadline: Instant,
        avoid: Option<SocketAddr>,
    ) -> Result<Picked, Error> {
        let picked = self.pick_any(target, dest, deadline, avoid).await?;
        if self.settings.own.contains(picked.addr) {
            return Err(Error::Loop { addr: picked.addr });
        }
        Ok(picked)
    }

    async fn pick_any(
        &self,
        target: &Target,
        dest: Dest,
        deadline: Instant,
        avoid: Option<SocketAddr>,
    ) -> Result<Picked, Error> {
        match dest {
            Dest::Balanced(b) => {
                for gone in b.take_removed() {
                    self.pool.retire(gone);
                }
                let wait = deadline.saturating_duration_since(Instant::now());
                let picked = b
                    .pick_ready_avoiding(wait, avoid)
                    .await
                    .map_err(|_| unavailable(self, target))?;
                Ok(Picked {
                    addr: picked.endpoint.addr,
                    endpoint: Some(picked.endpoint.clone()),
                    in_flight: Some(picked),
                })
            }
            Dest::Passthrough(t) => Ok(Picked {
                addr: forward_addr(&t).await?,
                endpoint: None,
                in_flight: None,
            }),
            Dest::Endpoint(ep) => Ok(Picked {
                addr: ep.addr,
                endpoint: Some(ep),
                in_flight: None,
            }),
            // Routing resolves a policy to one backend before picking.
            Dest::Policy(_) => Err(Error::BadPolicy {
                reason: format!("{target} was picked without routing"),
            }),
        }
    }

    fn labels(
        &self,
        authority: Option<String>,
        target_addr: SocketAddr,
        ep: Option<&Endpoint>,
        tls: TlsLabel,
    ) -> Labels {
        Labels {
            direction: Direction::Outbound,
            authority,
            target_addr,
            tls,
            dst: ep.map_or_else(|| Arc::new(BTreeMap::new()), |e| e.labels.clone()),
        }
    }

    /// TLS towards a picked endpoint: mTLS when discovery named its identity and this proxy has
    /// one; the metrics label either way. `transport`: offer ALPN `transport.l5d.io/v1`. A proxy
    /// with identity waits for its first certificate until `deadline` rather than connect to a
    /// meshed peer in plaintext.
    async fn tls_for(
        &self,
        ep: Option<&Endpoint>,
        transport: bool,
        deadline: Instant,
    ) -> Result<(Option<ClientTls>, TlsLabel), Error> {
        let Some(peer) = ep.and_then(|e| e.identity.as_deref()) else {
            return Ok((None, NO_TLS));
        };
        let Some(client) = &self.tls else {
            return Ok((None, TlsLabel::NoIdentity(mtls::NO_TLS_LOCAL_DISABLED)));
        };
        match client.plan(peer, transport, deadline).await {
            mtls::Plan::Tls(tls) => {
                let label = TlsLabel::Established {
                    peer_id: Some(tls.identity.clone()),
                };
                Ok((Some(tls), label))
            }
            mtls::Plan::Plain(reason) => Ok((None, TlsLabel::NoIdentity(reason))),
            mtls::Plan::NoCertificate => Err(Error::NoCertificate {
                peer: peer.to_string(),
                timeout: self.settings.failfast_timeout,
            }),
        }
    }
}

/// The outcome of a pick: where to connect, the endpoint (labels, hint) and the balancer's
/// outstanding-request guard, held until the request or connection ends.
struct Picked {
    addr: SocketAddr,
    endpoint: Option<Endpoint>,
    in_flight: Option<InFlight>,
}

/// Handles one connection from the application until it closes.
pub async fn handle(ob: Arc<Outbound>, conn: Accepted, origin: Origin) {
    let Accepted {
        stream,
        peer,
        local,
        drain,
        ..
    } = conn;

    // 1. Target: fixed for the connection, except in explicit mode where HTTP names it.
    let target = match origin {
        Origin::Transparent(addr) => Some(Target::Addr(addr)),
        Origin::Upstream(t) => Some(t),
        Origin::Explicit => None,
    };
    let target_addr = match &target {
        Some(Target::Addr(a)) => *a,
        _ => local,
    };
    // The application's side of the connection is plaintext on the local host.
    let src_metrics = ob.metrics.tcp_open(
        &ob.labels(
            None,
            target_addr,
            None,
            TlsLabel::NoIdentity(NO_TLS_LOOPBACK),
        ),
        Peer::Src,
    );
    let mut io = Metered::new(stream, src_metrics);

    if let Some(Target::Addr(addr)) = &target {
        if ob.settings.own.contains(*addr) {
            // Redirected or sent to this proxy's own listener: forwarding would come back here.
            return tracing::info!(%addr, "refusing a connection to this proxy's own listener (a loop)");
        }
    }

    // 2. Policy, else discovery, early for a fixed target: either may say the service is
    // opaque. The fail-fast clock for this connection's endpoint starts now. (Boxed: the
    // policy wait and discovery states would otherwise size every connection's task.)
    let deadline = Instant::now() + ob.settings.failfast_timeout;
    let dest = match &target {
        Some(t) => Some(Box::pin(ob.dest(t)).await),
        None => None,
    };
    let (reads, opaque_by) = match (&target, &dest) {
        (Some(t), Some(dest)) => match reads(dest) {
            Reads::Detect if ob.settings.opaque_ports.contains(&port_of(t)) => {
                (Reads::Opaque, DetectResult::OpaquePort)
            }
            reads => (reads, DetectResult::OpaquePolicy),
        },
        _ => (Reads::Detect, DetectResult::OpaquePolicy),
    };

    // 3. Detect: when the policy routes TLS by SNI, read the ClientHello (the application
    //    speaks first in TLS; its bytes are replayed unmodified); else detect HTTP, unless the
    //    port or the service is known to be opaque.
    //    Each connection counts how that was decided (`protocol_detection_*`).
    let started = Instant::now();
    let detected = |result| {
        ob.metrics
            .detected(Direction::Outbound, result, started.elapsed())
    };
    let (protocol, io, peeked) = if reads == Reads::ClientHello {
        match mtls::peek_client_hello(&mut io, ob.settings.detect_timeout).await {
            Ok((peeked, read)) => {
                detected(match peeked {
                    Peeked::Hello(_) => DetectResult::Tls,
                    Peeked::Silent => DetectResult::Timeout,
                    Peeked::NotTls | Peeked::Malformed => DetectResult::Opaque,
                });
                (Protocol::Opaque, Prefixed::new(read, io), Some(peeked))
            }
            Err(e) => {
                detected(DetectResult::Error);
                return tracing::debug!(error = %e, "connection failed before its ClientHello");
            }
        }
    } else if reads == Reads::Opaque {
        detected(opaque_by);
        (Protocol::Opaque, Prefixed::new(BytesMut::new(), io), None)
    } else {
        match detect::detect_outcome(io, ob.settings.detect_timeout).await {
            Ok((outcome, io)) => {
                detected(outcome.result());
                (outcome.protocol(), io, None)
            }
            Err(e) => {
                detected(DetectResult::Error);
                return tracing::debug!(error = %e, "connection failed during detection");
            }
        }
    };

    // 4. Forward: relay bytes (to the route the SNI selects, for TLS routes), or serve HTTP
    //    with a balanced endpoint per request.
    match (protocol, target, dest) {
        (Protocol::Opaque, Some(target), Some(dest)) => {
            let hello = Hello::of(peeked.as_ref());
            // Boxed: connect + TLS + relay states are large, and only opaque connections
            // need them (an HTTP connection's task stays small).
            match Box::pin(forward_opaque(
                &ob, io, &target, dest, hello, deadline, None,
            ))
            .await
            {
                Ok(()) => {}
                // Logged (and counted) where the policy refused it.
                Err(Error::Forbidden { .. }) => {}
                Err(e) => tracing::info!(%target, error = %e, "opaque connection failed"),
            }
        }
        (Protocol::Opaque, ..) => {
            tracing::info!("explicit-mode connection is not HTTP: nothing to forward it to");
        }
        (protocol, target, dest) => {
            // A fixed target's dest (and so its balancer) lives as long as the connection.
            let fixed = target.zip(dest);
            let limits = ob.clone();
            // The body of `serve_request`, written out: as a call, its extra future layer cost
            // ~1,500 instructions per HTTP/2 request (bench/callgrind.py).
            let svc = hyper::service::service_fn(move |mut req| {
                let ob = ob.clone();
                let fixed = fixed.clone();
                async move {
                    // Trace: tracing off is one branch; an unsampled request reads its trace
                    // headers and goes on as untraced; no wrapper future either way.
                    let span = match &ob.tracer {
                        None => None,
                        Some(tracer) => tracer.start(trace::Kind::Outbound, &mut req),
                    };
                    let resp = match span {
                        None => forward_request(ob, peer, fixed, req, None).await,
                        // Boxed: only a sampled request carries the span state.
                        Some(span) => Box::pin(traced(ob, span, peer, fixed, req)).await,
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            http::serve(io, protocol, svc, drain, &limits.limits).await;
        }
    }
}

/// One HTTP request to a fixed target, traced when tracing is on and it is sampled (what
/// `handle` does for each request, written out there).
async fn serve_request<B>(
    ob: Arc<Outbound>,
    client: SocketAddr,
    fixed: Option<(Target, Dest)>,
    mut req: Request<B>,
) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<http::BoxError>,
{
    // Trace: tracing off is one branch; an unsampled request reads its trace headers and goes
    // on as untraced; no wrapper future either way.
    let span = match &ob.tracer {
        None => None,
        Some(tracer) => tracer.start(trace::Kind::Outbound, &mut req),
    };
    match span {
        None => forward_request(ob, client, fixed, req, None).await,
        // Boxed: only a sampled request carries the span state.
        Some(span) => Box::pin(traced(ob, span, client, fixed, req)).await,
    }
}

/// A target named by someone other than the application — the inbound gateway's transport
/// header (`inbound::gateway`) — with its policy or discovered endpoints, looked up once for
/// the connection that named it.
#[derive(Clone)]
pub struct Fixed {
    target: Target,
    dest: Dest,
}

impl Outbound {
    /// `target`'s policy or endpoints, as for a connection of the application's to it.
    pub async fn fixed(&self, target: Target) -> Fixed {
        let dest = self.dest(&target).await;
        Fixed { target, dest }
    }
}

/// One HTTP request to a [`Fixed`] target, as if the application had sent it on a connection
/// to that target: route, balance, mTLS, retries, metrics, tap and trace all as usual.
pub async fn forward_fixed<B>(
    ob: Arc<Outbound>,
    client: SocketAddr,
    fixed: Fixed,
    req: Request<B>,
) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<http::BoxError>,
{
    serve_request(ob, client, Some((fixed.target, fixed.dest)), req).await
}

/// An opaque byte stream to a [`Fixed`] target, relayed as the application's would be (one
/// endpoint for the stream, its opaque or TLS route when the policy has one), for `caller`: the
/// transport header to a meshed endpoint names it (a target trusting this gateway authorizes
/// the caller, not us).
pub async fn relay_fixed<I>(
    ob: &Outbound,
    client: I,
    fixed: Fixed,
    caller: &str,
) -> Result<(), Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin,
{
    let deadline = Instant::now() + ob.settings.failfast_timeout;
    let client = Prefixed::new(BytesMut::new(), client);
    forward_opaque(
        ob,
        client,
        &fixed.target,
        fixed.dest,
        Hello::Unread,
        deadline,
        Some(caller),
    )
    .await
}

fn port_of(t: &Target) -> u16 {
    match t {
        Target::Name { port, .. } => *port,
        Target::Addr(a) => a.port(),
    }
}

/// How `dest`'s connections are read: its policy's say, or its discovery's opaque hint.
fn reads(dest: &Dest) -> Reads {
    match dest {
        Dest::Balanced(b) if b.snapshot().opaque => Reads::Opaque,
        Dest::Balanced(_) | Dest::Passthrough(_) | Dest::Endpoint(_) => Reads::Detect,
        Dest::Policy(pd) => pd.router_reads(),
    }
}

fn unavailable(ob: &Outbound, target: &Target) -> Error {
    Error::Unavailable {
        target: target.to_string(),
        timeout: ob.settings.failfast_timeout,
    }
}

/// The address of a target discovery rejected: as-is, or the name through DNS.
async fn forward_addr(target: &Target) -> Result<SocketAddr, Error> {
    match target {
        Target::Addr(a) => Ok(*a),
        Target::Name { host, port } => {
            let dns = |reason: String| Error::Dns {
                host: host.clone(),
                reason,
            };
            let mut addrs = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|e| dns(e.to_string()))?;
            addrs.next().ok_or_else(|| dns("no addresses".into()))
        }
    }
}

/// One HTTP request without tracing (the request path as tests drive it); errors become
/// responses here. `client`: the application's address; `fixed` is the connection's target and
/// dest (transparent or upstream); `None` in explicit mode, where the request names its target.
#[cfg(test)]
fn proxy_request<B>(
    ob: Arc<Outbound>,
    client: SocketAddr,
    fixed: Option<(Target, Dest)>,
    req: Request<B>,
) -> impl std::future::Future<Output = Response<Body>>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<http::BoxError>,
{
    forward_request(ob, client, fixed, req, None)
}

/// [`forward_request`] for a sampled request: `span` (CLIENT, started by the tracer, which
/// rewrote the request's headers for the next hop) learns the route and the endpoint and ends
/// at the response head.
async fn traced<B>(
    ob: Arc<Outbound>,
    span: trace::Span,
    client: SocketAddr,
    fixed: Option<(Target, Dest)>,
    req: Request<B>,
) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<http::BoxError>,
{
    let resp = forward_request(ob.clone(), client, fixed, req, Some(&span)).await;
    if let Some(tracer) = &ob.tracer {
        tracer.end(span, &resp);
    }
    resp
}

/// One HTTP request; errors become responses here. `client`: the application's address;
/// `fixed` is the connection's target and dest (transparent or upstream); `None` in explicit
/// mode, where the request names its target. `span`: this hop's span when the request is traced
/// (it learns the route and the endpoint).
async fn forward_request<B>(
    ob: Arc<Outbound>,
    client: SocketAddr,
    fixed: Option<(Target, Dest)>,
    req: Request<B>,
    span: Option<&trace::Span>,
) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<http::BoxError>,
{
    let started = Instant::now();
    // One fail-fast timeout covers both waiting for discovery and waiting for endpoints.
    let deadline = started + ob.settings.failfast_timeout;
    let authority = http::authority_of(&req);
    if fixed.is_none() && req.method() == Method::CONNECT {
        // Boxed: a rare path whose states (connect, TLS) would size every request's future.
        return Box::pin(tunnel(ob, req, authority, started)).await;
    }
    let mut req = req.map(http::boxed);

    // 1. Target: the connection's, or in explicit mode the one the request names
    //    (absolute-form or Host), with its policy or discovered endpoints.
    let (target, dest) = match fixed {
        // A fixed target was checked against the proxy's own listeners when the connection
        // was accepted (`handle`).
        Some((t, dest)) => (t, Some(dest)),
        None => match explicit_target(&ob, authority.as_deref()) {
            Some((Target::Addr(addr), _)) if ob.settings.own.contains(addr) => {
                // Before discovery: a loop is known from the address alone.
                let authority = authority.unwrap_or_else(|| addr.to_string());
                let labels = ob.labels(Some(authority), addr, None, NO_TLS);
                return early_error(&ob, &labels, Error::Loop { addr }, started);
            }
            Some((t, true)) => (t, None),
            Some((t, false)) => (t.clone(), Some(Dest::Passthrough(t))),
            None => return Error::NoAuthority.into_response(),
        },
    };
    let dest = match dest {
        Some(dest) => dest,
        None => ob.dest(&target).await,
    };
    let authority = authority.unwrap_or_else(|| target.to_string());
    let Dest::Policy(pd) = dest else {
        // No policy: balance over the target's endpoints and send (steps 5 and 7).
        return send_attempt(
            &ob,
            &target,
            dest,
            req,
            authority,
            deadline,
            Seam::once(&mut None, client, None, span),
        )
        .await
        .unwrap_or_else(Error::into_response);
    };

    // 2.–4. Route match → request filters (a redirect or an injected failure answers here)
    //       → backend choice (weighted) → backend filters.
    let fwd = match routed::route(&ob, &pd, &mut req, started) {
        Decision::Respond(resp) => return resp,
        Decision::Forward(fwd) => fwd,
    };
    if let Some((span, route)) = span.zip(fwd.route_meta()) {
        span.route(&route);
    }
    // The route and backend outcome is recorded when the response ends.
    let mut end = Some(fwd.dispatch());
    // 5. Balance: the chosen backend's own balancer (one per backend, shared through
    //    `Balancers`), a forwarded endpoint, or why the backend cannot be used.
    let backend_target = fwd.slot.target().unwrap_or(&target).clone();
    let dest = match fwd.slot.dest(&ob).await {
        Ok(dest) => dest,
        Err(e) => return fail_routed(e, fwd.grpc, &mut end),
    };
    // 6. Timeouts: the whole exchange (the rule's request timeout, bounded by the client's
    //    `grpc-timeout`) and one attempt (the backend's request timeout / the rule's response
    //    timeout). An expired one answers 504 (gRPC: DEADLINE_EXCEEDED).
    let (whole, per_attempt) = fwd.limits(req.headers());
    // The route's idle timeout: no frame either way for that long ends the request, before
    // the response headers (504) or after (the response body fails).
    let idle = fwd.idle();
    if let Some(idle) = &idle {
        req = idle.watch_request(req);
    }
    // 7. Send: one attempt, or with the rule's retry policy as many as it, the route's retry
    //    budget and the body (replayable up to the policy's bound) allow. `send_attempt` is the
    //    only place a request leaves for a backend.
    let failfast = fwd.deadline(ob.settings.failfast_timeout);
    let sent = match fwd.retry.clone() {
        None => {
            let mut no_end = None;
            let http_end = if fwd.grpc { &mut no_end } else { &mut end };
            // Pinned where it is built: the timeouts wrap a pointer to it, not a copy of its
            // kilobytes of state each (callgrind: memcpy was a fifth of the outbound's work).
            let attempt = std::pin::pin!(send_attempt(
                &ob,
                &backend_target,
                dest,
                req,
                authority,
                failfast,
                Seam::once(http_end, client, Some(&fwd), span),
            ));
            let bounded = routed::within(whole, routed::within(per_attempt, attempt));
            routed::idle_bounded(idle.as_ref(), bounded).await
        }
        Some((policy, route)) => {
            let whole_deadline = whole.map(|l| Instant::now() + l.timeout);
            let own_try_timeout = policy.timeout.is_some();
            let (ob, target, fwd) = (&ob, &backend_target, &fwd);
            // The endpoint of the previous attempt: a retry goes elsewhere when it can.
            let previous = std::sync::Mutex::new(None);
            let previous = &previous;
            let retried = crate::retry::send(
                &policy,
                &route.budget,
                route.metrics.retries(),
                whole_deadline,
                req,
                |req| {
                    let (dest, authority) = (dest.clone(), authority.clone());
                    Box::pin(async move {
                        let mut no_end = None;
                        let seam = Seam {
                            end: &mut no_end,
                            previous: Some(previous),
                            client,
                            route: Some(fwd),
                            span,
                        };
                        let attempt =
                            send_attempt(ob, target, dest, req, authority, failfast, seam);
                        // The policy's per-try timeout applies inside `retry::send`; without
                        // one, the backend's.
                        if own_try_timeout {
                            attempt.await
                        } else {
                            routed::within(per_attempt, attempt).await
                        }
                    })
                },
            );
            let retried = futures_util::FutureExt::map(retried, |(answer, _)| match answer {
                Ok(resp) => Ok(resp),
                Err(crate::retry::Failure::Http(e)) => Err(e),
                Err(crate::retry::Failure::Timeout(timeout)) => Err(Error::Timeout {
                    what: "retry attempt",
                    timeout,
                }),
            });
            let bounded = routed::within(whole, retried);
            let answer = routed::idle_bounded(idle.as_ref(), bounded).await;
            // The route's outcome is the final answer's: recorded when its body ends.
            answer.map(|resp| match end.take() {
                Some(mut e) if !e.is_grpc() => {
                    e.headers(&resp);
                    e.observe(resp)
                }
                e => {
                    end = e;
                    resp
                }
            })
        }
    };
    // 8. Response filters (the rule's, then the backend's).
    match sent {
        Ok(mut resp) => {
            fwd.response_filters(&mut resp);
            match end.take() {
                // gRPC: the status arrives in trailers; record at the body's end.
                Some(mut e) if e.is_grpc() => {
                    e.headers(&resp);
                    e.observe(resp)
                }
                _ => resp,
            }
        }
        Err(e) => fail_routed(e, fwd.grpc, &mut end),
    }
}

/// A routed request the proxy answers with an error: the response, and the route outcome
/// (recorded as `end` drops).
fn fail_routed(e: Error, grpc: bool, end: &mut Option<RouteEnd>) -> Response<Body> {
    let mut end = end.take();
    if let Some(end) = end.as_mut() {
        end.failed(&e);
    }
    let resp = e.into_response_for(grpc);
    if let Some(end) = end.as_mut() {
        end.headers(&resp);
    }
    resp
}

/// What an attempt shares with the request around it.
struct Seam<'a> {
    /// The routed request's outcome recorder, carried with an HTTP response until its body
    /// ends (left in place when the attempt fails: the caller records the error).
    end: &'a mut Option<RouteEnd>,
    /// Retries: the endpoint the previous attempt went to, which this one passes over when the
    /// balancer has another available (a dead endpoint that fails fast would otherwise look
    /// cheap to peak-EWMA and take the retry too); this attempt's endpoint is left here.
    previous: Option<&'a std::sync::Mutex<Option<SocketAddr>>>,
    /// The application's address (tap events' source).
    client: SocketAddr,
    /// The route that took the request, if one did (tap events' route labels).
    route: Option<&'a routed::Forwarded>,
    /// The request's span when it is traced (it learns the endpoint).
    span: Option<&'a trace::Span>,
}

impl<'a> Seam<'a> {
    /// A request sent once.
    fn once(
        end: &'a mut Option<RouteEnd>,
        client: SocketAddr,
        route: Option<&'a routed::Forwarded>,
        span: Option<&'a trace::Span>,
    ) -> Seam<'a> {
        Seam {
            end,
            previous: None,
            client,
            route,
            span,
        }
    }
}

/// One attempt at a request: balance over `dest`'s endpoints (waiting for one until
/// `deadline`), TLS, connect and send. The seam for retries: a retry loop calls it once per
/// attempt. Endpoint metrics (`request_total`, `response_total`) are recorded here, errors
/// included; the caller turns an `Err` into the response.
async fn send_attempt(
    ob: &Outbound,
    target: &Target,
    dest: Dest,
    mut req: Request<Body>,
    authority: String,
    deadline: Instant,
    seam: Seam<'_>,
) -> Result<Response<Body>, Error> {
    let Seam {
        end,
        previous,
        client,
        route,
        span,
    } = seam;
    let started = Instant::now();
    let upgrade = http::is_upgrade(&req);
    let mut dest = dest;
    let mut avoid = previous.and_then(last_endpoint);
    let mut authority = Some(authority);
    let mut not_connected = None;
    // Balance, then connect: a request waits for endpoints until the fail-fast deadline, and is
    // only sent over a connection made to its endpoint. An endpoint no connection could be made
    // to leaves rotation until a reconnect in the background succeeds, and the request is picked
    // again (nothing was sent, so any request may go elsewhere), as Linkerd's balancer dispatches
    // only to endpoints it is connected to. If the deadline passes that way, the last connect
    // error says why.
    let (addr, mut in_flight, dst, wire, labels, checkout) = loop {
        let Picked {
            addr,
            endpoint,
            mut in_flight,
        } = match ob.pick(target, dest, deadline, avoid).await {
            Ok(picked) => picked,
            Err(e) => {
                let e = not_connected.map_or(e, |b: Box<Error>| *b);
                let labels = ob.labels(authority, target_addr_of(target), None, NO_TLS);
                return Err(count_error(&ob.metrics.http(&labels), e, started, true));
            }
        };
        let hint = endpoint
            .as_ref()
            .map_or(ProtocolHint::Unknown, |e| e.hint.clone());
        // A gateway endpoint (authority override): opaque transport to it, HTTP/2 inside.
        let tagged = endpoint.as_ref().and_then(tagged);
        let (tls, tls_label) = match ob
            .tls_for(endpoint.as_ref(), tagged.is_some(), deadline)
            .await
        {
            Ok(tls) => tls,
            Err(e) => {
                let labels = ob.labels(authority, addr, endpoint.as_ref(), NO_TLS);
                return Err(count_error(&ob.metrics.http(&labels), e, started, true));
            }
        };
        let mut labels = ob.labels(authority, addr, endpoint.as_ref(), tls_label);
        let dst = Dst { addr, tls, tagged };
        // The wire protocol for this endpoint: HTTP/2 as the client spoke it, or to an endpoint
        // that takes it (discovery's hint, a gateway); HTTP/1 otherwise and for upgrades.
        let wire = if !upgrade
            && (req.version() == hyper::Version::HTTP_2
                || hint == ProtocolHint::H2
                || dst.tagged.is_some())
        {
            Wire::Http2
        } else {
            Wire::Http1
        };
        let checkout = if upgrade {
            Box::pin(ob.pool.checkout_upgrade(&dst, &labels)).await
        } else {
            ob.pool.checkout(&dst, wire, &labels).await
        };
        match (checkout, in_flight.as_mut()) {
            (Ok(checkout), _) => break (addr, in_flight, dst, wire, labels, checkout),
            (Err(e), Some(f)) if e.not_connected() && Instant::now() < deadline => {
                tracing::debug!(%addr, error = %e, "no connection to the endpoint; picking another");
                if f.connect_failed() {
                    // The reconnect makes a pooled connection, as a request would.
                    let (pool, labels) = (ob.pool.clone(), labels.clone());
                    f.balancer().spawn_reconnect(addr, move || {
                        let (pool, dst, labels) = (pool.clone(), dst.clone(), labels.clone());
                        async move { pool.reconnect(&dst, wire, &labels).await }
                    });
                }
                dest = Dest::Balanced(f.balancer().clone());
                avoid = Some(addr);
                authority = labels.authority.take();
                // Boxed: the request's future holds it (a rare case) across the next pick.
                not_connected = Some(Box::new(e));
            }
            (Err(e), _) => return Err(count_error(&ob.metrics.http(&labels), e, started, true)),
        }
    };
    if let Some(previous) = previous {
        *previous.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr);
    }
    let metrics = ob.metrics.http(&labels);
    metrics.request();
    if let Some(span) = span {
        span.endpoint(addr, &labels.tls);
    }
    if let Some(t) = &dst.tagged {
        http::override_authority(&mut req, &t.authority);
    }
    // Tap: one relaxed load when nobody taps (boxed state otherwise).
    let tapped = if ob.taps.is_active() {
        let route = route.and_then(routed::Forwarded::route_meta);
        let peers = Peers::of(&labels, client, route.as_deref());
        ob.taps.request(peers, &req)
    } else {
        None
    };

    // Send, in the wire protocol chosen for the endpoint.
    if upgrade {
        http::to_http1(&mut req, true);
    } else if wire == Wire::Http1 {
        http::to_http1(&mut req, false);
    } else if req.version() != hyper::Version::HTTP_2 {
        http::upgrade_to_h2(&mut req);
    }
    let sent = checkout.send(&dst, req, &labels).await;
    // The balancer learns the endpoint's latency (pick to response head) and whether it failed.
    if let Some(f) = in_flight.as_mut() {
        f.complete(match &sent {
            Ok(resp) => balance::Outcome::of_response(resp.status(), resp.headers()),
            Err(_) => balance::Outcome::Error,
        });
    }
    match sent {
        Ok(mut resp) => {
            resp.headers_mut().remove(http::L5D_ORIG_PROTO);
            let route_end = end.take().map(|mut e| {
                e.headers(&resp);
                e
            });
            // One allocation holds whatever must live until the body ends.
            let hold = match (in_flight, route_end) {
                (None, None) => None,
                (f, r) => Some(Box::new((f, r)) as Box<dyn std::any::Any + Send>),
            };
            let resp = http::metered_response(resp, metrics, started.into_std(), hold);
            Ok(match tapped {
                Some(t) => t.response(resp),
                None => resp,
            })
        }
        Err(e) => {
            if let Some(t) = tapped {
                // The proxy answers with the error: its status, no body.
                t.failed(e.status());
            }
            Err(count_error(&metrics, e, started, false))
        }
    }
}

/// How a gateway endpoint is reached: discovery gave it an authority override and the port
/// its proxy takes opaque transport on (without that port there is no way to name the
/// override: the endpoint is reached as any other).
fn tagged(ep: &Endpoint) -> Option<http::Tagged> {
    Some(http::Tagged {
        port: ep.opaque_transport_port?,
        authority: ep.authority_override.clone()?,
    })
}

/// The endpoint a retried request's previous attempt went to.
fn last_endpoint(previous: &std::sync::Mutex<Option<SocketAddr>>) -> Option<SocketAddr> {
    *previous.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records an attempt that ended in a proxy error (`request`: also count the request, when it
/// failed before reaching an endpoint).
fn count_error(metrics: &HttpMetrics, e: Error, started: Instant, request: bool) -> Error {
    if request {
        metrics.request();
    }
    metrics.response(e.status().as_u16(), None, false, started.elapsed());
    e
}

/// Explicit-mode target from an authority: `(target, discover?)`. Names outside the discovery
/// suffixes are forwarded through DNS without discovery.
fn explicit_target(ob: &Outbound, authority: Option<&str>) -> Option<(Target, bool)> {
    let uri_authority: ::http::uri::Authority = authority?.parse().ok()?;
    let host = uri_authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri_authority.port_u16().unwrap_or(80);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some((Target::Addr(SocketAddr::new(ip, port)), true));
    }
    match ob.resolver.canonicalize(host, port) {
        Some(t) => Some((t, true)),
        None => Some((
            Target::Name {
                host: host.to_string(),
                port,
            },
            false,
        )),
    }
}

fn target_addr_of(target: &Target) -> SocketAddr {
    match target {
        Target::Addr(a) => *a,
        Target::Name { port, .. } => SocketAddr::from(([0, 0, 0, 0], *port)),
    }
}

/// A request that failed before reaching an endpoint still counts as a request and a response.
fn early_error(ob: &Outbound, labels: &Labels, e: Error, started: Instant) -> Response<Body> {
    let metrics = ob.metrics.http(labels);
    metrics.request();
    record_error(metrics, e, started)
}

fn record_error(metrics: HttpMetrics, e: Error, started: Instant) -> Response<Body> {
    let resp = e.into_response();
    metrics.response(resp.status().as_u16(), None, false, started.elapsed());
    resp
}

/// The application's address in tests that call [`proxy_request`] directly.
#[cfg(test)]
fn test_client() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1))
}

#[cfg(test)]
#[path = "outbound_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "outbound/policy_tests.rs"]
mod policy_tests;
