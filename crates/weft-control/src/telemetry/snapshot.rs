//! One scrape of a proxy folded into what the API needs (not the raw text): inbound requests,
//! successes and latency histogram, inbound TCP connections and bytes, and per destination
//! Service the same request figures of the outbound side (`/v1/stat`); the traffic per
//! destination workload and per client identity ([`edges`](super::edges), `/v1/edges`); the
//! figures per route ([`routes`](super::routes), `/v1/routes`). Cumulative, like the counters
//! it comes from; [`Snapshot::since`] turns two of them into what happened in between.

use super::edges::{self, since_by_key, Clients, Edges, Traffic};
use super::routes::{self, Routes};
use super::stats::{self, Sample, Stats};

/// A destination Service: (`dst_namespace`, `dst_service`).
pub type Dst = (String, String);

/// A proxy's counters at one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// `process_start_time_seconds`: another value in a later scrape means another process.
    pub started: Option<f64>,
    /// `response_total` / `response_latency_ms_bucket` with `direction="inbound"`.
    pub inbound: Stats,
    /// `tcp_*{direction="inbound",peer="src"}`: the connections clients opened to this proxy.
    pub tcp: Tcp,
    /// `direction="outbound"` responses per destination Service, sorted by [`Dst`] (series
    /// without `dst_namespace` and `dst_service`, such as calls to bare IPs, are not kept).
    pub outbound: Vec<(Dst, Stats)>,
    /// Outbound traffic per destination workload and TLS ([`edges::fold`]).
    pub edges: Edges,
    /// Inbound traffic per client identity ([`edges::fold`]).
    pub clients: Clients,
    /// Outbound figures per route of a Service, after retries ([`routes::fold`]).
    pub routes: Routes,
}

/// Inbound TCP figures: a gauge and two counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tcp {
    /// `tcp_open_connections` (now, not cumulative).
    pub open: f64,
    /// `tcp_read_bytes_total`: bytes received from clients.
    pub read_bytes: f64,
    /// `tcp_write_bytes_total`: bytes sent to clients.
    pub write_bytes: f64,
}

/// Which side of the proxy a response sample belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Inbound,
    Outbound(Dst),
}

impl Snapshot {
    /// Parses a `/metrics` text and folds it.
    pub fn from_text(text: &str) -> Snapshot {
        Snapshot::from_samples(&stats::parse(text))
    }

    /// Folds a scrape's samples, summing over every label not kept (status codes, endpoints,
    /// target addresses, TLS).
    pub fn from_samples(samples: &[Sample]) -> Snapshot {
        let mut sides = stats::fold(samples, &|s: &Sample| {
            if stats::is_route_sample(s) {
                // Route counters repeat what response_total counts (after retries): not mixed in.
                return None;
            }
            match s.label("direction")? {
                "inbound" => Some(Side::Inbound),
                "outbound" => Some(Side::Outbound((
                    s.label("dst_namespace")?.to_string(),
                    s.label("dst_service")?.to_string(),
                ))),
                _ => None,
            }
        });
        let mut inbound = sides.remove(&Side::Inbound).unwrap_or_default();
        inbound.buckets.shrink_to_fit();
        // `fold` yields keys in order, so the list is sorted for `outbound()`'s binary search.
        let mut outbound: Vec<(Dst, Stats)> = sides
            .into_iter()
            .filter_map(|(side, mut stats)| match side {
                Side::Outbound(dst) => {
                    stats.buckets.shrink_to_fit();
                    Some((dst, stats))
                }
                Side::Inbound => None,
            })
            .collect();
        outbound.shrink_to_fit();

        let mut tcp = Tcp::default();
        let mut started = None;
        for s in samples {
            let field = match s.name.as_str() {
                "process_start_time_seconds" => {
                    started = Some(s.value);
                    continue;
                }
                "tcp_open_connections" => &mut tcp.open,
                "tcp_read_bytes_total" => &mut tcp.read_bytes,
                "tcp_write_bytes_total" => &mut tcp.write_bytes,
                _ => continue,
            };
            if s.has_labels(&[("direction", "inbound"), ("peer", "src")]) {
                *field += s.value;
            }
        }
        let (mut edges, mut clients) = edges::fold(samples);
        edges.shrink_to_fit();
        clients.shrink_to_fit();
        let mut routes = routes::fold(samples);
        routes.shrink_to_fit();
        Snapshot {
            started,
            inbound,
            tcp,
            outbound,
            edges,
            clients,
            routes,
        }
    }

