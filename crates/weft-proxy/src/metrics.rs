//! Prometheus metrics with Linkerd's names and labels.
//!
//! How the data path uses it: it asks for a per-label-set handle once per connection or target
//! and records on it; handles are cheap atomic counters, so recording takes no lock.
//!
//! A small in-house registry (no prometheus crate): families are maps from [`Labels`] to `Arc`
//! handles; [`Metrics::render`] writes the text exposition format, sorted so output is stable.
//!
//! Cardinality stays bounded: a series whose handles are all gone (only the registry holds it)
//! and that has not changed for the retention (`WEFT_PROXY_METRICS_RETAIN_IDLE`) is dropped by
//! [`Metrics::sweep`] (every scrape, and a periodic task), so a proxy that talked to many
//! short-lived targets does not keep their series forever. A dropped counter that comes back
//! starts again from 0, which Prometheus reads as a counter reset.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};
use tokio::time::Instant;

pub mod balancer;
pub mod detect;
pub mod tcp;

pub use detect::DetectResult;
pub use tcp::TcpConnMetrics;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Inbound = 0,
    Outbound = 1,
}

impl Direction {
    /// The `direction` label's value.
    pub fn label(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Labels common to HTTP and TCP metrics. Ordered field by field, except that the destination
/// labels shared with the endpoint (one `Arc` per endpoint) are equal without comparing their
/// strings: a series lookup per request ([`Metrics::http`]) compares a whole key on its hit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Labels {
    pub direction: Direction,
    /// HTTP authority (HTTP metrics only).
    pub authority: Option<String>,
    pub target_addr: SocketAddr,
    /// `tls="true"` with `client_id`/`server_id`, or `tls="no_identity"` with a reason.
    pub tls: TlsLabel,
    /// Destination labels from discovery, exported with a `dst_` prefix (outbound only).
    pub dst: Arc<BTreeMap<String, String>>,
}

impl Ord for Labels {
    fn cmp(&self, other: &Labels) -> std::cmp::Ordering {
        self.direction
            .cmp(&other.direction)
            .then_with(|| self.authority.cmp(&other.authority))
            .then_with(|| self.target_addr.cmp(&other.target_addr))
            .then_with(|| self.tls.cmp(&other.tls))
            .then_with(|| match Arc::ptr_eq(&self.dst, &other.dst) {
                true => std::cmp::Ordering::Equal,
                false => self.dst.cmp(&other.dst),
            })
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Labels) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsLabel {
    /// `tls="true"`, plus `client_id` (inbound) or `server_id` (outbound) when known.
    /// The identity is shared with the connection (or the TLS plan) that proved it.
    Established { peer_id: Option<Arc<str>> },
    /// `tls="no_identity", no_tls_reason=REASON`.
    NoIdentity(&'static str),
    /// `tls="opaque"`: TLS this proxy did not terminate (addressed to another name), relayed.
    Passthru,
}

/// `no_tls_reason` values used this session.
pub const NO_TLS_FROM_DISCOVERY: &str = "not_provided_by_service_discovery";
pub const NO_TLS_LOOPBACK: &str = "loopback";
pub const NO_TLS_FROM_REMOTE: &str = "no_tls_from_remote";

/// Upper bounds (ms) of the `response_latency_ms` buckets; `+Inf` is implied.
pub const LATENCY_BUCKETS_MS: [u64; 25] = [
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000,
    10000, 20000, 30000, 40000, 50000,
];

/// Which side of the proxy a TCP connection is on (`peer` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// A connection the proxy accepted (from the client).
    Src,
    /// A connection the proxy opened (to an endpoint or the local application).
    Dst,
}

/// The registry. Cheap to clone; every clone shares the same families.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::with_retain_idle(crate::config::DEFAULT_METRICS_RETAIN_IDLE)
    }
}

pub mod route;

