//! Multicluster, Linkerd's model: a cluster exports Services ([`export`], served by
//! `api/multicluster.rs`), and a cluster that links to it mirrors them. This module's task
//! ([`start`]) is east's mirror: per `Link` in the store (with its credentials Secret) it follows
//! the remote exports ([`follow`]) and probes the remote gateway, and it hands the documents
//! [`mirror`] generates to the store core as a source of their own (never written into the
//! user's store). A lost link keeps its last exports for the link expiry (`0`: forever), then
//! its mirrors go; an unexport or a deletion in the remote cluster removes a mirror at once.

pub mod export;
pub mod follow;
pub mod metrics;
pub mod mirror;

use crate::resource::multicluster::{CredentialsSecret, Link};
use crate::resource::State;
use crate::store::StoreHandle;
use export::ExportedService;
use follow::{Event, LinkKey};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a lost link keeps its mirrors by default (`weft control --link-expiry`).
pub const DEFAULT_LINK_EXPIRY: Duration = Duration::from_secs(300);

/// One Link as `GET /v1/multicluster/links` reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatus {
    pub namespace: String,
    pub name: String,
    pub target_cluster: String,
    /// The exports stream is open and has delivered a snapshot.
    pub connected: bool,
    /// Seconds since the last snapshot or heartbeat (`None`: never).
    pub last_sync_age_seconds: Option<f64>,
    /// `<name>-<link>` Services mirrored now.
    pub mirrored_services: usize,
    /// Federated members this link brings now.
    pub federated_services: usize,
    /// Whether the gateway answers its probe (`None`: the link has no gateway).
    pub gateway_alive: Option<bool>,
    /// The last successful probe's latency.
    pub probe_latency_ms: Option<f64>,
    /// The last error following the link or probing its gateway.
    pub last_error: Option<String>,
    /// The link was lost longer than the expiry: its mirrors were dropped.
    pub expired: bool,
}

/// Every Link's state, shared with the API.
#[derive(Clone, Default)]
pub struct Links(Arc<Mutex<BTreeMap<LinkKey, Runtime>>>);

impl Links {
    /// Every Link's status, now.
    pub fn snapshot(&self) -> Vec<LinkStatus> {
        let now = Instant::now();
        let links = self.0.lock().unwrap_or_else(|p| p.into_inner());
        links
            .values()
            .map(|r| LinkStatus {
                last_sync_age_seconds: r.last_sync.map(|t| (now - t).as_secs_f64()),
                ..r.status.clone()
            })
            .collect()
    }

    /// Every Link's metrics, now (`GET /metrics`).
    pub fn metrics(&self) -> Vec<metrics::LinkMetrics> {
        let now = Instant::now();
        let links = self.0.lock().unwrap_or_else(|p| p.into_inner());
        links
            .values()
            .map(|r| metrics::LinkMetrics {
                namespace: r.status.namespace.clone(),
                name: r.status.name.clone(),
                target_cluster_name: r.status.target_cluster.clone(),
                gateway: r
                    .link
                    .gateway
                    .as_ref()
                    .map(|g| (metrics::gateway_labels(&g.identity), r.gateway_alive)),
                probes: r.probes.clone(),
                connected: r.status.connected,
                mirrored_services: r.status.mirrored_services,
                federated_services: r.status.federated_services,
                last_sync_age: r.last_sync.map(|t| now - t),
            })
            .collect()
    }
}

/// What the mirror task knows of one Link.
#[derive(Clone)]
struct Runtime {
    link: Link,
    secret: Option<CredentialsSecret>,
    exports: Option<Vec<ExportedService>>,
    last_sync: Option<Instant>,
    lost_since: Option<Instant>,
    gateway_alive: bool,
    /// Every probe of the gateway so far (kept when the Link changes).
    probes: metrics::Probes,
    status: LinkStatus,
}

