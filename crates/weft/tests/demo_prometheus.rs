//! `weft demo --prometheus`: a real Prometheus (Debian's `prometheus`) scrapes every demo proxy
//! through the targets file the demo's control plane writes, and `weft stat` against that control
//! plane answers from Prometheus (PromQL), with traffic on web, books and ratings. When the demo
//! stops, so does its Prometheus. Every PromQL expression of the Grafana dashboards in `grafana/`
//! (panels and variable queries) returns data from that Prometheus once the demo's policy is in
//! force. Without the prometheus program the test is skipped locally and fails under `CI=true`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::{
    eventually, free_port, set_pdeathsig, skip_or_fail, weft_bin, which, ChildProc, TempDir,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The demo's workloads, each with a sidecar Prometheus must scrape.
const WORKLOADS: [&str; 5] = ["books", "books-v2", "ratings", "traffic", "web"];

/// `GET path` on `addr` (HTTP/1.0, the connection closes after the answer): the JSON body of a
/// 200, else `None`.
async fn get_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    serde_json::from_str(body).ok()
}

/// Prometheus's targets when every demo workload is one of them, up and labelled.
async fn every_proxy_up(prometheus: SocketAddr) -> Option<Vec<Value>> {
    let answer = get_json(prometheus, "/api/v1/targets").await?;
    let targets = answer["data"]["activeTargets"].as_array()?.clone();
    let up = |name: &str| {
        targets.iter().any(|t| {
            t["labels"]["namespace"] == "demo"
                && t["labels"]["workload"] == name
                && t["labels"]["control_plane_ns"] == "weft"
                && t["health"] == "up"
        })
    };
    WORKLOADS.iter().all(|name| up(name)).then_some(targets)
}

