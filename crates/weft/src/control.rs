//! `weft control`: the control plane as a command. Builds `weft_control::Config` from flags,
//! prints the listening line on stdout once both servers are bound, and runs until Ctrl-C or
//! SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use weft_control::inject::webhook::WebhookConfig;

/// `weft control`: serve Destination and policy gRPC and the registration API from a store.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    weft control --store ./store\n  \
    weft control --store etcd://127.0.0.1:2379/weft\n  \
    weft control --store etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/weft/prod\n  \
    weft control --store kubernetes --identity-dir /var/run/weft/identity\n  \
    weft control --store ./store --identity-dir ./ca\n  \
    weft control --store ./store --prometheus-sd-file /var/lib/weft/targets.json\n  \
    weft control --store ./store --prometheus-url http://127.0.0.1:9090\n  \
    weft control --store ./store --identity-dir ./ca --webhook-addr 0.0.0.0:8443\n\n\
    See docs/control-plane.md; etcd: docs/operations.md; Kubernetes and the injection webhook:\n  \
    docs/kubernetes.md; Prometheus: docs/observability.md.")]
pub struct ControlArgs {
    /// Where resources, registrations and identity tokens live: a directory of resource YAML
    /// files (polled for changes), `etcd://HOST:PORT[,HOST:PORT...]/PREFIX` (keys under
    /// PREFIX/resources/, watched; see docs/operations.md), or `kubernetes`: the API server's
    /// Services, Pods, EndpointSlices, Namespaces and Weft's custom resources, watched (in a
    /// pod, or with KUBECONFIG; see docs/kubernetes.md). A directory named `kubernetes` is
    /// `./kubernetes`.
    #[arg(long, value_name = "DIR|etcd://HOST:PORT[,...]/PREFIX|kubernetes")]
    pub store: weft_control::store::Location,
    /// Address of the gRPC server (Destination, OutboundPolicies, InboundServerPolicies).
    #[arg(long, default_value = "127.0.0.1:8086", value_name = "ADDR")]
    pub grpc_addr: SocketAddr,
    /// Address of the HTTP API (workload registration, store status, /ready, /live).
    #[arg(long, default_value = "127.0.0.1:8085", value_name = "ADDR")]
    pub api_addr: SocketAddr,
    /// DNS suffix of logical service names (`NAME.NS.svc.<cluster-domain>`).
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub cluster_domain: String,
    /// Trust domain of workload identities.
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub trust_domain: String,
    /// CA directory made by `weft identity init` (trust-anchors.pem, issuer.crt, issuer.key).
    /// Without it an ephemeral CA is generated in memory (its anchors are logged and served at
    /// `GET /v1/identity/trust-anchors`).
    #[arg(long, value_name = "DIR")]
    pub identity_dir: Option<PathBuf>,
    /// Lifetime of the leaf certificates `Identity.Certify` issues (e.g. `24h`, `90m`).
    #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = crate::demo::parse_duration)]
    pub cert_lifetime: Duration,
    /// Range that Services without a `spec.clusterIP` get one from (IPv4 `ADDRESS/PREFIX`).
    /// Allocations are kept in `<store>/.allocations/service-ips.json` (with an etcd store:
    /// `PREFIX/allocations/service-ips`, shared by replicas); a user-set clusterIP always wins.
    #[arg(long, default_value = weft_control::service_ips::DEFAULT_SERVICE_CIDR, value_name = "CIDR")]
    pub service_cidr: weft_control::service_ips::ServiceCidr,
    /// Inbound policy of workload ports no Server selects, unless a Namespace or workload sets
    /// `config.linkerd.io/default-inbound-policy`: all-unauthenticated, all-authenticated,
    /// cluster-unauthenticated, cluster-authenticated, deny or audit (see docs/policy.md).
    #[arg(long, default_value = "all-unauthenticated", value_name = "POLICY")]
    pub default_inbound_policy: weft_control::DefaultPolicy,
    /// The cluster's networks (comma-separated CIDRs): who the `cluster-*` default policies
    /// admit.
    #[arg(long, default_value = weft_control::DEFAULT_CLUSTER_NETWORKS, value_name = "CIDRS", value_parser = weft_control::parse_cidr_list)]
    pub cluster_networks: CidrList,
    /// Namespace whose EgressNetworks apply to clients of every namespace (an EgressNetwork
    /// elsewhere applies to clients of its own namespace).
    #[arg(long, default_value = weft_control::resource::egress::DEFAULT_EGRESS_NAMESPACE, value_name = "NS")]
    pub egress_namespace: String,
    /// How often the proxies of meshed workloads (those registered with a `linkerd-admin` port)
    /// are scraped for `weft stat`, `weft edges` and `weft routes`; `0s` turns scraping off.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::demo::parse_duration)]
    pub scrape_interval: Duration,
    /// Keep a Prometheus file_sd targets file here: one target group per meshed workload (its
    /// proxy's admin address, labels namespace, workload, control_plane_ns), rewritten
    /// atomically as workloads come and go. Point a `file_sd_configs` scrape job at it.
    #[arg(long, value_name = "PATH")]
    pub prometheus_sd_file: Option<PathBuf>,
    /// Answer `weft stat`, `weft edges`, `weft routes` (`GET /v1/stat/...`, `/v1/edges`,
    /// `/v1/routes`) from this Prometheus (PromQL over the series its file_sd job scrapes)
    /// instead of the control plane's own scrapes, e.g.
    /// `http://127.0.0.1:9090`. Prometheus down or failing: the API answers 502 with the error.
    #[arg(long, value_name = "URL")]
    pub prometheus_url: Option<weft_control::telemetry::prometheus::Prometheus>,
    /// Serve the sidecar-injection admission webhook (`POST /inject`, AdmissionReview v1) over
    /// TLS here, with a certificate for `weft-proxy-injector.weft.svc` from the mesh CA.
    /// Default: off.
    #[arg(long, value_name = "ADDR")]
    pub webhook_addr: Option<SocketAddr>,
    /// Registry of the images the webhook injects (`<registry>/weft-proxy`, `<registry>/weft`).
    #[arg(long, default_value = "ghcr.io/weft-mesh", value_name = "REGISTRY")]
    pub image_registry: String,
    /// A CNI plugin installs the redirect rules: the webhook adds no `weft-init` container.
    #[arg(long)]
    pub cni: bool,
    /// This cluster's name, as `POST /v1/multicluster/credentials` tells a cluster linking to
    /// it (see docs/multicluster.md).
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// How long a lost multicluster link keeps its mirrored services' last endpoints before
    /// they are dropped; `0s` keeps them forever.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = crate::demo::parse_duration)]
    pub link_expiry: Duration,
}

