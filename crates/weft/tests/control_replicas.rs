//! Three `weft control` replicas on one real etcd (`--store etcd://...`, one shared
//! `--identity-dir`) behind a proxy fleet: three meshed clients, each listing the replicas in a
//! different order (so each replica is some client's discovery server), under steady load to a
//! meshed echo service. The replicas are restarted one after another — killed with SIGKILL
//! (the first and the last) or stopped with SIGTERM (the second) — and while each is down a new
//! endpoint is registered through a survivor and turned ready: every client's balancer lists it,
//! and not one request fails across the whole rolling restart.
//!
//! How long each endpoint took to reach the last of the clients is printed (and held to the
//! issue's bound of one second: discovery is a push from a watch, so it is milliseconds here).

#[path = "../../weft-control/tests/common/etcd.rs"]
#[allow(dead_code)] // shared with weft-control's tests, which use all of it
mod etcd;
#[path = "support/mtls_mesh.rs"]
mod mtls_mesh;
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mtls_mesh::{control_identity, ControlOpts, IdentitySource};
use support::apps::EchoServer;
use support::load::Load;
use support::{authority, service, ProxySpec, TempDir, SOON};
use weft_proxy::config;

const REPLICAS: usize = 3;

/// The variables that point a sidecar at every replica, over TLS.
fn replicas(spec: ProxySpec, list: &str) -> ProxySpec {
    spec.env(config::ENV_DESTINATION_SVC_ADDR, list)
        .env(config::ENV_DESTINATION_SVC_NAME, &control_identity())
        .env(config::ENV_IDENTITY_SVC_ADDR, list)
}

/// Endpoints a client's balancer for the echo service knows, in any state.
async fn endpoints(client: &support::Proxy) -> f64 {
    client
        .metric_sum("outbound_http_balancer_endpoints", &[])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_three_replicas_on_etcd_fails_no_request_and_discovery_keeps_flowing()
{
    let Some(etcd) = etcd::Etcd::start("replicas").await else {
        return;
    };
    let tmp = TempDir::new("control-replicas");
    let ca = tmp.subdir("ca");
    mtls_mesh::init_ca(&ca).await;
    etcd.client()
        .put(
            b"/weft/resources/services.yaml",
            service("echo", "cr", 8080, "http").as_bytes(),
        )
        .await
        .expect("put the service");
    let store = PathBuf::from(format!("etcd://{}/weft", etcd.endpoint()));
    let names = ["r0", "r1", "r2"];
    let opts = |i: usize, grpc_addr| ControlOpts {
        identity_dir: Some(&ca),
        name: names[i],
        grpc_addr,
        ..Default::default()
    };
    let mut controls = Vec::new();
    for i in 0..REPLICAS {
        controls.push(mtls_mesh::start_control(&store, tmp.path(), opts(i, None)).await);
    }
    let grpc: Vec<String> = controls.iter().map(|c| c.grpc.to_string()).collect();
    // Client i lists replica i first: its discovery starts there.
    let rotated = |i: usize| {
        (0..REPLICAS)
            .map(|k| grpc[(i + k) % REPLICAS].clone())
            .collect::<Vec<_>>()
            .join(",")
    };
    let anchors = mtls_mesh::trust_anchors(&controls[0]).await;
    for c in &controls[1..] {
        assert_eq!(anchors, mtls_mesh::trust_anchors(c).await, "one CA");
    }

    let first = EchoServer::start("cr-0").await;
    let id = IdentitySource::new(&controls[0], &anchors);
    let mut servers = vec![
        mtls_mesh::server(
            &controls[0],
            &id,
            tmp.path(),
            "cr-0",
            "cr",
            &[("http", first.port())],
            |s| replicas(s, &rotated(0)),
        )
        .await,
    ];
    let mut echoes = vec![first];
    let target = authority("echo", 8080);
    let mut clients = Vec::new();
    for (i, control) in controls.iter().enumerate() {
        let id = IdentitySource::new(control, &anchors);
        let list = rotated(i);
        let client = mtls_mesh::client_with(
            control,
            &id,
            tmp.path(),
            &format!("cr-client-{i}"),
            std::slice::from_ref(&target),
            |s| replicas(s, &list),
        )
        .await;
        clients.push(client);
    }
    let loads: Vec<Load> = clients
        .iter()
        .map(|c| Load::through(c, &target, Duration::from_secs(240)))
        .collect();
    for (i, load) in loads.iter().enumerate() {
        assert!(
            load.wait_more(20, SOON).await,
            "client {i} never completed 20 requests: {:?}",
            load.report().failures
        );
    }

    let mut slowest = Vec::new();
    for victim in 0..REPLICAS {
        let address = controls[victim].grpc;
        if victim == 1 {
            controls[victim].proc.signal(libc::SIGTERM);
            let exited = controls[victim].proc.wait(SOON).await;
            assert!(exited.is_some_and(|s| s.success()), "SIGTERM: {exited:?}");
        } else {
            controls[victim].proc.kill().await;
        }
        let survivor = (victim + 1) % REPLICAS;

        // A new endpoint, registered through a survivor and certified by whichever replica
        // answers; its sidecar is ready before it becomes an endpoint.
        let name = format!("cr-{}", victim + 1);
        let echo = EchoServer::start(&name).await;
        let id = IdentitySource::new(&controls[survivor], &anchors);
        let server = mtls_mesh::server_not_ready(
            &controls[survivor],
            &id,
            tmp.path(),
            &name,
            "cr",
            &[("http", echo.port())],
            |s| replicas(s, &rotated(survivor)),
        )
        .await;
        let want = (servers.len() + 1) as f64;
        let started = Instant::now();
        mtls_mesh::set_ready(&controls[survivor], &name).await;
        let mut seen = vec![None; clients.len()];
        while seen.iter().any(Option::is_none) {
            for (i, c) in clients.iter().enumerate() {
                if seen[i].is_none() && endpoints(c).await == want {
                    seen[i] = Some(started.elapsed());
                }
            }
            assert!(
                started.elapsed() < SOON,
                "after replica {victim} went down, endpoint {name} reached only {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let last = seen.into_iter().flatten().max().unwrap_or_default();
        eprintln!("replica {victim} down: {name} in every client's balancer after {last:?}");
        slowest.push(last);
        servers.push(server);
        echoes.push(echo);

        // Back on the same address (the proxies list it), before the next one goes.
        controls[victim] =
            mtls_mesh::start_control(&store, tmp.path(), opts(victim, Some(address))).await;
        for (i, load) in loads.iter().enumerate() {
            assert!(
                load.wait_more(30, SOON).await,
                "client {i} stalled after replica {victim} restarted"
            );
        }
    }

    let mut total = 0;
    for (i, load) in loads.into_iter().enumerate() {
        let report = load.stop().await;
        assert!(
            report.failures.is_empty(),
            "client {i}: requests failed during the rolling restart:\n{}",
            report.first_failures(10)
        );
        total += report.ok;
    }
    assert!(total > 600, "too little load to mean anything: {total}");
    for (victim, took) in slowest.iter().enumerate() {
        assert!(
            *took < Duration::from_secs(1),
            "with replica {victim} down, an endpoint took {took:?} to reach every proxy"
        );
    }
    drop((servers, echoes, clients, controls));
}
