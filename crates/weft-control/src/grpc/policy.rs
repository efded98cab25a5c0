//! InboundServerPolicies: the index's inbound snapshot (a Server or a default policy, its
//! authorizations, inbound routes and rate limit) encoded as `inbound::Server`, field by field
//! as the wire contract between control plane and proxy fixes it (`inbound-contract.md`).
//! (OutboundPolicies is in `outbound`.)

use super::meta::{default_meta, duration, match_all, DETECT_TIMEOUT};
use super::outbound::{grpc_match, host_match, http_match};
use super::stream::{stream, Stream};
use crate::index::inbound::{Authentication, Authz, AuthzOrigin, InRoute, RateLimit, ServerRef};
use crate::index::{self, InboundKey, Index};
use crate::resource::authz::{Cidr, ProxyProtocol};
use crate::resource::route::{Matches, POLICY_GROUP};
use linkerd2_proxy_api::inbound::{
    self as inb, inbound_server_policies_server::InboundServerPolicies,
};
use linkerd2_proxy_api::{grpc_route, meta, net};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

pub struct InboundService {
    index: Arc<Index>,
    shutdown: watch::Receiver<bool>,
}

impl InboundService {
    pub fn new(index: Arc<Index>, shutdown: watch::Receiver<bool>) -> Self {
        Self { index, shutdown }
    }

    fn subscribe(&self, spec: inb::PortSpec) -> Result<watch::Receiver<index::Inbound>, Status> {
        let (namespace, workload) = parse_workload(&spec.workload).ok_or_else(|| {
            Status::invalid_argument(format!(
                "workload {:?} must be NS:NAME or {{\"ns\":..,\"external_workload\":..}}",
                spec.workload
            ))
        })?;
        let port = u16::try_from(spec.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                Status::invalid_argument(format!("port must be 1..65535, got {}", spec.port))
            })?;
        Ok(self.index.inbound(&InboundKey {
            namespace,
            workload,
            port,
        }))
    }
}

/// Accepts `NS:NAME` and the JSON form `{"ns":..,"external_workload":..}` (or `"pod"`).
pub(crate) fn parse_workload(s: &str) -> Option<(String, String)> {
    let s = s.trim();
    if s.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(s).ok()?;
        let ns = v.get("ns")?.as_str()?;
        let name = v
            .get("external_workload")
            .or_else(|| v.get("pod"))?
            .as_str()?;
        return (!ns.is_empty() && !name.is_empty()).then(|| (ns.to_string(), name.to_string()));
    }
    let (ns, name) = s.split_once(':')?;
    (!ns.is_empty() && !name.is_empty()).then(|| (ns.to_string(), name.to_string()))
}

#[tonic::async_trait]
impl InboundServerPolicies for InboundService {
    type WatchPortStream = Stream<inb::Server>;

    async fn get_port(&self, req: Request<inb::PortSpec>) -> Result<Response<inb::Server>, Status> {
        let rx = self.subscribe(req.into_inner())?;
        let snapshot = rx.borrow().clone();
        Ok(Response::new(server(&snapshot)))
    }

    async fn watch_port(
        &self,
        req: Request<inb::PortSpec>,
    ) -> Result<Response<Self::WatchPortStream>, Status> {
        let rx = self.subscribe(req.into_inner())?;
        Ok(Response::new(stream(rx, self.shutdown.clone(), |s| {
            vec![Ok(server(s))]
        })))
    }
}

/// `{"group","kind","name"}`, the legacy labels of a server or an authorization.
fn labels(group: &str, kind: &str, name: &str) -> HashMap<String, String> {
    HashMap::from([
        ("group".to_string(), group.to_string()),
        ("kind".to_string(), kind.to_string()),
        ("name".to_string(), name.to_string()),
    ])
}

fn network(c: &Cidr) -> net::IpNetwork {
    net::IpNetwork::from((c.addr(), c.prefix()))
}

fn authz(a: &Authz) -> inb::Authz {
    use inb::authn::permit_mesh_tls::{Clients, PermitClientIdentities};
    use inb::authn::{Permit, PermitMeshTls, PermitUnauthenticated};
    let (labels, metadata) = match &a.origin {
        AuthzOrigin::Policy { namespace, name } => (
            labels(POLICY_GROUP, "authorizationpolicy", name),
            meta::Metadata {
                kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                    group: POLICY_GROUP.into(),
                    kind: "authorizationpolicy".into(),
                    name: name.clone(),
                    namespace: namespace.clone(),
                    section: String::new(),
                    port: 0,
                })),
            },
        ),
        AuthzOrigin::Default(p) => (labels("", "default", p.name()), default_meta(p.name())),
    };
    let permit = match &a.authentication {
        Authentication::Unauthenticated => Permit::Unauthenticated(PermitUnauthenticated {}),
        Authentication::MeshTls {
            identities,
            suffixes,
        } => Permit::MeshTls(PermitMeshTls {
            clients: Some(Clients::Identities(PermitClientIdentities {
                identities: identities
                    .iter()
                    .map(|name| inb::Identity { name: name.clone() })
                    .collect(),
                suffixes: suffixes
                    .iter()
                    .map(|s| inb::IdentitySuffix {
                        // The empty suffix (`*`) is no parts: any identity.
                        parts: s
                            .split('.')
                            .filter(|p| !p.is_empty())
                            .map(String::from)
                            .collect(),
                    })
                    .collect(),
            })),
        }),
    };
    inb::Authz {
        networks: a
            .networks
            .iter()
            .map(|n| inb::Network {
                net: Some(network(&n.net)),
                except: n.except.iter().map(network).collect(),
            })
            .collect(),
        authentication: Some(inb::Authn {
            permit: Some(permit),
        }),
        labels,
        metadata: Some(metadata),
    }
}

