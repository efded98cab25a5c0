//! The inbound policy of one workload port: which `Server` decides it (the oldest of those
//! selecting the port, then by name), its protocol, the `AuthorizationPolicy`s that apply to it
//! and to the inbound routes attached to it, resolved against their authentications; or, when
//! no Server selects the port, the default policy (the workload's annotation, else its
//! Namespace's, else the control plane's); and the `HTTPLocalRateLimitPolicy` of its Server (the
//! oldest of those targeting it, then by name). Also the status of every Server,
//! AuthorizationPolicy and HTTPLocalRateLimitPolicy, from the same rules, so what the status
//! says is what proxies get.
//!
//! An AuthorizationPolicy whose target or an authentication it requires does not exist is left
//! out (it authorizes nothing: fail closed) and its status says why.

use super::lookup::Key;
use super::routes::Condition;
use crate::resource::authz::{
    AuthnRef, AuthorizationPolicy, Cidr, DefaultPolicy, Network, PolicyTarget, ProxyProtocol,
    Server, AUTHORIZATION_POLICY_KIND, DEFAULT_CLUSTER_NETWORKS, SERVER_KIND,
};
use crate::resource::ratelimit::{RateLimitPolicy, RATE_LIMIT_KIND};
use crate::resource::route::{Matches, ParentRef, Route, RouteKind, POLICY_GROUP};
use crate::resource::{ExternalWorkload, State};

/// The control plane's inbound settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundDefaults {
    /// The policy of ports no Server selects, unless annotations say otherwise.
    pub default_policy: DefaultPolicy,
    /// The networks of the `cluster-*` default policies.
    pub cluster_networks: Vec<Cidr>,
}

impl Default for InboundDefaults {
    fn default() -> Self {
        Self {
            default_policy: DefaultPolicy::default(),
            cluster_networks: crate::resource::authz::parse_cidr_list(DEFAULT_CLUSTER_NETWORKS)
                .expect("the default cluster networks parse"),
        }
    }
}

/// Key of an inbound port policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InboundKey {
    pub namespace: String,
    pub workload: String,
    pub port: u16,
}

/// Snapshot for InboundServerPolicies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// Whether the workload is known (unknown workloads get the default policy).
    pub known: bool,
    /// What decided the port.
    pub server: ServerRef,
    /// `Unknown` (detect) or `Opaque` for a default server.
    pub protocol: ProxyProtocol,
    /// Server-level authorizations: policies targeting the Server or its Namespace, plus the
    /// Server's access policy; for a default server, the default policy's.
    pub authorizations: Vec<Authz>,
    /// Attached `HTTPRoute`s, in precedence order; empty: the default route.
    pub http_routes: Vec<InRoute>,
    /// Attached `GRPCRoute`s, in precedence order; empty: the default route.
    pub grpc_routes: Vec<InRoute>,
    /// The rate limit of the Server's HTTP requests; never for a default server, an opaque or
    /// TLS Server, nor a gRPC Server (the proxy API cannot carry it).
    pub rate_limit: Option<RateLimit>,
}

