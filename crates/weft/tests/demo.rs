//! `weft demo --json` with its traffic policy applied after 3 s: the demo app comes up meshed,
//! traffic flows on every edge, the JSON summary reports every edge with requests and a
//! plausible success rate, and the policy works: ratings' ~5 % failures are retried away on its
//! route (while the per-attempt edge still shows them), and books-v2 takes ~10 % of books' calls.

mod support;

use std::time::Duration;

use support::{demo_edges, set_pdeathsig, summary, weft_bin, ChildProc, TempDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_reports_edges_with_traffic() {
    let tmp = TempDir::new("demo");
    let mut cmd = tokio::process::Command::new(weft_bin());
    cmd.args([
        "demo",
        "--duration",
        "25",
        "--traffic-policy-after",
        "3",
        "--rps",
        "50",
        "--json",
    ])
    .env(weft_testbed::mesh::ENV_WEFT_PROXY_BIN, support::proxy_bin());
    set_pdeathsig(&mut cmd);
    let mut demo = ChildProc::spawn("weft-demo", cmd, tmp.path());
    let status = demo
        .wait(Duration::from_secs(120))
        .await
        .unwrap_or_else(|| {
            panic!(
                "weft demo did not exit within 120 s:\n{}",
                demo.stderr_tail(4000)
            )
        });
    let mut stdout = String::new();
    // The pipe reader ends at EOF; take everything it forwarded.
    while let Ok(Some(line)) =
        tokio::time::timeout(Duration::from_secs(5), demo.stdout_lines.recv()).await
    {
        stdout += &line;
        stdout.push('\n');
    }
    assert!(
        status.success(),
        "weft demo exited with {status}; stdout:\n{stdout}\nstderr:\n{}",
        demo.stderr_tail(4000)
    );
    let summary =
        summary(&stdout).unwrap_or_else(|| panic!("no JSON summary on stdout:\n{stdout}"));
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

    // The canary: 10 % of books' calls since the policy (3 s of 25 with none before).
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
