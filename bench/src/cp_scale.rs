//! Control plane at scale (issues 5 and 13): many Destination.Get watch streams against one
//! `weft control` (or several replicas on one etcd prefix), and how long a store change takes to
//! reach every stream that should see it.
//!
//! The store is the one `cp-store` wrote (`--store DIR`) or `cp-etcd-load` loaded (`--etcd`),
//! with the same layout arguments. Streams are spread over the services, with `--hot-streams` of
//! them on `svc-000` (a service many proxies watch); stream `k` goes to replica `k mod R` (so the
//! hot streams are on every replica too), multiplexed over `--connections` HTTP/2 connections
//! per replica. Every change is made through one replica's API (`--api`). Every stream task
//! stamps each message with `Instant::now()` as it arrives and hands it to the driver, which keeps
//! the endpoint set each stream has been told about and compares it with the model of the store.
//!
//! Per round, three changes, one at a time:
//! 1. `register`: `PUT /v1/workloads` of one more endpoint of `svc-000` (the hot service's streams
//!    should see an `add`; no other stream should hear anything).
//! 2. `deregister`: `DELETE` of it (a `remove` on the same streams).
//! 3. `file`: `workloads-00.yaml` rewritten with a new address for endpoint 0 of every service
//!    (every stream should see its service's new set), picked up by the store's poll. With
//!    `--etcd` this is `txn`: one etcd transaction rewriting the 500 `svc-NNN-0` keys, which
//!    every replica's watch brings in.
//!
//! A stream's latency for a change is from the instant before the change was made (the API
//! request sent, the file written) to the arrival of the message after which the stream's
//! endpoint set equals the model. The driver waits for every expected stream (or `--timeout`),
//! then `--settle` seconds more to catch late or unexpected messages before the next change.
//! A stream that ends, errors or misses an update fails the run (`"ok": false`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use linkerd2_proxy_api::destination::{
    destination_client::DestinationClient, update, GetDestination,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::cp_etcd::Etcd;
use crate::cp_store::{self, LayoutArgs};

#[derive(clap::Args)]
pub struct Args {
    /// The gRPC address of every control-plane replica (comma-separated or repeated).
    #[arg(long, required = true, value_delimiter = ',')]
    grpc: Vec<SocketAddr>,
    /// The HTTP API address of the replica every register/deregister goes through.
    #[arg(long)]
    api: SocketAddr,
    /// The store directory `cp-store` wrote (the file change rewrites a file in it), or `--etcd`.
    #[arg(long, required_unless_present = "etcd", conflicts_with = "etcd")]
    store: Option<PathBuf>,
    /// The etcd store `cp-etcd-load` wrote, `etcd://HOST:PORT/PREFIX` (the bulk change is an
    /// etcd transaction).
    #[arg(long)]
    etcd: Option<String>,
    /// Every replica's pid, in the order of `--grpc` (CPU and memory from /proc).
    #[arg(long, required = true, value_delimiter = ',')]
    control_pid: Vec<u32>,
    #[command(flatten)]
    layout: LayoutArgs,
    /// Destination.Get streams.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// HTTP/2 connections per replica the streams are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Streams on svc-000 (the rest go round-robin over every service).
    #[arg(long, default_value_t = 100)]
    hot_streams: usize,
    /// Rounds of (register, deregister, file change).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds an expected update may take before it counts as missed.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Seconds to keep listening after the last expected update of a change.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
}

/// What a stream task reports.
enum What {
    Update(update::Update),
    Ended(String),
}

struct Event {
    stream: usize,
    at: Instant,
    what: What,
}

/// What one stream has been told so far.
#[derive(Default)]
struct Watch {
    service: usize,
    endpoints: BTreeSet<SocketAddr>,
    exists: Option<bool>,
    ended: Option<String>,
}

impl Watch {
    fn apply(&mut self, u: update::Update) {
        match u {
            update::Update::Add(set) => {
                self.endpoints.extend(
                    set.addrs
                        .into_iter()
                        .filter_map(|a| SocketAddr::try_from(a.addr?).ok()),
                );
                self.exists = Some(true);
            }
            update::Update::Remove(set) => {
                for a in set.addrs {
                    if let Ok(a) = SocketAddr::try_from(a) {
                        self.endpoints.remove(&a);
                    }
                }
            }
            update::Update::NoEndpoints(n) => {
                self.endpoints.clear();
                self.exists = Some(n.exists);
            }
        }
    }
}

