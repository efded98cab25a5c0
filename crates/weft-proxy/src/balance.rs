//! Endpoint choice: power of two choices (P2C) by weighted least outstanding requests.
//!
//! A [`Balancer`] follows one target's live endpoint set (the discovery `watch` channel) and keeps
//! an outstanding-request counter per endpoint address. Each pick samples two endpoints at random
//! and takes the one with the lower `(outstanding + 1) / weight`. The returned [`InFlight`] guard
//! counts the request until it is dropped (and keeps its balancer alive: a balancer lives while a
//! connection or a request uses it, so the proxy never accumulates balancers for targets nobody
//! talks to any more). A pick copies the endpoint, so a later change of the set (an endpoint
//! removed) never touches requests already on their way; [`Balancer::take_removed`] reports
//! endpoints that left so their pooled connections can be retired. [`Balancers`] holds the one
//! balancer per target that every connection shares.

use crate::discovery::{Endpoint, EndpointSet, Target};
use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The set stayed empty (or unresolved) for the whole fail-fast timeout.
    #[error("no endpoints available after {0:?}")]
    NoEndpoints(Duration),
}

/// One balancer per discovered target, shared by every connection, so outstanding-request counts
/// are global to the proxy. Weak: a balancer lives while a connection or a request holds it, then
/// its discovery subscription is released (and discovery closes the stream after its idle
/// timeout), so many short-lived destinations never accumulate.
pub struct Balancers {
    inner: Mutex<BalancerMap>,
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
        }
    }
}

impl Balancers {
    fn lock(&self) -> std::sync::MutexGuard<'_, BalancerMap> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The target's balancer, while anything still uses it.
    pub fn get(&self, target: &Target) -> Option<Arc<Balancer>> {
        self.lock().map.get(target).and_then(Weak::upgrade)
    }

