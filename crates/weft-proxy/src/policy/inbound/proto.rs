//! `inbound::Server` protobuf → [`ServerPolicy`], validated once per update.
//!
//! Bad parts fail closed: an authorization whose networks or authentication cannot be read is
//! dropped (it admits nobody), a bad match drops that match (the outbound conversion's rule). Only
//! a server without a protocol is refused as a whole ([`Error`]): the client keeps the last good
//! policy.
//!
//! A rate limit comes with HTTP servers (`Detect`, `Http1`, `Http2`; `Grpc` has no such field in
//! the API). A zero rate is no limit (as Linkerd's proxy reads it); an override without a rate or
//! without identities is dropped; a limit left with nothing to limit is none.

use super::*;
use crate::policy::convert::{self, grpc_rule_matches, http_rule_matches};
use linkerd2_proxy_api::{
    inbound::{self as inb, authn, http_local_rate_limit as rl, proxy_protocol},
    net::IpNetwork,
};
use ratelimit::{Override, RateLimit};
use std::num::NonZeroU32;

/// Why a whole update cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("the server has no protocol")]
    NoProtocol,
}

pub fn server(s: inb::Server) -> Result<ServerPolicy, Error> {
    let meta = Arc::new(labels_meta(&s.labels, "server"));
    let kind = s.protocol.and_then(|p| p.kind).ok_or(Error::NoProtocol)?;
    let authorizations: Arc<[Authz]> = authorizations(s.authorizations, &meta).into();
    let (protocol, rate_limit) = match kind {
        proxy_protocol::Kind::Detect(d) => (
            ServerProtocol::Detect {
                timeout: d
                    .timeout
                    .and_then(|t| convert::duration(t).ok())
                    .filter(|t| !t.is_zero()),
                http: http_routes(d.http_routes, &meta),
            },
            d.http_local_rate_limit,
        ),
        proxy_protocol::Kind::Http1(h) => (
            ServerProtocol::Http1(http_routes(h.routes, &meta)),
            h.local_rate_limit,
        ),
        proxy_protocol::Kind::Http2(h) => (
            ServerProtocol::Http2(http_routes(h.routes, &meta)),
            h.local_rate_limit,
        ),
        proxy_protocol::Kind::Grpc(g) => (ServerProtocol::Grpc(grpc_routes(g.routes, &meta)), None),
        proxy_protocol::Kind::Opaque(_) => (ServerProtocol::Opaque, None),
        proxy_protocol::Kind::Tls(_) => (ServerProtocol::Tls, None),
    };
    let rate_limit = rate_limit
        .and_then(|r| self::rate_limit(r, &meta))
        .map(|r| Arc::new(RateLimiter::new(r)));
    Ok(ServerPolicy {
        meta,
        protocol,
        authorizations,
        rate_limit,
    })
}

/// `HttpLocalRateLimit` → [`RateLimit`]; `None` when nothing is limited.
pub fn rate_limit(r: inb::HttpLocalRateLimit, server: &Meta) -> Option<RateLimit> {
    let rps = |l: Option<rl::Limit>| l.and_then(|l| NonZeroU32::new(l.requests_per_second));
    let meta = Arc::new(convert::meta(r.metadata));
    let overrides = r
        .overrides
        .into_iter()
        .filter_map(|o| {
            let identities: Vec<String> = o
                .clients
                .map(|c| c.identities)
                .unwrap_or_default()
                .into_iter()
                .map(|i| i.name.trim_end_matches('.').to_ascii_lowercase())
                .filter(|i| !i.is_empty())
                .collect();
            match rps(o.limit) {
                Some(rps) if !identities.is_empty() => Some(Override { rps, identities }),
                _ => {
                    tracing::warn!(%server, policy = %meta, "inbound policy: dropping a rate limit override without a rate or clients");
                    None
                }
            }
        })
        .collect();
    let limit = RateLimit {
        total: rps(r.total),
        identity: rps(r.identity),
        overrides,
        meta,
    };
    let limits = limit.total.is_some() || limit.identity.is_some() || !limit.overrides.is_empty();
    limits.then_some(limit)
}

