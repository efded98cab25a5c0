//! `weft run`: runs any process as a meshed workload.
//!
//! As root (transparent mode), in order:
//! 0. the host checked for what pod-to-pod traffic needs (forwarding), and set up with
//!    `--host-forwarding on` ([`host`]);
//! 1. a pod: network namespace `weft-run-<name>-<pid>` with a veth, an address in
//!    198.18.0.0/15 and routes ([`pod`]);
//! 2. `/etc/netns/<pod>/hosts` naming every Service the control plane lists with a clusterIP
//!    (refreshed every 2 s);
//! 3. `weft init` inside the pod (the init container);
//! 4. the pod's state directory with the control plane's trust anchors ([`identity`]);
//! 5. `weft-proxy` inside the pod as the proxy uid (2102), on 4143/4140/4191, with its identity
//!    variables (token file, local name, trust-anchors file);
//! 6. registration with the control plane, `Ready=False` (the proxy's admin and tap ports are
//!    registered too, so the control plane scrapes and taps it), and the answer's token written
//!    for the proxy, which then obtains its certificate (mTLS);
//! 7. proxy-await: the proxy's `/ready` (it holds its certificate), unless `--proxy-await
//!    disabled`, which starts the command before step 6;
//! 8. the command, through `ip netns exec` (which bind-mounts the hosts file);
//! 9. once every `--port` accepts connections, `Ready=True`: Destination hands it out.
//!
//! Steps 6 to 9 are [`startup`], shared with explicit mode and `weft demo --cluster`.
//!
//! Ctrl-C, SIGTERM or the command's exit undo it all: deregistration (DELETE), the proxy
//! stopped, the namespace, veth, hosts file and state directory removed. Without root (or with
//! `--explicit`) the proxy runs on loopback and the command gets `HTTP_PROXY` instead (explicit
//! mode); the proxy gets its identity the same way.

pub(crate) mod host;
pub(crate) mod hosts;
pub(crate) mod identity;
pub(crate) mod pod;
pub(crate) mod startup;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::process::Child;
use tokio::signal::unix::{signal, Signal, SignalKind};
use weft_proxy::config;

use crate::demo::children;
use crate::init::{self, PortList};
use hosts::Hosts;
use identity::SidecarIdentity;
use pod::{Addressing, Pod};
use startup::{Place, ProxyAwait, Sidecar};

/// Ports of the proxy inside a pod (the mesh conventions, the same in a Kubernetes pod).
use weft_control::inject::{ADMIN_PORT, INBOUND_PORT, OUTBOUND_PORT, TAP_PORT};
/// How long the command may take to accept connections on its ports before it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the command and the proxy get to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often the pod's hosts file is brought up to date with the Services.
const HOSTS_REFRESH: Duration = Duration::from_secs(2);