/// `--cluster-networks`: one value holding the whole list.
type CidrList = Vec<weft_control::Cidr>;

impl ControlArgs {
    pub fn config(&self) -> weft_control::Config {
        weft_control::Config {
            store: self.store.clone(),
            grpc_addr: self.grpc_addr,
            api_addr: self.api_addr,
            cluster_domain: self.cluster_domain.clone(),
            trust_domain: self.trust_domain.clone(),
            control_namespace: "weft".to_string(),
            poll_interval: Duration::from_millis(200),
            identity_dir: self.identity_dir.clone(),
            cert_lifetime: self.cert_lifetime,
            service_cidr: self.service_cidr,
            default_inbound_policy: self.default_inbound_policy,
            cluster_networks: self.cluster_networks.clone(),
            egress_namespace: self.egress_namespace.clone(),
            scrape_interval: self.scrape_interval,
            prometheus_sd_file: self.prometheus_sd_file.clone(),
            prometheus_url: self.prometheus_url.clone(),
            cluster_name: self.cluster_name.clone(),
            link_expiry: self.link_expiry,
            api_limits: Default::default(),
            webhook: self.webhook_addr.map(|addr| WebhookConfig {
                addr,
                injector: crate::inject::injector(
                    weft_control::inject::Images {
                        registry: self.image_registry.clone(),
                        ..Default::default()
                    },
                    self.cni,
                ),
            }),
        }
    }
}

