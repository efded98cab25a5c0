//! The index: the one owner of the validated state (services and workloads). For every key a
//! client subscribes to (a destination, a profile, an outbound target, an inbound port) it
//! computes a snapshot and publishes it on a `tokio::sync::watch` channel, so many gRPC streams
//! share one computation. When the state changes every live key is recomputed and a snapshot is
//! sent only if it differs from the previous one. Keys nobody watches any more are dropped.
//!
//! Everything here is plain data: no protobuf, no I/O (see `grpc` for the mapping).

use crate::resource::{ExternalWorkload, Service, State, TargetPort};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// What a client asks about: a logical name or an address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// `NAME.NS.svc.CLUSTER_DOMAIN:PORT`
    Name {
        name: String,
        namespace: String,
        port: u16,
    },
    Addr(SocketAddr),
}

/// One address a workload serves a service port on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub workload: String,
    pub namespace: String,
    pub identity: String,
    pub server_name: String,
    pub opaque: bool,
}

/// Snapshot for Destination.Get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// An address that is neither a service cluster IP nor a workload endpoint: the client
    /// should forward to it as is (gRPC InvalidArgument).
    Invalid,
    /// A name in the cluster domain with no such service (`no_endpoints{exists:false}`).
    NotFound,
    Endpoints {
        /// (namespace, name) of the service, None for a lookup of one workload endpoint.
        service: Option<(String, String)>,
        endpoints: BTreeMap<SocketAddr, Endpoint>,
    },
}

/// Snapshot for Destination.GetProfile.
// One snapshot per key, cloned once per change: the size of `Invalid` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Profile {
    Invalid,
    Profile {
        /// `NAME.NS.svc.CLUSTER_DOMAIN` of a known service, empty otherwise (as the proto requires).
        fully_qualified_name: String,
        service: Option<(String, String)>,
        port: u16,
        opaque: bool,
        endpoint: Option<Endpoint>,
    },
}

/// Snapshot for OutboundPolicies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// An address that is not a known service or endpoint (gRPC NotFound).
    NotFound,
    /// A logical service, known or not yet (its authority is still discovered by name).
    Service {
        service: Option<(String, String)>,
        authority: String,
        port: u16,
        opaque: bool,
    },
    /// The address of one workload endpoint: forward to it directly.
    Endpoint(Endpoint),
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
    pub opaque: bool,
}

/// Parses a Destination path or an authority. `None` means outside the cluster domain or
/// malformed. A missing port defaults to 80 (authorities may omit it).
pub fn parse_target(path: &str, cluster_domain: &str) -> Option<Target> {
    let path = path.trim();
    if let Ok(addr) = path.parse::<SocketAddr>() {
        return Some(Target::Addr(addr));
    }
    let (host, port) = match path.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p > 0)?),
        None => (path, 80),
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let domain = cluster_domain.trim_end_matches('.').to_ascii_lowercase();
    let prefix = host.strip_suffix(&format!(".svc.{domain}"))?;
    let (name, namespace) = prefix.split_once('.')?;
    if name.is_empty() || namespace.is_empty() || namespace.contains('.') {
        return None;
    }
    Some(Target::Name {
        name: name.to_string(),
        namespace: namespace.to_string(),
        port,
    })
}

/// The owner of the state and of every published snapshot.
pub struct Index {
    cluster_domain: String,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Arc<State>,
    destinations: HashMap<Target, watch::Sender<Destination>>,
    profiles: HashMap<Target, watch::Sender<Profile>>,
    outbound: HashMap<Target, watch::Sender<Outbound>>,
    inbound: HashMap<InboundKey, watch::Sender<Inbound>>,
}

impl Index {
    pub fn new(cluster_domain: &str) -> Arc<Self> {
        Arc::new(Self {
            cluster_domain: cluster_domain.trim_end_matches('.').to_string(),
            inner: Mutex::new(Inner::default()),
        })
    }