struct Registry {
    /// Route and route-backend families (outbound policy).
    routes: route::Registry,
    http: Mutex<BTreeMap<Labels, Arc<HttpStats>>>,
    tcp: Mutex<BTreeMap<(Labels, Peer), Arc<tcp::TcpStats>>>,
    identity: IdentityStats,
    /// Plain counters keyed by family and rendered labels (TLS refusals, authorization
    /// decisions); [`Counter`] handles share them.
    counters: Mutex<BTreeMap<(&'static str, String), Arc<CounterCell>>>,
    /// `outbound_http_balancer_endpoints` ([`balancer`]).
    balancers: balancer::Balancers,
    /// `protocol_detection_*` ([`detect`]).
    detections: detect::Detections,
    /// How long an unheld, unchanged series of `http`, `tcp` and `counters` is kept.
    retain_idle: Duration,
}

/// Idle-expiry bookkeeping of one series, read and written by [`Metrics::sweep`] only (the
/// data path never touches it): the series' fingerprint at the last sweep, and since when it
/// has been unheld with that fingerprint.
#[derive(Default)]
struct Idle(Mutex<Option<(u64, Instant)>>);

impl Idle {
    /// Should the series be dropped now? Held (a handle besides the registry's) or changed
    /// since the last sweep restarts its idle time.
    fn expired(&self, held: bool, fingerprint: u64, now: Instant, retain: Duration) -> bool {
        let mut state = lock(&self.0);
        match &*state {
            Some((fp, since)) if !held && *fp == fingerprint => {
                now.saturating_duration_since(*since) >= retain
            }
            _ => {
                *state = (!held).then_some((fingerprint, now));
                false
            }
        }
    }
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Idle")
    }
}

/// One series of a [`COUNTER_FAMILIES`] family.
#[derive(Debug, Default)]
struct CounterCell {
    value: AtomicU64,
    idle: Idle,
}

