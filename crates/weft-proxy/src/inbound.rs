//! The inbound request path: accept → TLS → identify → policy → detect → authorize → forward to
//! the local application.
//!
//! [`handle`] takes one connection from a peer (usually another proxy) for an application port.
//! With identity, it first peeks at the ClientHello (the bytes are kept and replayed):
//! - TLS whose SNI is this proxy's identity is terminated; a client certificate, when sent, is
//!   verified against the trust anchors and its identity becomes `l5d-client-id` (HTTP) and the
//!   `client_id` metric label. ALPN `transport.l5d.io/v1` means a transport header follows, naming
//!   the local port (and maybe the protocol);
//! - TLS for another name is relayed untouched (`tls="opaque"`);
//! - anything else is plaintext, as without identity.
//!
//! Once the port is known, its policy comes from `InboundServerPolicies.WatchPort`
//! ([`crate::policy::inbound`]; the configured default policy until the control plane answers).
//! The policy's protocol overrides detection (opaque/TLS: relayed; HTTP/1, HTTP/2, gRPC: no
//! detection). Opaque connections are authorized once against the server's authorizations
//! (`inbound_tcp_authz_{allow,deny}_total`; denied: closed). HTTP requests are authorized one by
//! one against the policy in force at that request: no route is 404; no authorization of the
//! route admitting the client is 403 (gRPC: `grpc-status: 7`), with `l5d-proxy-error` saying
//! who was refused where (`inbound_http_authz_{allow,deny}_total`). An authorized request then
//! takes a token of the server's HTTP local rate limit, if it has one: none left is 429 with
//! `Retry-After: 1` (gRPC: `grpc-status: 8`), `l5d-proxy-error` naming the server and the bucket
//! (`inbound_http_local_ratelimit_rate_limited_total`).
//!
//! Ports in `WEFT_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY` accept only mutually authenticated
//! clients whatever the policy says: an opaque connection without one is closed, an HTTP request
//! gets 403, both counted as denials with the reason logged.
//!
//! Then as before: opaque connections are relayed to `127.0.0.1:APP_PORT`; HTTP connections are
//! served by hyper and each request goes to the application over a pooled connection in the
//! protocol the client originally spoke (HTTP/2 marked `l5d-orig-proto: HTTP/1.1` is turned back
//! into HTTP/1.1 and the header removed; other HTTP/2 stays HTTP/2; HTTP/1 stays HTTP/1).

use crate::{
    accept::Accepted,
    access_log,
    config::{AccessLogFormat, Config, PortSet},
    connect,
    detect::{self, Prefixed, Protocol},
    http::{self, Body, Error, Metrics, Peer, Pool, PoolLimits, RequestBody, Wire},
    identity::{tls as id_tls, Identity},
    limits::Limits,
    metrics::{self as m, Counter, DetectResult, Direction, Labels, TlsLabel},
    mtls::{self, Peeked, SessionProtocol, TransportHeader},
    policy::{
        inbound::{
            authorize,
            client::{Defaults, Settings as PolicySettings},
            ratelimit::Scope,
            ClientRef, ClientTls, InboundPolicies, PortPolicy, RouteRef, ServerPolicy,
            ServerProtocol,
        },
        route::RequestHead,
        Meta,
    },
    relay::{self, Metered},
    tap::{Peers, Taps},
    trace::{self, Tracer},
};
use bytes::BytesMut;
use hyper::{header::HeaderValue, Request, Response, Version};
use std::{
    collections::BTreeMap,
    convert::Infallible,
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::watch,
};

/// Plaintext from the peer.
const NO_TLS: TlsLabel = TlsLabel::NoIdentity(m::NO_TLS_FROM_REMOTE);

/// The rest of a TLS handshake (after its ClientHello arrived) must finish within this.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The inbound timeouts and port lists (the part of `Config` this path reads).
#[derive(Clone, Debug)]
pub struct Settings {
    pub detect_timeout: Duration,
    pub connect_timeout: Duration,
    pub opaque_ports: PortSet,
    /// The client connection pool towards the application.
    pub pool: PoolLimits,
}

pub struct Inbound {
    settings: Settings,
    metrics: Metrics,
    pool: Pool,
    /// Terminates TLS addressed to this proxy; `None` without identity (transitional mode:
    /// nothing is peeked, everything is plaintext).
    tls: Option<mtls::Server>,
    /// App ports that only accept mutually authenticated clients.
    require_identity: PortSet,
    /// Each port's policy (the configured default until the control plane answers).
    policies: InboundPolicies,
    /// `WEFT_PROXY_ACCESS_LOG`; `None`: off.
    access_log: Option<AccessLogFormat>,
    /// Live taps (the proxy's one registry; a private one nobody can tap in tests).
    taps: Arc<Taps>,
    /// `WEFT_PROXY_TRACE_*`; `None`: tracing off.
    tracer: Option<Arc<Tracer>>,
    /// Gateway mode (`WEFT_PROXY_INBOUND_GATEWAY_SUFFIXES`); `None`: a named transport header
    /// is refused.
    gateway: Option<Gateway>,
    /// `WEFT_PROXY_INBOUND_TRUSTED_GATEWAY_IDENTITIES`: peers whose `l5d-client-id` names the
    /// client of an HTTP request.
    trusted_gateways: Vec<String>,
    /// `WEFT_PROXY_INBOUND_{MAX_CONNECTIONS,SERVER_*}` and their counters.
    limits: Limits,
}

