//! `weft demo --cluster` (root): the demo application in transparent mode, every workload in a
//! pod of its own, built by `weft run`'s code.
//!
//! ```text
//!  host namespace: this process, the control plane (127.0.0.1), a relay per proxy admin port
//!  node namespace weft-run-demo-node-<pid>: ip_forward, gateway 198.18.0.1 on every pod veth
//!    ├─ veth-ratings ── pod weft-run-demo-ratings-<pid>  198.18.0.10  ratings :8080
//!    ├─ veth-books   ── pod weft-run-demo-books-<pid>    198.18.0.11  books   :9090
//!    ├─ veth-books-v2 ─ pod weft-run-demo-books-v2-<pid> 198.18.0.12  books   :9090
//!    ├─ veth-web     ── pod weft-run-demo-web-<pid>      198.18.0.13  web     :8080
//!    └─ veth-traffic ── pod weft-run-demo-traffic-<pid>  198.18.0.14  traffic
//!  Services: web 198.19.0.10, books 198.19.0.11, ratings 198.19.0.12, books-v2 198.19.0.13
//!  (spec.clusterIP)
//! ```
//!
//! Each workload is what `weft run --name NAME --namespace demo --port NAME=PORT ... --
//! weft demo-service NAME ...` makes ([`run::start_in_pod`]): the `weft init` rules, `weft-proxy`
//! as uid 2102 with its identity (token and trust-anchors files in the pod's state directory, so
//! every edge is mTLS), the control plane relayed into the pod on loopback, the app, the
//! registration.
//! The apps have no proxy settings: web calls `http://ratings:8080` and dials `books:9090`, names
//! the pod's hosts file maps to the Services' cluster IPs, and iptables hands every connection to
//! the sidecar. The pods hang off a "node" namespace of their own, so nothing (no link, address,
//! route or rule) is added to the host's namespace. The proxies' admin servers listen on port
//! 4191 of their pods (registered as each workload's `linkerd-admin` port, as `weft run` does);
//! each gets a relay on the host's loopback to 127.0.0.1:4191 inside, which is the `admin`
//! address the demo scrapes and reports, as in the plain demo. The control plane, in the host's
//! namespace, has no route to the pods: its own telemetry (`weft stat`) shows these workloads
//! as stale.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args as _, FromArgMatches as _};

use super::children::ProxyListening;
use super::{app::Name, Spec, Stop, TempDir, Workload, NAMESPACE, WORKLOADS};
use crate::run::pod::{self, Addressing, Pod};
use crate::run::{self, Relay, RunArgs};

/// The gateway every pod routes through: the node side of each pod's veth.
const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Where `weft run` puts the proxy's admin server inside a pod.
const POD_ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4191);
/// The uid the proxies run as (`weft run`'s default, which `weft init` exempts).
const PROXY_UID: u32 = 2102;
const CLUSTER_DOMAIN: &str = "cluster.local";

/// The cluster IP of each demo Service (198.19.0.0/16 by convention, see
/// docs/transparent-mode.md).
fn cluster_ip(service: &str) -> Option<Ipv4Addr> {
    match service {
        "web" => Some(Ipv4Addr::new(198, 19, 0, 10)),
        "books" => Some(Ipv4Addr::new(198, 19, 0, 11)),
        "ratings" => Some(Ipv4Addr::new(198, 19, 0, 12)),
        "books-v2" => Some(Ipv4Addr::new(198, 19, 0, 13)),
        _ => None,
    }
}

/// The address of the `index`-th pod (in [`WORKLOADS`] order).
fn pod_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + index as u8)
}

/// Refuses to start without root, pointing at the demo that needs none.
fn check_root(euid: u32) -> anyhow::Result<()> {
    if euid != 0 {
        bail!(
            "weft demo --cluster needs root (it creates network namespaces, veth pairs and \
             iptables rules); run plain `weft demo` for the same application on loopback without \
             root"
        );
    }
    Ok(())
}

