//! Endpoint churn under load: while a client sends a steady stream of HTTP/1.1 and h2c requests
//! through its proxy, backend workloads are registered and deregistered one after another (a new
//! one is registered and seen serving before the old one is deregistered, and the old one is only
//! stopped once it no longer receives traffic). Not one request may fail.

mod support;

use std::time::Duration;

use support::load::{Load, MeshServer};
use support::{authority, service, write_docs, Control, ProxySpec, TempDir, SOON};

const ROTATIONS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_under_load_loses_no_request() {
    let tmp = TempDir::new("churn");
    let store = tmp.subdir("store");
    write_docs(
        &store,
        "services.yaml",
        &[service("echo", "churn", 8080, "http")],
    );
    let control = Control::start(&store, tmp.path()).await;
    let target = authority("echo", 8080);

    let mut current = MeshServer::start(&control, tmp.path(), "churn-0", "churn").await;
    let client = ProxySpec::new("churn-client", control.grpc)
        .upstreams(std::slice::from_ref(&target))
        .spawn(tmp.path())
        .await;
    let load = Load::start(
        client.outbound,
        client.upstream_addr(&target),
        &target,
        Duration::from_millis(20),
        Duration::from_secs(40),
    );
    assert!(
        current.echo.requests.wait_for(20, SOON).await,
        "first backend never served 20 requests: {:?}",
        load.report().failures
    );

    for i in 1..=ROTATIONS {
        let next = MeshServer::start(&control, tmp.path(), &format!("churn-{i}"), "churn").await;
        assert!(
            next.echo.requests.wait_for(5, SOON).await,
            "churn-{i} registered but the client proxy never sent it traffic"
        );
        control.deregister("default", &current.name).await;
        // Stop the old one only after the client proxy stopped using it: its count holds
        // still while the new one serves 30 more requests.
        let mut quiet = false;
        for _ in 0..20 {
            let old = current.echo.requests.get();
            let new_target = next.echo.requests.get() + 30;
            assert!(
                next.echo.requests.wait_for(new_target, SOON).await,
                "churn-{i} stopped receiving traffic"
            );
            if current.echo.requests.get() == old {
                quiet = true;
                break;
            }
        }
        assert!(
            quiet,
            "{} still receives traffic after deregistration",
            current.name
        );
        drop(std::mem::replace(&mut current, next));
    }
    // Traffic keeps flowing to the last one after the final stop of its predecessor.
    assert!(load.wait_more(50, SOON).await, "load stalled after churn");

    let report = load.stop().await;
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed during churn; first failures:\n{}",
        report.failures.len(),
        report.ok + report.failures.len() as u64,
        report
            .failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(report.ok >= 200, "only {} requests completed", report.ok);
}
