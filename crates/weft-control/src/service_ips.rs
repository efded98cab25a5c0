//! Cluster IPs for Services that do not set one: owns the service range (`--service-cidr`) and
//! the allocations persisted in `<store>/.allocations/service-ips.json`, or with an etcd store
//! in the key `PREFIX/allocations/service-ips` (same JSON), shared by the replicas: each change
//! is computed from the key as it is now and written with a transaction on its `mod_revision`,
//! so two replicas never hand out one address to two Services (the loser reads again and
//! recomputes). There, a Service missing from one replica's state keeps its address (another
//! replica may not have seen it yet); the leader ([`crate::leader`]) frees the address of a
//! Service missing from its state for [`FREE_AFTER`], long after every replica's watch has
//! caught up. A replica reads the key again only when what it must assign changed (the Services
//! wanting an address, the addresses users set) or when it has something to free.
//!
//! It sits between the store and the index: every good store state passes through [`assign`],
//! which fills in `clusterIP` for Services without one, so the index, `GET /v1/services` and
//! lookups by address all see the allocated address as if the user had written it.
//!
//! Rules: a user-set `clusterIP` always wins; a Service keeps its address across restarts and
//! store reloads; an allocated address that a user later writes into another Service is given
//! up and the Service gets a new one; a deleted Service frees its address (the store publishes
//! only good states, so a Service missing from one is gone, not mid-edit). A new Service starts
//! probing at a hash of its name, so the same name gets the same address on a fresh store.

use crate::resource::State;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::watch;

/// Directory of the store holding the control plane's own records (not scanned for YAML).
pub const ALLOCATIONS_DIR: &str = ".allocations";
/// File (inside [`ALLOCATIONS_DIR`]) with the allocated cluster IPs.
pub const FILE: &str = "service-ips.json";
/// The default service range: the upper half of 198.19.0.0/16. The lower half is left to
/// addresses people pick by hand (the demo's, the tests'); `weft run` pods route all of
/// 198.18.0.0/15 to their gateway, so any address in it reaches the pod's iptables rules.
pub const DEFAULT_SERVICE_CIDR: &str = "198.19.128.0/17";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("service range {0:?}: {1}")]
    BadCidr(String, String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg} (the control plane writes this file; delete it to allocate afresh)")]
    Corrupt { path: PathBuf, msg: String },
}

/// An IPv4 range `A.B.C.D/N` with the host bits zero and room for at least two addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceCidr {
    base: u32,
    prefix: u8,
}

impl ServiceCidr {
    /// Usable addresses: every address but the range's first and last.
    fn usable(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 2
    }

    /// The `i`-th usable address (`i < usable()`).
    fn nth(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1 + i)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == self.base
    }

    /// Whether `ip` is one this range hands out (not its first or last address).
    fn allocatable(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && (u32::from(ip) - self.base).wrapping_sub(1) < self.usable()
    }
}

impl Default for ServiceCidr {
    fn default() -> Self {
        DEFAULT_SERVICE_CIDR
            .parse()
            .expect("the default range parses")
    }
}

impl FromStr for ServiceCidr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |msg: &str| Error::BadCidr(s.to_string(), msg.to_string());
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("expected an IPv4 range ADDRESS/PREFIX, e.g. 198.19.128.0/17"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| {
            bad("not an IPv4 address before the '/' (IPv6 ranges are not supported)")
        })?;
        let prefix: u8 = match prefix.parse() {
            Ok(p) if p <= 30 => p,
            _ => return Err(bad("the prefix length must be a number from 0 to 30")),
        };
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        let base = u32::from(ip) & mask;
        if base != u32::from(ip) {
            return Err(bad(&format!(
                "host bits are set; did you mean {}/{prefix}?",
                Ipv4Addr::from(base)
            )));
        }
        Ok(ServiceCidr { base, prefix })
    }
}

impl std::fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// (namespace, name) of a Service.
type Key = (String, String);

/// Allocated addresses by Service.
pub type Allocations = BTreeMap<Key, Ipv4Addr>;

/// `state` with a cluster IP on every Service that has none (while the range has room), and
/// the allocations that gives. Pure: `previous` is what was allocated before.
pub fn assign(range: &ServiceCidr, previous: &Allocations, state: &State) -> (State, Allocations) {
    assign_keeping(range, previous, state, false)
}

