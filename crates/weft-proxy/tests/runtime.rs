//! The runtime in-process: every listener binds on port 0, the admin server answers, and
//! `POST /shutdown` drains and ends the proxy — and ends the binary with status 0, which a
//! Job's pod needs to succeed with a classic sidecar (`docs/kubernetes.md`).

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::admin;
use common::process::{Proxy, SOON};
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

/// What a Job's last step does with a classic sidecar (`curl -X POST localhost:4191/shutdown`,
/// or `linkerd-await --shutdown`): the process ends, and with status 0, so the pod succeeds.
#[tokio::test]
async fn the_binary_exits_zero_on_post_shutdown() {
    let app = "127.0.0.1:9".parse().expect("address");
    let mut proxy = Proxy::start(
        app,
        &[(weft_proxy::config::ENV_SHUTDOWN_GRACE_PERIOD, "1s")],
    )
    .await;
    assert_eq!(admin(proxy.admin, "POST", "/shutdown").await.0, 200);
    let status = tokio::time::timeout(SOON, proxy.child.wait())
        .await
        .expect("exited after POST /shutdown")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "{status}");
}

/// `se.slice` (ns) of every thread of process `pid`, from `/proc/<pid>/task/*/sched`; `None`
/// where the kernel does not report it.
fn thread_slices(pid: u32) -> Vec<(String, Option<u64>)> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the proxy's threads");
    dir.map(|t| {
        let path = t.expect("task entry").path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let sched = std::fs::read_to_string(path.join("sched")).unwrap_or_default();
        let slice = sched
            .lines()
            .find(|l| l.starts_with("se.slice"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse().ok());
        (name.trim().to_string(), slice)
    })
    .collect()
}

/// Every thread of the binary, the worker threads too, runs with `WEFT_PROXY_SCHED_SLICE`
/// (default 100 µs); `0` leaves the kernel's default, the slice this test runs with.
#[tokio::test]
async fn every_thread_of_the_binary_gets_the_scheduler_slice() {
    let app = "127.0.0.1:9".parse().expect("address");
    let own = thread_slices(std::process::id())[0].1;
    let Some(kernel_default) = own else {
        assert!(
            std::env::var_os("CI").is_none(),
            "this kernel reports no se.slice (Linux 6.6+ does)"
        );
        eprintln!("skipped: no se.slice in /proc/self/sched");
        return;
    };
    assert_ne!(
        kernel_default, 100_000,
        "the test runner has no custom slice"
    );
    let cases = [("", 100_000), ("250us", 250_000), ("0", kernel_default)];
    for (var, want) in cases {
        let mut vars = vec![(weft_proxy::config::ENV_CORES, "2")];
        if !var.is_empty() {
            vars.push((weft_proxy::config::ENV_SCHED_SLICE, var));
        }
        let proxy = Proxy::start(app, &vars).await;
        let threads = thread_slices(proxy.child.id().expect("running"));
        // The main thread and the worker (which may not have named itself yet).
        assert!(threads.len() >= 2, "{threads:?}");
        for (name, slice) in &threads {
            assert_eq!(*slice, Some(want), "{var:?}: thread {name}: {threads:?}");
        }
    }
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

/// A request addressed to the proxy itself (explicit mode, `Host:` = one of its outbound listeners)
/// is answered by the proxy with 508 instead of being forwarded into itself again and again
/// (before the guard, one such request opened connections until the descriptors ran out).
#[tokio::test]
async fn a_request_to_the_proxys_own_listener_is_a_loop_not_a_forward() {
    let running = runtime::start(config(&[])).await.expect("start");
    let l = running.listening.clone();
    for own in [l.outbound, l.upstreams[0].1] {
        let mut s = tokio::net::TcpStream::connect(l.outbound)
            .await
            .expect("connect");
        let req = format!(
            "GET http://{own}/metrics HTTP/1.1\r\nHost: {own}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut answer))
            .await
            .expect("answered")
            .expect("read");
        assert!(answer.starts_with("HTTP/1.1 508"), "to {own}: {answer}");
        assert!(
            answer.to_ascii_lowercase().contains(&format!(
                "l5d-proxy-error: refusing to forward to {own}: it is this proxy's own outbound listener"
            )),
            "to {own}: {answer}"
        );
    }
    // One accepted connection per request above: nothing was forwarded back into the proxy.
    let (_, metrics) = admin(l.admin, "GET", "/metrics").await;
    let accepted: f64 = metrics
        .lines()
        .filter(|m| {
            m.starts_with("tcp_open_total{direction=\"outbound\"") && m.contains("peer=\"src\"")
        })
        .filter_map(|m| m.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(accepted, 2.0, "{metrics}");
    running.shutdown();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("stopped");
}

#[test]
fn own_addresses_match_the_listener_and_its_wildcard_forms() {
    use std::net::SocketAddr;
    use weft_proxy::outbound::OwnAddrs;
    let a = |s: &str| s.parse::<SocketAddr>().unwrap();
    let own = OwnAddrs::new(vec![a("127.0.0.1:4140"), a("0.0.0.0:4191")]);
    assert!(own.contains(a("127.0.0.1:4140")));
    assert!(
        own.contains(a("0.0.0.0:4140")),
        "0.0.0.0 reaches every local listener"
    );
    assert!(!own.contains(a("127.0.0.1:4141")));
    assert!(
        !own.contains(a("198.18.0.7:4140")),
        "bound to loopback only"
    );
    assert!(
        own.contains(a("127.0.0.1:4191")),
        "a wildcard listener takes loopback"
    );
    assert!(own.contains(a("[::1]:4191")));
    assert!(
        !own.contains(a("198.18.0.7:4191")),
        "not an address of this host"
    );
}
