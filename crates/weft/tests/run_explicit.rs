//! `weft run` in explicit mode (no network namespace, no iptables: `HTTP_PROXY` for the command,
//! forward ports for peers). `weft run` hands the sidecar its identity — the control plane's trust
//! anchors before the proxy starts, the registration's token after — so two explicit-mode
//! workloads on one machine talk mTLS without any identity setup by the user. Runs as any user.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{
    eventually, free_port, http_get, metric_sum, service, set_pdeathsig, weft_bin, write_docs,
    ChildProc, Control, TempDir, SOON,
};
use tokio::process::Command;

const CLIENT_ID: &str = "client.default.serviceaccount.identity.weft.cluster.local";

fn run(control: &Control, name: &str, flags: &[&str], cmd: &[&str]) -> Command {
    let mut c = Command::new(weft_bin());
    c.args(["run", "--explicit", "--name", name])
        .args(flags)
        .args(["--control", &control.grpc.to_string()])
        .args(["--control-api", &control.api.to_string(), "--"])
        .args(cmd);
    set_pdeathsig(&mut c);
    c
}

/// `weft run` names its proxy's admin address on stderr (`...; admin ADDR`).
async fn admin_of(run: &ChildProc) -> SocketAddr {
    eventually(
        &format!("{}: the proxy's admin address", run.name),
        SOON,
        || {
            let tail = run.stderr_tail(8000);
            async move {
                let (_, rest) = tail.split_once("; admin ")?;
                rest.split_whitespace().next()?.parse().ok()
            }
        },
    )
    .await
}

#[tokio::test]
async fn explicit_mode_sidecars_get_identities_and_talk_mtls() {
    let tmp = TempDir::new("run-explicit");
    let store = tmp.subdir("store");
    write_docs(
        &store,
        "services.yaml",
        &[service("ratings", "ratings", 80, "http")],
    );
    let control = Control::start(&store, tmp.path()).await;

    // The server: the demo's ratings service (it fails ~5% of requests with 500 by design).
    let port = free_port();
    let weft = weft_bin();
    let weft = weft.to_str().expect("utf8 path");
    let listen = format!("127.0.0.1:{port}");
    let server_cmd = run(
        &control,
        "ratings",
        &["--port", &format!("http={port}")],
        &[weft, "demo-service", "ratings", "--listen", &listen],
    );
    let mut server = ChildProc::spawn("run-ratings", server_cmd, tmp.path());
    let admin = admin_of(&server).await;
    // Ready means the proxy holds a certificate: the token reached it after registration.
    eventually(
        "the server's proxy is ready (certificate issued)",
        SOON,
        || async { matches!(http_get(admin, "/ready").await, Ok((200, _))).then_some(()) },
    )
    .await;

    // The client: curl through its sidecar (HTTP_PROXY) by service name, until one 200. It
    // starts sending once the test saw its proxy ready (certificate issued): `weft run` starts
    // the command before it registers, and a proxy without a certificate yet sends plaintext.
    let go = tmp.path().join("go");
    let script = format!(
        "while [ ! -e '{go}' ]; do sleep 0.05; done; \
         for i in $(seq 100); do \
           code=$(curl -s -o /dev/null -w '%{{http_code}}' \
             'http://ratings.default.svc.cluster.local/rate?book=1'); \
           [ \"$code\" = 200 ] && exit 0; sleep 0.2; \
         done; echo \"last status $code\" >&2; exit 1",
        go = go.display()
    );
    let client_cmd = run(&control, "client", &[], &["sh", "-c", &script]);
    let mut client = ChildProc::spawn("run-client", client_cmd, tmp.path());
    let client_admin = admin_of(&client).await;
    eventually(
        "the client's proxy is ready (certificate issued)",
        SOON,
        || async { matches!(http_get(client_admin, "/ready").await, Ok((200, _))).then_some(()) },
    )
    .await;
    std::fs::write(&go, b"").expect("go file");
    let status = client
        .wait(Duration::from_secs(60))
        .await
        .expect("the client command finished");
    assert!(
        status.success(),
        "client: {status}; stderr:\n{}",
        client.stderr_tail(4000)
    );

    // The server's proxy took the request over mTLS and knows who called.
    let (code, metrics) = http_get(admin, "/metrics").await.expect("metrics");
    assert_eq!(code, 200);
    let mtls = metric_sum(
        &metrics,
        "request_total",
        &[
            ("direction", "inbound"),
            ("tls", "true"),
            ("client_id", CLIENT_ID),
        ],
    );
    assert!(
        mtls >= 1.0,
        "no inbound mTLS request from {CLIENT_ID}:\n{metrics}"
    );
    let plain = metric_sum(
        &metrics,
        "request_total",
        &[("direction", "inbound"), ("tls", "no_identity")],
    );
    assert_eq!(plain, 0.0, "a request arrived without mTLS:\n{metrics}");

    // SIGTERM: `weft run` deregisters the workload and removes its state directory.
    server.signal(libc::SIGTERM);
    let status = server
        .wait(Duration::from_secs(20))
        .await
        .expect("weft run exited");
    assert!(status.code().is_some(), "{status}");
    let (_, workloads) = http_get(control.api, "/v1/workloads").await.expect("list");
    assert!(
        !workloads.contains("\"ratings\""),
        "ratings still registered: {workloads}"
    );
}
