//! Linkerd's `EgressNetwork` (`policy.linkerd.io/v1alpha1`): a set of addresses outside the
//! mesh and whether traffic to them is allowed. Which EgressNetwork answers a client's address
//! (its own namespace's, else the egress namespace's; the oldest) is the index's business
//! (`index::egress`).

use super::authz::{networks, Cidr, Network};
use super::route::{creation_timestamp, POLICY_GROUP};
use super::{spec_of, type_name, Ctx, Meta, Resource};
use serde_json::{Map, Value};
use std::net::IpAddr;

pub const EGRESS_NETWORK_KIND: &str = "EgressNetwork";
/// The namespace whose EgressNetworks apply to every client (Linkerd's is `linkerd-egress`).
pub const DEFAULT_EGRESS_NAMESPACE: &str = "weft-egress";

/// `spec.trafficPolicy`: what happens to traffic no route attached to the network admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficPolicy {
    Allow,
    Deny,
}

/// A validated `EgressNetwork`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressNetwork {
    pub name: String,
    pub namespace: String,
    /// Unix seconds of `metadata.creationTimestamp`; in a [`super::State`] a network without one
    /// carries the time the store first saw it (the oldest matching network wins).
    pub created: Option<i64>,
    pub traffic_policy: TrafficPolicy,
    /// `spec.networks`; empty: every address outside the cluster networks.
    pub networks: Vec<Network>,
}

impl EgressNetwork {
    /// Whether `ip` belongs to this network; `cluster` are the control plane's cluster networks
    /// (what an EgressNetwork without `networks` excludes).
    pub fn contains(&self, ip: IpAddr, cluster: &[Cidr]) -> bool {
        if self.networks.is_empty() {
            !cluster.iter().any(|c| c.contains(ip))
        } else {
            self.networks.iter().any(|n| n.contains(ip))
        }
    }

    /// The precedence of networks matching the same address: oldest first, then name.
    pub fn precedence(&self) -> (i64, &str) {
        (self.created.unwrap_or(i64::MAX), &self.name)
    }
}

/// Validates an `EgressNetwork` document.
pub(super) fn validate(
    api_version: Option<&str>,
    obj: &Map<String, Value>,
    ctx: &mut Ctx,
) -> Option<Resource> {
    let row = super::kinds::find(POLICY_GROUP, EGRESS_NETWORK_KIND)?;
    if let Some(Err(e)) = api_version.map(|av| row.check_api_version(av)) {
        ctx.err("apiVersion", e);
    }
    let meta = Meta::parse(obj, ctx);
    let created = creation_timestamp(obj, ctx);
    let spec = spec_of(obj, ctx);
    let (meta, spec) = (meta?, spec?);
    let traffic_policy = match spec.get("trafficPolicy") {
        None | Some(Value::Null) => {
            ctx.err("spec.trafficPolicy", "required (Allow or Deny)");
            None
        }
        Some(Value::String(s)) if s == "Allow" => Some(TrafficPolicy::Allow),
        Some(Value::String(s)) if s == "Deny" => Some(TrafficPolicy::Deny),
        Some(Value::String(s)) => {
            ctx.err(
                "spec.trafficPolicy",
                format!("must be Allow or Deny, got {s:?}"),
            );
            None
        }
        Some(other) => {
            ctx.err(
                "spec.trafficPolicy",
                format!("must be Allow or Deny, got {}", type_name(other)),
            );
            None
        }
    };
    let networks = networks(spec.get("networks"), "spec.networks", ctx);
    Some(Resource::EgressNetwork(EgressNetwork {
        name: meta.name,
        namespace: meta.namespace,
        created,
        traffic_policy: traffic_policy?,
        networks,
    }))
}

#[cfg(test)]
#[path = "egress_tests.rs"]
mod tests;