/// The one stdout line announcing the bound addresses (documented in docs/control-plane.md);
/// `webhook` only when it is on.
pub fn listening_line(grpc: SocketAddr, api: SocketAddr, webhook: Option<SocketAddr>) -> String {
    let mut line =
        serde_json::json!({"event": "listening", "grpc": grpc.to_string(), "api": api.to_string()});
    if let Some(addr) = webhook {
        line["webhook"] = addr.to_string().into();
    }
    line.to_string()
}

pub async fn run(args: ControlArgs) -> anyhow::Result<()> {
    let running = weft_control::start(args.config())
        .await
        .context("starting the control plane")?;
    // The handlers exist before the listening line: a supervisor that stops us as soon as it
    // reads the line gets a clean shutdown, not the default action of the signal.
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    println!(
        "{}",
        listening_line(running.grpc_addr, running.api_addr, running.webhook_addr)
    );
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
    running
        .shutdown()
        .await
        .context("stopping the control plane")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        control: ControlArgs,
    }

    #[test]
    fn identity_flags_default_to_an_ephemeral_ca_and_24h_leaves() {
        use clap::Parser as _;
        let w = Wrapper::try_parse_from(["x", "--store", "/s"]).expect("parse");
        let config = w.control.config();
        assert_eq!(config.identity_dir, None);
        assert_eq!(config.cert_lifetime, Duration::from_secs(24 * 3600));
        let w = Wrapper::try_parse_from([
            "x",
            "--store",
            "/s",
            "--identity-dir",
            "/ca",
            "--cert-lifetime",
            "90m",
        ])
        .expect("parse");
        let config = w.control.config();
        assert_eq!(config.identity_dir, Some(PathBuf::from("/ca")));
        assert_eq!(config.cert_lifetime, Duration::from_secs(90 * 60));
        assert_eq!(config.service_cidr.to_string(), "198.19.128.0/17");
        let bad = Wrapper::try_parse_from(["x", "--store", "/s", "--service-cidr", "10.0.0.1/8"])
            .err()
            .expect("a bad range is refused at startup")
            .to_string();
        assert!(bad.contains("did you mean 10.0.0.0/8?"), "{bad}");
    }

    #[test]
    fn store_is_a_directory_an_etcd_address_or_kubernetes() {
        use clap::Parser as _;
        use weft_control::store::Location;
        let w = Wrapper::try_parse_from(["x", "--store", "/s"]).expect("parse");
        assert_eq!(w.control.config().store, Location::Dir(PathBuf::from("/s")));
        let w = Wrapper::try_parse_from(["x", "--store", "etcd://127.0.0.1:2379,e2:2379/weft"])
            .expect("parse");
        let Location::Etcd(t) = w.control.config().store else {
            panic!("not an etcd store")
        };
        assert_eq!((t.endpoints.len(), t.prefix.as_str()), (2, "/weft"));
        let bad = Wrapper::try_parse_from(["x", "--store", "etcd://127.0.0.1:2379"])
            .err()
            .expect("an etcd store without a prefix is refused")
            .to_string();
        assert!(bad.contains("a key prefix is required"), "{bad}");
        let w = Wrapper::try_parse_from(["x", "--store", "kubernetes"]).expect("parse");
        assert_eq!(w.control.config().store, Location::Kubernetes(None));
        let w = Wrapper::try_parse_from(["x", "--store", "./kubernetes"]).expect("parse");
        assert_eq!(
            w.control.config().store,
            Location::Dir(PathBuf::from("./kubernetes"))
        );
    }

    /// The control plane's configuration from `--store /s` and `extra`.
    fn config(extra: &[&str]) -> weft_control::Config {
        use clap::Parser as _;
        let argv = ["x", "--store", "/s"].iter().chain(extra).copied();
        Wrapper::try_parse_from(argv)
            .expect("parse")
            .control
            .config()
    }

    #[test]
    fn scraping_defaults_to_every_10s_and_0s_turns_it_off() {
        use clap::Parser as _;
        assert_eq!(
            config(&[]).scrape_interval,
            weft_control::telemetry::DEFAULT_INTERVAL
        );
        assert_eq!(
            config(&["--scrape-interval", "2s"]).scrape_interval,
            Duration::from_secs(2)
        );
        assert_eq!(
            config(&["--scrape-interval", "0s"]).scrape_interval,
            Duration::ZERO
        );
        assert!(
            Wrapper::try_parse_from(["x", "--store", "/s", "--scrape-interval", "often"]).is_err()
        );
    }

    #[test]
    fn links_expire_after_5m_by_default_and_0s_keeps_them() {
        assert_eq!(
            config(&[]).link_expiry,
            weft_control::multicluster::DEFAULT_LINK_EXPIRY
        );
        assert_eq!(config(&["--link-expiry", "0s"]).link_expiry, Duration::ZERO);
        assert_eq!(
            config(&["--link-expiry", "90s", "--cluster-name", "west"]).cluster_name,
            Some("west".to_string())
        );
    }

    #[test]
    fn the_webhook_is_off_unless_an_address_is_given() {
        assert!(config(&[]).webhook.is_none());
        let on = config(&[
            "--webhook-addr",
            "0.0.0.0:8443",
            "--image-registry",
            "r.example/w",
            "--cni",
        ])
        .webhook
        .expect("on");
        assert_eq!(on.addr.to_string(), "0.0.0.0:8443");
        assert_eq!(on.injector.images.registry, "r.example/w");
        assert_eq!(on.injector.images.version, env!("CARGO_PKG_VERSION"));
        assert!(on.injector.cni);
        let plain = config(&["--webhook-addr", "0.0.0.0:8443"])
            .webhook
            .expect("on");
        assert_eq!(plain.injector.images.registry, "ghcr.io/weft-mesh");
        assert!(!plain.injector.cni);
    }

    #[test]
    fn prometheus_flags_reach_the_config() {
        use clap::Parser as _;
        let w = Wrapper::try_parse_from(["x", "--store", "/s"]).expect("parse");
        assert_eq!(w.control.config().prometheus_sd_file, None);
        assert_eq!(w.control.config().prometheus_url, None);
        let w = Wrapper::try_parse_from([
            "x",
            "--store",
            "/s",
            "--prometheus-sd-file",
            "/var/lib/weft/targets.json",
            "--prometheus-url",
            "http://127.0.0.1:9090/",
        ])
        .expect("parse");
        let config = w.control.config();
        assert_eq!(
            config.prometheus_sd_file,
            Some(PathBuf::from("/var/lib/weft/targets.json"))
        );
        assert_eq!(
            config.prometheus_url.map(|p| p.to_string()),
            Some("http://127.0.0.1:9090".to_string())
        );
        let bad = Wrapper::try_parse_from([
            "x",
            "--store",
            "/s",
            "--prometheus-url",
            "https://prom:9090",
        ])
        .err()
        .expect("https is refused at startup")
        .to_string();
        assert!(bad.contains("https is not supported"), "{bad}");
    }

    #[test]
    fn listening_line_is_one_json_object() {
        let line = listening_line(
            "127.0.0.1:1".parse().expect("addr"),
            "127.0.0.1:2".parse().expect("addr"),
            None,
        );
        assert_eq!(
            line,
            r#"{"api":"127.0.0.1:2","event":"listening","grpc":"127.0.0.1:1"}"#
        );
        let line = listening_line(
            "127.0.0.1:1".parse().expect("addr"),
            "127.0.0.1:2".parse().expect("addr"),
            Some("127.0.0.1:3".parse().expect("addr")),
        );
        assert_eq!(
            line,
            r#"{"api":"127.0.0.1:2","event":"listening","grpc":"127.0.0.1:1","webhook":"127.0.0.1:3"}"#
        );
    }
}
