//! Telemetry: the control plane scrapes the `/metrics` of every meshed workload's proxy and keeps
//! a short history of each, from which `GET /v1/stat/...` computes golden metrics over a window.
//!
//! - **Who**: the workloads of the index's state with an admin address (the port named
//!   [`ADMIN_PORT_NAME`](crate::resource::ADMIN_PORT_NAME) on their first IP); read again every
//!   cycle, so a workload that registers is scraped from the next cycle on and one that leaves
//!   (or whose admin address changes) has its history dropped.
//! - **How**: `GET http://ADMIN/metrics` every [`Telemetry::interval`] (`--scrape-interval`,
//!   0 = off), at most [`MAX_CONCURRENT`] at once, [`scrape::TIMEOUT`] each, bodies up to
//!   [`scrape::MAX_BODY`] ([`scrape`]).
//! - **What is kept**: not the text but a [`Snapshot`]: inbound requests, successes and latency
//!   histogram, inbound TCP connections and bytes, and the same request figures per destination
//!   Service of the outbound side ([`snapshot`]); requests and connections per destination
//!   workload and TLS, and per client identity ([`edges`]); requests, successes and the coarse
//!   duration histogram per route ([`routes`]).
//! - **Memory**: per proxy at most [`history::MAX_LEN`] (182) snapshots: every scrape of the last
//!   2 minutes (at most 120 of them), then one a minute up to an hour ([`history`]); 73 at the
//!   default 10 s interval. A snapshot takes about 0.5 KB, plus 0.5 KB per destination Service
//!   the proxy called (a 26-bound histogram is 416 bytes), 0.2 KB per destination workload (per
//!   TLS variant: one, unless its traffic was partly plaintext), 0.12 KB per client identity and
//!   0.35 KB per route (a 5-bound histogram). A proxy calling 5 Services backed by 10 workloads
//!   over 5 routes, called by 5 identities, takes about 7.5 KB a snapshot: about 550 KB at 10 s
//!   and never more than about 1.4 MB. Every one of those counts is bounded by what the proxy's
//!   `/metrics` names (the workloads discovery gave it, the routes of its policies, its clients),
//!   and the body read is at most [`scrape::MAX_BODY`].
//! - **Staleness**: a proxy whose last successful scrape is older than [`STALE_AFTER`] intervals,
//!   or that was never scraped, is stale; the error of its last scrape is kept (and cleared by a
//!   success).
//!
//! Beside the embedded scraper, an outside Prometheus: [`file_sd`] writes the same targets as
//! a Prometheus `file_sd` file (`--prometheus-sd-file`), and [`prometheus`] answers the API's
//! rows from PromQL instead (`--prometheus-url`).

pub mod edges;
pub mod file_sd;
pub mod history;
pub mod prometheus;
pub mod prometheus_windows;
pub mod routes;
pub mod scrape;
pub mod snapshot;
pub mod stats;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::index::Index;
use crate::resource::State;
pub use history::{History, Window};
pub use snapshot::Snapshot;

/// Scrapes in flight at once.
pub const MAX_CONCURRENT: usize = 8;
/// A proxy is stale once its last successful scrape is this many intervals old.
pub const STALE_AFTER: u32 = 3;
/// The scrape interval of `weft control` unless `--scrape-interval` says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// A workload: (namespace, name).
pub type Key = (String, String);

/// The scraped proxies and their histories; cheap to clone (one shared table). The scrape task
/// ([`run`]) writes it, the API reads it.
#[derive(Clone)]
pub struct Telemetry {
    interval: Duration,
    proxies: Arc<Mutex<BTreeMap<Key, Proxy>>>,
}

/// One workload's proxy as the scraper knows it.
#[derive(Debug)]
struct Proxy {
    admin: SocketAddr,
    history: History,
    last_success: Option<Instant>,
    last_error: Option<String>,
}

/// What the API needs of one proxy for a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// `None`: no snapshot inside the window.
    pub window: Option<Window>,
    pub stale: bool,
    /// The last scrape's error (`None` once a scrape succeeds).
    pub error: Option<String>,
}

