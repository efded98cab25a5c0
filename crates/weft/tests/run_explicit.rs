//! `weft run` in explicit mode (no network namespace, no iptables: `HTTP_PROXY` for the command,
//! forward ports for peers). `weft run` hands the sidecar its identity — the control plane's trust
//! anchors before the proxy starts, the registration's token after — so two explicit-mode
//! workloads on one machine talk mTLS without any identity setup by the user. Runs as any user
//! (needs `curl` and `python3`).
//!
//! Start-up order (proxy-await): the workload is registered `Ready=False`, the command starts once
//! the sidecar is ready (holds its certificate), and Destination hands the workload out only once
//! its port accepts. So a command whose very first request crosses the mesh succeeds over mTLS,
//! with no retry; `--proxy-await disabled` starts the command without waiting, and a sidecar that
//! never gets ready makes `weft run` fail with a precise error instead of starting the command.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use linkerd2_proxy_api::destination as dst;
use support::{
    eventually, free_port, http_get, metric_sum, service, set_pdeathsig, skip_or_fail, weft_bin,
    which, write_docs, ChildProc, Control, TempDir, SOON,
};
use tokio::process::Command;

const CLIENT_ID: &str = "client.default.serviceaccount.identity.weft.cluster.local";

/// `weft run --explicit --name NAME FLAGS` against the control plane at `grpc` and `api`.
fn run_at(grpc: SocketAddr, api: SocketAddr, name: &str, flags: &[&str], cmd: &[&str]) -> Command {
    let mut c = Command::new(weft_bin());
    c.args(["run", "--explicit", "--name", name])
        .args(flags)
        .args(["--control", &grpc.to_string()])
        .args(["--control-api", &api.to_string(), "--"])
        .args(cmd);
    set_pdeathsig(&mut c);
    c
}

fn run(control: &Control, name: &str, flags: &[&str], cmd: &[&str]) -> Command {
    run_at(control.grpc, control.api, name, flags, cmd)
}

/// `curl` and `python3` are installed (skipped locally without them, failing under `CI=true`).
fn tools() -> bool {
    match ["curl", "python3"].iter().find(|t| which(t).is_none()) {
        Some(tool) => {
            skip_or_fail(&format!("`{tool}` is not installed"));
            false
        }
        None => true,
    }
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

/// A `Destination.Get` stream on `path`.
async fn destination(control: &Control, path: &str) -> tonic::Streaming<dst::Update> {
    let channel = support::clients::grpc_channel(control.grpc)
        .await
        .expect("control channel");
    dst::destination_client::DestinationClient::new(channel)
        .get(dst::GetDestination {
            scheme: "k8s".into(),
            path: path.into(),
            context_token: String::new(),
        })
        .await
        .expect("Destination.Get")
        .into_inner()
}

async fn next_update(stream: &mut tonic::Streaming<dst::Update>) -> dst::update::Update {
    tokio::time::timeout(SOON, stream.message())
        .await
        .expect("an update in time")
        .expect("stream status")
        .expect("stream open")
        .update
        .expect("update body")
}

/// The registered workload `default/NAME` from `GET /v1/workloads`, if any.
async fn workload(control: &Control, name: &str) -> Option<serde_json::Value> {
    let (_, body) = http_get(control.api, "/v1/workloads").await.ok()?;
    let all: Vec<serde_json::Value> = serde_json::from_str(&body).ok()?;
    all.into_iter().find(|w| w["metadata"]["name"] == name)
}

/// `sh -c` script: wait until `gate` exists, then exec `then`.
fn after(gate: &Path, then: &str) -> String {
    format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done; exec {then}",
        gate.display()
    )
}