/// The outcome of one change (or of opening the streams).
struct Outcome {
    /// Latency of every expected stream that converged, ms.
    latencies_ms: Vec<f64>,
    /// The stream of each latency.
    streams: Vec<usize>,
    /// Expected streams that did not converge within the timeout.
    missing: Vec<usize>,
    /// Messages on streams that should not have heard anything (or after converging).
    unexpected: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    println!("{}", measure(&args).await?);
    Ok(())
}

async fn measure(args: &Args) -> anyhow::Result<Value> {
    let l = &args.layout;
    anyhow::ensure!(l.services > 0 && args.connections > 0, "nothing to watch");
    let replicas = args.grpc.len();
    anyhow::ensure!(
        args.control_pid.len() == replicas,
        "{} --control-pid for {replicas} --grpc replicas",
        args.control_pid.len()
    );
    let service_of = |k: usize| {
        if k < args.hot_streams {
            0
        } else {
            (k - args.hot_streams) % l.services
        }
    };
    let source = Source::open(args).await?;
    // Which addresses the store holds now: as it was written, or with the bulk change of an
    // odd number of rounds applied (a previous run on the same store).
    let generation = source.generation(l).await?;
    source.ensure_no_registrations().await?;
    // The model: what every service's endpoint set is in the store right now.
    let model: Vec<BTreeSet<SocketAddr>> = (0..l.services)
        .map(|i| {
            (0..l.per_service)
                .map(|j| l.addr(i, j, if j == 0 { generation } else { 0 }))
                .collect()
        })
        .collect();
    let mut watches: Vec<Watch> = (0..args.streams)
        .map(|k| Watch {
            service: service_of(k),
            ..Watch::default()
        })
        .collect();
    let timeout = Duration::from_secs_f64(args.timeout);
    let settle = Duration::from_secs_f64(args.settle);
    let pids = &args.control_pid;

    // channels[r][c]: connection c to replica r.
    let mut channels = Vec::with_capacity(replicas);
    for grpc in &args.grpc {
        let mut conns = Vec::with_capacity(args.connections);
        for _ in 0..args.connections {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
                .tcp_nodelay(true);
            conns.push(endpoint.connect().await?);
        }
        channels.push(conns);
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cpu0 = pids
        .iter()
        .map(|&p| proc_cpu_seconds(p))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    let client_cpu0 = crate::self_cpu_seconds();

    // Open every stream at once; the first answer is the first "change".
    let t0 = Instant::now();
    for (k, w) in watches.iter().enumerate() {
        let conns = &channels[k % replicas];
        let client = DestinationClient::new(conns[(k / replicas) % conns.len()].clone());
        tokio::spawn(watch_stream(k, l.path(w.service), client, tx.clone()));
    }
    drop(tx);
    let expected: BTreeMap<usize, BTreeSet<SocketAddr>> = (0..args.streams)
        .map(|k| (k, model[watches[k].service].clone()))
        .collect();
    let open = converge(&mut rx, &mut watches, &expected, t0, timeout, settle).await;
    let cpu0_all: f64 = cpu0.iter().sum();
    let open_cpu = control_cpu_seconds(pids)? - cpu0_all;
    let open_rss = pids
        .iter()
        .map(|&p| proc_memory_mib(p).map(|(rss, _)| rss))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    let open_rss_max = open_rss.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "cp-scale: {} streams open over {} connections to {replicas} replica(s): first answers {} ms \
         (max), {} missing; control CPU {open_cpu:.2} s, RSS {open_rss_max:.1} MiB (max)",
        args.streams,
        args.connections * replicas,
        fmt_ms(open.latencies_ms.iter().copied().fold(0.0, f64::max)),
        open.missing.len()
    );

    let mut run = Run {
        args,
        source,
        rx,
        watches,
        model,
        generation,
        changes: Vec::new(),
    };
    // A change that cannot be made (the control plane died, the API refused) ends the rounds;
    // what was measured so far is still reported.
    let mut error = None;
    for round in 0..args.rounds {
        if let Err(e) = run.round(round).await {
            eprintln!("cp-scale: round {round}: {e:#}");
            error = Some(format!("round {round}: {e:#}"));
            break;
        }
    }
    let Run {
        watches,
        model,
        changes,
        ..
    } = run;

    let ended: Vec<usize> = (0..args.streams)
        .filter(|&k| watches[k].ended.is_some())
        .collect();
    let first_end = ended.first().and_then(|&k| watches[k].ended.clone());
    // Every stream's view must equal the store in the end, whatever path it took there.
    let mismatched = (0..args.streams)
        .filter(|&k| watches[k].endpoints != model[watches[k].service])
        .count();
    let memory: Vec<(f64, f64)> = pids
        .iter()
        .map(|&p| proc_memory_mib(p).unwrap_or((f64::NAN, f64::NAN)))
        .collect();
    let (rss, hwm) = memory.iter().fold((0.0, 0.0), |(r, h), &(r2, h2)| {
        (f64::max(r, r2), f64::max(h, h2))
    });
    let missing: u64 = changes
        .iter()
        .map(|c| c["missing"].as_u64().unwrap_or(0))
        .sum();
    let unexpected: u64 = changes
        .iter()
        .map(|c| c["unexpected"].as_u64().unwrap_or(0))
        .sum();
    let summary: serde_json::Map<String, Value> = ["register", "deregister", "file", "txn", "all"]
        .iter()
        .filter(|&&kind| kind == "all" || changes.iter().any(|c| c["kind"] == kind))
        .map(|kind| (kind.to_string(), summary(&changes, kind)))
        .collect();
    let by_replica: Vec<Value> = (0..replicas)
        .map(|r| {
            let pooled: Vec<f64> = changes
                .iter()
                .filter_map(|c| c["latencies_by_replica"][r].as_array())
                .flatten()
                .filter_map(|v| v.as_f64())
                .collect();
            let cpu = proc_cpu_seconds(pids[r])
                .map(|c| c - cpu0[r])
                .unwrap_or(f64::NAN);
            let on_r = || (0..args.streams).filter(move |k| k % replicas == r);
            json!({
                "grpc": args.grpc[r].to_string(),
                "pid": pids[r],
                "streams": on_r().count(),
                "hot_service_streams": on_r().filter(|&k| watches[k].service == 0).count(),
                "dropped_streams": ended.iter().filter(|&&k| k % replicas == r).count(),
                "open_rss_mib": open_rss[r],
                "cpu_s": cpu,
                "rss_mib": memory[r].0,
                "hwm_mib": memory[r].1,
                "per_stream": stats(&pooled),
            })
        })
        .collect();
    let hot = (0..args.streams)
        .filter(|&k| watches[k].service == 0)
        .count();
    let ok = error.is_none()
        && ended.is_empty()
        && missing == 0
        && open.missing.is_empty()
        && mismatched == 0;
    Ok(json!({
        "streams": args.streams,
        "connections": args.connections,
        "services": l.services,
        "endpoints": l.services * l.per_service,
        "hot_service_streams": hot,
        "rounds": args.rounds,
        "replicas": by_replica,
        "open": {
            "first_answer": stats(&open.latencies_ms),
            "missing": open.missing.len(),
            "control_cpu_s": open_cpu,
            // The largest replica's (the target is per replica).
            "control_rss_mib": open_rss_max,
        },
        "changes": changes,
        "summary": summary,
        "missing_updates": missing + open.missing.len() as u64,
        "unexpected_messages": unexpected + open.unexpected,
        "dropped_streams": ended.len(),
        "first_drop": first_end,
        "still_open": args.streams - ended.len(),
        "final_mismatch": mismatched,
        "error": error,
        "ok": ok,
        "control": {
            "cpu_s": control_cpu_seconds(pids).map(|c| c - cpu0_all).unwrap_or(f64::NAN),
            "rss_mib": rss,
            "hwm_mib": hwm,
        },
        "client_cpu_s": crate::self_cpu_seconds() - client_cpu0,
    }))
}

