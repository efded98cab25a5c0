//! The index: the one owner of the validated state (services and workloads). For every key a
//! client subscribes to (a destination, a profile, an outbound target, an inbound port) it
//! computes a snapshot and publishes it on a `tokio::sync::watch` channel, so many gRPC streams
//! share one computation. When the state changes, the live keys whose inputs changed (see
//! [`lookup::Changes`]) are recomputed, from per-state lookups rather than scans, and a snapshot
//! is sent only if it differs from the previous one. Keys nobody watches any more are dropped.
//!
//! Everything here is plain data: no protobuf, no I/O (see `grpc` for the mapping). Which routes
//! apply to a service port, resolved, is [`routes`]; the inbound policy of a workload port
//! (Servers, authorizations, inbound routes, rate limits) is [`inbound`]; the egress policy of
//! an address outside the mesh (EgressNetworks) is [`egress`]; what multicluster mirrors change in
//! a Service's endpoints is `multicluster`.

pub mod egress;
pub mod inbound;
mod lookup;
mod multicluster;
pub mod routes;

use crate::resource::egress::DEFAULT_EGRESS_NAMESPACE;
use crate::resource::{ExternalWorkload, Service, State, TargetPort};
pub use egress::Egress;
pub use inbound::{Inbound, InboundDefaults, InboundKey, PolicyStatus};
use lookup::{Changes, Lookup};
pub use routes::{Policy, RouteStatus};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::SocketAddr;
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

/// What an OutboundPolicies client subscribes to: its target and, for an address outside the
/// mesh (neither a Service cluster IP nor a workload endpoint), the client's namespace, which
/// decides the EgressNetwork that answers. Service and endpoint targets never carry the
/// namespace, so their clients share one snapshot whatever their namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutboundKey {
    pub target: Target,
    pub client_namespace: Option<String>,
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
    /// For an opaque endpoint of a workload whose document names its sidecar's inbound port:
    /// that port (`opaque_transport.inbound_port`). For a multicluster gateway: the
    /// gateway's port, whatever the protocol.
    pub opaque_transport: Option<u16>,
    /// For a multicluster gateway endpoint of a mirror Service: the remote Service's
    /// `NAME.NS.svc.DOMAIN:PORT`, which the gateway forwards to (`authority_override`).
    pub authority_override: Option<String>,
    /// For an endpoint the multicluster mirror generated: the linked cluster it is in (the
    /// workload's `mirror.linkerd.io/cluster-name`), which Destination passes on as the
    /// `target_cluster_name` metric label.
    pub cluster: Option<String>,
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
#[derive(Clone, Debug, PartialEq)]
pub enum Outbound {
    /// An address that is not a known service or endpoint (gRPC NotFound).
    NotFound,
    /// A logical service, known or not yet (its authority is still discovered by name).
    Service {
        service: Option<(String, String)>,
        authority: String,
        port: u16,
        opaque: bool,
        /// Its routes, backends, timeouts, retries and failure accrual (the default policy for
        /// a service that is not known).
        policy: Arc<Policy>,
    },
    /// The address of one workload endpoint: forward to it directly.
    Endpoint(Endpoint),
    /// An address outside the mesh that an EgressNetwork answers for the client's namespace.
    Egress(Arc<Egress>),
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
    inbound_defaults: InboundDefaults,
    /// The namespace whose EgressNetworks apply to clients of every namespace.
    egress_namespace: String,
    inner: Mutex<Inner>,
    /// Serialises `apply`, whose recomputation runs outside `inner`'s lock: snapshots must
    /// be published in the order the states arrive.
    applying: Mutex<()>,
    /// The last state whose snapshots are all published (what the API waits for before it
    /// answers a change with 200).
    applied: watch::Sender<Arc<State>>,
}

/// The published snapshots of one kind: one watch channel per key, shared by every
/// subscriber of that key.
struct Keyed<K, V>(HashMap<K, Arc<watch::Sender<V>>>);

