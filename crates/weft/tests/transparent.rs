//! Transparent interception (root only). In a network namespace this test creates (198.18.0.0/15
//! on a veth pair inside it, no route out) it installs the nat OUTPUT rules a mesh init container
//! installs (redirect TCP to the outbound proxy on 4140, except the proxy's own uid 2102 and
//! loopback). An unmodified `curl` to a Service's virtual IP — nothing listens there — must be
//! intercepted, discovered by `IP:port`, and answered by the app behind the server-side proxy;
//! the outbound proxy's `/metrics` must count the request. Without root or tools the test skips
//! locally and fails under `CI=true`.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::apps::EchoServer;
use support::netns::Netns;
use support::{metric_sum, which, ChildProc, Proxy, ProxySpec, TempDir, SOON};

const PROXY_UID: u32 = 2102;
const CLUSTER_IP: &str = "198.18.0.100";
const WORKLOAD_IP: &str = "198.18.0.10";

/// Why this test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("transparent interception needs root (netns + iptables)".into());
    }
    for tool in ["ip", "iptables", "curl"] {
        if which(tool).is_none() {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// The proxy binary, at a path uid 2102 can execute (a copy when the build dir is private).
fn proxy_bin_for_uid(tmp: &TempDir) -> PathBuf {
    let bin = support::proxy_bin();
    let reachable = bin.ancestors().skip(1).all(|dir| {
        std::fs::metadata(dir)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    }) && std::fs::metadata(&bin)
        .map(|m| m.permissions().mode() & 0o005 == 0o005)
        .unwrap_or(false);
    if reachable {
        return bin;
    }
    let copy = tmp.path().join("weft-proxy");
    std::fs::copy(&bin, &copy).expect("copy weft-proxy");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}

fn store_docs(store: &Path) {
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n\
         spec:\n  selector: {{app: web}}\n  clusterIP: {CLUSTER_IP}\n  ports:\n  - name: http\n    \
         port: 80\n    targetPort: http\n"
    );
    let workload = format!(
        "apiVersion: workload.linkerd.io/v1beta1\nkind: ExternalWorkload\nmetadata:\n  name: web-1\n  \
         namespace: default\n  labels: {{app: web}}\nspec:\n  workloadIPs: [{{ip: {WORKLOAD_IP}}}]\n  \
         ports:\n  - {{name: http, port: 18080}}\n"
    );
    std::fs::write(store.join("mesh.yaml"), format!("{service}---\n{workload}")).expect("store");
}

async fn spawn_proxy(ns: &Netns, spec: ProxySpec, bin: &Path, name: &str, logs: &Path) -> Proxy {
    let mut cmd = spec.command(bin);
    ns.enter_on_exec(&mut cmd, Some(PROXY_UID));
    let mut proc = ChildProc::spawn(name, cmd, logs);
    let line = proc
        .listening_line(SOON)
        .await
        .unwrap_or_else(|e| panic!("{name} did not start: {e}"));
    let proxy = Proxy::from_listening(proc, &line);
    ns.wait_http_ok(proxy.admin, "/ready", SOON)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}\n{}", proxy.proc.stderr_tail(3000)));
    proxy
}