/// The state the changes work on: the streams' views and the model of the store.
struct Run<'a> {
    args: &'a Args,
    source: Source,
    rx: mpsc::UnboundedReceiver<Event>,
    watches: Vec<Watch>,
    model: Vec<BTreeSet<SocketAddr>>,
    /// Which addresses endpoint 0 of every service has (see `LayoutArgs::addr`).
    generation: u32,
    changes: Vec<Value>,
}

impl Run<'_> {
    /// Register, deregister, file change.
    async fn round(&mut self, round: usize) -> anyhow::Result<()> {
        let l = &self.args.layout;
        let (ns, hot) = (l.namespace.clone(), l.service(0));
        let path = format!("/v1/workloads/{ns}/{hot}-x{round}");

        // 1. Register one more endpoint of svc-000 through the API.
        let extra = l.extra_addr(round);
        let body = cp_store::workload_doc(&format!("{hot}-x{round}"), &ns, &hot, extra);
        self.model[0].insert(extra);
        let conn = ApiConn::connect(self.args.api).await?;
        let put = conn.call(http::Method::PUT, &path, body);
        self.change("register", round, &[0], put).await?;

        // 2. Deregister it.
        self.model[0].remove(&extra);
        let conn = ApiConn::connect(self.args.api).await?;
        let delete = conn.call(http::Method::DELETE, &path, String::new());
        self.change("deregister", round, &[0], delete).await?;

        // 3. Move endpoint 0 of every service to a new address with one file write (one etcd
        // transaction).
        let l = &self.args.layout;
        let (old, new) = (self.generation, self.generation ^ 1);
        for (i, set) in self.model.iter_mut().enumerate() {
            set.remove(&l.addr(i, 0, old));
            set.insert(l.addr(i, 0, new));
        }
        self.generation = new;
        let source = self.source.clone();
        let kind = source.bulk_kind();
        let layout = l.clone();
        let write = async move {
            source.bulk(&layout, new).await?;
            Ok(None)
        };
        let all: Vec<usize> = (0..l.services).collect();
        self.change(kind, round, &all, write).await
    }

    /// Makes one change (`act`, timed from just before it starts; it returns the API's status
    /// and body, or None for a file write) and waits for the streams of `services` to see it.
    async fn change(
        &mut self,
        kind: &str,
        round: usize,
        services: &[usize],
        act: impl std::future::Future<Output = anyhow::Result<Option<(u16, String)>>>,
    ) -> anyhow::Result<()> {
        let expect = only(&self.model, &self.watches, services);
        let (timeout, settle) = (
            Duration::from_secs_f64(self.args.timeout),
            Duration::from_secs_f64(self.args.settle),
        );
        let pids = &self.args.control_pid;
        let cpu = control_cpu_seconds(pids)?;
        let t = Instant::now();
        let api = act.await?;
        let api_ms = api.as_ref().map(|_| t.elapsed().as_secs_f64() * 1e3);
        if let Some((status, body)) = api {
            anyhow::ensure!(status == 200, "{kind}: API answered {status} {body}");
        }
        let out = converge(&mut self.rx, &mut self.watches, &expect, t, timeout, settle).await;
        let cpu = control_cpu_seconds(pids)
            .map(|c| c - cpu)
            .unwrap_or(f64::NAN);
        let replicas = self.args.grpc.len();
        self.changes
            .push(change_json(kind, round, &out, api_ms, cpu, replicas));
        Ok(())
    }
}

