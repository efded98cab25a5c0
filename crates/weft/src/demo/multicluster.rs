//! `weft demo --multicluster`: two meshes on one machine, linked as Linkerd links clusters, and
//! a call from one to the other, shown live (docs/multicluster.md, "Walk-through on one
//! machine").
//!
//! - Two in-process control planes, `west` and `east` (`cluster_name`), each with its own store,
//!   API and gRPC port, sharing one trust root: west's CA is generated, east's issuer is signed
//!   by west's anchor (`ca::generate_issuer_for`, what `weft identity init --anchor-dir` does),
//!   both written to CA directories of the demo's temporary directory.
//! - West runs the demo's application (ratings, books, books-v2, web) with `web` and `ratings`
//!   exported (`mirror.linkerd.io/exported: "true"`), its traffic policy applied as in the plain
//!   demo, and its multicluster gateway: a sidecar alone in gateway mode
//!   (`WEFT_PROXY_INBOUND_GATEWAY_SUFFIXES=svc.cluster.local.`), registered as `weft-gateway` in
//!   `weft-multicluster` with Linkerd's gateway labels, its inbound listener as `mc-gateway` and
//!   its admin server as `mc-probe`.
//! - East links to west through the CLI's own code (`weft multicluster link`: west mints the
//!   credential, the Secret and the Link are applied to east), waits for `web-west` and
//!   `ratings-west` to be mirrored and west's gateway to be alive, then runs the traffic
//!   generator, which calls `web-west` (and once a second `ratings-west`) through its sidecar.
//!
//! East's `--control-addr` / `--api-addr` are the flags' (the cluster the user pokes with
//! `weft multicluster gateways --local-api-addr`); west's are ephemeral.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};
use tokio::time::Instant;
use weft_control::ca;
use weft_control::resource::multicluster::{
    self as mc, GATEWAY_COMPONENT_LABEL, GATEWAY_EXTENSION_LABEL, GATEWAY_NAME, GATEWAY_PORT_NAME,
    PROBE_PORT_NAME,
};

use super::app::Name;
use super::{children, IdentityFiles, Spec, Stop, TempDir, Workload, WORKLOADS};
use crate::multicluster::{LinkArgs, LocalApi};

/// The cluster that exports (runs the application and the gateway).
pub const WEST: &str = "west";
/// The cluster that links to west and calls it.
pub const EAST: &str = "east";
/// West's Services exported to east through the gateway.
const EXPORTED: &[&str] = &["web", "ratings"];
/// What east's traffic generator calls: west's web and ratings, mirrored in east.
const TARGET: &str = "web-west";

/// East's workloads: the traffic generator, calling the mirrors of west's services.
const EAST_WORKLOADS: &[Spec] = &[Spec {
    name: "traffic",
    app: Name::Traffic,
    serves: None,
    upstreams: &[],
    app_args: &[
        "--web-url",
        "http://web-west.demo.svc.cluster.local:8080",
        "--ratings-url",
        "http://ratings-west.demo.svc.cluster.local:8080",
    ],
}];

/// How long east may take to mirror west's services and find its gateway alive.
const LINK_TIMEOUT: Duration = Duration::from_secs(30);

/// One cluster of the demo: its control plane and where its sidecars find their identity.
struct Mesh {
    name: &'static str,
    control: weft_control::Running,
    store: PathBuf,
    tokens: PathBuf,
}

impl Mesh {
    fn identity(&self) -> IdentityFiles<'_> {
        IdentityFiles {
            trust_anchors_pem: &self.control.trust_anchors_pem,
            dir: &self.tokens,
        }
    }
}

