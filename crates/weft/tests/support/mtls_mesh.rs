//! An mTLS mesh for `tests/mtls.rs`, `tests/mtls_refusals.rs` and `tests/identity_rotation.rs`:
//! control planes with chosen certificate lifetimes and CA directories, registration that keeps
//! the token, sidecars with identity (token file, trust anchors, local name), and the mTLS
//! connection metrics. Included by those tests with `#[path]`, so the shared harness
//! (`support/mod.rs`) stays as it is.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use crate::support::{
    http_get, http_request, proxy_bin, set_pdeathsig, weft_bin, workload_doc, ChildProc, Control,
    Proxy, ProxySpec, SOON,
};
use weft_proxy::config;

/// The identity the control plane derives for workload `default/NAME`.
pub fn identity_of(name: &str) -> String {
    format!("{name}.default.serviceaccount.identity.weft.cluster.local")
}

/// The identity `weft control` (default trust domain and namespace) proves on its gRPC port.
pub fn control_identity() -> String {
    weft_control::resource::control_identity(&weft_control::resource::Defaults::default())
}

/// How to start a control plane.
#[derive(Default)]
pub struct ControlOpts<'a> {
    /// `--cert-lifetime` (e.g. `4s`); default 24h.
    pub cert_lifetime: Option<&'a str>,
    /// `--identity-dir`; default an ephemeral CA.
    pub identity_dir: Option<&'a Path>,
    /// Used in log file names when a test runs several.
    pub name: &'a str,
    /// `--grpc-addr`; default an ephemeral port. A restart passes the address proxies know (the
    /// bind is retried while the previous owner's socket goes away).
    pub grpc_addr: Option<SocketAddr>,
    /// `WEFT_LOG` of the control plane; default its own default.
    pub log: Option<&'a str>,
}

/// Starts `weft control` on ephemeral ports and waits for `/ready`.
pub async fn start_control(store: &Path, log_dir: &Path, opts: ControlOpts<'_>) -> Control {
    let deadline = std::time::Instant::now() + SOON;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_start_control(store, log_dir, &opts, attempt).await {
            Ok(control) => return control,
            Err(e) if opts.grpc_addr.is_some() && std::time::Instant::now() < deadline => {
                eprintln!("control start attempt {attempt} failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("weft control did not start: {e}"),
        }
    }
}

async fn try_start_control(
    store: &Path,
    log_dir: &Path,
    opts: &ControlOpts<'_>,
    attempt: u32,
) -> Result<Control, String> {
    let grpc = opts
        .grpc_addr
        .map_or("127.0.0.1:0".to_string(), |a| a.to_string());
    let mut cmd = Command::new(weft_bin());
    cmd.arg("control")
        .arg("--store")
        .arg(store)
        .arg("--grpc-addr")
        .arg(grpc)
        .arg("--api-addr")
        .arg("127.0.0.1:0")
        .env("RUST_BACKTRACE", "1");
    if let Some(lifetime) = opts.cert_lifetime {
        cmd.arg("--cert-lifetime").arg(lifetime);
    }
    if let Some(dir) = opts.identity_dir {
        cmd.arg("--identity-dir").arg(dir);
    }
    if let Some(log) = opts.log {
        cmd.env("WEFT_LOG", log);
    }
    set_pdeathsig(&mut cmd);
    let name = match (opts.name.is_empty(), attempt) {
        (true, 1) => "control".to_string(),
        (true, n) => format!("control-{n}"),
        (false, 1) => format!("control-{}", opts.name),
        (false, n) => format!("control-{}-{n}", opts.name),
    };
    let mut proc = ChildProc::spawn(&name, cmd, log_dir);
    let line = proc.listening_line(SOON).await?;
    let addr = |key: &str| -> SocketAddr {
        line[key]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("listening line without {key}: {line}"))
    };
    let control = Control {
        grpc: addr("grpc"),
        api: addr("api"),
        proc,
        store: store.to_path_buf(),
    };
    control.wait_ready().await;
    Ok(control)
}

/// `weft identity init --dir DIR`: a CA several control planes can share.
pub async fn init_ca(dir: &Path) {
    let status = Command::new(weft_bin())
        .arg("identity")
        .arg("init")
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .expect("run weft identity init");
    assert!(status.success(), "weft identity init failed: {status}");
}

/// The control plane's PEM trust anchors.
pub async fn trust_anchors(control: &Control) -> String {
    let (status, body) = http_get(control.api, "/v1/identity/trust-anchors")
        .await
        .expect("GET trust anchors");
    assert_eq!(status, 200, "trust anchors: {body}");
    body
}