mod gateway;

pub use gateway::Gateway;

/// What the connection told us about the client.
#[derive(Clone, Debug)]
enum Client {
    Plain,
    /// TLS we did not terminate (another SNI).
    Passthru,
    /// TLS terminated here; the client's verified identity if it sent a certificate.
    Mtls {
        id: Option<Arc<str>>,
    },
}

impl Client {
    fn tls_label(&self) -> TlsLabel {
        match self {
            Client::Plain => NO_TLS,
            Client::Passthru => TlsLabel::Passthru,
            Client::Mtls { id } => TlsLabel::Established {
                peer_id: id.clone(),
            },
        }
    }

    fn id(&self) -> Option<&str> {
        match self {
            Client::Mtls { id } => id.as_deref(),
            _ => None,
        }
    }

    /// The client as the authorization decision reads it.
    fn policy_tls(&self) -> ClientTls<'_> {
        match self {
            Client::Plain | Client::Passthru => ClientTls::None,
            Client::Mtls { id } => ClientTls::Terminated { id: id.as_deref() },
        }
    }

    /// Why this client is not authenticated (for a port that requires identity).
    fn unauthenticated_because(&self) -> &'static str {
        match self {
            Client::Plain => "the connection is not TLS",
            Client::Passthru => "the TLS is addressed to another identity",
            Client::Mtls { .. } => "the client presented no certificate",
        }
    }
}

impl Inbound {
    /// What the inbound listeners allow their clients.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// `outbound`: the path a gateway forwards through (used only in gateway mode).
    pub fn new(
        cfg: &Config,
        metrics: Metrics,
        identity: Option<Identity>,
        taps: Arc<Taps>,
        tracer: Option<Arc<Tracer>>,
        outbound: &Arc<crate::outbound::Outbound>,
    ) -> Arc<Inbound> {
        let policies = InboundPolicies::new(PolicySettings::from_config(cfg, identity.as_ref()));
        let ib = Inbound::build(
            Settings {
                detect_timeout: cfg.inbound_detect_timeout,
                connect_timeout: cfg.inbound_connect_timeout,
                opaque_ports: cfg.inbound_opaque_ports.clone(),
                pool: cfg.inbound_pool,
            },
            metrics,
            identity,
            cfg.inbound_require_identity_ports.clone(),
            policies,
        );
        let gateway = (!cfg.inbound_gateway_suffixes.is_empty())
            .then(|| Gateway::new(cfg.inbound_gateway_suffixes.clone(), outbound.clone()));
        Arc::new(Inbound {
            access_log: cfg.access_log,
            taps,
            tracer,
            gateway,
            trusted_gateways: cfg.inbound_trusted_gateway_identities.clone(),
            limits: Limits::new(cfg.inbound_limits, &ib.metrics, Direction::Inbound),
            ..ib
        })
    }

    /// Without identity: everything is plaintext, nothing is required, every port has the
    /// default policy (`all-unauthenticated`).
    pub fn with_settings(settings: Settings, metrics: Metrics) -> Arc<Inbound> {
        Inbound::with_identity(settings, metrics, None, PortSet::default())
    }

    /// Without a control plane: every port has the default policy.
    pub fn with_identity(
        settings: Settings,
        metrics: Metrics,
        identity: Option<Identity>,
        require_identity: PortSet,
    ) -> Arc<Inbound> {
        let policies = InboundPolicies::defaults_only(Defaults {
            require_identity: require_identity.clone(),
            opaque_ports: settings.opaque_ports.clone(),
            ..Defaults::default()
        });
        Inbound::with_policies(settings, metrics, identity, require_identity, policies)
    }

    pub fn with_policies(
        settings: Settings,
        metrics: Metrics,
        identity: Option<Identity>,
        require_identity: PortSet,
        policies: InboundPolicies,
    ) -> Arc<Inbound> {
        Arc::new(Inbound::build(
            settings,
            metrics,
            identity,
            require_identity,
            policies,
        ))
    }

    fn build(
        settings: Settings,
        metrics: Metrics,
        identity: Option<Identity>,
        require_identity: PortSet,
        policies: InboundPolicies,
    ) -> Inbound {
        Inbound {
            pool: Pool::with_limits(settings.connect_timeout, settings.pool, metrics.clone()),
            taps: Taps::new(metrics.clone()),
            settings,
            metrics,
            tls: identity.map(mtls::Server::new),
            require_identity,
            policies,
            access_log: None,
            tracer: None,
            gateway: None,
            trusted_gateways: Vec::new(),
            limits: Limits::unmetered(Default::default()),
        }
    }

    /// This inbound side believing the `l5d-client-id` of requests from `gateways` (tests build
    /// it without a configuration).
    pub fn trusting_gateways(self: Arc<Self>, gateways: Vec<String>) -> Arc<Inbound> {
        let mut ib = Arc::into_inner(self).expect("a fresh inbound side");
        ib.trusted_gateways = gateways;
        Arc::new(ib)
    }

    /// This inbound side in gateway mode (tests build it without a configuration).
    pub fn with_gateway(self: Arc<Self>, gateway: Gateway) -> Arc<Inbound> {
        let mut ib = Arc::into_inner(self).expect("a fresh inbound side");
        ib.gateway = Some(gateway);
        Arc::new(ib)
    }