/// Runs the two meshes until Ctrl-C, SIGTERM or `--duration`.
pub async fn run(args: super::DemoArgs) -> anyhow::Result<()> {
    let mut stop = Stop::install()?;
    let dir = TempDir::create()?;
    write_shared_anchor_cas(&dir.0)?;
    let west = start_mesh(
        &dir.0,
        WEST,
        &super::services_yaml_with(&|_| None, EXPORTED),
        ("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?),
    )
    .await?;
    let east = match start_mesh(&dir.0, EAST, "", (args.control_addr, args.api_addr)).await {
        Ok(east) => east,
        Err(error) => {
            let _ = west.control.shutdown().await;
            return Err(error);
        }
    };
    let outcome = tokio::select! {
        started = launch_all(&west, &east, args.rps) => match started {
            Ok(mut workloads) => {
                let about = format!(
                    "{} rps from {EAST} to {TARGET}; {}; {}",
                    args.rps,
                    describe(&east),
                    describe(&west)
                );
                let outcome =
                    super::watch(&args, &mut workloads, &mut stop, &about, &west.store).await;
                super::stop_all(workloads).await;
                outcome
            }
            Err(error) => Err(error),
        },
        () = stop.wait() => Ok(()),
    };
    for mesh in [east, west] {
        if let Err(error) = mesh.control.shutdown().await {
            tracing::warn!(%error, cluster = mesh.name, "control plane did not stop cleanly");
        }
    }
    outcome
}

/// The two clusters' CAs under `dir/<cluster>-ca`: west's anchor and issuer, and east's issuer
/// signed by west's anchor, so each cluster's proxies verify the other's. West's anchor key is
/// not kept (no other issuer is needed).
fn write_shared_anchor_cas(dir: &Path) -> anyhow::Result<()> {
    let (trust_domain, namespace) = ("cluster.local", "weft");
    let west = ca::generate(trust_domain, namespace).context("generating west's CA")?;
    let east = ca::generate_issuer_for(
        &west.anchor_cert_pem,
        &west.anchor_key_pem,
        &ca::issuer_name(trust_domain, namespace),
    )
    .context("signing east's issuer with west's anchor")?;
    let west = ca::Generated {
        anchor_key_pem: String::new(),
        ..west
    };
    for (cluster, generated) in [(WEST, west), (EAST, east)] {
        let ca_dir = ca_dir(dir, cluster);
        ca::write_dir(&ca_dir, &generated)
            .with_context(|| format!("writing {}", ca_dir.display()))?;
    }
    Ok(())
}

/// A cluster's control plane, for the live table's header.
fn describe(mesh: &Mesh) -> String {
    format!(
        "{}: control plane {} (gRPC) {} (API)",
        mesh.name, mesh.control.grpc_addr, mesh.control.api_addr
    )
}

fn ca_dir(dir: &Path, cluster: &str) -> PathBuf {
    dir.join(format!("{cluster}-ca"))
}

/// Starts one cluster's control plane on `(grpc, api)`, its store `dir/<name>/store` holding
/// `services` (if any), its CA from [`write_shared_anchor_cas`].
async fn start_mesh(
    dir: &Path,
    name: &'static str,
    services: &str,
    (grpc, api): (SocketAddr, SocketAddr),
) -> anyhow::Result<Mesh> {
    let store = dir.join(name).join("store");
    let tokens = dir.join(name).join("tokens");
    for d in [&store, &tokens] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    if !services.is_empty() {
        std::fs::write(store.join("services.yaml"), services)
            .with_context(|| format!("writing {name}'s store"))?;
    }
    let control = weft_control::start(weft_control::Config {
        identity_dir: Some(ca_dir(dir, name)),
        cluster_name: Some(name.to_string()),
        ..super::control_config(&store, grpc, api)
    })
    .await
    .with_context(|| format!("starting {name}'s control plane"))?;
    eprintln!(
        "weft demo: {name}: control plane on {} (gRPC), {} (API); store {}",
        control.grpc_addr,
        control.api_addr,
        store.display()
    );
    Ok(Mesh {
        name,
        control,
        store,
        tokens,
    })
}

/// West's application and gateway, the link, then east's traffic generator: every workload, in
/// start order.
async fn launch_all(west: &Mesh, east: &Mesh, rps: f64) -> anyhow::Result<Vec<Workload>> {
    let proxy_bin = children::proxy_binary()?;
    let weft_bin = std::env::current_exe().context("locating the weft executable")?;
    let mut workloads = Vec::new();
    // West runs the plain demo's application; its traffic generator is east's.
    for spec in WORKLOADS.iter().filter(|s| s.app != Name::Traffic) {
        workloads.push(launch(west, spec, &proxy_bin, &weft_bin, rps).await?);
    }
    workloads.push(launch_gateway(west, &proxy_bin).await?);
    link(west, east).await?;
    for spec in EAST_WORKLOADS {
        workloads.push(launch(east, spec, &proxy_bin, &weft_bin, rps).await?);
    }
    Ok(workloads)
}

/// One workload of `mesh`, started as the plain demo starts it.
async fn launch(
    mesh: &Mesh,
    spec: &Spec,
    proxy_bin: &Path,
    weft_bin: &Path,
    rps: f64,
) -> anyhow::Result<Workload> {
    let (grpc, api) = (mesh.control.grpc_addr, mesh.control.api_addr);
    let mut workload =
        super::workloads::launch(spec, proxy_bin, weft_bin, grpc, api, rps, &mesh.identity())
            .await
            .with_context(|| format!("starting {}'s workload {}", mesh.name, spec.name))?;
    workload.cluster = Some(mesh.name);
    eprintln!(
        "weft demo: {}: {} running (proxy admin {})",
        mesh.name, workload.name, workload.listening.admin
    );
    Ok(workload)
}

/// The multicluster gateway of `mesh`: a sidecar alone whose inbound listener forwards what
/// linked clusters send to the services of `mesh` they name, registered with Linkerd's gateway
/// labels so that `mesh`'s credentials answer names it (address, port, identity, probe).
async fn launch_gateway(mesh: &Mesh, proxy_bin: &Path) -> anyhow::Result<Workload> {
    let namespace = mc::DEFAULT_LINK_NAMESPACE;
    let token_file = mesh.tokens.join(format!("{GATEWAY_NAME}.token"));
    let mut proxy = super::workloads::proxy_command(
        proxy_bin,
        mesh.control.grpc_addr,
        (namespace, GATEWAY_NAME),
        &token_file,
        &mesh.identity(),
    );
    let (suffixes, value) = crate::run::gateway_env("cluster.local");
    proxy.env(suffixes, value);
    let (proxy, listening) = super::workloads::spawn_proxy(proxy, proxy_bin, GATEWAY_NAME).await?;
    let inbound = listening
        .inbound
        .context("the gateway's proxy reported no inbound listener")?;
    let document = gateway_document(
        super::workload_document(
            GATEWAY_NAME,
            Some((GATEWAY_PORT_NAME, inbound)),
            listening.admin,
            listening.tap,
        ),
        listening.admin,
    );
    let registered =
        super::workloads::register(mesh.control.api_addr, GATEWAY_NAME, &document).await?;
    crate::run::identity::write_atomically(&token_file, &registered.token, None)?;
    super::wait_ready(listening.admin).await;
    eprintln!(
        "weft demo: {}: {GATEWAY_NAME} (multicluster gateway) on {inbound} as {} (proxy admin {})",
        mesh.name, registered.identity, listening.admin
    );
    Ok(Workload {
        name: GATEWAY_NAME,
        cluster: Some(mesh.name),
        proxy,
        app: None,
        listening,
    })
}

/// A demo workload's ExternalWorkload made the gateway's: in `weft-multicluster`, with Linkerd's
/// gateway labels and its admin server also as the probe port.
fn gateway_document(mut document: Value, admin: SocketAddr) -> Value {
    document["metadata"]["namespace"] = json!(mc::DEFAULT_LINK_NAMESPACE);
    let labels = &mut document["metadata"]["labels"];
    for (k, v) in [GATEWAY_EXTENSION_LABEL, GATEWAY_COMPONENT_LABEL] {
        labels[k] = json!(v);
    }
    if let Some(ports) = document["spec"]["ports"].as_array_mut() {
        ports.push(json!({"name": PROBE_PORT_NAME, "port": admin.port()}));
    }
    document
}

/// Links east to west as `weft multicluster link --name west` does, then waits until east
/// mirrors west's exported services and finds its gateway alive.
async fn link(west: &Mesh, east: &Mesh) -> anyhow::Result<()> {
    let args = LinkArgs {
        name: WEST.into(),
        remote_api: west.control.api_addr,
        local: LocalApi {
            addr: east.control.api_addr,
        },
        credential_name: Some(EAST.into()),
        namespace: mc::DEFAULT_LINK_NAMESPACE.into(),
        gateway_addr: None,
        gateway_identity: None,
        probe_period: Duration::from_secs(1),
        print: false,
    };
    let yaml = crate::multicluster::link_yaml(&args).await?;
    let (status, answer) = args
        .local
        .api()
        .call(hyper::Method::POST, "/v1/resources?file=link", yaml)
        .await?;
    let failed = answer["results"]
        .as_array()
        .is_none_or(|results| results.iter().any(|r| r["error"].is_string()));
    anyhow::ensure!(
        status.is_success() && !failed,
        "applying the link to {EAST}: {status} {answer}"
    );
    let deadline = Instant::now() + LINK_TIMEOUT;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok(links) = args.local.api().json("/v1/multicluster/links").await {
            if links_ready(&links) {
                eprintln!(
                    "weft demo: {EAST} linked to {WEST}: {} mirrored, gateway alive",
                    EXPORTED
                        .iter()
                        .map(|s| format!("{s}-{WEST}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return Ok(());
            }
            last = links;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{EAST} did not mirror {WEST}'s services within {LINK_TIMEOUT:?}: {last}")
}

/// Whether `GET /v1/multicluster/links` shows the link to west connected, with every exported
/// service mirrored and the gateway alive.
fn links_ready(links: &Value) -> bool {
    links.as_array().is_some_and(|rows| {
        rows.iter().any(|l| {
            l["name"] == WEST
                && l["connected"] == true
                && l["gatewayAlive"] == true
                && l["mirroredServices"].as_u64() >= Some(EXPORTED.len() as u64)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_is_registered_as_linkerd_labels_it() {
        let admin: SocketAddr = "127.0.0.1:42000".parse().expect("addr");
        let doc = gateway_document(
            super::super::workload_document(
                GATEWAY_NAME,
                Some((GATEWAY_PORT_NAME, "127.0.0.1:41000".parse().expect("addr"))),
                admin,
                None,
            ),
            admin,
        );
        assert_eq!(doc["metadata"]["namespace"], "weft-multicluster");
        assert_eq!(
            doc["metadata"]["labels"]["linkerd.io/extension"],
            "multicluster"
        );
        assert_eq!(doc["metadata"]["labels"]["component"], "gateway");
        assert_eq!(
            doc["spec"]["ports"],
            json!([{"name": "mc-gateway", "port": 41000},
                   {"name": "linkerd-admin", "port": 42000},
                   {"name": "mc-probe", "port": 42000}])
        );
        // Its identity is the one every sidecar trusts to forward callers' identities.
        assert_eq!(
            super::super::workloads::identity_in(mc::DEFAULT_LINK_NAMESPACE, GATEWAY_NAME),
            mc::gateway_identity(&weft_control::resource::Defaults::default())
        );
    }

    #[test]
    fn west_exports_what_east_calls() {
        let yaml = super::super::services_yaml_with(&|_| None, EXPORTED);
        assert_eq!(
            yaml.matches("mirror.linkerd.io/exported: \"true\"").count(),
            EXPORTED.len()
        );
        let (docs, errors) = weft_control::documents::parse_yaml_file(
            "services.yaml",
            &yaml,
            &weft_control::resource::Defaults::default(),
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(docs.len(), 4);
        for arg in EAST_WORKLOADS[0]
            .app_args
            .iter()
            .filter(|a| a.starts_with("http"))
        {
            let mirror = arg.trim_start_matches("http://").split('.').next();
            let name = mirror.and_then(|m| m.strip_suffix("-west")).expect(arg);
            assert!(EXPORTED.contains(&name), "{arg}");
        }
    }

    #[test]
    fn the_link_is_ready_once_mirrored_with_a_live_gateway() {
        let row = |connected, alive, mirrored| {
            json!([{"name": "west", "connected": connected, "gatewayAlive": alive,
                    "mirroredServices": mirrored}])
        };
        assert!(links_ready(&row(true, true, 2)));
        assert!(!links_ready(&row(true, false, 2)));
        assert!(!links_ready(&row(false, true, 2)));
        assert!(!links_ready(&row(true, true, 1)));
        assert!(!links_ready(&json!([])));
    }
}
