//! The outbound request path: app → target → detect → discover → balance → connect.
//!
//! [`handle`] takes one connection from the application. Its target comes from how it arrived
//! ([`Origin`]); in explicit mode (`HTTP_PROXY`) each HTTP request names its own target. Opaque
//! connections pick one endpoint and relay bytes; HTTP connections are served by hyper and every
//! request picks its own endpoint (P2C) and goes out over a pooled client connection. HTTP/1 to a
//! meshed peer (hint H2) travels as HTTP/2 marked `l5d-orig-proto: HTTP/1.1`.

use crate::{
    balance::Balancer,
    config::{Config, PortSet},
    detect::{self, Prefixed, Protocol},
    discovery::Discovery,
    discovery::{Endpoint, ProtocolHint, Resolution, Target},
    http::{self, Body, Error, HttpMetrics, Metrics, Peer, Pool, Wire},
    metrics::{Direction, Labels, TlsLabel},
    relay::{self, Metered},
    runtime::Accepted,
};
use bytes::BytesMut;
use futures_util::future::BoxFuture;
use hyper::{body::Incoming, Request, Response};
use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::net::TcpStream;

/// Outbound connections carry no mesh identity yet (mTLS comes later).
const NO_TLS: TlsLabel = TlsLabel::NoIdentity("not_provided_by_service_discovery");

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
}

pub struct Outbound {
    settings: Settings,
    resolver: Box<dyn Resolve>,
    metrics: Metrics,
    pool: Pool,
    /// One balancer per discovered target, shared by every connection, so outstanding-request
    /// counts are global to the proxy.
    balancers: Mutex<HashMap<Target, Arc<Balancer>>>,
}

/// Where a target's traffic goes.
enum Route {
    /// Discovered endpoints, balanced.
    Balanced(Arc<Balancer>),
    /// Discovery rejected the target: the original address, or the name resolved by DNS.
    Forward(Target),
}

impl Outbound {
    pub fn new(cfg: &Config, discovery: Discovery, metrics: Metrics) -> Arc<Outbound> {
        let settings = Settings {
            detect_timeout: cfg.outbound_detect_timeout,
            connect_timeout: cfg.outbound_connect_timeout,
            failfast_timeout: cfg.outbound_failfast_timeout,
            opaque_ports: cfg.outbound_opaque_ports.clone(),
        };
        Outbound::with_resolver(settings, Box::new(discovery), metrics)
    }

    pub fn with_resolver(
        settings: Settings,
        resolver: Box<dyn Resolve>,
        metrics: Metrics,
    ) -> Arc<Outbound> {
        Arc::new(Outbound {
            pool: Pool::new(settings.connect_timeout, metrics.clone()),
            settings,
            resolver,
            metrics,
            balancers: Mutex::new(HashMap::new()),
        })
    }

    async fn route(&self, target: &Target) -> Route {
        if let Some(b) = self.balancer(target) {
            return Route::Balanced(b);
        }
        match self.resolver.resolve(target).await {
            Resolution::Rejected => Route::Forward(target.clone()),
            Resolution::Endpoints(rx) => {
                let mut map = self.balancers.lock().unwrap_or_else(|e| e.into_inner());
                let b = map
                    .entry(target.clone())
                    .or_insert_with(|| Arc::new(Balancer::new(rx)));
                Route::Balanced(b.clone())
            }
        }
    }

    fn balancer(&self, target: &Target) -> Option<Arc<Balancer>> {
        let map = self.balancers.lock().unwrap_or_else(|e| e.into_inner());
        map.get(target).cloned()
    }

    fn labels(
        &self,
        authority: Option<String>,
        target_addr: SocketAddr,
        ep: Option<&Endpoint>,
    ) -> Labels {
        Labels {
            direction: Direction::Outbound,
            authority,
            target_addr,
            tls: NO_TLS,
            dst: ep.map_or_else(|| Arc::new(BTreeMap::new()), |e| e.labels.clone()),
        }
    }
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
    let src_metrics = ob
        .metrics
        .tcp_open(&ob.labels(None, target_addr, None), Peer::Src);
    let io = Metered::new(stream, src_metrics);