/// Registers a workload and returns its Certify token.
pub async fn register(control: &Control, name: &str, doc: &serde_json::Value) -> String {
    let (status, body) = http_request(
        control.api,
        "PUT",
        &format!("/v1/workloads/default/{name}"),
        Some(doc.to_string()),
    )
    .await
    .unwrap_or_else(|e| panic!("register {name}: {e}"));
    assert_eq!(status, 200, "register {name}: {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("registration JSON");
    answer["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {body}"))
        .to_string()
}

/// Where a sidecar gets its identity.
pub struct IdentitySource<'a> {
    /// `Identity.Certify` address (the discovery control plane unless a test splits them).
    pub certify: SocketAddr,
    pub anchors_pem: &'a str,
}

impl<'a> IdentitySource<'a> {
    /// Certified by `control`, trusting `anchors_pem`.
    pub fn new(control: &Control, anchors_pem: &'a str) -> IdentitySource<'a> {
        IdentitySource {
            certify: control.grpc,
            anchors_pem,
        }
    }
}

/// Adds the identity variables (the token file is written later, by [`write_token`]).
/// `Identity.Certify` goes over TLS, the control plane proving [`control_identity`] against the
/// same anchors.
pub fn with_identity(
    spec: ProxySpec,
    name: &str,
    dir: &Path,
    id: &IdentitySource<'_>,
) -> ProxySpec {
    spec.env(config::ENV_IDENTITY_SVC_ADDR, &id.certify.to_string())
        .env(config::ENV_IDENTITY_SVC_NAME, &control_identity())
        .env(config::ENV_IDENTITY_TRUST_ANCHORS, id.anchors_pem)
        .env(
            config::ENV_IDENTITY_TOKEN_FILE,
            &token_path(dir, name).display().to_string(),
        )
        .env(config::ENV_IDENTITY_LOCAL_NAME, &identity_of(name))
}

pub fn token_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.token"))
}

pub fn write_token(dir: &Path, name: &str, token: &str) {
    let tmp = dir.join(format!(".{name}.token.tmp"));
    std::fs::write(&tmp, token).expect("write token");
    std::fs::rename(&tmp, token_path(dir, name)).expect("rename token");
}

/// Spawns the proxy and reads its listening line, without waiting for `/ready` (which needs a
/// certificate, which needs the registration, which needs the forward ports).
pub async fn spawn_unready(spec: ProxySpec, name: &str, log_dir: &Path) -> Proxy {
    let mut cmd = spec.command(&proxy_bin());
    set_pdeathsig(&mut cmd);
    let mut proc = ChildProc::spawn(&format!("proxy-{name}"), cmd, log_dir);
    let line = proc
        .listening_line(SOON)
        .await
        .unwrap_or_else(|e| panic!("weft-proxy {name} did not start: {e}"));
    Proxy::from_listening(proc, &line)
}

/// A meshed server: a sidecar with identity forwarding to `apps` (`(port name, app port)`),
/// registered in `control` as `default/NAME` with label `app=APP` (its ports = the forward
/// ports), token written, ready.
pub async fn server(
    control: &Control,
    id: &IdentitySource<'_>,
    dir: &Path,
    name: &str,
    app: &str,
    apps: &[(&str, u16)],
    customize: impl FnOnce(ProxySpec) -> ProxySpec,
) -> Proxy {
    start_server(control, id, dir, (name, app, apps), customize, None).await
}

/// [`server`] or [`server_not_ready`]: registered with `status` (none: ready).
async fn start_server(
    control: &Control,
    id: &IdentitySource<'_>,
    dir: &Path,
    (name, app, apps): (&str, &str, &[(&str, u16)]),
    customize: impl FnOnce(ProxySpec) -> ProxySpec,
    status: Option<serde_json::Value>,
) -> Proxy {
    let spec = ProxySpec::new(name, control.grpc).forward(&app_ports(apps));
    let proxy = spawn_unready(customize(with_identity(spec, name, dir, id)), name, dir).await;
    let mut doc = server_doc(&proxy, name, app, apps);
    if let Some(status) = status {
        doc["status"] = status;
    }
    let token = register(control, name, &doc).await;
    write_token(dir, name, &token);
    proxy.wait_ready().await;
    proxy
}

