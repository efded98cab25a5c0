//! East's side, pure: the documents a cluster generates from what its Links follow. For each
//! Link, its remote services as the Link's selectors pick them:
//! - gateway mode: Service `<name>-<link>` whose one endpoint is the Link's gateway (a generated
//!   ExternalWorkload `<link>-gateway`, not ready while its probe fails), with the annotations
//!   the index turns into `authority_override` and opaque transport;
//! - remote discovery: Service `<name>-<link>` selecting one generated ExternalWorkload per
//!   remote endpoint (its address, identity and opaque transport port);
//! - federated members: one `<name>-federated` Service per namespace selecting every linked
//!   cluster's members, and naming the local member (if any) whose endpoints it adds.
//!
//! Every generated document carries `mirror.linkerd.io/mirrored-service: "true"`; those of one
//! Link also `mirror.linkerd.io/cluster-name: <link>`.

use super::export::ExportedService;
use crate::resource::multicluster::{
    ExportMode, Link, CLUSTER_NAME_LABEL, FEDERATED_LABEL, FEDERATED_MEMBER, GATEWAY_PORT_NAME,
    LOCAL_DISCOVERY_ANNOTATION, MIRRORED_SERVICE_LABEL, REMOTE_DISCOVERY_ANNOTATION,
    REMOTE_GATEWAY_IDENTITY_ANNOTATION, REMOTE_SVC_FQ_NAME_ANNOTATION,
};
use crate::resource::workload_status::{Condition, ConditionStatus, READY};
use crate::resource::{
    dns_label, ExternalWorkload, Service, ServicePort, State, TargetPort, WorkloadPort,
    INBOUND_PORT_ANNOTATION, OPAQUE_PORTS_ANNOTATION,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Annotations of a local member a `<name>-federated` Service takes over: Linkerd's client
/// policy (`docs/traffic.md`).
const CLIENT_POLICY_PREFIXES: &[&str] = &[
    "balancer.linkerd.io/",
    "retry.linkerd.io/",
    "timeout.linkerd.io/",
];
/// Selects the gateway workload of a Link (value: the Link's name).
pub const GATEWAY_OF_LABEL: &str = "multicluster.weft.io/gateway-of";
/// Selects the remote endpoints of a remote-discovery mirror (value: the mirror's name).
pub const MIRROR_OF_LABEL: &str = "multicluster.weft.io/mirror-of";
/// Selects the remote members of a federated Service (value: the members' name).
pub const FEDERATED_OF_LABEL: &str = "multicluster.weft.io/federated-of";

/// What one Link brings in: its remote services (`None`: none yet, or expired) and whether its
/// gateway answers its probe.
pub struct Remote<'a> {
    pub link: &'a Link,
    pub services: Option<&'a [ExportedService]>,
    pub gateway_alive: bool,
}

/// The generated documents, by the name of the text holding them (`multicluster/<ns>/<link>`
/// per Link, `multicluster/federated`), and per Link the number of `<name>-<link>` mirrors and
/// of federated members it brought.
#[derive(Debug, Default, PartialEq)]
pub struct Mirror {
    pub texts: BTreeMap<String, Vec<Value>>,
    pub counts: BTreeMap<(String, String), (usize, usize)>,
}

