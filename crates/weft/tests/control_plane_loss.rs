//! Losing the control plane: with traffic flowing to an already resolved service, the control
//! plane is SIGKILLed and not one request may fail; it is then restarted on the same gRPC port
//! with the same store (registered workloads persist there), a new workload registers, and the
//! client proxy reconnects and sends it traffic.

mod support;

use std::time::Duration;

use support::load::{Load, MeshServer};
use support::{authority, service, write_docs, Control, ProxySpec, TempDir, SOON};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_survive_control_plane_loss_and_resync() {
    let tmp = TempDir::new("cp-loss");
    let store = tmp.subdir("store");
    write_docs(
        &store,
        "services.yaml",
        &[service("echo", "loss", 8080, "http")],
    );
    let mut control = Control::start(&store, tmp.path()).await;
    let grpc_addr = control.grpc;
    let target = authority("echo", 8080);

    let first = MeshServer::start(&control, tmp.path(), "loss-1", "loss").await;
    let client = ProxySpec::new("loss-client", grpc_addr)
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
        first.echo.requests.wait_for(20, SOON).await,
        "backend never served 20 requests: {:?}",
        load.report().failures
    );

    // The control plane dies; the resolved service keeps working on the last known state.
    control.kill().await;
    assert!(
        load.wait_more(150, SOON).await,
        "load stalled after the control plane died"
    );
    let during = load.report();
    assert!(
        during.failures.is_empty(),
        "requests failed while the control plane was down:\n{}",
        during
            .failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Readiness is about having connected once: a proxy stays ready without its control plane.
    client.wait_ready().await;

    // Same gRPC address, same store: proxies reconnect on their own.
    let control = Control::start_on(&store, tmp.path(), grpc_addr).await;
    let status = control.store_status().await;
    assert_eq!(
        status["workloads"].as_u64(),
        Some(1),
        "the registered workload should survive the restart: {status}"
    );
    let second = MeshServer::start(&control, tmp.path(), "loss-2", "loss").await;
    assert!(
        second
            .echo
            .requests
            .wait_for(20, Duration::from_secs(30))
            .await,
        "the client proxy never sent traffic to a workload registered after the restart; \
         client proxy stderr:\n{}",
        client.proc.stderr_tail(3000)
    );
    assert!(
        load.wait_more(50, SOON).await,
        "load stalled after the restart"
    );

    let report = load.stop().await;
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed; first failures:\n{}",
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
    assert!(
        first.echo.requests.get() > 20,
        "first backend served too little"
    );
}
