//! `GET /v1/edges?namespace=NS&window=1m`: which workload called which over a window, and
//! whether that traffic was secured by mTLS with which identities (Linkerd's `viz edges`).
//! `weft edges` prints it.
//!
//! An edge is seen from its source: the outbound series of a scraped proxy labelled with a
//! destination workload (`dst_external_workload`) give the destination, the server identity the
//! proxy verified (`server_id`) and whether TLS was established (`tls`, `no_tls_reason`). The
//! client identity is cross-checked at the other end: the source workload's identity counts as
//! the edge's `client_id` only when the destination's proxy recorded traffic from that identity
//! over mTLS in the window (its inbound `client_id` label).

use std::collections::BTreeMap;
use std::time::Duration;

use super::params;
use super::stat::Source;
use crate::resource::State;
use crate::telemetry::edges::{Tls, Traffic};
use crate::telemetry::{Key, Status};
use serde_json::{json, Value};

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Only edges with an end in this namespace; `None`: every edge.
    pub namespace: Option<String>,
    pub window: Duration,
}

/// Reads the query string; the error is the 400's message.
pub fn parse_query(query: Option<&str>) -> Result<Query, String> {
    let p = params::parse(query, &["namespace", "window"])?;
    Ok(Query {
        namespace: p.get("namespace").map(|s| s.to_string()),
        window: params::window(p.get("window").copied())?,
    })
}

/// The answer to `query` from every meshed proxy's window (`statuses`: a source's destination
/// may be anywhere, and its client side is needed); `Err` is the 404's message (a namespace
/// without workloads).
pub fn edges(
    state: &State,
    statuses: &BTreeMap<Key, Status>,
    source: Source,
    query: &Query,
) -> Result<Value, String> {
    if let Some(ns) = &query.namespace {
        if !state.workloads.keys().any(|(n, _)| n == ns) {
            return Err(format!("no workload in namespace {ns}"));
        }
    }
    let in_scope = |ns: &str| query.namespace.as_deref().is_none_or(|n| n == ns);
    let mut rows = Vec::new();
    for (src, status) in statuses {
        let Some(window) = &status.window else {
            continue;
        };
        // The variants (TLS) of each destination, in the window.
        let mut dsts: BTreeMap<Key, Vec<(&Tls, &Traffic)>> = BTreeMap::new();
        for (edge, traffic) in &window.delta.edges {
            if traffic.is_idle() || !(in_scope(&src.0) || in_scope(&edge.namespace)) {
                continue;
            }
            dsts.entry((edge.namespace.clone(), edge.workload.clone()))
                .or_default()
                .push((&edge.tls, traffic));
        }
        for (dst, variants) in dsts {
            let client_id = state
                .workloads
                .get(src)
                .map(|w| w.server_name.as_str())
                .filter(|id| recorded_client(statuses, &dst, id));
            rows.push(row(
                src,
                &dst,
                &variants,
                client_id,
                window.seconds,
                status,
                source,
            ));
        }
    }
    Ok(json!({"window_secs": query.window.as_secs(), "source": source.as_str(), "rows": rows}))
}

/// Whether `dst`'s proxy recorded traffic from identity `id` over mTLS in its window.
fn recorded_client(statuses: &BTreeMap<Key, Status>, dst: &Key, id: &str) -> bool {
    statuses
        .get(dst)
        .and_then(|s| s.window.as_ref())
        .is_some_and(|w| {
            w.delta
                .clients
                .iter()
                .any(|(tls, t)| *tls == Tls::Secured(id.to_string()) && !t.is_idle())
        })
}

/// One edge's row: secured when all of its traffic in the window was mTLS; the server identity
/// of its busiest secured variant; the reason of a plaintext one.
fn row(
    src: &Key,
    dst: &Key,
    variants: &[(&Tls, &Traffic)],
    client_id: Option<&str>,
    seconds: f64,
    status: &Status,
    source: Source,
) -> Value {
    let mut total = Traffic::default();
    for (_, t) in variants {
        total.add(t);
    }
    let secured = variants
        .iter()
        .all(|(tls, _)| matches!(tls, Tls::Secured(_)));
    let server_id = variants
        .iter()
        .filter_map(|(tls, t)| match tls {
            Tls::Secured(id) if !id.is_empty() => Some((id, t.weight())),
            _ => None,
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(id, _)| id.clone());
    let no_tls_reason = variants.iter().find_map(|(tls, _)| match tls {
        Tls::Plain(reason) if reason.is_empty() => Some("no_identity".to_string()),
        Tls::Plain(reason) => Some(reason.clone()),
        Tls::Passthrough => Some("opaque".to_string()),
        Tls::Secured(_) => None,
    });
    json!({
        "src_namespace": src.0,
        "src": src.1,
        "dst_namespace": dst.0,
        "dst": dst.1,
        "client_id": client_id,
        "server_id": server_id,
        "secured": secured,
        "no_tls_reason": no_tls_reason,
        "requests": total.requests.round() as u64,
        "rps": if seconds > 0.0 { total.requests / seconds } else { 0.0 },
        "tcp_connections": total.open.round() as u64,
        "window_secs": seconds,
        "stale": status.stale,
        "error": status.error,
        "source": source.as_str(),
    })
}

#[cfg(test)]
#[path = "edges_tests.rs"]
mod tests;
