//! `GET /v1/routes?namespace=NS&service=NAME&window=1m`: golden metrics per route of a Service
//! (Linkerd's `viz routes`): success rate, requests per second and latency, as the meshed clients
//! saw each request after retries. `weft routes` prints it.
//!
//! A row sums the route series (`outbound_{http,grpc}_route_*`) of every scraped client proxy
//! whose parent is the Service. A Service without routes is served by its default route
//! (`route_kind="default"`), shown as `[default]`. Latencies are the upper bounds of the route
//! histogram's buckets ([`quantile_bound`]).

use std::collections::BTreeMap;
use std::time::Duration;

use super::params;
use super::stat::Source;
use crate::resource::State;
use crate::telemetry::routes::{quantile_bound, RouteKey};
use crate::telemetry::stats::Stats;
use crate::telemetry::{Key, Status};
use serde_json::{json, Value};

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// `None`: every namespace.
    pub namespace: Option<String>,
    /// Only this Service (of `namespace`).
    pub service: Option<String>,
    pub window: Duration,
}

/// Reads the query string; the error is the 400's message.
pub fn parse_query(query: Option<&str>) -> Result<Query, String> {
    let p = params::parse(query, &["namespace", "service", "window"])?;
    let q = Query {
        namespace: p.get("namespace").map(|s| s.to_string()),
        service: p.get("service").map(|s| s.to_string()),
        window: params::window(p.get("window").copied())?,
    };
    if q.service.is_some() && q.namespace.is_none() {
        return Err("service needs namespace".into());
    }
    Ok(q)
}

/// One route's figures, summed over its clients.
#[derive(Default)]
struct Figures {
    stats: Stats,
    rps: f64,
    seconds: Option<f64>,
    stale: bool,
    error: Option<String>,
}

/// The answer to `query` from every meshed proxy's window (`statuses`: any proxy may be a
/// client, whatever its namespace); `Err` is the 404's message (an unknown Service).
pub fn routes(
    state: &State,
    statuses: &BTreeMap<Key, Status>,
    source: Source,
    query: &Query,
) -> Result<Value, String> {
    if let (Some(ns), Some(name)) = (&query.namespace, &query.service) {
        if !state.services.contains_key(&(ns.clone(), name.clone())) {
            return Err(format!("no service {ns}/{name}"));
        }
    }
    let in_scope = |k: &RouteKey| {
        query.namespace.as_deref().is_none_or(|n| n == k.namespace)
            && query.service.as_deref().is_none_or(|n| n == k.service)
    };
    let mut routes: BTreeMap<&RouteKey, Figures> = BTreeMap::new();
    for ((ns, name), status) in statuses {
        let Some(w) = &status.window else { continue };
        for (key, stats) in w.delta.routes.iter().filter(|(k, _)| in_scope(k)) {
            let f = routes.entry(key).or_default();
            f.stats.add(stats);
            if w.seconds > 0.0 {
                f.rps += stats.requests / w.seconds;
            }
            f.seconds = Some(f.seconds.map_or(w.seconds, |s| s.min(w.seconds)));
            f.stale |= status.stale;
            if f.error.is_none() {
                f.error = status.error.as_ref().map(|e| format!("{ns}/{name}: {e}"));
            }
        }
    }
    let rows: Vec<Value> = routes.into_iter().map(|(k, f)| row(k, f, source)).collect();
    Ok(json!({"window_secs": query.window.as_secs(), "source": source.as_str(), "rows": rows}))
}

fn row(k: &RouteKey, f: Figures, source: Source) -> Value {
    let route = if k.kind == "default" {
        "[default]".to_string()
    } else {
        k.name.clone()
    };
    let bound = |q| quantile_bound(&f.stats.buckets, q);
    json!({
        "namespace": k.namespace,
        "service": k.service,
        "port": k.port,
        "route": route,
        "route_kind": k.kind,
        "route_namespace": k.route_namespace,
        "route_name": k.name,
        "requests": f.stats.requests.round() as u64,
        "success_rate": f.stats.success_rate(),
        "rps": f.rps,
        "latency_ms_p50": bound(0.50),
        "latency_ms_p95": bound(0.95),
        "latency_ms_p99": bound(0.99),
        "window_secs": f.seconds.unwrap_or(0.0),
        "stale": f.stale,
        "error": f.error,
        "source": source.as_str(),
    })
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
