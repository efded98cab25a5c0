//! Windows folded from answers recorded from a real Prometheus (2.42, Debian's package) scraping
//! `weft demo --prometheus --traffic-policy-after 3`'s proxies every 2 s: the queries
//! [`queries`] builds for a 30 s window, in `prometheus_answers/windows_FAMILY.json`.

use super::*;
use crate::documents::state_of;
use crate::telemetry::edges::{EdgeKey, Tls};

/// The demo's workloads, each with an admin port, and `cache`, meshed but not scraped.
const STATE: &str = "\
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: web, namespace: demo}
spec: {workloadIPs: [{ip: 198.18.0.10}], ports: [{name: linkerd-admin, port: 4191}]}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: books, namespace: demo}
spec: {workloadIPs: [{ip: 198.18.0.11}], ports: [{name: linkerd-admin, port: 4191}]}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: books-v2, namespace: demo}
spec: {workloadIPs: [{ip: 198.18.0.15}], ports: [{name: linkerd-admin, port: 4191}]}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: ratings, namespace: demo}
spec: {workloadIPs: [{ip: 198.18.0.12}], ports: [{name: linkerd-admin, port: 4191}]}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: traffic, namespace: demo}
spec: {workloadIPs: [{ip: 198.18.0.13}], ports: [{name: linkerd-admin, port: 4191}]}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: cache, namespace: demo}
spec: {workloadIPs: [{ip: 198.18.0.14}], ports: [{name: linkerd-admin, port: 4191}]}
";

pub(crate) const WINDOW: Duration = Duration::from_secs(30);

/// The demo's state of [`STATE`].
pub(crate) fn state() -> State {
    state_of(STATE)
}

/// The recorded answers, in [`queries`]' order.
pub(crate) fn recorded() -> Vec<Vec<prometheus::Sample>> {
    queries(WINDOW)
        .iter()
        .map(|(family, _)| {
            let path = format!(
                "{}/src/telemetry/prometheus_answers/windows_{family}.json",
                env!("CARGO_MANIFEST_DIR")
            );
            let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            prometheus::parse_vector(&body).unwrap_or_else(|e| panic!("{family}: {e}"))
        })
        .collect()
}

fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

fn id(name: &str) -> String {
    format!("{name}.demo.serviceaccount.identity.weft.cluster.local")
}

#[test]
fn queries_sum_increases_by_the_labels_the_folds_read() {
    let q = queries(Duration::from_secs(60));
    assert_eq!(q.len(), 8);
    assert_eq!(
        q[0],
        (
            "response_total",
            "sum by (namespace, workload, direction, peer, dst_namespace, dst_external_workload, \
             dst_service, dst_target_cluster_name, tls, server_id, client_id, no_tls_reason) \
             (increase(response_total[60s]))"
                .to_string()
        )
    );
    assert_eq!(
        q[2].1,
        "sum by (namespace, workload, direction, peer, dst_namespace, dst_external_workload, \
         dst_service, dst_target_cluster_name, tls, server_id, client_id, no_tls_reason) \
         (tcp_open_connections)"
    );
    assert_eq!(
        q[5].1,
        "sum by (namespace, workload, parent_kind, parent_namespace, parent_name, parent_port, \
         route_kind, route_namespace, route_name, le) \
         (increase(outbound_http_route_request_duration_seconds_bucket[60s]))"
    );
    assert_eq!(
        q[7],
        ("up", "min by (namespace, workload) (up)".to_string())
    );
}

#[test]
fn a_real_prometheus_answer_folds_into_each_proxys_edges_clients_and_routes() {
    let statuses = fold(&state(), WINDOW, recorded());
    assert_eq!(statuses.len(), 6, "{:?}", statuses.keys());

    let web = &statuses[&key("demo", "web")];
    assert!(!web.stale && web.error.is_none(), "{web:?}");
    let w = web.window.as_ref().expect("web's window");
    assert_eq!(w.seconds, 30.0);
    let to_books = w
        .delta
        .edges
        .iter()
        .find(|(k, _)| {
            *k == EdgeKey {
                namespace: "demo".into(),
                workload: "books".into(),
                tls: Tls::Secured(id("books")),
                cluster: None,
            }
        })
        .expect("web -> books over mTLS");
    assert!((to_books.1.requests - 548.571).abs() < 0.01, "{to_books:?}");
    // web's clients: traffic, over mTLS.
    assert_eq!(w.delta.clients.len(), 1, "{:?}", w.delta.clients);
    assert_eq!(w.delta.clients[0].0, Tls::Secured(id("traffic")));

    // web's routes: ratings' HTTPRoute, all 200s, with its duration buckets in ms.
    let (route, stats) = w
        .delta
        .routes
        .iter()
        .find(|(k, _)| k.service == "ratings" && k.kind == "HTTPRoute")
        .expect("ratings' route");
    assert_eq!((route.namespace.as_str(), route.port), ("demo", 8080));
    assert!(
        stats.requests > 500.0 && stats.successes == stats.requests,
        "{stats:?}"
    );
    assert!(!stats.buckets.is_empty());
    // The canary's GRPCRoute on books.
    assert!(w
        .delta
        .routes
        .iter()
        .any(|(k, s)| k.service == "books" && k.kind == "GRPCRoute" && s.requests > 500.0));

    // Meshed, but Prometheus has no target for it: stale, saying why, no figures.
    let cache = &statuses[&key("demo", "cache")];
    assert!(cache.stale && cache.window.is_none(), "{cache:?}");
    assert!(
        cache.error.as_deref().unwrap().contains("no target"),
        "{cache:?}"
    );
}

#[test]
fn a_proxy_whose_last_scrape_failed_is_stale_but_keeps_its_figures() {
    let mut answers = recorded();
    let up = answers.last_mut().expect("up");
    for s in up.iter_mut().filter(|s| s.labels["workload"] == "web") {
        s.value = 0.0;
    }
    let statuses = fold(&state(), WINDOW, answers);
    let web = &statuses[&key("demo", "web")];
    assert!(web.stale && web.window.is_some(), "{web:?}");
    assert!(web.error.as_deref().unwrap().contains("up == 0"));
}
