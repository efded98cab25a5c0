//! Lookups the index builds once per applied state, and the difference between two states.
//!
//! Without them every key recomputation scanned every workload (a service's endpoints) or every
//! service (a cluster IP): at 500 services, 5,000 workloads and 1,000 watched keys that is millions
//! of selector checks per change, all under the index lock. [`Lookup`] turns those scans into
//! posting-list reads; [`Changes`] says which keys' inputs changed between two states, so a change
//! recomputes only the keys it can affect.

use crate::resource::multicluster::LOCAL_DISCOVERY_ANNOTATION;
use crate::resource::route::{Filter, Route, RouteKey};
use crate::resource::{ExternalWorkload, Service, State};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

/// (namespace, name), as `State` keys its maps.
pub type Key = (String, String);

/// namespace → label key → label value → entries, so lookups borrow `&str` (no key allocation).
type ByLabel = HashMap<String, HashMap<String, HashMap<String, Vec<Key>>>>;

fn posting<'a>(map: &'a ByLabel, ns: &str, k: &str, v: &str) -> &'a [Key] {
    map.get(ns)
        .and_then(|m| m.get(k))
        .and_then(|m| m.get(v))
        .map_or(&[], |l| l.as_slice())
}

fn push(map: &mut ByLabel, ns: &str, k: &str, v: &str, key: &Key) {
    map.entry(ns.to_string())
        .or_default()
        .entry(k.to_string())
        .or_default()
        .entry(v.to_string())
        .or_default()
        .push(key.clone());
}

/// Secondary indexes of one state. Every list is in the state's (namespace, name) order, so
/// results that depend on iteration order (first match, last duplicate wins) stay as with a scan.
#[derive(Default)]
pub struct Lookup {
    /// (namespace, label key, label value) → workloads carrying that label.
    workloads_by_label: ByLabel,
    /// First IP → workloads (an endpoint lookup by address uses the first IP).
    workloads_by_ip: HashMap<IpAddr, Vec<Key>>,
    /// Cluster IP → service (unique: `assemble` rejects duplicates).
    service_by_ip: HashMap<IpAddr, Key>,
    /// (namespace, first selector key, its value) → services. A service selecting a workload
    /// matches all its selector entries, so it is found through any of the workload's labels.
    services_by_label: ByLabel,
    /// Service → routes with a parentRef to it.
    routes_by_parent: HashMap<Key, Vec<RouteKey>>,
    /// EgressNetwork → routes with a parentRef to it.
    routes_by_egress: HashMap<Key, Vec<RouteKey>>,
    /// Service → routes with a backendRef to it.
    routes_by_backend: HashMap<Key, Vec<RouteKey>>,
    /// (namespace, name) of a FaultInjection → routes whose filters name it.
    routes_by_fault: HashMap<Key, Vec<RouteKey>>,
    /// Local member Service → the `<name>-federated` Services whose endpoints include its own
    /// (their `multicluster.linkerd.io/local-discovery` annotation names it).
    federated_by_local: HashMap<Key, Vec<Key>>,
}

fn push_route(map: &mut HashMap<Key, Vec<RouteKey>>, key: Key, route: &RouteKey) {
    let list = map.entry(key).or_default();
    // A route names the same Service or filter in many places: list it once.
    if list.last() != Some(route) {
        list.push(route.clone());
    }
}

/// The Services a route names as parents.
fn parent_keys(r: &Route) -> impl Iterator<Item = Key> + '_ {
    r.parents
        .iter()
        .filter(|p| p.is_service())
        .map(|p| (p.namespace.clone(), p.name.clone()))
}

impl Lookup {
    pub fn new(state: &State) -> Self {
        let mut l = Lookup::default();
        for (key, w) in &state.workloads {
            for (k, v) in &w.labels {
                push(&mut l.workloads_by_label, &w.namespace, k, v, key);
            }
            l.workloads_by_ip
                .entry(w.ip())
                .or_default()
                .push(key.clone());
        }
        for (key, s) in &state.services {
            if let Some(ip) = s.cluster_ip {
                l.service_by_ip.entry(ip).or_insert_with(|| key.clone());
            }
            if let Some((k, v)) = s.selector.iter().next() {
                push(&mut l.services_by_label, &s.namespace, k, v, key);
            }
            if let Some(local) = s.annotations.get(LOCAL_DISCOVERY_ANNOTATION) {
                l.federated_by_local
                    .entry((s.namespace.clone(), local.clone()))
                    .or_default()
                    .push(key.clone());
            }
        }
        for (key, r) in &state.routes {
            for parent in parent_keys(r) {
                push_route(&mut l.routes_by_parent, parent, key);
            }
            for p in r.parents.iter().filter(|p| super::egress::is_egress_ref(p)) {
                let net = (p.namespace.clone(), p.name.clone());
                push_route(&mut l.routes_by_egress, net, key);
            }
            for rule in &r.rules {
                let faults = |filters: &[Filter]| -> Vec<Key> {
                    filters
                        .iter()
                        .filter_map(|f| match f {
                            Filter::Fault(name) => Some((r.namespace.clone(), name.clone())),
                            _ => None,
                        })
                        .collect()
                };
                for fault in faults(&rule.filters) {
                    push_route(&mut l.routes_by_fault, fault, key);
                }
                for b in rule.backends.iter().filter(|b| b.is_service()) {
                    let svc = (b.namespace.clone(), b.name.clone());
                    push_route(&mut l.routes_by_backend, svc, key);
                    for fault in faults(&b.filters) {
                        push_route(&mut l.routes_by_fault, fault, key);
                    }
                }
            }
        }
        l
    }

