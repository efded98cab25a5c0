//! `weft demo`: a meshed application on one machine. Starts the control plane in-process with a
//! temporary store holding the demo's Service documents, then for each workload its `weft-proxy`
//! sidecar, registers the workload, starts its application (`weft demo-service NAME`) once the
//! sidecar is ready (proxy-await, as `weft run`), and shows golden metrics scraped from the
//! proxies every second until Ctrl-C, SIGTERM or `--duration`.
//!
//! Identity: the control plane runs an ephemeral CA; every sidecar gets its trust anchors and
//! the name it will be certified as, and, once its workload is registered, the registration's
//! token in a file of the temporary directory, so each sidecar obtains a certificate before it
//! turns ready.
//!
//! `--cluster` (root) runs the same application in transparent mode, every workload in a pod of
//! its own: see [`cluster`]. `--multicluster` runs two linked meshes, east calling west through
//! west's multicluster gateway: see [`multicluster`].

pub mod app;
pub mod books;
pub mod children;
mod cluster;
pub mod http;
mod multicluster;
mod prometheus;
pub mod report;
mod workloads;

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;
use weft_control::telemetry::stats;
use weft_proxy::config;

use self::app::Name;
use self::report::{ProxySummary, Row, Window};
use self::workloads::{
    first_exit, launch_all, stop_all, wait_ready, workload_document, IdentityFiles, Workload,
};

/// The namespace every demo resource lives in.
pub const NAMESPACE: &str = "demo";

/// Span of the live table's sliding window.
const WINDOW: Duration = Duration::from_secs(10);
/// How often the demo's control plane scrapes the sidecars (`weft stat` against the demo shows
/// figures soon after the start).
const SCRAPE_INTERVAL: Duration = Duration::from_secs(2);

/// `weft demo`: run a meshed demo application and show its golden metrics.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    weft demo\n  \
    weft demo --duration 30 --json\n  \
    weft demo --api-addr 127.0.0.1:8085          # then: weft stat wl -n demo\n  \
    weft demo --prometheus --api-addr 127.0.0.1:8085\n  \
    sudo weft demo --cluster\n  \
    weft demo --multicluster --api-addr 127.0.0.1:8085   # then: weft multicluster gateways\n\n\
    With --prometheus a real Prometheus (the prometheus program on PATH) scrapes the sidecars \
    and weft stat answers from it. See docs/demo.md.")]
pub struct DemoArgs {
    /// Stop after this long (e.g. `30`, `30s`, `2m`); default: run until Ctrl-C.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print only the final summary as JSON on stdout (no live table).
    #[arg(long)]
    pub json: bool,
    /// Requests per second the traffic generator sends to web.
    #[arg(long, default_value_t = 20.0, value_name = "N")]
    pub rps: f64,
    /// gRPC address of the demo's control plane (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub control_addr: SocketAddr,
    /// HTTP API address of the demo's control plane (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub api_addr: SocketAddr,
    /// Run every service in its own network namespace ("pod") with transparent interception
    /// (iptables, as `weft run` does); services reach each other by name. Needs root.
    #[arg(long)]
    pub cluster: bool,
    /// When to apply the demo's traffic policy (retries on ratings, a 90/10 canary of books to
    /// books-v2), written into the control plane's store as route documents.
    #[arg(long, default_value = "20s", value_name = "DURATION", value_parser = parse_duration)]
    pub traffic_policy_after: Duration,
    /// Never apply the traffic policy (no route documents: every call goes to its Service).
    #[arg(long)]
    pub no_traffic_policy: bool,
    /// Run two meshes, `west` (the demo's application, its `web` and `ratings` exported, and a
    /// multicluster gateway) and `east` (linked to west, its traffic generator calling
    /// `web-west`), sharing one trust anchor, on loopback. `--control-addr` / `--api-addr` are
    /// east's. See docs/multicluster.md.
    #[arg(long, conflicts_with_all = ["cluster", "prometheus"])]
    pub multicluster: bool,
    /// Also start a real Prometheus (the `prometheus` program on PATH) scraping every sidecar
    /// through the targets file the demo's control plane writes, and have the control plane
    /// answer `weft stat` from it (PromQL) instead of its own scrapes.
    #[arg(long, conflicts_with = "cluster")]
    pub prometheus: bool,
    /// Where `--prometheus` listens (port 0 picks a free port).
    #[arg(long, default_value = prometheus::DEFAULT_ADDR, value_name = "ADDR", requires = "prometheus")]
    pub prometheus_addr: SocketAddr,
}