    fn labels(&self, authority: Option<String>, target_addr: SocketAddr, tls: TlsLabel) -> Labels {
        Labels {
            direction: Direction::Inbound,
            authority,
            target_addr,
            tls,
            dst: Arc::new(BTreeMap::new()),
        }
    }

    /// How a connection's protocol was decided (`protocol_detection_*`).
    fn detected(&self, result: DetectResult, waited: Duration) {
        self.metrics.detected(Direction::Inbound, result, waited);
    }

    /// `id` is in `WEFT_PROXY_INBOUND_TRUSTED_GATEWAY_IDENTITIES`: it speaks for its callers.
    fn trusts_gateway(&self, id: &str) -> bool {
        self.trusted_gateways.iter().any(|g| g == id)
    }

    /// The client of a connection whose transport header names one (`named`, the caller a
    /// gateway relays an opaque stream for): that identity when the TLS peer is a trusted
    /// gateway, else the peer itself (a workload cannot claim to be somebody else).
    fn header_client(&self, peer: Client, named: &str) -> Client {
        match peer.id() {
            Some(gateway) if self.trusts_gateway(gateway) => Client::Mtls {
                id: Some(named.trim_end_matches('.').to_ascii_lowercase().into()),
            },
            id => {
                tracing::info!(
                    peer = id.unwrap_or("none"),
                    claimed = named,
                    "a transport header names a client and the peer is not a trusted gateway: \
                     the peer is the client"
                );
                peer
            }
        }
    }

    /// Counts and starts metering an accepted connection whose labels are now known.
    fn attach<S>(&self, io: &mut Metered<S>, target_addr: SocketAddr, client: &Client) {
        let labels = self.labels(None, target_addr, client.tls_label());
        io.attach(self.metrics.tcp_open(&labels, Peer::Src));
    }
}

/// Handles one connection from a peer for `app_port` until it closes. `None` is a connection to
/// the main inbound listener without an original destination: only a transport header (inside
/// mTLS) can direct it; anything else is closed.
pub async fn handle_any(ib: Arc<Inbound>, conn: Accepted, app_port: Option<u16>) {
    handle(ib, conn, app_port, false).await
}

/// [`handle_any`] for a connection to a forward port (explicit mode), which serves `app_port`.
/// Its policy is the forward port's: the workload registers its forward ports (where peers
/// connect), so that is the port Servers select and the control plane is asked about.
pub async fn handle_forward(ib: Arc<Inbound>, conn: Accepted, app_port: u16) {
    handle(ib, conn, Some(app_port), true).await
}

async fn handle(ib: Arc<Inbound>, conn: Accepted, app_port: Option<u16>, forward: bool) {
    let Accepted {
        stream,
        peer,
        local,
        drain,
        ..
    } = conn;
    let mut io = Metered::unattached(stream);
    let ctx = Ctx {
        ib: ib.clone(),
        peer,
        local,
        policy_port: forward.then_some(local.port()),
        drain,
    };

    // 1. TLS or not: peek the ClientHello (only with identity). The wait counts towards
    //    the connection's detection time.
    let (peeked, buf, waited) = match &ib.tls {
        None => (Peeked::NotTls, BytesMut::new(), Duration::ZERO),
        Some(_) => {
            let started = Instant::now();
            match mtls::peek_client_hello(&mut io, ib.settings.detect_timeout).await {
                Ok((peeked, buf)) => (peeked, buf, started.elapsed()),
                Err(e) => {
                    ib.detected(DetectResult::Error, started.elapsed());
                    return tracing::debug!(error = %e, "connection failed before TLS detection");
                }
            }
        }
    };
    let ours = |hello: &mtls::ClientHello| {
        ib.tls
            .as_ref()
            .is_some_and(|t| hello.sni.as_deref() == Some(t.name()))
    };
    match peeked {
        // 2a. For us: terminate, identify the client, then serve what is inside.
        // Boxed: the TLS session and handshake states are large and only mTLS connections
        // need them (a plaintext connection's task stays small).
        Peeked::Hello(hello) if ours(&hello) => {
            Box::pin(terminate(ctx, io, buf, hello, app_port, waited)).await
        }
        // 2b. TLS for someone else: relay it as it is.
        Peeked::Hello(hello) => {
            let Some(port) = app_port else {
                return tracing::debug!(
                    sni = hello.sni.as_deref().unwrap_or("none"),
                    "TLS for another name without a target port"
                );
            };
            let client = Client::Passthru;
            ib.attach(&mut io, SocketAddr::new(local.ip(), port), &client);
            let io = Prefixed::new(buf, io);
            let known = Some((Protocol::Opaque, DetectResult::Tls));
            serve(ctx, io, port, client, known, waited).await
        }
        // 2c. Plaintext: as without identity.
        peeked => {
            let Some(port) = app_port else {
                return tracing::debug!("plaintext connection without a target port");
            };
            let client = Client::Plain;
            ib.attach(&mut io, SocketAddr::new(local.ip(), port), &client);
            // A silent client already waited one detect timeout: it is server-speaks-first.
            // A ClientHello we cannot read is relayed as bytes.
            let known = match peeked {
                Peeked::Silent => Some((Protocol::Opaque, DetectResult::Timeout)),
                Peeked::Malformed => Some((Protocol::Opaque, DetectResult::Opaque)),
                _ => None,
            };
            let io = Prefixed::new(buf, io);
            serve(ctx, io, port, client, known, waited).await
        }
    }
}

