//! `outbound_http_balancer_endpoints{backend_*, endpoint_state}`: per balancer, its endpoints
//! that are `ready` (picked by the balancer) or `pending` (ejected by failure accrual, out for
//! its reconnect backoff after a failed connect, or waiting for a probe's answer).
//!
//! Balancers register a weak handle ([`EndpointGauge`]); a scrape asks each live one for its
//! counts, so recording costs the data path nothing, and a balancer that is gone leaves the
//! metric with it. Balancers with the same labels (one backend reached under two targets) are
//! summed.

use super::{header, render_pairs, Metrics};
use crate::discovery::Target;
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex, Weak},
};

pub const BALANCER_ENDPOINTS: &str = "outbound_http_balancer_endpoints";

/// A backend as Linkerd labels it: `backend_{group,kind,namespace,name,port,section_name}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendLabels {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// 0 = none (rendered empty).
    pub port: u16,
    pub section_name: String,
}

impl BackendLabels {
    /// Without a policy: a cluster Service name (`NAME.NS.svc.…`) is `core`/`Service`; any
    /// other name or address is a `default` backend named after it.
    pub fn for_target(target: &Target) -> BackendLabels {
        match target {
            Target::Name { host, port } => {
                let mut labels = host.trim_end_matches('.').split('.');
                match (labels.next(), labels.next(), labels.next()) {
                    (Some(name), Some(ns), Some("svc")) => BackendLabels {
                        group: "core".into(),
                        kind: "Service".into(),
                        namespace: ns.into(),
                        name: name.into(),
                        port: *port,
                        section_name: String::new(),
                    },
                    _ => BackendLabels::default_named(host, *port),
                }
            }
            Target::Addr(a) => BackendLabels::default_named(&a.ip().to_string(), a.port()),
        }
    }

    fn default_named(name: &str, port: u16) -> BackendLabels {
        BackendLabels {
            kind: "default".into(),
            name: name.into(),
            port,
            ..BackendLabels::default()
        }
    }