/// `weft run`: run a command as a meshed workload.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Workload name (an ExternalWorkload registered with the control plane).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Namespace of the workload; short service names resolve in it.
    #[arg(long, default_value = "default", value_name = "NS")]
    pub namespace: String,
    /// A port the command serves, `PORT` or `NAME=PORT` (Services' targetPort can name it).
    #[arg(long = "port", value_name = "[NAME=]PORT")]
    pub ports: Vec<PortSpec>,
    /// A workload label `KEY=VALUE` (Service selectors match them); default `app=<name>`.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<Label>,
    /// A workload annotation `KEY=VALUE`, e.g.
    /// `config.linkerd.io/default-inbound-policy=all-authenticated` (the policy of ports no
    /// Server selects; see docs/policy.md). Checked by the control plane at registration.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<Label>,
    /// Ports of the command that are relayed as opaque TCP (no protocol detection).
    #[arg(long, default_value = "", value_name = "PORTS")]
    pub opaque_ports: PortList,
    /// Control plane gRPC address (Destination, policies, identity), or a comma-separated list
    /// of replicas' addresses (the sidecar tries them in turn). A loopback address is relayed
    /// into the pod by `weft run`.
    #[arg(
        long,
        default_value = "127.0.0.1:8086",
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ','
    )]
    pub control: Vec<SocketAddr>,
    /// Control plane HTTP API address (registration); default: the first --control IP, port 8085.
    #[arg(long, value_name = "ADDR")]
    pub control_api: Option<SocketAddr>,
    /// Accepted for old scripts and ignored: Services come from the control plane's API, which
    /// also knows the cluster IPs it allocated.
    #[arg(long, value_name = "DIR", hide = true)]
    pub store: Option<PathBuf>,
    /// DNS suffix of service names.
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub cluster_domain: String,
    /// The control plane's trust domain (its `--trust-domain`): the last part of the identity
    /// the sidecar asks for, `<name>.<ns>.serviceaccount.identity.<control-ns>.<trust-domain>`.
    // (`Box<str>` for these two: read-only, and `RunArgs` is a variant of the CLI's command enum,
    // which clippy wants small.)
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub trust_domain: Box<str>,
    /// The control plane's namespace (its `--control-namespace`), part of that identity.
    #[arg(long, default_value = "weft", value_name = "NS")]
    pub control_namespace: Box<str>,
    /// The pod's address (default: one in 198.18.128.0/17 derived from the pid).
    #[arg(long, value_name = "IP")]
    pub pod_ip: Option<Ipv4Addr>,
    /// The pod's gateway, carried by the host side of its veth (default: .1 of the pod IP's
    /// /24, or 198.18.128.1).
    #[arg(long, value_name = "IP")]
    pub gateway: Option<Ipv4Addr>,
    /// Inbound ports that bypass the proxy.
    #[arg(long, default_value = "4190,4191", value_name = "PORTS")]
    pub skip_inbound_ports: PortList,
    /// Outbound ports that bypass the proxy.
    #[arg(long, default_value = "", value_name = "PORTS")]
    pub skip_outbound_ports: PortList,
    /// iptables backend for the pod's rules: nft or legacy.
    #[arg(long, default_value = "nft", value_name = "MODE")]
    pub iptables_mode: init::Mode,
    /// Uid the proxy runs as in transparent mode.
    #[arg(long, default_value_t = 2102, value_name = "UID")]
    pub proxy_uid: u32,
    /// Whether `weft run` may turn on what pods need to reach each other on this host (IP
    /// forwarding, a FORWARD rule for 198.18.0.0/15), undone when the last `weft run` here
    /// exits. `off`: it fails at once with the command to run instead.
    #[arg(long, value_enum, default_value = "on", value_name = "on|off")]
    pub host_forwarding: host::HostForwarding,
    /// Use explicit mode even as root (no namespace, no iptables; `HTTP_PROXY` for the command).
    #[arg(long)]
    pub explicit: bool,
    /// Start the command only once the sidecar is ready, i.e. holds its certificate (Linkerd's
    /// `config.linkerd.io/proxy-await`), so its first request already leaves over mTLS.
    /// `disabled`: start it right away, beside the sidecar.
    #[arg(
        long,
        value_enum,
        default_value = "enabled",
        value_name = "enabled|disabled"
    )]
    pub proxy_await: ProxyAwait,
    /// How long proxy-await waits for the sidecar before `weft run` gives up (the command is
    /// then not started).
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = crate::demo::parse_duration)]
    pub proxy_await_timeout: Duration,
    /// Run this pod as the cluster's multicluster gateway (Linkerd's `linkerd-gateway`): its
    /// proxy forwards what linked clusters send to its inbound port (4143) to the services they
    /// name (`WEFT_PROXY_INBOUND_GATEWAY_SUFFIXES=svc.<cluster-domain>.`), and the workload is
    /// labelled `linkerd.io/extension=multicluster`, `component=gateway`, which is how the control
    /// plane finds it. Run it as `--name weft-gateway --namespace weft-multicluster`, the identity
    /// every sidecar trusts to forward its callers' identities; CMD defaults to `sleep infinity`.
    /// See docs/multicluster.md.
    #[arg(long)]
    pub multicluster_gateway: bool,
    /// The command and its arguments.
    #[arg(
        last = true,
        required_unless_present = "multicluster_gateway",
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
    /// Extra variables for the proxy (not a flag: `weft demo --cluster` sets its log level
    /// through them).
    #[arg(skip)]
    pub proxy_env: Vec<(String, String)>,
}

/// `--port [NAME=]PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub name: Option<String>,
    pub port: u16,
}

impl FromStr for PortSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, port) = match s.split_once('=') {
            Some((n, p)) => (Some(n.to_string()), p),
            None => (None, s),
        };
        match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(PortSpec { name, port }),
            _ => Err(format!("{s:?}: expected PORT or NAME=PORT (port 1-65535)")),
        }
    }
}

/// `--label KEY=VALUE` (and `--annotation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label(pub String, pub String);

