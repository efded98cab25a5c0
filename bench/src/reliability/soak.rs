//! The soak: steady mixed traffic through the namespace cluster while every fault the mesh must
//! ride through happens on a schedule — endpoints churn every second, the control plane is
//! killed and restarted, certificates renew, the trust anchor rotates once — with figures per
//! interval (a minute in `bench/soak`): requests by protocol and idempotency, every failure's
//! cause, p50/p99 latency, the RSS and open descriptors of every mesh process, bytes of the
//! opaque stream verified. The verdict fails on a failed idempotent request, a corrupted opaque
//! byte, or growth of RSS or descriptors past [`LeakBound`] between the end of the second
//! interval and the end.
//!
//! Layout: node 0 holds the control plane and the client pod; pool pods alternate over nodes
//! 1.. (`nodes - 1` of them at least two).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use weft_testbed::{procfs, Root};

use super::mesh::{Binaries, ChurnCounts, Mesh, ServiceSpec};
use super::traffic::{self, Kind, Outcome, StreamStats, Target, Traffic};

/// `weft-bench soak` (what `bench/soak` runs).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Length of the run, minutes.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Requests per second in total, spread evenly over HTTP/1.1 GET and POST, HTTP/2 GET and
    /// POST, and gRPC.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Seconds per figures line (and the control plane's restart period).
    #[arg(long, default_value_t = 60.0)]
    pub interval: f64,
    /// Leaf certificate lifetime (`weft control --cert-lifetime`); proxies renew at ~70 % of it,
    /// so 43s renews every 30 s.
    #[arg(long, default_value = "43s")]
    pub cert_lifetime: String,
    /// Pool pods whose endpoints churn.
    #[arg(long, default_value_t = 4)]
    pub pool: usize,
    /// Nodes of the cluster (node 0: control plane and client; pool pods on the others).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// The `weft` binary.
    #[arg(long, default_value = "target/release/weft")]
    pub weft: PathBuf,
    /// The `weft-proxy` binary.
    #[arg(long, default_value = "target/release/weft-proxy")]
    pub proxy: PathBuf,
}

impl Args {
    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.minutes * 60.0)
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval)
    }

    /// The certificate lifetime (for the rotation's schedule): `N`, `Ns`, `Nm` or `Nh`.
    fn lifetime(&self) -> anyhow::Result<Duration> {
        parse_lifetime(&self.cert_lifetime)
    }
}

/// `43s`, `2m`, `1h` or plain seconds; what `--cert-lifetime` takes that the schedule needs.
fn parse_lifetime(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("--cert-lifetime {s:?}: not a number with s, m or h"))?;
    let scale = match unit {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => anyhow::bail!("--cert-lifetime {s:?}: the unit must be s, m or h"),
    };
    Duration::try_from_secs_f64(n * scale)
        .map_err(|e| anyhow::anyhow!("--cert-lifetime {s:?}: {e}"))
}

/// How much a process may grow between the end of the second interval and the end before it
/// counts as a leak: RSS by `max(rss_pct %, rss_kib)`, descriptors by `fds`.
#[derive(Debug, Clone, Copy)]
pub struct LeakBound {
    pub rss_pct: u64,
    pub rss_kib: u64,
    pub fds: u64,
}

pub const LEAK_BOUND: LeakBound = LeakBound {
    rss_pct: 25,
    rss_kib: 8 * 1024,
    fds: 16,
};

/// One process's sample: role (`weft control`, or the workload whose proxy it is), pid, usage.
#[derive(Debug, Clone)]
pub struct ProcSample {
    pub role: String,
    pub pid: u32,
    pub rss_kib: u64,
    pub fds: u64,
}

/// Counts of one request kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
}

