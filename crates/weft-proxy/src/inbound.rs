//! The inbound request path: accept → detect → (policy) → forward to the local application.
//!
//! [`handle`] takes one connection from a peer (usually another proxy) for an application port.
//! Opaque connections are relayed to `127.0.0.1:APP_PORT`. HTTP connections are served by hyper;
//! each request goes to the application over a pooled connection in the protocol the client
//! originally spoke: HTTP/2 marked `l5d-orig-proto: HTTP/1.1` is turned back into HTTP/1.1 (the
//! header never reaches the application), other HTTP/2 (gRPC) stays HTTP/2, HTTP/1 stays HTTP/1.

use crate::{
    config::{Config, PortSet},
    detect::{self, Prefixed, Protocol},
    http::{self, Body, Error, Metrics, Peer, Pool, Wire},
    metrics::{Direction, Labels, TlsLabel},
    relay::{self, Metered},
    runtime::Accepted,
};
use bytes::BytesMut;
use hyper::{body::Incoming, Request, Response, Version};
use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::net::TcpStream;

/// No mTLS yet: every inbound connection is plaintext from the peer's point of view.
const NO_TLS: TlsLabel = TlsLabel::NoIdentity("no_tls_from_remote");

/// The inbound timeouts and port lists (the part of `Config` this path reads).
#[derive(Clone, Debug)]
pub struct Settings {
    pub detect_timeout: Duration,
    pub connect_timeout: Duration,
    pub opaque_ports: PortSet,
}

pub struct Inbound {
    settings: Settings,
    metrics: Metrics,
    pool: Pool,
}

impl Inbound {
    pub fn new(cfg: &Config, metrics: Metrics) -> Arc<Inbound> {
        Inbound::with_settings(
            Settings {
                detect_timeout: cfg.inbound_detect_timeout,
                connect_timeout: cfg.inbound_connect_timeout,
                opaque_ports: cfg.inbound_opaque_ports.clone(),
            },
            metrics,
        )
    }

    pub fn with_settings(settings: Settings, metrics: Metrics) -> Arc<Inbound> {
        Arc::new(Inbound {
            pool: Pool::new(settings.connect_timeout, metrics.clone()),
            settings,
            metrics,
        })
    }

    fn labels(&self, authority: Option<String>, target_addr: SocketAddr) -> Labels {
        Labels {
            direction: Direction::Inbound,
            authority,
            target_addr,
            tls: NO_TLS,
            dst: Arc::new(BTreeMap::new()),
        }
    }
}

/// Handles one connection from a peer for `app_port` until it closes.
pub async fn handle(ib: Arc<Inbound>, conn: Accepted, app_port: u16) {
    let Accepted {
        stream,
        local,
        drain,
        ..
    } = conn;
    // The address the peer meant to reach; the application itself listens on loopback.
    let target_addr = SocketAddr::new(local.ip(), app_port);
    let app = SocketAddr::from((Ipv4Addr::LOCALHOST, app_port));
    let io = Metered::new(
        stream,
        ib.metrics
            .tcp_open(&ib.labels(None, target_addr), Peer::Src),
    );

    // 1. Detect, unless the port is configured opaque.
    let (protocol, io) = if ib.settings.opaque_ports.contains(&app_port) {
        (Protocol::Opaque, Prefixed::new(BytesMut::new(), io))
    } else {
        match detect::detect(io, ib.settings.detect_timeout).await {
            Ok(detected) => detected,
            Err(e) => return tracing::debug!(error = %e, "connection failed during detection"),
        }
    };

    // 2. (Policy: authorization comes with identity; every peer is allowed for now.)

    // 3. Forward to the application.
    if protocol == Protocol::Opaque {
        if let Err(e) = forward_opaque(&ib, io, app, target_addr).await {
            tracing::info!(%app, error = %e, "opaque connection failed");
        }
        return;
    }
    let svc = hyper::service::service_fn(move |req| {
        let ib = ib.clone();
        async move { Ok::<_, Infallible>(proxy_request(ib, app, target_addr, req).await) }
    });
    http::serve(io, protocol, svc, drain).await;
}

async fn forward_opaque(
    ib: &Inbound,
    client: Prefixed<Metered<TcpStream>>,
    app: SocketAddr,
    target_addr: SocketAddr,
) -> Result<(), Error> {
    let labels = ib.labels(None, target_addr);
    let server = http::connect(app, ib.settings.connect_timeout, &ib.metrics, &labels).await?;
    relay::relay(client, server)
        .await
        .map_err(|source| Error::Connect { addr: app, source })?;
    Ok(())
}

/// One request to the application, in the protocol the original client spoke.
async fn proxy_request(
    ib: Arc<Inbound>,
    app: SocketAddr,
    target_addr: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let labels = ib.labels(http::authority_of(&req), target_addr);
    let metrics = ib.metrics.http(&labels);
    metrics.request();

    let mut req = req.map(http::boxed);
    // Identity is asserted by this proxy only (once mTLS exists), never taken from the peer.
    req.headers_mut().remove(http::L5D_CLIENT_ID);
    let orig_http1 = req.version() == Version::HTTP_2
        && req
            .headers_mut()
            .remove(http::L5D_ORIG_PROTO)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"HTTP/1.1"));

    let sent = if http::is_upgrade(&req) {
        http::to_http1(&mut req, true);
        ib.pool.send_upgrade(app, req, &labels).await
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
