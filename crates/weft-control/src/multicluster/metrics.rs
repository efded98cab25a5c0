//! The mirror's Prometheus metrics, served by the control plane's `GET /metrics`: Linkerd's
//! service mirror names and labels for the gateway probes (`gateway_alive`, `gateway_enabled`,
//! `gateway_latency`, `gateway_probes`, `gateway_probe_latency_ms` with Linkerd's buckets),
//! and Weft-named gauges for what Linkerd has no name for (a link's connection, its mirrored
//! and federated service counts, the age of its last sync). Text format 0.0.4, written as the
//! proxy's admin writes it (families sorted, `le` last, `+Inf` bucket, `_sum`, `_count`).

use std::fmt::Write as _;
use std::time::Duration;

/// Upper bounds (ms) of Linkerd's `gateway_probe_latency_ms` buckets; `+Inf` is implied.
pub const PROBE_LATENCY_BUCKETS_MS: [u64; 25] = [
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000,
    10000, 20000, 30000, 40000, 50000,
];

/// One Link's probe figures, kept across reconnects (a changed Link keeps its counters).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Probes {
    /// Non-cumulative counts per bucket, the last one `+Inf`.
    buckets: [u64; PROBE_LATENCY_BUCKETS_MS.len() + 1],
    sum_ms: f64,
    /// Probes that answered 2xx, and the others.
    pub successes: u64,
    pub failures: u64,
    /// The last successful probe's latency.
    pub last_latency: Option<Duration>,
}

impl Probes {
    /// Records one probe: its latency when it succeeded (as Linkerd does, only successful
    /// probes feed the histogram), a failure otherwise.
    pub fn record(&mut self, latency: Option<Duration>) {
        let Some(d) = latency else {
            self.failures += 1;
            return;
        };
        self.successes += 1;
        self.last_latency = Some(d);
        let ms = d.as_secs_f64() * 1000.0;
        let i = PROBE_LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b as f64)
            .unwrap_or(PROBE_LATENCY_BUCKETS_MS.len());
        self.buckets[i] += 1;
        self.sum_ms += ms;
    }

    fn render_histogram(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative += n;
            let _ = match PROBE_LATENCY_BUCKETS_MS.get(i) {
                Some(le) => writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}"),
                None => writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}"),
            };
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_ms);
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// What `/metrics` says of one Link.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkMetrics {
    pub namespace: String,
    pub name: String,
    pub target_cluster_name: String,
    /// The gateway's `(gateway_name, gateway_namespace)` and whether it answers its probe;
    /// `None`: the link has no gateway.
    pub gateway: Option<((String, String), bool)>,
    pub probes: Probes,
    pub connected: bool,
    pub mirrored_services: usize,
    pub federated_services: usize,
    pub last_sync_age: Option<Duration>,
}

/// Linkerd's `gateway_name` and `gateway_namespace` of a gateway identity: the service
/// account and namespace of a `SA.NS.serviceaccount.identity...` name (Linkerd's labels named
/// the gateway's Service, which Linkerd's gateway shares its name and namespace with); an
/// identity of another form is the name whole, with an empty namespace.
pub fn gateway_labels(identity: &str) -> (String, String) {
    let mut parts = identity.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(sa), Some(ns), Some("serviceaccount")) => (sa.to_string(), ns.to_string()),
        _ => (identity.to_string(), String::new()),
    }
}

