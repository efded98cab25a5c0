//! `GET /v1/stat/{workloads|services|namespaces}?namespace=NS&name=NAME&window=1m`: golden metrics
//! (success rate, requests per second, latency percentiles, TCP connections, bytes per second,
//! meshed/total) per workload, Service or namespace over a window, from [`telemetry`]'s
//! histories. `weft stat` prints them.
//!
//! Workloads and namespaces count what their proxies served (inbound); a Service counts what
//! meshed clients sent it (the outbound series their proxies labelled with it), as Linkerd's
//! `stat svc` does.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::resource::{self, policy::parse_duration, State};
use crate::telemetry::{self, stats::Stats, Key, Status, Telemetry};

/// The window when the query names none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Shortest window: a few scrapes at the default interval.
pub const MIN_WINDOW: Duration = Duration::from_secs(10);
/// Longest window: as far back as the histories reach.
pub const MAX_WINDOW: Duration = telemetry::history::HORIZON;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Workloads,
    Services,
    Namespaces,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Workloads => "workloads",
            Kind::Services => "services",
            Kind::Namespaces => "namespaces",
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub kind: Kind,
    /// `None`: every namespace.
    pub namespace: Option<String>,
    /// Only this workload or Service (of `namespace`).
    pub name: Option<String>,
    pub window: Duration,
}

/// Reads the path's kind and the query string; the error is the 400's message.
pub fn parse_query(kind: &str, query: Option<&str>) -> Result<Query, String> {
    let kind = match kind {
        "workloads" => Kind::Workloads,
        "services" => Kind::Services,
        "namespaces" => Kind::Namespaces,
        other => {
            return Err(format!(
                "unknown kind {other:?}: expected workloads, services or namespaces"
            ))
        }
    };
    let (mut namespace, mut name, mut window) = (None, None, None);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "namespace" => &mut namespace,
            "name" => &mut name,
            "window" => &mut window,
            other => {
                return Err(format!(
                    "unknown query parameter {other:?}: expected namespace, name or window"
                ))
            }
        };
        if slot.is_some() {
            return Err(format!("query parameter {key} given twice"));
        }
        *slot = Some(value.to_string());
    }
    for (key, value) in [("namespace", &namespace), ("name", &name)] {
        if let Some(v) = value {
            resource::dns_label(v).map_err(|e| format!("{key}: {e}"))?;
        }
    }
    if name.is_some() {
        if kind == Kind::Namespaces {
            return Err("name: a namespace is chosen with namespace=NS".into());
        }
        if namespace.is_none() {
            return Err("name needs namespace".into());
        }
    }
    let window = match window {
        None => DEFAULT_WINDOW,
        Some(w) => {
            let d = parse_duration(&w, false).map_err(|e| format!("window: {e}"))?;
            if !(MIN_WINDOW..=MAX_WINDOW).contains(&d) {
                return Err(format!("window: must be between 10s and 1h, got {w}"));
            }
            d
        }
    };
    Ok(Query {
        kind,
        namespace,
        name,
        window,
    })
}

/// The answer to `query` as of `now`; `Err` is the 404's message (an unknown name).
pub fn stat(
    state: &State,
    telemetry: &Telemetry,
    now: Instant,
    query: &Query,
) -> Result<Value, String> {
    let in_scope = |ns: &str, name: &str| {
        query.namespace.as_deref().is_none_or(|n| n == ns)
            && query.name.as_deref().is_none_or(|n| n == name)
    };
    let rows = match query.kind {
        Kind::Workloads => {
            let statuses =
                telemetry.statuses(state, now, query.window, |(ns, name)| in_scope(ns, name));
            let rows: Vec<Value> = state
                .workloads
                .iter()
                .filter(|((ns, name), _)| in_scope(ns, name))
                .map(|(key, w)| {
                    let mut f = Figures::default();
                    if let Some(status) = statuses.get(key) {
                        f.add_inbound(None, status);
                    }
                    let meshed = w.admin_addr().is_some();
                    f.row(&key.0, &key.1, u32::from(meshed), 1)
                })
                .collect();
            if rows.is_empty() {
                if let (Some(ns), Some(name)) = (&query.namespace, &query.name) {
                    return Err(format!("no workload {ns}/{name}"));
                }
            }
            rows
        }
        Kind::Services => {
            // Any proxy may be a client, whatever its namespace.
            let statuses = telemetry.statuses(state, now, query.window, |_| true);
            let rows: Vec<Value> = state
                .services
                .iter()
                .filter(|((ns, name), _)| in_scope(ns, name))
                .map(|((ns, name), svc)| {
                    let mut f = Figures::default();
                    for (client, status) in &statuses {
                        f.add_outbound(client, status, ns, name);
                    }
                    let (meshed, total) = workloads_of(state, ns)
                        .filter(|w| svc.selects(w))
                        .fold((0, 0), |(m, t), w| {
                            (m + u32::from(w.admin_addr().is_some()), t + 1)
                        });
                    f.row(ns, name, meshed, total)
                })
                .collect();
            if rows.is_empty() {
                if let (Some(ns), Some(name)) = (&query.namespace, &query.name) {
                    return Err(format!("no service {ns}/{name}"));
                }
            }
            rows
        }
        Kind::Namespaces => {
            let statuses = telemetry.statuses(state, now, query.window, |(ns, _)| in_scope(ns, ""));
            let mut namespaces: BTreeMap<&str, (Figures, u32, u32)> = BTreeMap::new();
            for (key, w) in &state.workloads {
                if !in_scope(&key.0, "") {
                    continue;
                }
                let (f, meshed, total) = namespaces.entry(key.0.as_str()).or_default();
                *total += 1;
                *meshed += u32::from(w.admin_addr().is_some());
                if let Some(status) = statuses.get(key) {
                    f.add_inbound(Some(key), status);
                }
            }
            if namespaces.is_empty() {
                if let Some(ns) = &query.namespace {
                    return Err(format!("no workload in namespace {ns}"));
                }
            }
            namespaces
                .into_iter()
                .map(|(ns, (f, meshed, total))| f.row(ns, ns, meshed, total))
                .collect()
        }
    };
    Ok(json!({
        "kind": query.kind.as_str(),
        "window_secs": query.window.as_secs(),
        "rows": rows,
    }))
}