/// `DURATION` flag values (`weft demo --duration`, `weft control --cert-lifetime`): the grammar
/// of `WEFT_PROXY_*` durations ([`config::parse_duration`]: `500ms`, `3s`, `2m`, `1h`, `0`), and
/// on the command line also a bare number of seconds (`30`, `1.5`), which these flags have always
/// taken. One grammar for both, documented in docs/cli.md.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return s
            .parse::<f64>()
            .ok()
            .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
            .ok_or_else(|| format!("{s:?} is not a number of seconds"));
    }
    config::parse_duration(s)
}

/// One workload of the demo: the app it runs and how the mesh reaches it.
struct Spec {
    /// The workload's name, also its Service's (and its `app` label).
    name: &'static str,
    /// The program it runs (`weft demo-service APP`).
    app: Name,
    /// `(port name, service port)` the workload serves, if any.
    serves: Option<(&'static str, u16)>,
    /// Logical services reached through a local upstream port (gRPC clients).
    upstreams: &'static [&'static str],
    /// Extra arguments of its program (`weft demo-service APP ...`).
    app_args: &'static [&'static str],
}

/// Started in dependency order: servers first, the traffic generator last.
const WORKLOADS: &[Spec] = &[
    Spec {
        name: "ratings",
        app: Name::Ratings,
        serves: Some(("http", 8080)),
        upstreams: &[],
        app_args: &[],
    },
    Spec {
        name: "books",
        app: Name::Books,
        serves: Some(("grpc", 9090)),
        upstreams: &[],
        app_args: &[],
    },
    // The canary: the same program as books, its own Service; the traffic policy sends it 10 %.
    Spec {
        name: "books-v2",
        app: Name::Books,
        serves: Some(("grpc", 9090)),
        upstreams: &[],
        app_args: &[],
    },
    Spec {
        name: "web",
        app: Name::Web,
        serves: Some(("http", 8080)),
        upstreams: &[app::BOOKS_AUTHORITY],
        app_args: &[],
    },
    Spec {
        name: "traffic",
        app: Name::Traffic,
        serves: None,
        upstreams: &[],
        app_args: &[],
    },
];

/// The store file the traffic policy is written to.
const TRAFFIC_POLICY_FILE: &str = "traffic-policy.yaml";

/// The demo's traffic policy, the YAML a Linkerd user applies: Linkerd's retry annotations on an
/// HTTPRoute for ratings (which fails ~5 % of requests: three retries make that ~0 %), and a
/// GRPCRoute splitting books 90/10 with books-v2.
const TRAFFIC_POLICY_YAML: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: ratings
  namespace: demo
  annotations:
    retry.linkerd.io/http: 5xx
    retry.linkerd.io/limit: \"3\"
spec:
  parentRefs: [{group: core, kind: Service, name: ratings, port: 8080}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: books-canary, namespace: demo}
spec:
  parentRefs: [{group: core, kind: Service, name: books, port: 9090}]
  rules:
  - backendRefs:
    - {name: books, port: 9090, weight: 90}
    - {name: books-v2, port: 9090, weight: 10}
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: ratings-http, namespace: demo}
spec:
  externalWorkloadSelector: {matchLabels: {app: ratings}}
  port: http
  proxyProtocol: HTTP/1
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: ratings-clients, namespace: demo}
spec:
  identityRefs: [{kind: ServiceAccount, name: web}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ratings-web-only, namespace: demo}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: ratings-http}
  requiredAuthenticationRefs:
  - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: ratings-clients}
";

/// What the traffic policy does, for the table header and the log.
const TRAFFIC_POLICY_SUMMARY: &str =
    "retries on ratings (5xx, limit 3), books split 90/10 with books-v2, ratings admits only web";

