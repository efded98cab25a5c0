//! `GET /v1/edges` rows from snapshots recorded directly (no network).

use super::*;
use crate::documents::state_of;
use crate::telemetry::edges::{EdgeKey, Traffic};
use crate::telemetry::snapshot::Snapshot;
use crate::telemetry::Telemetry;
use std::net::SocketAddr;
use tokio::time::Instant;

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
metadata: {name: ratings, namespace: demo}
spec: {workloadIPs: [{ip: 198.18.0.14}], ports: [{name: linkerd-admin, port: 4191}]}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: legacy, namespace: demo}
spec: {workloadIPs: [{ip: 198.18.0.12}], ports: [{name: http, port: 80}]}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: cache, namespace: demo}
spec: {workloadIPs: [{ip: 198.18.0.13}], ports: [{name: linkerd-admin, port: 4191}]}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: client, namespace: other}
spec: {workloadIPs: [{ip: 198.18.1.10}], ports: [{name: linkerd-admin, port: 4191}]}
";

fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

fn admin(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("ip"), 4191)
}

fn requests(requests: f64) -> Traffic {
    Traffic {
        requests,
        connections: 0.0,
        open: 1.0,
    }
}

fn edge(ns: &str, workload: &str, tls: Tls) -> EdgeKey {
    EdgeKey {
        namespace: ns.into(),
        workload: workload.into(),
        tls,
        cluster: None,
    }
}

/// Scrapes a minute apart: web calls books (mTLS), ratings (mostly mTLS) and legacy
/// (plaintext, no proxy there); other/client calls books over mTLS, but books' proxy recorded
/// only web's identity; cache cannot be scraped.
fn scenario() -> (State, Telemetry, Instant) {
    let state = state_of(STATE);
    let id = |name: &str, ns: &str| state.workloads[&key(ns, name)].server_name.clone();
    let t = Telemetry::new(Duration::from_secs(10));
    t.targets(&state);
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(60);
    let web_edges = |n: f64| {
        let mut edges = vec![
            (
                edge("demo", "books", Tls::Secured(id("books", "demo"))),
                requests(600.0 * n),
            ),
            (
                edge(
                    "demo",
                    "legacy",
                    Tls::Plain("not_provided_by_service_discovery".into()),
                ),
                requests(60.0 * n),
            ),
            (
                edge("demo", "ratings", Tls::Secured(id("ratings", "demo"))),
                requests(50.0 * n),
            ),
            (
                edge("demo", "ratings", Tls::Plain("loopback".into())),
                requests(10.0 * n),
            ),
            // Called before the window only.
            (
                edge("demo", "cache", Tls::Secured(id("cache", "demo"))),
                Traffic {
                    requests: 5.0,
                    ..Traffic::default()
                },
            ),
        ];
        edges.sort_by(|a, b| a.0.cmp(&b.0));
        Snapshot {
            started: Some(1.0),
            edges,
            ..Snapshot::default()
        }
    };
    let web = (key("demo", "web"), admin("198.18.0.10"));
    t.record(&web.0, web.1, t0, Ok(web_edges(0.0)));
    t.record(&web.0, web.1, t1, Ok(web_edges(1.0)));
    let books_clients = |n: f64| Snapshot {
        started: Some(1.0),
        clients: vec![(Tls::Secured(id("web", "demo")), requests(600.0 * n))],
        ..Snapshot::default()
    };
    let books = (key("demo", "books"), admin("198.18.0.11"));
    t.record(&books.0, books.1, t0, Ok(books_clients(0.0)));
    t.record(&books.0, books.1, t1, Ok(books_clients(1.0)));
    let client_edges = |n: f64| Snapshot {
        started: Some(1.0),
        edges: vec![(
            edge("demo", "books", Tls::Secured(id("books", "demo"))),
            requests(120.0 * n),
        )],
        ..Snapshot::default()
    };
    let client = (key("other", "client"), admin("198.18.1.10"));
    t.record(&client.0, client.1, t0, Ok(client_edges(0.0)));
    t.record(&client.0, client.1, t1, Ok(client_edges(1.0)));
    t.record(
        &key("demo", "cache"),
        admin("198.18.0.13"),
        t1,
        Err("connecting to 198.18.0.13:4191: Connection refused (os error 111)".into()),
    );
    (state, t, t1)
}

