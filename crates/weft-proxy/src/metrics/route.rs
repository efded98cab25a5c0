//! Route and route-backend metrics with Linkerd's families and labels:
//! `outbound_{http,grpc}_route_request_duration_seconds`,
//! `outbound_{http,grpc}_route_request_statuses_total`,
//! `outbound_{http,grpc}_route_backend_requests_total`,
//! `outbound_{http,grpc}_route_backend_response_duration_seconds`,
//! `outbound_{http,grpc}_route_backend_response_statuses_total`,
//! labelled `parent_*`, `route_*` (and `backend_*`) from the policy's metadata.
//!
//! Cardinality is bounded by the policies: one series set per route and route backend a policy
//! names. The request path takes its handles once per policy version (not per request); a
//! series no policy uses any more is dropped after [`RETAIN_IDLE`] (Linkerd's
//! `METRICS_RETAIN_IDLE` default).

use super::{escape, header, lock};
use crate::policy::Meta;
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

/// A series nothing holds any more is kept this long, then dropped.
pub const RETAIN_IDLE: Duration = Duration::from_secs(600);

/// Upper bounds (seconds) of the route request duration histogram (Linkerd's).
const REQUEST_BUCKETS: [f64; 4] = [0.05, 0.5, 1.0, 10.0];
/// Upper bounds (seconds) of the backend response duration histogram (Linkerd's).
const RESPONSE_BUCKETS: [f64; 7] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0];

/// Which protocol's families a route records into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Http,
    Grpc,
}

/// The `error` label: empty when the response came from the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorLabel {
    None,
    /// A timeout answered the request (Linkerd's `RESPONSE_HEADERS_TIMEOUT`).
    Timeout,
    /// No endpoint in time (`FAIL_FAST`).
    FailFast,
    /// Any other proxy error (`UNEXPECTED`).
    Unexpected,
}

impl ErrorLabel {
    fn as_str(self) -> &'static str {
        match self {
            ErrorLabel::None => "",
            ErrorLabel::Timeout => "RESPONSE_HEADERS_TIMEOUT",
            ErrorLabel::FailFast => "FAIL_FAST",
            ErrorLabel::Unexpected => "UNEXPECTED",
        }
    }
}

/// An outcome: the status answered (HTTP status, or gRPC status for gRPC routes; `None` when
/// a gRPC response carried none) and why the proxy answered it, if it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Outcome {
    pub status: Option<u32>,
    pub error: ErrorLabel,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RouteKey {
    proto: Proto,
    parent: Arc<Meta>,
    route: Arc<Meta>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct BackendKey {
    route: RouteKey,
    backend: Arc<Meta>,
}

/// The route families. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Families>,
}

#[derive(Default)]
struct Families {
    routes: Mutex<BTreeMap<RouteKey, Arc<RouteStats>>>,
    backends: Mutex<BTreeMap<BackendKey, Arc<BackendStats>>>,
}

