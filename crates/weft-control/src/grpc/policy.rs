//! InboundServerPolicies. Weft has no authorization resources yet, so the inbound policy is a
//! default: an all-unauthenticated server; only the opaque flag comes from the resources.
//! (OutboundPolicies is in `outbound`.)

use super::meta::{default_meta, duration, match_all, DETECT_TIMEOUT};
use super::stream::{stream, Stream};
use crate::index::{self, InboundKey, Index};
use linkerd2_proxy_api::inbound::{
    self as inb, inbound_server_policies_server::InboundServerPolicies,
};
use linkerd2_proxy_api::net;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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

fn default_labels() -> HashMap<String, String> {
    HashMap::from([
        ("group".to_string(), String::new()),
        ("kind".to_string(), "default".to_string()),
        ("name".to_string(), "all-unauthenticated".to_string()),
    ])
}

fn all_unauthenticated() -> inb::Authz {
    let any = |ip: IpAddr| inb::Network {
        net: Some(net::IpNetwork::from((ip, 0u8))),
        except: Vec::new(),
    };
    inb::Authz {
        networks: vec![
            any(Ipv4Addr::UNSPECIFIED.into()),
            any(Ipv6Addr::UNSPECIFIED.into()),
        ],
        authentication: Some(inb::Authn {
            permit: Some(inb::authn::Permit::Unauthenticated(
                inb::authn::PermitUnauthenticated {},
            )),
        }),
        labels: default_labels(),
        metadata: Some(default_meta("all-unauthenticated")),
    }
}

pub(crate) fn server(s: &index::Inbound) -> inb::Server {
    use inb::proxy_protocol::{Detect, Kind, Opaque};
    let kind = if s.opaque {
        Kind::Opaque(Opaque {})
    } else {
        Kind::Detect(Detect {
            timeout: duration(DETECT_TIMEOUT),
            http_routes: vec![inb::HttpRoute {
                metadata: Some(default_meta("default")),
                hosts: Vec::new(),
                authorizations: vec![all_unauthenticated()],
                rules: vec![inb::http_route::Rule {
                    matches: vec![match_all()],
                    filters: Vec::new(),
                }],
            }],
            http_local_rate_limit: None,
        })
    };
    inb::Server {
        protocol: Some(inb::ProxyProtocol { kind: Some(kind) }),
        server_ips: Vec::new(),
        authorizations: vec![all_unauthenticated()],
        labels: default_labels(),
    }
}
