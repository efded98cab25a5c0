//! The outbound request path: app → target → detect → discover → balance → connect.
//!
//! [`handle`] takes one connection from the application. Its target comes from how it arrived
//! ([`Origin`]); in explicit mode (`HTTP_PROXY`) each HTTP request names its own target. Opaque
//! connections pick one endpoint and relay bytes; HTTP connections are served by hyper and every
//! request picks its own endpoint (P2C) and goes out over a pooled client connection. HTTP/1 to a
//! meshed peer (hint H2) travels as HTTP/2 marked `l5d-orig-proto: HTTP/1.1`.
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
    balance::{Balancer, Balancers, InFlight},
    config::{Config, PortSet},
    connect::{self, Dial},
    detect::{self, Prefixed, Protocol},
    discovery::Discovery,
    discovery::{Endpoint, ProtocolHint, Resolution, Target},
    http::{self, Body, Dst, Error, HttpMetrics, Metrics, Peer, Pool, PoolLimits, Wire},
    identity::Identity,
    metrics::{Direction, Labels, TlsLabel, NO_TLS_LOOPBACK},
    mtls::{self, ClientTls, TransportHeader},
    relay::{self, Metered},
};
use bytes::BytesMut;
use futures_util::future::BoxFuture;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};
use tokio::{net::TcpStream, time::Instant};

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

pub struct Outbound {
    settings: Settings,
    resolver: Box<dyn Resolve>,
    metrics: Metrics,
    pool: Pool,
    /// mTLS to meshed endpoints; `None` without identity (the transitional mode).
    tls: Option<mtls::Client>,
    /// One balancer per discovered target, shared by every connection.
    balancers: Balancers,
}

/// Where a target's traffic goes (not a "route": that word is kept for HTTPRoute rules).
#[derive(Clone)]
enum Dest {
    /// Discovered endpoints, balanced.
    Balanced(Arc<Balancer>),
    /// Discovery rejected the target: the original address, or the name resolved by DNS.
    Passthrough(Target),
}

impl Outbound {
    /// `own`: every address the proxy listens on (after binding, so port 0 is resolved).
    pub fn new(
        cfg: &Config,
        discovery: Discovery,
        metrics: Metrics,
        identity: Option<Identity>,
        own: OwnAddrs,
    ) -> Arc<Outbound> {
        let settings = Settings {
            detect_timeout: cfg.outbound_detect_timeout,
            connect_timeout: cfg.outbound_connect_timeout,
            failfast_timeout: cfg.outbound_failfast_timeout,
            opaque_ports: cfg.outbound_opaque_ports.clone(),
            pool: cfg.outbound_pool,
            own,
        };
        Outbound::with_identity(settings, Box::new(discovery), metrics, identity)
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
        Arc::new(Outbound {
            pool: Pool::with_limits(settings.connect_timeout, settings.pool, metrics.clone()),
            settings,
            resolver,
            metrics,
            tls: identity.map(mtls::Client::new),
            balancers: Balancers::default(),
        })
    }

    async fn dest(&self, target: &Target) -> Dest {
        if let Some(b) = self.balancers.get(target) {
            return Dest::Balanced(b);
        }
        match self.resolver.resolve(target).await {
            Resolution::Rejected => Dest::Passthrough(target.clone()),
            Resolution::Endpoints(rx) => Dest::Balanced(self.balancers.get_or_insert(target, rx)),
        }
    }