fn labels_meta(labels: &std::collections::HashMap<String, String>, what: &str) -> Meta {
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let name = get("name");
    if name.is_empty() {
        tracing::debug!(what, "inbound policy: no name label");
    }
    Meta {
        group: get("group"),
        kind: get("kind"),
        name: if name.is_empty() {
            "unknown".into()
        } else {
            name
        },
        ..Meta::default()
    }
}

fn http_routes(routes: Vec<inb::HttpRoute>, server: &Meta) -> InboundRoutes<HttpMatch> {
    let mut authz = Vec::with_capacity(routes.len());
    let routes = routes
        .into_iter()
        .map(|r| {
            let meta = Arc::new(convert::meta(r.metadata));
            authz.push(authorizations(r.authorizations, server).into());
            let rules = r
                .rules
                .into_iter()
                .map(|rule| super::rule(http_rule_matches(rule.matches, &meta)))
                .collect();
            Route {
                hosts: convert::hosts(r.hosts, &meta),
                rules,
                meta,
            }
        })
        .collect();
    inbound_routes(routes, authz, route::PathIndex::build)
}

fn grpc_routes(routes: Vec<inb::GrpcRoute>, server: &Meta) -> InboundRoutes<GrpcMatch> {
    let mut authz = Vec::with_capacity(routes.len());
    let routes = routes
        .into_iter()
        .map(|r| {
            let meta = Arc::new(convert::meta(r.metadata));
            authz.push(authorizations(r.authorizations, server).into());
            let rules = r
                .rules
                .into_iter()
                .map(|rule| super::rule(grpc_rule_matches(rule.matches, &meta)))
                .collect();
            Route {
                hosts: convert::hosts(r.hosts, &meta),
                rules,
                meta,
            }
        })
        .collect();
    // gRPC routes are weighed in full (as outbound).
    inbound_routes(routes, authz, |_| route::PathIndex::default())
}

fn authorizations(authzs: Vec<inb::Authz>, server: &Meta) -> Vec<Authz> {
    authzs
        .into_iter()
        .filter_map(|a| {
            authz(a)
                .map_err(|e| {
                    tracing::warn!(%server, error = %e, "inbound policy: dropping an unusable authorization");
                })
                .ok()
        })
        .collect()
}

pub fn authz(a: inb::Authz) -> Result<Authz, String> {
    let meta = Arc::new(match a.metadata {
        Some(m) => convert::meta(Some(m)),
        None => labels_meta(&a.labels, "authorization"),
    });
    let networks = a
        .networks
        .into_iter()
        .map(|n| {
            Ok(Network {
                net: cidr(
                    n.net
                        .ok_or_else(|| format!("{meta}: a network without an address"))?,
                )
                .map_err(|e| format!("{meta}: {e}"))?,
                except: n
                    .except
                    .into_iter()
                    .map(cidr)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("{meta}: except: {e}"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let authn = match a.authentication.and_then(|a| a.permit) {
        None => return Err(format!("{meta}: no authentication")),
        Some(authn::Permit::Unauthenticated(_)) => Authn::Unauthenticated,
        Some(authn::Permit::MeshTls(m)) => match m.clients {
            None => return Err(format!("{meta}: mesh TLS without clients")),
            Some(authn::permit_mesh_tls::Clients::Unauthenticated(_)) => Authn::TlsUnauthenticated,
            Some(authn::permit_mesh_tls::Clients::Identities(ids)) => Authn::MeshTls {
                identities: ids
                    .identities
                    .into_iter()
                    .map(|i| i.name.trim_end_matches('.').to_ascii_lowercase())
                    .collect(),
                suffixes: ids
                    .suffixes
                    .into_iter()
                    .map(|s| s.parts.join(".").to_ascii_lowercase())
                    .collect(),
            },
        },
    };
    Ok(Authz::new(meta, networks, authn))
}

fn cidr(n: IpNetwork) -> Result<Cidr, String> {
    let prefix = n.prefix_len;
    let ip: IpAddr =
        n.ip.ok_or("a network without an address")?
            .try_into()
            .map_err(|_| "an invalid network address".to_string())?;
    u8::try_from(prefix)
        .ok()
        .and_then(|p| Cidr::new(ip, p))
        .ok_or_else(|| format!("prefix length {prefix} is too long for {ip}"))
}
