//! A proxy's outbound routes from one scrape: per route of a parent Service
//! (`parent_namespace`, `parent_name`, `parent_port`, `route_kind`, `route_namespace`,
//! `route_name`), requests and successes as the client saw them after retries
//! (`outbound_{http,grpc}_route_request_statuses_total`) and their duration histogram
//! (`outbound_{http,grpc}_route_request_duration_seconds`, in milliseconds here).
//!
//! That histogram has Linkerd's bounds, 50 ms, 500 ms, 1 s and 10 s: a percentile read from it
//! is only known to lie in its bucket, so [`quantile_bound`] answers the bucket's upper bound
//! rather than a point interpolated inside it (Prometheus' `histogram_quantile` on these
//! families says 25 ms for a route that answers in 1 ms).

use std::collections::BTreeMap;

use super::stats::{self, Buckets, Le, Sample, Stats};

/// One route of one Service port, as the proxy labelled it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteKey {
    /// `parent_namespace`.
    pub namespace: String,
    /// `parent_name`: the Service.
    pub service: String,
    /// `parent_port` (0 when empty).
    pub port: u16,
    /// `route_kind`: `HTTPRoute`, `GRPCRoute`, or `default` for the route of a Service without
    /// routes.
    pub kind: String,
    /// `route_namespace` (empty for a default route).
    pub route_namespace: String,
    /// `route_name` (`http` or `grpc` for a default route).
    pub name: String,
}

/// Request figures per route, sorted by key.
pub type Routes = Vec<(RouteKey, Stats)>;

/// The key of a route series whose parent is a Service; `None` for other series.
fn key(sample: &Sample) -> Option<RouteKey> {
    if sample.label("parent_kind") != Some("Service") {
        return None;
    }
    let label = |name: &str| sample.label(name).map(str::to_string);
    Some(RouteKey {
        namespace: label("parent_namespace")?,
        service: label("parent_name")?,
        port: sample
            .label("parent_port")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0),
        kind: label("route_kind")?,
        route_namespace: label("route_namespace").unwrap_or_default(),
        name: label("route_name")?,
    })
}

fn is_duration_bucket(name: &str) -> bool {
    matches!(
        name,
        "outbound_http_route_request_duration_seconds_bucket"
            | "outbound_grpc_route_request_duration_seconds_bucket"
    )
}

/// Folds a scrape's route series.
pub fn fold(samples: &[Sample]) -> Routes {
    // The status counters: requests and successes (`stats::fold` knows what succeeded).
    let mut routes: BTreeMap<RouteKey, Stats> = stats::fold(samples, &|s: &Sample| {
        stats::is_route_sample(s).then(|| key(s)).flatten()
    });
    for s in samples.iter().filter(|s| is_duration_bucket(&s.name)) {
        let (Some(key), Some(le)) = (
            key(s),
            s.label("le").and_then(weft_sys::prometheus::parse_value),
        ) else {
            continue;
        };
        routes
            .entry(key)
            .or_default()
            .buckets
            .add(Le(le * 1000.0), s.value);
    }
    routes
        .into_iter()
        .map(|(k, mut stats)| {
            stats.buckets.shrink_to_fit();
            (k, stats)
        })
        .collect()
}

