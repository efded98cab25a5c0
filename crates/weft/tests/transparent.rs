//! Transparent interception on a one-node testbed cluster (root only; skipped locally without
//! root or tools, failing under `CI=true`). The control plane runs in a pod of its own; the `web`
//! pod runs an echo app on loopback behind its sidecar (explicit forward port on the pod's IP);
//! the client pod runs a proxy on the conventional transparent-mode ports. Both proxies run as
//! uid 2102, with identity (registered through the API for their tokens), so they reach the
//! control plane in another pod over TLS, as its identity (plaintext is for loopback only). In the client pod the test installs the nat OUTPUT rules a mesh init container
//! installs (redirect TCP to the outbound proxy on 4140, except the proxy's own uid and
//! loopback). An unmodified `curl` to a Service's virtual IP — nothing answers there — must be
//! intercepted, discovered by `IP:port`, and answered by the app behind the server-side proxy;
//! the outbound proxy's `/metrics` must count the request. Afterwards the host's namespaces,
//! links and iptables rules are what they were.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use support::apps::EchoServer;
use support::{ProxySpec, TempDir, SOON};
use weft_proxy::config;
use weft_testbed::mesh::{self, metric_sum, ControlPlane, STARTUP};
use weft_testbed::{require_root, serial, Cluster, HostState, Pod, Proc};

const PROXY_UID: u32 = 2102;
/// A Service's virtual IP (the testbed's convention for cluster IPs: 198.19.0.0/16, unrouted).
const CLUSTER_IP: &str = "198.19.0.100";

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

/// The `web` Service on `CLUSTER_IP:80` (its workload registers through the API).
fn store_docs(store: &Path) {
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n\
         spec:\n  selector: {{app: web}}\n  clusterIP: {CLUSTER_IP}\n  ports:\n  - name: http\n    \
         port: 80\n    targetPort: http\n"
    );
    std::fs::write(store.join("mesh.yaml"), service).expect("store");
}

/// Registers workload `default/NAME` (label `app=APP`, `ip`, `ports`) and gives its sidecar
/// identity: the token (in a file uid 2102 can read), the anchors, its name, and the control
/// plane's identity. The API is asked from inside `pod` (the host has no route to pods).
#[allow(clippy::too_many_arguments)]
async fn with_identity(
    spec: ProxySpec,
    pod: &Pod,
    control: &ControlPlane,
    tmp: &TempDir,
    name: &str,
    app: &str,
    ip: &str,
    ports: &[(&str, u16)],
) -> ProxySpec {
    let doc = support::workload_doc("default", name, &[("app", app)], ip, ports).to_string();
    let url = |path: &str| format!("http://{}{path}", control.api);
    let netns = pod.netns().name();
    let registered = mesh::exec(
        netns,
        &[
            "curl",
            "-sS",
            "--fail-with-body",
            "-X",
            "PUT",
            "-H",
            "content-type: application/json",
            "--data",
            &doc,
            &url(&format!("/v1/workloads/default/{name}")),
        ],
    )
    .await
    .expect("curl");
    assert!(
        registered.success,
        "registering {name}: {}{}",
        registered.stdout, registered.stderr
    );
    let answer: serde_json::Value =
        serde_json::from_str(&registered.stdout).expect("registration answer");
    let token_file = tmp.path().join(format!("{name}.token"));
    std::fs::write(&token_file, answer["token"].as_str().expect("token")).expect("token file");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let anchors = mesh::exec(
        netns,
        &[
            "curl",
            "-sS",
            "--fail-with-body",
            &url("/v1/identity/trust-anchors"),
        ],
    )
    .await
    .expect("curl");
    assert!(
        anchors.success,
        "trust anchors: {}{}",
        anchors.stdout, anchors.stderr
    );
    let anchors = anchors.stdout;
    let defaults = weft_control::resource::Defaults::default();
    spec.env(
        config::ENV_IDENTITY_TOKEN_FILE,
        &token_file.display().to_string(),
    )
    .env(config::ENV_IDENTITY_TRUST_ANCHORS, &anchors)
    .env(
        config::ENV_IDENTITY_LOCAL_NAME,
        answer["identity"].as_str().expect("identity"),
    )
    .env(
        config::ENV_DESTINATION_SVC_NAME,
        &weft_control::resource::control_identity(&defaults),
    )
}

