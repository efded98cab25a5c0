//! What `weft demo` shows: scraped proxy metrics turned into rows (per service inbound, per edge
//! outbound), a sliding window for the live table, the table text, and the final JSON summary.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use weft_control::telemetry::stats::{self, Sample, Stats};

/// What one row of the table is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Row {
    /// Requests a service's proxy received (`direction="inbound"` on that workload's proxy).
    Service(String),
    /// Requests a workload sent to a service (`direction="outbound"`, by `dst_service`): every
    /// attempt, retries included.
    Edge { src: String, dst: String },
    /// Requests a workload sent on a route of a service (`outbound_{http,grpc}_route_*`, by
    /// `parent_name` and `route_name`): each request once, as the client saw it after retries.
    Route {
        src: String,
        service: String,
        route: String,
    },
}

/// Folds one proxy's scrape into rows: its inbound traffic as the service `workload` serves, and
/// its outbound traffic as edges from `workload`.
pub fn rows(workload: &str, samples: &[Sample]) -> BTreeMap<Row, Stats> {
    stats::fold(
        samples,
        &|sample: &Sample| match sample.label("direction") {
            _ if stats::is_route_sample(sample) => Some(Row::Route {
                src: workload.to_string(),
                service: sample.label("parent_name")?.to_string(),
                route: sample.label("route_name").unwrap_or_default().to_string(),
            }),
            Some("inbound") => Some(Row::Service(workload.to_string())),
            Some("outbound") => Some(Row::Edge {
                src: workload.to_string(),
                dst: destination(sample),
            }),
            _ => None,
        },
    )
}

/// The service an outbound sample went to: discovery's `dst_service` label, else the first label
/// of the request authority, else the target address.
fn destination(sample: &Sample) -> String {
    if let Some(service) = sample.label("dst_service") {
        return service.to_string();
    }
    if let Some(authority) = sample.label("authority").filter(|a| !a.is_empty()) {
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host);
        return host.split('.').next().unwrap_or(host).to_string();
    }
    sample.label("target_addr").unwrap_or("unknown").to_string()
}

/// Cumulative snapshots over the last `span`, to compute rates over a sliding window.
#[derive(Debug)]
pub struct Window {
    span: Duration,
    snapshots: VecDeque<(Instant, BTreeMap<Row, Stats>)>,
}

/// One row over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    pub row: Row,
    pub rps: f64,
    pub success_rate: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

impl Window {
    /// Starts with an empty baseline at `start` (before any traffic).
    pub fn new(span: Duration, start: Instant) -> Self {
        Window {
            span,
            snapshots: VecDeque::from([(start, BTreeMap::new())]),
        }
    }

    /// Records a cumulative snapshot taken at `now`, forgetting those that fell out of the
    /// window (always keeping one older baseline).
    pub fn push(&mut self, now: Instant, snapshot: BTreeMap<Row, Stats>) {
        self.snapshots.push_back((now, snapshot));
        while self.snapshots.len() > 2
            && self
                .snapshots
                .get(1)
                .is_some_and(|(t, _)| now.duration_since(*t) >= self.span)
        {
            self.snapshots.pop_front();
        }
    }

    /// Rates between the oldest kept snapshot and the latest one.
    pub fn rates(&self) -> Vec<Rate> {
        let (Some((old_t, old)), Some((new_t, new))) =
            (self.snapshots.front(), self.snapshots.back())
        else {
            return Vec::new();
        };
        let seconds = new_t.duration_since(*old_t).as_secs_f64();
        let empty = Stats::default();
        new.iter()
            .map(|(row, stats)| {
                // The demo's sidecars never restart (the demo stops when one exits): a sum that
                // went down lost series the proxy expired as idle, not a restart.
                let window = stats.since_same_process(old.get(row).unwrap_or(&empty));
                Rate {
                    row: row.clone(),
                    rps: if seconds > 0.0 {
                        window.requests / seconds
                    } else {
                        0.0
                    },
                    success_rate: window.success_rate(),
                    p50: window.quantile(0.50),
                    p95: window.quantile(0.95),
                    p99: window.quantile(0.99),
                }
            })
            .collect()
    }
}

