//! The demo's workloads on loopback: each one's sidecar (`weft-proxy`, every listener on an
//! ephemeral port of 127.0.0.1), its registration with the demo's control plane (its
//! ExternalWorkload, whose answer is the sidecar's Certify token), its application once the
//! sidecar is ready, and stopping them.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use tokio::process::Child;
use tokio::time::Instant;
use weft_proxy::config;

use super::app::{self, Name};
use super::children::{self, ProxyListening};
use super::{http, Spec, NAMESPACE, WORKLOADS};

/// The ExternalWorkload registered for a workload whose sidecar forwards `port_name` at `addr`
/// (a client-only workload serves nothing but is registered all the same, for its identity),
/// with its sidecar's admin port (the control plane scrapes it) and tap port (`weft tap` and
/// `weft top` reach it through the control plane), when it runs a tap server. Every sidecar of
/// the demo listens on 127.0.0.1, so they are on the workload's IP.
pub(super) fn workload_document(
    name: &str,
    serves: Option<(&str, SocketAddr)>,
    admin: SocketAddr,
    tap: Option<SocketAddr>,
) -> serde_json::Value {
    let mut sidecar = vec![
        serde_json::json!({"name": weft_control::resource::ADMIN_PORT_NAME, "port": admin.port()}),
    ];
    if let Some(tap) = tap {
        sidecar.push(
            serde_json::json!({"name": weft_control::resource::TAP_PORT_NAME, "port": tap.port()}),
        );
    }
    let (ip, ports) = match serves {
        Some((port_name, addr)) => {
            let mut ports = vec![serde_json::json!({"name": port_name, "port": addr.port()})];
            ports.extend(sidecar);
            (addr.ip(), ports)
        }
        None => (admin.ip(), sidecar),
    };
    serde_json::json!({
        "apiVersion": "workload.linkerd.io/v1beta1",
        "kind": "ExternalWorkload",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name}},
        "spec": {"workloadIPs": [{"ip": ip.to_string()}], "ports": ports},
    })
}

/// The identity the control plane derives for a demo workload (no `meshTLS` override).
pub(super) fn workload_identity(name: &str) -> String {
    identity_in(NAMESPACE, name)
}

/// The identity the demo's control plane derives for workload `name` of `namespace`.
pub(super) fn identity_in(namespace: &str, name: &str) -> String {
    format!("{name}.{namespace}.serviceaccount.identity.weft.cluster.local")
}

/// What a sidecar needs to obtain its certificate.
pub(super) struct IdentityFiles<'a> {
    pub(super) trust_anchors_pem: &'a str,
    /// Where tokens are written (the demo's temporary directory).
    pub(super) dir: &'a Path,
}

/// A running workload: its sidecar and its application process (none for a multicluster
/// gateway, which is a sidecar alone).
pub(super) struct Workload {
    pub(super) name: &'static str,
    /// The cluster it belongs to, with `--multicluster` (shown in the live table).
    pub(super) cluster: Option<&'static str>,
    pub(super) proxy: Child,
    pub(super) app: Option<Child>,
    pub(super) listening: ProxyListening,
}

/// Starts every workload in order.
pub(super) async fn launch_all(
    grpc: SocketAddr,
    api: SocketAddr,
    rps: f64,
    identity: &IdentityFiles<'_>,
) -> anyhow::Result<Vec<Workload>> {
    let proxy_bin = children::proxy_binary()?;
    let weft_bin = std::env::current_exe().context("locating the weft executable")?;
    let mut workloads = Vec::new();
    for spec in WORKLOADS {
        let workload = launch(spec, &proxy_bin, &weft_bin, grpc, api, rps, identity)
            .await
            .with_context(|| format!("starting workload {}", spec.name))?;
        eprintln!(
            "weft demo: {} running (proxy admin {})",
            workload.name, workload.listening.admin
        );
        workloads.push(workload);
    }
    Ok(workloads)
}