/// Families of [`Metrics::count`], with their help text (rendered only once used).
pub const COUNTER_FAMILIES: [(&str, &str); 15] = [
    (
        CONNECTIONS_LIMITED,
        "Client connections a listener limit closed, by direction and limit (max_connections: over WEFT_PROXY_*_MAX_CONNECTIONS, closed at accept; header_size: an HTTP/1 request head over WEFT_PROXY_*_SERVER_HTTP1_MAX_HEADER_SIZE, answered 431; idle_timeout: no request for WEFT_PROXY_*_SERVER_IDLE_TIMEOUT, or an HTTP/1 request head that did not arrive within it; http2_flood: an HTTP/2 client that kept making the server reset streams, closed with GOAWAY ENHANCE_YOUR_CALM).",
    ),
    (
        TLS_HANDSHAKE_ERRORS,
        "TLS handshakes that failed, by direction and reason (refused peer certificates among them).",
    ),
    (
        INBOUND_TCP_AUTHZ_ALLOW,
        "Inbound opaque/TLS connections an authorization of the server admitted.",
    ),
    (
        INBOUND_TCP_AUTHZ_DENY,
        "Inbound opaque/TLS connections refused: no authorization of the server admits the client, or the port requires a client identity.",
    ),
    (
        INBOUND_HTTP_AUTHZ_ALLOW,
        "Inbound HTTP requests an authorization of their route admitted.",
    ),
    (
        INBOUND_HTTP_AUTHZ_DENY,
        "Inbound HTTP requests refused (403 / gRPC PERMISSION_DENIED): no authorization of the route admits the client, or the port requires a client identity.",
    ),
    (
        OUTBOUND_TCP_FORBIDDEN,
        "Outbound opaque and TLS connections (and CONNECT tunnels) closed at once because the target's policy forbids them (an EgressNetwork under Deny; for TLS routes also a connection that is not TLS or whose SNI no route matches, with empty route labels), by target and policy parent and route.",
    ),
    (
        INBOUND_GATEWAY_REFUSED,
        "Connections (opaque) and requests (HTTP) the inbound gateway refused to forward, by reason (not_a_gateway: no WEFT_PROXY_INBOUND_GATEWAY_SUFFIXES; outside_suffixes: the transport header names a host under none of them; no_identity: the client presented no certificate; loop: the client is this gateway).",
    ),
    (
        INBOUND_HTTP_LOCAL_RATELIMIT,
        "Inbound HTTP requests refused by the server's local rate limit (429 / gRPC RESOURCE_EXHAUSTED), by the bucket that had no token.",
    ),
    (
        TAP_REFUSED,
        "Connections to the tap server refused, by reason (no_certificate, wrong_identity, unknown_ca, ..., no_certificate_yet: this proxy has no certificate yet, handshake: any other TLS failure).",
    ),
    (
        TAP_EVENTS_DROPPED,
        "Tapped requests whose remaining tap events were dropped because the tap client's channel was full.",
    ),
    (
        TRACE_SPANS_EXPORTED,
        "Spans the OTLP collector accepted.",
    ),
    (
        TRACE_SPANS_DROPPED,
        "Spans not exported, by reason (queue_full: the export queue was full; export_failed: their batch's export failed; rejected: the collector refused them).",
    ),
    (
        TRACE_EXPORT_ERRORS,
        "Span exports (batches) that failed: the collector was unreachable, answered an error or did not answer in time.",
    ),
    (
        TRACE_CONTEXT_MALFORMED,
        "Requests whose trace context headers (traceparent, b3, x-b3-*) were malformed and treated as absent, by direction.",
    ),
];
/// No labels.
pub const TRACE_SPANS_EXPORTED: &str = "trace_spans_exported_total";
/// Labels: `reason`.
pub const TRACE_SPANS_DROPPED: &str = "trace_spans_dropped_total";
/// No labels.
pub const TRACE_EXPORT_ERRORS: &str = "trace_export_errors_total";
/// Labels: `direction`.
pub const TRACE_CONTEXT_MALFORMED: &str = "trace_context_malformed_total";
/// Labels: `reason`.
pub const TAP_REFUSED: &str = "tap_refused_total";
/// No labels.
pub const TAP_EVENTS_DROPPED: &str = "tap_events_dropped_total";
pub const TLS_HANDSHAKE_ERRORS: &str = "tls_handshake_errors_total";
/// Labels: `direction`, `limit` (`max_connections`, `header_size`, `idle_timeout`,
/// `http2_flood`). Named like `tls_handshake_errors_total`: a plain counter per direction.
pub const CONNECTIONS_LIMITED: &str = "connections_limited_total";
/// Labels: the common inbound ones, `srv_*`, `authz_*`.
pub const INBOUND_TCP_AUTHZ_ALLOW: &str = "inbound_tcp_authz_allow_total";
/// Labels: the common inbound ones, `srv_*`.
pub const INBOUND_TCP_AUTHZ_DENY: &str = "inbound_tcp_authz_deny_total";
/// Labels: the common inbound ones, `srv_*`, `route_*`, `authz_*`.
pub const INBOUND_HTTP_AUTHZ_ALLOW: &str = "inbound_http_authz_allow_total";
/// Labels: the common inbound ones, `srv_*`, `route_*`.
pub const INBOUND_HTTP_AUTHZ_DENY: &str = "inbound_http_authz_deny_total";
/// Labels: `direction`, `target_addr` (the connection's target: `ip:port`, or `host:port` for a
/// named upstream target), `parent_{group,kind,namespace,name,port}`,
/// `route_{group,kind,namespace,name}` (empty when no route took the connection). Named after
/// `inbound_tcp_authz_deny_total`.
pub const OUTBOUND_TCP_FORBIDDEN: &str = "outbound_tcp_forbidden_total";
/// Labels: the common inbound ones, `reason`. Named after `inbound_tcp_authz_deny_total`.
pub const INBOUND_GATEWAY_REFUSED: &str = "inbound_gateway_refused_total";
/// Labels: the common inbound ones, `srv_*`, `ratelimit_{group,kind,name,scope}`.
pub const INBOUND_HTTP_LOCAL_RATELIMIT: &str = "inbound_http_local_ratelimit_rate_limited_total";

/// One series of a [`COUNTER_FAMILIES`] family: labels rendered once, counted with one atomic
/// add (the request path keeps handles instead of rendering labels per request).
#[derive(Clone, Debug)]
pub struct Counter(Arc<CounterCell>);

impl Counter {
    pub fn inc(&self) {
        self.0.value.fetch_add(1, Relaxed);
    }

    pub fn add(&self, n: u64) {
        self.0.value.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.value.load(Relaxed)
    }
}

