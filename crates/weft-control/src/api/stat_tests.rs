//! `GET /v1/stat/...` rows from snapshots recorded directly (no network).

use super::*;
use crate::documents::state_of;
use crate::telemetry::snapshot::{Snapshot, Tcp};
use crate::telemetry::stats::Le;
use std::net::SocketAddr;

const STATE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec: {selector: {app: web}, ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: books, namespace: demo}
spec: {selector: {app: books}, ports: [{port: 9090}]}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: web, namespace: demo, labels: {app: web}}
spec: {workloadIPs: [{ip: 198.18.0.10}], ports: [{name: http, port: 8080}, {name: linkerd-admin, port: 4191}]}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: books, namespace: demo, labels: {app: books}}
spec: {workloadIPs: [{ip: 198.18.0.11}], ports: [{name: grpc, port: 9090}, {name: linkerd-admin, port: 4191}]}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: legacy, namespace: demo, labels: {app: books}}
spec: {workloadIPs: [{ip: 198.18.0.12}], ports: [{name: grpc, port: 9090}]}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: cache, namespace: demo, labels: {app: cache}}
spec: {workloadIPs: [{ip: 198.18.0.13}], ports: [{name: linkerd-admin, port: 4191}]}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: client, namespace: other, labels: {app: client}}
spec: {workloadIPs: [{ip: 198.18.1.10}], ports: [{name: linkerd-admin, port: 4191}]}
";

const REFUSED: &str = "connecting to 198.18.0.13:4191: Connection refused (os error 111)";

/// A snapshot: inbound (requests, successes, buckets), inbound TCP, and outbound
/// (namespace, service, requests, successes).
fn snap(
    inbound: (f64, f64, &[(f64, f64)]),
    tcp: Tcp,
    outbound: &[(&str, &str, f64, f64)],
) -> Snapshot {
    let stats = |requests, successes, buckets: &[(f64, f64)]| Stats {
        requests,
        successes,
        buckets: buckets.iter().map(|(le, n)| (Le(*le), *n)).collect(),
        tls: false,
    };
    Snapshot {
        started: Some(1.0),
        inbound: stats(inbound.0, inbound.1, inbound.2),
        tcp,
        outbound: outbound
            .iter()
            .map(|(ns, name, req, ok)| (((*ns).into(), (*name).into()), stats(*req, *ok, &[])))
            .collect(),
        ..Snapshot::default()
    }
}

fn admin(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("ip"), 4191)
}

fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

/// Two scrapes a minute apart of web, books and client; cache refuses connections.
fn scenario() -> (State, Telemetry, Instant) {
    let state = state_of(STATE);
    let t = Telemetry::new(Duration::from_secs(10));
    t.targets(&state);
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(60);
    const INF: f64 = f64::INFINITY;
    let none = Tcp::default();
    let web = (key("demo", "web"), admin("198.18.0.10"));
    t.record(
        &web.0,
        web.1,
        t0,
        Ok(snap(
            (100.0, 100.0, &[(1.0, 50.0), (2.0, 100.0), (INF, 100.0)]),
            none,
            &[("demo", "books", 0.0, 0.0)],
        )),
    );
    t.record(
        &web.0,
        web.1,
        t1,
        Ok(snap(
            (
                1300.0,
                1288.0,
                &[(1.0, 650.0), (2.0, 1250.0), (INF, 1300.0)],
            ),
            Tcp {
                open: 3.0,
                read_bytes: 60_000.0,
                write_bytes: 120_000.0,
            },
            &[("demo", "books", 600.0, 600.0)],
        )),
    );
    let books = (key("demo", "books"), admin("198.18.0.11"));
    t.record(&books.0, books.1, t0, Ok(snap((0.0, 0.0, &[]), none, &[])));
    t.record(
        &books.0,
        books.1,
        t1,
        Ok(snap((900.0, 870.0, &[]), none, &[])),
    );
    let client = (key("other", "client"), admin("198.18.1.10"));
    t.record(
        &client.0,
        client.1,
        t0,
        Ok(snap((0.0, 0.0, &[]), none, &[("demo", "books", 0.0, 0.0)])),
    );
    t.record(
        &client.0,
        client.1,
        t1,
        Ok(snap(
            (0.0, 0.0, &[]),
            none,
            &[("demo", "books", 300.0, 270.0)],
        )),
    );
    t.record(
        &key("demo", "cache"),
        admin("198.18.0.13"),
        t1,
        Err(REFUSED.into()),
    );
    (state, t, t1)
}

