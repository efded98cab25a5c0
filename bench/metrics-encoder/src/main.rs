//! Request-path cost of the proxy's metrics registry and encoder against prometheus-client,
//! recording the same three families with the same label sets.
//!
//! ```text
//! cargo build --release --manifest-path bench/metrics-encoder/Cargo.toml
//! B=bench/metrics-encoder/target/release/metrics-encoder-bench
//! $B all 2000000 100                       # wall clock: ns/request, us/scrape (100 label sets)
//! valgrind --tool=callgrind $B record-ours 120000 100   # instruction counts: subtract a run
//! valgrind --tool=callgrind $B record-ours 20000 100    # with fewer iterations, divide
//! $B full-scrape | promtool check metrics   # every family the proxy renders
//! ```
//! Modes: `record-ours`, `record-pc`, `encode-ours`, `encode-pc`, `all`, `full-scrape`;
//! arguments: mode, iterations (scrapes = iterations / 10 000), label sets.
#[allow(dead_code)]
#[path = "../../../crates/weft-proxy/src/metrics.rs"]
mod metrics;

use metrics::{Direction, Labels, Metrics, TlsLabel, LATENCY_BUCKETS_MS};
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn labels(port: u16) -> Labels {
    let dst: BTreeMap<String, String> = [
        ("namespace", "default"),
        ("service", "web"),
        ("external_workload", "web-1"),
        ("zone", "local"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Labels {
        direction: Direction::Outbound,
        authority: Some("web.default.svc.cluster.local:8080".into()),
        target_addr: ([127, 0, 0, 1], port).into(),
        tls: TlsLabel::Established {
            peer_id: Some("web-1.default.serviceaccount.identity.weft.cluster.local".into()),
        },
        dst: Arc::new(dst),
    }
}

// prometheus-client label sets over the same Labels value.
#[derive(Clone, Hash, PartialEq, Eq, Debug)]
struct Base(Labels);
fn enc_base(l: &Labels, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
    let dir = match l.direction {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    };
    ("direction", dir).encode(e.encode_label())?;
    if let Some(a) = &l.authority {
        ("authority", a.as_str()).encode(e.encode_label())?;
    }
    ("target_addr", l.target_addr.to_string()).encode(e.encode_label())?;
    match &l.tls {
        TlsLabel::Established { peer_id } => {
            ("tls", "true").encode(e.encode_label())?;
            if let Some(id) = peer_id {
                ("server_id", id.as_str()).encode(e.encode_label())?;
            }
        }
        TlsLabel::NoIdentity(r) => {
            ("tls", "no_identity").encode(e.encode_label())?;
            ("no_tls_reason", *r).encode(e.encode_label())?;
        }
        TlsLabel::Passthru => ("tls", "opaque").encode(e.encode_label())?,
    }
    for (k, v) in l.dst.iter() {
        (format!("dst_{k}"), v.as_str()).encode(e.encode_label())?;
    }
    Ok(())
}
impl EncodeLabelSet for Base {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        enc_base(&self.0, e)
    }
}
#[derive(Clone, Hash, PartialEq, Eq, Debug)]
struct Resp {
    base: Labels,
    status: u16,
    failed: bool,
}
impl EncodeLabelSet for Resp {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        enc_base(&self.base, e)?;
        ("status_code", self.status as u64).encode(e.encode_label())?;
        (
            "classification",
            if self.failed { "failure" } else { "success" },
        )
            .encode(e.encode_label())
    }
}
#[derive(Clone, Hash, PartialEq, Eq, Debug)]
struct Lat {
    base: Labels,
    status: u16,
}
impl EncodeLabelSet for Lat {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        enc_base(&self.base, e)?;
        ("status_code", self.status as u64).encode(e.encode_label())
    }
}