/// A family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value, escaped as the text format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The text of every Link's metrics (sorted by Link, as `links` is).
pub fn render(links: &[LinkMetrics]) -> String {
    let mut out = String::new();
    // Linkerd's probe metrics: labelled by gateway and target cluster, links with a gateway only.
    let gateways: Vec<(&LinkMetrics, String, bool)> = links
        .iter()
        .filter_map(|l| {
            let ((name, ns), alive) = l.gateway.as_ref()?;
            let labels = format!(
                "gateway_name=\"{}\",gateway_namespace=\"{}\",target_cluster_name=\"{}\"",
                escape(name),
                escape(ns),
                escape(&l.target_cluster_name)
            );
            Some((l, labels, *alive))
        })
        .collect();
    let gauge = |out: &mut String,
                 name: &str,
                 help: &str,
                 value: &dyn Fn(&LinkMetrics, bool) -> Option<f64>| {
        family(out, name, "gauge", help);
        for (l, labels, alive) in &gateways {
            if let Some(v) = value(l, *alive) {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    };
    gauge(
        &mut out,
        "gateway_alive",
        "A gauge which is 1 if the gateway is alive and 0 if it is not.",
        &|_, alive| Some(if alive { 1.0 } else { 0.0 }),
    );
    gauge(
        &mut out,
        "gateway_enabled",
        "A gauge which is 1 if the gateway is enabled, and 0 if it is not.",
        &|_, _| Some(1.0),
    );
    gauge(
        &mut out,
        "gateway_latency",
        "A gauge which is the latency (ms) of the last successful probe to the gateway.",
        &|l, _| l.probes.last_latency.map(|d| d.as_secs_f64() * 1000.0),
    );
    family(
        &mut out,
        "gateway_probes",
        "counter",
        "A counter for the number of actual performed probes to a gateway.",
    );
    for (l, labels, _) in &gateways {
        for (ok, n) in [("true", l.probes.successes), ("false", l.probes.failures)] {
            let _ = writeln!(
                out,
                "gateway_probes{{{labels},probe_successful=\"{ok}\"}} {n}"
            );
        }
    }
    family(
        &mut out,
        "gateway_probe_latency_ms",
        "histogram",
        "A histogram of latencies to a gateway in a target cluster.",
    );
    for (l, labels, _) in &gateways {
        l.probes
            .render_histogram(&mut out, "gateway_probe_latency_ms", labels);
    }
    // Weft's own: every link, labelled by the Link and its target cluster.
    let link_gauge =
        |out: &mut String, name: &str, help: &str, value: &dyn Fn(&LinkMetrics) -> Option<f64>| {
            family(out, name, "gauge", help);
            for l in links {
                if let Some(v) = value(l) {
                    let _ = writeln!(
                    out,
                    "{name}{{link=\"{}\",link_namespace=\"{}\",target_cluster_name=\"{}\"}} {v}",
                    escape(&l.name),
                    escape(&l.namespace),
                    escape(&l.target_cluster_name)
                );
                }
            }
        };
    link_gauge(
        &mut out,
        "multicluster_link_connected",
        "1 while the link's exports stream is open and has delivered a snapshot, else 0.",
        &|l| Some(if l.connected { 1.0 } else { 0.0 }),
    );
    link_gauge(
        &mut out,
        "multicluster_link_mirrored_services",
        "The <name>-<link> services the link mirrors now.",
        &|l| Some(l.mirrored_services as f64),
    );
    link_gauge(
        &mut out,
        "multicluster_link_federated_services",
        "The federated members the link brings now.",
        &|l| Some(l.federated_services as f64),
    );
    link_gauge(
        &mut out,
        "multicluster_link_last_sync_age_seconds",
        "Seconds since the link's last snapshot or heartbeat (absent: never synced).",
        &|l| l.last_sync_age.map(|d| d.as_secs_f64()),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_sys::prometheus::{parse, sum};

    fn link(gateway: bool, alive: bool) -> LinkMetrics {
        LinkMetrics {
            namespace: "weft-multicluster".into(),
            name: "west".into(),
            target_cluster_name: "west".into(),
            gateway: gateway.then(|| (("gateway".into(), "weft-multicluster".into()), alive)),
            probes: Probes::default(),
            connected: true,
            mirrored_services: 2,
            federated_services: 1,
            last_sync_age: Some(Duration::from_millis(1500)),
        }
    }

    #[test]
    fn probes_fill_linkerds_buckets_and_count_failures() {
        let mut l = link(true, true);
        for ms in [1, 3, 7, 60_000] {
            l.probes.record(Some(Duration::from_millis(ms)));
        }
        l.probes.record(None);
        let text = render(&[l]);
        let g = [
            ("gateway_name", "gateway"),
            ("gateway_namespace", "weft-multicluster"),
            ("target_cluster_name", "west"),
        ];
        let bucket = |le: &str| {
            let mut labels = g.to_vec();
            labels.push(("le", le));
            sum(&text, "gateway_probe_latency_ms_bucket", &labels)
        };
        assert_eq!(bucket("1"), 1.0, "{text}");
        assert_eq!(bucket("3"), 2.0);
        assert_eq!(bucket("10"), 3.0);
        assert_eq!(bucket("50000"), 3.0);
        assert_eq!(bucket("+Inf"), 4.0);
        assert_eq!(sum(&text, "gateway_probe_latency_ms_count", &g), 4.0);
        assert_eq!(sum(&text, "gateway_probe_latency_ms_sum", &g), 60_011.0);
        assert_eq!(
            parse(&text)
                .iter()
                .filter(|s| s.name == "gateway_probe_latency_ms_bucket")
                .count(),
            26
        );
        let mut failed = g.to_vec();
        failed.push(("probe_successful", "false"));
        assert_eq!(sum(&text, "gateway_probes", &failed), 1.0);
        assert_eq!(sum(&text, "gateway_latency", &g), 60_000.0);
        assert_eq!(sum(&text, "gateway_alive", &g), 1.0);
        assert!(text.contains("# TYPE gateway_probe_latency_ms histogram\n"));
        assert!(text.contains("# TYPE gateway_alive gauge\n"));
    }

    #[test]
    fn link_gauges_for_every_link_gateway_metrics_only_with_a_gateway() {
        let mut dead = link(true, false);
        dead.name = "east".into();
        dead.target_cluster_name = "east".into();
        dead.connected = false;
        dead.last_sync_age = None;
        let text = render(&[dead, link(false, false)]);
        let samples = parse(&text);
        let alive: Vec<_> = samples
            .iter()
            .filter(|s| s.name == "gateway_alive")
            .collect();
        assert_eq!(alive.len(), 1, "{text}");
        assert_eq!(alive[0].label("target_cluster_name"), Some("east"));
        assert_eq!(alive[0].value, 0.0);
        fn l(name: &str) -> [(&str, &str); 2] {
            [("link", name), ("link_namespace", "weft-multicluster")]
        }
        assert_eq!(sum(&text, "multicluster_link_connected", &l("east")), 0.0);
        assert_eq!(sum(&text, "multicluster_link_connected", &l("west")), 1.0);
        assert_eq!(
            sum(&text, "multicluster_link_mirrored_services", &l("west")),
            2.0
        );
        assert_eq!(
            sum(&text, "multicluster_link_federated_services", &l("west")),
            1.0
        );
        assert_eq!(
            sum(&text, "multicluster_link_last_sync_age_seconds", &l("west")),
            1.5
        );
        assert!(!samples
            .iter()
            .any(|s| s.name == "multicluster_link_last_sync_age_seconds"
                && s.label("link") == Some("east")));
        // No link at all: the families are still declared, with no sample.
        assert!(parse(&render(&[])).is_empty());
    }

    #[test]
    fn gateway_labels_come_from_the_identity() {
        assert_eq!(
            gateway_labels("linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local"),
            ("linkerd-gateway".into(), "linkerd-multicluster".into())
        );
        assert_eq!(gateway_labels("gw.west"), ("gw.west".into(), String::new()));
    }
}