/// Certificate state (rendered only once identity is enabled).
#[derive(Default)]
struct IdentityStats {
    enabled: std::sync::atomic::AtomicBool,
    expiration_unix: AtomicU64,
    refresh_success: AtomicU64,
    refresh_failure: AtomicU64,
    /// Anchors in force (their fingerprints), and reloads of the anchors file by result.
    trust_anchors: Mutex<Vec<String>>,
    anchors_reload_success: AtomicU64,
    anchors_reload_failure: AtomicU64,
}

/// HTTP metrics for one label set: a cheap handle (an `Arc` of the shared counters).
#[derive(Clone)]
pub struct HttpMetrics(Arc<HttpStats>);

#[derive(Default)]
struct HttpStats {
    requests: AtomicU64,
    responses: Mutex<BTreeMap<ResponseKey, u64>>,
    latency: Mutex<BTreeMap<u16, Histogram>>,
    idle: Idle,
}

impl HttpStats {
    /// Changes whenever a request or a response is recorded (for idle expiry).
    fn fingerprint(&self) -> u64 {
        let responses = lock(&self.responses)
            .values()
            .fold(0u64, |acc, n| acc.wrapping_add(*n));
        self.requests.load(Relaxed).wrapping_add(responses)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ResponseKey {
    status: u16,
    grpc_status: Option<i32>,
    failed: bool,
}

/// A millisecond histogram over [`LATENCY_BUCKETS_MS`] (recorded under its series' lock).
#[derive(Clone, Default)]
struct Histogram {
    /// Non-cumulative counts per bucket, the last one is `+Inf`.
    buckets: [u64; LATENCY_BUCKETS_MS.len() + 1],
    sum_us: u64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let ms = d.as_secs_f64() * 1000.0;
        let idx = LATENCY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b as f64)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[idx] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.count += 1;
    }

    /// `NAME_bucket{labels,le}`, `NAME_sum`, `NAME_count`; `labels` rendered once by the caller
    /// (label rendering is most of a scrape's cost), `le` last.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative += n;
            let _ = match LATENCY_BUCKETS_MS.get(i) {
                Some(le) => writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}"),
                None => writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}"),
            };
        }
        let sum_ms = self.sum_us as f64 / 1000.0;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum_ms}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Poisoning only means another thread panicked mid-update of a counter map; the data is