impl Inbound {
    pub fn opaque(&self) -> bool {
        matches!(self.protocol, ProxyProtocol::Opaque | ProxyProtocol::Tls)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerRef {
    /// A `Server` of this name (in the workload's namespace).
    Server(String),
    Default(DefaultPolicy),
}

/// One authorization: a client is admitted when its address is in `networks` (outside the
/// entry's `except`) and `authentication` permits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authz {
    pub origin: AuthzOrigin,
    /// Never empty: "any address" is `0.0.0.0/0` and `::/0`.
    pub networks: Vec<Network>,
    pub authentication: Authentication,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthzOrigin {
    Policy { namespace: String, name: String },
    Default(DefaultPolicy),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authentication {
    /// Any client, with or without TLS.
    Unauthenticated,
    /// Only mTLS clients with one of these identities or identity suffixes (without `*.`;
    /// the empty suffix matches any identity).
    MeshTls {
        identities: Vec<String>,
        suffixes: Vec<String>,
    },
}

/// An inbound route: matches and the authorizations of its requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InRoute {
    pub kind: RouteKind,
    pub namespace: String,
    pub name: String,
    pub hostnames: Vec<String>,
    /// One entry per rule.
    pub rules: Vec<Matches>,
    /// Policies targeting this route, plus the Server's access policy.
    pub authorizations: Vec<Authz>,
}

/// An `HTTPLocalRateLimitPolicy` as applied to a Server: requests per second.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub namespace: String,
    pub name: String,
    /// Shared by every client of the Server.
    pub total: Option<u32>,
    /// Per client identity (unauthenticated clients share one).
    pub identity: Option<u32>,
    /// Per identity for the clients named, instead of `identity`.
    pub overrides: Vec<RateLimitOverride>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitOverride {
    pub requests_per_second: u32,
    /// Exact client identities.
    pub identities: Vec<String>,
}

/// The authorizations of a default policy (`deny`: none).
pub fn default_authorizations(p: DefaultPolicy, d: &InboundDefaults) -> Vec<Authz> {
    let everywhere = || {
        Cidr::everything()
            .into_iter()
            .map(|net| Network {
                net,
                except: Vec::new(),
            })
            .collect::<Vec<_>>()
    };
    let cluster = || {
        d.cluster_networks
            .iter()
            .map(|net| Network {
                net: *net,
                except: Vec::new(),
            })
            .collect::<Vec<_>>()
    };
    let any_identity = || Authentication::MeshTls {
        identities: Vec::new(),
        suffixes: vec![String::new()],
    };
    let (networks, authentication) = match p {
        DefaultPolicy::Deny => return Vec::new(),
        DefaultPolicy::AllUnauthenticated | DefaultPolicy::Audit => {
            (everywhere(), Authentication::Unauthenticated)
        }
        DefaultPolicy::AllAuthenticated => (everywhere(), any_identity()),
        DefaultPolicy::ClusterUnauthenticated => (cluster(), Authentication::Unauthenticated),
        DefaultPolicy::ClusterAuthenticated => (cluster(), any_identity()),
    };
    vec![Authz {
        origin: AuthzOrigin::Default(p),
        networks,
        authentication,
    }]
}

/// The inbound policy of `key` in `state`.
pub fn inbound(state: &State, d: &InboundDefaults, key: &InboundKey) -> Inbound {
    let namespace_default = || {
        state
            .namespaces
            .get(&key.namespace)
            .and_then(|n| n.default_policy())
            .unwrap_or(d.default_policy)
    };
    let Some(w) = state
        .workloads
        .get(&(key.namespace.clone(), key.workload.clone()))
    else {
        return default_server(namespace_default(), false, false, d);
    };
    match winner(state, w, key.port) {
        Some(srv) => server_policy(state, d, srv),
        None => {
            let policy =
                DefaultPolicy::from_annotations(&w.annotations).unwrap_or_else(namespace_default);
            default_server(policy, true, w.opaque_ports.contains(&key.port), d)
        }
    }
}

fn default_server(p: DefaultPolicy, known: bool, opaque: bool, d: &InboundDefaults) -> Inbound {
    Inbound {
        known,
        server: ServerRef::Default(p),
        protocol: if opaque {
            ProxyProtocol::Opaque
        } else {
            ProxyProtocol::Unknown
        },
        authorizations: default_authorizations(p, d),
        http_routes: Vec::new(),
        grpc_routes: Vec::new(),
        rate_limit: None,
    }
}

/// The entries of a (namespace, name)-keyed map in one namespace.
fn in_namespace<'a, V>(
    map: &'a std::collections::BTreeMap<Key, V>,
    ns: &str,
) -> impl Iterator<Item = &'a V> + 'a {
    let ns = ns.to_string();
    map.range((ns.clone(), String::new())..)
        .take_while(move |((n, _), _)| *n == ns)
        .map(|(_, v)| v)
}

/// The Server deciding port `port` of `w`: the oldest of those selecting it, then by name.
pub fn winner<'a>(state: &'a State, w: &ExternalWorkload, port: u16) -> Option<&'a Server> {
    in_namespace(&state.servers, &w.namespace)
        .filter(|s| s.port_of(w) == Some(port))
        .min_by(|a, b| a.precedence().cmp(&b.precedence()))
}