fn rows(query: &str) -> Vec<Value> {
    let (state, t, now) = scenario();
    let q = parse_query(Some(query)).expect("query");
    let statuses = t.statuses(&state, now, q.window, |_| true);
    let v = edges(&state, &statuses, Source::ControlPlane, &q).expect("rows");
    v["rows"].as_array().expect("rows").clone()
}

fn names(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            format!(
                "{}/{} -> {}/{}",
                r["src_namespace"].as_str().unwrap(),
                r["src"].as_str().unwrap(),
                r["dst_namespace"].as_str().unwrap(),
                r["dst"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn edges_are_what_sources_sent_with_identities_checked_at_both_ends() {
    let (state, ..) = scenario();
    let id = |name: &str, ns: &str| state.workloads[&key(ns, name)].server_name.clone();
    let rows = rows("namespace=demo&window=1m");
    // Idle edges (web -> cache) are not listed; a proxy that was never scraped has none.
    assert_eq!(
        names(&rows),
        [
            "demo/web -> demo/books",
            "demo/web -> demo/legacy",
            "demo/web -> demo/ratings",
            "other/client -> demo/books",
        ]
    );
    // Secured, and books' proxy saw web's identity: both identities.
    assert_eq!(
        rows[0],
        json!({"src_namespace": "demo", "src": "web", "dst_namespace": "demo", "dst": "books",
               "dst_cluster": null, "client_id": id("web", "demo"), "server_id": id("books", "demo"),
               "secured": true, "no_tls_reason": null, "requests": 600, "rps": 10.0,
               "tcp_connections": 1, "window_secs": 60.0, "stale": false, "error": null,
               "source": "control-plane"})
    );
    // No proxy at legacy: plaintext, and why.
    let legacy = &rows[1];
    assert_eq!(legacy["secured"], false);
    assert_eq!(legacy["no_tls_reason"], "not_provided_by_service_discovery");
    assert_eq!(
        (legacy["client_id"].clone(), legacy["server_id"].clone()),
        (Value::Null, Value::Null)
    );
    // Part of the traffic to ratings was plaintext: not secured, though its server is known.
    let ratings = &rows[2];
    assert_eq!(ratings["secured"], false);
    assert_eq!(ratings["server_id"], id("ratings", "demo"));
    assert_eq!(ratings["no_tls_reason"], "loopback");
    assert_eq!(ratings["requests"], 60);
    // Secured from client's side, but books' proxy recorded no traffic from client's identity:
    // no client identity is claimed.
    let client = &rows[3];
    assert_eq!(client["secured"], true);
    assert_eq!(client["client_id"], Value::Null);
    assert_eq!(client["server_id"], id("books", "demo"));
    assert!((client["rps"].as_f64().unwrap() - 2.0).abs() < 1e-9);
}

#[test]
fn a_namespace_keeps_edges_with_an_end_in_it() {
    assert_eq!(
        names(&rows("namespace=other")),
        ["other/client -> demo/books"]
    );
    assert_eq!(rows("").len(), 4);
    let (state, t, now) = scenario();
    let q = parse_query(Some("namespace=nope")).expect("query");
    assert_eq!(
        edges(
            &state,
            &t.statuses(&state, now, q.window, |_| true),
            Source::ControlPlane,
            &q
        )
        .expect_err("404"),
        "no workload in namespace nope"
    );
}

#[test]
fn queries_are_checked_with_precise_errors() {
    assert_eq!(
        parse_query(None),
        Ok(Query {
            namespace: None,
            window: Duration::from_secs(60)
        })
    );
    for (query, error) in [
        (
            "name=web",
            "unknown query parameter \"name\": expected namespace or window",
        ),
        ("window=5s", "window: must be between 10s and 1h, got 5s"),
        (
            "namespace=a&namespace=b",
            "query parameter namespace given twice",
        ),
    ] {
        assert_eq!(parse_query(Some(query)), Err(error.to_string()), "{query}");
    }
    let bad = parse_query(Some("namespace=Demo")).expect_err("bad namespace");
    assert!(bad.starts_with("namespace: must be a DNS label"), "{bad}");
}

#[test]
fn prometheus_windows_make_the_same_rows_with_their_source() {
    use crate::telemetry::prometheus_windows::{fold, tests as recorded};
    let state = recorded::state();
    let statuses = fold(&state, recorded::WINDOW, recorded::recorded());
    let id = |name: &str| format!("{name}.demo.serviceaccount.identity.weft.cluster.local");
    let q = parse_query(Some("namespace=demo&window=30s")).expect("query");
    let v = edges(&state, &statuses, Source::Prometheus, &q).expect("rows");
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(
        names(rows),
        [
            "demo/traffic -> demo/ratings",
            "demo/traffic -> demo/web",
            "demo/web -> demo/books",
            "demo/web -> demo/books-v2",
            "demo/web -> demo/ratings",
        ]
    );
    for row in rows {
        // Every demo call is mTLS, and each destination's proxy saw its caller's identity.
        assert_eq!(row["secured"], true, "{row}");
        assert_eq!(row["client_id"], id(row["src"].as_str().unwrap()), "{row}");
        assert_eq!(row["server_id"], id(row["dst"].as_str().unwrap()), "{row}");
        assert_eq!(row["source"], "prometheus");
        assert_eq!(row["window_secs"], 30.0);
        assert!(row["rps"].as_f64().unwrap() > 0.5, "{row}");
    }
}

/// A proxy's snapshot at `n` minutes.
type Scrapes<'a> = dyn Fn(f64) -> Snapshot + 'a;

/// Records `snapshot(0)` then `snapshot(1)` a minute apart for `key`, and answers the rows of
/// `query` from them.
fn rows_of(state: &State, proxies: &[(Key, &str, &Scrapes)], query: &str) -> Vec<Value> {
    let t = Telemetry::new(Duration::from_secs(10));
    t.targets(state);
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(60);
    for (key, ip, snapshot) in proxies {
        t.record(key, admin(ip), t0, Ok(snapshot(0.0)));
        t.record(key, admin(ip), t1, Ok(snapshot(1.0)));
    }
    let q = parse_query(Some(query)).expect("query");
    let statuses = t.statuses(state, t1, q.window, |_| true);
    let v = edges(state, &statuses, Source::ControlPlane, &q).expect("rows");
    v["rows"].as_array().expect("rows").clone()
}

const GATEWAY_ID: &str = "gateway.weft-multicluster.serviceaccount.identity.weft.cluster.local";
/// East's frontend, as west's proxies see it (the trust domain is shared).
const EAST_FRONTEND_ID: &str = "frontend.default.serviceaccount.identity.weft.cluster.local";

#[test]
fn east_sees_its_calls_to_mirrors_with_the_linked_cluster() {
    let state = state_of(
        "\
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: frontend, namespace: default}
spec: {workloadIPs: [{ip: 198.18.0.10}], ports: [{name: linkerd-admin, port: 4191}]}
",
    );
    let api_1 = "api-1.default.serviceaccount.identity.weft.cluster.local";
    let frontend = |n: f64| {
        let mut edges = vec![
            (
                EdgeKey {
                    cluster: Some("west".into()),
                    ..edge("default", "web-west", Tls::Secured(GATEWAY_ID.into()))
                },
                requests(300.0 * n),
            ),
            (
                EdgeKey {
                    cluster: Some("west".into()),
                    ..edge("default", "api-west", Tls::Secured(api_1.into()))
                },
                requests(60.0 * n),
            ),
        ];
        edges.sort_by(|a, b| a.0.cmp(&b.0));
        Snapshot {
            started: Some(1.0),
            edges,
            ..Snapshot::default()
        }
    };
    let rows = rows_of(
        &state,
        &[(key("default", "frontend"), "198.18.0.10", &frontend)],
        "namespace=default",
    );
    assert_eq!(
        names(&rows),
        [
            "default/frontend -> default/api-west",
            "default/frontend -> default/web-west"
        ]
    );
    // Remote discovery: west's pod's identity; gateway mode: the gateway's. The client side is
    // in west: not claimed here.
    for (row, server) in rows.iter().zip([api_1, GATEWAY_ID]) {
        assert_eq!(row["dst_cluster"], "west", "{row}");
        assert_eq!(row["server_id"], server, "{row}");
        assert_eq!(row["secured"], true, "{row}");
        assert_eq!(row["client_id"], Value::Null, "{row}");
    }
    assert_eq!(rows[1]["requests"], 300);
}

#[test]
fn west_sees_the_gateway_forward_east_callers_identity() {
    let state = state_of(
        "\
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: gateway, namespace: weft-multicluster, labels: {linkerd.io/extension: multicluster, component: gateway}}
spec: {workloadIPs: [{ip: 198.18.0.1}], ports: [{name: linkerd-admin, port: 4191}, {name: mc-gateway, port: 4143}]}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: web, namespace: default}
spec: {workloadIPs: [{ip: 198.18.0.11}], ports: [{name: linkerd-admin, port: 4191}]}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: traffic, namespace: default}
spec: {workloadIPs: [{ip: 198.18.0.12}], ports: [{name: linkerd-admin, port: 4191}]}
",
    );
    let id = |name: &str, ns: &str| state.workloads[&key(ns, name)].server_name.clone();
    assert_eq!(id("gateway", "weft-multicluster"), GATEWAY_ID);
    let web_id = id("web", "default");
    let traffic_id = id("traffic", "default");
    let calls_web = |n: f64| Snapshot {
        started: Some(1.0),
        edges: vec![(
            edge("default", "web", Tls::Secured(web_id.clone())),
            requests(100.0 * n),
        )],
        ..Snapshot::default()
    };
    // Web's proxy trusts the gateway: it recorded east's frontend, and the local traffic.
    let web_clients = |n: f64| {
        let mut clients = vec![
            (Tls::Secured(EAST_FRONTEND_ID.into()), requests(100.0 * n)),
            (Tls::Secured(traffic_id.clone()), requests(100.0 * n)),
        ];
        clients.sort_by(|a, b| a.0.cmp(&b.0));
        Snapshot {
            started: Some(1.0),
            clients,
            ..Snapshot::default()
        }
    };
    let rows = rows_of(
        &state,
        &[
            (
                key("weft-multicluster", "gateway"),
                "198.18.0.1",
                &calls_web,
            ),
            (key("default", "traffic"), "198.18.0.12", &calls_web),
            (key("default", "web"), "198.18.0.11", &web_clients),
        ],
        "",
    );
    assert_eq!(
        names(&rows),
        [
            "default/traffic -> default/web",
            "weft-multicluster/gateway -> default/web"
        ]
    );
    assert_eq!(rows[0]["client_id"], traffic_id);
    assert_eq!(rows[1]["client_id"], EAST_FRONTEND_ID, "{}", rows[1]);
    assert_eq!(rows[1]["server_id"], web_id);
    assert_eq!(rows[1]["dst_cluster"], Value::Null);

    // A proxy that does not trust the gateway records the gateway itself: the gateway's row
    // claims its own identity, as any source's.
    let web_sees_gateway = |n: f64| Snapshot {
        started: Some(1.0),
        clients: vec![(Tls::Secured(GATEWAY_ID.into()), requests(100.0 * n))],
        ..Snapshot::default()
    };
    let rows = rows_of(
        &state,
        &[
            (
                key("weft-multicluster", "gateway"),
                "198.18.0.1",
                &calls_web,
            ),
            (key("default", "web"), "198.18.0.11", &web_sees_gateway),
        ],
        "",
    );
    assert_eq!(rows[0]["client_id"], GATEWAY_ID, "{}", rows[0]);
}
