//! Inbound policy: what `InboundServerPolicies` says about one application port (the server
//! that decided it, its protocol, who may connect, and its HTTP/gRPC routes with who may call
//! them), as plain Rust values validated once per update, and the authorization decision.
//!
//! - [`client`]: one `WatchPort` stream per application port, shared, published on a `watch`
//!   channel; the configured default policy ([`ServerPolicy::default_for`]) while the control
//!   plane has never answered for the port.
//! - [`proto`]: protobuf → these types.
//! - [`authorize`]: which authorization admits a client: pure and allocation-free (the request
//!   path calls it per request).
//! - [`ratelimit`]: the server's HTTP local rate limit and its token buckets, the one piece of
//!   state a policy carries (kept across updates that leave the limit as it is).
//!
//! Routes reuse the outbound route model and matcher ([`super::route`]): one precedence for both
//! directions.

use super::{
    route::{self, RequestHead},
    Distribution, GrpcMatch, HttpMatch, Meta, Route, Routes, Rule, Timeouts,
};
use crate::config::{Cidr, DefaultPolicy};
use std::{net::IpAddr, sync::Arc, time::Duration};

pub mod client;
pub mod proto;
pub mod ratelimit;

pub use client::{InboundPolicies, PortPolicy};
pub use ratelimit::RateLimiter;

/// One application port's policy.
#[derive(Clone, Debug)]
pub struct ServerPolicy {
    /// The `Server` resource or default policy that decided the port: `srv_group`, `srv_kind`,
    /// `srv_name` labels.
    pub meta: Arc<Meta>,
    pub protocol: ServerProtocol,
    /// Who may open opaque/TLS connections (HTTP requests take their route's authorizations).
    pub authorizations: Arc<[Authz]>,
    /// The HTTP local rate limit of every authorized request (never on opaque/TLS or default
    /// servers), with its buckets.
    pub rate_limit: Option<Arc<RateLimiter>>,
}

/// How the port's connections are spoken.
#[derive(Clone, Debug)]
pub enum ServerProtocol {
    /// Detect HTTP (with `timeout`, else the proxy's inbound detect timeout); HTTP requests take
    /// `http`'s routes, anything else is opaque.
    Detect {
        timeout: Option<Duration>,
        http: InboundRoutes<HttpMatch>,
    },
    Http1(InboundRoutes<HttpMatch>),
    Http2(InboundRoutes<HttpMatch>),
    Grpc(InboundRoutes<GrpcMatch>),
    Opaque,
    /// TLS the proxy does not terminate: relayed as opaque.
    Tls,
}

/// HTTP or gRPC routes in the matcher's shape, with each route's authorizations (same order).
#[derive(Clone, Debug)]
pub struct InboundRoutes<M> {
    pub routes: Routes<M>,
    pub authorizations: Vec<Arc<[Authz]>>,
}

impl<M> InboundRoutes<M> {
    fn take(&self, found: Option<route::Matched>) -> Option<RouteRef<'_>> {
        let index = found?.route;
        Some(RouteRef {
            index,
            meta: &self.routes.routes.get(index)?.meta,
            authorizations: self.authorizations.get(index)?,
        })
    }
}

/// The route a request took.
#[derive(Clone, Copy, Debug)]
pub struct RouteRef<'a> {
    /// Index into the server's routes (a per-connection cache key).
    pub index: usize,
    pub meta: &'a Arc<Meta>,
    pub authorizations: &'a [Authz],
}

/// One authorization: who it admits, and its `authz_*` labels.
#[derive(Clone, Debug)]
pub struct Authz {
    pub meta: Arc<Meta>,
    /// The client's IP must be in one of them (and not in its `except`).
    pub networks: Vec<Network>,
    pub authn: Authn,
    /// `meta` is the `audit` default (derived once: the request path asks per request).
    audit: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub net: Cidr,
    pub except: Vec<Cidr>,
}

