//! Gateway mode: a multicluster gateway's inbound side (`WEFT_PROXY_INBOUND_GATEWAY_SUFFIXES`).
//!
//! A peer in a linked cluster reaches a mirrored service through this proxy: mTLS to the inbound
//! listener with ALPN `transport.l5d.io/v1` and a transport header whose `name` is the service
//! here (the mirror's `authority_override`). Such a connection is forwarded through this
//! proxy's outbound path to that name — Destination and policy of this cluster, balancing, mTLS
//! to the target as this proxy's identity — opaque bytes as one relayed stream, HTTP (the
//! header's session protocol) request by request, each carrying `l5d-client-id: <the caller's
//! verified identity>` so that a target trusting this gateway authorizes the caller, not us.
//!
//! Refused (HTTP: 403 with `l5d-proxy-error`, opaque: closed; counted in
//! `inbound_gateway_refused_total{reason}`): a name on a proxy that is not a gateway, a name
//! under none of the suffixes, a client without a certificate, and a client that is this
//! gateway itself (a request that would loop through it). Like linkerd2-proxy's gateway, an
//! HTTP/1 request (carried as HTTP/2 with `l5d-orig-proto`) goes on as HTTP/1 and keeps the
//! authority its client's proxy gave it (the service's name here).
//!
//! Then the gateway's own inbound policy: the policy of the port the connection arrived on (the
//! gateway's Server and its AuthorizationPolicies, or the default policy) authorizes the caller
//! against the server's authorizations, exactly as an opaque connection to that port is
//! (`inbound_tcp_authz_{allow,deny}_total`), as linkerd2-proxy's gateway checks its inbound
//! port's policy before it forwards: an opaque stream once, an HTTP connection at its first
//! request and again at the first request after each policy update (so an update applies to
//! connections already open). Refused: opaque closed, HTTP 403.
//!
//! An opaque stream is relayed with the caller named in the transport header to the target (a
//! field of Weft's, see `mtls::TransportHeader::client_id`), so that a target trusting this
//! gateway authorizes the caller on opaque ports too.

use super::{Client, Conn, Ctx, Inbound};
use crate::policy::inbound::ServerPolicy;
use crate::{
    detect::Protocol,
    discovery::Target,
    http::{self, Body, Error},
    metrics as m,
    mtls::{SessionProtocol, TransportHeader},
    outbound::{self, Outbound},
};
use hyper::{header::HeaderValue, Request, Response};
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};
use tokio::io::{AsyncRead, AsyncWrite};

/// What a gateway needs besides the inbound side: the names it forwards to and the outbound
/// path that takes them there.
pub struct Gateway {
    /// Normalised as `Config::inbound_gateway_suffixes` (`svc.cluster.local.`; `.` = any).
    suffixes: Vec<String>,
    outbound: Arc<Outbound>,
}

impl Gateway {
    pub fn new(suffixes: Vec<String>, outbound: Arc<Outbound>) -> Gateway {
        Gateway { suffixes, outbound }
    }

    /// Is `host` (lower-case, no trailing dot) under one of the suffixes?
    fn admits(&self, host: &str) -> bool {
        crate::discovery::under_suffixes(&self.suffixes, host)
    }
}

/// Why a named connection is not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    NotAGateway,
    OutsideSuffixes,
    NoIdentity,
    Loop,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::NotAGateway => "not_a_gateway",
            Refusal::OutsideSuffixes => "outside_suffixes",
            Refusal::NoIdentity => "no_identity",
            Refusal::Loop => "loop",
        }
    }

    fn why(self) -> &'static str {
        match self {
            Refusal::NotAGateway => "this proxy is not a gateway",
            Refusal::OutsideSuffixes => "the name is outside the gateway's suffixes",
            Refusal::NoIdentity => "the client presented no certificate",
            Refusal::Loop => "the client is this gateway (a loop)",
        }
    }
}

