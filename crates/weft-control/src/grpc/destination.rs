//! Destination.Get and Destination.GetProfile. Get turns successive endpoint snapshots into
//! `add`/`remove` diffs; the first message is a full `add` or `no_endpoints`.

use super::meta::{duration, service_meta};
use super::stream::{stream, Stream};
use crate::index::{self, Endpoint, Index};
use linkerd2_proxy_api::destination::{
    self as api, destination_server::Destination, protocol_hint, tls_identity, update, Update,
};
use linkerd2_proxy_api::{meta, net};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// Weight of every endpoint (Linkerd's default).
const WEIGHT: u32 = 10_000;

pub struct DestinationService {
    index: Arc<Index>,
    shutdown: watch::Receiver<bool>,
}

impl DestinationService {
    pub fn new(index: Arc<Index>, shutdown: watch::Receiver<bool>) -> Self {
        Self { index, shutdown }
    }

    fn target(&self, path: &str) -> Result<index::Target, Status> {
        index::parse_target(path, self.index.cluster_domain()).ok_or_else(|| {
            Status::invalid_argument(format!(
                "{path:?} is not a NAME.NS.svc.{}:PORT name or an IP:port",
                self.index.cluster_domain()
            ))
        })
    }
}

#[tonic::async_trait]
impl Destination for DestinationService {
    type GetStream = Stream<Update>;
    type GetProfileStream = Stream<api::DestinationProfile>;

    async fn get(
        &self,
        req: Request<api::GetDestination>,
    ) -> Result<Response<Self::GetStream>, Status> {
        let path = req.into_inner().path;
        let target = self.target(&path)?;
        let rx = self.index.destination(&target);
        if *rx.borrow() == index::Destination::Invalid {
            return Err(Status::invalid_argument(format!(
                "{path} is not a known service or endpoint address"
            )));
        }
        let mut diff = Diff::default();
        Ok(Response::new(stream(rx, self.shutdown.clone(), move |s| {
            diff.update(s)
                .into_iter()
                .map(|u| Ok(Update { update: Some(u) }))
                .collect()
        })))
    }

    async fn get_profile(
        &self,
        req: Request<api::GetDestination>,
    ) -> Result<Response<Self::GetProfileStream>, Status> {
        let path = req.into_inner().path;
        let target = self.target(&path)?;
        let rx = self.index.profile(&target);
        if *rx.borrow() == index::Profile::Invalid {
            return Err(Status::invalid_argument(format!(
                "{path} is not a known service or endpoint address"
            )));
        }
        Ok(Response::new(stream(
            rx,
            self.shutdown.clone(),
            move |p| match p {
                index::Profile::Invalid => vec![Err(Status::invalid_argument(format!(
                    "{path} is no longer known"
                )))],
                index::Profile::Profile {
                    fully_qualified_name,
                    service,
                    port,
                    opaque,
                    endpoint,
                } => {
                    vec![Ok(api::DestinationProfile {
                        fully_qualified_name: fully_qualified_name.clone(),
                        opaque_protocol: *opaque,
                        routes: Vec::new(),
                        retry_budget: Some(api::RetryBudget {
                            retry_ratio: 0.2,
                            min_retries_per_second: 10,
                            ttl: duration(Duration::from_secs(10)),
                        }),
                        dst_overrides: Vec::new(),
                        endpoint: endpoint.as_ref().map(weighted_addr),
                        parent_ref: service
                            .as_ref()
                            .map(|(ns, name)| service_meta(ns, name, *port)),
                        profile_ref: None,
                    })]
                }
            },
        )))
    }
}

/// What the client has been told so far; turns the next snapshot into the updates that bring
/// it up to date.
#[derive(Default)]
pub(crate) struct Diff {
    endpoints: BTreeMap<SocketAddr, Endpoint>,
    /// None before the first message; otherwise the `exists` the client last learned.
    exists: Option<bool>,
}