/// What the client must have shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authn {
    /// Anyone: plaintext or TLS, with or without an identity.
    Unauthenticated,
    /// TLS terminated by this proxy, with or without a client identity.
    TlsUnauthenticated,
    /// A verified client identity equal to one of `identities` or within one of `suffixes`
    /// (lower case; a suffix `a.b` admits `a.b` and `*.a.b`; an empty suffix admits any
    /// identity).
    MeshTls {
        identities: Vec<String>,
        suffixes: Vec<String>,
    },
}

/// What the connection says about the client.
#[derive(Clone, Copy, Debug)]
pub struct ClientRef<'a> {
    pub ip: IpAddr,
    pub tls: ClientTls<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientTls<'a> {
    /// Plaintext, or TLS this proxy did not terminate.
    None,
    /// TLS terminated here; the verified identity if the client sent a certificate.
    Terminated { id: Option<&'a str> },
}

impl Authz {
    pub fn new(meta: Arc<Meta>, networks: Vec<Network>, authn: Authn) -> Authz {
        let audit = meta.kind == "default" && meta.name == "audit";
        Authz {
            meta,
            networks,
            authn,
            audit,
        }
    }

    /// The `audit` default: admits, but is logged and labelled `authz_name="audit"`.
    pub fn is_audit(&self) -> bool {
        self.audit
    }

    pub fn admits(&self, client: &ClientRef<'_>) -> bool {
        let in_network = self
            .networks
            .iter()
            .any(|n| n.net.contains(client.ip) && !n.except.iter().any(|e| e.contains(client.ip)));
        in_network && self.authn.admits(client.tls)
    }
}

impl Authn {
    fn admits(&self, tls: ClientTls<'_>) -> bool {
        match (self, tls) {
            (Authn::Unauthenticated, _) => true,
            (Authn::TlsUnauthenticated, ClientTls::Terminated { .. }) => true,
            (
                Authn::MeshTls {
                    identities,
                    suffixes,
                },
                ClientTls::Terminated { id: Some(id) },
            ) => {
                identities.iter().any(|i| i.eq_ignore_ascii_case(id))
                    || suffixes.iter().any(|s| in_suffix(id, s))
            }
            _ => false,
        }
    }
}

/// `name` is `suffix` or ends with `.suffix` (ASCII case-insensitive); `""` contains every name.
fn in_suffix(name: &str, suffix: &str) -> bool {
    if suffix.is_empty() {
        return true;
    }
    let name = name.trim_end_matches('.');
    let Some(cut) = name.len().checked_sub(suffix.len()) else {
        return false;
    };
    name.is_char_boundary(cut)
        && name[cut..].eq_ignore_ascii_case(suffix)
        && (cut == 0 || name.as_bytes()[cut - 1] == b'.')
}

/// The authorization admitting `client`, as an index into `authzs`: the first that admits it,
/// an audit authorization only when no other does. `None`: denied.
pub fn authorize(authzs: &[Authz], client: &ClientRef<'_>) -> Option<usize> {
    let mut audit = None;
    for (i, a) in authzs.iter().enumerate() {
        if a.admits(client) {
            if !a.is_audit() {
                return Some(i);
            }
            audit = audit.or(Some(i));
        }
    }
    audit
}

