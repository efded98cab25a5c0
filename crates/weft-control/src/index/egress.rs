//! The egress policy of an address outside the mesh: which `EgressNetwork` answers a client
//! (those of the client's namespace containing the address, else those of the egress
//! namespace; the oldest, then by name), the routes attached to it for the address's port (of
//! one kind: GRPCRoutes, else HTTPRoutes, else TLSRoutes, else TCPRoutes, as in Linkerd; their
//! rules sending to the original destination), and the status of every EgressNetwork and of
//! routes attached to one. The same attachment rule decides both, so what the status says is
//! what proxies get.

use super::inbound::PolicyStatus;
use super::lookup::Lookup;
use super::routes::{self, Condition, OutRoute};
use crate::resource::authz::Cidr;
use crate::resource::egress::{EgressNetwork, TrafficPolicy, EGRESS_NETWORK_KIND};
use crate::resource::route::{ParentRef, Route, RouteProtocol, POLICY_GROUP};
use crate::resource::State;
use std::net::{IpAddr, SocketAddr};

/// The egress policy of one address for clients of one namespace. Plain data: `grpc` maps it
/// to protobuf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Egress {
    /// The EgressNetwork that answered.
    pub namespace: String,
    pub name: String,
    pub traffic_policy: TrafficPolicy,
    /// The original destination: every route's (and the default route's) only backend.
    pub addr: SocketAddr,
    /// The protocol the routes decide (`Http` without routes: detection, as before routes).
    pub protocol: RouteProtocol,
    /// The routes of that protocol attached to the network (and this port), in precedence
    /// order; their rules' `backends` are empty, meaning `addr`.
    pub routes: Vec<OutRoute>,
}

impl Egress {
    /// Why a request the routes do not admit is refused under `Deny`.
    pub fn deny_message(&self) -> String {
        format!(
            "traffic to {} is not allowed by EgressNetwork {}/{}",
            self.addr, self.namespace, self.name
        )
    }
}

/// The EgressNetwork that answers a client of `client_ns` for `ip`: those of `client_ns`
/// containing it, else those of `egress_ns`; the oldest, then by name.
pub fn winner<'a>(
    state: &'a State,
    cluster: &[Cidr],
    egress_ns: &str,
    client_ns: &str,
    ip: IpAddr,
) -> Option<&'a EgressNetwork> {
    let of = |ns: &str| {
        state
            .egress_networks
            .values()
            .filter(|n| n.namespace == ns && n.contains(ip, cluster))
            .min_by(|a, b| a.precedence().cmp(&b.precedence()))
    };
    of(client_ns).or_else(|| of(egress_ns))
}

/// The policy of `net` for `addr`.
pub(super) fn egress(
    state: &State,
    lookup: &Lookup,
    net: &EgressNetwork,
    addr: SocketAddr,
) -> Egress {
    let key = (net.namespace.clone(), net.name.clone());
    let attached = lookup.egress_routes_of(state, &key).filter(|r| {
        r.parents.iter().any(|p| {
            is_egress_ref(p)
                && p.namespace == net.namespace
                && p.name == net.name
                && p.port.is_none_or(|pp| pp == addr.port())
                && attach(state, lookup, r, p).is_ok()
        })
    });
    let (protocol, attached) = routes::in_force(attached);
    let routes = attached.into_iter().map(|r| out_route(state, r)).collect();
    Egress {
        namespace: net.namespace.clone(),
        name: net.name.clone(),
        traffic_policy: net.traffic_policy,
        addr,
        protocol,
        routes,
    }
}

/// A route of an EgressNetwork: its matches, filters, timeouts and retry (its own annotations:
/// there is no Service to inherit from). Its backendRefs are ignored: every rule goes to the
/// original destination, which is what Linkerd does with a backendRef to the same
/// EgressNetwork; a Service backend of an egress route is not supported (it would leave the
/// network for a Service of the mesh).
fn out_route(state: &State, r: &Route) -> OutRoute {
    let timeouts = r.timeouts.unwrap_or_default();
    routes::rules_of(state, r, timeouts, r.retry.as_ref(), |_| Vec::new())
}

/// A `policy.linkerd.io` `EgressNetwork` parentRef.
pub(super) fn is_egress_ref(p: &ParentRef) -> bool {
    p.group.eq_ignore_ascii_case(POLICY_GROUP) && p.kind.eq_ignore_ascii_case(EGRESS_NETWORK_KIND)
}

/// Whether `route` attaches to its EgressNetwork parent `p`; `Err((reason, message))` for the
/// route's `Accepted` condition.
pub(super) fn attach(
    state: &State,
    lookup: &Lookup,
    route: &Route,
    p: &ParentRef,
) -> Result<(), (&'static str, String)> {
    if p.namespace != route.namespace {
        return Err((
            "UnsupportedValue",
            format!(
                "parent EgressNetwork {}/{} is in another namespace: put the route in namespace {}",
                p.namespace, p.name, p.namespace
            ),
        ));
    }
    if !state
        .egress_networks
        .contains_key(&(p.namespace.clone(), p.name.clone()))
    {
        return Err((
            "NoMatchingParent",
            format!("no EgressNetwork {}/{}", p.namespace, p.name),
        ));
    }
    let key = (p.namespace.clone(), p.name.clone());
    routes::outranked(
        route,
        p,
        EGRESS_NETWORK_KIND,
        is_egress_ref,
        None,
        lookup.egress_routes_of(state, &key),
    )
}

/// The status of every EgressNetwork of `state`, in state order (always `Accepted`).
pub fn statuses(state: &State) -> Vec<PolicyStatus> {
    state
        .egress_networks
        .values()
        .map(|n| PolicyStatus {
            group: POLICY_GROUP,
            kind: EGRESS_NETWORK_KIND,
            namespace: n.namespace.clone(),
            name: n.name.clone(),
            conditions: vec![Condition {
                kind: "Accepted",
                status: "True",
                reason: "Accepted",
                message: String::new(),
            }],
            target_ref: None,
        })
        .collect()
}

#[cfg(test)]
#[path = "egress_tests.rs"]
mod tests;