impl<K, V> Default for Keyed<K, V> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<K: Hash + Eq + Clone, V> Keyed<K, V> {
    /// A receiver of `key`'s snapshot; the first subscriber's `compute` makes it.
    fn subscribe(&mut self, key: &K, compute: impl FnOnce() -> V) -> watch::Receiver<V> {
        if let Some(tx) = self.0.get(key) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(compute());
        self.0.insert(key.clone(), Arc::new(tx));
        rx
    }

    /// Drops keys nobody watches any more and lists the others.
    fn live(&mut self) -> Live<K, V> {
        self.0.retain(|_, tx| tx.receiver_count() > 0);
        self.0
            .iter()
            .map(|(k, tx)| (k.clone(), tx.clone()))
            .collect()
    }
}

#[derive(Default)]
struct Inner {
    state: Arc<State>,
    lookup: Arc<Lookup>,
    destinations: Keyed<Target, Destination>,
    profiles: Keyed<Target, Profile>,
    outbound: Keyed<OutboundKey, Outbound>,
    inbound: Keyed<InboundKey, Inbound>,
}

/// The keys alive when a state was swapped in, to be refreshed outside the lock.
type Live<K, V> = Vec<(K, Arc<watch::Sender<V>>)>;

/// What one [`Index::apply`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Keys whose inputs changed, so their snapshot was recomputed.
    pub recomputed: usize,
    /// Of those, keys whose snapshot differed and was published.
    pub sent: usize,
}

impl Index {
    pub fn new(cluster_domain: &str) -> Arc<Self> {
        Self::with_inbound(cluster_domain, InboundDefaults::default())
    }

    /// An index whose inbound policies use `inbound_defaults` (default policy, cluster networks).
    pub fn with_inbound(cluster_domain: &str, inbound_defaults: InboundDefaults) -> Arc<Self> {
        Self::with_defaults(cluster_domain, inbound_defaults, DEFAULT_EGRESS_NAMESPACE)
    }

    /// An index whose inbound policies use `inbound_defaults` and whose egress answers use the
    /// EgressNetworks of `egress_namespace` for clients of every namespace.
    pub fn with_defaults(
        cluster_domain: &str,
        inbound_defaults: InboundDefaults,
        egress_namespace: &str,
    ) -> Arc<Self> {
        Arc::new(Self {
            cluster_domain: cluster_domain.trim_end_matches('.').to_string(),
            inbound_defaults,
            egress_namespace: egress_namespace.to_string(),
            inner: Mutex::new(Inner::default()),
            applying: Mutex::new(()),
            applied: watch::channel(Arc::new(State::default())).0,
        })
    }

    /// The last state the index has fully applied (every snapshot published), as it changes.
    pub fn applied(&self) -> watch::Receiver<Arc<State>> {
        self.applied.subscribe()
    }