/// A client as errors and logs name it: `client ID` or `unauthenticated client from IP`.
struct Named<'a>(&'a Client, IpAddr);

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.id() {
            Some(id) => write!(f, "client {id}"),
            None => write!(f, "unauthenticated client from {}", self.1),
        }
    }
}

/// A server as errors name it: `KIND:NAME` (`default:deny`, `server:web-http`).
struct ServerName<'a>(&'a Meta);

impl fmt::Display for ServerName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0.kind, self.0.name)
    }
}

/// What every step after the TLS decision needs.
struct Ctx {
    ib: Arc<Inbound>,
    /// The client's address (authorizations match its IP).
    peer: SocketAddr,
    local: SocketAddr,
    /// The port whose policy applies when it is not the app port (a forward port).
    policy_port: Option<u16>,
    drain: watch::Receiver<bool>,
}

/// Terminates TLS addressed to this proxy and serves what is inside.
async fn terminate(
    ctx: Ctx,
    io: Metered<TcpStream>,
    buf: BytesMut,
    hello: mtls::ClientHello,
    app_port: Option<u16>,
    waited: Duration,
) {
    let ib = ctx.ib.clone();
    let deadline = tokio::time::Instant::now() + TLS_HANDSHAKE_TIMEOUT;
    let config = match ib.tls.as_ref() {
        Some(tls) => tls.config_when_ready(&hello.alpn, deadline).await,
        None => None,
    };
    let Some(config) = config else {
        return tracing::info!("TLS for this proxy and no certificate in time: closing");
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let accepted = tokio::time::timeout(
        TLS_HANDSHAKE_TIMEOUT,
        acceptor.accept(Prefixed::new(buf, io)),
    )
    .await;
    let mut tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason =
                id_tls::PeerRejection::from_io(&e).map_or("handshake", mtls::rejection_label);
            ib.metrics.count(
                m::TLS_HANDSHAKE_ERRORS,
                None,
                &[("direction", "inbound"), ("reason", reason)],
            );
            return tracing::info!(error = %e, reason, "inbound TLS handshake failed");
        }
        Err(_) => {
            ib.metrics.count(
                m::TLS_HANDSHAKE_ERRORS,
                None,
                &[("direction", "inbound"), ("reason", "timeout")],
            );
            return tracing::info!("inbound TLS handshake timed out");
        }
    };
    let (_, session) = tls.get_ref();
    let mut client = Client::Mtls {
        id: session
            .peer_certificates()
            .and_then(id_tls::peer_identity)
            .map(Arc::from),
    };
    let transport = session.alpn_protocol() == Some(mtls::TRANSPORT_ALPN);

    // A transport header names the port (and maybe the protocol) itself; one that names a
    // host is for the gateway.
    let (port, known) = if transport {
        let read =
            tokio::time::timeout(ib.settings.detect_timeout, TransportHeader::read(&mut tls));
        match read.await {
            Ok(Ok(mut header)) if header.name.is_some() => {
                let name = header.name.take().unwrap_or_default();
                let target_addr = SocketAddr::new(ctx.local.ip(), header.port);
                ib.attach(tls.get_mut().0.get_mut(), target_addr, &client);
                // Boxed: only a gateway's connections carry the outbound path's states.
                return Box::pin(gateway::serve(ctx, tls, header, name, client)).await;
            }
            Ok(Ok(header)) => {
                // A trusted gateway relaying an opaque stream names its caller.
                if let Some(named) = &header.client_id {
                    client = ib.header_client(client, named);
                }
                let known = match header.protocol {
                    Some(SessionProtocol::Http1) => Protocol::Http1,
                    Some(SessionProtocol::Http2) => Protocol::Http2,
                    None => Protocol::Opaque,
                };
                (header.port, Some((known, DetectResult::Known)))
            }
            Ok(Err(e)) => return tracing::info!(error = %e, "bad transport header: closing"),
            Err(_) => return tracing::info!("no transport header in time: closing"),
        }
    } else {
        match app_port {
            Some(port) => (port, None),
            None => return tracing::debug!("TLS without a transport header nor a target port"),
        }
    };
    let target_addr = SocketAddr::new(ctx.local.ip(), port);
    ib.attach(tls.get_mut().0.get_mut(), target_addr, &client);
    serve(ctx, tls, port, client, known, waited).await
}