impl ServerPolicy {
    /// The route a request takes: hosts, then Gateway API precedence, as outbound. `None`:
    /// no route (404), or the port is not HTTP.
    pub fn route(&self, req: &RequestHead<'_>) -> Option<RouteRef<'_>> {
        match &self.protocol {
            ServerProtocol::Detect { http: r, .. }
            | ServerProtocol::Http1(r)
            | ServerProtocol::Http2(r) => r.take(route::find_http_indexed(
                &r.routes.routes,
                &r.routes.index,
                req,
            )),
            ServerProtocol::Grpc(r) => r.take(route::find_grpc(&r.routes.routes, req)),
            ServerProtocol::Opaque | ServerProtocol::Tls => None,
        }
    }

    /// Takes over `previous`'s rate limiter (its buckets) when the limit is the same, so a
    /// re-sent or otherwise changed policy does not refill them.
    pub fn keep_rate_limiter(&mut self, previous: &ServerPolicy) {
        if let (Some(new), Some(old)) = (&self.rate_limit, &previous.rate_limit) {
            if new.same_limit(old) {
                self.rate_limit = Some(old.clone());
            }
        }
    }

    /// `protocol` says the connection is opaque (no detection).
    pub fn is_opaque(&self) -> bool {
        matches!(self.protocol, ServerProtocol::Opaque | ServerProtocol::Tls)
    }

    /// The default policy `policy` for a port (Linkerd's defaults): detect with the proxy's
    /// timeout (or opaque), one match-all HTTP route `default` taking the server's
    /// authorizations.
    pub fn default_for(policy: DefaultPolicy, cluster: &[Cidr], opaque: bool) -> ServerPolicy {
        let authorizations: Arc<[Authz]> = default_authorizations(policy, cluster).into();
        let protocol = if opaque {
            ServerProtocol::Opaque
        } else {
            ServerProtocol::Detect {
                timeout: None,
                http: default_http_routes(authorizations.clone()),
            }
        };
        ServerPolicy {
            meta: Arc::new(Meta::default_named(policy.name())),
            protocol,
            authorizations,
            rate_limit: None,
        }
    }
}

/// Every address.
pub fn all_networks() -> Vec<Network> {
    [Cidr::ALL_V4, Cidr::ALL_V6]
        .into_iter()
        .map(|net| Network {
            net,
            except: Vec::new(),
        })
        .collect()
}

/// A default policy's authorizations (the contract's "Defaults").
pub fn default_authorizations(policy: DefaultPolicy, cluster: &[Cidr]) -> Vec<Authz> {
    let cluster = || {
        cluster
            .iter()
            .map(|net| Network {
                net: *net,
                except: Vec::new(),
            })
            .collect()
    };
    let any_identity = || Authn::MeshTls {
        identities: Vec::new(),
        suffixes: vec![String::new()],
    };
    let (networks, authn) = match policy {
        DefaultPolicy::Deny => return Vec::new(),
        DefaultPolicy::AllUnauthenticated | DefaultPolicy::Audit => {
            (all_networks(), Authn::Unauthenticated)
        }
        DefaultPolicy::AllAuthenticated => (all_networks(), any_identity()),
        DefaultPolicy::ClusterUnauthenticated => (cluster(), Authn::Unauthenticated),
        DefaultPolicy::ClusterAuthenticated => (cluster(), any_identity()),
    };
    vec![Authz::new(
        Arc::new(Meta::default_named(policy.name())),
        networks,
        authn,
    )]
}

/// One route `default` for every request, taking `authorizations`.
pub fn default_http_routes(authorizations: Arc<[Authz]>) -> InboundRoutes<HttpMatch> {
    inbound_routes(
        vec![Route {
            meta: Arc::new(Meta::default_named("default")),
            hosts: Vec::new(),
            rules: vec![rule(Vec::new())],
        }],
        vec![authorizations],
        route::PathIndex::build,
    )
}

/// Routes for the matcher, with their authorizations.
fn inbound_routes<M>(
    routes: Vec<Route<M>>,
    authorizations: Vec<Arc<[Authz]>>,
    index: impl FnOnce(&[Route<M>]) -> route::PathIndex,
) -> InboundRoutes<M> {
    InboundRoutes {
        routes: Routes {
            index: Arc::new(index(&routes)),
            routes: routes.into(),
            failure_accrual: Default::default(),
        },
        authorizations,
    }
}

/// An inbound rule: matches only (inbound routes have no backends; their filters are not
/// applied yet).
fn rule<M>(matches: Vec<M>) -> Rule<M> {
    Rule {
        matches,
        filters: Vec::new(),
        distribution: Distribution::Empty,
        timeouts: Timeouts::default(),
        retry: None,
        allow_l5d_request_headers: false,
    }
}

#[cfg(test)]
pub(crate) mod tests;
