//! Chaos scenarios on the namespace cluster, one fault at a time, each with figures: the error
//! rate while the fault lasts, the time until the client proxy stopped using the broken endpoint
//! or failed fast (detect), the time until traffic reached it again after the fault was undone
//! (recover), and the errors of a second client/service pair on nodes the fault does not touch
//! (must be zero).
//!
//! ```text
//! node 0: control plane, client B ──────────────► service chaos-b: b1 (node 3)
//! node 1: client A ──► service chaos-a: a1 (node 2, the victim), a2 (node 3)
//! node 2: a1 — every fault is on node 2 or on a1
//! node 3: a2, b1, and a plain host outside the mesh ("internet", for the DNS scenario)
//! ```
//!
//! Scenarios: `loss` (5 % of the packets to and from node 2's pods dropped, iptables `statistic`
//! in the hub: it works where the kernel has no `tc netem`), `partition` (node 2 cut off from every
//! other node for the fault's length), `link-down` (node 2's link down, then up), `sigstop` (a1's
//! sidecar proxy frozen with SIGSTOP, then SIGCONT: its sockets stay open and nothing answers),
//! `dns` (client A's egress calls to `ext.chaos.test`, a host outside the mesh, while the pod's
//! resolver cannot answer that name).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use weft_testbed::{procfs, NamedNetns, Root};

use super::apps::{PodBackend, Task, HTTP_PORT};
use super::mesh::{Binaries, Mesh, ServiceSpec};
use super::traffic::{Kind, Outcome, Target, Traffic};

/// The scenarios, in the order they run.
pub const SCENARIOS: [&str; 5] = ["loss", "partition", "link-down", "sigstop", "dns"];

/// The victim node and the name the DNS scenario calls.
const VICTIM_NODE: usize = 2;
const EXT_NAME: &str = "ext.chaos.test";
/// An answer slower than this is not "failing fast".
const FAST: Duration = Duration::from_secs(1);

/// `weft-bench chaos` (what `bench/chaos` runs).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Scenarios to run (default: all): loss, partition, link-down, sigstop, dns.
    #[arg(long = "scenario", value_parser = clap::builder::PossibleValuesParser::new(SCENARIOS))]
    pub scenarios: Vec<String>,
    /// How long each fault lasts, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub fault_seconds: f64,
    /// How long recovery may take before it counts as a failure, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub recover_seconds: f64,
    /// Requests per second of each client (HTTP/1.1 and HTTP/2 GETs, alternating).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The `weft` binary.
    #[arg(long, default_value = "target/release/weft")]
    pub weft: PathBuf,
    /// The `weft-proxy` binary.
    #[arg(long, default_value = "target/release/weft-proxy")]
    pub proxy: PathBuf,
}

/// One scenario's figures (seconds from the fault's start, or from its end for recovery).
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    pub name: String,
    pub what: String,
    pub requests_during: u64,
    pub errors_during: u64,
    /// The first error causes seen during the fault (up to 3), with counts.
    pub causes: Vec<(String, u64)>,
    /// From the fault's start until the victim received no more requests (None: it kept
    /// getting them, as under mild loss).
    pub routed_away_s: Option<f64>,
    /// From the fault's start until the first failure that came back within 1 s.
    pub first_fast_failure_s: Option<f64>,
    /// From the fault's start until the answer to the last failed request, when failures
    /// stopped (2 s or more) before the fault ended.
    pub errors_stopped_s: Option<f64>,
    /// Time to detect: without errors, `routed_away_s`; with errors that stopped during the
    /// fault, `errors_stopped_s`; with errors until its end, `first_fast_failure_s` (the client
    /// is told at once instead of waiting).
    pub detect_s: Option<f64>,
    /// From the fault's end until the victim answered again (None: not within the bound).
    pub recover_s: Option<f64>,
    /// Requests the victim served during the fault.
    pub victim_served_during: u64,
    /// The unaffected pair over the whole scenario.
    pub other_requests: u64,
    pub other_errors: u64,
    pub problems: Vec<String>,
}

/// Every scenario run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub args: String,
    pub scenarios: Vec<Scenario>,
    pub problems: Vec<String>,
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "args": self.args,
            "passed": self.problems.is_empty(),
            "problems": self.problems,
            "scenarios": self.scenarios.iter().map(|s| json!({
                "name": s.name,
                "fault": s.what,
                "requests_during": s.requests_during,
                "errors_during": s.errors_during,
                "error_rate_during": rate(s.errors_during, s.requests_during),
                "error_causes": s.causes.iter().map(|(c, n)| json!({"cause": c, "count": n})).collect::<Vec<_>>(),
                "routed_away_s": s.routed_away_s,
                "first_fast_failure_s": s.first_fast_failure_s,
                "errors_stopped_s": s.errors_stopped_s,
                "detect_s": s.detect_s,
                "recover_s": s.recover_s,
                "victim_served_during": s.victim_served_during,
                "unaffected_pair": {"requests": s.other_requests, "errors": s.other_errors},
                "problems": s.problems,
            })).collect::<Vec<_>>(),
        })
    }
}