    pub fn cluster_domain(&self) -> &str {
        &self.cluster_domain
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters (each entry is replaced whole), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state (e.g. for listing workloads).
    pub fn state(&self) -> Arc<State> {
        self.lock().state.clone()
    }

    /// Replaces the state and republishes every key whose snapshot changed.
    pub fn apply(&self, state: Arc<State>) {
        let mut inner = self.lock();
        inner.state = state.clone();
        let d = &self.cluster_domain;
        refresh(&mut inner.destinations, |k| destination(&state, d, k));
        refresh(&mut inner.profiles, |k| profile(&state, d, k));
        refresh(&mut inner.outbound, |k| outbound(&state, d, k));
        refresh(&mut inner.inbound, |k| inbound(&state, k));
    }

    pub fn destination(&self, target: &Target) -> watch::Receiver<Destination> {
        let mut inner = self.lock();
        let state = inner.state.clone();
        subscribe(&mut inner.destinations, target, || {
            destination(&state, &self.cluster_domain, target)
        })
    }

    pub fn profile(&self, target: &Target) -> watch::Receiver<Profile> {
        let mut inner = self.lock();
        let state = inner.state.clone();
        subscribe(&mut inner.profiles, target, || {
            profile(&state, &self.cluster_domain, target)
        })
    }

    pub fn outbound(&self, target: &Target) -> watch::Receiver<Outbound> {
        let mut inner = self.lock();
        let state = inner.state.clone();
        subscribe(&mut inner.outbound, target, || {
            outbound(&state, &self.cluster_domain, target)
        })
    }

    pub fn inbound(&self, key: &InboundKey) -> watch::Receiver<Inbound> {
        let mut inner = self.lock();
        let state = inner.state.clone();
        subscribe(&mut inner.inbound, key, || inbound(&state, key))
    }

    /// Number of keys currently published (for tests and status).
    pub fn key_count(&self) -> usize {
        let inner = self.lock();
        inner.destinations.len() + inner.profiles.len() + inner.outbound.len() + inner.inbound.len()
    }
}

/// Feeds every new state from the store into the index until the store goes away.
pub async fn run(index: Arc<Index>, mut states: watch::Receiver<Arc<State>>) {
    loop {
        let state = states.borrow_and_update().clone();
        index.apply(state);
        if states.changed().await.is_err() {
            return;
        }
    }
}

fn subscribe<K: Hash + Eq + Clone, V>(
    map: &mut HashMap<K, watch::Sender<V>>,
    key: &K,
    compute: impl FnOnce() -> V,
) -> watch::Receiver<V> {
    if let Some(tx) = map.get(key) {
        return tx.subscribe();
    }
    let (tx, rx) = watch::channel(compute());
    map.insert(key.clone(), tx);
    rx
}

fn refresh<K: Hash + Eq, V: PartialEq>(
    map: &mut HashMap<K, watch::Sender<V>>,
    compute: impl Fn(&K) -> V,
) {
    map.retain(|_, tx| tx.receiver_count() > 0);
    for (key, tx) in map.iter() {
        let new = compute(key);
        tx.send_if_modified(|cur| {
            if *cur == new {
                false
            } else {
                *cur = new;
                true
            }
        });
    }
}

fn find_service<'a>(state: &'a State, name: &str, namespace: &str) -> Option<&'a Service> {
    state
        .services
        .get(&(namespace.to_string(), name.to_string()))
}

fn service_by_ip(state: &State, ip: IpAddr) -> Option<&Service> {
    state.services.values().find(|s| s.cluster_ip == Some(ip))
}

/// The workload endpoint at exactly this address (first workload IP and a declared port).
fn workload_at(state: &State, addr: SocketAddr) -> Option<Endpoint> {
    state.workloads.values().find_map(|w| {
        let declared = w.ports.iter().any(|p| p.port == addr.port());
        (w.ip() == addr.ip() && declared)
            .then(|| endpoint(w, addr.port(), w.opaque_ports.contains(&addr.port())))
    })
}

fn endpoint(w: &ExternalWorkload, port: u16, opaque: bool) -> Endpoint {
    Endpoint {
        addr: SocketAddr::new(w.ip(), port),
        workload: w.name.clone(),
        namespace: w.namespace.clone(),
        identity: w.identity.clone(),
        server_name: w.server_name.clone(),
        opaque,
    }
}

