//! `GET /v1/routes` rows from snapshots recorded directly and from a real scrape's text.

use super::*;
use crate::documents::state_of;
use crate::telemetry::snapshot::Snapshot;
use crate::telemetry::stats::Le;
use crate::telemetry::Telemetry;
use std::net::SocketAddr;
use tokio::time::Instant;

const STATE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: demo}
spec: {selector: {app: ratings}, ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: books, namespace: demo}
spec: {selector: {app: books}, ports: [{port: 9090}]}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: web, namespace: demo}
spec: {workloadIPs: [{ip: 198.18.0.10}], ports: [{name: linkerd-admin, port: 4191}]}
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

fn route(service: &str, kind: &str, name: &str) -> RouteKey {
    RouteKey {
        namespace: "demo".into(),
        service: service.into(),
        port: if service == "books" { 9090 } else { 8080 },
        kind: kind.into(),
        route_namespace: if kind == "default" { "" } else { "demo" }.into(),
        name: name.into(),
    }
}

/// Cumulative figures: `requests` of which `ok` succeeded, all within 50 ms but `slow`.
fn stats(requests: f64, ok: f64, slow: f64) -> Stats {
    Stats {
        requests,
        successes: ok,
        buckets: [
            (Le(50.0), requests - slow),
            (Le(500.0), requests),
            (Le(f64::INFINITY), requests),
        ]
        .into_iter()
        .collect(),
        tls: false,
    }
}

/// A minute apart: web and other/client both use the ratings HTTPRoute; web also books'
/// default route.
fn scenario() -> (State, Telemetry, Instant) {
    let state = state_of(STATE);
    let t = Telemetry::new(Duration::from_secs(10));
    t.targets(&state);
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(60);
    let snap = |routes: Vec<(RouteKey, Stats)>| Snapshot {
        started: Some(1.0),
        routes,
        ..Snapshot::default()
    };
    let web = (key("demo", "web"), admin("198.18.0.10"));
    t.record(
        &web.0,
        web.1,
        t0,
        Ok(snap(vec![
            (route("books", "default", "grpc"), stats(0.0, 0.0, 0.0)),
            (
                route("ratings", "HTTPRoute", "ratings"),
                stats(0.0, 0.0, 0.0),
            ),
        ])),
    );
    t.record(
        &web.0,
        web.1,
        t1,
        Ok(snap(vec![
            (route("books", "default", "grpc"), stats(300.0, 300.0, 0.0)),
            (
                route("ratings", "HTTPRoute", "ratings"),
                stats(600.0, 597.0, 3.0),
            ),
        ])),
    );
    let client = (key("other", "client"), admin("198.18.1.10"));
    t.record(
        &client.0,
        client.1,
        t0,
        Ok(snap(vec![(
            route("ratings", "HTTPRoute", "ratings"),
            stats(0.0, 0.0, 0.0),
        )])),
    );
    t.record(
        &client.0,
        client.1,
        t1,
        Ok(snap(vec![(
            route("ratings", "HTTPRoute", "ratings"),
            stats(400.0, 399.0, 97.0),
        )])),
    );
    (state, t, t1)
}

fn rows(query: &str) -> Vec<Value> {
    let (state, t, now) = scenario();
    let q = parse_query(Some(query)).expect("query");
    let statuses = t.statuses(&state, now, q.window, |_| true);
    routes(&state, &statuses, Source::ControlPlane, &q).expect("rows")["rows"]
        .as_array()
        .expect("rows")
        .clone()
}

#[test]
fn a_route_sums_what_every_client_sent_on_it() {
    let rows = rows("namespace=demo&service=ratings&window=1m");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0],
        json!({"namespace": "demo", "service": "ratings", "port": 8080, "route": "ratings",
               "route_kind": "HTTPRoute", "route_namespace": "demo", "route_name": "ratings",
               "requests": 1000, "success_rate": 0.996, "rps": rows[0]["rps"],
               "latency_ms_p50": 50.0, "latency_ms_p95": 500.0, "latency_ms_p99": 500.0,
               "window_secs": 60.0, "stale": false, "error": null,
               "source": "control-plane"})
    );
    assert!((rows[0]["rps"].as_f64().unwrap() - 1000.0 / 60.0).abs() < 1e-9);
}