fn rows(kind: &str, query: &str) -> Vec<Value> {
    let (state, t, now) = scenario();
    let q = parse_query(kind, Some(query)).expect("query");
    let v = stat(&state, &t, now, &q).expect("rows");
    assert_eq!(v["kind"], kind);
    v["rows"].as_array().expect("rows").clone()
}

fn close(v: &Value, expected: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - expected).abs() < 1e-9)
}

#[test]
fn workload_rows_are_their_proxies_inbound() {
    let rows = rows("workloads", "");
    let names: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["namespace"].as_str().unwrap(),
                r["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            "demo/books",
            "demo/cache",
            "demo/legacy",
            "demo/web",
            "other/client"
        ]
    );
    let web = &rows[3];
    assert_eq!(
        *web,
        json!({"namespace": "demo", "name": "web", "meshed": 1, "total": 1,
               "success_rate": 0.99, "rps": 20.0,
               "latency_ms_p50": 1.0, "latency_ms_p95": web["latency_ms_p95"],
               "latency_ms_p99": 2.0, "tcp_connections": 3,
               "read_bytes_per_sec": 1000.0, "write_bytes_per_sec": 2000.0,
               "window_secs": 60.0, "stale": false, "error": null,
               "source": "control-plane"})
    );
    // rank 1140 of 1200: 540 into the 550 of (1, 2].
    assert!(close(&web["latency_ms_p95"], 1.0 + 540.0 / 550.0), "{web}");
    // Never scraped successfully: stale, with the reason, and no figures.
    let cache = &rows[1];
    assert_eq!(cache["stale"], true);
    assert_eq!(cache["error"], REFUSED);
    assert_eq!(cache["rps"], 0.0);
    assert_eq!(cache["success_rate"], Value::Null);
    assert_eq!(cache["tcp_connections"], Value::Null);
    assert_eq!(cache["window_secs"], 0.0);
    // No proxy: counted, never scraped, never stale.
    let legacy = &rows[2];
    assert_eq!(
        (legacy["meshed"].clone(), legacy["total"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(
        (legacy["stale"].clone(), legacy["rps"].clone()),
        (json!(false), json!(0.0))
    );
    // A proxy that served nothing: rps 0, no success rate or latencies.
    let client = &rows[4];
    assert_eq!(client["rps"], 0.0);
    assert_eq!(client["latency_ms_p50"], Value::Null);
    assert_eq!(client["tcp_connections"], 0);
}

#[test]
fn service_rows_are_what_meshed_clients_sent_them() {
    let rows = rows("services", "namespace=demo");
    assert_eq!(rows.len(), 2);
    let books = &rows[0];
    assert_eq!(books["name"], "books");
    // web sent 600, client (another namespace) 300 of which 30 failed.
    assert!(close(&books["rps"], 15.0), "{books}");
    assert!(close(&books["success_rate"], 870.0 / 900.0), "{books}");
    // Selected: books (meshed) and legacy (no proxy).
    assert_eq!(
        (books["meshed"].clone(), books["total"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(books["window_secs"], 60.0);
    assert_eq!(books["tcp_connections"], Value::Null);
    assert_eq!(books["stale"], false);
    // Nobody called web.
    let web = &rows[1];
    assert_eq!(
        (web["rps"].clone(), web["success_rate"].clone()),
        (json!(0.0), Value::Null)
    );
    assert_eq!(
        (web["meshed"].clone(), web["total"].clone()),
        (json!(1), json!(1))
    );
}

#[test]
fn namespace_rows_sum_their_workloads() {
    let rows = rows("namespaces", "");
    assert_eq!(rows.len(), 2);
    let demo = &rows[0];
    assert_eq!(
        (demo["namespace"].clone(), demo["name"].clone()),
        (json!("demo"), json!("demo"))
    );
    assert_eq!(
        (demo["meshed"].clone(), demo["total"].clone()),
        (json!(3), json!(4))
    );
    assert!(close(&demo["rps"], 35.0), "{demo}");
    assert!(
        close(&demo["success_rate"], (1188.0 + 870.0) / 2100.0),
        "{demo}"
    );
    assert_eq!(demo["tcp_connections"], 3);
    // cache is stale: so is the sum, naming it.
    assert_eq!(demo["stale"], true);
    assert_eq!(demo["error"], format!("demo/cache: {REFUSED}"));
    let other = &rows[1];
    assert_eq!(other["name"], "other");
    assert_eq!(other["stale"], false);
    let only = self::rows("namespaces", "namespace=other");
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["name"], "other");
}

#[test]
fn one_name_one_row_or_404() {
    let rows = rows("workloads", "namespace=demo&name=web&window=1m");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "web");
    let (state, t, now) = scenario();
    let missing = |kind: &str, query: &str| {
        let q = parse_query(kind, Some(query)).expect("query");
        stat(&state, &t, now, &q).expect_err("404").to_string()
    };
    assert_eq!(
        missing("workloads", "namespace=demo&name=nope"),
        "no workload demo/nope"
    );
    assert_eq!(
        missing("services", "namespace=other&name=web"),
        "no service other/web"
    );
    assert_eq!(
        missing("namespaces", "namespace=nope"),
        "no workload in namespace nope"
    );
    // A namespace with nothing in it is an empty list, not an error, for the other kinds.
    let q = parse_query("services", Some("namespace=other")).expect("query");
    assert_eq!(stat(&state, &t, now, &q).expect("rows")["rows"], json!([]));
}

#[test]
fn queries_are_checked_with_precise_errors() {
    let q = parse_query("workloads", None).expect("defaults");
    assert_eq!(
        q,
        Query {
            kind: Kind::Workloads,
            namespace: None,
            name: None,
            window: Duration::from_secs(60)
        }
    );
    let q = parse_query("services", Some("window=10s&namespace=demo")).expect("query");
    assert_eq!(
        (q.kind, q.window),
        (Kind::Services, Duration::from_secs(10))
    );
    assert_eq!(
        parse_query("namespaces", Some("window=1h"))
            .expect("1h")
            .window,
        MAX_WINDOW
    );
    for (kind, query, error) in [
        (
            "pods",
            "",
            "unknown kind \"pods\": expected workloads, services or namespaces",
        ),
        (
            "workloads",
            "window=5s",
            "window: must be between 10s and 1h, got 5s",
        ),
        (
            "workloads",
            "window=2h",
            "window: must be between 10s and 1h, got 2h",
        ),
        ("workloads", "name=web", "name needs namespace"),
        (
            "workloads",
            "ns=demo",
            "unknown query parameter \"ns\": expected namespace, name or window",
        ),
        (
            "workloads",
            "namespace=a&namespace=b",
            "query parameter namespace given twice",
        ),
        (
            "namespaces",
            "namespace=demo&name=x",
            "name: a namespace is chosen with namespace=NS",
        ),
    ] {
        assert_eq!(
            parse_query(kind, Some(query)),
            Err(error.to_string()),
            "{kind}?{query}"
        );
    }
    let bad = parse_query("workloads", Some("window=soon")).expect_err("bad window");
    assert!(bad.starts_with("window: "), "{bad}");
    let bad = parse_query("workloads", Some("namespace=Demo")).expect_err("bad namespace");
    assert!(bad.starts_with("namespace: must be a DNS label"), "{bad}");
}

#[test]
fn a_real_scrape_makes_a_row() {
    let state = state_of(STATE);
    let t = Telemetry::new(Duration::from_secs(10));
    t.targets(&state);
    let web = key("demo", "web");
    let t0 = Instant::now();
    t.record(&web, admin("198.18.0.10"), t0, Ok(Snapshot::default()));
    t.record(
        &web,
        admin("198.18.0.10"),
        t0 + Duration::from_secs(10),
        Ok(Snapshot::from_text(
            crate::telemetry::snapshot::tests::WEB_PROXY,
        )),
    );
    let q = parse_query("workloads", Some("namespace=demo&name=web&window=10s")).expect("q");
    let row = stat(&state, &t, t0 + Duration::from_secs(10), &q).expect("row")["rows"][0].clone();
    assert_eq!(row["rps"], 1.0);
    assert_eq!(row["success_rate"], 0.9);
    assert_eq!(row["tcp_connections"], 3);
    assert_eq!(row["read_bytes_per_sec"], 120.0);
    // The services' view: web's proxy called books 8 times in those 10 s.
    let q = parse_query("services", Some("namespace=demo&name=books&window=10s")).expect("q");
    let row = stat(&state, &t, t0 + Duration::from_secs(10), &q).expect("row")["rows"][0].clone();
    assert_eq!(row["rps"], 0.8);
    assert_eq!(row["success_rate"], 0.875);
}
