//! `weft demo --json` with its traffic policy applied after 3 s: the demo app comes up meshed,
//! traffic flows on every edge, the JSON summary reports every edge with requests and a
//! plausible success rate, and the policy works: ratings' ~5 % failures are retried away on its
//! route (while the per-attempt edge still shows them), and books-v2 takes ~10 % of books' calls.
//! While it runs, `weft stat` against the demo's control plane shows the same traffic from the
//! telemetry the control plane scrapes, `weft edges` shows web's calls secured by mTLS with both
//! identities, `weft routes` shows the ratings route the policy added, and `weft tap` streams
//! live requests from the proxies' tap servers through the control plane (mTLS both ways, with
//! the control plane's tap identity): books' inbound gRPC calls from web's identity, and web's
//! outbound calls filtered to books in web's proxy.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{
    demo_edges, demo_exit_summary, eventually, free_port, set_pdeathsig, weft_bin, ChildProc,
    TempDir,
};

/// `weft tap ARGS -o json --api-addr API` (it ends after its `--limit`): the events.
async fn tap_events(api: &str, args: &[&str]) -> Vec<Value> {
    let args = [args, &["-o", "json"]].concat();
    let run = weft(api, "tap", &args);
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap_or_else(|_| panic!("weft tap {args:?} did not end within 20 s"))
        .unwrap_or_else(|e| panic!("weft tap {args:?}: {e}"));
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `weft stat ARGS --api-addr API`: stdout, or the failure with stderr.
async fn weft_stat(api: &str, args: &[&str]) -> Result<String, String> {
    weft(api, "stat", args).await
}

/// `weft COMMAND ARGS --api-addr API`: stdout, or the failure with stderr.
async fn weft(api: &str, command: &str, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(weft_bin())
        .arg(command)
        .args(args)
        .args(["--api-addr", api])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The rows of `weft stat KIND -n demo --window 10s -o json` with traffic on every `names`.
async fn rows_with_traffic(api: &str, kind: &str, names: &[&str]) -> Option<Vec<Value>> {
    let out = weft_stat(api, &[kind, "-n", "demo", "--window", "10s", "-o", "json"])
        .await
        .ok()?;
    let rows: Vec<Value> = serde_json::from_str(&out).ok()?;
    let busy = |name: &str| {
        rows.iter().any(|r| {
            r["name"] == name
                && r["rps"].as_f64().unwrap_or(0.0) > 1.0
                && r["success_rate"].as_f64().unwrap_or(0.0) >= 0.9
                && r["latency_ms_p50"].as_f64().is_some()
        })
    };
    names.iter().all(|n| busy(n)).then_some(rows)
}

/// The identity `weft demo` gives a workload's proxy.
fn identity(workload: &str) -> String {
    format!("{workload}.demo.serviceaccount.identity.weft.cluster.local")
}

/// `weft edges -n demo -o json` once web's calls to books and ratings are secured with both
/// identities: web's as books' and ratings' proxies recorded it, theirs as web's verified it.
async fn secured_edges(api: &str) -> Option<Vec<Value>> {
    let out = weft(
        api,
        "edges",
        &["-n", "demo", "--window", "10s", "-o", "json"],
    )
    .await
    .ok()?;
    let rows: Vec<Value> = serde_json::from_str(&out).ok()?;
    let secured = |dst: &str| {
        rows.iter().any(|r| {
            r["src"] == "web"
                && r["dst"] == dst
                && r["src_namespace"] == "demo"
                && r["dst_namespace"] == "demo"
                && r["secured"] == true
                && r["client_id"] == identity("web").as_str()
                && r["server_id"] == identity(dst).as_str()
                && r["requests"].as_u64().unwrap_or(0) > 0
        })
    };
    (secured("books") && secured("ratings")).then_some(rows)
}

/// `weft routes svc/ratings -n demo -o json` once the policy's ratings route has requests.
async fn ratings_route(api: &str) -> Option<Value> {
    let out = weft(
        api,
        "routes",
        &["svc/ratings", "-n", "demo", "--window", "10s", "-o", "json"],
    )
    .await
    .ok()?;
    let rows: Vec<Value> = serde_json::from_str(&out).ok()?;
    rows.into_iter().find(|r| {
        r["route"] == "ratings"
            && r["route_kind"] == "HTTPRoute"
            && r["service"] == "ratings"
            && r["requests"].as_u64().unwrap_or(0) > 0
            && r["success_rate"].as_f64().is_some()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_reports_edges_with_traffic() {
    let tmp = TempDir::new("demo");
    let api = format!("127.0.0.1:{}", free_port());
    let mut cmd = tokio::process::Command::new(weft_bin());
    cmd.args([
        "demo",
        "--duration",
        "30",
        "--traffic-policy-after",
        "3",
        "--rps",
        "50",
        "--json",
        "--api-addr",
        &api,
    ])
    .env(weft_testbed::mesh::ENV_WEFT_PROXY_BIN, support::proxy_bin());
    set_pdeathsig(&mut cmd);
    let mut demo = ChildProc::spawn("weft-demo", cmd, tmp.path());

    // `weft stat` meets the demo's control plane: every serving workload has traffic, meshed.
    let workloads = eventually("weft stat shows traffic", Duration::from_secs(25), || {
        rows_with_traffic(&api, "workloads", &["web", "books", "ratings"])
    })
    .await;
    for row in &workloads {
        assert_eq!(row["meshed"], 1, "every demo workload has a proxy: {row}");
        assert_eq!(row["stale"], false, "{row}");
    }
    // Services: what meshed clients (web) sent them.
    eventually("weft stat services", Duration::from_secs(10), || {
        rows_with_traffic(&api, "svc", &["books", "ratings"])
    })
    .await;
    // Edges: web's calls are mTLS, with identities checked at both ends.
    let edges = eventually("weft edges secured", Duration::from_secs(10), || {
        secured_edges(&api)
    })
    .await;
    assert!(
        edges.iter().all(|e| e["secured"] == true),
        "every demo edge is mTLS: {edges:?}"
    );
    // Routes: the traffic policy's ratings route took requests.
    let route = eventually("weft routes svc/ratings", Duration::from_secs(10), || {
        ratings_route(&api)
    })
    .await;
    assert!(
        route["latency_ms_p50"].as_f64().is_some(),
        "a route with requests has a latency bound: {route}"
    );
    // Tap: books' proxy streams its inbound requests, from web's verified identity.
    let events = tap_events(&api, &["demo/books", "--limit", "3"]).await;
    let web_id = "web.demo.serviceaccount.identity.weft.cluster.local";
    let inits: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "request_init")
        .collect();
    assert_eq!(inits.len(), 3, "{events:#?}");
    for init in &inits {
        assert_eq!(init["direction"], "inbound", "{init}");
        assert_eq!(init["source_meta"]["tls"], "true", "{init}");
        assert_eq!(init["source_meta"]["client_id"], web_id, "{init}");
        assert_eq!(init["method"], "POST", "gRPC: {init}");
        let id = &init["id"];
        let end = events
            .iter()
            .find(|e| e["type"] == "response_end" && &e["id"] == id)
            .unwrap_or_else(|| panic!("no response_end for {id}: {events:#?}"));
        assert_eq!(end["grpc_status"], 0, "{end}");
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "response_init" && &e["id"] == id && e["status"] == 200),
            "no 200 response_init for {id}: {events:#?}"
        );
    }
    // Web's proxy, its outbound calls to books only (the match runs in the proxy).
    let events = tap_events(&api, &["demo/web", "--to", "demo/books", "--limit", "2"]).await;
    let inits: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "request_init")
        .collect();
    assert_eq!(inits.len(), 2, "{events:#?}");
    for init in inits {
        assert_eq!(init["direction"], "outbound", "{init}");
        assert_eq!(
            init["destination_meta"]["external_workload"], "books",
            "{init}"
        );
        assert_eq!(
            init["destination_meta"]["server_id"],
            "books.demo.serviceaccount.identity.weft.cluster.local",
            "{init}"
        );
    }
    let table = weft_stat(&api, &["wl", "-n", "demo", "-o", "wide"])
        .await
        .expect("weft stat table");
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header[..4], ["NAME", "MESHED", "SUCCESS", "RPS"], "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("1/1") && l.contains("rps")),
        "{table}"
    );
    let summary = demo_exit_summary(&mut demo, "weft demo").await;
    let edges = demo_edges(&summary);
    let edge = |dst: &str| {
        edges
            .iter()
            .find(|e| e["src"] == "web" && e["dst"] == dst)
            .unwrap_or_else(|| panic!("no web -> {dst} edge: {summary}"))
    };
    let route = |service: &str, name: &str| {
        summary["routes"]
            .as_array()
            .and_then(|routes| {
                routes
                    .iter()
                    .find(|r| r["src"] == "web" && r["service"] == service && r["route"] == name)
            })
            .unwrap_or_else(|| panic!("no web -> {service} [{name}] route: {summary}"))
    };

    // Retries: the ratings route (after retries) succeeds where the attempts failed ~5 %.
    let retried = route("ratings", "ratings");
    assert!(
        retried["requests"].as_u64().unwrap_or(0) >= 300,
        "{retried}"
    );
    let success = retried["success_rate"].as_f64().unwrap_or(0.0);
    assert!(
        success >= 0.995,
        "ratings route success {success}: {retried}"
    );
    let attempts = edge("ratings")["success_rate"].as_f64().unwrap_or(1.0);
    assert!(
        attempts < 0.99,
        "the attempts to ratings show no failures ({attempts}): were any retried? {summary}"
    );

    // The canary: 10 % of books' calls since the policy (3 s of 30 with none before).
    let calls = |dst: &str| edge(dst)["requests"].as_f64().unwrap_or(0.0);
    let share = calls("books-v2") / (calls("books") + calls("books-v2"));
    assert!(
        (0.04..=0.15).contains(&share),
        "books-v2 took {:.1} % of books' calls: {summary}",
        share * 100.0
    );
    assert_eq!(
        route("books", "books-canary")["success_rate"],
        1.0,
        "{summary}"
    );
}