struct Pc {
    registry: Registry,
    requests: Family<Base, Counter>,
    responses: Family<Resp, Counter>,
    latency: Family<Lat, Histogram, fn() -> Histogram>,
}
fn new_hist() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_MS.iter().map(|b| *b as f64))
}
impl Pc {
    fn new() -> Pc {
        let mut registry = Registry::default();
        let requests = Family::<Base, Counter>::default();
        let responses = Family::<Resp, Counter>::default();
        let latency = Family::<Lat, Histogram, fn() -> Histogram>::new_with_constructor(new_hist);
        registry.register("request", "Total HTTP requests.", requests.clone());
        registry.register("response", "Total HTTP responses.", responses.clone());
        registry.register("response_latency_ms", "Latency.", latency.clone());
        Pc {
            registry,
            requests,
            responses,
            latency,
        }
    }
    /// What one request records: the same three families as ours.
    fn record(&self, l: &Labels, status: u16, latency: Duration) {
        self.requests.get_or_create(&Base(l.clone())).inc();
        let failed = status >= 500;
        self.responses
            .get_or_create(&Resp {
                base: l.clone(),
                status,
                failed,
            })
            .inc();
        self.latency
            .get_or_create(&Lat {
                base: l.clone(),
                status,
            })
            .observe(latency.as_secs_f64() * 1000.0);
    }
}

fn ours_record(m: &Metrics, l: &Labels, status: u16, latency: Duration) {
    let h = m.http(l);
    h.request();
    h.response(status, None, false, latency);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or("all");
    let n: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let sets: u16 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    let lat = Duration::from_micros(2_700);
    let ls: Vec<Labels> = (0..sets).map(|i| labels(10_000 + i)).collect();

    if what == "full-scrape" {
        let m = Metrics::new();
        ours_record(&m, &ls[0], 200, lat);
        m.identity_enabled();
        m.identity_refreshed(1_800_000_000);
        m.identity_trust_anchors(1);
        m.identity_trust_anchors_reload(true);
        m.count(
            metrics::TLS_HANDSHAKE_ERRORS,
            Some(&ls[0]),
            &[("reason", "unknown_ca")],
        );
        m.count(metrics::INBOUND_TCP_AUTHZ_DENY, Some(&ls[0]), &[]);
        m.count(metrics::INBOUND_HTTP_AUTHZ_DENY, Some(&ls[0]), &[]);
        let _t = m.tcp_open(&ls[0], metrics::Peer::Src);
        print!("{}", m.render());
        return;
    }
    if what == "all" || what == "record-ours" {
        let m = Metrics::new();
        for l in &ls {
            ours_record(&m, l, 200, lat);
        }
        let t = Instant::now();
        for i in 0..n {
            ours_record(&m, black_box(&ls[i % ls.len()]), 200, lat);
        }
        println!(
            "record ours: {:.1} ns/request",
            t.elapsed().as_nanos() as f64 / n as f64
        );
    }
    if what == "all" || what == "record-pc" {
        let pc = Pc::new();
        for l in &ls {
            pc.record(l, 200, lat);
        }
        let t = Instant::now();
        for i in 0..n {
            pc.record(black_box(&ls[i % ls.len()]), 200, lat);
        }
        println!(
            "record prometheus-client: {:.1} ns/request",
            t.elapsed().as_nanos() as f64 / n as f64
        );
    }
    let scrapes = (n / 10_000).max(1);
    if what == "all" || what == "encode-ours" {
        let m = Metrics::new();
        for l in &ls {
            for s in [200, 503] {
                ours_record(&m, l, s, lat);
            }
        }
        let t = Instant::now();
        let mut bytes = 0;
        for _ in 0..scrapes {
            bytes = black_box(m.render()).len();
        }
        println!(
            "encode ours: {:.1} us/scrape ({} label sets, {bytes} bytes)",
            t.elapsed().as_nanos() as f64 / scrapes as f64 / 1e3,
            sets
        );
    }
    if what == "all" || what == "encode-pc" {
        let pc = Pc::new();
        for l in &ls {
            for s in [200, 503] {
                pc.record(l, s, lat);
            }
        }
        let t = Instant::now();
        let mut bytes = 0;
        for _ in 0..scrapes {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &pc.registry).unwrap();
            bytes = black_box(out).len();
        }
        println!(
            "encode prometheus-client: {:.1} us/scrape ({} label sets, {bytes} bytes)",
            t.elapsed().as_nanos() as f64 / scrapes as f64 / 1e3,
            sets
        );
    }
}
