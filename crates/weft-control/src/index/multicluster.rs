//! What the multicluster mirror's Services change in their endpoints (`crate::multicluster`
//! generates them): a gateway-mode mirror's endpoints are the remote gateway, reached with the
//! remote authority; a `<name>-federated` Service also answers its local member's endpoints.

use super::Endpoint;
use crate::resource::multicluster::{
    LOCAL_DISCOVERY_ANNOTATION, REMOTE_GATEWAY_IDENTITY_ANNOTATION, REMOTE_SVC_FQ_NAME_ANNOTATION,
};
use crate::resource::{Service, State};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// For a gateway-mode mirror: every endpoint (the gateway) forwards to the remote Service named
/// by its annotation, over opaque transport on the gateway's port whatever the protocol.
pub(super) fn gateway_mirror(
    svc: &Service,
    port: u16,
    endpoints: &mut BTreeMap<SocketAddr, Endpoint>,
) {
    if !svc
        .annotations
        .contains_key(REMOTE_GATEWAY_IDENTITY_ANNOTATION)
    {
        return;
    }
    let remote = svc.annotations.get(REMOTE_SVC_FQ_NAME_ANNOTATION);
    for ep in endpoints.values_mut() {
        ep.opaque_transport = Some(ep.addr.port());
        ep.authority_override = remote.map(|fq| format!("{fq}:{port}"));
    }
}

/// The local member whose endpoints a `<name>-federated` Service adds to its own. One level
/// only: a member that is itself federated is not followed (no loops).
pub(super) fn local_member<'a>(state: &'a State, svc: &Service) -> Option<&'a Service> {
    let name = svc.annotations.get(LOCAL_DISCOVERY_ANNOTATION)?;
    state
        .services
        .get(&(svc.namespace.clone(), name.clone()))
        .filter(|local| !local.annotations.contains_key(LOCAL_DISCOVERY_ANNOTATION))
}