/// The `HttpLocalRateLimit` of a Server's `HTTPLocalRateLimitPolicy`.
fn rate_limit(r: &RateLimit) -> inb::HttpLocalRateLimit {
    use inb::http_local_rate_limit::{r#override::ClientIdentities, Limit, Override};
    let limit = |requests_per_second| Limit {
        requests_per_second,
    };
    inb::HttpLocalRateLimit {
        metadata: Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                group: POLICY_GROUP.into(),
                kind: "httplocalratelimitpolicy".into(),
                name: r.name.clone(),
                namespace: r.namespace.clone(),
                section: String::new(),
                port: 0,
            })),
        }),
        total: r.total.map(limit),
        identity: r.identity.map(limit),
        overrides: r
            .overrides
            .iter()
            .map(|o| Override {
                limit: Some(limit(o.requests_per_second)),
                clients: Some(ClientIdentities {
                    identities: o
                        .identities
                        .iter()
                        .map(|name| inb::Identity { name: name.clone() })
                        .collect(),
                }),
            })
            .collect(),
    }
}

fn route_meta(r: &InRoute) -> meta::Metadata {
    meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: r.kind.group().into(),
            kind: r.kind.kind().into(),
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            section: String::new(),
            port: 0,
        })),
    }
}

/// The HTTP routes of a server: its attached HTTPRoutes, else the default route carrying the
/// server-level authorizations.
fn http_routes(s: &index::Inbound, server_authz: &[inb::Authz]) -> Vec<inb::HttpRoute> {
    if s.http_routes.is_empty() {
        return vec![inb::HttpRoute {
            metadata: Some(default_meta("default")),
            hosts: Vec::new(),
            authorizations: server_authz.to_vec(),
            rules: vec![inb::http_route::Rule {
                matches: vec![match_all()],
                filters: Vec::new(),
            }],
        }];
    }
    s.http_routes
        .iter()
        .map(|r| inb::HttpRoute {
            metadata: Some(route_meta(r)),
            hosts: r.hostnames.iter().map(|h| host_match(h)).collect(),
            authorizations: r.authorizations.iter().map(authz).collect(),
            rules: r
                .rules
                .iter()
                .map(|m| inb::http_route::Rule {
                    matches: match m {
                        Matches::Http(ms) => ms.iter().map(http_match).collect(),
                        // Never attached to a Server (`index::inbound::attach_server`).
                        Matches::Grpc(_) | Matches::Connection => Vec::new(),
                    },
                    filters: Vec::new(),
                })
                .collect(),
        })
        .collect()
}

/// [`http_routes`] for gRPC: attached GRPCRoutes, else a default route matching every RPC.
fn grpc_routes(s: &index::Inbound, server_authz: &[inb::Authz]) -> Vec<inb::GrpcRoute> {
    if s.grpc_routes.is_empty() {
        return vec![inb::GrpcRoute {
            metadata: Some(default_meta("default")),
            hosts: Vec::new(),
            authorizations: server_authz.to_vec(),
            rules: vec![inb::grpc_route::Rule {
                matches: vec![grpc_route::GrpcRouteMatch::default()],
                filters: Vec::new(),
            }],
        }];
    }
    s.grpc_routes
        .iter()
        .map(|r| inb::GrpcRoute {
            metadata: Some(route_meta(r)),
            hosts: r.hostnames.iter().map(|h| host_match(h)).collect(),
            authorizations: r.authorizations.iter().map(authz).collect(),
            rules: r
                .rules
                .iter()
                .map(|m| inb::grpc_route::Rule {
                    matches: match m {
                        Matches::Grpc(ms) => ms.iter().map(grpc_match).collect(),
                        Matches::Http(_) | Matches::Connection => Vec::new(),
                    },
                    filters: Vec::new(),
                })
                .collect(),
        })
        .collect()
}

pub(crate) fn server(s: &index::Inbound) -> inb::Server {
    use inb::proxy_protocol::{Detect, Grpc, Http1, Http2, Kind, Opaque, Tls};
    let authorizations: Vec<inb::Authz> = s.authorizations.iter().map(authz).collect();
    let limit = s.rate_limit.as_ref().map(rate_limit);
    let kind = match s.protocol {
        ProxyProtocol::Unknown => Kind::Detect(Detect {
            timeout: duration(DETECT_TIMEOUT),
            http_routes: http_routes(s, &authorizations),
            http_local_rate_limit: limit,
        }),
        ProxyProtocol::Http1 => Kind::Http1(Http1 {
            routes: http_routes(s, &authorizations),
            local_rate_limit: limit,
        }),
        ProxyProtocol::Http2 => Kind::Http2(Http2 {
            routes: http_routes(s, &authorizations),
            local_rate_limit: limit,
        }),
        // linkerd2-proxy-api's `Grpc` has no rate-limit field (Detect, Http1 and Http2 do); the
        // index leaves a gRPC Server's limit out.
        ProxyProtocol::Grpc => Kind::Grpc(Grpc {
            routes: grpc_routes(s, &authorizations),
        }),
        ProxyProtocol::Opaque => Kind::Opaque(Opaque {}),
        ProxyProtocol::Tls => Kind::Tls(Tls {}),
    };
    let labels = match &s.server {
        ServerRef::Server(name) => labels(POLICY_GROUP, "server", name),
        ServerRef::Default(p) => labels("", "default", p.name()),
    };
    inb::Server {
        protocol: Some(inb::ProxyProtocol { kind: Some(kind) }),
        server_ips: Vec::new(),
        authorizations,
        labels,
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