/// The follower and prober tasks of one Link; aborted when dropped.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Starts east's mirror: it follows the Links of `store`'s states and feeds the generated
/// documents back into `store`. `expiry`: how long a lost link keeps its mirrors
/// (`Duration::ZERO`: forever).
pub fn start(
    store: StoreHandle,
    expiry: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> (Links, JoinHandle<()>) {
    let links = Links::default();
    let shared = links.clone();
    let task = tokio::spawn(async move {
        let (events_tx, mut events) = mpsc::channel::<Event>(64);
        let mut states = store.states();
        let mut tasks: BTreeMap<LinkKey, Tasks> = BTreeMap::new();
        let mut published: Option<BTreeMap<String, Vec<serde_json::Value>>> = None;
        loop {
            let state = states.borrow_and_update().clone();
            reconcile(&state, &shared, &mut tasks, &events_tx);
            expire(&shared, expiry);
            let generated = generate(&shared, &state);
            if published.as_ref() != Some(&generated) {
                let texts: Vec<(String, String)> = generated
                    .iter()
                    .map(|(name, docs)| (name.clone(), yaml_text(docs)))
                    .collect();
                if store.set_mirror(texts).await.is_err() {
                    return;
                }
                published = Some(generated);
            }
            let next_expiry = next_expiry(&shared, expiry);
            tokio::select! {
                changed = states.changed() => if changed.is_err() { return },
                Some(event) = events.recv() => absorb(&shared, event),
                _ = sleep_until(next_expiry) => {}
                _ = shutdown.changed() => return,
            }
            // Take every event already waiting before generating again.
            while let Ok(event) = events.try_recv() {
                absorb(&shared, event);
            }
        }
    });
    (links, task)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn yaml_text(docs: &[serde_json::Value]) -> String {
    docs.iter()
        .map(|d| yaml_serde::to_string(d).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Starts, restarts and stops the Links' tasks as the store's Links and Secrets change.
fn reconcile(
    state: &State,
    links: &Links,
    tasks: &mut BTreeMap<LinkKey, Tasks>,
    events: &mpsc::Sender<Event>,
) {
    let mut runtimes = links.0.lock().unwrap_or_else(|p| p.into_inner());
    runtimes.retain(|key, _| state.links.contains_key(key));
    tasks.retain(|key, _| state.links.contains_key(key));
    for (key, link) in &state.links {
        let secret = state
            .secrets
            .get(&(link.namespace.clone(), link.credentials_secret.clone()))
            .cloned();
        let previous = runtimes.get(key);
        if previous.is_some_and(|r| r.link == *link && r.secret == secret) {
            continue;
        }
        // A changed Link or Secret (a new token) reconnects, keeping the last exports meanwhile.
        let (exports, last_sync) = previous
            .filter(|r| r.link.target_cluster_name == link.target_cluster_name)
            .map(|r| (r.exports.clone(), r.last_sync))
            .unwrap_or_default();
        let probes = previous.map(|r| r.probes.clone()).unwrap_or_default();
        tasks.remove(key);
        let mut status = LinkStatus {
            namespace: key.0.clone(),
            name: key.1.clone(),
            target_cluster: link.target_cluster_name.clone(),
            gateway_alive: link.gateway.as_ref().map(|_| true),
            ..Default::default()
        };
        let mut handles = Vec::new();
        match &secret {
            Some(s) => {
                tracing::info!(link = %key.1, server = %s.server, "multicluster: following the link");
                handles.push(tokio::spawn(follow::follow(
                    key.clone(),
                    s.server.clone(),
                    s.token.clone(),
                    events.clone(),
                )));
            }
            None => {
                status.last_error = Some(format!(
                    "credentials Secret {}/{} not found",
                    link.namespace, link.credentials_secret
                ))
            }
        }
        if let Some(g) = &link.gateway {
            handles.push(tokio::spawn(follow::probe(
                key.clone(),
                g.clone(),
                link.probe.clone(),
                events.clone(),
            )));
        }
        tasks.insert(key.clone(), Tasks(handles));
        runtimes.insert(
            key.clone(),
            Runtime {
                link: link.clone(),
                secret,
                exports,
                last_sync,
                // Not connected yet: the expiry counts from now.
                lost_since: Some(Instant::now()),
                gateway_alive: true,
                probes,
                status,
            },
        );
    }
}

fn absorb(links: &Links, event: Event) {
    let mut runtimes = links.0.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    match event {
        Event::Exports(key, services) => {
            if let Some(r) = runtimes.get_mut(&key) {
                r.exports = Some(services);
                r.last_sync = Some(now);
                r.lost_since = None;
                r.status.connected = true;
                r.status.expired = false;
            }
        }
        Event::Alive(key) => {
            if let Some(r) = runtimes.get_mut(&key) {
                r.last_sync = Some(now);
            }
        }
        Event::Lost(key, why) => {
            if let Some(r) = runtimes.get_mut(&key) {
                if r.status.connected || r.lost_since.is_none() {
                    r.lost_since = Some(now);
                }
                r.status.connected = false;
                r.status.last_error = Some(why);
            }
        }
        Event::Probe {
            link,
            alive,
            latency,
            error,
        } => {
            if let Some(r) = runtimes.get_mut(&link) {
                if r.gateway_alive != alive {
                    tracing::warn!(link = %link.1, alive, "multicluster: gateway liveness changed");
                }
                r.gateway_alive = alive;
                r.probes.record(latency);
                r.status.gateway_alive = Some(alive);
                if let Some(l) = latency {
                    r.status.probe_latency_ms = Some(l.as_secs_f64() * 1000.0);
                }
                if error.is_some() {
                    r.status.last_error = error;
                }
            }
        }
    }
}

/// Drops the exports of links lost for longer than `expiry`.
fn expire(links: &Links, expiry: Duration) {
    if expiry.is_zero() {
        return;
    }
    let now = Instant::now();
    let mut runtimes = links.0.lock().unwrap_or_else(|p| p.into_inner());
    for (key, r) in runtimes.iter_mut() {
        if r.lost_since.is_some_and(|t| now >= t + expiry) && r.exports.is_some() {
            tracing::warn!(link = %key.1, ?expiry, "multicluster: link lost past its expiry, dropping its mirrors");
            r.exports = None;
            r.status.expired = true;
        }
    }
}

/// When the next lost link expires.
fn next_expiry(links: &Links, expiry: Duration) -> Option<Instant> {
    if expiry.is_zero() {
        return None;
    }
    let runtimes = links.0.lock().unwrap_or_else(|p| p.into_inner());
    runtimes
        .values()
        .filter(|r| r.exports.is_some())
        .filter_map(|r| r.lost_since.map(|t| t + expiry))
        .min()
}

/// The mirror documents of every Link now (and their counts into the statuses).
fn generate(links: &Links, state: &State) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut runtimes = links.0.lock().unwrap_or_else(|p| p.into_inner());
    let m = {
        let remotes: Vec<mirror::Remote> = runtimes
            .values()
            .map(|r| mirror::Remote {
                link: &r.link,
                services: r.exports.as_deref(),
                gateway_alive: r.gateway_alive,
            })
            .collect();
        mirror::mirror(&remotes, state)
    };
    for (key, (mirrored, federated)) in m.counts {
        if let Some(r) = runtimes.get_mut(&key) {
            r.status.mirrored_services = mirrored;
            r.status.federated_services = federated;
        }
    }
    m.texts
}