    /// Picks where a request or connection goes, waiting for endpoints until `deadline` (one
    /// fail-fast timeout from when the target was first needed). Endpoints that left discovery
    /// since the last pick get their pooled connections retired.
    async fn pick(&self, target: &Target, dest: Dest, deadline: Instant) -> Result<Picked, Error> {
        let picked = self.pick_any(target, dest, deadline).await?;
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
    ) -> Result<Picked, Error> {
        match dest {
            Dest::Balanced(b) => {
                for gone in b.take_removed() {
                    self.pool.retire(gone);
                }
                let wait = deadline.saturating_duration_since(Instant::now());
                let picked = b
                    .pick_ready(wait)
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
                    peer_id: Some(tls.identity.to_string()),
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
    let io = Metered::new(stream, src_metrics);

    if let Some(Target::Addr(addr)) = &target {
        if ob.settings.own.contains(*addr) {
            // Redirected or sent to this proxy's own listener: forwarding would come back here.
            return tracing::info!(%addr, "refusing a connection to this proxy's own listener (a loop)");
        }
    }

    // 2. Discover early for a fixed target: discovery may say the service is opaque. The
    // fail-fast clock for this connection's endpoint starts now.
    let deadline = Instant::now() + ob.settings.failfast_timeout;
    let dest = match &target {
        Some(t) => Some(ob.dest(t).await),
        None => None,
    };
    let known_opaque = match (&target, &dest) {
        (Some(t), Some(dest)) => ob.settings.opaque_ports.contains(&port_of(t)) || is_opaque(dest),
        _ => false,
    };

    // 3. Detect, unless the port or the service is known to be opaque.
    let (protocol, io) = if known_opaque {
        (Protocol::Opaque, Prefixed::new(BytesMut::new(), io))
    } else {
        match detect::detect(io, ob.settings.detect_timeout).await {
            Ok(detected) => detected,
            Err(e) => return tracing::debug!(error = %e, "connection failed during detection"),
        }
    };

    // 4. Forward: relay bytes, or serve HTTP with a balanced endpoint per request.
    match (protocol, target, dest) {
        (Protocol::Opaque, Some(target), Some(dest)) => {
            // Boxed: connect + TLS + relay states are large, and only opaque connections
            // need them (an HTTP connection's task stays small).
            if let Err(e) = Box::pin(forward_opaque(&ob, io, &target, dest, deadline)).await {
                tracing::info!(%target, error = %e, "opaque connection failed");
            }
        }
        (Protocol::Opaque, ..) => {
            tracing::info!("explicit-mode connection is not HTTP: nothing to forward it to");
        }
        (protocol, target, dest) => {
            // A fixed target's dest (and so its balancer) lives as long as the connection.
            let fixed = target.zip(dest);
            let svc = hyper::service::service_fn(move |req| {
                let ob = ob.clone();
                let fixed = fixed.clone();
                async move { Ok::<_, Infallible>(proxy_request(ob, fixed, req).await) }
            });
            http::serve(io, protocol, svc, drain).await;
        }
    }
}

fn port_of(t: &Target) -> u16 {
    match t {
        Target::Name { port, .. } => *port,
        Target::Addr(a) => a.port(),
    }
}

fn is_opaque(dest: &Dest) -> bool {
    match dest {
        Dest::Balanced(b) => b.snapshot().opaque,
        Dest::Passthrough(_) => false,
    }
}

/// Opaque TCP: one endpoint for the whole connection, bytes relayed both ways with half-close.
/// A meshed endpoint whose discovery hint names an opaque-transport port is reached on that port
/// (its proxy's inbound listener) with ALPN `transport.l5d.io/v1`, the transport header naming the
/// endpoint's own port; otherwise over mTLS (or plaintext) to the endpoint itself.
async fn forward_opaque(
    ob: &Outbound,
    client: Prefixed<Metered<TcpStream>>,
    target: &Target,
    dest: Dest,
    deadline: Instant,
) -> Result<(), Error> {
    let Picked {
        addr,
        endpoint,
        in_flight: _in_flight,
    } = ob.pick(target, dest, deadline).await?;
    let transport_port = endpoint.as_ref().and_then(|e| e.opaque_transport_port);
    let (tls, tls_label) = ob
        .tls_for(endpoint.as_ref(), transport_port.is_some(), deadline)
        .await?;
    let labels = ob.labels(None, addr, endpoint.as_ref(), tls_label);
    // The transport header only travels inside TLS: without it, connect to the endpoint as is.
    let (dial_addr, header) = match (transport_port, &tls) {
        (Some(port), Some(_)) => (
            SocketAddr::new(addr.ip(), port),
            Some(TransportHeader {
                port: addr.port(),
                name: None,
                protocol: None,
            }),
        ),
        _ => (addr, None),
    };
    let dial = Dial {
        addr: dial_addr,
        tls: tls.as_ref(),
        header: header.as_ref(),
    };
    let server = connect::connect(dial, ob.settings.connect_timeout, &ob.metrics, &labels).await?;
    let moved = relay::relay(client, server)
        .await
        .map_err(|source| Error::Relay { addr, source })?;
    tracing::debug!(%target, %addr, ?moved, "opaque connection closed");
    Ok(())
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

/// One HTTP request: target → endpoint → pooled connection; errors become responses here.
/// `fixed` is the connection's target and dest (transparent or upstream); `None` in explicit
/// mode, where the request names its target.
async fn proxy_request<B>(
    ob: Arc<Outbound>,
    fixed: Option<(Target, Dest)>,
    req: Request<B>,
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

    // Explicit mode: the request names the target (absolute-form or Host).
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

    // Balance: a request waits for endpoints until the fail-fast deadline.
    let Picked {
        addr,
        endpoint,
        in_flight,
    } = match ob.pick(&target, dest, deadline).await {
        Ok(picked) => picked,
        Err(e) => {
            let labels = ob.labels(Some(authority), target_addr_of(&target), None, NO_TLS);
            return early_error(&ob, &labels, e, started);
        }
    };
    let hint = endpoint
        .as_ref()
        .map_or(ProtocolHint::Unknown, |e| e.hint.clone());
    let (tls, tls_label) = match ob.tls_for(endpoint.as_ref(), false, deadline).await {
        Ok(tls) => tls,
        Err(e) => {
            let labels = ob.labels(Some(authority), addr, endpoint.as_ref(), NO_TLS);
            return early_error(&ob, &labels, e, started);
        }
    };
    let labels = ob.labels(Some(authority), addr, endpoint.as_ref(), tls_label);
    let metrics = ob.metrics.http(&labels);
    metrics.request();
    let dst = Dst { addr, tls };

    // Connect: choose the wire protocol for this endpoint and send.
    let sent = if http::is_upgrade(&req) {
        http::to_http1(&mut req, true);
        Box::pin(ob.pool.send_upgrade(dst, req, &labels)).await
    } else if req.version() == hyper::Version::HTTP_2 {
        ob.pool.send(dst, Wire::Http2, req, &labels).await
    } else if hint == ProtocolHint::H2 {
        http::upgrade_to_h2(&mut req);
        ob.pool.send(dst, Wire::Http2, req, &labels).await
    } else {
        http::to_http1(&mut req, false);
        ob.pool.send(dst, Wire::Http1, req, &labels).await
    };
    match sent {
        Ok(mut resp) => {
            resp.headers_mut().remove(http::L5D_ORIG_PROTO);
            let hold = in_flight.map(|g| Box::new(g) as Box<dyn std::any::Any + Send>);
            http::metered_response(resp, metrics, started.into_std(), hold)
        }
        Err(e) => record_error(metrics, e, started),
    }
}

/// Explicit mode `CONNECT host:port`: the proxy is the application's HTTP proxy, so it answers
/// the CONNECT itself — 200 once a connection to the target is open (an error response
/// otherwise) — and relays the tunnel as opaque TCP. A mesh service gets one balanced endpoint
/// per tunnel; a name discovery rejects goes to `host:port` through DNS.
async fn tunnel<B>(
    ob: Arc<Outbound>,
    mut req: Request<B>,
    authority: Option<String>,
    started: Instant,
) -> Response<Body> {
    let deadline = started + ob.settings.failfast_timeout;
    let Some((target, discover)) = explicit_target(&ob, authority.as_deref()) else {
        return Error::NoAuthority.into_response();
    };
    let authority = authority.unwrap_or_else(|| target.to_string());
    let dest = if discover {
        ob.dest(&target).await
    } else {
        Dest::Passthrough(target.clone())
    };
    let picked = match ob.pick(&target, dest, deadline).await {
        Ok(picked) => picked,
        Err(e) => {
            let labels = ob.labels(Some(authority), target_addr_of(&target), None, NO_TLS);
            return early_error(&ob, &labels, e, started);
        }
    };
    let (tls, tls_label) = match ob.tls_for(picked.endpoint.as_ref(), false, deadline).await {
        Ok(tls) => tls,
        Err(e) => {
            let labels = ob.labels(
                Some(authority),
                picked.addr,
                picked.endpoint.as_ref(),
                NO_TLS,
            );
            return early_error(&ob, &labels, e, started);
        }
    };
    let labels = ob.labels(
        Some(authority),
        picked.addr,
        picked.endpoint.as_ref(),
        tls_label,
    );
    let metrics = ob.metrics.http(&labels);
    metrics.request();
    let dial = Dial {
        addr: picked.addr,
        tls: tls.as_ref(),
        header: None,
    };
    let server =
        match connect::connect(dial, ob.settings.connect_timeout, &ob.metrics, &labels).await {
            Ok(server) => server,
            Err(e) => return record_error(metrics, e.into(), started),
        };
    let client = hyper::upgrade::on(&mut req);
    let addr = picked.addr;
    tokio::spawn(async move {
        // The endpoint counts as loaded for as long as the tunnel is open.
        let _in_flight = picked.in_flight;
        match client.await {
            Ok(upgraded) => match relay::relay(TokioIo::new(upgraded), server).await {
                Ok(moved) => tracing::debug!(%addr, ?moved, "CONNECT tunnel closed"),
                Err(e) => tracing::debug!(%addr, error = %e, "CONNECT tunnel ended with an error"),
            },
            Err(e) => tracing::debug!(error = %e, "CONNECT client never switched to the tunnel"),
        }
    });
    http::metered_response(
        Response::new(http::empty()),
        metrics,
        started.into_std(),
        None,
    )
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

#[cfg(test)]
#[path = "outbound_tests.rs"]
mod tests;
