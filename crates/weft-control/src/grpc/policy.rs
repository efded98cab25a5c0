//! OutboundPolicies and InboundServerPolicies. Weft has no route or authorization resources
//! yet, so policies are defaults: one route to one load-balanced backend outbound, and an
//! all-unauthenticated server inbound; only the opaque flag comes from the resources.

use super::meta::{default_meta, duration, service_meta};
use super::stream::{stream, Stream};
use crate::index::{self, InboundKey, Index};
use linkerd2_proxy_api::http_route::{path_match, HttpRouteMatch, PathMatch};
use linkerd2_proxy_api::inbound::{
    self as inb, inbound_server_policies_server::InboundServerPolicies,
};
use linkerd2_proxy_api::net;
use linkerd2_proxy_api::outbound::{
    self as out, backend, outbound_policies_server::OutboundPolicies, proxy_protocol, traffic_spec,
};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

const DETECT_TIMEOUT: Duration = Duration::from_secs(1);
const QUEUE_CAPACITY: u32 = 100;
const FAILFAST_TIMEOUT: Duration = Duration::from_secs(3);
const EWMA_DEFAULT_RTT: Duration = Duration::from_millis(30);
const EWMA_DECAY: Duration = Duration::from_secs(10);
const MAX_FAILURES: u32 = 7;
const FAILURE_BACKOFF_MIN: Duration = Duration::from_secs(1);
const FAILURE_BACKOFF_MAX: Duration = Duration::from_secs(60);
const FAILURE_BACKOFF_JITTER: f32 = 0.5;

pub struct OutboundService {
    index: Arc<Index>,
    shutdown: watch::Receiver<bool>,
}

impl OutboundService {
    pub fn new(index: Arc<Index>, shutdown: watch::Receiver<bool>) -> Self {
        Self { index, shutdown }
    }

    fn subscribe(
        &self,
        spec: out::TrafficSpec,
    ) -> Result<(String, watch::Receiver<index::Outbound>), Status> {
        let target = match spec.target {
            Some(traffic_spec::Target::Addr(a)) => {
                let addr = SocketAddr::try_from(a)
                    .map_err(|_| Status::invalid_argument("invalid target address"))?;
                index::Target::Addr(addr)
            }
            Some(traffic_spec::Target::Authority(a)) => {
                index::parse_target(&a, self.index.cluster_domain()).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "{a:?} is not a NAME.NS.svc.{}[:PORT] authority",
                        self.index.cluster_domain()
                    ))
                })?
            }
            None => return Err(Status::invalid_argument("target is required")),
        };
        let label = format!("{target:?}");
        let rx = self.index.outbound(&target);
        if *rx.borrow() == index::Outbound::NotFound {
            return Err(not_found(&label));
        }
        Ok((label, rx))
    }
}

fn not_found(target: &str) -> Status {
    Status::not_found(format!("no service or endpoint for {target}"))
}

#[tonic::async_trait]
impl OutboundPolicies for OutboundService {
    type WatchStream = Stream<out::OutboundPolicy>;

    async fn get(
        &self,
        req: Request<out::TrafficSpec>,
    ) -> Result<Response<out::OutboundPolicy>, Status> {
        let (label, rx) = self.subscribe(req.into_inner())?;
        let snapshot = rx.borrow().clone();
        outbound_policy(&snapshot)
            .map(Response::new)
            .ok_or_else(|| not_found(&label))
    }

    async fn watch(
        &self,
        req: Request<out::TrafficSpec>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (label, rx) = self.subscribe(req.into_inner())?;
        Ok(Response::new(stream(rx, self.shutdown.clone(), move |s| {
            vec![outbound_policy(s).ok_or_else(|| not_found(&label))]
        })))
    }
}