/// A meshed server like [`server`], but registered `Ready=False` (no endpoint yet: `weft run`'s
/// order); its sidecar is certified and ready when this returns. [`set_ready`] makes it an
/// endpoint.
pub async fn server_not_ready(
    control: &Control,
    id: &IdentitySource<'_>,
    dir: &Path,
    name: &str,
    app: &str,
    apps: &[(&str, u16)],
    customize: impl FnOnce(ProxySpec) -> ProxySpec,
) -> Proxy {
    let not_ready = serde_json::json!({"conditions": [{"type": "Ready", "status": "False"}]});
    start_server(
        control,
        id,
        dir,
        (name, app, apps),
        customize,
        Some(not_ready),
    )
    .await
}

/// Marks a registered workload `Ready=True` (`PUT .../status`, which keeps its token).
pub async fn set_ready(control: &Control, name: &str) {
    let body = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let (status, answer) = http_request(
        control.api,
        "PUT",
        &format!("/v1/workloads/default/{name}/status"),
        Some(body.to_string()),
    )
    .await
    .unwrap_or_else(|e| panic!("status of {name}: {e}"));
    assert_eq!(status, 200, "status of {name}: {answer}");
}

/// A meshed server like [`server`], discovered through `discovery` but certified by another
/// control plane, `certifier` (which `id` names): registered in both, `certifier`'s token
/// written, ready.
pub async fn server_certified_by(
    discovery: &Control,
    certifier: &Control,
    id: &IdentitySource<'_>,
    dir: &Path,
    name: &str,
    app: &str,
    apps: &[(&str, u16)],
) -> Proxy {
    let spec = ProxySpec::new(name, discovery.grpc).forward(&app_ports(apps));
    let proxy = spawn_unready(with_identity(spec, name, dir, id), name, dir).await;
    let doc = server_doc(&proxy, name, app, apps);
    register(discovery, name, &doc).await;
    let token = register(certifier, name, &doc).await;
    write_token(dir, name, &token);
    proxy.wait_ready().await;
    proxy
}

fn app_ports(apps: &[(&str, u16)]) -> Vec<u16> {
    apps.iter().map(|(_, p)| *p).collect()
}

/// Workload `default/NAME` with label `app=APP`, its ports the proxy's forward ports for `apps`.
fn server_doc(proxy: &Proxy, name: &str, app: &str, apps: &[(&str, u16)]) -> serde_json::Value {
    let ports: Vec<(&str, u16)> = apps
        .iter()
        .map(|(n, p)| (*n, proxy.forward_addr(*p).port()))
        .collect();
    workload_doc("default", name, &[("app", app)], "127.0.0.1", &ports)
}

/// A meshed client: registered with no ports (for its identity), then started with `upstreams`.
pub async fn client(
    control: &Control,
    id: &IdentitySource<'_>,
    dir: &Path,
    name: &str,
    upstreams: &[String],
) -> Proxy {
    client_with(control, id, dir, name, upstreams, |spec| spec).await
}

/// [`client`] with extra settings.
pub async fn client_with(
    control: &Control,
    id: &IdentitySource<'_>,
    dir: &Path,
    name: &str,
    upstreams: &[String],
    customize: impl FnOnce(ProxySpec) -> ProxySpec,
) -> Proxy {
    let doc = workload_doc("default", name, &[("app", name)], "127.0.0.1", &[]);
    let token = register(control, name, &doc).await;
    write_token(dir, name, &token);
    let spec = with_identity(
        ProxySpec::new(name, control.grpc).upstreams(upstreams),
        name,
        dir,
        id,
    );
    let proxy = spawn_unready(customize(spec), name, dir).await;
    proxy.wait_ready().await;
    proxy
}

/// Waits until `f` holds on the proxy's metrics text (bounded), returning the text.
pub async fn metrics_until(proxy: &Proxy, what: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + SOON;
    loop {
        let text = proxy.metrics().await;
        if f(&text) {
            return text;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "{}: timed out waiting for {what}; metrics:\n{text}",
                proxy.proc.name
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Inbound opaque connections the proxy accepted in mTLS from `client_id`.
pub fn inbound_mtls_tcp(metrics: &str, client_id: &str) -> f64 {
    crate::support::metric_sum(
        metrics,
        "tcp_open_total",
        &[
            ("direction", "inbound"),
            ("peer", "src"),
            ("tls", "true"),
            ("client_id", client_id),
        ],
    )
}

/// Outbound connections the proxy opened in mTLS to `server_id`.
pub fn outbound_mtls_tcp(metrics: &str, server_id: &str) -> f64 {
    crate::support::metric_sum(
        metrics,
        "tcp_open_total",
        &[
            ("direction", "outbound"),
            ("peer", "dst"),
            ("tls", "true"),
            ("server_id", server_id),
        ],
    )
}