/// The rate-limit policy of `srv`: the oldest of those targeting it, then by name.
pub fn rate_limit_winner<'a>(state: &'a State, srv: &Server) -> Option<&'a RateLimitPolicy> {
    in_namespace(&state.rate_limit_policies, &srv.namespace)
        .filter(|p| p.server == srv.name)
        .min_by(|a, b| a.precedence().cmp(&b.precedence()))
}

fn rate_limit(p: &RateLimitPolicy) -> RateLimit {
    RateLimit {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        total: p.total,
        identity: p.identity,
        overrides: p
            .overrides
            .iter()
            .map(|o| RateLimitOverride {
                requests_per_second: o.requests_per_second,
                identities: o.identities.clone(),
            })
            .collect(),
    }
}

fn server_policy(state: &State, d: &InboundDefaults, srv: &Server) -> Inbound {
    let access = default_authorizations(srv.access_policy, d);
    // Policies of `ns` whose target passes `target`, resolved, then the access policy.
    let resolved = |ns: &str, target: &dyn Fn(&PolicyTarget) -> bool| -> Vec<Authz> {
        in_namespace(&state.authorization_policies, ns)
            .filter(|p| target(&p.target))
            .filter_map(|p| resolve(state, p).ok())
            .chain(access.iter().cloned())
            .collect()
    };
    let authorizations = resolved(&srv.namespace, &|t| match t {
        PolicyTarget::Server(name) => *name == srv.name,
        PolicyTarget::Namespace => true,
        PolicyTarget::Route(..) => false,
    });
    let mut attached: Vec<&Route> = state
        .routes
        .values()
        .filter(|r| {
            r.parents
                .iter()
                .any(|p| is_server_parent(p, srv) && attach_server(state, r, p).is_ok())
        })
        .collect();
    attached.sort_by_key(|r| (r.created.unwrap_or(i64::MAX), &r.namespace, &r.name, r.kind));
    let (mut http_routes, mut grpc_routes) = (Vec::new(), Vec::new());
    for r in attached {
        let route = InRoute {
            kind: r.kind,
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            hostnames: r.hostnames.clone(),
            rules: r.rules.iter().map(|rule| rule.matches.clone()).collect(),
            // A policy targets routes of its own namespace.
            authorizations: resolved(
                &r.namespace,
                &|t| matches!(t, PolicyTarget::Route(k, name) if *k == r.kind && *name == r.name),
            ),
        };
        if r.kind.is_grpc() {
            grpc_routes.push(route);
        } else {
            http_routes.push(route);
        }
    }
    // Opaque and TLS Servers have no requests to limit; a gRPC Server's limit has no field in
    // the proxy API (linkerd2-proxy-api's `Grpc` protocol, as Linkerd's), so it is not in force
    // either, and the snapshot (what `weft authz` shows) says so by leaving it out.
    let limited = !matches!(
        srv.protocol,
        ProxyProtocol::Opaque | ProxyProtocol::Tls | ProxyProtocol::Grpc
    );
    Inbound {
        known: true,
        server: ServerRef::Server(srv.name.clone()),
        protocol: srv.protocol,
        authorizations,
        http_routes,
        grpc_routes,
        rate_limit: rate_limit_winner(state, srv)
            .filter(|_| limited)
            .map(rate_limit),
    }
}

/// Whether `p` names the Server `srv` (a route's inbound parent).
fn is_server_parent(p: &ParentRef, srv: &Server) -> bool {
    is_server_ref(p) && p.namespace == srv.namespace && p.name == srv.name
}