/// One stream: Destination.Get, then every message, stamped on arrival, until it ends.
async fn watch_stream(
    k: usize,
    path: String,
    mut client: DestinationClient<Channel>,
    tx: mpsc::UnboundedSender<Event>,
) {
    let send = |what| {
        let _ = tx.send(Event {
            stream: k,
            at: Instant::now(),
            what,
        });
    };
    let req = GetDestination {
        scheme: "k8s".into(),
        path,
        context_token: String::new(),
    };
    let mut stream = match client.get(req).await {
        Ok(rsp) => rsp.into_inner(),
        Err(status) => return send(What::Ended(format!("Get failed: {status}"))),
    };
    loop {
        match stream.message().await {
            Ok(Some(u)) => {
                if let Some(u) = u.update {
                    send(What::Update(u));
                }
            }
            Ok(None) => return send(What::Ended("stream ended by the server".into())),
            Err(status) => return send(What::Ended(format!("stream error: {status}"))),
        }
    }
}

/// Expected sets: every stream watching one of `services`, with the model's set.
fn only(
    model: &[BTreeSet<SocketAddr>],
    watches: &[Watch],
    services: &[usize],
) -> BTreeMap<usize, BTreeSet<SocketAddr>> {
    let services: BTreeSet<usize> = services.iter().copied().collect();
    watches
        .iter()
        .enumerate()
        .filter(|(_, w)| services.contains(&w.service))
        .map(|(k, w)| (k, model[w.service].clone()))
        .collect()
}