/// [`assign`]; with `keep_absent`, the allocations of Services missing from `state` are kept
/// (and their addresses not handed out) instead of freed.
fn assign_keeping(
    range: &ServiceCidr,
    previous: &Allocations,
    state: &State,
    keep_absent: bool,
) -> (State, Allocations) {
    // User-set addresses first: they are never handed out, and they evict an allocation.
    let mut taken: BTreeSet<IpAddr> = state
        .services
        .values()
        .filter_map(|s| s.cluster_ip)
        .collect();
    let mut now = Allocations::new();
    if keep_absent {
        for (key, &ip) in previous {
            if !state.services.contains_key(key) && taken.insert(IpAddr::V4(ip)) {
                now.insert(key.clone(), ip);
            }
        }
    }
    let wanting: Vec<&Key> = state
        .services
        .iter()
        .filter(|(_, s)| s.cluster_ip.is_none())
        .map(|(k, _)| k)
        .collect();
    for key in &wanting {
        if let Some(&ip) = previous.get(*key) {
            if range.allocatable(ip) && taken.insert(IpAddr::V4(ip)) {
                now.insert((*key).clone(), ip);
            } else if range.allocatable(ip) {
                tracing::warn!(
                    service = %format!("{}/{}", key.0, key.1),
                    %ip,
                    "a Service now sets clusterIP {ip} itself; this Service gets another address"
                );
            }
        }
    }
    for key in wanting {
        if now.contains_key(key) {
            continue;
        }
        match free(range, &taken, key) {
            Some(ip) => {
                taken.insert(IpAddr::V4(ip));
                now.insert(key.clone(), ip);
            }
            None => tracing::warn!(
                service = %format!("{}/{}", key.0, key.1),
                %range,
                "the service range is full: this Service has no clusterIP (set one, or use a \
                 larger --service-cidr)"
            ),
        }
    }
    let mut out = state.clone();
    for (key, ip) in &now {
        if let Some(s) = out.services.get_mut(key) {
            s.cluster_ip = Some(IpAddr::V4(*ip));
        }
    }
    (out, now)
}

/// The first free address from the one `key` hashes to, wrapping around the range.
fn free(range: &ServiceCidr, taken: &BTreeSet<IpAddr>, key: &Key) -> Option<Ipv4Addr> {
    let size = range.usable();
    let start = fnv1a(&format!("{}/{}", key.0, key.1)) % size;
    (0..size)
        .map(|i| range.nth((start + i) % size))
        .find(|ip| !taken.contains(&IpAddr::V4(*ip)))
}

/// FNV-1a: stable across builds and Rust versions (unlike `DefaultHasher`), so a name maps to
/// the same address on every control plane.
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// How long the leader waits before it frees the address of a Service missing from its state
/// (etcd store).
pub const FREE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// The allocator: the range and the allocations, persisted under the store.
pub struct ServiceIps {
    range: ServiceCidr,
    /// Where allocations persist; `None`: only in this process, or in etcd (`shared`).
    path: Option<PathBuf>,
    /// The etcd client and key, with an etcd store.
    shared: Option<(crate::etcd::Client, Vec<u8>)>,
    allocations: Allocations,
    /// Etcd store: whether this replica leads (it alone frees addresses), and after how long.
    leader: Option<(
        watch::Receiver<crate::leader::Leadership>,
        std::time::Duration,
    )>,
    /// Since when each allocated Service has been missing from this replica's state.
    absent_since: BTreeMap<Key, tokio::time::Instant>,
    /// What the last assignment from the shared key depended on: a state with the same needs
    /// is assigned from the allocations read then.
    last_needs: Option<Needs>,
    /// Whether addresses are allocated at all ([`ServiceIps::given`]: not).
    allocating: bool,
}

/// What an assignment depends on besides the allocations: the Services wanting an address and
/// the addresses users set.
#[derive(PartialEq, Eq)]
struct Needs {
    wanting: BTreeSet<Key>,
    user_set: BTreeSet<IpAddr>,
}

impl Needs {
    fn of(state: &State) -> Needs {
        Needs {
            wanting: state
                .services
                .iter()
                .filter(|(_, s)| s.cluster_ip.is_none())
                .map(|(k, _)| k.clone())
                .collect(),
            user_set: state
                .services
                .values()
                .filter_map(|s| s.cluster_ip)
                .collect(),
        }
    }
}

/// The key (under the etcd store's prefix) of the shared allocations.
pub const ETCD_KEY: &str = "allocations/service-ips";

