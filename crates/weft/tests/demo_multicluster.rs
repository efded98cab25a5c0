//! `weft demo --multicluster --duration 20 --json`: two meshes on loopback, east linked to west,
//! east's traffic generator calling `web-west` through west's gateway. The summary keeps the
//! demo's schema and has the cross-cluster edge `traffic -> web-west`, secured by mTLS, and the
//! gateway's own edge to `web`; while it runs, west's `web` proxy counts east's calls under the
//! east caller's identity (the gateway forwards it in `l5d-client-id`, the sidecar trusts the
//! gateway), never under the gateway's, and once west's traffic policy admits only `web` at
//! ratings, ratings' proxy denies east's forwarded calls by that same identity.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{
    demo_edges, demo_exit_summary, eventually, http_get, metric_sum, set_pdeathsig, weft_bin,
    ChildProc, TempDir,
};

/// The identity `weft demo` gives a workload's proxy (both clusters derive it alike).
fn identity(namespace: &str, workload: &str) -> String {
    format!("{workload}.{namespace}.serviceaccount.identity.weft.cluster.local")
}

/// The proxy admin address the demo printed for `cluster`'s `workload`
/// (`weft demo: west: web running (proxy admin ADDR)`).
fn admin_of(stderr: &Path, cluster: &str, workload: &str) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(stderr).ok()?;
    let prefix = format!("weft demo: {cluster}: {workload} running (proxy admin ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.strip_suffix(')')?.parse().ok())
}

/// The sum of `name` samples with `labels` in the proxy's `/metrics`.
async fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    match http_get(admin, "/metrics").await {
        Ok((200, body)) => Some(metric_sum(&body, name, labels)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn multicluster_demo_calls_west_through_its_gateway_as_easts_client() {
    let tmp = TempDir::new("demo-multicluster");
    let mut cmd = tokio::process::Command::new(weft_bin());
    cmd.args([
        "demo",
        "--multicluster",
        "--duration",
        "20",
        "--traffic-policy-after",
        "3",
        "--json",
    ])
    .env(weft_testbed::mesh::ENV_WEFT_PROXY_BIN, support::proxy_bin());
    set_pdeathsig(&mut cmd);
    let mut demo = ChildProc::spawn("weft-demo", cmd, tmp.path());
    let stderr = tmp.path().join("weft-demo.stderr.log");

    let (traffic, gateway) = (
        identity("demo", "traffic"),
        identity("weft-multicluster", "weft-gateway"),
    );
    // East's traffic starts once the link is up: west's web then sees it, by east's identity.
    let web = eventually("west's web running", Duration::from_secs(60), || async {
        admin_of(&stderr, "west", "web")
    })
    .await;
    let ratings = admin_of(&stderr, "west", "ratings").expect("ratings starts before web");
    let inbound = |client| {
        [
            ("direction", "inbound"),
            ("tls", "true"),
            ("client_id", client),
        ]
    };
    let (from_traffic, from_gateway) = (inbound(traffic.as_str()), inbound(gateway.as_str()));
    let seen = eventually(
        "west's web proxy counts east's calls under east's traffic identity",
        Duration::from_secs(60),
        || async {
            metric(web, "request_total", &from_traffic)
                .await
                .filter(|n| *n >= 20.0)
        },
    )
    .await;
    let as_gateway = metric(web, "request_total", &from_gateway)
        .await
        .expect("web's /metrics");
    assert_eq!(
        as_gateway, 0.0,
        "every request the gateway forwards carries the caller's identity ({seen} by {traffic})"
    );
    // West's policy admits only web at ratings: east's traffic, forwarded, is refused by name.
    let denied = [("direction", "inbound"), ("client_id", traffic.as_str())];
    eventually(
        "west's ratings denies east's traffic by its forwarded identity",
        Duration::from_secs(30),
        || async {
            metric(ratings, "inbound_http_authz_deny_total", &denied)
                .await
                .filter(|n| *n > 0.0)
        },
    )
    .await;

    let summary = demo_exit_summary(&mut demo, "weft demo --multicluster").await;
    let edges = demo_edges(&summary);
    let edge = |src: &str, dst: &str| -> &Value {
        edges
            .iter()
            .find(|e| e["src"] == src && e["dst"] == dst)
            .unwrap_or_else(|| panic!("no {src} -> {dst} edge: {summary}"))
    };
    for (src, dst) in [("traffic", "web-west"), ("weft-gateway", "web")] {
        let e = edge(src, dst);
        assert!(e["requests"].as_u64() >= Some(50), "{e}");
        // web's own ~5 % failures come from ratings until the policy's retries.
        assert!(e["success_rate"].as_f64() >= Some(0.9), "{e}");
        assert_eq!(e["tls"], true, "{e}");
    }
    for key in ["edges", "routes", "proxies"] {
        assert!(summary[key].is_array(), "{key}: {summary}");
    }
    let proxies: Vec<&str> = summary["proxies"]
        .as_array()
        .expect("proxies")
        .iter()
        .filter_map(|p| p["workload"].as_str())
        .collect();
    assert_eq!(
        proxies,
        [
            "ratings",
            "books",
            "books-v2",
            "web",
            "weft-gateway",
            "traffic"
        ],
        "{summary}"
    );
}