/// Applies events until every stream in `expected` holds its expected set (or `timeout` from
/// `t0`), then listens `settle` more. Latency = arrival of the converging message − `t0`.
async fn converge(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    watches: &mut [Watch],
    expected: &BTreeMap<usize, BTreeSet<SocketAddr>>,
    t0: Instant,
    timeout: Duration,
    settle: Duration,
) -> Outcome {
    let mut pending: BTreeSet<usize> = expected.keys().copied().collect();
    let mut out = Outcome {
        latencies_ms: Vec::with_capacity(expected.len()),
        streams: Vec::with_capacity(expected.len()),
        missing: Vec::new(),
        unexpected: 0,
    };
    let mut deadline = t0 + timeout;
    let mut settling = false;
    loop {
        if pending.is_empty() && !settling {
            settling = true;
            deadline = Instant::now() + settle;
        }
        let event = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => e,
            // Every stream task is gone (all ended and reported) or the time is up.
            Ok(None) | Err(_) => break,
        };
        let w = &mut watches[event.stream];
        match event.what {
            What::Ended(why) => {
                eprintln!(
                    "cp-scale: stream {} ({}) ended: {why}",
                    event.stream, w.service
                );
                w.ended = Some(why);
            }
            What::Update(u) => {
                w.apply(u);
                if !pending.contains(&event.stream) {
                    out.unexpected += 1;
                } else if w.exists == Some(true)
                    && Some(&w.endpoints) == expected.get(&event.stream)
                {
                    pending.remove(&event.stream);
                    out.streams.push(event.stream);
                    out.latencies_ms.push((event.at - t0).as_secs_f64() * 1e3);
                }
            }
        }
    }
    out.missing = pending.into_iter().collect();
    out
}

fn change_json(
    kind: &str,
    round: usize,
    out: &Outcome,
    api_ms: Option<f64>,
    cpu_s: f64,
    replicas: usize,
) -> Value {
    let s = stats(&out.latencies_ms);
    // Stream k is on replica k mod `replicas`.
    let mut by_replica = vec![Vec::new(); replicas];
    for (&k, &ms) in out.streams.iter().zip(&out.latencies_ms) {
        by_replica[k % replicas].push(ms);
    }
    eprintln!(
        "cp-scale: round {round} {kind:10}: {} streams updated, p50 {} p99 {} max {} ms{}; {} missing, \
         {} unexpected; control CPU {cpu_s:.2} s",
        out.latencies_ms.len(),
        fmt_ms(s["p50_ms"].as_f64().unwrap_or(f64::NAN)),
        fmt_ms(s["p99_ms"].as_f64().unwrap_or(f64::NAN)),
        fmt_ms(s["max_ms"].as_f64().unwrap_or(f64::NAN)),
        api_ms.map(|ms| format!(" (API answered in {ms:.1} ms)")).unwrap_or_default(),
        out.missing.len(),
        out.unexpected,
    );
    json!({
        "kind": kind,
        "round": round,
        "updated": out.latencies_ms.len(),
        "missing": out.missing.len(),
        "unexpected": out.unexpected,
        "latency": s,
        "latencies_ms": out.latencies_ms,
        "latencies_by_replica": by_replica,
        "api_ms": api_ms,
        "control_cpu_s": cpu_s,
    })
}