/// `curl` run inside the namespace, as root, with no proxy settings.
async fn curl(ns: &Netns, url: &str, max_time: &str) -> std::process::Output {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args([
        "-sS",
        "-i",
        "--max-time",
        max_time,
        "-H",
        "x-test: transparent",
        url,
    ]);
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.kill_on_drop(true);
    ns.enter_on_exec(&mut cmd, None);
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("curl did not finish")
        .expect("run curl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_is_intercepted_in_a_namespace() {
    if let Some(reason) = missing_prerequisite() {
        support::skip_or_fail(&reason);
        return;
    }
    let tmp = TempDir::new("transparent");
    let logs = tmp.path().to_path_buf();
    let store = tmp.subdir("store");
    store_docs(&store);
    let proxy_bin = proxy_bin_for_uid(&tmp);

    let ns = Netns::create("tp").unwrap_or_else(|e| panic!("create netns: {e}"));
    for args in [
        // A veth pair with both ends inside: the subnet's route leads nowhere (no dummy module
        // is needed, and nothing answers on addresses the namespace does not own).
        vec![
            "ip", "link", "add", "weft0", "type", "veth", "peer", "name", "weft1",
        ],
        vec!["ip", "addr", "add", "198.18.0.1/15", "dev", "weft0"],
        vec![
            "ip",
            "addr",
            "add",
            &format!("{WORKLOAD_IP}/32"),
            "dev",
            "weft0",
        ],
        vec!["ip", "link", "set", "weft0", "up"],
        vec!["ip", "link", "set", "weft1", "up"],
    ] {
        ns.exec(&args)
            .unwrap_or_else(|e| panic!("netns setup: {e}"));
    }

    // Control plane inside the namespace, reading its store from files.
    let mut cmd = tokio::process::Command::new(support::weft_bin());
    cmd.arg("control").arg("--store").arg(&store).args([
        "--grpc-addr",
        "127.0.0.1:8086",
        "--api-addr",
        "127.0.0.1:8085",
    ]);
    ns.enter_on_exec(&mut cmd, None);
    let mut control = ChildProc::spawn("control", cmd, &logs);
    control
        .listening_line(SOON)
        .await
        .unwrap_or_else(|e| panic!("control in netns: {e}"));
    let control_grpc: SocketAddr = "127.0.0.1:8086".parse().unwrap();
    ns.wait_http_ok("127.0.0.1:8085".parse().unwrap(), "/ready", SOON)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", control.stderr_tail(3000)));

    // The app listens on loopback inside the namespace; its sidecar forwards WORKLOAD_IP:18080.
    let listener = ns
        .bind("127.0.0.1:8080".parse().unwrap())
        .expect("bind app in netns");
    let echo = EchoServer::serve("web-1", listener);
    let server_spec = ProxySpec::new("web-1", control_grpc)
        .env(
            "WEFT_PROXY_INBOUND_LISTEN_ADDR",
            &format!("{WORKLOAD_IP}:4143"),
        )
        .env("WEFT_PROXY_INBOUND_FORWARD_PORTS", "8080=18080");
    let _server = spawn_proxy(&ns, server_spec, &proxy_bin, "proxy-web-1", &logs).await;

    // The client pod's proxy on the conventional transparent-mode ports.
    let client_spec = ProxySpec::new("client", control_grpc)
        .env("WEFT_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:4140")
        .env("WEFT_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:4143")
        .env("WEFT_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:4191");
    let client = spawn_proxy(&ns, client_spec, &proxy_bin, "proxy-client", &logs).await;

    // Before interception nothing answers on the virtual IP.
    let url = format!("http://{CLUSTER_IP}/hello");
    let out = curl(&ns, &url, "1").await;
    assert!(
        !out.status.success(),
        "curl reached {CLUSTER_IP} without interception: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // What a mesh init container installs: the proxy's uid and loopback are exempt.
    let uid = PROXY_UID.to_string();
    for args in [
        vec!["iptables", "-t", "nat", "-N", "WEFT_OUTPUT"],
        vec![
            "iptables",
            "-t",
            "nat",
            "-A",
            "WEFT_OUTPUT",
            "-m",
            "owner",
            "--uid-owner",
            &uid,
            "-j",
            "RETURN",
        ],
        vec![
            "iptables",
            "-t",
            "nat",
            "-A",
            "WEFT_OUTPUT",
            "-o",
            "lo",
            "-j",
            "RETURN",
        ],
        vec![
            "iptables",
            "-t",
            "nat",
            "-A",
            "WEFT_OUTPUT",
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            "4140",
        ],
        vec![
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-j",
            "WEFT_OUTPUT",
        ],
    ] {
        ns.exec(&args).unwrap_or_else(|e| panic!("iptables: {e}"));
    }

    let out = curl(&ns, &url, "10").await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        out.status.success(),
        "intercepted curl failed ({}): {}{}\nclient proxy stderr:\n{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr),
        client.proc.stderr_tail(3000)
    );
    assert!(stdout.starts_with("http/1.1 200"), "{stdout}");
    assert!(stdout.contains("x-echo-path: /hello"), "{stdout}");
    assert!(
        stdout.contains("x-echo-hdr-x-test: transparent"),
        "{stdout}"
    );
    assert!(stdout.contains("x-echo-version: http/1.1"), "{stdout}");
    assert!(!stdout.contains("l5d-orig-proto"), "{stdout}");
    assert_eq!(echo.requests.get(), 1);

    let metrics = support::eventually(
        "outbound request_total counts the request",
        SOON,
        || async {
            let reply = ns.http_get(client.admin, "/metrics").await.ok()?;
            let text = reply.text();
            (metric_sum(&text, "request_total", &[("direction", "outbound")]) >= 1.0)
                .then_some(text)
        },
    )
    .await;
    assert!(metrics.contains("request_total"), "{metrics}");
    control.kill().await;
}