/// Writes the traffic policy into the store (a hidden temporary file renamed into place, so the
/// control plane never reads half of it).
fn apply_traffic_policy(store: &Path) -> anyhow::Result<()> {
    let tmp = store.join(format!(".{TRAFFIC_POLICY_FILE}.tmp"));
    std::fs::write(&tmp, TRAFFIC_POLICY_YAML)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, store.join(TRAFFIC_POLICY_FILE))
        .with_context(|| format!("writing the traffic policy into {}", store.display()))
}

/// The Service documents of the demo store.
fn services_yaml() -> String {
    services_yaml_with(&|_| None, &[])
}

/// The Service documents, each with the `clusterIP` that `cluster_ip` gives its name, if any;
/// those named in `exported` are exported to linked clusters through the gateway (Linkerd's
/// `mirror.linkerd.io/exported: "true"`).
fn services_yaml_with(
    cluster_ip: &dyn Fn(&str) -> Option<std::net::Ipv4Addr>,
    exported: &[&str],
) -> String {
    use weft_control::resource::multicluster::{EXPORTED_GATEWAY, EXPORTED_LABEL};
    let service = |name: &str, port_name: &str, port: u16, protocol: &str| {
        let ip = cluster_ip(name).map_or_else(String::new, |ip| format!("  clusterIP: {ip}\n"));
        let labels = match exported.contains(&name) {
            true => format!("  labels: {{{EXPORTED_LABEL}: \"{EXPORTED_GATEWAY}\"}}\n"),
            false => String::new(),
        };
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n{labels}\
             spec:\n  selector: {{app: {name}}}\n{ip}  ports:\n  - name: {port_name}\n    port: {port}\n    \
             targetPort: {port_name}\n    appProtocol: {protocol}\n"
        )
    };
    [
        service("web", "http", 8080, "http"),
        service("books", "grpc", 9090, "grpc"),
        service("books-v2", "grpc", 9090, "grpc"),
        service("ratings", "http", 8080, "http"),
    ]
    .join("---\n")
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!("weft-demo-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the demo until Ctrl-C, SIGTERM or `--duration`.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rps > 0.0 && args.rps.is_finite(),
        "--rps must be positive"
    );
    if args.cluster {
        return cluster::run(args).await;
    }
    if args.multicluster {
        return multicluster::run(args).await;
    }
    // Installed first so that Ctrl-C during start-up also stops cleanly.
    let mut stop = Stop::install()?;
    let store = TempDir::create()?;
    std::fs::write(store.0.join("services.yaml"), services_yaml())
        .context("writing the demo store")?;

    let plan = match args.prometheus {
        true => Some(prometheus::Plan::new(args.prometheus_addr)?),
        false => None,
    };
    let control = start_control(&args, &store.0, plan.as_ref()).await?;
    let (grpc, api) = (control.grpc_addr, control.api_addr);
    let prometheus = match &plan {
        Some(plan) => match plan.start().await {
            Ok(p) => Some(p),
            Err(error) => {
                let _ = control.shutdown().await;
                return Err(error);
            }
        },
        None => None,
    };
    let tokens_dir = store.0.join("tokens");
    std::fs::create_dir_all(&tokens_dir).context("creating the token directory")?;
    let identity = IdentityFiles {
        trust_anchors_pem: &control.trust_anchors_pem,
        dir: &tokens_dir,
    };
    eprintln!(
        "weft demo: control plane on {grpc} (gRPC), {api} (API); store {}",
        store.0.display()
    );
    eprintln!(
        "weft demo: web dashboard on {} (weft dashboard --api-addr {api})",
        crate::dashboard::url(api)
    );

    // Stopped during start-up: the workloads started so far are killed as they drop.
    let outcome = tokio::select! {
        started = launch_all(grpc, api, args.rps, &identity) => match started {
            Ok(mut workloads) => {
                let prometheus_url = prometheus
                    .as_ref()
                    .map(|p| format!("; Prometheus {}", p.url()))
                    .unwrap_or_default();
                let about = format!("{}{prometheus_url}", about(args.rps, "web", grpc, api));
                let outcome = watch(&args, &mut workloads, &mut stop, &about, &store.0)
                .await;
                stop_all(workloads).await;
                outcome
            }
            Err(error) => Err(error),
        },
        () = stop.wait() => Ok(()),
    };
    if let Err(error) = control.shutdown().await {
        tracing::warn!(%error, "control plane did not stop cleanly");
    }
    if let Some(p) = prometheus {
        p.stop().await;
    }
    outcome
}

