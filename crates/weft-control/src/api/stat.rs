//! `GET /v1/stat/{workloads|services|namespaces}?namespace=NS&name=NAME&window=1m`: golden metrics
//! (success rate, requests per second, latency percentiles, TCP connections, bytes per second,
//! meshed/total) per workload, Service or namespace over a window, from [`telemetry`]'s
//! histories, or, with `--prometheus-url`, from PromQL ([`telemetry::prometheus`]); each row
//! says its `source`. `weft stat` prints them.
//!
//! Workloads and namespaces count what their proxies served (inbound); a Service counts what
//! meshed clients sent it (the outbound series their proxies labelled with it), as Linkerd's
//! `stat svc` does.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::resource::{self, policy::parse_duration, State};
use crate::telemetry::prometheus::{self, Answer, Grouping, Prometheus, Scope};
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

/// Why a query has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatError {
    /// `name` (or, for namespaces, `namespace`) names nothing: the 404's message.
    #[error("{0}")]
    NotFound(String),
    /// The Prometheus source failed: the 502's message.
    #[error("{0}")]
    Prometheus(String),
}

/// Where a row's figures come from (the rows' `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The control plane's own scrapes ([`telemetry`]).
    ControlPlane,
    /// PromQL against `--prometheus-url` ([`telemetry::prometheus`]).
    Prometheus,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::ControlPlane => "control-plane",
            Source::Prometheus => "prometheus",
        }
    }
}

/// A row as the index knows it, before any figures: which rows there are, and meshed/total,
/// never depend on the source.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RowOf {
    namespace: String,
    name: String,
    meshed: u32,
    total: u32,
}

/// The rows of `query` in `state`; `Err`: a named workload, Service or namespace is not there.
fn rows_of(state: &State, query: &Query) -> Result<Vec<RowOf>, StatError> {
    let in_scope = |ns: &str, name: &str| {
        query.namespace.as_deref().is_none_or(|n| n == ns)
            && query.name.as_deref().is_none_or(|n| n == name)
    };
    let row = |ns: &str, name: &str, meshed, total| RowOf {
        namespace: ns.to_string(),
        name: name.to_string(),
        meshed,
        total,
    };
    let rows: Vec<RowOf> = match query.kind {
        Kind::Workloads => state
            .workloads
            .iter()
            .filter(|((ns, name), _)| in_scope(ns, name))
            .map(|((ns, name), w)| row(ns, name, u32::from(w.admin_addr().is_some()), 1))
            .collect(),
        Kind::Services => state
            .services
            .iter()
            .filter(|((ns, name), _)| in_scope(ns, name))
            .map(|((ns, name), svc)| {
                let (meshed, total) = workloads_of(state, ns)
                    .filter(|w| svc.selects(w))
                    .fold((0, 0), |(m, t), w| {
                        (m + u32::from(w.admin_addr().is_some()), t + 1)
                    });
                row(ns, name, meshed, total)
            })
            .collect(),
        Kind::Namespaces => {
            let mut namespaces: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
            for ((ns, _), w) in &state.workloads {
                if in_scope(ns, "") {
                    let (meshed, total) = namespaces.entry(ns).or_default();
                    *total += 1;
                    *meshed += u32::from(w.admin_addr().is_some());
                }
            }
            namespaces
                .into_iter()
                .map(|(ns, (meshed, total))| row(ns, ns, meshed, total))
                .collect()
        }
    };
    if rows.is_empty() {
        let missing = match (query.kind, &query.namespace, &query.name) {
            (Kind::Workloads, Some(ns), Some(name)) => Some(format!("no workload {ns}/{name}")),
            (Kind::Services, Some(ns), Some(name)) => Some(format!("no service {ns}/{name}")),
            (Kind::Namespaces, Some(ns), _) => Some(format!("no workload in namespace {ns}")),
            _ => None,
        };
        if let Some(missing) = missing {
            return Err(StatError::NotFound(missing));
        }
    }
    Ok(rows)
}

/// The answer to `query` as of `now`, from the control plane's own scrapes.
pub fn stat(
    state: &State,
    telemetry: &Telemetry,
    now: Instant,
    query: &Query,
) -> Result<Value, StatError> {
    let rows = rows_of(state, query)?;
    let scope = |ns: &str| query.namespace.as_deref().is_none_or(|n| n == ns);
    let statuses = match query.kind {
        Kind::Workloads => telemetry.statuses(state, now, query.window, |(ns, name)| {
            scope(ns) && query.name.as_deref().is_none_or(|n| n == name)
        }),
        // Any proxy may be a client, whatever its namespace.
        Kind::Services => telemetry.statuses(state, now, query.window, |_| true),
        Kind::Namespaces => telemetry.statuses(state, now, query.window, |(ns, _)| scope(ns)),
    };
    let rows = rows
        .iter()
        .map(|r| {
            let mut f = Figures::default();
            match query.kind {
                Kind::Workloads => {
                    if let Some(status) = statuses.get(&(r.namespace.clone(), r.name.clone())) {
                        f.add_inbound(None, status);
                    }
                }
                Kind::Services => {
                    for (client, status) in &statuses {
                        f.add_outbound(client, status, &r.namespace, &r.name);
                    }
                }
                Kind::Namespaces => {
                    for (key, status) in statuses.iter().filter(|((ns, _), _)| *ns == r.namespace) {
                        f.add_inbound(Some(key), status);
                    }
                }
            }
            f.row(r)
        })
        .collect();
    Ok(answer(query, Source::ControlPlane, rows))
}