#[tokio::test]
async fn explicit_mode_sidecars_get_identities_and_talk_mtls() {
    if !tools() {
        return;
    }
    let tmp = TempDir::new("run-explicit");
    let store = tmp.subdir("store");
    write_docs(
        &store,
        "services.yaml",
        &[service("web", "web", 80, "http")],
    );
    let control = Control::start(&store, tmp.path()).await;

    // The server: python3's http.server, held back by a gate so the test sees the moment between
    // "registered, sidecar ready, command running" and "its port accepts".
    let docs = tmp.subdir("docs");
    std::fs::write(docs.join("index.html"), "hello from web\n").expect("index.html");
    let port = free_port();
    let gate = tmp.path().join("gate");
    let serve = format!(
        "python3 -m http.server {port} --bind 127.0.0.1 --directory '{}'",
        docs.display()
    );
    let server_cmd = run(
        &control,
        "web",
        &["--port", &format!("http={port}")],
        &["sh", "-c", &after(&gate, &serve)],
    );
    let mut server = ChildProc::spawn("run-web", server_cmd, tmp.path());
    let admin = admin_of(&server).await;
    // Ready means the proxy holds a certificate: the token reached it at registration.
    eventually(
        "the server's proxy is ready (certificate issued)",
        SOON,
        || async { matches!(http_get(admin, "/ready").await, Ok((200, _))).then_some(()) },
    )
    .await;
    let registered = eventually("web is registered", SOON, || workload(&control, "web")).await;
    assert_eq!(
        registered["status"]["conditions"][0]["status"], "False",
        "registered before its port accepts, so not ready: {registered}"
    );
    // Registered, sidecar ready, port not accepting: Destination hands out no endpoint.
    let mut web = destination(&control, "web.default.svc.cluster.local:80").await;
    let first = next_update(&mut web).await;
    assert!(
        matches!(&first, dst::update::Update::NoEndpoints(n) if n.exists),
        "an endpoint was handed out before its port accepted: {first:?}"
    );
    // Once the port accepts, `weft run` marks it ready and the endpoint appears.
    std::fs::write(&gate, b"").expect("gate");
    let update = next_update(&mut web).await;
    assert!(
        matches!(&update, dst::update::Update::Add(set) if set.addrs.len() == 1),
        "expected the endpoint once the port accepts: {update:?}"
    );

    // The client: one `curl` the instant its command starts, no retry. Proxy-await started it
    // only once its sidecar held a certificate, so the request leaves over mTLS and succeeds.
    let out = tmp.path().join("client.out");
    let curl = format!(
        "curl -sS -f -o '{}' http://web.default.svc.cluster.local/",
        out.display()
    );
    let client_cmd = run(&control, "client", &[], &["sh", "-c", &curl]);
    let mut client = ChildProc::spawn("run-client", client_cmd, tmp.path());
    let status = client
        .wait(Duration::from_secs(60))
        .await
        .expect("the client command finished");
    assert!(
        status.success(),
        "client: {status}; stderr:\n{}",
        client.stderr_tail(4000)
    );
    assert_eq!(
        std::fs::read_to_string(&out).expect("curl output"),
        "hello from web\n"
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
        !workloads.contains("\"web\""),
        "web still registered: {workloads}"
    );
}

/// A sidecar that can never be ready (its control plane's gRPC port is closed, so no Destination
/// and no certificate): with `--proxy-await disabled` the command starts anyway; by default
/// `weft run` gives up after `--proxy-await-timeout` with a precise error, never starts the
/// command and deregisters.
#[tokio::test]
async fn proxy_await_holds_the_command_until_the_sidecar_is_ready() {
    let tmp = TempDir::new("run-await");
    let store = tmp.subdir("store");
    let control = Control::start(&store, tmp.path()).await;
    let dead_grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));

    let started = tmp.path().join("started-disabled");
    let script = format!("touch '{}'; exec sleep 600", started.display());
    let cmd = run_at(
        dead_grpc,
        control.api,
        "eager",
        &["--proxy-await", "disabled"],
        &["sh", "-c", &script],
    );
    let mut eager = ChildProc::spawn("run-eager", cmd, tmp.path());
    let admin = admin_of(&eager).await;
    eventually("the command started", SOON, || async {
        started.exists().then_some(())
    })
    .await;
    let (code, _) = http_get(admin, "/ready").await.expect("/ready");
    assert_eq!(
        code, 503,
        "the sidecar cannot be ready without its control plane"
    );
    eager.signal(libc::SIGTERM);
    eager
        .wait(Duration::from_secs(20))
        .await
        .expect("weft run exited");

    let started = tmp.path().join("started-enabled");
    let script = format!("touch '{}'; exec sleep 600", started.display());
    let cmd = run_at(
        dead_grpc,
        control.api,
        "patient",
        &["--proxy-await-timeout", "2s"],
        &["sh", "-c", &script],
    );
    let mut patient = ChildProc::spawn("run-patient", cmd, tmp.path());
    let status = patient
        .wait(Duration::from_secs(60))
        .await
        .expect("weft run gave up");
    assert!(!status.success(), "{status}");
    let stderr = patient.stderr_tail(4000);
    assert!(
        stderr.contains("the sidecar is not ready after 2s")
            && stderr.contains("the command was not started")
            && stderr.contains("--proxy-await disabled"),
        "{stderr}"
    );
    assert!(
        !started.exists(),
        "the command ran before its sidecar was ready"
    );
    assert!(
        workload(&control, "patient").await.is_none(),
        "patient is still registered"
    );
}