/// The demo's own control plane, in-process, on `--control-addr` / `--api-addr`.
async fn start_control(
    args: &DemoArgs,
    store: &Path,
    prometheus: Option<&prometheus::Plan>,
) -> anyhow::Result<weft_control::Running> {
    let prometheus_url = prometheus.map(prometheus::Plan::url).transpose()?;
    weft_control::start(weft_control::Config {
        prometheus_sd_file: prometheus.map(prometheus::Plan::targets_file),
        prometheus_url,
        ..control_config(store, args.control_addr, args.api_addr)
    })
    .await
    .context("starting the control plane")
}

/// A demo control plane's configuration: its store directory (polled every 200 ms), its
/// addresses, the default domains, an ephemeral CA (nothing to set up, and it dies with the
/// demo), and the scrapes the live figures of `weft stat` need.
fn control_config(store: &Path, grpc: SocketAddr, api: SocketAddr) -> weft_control::Config {
    weft_control::Config {
        store: weft_control::store::Location::Dir(store.to_path_buf()),
        grpc_addr: grpc,
        api_addr: api,
        cluster_domain: "cluster.local".into(),
        trust_domain: "cluster.local".into(),
        control_namespace: "weft".into(),
        poll_interval: Duration::from_millis(200),
        identity_dir: None,
        cert_lifetime: weft_control::ca::DEFAULT_CERT_LIFETIME,
        scrape_interval: SCRAPE_INTERVAL,
        ..Default::default()
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, both meaning "stop the demo".
struct Stop {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Stop {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Stop {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Scrapes every second and shows the table until stopped; then prints the JSON summary if asked.
async fn watch(
    args: &DemoArgs,
    workloads: &mut [Workload],
    stop: &mut Stop,
    about: &str,
    store: &Path,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let mut policy = if args.no_traffic_policy {
        Policy::Off
    } else {
        Policy::Due(args.traffic_policy_after)
    };
    let mut window = Window::new(WINDOW, started);
    let mut ticks =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let redraw = std::io::stdout().is_terminal();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.wait() => break,
            _ = sleep_until_deadline(deadline) => break,
            exited = first_exit(workloads) => {
                let (what, status) = exited;
                anyhow::bail!("{what} exited unexpectedly ({status})");
            }
        }
        if let Policy::Due(after) = policy {
            if started.elapsed() >= after {
                apply_traffic_policy(store)?;
                eprintln!(
                    "weft demo: traffic policy applied ({TRAFFIC_POLICY_SUMMARY}): {}",
                    store.join(TRAFFIC_POLICY_FILE).display()
                );
                policy = Policy::Applied(started.elapsed());
            }
        }
        window.push(Instant::now(), scrape_as(workloads, &live_name).await);
        if !args.json {
            let header = format!(
                "weft demo: {}s, {about}; Ctrl-C to stop\n\
                 traffic policy: {}",
                started.elapsed().as_secs(),
                policy.describe()
            );
            let text = report::table(&window.rates(), &header);
            let mut stdout = std::io::stdout().lock();
            if redraw {
                // Clear the screen and home the cursor so the table updates in place.
                let _ = write!(stdout, "\x1b[2J\x1b[H");
            }
            let _ = writeln!(stdout, "{text}");
            let _ = stdout.flush();
        }
    }
    if args.json {
        let cumulative = scrape(workloads).await;
        let proxies = workloads
            .iter()
            .map(|w| ProxySummary {
                workload: w.name.to_string(),
                admin: w.listening.admin,
            })
            .collect();
        let summary = report::summary(&cumulative, proxies);
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

/// A workload's name in the live table: `CLUSTER/NAME` with `--multicluster`, else its name.
fn live_name(w: &Workload) -> String {
    match w.cluster {
        Some(cluster) => format!("{cluster}/{}", w.name),
        None => w.name.to_string(),
    }
}

/// What the live table's header says of the traffic and the control plane.
fn about(rps: f64, target: &str, grpc: SocketAddr, api: SocketAddr) -> String {
    format!("{rps} rps to {target}; control plane {grpc} (gRPC) {api} (API)")
}

/// Where the demo's traffic policy stands.
#[derive(Clone, Copy, Debug)]
enum Policy {
    /// `--no-traffic-policy`.
    Off,
    /// To be applied this long after the start.
    Due(Duration),
    /// Applied this long after the start.
    Applied(Duration),
}

impl Policy {
    fn describe(self) -> String {
        match self {
            Policy::Off => "off (--no-traffic-policy)".to_string(),
            Policy::Due(after) => format!(
                "none yet; at {}s: {TRAFFIC_POLICY_SUMMARY}",
                after.as_secs()
            ),
            Policy::Applied(at) => {
                format!("since {}s: {TRAFFIC_POLICY_SUMMARY}", at.as_secs())
            }
        }
    }
}

async fn sleep_until_deadline(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Scrapes every proxy and folds the results into rows (cumulative counters), each workload
/// named as itself.
async fn scrape(workloads: &[Workload]) -> BTreeMap<Row, stats::Stats> {
    scrape_as(workloads, &|w| w.name.to_string()).await
}

/// [`scrape`], each workload's rows named `name_of` it (the live table of `--multicluster`
/// names the cluster too).
async fn scrape_as(
    workloads: &[Workload],
    name_of: &(dyn Fn(&Workload) -> String + Sync),
) -> BTreeMap<Row, stats::Stats> {
    let scrapes = workloads.iter().map(|w| async move {
        match http::get(w.listening.admin, "/metrics").await {
            Ok(response) if response.status().is_success() => {
                let text = String::from_utf8_lossy(response.body());
                report::rows(&name_of(w), &stats::parse(&text))
            }
            Ok(response) => {
                tracing::debug!(workload = w.name, status = %response.status(), "scrape failed");
                BTreeMap::new()
            }
            Err(error) => {
                tracing::debug!(
                    workload = w.name,
                    error = format!("{error:#}"),
                    "scrape failed"
                );
                BTreeMap::new()
            }
        }
    });
    futures_util::future::join_all(scrapes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_proxy_grammar_and_bare_seconds() {
        // Every value docs/cli.md shows for --duration and --cert-lifetime.
        for (text, expected) in [
            ("30", Duration::from_secs(30)),
            ("1.5", Duration::from_millis(1500)),
            ("8", Duration::from_secs(8)),
            ("30s", Duration::from_secs(30)),
            ("90s", Duration::from_secs(90)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("24h", Duration::from_secs(24 * 3600)),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        // A unit takes a whole number, as in WEFT_PROXY_* durations.
        for bad in ["soon", "3d", "-1", "1.5s", "1e3", ".", "1.2.3", "", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn store_has_the_four_services_in_the_demo_namespace() {
        let yaml = services_yaml();
        assert_eq!(yaml.matches("kind: Service").count(), 4);
        assert_eq!(yaml.matches("namespace: demo").count(), 4);
        assert!(yaml.contains("name: books-v2") && yaml.contains("port: 9090"));
        // Every Service the traffic policy names exists, in the same namespace.
        for name in ["ratings", "books", "books-v2"] {
            assert!(yaml.contains(&format!("name: {name}\n")), "{name}");
            assert!(
                TRAFFIC_POLICY_YAML.contains(&format!("name: {name},")),
                "{name}"
            );
        }
        assert_eq!(TRAFFIC_POLICY_YAML.matches("namespace: demo").count(), 5);
    }

    #[test]
    fn every_traffic_policy_document_is_valid() {
        let (docs, errors) = weft_control::documents::parse_yaml_file(
            TRAFFIC_POLICY_FILE,
            TRAFFIC_POLICY_YAML,
            &weft_control::resource::Defaults::default(),
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(docs.len(), 5);
    }

    #[test]
    fn the_traffic_policy_is_written_whole_into_the_store() {
        let dir = TempDir::create().expect("temp dir");
        apply_traffic_policy(&dir.0).expect("written");
        let written = std::fs::read_to_string(dir.0.join(TRAFFIC_POLICY_FILE)).expect("read");
        assert_eq!(written, TRAFFIC_POLICY_YAML);
        // Only the policy file: the temporary one was renamed.
        assert_eq!(std::fs::read_dir(&dir.0).expect("dir").count(), 1);
    }
}