    pub fn cluster_domain(&self) -> &str {
        &self.cluster_domain
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters (each entry is replaced whole), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The default inbound policy and cluster networks the inbound snapshots use.
    pub fn inbound_defaults(&self) -> &InboundDefaults {
        &self.inbound_defaults
    }

    /// The current state (e.g. for listing workloads).
    pub fn state(&self) -> Arc<State> {
        self.lock().state.clone()
    }

    /// Replaces the state and republishes every key whose snapshot changed. Only keys whose
    /// inputs (their service, the workloads it selects, what sits at their address) differ
    /// between the two states are recomputed; the lock is held only to swap the state in and
    /// list the live keys, so subscriptions are not stalled by the recomputation.
    pub fn apply(&self, state: Arc<State>) -> Applied {
        let _serial = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        let applied = self.publish(state.clone());
        self.applied.send_replace(state);
        applied
    }

    /// [`Index::apply`]'s work, under its serialising lock.
    fn publish(&self, state: Arc<State>) -> Applied {
        if Arc::ptr_eq(&self.lock().state, &state) {
            return Applied::default();
        }
        let lookup = Arc::new(Lookup::new(&state));
        let (old, dests, profiles, outbounds, inbounds) = {
            let mut inner = self.lock();
            let old = std::mem::replace(&mut inner.state, state.clone());
            inner.lookup = lookup.clone();
            (
                old,
                inner.destinations.live(),
                inner.profiles.live(),
                inner.outbound.live(),
                inner.inbound.live(),
            )
        };
        let changes = Changes::between(&old, &state, &lookup);
        let mut applied = Applied::default();
        if changes.is_empty() {
            return applied;
        }
        let v = self.view(&state, &lookup);
        // A name's endpoints depend on its service and the workloads it selects; a name's
        // profile and policy on the service alone; an address on whatever sits at it.
        let by_addr = |t: &Target| match t {
            Target::Name {
                name, namespace, ..
            } => Err((namespace.clone(), name.clone())),
            Target::Addr(a) => Ok(changes.addr(&lookup, a.ip())),
        };
        let endpoints = |t: &Target| by_addr(t).unwrap_or_else(|key| changes.endpoints(&key));
        let service = |t: &Target| by_addr(t).unwrap_or_else(|key| changes.service(&key));
        // An egress answer also depends on every EgressNetwork and route (coarse, see
        // `Changes::egress`).
        let policy = |k: &OutboundKey| match &k.target {
            Target::Name {
                name, namespace, ..
            } => changes.policy(&(namespace.clone(), name.clone())),
            Target::Addr(a) => {
                changes.addr_policy(&lookup, a.ip())
                    || (k.client_namespace.is_some() && changes.egress())
            }
        };
        // A port's policy depends on its workload and on every inbound policy resource (a
        // coarse but cheap rule: any of those changing refreshes every inbound key).
        let workload = |k: &InboundKey| {
            changes.inbound_policies()
                || changes.workload(&(k.namespace.clone(), k.workload.clone()))
        };
        applied.refresh(&dests, endpoints, |t| v.destination(t));
        applied.refresh(&profiles, service, |t| v.profile(t));
        applied.refresh(&outbounds, policy, |k| v.outbound_key(k));
        applied.refresh(&inbounds, workload, |k| v.inbound(k));
        applied
    }

    fn view<'a>(&'a self, state: &'a State, lookup: &'a Lookup) -> View<'a> {
        View {
            state,
            lookup,
            domain: &self.cluster_domain,
            inbound: &self.inbound_defaults,
            egress_namespace: &self.egress_namespace,
        }
    }

    /// Subscribes to one key of one kind of snapshot: `keyed` picks the kind's channels,
    /// `compute` makes the first snapshot when nobody watched the key yet.
    fn subscribe<K: Hash + Eq + Clone, V>(
        &self,
        key: &K,
        keyed: fn(&mut Inner) -> &mut Keyed<K, V>,
        compute: fn(&View<'_>, &K) -> V,
    ) -> watch::Receiver<V> {
        let mut inner = self.lock();
        let (state, lookup) = (inner.state.clone(), inner.lookup.clone());
        keyed(&mut inner).subscribe(key, || compute(&self.view(&state, &lookup), key))
    }

    pub fn destination(&self, target: &Target) -> watch::Receiver<Destination> {
        self.subscribe(target, |i| &mut i.destinations, |v, t| v.destination(t))
    }

    pub fn profile(&self, target: &Target) -> watch::Receiver<Profile> {
        self.subscribe(target, |i| &mut i.profiles, |v, t| v.profile(t))
    }

    /// The outbound policy of `target` as any client sees it (no egress answers).
    pub fn outbound(&self, target: &Target) -> watch::Receiver<Outbound> {
        self.outbound_from(target, None)
    }

    /// The outbound policy of `target` for a client of `client_namespace`: an address outside
    /// the mesh may then be answered by an EgressNetwork. The namespace is part of the key only
    /// for such addresses (see [`OutboundKey`]).
    pub fn outbound_from(
        &self,
        target: &Target,
        client_namespace: Option<&str>,
    ) -> watch::Receiver<Outbound> {
        let mut inner = self.lock();
        let (state, lookup) = (inner.state.clone(), inner.lookup.clone());
        let v = self.view(&state, &lookup);
        let key = OutboundKey {
            target: target.clone(),
            client_namespace: client_namespace
                .filter(|_| v.outside_mesh(target))
                .map(String::from),
        };
        inner.outbound.subscribe(&key, || v.outbound_key(&key))
    }

    pub fn inbound(&self, key: &InboundKey) -> watch::Receiver<Inbound> {
        self.subscribe(key, |i| &mut i.inbound, |v, k| v.inbound(k))
    }

    /// Number of keys currently published (for tests and status).
    pub fn key_count(&self) -> usize {
        let inner = self.lock();
        inner.destinations.0.len()
            + inner.profiles.0.len()
            + inner.outbound.0.len()
            + inner.inbound.0.len()
    }
}