/// Gets the port's policy, detects (unless known), authorizes and forwards one connection to
/// `127.0.0.1:app_port`. `known`: the protocol and how it became known, when the connection
/// already said; `waited`: how long reading its first bytes took so far.
async fn serve<I>(
    ctx: Ctx,
    io: I,
    app_port: u16,
    client: Client,
    known: Option<(Protocol, DetectResult)>,
    waited: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ctx {
        ib,
        peer,
        local,
        policy_port,
        drain,
    } = ctx;
    let target_addr = SocketAddr::new(local.ip(), app_port);

    // 3. Policy: the port's, live (the default until the control plane answers; the first
    //    connection to a port waits for that answer at most the inbound fail-fast timeout).
    //    Boxed: the wait is large and over once the connection has its view of the policy.
    let policy = Box::pin(ib.policies.port(policy_port.unwrap_or(app_port))).await;
    let server = policy.current();

    // 4. Detect, unless the connection said what it is (a transport header, relayed TLS, a
    //    silent client), the policy or the port configuration says opaque, or the policy names
    //    HTTP/2 or gRPC. An HTTP/1 server is still detected: meshed peers carry its requests
    //    over HTTP/2 (`l5d-orig-proto`), as Linkerd's proxies do.
    let known = known.or(match server.protocol {
        _ if ib.settings.opaque_ports.contains(&app_port) => {
            Some((Protocol::Opaque, DetectResult::OpaquePort))
        }
        _ if server.is_opaque() => Some((Protocol::Opaque, DetectResult::OpaquePolicy)),
        ServerProtocol::Http2(_) | ServerProtocol::Grpc(_) => {
            Some((Protocol::Http2, DetectResult::Known))
        }
        _ => None,
    });
    let detect_timeout = match server.protocol {
        ServerProtocol::Detect {
            timeout: Some(t), ..
        } => t,
        _ => ib.settings.detect_timeout,
    };
    let (protocol, io) = match known {
        Some((p, result)) => {
            ib.detected(result, waited);
            (p, Prefixed::new(BytesMut::new(), io))
        }
        None => {
            let started = Instant::now();
            let detected = detect::detect_outcome(io, detect_timeout).await;
            let waited = waited + started.elapsed();
            match detected {
                Ok((outcome, io)) => {
                    ib.detected(outcome.result(), waited);
                    (outcome.protocol(), io)
                }
                Err(e) => {
                    ib.detected(DetectResult::Error, waited);
                    return tracing::debug!(error = %e, "connection failed during detection");
                }
            }
        }
    };

    let conn = Arc::new(Conn::new(ib, policy, client, peer, target_addr));

    // 5. Opaque: authorize the connection once (server authorizations), then relay.
    if protocol == Protocol::Opaque {
        if let Err(e) = conn.authorize_connection(&server) {
            return tracing::info!(error = %e, "connection refused");
        }
        drop(server);
        // Boxed: only opaque connections need the connect and relay states.
        if let Err(e) = Box::pin(forward_opaque(&conn, io)).await {
            tracing::info!(app = %conn.app, error = %e, "opaque connection failed");
        }
        return;
    }

    // 6. HTTP: each request is routed and authorized against the policy in force at that
    //    request, then forwarded.
    drop(server);
    let ib = conn.ib.clone();
    let svc = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(conn.serve_request(req).await) }
    });
    http::serve(io, protocol, svc, drain, &ib.limits).await;
}

/// One served connection: what each of its requests needs.
struct Conn {
    ib: Arc<Inbound>,
    policy: PortPolicy,
    client: Client,
    /// The client's address (authorizations match its IP; the access log names it).
    client_addr: SocketAddr,
    target_addr: SocketAddr,
    app: SocketAddr,
    /// The connection's common metric labels (no authority).
    labels: Labels,
    /// The port is in `WEFT_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY`.
    require_identity: bool,
    /// `Some` when the client is a gateway in `WEFT_PROXY_INBOUND_TRUSTED_GATEWAY_IDENTITIES`:
    /// each request's `l5d-client-id` names its client ([`Conn::forwarded`]), and the
    /// connections of the clients it forwarded lately are kept here, so a request does not
    /// rebuild its client's labels and decision counters.
    forwarded: Option<Box<Mutex<Vec<Arc<Conn>>>>>,
    /// The last HTTP authorization decision's counter: requests on a connection mostly repeat
    /// the same (policy, route, authorization), so its labels are rendered once.
    last: Mutex<Option<Decided>>,
    /// The same for the last rate limit refusal (a flood repeats it).
    last_limited: Mutex<Option<(Arc<ServerPolicy>, Scope, Counter)>>,
    /// The last request's labels (with its authority) and HTTP metrics: requests on a
    /// connection mostly name the same authority, so its series is looked up once.
    last_http: Mutex<Option<Arc<(Labels, m::HttpMetrics)>>>,
    /// `l5d-client-id` for the application: the client's verified identity, made a header
    /// value once per connection.
    client_id: Option<HeaderValue>,
}

/// How many forwarded callers a trusted gateway's connection keeps ([`Conn::forwarded`]).
const FORWARDED_KEPT: usize = 16;

/// A decision and its counter.
struct Decided {
    server: Arc<ServerPolicy>,
    route: usize,
    /// `None`: denied.
    authz: Option<usize>,
    counter: Counter,
}

impl Conn {
    /// A connection from `client` at `client_addr` to `target_addr` (its port the application's)
    /// under `policy`.
    fn new(
        ib: Arc<Inbound>,
        policy: PortPolicy,
        client: Client,
        client_addr: SocketAddr,
        target_addr: SocketAddr,
    ) -> Conn {
        let port = target_addr.port();
        let client_id = client.id().and_then(|id| HeaderValue::from_str(id).ok());
        Conn {
            labels: ib.labels(None, target_addr, client.tls_label()),
            require_identity: ib.require_identity.contains(&port),
            forwarded: client
                .id()
                .is_some_and(|id| ib.trusts_gateway(id))
                .then(Box::default),
            app: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            ib,
            policy,
            client,
            client_addr,
            target_addr,
            last: Mutex::new(None),
            last_limited: Mutex::new(None),
            last_http: Mutex::new(None),
            client_id,
        }
    }