fn ms(value: Option<f64>) -> String {
    match value {
        Some(v) if v < 10.0 => format!("{v:.1}ms"),
        Some(v) => format!("{v:.0}ms"),
        None => "-".to_string(),
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{:.2}%", v * 100.0))
}

/// The narrowest the name column gets; a longer name (a route across clusters) widens it.
const NAME_WIDTH: usize = 34;

impl Row {
    /// The row's name in the live table.
    fn label(&self) -> String {
        match self {
            Row::Service(name) => name.clone(),
            Row::Edge { src, dst } => format!("{src} -> {dst}"),
            Row::Route {
                src,
                service,
                route,
            } => format!("{src} -> {service} [{route}]"),
        }
    }
}

/// The live table: services, then edges (every attempt), then routes (after retries).
pub fn table(rates: &[Rate], header: &str) -> String {
    let width = rates
        .iter()
        .map(|r| r.row.label().chars().count())
        .fold(NAME_WIDTH, usize::max);
    let mut out = format!("{header}\n\n");
    let line = |rate: &Rate| {
        format!(
            "{:<width$} {:>7.1} {:>8} {:>8} {:>8} {:>8}\n",
            rate.row.label(),
            rate.rps,
            percent(rate.success_rate),
            ms(rate.p50),
            ms(rate.p95),
            ms(rate.p99)
        )
    };
    let columns = format!(
        "{:>7} {:>8} {:>8} {:>8} {:>8}\n",
        "RPS", "SUCCESS", "P50", "P95", "P99"
    );
    out.push_str(&format!("{:<width$} {columns}", "SERVICE (inbound)"));
    for rate in rates {
        if let Row::Service(_) = &rate.row {
            out.push_str(&line(rate));
        }
    }
    out.push_str(&format!(
        "\n{:<width$} {columns}",
        "EDGE (outbound, every attempt)"
    ));
    for rate in rates {
        if let Row::Edge { .. } = &rate.row {
            out.push_str(&line(rate));
        }
    }
    out.push_str(&format!(
        "\n{:<width$} {:>7} {:>8}\n",
        "ROUTE (outbound, after retries)", "RPS", "SUCCESS"
    ));
    for rate in rates {
        // A route that took no request in the window (replaced by a newer policy) is left out.
        if let Row::Route { .. } = &rate.row {
            if rate.rps > 0.0 {
                out.push_str(&format!(
                    "{:<width$} {:>7.1} {:>8}\n",
                    rate.row.label(),
                    rate.rps,
                    percent(rate.success_rate)
                ));
            }
        }
    }
    out
}

/// The `--json` summary (documented in docs/demo.md), cumulative over the whole run.
#[derive(Debug, Serialize, PartialEq)]
pub struct Summary {
    pub edges: Vec<EdgeSummary>,
    pub routes: Vec<RouteSummary>,
    pub proxies: Vec<ProxySummary>,
}

/// One route of a service as a workload's proxy saw it (after retries).
#[derive(Debug, Serialize, PartialEq)]
pub struct RouteSummary {
    pub src: String,
    pub service: String,
    pub route: String,
    pub requests: u64,
    pub success_rate: Option<f64>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct EdgeSummary {
    pub src: String,
    pub dst: String,
    pub requests: u64,
    pub success_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub tls: bool,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ProxySummary {
    pub workload: String,
    pub admin: SocketAddr,
}

pub fn summary(cumulative: &BTreeMap<Row, Stats>, proxies: Vec<ProxySummary>) -> Summary {
    let edges = cumulative
        .iter()
        .filter_map(|(row, stats)| match row {
            Row::Edge { src, dst } => Some(EdgeSummary {
                src: src.clone(),
                dst: dst.clone(),
                // Counters are whole numbers; the float only comes from the text format.
                requests: stats.requests.max(0.0).round() as u64,
                success_rate: stats.success_rate(),
                p50_ms: stats.quantile(0.50),
                p99_ms: stats.quantile(0.99),
                tls: stats.tls,
            }),
            Row::Service(_) | Row::Route { .. } => None,
        })
        .collect();
    let routes = cumulative
        .iter()
        .filter_map(|(row, stats)| match row {
            Row::Route {
                src,
                service,
                route,
            } => Some(RouteSummary {
                src: src.clone(),
                service: service.clone(),
                route: route.clone(),
                requests: stats.requests.max(0.0).round() as u64,
                success_rate: stats.success_rate(),
            }),
            Row::Service(_) | Row::Edge { .. } => None,
        })
        .collect();
    Summary {
        edges,
        routes,
        proxies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_control::telemetry::stats::parse;

    const WEB_PROXY: &str = r#"
response_total{direction="inbound",authority="web.demo.svc.cluster.local:8080",status_code="200",classification="success",tls="no_identity"} 19
response_total{direction="inbound",authority="web.demo.svc.cluster.local:8080",status_code="502",classification="failure",tls="no_identity"} 1
response_total{direction="outbound",dst_service="books",status_code="200",classification="success",grpc_status="0",tls="no_identity"} 20
response_total{direction="outbound",authority="ratings.demo.svc.cluster.local:8080",status_code="200",classification="success",tls="no_identity"} 19
response_latency_ms_bucket{direction="outbound",dst_service="books",status_code="200",le="1"} 10
response_latency_ms_bucket{direction="outbound",dst_service="books",status_code="200",le="2"} 20
response_latency_ms_bucket{direction="outbound",dst_service="books",status_code="200",le="+Inf"} 20
"#;

    fn edge(src: &str, dst: &str) -> Row {
        Row::Edge {
            src: src.into(),
            dst: dst.into(),
        }
    }

    #[test]
    fn rows_split_inbound_service_and_outbound_edges() {
        let rows = rows("web", &parse(WEB_PROXY));
        assert_eq!(rows[&Row::Service("web".into())].requests, 20.0);
        assert_eq!(rows[&Row::Service("web".into())].successes, 19.0);
        assert_eq!(rows[&edge("web", "books")].requests, 20.0);
        // Without dst_service the authority names the service.
        assert_eq!(rows[&edge("web", "ratings")].requests, 19.0);
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn route_rows_count_requests_after_retries() {
        let labels = |route: &str| {
            format!(
                "parent_group=\"core\",parent_kind=\"Service\",parent_namespace=\"demo\",\
                 parent_name=\"ratings\",parent_port=\"8080\",parent_section_name=\"\",\
                 route_group=\"gateway.networking.k8s.io\",route_kind=\"HTTPRoute\",\
                 route_namespace=\"demo\",route_name=\"{route}\""
            )
        };
        let l = labels("ratings");
        let text = format!(
            "outbound_http_route_request_statuses_total{{{l},http_status=\"200\",error=\"\"}} 98\n\
             outbound_http_route_request_statuses_total{{{l},http_status=\"500\",error=\"\"}} 1\n\
             outbound_http_route_request_statuses_total{{{l},http_status=\"\",error=\"RESPONSE_HEADERS_TIMEOUT\"}} 1\n\
             outbound_http_route_request_duration_seconds_bucket{{{l},le=\"0.05\"}} 100\n\
             outbound_grpc_route_request_statuses_total{{{},grpc_status=\"0\",error=\"\"}} 7\n\
             outbound_grpc_route_request_statuses_total{{{},grpc_status=\"14\",error=\"\"}} 3\n",
            labels("books-rpc"),
            labels("books-rpc"),
        );
        let rows = rows("web", &parse(&text));
        let route = |name: &str| Row::Route {
            src: "web".into(),
            service: "ratings".into(),
            route: name.into(),
        };
        let ratings = &rows[&route("ratings")];
        assert_eq!((ratings.requests, ratings.successes), (100.0, 98.0));
        // The route histogram's buckets are too coarse for percentiles: not read.
        assert!(ratings.buckets.is_empty());
        let grpc = &rows[&route("books-rpc")];
        assert_eq!((grpc.requests, grpc.successes), (10.0, 7.0));
        assert_eq!(rows.len(), 2);

        let rates = vec![Rate {
            row: route("ratings"),
            rps: 9.8,
            success_rate: Some(0.98),
            p50: None,
            p95: None,
            p99: None,
        }];
        let table = table(&rates, "header");
        assert!(table.contains("web -> ratings [ratings]"), "{table}");
        let summary = summary(&rows, Vec::new());
        assert_eq!(summary.routes.len(), 2);
        assert_eq!(summary.routes[1].route, "ratings");
        assert_eq!(summary.routes[1].success_rate, Some(0.98));
    }

    #[test]
    fn window_rates_cover_only_the_span() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(10), start);
        let at = |secs| start + Duration::from_secs(secs);
        let snapshot = |requests: f64| {
            BTreeMap::from([(
                edge("a", "b"),
                Stats {
                    requests,
                    successes: requests,
                    ..Stats::default()
                },
            )])
        };
        for second in 1..=30 {
            // 10 requests per second for 20 s, then 30 per second.
            let total = if second <= 20 {
                10.0 * second as f64
            } else {
                200.0 + 30.0 * (second - 20) as f64
            };
            window.push(at(second), snapshot(total));
        }
        let rates = window.rates();
        assert_eq!(rates.len(), 1);
        assert!((rates[0].rps - 30.0).abs() < 1e-9, "rps {}", rates[0].rps);
        assert_eq!(rates[0].success_rate, Some(1.0));
        assert_eq!(rates[0].p50, None);
    }

    #[test]
    fn window_starts_from_an_empty_baseline() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(10), start);
        window.push(
            start + Duration::from_secs(2),
            BTreeMap::from([(
                Row::Service("web".into()),
                Stats {
                    requests: 40.0,
                    successes: 38.0,
                    ..Stats::default()
                },
            )]),
        );
        let rates = window.rates();
        assert!((rates[0].rps - 20.0).abs() < 1e-9);
        assert_eq!(rates[0].success_rate, Some(0.95));
    }

    #[test]
    fn table_lists_services_then_edges() {
        let rates = vec![
            Rate {
                row: Row::Service("web".into()),
                rps: 20.0,
                success_rate: Some(0.95),
                p50: Some(3.2),
                p95: Some(12.0),
                p99: None,
            },
            Rate {
                row: edge("web", "books"),
                rps: 20.0,
                success_rate: Some(1.0),
                p50: Some(1.0),
                p95: Some(2.0),
                p99: Some(2.0),
            },
        ];
        let text = table(&rates, "weft demo");
        let service = text.find("web   ").expect("service row");
        let edge_row = text.find("web -> books").expect("edge row");
        assert!(service < edge_row);
        assert!(text.contains("95.00%"));
        assert!(text.contains("3.2ms"));
        assert!(text.contains("12ms"));
    }

    #[test]
    fn a_long_name_widens_the_column_for_every_row() {
        let rate = |row| Rate {
            row,
            rps: 1.0,
            success_rate: Some(1.0),
            p50: None,
            p95: None,
            p99: None,
        };
        let long = Row::Route {
            src: "east/traffic".into(),
            service: "ratings-west".into(),
            route: "http".into(),
        };
        let width = long.label().len();
        assert!(width > NAME_WIDTH);
        let text = table(
            &[rate(Row::Service("west/web".into())), rate(long)],
            "header",
        );
        // Every figure starts in the same column: the name column is as wide as the longest.
        for line in text.lines().filter(|l| l.contains("1.0 ")) {
            assert_eq!(line.find(" 1.0 "), Some(width + 4), "{text}");
        }
        assert_eq!(text.lines().filter(|l| l.contains("1.0 ")).count(), 2);
    }

    #[test]
    fn summary_is_the_contract_json() {
        let rows = rows("web", &parse(WEB_PROXY));
        let summary = summary(
            &rows,
            vec![ProxySummary {
                workload: "web".into(),
                admin: "127.0.0.1:4191".parse().expect("addr"),
            }],
        );
        let json = serde_json::to_value(&summary).expect("json");
        let books = &json["edges"][0];
        assert_eq!(books["src"], "web");
        assert_eq!(books["dst"], "books");
        assert_eq!(books["requests"], 20);
        assert_eq!(books["success_rate"], 1.0);
        assert_eq!(books["p50_ms"], 1.0);
        assert_eq!(books["tls"], false);
        assert!(books["p99_ms"].as_f64().is_some());
        assert_eq!(json["edges"].as_array().map(Vec::len), Some(2));
        assert_eq!(json["proxies"][0]["admin"], "127.0.0.1:4191");
    }

    #[test]
    fn a_row_whose_sum_went_down_lost_expired_series_not_its_history() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(10), start);
        let row = Row::Service("web".into());
        let stats = |requests: f64| Stats {
            requests,
            successes: requests,
            ..Stats::default()
        };
        window.push(
            start + Duration::from_secs(5),
            [(row.clone(), stats(1000.0))].into(),
        );
        // An idle endpoint's series expired: the sum is lower, nothing was served.
        window.push(
            start + Duration::from_secs(15),
            [(row.clone(), stats(900.0))].into(),
        );
        let rates = window.rates();
        assert_eq!(rates.len(), 1);
        assert_eq!(rates[0].rps, 0.0, "not the whole history at once");
    }
}
