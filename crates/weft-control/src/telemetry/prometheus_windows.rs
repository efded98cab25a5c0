//! `--prometheus-url` for `GET /v1/edges` and `/v1/routes`: each proxy's window (its edges, its
//! clients and its routes) as Prometheus computed it, so those answers come from the same
//! Prometheus as `/v1/stat`, as Linkerd viz's do.
//!
//! Prometheus answers the increase of each counter over the window (it handles restarts and
//! missed scrapes itself), summed by exactly the labels the scrape's fold reads; the answers are
//! turned back into samples named after their family and folded by [`edges::fold`] and
//! [`routes::fold`], so both sources make their rows with one piece of code.

use std::collections::BTreeMap;
use std::time::Duration;

use super::history::Window;
use super::prometheus::{self, PromError, Prometheus};
use super::snapshot::Snapshot;
use super::stats::Sample;
use super::{edges, routes, Key, Status};
use crate::resource::State;
use crate::telemetry::file_sd::{LABEL_NAMESPACE, LABEL_WORKLOAD};

/// The labels [`edges::fold`] reads, and the target's.
const BY_EDGE: &str = "namespace, workload, direction, peer, dst_namespace, \
                       dst_external_workload, dst_service, dst_target_cluster_name, tls, \
                       server_id, client_id, no_tls_reason";
/// The labels [`routes`]' key is made of, and the target's.
const BY_ROUTE: &str = "namespace, workload, parent_kind, parent_namespace, parent_name, \
                        parent_port, route_kind, route_namespace, route_name";

/// The family each query's samples are named after, and its PromQL over `window`; the last
/// query is `up` by target.
pub fn queries(window: Duration) -> Vec<(&'static str, String)> {
    let w = format!("{}s", window.as_secs().max(1));
    let increase = |family: &'static str, by: &str| {
        (family, format!("sum by ({by}) (increase({family}[{w}]))"))
    };
    vec![
        increase("response_total", BY_EDGE),
        increase("tcp_open_total", BY_EDGE),
        (
            "tcp_open_connections",
            format!("sum by ({BY_EDGE}) (tcp_open_connections)"),
        ),
        increase(
            "outbound_http_route_request_statuses_total",
            &format!("{BY_ROUTE}, http_status, error"),
        ),
        increase(
            "outbound_grpc_route_request_statuses_total",
            &format!("{BY_ROUTE}, grpc_status, error"),
        ),
        increase(
            "outbound_http_route_request_duration_seconds_bucket",
            &format!("{BY_ROUTE}, le"),
        ),
        increase(
            "outbound_grpc_route_request_duration_seconds_bucket",
            &format!("{BY_ROUTE}, le"),
        ),
        ("up", "min by (namespace, workload) (up)".to_string()),
    ]
}

/// Folds the answers of [`queries`] (in their order) into a status per meshed workload of
/// `state`, as [`super::Telemetry::statuses`] makes them from the control plane's scrapes. A
/// proxy Prometheus does not scrape, or failed to at its last try, is stale with that error.
pub fn fold(
    state: &State,
    window: Duration,
    answers: Vec<Vec<prometheus::Sample>>,
) -> BTreeMap<Key, Status> {
    let families = queries(window);
    let mut per_proxy: BTreeMap<Key, Vec<Sample>> = BTreeMap::new();
    let mut up: BTreeMap<Key, bool> = BTreeMap::new();
    for ((family, _), samples) in families.iter().zip(answers) {
        for mut s in samples {
            let (Some(ns), Some(name)) = (
                s.labels.remove(LABEL_NAMESPACE),
                s.labels.remove(LABEL_WORKLOAD),
            ) else {
                continue;
            };
            if *family == "up" {
                up.insert((ns, name), s.value == 1.0);
                continue;
            }
            // An increase is finite and not negative; anything else is no figure.
            if !(s.value.is_finite() && s.value >= 0.0) {
                continue;
            }
            per_proxy.entry((ns, name)).or_default().push(Sample {
                name: family.to_string(),
                labels: s.labels,
                value: s.value,
            });
        }
    }
    state
        .workloads
        .iter()
        .filter(|(_, w)| w.admin_addr().is_some())
        .map(|(key, _)| {
            let problem = prometheus::scrape_problem(up.get(key).copied());
            let window = per_proxy.remove(key).map(|samples| {
                let (edges, clients) = edges::fold(&samples);
                Window {
                    seconds: window.as_secs_f64(),
                    delta: Snapshot {
                        edges,
                        clients,
                        routes: routes::fold(&samples),
                        ..Snapshot::default()
                    },
                }
            });
            let status = Status {
                window,
                stale: problem.is_some(),
                error: problem.map(str::to_string),
            };
            (key.clone(), status)
        })
        .collect()
}

impl Prometheus {
    /// Every meshed proxy's window over `window`, as of now, from Prometheus.
    pub async fn windows(
        &self,
        state: &State,
        window: Duration,
    ) -> Result<BTreeMap<Key, Status>, PromError> {
        let queries = queries(window);
        let promql: Vec<&str> = queries.iter().map(|(_, q)| q.as_str()).collect();
        let answers = self.instant(&promql).await?;
        Ok(fold(state, window, answers))
    }
}

#[cfg(test)]
#[path = "prometheus_windows_tests.rs"]
pub(crate) mod tests;