/// still usable for metrics.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// A registry whose idle series are dropped after `retain_idle`
    /// (`WEFT_PROXY_METRICS_RETAIN_IDLE`).
    pub fn with_retain_idle(retain_idle: Duration) -> Metrics {
        Metrics {
            inner: Arc::new(Registry {
                routes: route::Registry::default(),
                http: Mutex::default(),
                tcp: Mutex::default(),
                identity: IdentityStats::default(),
                counters: Mutex::default(),
                balancers: balancer::Balancers::default(),
                detections: detect::Detections::default(),
                retain_idle,
            }),
        }
    }

    /// How long idle series are kept.
    pub fn retain_idle(&self) -> Duration {
        self.inner.retain_idle
    }

    /// Drops the HTTP, TCP and counter series that nothing but the registry holds and that have
    /// not changed for the retention. One lock per family and per series; called by every
    /// scrape and periodically (`runtime`), never on the data path.
    pub fn sweep(&self) {
        let now = Instant::now();
        let retain = self.inner.retain_idle;
        lock(&self.inner.http).retain(|_, h| {
            let held = Arc::strong_count(h) > 1;
            !h.idle.expired(held, h.fingerprint(), now, retain)
        });
        lock(&self.inner.tcp).retain(|_, t| {
            let held = Arc::strong_count(t) > 1;
            !t.idle.expired(held, t.fingerprint(), now, retain)
        });
        lock(&self.inner.counters).retain(|_, c| {
            let held = Arc::strong_count(c) > 1;
            !c.idle.expired(held, c.value.load(Relaxed), now, retain)
        });
    }

    /// The number of HTTP, TCP and counter series in the registry.
    pub fn series(&self) -> usize {
        let http = lock(&self.inner.http).len();
        let tcp = lock(&self.inner.tcp).len();
        http + tcp + lock(&self.inner.counters).len()
    }

    /// How one accepted connection's protocol was decided, and how long that waited
    /// (`protocol_detection_*`).
    pub fn detected(&self, direction: Direction, result: DetectResult, waited: Duration) {
        self.inner.detections.record(direction, result, waited);
    }

    #[cfg(test)]
    pub fn detections(&self, direction: Direction, result: DetectResult) -> u64 {
        self.inner.detections.count(direction, result)
    }

    /// The route families ([`route`]).
    pub fn routes(&self) -> &route::Registry {
        &self.inner.routes
    }

    /// The HTTP handle for a label set (created on first use).
    pub fn http(&self, labels: &Labels) -> HttpMetrics {
        let mut map = lock(&self.inner.http);
        // Looked up before `entry`, which takes its key by value: a clone of the labels (an
        // authority string, a few reference counts) per request for a series that exists.
        if let Some(stats) = map.get(labels) {
            return HttpMetrics(stats.clone());
        }
        HttpMetrics(map.entry(labels.clone()).or_default().clone())
    }

    /// A TCP connection opened (`peer="src"`: accepted; `peer="dst"`: opened by the proxy).
    /// The returned guard counts the close when dropped.
    pub fn tcp_open(&self, labels: &Labels, peer: Peer) -> TcpConnMetrics {
        let stats = lock(&self.inner.tcp)
            .entry((labels.clone(), peer))
            .or_default()
            .clone();
        TcpConnMetrics::open(stats)
    }

    /// `family{labels..., extra...} += 1` for one of [`COUNTER_FAMILIES`]; `labels` renders the
    /// common labels (authority omitted) when given.
    pub fn count(&self, family: &'static str, labels: Option<&Labels>, extra: &[(&str, &str)]) {
        self.counter(family, labels, extra).inc();
    }

    /// The handle of one series of [`Metrics::count`] (created at 0 on first use).
    pub fn counter(
        &self,
        family: &'static str,
        labels: Option<&Labels>,
        extra: &[(&str, &str)],
    ) -> Counter {
        let rendered = match labels {
            Some(l) => {
                let l = Labels {
                    authority: None,
                    ..l.clone()
                };
                render_labels(&l, extra)
            }
            None => render_pairs(
                extra
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string())),
            ),
        };
        Counter(
            lock(&self.inner.counters)
                .entry((family, rendered))
                .or_default()
                .clone(),
        )
    }

    /// The value of one counter of [`Metrics::count`] summed over label sets containing every
    /// pair of `with`.
    #[cfg(test)]
    pub fn counter_sum(&self, family: &str, with: &[(&str, &str)]) -> u64 {
        lock(&self.inner.counters)
            .iter()
            .filter(|((f, l), _)| {
                *f == family
                    && with
                        .iter()
                        .all(|(k, v)| l.contains(&format!("{k}=\"{}\"", escape(v))))
            })
            .map(|(_, n)| n.value.load(Relaxed))
            .sum()
    }

    /// Identity is on: render the `identity_*` families from now on.
    pub fn identity_enabled(&self) {
        self.inner.identity.enabled.store(true, Relaxed);
    }

    /// A certificate was obtained; it expires at `expiration_unix` (seconds).
    pub fn identity_refreshed(&self, expiration_unix: u64) {
        let id = &self.inner.identity;
        id.expiration_unix.store(expiration_unix, Relaxed);
        id.refresh_success.fetch_add(1, Relaxed);
    }

    /// A Certify attempt failed (the current certificate, if any, stays in use).
    pub fn identity_refresh_failed(&self) {
        self.inner.identity.refresh_failure.fetch_add(1, Relaxed);
    }

    /// These trust anchors (`sha256:HEX` fingerprints) are in force.
    pub fn identity_trust_anchors(&self, fingerprints: &[String]) {
        *lock(&self.inner.identity.trust_anchors) = fingerprints.to_vec();
    }

    /// The trust anchors file changed and was loaded (`true`) or refused (`false`).
    pub fn identity_trust_anchors_reload(&self, ok: bool) {
        let id = &self.inner.identity;
        let n = if ok {
            &id.anchors_reload_success
        } else {
            &id.anchors_reload_failure
        };
        n.fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        self.sweep();
        let mut out = String::new();
        let http: Vec<(Labels, Arc<HttpStats>)> = lock(&self.inner.http)
            .iter()
            .map(|(l, h)| (l.clone(), h.clone()))
            .collect();
        let tcp: Vec<((Labels, Peer), Arc<tcp::TcpStats>)> = lock(&self.inner.tcp)
            .iter()
            .map(|(l, t)| (l.clone(), t.clone()))
            .collect();

        header(&mut out, "request_total", "counter", "Total HTTP requests.");
        for (labels, h) in &http {
            let l = render_labels(labels, &[]);
            sample(&mut out, "request_total", &l, h.requests.load(Relaxed));
        }

        header(
            &mut out,
            "response_total",
            "counter",
            "Total HTTP responses.",
        );
        for (labels, h) in &http {
            for (key, n) in lock(&h.responses).iter() {
                let status = key.status.to_string();
                let class = if key.failed { "failure" } else { "success" };
                let grpc = key.grpc_status.map(|g| g.to_string());
                let mut extra = vec![("status_code", status.as_str()), ("classification", class)];
                if let Some(g) = &grpc {
                    extra.push(("grpc_status", g.as_str()));
                }
                sample(
                    &mut out,
                    "response_total",
                    &render_labels(labels, &extra),
                    *n,
                );
            }
        }

        header(
            &mut out,
            "response_latency_ms",
            "histogram",
            "Time from request start to response headers, in milliseconds.",
        );
        for (labels, h) in &http {
            for (status, hist) in lock(&h.latency).iter() {
                let status = status.to_string();
                let l = render_labels(labels, &[("status_code", status.as_str())]);
                hist.render(&mut out, "response_latency_ms", &l);
            }
        }

        tcp::render(&mut out, &tcp);

        let id = &self.inner.identity;
        if id.enabled.load(Relaxed) {
            header(
                &mut out,
                "identity_cert_expiration_timestamp_seconds",
                "gauge",
                "Expiry of the current certificate, Unix seconds (0 before the first).",
            );
            let _ = writeln!(
                out,
                "identity_cert_expiration_timestamp_seconds {}",
                id.expiration_unix.load(Relaxed)
            );
            header(
                &mut out,
                "identity_cert_refresh_total",
                "counter",
                "Certify attempts by result.",
            );
            for (result, n) in [
                ("success", &id.refresh_success),
                ("failure", &id.refresh_failure),
            ] {
                let l = format!("result=\"{result}\"");
                sample(&mut out, "identity_cert_refresh_total", &l, n.load(Relaxed));
            }
            let anchors = lock(&id.trust_anchors).clone();
            header(
                &mut out,
                "identity_trust_anchors",
                "gauge",
                "Trust anchors in force (2 while a rotation distributes old + new).",
            );
            let _ = writeln!(out, "identity_trust_anchors {}", anchors.len());
            header(
                &mut out,
                "identity_trust_anchor_info",
                "gauge",
                "1 per trust anchor in force, labelled with its SHA-256 fingerprint.",
            );
            for fingerprint in &anchors {
                let _ = writeln!(
                    out,
                    "identity_trust_anchor_info{{fingerprint=\"{}\"}} 1",
                    escape(fingerprint)
                );
            }
            header(
                &mut out,
                "identity_trust_anchors_reload_total",
                "counter",
                "Changes of the trust anchors file by result (a failure keeps the anchors in force).",
            );
            for (result, n) in [
                ("success", &id.anchors_reload_success),
                ("failure", &id.anchors_reload_failure),
            ] {
                let l = format!("result=\"{result}\"");
                sample(
                    &mut out,
                    "identity_trust_anchors_reload_total",
                    &l,
                    n.load(Relaxed),
                );
            }
        }

        let counters: Vec<((&'static str, String), u64)> = lock(&self.inner.counters)
            .iter()
            .map(|(k, v)| (k.clone(), v.value.load(Relaxed)))
            .collect();
        for (family, help) in COUNTER_FAMILIES {
            let mut samples = counters
                .iter()
                .filter(|((f, _), _)| *f == family)
                .peekable();
            if samples.peek().is_none() {
                continue;
            }
            header(&mut out, family, "counter", help);
            for ((_, l), n) in samples {
                sample(&mut out, family, l, *n);
            }
        }

        self.inner.detections.render(&mut out);
        self.inner.routes.render(&mut out);
        balancer::render(&mut out, &self.inner.balancers);
        render_process(&mut out);
        out
    }
}

impl HttpMetrics {
    /// `request_total += 1`.
    pub fn request(&self) {
        self.0.requests.fetch_add(1, Relaxed);
    }

    /// One finished response (at end of stream, or on a stream error): counts `response_total`
    /// and observes `latency` (request headers → response headers) in `response_latency_ms`.
    /// Failure = status >= 500, a non-zero `grpc_status`, or `stream_error`.
    pub fn response(
        &self,
        status: u16,
        grpc_status: Option<i32>,
        stream_error: bool,
        latency: Duration,
    ) {
        let failed = status >= 500 || grpc_status.is_some_and(|g| g != 0) || stream_error;
        let key = ResponseKey {
            status,
            grpc_status,
            failed,
        };
        *lock(&self.0.responses).entry(key).or_default() += 1;

        lock(&self.0.latency)
            .entry(status)
            .or_default()
            .observe(latency);
    }

    pub fn requests(&self) -> u64 {
        self.0.requests.load(Relaxed)
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: u64) {
    let _ = writeln!(out, "{name}{{{labels}}} {value}");
}

fn render_labels(l: &Labels, extra: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    pairs.push(("direction".into(), l.direction.label().into()));
    if let Some(a) = &l.authority {
        pairs.push(("authority".into(), a.clone()));
    }
    pairs.push(("target_addr".into(), l.target_addr.to_string()));
    match &l.tls {
        TlsLabel::Established { peer_id } => {
            pairs.push(("tls".into(), "true".into()));
            if let Some(id) = peer_id {
                let key = match l.direction {
                    Direction::Inbound => "client_id",
                    Direction::Outbound => "server_id",
                };
                pairs.push((key.into(), id.to_string()));
            }
        }
        TlsLabel::NoIdentity(reason) => {
            pairs.push(("tls".into(), "no_identity".into()));
            pairs.push(("no_tls_reason".into(), (*reason).into()));
        }
        TlsLabel::Passthru => pairs.push(("tls".into(), "opaque".into())),
    }
    for (k, v) in l.dst.iter() {
        pairs.push((format!("dst_{}", sanitize_name(k)), v.clone()));
    }
    for (k, v) in extra {
        pairs.push(((*k).into(), (*v).into()));
    }
    render_pairs(pairs)
}

fn render_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> String {
    let mut s = String::new();
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"{}\"", escape(&v));
    }
    s
}