/// `weft-proxy` as `spec` says, in `pod` as the proxy uid, once it listens and its admin server
/// (on the pod's conventional [`mesh::ADMIN`] port) reports ready.
async fn start_proxy(pod: &Pod, name: &str, spec: ProxySpec, bin: &Path) -> Proc {
    let spec = spec.env(config::ENV_ADMIN_LISTEN_ADDR, mesh::ADMIN);
    // The testbed restarts a process by building its command again: keep what the spec built.
    let template = spec.command(bin);
    let template = template.as_std();
    let program = template.get_program().to_owned();
    let args: Vec<_> = template.get_args().map(ToOwned::to_owned).collect();
    let envs: Vec<_> = template
        .get_envs()
        .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
        .collect();
    let proc = Proc::spawn(
        name,
        pod.netns(),
        Some(PROXY_UID),
        libc::SIGKILL,
        move || {
            let mut cmd = std::process::Command::new(&program);
            cmd.args(&args);
            for (key, value) in &envs {
                match value {
                    Some(value) => cmd.env(key, value),
                    None => cmd.env_remove(key),
                };
            }
            cmd
        },
    )
    .unwrap_or_else(|e| panic!("start {name}: {e}"));
    proc.wait_stdout_line(STARTUP, |l| l.contains(r#""event":"listening""#))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let netns = pod.netns().name();
    support::eventually(&format!("{name} /ready"), SOON, || async {
        mesh::admin_get(netns, "/ready").await.ok()
    })
    .await;
    proc
}

/// An unmodified `curl` in the client pod (no proxy settings); (success, stdout, stderr).
async fn curl(client: &Pod, url: &str, max_time: &str) -> mesh::Output {
    mesh::exec(
        client.netns().name(),
        &[
            "curl",
            "-sS",
            "-i",
            "--max-time",
            max_time,
            "-H",
            "x-test: transparent",
            url,
        ],
    )
    .await
    .expect("run curl")
}

/// What a mesh init container installs in the client pod: the proxy's uid and loopback are
/// exempt, every other outgoing TCP connection goes to the outbound proxy on 4140.
fn intercept_outbound(client: &Pod) {
    let uid = PROXY_UID.to_string();
    for rule in [
        &["-N", "WEFT_OUTPUT"][..],
        &[
            "-A",
            "WEFT_OUTPUT",
            "-m",
            "owner",
            "--uid-owner",
            &uid,
            "-j",
            "RETURN",
        ],
        &["-A", "WEFT_OUTPUT", "-o", "lo", "-j", "RETURN"],
        &[
            "-A",
            "WEFT_OUTPUT",
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            "4140",
        ],
        &["-A", "OUTPUT", "-p", "tcp", "-j", "WEFT_OUTPUT"],
    ] {
        let mut args = vec!["iptables", "-w", "-t", "nat"];
        args.extend_from_slice(rule);
        client
            .netns()
            .exec(&args)
            .unwrap_or_else(|e| panic!("iptables: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_is_intercepted_in_a_namespace() {
    let _serial = serial();
    let Some(root) = require_root(&["curl"]) else {
        return;
    };
    let host = HostState::capture().expect("host state");
    let tmp = TempDir::new("transparent");
    let store = tmp.subdir("store");
    let proxy_bin = proxy_bin_for_uid(&tmp);
    {
        let cluster = Cluster::new(root, 1).expect("cluster");
        let web = cluster.add_pod(0).expect("web pod");
        let client = cluster.add_pod(0).expect("client pod");
        store_docs(&store);
        let control = ControlPlane::start(&cluster, 0, &support::weft_bin(), &store)
            .await
            .expect("control plane");

        // The app listens on loopback in its pod; its sidecar forwards WEB_IP:18080 to it.
        let listener = web
            .netns()
            .bind("127.0.0.1:8080".parse().expect("addr"))
            .expect("bind app in pod");
        let echo = EchoServer::serve("web-1", listener);
        let server_spec = ProxySpec::new("web-1", control.grpc)
            .env(
                config::ENV_INBOUND_LISTEN_ADDR,
                &SocketAddr::from((web.ip(), 4143)).to_string(),
            )
            .env(config::ENV_INBOUND_FORWARD_PORTS, "8080=18080");
        let web_ip = web.ip().to_string();
        let server_spec = with_identity(
            server_spec,
            &web,
            &control,
            &tmp,
            "web-1",
            "web",
            &web_ip,
            &[("http", 18080)],
        )
        .await;
        let _server = start_proxy(&web, "proxy-web-1", server_spec, &proxy_bin).await;

        // The client pod's proxy on the conventional transparent-mode ports.
        let client_spec = ProxySpec::new("client", control.grpc)
            .env(config::ENV_OUTBOUND_LISTEN_ADDR, "127.0.0.1:4140")
            .env(config::ENV_INBOUND_LISTEN_ADDR, "127.0.0.1:4143");
        let client_ip = client.ip().to_string();
        let client_spec = with_identity(
            client_spec,
            &client,
            &control,
            &tmp,
            "client",
            "curl",
            &client_ip,
            &[],
        )
        .await;
        let client_proxy = start_proxy(&client, "proxy-client", client_spec, &proxy_bin).await;

        // Before interception nothing answers on the virtual IP.
        let url = format!("http://{CLUSTER_IP}/hello");
        let out = curl(&client, &url, "1").await;
        assert!(
            !out.success,
            "curl reached {CLUSTER_IP} without interception: {}",
            out.stdout
        );

        intercept_outbound(&client);
        let out = curl(&client, &url, "10").await;
        let stdout = out.stdout.to_lowercase();
        assert!(
            out.success,
            "intercepted curl failed: {stdout}{}\nclient proxy stderr:\n{}",
            out.stderr,
            client_proxy.stderr()
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

        let netns = client.netns().name();
        support::eventually(
            "outbound request_total counts the request",
            SOON,
            || async {
                let text = mesh::admin_get(netns, "/metrics").await.ok()?;
                (metric_sum(&text, "request_total", &[("direction", "outbound")]) >= 1.0)
                    .then_some(())
            },
        )
        .await;
    }
    host.assert_unchanged();
}