impl ServiceIps {
    /// Reads `<store>/.allocations/service-ips.json` (none yet: nothing allocated).
    pub fn load(store: &Path, range: ServiceCidr) -> Result<ServiceIps, Error> {
        let path = store.join(ALLOCATIONS_DIR).join(FILE);
        let allocations = match std::fs::read(&path) {
            Ok(bytes) => parse(&bytes).map_err(|msg| Error::Corrupt {
                path: path.clone(),
                msg,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Allocations::new(),
            Err(source) => return Err(Error::Io { path, source }),
        };
        let mut ips = ServiceIps::in_memory(range);
        ips.path = Some(path);
        ips.allocations = allocations;
        Ok(ips)
    }

    /// An allocator that keeps its allocations in this process only: a restart may hand a
    /// Service another address, and replicas allocate each on their own (from the same hash
    /// of the name, so they agree unless two names collide).
    pub fn in_memory(range: ServiceCidr) -> ServiceIps {
        if !in_pod_routes(&range) {
            tracing::warn!(
                %range,
                "the service range is outside 198.18.0.0/15: pods made by `weft run` have no \
                 route to it"
            );
        }
        ServiceIps {
            range,
            path: None,
            shared: None,
            allocations: Allocations::new(),
            leader: None,
            absent_since: BTreeMap::new(),
            last_needs: None,
            allocating: true,
        }
    }

    /// An allocator whose allocations live in etcd, at `PREFIX/`[`ETCD_KEY`].
    /// The Kubernetes store's: the API server gives Services their cluster IPs, and a Service
    /// without one is headless and must stay so. Nothing is allocated.
    pub fn given() -> ServiceIps {
        ServiceIps {
            allocating: false,
            ..ServiceIps::in_memory(ServiceCidr::default())
        }
    }

    pub fn etcd(
        range: ServiceCidr,
        client: crate::etcd::Client,
        target: &crate::etcd::Target,
    ) -> ServiceIps {
        ServiceIps {
            shared: Some((client, target.key(ETCD_KEY))),
            ..ServiceIps::in_memory(range)
        }
    }

    /// With the etcd store: while `leader` says this replica leads, it frees the addresses of
    /// Services missing from its state for `grace` ([`FREE_AFTER`] in the control plane).
    pub fn with_leader(
        mut self,
        leader: watch::Receiver<crate::leader::Leadership>,
        grace: std::time::Duration,
    ) -> ServiceIps {
        self.leader = Some((leader, grace));
        self
    }

    /// Allocated Services missing from `state` for longer than the grace, if this replica
    /// leads (empty otherwise). Also updates when each went missing.
    fn due_to_free(&mut self, state: &State) -> BTreeSet<Key> {
        let now = tokio::time::Instant::now();
        let allocations = &self.allocations;
        self.absent_since
            .retain(|k, _| allocations.contains_key(k) && !state.services.contains_key(k));
        for key in self.allocations.keys() {
            if !state.services.contains_key(key) {
                self.absent_since.entry(key.clone()).or_insert(now);
            }
        }
        match &self.leader {
            Some((leader, grace)) if leader.borrow().this_replica => self
                .absent_since
                .iter()
                .filter(|(_, since)| now.duration_since(**since) >= *grace)
                .map(|(k, _)| k.clone())
                .collect(),
            _ => BTreeSet::new(),
        }
    }

    /// Whether a Service's address waits to be freed by this replica (the caller re-applies
    /// the current state now and then so it happens without another change).
    pub fn frees_pending(&self) -> bool {
        self.leader
            .as_ref()
            .is_some_and(|(l, _)| l.borrow().this_replica && !self.absent_since.is_empty())
    }

    /// [`ServiceIps::apply`], with the allocations read from and written to etcd when shared.
    /// etcd unreachable: the last allocations known here are used (and logged).
    pub async fn apply_shared(&mut self, state: &Arc<State>) -> Arc<State> {
        if !self.allocating {
            return state.clone();
        }
        let Some((client, key)) = self.shared.clone() else {
            return self.apply(state);
        };
        let free = self.due_to_free(state);
        let needs = Needs::of(state);
        if free.is_empty() && self.last_needs.as_ref() == Some(&needs) {
            // Nothing this replica assigns can differ from what it read last time.
            let (out, _) = assign_keeping(&self.range, &self.allocations, state, true);
            return Arc::new(out);
        }
        // Another replica may win each write; a few rounds settle it (each loser re-reads).
        for _ in 0..8 {
            let (mut previous, revision) = match client.get(&key).await {
                Ok(None) => (Allocations::new(), 0),
                Ok(Some(kv)) => match parse(&kv.value) {
                    Ok(a) => (a, kv.mod_revision),
                    Err(msg) => {
                        tracing::warn!(key = %String::from_utf8_lossy(&key), "ignoring malformed allocations, allocating afresh: {msg}");
                        (Allocations::new(), kv.mod_revision)
                    }
                },
                Err(e) => {
                    tracing::warn!("cannot read the cluster IP allocations from etcd, using the last known ones: {e}");
                    break;
                }
            };
            let read = previous.clone();
            previous.retain(|k, _| !free.contains(k) || state.services.contains_key(k));
            let (out, now) = assign_keeping(&self.range, &previous, state, true);
            if now == read {
                self.set_shared(now);
                self.last_needs = Some(needs);
                return Arc::new(out);
            }
            match client
                .swap(&key, revision, Some(self.json(&now).as_bytes()))
                .await
            {
                Ok(Some(_)) => {
                    self.log_new(&now);
                    for (k, ip) in &read {
                        if !now.contains_key(k) {
                            tracing::info!(service = %format!("{}/{}", k.0, k.1), %ip, "clusterIP freed: the Service is gone");
                        }
                    }
                    self.set_shared(now);
                    self.last_needs = Some(needs);
                    return Arc::new(out);
                }
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("cannot store the cluster IP allocations in etcd: {e}");
                    break;
                }
            }
        }
        // Read again next time.
        self.last_needs = None;
        let (out, now) = assign_keeping(&self.range, &self.allocations, state, true);
        self.set_shared(now);
        Arc::new(out)
    }

    /// The shared allocations as last read or written (a freed Service is no longer absent).
    fn set_shared(&mut self, now: Allocations) {
        self.absent_since.retain(|k, _| now.contains_key(k));
        self.allocations = now;
    }

    fn log_new(&self, now: &Allocations) {
        for (key, ip) in now {
            if self.allocations.get(key) != Some(ip) {
                tracing::info!(service = %format!("{}/{}", key.0, key.1), %ip, "clusterIP allocated");
            }
        }
    }

    /// The persisted form of `allocations`.
    fn json(&self, allocations: &Allocations) -> String {
        let services: BTreeMap<String, String> = allocations
            .iter()
            .map(|((ns, name), ip)| (format!("{ns}/{name}"), ip.to_string()))
            .collect();
        let json = serde_json::json!({"range": self.range.to_string(), "services": services});
        format!("{json:#}\n")
    }

    /// Fills in cluster IPs (see [`assign`]) and persists the allocations when they changed.
    /// A failed write is logged: the addresses stay in force in this process. A state in which
    /// every Service sets its own address passes through as is (no copy).
    pub fn apply(&mut self, state: &Arc<State>) -> Arc<State> {
        if self.allocations.is_empty() && state.services.values().all(|s| s.cluster_ip.is_some()) {
            return state.clone();
        }
        let (out, now) = assign(&self.range, &self.allocations, state);
        if now != self.allocations {
            self.log_new(&now);
            if let Err(e) = self.save(&now) {
                tracing::warn!(
                    "cannot persist the allocated cluster IPs, they may change at the next \
                     start: {e}"
                );
            }
            self.allocations = now;
        }
        Arc::new(out)
    }

    fn save(&self, allocations: &Allocations) -> Result<(), Error> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // Written aside and renamed, so a crash never leaves half a file.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, self.json(allocations)).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

fn in_pod_routes(range: &ServiceCidr) -> bool {
    let pods: ServiceCidr = "198.18.0.0/15".parse().expect("parses");
    range.prefix >= pods.prefix && pods.contains(Ipv4Addr::from(range.base))
}

fn parse(bytes: &[u8]) -> Result<Allocations, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let services = doc
        .get("services")
        .and_then(|s| s.as_object())
        .ok_or("expected an object with a \"services\" mapping")?;
    let mut out = Allocations::new();
    for (key, ip) in services {
        let (ns, name) = key
            .split_once('/')
            .ok_or_else(|| format!("services: {key:?} is not NAMESPACE/NAME"))?;
        let ip = ip
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("services.{key}: not an IPv4 address: {ip}"))?;
        out.insert((ns.to_string(), name.to_string()), ip);
    }
    Ok(out)
}