/// Starts one workload's sidecar, registers it, waits for the sidecar to be ready (it holds its
/// certificate), then starts the app.
pub(super) async fn launch(
    spec: &Spec,
    proxy_bin: &Path,
    weft_bin: &Path,
    grpc: SocketAddr,
    api: SocketAddr,
    rps: f64,
    identity: &IdentityFiles<'_>,
) -> anyhow::Result<Workload> {
    let name = spec.name;
    // Written after registration; until then the sidecar's Certify attempts fail and retry.
    let token_file = identity.dir.join(format!("{name}.token"));
    // The app's port is reserved here and its socket handed to the app, because the sidecar must
    // know where to forward before the app (which needs the sidecar's ports) can start.
    let app_listener = match spec.serves {
        Some(_) => Some(std::net::TcpListener::bind("127.0.0.1:0").context("reserving app port")?),
        None => None,
    };
    let app_port = app_listener
        .as_ref()
        .map(|l| l.local_addr().map(|a| a.port()))
        .transpose()?;

    let mut proxy = proxy_command(proxy_bin, grpc, (NAMESPACE, name), &token_file, identity);
    proxy
        .env(
            config::ENV_INBOUND_FORWARD_PORTS,
            app_port.map(|p| p.to_string()).unwrap_or_default(),
        )
        .env(config::ENV_OUTBOUND_UPSTREAMS, spec.upstreams.join(","));
    let (proxy, listening) = spawn_proxy(proxy, proxy_bin, name).await?;

    let mut app = children::command(weft_bin, app_listener.as_ref());
    app.arg("demo-service")
        .arg(spec.app.as_str())
        .env("HTTP_PROXY", format!("http://{}", listening.outbound))
        .stdout(Stdio::null());
    if app_listener.is_some() {
        app.args(["--listen-fd", &children::LISTEN_FD.to_string()]);
    }
    if spec.app == Name::Traffic {
        app.args(["--rps", &rps.to_string()]);
    }
    app.args(spec.app_args);
    for upstream in &listening.upstreams {
        if upstream.authority == app::BOOKS_AUTHORITY {
            app.env("BOOKS_ADDR", upstream.addr.to_string());
        }
    }
    let serves = match (spec.serves, app_port) {
        (Some((port_name, _)), Some(app_port)) => {
            let forward = listening
                .forward
                .iter()
                .find(|f| f.app_port == app_port)
                .with_context(|| format!("{name} proxy reported no forward port for {app_port}"))?;
            Some((port_name, forward.addr))
        }
        _ => None,
    };
    let registered = register(
        api,
        name,
        &workload_document(name, serves, listening.admin, listening.tap),
    )
    .await?;
    anyhow::ensure!(
        registered.identity == workload_identity(name),
        "{name} was registered as {}, but its sidecar asks for {}",
        registered.identity,
        workload_identity(name)
    );
    crate::run::identity::write_atomically(&token_file, &registered.token, None)?;
    // Proxy-await, as `weft run` does: the app starts once its sidecar holds its certificate, so
    // its first request already leaves over mTLS. (Its port accepts meanwhile: the reserved
    // listener queues connections until the app takes it over.)
    wait_ready(listening.admin).await;
    let app = app.spawn().context("spawning the demo service")?;
    // The child has its copy; ours must close so only the app accepts on it.
    drop(app_listener);
    Ok(Workload {
        name,
        cluster: None,
        proxy,
        app: Some(app),
        listening,
    })
}

/// A demo sidecar of workload `NS:NAME` on loopback (every listener on an ephemeral port), with
/// the demo control plane's identities, the cluster's multicluster gateway trusted to forward its
/// callers' identities (as `weft run` sets it), and its own identity: the name the control plane
/// derives for the workload, its token read from `token_file` once registered.
pub(super) fn proxy_command(
    proxy_bin: &Path,
    grpc: SocketAddr,
    (namespace, name): (&str, &str),
    token_file: &Path,
    identity: &IdentityFiles<'_>,
) -> tokio::process::Command {
    let defaults = weft_control::resource::Defaults::default();
    let mut proxy = children::command(proxy_bin, None);
    proxy
        .env(config::ENV_DESTINATION_SVC_ADDR, grpc.to_string())
        .env(config::ENV_POLICY_WORKLOAD, format!("{namespace}:{name}"))
        .env(config::ENV_INBOUND_LISTEN_ADDR, "127.0.0.1:0")
        .env(config::ENV_OUTBOUND_LISTEN_ADDR, "127.0.0.1:0")
        .env(config::ENV_ADMIN_LISTEN_ADDR, "127.0.0.1:0")
        .env(config::ENV_TAP_LISTEN_ADDR, "127.0.0.1:0")
        .env(
            config::ENV_TAP_SVC_NAME,
            weft_control::resource::tap_identity(&defaults),
        )
        .env(
            config::ENV_DESTINATION_SVC_NAME,
            weft_control::resource::control_identity(&defaults),
        )
        .env(
            config::ENV_INBOUND_TRUSTED_GATEWAY_IDENTITIES,
            weft_control::resource::multicluster::gateway_identity(&defaults),
        )
        .env(config::ENV_IDENTITY_TOKEN_FILE, token_file)
        .env(
            config::ENV_IDENTITY_LOCAL_NAME,
            identity_in(namespace, name),
        )
        .env(
            config::ENV_IDENTITY_TRUST_ANCHORS,
            identity.trust_anchors_pem,
        )
        .stdout(Stdio::piped());
    proxy.envs(children::quiet_proxy_log());
    proxy
}