/// Every endpoint of a service port. A port the service does not declare is used as its own
/// target port (what Linkerd does for undeclared ports).
pub fn service_endpoints(
    state: &State,
    svc: &Service,
    port: u16,
) -> BTreeMap<SocketAddr, Endpoint> {
    let target = svc
        .port(port)
        .map(|p| p.target_port.clone())
        .unwrap_or(TargetPort::Number(port));
    let svc_opaque = svc.is_opaque(port);
    state
        .workloads
        .values()
        .filter(|w| svc.selects(w))
        .filter_map(|w| {
            let p = w.resolve(&target)?;
            let ep = endpoint(w, p, svc_opaque || w.opaque_ports.contains(&p));
            Some((ep.addr, ep))
        })
        .collect()
}

pub fn destination(state: &State, _domain: &str, target: &Target) -> Destination {
    let of_service = |svc: &Service, port| Destination::Endpoints {
        service: Some((svc.namespace.clone(), svc.name.clone())),
        endpoints: service_endpoints(state, svc, port),
    };
    match target {
        Target::Name {
            name,
            namespace,
            port,
        } => match find_service(state, name, namespace) {
            Some(svc) => of_service(svc, *port),
            None => Destination::NotFound,
        },
        Target::Addr(addr) => {
            if let Some(svc) = service_by_ip(state, addr.ip()) {
                return of_service(svc, addr.port());
            }
            match workload_at(state, *addr) {
                Some(ep) => Destination::Endpoints {
                    service: None,
                    endpoints: BTreeMap::from([(ep.addr, ep)]),
                },
                None => Destination::Invalid,
            }
        }
    }
}

fn fqdn(svc: &Service, domain: &str) -> String {
    format!("{}.{}.svc.{domain}", svc.name, svc.namespace)
}

pub fn profile(state: &State, domain: &str, target: &Target) -> Profile {
    let of_service = |svc: &Service, port: u16| Profile::Profile {
        fully_qualified_name: fqdn(svc, domain),
        service: Some((svc.namespace.clone(), svc.name.clone())),
        port,
        opaque: svc.is_opaque(port),
        endpoint: None,
    };
    match target {
        Target::Name {
            name,
            namespace,
            port,
        } => match find_service(state, name, namespace) {
            Some(svc) => of_service(svc, *port),
            None => Profile::Profile {
                fully_qualified_name: String::new(),
                service: None,
                port: *port,
                opaque: false,
                endpoint: None,
            },
        },
        Target::Addr(addr) => {
            if let Some(svc) = service_by_ip(state, addr.ip()) {
                return of_service(svc, addr.port());
            }
            match workload_at(state, *addr) {
                Some(ep) => Profile::Profile {
                    fully_qualified_name: String::new(),
                    service: None,
                    port: addr.port(),
                    opaque: ep.opaque,
                    endpoint: Some(ep),
                },
                None => Profile::Invalid,
            }
        }
    }
}

pub fn outbound(state: &State, domain: &str, target: &Target) -> Outbound {
    let of_service = |svc: &Service, port: u16| Outbound::Service {
        service: Some((svc.namespace.clone(), svc.name.clone())),
        authority: format!("{}:{port}", fqdn(svc, domain)),
        port,
        opaque: svc.is_opaque(port),
    };
    match target {
        Target::Name {
            name,
            namespace,
            port,
        } => match find_service(state, name, namespace) {
            Some(svc) => of_service(svc, *port),
            None => Outbound::Service {
                service: None,
                authority: format!("{name}.{namespace}.svc.{domain}:{port}"),
                port: *port,
                opaque: false,
            },
        },
        Target::Addr(addr) => {
            if let Some(svc) = service_by_ip(state, addr.ip()) {
                return of_service(svc, addr.port());
            }
            match workload_at(state, *addr) {
                Some(ep) => Outbound::Endpoint(ep),
                None => Outbound::NotFound,
            }
        }
    }
}

pub fn inbound(state: &State, key: &InboundKey) -> Inbound {
    match state
        .workloads
        .get(&(key.namespace.clone(), key.workload.clone()))
    {
        Some(w) => Inbound {
            known: true,
            opaque: w.opaque_ports.contains(&key.port),
        },
        None => Inbound {
            known: false,
            opaque: false,
        },
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
