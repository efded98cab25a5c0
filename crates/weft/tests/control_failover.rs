//! Control-plane replicas behind a proxy fleet: two `weft control` processes share one store
//! directory and one CA (`--identity-dir`); every sidecar lists both
//! (`WEFT_PROXY_DESTINATION_SVC_ADDR=A,B`, TLS as the control plane's identity, `Identity.Certify`
//! over the same list). Under steady HTTP/1.1 and h2c load, replica A is SIGKILLed: not one
//! request fails, and a workload registered afterwards through B (its sidecar certified by B, A
//! still listed first and dead) shows up in the client's balancer, whose discovery failed over
//! to B.

#[path = "support/mtls_mesh.rs"]
mod mtls_mesh;
mod support;

use std::time::Duration;

use mtls_mesh::{control_identity, ControlOpts, IdentitySource};
use support::apps::EchoServer;
use support::load::Load;
use support::{authority, service, write_docs, ProxySpec, TempDir, SOON};
use weft_proxy::config;

/// The variables that point a sidecar at both replicas, over TLS.
fn both(spec: ProxySpec, replicas: &str) -> ProxySpec {
    spec.env(config::ENV_DESTINATION_SVC_ADDR, replicas)
        .env(config::ENV_DESTINATION_SVC_NAME, &control_identity())
        .env(config::ENV_IDENTITY_SVC_ADDR, replicas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_under_load_fails_no_request_and_discovery_moves_on() {
    let tmp = TempDir::new("control-failover");
    let store = tmp.subdir("store");
    let ca = tmp.subdir("ca");
    mtls_mesh::init_ca(&ca).await;
    write_docs(
        &store,
        "services.yaml",
        &[service("echo", "fo", 8080, "http")],
    );
    let opts = |name| ControlOpts {
        identity_dir: Some(&ca),
        name,
        ..Default::default()
    };
    let a = mtls_mesh::start_control(&store, tmp.path(), opts("a")).await;
    let b = mtls_mesh::start_control(&store, tmp.path(), opts("b")).await;
    let replicas = format!("{},{}", a.grpc, b.grpc);
    let anchors = mtls_mesh::trust_anchors(&a).await;
    assert_eq!(anchors, mtls_mesh::trust_anchors(&b).await, "one CA");
    let (id_a, id_b) = (
        IdentitySource::new(&a, &anchors),
        IdentitySource::new(&b, &anchors),
    );

    let echo1 = EchoServer::start("fo-1").await;
    let _server1 = mtls_mesh::server(
        &a,
        &id_a,
        tmp.path(),
        "fo-1",
        "fo",
        &[("http", echo1.port())],
        |s| both(s, &replicas),
    )
    .await;
    let target = authority("echo", 8080);
    let client = mtls_mesh::client_with(
        &a,
        &id_a,
        tmp.path(),
        "fo-client",
        std::slice::from_ref(&target),
        |s| both(s, &replicas),
    )
    .await;
    let load = Load::through(&client, &target, Duration::from_secs(60));
    assert!(
        echo1.requests.wait_for(20, SOON).await,
        "fo-1 never served 20 requests: {:?}",
        load.report().failures
    );

    // Replica A dies; B serves the same store.
    let mut a = a;
    a.kill().await;
    assert!(
        load.wait_more(150, SOON).await,
        "load stalled after replica A died"
    );
    let during = load.report();
    assert!(
        during.failures.is_empty(),
        "requests failed while replica A was down:\n{}",
        during.first_failures(10)
    );

    // A workload registered through B: its sidecar certifies with B (A, listed first, refuses
    // connections), and the client's discovery, now on B, sends it traffic.
    let echo2 = EchoServer::start("fo-2").await;
    let _server2 = mtls_mesh::server(
        &b,
        &id_b,
        tmp.path(),
        "fo-2",
        "fo",
        &[("http", echo2.port())],
        |s| both(s, &replicas),
    )
    .await;
    // The client learns the new endpoint from B (the balancer's gauge: both endpoints ready).
    // Traffic to it follows as the balancer's default RTT for a new endpoint decays (peak-EWMA,
    // as Linkerd's), which is not what this test is about.
    support::eventually(
        "the client's balancer lists the endpoint registered through B",
        SOON,
        || async {
            let ready = client
                .metric_sum(
                    "outbound_http_balancer_endpoints",
                    &[("endpoint_state", "ready")],
                )
                .await;
            (ready == 2.0).then_some(())
        },
    )
    .await;
    assert!(
        load.wait_more(100, SOON).await,
        "load stalled after the new endpoint"
    );
    let report = load.stop().await;
    assert!(
        report.failures.is_empty(),
        "requests failed across the failover:\n{}",
        report.first_failures(10)
    );
    assert!(
        report.ok > 200,
        "too little load to mean anything: {}",
        report.ok
    );
}