impl Diff {
    pub(crate) fn update(&mut self, snapshot: &index::Destination) -> Vec<update::Update> {
        let mut out = Vec::new();
        match snapshot {
            // An address that stops resolving is reported like a name that does not exist:
            // the client falls back to its own resolution.
            index::Destination::NotFound | index::Destination::Invalid => {
                if self.exists != Some(false) {
                    out.push(update::Update::NoEndpoints(api::NoEndpoints {
                        exists: false,
                    }));
                }
                self.endpoints.clear();
                self.exists = Some(false);
            }
            index::Destination::Endpoints { service, endpoints } => {
                let removed: Vec<net::TcpAddress> = self
                    .endpoints
                    .keys()
                    .filter(|a| !endpoints.contains_key(a))
                    .map(|a| net::TcpAddress::from(*a))
                    .collect();
                let added: Vec<api::WeightedAddr> = endpoints
                    .values()
                    .filter(|e| self.endpoints.get(&e.addr) != Some(e))
                    .map(weighted_addr)
                    .collect();
                if !removed.is_empty() {
                    out.push(update::Update::Remove(api::AddrSet { addrs: removed }));
                }
                if !added.is_empty() {
                    let mut metric_labels = HashMap::new();
                    match service {
                        Some((ns, name)) => {
                            metric_labels.insert("namespace".to_string(), ns.clone());
                            metric_labels.insert("service".to_string(), name.clone());
                        }
                        None => {
                            if let Some(e) = endpoints.values().next() {
                                metric_labels.insert("namespace".to_string(), e.namespace.clone());
                            }
                        }
                    }
                    out.push(update::Update::Add(api::WeightedAddrSet {
                        addrs: added,
                        metric_labels,
                    }));
                }
                if out.is_empty() && self.exists != Some(true) {
                    out.push(update::Update::NoEndpoints(api::NoEndpoints {
                        exists: true,
                    }));
                }
                self.endpoints = endpoints.clone();
                self.exists = Some(true);
            }
        }
        out
    }
}

/// The metric labels of one endpoint (the proxy prefixes them with `dst_`): its workload, and
/// for a mirror's endpoint in a linked cluster that cluster (`target_cluster_name`, Linkerd's
/// label for it), so a call across clusters is told apart in metrics and `weft edges`.
fn metric_labels(e: &Endpoint) -> HashMap<String, String> {
    let mut labels = HashMap::from([("external_workload".to_string(), e.workload.clone())]);
    if let Some(cluster) = &e.cluster {
        labels.insert(TARGET_CLUSTER_LABEL.to_string(), cluster.clone());
    }
    labels
}

/// The endpoint metric label naming a linked cluster (`dst_target_cluster_name` in the proxy's
/// outbound metrics).
pub const TARGET_CLUSTER_LABEL: &str = "target_cluster_name";

pub(crate) fn weighted_addr(e: &Endpoint) -> api::WeightedAddr {
    let protocol = if e.opaque {
        protocol_hint::Protocol::Opaque(protocol_hint::Opaque {})
    } else {
        protocol_hint::Protocol::H2(protocol_hint::H2 {})
    };
    let name = tls_identity::DnsLikeIdentity {
        name: e.server_name.clone(),
    };
    api::WeightedAddr {
        addr: Some(e.addr.into()),
        weight: WEIGHT,
        metric_labels: metric_labels(e),
        tls_identity: Some(api::TlsIdentity {
            server_name: Some(name.clone()),
            strategy: Some(tls_identity::Strategy::DnsLikeIdentity(name)),
        }),
        protocol_hint: Some(api::ProtocolHint {
            opaque_transport: e
                .opaque_transport
                .map(|port| protocol_hint::OpaqueTransport {
                    inbound_port: port.into(),
                }),
            protocol: Some(protocol),
        }),
        authority_override: e
            .authority_override
            .clone()
            .map(|authority_override| api::AuthorityOverride { authority_override }),
        http2: None,
        resource_ref: Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                group: "workload.linkerd.io".into(),
                kind: "ExternalWorkload".into(),
                name: e.workload.clone(),
                namespace: e.namespace.clone(),
                section: String::new(),
                port: 0,
            })),
        }),
    }
}