/// The figures of one interval (answers counted in the interval they came in).
#[derive(Debug, Clone)]
pub struct Interval {
    pub index: usize,
    pub end_s: f64,
    pub by_kind: BTreeMap<Kind, Counts>,
    /// `KIND: cause` → count.
    pub causes: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub procs: Vec<ProcSample>,
    /// Cumulative.
    pub tcp_verified: u64,
    pub tcp_breaks: u64,
    pub churn: ChurnCounts,
    pub cert_refresh_ok: u64,
    pub cert_refresh_failed: u64,
    /// What the fault schedule did in this interval.
    pub events: Vec<String>,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub args: String,
    pub intervals: Vec<Interval>,
    pub cp_restarts: u64,
    /// Rotation stages done, in order (`bundle`, `issue`, `retire`).
    pub rotation: Vec<String>,
    pub tcp_corrupted: u64,
    pub tcp_break_causes: Vec<String>,
    /// Proxies that took part (renewals = refresh successes beyond one first issuance each).
    pub proxies: usize,
    /// Why the run failed; empty when it passed.
    pub problems: Vec<String>,
}

impl Report {
    pub fn totals(&self) -> BTreeMap<Kind, Counts> {
        let mut t: BTreeMap<Kind, Counts> = BTreeMap::new();
        for i in &self.intervals {
            for (k, c) in &i.by_kind {
                let e = t.entry(*k).or_default();
                e.sent += c.sent;
                e.ok += c.ok;
                e.failed += c.failed;
            }
        }
        t
    }

    pub fn failed_idempotent(&self) -> u64 {
        self.totals()
            .iter()
            .filter(|(k, _)| k.idempotent())
            .map(|(_, c)| c.failed)
            .sum()
    }

    pub fn causes(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for i in &self.intervals {
            for (c, n) in &i.causes {
                *all.entry(c.clone()).or_insert(0) += n;
            }
        }
        all
    }

    /// Certificate renewals (refresh successes beyond each proxy's first issuance).
    pub fn renewals(&self) -> u64 {
        let last = self.intervals.last().map_or(0, |i| i.cert_refresh_ok);
        last.saturating_sub(self.proxies as u64)
    }

