//! The runtime in-process: every listener binds on port 0, the admin server answers, and
//! `POST /shutdown` drains and ends the proxy.

mod common;

use std::time::Duration;

use common::admin;
use weft_proxy::{runtime, Config};

/// A proxy with one forward port (8080) and one upstream port (`catalog:9090`).
fn config(extra: &[(&str, &str)]) -> Config {
    let mut vars = vec![
        ("WEFT_PROXY_INBOUND_FORWARD_PORTS", "8080"),
        ("WEFT_PROXY_OUTBOUND_UPSTREAMS", "catalog:9090"),
    ];
    vars.extend_from_slice(extra);
    common::config(&vars)
}

#[tokio::test]
async fn binds_serves_admin_and_shuts_down() {
    let running = runtime::start(config(&[])).await.expect("start");
    let l = running.listening.clone();
    for a in [l.inbound, l.outbound, l.admin] {
        assert_ne!(a.port(), 0);
    }
    assert_eq!(l.forward.len(), 1);
    assert_eq!(l.forward[0].0, 8080);
    assert_eq!(
        l.upstreams[0].0, "catalog.default.svc.cluster.local:9090",
        "upstreams are printed canonical"
    );
    let line: serde_json::Value = serde_json::from_str(&l.json_line()).expect("json");
    assert_eq!(line["event"], "listening");
    assert_eq!(line["admin"], l.admin.to_string());

    assert_eq!(admin(l.admin, "GET", "/live").await.0, 200);
    assert_eq!(admin(l.admin, "GET", "/ready").await.0, 503);
    let (status, body) = admin(l.admin, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("process_start_time_seconds"));

    assert_eq!(admin(l.admin, "POST", "/shutdown").await.0, 200);
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("drained and stopped");
    // The listeners are closed.
    assert!(tokio::net::TcpStream::connect(l.outbound).await.is_err());
}

#[tokio::test]
async fn drain_waits_for_open_connections_up_to_the_grace_period() {
    let running = runtime::start(config(&[("WEFT_PROXY_SHUTDOWN_GRACE_PERIOD", "300ms")]))
        .await
        .expect("start");
    let l = running.listening.clone();
    // An idle upstream connection: the proxy is still waiting to learn its protocol.
    let idle = tokio::net::TcpStream::connect(l.upstreams[0].1)
        .await
        .expect("connect");
    running.shutdown();
    let start = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("stopped after the grace period");
    // The open connection held the drain until the grace period ran out.
    assert!(
        start.elapsed() >= Duration::from_millis(290),
        "{:?}",
        start.elapsed()
    );
    // New connections are refused once draining started.
    assert!(tokio::net::TcpStream::connect(l.outbound).await.is_err());
    drop(idle);
}
