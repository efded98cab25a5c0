//! Endpoint choice: power of two choices (P2C) over peak-EWMA latency, with failure accrual.
//!
//! A [`Balancer`] follows one target's live endpoint set (the discovery `watch` channel) and keeps
//! per endpoint address the requests pending on it, a peak-EWMA RTT estimate and its health
//! ([`endpoint`]). Each pick samples two available endpoints at random and takes the one with the
//! lower `RTT estimate × (pending + 1) / weight`. The returned [`InFlight`] guard counts the
//! request as pending until dropped; the request path calls [`InFlight::complete`] when the
//! response head arrives (or the attempt fails), which records the RTT sample (pick → response
//! head) and the outcome for failure accrual. A guard dropped without it is a cancellation:
//! no sample, no failure.
//!
//! Failure accrual ([`config::Accrual`]) takes a failing endpoint out of rotation for a backoff,
//! then lets exactly one probe request through; its success readmits the endpoint, its failure
//! ejects it again for a longer backoff. With every endpoint out, picks wait as for an empty set
//! (bounded by the fail-fast timeout).
//!
//! The guard keeps its balancer alive: a balancer lives while a connection or a request uses
//! it, so the proxy never accumulates balancers for targets nobody talks to any more. A pick
//! copies the endpoint, so a later change of the set never touches requests already on their
//! way; [`Balancer::take_removed`] reports endpoints that left so their pooled connections can
//! be retired. [`Balancers`] holds the one balancer per target that every connection shares.

use crate::{
    discovery::{Endpoint, EndpointSet, Target},
    metrics::{
        balancer::{EndpointCounts, EndpointGauge},
        Metrics,
    },
};
use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, Weak,
    },
    time::Duration,
};
use tokio::{
    sync::{watch, Notify},
    time::Instant,
};

pub mod config;
mod endpoint;

pub use config::{Accrual, AccrualConfig, BalancerConfig, ConfigError, LoadConfig, QueueConfig};
pub use endpoint::Outcome;
use endpoint::{Change, Health, Stats};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The set stayed empty, unresolved or all ejected for the whole fail-fast timeout.
    #[error("no endpoints available after {0:?}")]
    NoEndpoints(Duration),
    /// More requests already wait for an endpoint than the queue holds.
    #[error("{capacity} requests already wait for an endpoint")]
    QueueFull { capacity: usize },
}

/// One balancer per discovered target, shared by every connection, so load estimates are
/// global to the proxy. Weak: a balancer lives while a connection or a request holds it, then
/// its discovery subscription is released (and discovery closes the stream after its idle
/// timeout), so many short-lived destinations never accumulate.
pub struct Balancers {
    inner: Mutex<BalancerMap>,
    /// Where balancers report `outbound_http_balancer_endpoints`; none in unit tests.
    metrics: Option<Metrics>,
}

struct BalancerMap {
    map: HashMap<Target, Weak<Balancer>>,
    /// Dead entries are swept when the map reaches this size (amortised O(1) per insert).
    sweep_at: usize,
}

/// The smallest map size at which dead entries are swept.
pub(crate) const MIN_SWEEP: usize = 64;