    pub fn to_json(&self) -> Value {
        let kinds = |m: &BTreeMap<Kind, Counts>| -> Value {
            m.iter()
                .map(|(k, c)| {
                    (
                        k.name().to_string(),
                        json!({"protocol": k.protocol(), "idempotent": k.idempotent(),
                               "sent": c.sent, "ok": c.ok, "failed": c.failed}),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        json!({
            "args": self.args,
            "passed": self.problems.is_empty(),
            "problems": self.problems,
            "totals": kinds(&self.totals()),
            "failed_idempotent": self.failed_idempotent(),
            "failure_causes": self.causes(),
            "cp_restarts": self.cp_restarts,
            "cert_renewals": self.renewals(),
            "rotation": self.rotation,
            "tcp": {
                "verified_bytes": self.intervals.last().map_or(0, |i| i.tcp_verified),
                "corrupted_bytes": self.tcp_corrupted,
                "breaks": self.tcp_break_causes,
            },
            "leak_bound": {"rss_pct": LEAK_BOUND.rss_pct, "rss_kib": LEAK_BOUND.rss_kib,
                           "fds": LEAK_BOUND.fds},
            "intervals": self.intervals.iter().map(|i| json!({
                "index": i.index,
                "end_s": i.end_s,
                "requests": kinds(&i.by_kind),
                "failure_causes": i.causes,
                "p50_ms": i.p50_ms,
                "p99_ms": i.p99_ms,
                "max_ms": i.max_ms,
                "processes": i.procs.iter().map(|p| json!({
                    "role": p.role, "pid": p.pid, "rss_kib": p.rss_kib, "fds": p.fds,
                })).collect::<Vec<_>>(),
                "tcp_verified_bytes": i.tcp_verified,
                "tcp_breaks": i.tcp_breaks,
                "churn": {"registrations": i.churn.registrations,
                          "deregistrations": i.churn.deregistrations,
                          "failed_calls": i.churn.failed_calls},
                "cert_refresh": {"ok": i.cert_refresh_ok, "failed": i.cert_refresh_failed},
                "events": i.events,
            })).collect::<Vec<_>>(),
        })
    }
}

/// One line per interval, as the run goes.
pub fn interval_line(i: &Interval) -> String {
    let mut s = format!("[{:>6.0} s] ", i.end_s);
    for (k, c) in &i.by_kind {
        s += &format!("{} {}/{} ok  ", k.name(), c.ok, c.sent);
    }
    s += &format!(
        "p50 {:.1} ms p99 {:.1} ms max {:.1} ms | tcp {} KiB verified, {} breaks | churn +{} -{} ({} calls failed) | certs {} ok {} failed",
        i.p50_ms,
        i.p99_ms,
        i.max_ms,
        i.tcp_verified / 1024,
        i.tcp_breaks,
        i.churn.registrations,
        i.churn.deregistrations,
        i.churn.failed_calls,
        i.cert_refresh_ok,
        i.cert_refresh_failed
    );
    for p in &i.procs {
        s += &format!(
            "\n           {:<14} pid {:>7} rss {:>7} KiB fds {:>4}",
            p.role, p.pid, p.rss_kib, p.fds
        );
    }
    for (c, n) in &i.causes {
        s += &format!("\n           FAILED {n} × {c}");
    }
    for e in &i.events {
        s += &format!("\n           event: {e}");
    }
    s
}

/// The soak's service: HTTP on 198.19.0.30:80 and the opaque echo on :7000, endpoints `app=soak`.
pub fn service() -> ServiceSpec {
    ServiceSpec {
        name: "soak".into(),
        app: "soak".into(),
        ip: [198, 19, 0, 30].into(),
    }
}

/// Accumulates outcomes between two snapshots.
struct Acc {
    by_kind: BTreeMap<Kind, Counts>,
    causes: BTreeMap<String, u64>,
    latency_us: Histogram<u64>,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            by_kind: BTreeMap::new(),
            causes: BTreeMap::new(),
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
        }
    }

    fn add(&mut self, o: Outcome) {
        let c = self.by_kind.entry(o.kind).or_default();
        c.sent += 1;
        match o.result {
            Ok(_) => {
                c.ok += 1;
                let us = o.latency.as_micros().min(u128::from(u64::MAX)) as u64;
                self.latency_us.saturating_record(us.max(1));
            }
            Err(cause) => {
                c.failed += 1;
                *self
                    .causes
                    .entry(format!("{}: {}", o.kind.name(), cause))
                    .or_insert(0) += 1;
            }
        }
    }
}

/// Samples the control plane and every proxy.
pub fn sample(mesh: &Mesh) -> Vec<ProcSample> {
    let mut procs: Vec<(String, u32)> = mesh
        .control
        .proc
        .pid()
        .map(|p| ("weft control".to_string(), p))
        .into_iter()
        .collect();
    procs.extend(
        mesh.proxies()
            .into_iter()
            .map(|(n, _, p)| (format!("proxy {n}"), p)),
    );
    procs
        .into_iter()
        .filter_map(|(role, pid)| {
            let u = procfs::usage(pid).ok()?;
            Some(ProcSample {
                role,
                pid,
                rss_kib: u.rss_kib,
                fds: u.fds,
            })
        })
        .collect()
}

/// Processes that grew past the bound between `base` and `end` (matched by role).
pub fn leaks(base: &[ProcSample], end: &[ProcSample], bound: LeakBound) -> Vec<String> {
    let mut out = Vec::new();
    for e in end {
        let Some(b) = base.iter().find(|b| b.role == e.role) else {
            continue;
        };
        let rss_limit = b.rss_kib + (b.rss_kib * bound.rss_pct / 100).max(bound.rss_kib);
        if e.rss_kib > rss_limit {
            out.push(format!(
                "{}: RSS grew from {} KiB to {} KiB (bound {} KiB)",
                e.role, b.rss_kib, e.rss_kib, rss_limit
            ));
        }
        if e.fds > b.fds + bound.fds {
            out.push(format!(
                "{}: open descriptors grew from {} to {} (bound +{})",
                e.role, b.fds, e.fds, bound.fds
            ));
        }
    }
    out
}

/// Runs the soak; `progress` gets each interval as it ends.
pub async fn run(root: Root, args: &Args, progress: impl Fn(&Interval)) -> anyhow::Result<Report> {
    let bins = Binaries {
        weft: args.weft.clone(),
        proxy: args.proxy.clone(),
    };
    anyhow::ensure!(args.nodes >= 2, "--nodes: at least 2");
    anyhow::ensure!(
        args.pool >= 2,
        "--pool: at least 2 (one leaves each second)"
    );
    anyhow::ensure!(args.rate > 0.0, "--rate: more than 0");
    let lifetime = args.lifetime()?;
    let svc = service();
    let mut mesh = Mesh::start(
        root,
        "soak",
        &bins,
        args.nodes,
        &args.cert_lifetime,
        std::slice::from_ref(&svc),
    )
    .await?;
    let client = mesh.client("soak-client", 0).await?;
    for i in 0..args.pool {
        let node = 1 + i % (args.nodes - 1);
        mesh.pool_pod(&format!("soak-b{i}"), "soak-pool", node)
            .await?;
    }
    let churner = mesh.churner(&svc.app);
    churner.register_all().await.map_err(anyhow::Error::msg)?;
    let netns = mesh.clients[client].netns.clone();
    let target = Target {
        netns: netns.clone(),
        addr: svc.http(),
        authority: svc.authority(),
    };
    // Traffic flows before the clock starts: wait until every kind has succeeded once.
    warm_up(&target)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", mesh.logs()))?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let acc = Arc::new(Mutex::new(Acc::new()));
    let collector = {
        let acc = acc.clone();
        super::apps::Task(tokio::spawn(async move {
            while let Some(o) = rx.recv().await {
                acc.lock().unwrap_or_else(|e| e.into_inner()).add(o);
            }
        }))
    };
    let traffic = Traffic::start(target, args.rate, &Kind::ALL, 16, tx);
    let stream = Arc::new(StreamStats::default());
    let _stream_task = traffic::opaque_stream(netns, svc.tcp(), stream.clone());
    let churn = Arc::new(Mutex::new(ChurnCounts::default()));
    let churn_task = super::apps::Task(tokio::spawn(
        churner.run(Duration::from_secs(1), churn.clone()),
    ));

    let start = Instant::now();
    let total = args.duration();
    let interval = args.interval();
    // The schedule: restarts mid-interval (samples are taken at interval ends); the rotation's
    // bundle at 30 % of the run, issue 10 s later, retire once every old leaf expired.
    let mut next_restart = start + interval / 2;
    let bundle_at = start + total.mul_f64(0.3);
    let issue_at = bundle_at + Duration::from_secs(10);
    let mut retire_next = issue_at + lifetime + Duration::from_secs(3);
    let mut rotation: Vec<String> = Vec::new();
    let mut cp_restarts = 0;
    let mut intervals = Vec::new();
    let mut events: Vec<String> = Vec::new();
    let mut next_sample = start + interval;
    let end = start + total;
    let mut problems = Vec::new();
    loop {
        let next_rotation = match rotation.len() {
            0 => Some(bundle_at),
            1 => Some(issue_at),
            2 => Some(retire_next),
            _ => None,
        };
        let mut wake = next_sample.min(end);
        if next_restart < end {
            wake = wake.min(next_restart);
        }
        if let Some(r) = next_rotation.filter(|r| *r < end) {
            wake = wake.min(r);
        }
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        let at = |t: Instant| format!("{:.1} s", (t - start).as_secs_f64());
        if next_restart <= now && next_restart < end {
            match mesh.control.restart().await {
                Ok(()) => {
                    cp_restarts += 1;
                    events.push(format!(
                        "{}: control plane killed and restarted (up at {})",
                        at(now),
                        at(Instant::now())
                    ));
                }
                Err(e) => problems.push(format!("control plane restart at {}: {e}", at(now))),
            }
            next_restart += interval;
        }
        if next_rotation.is_some_and(|r| r <= now && r < end) {
            let stage = ["bundle", "issue", "retire"][rotation.len()];
            match mesh.rotate(stage).await {
                Ok(()) => {
                    events.push(format!("{}: trust anchor rotation, stage {stage}", at(now)));
                    rotation.push(stage.to_string());
                }
                Err(e) if stage == "retire" => {
                    // Refused while a leaf of the old anchor lives: try again in 5 s.
                    events.push(format!("{}: retire refused ({e}); retrying", at(now)));
                    retire_next = now + Duration::from_secs(5);
                }
                Err(e) => {
                    problems.push(format!("rotation stage {stage}: {e}"));
                    // Stop rotating: a later stage after a failed one proves nothing.
                    rotation.resize(3, "(failed)".to_string());
                }
            }
        }
        if next_sample <= now || now >= end {
            let snapshot = std::mem::replace(
                &mut *acc.lock().unwrap_or_else(|e| e.into_inner()),
                Acc::new(),
            );
            let (ok, failed) = mesh.cert_refreshes().await;
            let i = finish_interval(
                intervals.len(),
                (now - start).as_secs_f64(),
                snapshot,
                sample(&mesh),
                &stream,
                *churn.lock().unwrap_or_else(|e| e.into_inner()),
                (ok, failed),
                std::mem::take(&mut events),
            );
            progress(&i);
            intervals.push(i);
            next_sample += interval;
        }
        if now >= end {
            break;
        }
    }
    drop(churn_task);
    traffic.stop().await;
    // Answers that came in after the last snapshot belong to the last interval.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(collector);
    let rest = std::mem::replace(
        &mut *acc.lock().unwrap_or_else(|e| e.into_inner()),
        Acc::new(),
    );
    if let Some(last) = intervals.last_mut() {
        for (k, c) in rest.by_kind {
            let e = last.by_kind.entry(k).or_default();
            e.sent += c.sent;
            e.ok += c.ok;
            e.failed += c.failed;
        }
        for (c, n) in rest.causes {
            *last.causes.entry(c).or_insert(0) += n;
        }
    }
    let breaks: Vec<String> = stream
        .breaks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(t, c)| format!("{:.1} s: {c}", (*t - start).as_secs_f64()))
        .collect();
    let mut report = Report {
        args: format!("{args:?}"),
        intervals,
        cp_restarts,
        rotation,
        tcp_corrupted: stream.corrupted.load(std::sync::atomic::Ordering::Relaxed),
        tcp_break_causes: breaks,
        proxies: mesh.proxies().len(),
        problems,
    };
    let failed = report.failed_idempotent();
    if failed > 0 {
        report
            .problems
            .push(format!("{failed} idempotent requests failed"));
    }
    if report.tcp_corrupted > 0 {
        report.problems.push(format!(
            "{} opaque bytes came back corrupted",
            report.tcp_corrupted
        ));
    }
    if report.intervals.len() >= 3 {
        let base = &report.intervals[1].procs;
        let end = &report.intervals[report.intervals.len() - 1].procs;
        let leaks = leaks(base, end, LEAK_BOUND);
        report.problems.extend(leaks);
    } else {
        report.problems.push(format!(
            "only {} intervals: the leak check needs 3 (make --minutes at least 3 × --interval)",
            report.intervals.len()
        ));
    }
    if !report.problems.is_empty() {
        eprintln!("{}", mesh.logs());
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn finish_interval(
    index: usize,
    end_s: f64,
    acc: Acc,
    procs: Vec<ProcSample>,
    stream: &StreamStats,
    churn: ChurnCounts,
    (cert_refresh_ok, cert_refresh_failed): (u64, u64),
    events: Vec<String>,
) -> Interval {
    let ms = |q: f64| acc.latency_us.value_at_quantile(q) as f64 / 1000.0;
    Interval {
        index,
        end_s,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: acc.latency_us.max() as f64 / 1000.0,
        by_kind: acc.by_kind,
        causes: acc.causes,
        procs,
        tcp_verified: stream.verified.load(std::sync::atomic::Ordering::Relaxed),
        tcp_breaks: stream
            .breaks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len() as u64,
        churn,
        cert_refresh_ok,
        cert_refresh_failed,
        events,
    }
}

/// Waits (at most 60 s) until one request of every kind succeeded.
pub async fn warm_up(target: &Target) -> Result<(), String> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pending: Vec<Kind> = Kind::ALL.to_vec();
    let mut last = String::new();
    while !pending.is_empty() {
        if Instant::now() > deadline {
            return Err(format!(
                "no successful {pending:?} within 60 s; last failure: {last}"
            ));
        }
        let t = Traffic::start(target.clone(), 50.0, &pending, 1, tx.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
        t.stop().await;
        while let Ok(o) = rx.try_recv() {
            match o.result {
                Ok(_) => pending.retain(|k| *k != o.kind),
                Err(e) => last = format!("{}: {e}", o.kind.name()),
            }
        }
    }
    Ok(())
}

/// The closing summary: totals by kind, every failure cause, faults done, verdict.
pub fn summary(r: &Report) -> String {
    let mut s = String::from("soak totals:");
    for (k, c) in r.totals() {
        s += &format!(
            "\n  {:<11} ({}) sent {:>8} ok {:>8} failed {:>5}",
            k.name(),
            if k.idempotent() {
                "idempotent"
            } else {
                "non-idempotent"
            },
            c.sent,
            c.ok,
            c.failed
        );
    }
    for (c, n) in r.causes() {
        s += &format!("\n  FAILED {n} × {c}");
    }
    s += &format!(
        "\n  faults: {} control-plane restarts, {} certificate renewals, rotation {:?}, churn {} registrations / {} deregistrations",
        r.cp_restarts,
        r.renewals(),
        r.rotation,
        r.intervals.last().map_or(0, |i| i.churn.registrations),
        r.intervals.last().map_or(0, |i| i.churn.deregistrations),
    );
    s += &format!(
        "\n  opaque stream: {} KiB verified, {} corrupted bytes, {} breaks {:?}",
        r.intervals.last().map_or(0, |i| i.tcp_verified) / 1024,
        r.tcp_corrupted,
        r.tcp_break_causes.len(),
        r.tcp_break_causes
    );
    s += &format!(
        "\n  leak bound (end of interval 2 → end): RSS +max({} %, {} KiB), fds +{}",
        LEAK_BOUND.rss_pct, LEAK_BOUND.rss_kib, LEAK_BOUND.fds
    );
    if r.problems.is_empty() {
        s += "\n  PASSED";
    } else {
        for p in &r.problems {
            s += &format!("\n  PROBLEM: {p}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(role: &str, rss_kib: u64, fds: u64) -> ProcSample {
        ProcSample {
            role: role.into(),
            pid: 1,
            rss_kib,
            fds,
        }
    }

    #[test]
    fn growth_past_the_bound_is_a_leak_and_within_it_is_not() {
        let base = [
            sample("proxy a", 100_000, 20),
            sample("weft control", 10_000, 24),
        ];
        // 25 % of 100,000 KiB is the larger allowance; 8 MiB is the larger for 10,000 KiB.
        let fine = [
            sample("proxy a", 125_000, 36),
            sample("weft control", 18_192, 10),
        ];
        assert_eq!(leaks(&base, &fine, LEAK_BOUND), Vec::<String>::new());
        let grown = [
            sample("proxy a", 125_001, 37),
            sample("weft control", 18_193, 24),
        ];
        let found = leaks(&base, &grown, LEAK_BOUND);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].starts_with("proxy a: RSS grew from 100000 KiB to 125001 KiB"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("proxy a: open descriptors grew from 20 to 37"),
            "{found:?}"
        );
        assert!(found[2].starts_with("weft control: RSS"), "{found:?}");
        // A process with no baseline (it appeared later) is not compared.
        assert!(leaks(&base, &[sample("proxy new", 1 << 30, 1000)], LEAK_BOUND).is_empty());
    }

    #[test]
    fn lifetimes_parse_with_their_units_and_bad_ones_are_refused() {
        assert_eq!(parse_lifetime("43s").unwrap(), Duration::from_secs(43));
        assert_eq!(parse_lifetime("15").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_lifetime("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_lifetime("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_lifetime("5d")
            .unwrap_err()
            .to_string()
            .contains("unit"));
        assert!(parse_lifetime("soon").is_err());
    }
}