    /// The labels and HTTP metrics of a request naming `authority` (see [`Conn::last_http`]).
    fn http_metrics(&self, authority: Option<&str>) -> Arc<(Labels, m::HttpMetrics)> {
        let mut last = self.last_http.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some(l) if l.0.authority.as_deref() == authority => l.clone(),
            _ => {
                let labels = Labels {
                    authority: authority.map(str::to_string),
                    ..self.labels.clone()
                };
                let metrics = self.ib.metrics.http(&labels);
                last.insert(Arc::new((labels, metrics))).clone()
            }
        }
    }

    fn client_ref(&self) -> ClientRef<'_> {
        ClientRef {
            ip: self.client_addr.ip(),
            tls: self.client.policy_tls(),
        }
    }

    /// One request, traced when tracing is on and the request is sampled, written to the access
    /// log when there is one (both off: one branch each, and no wrapper future).
    async fn serve_request(mut self: Arc<Self>, mut req: Request<RequestBody>) -> Response<Body> {
        // A trusted gateway's request is its caller's (one branch for everyone else).
        if self.forwarded.is_some() {
            self = self.forwarded(&req);
        }
        // Trace: an unsampled request reads its trace headers and goes on as untraced.
        let span = match &self.ib.tracer {
            None => None,
            Some(tracer) => tracer.start(trace::Kind::Inbound, &mut req),
        };
        match (span, self.ib.access_log) {
            (None, None) => self.request(req, None).await,
            // Boxed: only a sampled request carries the span state.
            (Some(span), _) => Box::pin(self.traced(span, req)).await,
            // Boxed: only a proxy that logs pays for the logging state.
            (None, Some(_)) => Box::pin(self.logged(req, None)).await,
        }
    }

    /// A request from a trusted gateway: the client its `l5d-client-id` names (a verified
    /// identity the gateway asserts for its caller) in place of the gateway, for authorization,
    /// rate limits, metrics, tap, the access log and the header the application sees. Without
    /// the header (or with one that is not an identity) the gateway is the client.
    fn forwarded<B>(self: Arc<Self>, req: &Request<B>) -> Arc<Conn> {
        let Some(id) = req
            .headers()
            .get(http::L5D_CLIENT_ID)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().trim_end_matches('.'))
            .filter(|v| !v.is_empty())
        else {
            return self;
        };
        let Some(cache) = &self.forwarded else {
            return self;
        };
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(conn) = cache
            .iter()
            .find(|c| c.client.id().is_some_and(|c| c.eq_ignore_ascii_case(id)))
        {
            return conn.clone();
        }
        let client = Client::Mtls {
            id: Some(id.to_ascii_lowercase().into()),
        };
        let conn = Arc::new(Conn::new(
            self.ib.clone(),
            self.policy.clone(),
            client,
            self.client_addr,
            self.target_addr,
        ));
        // A gateway's connection carries many callers; the most recent few are kept.
        if cache.len() == FORWARDED_KEPT {
            cache.remove(0);
        }
        cache.push(conn.clone());
        conn
    }

    /// [`Conn::serve_request`] for a sampled request: `span` (SERVER, started by the tracer,
    /// which rewrote the headers for the application to continue the trace) learns the client
    /// and the route, and ends at the response head.
    async fn traced(
        self: Arc<Self>,
        span: trace::Span,
        req: Request<RequestBody>,
    ) -> Response<Body> {
        span.client(self.client_addr, &self.labels.tls);
        let ib = self.ib.clone();
        let resp = self.logged(req, Some(&span)).await;
        if let Some(tracer) = &ib.tracer {
            tracer.end(span, &resp);
        }
        resp
    }

    /// One request, written to the access log when there is one.
    async fn logged(
        self: Arc<Self>,
        req: Request<RequestBody>,
        span: Option<&trace::Span>,
    ) -> Response<Body> {
        match self.ib.access_log {
            None => self.request(req, span).await,
            Some(format) => {
                let (addr, id) = (self.client_addr, self.client.id().map(str::to_owned));
                access_log::logged(format, addr, id, req, |req| self.request(req, span)).await
            }
        }
    }

    /// One request: route → authorize → rate limit → forward (or answer the refusal).
    /// `span`: this hop's span when the request is traced (it learns the route).
    async fn request<B>(
        self: Arc<Self>,
        req: Request<B>,
        span: Option<&trace::Span>,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<http::BoxError>,
    {
        // a. Route and authorize against the policy in force now.
        let server = self.policy.current();
        let head = RequestHead::of(&req);
        let route = server.route(&head);
        if let Some((span, route)) = span.zip(route.as_ref()) {
            span.route(route.meta);
        }
        // Tap: one relaxed load when nobody taps; else the request's route, for its events.
        let tapping = self.ib.taps.is_active();
        let tap_route = route.as_ref().filter(|_| tapping).map(|r| r.meta.clone());
        let verdict = self.authorize_request(&server, route);
        // b. Rate limit: only an authorized request takes a token.
        let verdict = verdict.and_then(|()| self.rate_limit(&server));
        drop(server);
        // c. Refused: the error is the answer; else forward (tapped, when a tap wants it).
        match verdict {
            Err(e) => self.refuse(e, &req),
            Ok(()) if tapping => Box::pin(self.tapped(req, tap_route)).await,
            Ok(()) => proxy_request(&self, req).await,
        }
    }

    /// [`Conn::request`]'s forward while some tap is active: events for the taps it matches.
    /// (Boxed by the caller: only tapped proxies pay for this state.)
    async fn tapped<B>(
        self: Arc<Self>,
        req: Request<B>,
        route: Option<Arc<crate::policy::Meta>>,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<http::BoxError>,
    {
        let peers = Peers::of(&self.labels, self.client_addr, route.as_deref());
        let tapped = self.ib.taps.request(peers, &req);
        let resp = proxy_request(&self, req).await;
        match tapped {
            Some(t) => t.response(resp),
            None => resp,
        }
    }

    /// Required identity first (whatever the policy says), then the route's authorizations.
    /// Counts `inbound_http_authz_{allow,deny}_total`; no route is a 404, not counted.
    fn authorize_request(
        &self,
        server: &Arc<ServerPolicy>,
        route: Option<RouteRef<'_>>,
    ) -> Result<(), Error> {
        if self.require_identity && self.client.id().is_none() {
            self.count_http(server, route, None);
            return Err(Error::IdentityRequired {
                port: self.target_addr.port(),
                why: self.client.unauthenticated_because(),
            });
        }
        let Some(route) = route else {
            return Err(Error::NoRoute {
                target: format!("server {}", ServerName(&server.meta)),
            });
        };
        let Some(i) = authorize(route.authorizations, &self.client_ref()) else {
            self.count_http(server, Some(route), None);
            return Err(Error::Unauthorized {
                client: Named(&self.client, self.client_addr.ip()).to_string(),
                target: format!(
                    "route {} on server {}",
                    route.meta.name,
                    ServerName(&server.meta)
                ),
            });
        };
        if route.authorizations[i].is_audit() {
            tracing::info!(
                client = %Named(&self.client, self.client_addr.ip()),
                server = %ServerName(&server.meta),
                route = %route.meta.name,
                "request allowed by the audit policy"
            );
        }
        self.count_http(server, Some(route), Some(i));
        Ok(())
    }

    /// A token of the server's HTTP local rate limit for this client (no limit: one branch).
    /// Counts `inbound_http_local_ratelimit_rate_limited_total` when there is none.
    fn rate_limit(&self, server: &Arc<ServerPolicy>) -> Result<(), Error> {
        let Some(limiter) = &server.rate_limit else {
            return Ok(());
        };
        let Err(limited) = limiter.check(self.client.id()) else {
            return Ok(());
        };
        let policy = &limiter.limit().meta;
        let mut last = self.last_limited.lock().unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some((s, scope, counter)) if Arc::ptr_eq(s, server) && *scope == limited.scope => {
                counter.inc()
            }
            _ => {
                let counter = server_counter(
                    &self.ib.metrics,
                    m::INBOUND_HTTP_LOCAL_RATELIMIT,
                    &self.labels,
                    &server.meta,
                    &[
                        ("ratelimit_group", policy.group.as_str()),
                        ("ratelimit_kind", policy.kind.as_str()),
                        ("ratelimit_name", policy.name.as_str()),
                        ("ratelimit_scope", limited.scope.as_str()),
                    ],
                );
                counter.inc();
                *last = Some((server.clone(), limited.scope, counter));
            }
        }
        Err(Error::RateLimited {
            server: ServerName(&server.meta).to_string(),
            scope: limited.scope.as_str(),
            rps: limited.rps.get(),
            policy: policy.to_string(),
        })
    }

    /// `inbound_http_authz_allow_total` (with `authz`) or `_deny_total` += 1, through the
    /// connection's last counter when the decision repeats.
    fn count_http(
        &self,
        server: &Arc<ServerPolicy>,
        route: Option<RouteRef<'_>>,
        authz: Option<usize>,
    ) {
        let route_index = route.map_or(usize::MAX, |r| r.index);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = last.as_ref() {
            if Arc::ptr_eq(&d.server, server) && d.route == route_index && d.authz == authz {
                return d.counter.inc();
            }
        }
        let no_route = Meta::default();
        let route_meta = route.map_or(&no_route, |r| &**r.meta);
        let authz_meta = route.zip(authz).map(|(r, i)| &*r.authorizations[i].meta);
        let family = match authz {
            Some(_) => m::INBOUND_HTTP_AUTHZ_ALLOW,
            None => m::INBOUND_HTTP_AUTHZ_DENY,
        };
        let counter = authz_counter(
            &self.ib.metrics,
            family,
            &self.labels,
            &server.meta,
            Some(route_meta),
            authz_meta,
        );
        counter.inc();
        *last = Some(Decided {
            server: server.clone(),
            route: route_index,
            authz,
            counter,
        });
    }

    /// An opaque connection: required identity, then the server's authorizations. Counts
    /// `inbound_tcp_authz_{allow,deny}_total`.
    fn authorize_connection(&self, server: &ServerPolicy) -> Result<(), Error> {
        let count = |family, authz: Option<&Meta>| {
            let c = authz_counter(
                &self.ib.metrics,
                family,
                &self.labels,
                &server.meta,
                None,
                authz,
            );
            c.inc();
        };
        if self.require_identity && self.client.id().is_none() {
            count(m::INBOUND_TCP_AUTHZ_DENY, None);
            return Err(Error::IdentityRequired {
                port: self.target_addr.port(),
                why: self.client.unauthenticated_because(),
            });
        }
        let Some(i) = authorize(&server.authorizations, &self.client_ref()) else {
            count(m::INBOUND_TCP_AUTHZ_DENY, None);
            return Err(self.unauthorized_by(server));
        };
        let authz = &server.authorizations[i];
        if authz.is_audit() {
            tracing::info!(
                client = %Named(&self.client, self.client_addr.ip()),
                server = %ServerName(&server.meta),
                "connection allowed by the audit policy"
            );
        }
        count(m::INBOUND_TCP_AUTHZ_ALLOW, Some(&authz.meta));
        Ok(())
    }

    /// The client is not admitted by `server`'s authorizations.
    fn unauthorized_by(&self, server: &ServerPolicy) -> Error {
        Error::Unauthorized {
            client: Named(&self.client, self.client_addr.ip()).to_string(),
            target: format!("server {}", ServerName(&server.meta)),
        }
    }

    /// A refused request: the error's response (gRPC-shaped for gRPC requests), metered.
    fn refuse<B>(&self, e: Error, req: &Request<B>) -> Response<Body> {
        let labels = self.ib.labels(
            http::authority_of(req),
            self.target_addr,
            self.client.tls_label(),
        );
        let metrics = self.ib.metrics.http(&labels);
        metrics.request();
        let grpc = http::is_grpc(req);
        let code = e.grpc_code();
        // `into_response` logs the reason.
        let resp = e.into_response_for(grpc);
        let grpc_status = grpc.then_some(code as i32);
        metrics.response(resp.status().as_u16(), grpc_status, false, Duration::ZERO);
        resp
    }
}

