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
//! Connect failures take an endpoint out of rotation whatever the accrual policy, and no request
//! waits on it again: a request is only sent to an endpoint a connection was made to, as
//! Linkerd's balancer dispatches only to endpoints whose connection is ready. The request path
//! reports [`InFlight::connect_failed`] and picks again; the endpoint reconnects in the
//! background ([`Balancer::spawn_reconnect`], the reconnect backoff
//! [`config::DEFAULT_CONNECT_BACKOFF`] between attempts) and is back in rotation once a
//! connection is made.
//!
//! The guard keeps its balancer alive, and [`Balancers`] keeps it a while after its last use
//! (so what a balancer learnt outlives a client's one-request connections), then drops it, so
//! the proxy never accumulates balancers for targets nobody talks to any more. A pick
//! copies the endpoint, so a later change of the set never touches requests already on their
//! way; [`Balancer::take_removed`] reports endpoints that left so their pooled connections can
//! be retired. [`Balancers`] holds the one balancer per target that every connection shares.

use crate::{
    backoff::BackoffConfig,
    discovery::{Endpoint, EndpointSet, Target},
    fxhash::FxHashMap,
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
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};
use tokio::{
    sync::{watch, Notify},
    time::Instant,
};

pub mod config;
mod endpoint;

pub use config::{
    Accrual, AccrualConfig, BalancerConfig, ConfigError, LoadConfig, QueueConfig,
    DEFAULT_CONNECT_BACKOFF,
};
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

/// One balancer per discovered target, shared by every connection, so load estimates, ejections
/// and reconnects are global to the proxy. A balancer is kept while a connection or a request
/// holds it and, once none does, until a sweep every idle timeout finds it unused since the last
/// one (between one and two idle timeouts: [`Balancers::with_idle_timeout`]), so a client making
/// one request per connection still meets what the previous request learnt; then its discovery
/// subscription is released (and discovery closes the stream after its own idle timeout), so
/// many short-lived destinations never accumulate.
pub struct Balancers {
    inner: Arc<Mutex<HashMap<Target, Kept>>>,
    /// Where balancers report `outbound_http_balancer_endpoints`; none in unit tests.
    metrics: Option<Metrics>,
    /// How long an endpoint no connection could be made to stays out of rotation.
    reconnect: BackoffConfig,
}

struct Kept {
    balancer: Arc<Balancer>,
    /// Taken since the last sweep.
    used: bool,
}

impl Default for Balancers {
    fn default() -> Balancers {
        Balancers {
            inner: Arc::default(),
            metrics: None,
            reconnect: DEFAULT_CONNECT_BACKOFF,
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

    /// Balancers whose endpoints stay out of rotation for `reconnect` after a failed connect.
    pub fn with_reconnect_backoff(self, reconnect: BackoffConfig) -> Balancers {
        Balancers { reconnect, ..self }
    }

    /// Sweeps unused balancers every `idle` (from a task on the current runtime; without one,
    /// only [`Balancers::sweep`] does).
    pub fn with_idle_timeout(self, idle: Duration) -> Balancers {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let map = Arc::downgrade(&self.inner);
            rt.spawn(async move {
                let mut tick = tokio::time::interval_at(Instant::now() + idle, idle);
                // Never two sweeps back to back after a stall: that would drop a balancer used
                // just before it.
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(map) = map.upgrade() else {
                        return;
                    };
                    sweep(&map);
                }
            });
        }
        self
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Target, Kept>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The target's balancer, if it has one.
    pub fn get(&self, target: &Target) -> Option<Arc<Balancer>> {
        let mut map = self.lock();
        let kept = map.get_mut(target)?;
        kept.used = true;
        Some(kept.balancer.clone())
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
        let mut map = self.lock();
        if let Some(kept) = map.get_mut(target) {
            kept.used = true;
            return kept.balancer.clone();
        }
        let config = config();
        let labels = config.labels.clone();
        let mut b = Balancer::with_config(endpoints, config);
        b.reconnect = self.reconnect;
        let b = Arc::new(b);
        if let Some(m) = &self.metrics {
            let gauge: Arc<dyn EndpointGauge> = b.clone();
            m.register_balancer(labels, Arc::downgrade(&gauge));
        }
        map.insert(
            target.clone(),
            Kept {
                balancer: b.clone(),
                used: true,
            },
        );
        b
    }

    /// Drops the balancers nothing holds and nothing took since the previous sweep.
    pub fn sweep(&self) {
        sweep(&self.inner);
    }

    /// Targets with a balancer kept.
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.lock().len()
    }
}