fn rate(errors: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        errors as f64 / total as f64
    }
}

fn secs(d: Option<f64>) -> String {
    d.map_or("—".into(), |s| format!("{s:.1} s"))
}

pub fn scenario_line(s: &Scenario) -> String {
    let mut line = format!(
        "{:<10} {}\n           during: {} requests, {} errors ({:.2} %); victim served {}; detect {} (routed away {}, errors stopped {}, first fast failure {}); recover {}; unaffected pair {} requests, {} errors",
        s.name,
        s.what,
        s.requests_during,
        s.errors_during,
        100.0 * rate(s.errors_during, s.requests_during),
        s.victim_served_during,
        secs(s.detect_s),
        secs(s.routed_away_s),
        secs(s.errors_stopped_s),
        secs(s.first_fast_failure_s),
        secs(s.recover_s),
        s.other_requests,
        s.other_errors
    );
    for (c, n) in &s.causes {
        line += &format!("\n           {n} × {c}");
    }
    for p in &s.problems {
        line += &format!("\n           PROBLEM: {p}");
    }
    line
}

/// Outcomes of one client, kept whole.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Outcome>>>);

impl Log {
    fn collect(&self) -> (mpsc::UnboundedSender<Outcome>, Task) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
        let log = self.0.clone();
        let task = Task(tokio::spawn(async move {
            while let Some(o) = rx.recv().await {
                log.lock().unwrap_or_else(|e| e.into_inner()).push(o);
            }
        }));
        (tx, task)
    }

    fn between(&self, from: Instant, to: Instant) -> Vec<Outcome> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|o| o.due >= from && o.due < to)
            .cloned()
            .collect()
    }
}

/// The DNS scenario's pieces: a name for client A's namespace whose `/etc/netns/NAME/` files we
/// own (`ip netns exec NAME` mounts them over `/etc`), and the host outside the mesh.
struct Dns {
    alias: String,
    internet: SocketAddr,
}

impl Dns {
    fn etc(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.alias)
    }

    /// Writes the alias's `hosts` (with `ext.chaos.test` when `known`) and a `resolv.conf` whose
    /// nameserver is the hub's address, where nothing answers DNS (refused at once).
    fn resolvable(&self, known: bool) -> std::io::Result<()> {
        std::fs::create_dir_all(self.etc())?;
        let mut hosts = "127.0.0.1 localhost\n".to_string();
        if known {
            hosts += &format!("{} {EXT_NAME}\n", self.internet.ip());
        }
        std::fs::write(self.etc().join("hosts"), hosts)?;
        std::fs::write(
            self.etc().join("resolv.conf"),
            "nameserver 198.18.0.1\noptions timeout:1 attempts:1\n",
        )
    }

    /// One egress call: `curl http://ext.chaos.test:8080/` in client A's pod.
    async fn call(&self, due: Instant) -> Outcome {
        let url = format!("http://{EXT_NAME}:{}/", self.internet.port());
        let out = tokio::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.alias,
                "curl",
                "-sS",
                "-o",
                "/dev/null",
            ])
            .args(["-w", "%{http_code}", "--max-time", "10", &url])
            .output()
            .await;
        let result = match out {
            Ok(o) if String::from_utf8_lossy(&o.stdout) == "200" => Ok("internet".to_string()),
            Ok(o) => Err(format!(
                "curl: {} {}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("running curl: {e}")),
        };
        Outcome {
            kind: Kind::H1Get,
            due,
            latency: due.elapsed(),
            result,
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = weft_testbed::run("ip", &["netns", "del", &self.alias]);
        let _ = std::fs::remove_dir_all(self.etc());
    }
}

/// Egress calls every 250 ms until dropped.
fn dns_calls(dns: Arc<Dns>, out: mpsc::UnboundedSender<Outcome>) -> Task {
    Task(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            let due = tick.tick().await;
            let (dns, out) = (dns.clone(), out.clone());
            tokio::spawn(async move {
                let _ = out.send(dns.call(due).await);
            });
        }
    }))
}

