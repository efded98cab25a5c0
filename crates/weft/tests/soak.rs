//! The soak's short version (root only; skipped locally without root, failing under `CI=true`):
//! the same code `bench/soak` runs (`bench/src/reliability/soak.rs`), for one minute at 100
//! req/s on the debug binaries, with every fault at least once — the control plane killed and
//! restarted, certificates of a 15 s lifetime renewed (every ~10 s), the trust anchor rotated
//! through all three stages, endpoints churning every second. Not one idempotent request may
//! fail, no opaque byte may come back wrong, and no process's RSS or descriptors may grow past
//! the soak's leak bound between the end of its second 15 s interval and the end.

mod support;

use bench::reliability::soak;
use weft_testbed::{require_root, serial, HostState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_fails_no_idempotent_request_and_leaks_nothing() {
    let _serial = serial();
    let Some(root) = require_root(&["curl"]) else {
        return;
    };
    let host = HostState::capture().expect("host state");
    let args = soak::Args {
        minutes: 1.0,
        rate: 100.0,
        json: None,
        interval: 15.0,
        cert_lifetime: "15s".into(),
        pool: 3,
        nodes: 3,
        weft: support::weft_bin(),
        proxy: support::proxy_bin(),
    };
    let report = soak::run(root, &args, |i| eprintln!("{}", soak::interval_line(i)))
        .await
        .expect("the soak ran");
    let summary = soak::summary(&report);
    eprintln!("{summary}");

    // Every fault kind happened.
    assert!(
        report.cp_restarts >= 1,
        "no control-plane restart\n{summary}"
    );
    assert!(report.renewals() >= 2, "fewer than two renewals\n{summary}");
    assert_eq!(
        report.rotation,
        ["bundle", "issue", "retire"],
        "the trust anchor did not rotate fully\n{summary}"
    );
    let last = report.intervals.last().expect("intervals");
    assert!(
        last.churn.registrations >= 20 && last.churn.deregistrations >= 20,
        "endpoints did not churn\n{summary}"
    );
    // Traffic of every kind flowed, and the opaque stream carried checked bytes.
    let totals = report.totals();
    for (kind, c) in &totals {
        assert!(c.ok >= 50, "{}: only {} ok\n{summary}", kind.name(), c.ok);
    }
    assert_eq!(totals.len(), 5, "{summary}");
    assert!(last.tcp_verified > 100 * 1024, "{summary}");

    assert_eq!(report.failed_idempotent(), 0, "{summary}");
    assert!(report.problems.is_empty(), "{summary}");
    host.assert_unchanged();
}