    // 2. Discover early for a fixed target: discovery may say the service is opaque.
    let route = match &target {
        Some(t) => Some(ob.route(t).await),
        None => None,
    };
    let known_opaque = match (&target, &route) {
        (Some(t), Some(route)) => {
            ob.settings.opaque_ports.contains(&port_of(t)) || is_opaque(route)
        }
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
    match (protocol, target, route) {
        (Protocol::Opaque, Some(target), Some(route)) => {
            if let Err(e) = forward_opaque(&ob, io, &target, route).await {
                tracing::info!(%target, error = %e, "opaque connection failed");
            }
        }
        (Protocol::Opaque, ..) => {
            tracing::info!("explicit-mode connection is not HTTP: nothing to forward it to");
        }
        (protocol, target, _) => {
            let svc = hyper::service::service_fn(move |req| {
                let ob = ob.clone();
                let target = target.clone();
                async move { Ok::<_, Infallible>(proxy_request(ob, target, req).await) }
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

fn is_opaque(route: &Route) -> bool {
    match route {
        Route::Balanced(b) => b.snapshot().opaque,
        Route::Forward(_) => false,
    }
}

/// Opaque TCP: one endpoint for the whole connection, bytes relayed both ways with half-close.
async fn forward_opaque(
    ob: &Outbound,
    client: Prefixed<Metered<TcpStream>>,
    target: &Target,
    route: Route,
) -> Result<(), Error> {
    let (addr, endpoint, _in_flight) = match route {
        Route::Balanced(b) => {
            let picked = b
                .pick_ready(ob.settings.failfast_timeout)
                .await
                .map_err(|_| unavailable(ob, target))?;
            (
                picked.endpoint.addr,
                Some(picked.endpoint.clone()),
                Some(picked),
            )
        }
        Route::Forward(t) => (forward_addr(&t).await?, None, None),
    };
    let labels = ob.labels(None, addr, endpoint.as_ref());
    let server = http::connect(addr, ob.settings.connect_timeout, &ob.metrics, &labels).await?;
    let moved = relay::relay(client, server)
        .await
        .map_err(|source| Error::Connect { addr, source })?;
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
async fn proxy_request(
    ob: Arc<Outbound>,
    target: Option<Target>,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let authority = http::authority_of(&req);
    let mut req = req.map(http::boxed);

    // Explicit mode: the request names the target (absolute-form or Host).
    let (target, route) = match target {
        Some(t) => {
            let route = ob.route(&t).await;
            (t, route)
        }
        None => match explicit_target(&ob, authority.as_deref()) {
            Some((t, true)) => {
                let route = ob.route(&t).await;
                (t, route)
            }
            Some((t, false)) => (t.clone(), Route::Forward(t)),
            None => return Error::NoAuthority.into_response(),
        },
    };
    let authority = authority.unwrap_or_else(|| target.to_string());

    // Balance: a request waits up to the fail-fast timeout for endpoints.
    let (addr, hint, endpoint, in_flight) = match route {
        Route::Balanced(b) => match b.pick_ready(ob.settings.failfast_timeout).await {
            Ok(picked) => {
                let ep = picked.endpoint.clone();
                (ep.addr, ep.hint.clone(), Some(ep), Some(picked))
            }
            Err(_) => {
                let labels = ob.labels(Some(authority), target_addr_of(&target), None);
                return early_error(&ob, &labels, unavailable(&ob, &target), started);
            }
        },
        Route::Forward(t) => match forward_addr(&t).await {
            Ok(addr) => (addr, ProtocolHint::Unknown, None, None),
            Err(e) => {
                let labels = ob.labels(Some(authority), target_addr_of(&target), None);
                return early_error(&ob, &labels, e, started);
            }
        },
    };
    let labels = ob.labels(Some(authority), addr, endpoint.as_ref());
    let metrics = ob.metrics.http(&labels);
    metrics.request();

    // Connect: choose the wire protocol for this endpoint and send.
    let sent = if http::is_upgrade(&req) {
        http::to_http1(&mut req, true);
        ob.pool.send_upgrade(addr, req, &labels).await
    } else if req.version() == hyper::Version::HTTP_2 {
        ob.pool.send(addr, Wire::Http2, req, &labels).await
    } else if hint == ProtocolHint::H2 {
        http::upgrade_to_h2(&mut req);
        ob.pool.send(addr, Wire::Http2, req, &labels).await
    } else {
        http::to_http1(&mut req, false);
        ob.pool.send(addr, Wire::Http1, req, &labels).await
    };
    match sent {
        Ok(mut resp) => {
            resp.headers_mut().remove(http::L5D_ORIG_PROTO);
            let hold = in_flight.map(|g| Box::new(g) as Box<dyn std::any::Any + Send>);
            http::metered_response(resp, metrics, started, hold)
        }
        Err(e) => record_error(metrics, e, started),
    }
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