pub(crate) fn outbound_policy(s: &index::Outbound) -> Option<out::OutboundPolicy> {
    let (metadata, backend, opaque) = match s {
        index::Outbound::NotFound => return None,
        index::Outbound::Service {
            service,
            authority,
            port,
            opaque,
        } => {
            let metadata = match service {
                Some((ns, name)) => service_meta(ns, name, *port),
                None => default_meta("unknown"),
            };
            let balancer = backend::BalanceP2c {
                discovery: Some(backend::EndpointDiscovery {
                    kind: Some(backend::endpoint_discovery::Kind::Dst(
                        backend::endpoint_discovery::DestinationGet {
                            path: authority.clone(),
                        },
                    )),
                }),
                load: Some(backend::balance_p2c::Load::PeakEwma(
                    backend::balance_p2c::PeakEwma {
                        default_rtt: duration(EWMA_DEFAULT_RTT),
                        decay: duration(EWMA_DECAY),
                    },
                )),
            };
            (
                metadata.clone(),
                backend(metadata, backend::Kind::Balancer(balancer)),
                *opaque,
            )
        }
        index::Outbound::Endpoint(ep) => {
            let metadata = default_meta("endpoint");
            let kind = backend::Kind::Forward(super::destination::weighted_addr(ep));
            (metadata.clone(), backend(metadata, kind), ep.opaque)
        }
    };
    let opaque_routes = proxy_protocol::Opaque {
        routes: vec![opaque_route(&backend)],
    };
    let kind = if opaque {
        proxy_protocol::Kind::Opaque(opaque_routes)
    } else {
        proxy_protocol::Kind::Detect(proxy_protocol::Detect {
            timeout: duration(DETECT_TIMEOUT),
            opaque: Some(opaque_routes),
            http1: Some(proxy_protocol::Http1 {
                routes: vec![http_route(&backend)],
                failure_accrual: Some(failure_accrual()),
            }),
            http2: Some(proxy_protocol::Http2 {
                routes: vec![http_route(&backend)],
                failure_accrual: Some(failure_accrual()),
            }),
        })
    };
    Some(out::OutboundPolicy {
        protocol: Some(out::ProxyProtocol { kind: Some(kind) }),
        metadata: Some(metadata),
    })
}

fn backend(metadata: linkerd2_proxy_api::meta::Metadata, kind: backend::Kind) -> out::Backend {
    out::Backend {
        metadata: Some(metadata),
        queue: Some(out::Queue {
            capacity: QUEUE_CAPACITY,
            failfast_timeout: duration(FAILFAST_TIMEOUT),
        }),
        kind: Some(kind),
    }
}

fn failure_accrual() -> out::FailureAccrual {
    out::FailureAccrual {
        ejection: None,
        kind: Some(out::failure_accrual::Kind::ConsecutiveFailures(
            out::failure_accrual::ConsecutiveFailures {
                max_failures: MAX_FAILURES,
                backoff: Some(out::ExponentialBackoff {
                    min_backoff: duration(FAILURE_BACKOFF_MIN),
                    max_backoff: duration(FAILURE_BACKOFF_MAX),
                    jitter_ratio: FAILURE_BACKOFF_JITTER,
                    respect_retry_after_hint: false,
                }),
            },
        )),
    }
}

fn match_all() -> HttpRouteMatch {
    HttpRouteMatch {
        path: Some(PathMatch {
            kind: Some(path_match::Kind::Prefix("/".into())),
        }),
        ..Default::default()
    }
}

fn http_route(b: &out::Backend) -> out::HttpRoute {
    use out::http_route::{distribution, Distribution, RouteBackend, Rule};
    out::HttpRoute {
        metadata: Some(default_meta("http")),
        hosts: Vec::new(),
        rules: vec![Rule {
            matches: vec![match_all()],
            backends: Some(Distribution {
                kind: Some(distribution::Kind::FirstAvailable(
                    distribution::FirstAvailable {
                        backends: vec![RouteBackend {
                            backend: Some(b.clone()),
                            ..Default::default()
                        }],
                    },
                )),
            }),
            ..Default::default()
        }],
    }
}

fn opaque_route(b: &out::Backend) -> out::OpaqueRoute {
    use out::opaque_route::{distribution, Distribution, RouteBackend, Rule};
    out::OpaqueRoute {
        metadata: Some(default_meta("opaque")),
        rules: vec![Rule {
            backends: Some(Distribution {
                kind: Some(distribution::Kind::FirstAvailable(
                    distribution::FirstAvailable {
                        backends: vec![RouteBackend {
                            backend: Some(b.clone()),
                            filters: Vec::new(),
                        }],
                    },
                )),
            }),
            filters: Vec::new(),
        }],
    }
}

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
