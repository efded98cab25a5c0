//! The inbound request path: accept → TLS → identify → authorize → detect → forward to the local
//! application.
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
//! Ports in `WEFT_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY` accept only mutually authenticated
//! clients: an opaque connection without one is closed (`inbound_tcp_authz_deny_total`), an HTTP
//! request gets 403 (`inbound_http_authz_deny_total`), both with the reason logged.
//!
//! Then as before: opaque connections are relayed to `127.0.0.1:APP_PORT`; HTTP connections are
//! served by hyper and each request goes to the application over a pooled connection in the
//! protocol the client originally spoke (HTTP/2 marked `l5d-orig-proto: HTTP/1.1` is turned back
//! into HTTP/1.1 and the header removed; other HTTP/2 stays HTTP/2; HTTP/1 stays HTTP/1).

use crate::{
    accept::Accepted,
    config::{Config, PortSet},
    connect,
    detect::{self, Prefixed, Protocol},
    http::{self, Body, Error, Metrics, Peer, Pool, PoolLimits, Wire},
    identity::{tls as id_tls, Identity},
    metrics::{self as m, Direction, Labels, TlsLabel},
    mtls::{self, Peeked, SessionProtocol, TransportHeader},
    relay::{self, Metered},
};
use bytes::BytesMut;
use hyper::{body::Incoming, header::HeaderValue, Request, Response, Version};
use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
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
}

/// What the connection told us about the client.
#[derive(Clone, Debug)]
enum Client {
    Plain,
    /// TLS we did not terminate (another SNI).
    Passthru,
    /// TLS terminated here; the client's verified identity if it sent a certificate.
    Mtls {
        id: Option<String>,
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
    pub fn new(cfg: &Config, metrics: Metrics, identity: Option<Identity>) -> Arc<Inbound> {
        Inbound::with_identity(
            Settings {
                detect_timeout: cfg.inbound_detect_timeout,
                connect_timeout: cfg.inbound_connect_timeout,
                opaque_ports: cfg.inbound_opaque_ports.clone(),
                pool: cfg.inbound_pool,
            },
            metrics,
            identity,
            cfg.inbound_require_identity_ports.clone(),
        )
    }

    /// Without identity: everything is plaintext, nothing is required.
    pub fn with_settings(settings: Settings, metrics: Metrics) -> Arc<Inbound> {
        Inbound::with_identity(settings, metrics, None, PortSet::default())
    }

    pub fn with_identity(
        settings: Settings,
        metrics: Metrics,
        identity: Option<Identity>,
        require_identity: PortSet,
    ) -> Arc<Inbound> {
        Arc::new(Inbound {
            pool: Pool::with_limits(settings.connect_timeout, settings.pool, metrics.clone()),
            settings,
            metrics,
            tls: identity.map(mtls::Server::new),
            require_identity,
        })
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
    let Accepted {
        stream,
        local,
        drain,
        ..
    } = conn;
    let mut io = Metered::unattached(stream);
    let ctx = Ctx {
        ib: ib.clone(),
        local,
        drain,
    };

    // 1. TLS or not: peek the ClientHello (only with identity).
    let (peeked, buf) = match &ib.tls {
        None => (Peeked::NotTls, BytesMut::new()),
        Some(_) => match mtls::peek_client_hello(&mut io, ib.settings.detect_timeout).await {
            Ok(peeked) => peeked,
            Err(e) => return tracing::debug!(error = %e, "connection failed before TLS detection"),
        },
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
            Box::pin(terminate(ctx, io, buf, hello, app_port)).await
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
            serve(ctx, io, port, client, Some(Protocol::Opaque)).await
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
                Peeked::Silent | Peeked::Malformed => Some(Protocol::Opaque),
                _ => None,
            };
            let io = Prefixed::new(buf, io);
            serve(ctx, io, port, client, known).await
        }
    }
}

/// What every step after the TLS decision needs.
struct Ctx {
    ib: Arc<Inbound>,
    local: SocketAddr,
    drain: watch::Receiver<bool>,
}