impl Default for Balancers {
    fn default() -> Balancers {
        Balancers {
            inner: Mutex::new(BalancerMap {
                map: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
            metrics: None,
        }
    }
}

impl Balancers {
    /// Balancers that report their endpoint counts to `metrics`.
    pub fn with_metrics(metrics: Metrics) -> Balancers {
        Balancers {
            metrics: Some(metrics),
            ..Balancers::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, BalancerMap> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The target's balancer, while anything still uses it.
    pub fn get(&self, target: &Target) -> Option<Arc<Balancer>> {
        self.lock().map.get(target).and_then(Weak::upgrade)
    }

    /// The target's balancer, or a new one over `endpoints` with the defaults used without a
    /// policy ([`BalancerConfig::for_target`]).
    pub fn get_or_insert(
        &self,
        target: &Target,
        endpoints: watch::Receiver<EndpointSet>,
    ) -> Arc<Balancer> {
        self.get_or_insert_with(target, endpoints, || BalancerConfig::for_target(target))
    }

    /// The target's balancer, or a new one over `endpoints` configured by `config` (another
    /// caller may have made one while this one waited for discovery: that one wins; change its
    /// settings with [`Balancer::reconfigure`]).
    pub fn get_or_insert_with(
        &self,
        target: &Target,
        endpoints: watch::Receiver<EndpointSet>,
        config: impl FnOnce() -> BalancerConfig,
    ) -> Arc<Balancer> {
        let mut bs = self.lock();
        if let Some(b) = bs.map.get(target).and_then(Weak::upgrade) {
            return b;
        }
        let config = config();
        let labels = config.labels.clone();
        let b = Arc::new(Balancer::with_config(endpoints, config));
        if let Some(m) = &self.metrics {
            let gauge: Arc<dyn EndpointGauge> = b.clone();
            m.register_balancer(labels, Arc::downgrade(&gauge));
        }
        bs.map.insert(target.clone(), Arc::downgrade(&b));
        if bs.map.len() >= bs.sweep_at {
            bs.map.retain(|_, w| w.strong_count() > 0);
            bs.sweep_at = (bs.map.len() * 2).max(MIN_SWEEP);
        }
        b
    }

    /// Targets with a live balancer.
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.lock()
            .map
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// Entries kept, dead ones included.
    #[cfg(test)]
    pub fn entries(&self) -> usize {
        self.lock().map.len()
    }
}

pub struct Balancer {
    endpoints: watch::Receiver<EndpointSet>,
    state: Mutex<State>,
    /// The addresses last reported by `take_removed`, with its own view of the channel.
    seen: Mutex<(watch::Receiver<EndpointSet>, HashSet<SocketAddr>)>,
    /// Wakes waiting picks when an endpoint's health changes (probe answered or cancelled).
    health_changed: Notify,
    /// Picks waiting for an endpoint (bounded by the queue capacity).
    waiting: AtomicUsize,
}

struct State {
    config: BalancerConfig,
    stats: HashMap<SocketAddr, Stats>,
    /// Stats not `Ready`: while zero, picks skip health checks.
    unhealthy: usize,
}

/// One chosen endpoint; counts as a pending request until dropped.
pub struct InFlight {
    pub endpoint: Endpoint,
    balancer: Arc<Balancer>,
    picked_at: Instant,
    /// This request is the probation probe of an ejected endpoint.
    probe: bool,
    completed: bool,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("endpoint", &self.endpoint)
            .field("probe", &self.probe)
            .finish()
    }
}

impl InFlight {
    /// The response head arrived (`Success`/`Failure`, see [`Outcome::of_response`]) or the
    /// attempt failed without one (`Error`): records the RTT sample (pick → now, response heads
    /// only) and the outcome for failure accrual. Once per request; the request stays pending
    /// until the guard drops (a streaming response still loads its endpoint).
    pub fn complete(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.completed, true) {
            return;
        }
        self.balancer
            .record(self.endpoint.addr, self.picked_at, outcome, self.probe);
    }

    /// Was this request an ejected endpoint's probe?
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let cancelled_probe = self.probe && !self.completed;
        self.balancer.release(self.endpoint.addr, cancelled_probe);
    }
}

impl Balancer {
    /// A balancer with the defaults used without a policy.
    pub fn new(endpoints: watch::Receiver<EndpointSet>) -> Balancer {
        Balancer::with_config(
            endpoints,
            BalancerConfig::for_target(&Target::Name {
                host: String::new(),
                port: 0,
            }),
        )
    }