/// The handle of one authorization series: the connection's labels, `srv_*` (and `srv_port`
/// from the target address), `route_*` when `route` is given (HTTP), `authz_*` when `authz` is
/// (allowed).
fn authz_counter(
    metrics: &Metrics,
    family: &'static str,
    labels: &Labels,
    server: &Meta,
    route: Option<&Meta>,
    authz: Option<&Meta>,
) -> Counter {
    let mut extra = Vec::with_capacity(6);
    if let Some(r) = route {
        extra.extend([
            ("route_group", r.group.as_str()),
            ("route_kind", r.kind.as_str()),
            ("route_name", r.name.as_str()),
        ]);
    }
    if let Some(a) = authz {
        extra.extend([
            ("authz_group", a.group.as_str()),
            ("authz_kind", a.kind.as_str()),
            ("authz_name", a.name.as_str()),
        ]);
    }
    server_counter(metrics, family, labels, server, &extra)
}

/// The handle of one series about a server: the connection's labels, `srv_*` (and `srv_port`
/// from the target address), then `more`.
fn server_counter(
    metrics: &Metrics,
    family: &'static str,
    labels: &Labels,
    server: &Meta,
    more: &[(&str, &str)],
) -> Counter {
    let port = labels.target_addr.port().to_string();
    let mut extra = vec![
        ("srv_group", server.group.as_str()),
        ("srv_kind", server.kind.as_str()),
        ("srv_name", server.name.as_str()),
        ("srv_port", port.as_str()),
    ];
    extra.extend_from_slice(more);
    metrics.counter(family, Some(labels), &extra)
}