/// Label names allow `[a-zA-Z0-9_]` only.
fn sanitize_name(k: &str) -> String {
    k.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `process_*` gauges from `/proc/self`; silently absent where `/proc` is not available.
fn render_process(out: &mut String) {
    let (ticks, page) = crate::sys::clock_ticks_and_page_size();
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the parenthesised command name (which may contain spaces), starting at field 3.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let btime = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    let page = if page > 0 { page as u64 } else { 4096 };

    if let (Some(start), Some(btime)) = (field(22), btime) {
        header(
            out,
            "process_start_time_seconds",
            "gauge",
            "Time the process started, in seconds since the Unix epoch.",
        );
        let _ = writeln!(
            out,
            "process_start_time_seconds {}",
            btime as f64 + start as f64 / ticks
        );
    }
    if let (Some(u), Some(s)) = (field(14), field(15)) {
        header(
            out,
            "process_cpu_seconds_total",
            "counter",
            "CPU time used, in seconds.",
        );
        let _ = writeln!(out, "process_cpu_seconds_total {}", (u + s) as f64 / ticks);
    }
    if let Some(v) = field(23) {
        header(
            out,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size.",
        );
        let _ = writeln!(out, "process_virtual_memory_bytes {v}");
    }
    if let Some(rss) = field(24) {
        header(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size.",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {}", rss * page);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        header(out, "process_open_fds", "gauge", "Open file descriptors.");
        let _ = writeln!(out, "process_open_fds {}", fds.count());
    }
}

#[cfg(test)]
mod tests;
