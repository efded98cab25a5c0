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
//!
//! Across clusters: a call to a multicluster mirror goes to an endpoint Destination labelled
//! with its linked cluster, so the row's destination is the mirror Service (`web-west`) with
//! `dst_cluster` naming the cluster; its client identity is not claimed (the destination's
//! proxy is in the other cluster, where this control plane cannot check it). In the cluster
//! that serves the call, the gateway (a meshed workload there) is the row's source, and the
//! client identity is the caller it forwarded: the busiest identity the destination's proxy
//! recorded over mTLS that is no local caller of it (the gateway sends `l5d-client-id`, which a
//! proxy trusting the gateway reports as `client_id`).

use std::collections::{BTreeMap, BTreeSet};
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
        // The variants (TLS) of each destination (and its cluster), in the window.
        let mut dsts: BTreeMap<Dst, Vec<(&Tls, &Traffic)>> = BTreeMap::new();
        for (edge, traffic) in &window.delta.edges {
            if traffic.is_idle() || !(in_scope(&src.0) || in_scope(&edge.namespace)) {
                continue;
            }
            let dst = (edge.namespace.clone(), edge.workload.clone());
            dsts.entry((dst, edge.cluster.as_deref()))
                .or_default()
                .push((&edge.tls, traffic));
        }
        for ((dst, cluster), variants) in dsts {
            let client_id = match cluster {
                Some(_) => None,
                None => client_id(state, statuses, src, &dst),
            };
            rows.push(row(
                src,
                (&dst, cluster),
                &variants,
                client_id.as_deref(),
                window.seconds,
                status,
                source,
            ));
        }
    }
    Ok(json!({"window_secs": query.window.as_secs(), "source": source.as_str(), "rows": rows}))
}

/// The client identity of the edge `src` → `dst` (both here): `src`'s identity when `dst`'s
/// proxy recorded it; for a multicluster gateway, the caller it forwarded (see the module doc),
/// else its own identity as for any source.
fn client_id(
    state: &State,
    statuses: &BTreeMap<Key, Status>,
    src: &Key,
    dst: &Key,
) -> Option<String> {
    let w = state.workloads.get(src)?;
    if crate::multicluster::export::is_gateway(w) {
        let local = local_callers(state, statuses, dst);
        let forwarded = statuses
            .get(dst)
            .and_then(|s| s.window.as_ref())
            .and_then(|window| {
                window
                    .delta
                    .clients
                    .iter()
                    .filter_map(|(tls, t)| match tls {
                        Tls::Secured(id)
                            if !id.is_empty() && !t.is_idle() && !local.contains(id.as_str()) =>
                        {
                            Some((id, t.weight()))
                        }
                        _ => None,
                    })
                    .max_by(|a, b| a.1.total_cmp(&b.1))
            });
        if let Some((id, _)) = forwarded {
            return Some(id.clone());
        }
    }
    Some(w.server_name.clone()).filter(|id| recorded_client(statuses, dst, id))
}

/// The identities of the workloads here whose proxies called `dst` in their window.
fn local_callers<'a>(
    state: &'a State,
    statuses: &BTreeMap<Key, Status>,
    dst: &Key,
) -> BTreeSet<&'a str> {
    statuses
        .iter()
        .filter(|(_, status)| {
            status.window.as_ref().is_some_and(|w| {
                w.delta.edges.iter().any(|(e, t)| {
                    e.cluster.is_none()
                        && e.namespace == dst.0
                        && e.workload == dst.1
                        && !t.is_idle()
                })
            })
        })
        .filter_map(|(src, _)| state.workloads.get(src))
        .map(|w| w.server_name.as_str())
        .collect()
}

/// A destination workload (or mirror Service) and its linked cluster (`None`: this one).
type Dst<'a> = (Key, Option<&'a str>);

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
    (dst, cluster): (&Key, Option<&str>),
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
        "dst_cluster": cluster,
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
