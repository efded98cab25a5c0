//! Pure functions over the proxies' Prometheus samples (parsed by [`weft_sys::prometheus`]): fold
//! them into per-key request/latency statistics, subtract two scrapes, add them up, and estimate
//! percentiles from histogram buckets the way Prometheus' `histogram_quantile` does (linear
//! interpolation in a bucket). Shared by the control plane's telemetry and `weft demo`'s live
//! table.

use std::collections::BTreeMap;

pub use weft_sys::prometheus::{parse, Sample};

/// Cumulative request statistics for one key (a service, an edge, a proxy's inbound side).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Responses seen (`response_total`, or a route's status counter).
    pub requests: f64,
    /// Of which `classification="success"`.
    pub successes: f64,
    /// Cumulative histogram of `response_latency_ms`: upper bound (ms) → count `<= le`.
    pub buckets: Buckets,
    /// Whether any response on this key was reported with `tls="true"`.
    pub tls: bool,
}

/// A bucket upper bound, ordered (`+Inf` last), usable as a key.
#[derive(Debug, Clone, Copy)]
pub struct Le(pub f64);

impl PartialEq for Le {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Le {}

impl PartialOrd for Le {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Le {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A cumulative histogram: `(upper bound, count <= bound)` sorted by bound, `+Inf` last. A sorted
/// list rather than a map: a proxy's histogram has 26 bounds, and the control plane keeps many
/// of them in its telemetry history (16 bytes a bound here, about twice that in a `BTreeMap`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets(Vec<(Le, f64)>);

impl Buckets {
    /// Adds `count` to the bucket `le` (created at its place if new).
    pub fn add(&mut self, le: Le, count: f64) {
        match self.0.binary_search_by(|(bound, _)| bound.cmp(&le)) {
            Ok(i) => self.0[i].1 += count,
            Err(i) => self.0.insert(i, (le, count)),
        }
    }

    /// The count of bucket `le`, if there is one.
    pub fn get(&self, le: Le) -> Option<f64> {
        self.0
            .binary_search_by(|(bound, _)| bound.cmp(&le))
            .ok()
            .map(|i| self.0[i].1)
    }

    /// The buckets, lowest bound first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (Le, f64)> + '_ {
        self.0.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Gives back the spare capacity (for values that are kept a long time).
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
}

impl FromIterator<(Le, f64)> for Buckets {
    fn from_iter<I: IntoIterator<Item = (Le, f64)>>(iter: I) -> Self {
        let mut buckets = Buckets::default();
        for (le, count) in iter {
            buckets.add(le, count);
        }
        buckets
    }
}

impl std::ops::Index<&Le> for Buckets {
    type Output = f64;

    /// Panics when there is no such bucket, as a map's index does.
    fn index(&self, le: &Le) -> &f64 {
        let i = self
            .0
            .binary_search_by(|(bound, _)| bound.cmp(le))
            .unwrap_or_else(|_| panic!("no bucket le={}", le.0));
        &self.0[i].1
    }
}

impl Stats {
    /// What happened between `older` and `self` (both cumulative). A counter that went down means
    /// the proxy restarted: then `self` alone is the best estimate.
    pub fn since(&self, older: &Stats) -> Stats {
        if self.requests < older.requests {
            return self.clone();
        }
        let buckets = self
            .buckets
            .iter()
            .map(|(le, count)| {
                let before = older.buckets.get(le).unwrap_or(0.0);
                (le, (count - before).max(0.0))
            })
            .collect();
        Stats {
            requests: self.requests - older.requests,
            successes: (self.successes - older.successes).max(0.0),
            buckets,
            tls: self.tls,
        }
    }

    /// What happened between `older` and `self`, both scraped from the same process: a sum that
    /// went down lost series the proxy expired as idle (`WEFT_PROXY_METRICS_RETAIN_IDLE`), which
    /// added nothing lately, so a decrease counts as nothing rather than as a restart.
    pub fn since_same_process(&self, older: &Stats) -> Stats {
        let mut delta = self.since(&Stats {
            requests: older.requests.min(self.requests),
            successes: older.successes.min(self.successes),
            buckets: older.buckets.clone(),
            tls: older.tls,
        });
        delta.successes = delta.successes.min(delta.requests);
        delta
    }

    /// Adds `other` in: the statistics of both keys together (histograms with the same bounds
    /// add up bucket by bucket).
    pub fn add(&mut self, other: &Stats) {
        self.requests += other.requests;
        self.successes += other.successes;
        for (le, count) in other.buckets.iter() {
            self.buckets.add(le, count);
        }
        self.tls |= other.tls;
    }

    /// Fraction of successful responses, `None` without responses.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| self.successes / self.requests)
    }