    /// The outbound figures of one destination Service.
    pub fn outbound(&self, namespace: &str, service: &str) -> Option<&Stats> {
        self.outbound
            .binary_search_by(|((ns, name), _)| {
                (ns.as_str(), name.as_str()).cmp(&(namespace, service))
            })
            .ok()
            .map(|i| &self.outbound[i].1)
    }

    /// What happened between `older` and `self`: counters subtracted (the open-connection gauge
    /// is `self`'s). Another process (`started` differs) means a restart in between: then
    /// `self`'s counters alone, as Prometheus' `rate` does; so does a counter that went down when
    /// the scrapes do not say which process they came from. Within one known process a sum that
    /// went down lost series the proxy expired as idle: that counts as nothing happening.
    pub fn since(&self, older: &Snapshot) -> Snapshot {
        let restarted = matches!((self.started, older.started), (Some(a), Some(b)) if a != b);
        let same_process = matches!((self.started, older.started), (Some(a), Some(b)) if a == b);
        let empty = Snapshot::default();
        let older = if restarted { &empty } else { older };
        let counter = |newer: f64, older: f64| match (newer < older, same_process) {
            (true, true) => 0.0,
            (true, false) => newer,
            (false, _) => newer - older,
        };
        let stats: fn(&Stats, &Stats) -> Stats = if same_process {
            Stats::since_same_process
        } else {
            Stats::since
        };
        let traffic: fn(&Traffic, &Traffic) -> Traffic = if same_process {
            Traffic::since_same_process
        } else {
            Traffic::since
        };
        let none = Stats::default();
        Snapshot {
            started: self.started,
            inbound: stats(&self.inbound, &older.inbound),
            tcp: Tcp {
                open: self.tcp.open,
                read_bytes: counter(self.tcp.read_bytes, older.tcp.read_bytes),
                write_bytes: counter(self.tcp.write_bytes, older.tcp.write_bytes),
            },
            outbound: self
                .outbound
                .iter()
                .map(|((ns, name), s)| {
                    let before = older.outbound(ns, name).unwrap_or(&none);
                    ((ns.clone(), name.clone()), stats(s, before))
                })
                .collect(),
            edges: since_by_key(&self.edges, &older.edges, traffic),
            clients: since_by_key(&self.clients, &older.clients, traffic),
            routes: since_by_key(&self.routes, &older.routes, stats),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::telemetry::stats::Le;

    /// What a weft-proxy serves at `/metrics` (`crates/weft-proxy/src/metrics.rs` renders this
    /// shape: label order, `le` values, the TCP families with `peer`), cut down to two latency
    /// series per side: web's proxy, which served 10 requests (one failed) and called books
    /// (gRPC, mTLS, one UNAVAILABLE) and an address without discovery.
    pub(crate) const WEB_PROXY: &str = r#"# HELP request_total Total HTTP requests.
# TYPE request_total counter
request_total{direction="inbound",authority="web.demo.svc.cluster.local:8080",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote"} 10
request_total{direction="outbound",authority="books.demo.svc.cluster.local:9090",target_addr="127.0.0.1:41001",tls="true",server_id="books.demo.serviceaccount.identity.weft.cluster.local",dst_namespace="demo",dst_service="books",dst_external_workload="books"} 8
# HELP response_total Total HTTP responses.
# TYPE response_total counter
response_total{direction="inbound",authority="web.demo.svc.cluster.local:8080",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",status_code="200",classification="success"} 9
response_total{direction="inbound",authority="web.demo.svc.cluster.local:8080",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",status_code="502",classification="failure"} 1
response_total{direction="outbound",authority="books.demo.svc.cluster.local:9090",target_addr="127.0.0.1:41001",tls="true",server_id="books.demo.serviceaccount.identity.weft.cluster.local",dst_namespace="demo",dst_service="books",dst_external_workload="books",status_code="200",classification="success",grpc_status="0"} 7
response_total{direction="outbound",authority="books.demo.svc.cluster.local:9090",target_addr="127.0.0.1:41001",tls="true",server_id="books.demo.serviceaccount.identity.weft.cluster.local",dst_namespace="demo",dst_service="books",dst_external_workload="books",status_code="200",classification="failure",grpc_status="14"} 1
response_total{direction="outbound",authority="198.51.100.7:80",target_addr="198.51.100.7:80",tls="no_identity",no_tls_reason="not_provided_by_service_discovery",status_code="200",classification="success"} 4
# HELP response_latency_ms Time from request start to response headers, in milliseconds.
# TYPE response_latency_ms histogram
response_latency_ms_bucket{direction="inbound",authority="web.demo.svc.cluster.local:8080",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",status_code="200",le="1"} 2
response_latency_ms_bucket{direction="inbound",authority="web.demo.svc.cluster.local:8080",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",status_code="200",le="2"} 6
response_latency_ms_bucket{direction="inbound",authority="web.demo.svc.cluster.local:8080",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",status_code="200",le="3"} 9
response_latency_ms_bucket{direction="inbound",authority="web.demo.svc.cluster.local:8080",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",status_code="200",le="+Inf"} 9
response_latency_ms_sum{direction="inbound",authority="web.demo.svc.cluster.local:8080",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",status_code="200"} 17.25
response_latency_ms_count{direction="inbound",authority="web.demo.svc.cluster.local:8080",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",status_code="200"} 9
response_latency_ms_bucket{direction="inbound",authority="web.demo.svc.cluster.local:8080",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",status_code="502",le="1"} 0
response_latency_ms_bucket{direction="inbound",authority="web.demo.svc.cluster.local:8080",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",status_code="502",le="2"} 0
response_latency_ms_bucket{direction="inbound",authority="web.demo.svc.cluster.local:8080",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",status_code="502",le="3"} 0
response_latency_ms_bucket{direction="inbound",authority="web.demo.svc.cluster.local:8080",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",status_code="502",le="+Inf"} 1
response_latency_ms_bucket{direction="outbound",authority="books.demo.svc.cluster.local:9090",target_addr="127.0.0.1:41001",tls="true",server_id="books.demo.serviceaccount.identity.weft.cluster.local",dst_namespace="demo",dst_service="books",dst_external_workload="books",status_code="200",le="1"} 6
response_latency_ms_bucket{direction="outbound",authority="books.demo.svc.cluster.local:9090",target_addr="127.0.0.1:41001",tls="true",server_id="books.demo.serviceaccount.identity.weft.cluster.local",dst_namespace="demo",dst_service="books",dst_external_workload="books",status_code="200",le="2"} 8
response_latency_ms_bucket{direction="outbound",authority="books.demo.svc.cluster.local:9090",target_addr="127.0.0.1:41001",tls="true",server_id="books.demo.serviceaccount.identity.weft.cluster.local",dst_namespace="demo",dst_service="books",dst_external_workload="books",status_code="200",le="3"} 8
response_latency_ms_bucket{direction="outbound",authority="books.demo.svc.cluster.local:9090",target_addr="127.0.0.1:41001",tls="true",server_id="books.demo.serviceaccount.identity.weft.cluster.local",dst_namespace="demo",dst_service="books",dst_external_workload="books",status_code="200",le="+Inf"} 8
# HELP tcp_open_total Total TCP connections opened.
# TYPE tcp_open_total counter
tcp_open_total{direction="inbound",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",peer="src"} 4
tcp_open_total{direction="inbound",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",peer="dst"} 1
# HELP tcp_open_connections TCP connections currently open.
# TYPE tcp_open_connections gauge
tcp_open_connections{direction="inbound",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",peer="src"} 3
tcp_open_connections{direction="inbound",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",peer="dst"} 1
tcp_open_connections{direction="outbound",target_addr="127.0.0.1:41001",tls="true",server_id="books.demo.serviceaccount.identity.weft.cluster.local",dst_namespace="demo",dst_service="books",dst_external_workload="books",peer="dst"} 1
# HELP tcp_read_bytes_total Bytes read from peers.
# TYPE tcp_read_bytes_total counter
tcp_read_bytes_total{direction="inbound",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",peer="src"} 1200
tcp_read_bytes_total{direction="inbound",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",peer="dst"} 5000
# HELP tcp_write_bytes_total Bytes written to peers.
# TYPE tcp_write_bytes_total counter
tcp_write_bytes_total{direction="inbound",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",peer="src"} 5000
tcp_write_bytes_total{direction="inbound",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",peer="dst"} 1200
outbound_http_route_request_statuses_total{parent_group="core",parent_kind="Service",parent_namespace="demo",parent_name="books",parent_port="9090",parent_section_name="",route_group="",route_kind="default",route_namespace="",route_name="http",hostname="",http_status="200",error=""} 8
# HELP process_start_time_seconds Time the process started, Unix seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1700000000.25
process_open_fds 23
"#;

    #[test]
    fn a_proxy_scrape_folds_into_inbound_tcp_and_per_service_outbound() {
        let s = Snapshot::from_text(WEB_PROXY);
        assert_eq!(s.started, Some(1_700_000_000.25));
        assert_eq!((s.inbound.requests, s.inbound.successes), (10.0, 9.0));
        assert!(!s.inbound.tls);
        // Both status codes' histograms, summed bucket by bucket.
        let inbound: Vec<(f64, f64)> = s.inbound.buckets.iter().map(|(le, n)| (le.0, n)).collect();
        assert_eq!(
            inbound,
            [(1.0, 2.0), (2.0, 6.0), (3.0, 9.0), (f64::INFINITY, 10.0)]
        );
        // Only the clients' side of the connections (peer="src").
        assert_eq!(
            s.tcp,
            Tcp {
                open: 3.0,
                read_bytes: 1200.0,
                write_bytes: 5000.0
            }
        );
        // One destination Service: the call to a bare IP has no dst_* labels, and the route
        // counter does not count books twice.
        assert_eq!(s.outbound.len(), 1);
        let books = s.outbound("demo", "books").expect("books");
        assert_eq!(
            (books.requests, books.successes, books.tls),
            (8.0, 7.0, true)
        );
        assert_eq!(books.buckets[&Le(1.0)], 6.0);
        assert!(s.outbound("demo", "ratings").is_none());
    }

    #[test]
    fn a_proxy_scrape_folds_its_edges_clients_and_routes() {
        use crate::telemetry::edges::{EdgeKey, Tls};
        let s = Snapshot::from_text(WEB_PROXY);
        let books = EdgeKey {
            namespace: "demo".into(),
            workload: "books".into(),
            tls: Tls::Secured("books.demo.serviceaccount.identity.weft.cluster.local".into()),
            cluster: None,
        };
        assert_eq!(s.edges.len(), 1, "{:?}", s.edges);
        assert_eq!(s.edges[0].0, books);
        assert_eq!(s.edges[0].1.requests, 8.0);
        // Web's clients came in plaintext: 10 requests, 4 connections, 3 open.
        assert_eq!(
            s.clients,
            [(
                Tls::Plain("no_tls_from_remote".into()),
                Traffic {
                    requests: 10.0,
                    connections: 4.0,
                    open: 3.0
                }
            )]
        );
        assert_eq!(s.routes.len(), 1);
        let (route, stats) = &s.routes[0];
        assert_eq!(
            (route.service.as_str(), route.kind.as_str(), stats.requests),
            ("books", "default", 8.0)
        );
        // Another scrape 5 requests later: the window has those 5 on every view.
        let mut later = s.clone();
        later.edges[0].1.requests += 5.0;
        later.clients[0].1.requests += 5.0;
        later.routes[0].1.requests += 5.0;
        let d = later.since(&s);
        assert_eq!(d.edges[0].1.requests, 5.0);
        assert_eq!(d.edges[0].1.open, 1.0, "the gauge is the newer one");
        assert_eq!(d.clients[0].1.requests, 5.0);
        assert_eq!(d.routes[0].1.requests, 5.0);
    }

    /// The sizes the memory paragraph of `telemetry/mod.rs` counts with (entries inline; their
    /// strings and buckets on the heap besides).
    #[test]
    fn entries_are_as_small_as_the_docs_say() {
        use crate::telemetry::edges::{EdgeKey, Tls};
        use crate::telemetry::routes::RouteKey;
        use std::mem::size_of;
        assert!(
            size_of::<(EdgeKey, Traffic)>() <= 120,
            "{}",
            size_of::<(EdgeKey, Traffic)>()
        );
        assert!(
            size_of::<(Tls, Traffic)>() <= 56,
            "{}",
            size_of::<(Tls, Traffic)>()
        );
        assert!(
            size_of::<(RouteKey, Stats)>() <= 184,
            "{}",
            size_of::<(RouteKey, Stats)>()
        );
    }

    #[test]
    fn an_empty_or_foreign_text_is_an_empty_snapshot() {
        assert_eq!(Snapshot::from_text(""), Snapshot::default());
        let s = Snapshot::from_text("go_goroutines 12\nnot a metric line\n");
        assert_eq!(s, Snapshot::default());
    }

    fn snapshot(started: f64, requests: f64, read: f64, open: f64) -> Snapshot {
        let stats = Stats {
            requests,
            successes: requests,
            buckets: [(Le(10.0), requests), (Le(f64::INFINITY), requests)]
                .into_iter()
                .collect(),
            tls: false,
        };
        Snapshot {
            started: Some(started),
            inbound: stats.clone(),
            tcp: Tcp {
                open,
                read_bytes: read,
                write_bytes: 2.0 * read,
            },
            outbound: vec![(("demo".into(), "books".into()), stats)],
            ..Snapshot::default()
        }
    }

    #[test]
    fn since_subtracts_counters_and_keeps_the_newer_gauge() {
        let d = snapshot(1.0, 30.0, 300.0, 2.0).since(&snapshot(1.0, 10.0, 100.0, 5.0));
        assert_eq!(d.inbound.requests, 20.0);
        assert_eq!(d.inbound.buckets[&Le(10.0)], 20.0);
        assert_eq!(
            d.tcp,
            Tcp {
                open: 2.0,
                read_bytes: 200.0,
                write_bytes: 400.0
            }
        );
        assert_eq!(d.outbound("demo", "books").expect("books").requests, 20.0);
        // A destination first seen in the newer scrape counts whole.
        let mut newer = snapshot(1.0, 30.0, 300.0, 2.0);
        newer
            .outbound
            .push((("demo".into(), "ratings".into()), newer.inbound.clone()));
        let d = newer.since(&snapshot(1.0, 10.0, 100.0, 5.0));
        assert_eq!(
            d.outbound("demo", "ratings").expect("ratings").requests,
            30.0
        );
    }

    #[test]
    fn a_restart_counts_the_newer_scrape_alone() {
        // Another process: counters that happen to be higher are still not subtracted.
        let d = snapshot(2.0, 30.0, 300.0, 1.0).since(&snapshot(1.0, 10.0, 100.0, 1.0));
        assert_eq!(d.inbound.requests, 30.0);
        assert_eq!(d.tcp.read_bytes, 300.0);
        assert_eq!(d.outbound("demo", "books").expect("books").requests, 30.0);
        // Without a start time, counters that went down tell the same.
        let mut newer = snapshot(1.0, 4.0, 40.0, 1.0);
        let mut older = snapshot(1.0, 10.0, 100.0, 1.0);
        newer.started = None;
        older.started = None;
        let d = newer.since(&older);
        assert_eq!((d.inbound.requests, d.tcp.read_bytes), (4.0, 40.0));
    }

    #[test]
    fn within_one_process_a_sum_that_went_down_lost_expired_series() {
        // The same process (same start time) whose sums went down: series it expired as idle
        // left the sums. Nothing happened, rather than everything since the start.
        let d = snapshot(1.0, 25.0, 250.0, 1.0).since(&snapshot(1.0, 30.0, 300.0, 2.0));
        assert_eq!(d.inbound.requests, 0.0);
        assert_eq!(d.inbound.successes, 0.0);
        assert_eq!(d.tcp.read_bytes, 0.0);
        assert_eq!(d.tcp.open, 1.0);
        assert_eq!(d.outbound("demo", "books").expect("books").requests, 0.0);
    }
}