    pub fn with_config(
        endpoints: watch::Receiver<EndpointSet>,
        config: BalancerConfig,
    ) -> Balancer {
        let mut watcher = endpoints.clone();
        let seen = addrs(&watcher.borrow_and_update());
        Balancer {
            endpoints,
            state: Mutex::new(State {
                config,
                stats: HashMap::new(),
                unhealthy: 0,
            }),
            seen: Mutex::new((watcher, seen)),
            health_changed: Notify::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// New settings (a policy update): they apply to the next picks and outcomes; estimates
    /// and ejections already made are kept. The metric labels stay those it was created with.
    pub fn reconfigure(&self, config: BalancerConfig) {
        let mut state = self.state();
        if state.config != config {
            state.config = config;
        }
    }

    /// How long a request may wait for an endpoint (the queue's fail-fast timeout).
    pub fn failfast(&self) -> Duration {
        self.state().config.queue.failfast
    }

    /// Endpoints that left the set since the last call (cheap when the set did not change).
    pub fn take_removed(&self) -> Vec<SocketAddr> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (watcher, known) = &mut *seen;
        if !watcher.has_changed().unwrap_or(false) {
            return Vec::new();
        }
        let now = addrs(&watcher.borrow_and_update());
        let removed = known.difference(&now).copied().collect();
        *known = now;
        removed
    }

    /// The current snapshot of the set (for protocol decisions and labels).
    pub fn snapshot(&self) -> EndpointSet {
        self.endpoints.borrow().clone()
    }

    /// Picks an endpoint, waiting up to `failfast` for one to become available (the set to
    /// fill, or an ejected endpoint's probation). Fails at once when the queue is full.
    pub async fn pick_ready(self: &Arc<Self>, failfast: Duration) -> Result<InFlight, Error> {
        self.pick_ready_avoiding(failfast, None).await
    }

    /// [`Balancer::pick_ready`] that passes over `avoid` (the endpoint a retried request's
    /// previous attempt went to) whenever another endpoint is available.
    pub async fn pick_ready_avoiding(
        self: &Arc<Self>,
        failfast: Duration,
        avoid: Option<SocketAddr>,
    ) -> Result<InFlight, Error> {
        if let Some(picked) = self.pick_avoiding(avoid) {
            return Ok(picked);
        }
        let capacity = self.state().config.queue.capacity;
        let waiting = Waiting::enter(&self.waiting);
        if waiting.ahead >= capacity {
            return Err(Error::QueueFull { capacity });
        }
        let deadline = Instant::now() + failfast;
        let mut rx = self.endpoints.clone();
        loop {
            // Registered before the pick, so a health change between the two is not missed.
            let health_changed = self.health_changed.notified();
            tokio::pin!(health_changed);
            health_changed.as_mut().enable();
            if let Some(picked) = self.pick_avoiding(avoid) {
                return Ok(picked);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::NoEndpoints(failfast));
            }
            let wake = self.next_probation().map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        // Discovery went away for good: nothing will come.
                        return self.pick_avoiding(avoid).ok_or(Error::NoEndpoints(failfast));
                    }
                }
                _ = health_changed => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Picks an endpoint from the current set, or `None` if none is available.
    pub fn pick(self: &Arc<Self>) -> Option<InFlight> {
        self.pick_avoiding(None)
    }

    /// Picks an endpoint other than `avoid` if one is available, else as [`Balancer::pick`].
    pub fn pick_avoiding(self: &Arc<Self>, avoid: Option<SocketAddr>) -> Option<InFlight> {
        let set = self.endpoints.borrow();
        let eps = &set.endpoints;
        let now = Instant::now();
        let mut state = self.state();
        let state = &mut *state;
        let n = eps.len();
        if n == 0 {
            return None;
        }
        let available = |stats: &HashMap<SocketAddr, Stats>, i: usize| {
            stats.get(&eps[i].addr).is_none_or(|s| s.available(now))
        };
        // The first available endpoint from a random start (every one when none is unhealthy).
        let find = |stats: &HashMap<SocketAddr, Stats>, start: usize, skip: [Option<usize>; 2]| {
            (0..n).map(|k| (start + k) % n).find(|&i| {
                !skip.contains(&Some(i)) && (state.unhealthy == 0 || available(stats, i))
            })
        };
        // A retry passes over its previous endpoint, unless it is the only one available.
        let avoid = avoid.and_then(|addr| eps.iter().position(|e| e.addr == addr));
        let start = fastrand::usize(..n);
        let a = match find(&state.stats, start, [avoid, None]) {
            Some(a) => a,
            None => find(&state.stats, start, [None, None])?,
        };
        let chosen = if n == 1 {
            a
        } else {
            match find(&state.stats, fastrand::usize(..n), [Some(a), avoid]) {
                None => a,
                Some(b) => {
                    // An endpoint due for its probe wins: its stale estimate says nothing
                    // about it now, and probation is a single request.
                    let due = |i: usize| {
                        state
                            .stats
                            .get(&eps[i].addr)
                            .is_some_and(|s| matches!(s.health, Health::Ejected { .. }))
                    };
                    if state.unhealthy > 0 && (due(a) || due(b)) {
                        return Some(self.take(state, &eps[if due(a) { a } else { b }], now));
                    }
                    // An endpoint's estimate starts (at the default RTT) when a pick first
                    // considers it, so it decays from then on like a measured one's.
                    let load = state.config.load;
                    for i in [a, b] {
                        state
                            .stats
                            .entry(eps[i].addr)
                            .or_insert_with(|| Stats::new(&load, now));
                    }
                    let cost = |i: usize| {
                        let ep = &eps[i];
                        state
                            .stats
                            .get(&ep.addr)
                            .map_or(f64::MAX, |s| s.cost(ep.weight, now, load.decay))
                    };
                    if cost(b) < cost(a) {
                        b
                    } else {
                        a
                    }
                }
            }
        };
        // Forget endpoints that left the set once nothing is pending on them.
        if state.stats.len() > n * 2 {
            let before = state.stats.len();
            state
                .stats
                .retain(|addr, s| s.pending > 0 || eps.iter().any(|e| e.addr == *addr));
            if before != state.stats.len() {
                state.unhealthy = state.stats.values().filter(|s| !s.is_ready()).count();
            }
        }
        Some(self.take(state, &eps[chosen], now))
    }