    /// The routes of `state` with a parentRef to the Service `key`, in state order.
    pub fn routes_of<'a>(
        &'a self,
        state: &'a State,
        key: &Key,
    ) -> impl Iterator<Item = &'a Route> + 'a {
        self.routes_by_parent
            .get(key)
            .map_or(&[][..], |l| l.as_slice())
            .iter()
            .filter_map(|k| state.routes.get(k))
    }

    /// The routes of `state` with a parentRef to the EgressNetwork `key`, in state order.
    pub fn egress_routes_of<'a>(
        &'a self,
        state: &'a State,
        key: &Key,
    ) -> impl Iterator<Item = &'a Route> + 'a {
        self.routes_by_egress
            .get(key)
            .map_or(&[][..], |l| l.as_slice())
            .iter()
            .filter_map(|k| state.routes.get(k))
    }

    /// Parents of the routes listed under `key` in `map`.
    fn parents_via<'a>(
        &'a self,
        map: &'a HashMap<Key, Vec<RouteKey>>,
        state: &'a State,
        key: &Key,
    ) -> impl Iterator<Item = Key> + 'a {
        map.get(key)
            .map_or(&[][..], |l| l.as_slice())
            .iter()
            .filter_map(|k| state.routes.get(k))
            .flat_map(parent_keys)
    }

    /// The workloads `svc` selects, in state order: the shortest posting list among its
    /// selector entries, filtered by the full selector.
    pub fn selected<'a>(
        &'a self,
        state: &'a State,
        svc: &'a Service,
    ) -> impl Iterator<Item = &'a ExternalWorkload> + 'a {
        let shortest = svc
            .selector
            .iter()
            .map(|(k, v)| posting(&self.workloads_by_label, &svc.namespace, k, v))
            .min_by_key(|l| l.len())
            // An empty selector selects nothing.
            .unwrap_or(&[]);
        shortest
            .iter()
            .filter_map(|key| state.workloads.get(key))
            .filter(|w| svc.selects(w))
    }

    /// The services of `state` that select `w`.
    fn selecting<'a>(&'a self, state: &'a State, w: &'a ExternalWorkload) -> Vec<&'a Key> {
        let mut out = Vec::new();
        for (k, v) in &w.labels {
            for key in posting(&self.services_by_label, &w.namespace, k, v) {
                if state.services.get(key).is_some_and(|s| s.selects(w)) {
                    out.push(key);
                }
            }
        }
        out
    }

    pub fn service_by_ip<'a>(&self, state: &'a State, ip: IpAddr) -> Option<&'a Service> {
        self.service_by_ip
            .get(&ip)
            .and_then(|key| state.services.get(key))
    }

    /// Workloads whose first IP is `ip`, in state order.
    pub fn workloads_at<'a>(
        &'a self,
        state: &'a State,
        ip: IpAddr,
    ) -> impl Iterator<Item = &'a ExternalWorkload> + 'a {
        self.workloads_by_ip
            .get(&ip)
            .map_or(&[][..], |l| l.as_slice())
            .iter()
            .filter_map(|key| state.workloads.get(key))
    }
}

/// Which inputs changed from one state to the next. Keys whose inputs are untouched keep their
/// snapshot without being recomputed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Services added, removed or modified.
    services: HashSet<Key>,
    /// Services (of the new state) whose selected workloads changed, plus `services`.
    endpoints: HashSet<Key>,
    /// Workloads added, removed or modified.
    workloads: HashSet<Key>,
    /// First IPs of those workloads, before and after.
    ips: HashSet<IpAddr>,
    /// Services whose outbound policy inputs changed: the Service itself, a route naming it as
    /// parent (before or after), a backend Service or FaultInjection of one of its routes.
    policies: HashSet<Key>,
    /// Routes or FaultInjections added, removed or modified.
    routes_changed: bool,
    /// Servers, AuthorizationPolicies, authentications, Namespaces, rate-limit policies or
    /// routes changed.
    inbound_policies: bool,
    /// EgressNetworks changed.
    egress_networks: bool,
}