/// Pools the per-stream latencies of every change of `kind` ("all": every change).
fn summary(changes: &[Value], kind: &str) -> Value {
    let of_kind = || {
        changes
            .iter()
            .filter(move |c| kind == "all" || c["kind"] == kind)
    };
    let pooled: Vec<f64> = of_kind()
        .flat_map(|c| c["latencies_ms"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_f64())
        .collect();
    // "Time to the last stream's update" of each change.
    let last: Vec<f64> = of_kind()
        .filter_map(|c| c["latency"]["max_ms"].as_f64())
        .collect();
    let api: Vec<f64> = of_kind().filter_map(|c| c["api_ms"].as_f64()).collect();
    let cpu: Vec<f64> = of_kind()
        .filter_map(|c| c["control_cpu_s"].as_f64())
        .collect();
    json!({
        "changes": last.len(),
        "per_stream": stats(&pooled),
        "last_stream": stats(&last),
        "api_ms": if api.is_empty() { Value::Null } else { stats(&api) },
        "control_cpu_s_per_change": if cpu.is_empty() { Value::Null } else { json!(cpu.iter().sum::<f64>() / cpu.len() as f64) },
    })
}

/// Count, p50, p99 and max (nearest rank) of `values` in ms.
fn stats(values: &[f64]) -> Value {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let q = |q: f64| {
        if v.is_empty() {
            return Value::Null;
        }
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        json!(v[rank - 1])
    };
    json!({"n": v.len(), "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": q(1.0)})
}

fn fmt_ms(ms: f64) -> String {
    format!("{ms:.1}")
}

/// One HTTP/1.1 connection to the API, opened before the clock starts.
struct ApiConn {
    addr: SocketAddr,
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl ApiConn {
    async fn connect(addr: SocketAddr) -> anyhow::Result<ApiConn> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(ApiConn { addr, send })
    }

    async fn call(
        mut self,
        method: http::Method,
        path: &str,
        body: String,
    ) -> anyhow::Result<Option<(u16, String)>> {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/yaml")
            .body(Full::new(Bytes::from(body)))?;
        let rsp = self.send.send_request(req).await?;
        let status = rsp.status().as_u16();
        let body = rsp.into_body().collect().await?.to_bytes();
        Ok(Some((status, String::from_utf8_lossy(&body).into_owned())))
    }
}

/// utime + stime of every replica, seconds.
fn control_cpu_seconds(pids: &[u32]) -> anyhow::Result<f64> {
    pids.iter().map(|&p| proc_cpu_seconds(p)).sum()
}

/// Where the store is, and how the bulk change is made.
#[derive(Clone)]
enum Source {
    Files(PathBuf),
    Etcd(Etcd),
}

impl Source {
    async fn open(args: &Args) -> anyhow::Result<Source> {
        Ok(match (&args.store, &args.etcd) {
            (_, Some(etcd)) => Source::Etcd(Etcd::connect(etcd).await?),
            (Some(dir), None) => Source::Files(dir.clone()),
            (None, None) => anyhow::bail!("--store or --etcd is required"),
        })
    }

    /// The name of the bulk change in the results.
    fn bulk_kind(&self) -> &'static str {
        match self {
            Source::Files(_) => "file",
            Source::Etcd(_) => "txn",
        }
    }

    async fn generation(&self, l: &LayoutArgs) -> anyhow::Result<u32> {
        match self {
            Source::Files(dir) => {
                let first_file = std::fs::read_to_string(dir.join(l.workload_file(0)))?;
                (0..2)
                    .find(|&g| first_file == l.workload_yaml(0, g))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "{} is not the store `weft-bench cp-store` writes with these layout \
                             arguments",
                            dir.display()
                        )
                    })
            }
            Source::Etcd(etcd) => etcd.generation(l).await,
        }
    }

    async fn ensure_no_registrations(&self) -> anyhow::Result<()> {
        let left = match self {
            Source::Files(dir) => {
                let registered = dir.join(".registered");
                registered.exists()
                    && std::fs::read_dir(&registered)?
                        .any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "yaml")))
            }
            Source::Etcd(etcd) => !etcd.list("registered/").await?.is_empty(),
        };
        anyhow::ensure!(
            !left,
            "the store holds registrations (left by an interrupted run?): start from a fresh store"
        );
        Ok(())
    }

    /// Endpoint 0 of every service moves to `generation`'s address in one write.
    async fn bulk(&self, l: &LayoutArgs, generation: u32) -> anyhow::Result<()> {
        match self {
            Source::Files(dir) => {
                cp_store::replace(dir, &l.workload_file(0), &l.workload_yaml(0, generation))
            }
            Source::Etcd(etcd) => {
                etcd.put_all(etcd.first_endpoints(l, generation)).await?;
                Ok(())
            }
        }
    }
}

/// utime + stime of a process, seconds.
fn proc_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    anyhow::ensure!(fields.len() > 12, "/proc/{pid}/stat: unexpected format");
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((fields[11].parse::<f64>()? + fields[12].parse::<f64>()?) / tck)
}

/// (VmRSS, VmHWM) of a process, MiB.
fn proc_memory_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .unwrap_or(f64::NAN)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}