struct Histogram<const N: usize> {
    /// Non-cumulative counts per bound; `inf` counts the rest.
    buckets: [AtomicU64; N],
    inf: AtomicU64,
    sum_us: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            inf: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&self, bounds: &[f64; N], d: Duration) {
        let secs = d.as_secs_f64();
        match bounds.iter().position(|b| secs <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Relaxed),
            None => self.inf.fetch_add(1, Relaxed),
        };
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64; N]) {
        let mut cumulative = 0;
        for (i, b) in bounds.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.inf.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

#[derive(Default)]
struct Retain {
    /// Since when only the registry holds the series.
    unused_since: Mutex<Option<Instant>>,
}

impl Retain {
    /// Should a series only the registry holds (`strong == 1`) be dropped now?
    fn expired(&self, strong: usize, now: Instant) -> bool {
        let mut since = lock(&self.unused_since);
        if strong > 1 {
            *since = None;
            return false;
        }
        now.duration_since(*since.get_or_insert(now)) >= RETAIN_IDLE
    }
}

#[derive(Default)]
struct RouteStats {
    duration: Histogram<4>,
    statuses: Mutex<BTreeMap<Outcome, u64>>,
    /// `outbound_*_route_retry_*_total`: kept with the route's series, so they count across
    /// policy versions.
    retries: crate::retry::RetryCounters,
    retain: Retain,
}

#[derive(Default)]
struct BackendStats {
    requests: AtomicU64,
    duration: Histogram<7>,
    statuses: Mutex<BTreeMap<Outcome, u64>>,
    retain: Retain,
}

/// One route's handle (per policy version, shared by its requests).
#[derive(Clone)]
pub struct RouteMetrics(Arc<RouteStats>);

/// One route backend's handle.
#[derive(Clone)]
pub struct BackendMetrics(Arc<BackendStats>);

impl Registry {
    pub fn route(&self, proto: Proto, parent: &Arc<Meta>, route: &Arc<Meta>) -> RouteMetrics {
        let key = RouteKey {
            proto,
            parent: parent.clone(),
            route: route.clone(),
        };
        RouteMetrics(lock(&self.inner.routes).entry(key).or_default().clone())
    }

    pub fn backend(
        &self,
        proto: Proto,
        parent: &Arc<Meta>,
        route: &Arc<Meta>,
        backend: &Arc<Meta>,
    ) -> BackendMetrics {
        let key = BackendKey {
            route: RouteKey {
                proto,
                parent: parent.clone(),
                route: route.clone(),
            },
            backend: backend.clone(),
        };
        BackendMetrics(lock(&self.inner.backends).entry(key).or_default().clone())
    }

    /// Drops series nothing used for [`RETAIN_IDLE`]; writes the families that have series.
    pub fn render(&self, out: &mut String) {
        let now = Instant::now();
        let routes: Vec<(RouteKey, Arc<RouteStats>)> = {
            let mut map = lock(&self.inner.routes);
            map.retain(|_, s| !s.retain.expired(Arc::strong_count(s), now));
            map.iter().map(|(k, s)| (k.clone(), s.clone())).collect()
        };
        let backends: Vec<(BackendKey, Arc<BackendStats>)> = {
            let mut map = lock(&self.inner.backends);
            map.retain(|_, s| !s.retain.expired(Arc::strong_count(s), now));
            map.iter().map(|(k, s)| (k.clone(), s.clone())).collect()
        };
        for proto in [Proto::Http, Proto::Grpc] {
            let p = match proto {
                Proto::Http => "http",
                Proto::Grpc => "grpc",
            };
            let routes: Vec<_> = routes.iter().filter(|(k, _)| k.proto == proto).collect();
            let backends: Vec<_> = backends
                .iter()
                .filter(|(k, _)| k.route.proto == proto)
                .collect();
            if !routes.is_empty() {
                let name = format!("outbound_{p}_route_request_duration_seconds");
                header(
                    out,
                    &name,
                    "histogram",
                    "The time between request initialization and response completion.",
                );
                for (k, s) in &routes {
                    s.duration
                        .render(out, &name, &route_labels(k), &REQUEST_BUCKETS);
                }
                let name = format!("outbound_{p}_route_request_statuses_total");
                header(
                    out,
                    &name,
                    "counter",
                    "Completed route requests, by response status and error.",
                );
                for (k, s) in &routes {
                    render_statuses(out, &name, &route_labels(k), proto, &s.statuses);
                }
                render_retries(out, p, &routes);
            }
            if !backends.is_empty() {
                let name = format!("outbound_{p}_route_backend_requests_total");
                header(
                    out,
                    &name,
                    "counter",
                    "Requests dispatched to a route backend.",
                );
                for (k, s) in &backends {
                    let _ = writeln!(
                        out,
                        "{name}{{{}}} {}",
                        backend_labels(k),
                        s.requests.load(Relaxed)
                    );
                }
                let name = format!("outbound_{p}_route_backend_response_duration_seconds");
                header(
                    out,
                    &name,
                    "histogram",
                    "The time between a backend request and its response completion.",
                );
                for (k, s) in &backends {
                    s.duration
                        .render(out, &name, &backend_labels(k), &RESPONSE_BUCKETS);
                }
                let name = format!("outbound_{p}_route_backend_response_statuses_total");
                header(
                    out,
                    &name,
                    "counter",
                    "Completed backend responses, by status and error.",
                );
                for (k, s) in &backends {
                    render_statuses(out, &name, &backend_labels(k), proto, &s.statuses);
                }
            }
        }
    }
}

/// The four retry counters of each route.
fn render_retries(out: &mut String, p: &str, routes: &[&(RouteKey, Arc<RouteStats>)]) {
    let counts: Vec<_> = routes
        .iter()
        .map(|(k, s)| (route_labels(k), s.retries.counts()))
        .collect();
    type Field = fn(&crate::retry::RetryCounts) -> u64;
    let families: [(&str, &str, Field); 4] = [
        ("requests", "Retries sent.", |c| c.requests),
        ("successes", "Requests that succeeded after a retry.", |c| c.successes),
        (
            "limit_exceeded",
            "Retryable answers returned because the retry limit or the deadline was reached.",
            |c| c.limit_exceeded,
        ),
        (
            "overflow",
            "Retryable answers returned because the retry budget was exhausted or the body could not be replayed.",
            |c| c.overflow,
        ),
    ];
    for (family, help, field) in families {
        let name = format!("outbound_{p}_route_retry_{family}_total");
        header(out, &name, "counter", help);
        for (labels, c) in &counts {
            let _ = writeln!(out, "{name}{{{labels}}} {}", field(c));
        }
    }
}

fn render_statuses(
    out: &mut String,
    name: &str,
    labels: &str,
    proto: Proto,
    statuses: &Mutex<BTreeMap<Outcome, u64>>,
) {
    let status_label = match proto {
        Proto::Http => "http_status",
        Proto::Grpc => "grpc_status",
    };
    for (o, n) in lock(statuses).iter() {
        let status = o.status.map(|s| s.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "{name}{{{labels},{status_label}=\"{status}\",error=\"{}\"}} {n}",
            o.error.as_str()
        );
    }
}

fn meta_labels(out: &mut String, prefix: &str, m: &Meta) {
    let port = if m.port == 0 {
        String::new()
    } else {
        m.port.to_string()
    };
    for (k, v) in [
        ("group", m.group.as_str()),
        ("kind", m.kind.as_str()),
        ("namespace", m.namespace.as_str()),
        ("name", m.name.as_str()),
        ("port", port.as_str()),
        ("section_name", m.section.as_str()),
    ] {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{prefix}_{k}=\"{}\"", escape(v));
    }
}

