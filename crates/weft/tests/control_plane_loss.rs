//! Losing the control plane: with traffic flowing to an already resolved service, the control
//! plane is SIGKILLed and not one request may fail; it is then restarted on the same gRPC port
//! with the same store (registered workloads persist there), a new workload registers, and the
//! client proxy reconnects and sends it traffic.

mod support;

use std::time::Duration;

use support::load::{LoadedMesh, MeshServer};
use support::{Control, SOON};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_survive_control_plane_loss_and_resync() {
    let mut mesh = LoadedMesh::start("cp-loss", "loss", "loss-1").await;
    let grpc_addr = mesh.control.grpc;

    // The control plane dies; the resolved service keeps working on the last known state.
    mesh.control.kill().await;
    let (first, client, load, store, tmp) = (
        &mesh.first,
        &mesh.client,
        &mesh.load,
        &mesh.store,
        &mesh.tmp,
    );
    assert!(
        load.wait_more(150, SOON).await,
        "load stalled after the control plane died"
    );
    let during = load.report();
    assert!(
        during.failures.is_empty(),
        "requests failed while the control plane was down:\n{}",
        during.first_failures(10)
    );
    // Readiness is about having connected once: a proxy stays ready without its control plane.
    client.wait_ready().await;

    // Same gRPC address, same store: proxies reconnect on their own.
    let control = Control::start_on(store, tmp.path(), grpc_addr).await;
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

    let report = mesh.load.stop().await;
    report.assert_no_failures("");
    assert!(
        first.echo.requests.get() > 20,
        "first backend served too little"
    );
}