/// Passes every store state through `ips` into the returned channel (the index's input). The
/// first state is assigned before returning, so the first answers already carry addresses.
pub async fn start(
    mut ips: ServiceIps,
    mut states: watch::Receiver<Arc<State>>,
    mut shutdown: watch::Receiver<bool>,
) -> (watch::Receiver<Arc<State>>, tokio::task::JoinHandle<()>) {
    let state = states.borrow_and_update().clone();
    let first = ips.apply_shared(&state).await;
    let (tx, rx) = watch::channel(first);
    let task = tokio::spawn(async move {
        // The leader frees addresses of Services gone for a while, even if nothing else changes.
        let mut tick = tokio::time::interval(FREE_AFTER / 6);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ticked = tokio::select! {
                changed = states.changed() => if changed.is_err() { return } else { false },
                _ = tick.tick(), if ips.frees_pending() => true,
                _ = shutdown.changed() => return,
            };
            let state = states.borrow_and_update().clone();
            let out = ips.apply_shared(&state).await;
            if ticked {
                // Nothing else changed: pass it on only if an address was freed.
                tx.send_if_modified(|current| {
                    let changed = **current != *out;
                    if changed {
                        *current = out;
                    }
                    changed
                });
            } else {
                tx.send_replace(out);
            }
        }
    });
    (rx, task)
}

#[cfg(test)]
#[path = "service_ips_tests.rs"]
mod tests;