/// Spawns a sidecar and waits for the line saying where it listens.
pub(super) async fn spawn_proxy(
    mut proxy: tokio::process::Command,
    proxy_bin: &Path,
    name: &str,
) -> anyhow::Result<(Child, ProxyListening)> {
    let mut proxy = proxy
        .spawn()
        .with_context(|| format!("spawning {}", proxy_bin.display()))?;
    let listening = children::read_listening(&mut proxy, &format!("{name} proxy")).await?;
    Ok((proxy, listening))
}

/// What the registration API answers: the workload's identity and its Certify token.
#[derive(serde::Deserialize)]
pub(super) struct Registered {
    pub(super) identity: String,
    pub(super) token: String,
}

/// Writes a token readable only by this user (temporary file + rename, so the sidecar never
/// reads half of it).
pub(super) async fn register(
    api: SocketAddr,
    name: &str,
    document: &serde_json::Value,
) -> anyhow::Result<Registered> {
    let namespace = document["metadata"]["namespace"]
        .as_str()
        .unwrap_or(NAMESPACE);
    let request = hyper::Request::put(format!("/v1/workloads/{namespace}/{name}"))
        .header(hyper::header::HOST, api.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(document.to_string())))?;
    let response = http::send(api, request)
        .await
        .context("registering the workload")?;
    anyhow::ensure!(
        response.status().is_success(),
        "registering {name}: {} {}",
        response.status(),
        String::from_utf8_lossy(response.body())
    );
    serde_json::from_slice(response.body())
        .with_context(|| format!("registering {name}: unexpected answer"))
}

/// Polls the proxy's `/ready` for a while; a proxy that stays unready is reported, not fatal: the
/// table will show what it does.
pub(super) async fn wait_ready(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(response) = http::get(admin, "/ready").await {
            if response.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("weft demo: proxy {admin} is still not ready after 10s");
}

/// Completes when any child process exits, naming it.
pub(super) async fn first_exit(workloads: &mut [Workload]) -> (String, String) {
    let waits = workloads.iter_mut().flat_map(|w| {
        let name = w.name;
        let proxy = Box::pin(describe_exit(format!("{name} proxy"), &mut w.proxy))
            as std::pin::Pin<Box<dyn std::future::Future<Output = (String, String)> + Send + '_>>;
        let app = w.app.as_mut().map(|app| {
            Box::pin(describe_exit(format!("{name} app"), app))
                as std::pin::Pin<
                    Box<dyn std::future::Future<Output = (String, String)> + Send + '_>,
                >
        });
        std::iter::once(proxy).chain(app)
    });
    futures_util::future::select_all(waits).await.0
}

pub(super) async fn describe_exit(what: String, child: &mut Child) -> (String, String) {
    let status = match child.wait().await {
        Ok(status) => status.to_string(),
        Err(error) => error.to_string(),
    };
    (what, status)
}

/// Stops the traffic first so the last requests are not counted as failures, then the rest.
pub(super) async fn stop_all(workloads: Vec<Workload>) {
    for mut workload in workloads.into_iter().rev() {
        for child in workload.app.iter_mut().chain([&mut workload.proxy]) {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_document_points_at_the_forward_port_and_the_admin() {
        let admin: SocketAddr = "127.0.0.1:42000".parse().expect("addr");
        let doc = workload_document(
            "web",
            Some(("http", "127.0.0.1:41000".parse().expect("addr"))),
            admin,
            Some("127.0.0.1:43000".parse().expect("addr")),
        );
        assert_eq!(doc["metadata"]["labels"]["app"], "web");
        assert_eq!(
            doc["spec"]["ports"],
            serde_json::json!([{"name": "http", "port": 41000},
                               {"name": "linkerd-admin", "port": 42000},
                               {"name": "linkerd-tap", "port": 43000}])
        );
        assert_eq!(doc["spec"]["workloadIPs"][0]["ip"], "127.0.0.1");
        // A client-only workload is registered for its identity (and its metrics): only the
        // admin port.
        let doc = workload_document("traffic", None, admin, None);
        assert_eq!(
            doc["spec"]["ports"],
            serde_json::json!([{"name": "linkerd-admin", "port": 42000}])
        );
        assert_eq!(doc["spec"]["workloadIPs"][0]["ip"], "127.0.0.1");
    }

    #[test]
    fn sidecars_ask_for_the_identity_the_control_plane_derives() {
        assert_eq!(
            workload_identity("web"),
            "web.demo.serviceaccount.identity.weft.cluster.local"
        );
    }
}