/// Terminates TLS addressed to this proxy and serves what is inside.
async fn terminate(
    ctx: Ctx,
    io: Metered<TcpStream>,
    buf: BytesMut,
    hello: mtls::ClientHello,
    app_port: Option<u16>,
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
    let client = Client::Mtls {
        id: session.peer_certificates().and_then(id_tls::peer_identity),
    };
    let transport = session.alpn_protocol() == Some(mtls::TRANSPORT_ALPN);

    // A transport header names the port (and maybe the protocol) itself.
    let (port, known) = if transport {
        let read =
            tokio::time::timeout(ib.settings.detect_timeout, TransportHeader::read(&mut tls));
        match read.await {
            Ok(Ok(header)) => {
                let known = match header.protocol {
                    Some(SessionProtocol::Http1) => Protocol::Http1,
                    Some(SessionProtocol::Http2) => Protocol::Http2,
                    None => Protocol::Opaque,
                };
                (header.port, Some(known))
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
    serve(ctx, tls, port, client, known).await
}

/// Detects (unless known), authorizes and forwards one connection to `127.0.0.1:app_port`.
async fn serve<I>(ctx: Ctx, io: I, app_port: u16, client: Client, known: Option<Protocol>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ctx { ib, local, drain } = ctx;
    let target_addr = SocketAddr::new(local.ip(), app_port);
    let app = SocketAddr::from((Ipv4Addr::LOCALHOST, app_port));

    // 3. Detect, unless the protocol is known or the port is configured opaque.
    let known = known.or_else(|| {
        ib.settings
            .opaque_ports
            .contains(&app_port)
            .then_some(Protocol::Opaque)
    });
    let (protocol, io) = match known {
        Some(p) => (p, Prefixed::new(BytesMut::new(), io)),
        None => match detect::detect(io, ib.settings.detect_timeout).await {
            Ok(detected) => detected,
            Err(e) => return tracing::debug!(error = %e, "connection failed during detection"),
        },
    };

    // 4. Authorize: a port that requires identity takes only mutually authenticated clients.
    let denied = (ib.require_identity.contains(&app_port) && client.id().is_none()).then(|| {
        Error::IdentityRequired {
            port: app_port,
            why: client.unauthenticated_because(),
        }
    });

    // 5. Forward to the application.
    if protocol == Protocol::Opaque {
        if let Some(e) = denied {
            let labels = ib.labels(None, target_addr, client.tls_label());
            ib.metrics
                .count(m::INBOUND_TCP_AUTHZ_DENY, Some(&labels), &[]);
            return tracing::info!(error = %e, "connection refused");
        }
        // Boxed: only opaque connections need the connect and relay states.
        if let Err(e) = Box::pin(forward_opaque(&ib, io, app, target_addr, &client)).await {
            tracing::info!(%app, error = %e, "opaque connection failed");
        }
        return;
    }
    let denied = denied.is_some();
    let svc = hyper::service::service_fn(move |req| {
        let ib = ib.clone();
        let client = client.clone();
        async move {
            let resp = if denied {
                deny(&ib, target_addr, &client, &req)
            } else {
                proxy_request(ib, app, target_addr, &client, req).await
            };
            Ok::<_, Infallible>(resp)
        }
    });
    http::serve(io, protocol, svc, drain).await;
}

async fn forward_opaque<I>(
    ib: &Inbound,
    client: I,
    app: SocketAddr,
    target_addr: SocketAddr,
    peer: &Client,
) -> Result<(), Error>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let labels = ib.labels(None, target_addr, peer.tls_label());
    let server = connect::tcp(app, ib.settings.connect_timeout, &ib.metrics, &labels).await?;
    relay::relay(client, server)
        .await
        .map_err(|source| Error::Relay { addr: app, source })?;
    Ok(())
}

/// A request on a port that requires identity from a client that has none: 403.
fn deny(
    ib: &Inbound,
    target_addr: SocketAddr,
    client: &Client,
    req: &Request<Incoming>,
) -> Response<Body> {
    let labels = ib.labels(http::authority_of(req), target_addr, client.tls_label());
    let metrics = ib.metrics.http(&labels);
    metrics.request();
    ib.metrics
        .count(m::INBOUND_HTTP_AUTHZ_DENY, Some(&labels), &[]);
    // `into_response` logs the reason.
    let resp = Error::IdentityRequired {
        port: target_addr.port(),
        why: client.unauthenticated_because(),
    }
    .into_response();
    metrics.response(resp.status().as_u16(), None, false, Duration::ZERO);
    resp
}

/// One request to the application, in the protocol the original client spoke.
async fn proxy_request(
    ib: Arc<Inbound>,
    app: SocketAddr,
    target_addr: SocketAddr,
    client: &Client,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let labels = ib.labels(http::authority_of(&req), target_addr, client.tls_label());
    let metrics = ib.metrics.http(&labels);
    metrics.request();

    let mut req = req.map(http::boxed);
    // Identity is asserted by this proxy only, from the verified certificate; never taken from
    // the peer.
    req.headers_mut().remove(http::L5D_CLIENT_ID);
    if let Some(id) = client.id().and_then(|id| HeaderValue::from_str(id).ok()) {
        req.headers_mut().insert(http::L5D_CLIENT_ID, id);
    }
    let orig_http1 = req.version() == Version::HTTP_2
        && req
            .headers_mut()
            .remove(http::L5D_ORIG_PROTO)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"HTTP/1.1"));

    let sent = if http::is_upgrade(&req) {
        http::to_http1(&mut req, true);
        Box::pin(ib.pool.send_upgrade(app, req, &labels)).await
    } else if req.version() == Version::HTTP_2 && !orig_http1 {
        ib.pool.send(app, Wire::Http2, req, &labels).await
    } else {
        http::to_http1(&mut req, false);
        ib.pool.send(app, Wire::Http1, req, &labels).await
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