/// The answer to `query` from PromQL against `prometheus` (the rows and meshed/total from the
/// index, as with [`stat`]). Prometheus failing is an error, never a row of zeros.
pub async fn stat_prometheus(
    state: &State,
    prometheus: &Prometheus,
    query: &Query,
) -> Result<Value, StatError> {
    let rows = rows_of(state, query)?;
    let grouping = match query.kind {
        Kind::Workloads => Grouping::Workloads,
        Kind::Services => Grouping::Services,
        Kind::Namespaces => Grouping::Namespaces,
    };
    let scope = Scope {
        namespace: query.namespace.as_deref(),
        name: query.name.as_deref(),
    };
    let answer_of = prometheus
        .golden(grouping, scope, query.window)
        .await
        .map_err(|e| StatError::Prometheus(e.to_string()))?;
    let rows = rows
        .iter()
        .map(|r| prometheus_row(state, query, r, &answer_of))
        .collect();
    Ok(answer(query, Source::Prometheus, rows))
}

/// One row from Prometheus's answer. Its proxies are the workload's (workloads), the
/// namespace's meshed workloads (namespaces), or the clients Prometheus counted (Services); one
/// that Prometheus does not scrape, or could not at its last try, makes the row stale.
fn prometheus_row(state: &State, query: &Query, r: &RowOf, answer: &Answer) -> Value {
    let key = (r.namespace.clone(), r.name.clone());
    let golden = answer.rows.get(&key);
    let proxies: Vec<&Key> = match query.kind {
        Kind::Workloads => state
            .workloads
            .get_key_value(&key)
            .filter(|(_, w)| w.admin_addr().is_some())
            .map(|(k, _)| k)
            .into_iter()
            .collect(),
        Kind::Namespaces => state
            .workloads
            .iter()
            .filter(|((ns, _), w)| *ns == r.namespace && w.admin_addr().is_some())
            .map(|(k, _)| k)
            .collect(),
        Kind::Services => answer
            .clients
            .get(&key)
            .map(|clients| clients.iter().collect())
            .unwrap_or_default(),
    };
    let (mut stale, mut scraped) = (false, false);
    let mut error = None;
    for (ns, name) in proxies {
        let Some(problem) =
            prometheus::scrape_problem(answer.up.get(&(ns.clone(), name.clone())).copied())
        else {
            scraped = true;
            continue;
        };
        stale = true;
        if error.is_none() {
            error = Some(match query.kind {
                Kind::Workloads => problem.to_string(),
                _ => format!("{ns}/{name}: {problem}"),
            });
        }
    }
    let requests = golden.map_or(0.0, |g| g.requests);
    let latency = |i: usize| {
        golden
            .and_then(|g| g.latency_ms[i])
            .filter(|_| requests > 0.0)
    };
    // A proxy Prometheus scrapes that has no inbound TCP series has had no connections: 0, as
    // the embedded source says of a scraped proxy; for Services they are not counted.
    let tcp = match (golden.and_then(|g| g.tcp), query.kind) {
        (_, Kind::Services) => None,
        (Some(t), _) => Some(Tcp {
            open: t.open,
            read_per_sec: t.read_per_sec,
            write_per_sec: t.write_per_sec,
        }),
        (None, _) => scraped.then(Tcp::default),
    };
    Row {
        of: r,
        success_rate: golden
            .filter(|g| g.requests > 0.0)
            .map(|g| g.successes / g.requests),
        rps: requests,
        latency_ms: [latency(0), latency(1), latency(2)],
        tcp,
        window_secs: if golden.is_some() || scraped {
            query.window.as_secs_f64()
        } else {
            0.0
        },
        stale,
        error,
    }
    .to_json(Source::Prometheus)
}

fn answer(query: &Query, source: Source, rows: Vec<Value>) -> Value {
    json!({
        "kind": query.kind.as_str(),
        "window_secs": query.window.as_secs(),
        "source": source.as_str(),
        "rows": rows,
    })
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

    fn row(self, of: &RowOf) -> Value {
        let stats = &self.stats;
        Row {
            of,
            success_rate: stats.success_rate(),
            rps: self.rps,
            latency_ms: [
                stats.quantile(0.50),
                stats.quantile(0.95),
                stats.quantile(0.99),
            ],
            tcp: self.tcp,
            window_secs: self.seconds.unwrap_or(0.0),
            stale: self.stale,
            error: self.error,
        }
        .to_json(Source::ControlPlane)
    }
}

/// One row's fields, whatever the source (docs/observability.md lists them).
struct Row<'a> {
    of: &'a RowOf,
    success_rate: Option<f64>,
    rps: f64,
    latency_ms: [Option<f64>; 3],
    tcp: Option<Tcp>,
    window_secs: f64,
    stale: bool,
    error: Option<String>,
}

impl Row<'_> {
    fn to_json(&self, source: Source) -> Value {
        json!({
            "namespace": self.of.namespace,
            "name": self.of.name,
            "meshed": self.of.meshed,
            "total": self.of.total,
            "success_rate": self.success_rate,
            "rps": self.rps,
            "latency_ms_p50": self.latency_ms[0],
            "latency_ms_p95": self.latency_ms[1],
            "latency_ms_p99": self.latency_ms[2],
            "tcp_connections": self.tcp.map(|t| t.open.round() as u64),
            "read_bytes_per_sec": self.tcp.map(|t| t.read_per_sec),
            "write_bytes_per_sec": self.tcp.map(|t| t.write_per_sec),
            "window_secs": self.window_secs,
            "stale": self.stale,
            "error": self.error,
            "source": source.as_str(),
        })
    }
}

#[cfg(test)]
#[path = "stat_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "stat_prometheus_tests.rs"]
mod prometheus_tests;