impl FromStr for Label {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok(Label(k.into(), v.into())),
            _ => Err(format!("{s:?}: expected KEY=VALUE")),
        }
    }
}

impl RunArgs {
    /// What `--multicluster-gateway` means: the gateway's labels (besides `app=<name>`), its
    /// proxy's gateway suffixes, and a command that only waits.
    fn with_gateway_role(mut self) -> RunArgs {
        use weft_control::resource::multicluster::{
            GATEWAY_COMPONENT_LABEL, GATEWAY_EXTENSION_LABEL,
        };
        if !self.multicluster_gateway {
            return self;
        }
        if self.labels.is_empty() {
            self.labels.push(Label("app".into(), self.name.clone()));
        }
        for (k, v) in [GATEWAY_EXTENSION_LABEL, GATEWAY_COMPONENT_LABEL] {
            self.labels.push(Label(k.into(), v.into()));
        }
        let (name, value) = gateway_env(&self.cluster_domain);
        self.proxy_env.push((name.into(), value));
        if self.command.is_empty() {
            self.command = vec!["sleep".into(), "infinity".into()];
        }
        self
    }

    /// The control plane's trust domain and namespace, as its identities (and the tap and
    /// gateway identities the sidecar trusts) are derived from them.
    fn control_defaults(&self) -> weft_control::resource::Defaults {
        weft_control::resource::Defaults {
            trust_domain: self.trust_domain.to_string(),
            control_namespace: self.control_namespace.to_string(),
        }
    }

    /// The identity the control plane's gRPC server proves (the sidecar's
    /// `WEFT_PROXY_DESTINATION_SVC_NAME`, which the identity and policy clients share).
    pub(crate) fn control_identity(&self) -> String {
        weft_control::resource::control_identity(&self.control_defaults())
    }