/// The documents of `remotes`, given the local `state` (its federated members).
pub fn mirror(remotes: &[Remote], state: &State) -> Mirror {
    let mut out = Mirror::default();
    // (namespace, name) → linked clusters with a member, and the ports of one member.
    let mut federated: BTreeMap<(String, String), (Vec<String>, Vec<ServicePort>)> =
        BTreeMap::new();
    let mut federated_docs = Vec::new();
    for r in remotes {
        let link = r.link;
        let mut docs = Vec::new();
        let mut gateways: BTreeSet<String> = BTreeSet::new();
        let (mut mirrored, mut members) = (0, 0);
        for s in r.services.unwrap_or_default() {
            let mode = s.mode.filter(|m| match m {
                ExportMode::Gateway => link.selector.matches(&s.labels) && link.gateway.is_some(),
                ExportMode::RemoteDiscovery => link.remote_discovery_selector.matches(&s.labels),
            });
            if let Some(mode) = mode {
                let name = format!("{}-{}", s.name, link.name);
                if let Err(e) = dns_label(&name) {
                    tracing::warn!(link = %link.name, "cannot mirror {}/{}: {e}", s.namespace, s.name);
                } else {
                    mirrored += 1;
                    match (mode, &link.gateway) {
                        (ExportMode::Gateway, Some(g)) => {
                            let mut svc = service(link, s, &name, |_| TargetPort::Number(g.port));
                            svc.annotations.insert(
                                REMOTE_GATEWAY_IDENTITY_ANNOTATION.into(),
                                g.identity.clone(),
                            );
                            svc.selector =
                                BTreeMap::from([(GATEWAY_OF_LABEL.into(), link.name.clone())]);
                            docs.push(svc.to_document());
                            gateways.insert(s.namespace.clone());
                        }
                        _ => {
                            let svc = service(link, s, &name, port_target);
                            docs.push(svc.to_document());
                            for w in endpoints(link, s, &name, (MIRROR_OF_LABEL, &name)) {
                                docs.push(w.to_document());
                            }
                        }
                    }
                }
            }
            if s.federated && link.federated_selector.matches(&s.labels) {
                members += 1;
                let entry = federated
                    .entry((s.namespace.clone(), s.name.clone()))
                    .or_default();
                entry.0.push(link.name.clone());
                if entry.1.is_empty() {
                    entry.1 = service(link, s, &s.name, port_target).ports;
                }
                let name = format!("{}-federated", s.name);
                federated_docs.extend(
                    endpoints(link, s, &name, (FEDERATED_OF_LABEL, &s.name))
                        .map(|w| w.to_document()),
                );
            }
        }
        if let Some(g) = &link.gateway {
            for ns in gateways {
                docs.push(gateway_workload(link, g, &ns, r.gateway_alive).to_document());
            }
        }
        let key = (link.namespace.clone(), link.name.clone());
        out.counts.insert(key, (mirrored, members));
        out.texts.insert(
            format!("multicluster/{}/{}", link.namespace, link.name),
            docs,
        );
    }
    if remotes.is_empty() {
        return out;
    }
    // Local members: federated in this cluster too (never a mirror).
    for s in state.services.values() {
        if s.labels.get(FEDERATED_LABEL).map(String::as_str) == Some(FEDERATED_MEMBER)
            && !s.labels.contains_key(MIRRORED_SERVICE_LABEL)
        {
            let entry = federated
                .entry((s.namespace.clone(), s.name.clone()))
                .or_default();
            // The local member's ports win: its endpoints are resolved by them.
            entry.1 = s
                .ports
                .iter()
                .map(|p| ServicePort {
                    target_port: TargetPort::Name(port_name(p.port)),
                    ..p.clone()
                })
                .collect();
        }
    }
    for ((ns, name), (links, ports)) in federated {
        let fed = format!("{name}-federated");
        if dns_label(&fed).is_err() || ports.is_empty() {
            continue;
        }
        let local = state
            .services
            .get(&(ns.clone(), name.clone()))
            .filter(|s| !s.labels.contains_key(MIRRORED_SERVICE_LABEL));
        // The local member's client policy (failure accrual, retries, timeouts) is the federated
        // Service's: a user configures it where they can, on their own Service.
        let mut annotations: BTreeMap<String, String> = local
            .map(|s| {
                s.annotations
                    .iter()
                    .filter(|(k, _)| CLIENT_POLICY_PREFIXES.iter().any(|p| k.starts_with(p)))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if local.is_some() {
            annotations.insert(LOCAL_DISCOVERY_ANNOTATION.into(), name.clone());
        }
        if !links.is_empty() {
            let remote: Vec<String> = links.iter().map(|l| format!("{name}@{l}")).collect();
            annotations.insert(REMOTE_DISCOVERY_ANNOTATION.into(), remote.join(","));
        }
        let svc = Service {
            name: fed,
            namespace: ns,
            labels: BTreeMap::from([(MIRRORED_SERVICE_LABEL.into(), "true".into())]),
            annotations,
            selector: BTreeMap::from([(FEDERATED_OF_LABEL.into(), name)]),
            cluster_ip: None,
            ports,
            opaque_ports: BTreeSet::new(),
        };
        federated_docs.push(svc.to_document());
    }
    out.texts
        .insert("multicluster/federated".into(), federated_docs);
    out
}

/// The name of the mirror workload port serving service port `port`.
fn port_name(port: u16) -> String {
    format!("p{port}")
}

fn port_target(port: u16) -> TargetPort {
    TargetPort::Name(port_name(port))
}

/// Labels of every document generated for `link`.
fn labels(link: &Link) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MIRRORED_SERVICE_LABEL.into(), "true".into()),
        (CLUSTER_NAME_LABEL.into(), link.name.clone()),
    ])
}