/// Runs the demo in pods until Ctrl-C, SIGTERM or `--duration`, then removes everything.
pub async fn run(args: super::DemoArgs) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    check_root(unsafe { libc::geteuid() })?;
    anyhow::ensure!(
        args.control_addr.ip().is_loopback(),
        "--cluster: --control-addr must be a loopback address (it is relayed into every pod)"
    );
    let mut stop = Stop::install()?;
    let etc_netns_existed = Path::new("/etc/netns").exists();
    let store = TempDir::create()?;
    std::fs::write(
        store.0.join("services.yaml"),
        super::services_yaml_with(&cluster_ip, &[]),
    )
    .context("writing the demo store")?;

    let control = super::start_control(&args, &store.0, None).await?;
    let (grpc, api) = (control.grpc_addr, control.api_addr);
    eprintln!(
        "weft demo: control plane on {grpc} (gRPC), {api} (API); store {}",
        store.0.display()
    );
    eprintln!(
        "weft demo: web dashboard on {} (weft dashboard --api-addr {api})",
        crate::dashboard::url(api)
    );
    let setup = Setup {
        grpc,
        api,
        rps: args.rps,
        weft_bin: std::env::current_exe().context("locating the weft executable")?,
    };

    let outcome = match Node::create() {
        Ok(node) => {
            // Stopped during start-up: what was started so far is removed as it drops.
            let outcome = tokio::select! {
                started = launch_all(&setup, &node) => match started {
                    Ok(mut cluster) => {
                        let outcome = super::watch(
                            &args,
                            &mut cluster.workloads,
                            &mut stop,
                            &super::about(args.rps, "web", grpc, api),
                            &store.0,
                        )
                        .await;
                        cluster.stop().await;
                        outcome
                    }
                    Err(error) => Err(error),
                },
                () = stop.wait() => Ok(()),
            };
            drop(node);
            outcome
        }
        Err(error) => Err(error),
    };
    if let Err(error) = control.shutdown().await {
        tracing::warn!(%error, "control plane did not stop cleanly");
    }
    if !etc_netns_existed {
        // Only if empty: a `weft run` started meanwhile may be using it.
        let _ = std::fs::remove_dir("/etc/netns");
    }
    outcome
}

/// What every workload's start needs.
struct Setup {
    grpc: SocketAddr,
    api: SocketAddr,
    rps: f64,
    weft_bin: std::path::PathBuf,
}

/// The namespace the pods' veths hang off: the demo's own "host", with forwarding between pods
/// and no route anywhere else. Deleted on drop (which also deletes the node side of every veth).
struct Node {
    netns: String,
}