fn route_labels(k: &RouteKey) -> String {
    let mut out = String::new();
    meta_labels(&mut out, "parent", &k.parent);
    // Routes have no port or section: Linkerd exports the four route_* labels.
    let route = &k.route;
    for (key, v) in [
        ("group", route.group.as_str()),
        ("kind", route.kind.as_str()),
        ("namespace", route.namespace.as_str()),
        ("name", route.name.as_str()),
    ] {
        let _ = write!(out, ",route_{key}=\"{}\"", escape(v));
    }
    out
}

fn backend_labels(k: &BackendKey) -> String {
    let mut out = route_labels(&k.route);
    meta_labels(&mut out, "backend", &k.backend);
    out
}

impl RouteMetrics {
    /// The route's retry counters (the retry loop counts into them).
    pub fn retries(&self) -> &crate::retry::RetryCounters {
        &self.0.retries
    }

    /// A route request finished (response body ended, or the proxy answered).
    pub fn done(&self, outcome: Outcome, duration: Duration) {
        self.0.duration.observe(&REQUEST_BUCKETS, duration);
        *lock(&self.0.statuses).entry(outcome).or_default() += 1;
    }
}

impl BackendMetrics {
    /// A request was dispatched to this backend.
    pub fn request(&self) {
        self.0.requests.fetch_add(1, Relaxed);
    }