/// The mirror Service `name` of `s`, its ports targeting `target(port)`.
fn service(
    link: &Link,
    s: &ExportedService,
    name: &str,
    target: impl Fn(u16) -> TargetPort + Copy,
) -> Service {
    let target = |p: u16| target(p);
    let mut annotations = BTreeMap::from([(
        REMOTE_SVC_FQ_NAME_ANNOTATION.to_string(),
        format!(
            "{}.{}.svc.{}",
            s.name, s.namespace, link.target_cluster_domain
        ),
    )]);
    if !s.opaque_ports.is_empty() {
        let list: Vec<String> = s.opaque_ports.iter().map(u16::to_string).collect();
        annotations.insert(OPAQUE_PORTS_ANNOTATION.into(), list.join(","));
    }
    Service {
        name: name.into(),
        namespace: s.namespace.clone(),
        labels: labels(link),
        annotations,
        selector: BTreeMap::from([(MIRROR_OF_LABEL.into(), name.into())]),
        cluster_ip: None,
        ports: s
            .ports
            .iter()
            .map(|p| ServicePort {
                name: p.name.clone(),
                port: p.port,
                target_port: target(p.port),
                app_protocol: p.app_protocol.clone(),
            })
            .collect(),
        opaque_ports: s.opaque_ports.iter().copied().collect(),
    }
}

/// One generated workload per remote endpoint of `s`, labelled `selector`.
fn endpoints<'a>(
    link: &'a Link,
    s: &'a ExportedService,
    owner: &'a str,
    selector: (&'a str, &'a str),
) -> impl Iterator<Item = ExternalWorkload> + 'a {
    s.endpoints.iter().map(move |e| {
        let mut labels = labels(link);
        labels.insert(selector.0.into(), selector.1.into());
        let mut annotations = BTreeMap::new();
        if let Some(p) = e.opaque_transport_port {
            annotations.insert(INBOUND_PORT_ANNOTATION.into(), p.to_string());
        }
        ExternalWorkload {
            name: generated_name(&[owner, &link.name, &e.workload]),
            namespace: s.namespace.clone(),
            labels,
            annotations,
            identity: e.identity.clone(),
            server_name: e.server_name.clone(),
            ips: vec![e.address],
            ports: e
                .ports
                .iter()
                .filter_map(|(svc_port, target)| {
                    let svc_port = svc_port.parse::<u16>().ok()?;
                    Some(WorkloadPort {
                        name: Some(port_name(svc_port)),
                        port: *target,
                    })
                })
                .collect(),
            opaque_ports: BTreeSet::new(),
            inbound_port: e.opaque_transport_port,
            conditions: Vec::new(),
        }
    })
}

/// The Link's gateway as a workload of namespace `ns` (what gateway mirrors there select):
/// not ready while its probe fails, so they answer no endpoints.
fn gateway_workload(
    link: &Link,
    g: &crate::resource::multicluster::Gateway,
    ns: &str,
    alive: bool,
) -> ExternalWorkload {
    let mut labels = labels(link);
    labels.insert(GATEWAY_OF_LABEL.into(), link.name.clone());
    let (status, reason) = if alive {
        (ConditionStatus::True, "GatewayAlive")
    } else {
        (ConditionStatus::False, "GatewayProbeFailed")
    };
    ExternalWorkload {
        name: generated_name(&[&link.name, "gateway"]),
        namespace: ns.into(),
        labels,
        annotations: BTreeMap::from([(INBOUND_PORT_ANNOTATION.into(), g.port.to_string())]),
        identity: g.identity.clone(),
        server_name: g.identity.clone(),
        ips: vec![g.address],
        ports: vec![WorkloadPort {
            name: Some(GATEWAY_PORT_NAME.into()),
            port: g.port,
        }],
        opaque_ports: BTreeSet::new(),
        inbound_port: Some(g.port),
        conditions: vec![Condition {
            type_: READY.into(),
            status,
            last_probe_time: None,
            last_transition_time: None,
            reason: Some(reason.into()),
            message: None,
        }],
    }
}

/// `a-b-c`, shortened to a DNS label (with a hash of the whole, so it stays unique).
fn generated_name(parts: &[&str]) -> String {
    let full = parts.join("-");
    if full.len() <= 63 {
        return full;
    }
    let hash = crate::store::text_hash(&full);
    let head = full[..50].trim_end_matches('-');
    format!("{head}-{:08x}", hash as u32)
}

#[cfg(test)]
#[path = "mirror_tests.rs"]
mod tests;