impl Node {
    fn create() -> anyhow::Result<Node> {
        // A namespace of a killed earlier run with our pid would make `ip netns add` fail.
        pod::sweep_stale();
        let netns = pod::netns_name("demo-node");
        pod::sh("ip", &["netns", "add", &netns])?;
        let node = Node { netns };
        pod::sh("ip", &["-n", &node.netns, "link", "set", "lo", "up"])?;
        pod::sh(
            "ip",
            &[
                "netns",
                "exec",
                &node.netns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )
        .context("enabling forwarding in the demo's node namespace")?;
        Ok(node)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        pod::remove(&self.netns, None, None);
    }
}

/// The running demo. Fields drop in order: processes first, then the relays and pods.
struct Cluster {
    workloads: Vec<Workload>,
    pods: Vec<PodParts>,
}

/// What keeps one workload's pod up besides its processes (the relays stop when dropped).
struct PodParts {
    admin_relay: Relay,
    _control_relay: Vec<Relay>,
    _anchors_refresh: Option<Relay>,
    pod: Arc<Pod>,
}

impl Cluster {
    /// Stops the processes (traffic first, as the plain demo does), then removes the pods.
    async fn stop(self) {
        let Cluster { workloads, pods } = self;
        super::stop_all(workloads).await;
        for PodParts {
            mut admin_relay,
            pod,
            ..
        } in pods.into_iter().rev()
        {
            // The relay's accept loop holds a reference to the pod: once it is cancelled, the
            // pod is removed right here (an in-flight scrape would only delay that a moment).
            admin_relay.0.abort();
            let _ = (&mut admin_relay.0).await;
            drop(pod);
        }
    }
}

/// Starts every workload in order, each in its pod.
async fn launch_all(setup: &Setup, node: &Node) -> anyhow::Result<Cluster> {
    let mut cluster = Cluster {
        workloads: Vec::new(),
        pods: Vec::new(),
    };
    for (index, spec) in WORKLOADS.iter().enumerate() {
        let (workload, parts) = launch(setup, node, index, spec)
            .await
            .with_context(|| format!("starting workload {}", spec.name))?;
        eprintln!(
            "weft demo: {} running in pod {} at {} (proxy admin {}, relayed to {POD_ADMIN} inside)",
            workload.name, parts.pod.netns, parts.pod.addressing.ip, workload.listening.admin
        );
        cluster.workloads.push(workload);
        cluster.pods.push(parts);
    }
    Ok(cluster)
}

/// Builds one pod, starts its workload with `weft run`'s code (which also gives the sidecar its
/// identity) and waits for it to be ready (which includes holding a certificate).
async fn launch(
    setup: &Setup,
    node: &Node,
    index: usize,
    spec: &Spec,
) -> anyhow::Result<(Workload, PodParts)> {
    let name = spec.name;
    let addressing = Addressing {
        ip: pod_ip(index),
        gateway: GATEWAY,
    };
    let pod = Arc::new(Pod::create_in(
        &format!("demo-{name}"),
        addressing,
        &node.netns,
        &format!("veth-{name}"),
    )?);
    pod.write_hosts(&hosts_file(name, addressing.ip))?;

    let mut args = run_args(&workload_argv(setup, index, spec))?;
    args.proxy_env.extend(
        super::children::quiet_proxy_log().map(|(name, value)| (name.into(), value.into())),
    );
    // The demo stops between workloads, not inside one's start-up.
    let running = run::start_in_pod(&args, &pod, std::future::pending())
        .await?
        .context("start-up interrupted")?;
    let admin = admin_relay(pod.clone()).await?;
    super::wait_ready(admin.0).await;
    let run::Running {
        proxy,
        cmd,
        control_relay,
        anchors_refresh,
        ..
    } = running;
    let workload = Workload {
        name,
        proxy,
        cluster: None,
        app: Some(cmd),
        listening: ProxyListening {
            // Inside the pod; only the admin address is used by the demo.
            inbound: None,
            outbound: SocketAddr::from((Ipv4Addr::LOCALHOST, 4140)),
            admin: admin.0,
            forward: Vec::new(),
            upstreams: Vec::new(),
            // `weft run` registered the pod's tap server (4190) itself.
            tap: None,
        },
    };
    let parts = PodParts {
        admin_relay: Relay(admin.1),
        _control_relay: control_relay,
        _anchors_refresh: anchors_refresh,
        pod,
    };
    Ok((workload, parts))
}

/// The `weft run` command line of a demo workload (parsed by `weft run`'s own flag definitions,
/// so the defaults are the same).
fn workload_argv(setup: &Setup, index: usize, spec: &Spec) -> Vec<OsString> {
    let name = spec.name;
    let mut argv: Vec<OsString> = ["weft run", "--name", name, "--namespace", NAMESPACE]
        .iter()
        .map(OsString::from)
        .collect();
    let mut flag = |flag: &str, value: String| {
        argv.push(flag.into());
        argv.push(value.into());
    };
    if let Some((port_name, port)) = spec.serves {
        flag("--port", format!("{port_name}={port}"));
    }
    flag(
        "--control",
        SocketAddr::from((Ipv4Addr::LOCALHOST, setup.grpc.port())).to_string(),
    );
    flag("--control-api", setup.api.to_string());
    flag("--cluster-domain", CLUSTER_DOMAIN.into());
    flag("--pod-ip", pod_ip(index).to_string());
    flag("--gateway", GATEWAY.to_string());
    flag("--proxy-uid", PROXY_UID.to_string());
    argv.push("--".into());
    // No proxy settings reach the app, even if this shell has some.
    argv.extend(["env", "-u", "HTTP_PROXY", "-u", "http_proxy"].map(OsString::from));
    argv.push(setup.weft_bin.clone().into());
    argv.extend(["demo-service", spec.app.as_str()].map(OsString::from));
    if let Some((_, port)) = spec.serves {
        argv.push("--listen".into());
        argv.push(format!("0.0.0.0:{port}").into());
    }
    match spec.app {
        Name::Web => {
            argv.extend(
                [
                    "--ratings-url",
                    "http://ratings:8080",
                    "--books-addr",
                    "books:9090",
                ]
                .map(OsString::from),
            );
        }
        Name::Traffic => {
            argv.extend(["--web-url", "http://web:8080", "--rps"].map(OsString::from));
            argv.push(setup.rps.to_string().into());
        }
        Name::Ratings | Name::Books => {}
    }
    argv
}

fn run_args(argv: &[OsString]) -> anyhow::Result<RunArgs> {
    let command = RunArgs::augment_args(clap::Command::new("weft run"));
    let matches = command
        .try_get_matches_from(argv)
        .context("building the weft run arguments")?;
    Ok(RunArgs::from_arg_matches(&matches)?)
}

/// The pod's hosts file: every demo Service by name (short names too: the pods are in the
/// demo namespace).
fn hosts_file(name: &str, ip: Ipv4Addr) -> String {
    let services: Vec<(String, String, IpAddr)> = ["web", "books", "books-v2", "ratings"]
        .iter()
        .filter_map(|service| {
            let ip = cluster_ip(service)?;
            Some((NAMESPACE.to_string(), service.to_string(), IpAddr::V4(ip)))
        })
        .collect();
    let names = (
        NAMESPACE.to_string(),
        CLUSTER_DOMAIN.to_string(),
        name.to_string(),
    );
    run::hosts::hosts_file(&names, ip, &services)
}

/// A listener on the host's loopback relaying to the proxy's admin server inside the pod: the
/// admin stays off the pod network, and the demo scrapes it like the plain demo's.
async fn admin_relay(pod: Arc<Pod>) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("binding an admin relay")?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut outside, _)) = listener.accept().await {
            // TCP_NODELAY on both legs, as on every socket that carries requests.
            let _ = outside.set_nodelay(true);
            let pod = pod.clone();
            tokio::spawn(async move {
                let connected = tokio::task::spawn_blocking(move || {
                    pod.on_thread(|| {
                        let stream = std::net::TcpStream::connect_timeout(
                            &POD_ADMIN,
                            Duration::from_secs(1),
                        )?;
                        stream.set_nonblocking(true)?;
                        stream.set_nodelay(true)?;
                        Ok(stream)
                    })
                })
                .await;
                match connected {
                    Ok(Ok(stream)) => {
                        if let Ok(mut inside) = tokio::net::TcpStream::from_std(stream) {
                            let _ = tokio::io::copy_bidirectional(&mut outside, &mut inside).await;
                        }
                    }
                    Ok(Err(error)) => tracing::debug!(%error, "proxy admin unreachable"),
                    Err(error) => tracing::debug!(%error, "admin relay task failed"),
                }
            });
        }
    });
    Ok((addr, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> Setup {
        Setup {
            grpc: "127.0.0.1:38000".parse().expect("addr"),
            api: "127.0.0.1:38001".parse().expect("addr"),
            rps: 20.0,
            weft_bin: "/usr/bin/weft".into(),
        }
    }

    #[test]
    fn without_root_it_points_at_the_plain_demo() {
        let error = check_root(1000).expect_err("not root").to_string();
        assert!(error.contains("needs root"), "{error}");
        assert!(error.contains("plain `weft demo`"), "{error}");
        assert!(check_root(0).is_ok());
    }

    #[test]
    fn services_get_cluster_ips_in_198_19() {
        let yaml = super::super::services_yaml_with(&cluster_ip, &[]);
        assert_eq!(yaml.matches("clusterIP: 198.19.0.").count(), 4, "{yaml}");
        assert!(yaml.contains("name: ratings\n  namespace: demo\nspec:\n  selector: {app: ratings}\n  clusterIP: 198.19.0.12\n"), "{yaml}");
        // The plain demo's store is unchanged.
        assert!(!super::super::services_yaml().contains("clusterIP"));
    }

    #[test]
    fn web_is_a_weft_run_workload_calling_services_by_name() {
        let web = WORKLOADS
            .iter()
            .position(|s| s.app == Name::Web)
            .expect("web");
        let args = run_args(&workload_argv(&setup(), web, &WORKLOADS[web])).expect("parse");
        assert_eq!(
            (args.name.as_str(), args.namespace.as_str()),
            ("web", "demo")
        );
        assert_eq!(args.ports.len(), 1);
        assert_eq!(args.ports[0].name.as_deref(), Some("http"));
        assert_eq!(args.ports[0].port, 8080);
        assert_eq!(args.control_list(), "127.0.0.1:38000");
        assert_eq!(args.api().to_string(), "127.0.0.1:38001");
        assert_eq!(args.pod_ip, Some(pod_ip(web)));
        assert_eq!(args.proxy_uid, PROXY_UID);
        let command: Vec<String> = args
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            command[..5],
            ["env", "-u", "HTTP_PROXY", "-u", "http_proxy"]
        );
        let joined = command.join(" ");
        assert!(
            joined.contains("demo-service web --listen 0.0.0.0:8080"),
            "{joined}"
        );
        assert!(
            joined.contains("--ratings-url http://ratings:8080"),
            "{joined}"
        );
        assert!(joined.contains("--books-addr books:9090"), "{joined}");
        assert!(!joined.contains("svc.cluster.local"), "{joined}");
    }

    #[test]
    fn traffic_serves_nothing_and_calls_web_by_name() {
        let traffic = WORKLOADS
            .iter()
            .position(|s| s.app == Name::Traffic)
            .expect("traffic");
        let args = run_args(&workload_argv(&setup(), traffic, &WORKLOADS[traffic])).expect("parse");
        assert!(args.ports.is_empty());
        let joined: Vec<String> = args
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = joined.join(" ");
        assert!(
            joined.ends_with("--web-url http://web:8080 --rps 20"),
            "{joined}"
        );
    }

    #[test]
    fn pods_have_distinct_addresses_and_name_every_service() {
        let ips: std::collections::BTreeSet<_> = (0..WORKLOADS.len()).map(pod_ip).collect();
        assert_eq!(ips.len(), WORKLOADS.len());
        assert!(!ips.contains(&GATEWAY));
        let hosts = hosts_file("web", pod_ip(2));
        assert!(hosts.contains("198.18.0.12\tweb\n"), "{hosts}");
        assert!(
            hosts.contains("198.19.0.12\tratings.demo.svc.cluster.local ratings.demo.svc ratings.demo ratings\n"),
            "{hosts}"
        );
        assert!(hosts.contains("198.19.0.11\tbooks."), "{hosts}");
    }
}