/// The upper bound (ms) of the bucket holding quantile `q`: the latency is known not to exceed
/// it. A rank in the `+Inf` bucket answers the highest finite bound (it is at least that);
/// `None` without observations.
pub fn quantile_bound(buckets: &Buckets, q: f64) -> Option<f64> {
    let total = buckets.iter().next_back().map_or(0.0, |(_, n)| n);
    if total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let mut highest_finite = None;
    for (Le(bound), count) in buckets.iter() {
        if bound.is_finite() {
            highest_finite = Some(bound);
        }
        if count >= rank {
            return if bound.is_finite() {
                Some(bound)
            } else {
                highest_finite
            };
        }
    }
    highest_finite
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::stats::parse;

    const RATINGS: &str = "parent_group=\"core\",parent_kind=\"Service\",parent_namespace=\"demo\",parent_name=\"ratings\",parent_port=\"8080\",parent_section_name=\"\",route_group=\"gateway.networking.k8s.io\",route_kind=\"HTTPRoute\",route_namespace=\"demo\",route_name=\"ratings\"";
    const DEFAULT: &str = "parent_group=\"core\",parent_kind=\"Service\",parent_namespace=\"demo\",parent_name=\"books\",parent_port=\"9090\",parent_section_name=\"\",route_group=\"\",route_kind=\"default\",route_namespace=\"\",route_name=\"grpc\"";

    fn text() -> String {
        format!(
            "outbound_http_route_request_statuses_total{{{RATINGS},http_status=\"200\",error=\"\"}} 97\n\
             outbound_http_route_request_statuses_total{{{RATINGS},http_status=\"500\",error=\"\"}} 2\n\
             outbound_http_route_request_statuses_total{{{RATINGS},http_status=\"\",error=\"RESPONSE_HEADERS_TIMEOUT\"}} 1\n\
             outbound_http_route_request_duration_seconds_bucket{{{RATINGS},le=\"0.05\"}} 96\n\
             outbound_http_route_request_duration_seconds_bucket{{{RATINGS},le=\"0.5\"}} 99\n\
             outbound_http_route_request_duration_seconds_bucket{{{RATINGS},le=\"1\"}} 99\n\
             outbound_http_route_request_duration_seconds_bucket{{{RATINGS},le=\"10\"}} 100\n\
             outbound_http_route_request_duration_seconds_bucket{{{RATINGS},le=\"+Inf\"}} 100\n\
             outbound_http_route_request_duration_seconds_sum{{{RATINGS}}} 0.4\n\
             outbound_http_route_retry_requests_total{{{RATINGS}}} 6\n\
             outbound_grpc_route_request_statuses_total{{{DEFAULT},grpc_status=\"0\",error=\"\"}} 7\n\
             outbound_grpc_route_request_statuses_total{{{DEFAULT},grpc_status=\"14\",error=\"\"}} 3\n\
             outbound_tcp_forbidden_total{{direction=\"outbound\",target_addr=\"10.0.0.1:80\",parent_kind=\"EgressNetwork\",route_kind=\"\",route_name=\"\"}} 1\n\
             response_total{{direction=\"outbound\",dst_namespace=\"demo\",dst_service=\"ratings\",classification=\"success\"}} 5\n"
        )
    }

    #[test]
    fn routes_of_services_with_statuses_and_durations_in_ms() {
        let routes = fold(&parse(&text()));
        assert_eq!(routes.len(), 2, "{routes:?}");
        let (books, grpc) = &routes[0];
        assert_eq!(
            (
                books.service.as_str(),
                books.port,
                books.kind.as_str(),
                books.name.as_str()
            ),
            ("books", 9090, "default", "grpc")
        );
        assert_eq!((grpc.requests, grpc.successes), (10.0, 7.0));
        assert!(grpc.buckets.is_empty());
        let (ratings, http) = &routes[1];
        assert_eq!(
            (ratings.route_namespace.as_str(), ratings.name.as_str()),
            ("demo", "ratings")
        );
        // A 5xx and a proxy error are failures.
        assert_eq!((http.requests, http.successes), (100.0, 97.0));
        let bounds: Vec<(f64, f64)> = http.buckets.iter().map(|(le, n)| (le.0, n)).collect();
        assert_eq!(
            bounds,
            [
                (50.0, 96.0),
                (500.0, 99.0),
                (1000.0, 99.0),
                (10000.0, 100.0),
                (f64::INFINITY, 100.0)
            ]
        );
    }

    #[test]
    fn quantiles_are_the_bounds_of_their_buckets() {
        let routes = fold(&parse(&text()));
        let b = &routes[1].1.buckets;
        assert_eq!(quantile_bound(b, 0.5), Some(50.0));
        assert_eq!(quantile_bound(b, 0.96), Some(50.0));
        assert_eq!(quantile_bound(b, 0.97), Some(500.0));
        assert_eq!(quantile_bound(b, 1.0), Some(10000.0));
        let inf: Buckets = [(Le(50.0), 1.0), (Le(f64::INFINITY), 10.0)]
            .into_iter()
            .collect();
        assert_eq!(quantile_bound(&inf, 0.99), Some(50.0));
        assert_eq!(quantile_bound(&Buckets::default(), 0.5), None);
    }
}