    fn render(&self, state: &str) -> String {
        let port = if self.port == 0 {
            String::new()
        } else {
            self.port.to_string()
        };
        render_pairs(
            [
                ("backend_group", self.group.as_str()),
                ("backend_kind", self.kind.as_str()),
                ("backend_namespace", self.namespace.as_str()),
                ("backend_name", self.name.as_str()),
                ("backend_port", port.as_str()),
                ("backend_section_name", self.section_name.as_str()),
                ("endpoint_state", state),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }
}

/// Endpoints of one balancer by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounts {
    pub ready: usize,
    pub pending: usize,
}

/// What a balancer tells a scrape.
pub trait EndpointGauge: Send + Sync {
    fn endpoint_counts(&self) -> EndpointCounts;
}

/// One registered balancer.
type Registration = (Arc<BackendLabels>, Weak<dyn EndpointGauge>);

/// The registered balancers (a field of the registry).
#[derive(Default)]
pub(super) struct Balancers {
    live: Mutex<Vec<Registration>>,
}

impl Metrics {
    /// Reports `gauge` as `outbound_http_balancer_endpoints` with `labels` for as long as it
    /// lives.
    pub fn register_balancer(&self, labels: Arc<BackendLabels>, gauge: Weak<dyn EndpointGauge>) {
        let mut live = super::lock(&self.inner.balancers.live);
        // Dead entries go when the list doubles (amortised O(1) per registration).
        if live.len() >= 64 && live.len().is_power_of_two() {
            live.retain(|(_, g)| g.strong_count() > 0);
        }
        live.push((labels, gauge));
    }
}

/// Writes the family (header only when a balancer is registered).
pub(super) fn render(out: &mut String, balancers: &Balancers) {
    let gauges: Vec<(Arc<BackendLabels>, Arc<dyn EndpointGauge>)> = {
        let mut live = super::lock(&balancers.live);
        live.retain(|(_, g)| g.strong_count() > 0);
        live.iter()
            .filter_map(|(l, g)| Some((l.clone(), g.upgrade()?)))
            .collect()
    };
    if gauges.is_empty() {
        return;
    }
    // Counted outside the registry lock: a balancer's own lock is taken here.
    let mut sums: BTreeMap<Arc<BackendLabels>, EndpointCounts> = BTreeMap::new();
    for (labels, gauge) in gauges {
        let c = gauge.endpoint_counts();
        let sum = sums.entry(labels).or_default();
        sum.ready += c.ready;
        sum.pending += c.pending;
    }
    header(
        out,
        BALANCER_ENDPOINTS,
        "gauge",
        "Endpoints of each load balancer: ready, or pending (ejected by failure accrual, or on probation).",
    );
    for (labels, c) in &sums {
        for (state, n) in [("ready", c.ready), ("pending", c.pending)] {
            let _ = writeln!(out, "{BALANCER_ENDPOINTS}{{{}}} {n}", labels.render(state));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    struct Fixed(AtomicUsize, usize);

    impl EndpointGauge for Fixed {
        fn endpoint_counts(&self) -> EndpointCounts {
            EndpointCounts {
                ready: self.0.load(Relaxed),
                pending: self.1,
            }
        }
    }

    #[test]
    fn renders_live_balancers_summed_by_backend_and_forgets_dropped_ones() {
        let m = Metrics::new();
        assert!(
            !m.render().contains(BALANCER_ENDPOINTS),
            "nothing registered"
        );
        let web = Arc::new(BackendLabels::for_target(&Target::Name {
            host: "web.shop.svc.cluster.local".into(),
            port: 8080,
        }));
        let a: Arc<dyn EndpointGauge> = Arc::new(Fixed(AtomicUsize::new(2), 1));
        let b: Arc<dyn EndpointGauge> = Arc::new(Fixed(AtomicUsize::new(1), 0));
        m.register_balancer(web.clone(), Arc::downgrade(&a));
        m.register_balancer(web.clone(), Arc::downgrade(&b));
        let addr = Arc::new(BackendLabels::for_target(&Target::Addr(
            "198.18.0.7:80".parse().unwrap(),
        )));
        let c: Arc<dyn EndpointGauge> = Arc::new(Fixed(AtomicUsize::new(4), 0));
        m.register_balancer(addr, Arc::downgrade(&c));

        let text = m.render();
        let l = r#"backend_group="core",backend_kind="Service",backend_namespace="shop",backend_name="web",backend_port="8080",backend_section_name="""#;
        for line in [
            format!("# TYPE {BALANCER_ENDPOINTS} gauge\n"),
            format!("{BALANCER_ENDPOINTS}{{{l},endpoint_state=\"ready\"}} 3\n"),
            format!("{BALANCER_ENDPOINTS}{{{l},endpoint_state=\"pending\"}} 1\n"),
            format!(
                "{BALANCER_ENDPOINTS}{{backend_group=\"\",backend_kind=\"default\",backend_namespace=\"\",backend_name=\"198.18.0.7\",backend_port=\"80\",backend_section_name=\"\",endpoint_state=\"ready\"}} 4\n"
            ),
        ] {
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }

        drop(a);
        drop(c);
        let text = m.render();
        assert!(text.contains(&format!(
            "{BALANCER_ENDPOINTS}{{{l},endpoint_state=\"ready\"}} 1\n"
        )));
        assert!(!text.contains("198.18.0.7"), "{text}");
        drop(b);
        assert!(!m.render().contains(BALANCER_ENDPOINTS));
    }

    #[test]
    fn names_outside_the_cluster_are_default_backends() {
        let l = BackendLabels::for_target(&Target::Name {
            host: "example.com".into(),
            port: 443,
        });
        assert_eq!(l.kind, "default");
        assert_eq!(l.name, "example.com");
        assert_eq!(l.port, 443);
        assert!(l.group.is_empty() && l.namespace.is_empty());
    }
}