fn sweep(map: &Mutex<HashMap<Target, Kept>>) {
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|_, kept| {
            let keep = kept.used || Arc::strong_count(&kept.balancer) > 1;
            kept.used = false;
            keep
        });
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
    /// The reconnect backoff of an endpoint no connection could be made to.
    reconnect: BackoffConfig,
}

struct State {
    config: BalancerConfig,
    /// Keyed by discovery's addresses (FxHash: a lookup per pick and per answer).
    stats: FxHashMap<SocketAddr, Stats>,
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

    /// No connection could be made to the endpoint, so the request was not sent: the endpoint
    /// leaves rotation (whatever the accrual policy) and the request should be picked again.
    /// Counts as no outcome for failure accrual or load. Returns whether the caller should
    /// start the endpoint's reconnect ([`Balancer::spawn_reconnect`]): true for the request
    /// that took it out of rotation, false for any other.
    #[must_use]
    pub fn connect_failed(&mut self) -> bool {
        if std::mem::replace(&mut self.completed, true) {
            return false;
        }
        self.balancer.connect_failed(self.endpoint.addr)
    }

    /// The balancer it was picked from (to pick again).
    pub fn balancer(&self) -> &Arc<Balancer> {
        &self.balancer
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
                stats: FxHashMap::default(),
                unhealthy: 0,
            }),
            seen: Mutex::new((watcher, seen)),
            health_changed: Notify::new(),
            waiting: AtomicUsize::new(0),
            reconnect: DEFAULT_CONNECT_BACKOFF,
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
        let available = |stats: &FxHashMap<SocketAddr, Stats>, i: usize| {
            stats.get(&eps[i].addr).is_none_or(|s| s.available(now))
        };
        // The first available endpoint from a random start (every one when none is unhealthy).
        let find =
            |stats: &FxHashMap<SocketAddr, Stats>, start: usize, skip: [Option<usize>; 2]| {
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
            Change::None | Change::Reconnecting => {}
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

    fn connect_failed(&self, addr: SocketAddr) -> bool {
        let mut state = self.state();
        let state = &mut *state;
        let Some(stats) = state.stats.get_mut(&addr) else {
            return false;
        };
        match stats.connect_failed(Instant::now(), &state.config.accrual) {
            Change::Trip => {
                state.unhealthy += 1;
                tracing::debug!(%addr, "endpoint out of rotation: no connection could be made");
                true
            }
            Change::Reconnecting => true,
            // Waiting picks look again at the (later) end of its backoff.
            Change::Reejected => {
                self.health_changed.notify_waiters();
                false
            }
            Change::None | Change::Readmitted => false,
        }
    }

    /// A connection to `addr` was made in the background: back in rotation if it was out for
    /// failed connects (and still tracked).
    fn reconnected(&self, addr: SocketAddr) {
        let mut state = self.state();
        let state = &mut *state;
        let Some(stats) = state.stats.get_mut(&addr) else {
            return;
        };
        if stats.reconnected(Instant::now()) == Change::Readmitted {
            state.unhealthy = state.unhealthy.saturating_sub(1);
            tracing::debug!(%addr, "endpoint back in rotation: a connection was made");
            self.health_changed.notify_waiters();
        }
    }

    /// Reconnects to `addr` in the background after [`InFlight::connect_failed`] took it out of
    /// rotation: `connect` is tried after each reconnect backoff (100 ms doubling to 500 ms by
    /// default) until it succeeds, which puts the endpoint back. The task holds the balancer
    /// weakly (it ends with it), and ends when the endpoint leaves the set (a later set with
    /// it again finds it ready).
    pub fn spawn_reconnect<F, Fut, E>(self: &Arc<Self>, addr: SocketAddr, mut connect: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), E>> + Send,
        E: std::fmt::Display,
    {
        let balancer = Arc::downgrade(self);
        let mut backoff = crate::backoff::Backoff::with_config(self.reconnect);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(backoff.next_delay()).await;
                let gone = match balancer.upgrade() {
                    None => return,
                    Some(b) => !b
                        .endpoints
                        .borrow()
                        .endpoints
                        .iter()
                        .any(|e| e.addr == addr),
                };
                if !gone {
                    match connect().await {
                        Ok(()) => {}
                        Err(e) => {
                            tracing::debug!(%addr, error = %e, "reconnect failed");
                            continue;
                        }
                    }
                }
                if let Some(b) = balancer.upgrade() {
                    b.reconnected(addr);
                }
                return;
            }
        });
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