impl Telemetry {
    /// An empty table for scrapes every `interval` (`Duration::ZERO`: no scraping).
    pub fn new(interval: Duration) -> Telemetry {
        Telemetry {
            interval,
            proxies: Arc::default(),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Key, Proxy>> {
        // Each entry is replaced or updated whole: a panic elsewhere cannot leave it half-done.
        self.proxies.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The proxies to scrape in `state`, with their admin addresses. Forgets proxies whose
    /// workload left the state or changed its admin address (a new proxy: a new history).
    pub fn targets(&self, state: &State) -> Vec<(Key, SocketAddr)> {
        let meshed: BTreeMap<Key, SocketAddr> = state
            .workloads
            .iter()
            .filter_map(|(key, w)| Some((key.clone(), w.admin_addr()?)))
            .collect();
        let mut proxies = self.lock();
        proxies.retain(|key, p| meshed.get(key) == Some(&p.admin));
        for (key, admin) in &meshed {
            proxies.entry(key.clone()).or_insert_with(|| Proxy {
                admin: *admin,
                history: History::default(),
                last_success: None,
                last_error: None,
            });
        }
        meshed.into_iter().collect()
    }

    /// Records the outcome of scraping `key`'s proxy at `admin`, finished at `at`. Ignored when
    /// the workload is no longer a target at that address (it left while being scraped).
    pub fn record(
        &self,
        key: &Key,
        admin: SocketAddr,
        at: Instant,
        outcome: Result<Snapshot, String>,
    ) {
        let mut proxies = self.lock();
        let Some(p) = proxies.get_mut(key).filter(|p| p.admin == admin) else {
            return;
        };
        match outcome {
            Ok(snapshot) => {
                p.history.push(at, snapshot);
                p.last_success = Some(at);
                p.last_error = None;
            }
            Err(error) => p.last_error = Some(error),
        }
    }

    /// The status over `window` as of `now` of every proxy of `state` that `wanted` names.
    /// A meshed workload the scraper has not met yet is stale with no figures.
    pub fn statuses(
        &self,
        state: &State,
        now: Instant,
        window: Duration,
        wanted: impl Fn(&Key) -> bool,
    ) -> BTreeMap<Key, Status> {
        let proxies = self.lock();
        state
            .workloads
            .iter()
            .filter(|(key, _)| wanted(key))
            .filter_map(|(key, w)| {
                let admin = w.admin_addr()?;
                let status = match proxies.get(key).filter(|p| p.admin == admin) {
                    Some(p) => Status {
                        window: p.history.window(now, window),
                        stale: self.is_stale(p.last_success, now),
                        error: p.last_error.clone(),
                    },
                    None => Status {
                        window: None,
                        stale: true,
                        error: self.interval.is_zero().then(|| {
                            "telemetry is off (the control plane runs with --scrape-interval 0s)"
                                .to_string()
                        }),
                    },
                };
                Some((key.clone(), status))
            })
            .collect()
    }

    fn is_stale(&self, last_success: Option<Instant>, now: Instant) -> bool {
        self.interval.is_zero()
            || last_success
                .is_none_or(|at| now.saturating_duration_since(at) > self.interval * STALE_AFTER)
    }
}

/// Scrapes every meshed proxy each interval until `shutdown` changes. Cycles do not overlap: a
/// cycle slower than the interval delays the next one.
pub async fn run(telemetry: Telemetry, index: Arc<Index>, mut shutdown: watch::Receiver<bool>) {
    if telemetry.interval.is_zero() {
        return;
    }
    let mut ticks = tokio::time::interval(telemetry.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.changed() => return,
        }
        let targets = telemetry.targets(&index.state());
        let cycle = futures_util::stream::iter(targets)
            .map(|(key, admin)| async move {
                let (at, outcome) = scrape_one(admin).await;
                (key, admin, at, outcome)
            })
            .buffer_unordered(MAX_CONCURRENT)
            .for_each(|(key, admin, at, outcome)| {
                if let Err(error) = &outcome {
                    tracing::debug!(namespace = %key.0, workload = %key.1, %error, "scrape failed");
                }
                telemetry.record(&key, admin, at, outcome);
                std::future::ready(())
            });
        tokio::select! {
            () = cycle => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Scrapes one proxy: when its answer arrived, and the folded text (folded on a blocking thread:
/// a large text takes a while to parse, and the gRPC streams share this runtime).
async fn scrape_one(admin: SocketAddr) -> (Instant, Result<Snapshot, String>) {
    let text = scrape::metrics(admin).await;
    let at = Instant::now();
    let outcome = match text {
        Ok(text) => tokio::task::spawn_blocking(move || Snapshot::from_text(&text))
            .await
            .map_err(|e| format!("folding the metrics of {admin}: {e}")),
        Err(e) => Err(e.to_string()),
    };
    (at, outcome)
}

#[cfg(test)]
mod tests;