/// The workloads of namespace `ns`.
fn workloads_of<'a>(
    state: &'a State,
    ns: &'a str,
) -> impl Iterator<Item = &'a resource::ExternalWorkload> + 'a {
    state
        .workloads
        .range((ns.to_string(), String::new())..)
        .take_while(move |((n, _), _)| n == ns)
        .map(|(_, w)| w)
}

/// One row's figures, summed over the proxies it covers.
#[derive(Debug, Default)]
struct Figures {
    /// Requests, successes and latency histogram over each proxy's window.
    stats: Stats,
    rps: f64,
    /// Inbound TCP: open connections now, bytes per second (`None`: no proxy with a window, or
    /// a Service, whose connections are not counted).
    tcp: Option<Tcp>,
    /// The shortest span among the proxies that contributed.
    seconds: Option<f64>,
    stale: bool,
    /// The first error among the proxies covered (named, in a sum).
    error: Option<String>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tcp {
    open: f64,
    read_per_sec: f64,
    write_per_sec: f64,
}

impl Figures {
    /// Adds a proxy's inbound side (`who` names it when the row sums several).
    fn add_inbound(&mut self, who: Option<&Key>, status: &Status) {
        self.note(who, status);
        let Some(w) = &status.window else { return };
        self.add_stats(&w.delta.inbound, w.seconds);
        let per_sec = |n: f64| if w.seconds > 0.0 { n / w.seconds } else { 0.0 };
        let tcp = self.tcp.get_or_insert_with(Tcp::default);
        tcp.open += w.delta.tcp.open;
        tcp.read_per_sec += per_sec(w.delta.tcp.read_bytes);
        tcp.write_per_sec += per_sec(w.delta.tcp.write_bytes);
    }

    /// Adds what the client proxy `who` sent to Service `ns`/`name` (if it sent it anything).
    fn add_outbound(&mut self, who: &Key, status: &Status, ns: &str, name: &str) {
        let Some(w) = &status.window else { return };
        let Some(stats) = w.delta.outbound(ns, name) else {
            return;
        };
        self.note(Some(who), status);
        self.add_stats(stats, w.seconds);
    }

    fn add_stats(&mut self, stats: &Stats, seconds: f64) {
        self.stats.add(stats);
        if seconds > 0.0 {
            self.rps += stats.requests / seconds;
        }
        self.seconds = Some(self.seconds.map_or(seconds, |s| s.min(seconds)));
    }

    fn note(&mut self, who: Option<&Key>, status: &Status) {
        self.stale |= status.stale;
        if self.error.is_none() {
            self.error = status.error.as_ref().map(|e| match who {
                Some((ns, name)) => format!("{ns}/{name}: {e}"),
                None => e.clone(),
            });
        }
    }

    fn row(self, namespace: &str, name: &str, meshed: u32, total: u32) -> Value {
        let stats = &self.stats;
        json!({
            "namespace": namespace,
            "name": name,
            "meshed": meshed,
            "total": total,
            "success_rate": stats.success_rate(),
            "rps": self.rps,
            "latency_ms_p50": stats.quantile(0.50),
            "latency_ms_p95": stats.quantile(0.95),
            "latency_ms_p99": stats.quantile(0.99),
            "tcp_connections": self.tcp.map(|t| t.open.round() as u64),
            "read_bytes_per_sec": self.tcp.map(|t| t.read_per_sec),
            "write_bytes_per_sec": self.tcp.map(|t| t.write_per_sec),
            "window_secs": self.seconds.unwrap_or(0.0),
            "stale": self.stale,
            "error": self.error,
        })
    }
}

#[cfg(test)]
#[path = "stat_tests.rs"]
mod tests;