/// A fault in force; undone by dropping it.
enum Fault {
    Partition(#[allow(dead_code)] Vec<weft_testbed::Partition>),
    LinkDown(#[allow(dead_code)] weft_testbed::LinkDown),
    Frozen(#[allow(dead_code)] procfs::Frozen),
    Dns(Arc<Dns>),
}

impl Drop for Fault {
    fn drop(&mut self) {
        if let Fault::Dns(dns) = self {
            if let Err(e) = dns.resolvable(true) {
                eprintln!("chaos: restoring {EXT_NAME}: {e}");
            }
        }
    }
}

/// Runs the chosen scenarios; `progress` gets each as it ends.
pub async fn run(root: Root, args: &Args, progress: impl Fn(&Scenario)) -> anyhow::Result<Report> {
    let chosen: Vec<&str> = if args.scenarios.is_empty() {
        SCENARIOS.to_vec()
    } else {
        SCENARIOS
            .iter()
            .copied()
            .filter(|s| args.scenarios.iter().any(|a| a == s))
            .collect()
    };
    let bins = Binaries {
        weft: args.weft.clone(),
        proxy: args.proxy.clone(),
    };
    let svc_a = ServiceSpec {
        name: "chaos-a".into(),
        app: "chaos-a".into(),
        ip: [198, 19, 0, 40].into(),
    };
    let svc_b = ServiceSpec {
        name: "chaos-b".into(),
        app: "chaos-b".into(),
        ip: [198, 19, 0, 41].into(),
    };
    let mut mesh = Mesh::start(
        root,
        "chaos",
        &bins,
        4,
        "24h",
        &[svc_a.clone(), svc_b.clone()],
    )
    .await?;
    let client_a = mesh.client("chaos-client-a", 1).await?;
    let client_b = mesh.client("chaos-client-b", 0).await?;
    let a1 = mesh.pool_pod("chaos-a1", "chaos-a", VICTIM_NODE).await?;
    mesh.pool_pod("chaos-a2", "chaos-a", 3).await?;
    mesh.pool_pod("chaos-b1", "chaos-b", 3).await?;
    let victim = mesh.pools[a1].backend.name.clone();

    // The host outside the mesh: a plain pod on node 3 serving HTTP.
    let internet_pod = mesh.cluster.add_pod(3)?;
    let internet = PodBackend::start(&NamedNetns::open(internet_pod.netns().name())?, "internet")?;
    let sleep_pid = mesh.clients[client_a]
        .workload
        .proc
        .pid()
        .and_then(|p| procfs::child_named(p, "sleep"))
        .ok_or_else(|| anyhow::anyhow!("client A's command (sleep) is not running"))?;
    let alias = weft_testbed::unique_name("dns");
    weft_testbed::run("ip", &["netns", "attach", &alias, &sleep_pid.to_string()])?;
    let dns = Arc::new(Dns {
        alias,
        internet: SocketAddr::from((internet_pod.ip(), HTTP_PORT)),
    });
    dns.resolvable(true)?;

    let target = |c: usize, svc: &ServiceSpec| Target {
        netns: mesh.clients[c].netns.clone(),
        addr: svc.http(),
        authority: svc.authority(),
    };
    let (ta, tb) = (target(client_a, &svc_a), target(client_b, &svc_b));
    super::soak::warm_up(&ta)
        .await
        .map_err(anyhow::Error::msg)?;
    super::soak::warm_up(&tb)
        .await
        .map_err(anyhow::Error::msg)?;
    let kinds = [Kind::H1Get, Kind::H2Get];
    let (log_a, log_b, log_dns) = (Log::default(), Log::default(), Log::default());
    let (tx_a, _ca) = log_a.collect();
    let (tx_b, _cb) = log_b.collect();
    let (tx_d, _cd) = log_dns.collect();
    let traffic_a = Traffic::start(ta, args.rate, &kinds, 4, tx_a);
    let traffic_b = Traffic::start(tb, args.rate, &kinds, 4, tx_b);
    let _dns_calls = dns_calls(dns.clone(), tx_d);
    let fault_len = Duration::from_secs_f64(args.fault_seconds);
    let recover_bound = Duration::from_secs_f64(args.recover_seconds);

    let mut report = Report {
        args: format!("{args:?}"),
        ..Report::default()
    };
    for name in chosen {
        // A calm start: 5 s of traffic before the fault.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let begin = Instant::now() - Duration::from_secs(5);
        let (what, fault) = match name {
            "loss" => (
                "5 % of packets to and from node 2's pods dropped (iptables statistic in the hub)"
                    .to_string(),
                Fault::Partition(vec![mesh.cluster.node_loss(VICTIM_NODE, 0.05)?]),
            ),
            "partition" => (
                "node 2 partitioned from every other node".to_string(),
                Fault::Partition(
                    (0..4)
                        .filter(|&n| n != VICTIM_NODE)
                        .map(|n| mesh.cluster.partition(VICTIM_NODE, n))
                        .collect::<Result<_, _>>()?,
                ),
            ),
            "link-down" => (
                "node 2's link to the hub down".to_string(),
                Fault::LinkDown(mesh.cluster.node_link_down(VICTIM_NODE)?),
            ),
            "sigstop" => {
                let (_, _, pid) = mesh
                    .proxies()
                    .into_iter()
                    .find(|(n, _, _)| *n == victim)
                    .ok_or_else(|| anyhow::anyhow!("{victim}'s proxy is not running"))?;
                (
                    format!("{victim}'s sidecar proxy (pid {pid}) frozen with SIGSTOP"),
                    Fault::Frozen(procfs::freeze(pid)?),
                )
            }
            "dns" => {
                dns.resolvable(false)?;
                (
                    format!("client A's resolver cannot answer {EXT_NAME} (egress calls to it)"),
                    Fault::Dns(dns.clone()),
                )
            }
            other => anyhow::bail!("unknown scenario {other}"),
        };
        let t0 = Instant::now();
        eprintln!("chaos: {name}: {what} for {fault_len:?}");
        tokio::time::sleep(fault_len).await;
        let t1 = Instant::now();
        drop(fault);
        let is_dns = name == "dns";
        let log = if is_dns { &log_dns } else { &log_a };
        let recovered = |o: &Outcome| {
            o.result
                .as_deref()
                .is_ok_and(|b| if is_dns { b == "internet" } else { b == victim })
        };
        // Recovery: the first good answer from the victim (for DNS, from the outside host)
        // among requests sent after the fault ended.
        let deadline = t1 + recover_bound;
        let recover_s = loop {
            let first = log
                .between(t1, Instant::now())
                .into_iter()
                .filter(|o| recovered(o))
                .map(|o| (o.due + o.latency - t1).as_secs_f64())
                .reduce(f64::min);
            if first.is_some() || Instant::now() > deadline {
                break first;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // Let answers to requests sent during the fault come in (they time out within 10 s).
        tokio::time::sleep(super::traffic::REQUEST_TIMEOUT.saturating_sub(t1.elapsed())).await;
        let during = log.between(t0, t1);
        let errors: Vec<&Outcome> = during.iter().filter(|o| o.result.is_err()).collect();
        let mut causes: Vec<(String, u64)> = Vec::new();
        for e in &errors {
            let cause = e.result.clone().err().unwrap_or_default();
            match causes.iter_mut().find(|(c, _)| *c == cause) {
                Some((_, n)) => *n += 1,
                None => causes.push((cause, 1)),
            }
        }
        causes.sort_by_key(|c| std::cmp::Reverse(c.1));
        causes.truncate(3);
        let victim_served: Vec<&Outcome> = during.iter().filter(|o| recovered(o)).collect();
        let routed_away_s = if is_dns {
            None
        } else {
            match victim_served.iter().map(|o| o.due).max() {
                // Served until the end: never routed away.
                Some(last) if t1 - last < Duration::from_secs(2) => None,
                Some(last) => Some((last - t0).as_secs_f64()),
                None => Some(0.0),
            }
        };
        let first_fast_failure_s = errors
            .iter()
            .filter(|o| o.latency < FAST)
            .map(|o| (o.due + o.latency - t0).as_secs_f64())
            .reduce(f64::min);
        // Errors that stopped before the fault ended: the answer to the last failed request is
        // when the client stopped being hurt (the proxy gave up on the broken endpoint).
        let errors_stopped_s = match errors.iter().map(|o| o.due).max() {
            Some(last) if t1 - last >= Duration::from_secs(2) => errors
                .iter()
                .map(|o| (o.due + o.latency - t0).as_secs_f64())
                .reduce(f64::max),
            _ => None,
        };
        let detect_s = if errors.is_empty() {
            routed_away_s
        } else {
            errors_stopped_s.or(first_fast_failure_s)
        };
        let other = log_b.between(begin, Instant::now());
        let other_errors = other.iter().filter(|o| o.result.is_err()).count() as u64;
        let mut s = Scenario {
            name: name.to_string(),
            what,
            requests_during: during.len() as u64,
            errors_during: errors.len() as u64,
            causes,
            routed_away_s,
            first_fast_failure_s,
            errors_stopped_s,
            detect_s,
            recover_s,
            victim_served_during: victim_served.len() as u64,
            other_requests: other.len() as u64,
            other_errors,
            problems: Vec::new(),
        };
        if other_errors > 0 {
            let first = other
                .iter()
                .find_map(|o| o.result.clone().err())
                .unwrap_or_default();
            s.problems.push(format!(
                "the unaffected pair had {other_errors} errors (first: {first})"
            ));
        }
        if recover_s.is_none() {
            s.problems.push(format!(
                "no recovery within {recover_bound:?} of the fault's end"
            ));
        }
        progress(&s);
        report
            .problems
            .extend(s.problems.iter().map(|p| format!("{name}: {p}")));
        report.scenarios.push(s);
    }
    traffic_a.stop().await;
    traffic_b.stop().await;
    drop(internet);
    if !report.problems.is_empty() {
        eprintln!("{}", mesh.logs());
    }
    Ok(report)
}