    /// Latency percentile in ms (`q` in 0..=1), `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile(&self.buckets, q)
    }
}

/// Which response series a [`fold`] keeps and how it names them.
pub type KeyFn<'a, K> = &'a dyn Fn(&Sample) -> Option<K>;

/// Folds the response families ([`Family`]) into per-key [`Stats`], summing over every label the
/// key function ignores (status codes, endpoints, ...).
pub fn fold<K: Ord + Clone>(samples: &[Sample], key: KeyFn<'_, K>) -> BTreeMap<K, Stats> {
    let mut out: BTreeMap<K, Stats> = BTreeMap::new();
    for sample in samples {
        let Some(family) = Family::of(&sample.name) else {
            continue;
        };
        let Some(k) = key(sample) else { continue };
        let stats = out.entry(k).or_default();
        match family {
            Family::Total(succeeded) => {
                stats.requests += sample.value;
                if succeeded(sample) {
                    stats.successes += sample.value;
                }
                if sample.label("tls") == Some("true") {
                    stats.tls = true;
                }
            }
            Family::Bucket => {
                if let Some(le) = sample
                    .label("le")
                    .and_then(weft_sys::prometheus::parse_value)
                {
                    stats.buckets.add(Le(le), sample.value);
                }
            }
        }
    }
    out
}

/// The metric families [`fold`] reads: the proxy's `response_total` / `response_latency_ms`
/// (one per attempt: a retried request counts each try), and the route status counters (one per
/// request as the client saw it, after retries). The route duration histogram is not read: its
/// buckets (Linkerd's: 50 ms, 500 ms, 1 s, 10 s) are too coarse for a percentile of requests
/// that take a few milliseconds.
enum Family {
    /// A response counter, with what makes a sample a success.
    Total(fn(&Sample) -> bool),
    /// A `response_latency_ms` bucket.
    Bucket,
}

impl Family {
    fn of(name: &str) -> Option<Family> {
        Some(match name {
            "response_total" => Family::Total(|s| s.label("classification") == Some("success")),
            "response_latency_ms_bucket" => Family::Bucket,
            // A proxy error, a 5xx, or a gRPC status other than OK is a failure.
            "outbound_http_route_request_statuses_total" => Family::Total(|s| {
                s.label("error").unwrap_or_default().is_empty()
                    && s.label("http_status")
                        .and_then(|v| v.parse::<u16>().ok())
                        .is_some_and(|status| status < 500)
            }),
            "outbound_grpc_route_request_statuses_total" => Family::Total(|s| {
                s.label("error").unwrap_or_default().is_empty()
                    && s.label("grpc_status") == Some("0")
            }),
            _ => return None,
        })
    }
}

/// Whether a sample is a route status counter (requests after retries) rather than a
/// per-attempt one.
pub fn is_route_sample(sample: &Sample) -> bool {
    matches!(
        sample.name.as_str(),
        "outbound_http_route_request_statuses_total" | "outbound_grpc_route_request_statuses_total"
    )
}

/// `histogram_quantile`: finds the bucket holding rank `q * total` and interpolates linearly
/// between its bounds (the first bucket starts at 0). A rank in the `+Inf` bucket answers the
/// highest finite bound, since nothing better is known.
pub fn quantile(buckets: &Buckets, q: f64) -> Option<f64> {
    let total = buckets
        .iter()
        .next_back()
        .map(|(_, count)| count)
        .unwrap_or(0.0);
    if total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let mut lower = 0.0;
    let mut below = 0.0;
    for (Le(upper), count) in buckets.iter() {
        if count >= rank {
            if upper.is_infinite() {
                return Some(lower);
            }
            let in_bucket = count - below;
            if in_bucket <= 0.0 {
                return Some(upper);
            }
            return Some(lower + (upper - lower) * (rank - below) / in_bucket);
        }
        lower = upper;
        below = count;
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
# HELP response_total Total responses.
# TYPE response_total counter
response_total{direction="outbound",dst_service="books",status_code="200",classification="success",tls="no_identity"} 90
response_total{direction="outbound",dst_service="books",status_code="500",classification="failure",tls="no_identity"} 10
response_total{direction="outbound",dst_service="ratings",status_code="200",classification="success",tls="true"} 5
response_total{direction="inbound",status_code="200",classification="success",tls="no_identity"} 7
response_latency_ms_bucket{direction="outbound",dst_service="books",status_code="200",le="10"} 50
response_latency_ms_bucket{direction="outbound",dst_service="books",status_code="200",le="20"} 90
response_latency_ms_bucket{direction="outbound",dst_service="books",status_code="200",le="+Inf"} 90
response_latency_ms_bucket{direction="outbound",dst_service="books",status_code="500",le="10"} 10
response_latency_ms_bucket{direction="outbound",dst_service="books",status_code="500",le="20"} 10
response_latency_ms_bucket{direction="outbound",dst_service="books",status_code="500",le="+Inf"} 10
process_start_time_seconds 1700000000.5
"#;

    fn outbound_by_service(s: &Sample) -> Option<String> {
        (s.label("direction") == Some("outbound"))
            .then(|| s.label("dst_service").map(str::to_string))
            .flatten()
    }

    #[test]
    fn folds_by_key_summing_other_labels() {
        let stats = fold(&parse(TEXT), &outbound_by_service);
        let books = &stats["books"];
        assert_eq!(books.requests, 100.0);
        assert_eq!(books.successes, 90.0);
        assert_eq!(books.success_rate(), Some(0.9));
        assert!(!books.tls);
        assert_eq!(books.buckets[&Le(10.0)], 60.0);
        assert_eq!(books.buckets[&Le(f64::INFINITY)], 100.0);
        assert!(stats["ratings"].tls);
        assert_eq!(stats.len(), 2);
    }

    #[test]
    fn buckets_stay_sorted_whatever_the_order_they_come_in() {
        let buckets: Buckets = [
            (Le(f64::INFINITY), 3.0),
            (Le(20.0), 2.0),
            (Le(10.0), 1.0),
            (Le(20.0), 5.0),
        ]
        .into_iter()
        .collect();
        let bounds: Vec<f64> = buckets.iter().map(|(le, _)| le.0).collect();
        assert_eq!(bounds, [10.0, 20.0, f64::INFINITY]);
        assert_eq!(buckets.get(Le(20.0)), Some(7.0));
        assert_eq!(buckets.get(Le(5.0)), None);
    }

    #[test]
    fn quantile_interpolates_inside_the_bucket() {
        let buckets: Buckets = [
            (Le(10.0), 60.0),
            (Le(20.0), 100.0),
            (Le(f64::INFINITY), 100.0),
        ]
        .into_iter()
        .collect();
        // rank 50 of 60 in [0,10]
        assert!((quantile(&buckets, 0.5).expect("p50") - 50.0 / 6.0).abs() < 1e-9);
        // rank 80: 20 into the 40 of (10,20]
        assert!((quantile(&buckets, 0.8).expect("p80") - 15.0).abs() < 1e-9);
        assert_eq!(quantile(&buckets, 1.0), Some(20.0));
    }

    #[test]
    fn quantile_in_inf_bucket_is_highest_finite_bound() {
        let buckets: Buckets = [(Le(5.0), 1.0), (Le(f64::INFINITY), 10.0)]
            .into_iter()
            .collect();
        assert_eq!(quantile(&buckets, 0.99), Some(5.0));
    }

    #[test]
    fn quantile_without_observations_is_none() {
        assert_eq!(quantile(&Buckets::default(), 0.5), None);
        let empty: Buckets = [(Le(5.0), 0.0), (Le(f64::INFINITY), 0.0)]
            .into_iter()
            .collect();
        assert_eq!(quantile(&empty, 0.5), None);
    }

    #[test]
    fn since_subtracts_and_survives_restarts() {
        let older = Stats {
            requests: 10.0,
            successes: 9.0,
            buckets: [(Le(10.0), 10.0), (Le(f64::INFINITY), 10.0)]
                .into_iter()
                .collect(),
            tls: false,
        };
        let newer = Stats {
            requests: 30.0,
            successes: 25.0,
            buckets: [(Le(10.0), 25.0), (Le(f64::INFINITY), 30.0)]
                .into_iter()
                .collect(),
            tls: false,
        };
        let window = newer.since(&older);
        assert_eq!(window.requests, 20.0);
        assert_eq!(window.successes, 16.0);
        assert_eq!(window.buckets[&Le(10.0)], 15.0);
        assert_eq!(window.buckets[&Le(f64::INFINITY)], 20.0);
        // A restarted proxy: counters went down, the new values stand alone.
        let restarted = Stats {
            requests: 3.0,
            ..Stats::default()
        };
        assert_eq!(restarted.since(&newer).requests, 3.0);
    }

    #[test]
    fn add_sums_counters_and_histograms() {
        let mut sum = Stats::default();
        let a = Stats {
            requests: 10.0,
            successes: 9.0,
            buckets: [(Le(10.0), 8.0), (Le(f64::INFINITY), 10.0)]
                .into_iter()
                .collect(),
            tls: false,
        };
        let b = Stats {
            requests: 5.0,
            successes: 5.0,
            buckets: [(Le(10.0), 1.0), (Le(f64::INFINITY), 5.0)]
                .into_iter()
                .collect(),
            tls: true,
        };
        sum.add(&a);
        sum.add(&b);
        assert_eq!((sum.requests, sum.successes, sum.tls), (15.0, 14.0, true));
        assert_eq!(sum.buckets[&Le(10.0)], 9.0);
        assert_eq!(sum.buckets[&Le(f64::INFINITY)], 15.0);
    }
}