#[test]
fn a_service_without_routes_shows_its_default_route() {
    let rows = rows("namespace=demo&service=books");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["route"], "[default]");
    assert_eq!(
        (rows[0]["route_kind"].clone(), rows[0]["route_name"].clone()),
        (json!("default"), json!("grpc"))
    );
    assert_eq!(rows[0]["success_rate"], 1.0);
    assert_eq!(self::rows("namespace=demo").len(), 2);
}

#[test]
fn a_real_scrape_makes_route_rows() {
    let state = state_of(STATE);
    let t = Telemetry::new(Duration::from_secs(10));
    t.targets(&state);
    let web = key("demo", "web");
    let t0 = Instant::now();
    t.record(&web, admin("198.18.0.10"), t0, Ok(Snapshot::default()));
    let text = crate::telemetry::snapshot::tests::WEB_PROXY;
    t.record(
        &web,
        admin("198.18.0.10"),
        t0 + Duration::from_secs(10),
        Ok(Snapshot::from_text(text)),
    );
    let q = parse_query(Some("namespace=demo&service=books&window=10s")).expect("q");
    let statuses = t.statuses(&state, t0 + Duration::from_secs(10), q.window, |_| true);
    let v = routes(&state, &statuses, Source::ControlPlane, &q).expect("rows");
    let row = &v["rows"][0];
    assert_eq!(row["route"], "[default]");
    assert_eq!(row["requests"], 8);
    assert_eq!(row["rps"], 0.8);
    // The fixture has no route histogram: no latency rather than a made-up one.
    assert_eq!(row["latency_ms_p50"], Value::Null);
}

#[test]
fn unknown_services_and_bad_queries() {
    let (state, t, now) = scenario();
    let q = parse_query(Some("namespace=other&service=ratings")).expect("query");
    assert_eq!(
        routes(
            &state,
            &t.statuses(&state, now, q.window, |_| true),
            Source::ControlPlane,
            &q
        )
        .expect_err("404"),
        "no service other/ratings"
    );
    assert_eq!(
        parse_query(Some("service=ratings")),
        Err("service needs namespace".to_string())
    );
    assert_eq!(
        parse_query(Some("name=ratings")),
        Err("unknown query parameter \"name\": expected namespace, service or window".to_string())
    );
    assert_eq!(
        parse_query(Some("window=2h")),
        Err("window: must be between 10s and 1h, got 2h".to_string())
    );
}

#[test]
fn prometheus_windows_make_route_rows_with_their_source() {
    use crate::telemetry::prometheus_windows::{fold, tests as recorded};
    let state = recorded::state();
    let statuses = fold(&state, recorded::WINDOW, recorded::recorded());
    let q = parse_query(Some("namespace=demo&window=30s")).expect("query");
    let v = routes(&state, &statuses, Source::Prometheus, &q).expect("rows");
    let rows = v["rows"].as_array().expect("rows");
    let ratings = rows
        .iter()
        .find(|r| r["service"] == "ratings" && r["route"] == "ratings")
        .expect("ratings' HTTPRoute");
    // web's 200s and traffic's 403s (a 4xx is not a failure), over 30 s.
    assert!(ratings["requests"].as_u64().unwrap() > 500, "{ratings}");
    assert_eq!(ratings["success_rate"], 1.0);
    assert_eq!(ratings["latency_ms_p50"], 50.0);
    assert_eq!(ratings["source"], "prometheus");
    let books = rows
        .iter()
        .find(|r| r["service"] == "books" && r["route_kind"] == "GRPCRoute")
        .expect("books' canary route");
    assert!(books["rps"].as_f64().unwrap() > 10.0, "{books}");
}
