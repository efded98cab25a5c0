//! Endpoint churn under load: while a client sends a steady stream of HTTP/1.1 and h2c requests
//! through its proxy, backend workloads are registered and deregistered one after another (a new
//! one is registered and seen serving before the old one is deregistered, and the old one is only
//! stopped once it no longer receives traffic). Not one request may fail.

mod support;

use support::load::{LoadedMesh, MeshServer};
use support::SOON;

const ROTATIONS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_under_load_loses_no_request() {
    let mesh = LoadedMesh::start("churn", "churn", "churn-0").await;
    let (control, load, tmp) = (&mesh.control, &mesh.load, &mesh.tmp);
    let mut current = mesh.first;

    for i in 1..=ROTATIONS {
        let next = MeshServer::start(control, tmp.path(), &format!("churn-{i}"), "churn").await;
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

    let report = mesh.load.stop().await;
    report.assert_no_failures(" during churn");
    assert!(report.ok >= 200, "only {} requests completed", report.ok);
}