/// A connection whose transport header names `name` (inside mTLS terminated here, `client`
/// identified by its certificate): forwarded or refused, until it closes.
pub(super) async fn serve<I>(ctx: Ctx, io: I, header: TransportHeader, name: String, client: Client)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ctx {
        ib,
        peer,
        local,
        drain,
        ..
    } = ctx;
    let target_addr = SocketAddr::new(local.ip(), header.port);
    let host = name.trim_end_matches('.').to_ascii_lowercase();
    let decided = decide(&ib, &host, &client);
    let protocol = match header.protocol {
        Some(SessionProtocol::Http1) => Some(Protocol::Http1),
        Some(SessionProtocol::Http2) => Some(Protocol::Http2),
        None => None,
    };
    let labels = ib.labels(None, target_addr, client.tls_label());
    let metrics = ib.metrics.clone();
    let count = move |refusal: Refusal| {
        metrics.count(
            m::INBOUND_GATEWAY_REFUSED,
            Some(&labels),
            &[("reason", refusal.label())],
        )
    };
    if header.client_id.is_some() {
        // A caller speaks for itself only: its own certificate names it here.
        tracing::info!(%peer, "a gateway client's transport header names a client: ignored");
    }
    let (ob, caller) = match decided {
        Ok(ok) => ok,
        Err(refusal) => {
            let target = format!("{host}:{}", header.port);
            tracing::info!(%peer, %target, reason = refusal.why(), "gateway connection refused");
            let Some(protocol) = protocol else {
                // Opaque: closed unanswered.
                return count(refusal);
            };
            // HTTP: every request of the connection gets the refusal.
            let svc = hyper::service::service_fn(move |req: Request<_>| {
                count(refusal);
                let e = Error::GatewayRefused {
                    name: target.clone(),
                    why: refusal.why(),
                };
                let resp = e.into_response_for(http::is_grpc(&req));
                async move { Ok::<_, Infallible>(resp) }
            });
            return http::serve(io, protocol, svc, drain, &ib.limits).await;
        }
    };

    // The gateway's own inbound policy for the caller: that of the port the connection came
    // to (the caller is its certificate's, for all of the connection).
    // Boxed: the first connection to the port may wait for the control plane's answer.
    let policy = Box::pin(ib.policies.port(local.port())).await;
    let conn = Conn::new(ib.clone(), policy, client, peer, local);
    let target = Target::Name {
        host,
        port: header.port,
    };
    let Some(protocol) = protocol else {
        // Opaque: authorized once; refused, closed unanswered.
        if let Err(e) = conn.authorize_connection(&conn.policy.current()) {
            return tracing::info!(%peer, error = %e, "gateway connection refused by policy");
        }
        let fixed = ob.fixed(target).await;
        if let Err(e) = outbound::relay_fixed(&ob, io, fixed, &caller).await {
            tracing::info!(%peer, error = %e, "gateway connection failed");
        }
        return;
    };
    let fixed = ob.fixed(target).await;
    let admission = Arc::new(Admission {
        conn,
        last: Mutex::new(None),
    });
    let caller = HeaderValue::from_str(&caller).ok();
    let svc = hyper::service::service_fn(move |req: Request<http::RequestBody>| {
        let (ob, fixed, caller) = (ob.clone(), fixed.clone(), caller.clone());
        let admission = admission.clone();
        async move {
            let resp = match admission.admit() {
                Ok(()) => forward(ob, peer, fixed, caller, req).await,
                Err(e) => admission.conn.refuse(e, &req),
            };
            Ok::<_, Infallible>(resp)
        }
    });
    http::serve(io, protocol, svc, drain, &ib.limits).await;
}

/// An HTTP connection's caller before the gateway's policy: decided (and counted) at the first
/// request under each version of the policy, so an update applies to the next request.
struct Admission {
    conn: Conn,
    /// The policy of the last decision and whether it admitted the caller.
    last: Mutex<Option<(Arc<ServerPolicy>, bool)>>,
}

impl Admission {
    fn admit(&self) -> Result<(), Error> {
        let server = self.conn.policy.current();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let admitted = match &*last {
            Some((decided, admitted)) if Arc::ptr_eq(decided, &server) => *admitted,
            _ => {
                let decided = self.conn.authorize_connection(&server);
                if let Err(e) = &decided {
                    tracing::info!(peer = %self.conn.client_addr, error = %e, "gateway caller refused by policy");
                }
                *last = Some((server.clone(), decided.is_ok()));
                decided.is_ok()
            }
        };
        match admitted {
            true => Ok(()),
            false => Err(self.conn.unauthorized_by(&server)),
        }
    }
}

/// The outbound path and the caller's identity, or why the connection is refused.
fn decide(ib: &Inbound, host: &str, client: &Client) -> Result<(Arc<Outbound>, String), Refusal> {
    let gateway = ib.gateway.as_ref().ok_or(Refusal::NotAGateway)?;
    if !gateway.admits(host) {
        return Err(Refusal::OutsideSuffixes);
    }
    let caller = client.id().ok_or(Refusal::NoIdentity)?;
    if ib.tls.as_ref().is_some_and(|t| t.name() == caller) {
        return Err(Refusal::Loop);
    }
    Ok((gateway.outbound.clone(), caller.to_string()))
}

/// One forwarded HTTP request: the caller's identity asserted in `l5d-client-id` (whatever the
/// client sent there), HTTP/1 carried over HTTP/2 turned back into HTTP/1 (the outbound path
/// upgrades it again for a meshed target), then the outbound path.
async fn forward(
    ob: Arc<Outbound>,
    peer: SocketAddr,
    fixed: outbound::Fixed,
    caller: Option<HeaderValue>,
    req: Request<http::RequestBody>,
) -> Response<Body> {
    let mut req = req.map(http::boxed);
    req.headers_mut().remove(http::L5D_CLIENT_ID);
    if let Some(caller) = caller {
        req.headers_mut().insert(http::L5D_CLIENT_ID, caller);
    }
    http::take_orig_http1(&mut req);
    outbound::forward_fixed(ob, peer, fixed, req).await
}