pub(super) fn is_server_ref(p: &ParentRef) -> bool {
    p.group.eq_ignore_ascii_case(POLICY_GROUP) && p.kind.eq_ignore_ascii_case(SERVER_KIND)
}

/// Whether a route attaches to its `Server` parent `p`: an HTTPRoute or GRPCRoute (inbound
/// routes authorize requests; TLSRoutes and TCPRoutes are outbound only, as in Linkerd), and the
/// Server exists. `Err((reason, message))` for the route's `Accepted` condition.
pub(super) fn attach_server(
    state: &State,
    route: &Route,
    p: &ParentRef,
) -> Result<(), (&'static str, String)> {
    if route.kind.is_connection() {
        Err((
            "NotAllowedByParent",
            format!(
                "Server {}/{}: only HTTPRoutes and GRPCRoutes attach to a Server ({}s are outbound only)",
                p.namespace,
                p.name,
                route.kind.kind()
            ),
        ))
    } else if state
        .servers
        .contains_key(&(p.namespace.clone(), p.name.clone()))
    {
        Ok(())
    } else {
        Err((
            "NoMatchingParent",
            format!("no Server {}/{}", p.namespace, p.name),
        ))
    }
}

/// An AuthorizationPolicy's authorization, or why it authorizes nothing (reason, message).
fn resolve(state: &State, p: &AuthorizationPolicy) -> Result<Authz, (&'static str, String)> {
    let ns = &p.namespace;
    let target_found = match &p.target {
        PolicyTarget::Server(name) => state
            .servers
            .contains_key(&(ns.clone(), name.clone()))
            .then_some(())
            .ok_or_else(|| format!("Server {ns}/{name} not found")),
        PolicyTarget::Route(kind, name) => state
            .routes
            .contains_key(&(*kind, ns.clone(), name.clone()))
            .then_some(())
            .ok_or_else(|| format!("{} {ns}/{name} not found", kind.qualified())),
        // A namespace needs no document to exist.
        PolicyTarget::Namespace => Ok(()),
    };
    target_found.map_err(|m| ("TargetNotFound", m))?;
    let mut networks = None;
    let mut authentication = Authentication::Unauthenticated;
    let mut missing = Vec::new();
    for r in &p.authentications {
        match r {
            AuthnRef::MeshTls { namespace, name } => {
                match state
                    .mesh_tls_authentications
                    .get(&(namespace.clone(), name.clone()))
                {
                    Some(m) => {
                        authentication = Authentication::MeshTls {
                            identities: m.identities.clone(),
                            suffixes: m.suffixes.clone(),
                        }
                    }
                    None => missing.push(format!(
                        "MeshTLSAuthentication {namespace}/{name} not found"
                    )),
                }
            }
            AuthnRef::Network { namespace, name } => {
                match state
                    .network_authentications
                    .get(&(namespace.clone(), name.clone()))
                {
                    Some(n) => networks = Some(n.networks.clone()),
                    None => missing.push(format!(
                        "NetworkAuthentication {namespace}/{name} not found"
                    )),
                }
            }
            AuthnRef::ServiceAccount { identity, .. } => {
                authentication = Authentication::MeshTls {
                    identities: vec![identity.clone()],
                    suffixes: Vec::new(),
                }
            }
        }
    }
    if !missing.is_empty() {
        return Err(("AuthenticationNotFound", missing.join("; ")));
    }
    Ok(Authz {
        origin: AuthzOrigin::Policy {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
        },
        networks: networks.unwrap_or_else(|| {
            Cidr::everything()
                .into_iter()
                .map(|net| Network {
                    net,
                    except: Vec::new(),
                })
                .collect()
        }),
        authentication,
    })
}

/// The status of one `Server`, `AuthorizationPolicy` or `HTTPLocalRateLimitPolicy`, as
/// `GET /v1/store` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PolicyStatus {
    pub group: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// One `Accepted` condition.
    pub conditions: Vec<Condition>,
    /// The policy's target, for the kinds whose upstream status carries it
    /// (HTTPLocalRateLimitPolicy: its Server, found or not).
    #[serde(rename = "targetRef", skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
}

