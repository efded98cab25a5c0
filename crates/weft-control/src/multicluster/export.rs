//! West's side: what this cluster exports to the clusters linked to it. A pure function of the
//! state ([`exports`]), and the gateways a link reaches it through ([`gateways`]); the API
//! streams the first as NDJSON (`GET /v1/multicluster/exports`).

use crate::index::Endpoints;
use crate::resource::multicluster::{
    export_mode, is_federated, ExportMode, DEFAULT_GATEWAY_PORT, DEFAULT_PROBE_PATH,
    DEFAULT_PROBE_PORT, GATEWAY_COMPONENT_LABEL, GATEWAY_EXTENSION_LABEL, GATEWAY_PORT_NAME,
    PROBE_PORT_NAME,
};
use crate::resource::{ExternalWorkload, Service, State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One line of the exports stream: the whole export, again on every change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exports {
    /// Counts the snapshots of one stream (1, 2, ...).
    pub revision: u64,
    pub services: Vec<ExportedService>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportedService {
    pub namespace: String,
    pub name: String,
    /// `None` for a federated member that is not exported otherwise.
    pub mode: Option<ExportMode>,
    pub federated: bool,
    /// The Service's labels, which a Link's selectors read.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<ExportedPort>,
    pub opaque_ports: Vec<u16>,
    /// Ready endpoints, only for remote-discovery services and federated members.
    pub endpoints: Vec<ExportedEndpoint>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportedPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportedEndpoint {
    pub address: IpAddr,
    /// Service port (as text: a JSON key) → the port the workload serves it on.
    pub ports: BTreeMap<String, u16>,
    pub identity: String,
    pub server_name: String,
    pub opaque_transport_port: Option<u16>,
    pub workload: String,
}

/// One of this cluster's multicluster gateways, as `POST /v1/multicluster/credentials` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayInfo {
    pub address: IpAddr,
    pub port: u16,
    pub identity: String,
    pub probe_port: u16,
    pub probe_path: String,
}

/// Every exported Service (`mirror.linkerd.io/exported: "true"` or `remote-discovery`) and
/// federated member (`mirror.linkerd.io/federated: member`) of `state`, in (namespace, name)
/// order. Mirrors this cluster made of others' services are never exported again.
pub fn exports(state: &State) -> Vec<ExportedService> {
    use crate::resource::multicluster::MIRRORED_SERVICE_LABEL;
    let lookup = Endpoints::new(state);
    state
        .services
        .values()
        .filter(|s| !s.labels.contains_key(MIRRORED_SERVICE_LABEL))
        .filter_map(|s| {
            let mode = export_mode(&s.labels);
            let federated = is_federated(&s.labels);
            if mode.is_none() && !federated {
                return None;
            }
            let endpoints = if federated || mode == Some(ExportMode::RemoteDiscovery) {
                endpoints(state, &lookup, s)
            } else {
                Vec::new()
            };
            Some(ExportedService {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                mode,
                federated,
                labels: s.labels.clone(),
                ports: s
                    .ports
                    .iter()
                    .map(|p| ExportedPort {
                        name: p.name.clone(),
                        port: p.port,
                        protocol: "TCP".into(),
                        app_protocol: p.app_protocol.clone(),
                    })
                    .collect(),
                opaque_ports: s.opaque_ports.iter().copied().collect(),
                endpoints,
            })
        })
        .collect()
}

/// The ready endpoints of `svc`, one per workload, with the port it serves each service port on.
fn endpoints(state: &State, lookup: &Endpoints, svc: &Service) -> Vec<ExportedEndpoint> {
    let mut by_workload: BTreeMap<String, ExportedEndpoint> = BTreeMap::new();
    for p in &svc.ports {
        for ep in lookup.of(svc, p.port).into_values() {
            let w = state
                .workloads
                .get(&(ep.namespace.clone(), ep.workload.clone()));
            let e = by_workload
                .entry(ep.workload.clone())
                .or_insert_with(|| ExportedEndpoint {
                    address: ep.addr.ip(),
                    ports: BTreeMap::new(),
                    identity: ep.identity.clone(),
                    server_name: ep.server_name.clone(),
                    opaque_transport_port: w.and_then(|w| w.inbound_port),
                    workload: ep.workload.clone(),
                });
            e.ports.insert(p.port.to_string(), ep.addr.port());
        }
    }
    by_workload.into_values().collect()
}

/// Whether `w` is a multicluster gateway: labelled `linkerd.io/extension: multicluster` and
/// `component: gateway` (Linkerd's gateway pod labels).
pub fn is_gateway(w: &ExternalWorkload) -> bool {
    let labelled = |(k, v): (&str, &str)| w.labels.get(k).map(String::as_str) == Some(v);
    labelled(GATEWAY_EXTENSION_LABEL) && labelled(GATEWAY_COMPONENT_LABEL)
}

/// This cluster's ready gateways ([`is_gateway`]), on their ports named `mc-gateway` and
/// `mc-probe` (4143, 4191).
pub fn gateways(state: &State) -> Vec<GatewayInfo> {
    let port = |w: &ExternalWorkload, name: &str, default: u16| {
        w.ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .map_or(default, |p| p.port)
    };
    state
        .workloads
        .values()
        .filter(|w| is_gateway(w) && w.ready())
        .map(|w| GatewayInfo {
            address: w.ip(),
            port: port(w, GATEWAY_PORT_NAME, DEFAULT_GATEWAY_PORT),
            identity: w.server_name.clone(),
            probe_port: port(w, PROBE_PORT_NAME, DEFAULT_PROBE_PORT),
            probe_path: DEFAULT_PROBE_PATH.into(),
        })
        .collect()
}