    /// The first `--control` address (clap guarantees one).
    fn first_control(&self) -> SocketAddr {
        self.control
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 8086)))
    }

    /// The `--control` list as the sidecar's `WEFT_PROXY_DESTINATION_SVC_ADDR`.
    pub(crate) fn control_list(&self) -> String {
        join(&self.control)
    }

    pub(crate) fn api(&self) -> SocketAddr {
        self.control_api
            .unwrap_or_else(|| SocketAddr::new(self.first_control().ip(), 8085))
    }

    fn addressing(&self) -> Addressing {
        let default = Addressing::for_pid(std::process::id());
        let ip = self.pod_ip.unwrap_or(default.ip);
        let gateway = self.gateway.unwrap_or_else(|| match self.pod_ip {
            Some(ip) => {
                let o = ip.octets();
                Ipv4Addr::new(o[0], o[1], o[2], 1)
            }
            None => default.gateway,
        });
        Addressing { ip, gateway }
    }

    /// The ExternalWorkload to register: the workload at `ip`, its ports at `ports`, (in a pod)
    /// the sidecar's inbound port there, so peers reach opaque ports with the transport header
    /// (explicit mode passes None: its ports are the sidecar's forward ports already), and the
    /// sidecar's admin port on `ip`, which the control plane scrapes, and its tap port there,
    /// which `GET /v1/tap/...` dials.
    fn workload(
        &self,
        ip: IpAddr,
        ports: &[(Option<String>, u16)],
        inbound_port: Option<u16>,
        admin_port: Option<u16>,
        tap_port: Option<u16>,
    ) -> serde_json::Value {
        let mut labels: BTreeMap<&str, &str> = self
            .labels
            .iter()
            .map(|Label(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if labels.is_empty() {
            labels.insert("app", &self.name);
        }
        let ports: Vec<serde_json::Value> = ports
            .iter()
            .map(|(name, port)| match name {
                Some(name) => serde_json::json!({"name": name, "port": port}),
                None => serde_json::json!({"port": port}),
            })
            .chain(admin_port.map(|port| {
                serde_json::json!({"name": weft_control::resource::ADMIN_PORT_NAME, "port": port})
            }))
            .chain(tap_port.map(|port| {
                serde_json::json!({"name": weft_control::resource::TAP_PORT_NAME, "port": port})
            }))
            .collect();
        let mut metadata = serde_json::json!({
            "name": self.name, "namespace": self.namespace, "labels": labels,
        });
        let mut annotations: serde_json::Map<String, serde_json::Value> = self
            .annotations
            .iter()
            .map(|Label(k, v)| (k.clone(), v.clone().into()))
            .collect();
        if !self.opaque_ports.is_empty() {
            annotations.insert(
                weft_control::resource::OPAQUE_PORTS_ANNOTATION.into(),
                self.opaque_ports.to_string().into(),
            );
        }
        if let Some(port) = inbound_port {
            annotations.insert(
                weft_control::resource::INBOUND_PORT_ANNOTATION.into(),
                port.to_string().into(),
            );
        }
        if !annotations.is_empty() {
            metadata["annotations"] = annotations.into();
        }
        serde_json::json!({
            "apiVersion": "workload.linkerd.io/v1beta1",
            "kind": "ExternalWorkload",
            "metadata": metadata,
            "spec": {"workloadIPs": [{"ip": ip.to_string()}], "ports": ports},
        })
    }
}

/// SIGINT and SIGTERM, installed before anything is created so neither kills us mid-setup.
struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let args = args.with_gateway_role();
    let mut signals = Signals::new()?;
    if args.store.is_some() {
        say!("weft run: --store is ignored: Services come from the control plane API");
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let status = if root && !args.explicit {
        transparent(&args, &mut signals).await?
    } else {
        explicit(&args, &mut signals, root).await?
    };
    match status {
        Some(status) if !status.success() => {
            // Everything is torn down by now; pass the command's failure on.
            std::process::exit(status.code().unwrap_or(1))
        }
        _ => Ok(()),
    }
}

/// What runs while the workload is up.
pub(crate) struct Running {
    pub(crate) proxy: Child,
    pub(crate) cmd: Child,
    pub(crate) registered: bool,
    /// Relays the control plane into the pod while the workload runs.
    pub(crate) control_relay: Vec<Relay>,
    /// Keeps the sidecar's trust-anchors file up to date while the workload runs.
    pub(crate) anchors_refresh: Option<Relay>,
}

/// A background task of a workload (a relay, a refresh), stopped when dropped.
pub(crate) struct Relay(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for Relay {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn transparent(args: &RunArgs, signals: &mut Signals) -> anyhow::Result<Option<ExitStatus>> {
    // Dropped after the pod: the last one to leave the host undoes its forwarding changes.
    let _host = host::prepare(args.host_forwarding, args.iptables_mode.binary())?;
    let pod = Pod::create(&args.name, args.addressing())?;
    host::check_reverse_path(pod.addressing.ip, &pod.host_link)?;
    let hosts = Hosts::new(args);
    pod.write_hosts(&hosts.render(args, pod.addressing.ip).await)?;
    let Some(mut running) = start_in_pod(args, &pod, signals.recv()).await? else {
        return Ok(None);
    };
    say!(
        "weft run: {}/{} runs in network namespace {} at {}, its traffic intercepted by \
         weft-proxy (uid {}, admin {}:{ADMIN_PORT})",
        args.namespace,
        args.name,
        pod.netns,
        pod.addressing.ip,
        args.proxy_uid,
        pod.addressing.ip,
    );
    let refresh = tokio::spawn({
        let hosts = hosts.clone();
        let args_name = (
            args.namespace.clone(),
            args.cluster_domain.clone(),
            args.name.clone(),
        );
        let ip = pod.addressing.ip;
        let path = PathBuf::from("/etc/netns").join(&pod.netns).join("hosts");
        async move { hosts.keep_fresh(args_name, ip, path).await }
    });
    let status = supervise(&mut running, signals).await;
    refresh.abort();
    teardown(args, &mut running).await;
    drop(pod);
    Ok(status)
}

/// Steps 3 to 9 in a pod that exists and has its hosts file: `weft init`, the sidecar's identity
/// files, the proxy, then [`startup::launch`] (registration, proxy-await, the command, readiness).
/// `Ok(None)`: `interrupt` fired first and everything was undone. Dropping the result kills the
/// processes; [`teardown`] stops them in order and deregisters. The state directory goes with
/// the pod.
pub(crate) async fn start_in_pod(
    args: &RunArgs,
    pod: &Pod,
    interrupt: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Option<Running>> {
    install_rules(args, pod).await?;
    let (control, relay) = control_for_pod(args, pod)?;
    let identity =
        SidecarIdentity::prepare(args, &identity::state_dir(&pod.netns), Some(args.proxy_uid))
            .await?;
    let identity_env = identity.as_ref().map(|i| i.proxy_env()).unwrap_or_default();
    let (proxy, listening) = spawn_proxy(args, pod, &control, &identity_env).await?;
    let ports: Vec<_> = args
        .ports
        .iter()
        .map(|p| (p.name.clone(), p.port))
        .collect();
    let workload = args.workload(
        IpAddr::V4(pod.addressing.ip),
        &ports,
        Some(INBOUND_PORT),
        Some(ADMIN_PORT),
        // The proxy runs a tap server only with an identity; none, nothing to dial.
        listening.tap.map(|_| TAP_PORT),
    );
    let sidecar = Sidecar {
        proxy,
        admin: SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN_PORT)),
        identity,
        control_relay: relay,
    };
    startup::launch(
        args,
        Place::Pod(pod),
        sidecar,
        workload,
        || spawn_in_pod(args, pod),
        interrupt,
    )
    .await
}

/// Runs `weft init` inside the pod: the init container's step.
async fn install_rules(args: &RunArgs, pod: &Pod) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the weft executable")?;
    let output = tokio::process::Command::new("ip")
        .args(["netns", "exec", &pod.netns])
        .arg(exe)
        .arg("init")
        .args(init_args(args).to_flags())
        .stdin(Stdio::null())
        .output()
        .await
        .context("running weft init in the pod")?;
    if !output.status.success() {
        bail!(
            "weft init in the pod failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The control plane addresses the proxy in the pod uses. A loopback address is not reachable
/// from the pod: it gets a listener on the same loopback address inside the pod, relayed to the
/// real address by this process (which lives in the host's namespace); the relay carries the
/// sidecar's TLS as it is.
fn control_for_pod(args: &RunArgs, pod: &Pod) -> anyhow::Result<(String, Vec<Relay>)> {
    let mut relays = Vec::new();
    for &upstream in args.control.iter().filter(|a| a.ip().is_loopback()) {
        relays.push(relay_into_pod(pod, upstream)?);
    }
    Ok((args.control_list(), relays))
}

/// Relays `upstream` (a loopback address of the host) from the same address inside the pod.
fn relay_into_pod(pod: &Pod, upstream: SocketAddr) -> anyhow::Result<Relay> {
    let listener = pod
        .bind(upstream)
        .with_context(|| format!("binding the control-plane relay on {upstream} in the pod"))?;
    let relay = tokio::spawn(async move {
        while let Ok((mut inside, _)) = listener.accept().await {
            // TCP_NODELAY on both legs: gRPC's small writes must not wait for delayed ACKs.
            let _ = inside.set_nodelay(true);
            tokio::spawn(async move {
                match tokio::net::TcpStream::connect(upstream).await {
                    Ok(mut outside) => {
                        let _ = outside.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                    }
                    Err(e) => tracing::warn!(%upstream, error = %e, "control plane unreachable"),
                }
            });
        }
    });
    Ok(Relay(relay))
}

fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// What makes a proxy the cluster's multicluster gateway, `weft run --multicluster-gateway`'s
/// and a pod's with `config.linkerd.io/enable-gateway: "true"` (`weft multicluster install`):
/// it forwards connections whose transport header names a service of `cluster_domain`
/// (Linkerd's `svc.<cluster-domain>.`).
pub(crate) fn gateway_env(cluster_domain: &str) -> (&'static str, String) {
    (
        config::ENV_INBOUND_GATEWAY_SUFFIXES,
        format!("svc.{}.", cluster_domain.trim_end_matches('.')),
    )
}

/// The variables of every sidecar, `weft run`'s and an injected Kubernetes pod's: the control
/// plane, the workload (`NS:NAME`), the drain time, the tap identity, the cluster's multicluster
/// gateway (whose forwarded `l5d-client-id` the sidecar believes), and — with identity, when the
/// sidecar speaks TLS to the control plane, which must prove its own — `control_identity`.
pub(crate) fn sidecar_env(
    control: String,
    workload: String,
    defaults: &weft_control::resource::Defaults,
    control_identity: Option<String>,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        (config::ENV_DESTINATION_SVC_ADDR, control),
        (config::ENV_POLICY_WORKLOAD, workload),
        (config::ENV_SHUTDOWN_GRACE_PERIOD, "5s".to_string()),
        (
            config::ENV_TAP_SVC_NAME,
            weft_control::resource::tap_identity(defaults),
        ),
        (
            config::ENV_INBOUND_TRUSTED_GATEWAY_IDENTITIES,
            weft_control::resource::multicluster::gateway_identity(defaults),
        ),
    ];
    env.extend(control_identity.map(|name| (config::ENV_DESTINATION_SVC_NAME, name)));
    env
}

/// A sidecar's listeners in a pod: inbound and outbound as `weft init` redirects to them (with
/// its opaque ports), the admin and tap servers on every address — the control plane scrapes
/// `/metrics` and dials the tap server on the pod IP (inbound 4191 and 4190 bypass the proxy);
/// `POST /shutdown` answers only loopback peers, the tap server only the tap identity.
pub(crate) fn pod_listeners_env(init: &init::InitArgs) -> Vec<(&'static str, String)> {
    let mut env = init::proxy_env(init);
    env.push((
        config::ENV_ADMIN_LISTEN_ADDR,
        format!("0.0.0.0:{ADMIN_PORT}"),
    ));
    env.push((config::ENV_TAP_LISTEN_ADDR, format!("0.0.0.0:{TAP_PORT}")));
    env
}

/// The sidecar's command, as both modes start it: [`sidecar_env`], identity and the extra
/// variables; `pod` = (namespace, uid) to start it in, `None` = here, as us.
fn proxy_command(
    args: &RunArgs,
    bin: &Path,
    pod: Option<(std::os::fd::RawFd, u32)>,
    control: &str,
    identity_env: &[(&str, String)],
) -> tokio::process::Command {
    let mut cmd = children::command_in(bin, None, pod.map(|p| p.0), pod.map(|p| p.1));
    // Also through the pod's loopback relay the control plane proves its identity: the relay
    // carries TLS bytes.
    cmd.envs(sidecar_env(
        control.to_string(),
        format!("{}:{}", args.namespace, args.name),
        &args.control_defaults(),
        (!identity_env.is_empty()).then(|| args.control_identity()),
    ))
    .envs(identity_env.iter().map(|(k, v)| (k, v)));
    cmd.envs(args.proxy_env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped());
    cmd
}

async fn spawn_proxy(
    args: &RunArgs,
    pod: &Pod,
    control: &str,
    identity_env: &[(&str, String)],
) -> anyhow::Result<(Child, children::ProxyListening)> {
    let bin = children::proxy_binary()?;
    let uid = args.proxy_uid;
    let mut cmd = proxy_command(args, &bin, Some((pod.raw_fd(), uid)), control, identity_env);
    cmd.envs(pod_listeners_env(&init_args(args)));
    let mut proxy = cmd.spawn().with_context(|| {
        format!(
            "starting {} as uid {uid} in the pod (it must be executable by that uid; set \
             {var} to a copy elsewhere if not)",
            bin.display(),
            var = children::ENV_PROXY_BIN,
        )
    })?;
    let listening = children::read_listening(&mut proxy, "weft-proxy").await?;
    Ok((proxy, listening))
}

/// The `weft init` settings matching this run.
fn init_args(args: &RunArgs) -> init::InitArgs {
    init::InitArgs {
        proxy_uid: args.proxy_uid,
        inbound_port: INBOUND_PORT,
        outbound_port: OUTBOUND_PORT,
        skip_inbound_ports: args.skip_inbound_ports.clone(),
        skip_outbound_ports: args.skip_outbound_ports.clone(),
        skip_outbound_cidrs: Vec::new(),
        opaque_ports: args.opaque_ports.clone(),
        iptables_mode: args.iptables_mode,
        dry_run: false,
    }
}

/// The command, through `ip netns exec` so the pod's hosts file is mounted for it.
fn spawn_in_pod(args: &RunArgs, pod: &Pod) -> anyhow::Result<Child> {
    let mut cmd = children::command(Path::new("ip"), None);
    cmd.args(["netns", "exec", &pod.netns])
        .args(&args.command)
        .stdin(Stdio::inherit());
    cmd.spawn().context("starting the command in the pod")
}

/// The admin (or tap) port to register for a workload at `ip`: the control plane dials
/// `ip:port`, so only a listener there (or on every address) is.
fn admin_port_at(ip: IpAddr, admin: SocketAddr) -> Option<u16> {
    (admin.ip() == ip || admin.ip().is_unspecified()).then_some(admin.port())
}

/// Waits for the command to exit, a signal, or the proxy to die. The command's status, if it
/// exited on its own.
async fn supervise(running: &mut Running, signals: &mut Signals) -> Option<ExitStatus> {
    tokio::select! {
        status = running.cmd.wait() => status.ok(),
        _ = signals.recv() => None,
        status = running.proxy.wait() => {
            say!("weft run: weft-proxy exited ({status:?}); stopping the command");
            None
        }
    }
}

/// Deregisters, then stops the command and the proxy (SIGTERM, then SIGKILL).
pub(crate) async fn teardown(args: &RunArgs, running: &mut Running) {
    startup::undo(
        args,
        running.registered,
        Some(&mut running.cmd),
        &mut running.proxy,
    )
    .await;
}

async fn stop(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Explicit mode: the proxy on loopback, `HTTP_PROXY` for the command, forward ports for peers.
async fn explicit(
    args: &RunArgs,
    signals: &mut Signals,
    root: bool,
) -> anyhow::Result<Option<ExitStatus>> {
    // The same state directory a pod would have; this process owns it and removes it at the end.
    let state = identity::StateDir(identity::state_dir(&pod::netns_name(&args.name)));
    let identity = SidecarIdentity::prepare(args, &state.0, None).await?;
    let identity_env = identity.as_ref().map(|i| i.proxy_env()).unwrap_or_default();
    let bin = children::proxy_binary()?;
    let forward: Vec<String> = args.ports.iter().map(|p| p.port.to_string()).collect();
    let mut cmd = proxy_command(args, &bin, None, &args.control_list(), &identity_env);
    cmd.env(config::ENV_INBOUND_LISTEN_ADDR, "127.0.0.1:0")
        .env(config::ENV_OUTBOUND_LISTEN_ADDR, "127.0.0.1:0")
        .env(config::ENV_ADMIN_LISTEN_ADDR, "127.0.0.1:0")
        .env(config::ENV_TAP_LISTEN_ADDR, "127.0.0.1:0")
        .env(config::ENV_INBOUND_FORWARD_PORTS, forward.join(","))
        .env(
            config::ENV_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION,
            args.opaque_ports.to_string(),
        );
    let mut proxy = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let listening = children::read_listening(&mut proxy, "weft-proxy").await?;
    let proxy_url = format!("http://{}", listening.outbound);
    say!(
        "weft run: explicit mode ({}): HTTP clients must use HTTP_PROXY={proxy_url} (set for the \
         command); peers reach {} through the proxy's forward ports; admin {}",
        if root {
            "--explicit"
        } else {
            "not root, so no network namespace or iptables"
        },
        args.name,
        listening.admin
    );
    let spawn = || {
        let mut command = children::command(Path::new(&args.command[0]), None);
        command
            .args(&args.command[1..])
            .env("HTTP_PROXY", &proxy_url)
            .env("http_proxy", &proxy_url)
            .stdin(Stdio::inherit());
        command.spawn().context("starting the command")
    };
    let ports: Vec<_> = args
        .ports
        .iter()
        .map(|p| {
            let addr = listening
                .forward
                .iter()
                .find(|f| f.app_port == p.port)
                .map_or(p.port, |f| f.addr.port());
            (p.name.clone(), addr)
        })
        .collect();
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let admin_port = admin_port_at(ip, listening.admin);
    if admin_port.is_none() {
        say!(
            "weft run: the proxy's admin {} is not on the workload's address {ip}: not \
             registered, so the control plane will not scrape it",
            listening.admin
        );
    }
    // The tap server, like the admin, only where the control plane can reach it.
    let tap_port = listening.tap.and_then(|tap| admin_port_at(ip, tap));
    let workload = args.workload(ip, &ports, None, admin_port, tap_port);
    let sidecar = Sidecar {
        proxy,
        admin: listening.admin,
        identity,
        control_relay: Vec::new(),
    };
    let launched =
        startup::launch(args, Place::Host, sidecar, workload, spawn, signals.recv()).await?;
    let Some(mut running) = launched else {
        return Ok(None);
    };
    let status = supervise(&mut running, signals).await;
    teardown(args, &mut running).await;
    // The state directory goes last: the proxy reads its token file until it stops.
    drop(state);
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(argv: &[&str]) -> RunArgs {
        Cli::try_parse_from(std::iter::once("run").chain(argv.iter().copied()))
            .expect("parse")
            .run
    }

    #[test]
    fn flags_parse_with_defaults() {
        let a = args(&[
            "--name",
            "web",
            "--port",
            "http=8080",
            "--port",
            "9000",
            "--",
            "app",
            "-x",
        ]);
        assert_eq!(a.namespace, "default");
        assert_eq!(
            a.ports[0],
            PortSpec {
                name: Some("http".into()),
                port: 8080
            }
        );
        assert_eq!(
            a.ports[1],
            PortSpec {
                name: None,
                port: 9000
            }
        );
        assert_eq!(a.command, vec![OsString::from("app"), OsString::from("-x")]);
        assert_eq!(a.api().to_string(), "127.0.0.1:8085");
        assert_eq!(
            identity::local_name(&a),
            "web.default.serviceaccount.identity.weft.cluster.local"
        );
        let a = args(&[
            "--name",
            "w",
            "--control",
            "198.18.1.10:8086",
            "--pod-ip",
            "198.18.2.20",
            "--",
            "x",
        ]);
        assert_eq!(a.api().to_string(), "198.18.1.10:8085");
        assert_eq!(a.addressing().gateway, Ipv4Addr::new(198, 18, 2, 1));
        let a = args(&[
            "--name",
            "db",
            "--namespace",
            "prod",
            "--trust-domain",
            "example.org",
            "--control-namespace",
            "mesh",
            "--",
            "x",
        ]);
        assert_eq!(
            identity::local_name(&a),
            "db.prod.serviceaccount.identity.mesh.example.org"
        );
        assert_eq!(
            a.control_identity(),
            "weft-control.mesh.serviceaccount.identity.mesh.example.org"
        );
        // Replicas: the list reaches the sidecar as it is; the API defaults to the first's IP.
        let a = args(&[
            "--name",
            "w",
            "--control",
            "198.18.1.10:8086,198.18.1.11:8086",
            "--",
            "x",
        ]);
        assert_eq!(a.control_list(), "198.18.1.10:8086,198.18.1.11:8086");
        assert_eq!(a.api().to_string(), "198.18.1.10:8085");
    }

    #[test]
    fn the_workload_document_names_ip_ports_labels_and_annotations() {
        let a = args(&[
            "--name",
            "db",
            "--namespace",
            "prod",
            "--port",
            "6379",
            "--opaque-ports",
            "6379",
            "--annotation",
            "config.linkerd.io/default-inbound-policy=deny",
            "--",
            "x",
        ]);
        let doc = a.workload(
            "198.18.2.20".parse().unwrap(),
            &[(None, 6379)],
            Some(4143),
            Some(ADMIN_PORT),
            Some(TAP_PORT),
        );
        assert_eq!(doc["metadata"]["labels"]["app"], "db");
        assert_eq!(doc["metadata"]["namespace"], "prod");
        assert_eq!(
            doc["metadata"]["annotations"]["config.linkerd.io/opaque-ports"],
            "6379"
        );
        assert_eq!(
            doc["metadata"]["annotations"]["config.linkerd.io/inbound-port"],
            "4143"
        );
        assert_eq!(
            doc["metadata"]["annotations"]["config.linkerd.io/default-inbound-policy"],
            "deny"
        );
        assert_eq!(doc["spec"]["workloadIPs"][0]["ip"], "198.18.2.20");
        assert_eq!(
            doc["spec"]["ports"],
            serde_json::json!([{"port": 6379}, {"name": "linkerd-admin", "port": 4191},
                               {"name": "linkerd-tap", "port": 4190}])
        );
        let explicit = a.workload(
            "127.0.0.1".parse().unwrap(),
            &[(None, 16379)],
            None,
            Some(41910),
            None,
        );
        assert!(explicit["metadata"]["annotations"]
            .get("config.linkerd.io/inbound-port")
            .is_none());
        assert_eq!(explicit["spec"]["ports"][1]["port"], 41910);
        // Without an admin port to register, only the workload's own.
        let bare = a.workload(
            "127.0.0.1".parse().unwrap(),
            &[(None, 16379)],
            None,
            None,
            None,
        );
        assert_eq!(bare["spec"]["ports"], serde_json::json!([{"port": 16379}]));
    }

    #[test]
    fn the_admin_is_registered_only_where_the_control_plane_can_reach_it() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            admin_port_at(loopback, "127.0.0.1:41910".parse().unwrap()),
            Some(41910)
        );
        assert_eq!(
            admin_port_at(loopback, "0.0.0.0:4191".parse().unwrap()),
            Some(4191)
        );
        assert_eq!(
            admin_port_at(loopback, "127.0.0.2:4191".parse().unwrap()),
            None
        );
    }
}