impl Applied {
    /// Recomputes the live keys whose inputs changed and publishes the snapshots that differ.
    fn refresh<K, V: PartialEq>(
        &mut self,
        live: &Live<K, V>,
        affected: impl Fn(&K) -> bool,
        compute: impl Fn(&K) -> V,
    ) {
        for (key, tx) in live.iter().filter(|(k, _)| affected(k)) {
            let new = compute(key);
            self.recomputed += 1;
            let sent = tx.send_if_modified(|cur| {
                if *cur == new {
                    false
                } else {
                    *cur = new;
                    true
                }
            });
            self.sent += usize::from(sent);
        }
    }
}

/// Feeds every new state from the store into the index until the store goes away.
pub async fn run(index: Arc<Index>, mut states: watch::Receiver<Arc<State>>) {
    loop {
        let state = states.borrow_and_update().clone();
        let index = index.clone();
        // Recomputation is CPU work that grows with the change: keep it off the async workers
        // that serve the streams.
        let started = std::time::Instant::now();
        match tokio::task::spawn_blocking(move || index.apply(state)).await {
            Ok(a) => tracing::debug!(
                recomputed = a.recomputed,
                sent = a.sent,
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "state applied"
            ),
            Err(e) if e.is_cancelled() => return,
            Err(e) => tracing::error!("applying a new state failed: {e}"),
        }
        if states.changed().await.is_err() {
            return;
        }
    }
}

/// One state with its lookups: where every snapshot is computed.
struct View<'a> {
    state: &'a State,
    lookup: &'a Lookup,
    domain: &'a str,
    inbound: &'a InboundDefaults,
    egress_namespace: &'a str,
}

