//! `weft demo --duration 8 --json`: the demo app comes up meshed, traffic flows on at least three
//! edges, and the JSON summary reports every edge with requests and a plausible success rate.

mod support;

use std::time::Duration;

use support::{demo_edges, set_pdeathsig, summary, weft_bin, ChildProc, TempDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_reports_edges_with_traffic() {
    let tmp = TempDir::new("demo");
    let mut cmd = tokio::process::Command::new(weft_bin());
    cmd.args(["demo", "--duration", "8", "--json"])
        .env(weft_testbed::mesh::ENV_WEFT_PROXY_BIN, support::proxy_bin());
    set_pdeathsig(&mut cmd);
    let mut demo = ChildProc::spawn("weft-demo", cmd, tmp.path());
    let status = demo.wait(Duration::from_secs(90)).await.unwrap_or_else(|| {
        panic!(
            "weft demo did not exit within 90 s:\n{}",
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
    demo_edges(&summary);
}