async fn forward_opaque<I>(conn: &Conn, client: I) -> Result<(), Error>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let ib = &conn.ib;
    let server = connect::tcp(
        conn.app,
        ib.settings.connect_timeout,
        &ib.metrics,
        &conn.labels,
    )
    .await?;
    relay::relay(client, server)
        .await
        .map_err(|source| Error::Relay {
            addr: conn.app,
            source,
        })?;
    Ok(())
}

/// One request to the application, in the protocol the original client spoke.
async fn proxy_request<B>(conn: &Conn, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<http::BoxError>,
{
    let started = Instant::now();
    let (ib, app) = (&conn.ib, conn.app);
    let series = conn.http_metrics(http::authority_str(&req));
    let (labels, metrics) = (&series.0, series.1.clone());
    metrics.request();

    let mut req = req.map(http::boxed);
    // Identity is asserted by this proxy only, from the verified certificate; never taken from
    // the peer (`insert` replaces whatever the peer sent).
    match &conn.client_id {
        Some(id) => drop(req.headers_mut().insert(http::L5D_CLIENT_ID, id.clone())),
        None => drop(req.headers_mut().remove(http::L5D_CLIENT_ID)),
    }
    // HTTP/1 carried over HTTP/2 by the peer becomes HTTP/1 again here.
    let orig_http1 = http::take_orig_http1(&mut req);

    let sent = if http::is_upgrade(&req) {
        http::to_http1(&mut req, true);
        Box::pin(ib.pool.send_upgrade(app, req, labels)).await
    } else if req.version() == Version::HTTP_2 {
        ib.pool.send(app, Wire::Http2, req, labels).await
    } else {
        if !orig_http1 {
            http::to_http1(&mut req, false);
        }
        ib.pool.send(app, Wire::Http1, req, labels).await
    };
    match sent {
        Ok(mut resp) => {
            resp.headers_mut().remove(http::L5D_ORIG_PROTO);
            http::metered_response(resp, metrics, started, None)
        }
        Err(e) => {
            let resp = e.into_response();
            metrics.response(resp.status().as_u16(), None, false, started.elapsed());
            resp
        }
    }
}

#[cfg(test)]
#[path = "inbound_tests.rs"]
mod tests;