    /// Counts a request on the chosen endpoint (its probe, when it is due for one).
    fn take(self: &Arc<Self>, state: &mut State, ep: &Endpoint, now: Instant) -> InFlight {
        let load = state.config.load;
        let stats = state
            .stats
            .entry(ep.addr)
            .or_insert_with(|| Stats::new(&load, now));
        stats.pending += 1;
        let probe = matches!(stats.health, Health::Ejected { .. });
        if probe {
            stats.health = Health::Probing;
        }
        InFlight {
            endpoint: ep.clone(),
            balancer: self.clone(),
            picked_at: now,
            probe,
            completed: false,
        }
    }

    /// The earliest end of an ejection (when a waiting pick should look again).
    fn next_probation(&self) -> Option<Instant> {
        self.state()
            .stats
            .values()
            .filter_map(|s| match s.health {
                Health::Ejected { until } => Some(until),
                _ => None,
            })
            .min()
    }

    fn record(&self, addr: SocketAddr, picked_at: Instant, outcome: Outcome, probe: bool) {
        let now = Instant::now();
        // The set before the state: the order `pick` takes them in.
        let set = self.endpoints.borrow();
        let mut state = self.state();
        let state = &mut *state;
        let config = &state.config;
        let Some(stats) = state.stats.get_mut(&addr) else {
            return;
        };
        if outcome != Outcome::Error {
            stats.observe_rtt(now - picked_at, now, config.load.decay);
        }
        let change = stats.accrue(outcome, probe, now, &config.accrual);
        match change {
            Change::None => {}
            Change::Trip => {
                // Never below the floor of ready endpoints (counted in the current set).
                let floor = config.accrual.min_ready_endpoints as usize;
                let ready = set
                    .endpoints
                    .iter()
                    .filter(|e| state.stats.get(&e.addr).is_none_or(Stats::is_ready))
                    .count();
                if floor == 0 || ready > floor {
                    if let Some(stats) = state.stats.get_mut(&addr) {
                        stats.eject(now, &state.config.accrual);
                        state.unhealthy += 1;
                        tracing::info!(%addr, "endpoint ejected by failure accrual");
                    }
                }
            }
            Change::Readmitted => {
                state.unhealthy = state.unhealthy.saturating_sub(1);
                tracing::info!(%addr, "endpoint readmitted after a successful probe");
                self.health_changed.notify_waiters();
            }
            Change::Reejected => {
                tracing::debug!(%addr, "endpoint's probe failed; ejected again");
                self.health_changed.notify_waiters();
            }
        }
    }

    fn release(&self, addr: SocketAddr, cancelled_probe: bool) {
        let mut state = self.state();
        if let Some(stats) = state.stats.get_mut(&addr) {
            stats.pending = stats.pending.saturating_sub(1);
            if cancelled_probe {
                stats.probe_cancelled(Instant::now());
                drop(state);
                self.health_changed.notify_waiters();
            }
        }
    }

    /// Requests pending on `addr` (for tests and debugging).
    pub fn outstanding(&self, addr: SocketAddr) -> usize {
        self.state().stats.get(&addr).map_or(0, |s| s.pending)
    }

    /// Endpoints in the current set by state: ready, or pending (ejected or on probation).
    pub fn endpoint_counts(&self) -> EndpointCounts {
        let set = self.endpoints.borrow();
        let state = self.state();
        let ready = set
            .endpoints
            .iter()
            .filter(|e| state.stats.get(&e.addr).is_none_or(Stats::is_ready))
            .count();
        EndpointCounts {
            ready,
            pending: set.endpoints.len() - ready,
        }
    }
}

impl EndpointGauge for Balancer {
    fn endpoint_counts(&self) -> EndpointCounts {
        Balancer::endpoint_counts(self)
    }
}

/// Counts a waiting pick while it waits.
struct Waiting<'a> {
    count: &'a AtomicUsize,
    /// Picks that were already waiting.
    ahead: usize,
}

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Waiting<'a> {
        let ahead = count.fetch_add(1, Ordering::Relaxed);
        Waiting { count, ahead }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

fn addrs(set: &EndpointSet) -> HashSet<SocketAddr> {
    set.endpoints.iter().map(|e| e.addr).collect()
}

#[cfg(test)]
mod tests;