    /// The backend's response finished.
    pub fn done(&self, outcome: Outcome, duration: Duration) {
        self.0.duration.observe(&RESPONSE_BUCKETS, duration);
        *lock(&self.0.statuses).entry(outcome).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: &str, name: &str, port: u16) -> Arc<Meta> {
        Arc::new(Meta {
            group: if kind == "Service" {
                "core".into()
            } else {
                "gateway.networking.k8s.io".into()
            },
            kind: kind.into(),
            namespace: "default".into(),
            name: name.into(),
            section: String::new(),
            port,
        })
    }

    #[test]
    fn families_and_labels_are_linkerds() {
        let reg = Registry::default();
        let parent = meta("Service", "web", 8080);
        let route = meta("HTTPRoute", "web-route", 0);
        let backend = meta("Service", "web-canary", 8080);
        let r = reg.route(Proto::Http, &parent, &route);
        let b = reg.backend(Proto::Http, &parent, &route, &backend);
        b.request();
        let ok = Outcome {
            status: Some(200),
            error: ErrorLabel::None,
        };
        b.done(ok, Duration::from_millis(30));
        r.done(ok, Duration::from_millis(40));
        r.done(
            Outcome {
                status: Some(504),
                error: ErrorLabel::Timeout,
            },
            Duration::from_secs(2),
        );
        let mut out = String::new();
        reg.render(&mut out);
        let route_labels = "parent_group=\"core\",parent_kind=\"Service\",parent_namespace=\"default\",parent_name=\"web\",parent_port=\"8080\",parent_section_name=\"\",route_group=\"gateway.networking.k8s.io\",route_kind=\"HTTPRoute\",route_namespace=\"default\",route_name=\"web-route\"";
        assert!(out.contains(&format!(
            "outbound_http_route_request_statuses_total{{{route_labels},http_status=\"200\",error=\"\"}} 1"
        )), "{out}");
        assert!(out.contains(&format!(
            "outbound_http_route_request_statuses_total{{{route_labels},http_status=\"504\",error=\"RESPONSE_HEADERS_TIMEOUT\"}} 1"
        )), "{out}");
        assert!(
            out.contains(&format!(
            "outbound_http_route_request_duration_seconds_bucket{{{route_labels},le=\"0.05\"}} 1"
        )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "outbound_http_route_request_duration_seconds_count{{{route_labels}}} 2"
            )),
            "{out}"
        );
        let backend_labels = format!("{route_labels},backend_group=\"core\",backend_kind=\"Service\",backend_namespace=\"default\",backend_name=\"web-canary\",backend_port=\"8080\",backend_section_name=\"\"");
        assert!(
            out.contains(&format!(
                "outbound_http_route_backend_requests_total{{{backend_labels}}} 1"
            )),
            "{out}"
        );
        assert!(out.contains(&format!(
            "outbound_http_route_backend_response_statuses_total{{{backend_labels},http_status=\"200\",error=\"\"}} 1"
        )), "{out}");
        assert!(
            !out.contains("outbound_grpc_route"),
            "no gRPC series were made"
        );
    }

    #[test]
    fn series_nothing_holds_are_dropped_after_the_retention() {
        let reg = Registry::default();
        let parent = meta("Service", "web", 8080);
        let route = meta("HTTPRoute", "old", 0);
        let handle = reg.route(Proto::Grpc, &parent, &route);
        handle.done(
            Outcome {
                status: Some(0),
                error: ErrorLabel::None,
            },
            Duration::from_millis(1),
        );
        drop(handle);
        let mut out = String::new();
        reg.render(&mut out);
        assert!(
            out.contains("outbound_grpc_route_request_statuses_total"),
            "{out}"
        );
        // Pretend the series has been unused for the whole retention.
        for s in lock(&reg.inner.routes).values() {
            *lock(&s.retain.unused_since) = Instant::now().checked_sub(RETAIN_IDLE);
        }
        let mut out = String::new();
        reg.render(&mut out);
        assert!(!out.contains("outbound_grpc_route"), "{out}");
    }
}