    /// The target's balancer, or a new one over `endpoints` (another caller may have made one
    /// while this one waited for discovery: that one wins).
    pub fn get_or_insert(
        &self,
        target: &Target,
        endpoints: watch::Receiver<EndpointSet>,
    ) -> Arc<Balancer> {
        let mut bs = self.lock();
        if let Some(b) = bs.map.get(target).and_then(Weak::upgrade) {
            return b;
        }
        let b = Arc::new(Balancer::new(endpoints));
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
    outstanding: Mutex<HashMap<SocketAddr, Arc<AtomicUsize>>>,
    /// The addresses last reported by `take_removed`, with its own view of the channel.
    seen: Mutex<(watch::Receiver<EndpointSet>, HashSet<SocketAddr>)>,
}

/// One chosen endpoint; counts as an outstanding request until dropped.
pub struct InFlight {
    pub endpoint: Endpoint,
    counter: Arc<AtomicUsize>,
    _balancer: Arc<Balancer>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    pub fn new(endpoints: watch::Receiver<EndpointSet>) -> Balancer {
        let mut watcher = endpoints.clone();
        let seen = addrs(&watcher.borrow_and_update());
        Balancer {
            endpoints,
            outstanding: Mutex::new(HashMap::new()),
            seen: Mutex::new((watcher, seen)),
        }
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

    /// Picks an endpoint, waiting up to `failfast` for the set to become non-empty.
    pub async fn pick_ready(self: &Arc<Self>, failfast: Duration) -> Result<InFlight, Error> {
        if let Some(picked) = self.pick() {
            return Ok(picked);
        }
        let mut rx = self.endpoints.clone();
        let wait = async move {
            rx.wait_for(|set| !set.endpoints.is_empty())
                .await
                .map(|_| ())
        };
        match tokio::time::timeout(failfast, wait).await {
            Ok(Ok(())) => self.pick().ok_or(Error::NoEndpoints(failfast)),
            // Timed out, or discovery went away for good.
            Ok(Err(_)) | Err(_) => Err(Error::NoEndpoints(failfast)),
        }
    }

    /// Picks an endpoint from the current set, or `None` if it is empty.
    pub fn pick(self: &Arc<Self>) -> Option<InFlight> {
        let set = self.endpoints.borrow();
        let eps = &set.endpoints;
        let mut outstanding = self.outstanding.lock().unwrap_or_else(|e| e.into_inner());
        let chosen = match eps.len() {
            0 => return None,
            1 => &eps[0],
            n => {
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let load = |ep: &Endpoint| {
                    let count = outstanding
                        .get(&ep.addr)
                        .map_or(0, |c| c.load(Ordering::Relaxed));
                    (count as f64 + 1.0) / f64::from(ep.weight.max(1))
                };
                if load(&eps[b]) < load(&eps[a]) {
                    &eps[b]
                } else {
                    &eps[a]
                }
            }
        };
        // Forget counters of endpoints that left the set once nothing is in flight on them.
        if outstanding.len() > eps.len() * 2 {
            outstanding.retain(|addr, c| {
                c.load(Ordering::Relaxed) > 0 || eps.iter().any(|e| e.addr == *addr)
            });
        }
        let counter = outstanding.entry(chosen.addr).or_default().clone();
        counter.fetch_add(1, Ordering::Relaxed);
        Some(InFlight {
            endpoint: chosen.clone(),
            counter,
            _balancer: self.clone(),
        })
    }

    /// Outstanding requests on `addr` (for tests and debugging).
    pub fn outstanding(&self, addr: SocketAddr) -> usize {
        let outstanding = self.outstanding.lock().unwrap_or_else(|e| e.into_inner());
        outstanding
            .get(&addr)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

fn addrs(set: &EndpointSet) -> HashSet<SocketAddr> {
    set.endpoints.iter().map(|e| e.addr).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::ProtocolHint;
    use std::collections::BTreeMap;

    fn ep(port: u16, weight: u32) -> Endpoint {
        Endpoint {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
            hint: ProtocolHint::H2,
            identity: None,
            opaque_transport_port: None,
            labels: Arc::new(BTreeMap::new()),
        }
    }

    fn set(eps: Vec<Endpoint>) -> EndpointSet {
        EndpointSet {
            resolved: true,
            exists: true,
            endpoints: eps,
            ..Default::default()
        }
    }

    #[test]
    fn empty_set_picks_nothing() {
        let (_tx, rx) = watch::channel(EndpointSet::default());
        assert!(Arc::new(Balancer::new(rx)).pick().is_none());
    }

    #[test]
    fn prefers_the_less_loaded_endpoint() {
        let (_tx, rx) = watch::channel(set(vec![ep(1, 1), ep(2, 1)]));
        let b = Arc::new(Balancer::new(rx));
        // Hold many requests: P2C with two endpoints always compares both, so load stays balanced.
        let held: Vec<_> = (0..100).map(|_| b.pick().unwrap()).collect();
        let on1 = b.outstanding(ep(1, 1).addr);
        let on2 = b.outstanding(ep(2, 1).addr);
        assert_eq!(on1 + on2, 100);
        assert!(on1.abs_diff(on2) <= 1, "{on1} vs {on2}");
        drop(held);
        assert_eq!(b.outstanding(ep(1, 1).addr), 0);
    }

    #[test]
    fn weights_scale_the_load() {
        let (_tx, rx) = watch::channel(set(vec![ep(1, 30000), ep(2, 10000)]));
        let b = Arc::new(Balancer::new(rx));
        let held: Vec<_> = (0..400).map(|_| b.pick().unwrap()).collect();
        let on1 = b.outstanding(ep(1, 1).addr);
        let on2 = b.outstanding(ep(2, 1).addr);
        assert!(
            (290..=310).contains(&on1),
            "heavier endpoint got {on1}, other {on2}"
        );
        drop(held);
    }

    #[test]
    fn endpoint_changes_keep_in_flight_requests() {
        let (tx, rx) = watch::channel(set(vec![ep(1, 1)]));
        let b = Arc::new(Balancer::new(rx));
        let first = b.pick().unwrap();
        assert_eq!(first.endpoint.addr.port(), 1);
        tx.send_replace(set(vec![ep(2, 1), ep(3, 1)]));
        // The in-flight request still holds its endpoint and is still counted.
        assert_eq!(first.endpoint.addr.port(), 1);
        assert_eq!(b.outstanding(first.endpoint.addr), 1);
        for _ in 0..20 {
            let p = b.pick().unwrap();
            assert_ne!(p.endpoint.addr.port(), 1);
        }
        drop(first);
        assert_eq!(b.outstanding(ep(1, 1).addr), 0);
    }

    #[test]
    fn take_removed_reports_endpoints_that_left_once() {
        let (tx, rx) = watch::channel(set(vec![ep(1, 1), ep(2, 1)]));
        let b = Arc::new(Balancer::new(rx));
        assert!(b.take_removed().is_empty());
        tx.send_replace(set(vec![ep(2, 1), ep(3, 1)]));
        assert_eq!(b.take_removed(), vec![ep(1, 1).addr]);
        assert!(b.take_removed().is_empty());
        tx.send_replace(set(vec![]));
        let mut gone = b.take_removed();
        gone.sort();
        assert_eq!(gone, vec![ep(2, 1).addr, ep(3, 1).addr]);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_endpoints_then_fails_fast() {
        let (tx, rx) = watch::channel(EndpointSet::default());
        let b = Arc::new(Balancer::new(rx));
        let start = tokio::time::Instant::now();
        let err = b.pick_ready(Duration::from_secs(3)).await.unwrap_err();
        assert_eq!(err, Error::NoEndpoints(Duration::from_secs(3)));
        assert_eq!(start.elapsed(), Duration::from_secs(3));

        let waiting = tokio::spawn({
            let b = b.clone();
            async move {
                b.pick_ready(Duration::from_secs(3))
                    .await
                    .map(|p| p.endpoint.addr)
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send_replace(set(vec![ep(7, 1)]));
        assert_eq!(waiting.await.unwrap().unwrap().port(), 7);
    }
}