/// `weft stat workloads -n demo --window 10s -o json` when web, books and ratings have traffic.
async fn stat_rows_with_traffic(api: &str) -> Option<Vec<Value>> {
    let out = tokio::process::Command::new(weft_bin())
        .args([
            "stat",
            "workloads",
            "-n",
            "demo",
            "--window",
            "10s",
            "-o",
            "json",
        ])
        .args(["--api-addr", api])
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
    let busy = |name: &str| {
        rows.iter().any(|r| {
            r["name"] == name
                && r["source"] == "prometheus"
                && r["rps"].as_f64().unwrap_or(0.0) > 1.0
                && r["success_rate"].as_f64().unwrap_or(0.0) >= 0.9
                && r["latency_ms_p50"].as_f64().is_some()
        })
    };
    ["web", "books", "ratings"]
        .iter()
        .all(|name| busy(name))
        .then_some(rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prometheus_scrapes_every_proxy_and_stat_answers_from_it() {
    if which("prometheus").is_none() {
        skip_or_fail("needs the prometheus program (Debian package prometheus)");
        return;
    }
    let tmp = TempDir::new("demo-prometheus");
    let api = format!("127.0.0.1:{}", free_port());
    let prometheus: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut cmd = tokio::process::Command::new(weft_bin());
    cmd.args(["demo", "--duration", "50", "--rps", "20", "--json"])
        // The policy (retries, canary, ratings' authorization) gives the route and authorization
        // dashboards their series.
        .args(["--traffic-policy-after", "3"])
        .args(["--api-addr", &api])
        .args(["--prometheus", "--prometheus-addr", &prometheus.to_string()])
        .env(weft_testbed::mesh::ENV_WEFT_PROXY_BIN, support::proxy_bin());
    set_pdeathsig(&mut cmd);
    let mut demo = ChildProc::spawn("weft-demo", cmd, tmp.path());

    // Prometheus found every sidecar in the control plane's targets file and scrapes it.
    let targets = eventually(
        "Prometheus scrapes every demo proxy",
        Duration::from_secs(30),
        || every_proxy_up(prometheus),
    )
    .await;
    assert_eq!(
        targets.len(),
        WORKLOADS.len(),
        "one target per workload: {targets:?}"
    );
    // The demo says where its Prometheus is.
    assert!(
        demo.stderr_tail(8000)
            .contains(&format!("Prometheus on http://{prometheus}")),
        "{}",
        demo.stderr_tail(8000)
    );

    // weft stat, through the control plane, answers from Prometheus with real traffic.
    let rows = eventually(
        "weft stat answers from Prometheus with traffic",
        Duration::from_secs(30),
        || stat_rows_with_traffic(&api),
    )
    .await;
    for row in &rows {
        assert_eq!(row["meshed"], 1, "{row}");
        assert_eq!(
            row["stale"], false,
            "every proxy is up in Prometheus: {row}"
        );
        assert_eq!(row["source"], "prometheus", "{row}");
    }
    // The same figures Prometheus computes from its own series (the answer is PromQL's).
    let web_rps = get_json(
        prometheus,
        "/api/v1/query?query=sum(rate(response_total%7Bdirection%3D%22inbound%22%2Cworkload%3D%22web%22%7D%5B10s%5D))",
    )
    .await
    .and_then(|v| v["data"]["result"][0]["value"][1].as_str()?.parse::<f64>().ok())
    .expect("web's inbound rate from Prometheus");
    assert!(web_rps > 1.0, "web's rate in Prometheus: {web_rps}");

    // Every expression of every shipped dashboard answers data.
    let expressions = dashboard_expressions();
    assert!(expressions.len() > 40, "{} expressions", expressions.len());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let failing = loop {
        let mut failing = Vec::new();
        for (place, expr) in &expressions {
            if !returns_data(prometheus, expr).await {
                failing.push(format!("{place}: {expr}"));
            }
        }
        if failing.is_empty() || tokio::time::Instant::now() >= deadline {
            break failing;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert!(
        failing.is_empty(),
        "dashboard expressions without data after 40 s: {failing:#?}"
    );

    // weft edges and weft routes answer from the same Prometheus: every demo edge over mTLS
    // with both identities, and the policy's routes with their traffic.
    let api_addr: SocketAddr = api.parse().expect("api addr");
    let edges = eventually(
        "/v1/edges answers from Prometheus with the demo's edges",
        Duration::from_secs(30),
        || async {
            let v = get_json(api_addr, "/v1/edges?namespace=demo&window=30s").await?;
            let rows = v["rows"].as_array()?.clone();
            let edge = |src: &str, dst: &str| {
                rows.iter().any(|r| {
                    r["src"] == src
                        && r["dst"] == dst
                        && r["secured"] == true
                        && r["client_id"].is_string()
                        && r["server_id"].is_string()
                        && r["rps"].as_f64().unwrap_or(0.0) > 0.0
                })
            };
            (edge("traffic", "web") && edge("web", "books") && edge("web", "ratings"))
                .then_some(rows)
        },
    )
    .await;
    assert!(
        edges.iter().all(|r| r["source"] == "prometheus"),
        "{edges:#?}"
    );
    let routes = eventually(
        "/v1/routes answers from Prometheus with ratings' route",
        Duration::from_secs(30),
        || async {
            let v = get_json(
                api_addr,
                "/v1/routes?namespace=demo&service=ratings&window=30s",
            )
            .await?;
            let rows = v["rows"].as_array()?.clone();
            rows.iter()
                .any(|r| {
                    r["route"] == "ratings"
                        && r["source"] == "prometheus"
                        && r["rps"].as_f64().unwrap_or(0.0) > 1.0
                })
                .then_some(rows)
        },
    )
    .await;
    assert!(!routes.is_empty());

    let status = demo.wait(Duration::from_secs(90)).await.unwrap_or_else(|| {
        panic!(
            "weft demo did not exit within 90 s:\n{}",
            demo.stderr_tail(4000)
        )
    });
    assert!(
        status.success(),
        "weft demo exited with {status}:\n{}",
        demo.stderr_tail(4000)
    );
    // Its Prometheus went with it.
    eventually(
        "Prometheus stops with the demo",
        Duration::from_secs(10),
        || async {
            tokio::net::TcpStream::connect(prometheus)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
}

/// The dashboards' variables as the test sets them: the demo's namespace, web (a client of every
/// route and a server of traffic), every workload for "All"; Grafana's rate interval.
fn substitute(dashboard: &str, expr: &str) -> String {
    let workload = if dashboard == "weft-authorization" {
        ".*"
    } else {
        "web"
    };
    expr.replace("$__rate_interval", "30s")
        .replace("$namespace", "demo")
        .replace("$workload", workload)
}

/// `(dashboard / panel, PromQL)` of every panel target and every `label_values(SELECTOR,
/// LABEL)` variable query (asked as `count by (LABEL) (SELECTOR)`) of `grafana/*.json`.
fn dashboard_expressions() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../grafana");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("dashboard");
        let dash: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let uid = dash["uid"].as_str().expect("uid").to_string();
        for panel in dash["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("expr");
                let place = format!("{uid} / {}", panel["title"].as_str().unwrap_or("?"));
                out.push((place, substitute(&uid, expr)));
            }
        }
        for var in dash["templating"]["list"].as_array().expect("templating") {
            if var["type"] != "query" {
                continue;
            }
            let query = var["query"]["query"].as_str().expect("variable query");
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{uid}: unexpected variable query {query}"));
            let (selector, label) = inner.rsplit_once(", ").expect("label_values(SEL, LABEL)");
            let place = format!("{uid} / variable {}", var["name"]);
            let expr = format!("count by ({label}) ({selector})");
            out.push((place, substitute(&uid, &expr)));
        }
    }
    out
}

/// Whether an instant query of `expr` succeeds with at least one finite value.
async fn returns_data(prometheus: SocketAddr, expr: &str) -> bool {
    let path = format!("/api/v1/query?query={}", percent_encode(expr));
    let Some(answer) = get_json(prometheus, &path).await else {
        return false;
    };
    answer["status"] == "success"
        && answer["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
            .any(f64::is_finite)
}

/// A query string value: every byte but RFC 3986's unreserved ones as `%XX`.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