/// A status's `targetRef`: Linkerd's `LocalTargetRef` (same namespace as the policy).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TargetRef {
    pub group: &'static str,
    pub kind: &'static str,
    pub name: String,
}

/// Linkerd's reasons for a rate-limit policy that applies nothing (its policy controller's
/// `NO_MATCHING_TARGET` and `RATELIMIT_REASON_ALREADY_EXISTS`).
pub const NO_MATCHING_TARGET: &str = "NoMatchingTarget";
pub const RATE_LIMIT_ALREADY_EXISTS: &str = "RateLimitReasonAlreadyExists";

fn accepted(result: Result<(), (&'static str, String)>) -> Condition {
    match result {
        Ok(()) => Condition {
            kind: "Accepted",
            status: "True",
            reason: "Accepted",
            message: String::new(),
        },
        Err((reason, message)) => Condition {
            kind: "Accepted",
            status: "False",
            reason,
            message,
        },
    }
}

/// The status of every Server, then every AuthorizationPolicy, then every
/// HTTPLocalRateLimitPolicy, of `state`, in state order. A Server is `Conflicted` when an older
/// one decides some workload port it selects; a rate-limit policy is, in Linkerd's words,
/// `RateLimitReasonAlreadyExists` when an older one limits its Server and `NoMatchingTarget`
/// when the Server does not exist, and carries its `targetRef` either way.
pub fn statuses(state: &State) -> Vec<PolicyStatus> {
    let mut out = Vec::new();
    for s in state.servers.values() {
        let mut lost = Vec::new();
        for w in in_namespace(&state.workloads, &s.namespace) {
            let Some(port) = s.port_of(w) else { continue };
            if let Some(win) = winner(state, w, port).filter(|win| win.name != s.name) {
                lost.push(format!(
                    "workload {}/{} port {port} is decided by Server {}/{} (older, or same age and first by name)",
                    w.namespace, w.name, win.namespace, win.name
                ));
            }
        }
        let result = if lost.is_empty() {
            Ok(())
        } else {
            Err(("Conflicted", lost.join("; ")))
        };
        out.push(PolicyStatus {
            group: POLICY_GROUP,
            kind: SERVER_KIND,
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            conditions: vec![accepted(result)],
            target_ref: None,
        });
    }
    for p in state.authorization_policies.values() {
        out.push(PolicyStatus {
            group: POLICY_GROUP,
            kind: AUTHORIZATION_POLICY_KIND,
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            conditions: vec![accepted(resolve(state, p).map(|_| ()))],
            target_ref: None,
        });
    }
    for p in state.rate_limit_policies.values() {
        out.push(PolicyStatus {
            group: POLICY_GROUP,
            kind: RATE_LIMIT_KIND,
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            conditions: vec![accepted(rate_limit_status(state, p))],
            target_ref: Some(TargetRef {
                group: POLICY_GROUP,
                kind: SERVER_KIND,
                name: p.server.clone(),
            }),
        });
    }
    out
}

/// Whether `p` limits its Server: the Server exists and no older policy targets it.
fn rate_limit_status(state: &State, p: &RateLimitPolicy) -> Result<(), (&'static str, String)> {
    let (ns, name) = (&p.namespace, &p.server);
    let Some(srv) = state.servers.get(&(ns.clone(), name.clone())) else {
        return Err((NO_MATCHING_TARGET, format!("Server {ns}/{name} not found")));
    };
    match rate_limit_winner(state, srv) {
        Some(win) if win.name != p.name => Err((
            RATE_LIMIT_ALREADY_EXISTS,
            format!(
                "Server {ns}/{name} is limited by HTTPLocalRateLimitPolicy {ns}/{} (older, or same age and first by name)",
                win.name
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "inbound_tests.rs"]
mod tests;