impl Changes {
    /// Compares `old` with `new` (`lookup` is `new`'s).
    pub fn between(old: &State, new: &State, lookup: &Lookup) -> Self {
        let mut c = Changes::default();
        for (key, _, _) in diff(&old.services, &new.services) {
            c.services.insert(key.clone());
        }
        c.endpoints = c.services.clone();
        c.policies = c.services.clone();
        // A Service appearing, going or changing ports changes the routes that send to it.
        for key in &c.services {
            c.policies
                .extend(lookup.parents_via(&lookup.routes_by_backend, new, key));
        }
        for (_, before, after) in diff(&old.routes, &new.routes) {
            c.routes_changed = true;
            for r in [before, after].into_iter().flatten() {
                c.policies.extend(parent_keys(r));
            }
        }
        for (key, _, _) in diff(&old.faults, &new.faults) {
            c.routes_changed = true;
            c.policies
                .extend(lookup.parents_via(&lookup.routes_by_fault, new, key));
        }
        c.inbound_policies = c.routes_changed
            || !diff(&old.servers, &new.servers).is_empty()
            || !diff(&old.authorization_policies, &new.authorization_policies).is_empty()
            || !diff(&old.mesh_tls_authentications, &new.mesh_tls_authentications).is_empty()
            || !diff(&old.network_authentications, &new.network_authentications).is_empty()
            || !diff(&old.namespaces, &new.namespaces).is_empty()
            || !diff(&old.rate_limit_policies, &new.rate_limit_policies).is_empty();
        c.egress_networks = !diff(&old.egress_networks, &new.egress_networks).is_empty();
        for (key, before, after) in diff(&old.workloads, &new.workloads) {
            c.workloads.insert(key.clone());
            // An unchanged service selects the old version exactly when the new state's copy
            // (the same) does, so the new lookup finds every service either version affects.
            for w in [before, after].into_iter().flatten() {
                c.ips.insert(w.ip());
                for s in lookup.selecting(new, w) {
                    c.endpoints.insert(s.clone());
                }
            }
        }
        // A federated Service answers its local member's endpoints too.
        let federated: Vec<Key> = c
            .endpoints
            .iter()
            .filter_map(|k| lookup.federated_by_local.get(k))
            .flatten()
            .cloned()
            .collect();
        c.endpoints.extend(federated);
        c
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.workloads.is_empty()
            && !self.routes_changed
            && !self.inbound_policies
            && !self.egress_networks
    }

    /// Any EgressNetwork, route or FaultInjection changed: every egress answer may have (a
    /// coarse rule; egress keys are few).
    pub fn egress(&self) -> bool {
        self.egress_networks || self.routes_changed
    }

    /// Any inbound policy resource (or route) changed: every inbound key may have.
    pub fn inbound_policies(&self) -> bool {
        self.inbound_policies
    }

    /// The outbound policy of the Service `key` may have changed (see `policies`).
    pub fn policy(&self, key: &Key) -> bool {
        self.policies.contains(key)
    }

    /// [`Changes::addr`] for an outbound policy: also the policy of the Service at `ip`.
    pub fn addr_policy(&self, lookup: &Lookup, ip: IpAddr) -> bool {
        self.addr(lookup, ip)
            || lookup
                .service_by_ip
                .get(&ip)
                .is_some_and(|key| self.policy(key))
    }

    /// The service itself (its ports, annotations, existence) changed.
    pub fn service(&self, key: &Key) -> bool {
        self.services.contains(key)
    }

    /// The service or any workload it selects (before or after) changed.
    pub fn endpoints(&self, key: &Key) -> bool {
        self.endpoints.contains(key)
    }

    pub fn workload(&self, key: &Key) -> bool {
        self.workloads.contains(key)
    }

    /// Anything an address lookup reads may have changed: any service (cluster IPs can move),
    /// the endpoints of the service at `ip`, or a workload at `ip`.
    pub fn addr(&self, lookup: &Lookup, ip: IpAddr) -> bool {
        !self.services.is_empty()
            || self.ips.contains(&ip)
            || lookup
                .service_by_ip
                .get(&ip)
                .is_some_and(|key| self.endpoints(key))
    }
}

/// Entries that differ between two maps: (key, old value, new value), either side `None` when
/// added or removed. One merge pass over both (they are sorted).
fn diff<'a, K: Ord, V: PartialEq>(
    old: &'a BTreeMap<K, V>,
    new: &'a BTreeMap<K, V>,
) -> Vec<(&'a K, Option<&'a V>, Option<&'a V>)> {
    let mut out = Vec::new();
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => return out,
            (Some((ka, va)), None) => {
                out.push((*ka, Some(*va), None));
                a.next();
            }
            (None, Some((kb, vb))) => {
                out.push((*kb, None, Some(*vb)));
                b.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    out.push((*ka, Some(*va), None));
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push((*kb, None, Some(*vb)));
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if va != vb {
                        out.push((*ka, Some(*va), Some(*vb)));
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
}