impl View<'_> {
    fn find_service(&self, name: &str, namespace: &str) -> Option<&Service> {
        self.state
            .services
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// The workload endpoint at exactly this address (first workload IP and a declared port).
    fn workload_at(&self, addr: SocketAddr) -> Option<Endpoint> {
        self.lookup
            .workloads_at(self.state, addr.ip())
            .find(|w| w.ports.iter().any(|p| p.port == addr.port()))
            .map(|w| endpoint(w, addr.port(), w.opaque_ports.contains(&addr.port())))
    }

    /// Every endpoint of a service port. A port the service does not declare is used as its
    /// own target port (what Linkerd does for undeclared ports). A workload that is not ready
    /// (`Ready=False`: registered, its command not yet accepting) is no endpoint.
    fn service_endpoints(&self, svc: &Service, port: u16) -> BTreeMap<SocketAddr, Endpoint> {
        let target = svc
            .port(port)
            .map(|p| p.target_port.clone())
            .unwrap_or(TargetPort::Number(port));
        let svc_opaque = svc.is_opaque(port);
        let mut endpoints: BTreeMap<SocketAddr, Endpoint> = self
            .lookup
            .selected(self.state, svc)
            .filter(|w| w.ready())
            .filter_map(|w| {
                let p = w.resolve(&target)?;
                let ep = endpoint(w, p, svc_opaque || w.opaque_ports.contains(&p));
                Some((ep.addr, ep))
            })
            .collect();
        multicluster::gateway_mirror(svc, port, &mut endpoints);
        if let Some(local) = multicluster::local_member(self.state, svc) {
            for (addr, ep) in self.service_endpoints(local, port) {
                endpoints.entry(addr).or_insert(ep);
            }
        }
        endpoints
    }

    fn destination(&self, target: &Target) -> Destination {
        let of_service = |svc: &Service, port| Destination::Endpoints {
            service: Some((svc.namespace.clone(), svc.name.clone())),
            endpoints: self.service_endpoints(svc, port),
        };
        match target {
            Target::Name {
                name,
                namespace,
                port,
            } => match self.find_service(name, namespace) {
                Some(svc) => of_service(svc, *port),
                None => Destination::NotFound,
            },
            Target::Addr(addr) => {
                if let Some(svc) = self.lookup.service_by_ip(self.state, addr.ip()) {
                    return of_service(svc, addr.port());
                }
                match self.workload_at(*addr) {
                    Some(ep) => Destination::Endpoints {
                        service: None,
                        endpoints: BTreeMap::from([(ep.addr, ep)]),
                    },
                    None => Destination::Invalid,
                }
            }
        }
    }

    fn profile(&self, target: &Target) -> Profile {
        let of_service = |svc: &Service, port: u16| Profile::Profile {
            fully_qualified_name: fqdn(svc, self.domain),
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
            } => match self.find_service(name, namespace) {
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
                if let Some(svc) = self.lookup.service_by_ip(self.state, addr.ip()) {
                    return of_service(svc, addr.port());
                }
                match self.workload_at(*addr) {
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

    fn outbound(&self, target: &Target) -> Outbound {
        let domain = self.domain;
        let of_service = |svc: &Service, port: u16| Outbound::Service {
            service: Some((svc.namespace.clone(), svc.name.clone())),
            authority: format!("{}:{port}", fqdn(svc, domain)),
            port,
            opaque: svc.is_opaque(port),
            policy: Arc::new(routes::policy(self.state, self.lookup, svc, port, domain)),
        };
        match target {
            Target::Name {
                name,
                namespace,
                port,
            } => match self.find_service(name, namespace) {
                Some(svc) => of_service(svc, *port),
                None => Outbound::Service {
                    service: None,
                    authority: format!("{name}.{namespace}.svc.{domain}:{port}"),
                    port: *port,
                    opaque: false,
                    policy: Arc::default(),
                },
            },
            Target::Addr(addr) => {
                if let Some(svc) = self.lookup.service_by_ip(self.state, addr.ip()) {
                    return of_service(svc, addr.port());
                }
                match self.workload_at(*addr) {
                    Some(ep) => Outbound::Endpoint(ep),
                    None => Outbound::NotFound,
                }
            }
        }
    }

    /// Whether `target` is an address that is neither a Service cluster IP nor a workload
    /// endpoint (where an EgressNetwork may answer).
    fn outside_mesh(&self, target: &Target) -> bool {
        match target {
            Target::Name { .. } => false,
            Target::Addr(addr) => {
                self.lookup.service_by_ip(self.state, addr.ip()).is_none()
                    && self.workload_at(*addr).is_none()
            }
        }
    }

    /// [`View::outbound`], with the EgressNetwork answering for the client's namespace when
    /// nothing in the mesh does.
    fn outbound_key(&self, key: &OutboundKey) -> Outbound {
        let found = self.outbound(&key.target);
        let (Outbound::NotFound, Target::Addr(addr), Some(ns)) =
            (&found, &key.target, &key.client_namespace)
        else {
            return found;
        };
        let cluster = &self.inbound.cluster_networks;
        match egress::winner(self.state, cluster, self.egress_namespace, ns, addr.ip()) {
            Some(net) => Outbound::Egress(Arc::new(egress::egress(
                self.state,
                self.lookup,
                net,
                *addr,
            ))),
            None => Outbound::NotFound,
        }
    }

    fn inbound(&self, key: &InboundKey) -> Inbound {
        inbound::inbound(self.state, self.inbound, key)
    }
}

fn endpoint(w: &ExternalWorkload, port: u16, opaque: bool) -> Endpoint {
    Endpoint {
        addr: SocketAddr::new(w.ip(), port),
        workload: w.name.clone(),
        namespace: w.namespace.clone(),
        identity: w.identity.clone(),
        server_name: w.server_name.clone(),
        opaque,
        opaque_transport: w.inbound_port.filter(|_| opaque),
        authority_override: None,
        cluster: w
            .labels
            .get(crate::resource::multicluster::CLUSTER_NAME_LABEL)
            .cloned(),
    }
}

fn fqdn(svc: &Service, domain: &str) -> String {
    format!("{}.{}.svc.{domain}", svc.name, svc.namespace)
}

/// Every endpoint of a service port, computed from scratch (builds the state's lookups; the
/// index itself reuses the ones of the applied state).
pub fn service_endpoints(
    state: &State,
    svc: &Service,
    port: u16,
) -> BTreeMap<SocketAddr, Endpoint> {
    Endpoints::new(state).of(svc, port)
}

/// The endpoints of many service ports of one state, sharing one set of lookups (what
/// [`service_endpoints`] builds for each call).
pub struct Endpoints<'a> {
    state: &'a State,
    lookup: Lookup,
}

impl<'a> Endpoints<'a> {
    pub fn new(state: &'a State) -> Self {
        Endpoints {
            state,
            lookup: Lookup::new(state),
        }
    }

    /// Every endpoint of `svc`'s `port`.
    pub fn of(&self, svc: &Service, port: u16) -> BTreeMap<SocketAddr, Endpoint> {
        View {
            state: self.state,
            lookup: &self.lookup,
            domain: "",
            inbound: &InboundDefaults::default(),
            egress_namespace: DEFAULT_EGRESS_NAMESPACE,
        }
        .service_endpoints(svc, port)
    }
}

/// The Destination snapshot of `target` in `state`, computed from scratch.
pub fn destination(state: &State, domain: &str, target: &Target) -> Destination {
    let lookup = Lookup::new(state);
    View {
        state,
        lookup: &lookup,
        domain,
        inbound: &InboundDefaults::default(),
        egress_namespace: DEFAULT_EGRESS_NAMESPACE,
    }
    .destination(target)
}

/// The profile snapshot of `target` in `state`, computed from scratch.
pub fn profile(state: &State, domain: &str, target: &Target) -> Profile {
    let lookup = Lookup::new(state);
    View {
        state,
        lookup: &lookup,
        domain,
        inbound: &InboundDefaults::default(),
        egress_namespace: DEFAULT_EGRESS_NAMESPACE,
    }
    .profile(target)
}

/// The outbound policy snapshot of `target` in `state`, computed from scratch.
pub fn outbound(state: &State, domain: &str, target: &Target) -> Outbound {
    let lookup = Lookup::new(state);
    View {
        state,
        lookup: &lookup,
        domain,
        inbound: &InboundDefaults::default(),
        egress_namespace: DEFAULT_EGRESS_NAMESPACE,
    }
    .outbound(target)
}

/// The outbound policy snapshot of `target` for a client of `client_namespace` in `state`,
/// computed from scratch with the default cluster networks and egress namespace.
pub fn outbound_from(
    state: &State,
    domain: &str,
    target: &Target,
    client_namespace: Option<&str>,
) -> Outbound {
    let lookup = Lookup::new(state);
    let v = View {
        state,
        lookup: &lookup,
        domain,
        inbound: &InboundDefaults::default(),
        egress_namespace: DEFAULT_EGRESS_NAMESPACE,
    };
    let key = OutboundKey {
        target: target.clone(),
        client_namespace: client_namespace
            .filter(|_| v.outside_mesh(target))
            .map(String::from),
    };
    v.outbound_key(&key)
}

/// The status of every route in `state` (see [`routes::statuses`]).
pub fn route_statuses(state: &State) -> Vec<RouteStatus> {
    routes::statuses(state)
}

/// The status of every Server, AuthorizationPolicy and HTTPLocalRateLimitPolicy (see
/// [`inbound::statuses`]), then every EgressNetwork ([`egress::statuses`]), in `state`.
pub fn policy_statuses(state: &State) -> Vec<PolicyStatus> {
    let mut out = inbound::statuses(state);
    out.extend(egress::statuses(state));
    out
}

/// The inbound policy snapshot of `key` in `state`.
pub fn inbound(state: &State, defaults: &InboundDefaults, key: &InboundKey) -> Inbound {
    inbound::inbound(state, defaults, key)
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "index/multicluster_tests.rs"]
mod multicluster_tests;
