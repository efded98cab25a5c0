use super::*;
use crate::{backoff::BackoffConfig, discovery::ProtocolHint};
use linkerd2_proxy_api::outbound as api;
use std::collections::BTreeMap;

fn ep(port: u16, weight: u32) -> Endpoint {
    Endpoint {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        weight,
        hint: ProtocolHint::H2,
        identity: None,
        opaque_transport_port: None,
        authority_override: None,
        labels: Arc::new(BTreeMap::new()),
    }
}

fn set(eps: Vec<Endpoint>) -> EndpointSet {
    EndpointSet {
        resolved: true,
        exists: true,
        endpoints: eps,
        ..Default::default()
    }
}

fn addr(port: u16) -> SocketAddr {
    ep(port, 1).addr
}

fn config(accrual: Accrual, min_ready_endpoints: u32) -> BalancerConfig {
    BalancerConfig {
        accrual: AccrualConfig {
            policy: accrual,
            min_ready_endpoints,
        },
        ..BalancerConfig::for_target(&Target::Addr(addr(80)))
    }
}

fn consecutive(max_failures: u32) -> Accrual {
    Accrual::ConsecutiveFailures {
        max_failures,
        backoff: BackoffConfig {
            min: Duration::from_secs(1),
            max: Duration::from_secs(8),
            jitter_ratio: 0.0,
        },
    }
}

fn balancer(
    eps: Vec<Endpoint>,
    cfg: BalancerConfig,
) -> (watch::Sender<EndpointSet>, Arc<Balancer>) {
    let (tx, rx) = watch::channel(set(eps));
    (tx, Arc::new(Balancer::with_config(rx, cfg)))
}

/// Sends one request: picks, answers with `outcome(port)` at once, drops the guard.
fn request(b: &Arc<Balancer>, outcome: impl Fn(u16) -> Outcome) -> Option<u16> {
    let mut p = b.pick()?;
    let port = p.endpoint.addr.port();
    p.complete(outcome(port));
    Some(port)
}

/// Fails one request on `port`: requests picked on the others are held meanwhile (so P2C
/// reaches `port` however cheap the others look), then released.
fn fail_once(b: &Arc<Balancer>, port: u16, outcome: Outcome) {
    let mut held = Vec::new();
    loop {
        let mut p = b.pick().unwrap();
        if p.endpoint.addr.port() == port {
            p.complete(outcome);
            return;
        }
        held.push(p);
    }
}

#[test]
fn empty_set_picks_nothing() {
    let (_tx, rx) = watch::channel(EndpointSet::default());
    assert!(Arc::new(Balancer::new(rx)).pick().is_none());
}

#[test]
fn prefers_the_less_loaded_endpoint() {
    let (_tx, rx) = watch::channel(set(vec![ep(1, 1), ep(2, 1)]));
    let b = Arc::new(Balancer::new(rx));
    // Hold many requests: P2C with two endpoints always compares both, so load stays balanced.
    let held: Vec<_> = (0..100).map(|_| b.pick().unwrap()).collect();
    let on1 = b.outstanding(addr(1));
    let on2 = b.outstanding(addr(2));
    assert_eq!(on1 + on2, 100);
    assert!(on1.abs_diff(on2) <= 1, "{on1} vs {on2}");
    drop(held);
    assert_eq!(b.outstanding(addr(1)), 0);
}

#[test]
fn weights_scale_the_load() {
    let (_tx, rx) = watch::channel(set(vec![ep(1, 30000), ep(2, 10000)]));
    let b = Arc::new(Balancer::new(rx));
    let held: Vec<_> = (0..400).map(|_| b.pick().unwrap()).collect();
    let on1 = b.outstanding(addr(1));
    let on2 = b.outstanding(addr(2));
    assert!(
        (290..=310).contains(&on1),
        "heavier endpoint got {on1}, other {on2}"
    );
    drop(held);
}

#[test]
fn endpoint_changes_keep_in_flight_requests() {
    let (tx, rx) = watch::channel(set(vec![ep(1, 1)]));
    let b = Arc::new(Balancer::new(rx));
    let first = b.pick().unwrap();
    assert_eq!(first.endpoint.addr.port(), 1);
    tx.send_replace(set(vec![ep(2, 1), ep(3, 1)]));
    // The in-flight request still holds its endpoint and is still counted.
    assert_eq!(first.endpoint.addr.port(), 1);
    assert_eq!(b.outstanding(first.endpoint.addr), 1);
    for _ in 0..20 {
        let p = b.pick().unwrap();
        assert_ne!(p.endpoint.addr.port(), 1);
    }
    drop(first);
    assert_eq!(b.outstanding(addr(1)), 0);
}

#[test]
fn take_removed_reports_endpoints_that_left_once() {
    let (tx, rx) = watch::channel(set(vec![ep(1, 1), ep(2, 1)]));
    let b = Arc::new(Balancer::new(rx));
    assert!(b.take_removed().is_empty());
    tx.send_replace(set(vec![ep(2, 1), ep(3, 1)]));
    assert_eq!(b.take_removed(), vec![addr(1)]);
    assert!(b.take_removed().is_empty());
    tx.send_replace(set(vec![]));
    let mut gone = b.take_removed();
    gone.sort();
    assert_eq!(gone, vec![addr(2), addr(3)]);
}

#[tokio::test(start_paused = true)]
async fn waits_for_endpoints_then_fails_fast() {
    let (tx, rx) = watch::channel(EndpointSet::default());
    let b = Arc::new(Balancer::new(rx));
    let start = Instant::now();
    let err = b.pick_ready(Duration::from_secs(3)).await.unwrap_err();
    assert_eq!(err, Error::NoEndpoints(Duration::from_secs(3)));
    assert_eq!(start.elapsed(), Duration::from_secs(3));

    let waiting = tokio::spawn({
        let b = b.clone();
        async move {
            b.pick_ready(Duration::from_secs(3))
                .await
                .map(|p| p.endpoint.addr)
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    tx.send_replace(set(vec![ep(7, 1)]));
    assert_eq!(waiting.await.unwrap().unwrap().port(), 7);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_fails_at_once() {
    let cfg = BalancerConfig {
        queue: QueueConfig {
            capacity: 1,
            failfast: Duration::from_secs(3),
        },
        ..config(Accrual::None, 0)
    };
    let (_tx, b) = balancer(vec![], cfg);
    let first = tokio::spawn({
        let b = b.clone();
        async move { b.pick_ready(Duration::from_secs(3)).await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    let start = Instant::now();
    assert_eq!(
        b.pick_ready(Duration::from_secs(3)).await.unwrap_err(),
        Error::QueueFull { capacity: 1 }
    );
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(
        first.await.unwrap(),
        Err(Error::NoEndpoints(Duration::from_secs(3)))
    );
}

#[test]
fn peak_ewma_takes_peaks_at_once_and_decays_towards_lower_samples() {
    let load = LoadConfig::default();
    let decay = load.decay;
    let t0 = Instant::now();
    let mut s = Stats::new(&load, t0);
    assert_eq!(
        s.cost(1, t0, decay),
        30e6,
        "an unmeasured endpoint costs the default RTT"
    );
    s.observe_rtt(Duration::from_millis(100), t0, decay);
    assert_eq!(s.cost(1, t0, decay), 100e6, "a peak replaces the estimate");
    // One decay later with no answer, the estimate is down to 1/e.
    let t1 = t0 + decay;
    let decayed = 100e6 / std::f64::consts::E;
    assert!((s.cost(1, t1, decay) - decayed).abs() < 1.0);
    // A 10 ms sample then adds its share: 1 - 1/e of it.
    s.observe_rtt(Duration::from_millis(10), t1, decay);
    let expected = decayed + 10e6 * (1.0 - 1.0 / std::f64::consts::E);
    assert!(
        (s.cost(1, t1, decay) - expected).abs() < 1.0,
        "{} vs {expected}",
        s.cost(1, t1, decay)
    );
    // Samples in quick succession barely move it.
    let t2 = t1 + Duration::from_millis(10);
    let before = s.cost(1, t1, decay);
    s.observe_rtt(Duration::from_millis(10), t2, decay);
    assert!(before - s.cost(1, t2, decay) < before * 0.01);
    // Pending requests and weight scale the cost.
    s.pending = 3;
    assert!((s.cost(2, t2, decay) - s.cost(1, t2, decay) / 2.0).abs() < 1.0);
}

/// Sequential requests (nothing pending) over a measured fast endpoint and two new ones: the
/// new ones' default-RTT estimates decay, so both are tried within a few decays instead of
/// starving forever behind the one measured first.
#[tokio::test(start_paused = true)]
async fn new_endpoints_are_tried_as_their_default_estimate_decays() {
    let (_tx, b) = balancer(
        vec![ep(1, 10_000), ep(2, 10_000), ep(3, 10_000)],
        config(Accrual::None, 0),
    );
    let mut seen = std::collections::HashSet::new();
    // 1 ms answers, one request every 10 ms for 60 s (six decays).
    for _ in 0..6_000 {
        let mut f = b.pick().expect("an endpoint");
        seen.insert(f.endpoint.addr.port());
        tokio::time::advance(Duration::from_millis(1)).await;
        f.complete(Outcome::Success);
        tokio::time::advance(Duration::from_millis(9)).await;
        if seen.len() == 3 {
            break;
        }
    }
    assert_eq!(seen.len(), 3, "endpoints tried: {seen:?}");
}

/// Ten clients send requests back to back for 5 s over three endpoints, one of which answers
/// 50 ms slower than the others (1 ms): peak-EWMA sends it few requests.
#[tokio::test(start_paused = true)]
async fn a_slow_endpoint_gets_few_requests() {
    let (_tx, b) = balancer(
        vec![ep(1, 10_000), ep(2, 10_000), ep(3, 10_000)],
        config(Accrual::None, 0),
    );
    let counts = Arc::new(Mutex::new(HashMap::<u16, u32>::new()));
    let end = Instant::now() + Duration::from_secs(5);
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let (b, counts) = (b.clone(), counts.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    let mut p = b.pick_ready(Duration::from_secs(1)).await.unwrap();
                    let port = p.endpoint.addr.port();
                    *counts.lock().unwrap().entry(port).or_default() += 1;
                    let rtt = if port == 3 { 51 } else { 1 };
                    tokio::time::sleep(Duration::from_millis(rtt)).await;
                    p.complete(Outcome::Success);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let counts = counts.lock().unwrap();
    let total: u32 = counts.values().sum();
    let slow = counts.get(&3).copied().unwrap_or(0);
    assert!(total > 10_000, "{total}");
    assert!(
        f64::from(slow) <= 0.10 * f64::from(total),
        "slow endpoint got {slow} of {total}: {counts:?}"
    );
    assert!(
        counts[&1] > total / 3 && counts[&2] > total / 3,
        "{counts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_then_one_probe_at_growing_backoffs() {
    let (_tx, b) = balancer(vec![ep(1, 1), ep(2, 1)], config(consecutive(3), 0));
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outcome = {
        let healthy = healthy.clone();
        move |port: u16| {
            if port == 1 && !healthy.load(Ordering::SeqCst) {
                Outcome::Failure
            } else {
                Outcome::Success
            }
        }
    };
    // Port 1 fails every request: after its third failure it is out.
    for _ in 0..3 {
        fail_once(&b, 1, Outcome::Failure);
    }
    assert_eq!(
        b.endpoint_counts(),
        EndpointCounts {
            ready: 1,
            pending: 1
        }
    );
    for _ in 0..200 {
        assert_eq!(request(&b, &outcome), Some(2), "ejected: never picked");
    }
    // After the first backoff (1 s), exactly one probe; it fails: out for 2 s, then 4 s.
    let mut probes = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(7500) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..10 {
            if request(&b, &outcome) == Some(1) {
                probes.push(start.elapsed());
            }
        }
    }
    let at = |ms: u64| Duration::from_millis(ms);
    assert_eq!(
        probes,
        vec![at(1000), at(3000), at(7000)],
        "one probe per backoff"
    );

    // It recovers: the next probe (after 8 s, the max) readmits it and it takes traffic again.
    // Both answer in 1 ms, one request every 10 ms for 40 s: once their estimates reflect that
    // latency rather than their histories (three decays), it gets about half.
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut on1 = 0;
    for i in 0..4_000 {
        let mut p = b.pick().expect("an endpoint");
        let port = p.endpoint.addr.port();
        tokio::time::advance(Duration::from_millis(1)).await;
        p.complete(outcome(port));
        tokio::time::advance(Duration::from_millis(9)).await;
        if port == 1 && i >= 3_000 {
            on1 += 1;
        }
    }
    assert!(on1 > 400, "readmitted: {on1} of the last 1000");
    assert_eq!(
        b.endpoint_counts(),
        EndpointCounts {
            ready: 2,
            pending: 0
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_is_the_only_request_until_it_answers_and_a_cancelled_one_is_redone() {
    let (_tx, b) = balancer(vec![ep(1, 1), ep(2, 1)], config(consecutive(1), 0));
    fail_once(&b, 1, Outcome::Error);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let probe = loop {
        let p = b.pick().unwrap();
        if p.endpoint.addr.port() == 1 {
            break p;
        }
    };
    assert!(probe.is_probe());
    for _ in 0..100 {
        assert_eq!(
            b.pick().unwrap().endpoint.addr.port(),
            2,
            "probe outstanding"
        );
    }
    // Cancelled (no answer): the endpoint is on probation again at once.
    drop(probe);
    let mut again = None;
    for _ in 0..100 {
        let p = b.pick().unwrap();
        if p.endpoint.addr.port() == 1 {
            again = Some(p);
            break;
        }
    }
    let mut again = again.expect("probed again");
    assert!(again.is_probe());
    again.complete(Outcome::Success);
    drop(again);
    assert_eq!(b.endpoint_counts().ready, 2);
}

#[test]
fn the_ready_floor_is_never_ejected() {
    let (_tx, b) = balancer(
        vec![ep(1, 1), ep(2, 1), ep(3, 1)],
        config(consecutive(1), 2),
    );
    for _ in 0..100 {
        request(&b, |_| Outcome::Failure);
    }
    assert_eq!(
        b.endpoint_counts(),
        EndpointCounts {
            ready: 2,
            pending: 1
        },
        "only one of three ejected with a floor of two"
    );
}

#[tokio::test(start_paused = true)]
async fn with_every_endpoint_ejected_picks_wait_for_probation_within_failfast() {
    let (_tx, b) = balancer(vec![ep(1, 1)], config(consecutive(1), 0));
    request(&b, |_| Outcome::Failure);
    assert_eq!(b.endpoint_counts().pending, 1);
    // Probation after 1 s: a waiting pick gets the probe then.
    let start = Instant::now();
    let mut probe = b.pick_ready(Duration::from_secs(3)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert!(probe.is_probe());
    // While the probe is out, a pick waits; the probe's failure ejects it for 2 s, longer than
    // this pick's fail-fast of 500 ms.
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.pick_ready(Duration::from_millis(500)).await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    probe.complete(Outcome::Failure);
    drop(probe);
    assert_eq!(
        waiter.await.unwrap(),
        Err(Error::NoEndpoints(Duration::from_millis(500)))
    );
    // A probe that succeeds wakes a waiting pick at once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut probe = b.pick().expect("probation");
    let waiter = tokio::spawn({
        let b = b.clone();
        async move {
            let start = Instant::now();
            b.pick_ready(Duration::from_secs(3))
                .await
                .map(|_| start.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    probe.complete(Outcome::Success);
    assert_eq!(waiter.await.unwrap(), Ok(Duration::from_millis(30)));
}

#[tokio::test(start_paused = true)]
async fn unified_accrual_ejects_on_a_low_success_rate_after_min_requests() {
    let unified = Accrual::Unified {
        success_rate_threshold: 0.5,
        decay: Duration::from_secs(10),
        min_requests: 20,
        max_consecutive_failures: 0,
        backoff: BackoffConfig {
            min: Duration::from_secs(1),
            max: Duration::from_secs(1),
            jitter_ratio: 0.0,
        },
    };
    let (_tx, b) = balancer(vec![ep(1, 1)], config(unified, 0));
    // Alternating failure and success, one per 100 ms: the rate hovers around 0.5 but a long
    // run of failures brings it under; never before 20 requests.
    let mut n = 0;
    while b.endpoint_counts().pending == 0 {
        let fail = n % 4 != 0; // 75 % failures
        request(&b, |_| {
            if fail {
                Outcome::Failure
            } else {
                Outcome::Success
            }
        })
        .unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(n < 1000, "never ejected");
    }
    assert!(n >= 20, "ejected after {n} requests, before min_requests");
}

#[test]
fn outcomes_of_response_heads() {
    use http::{HeaderMap, StatusCode};
    let mut grpc = HeaderMap::new();
    assert_eq!(
        Outcome::of_response(StatusCode::OK, &grpc),
        Outcome::Success
    );
    assert_eq!(
        Outcome::of_response(StatusCode::NOT_FOUND, &grpc),
        Outcome::Success,
        "4xx is the client's"
    );
    assert_eq!(
        Outcome::of_response(StatusCode::BAD_GATEWAY, &grpc),
        Outcome::Failure
    );
    grpc.insert("grpc-status", "14".parse().unwrap());
    assert_eq!(
        Outcome::of_response(StatusCode::OK, &grpc),
        Outcome::Failure
    );
    grpc.insert("grpc-status", "0".parse().unwrap());
    assert_eq!(
        Outcome::of_response(StatusCode::OK, &grpc),
        Outcome::Success
    );
}

#[test]
fn settings_from_the_proto() {
    let d = |ms: i64| prost_types::Duration {
        seconds: ms / 1000,
        nanos: (ms % 1000) as i32 * 1_000_000,
    };
    let ewma = api::backend::balance_p2c::PeakEwma {
        default_rtt: Some(d(50)),
        decay: Some(d(5000)),
    };
    assert_eq!(
        LoadConfig::from_proto(&ewma),
        Ok(LoadConfig {
            default_rtt: Duration::from_millis(50),
            decay: Duration::from_secs(5)
        })
    );
    assert_eq!(
        LoadConfig::from_proto(&Default::default()),
        Ok(LoadConfig::default())
    );
    assert_eq!(
        LoadConfig::from_proto(&api::backend::balance_p2c::PeakEwma {
            decay: Some(d(0)),
            ..ewma
        }),
        Err(ConfigError::Zero("decay"))
    );

    let backoff = api::ExponentialBackoff {
        min_backoff: Some(d(1000)),
        max_backoff: Some(d(60_000)),
        jitter_ratio: 0.5,
        respect_retry_after_hint: false,
    };
    let fa = api::FailureAccrual {
        ejection: Some(api::EjectionConfig {
            min_ready_endpoints: 2,
        }),
        kind: Some(api::failure_accrual::Kind::ConsecutiveFailures(
            api::failure_accrual::ConsecutiveFailures {
                max_failures: 7,
                backoff: Some(backoff),
            },
        )),
    };
    let cfg = AccrualConfig::from_proto(&fa).unwrap();
    assert_eq!(cfg.min_ready_endpoints, 2);
    assert_eq!(
        cfg.policy,
        Accrual::ConsecutiveFailures {
            max_failures: 7,
            backoff: BackoffConfig {
                min: Duration::from_secs(1),
                max: Duration::from_secs(60),
                jitter_ratio: 0.5
            }
        }
    );
    let no_backoff = api::FailureAccrual {
        kind: Some(api::failure_accrual::Kind::ConsecutiveFailures(
            api::failure_accrual::ConsecutiveFailures {
                max_failures: 7,
                backoff: None,
            },
        )),
        ..fa
    };
    // The proto requires a backoff; without one, Linkerd's default (not "never eject").
    assert_eq!(
        AccrualConfig::from_proto(&no_backoff).map(|c| c.backoff()),
        Ok(Some(super::config::DEFAULT_ACCRUAL_BACKOFF))
    );
    let unified = |t: f64| api::FailureAccrual {
        ejection: None,
        kind: Some(api::failure_accrual::Kind::Unified(
            api::failure_accrual::Unified {
                success_rate_threshold: t,
                decay: Some(d(10_000)),
                min_requests: 10,
                max_consecutive_failures: 5,
                backoff: Some(backoff),
            },
        )),
    };
    assert!(matches!(
        AccrualConfig::from_proto(&unified(0.9)).unwrap().policy,
        Accrual::Unified {
            min_requests: 10,
            ..
        }
    ));
    assert_eq!(
        AccrualConfig::from_proto(&unified(1.5)),
        Err(ConfigError::Threshold(1.5))
    );
    assert!(AccrualConfig::from_proto(&unified(f64::NAN)).is_err());

    assert_eq!(
        QueueConfig::from_proto(&api::Queue {
            capacity: 100,
            failfast_timeout: Some(d(1500))
        }),
        Ok(QueueConfig {
            capacity: 100,
            failfast: Duration::from_millis(1500)
        })
    );
    assert_eq!(
        QueueConfig::from_proto(&api::Queue::default()),
        Ok(QueueConfig::default())
    );
}

#[test]
fn balancers_report_their_endpoints_to_metrics() {
    let metrics = Metrics::new();
    let bs = Balancers::with_metrics(metrics.clone());
    let target = Target::Name {
        host: "web.shop.svc.cluster.local".into(),
        port: 8080,
    };
    let (_tx, rx) = watch::channel(set(vec![ep(1, 1), ep(2, 1)]));
    let b = bs.get_or_insert_with(&target, rx, || config(consecutive(1), 0));
    let l = r#"backend_group="",backend_kind="default",backend_namespace="",backend_name="127.0.0.1",backend_port="80",backend_section_name="""#;
    assert!(metrics.render().contains(&format!(
        "outbound_http_balancer_endpoints{{{l},endpoint_state=\"ready\"}} 2\n"
    )));
    fail_once(&b, 1, Outcome::Failure);
    let text = metrics.render();
    assert!(text.contains(&format!(
        "outbound_http_balancer_endpoints{{{l},endpoint_state=\"ready\"}} 1\n"
    )));
    assert!(text.contains(&format!(
        "outbound_http_balancer_endpoints{{{l},endpoint_state=\"pending\"}} 1\n"
    )));
    drop(b);
    bs.sweep();
    bs.sweep();
    assert!(!metrics
        .render()
        .contains("outbound_http_balancer_endpoints"));
}

/// A retry passes over the endpoint its previous attempt went to, even when that one looks
/// cheapest (a dead endpoint failing fast), unless it is the only one available.
#[tokio::test(start_paused = true)]
async fn a_retry_passes_over_the_previous_endpoint_when_it_can() {
    let (tx, b) = balancer(vec![ep(1, 1), ep(2, 1), ep(3, 1)], config(Accrual::None, 0));
    for _ in 0..300 {
        let mut p = b.pick_avoiding(Some(addr(2))).expect("an endpoint");
        assert_ne!(p.endpoint.addr.port(), 2);
        p.complete(Outcome::Success);
    }
    // Only the avoided endpoint left: it is picked all the same.
    tx.send_replace(set(vec![ep(2, 1)]));
    let mut p = b
        .pick_ready_avoiding(Duration::from_secs(1), Some(addr(2)))
        .await
        .expect("the only endpoint");
    assert_eq!(p.endpoint.addr.port(), 2);
    p.complete(Outcome::Success);
    // Unknown addresses change nothing.
    assert!(b.pick_avoiding(Some(addr(9))).is_some());
}

/// A balancer whose reconnect backoff has no jitter: 100 ms doubling to 400 ms.
fn reconnecting(eps: Vec<Endpoint>, cfg: BalancerConfig) -> Arc<Balancer> {
    let (tx, rx) = watch::channel(set(eps));
    std::mem::forget(tx);
    let mut b = Balancer::with_config(rx, cfg);
    b.reconnect = BackoffConfig {
        min: Duration::from_millis(100),
        max: Duration::from_millis(400),
        jitter_ratio: 0.0,
    };
    Arc::new(b)
}

/// Picks until `port` comes up (holding the others meanwhile, so P2C reaches it).
fn pick_port(b: &Arc<Balancer>, port: u16) -> InFlight {
    let mut held = Vec::new();
    for _ in 0..1000 {
        let p = b.pick().expect("an endpoint");
        if p.endpoint.addr.port() == port {
            return p;
        }
        held.push(p);
    }
    panic!("port {port} was never picked");
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_that_cannot_be_connected_to_is_out_until_a_reconnect_succeeds() {
    // No failure accrual (the default without a policy): connect failures still count.
    let b = reconnecting(vec![ep(1, 1), ep(2, 1)], config(Accrual::None, 0));
    let (mut first, mut second) = (pick_port(&b, 1), pick_port(&b, 1));
    assert!(
        first.connect_failed(),
        "the first failure starts the reconnect"
    );
    assert!(
        !second.connect_failed(),
        "a request picked before changes nothing"
    );
    let counts = |ready, pending| EndpointCounts { ready, pending };
    assert_eq!(b.endpoint_counts(), counts(1, 1));
    // No probe request, however long: only a reconnect brings it back.
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..10 {
            assert_eq!(
                request(&b, |_| Outcome::Success),
                Some(2),
                "out: never picked"
            );
        }
    }
    b.reconnected(addr(1));
    assert_eq!(b.endpoint_counts(), counts(2, 0));
    let back = b.pick_avoiding(Some(addr(2))).unwrap();
    assert_eq!(back.endpoint.addr.port(), 1, "back in rotation");
}

#[tokio::test(start_paused = true)]
async fn reconnects_back_off_and_a_success_wakes_waiting_picks() {
    let b = reconnecting(vec![ep(1, 1)], config(Accrual::None, 0));
    let mut first = b.pick().unwrap();
    assert!(first.connect_failed());
    assert!(!first.connect_failed(), "once per request");
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    b.spawn_reconnect(addr(1), {
        let attempts = attempts.clone();
        move || {
            let mut a = attempts.lock().unwrap();
            a.push(start.elapsed());
            let ok = a.len() == 5;
            async move {
                if ok {
                    Ok(())
                } else {
                    Err("refused")
                }
            }
        }
    });
    // A pick waits (the only endpoint is out) and is woken by the reconnect.
    let picked = b
        .pick_ready(Duration::from_secs(3))
        .await
        .map(|p| (start.elapsed(), p.is_probe()));
    let ms = Duration::from_millis;
    // 100 ms doubling to the 400 ms cap, no jitter: attempts at 100, 300, 700, 1100, 1500 ms.
    assert_eq!(
        *attempts.lock().unwrap(),
        vec![ms(100), ms(300), ms(700), ms(1100), ms(1500)]
    );
    assert_eq!(picked, Ok((ms(1500), false)));
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_ends_when_its_endpoint_leaves_the_set() {
    let (tx, rx) = watch::channel(set(vec![ep(1, 1), ep(2, 1)]));
    let b = Arc::new(Balancer::with_config(rx, config(Accrual::None, 0)));
    assert!(pick_port(&b, 1).connect_failed());
    let attempts = Arc::new(AtomicUsize::new(0));
    b.spawn_reconnect(addr(1), {
        let attempts = attempts.clone();
        move || {
            attempts.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>("refused") }
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tried = attempts.load(Ordering::SeqCst);
    assert!(tried >= 3, "{tried} attempts in 2 s");
    tx.send_replace(set(vec![ep(2, 1)]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = attempts.load(Ordering::SeqCst);
    assert!(
        after <= tried + 1,
        "still reconnecting: {tried} then {after}"
    );
    // Back in the set later: it is tried again like any endpoint.
    tx.send_replace(set(vec![ep(1, 1), ep(2, 1)]));
    assert_eq!(b.endpoint_counts().ready, 2);
}

#[tokio::test(start_paused = true)]
async fn an_accrual_probe_that_cannot_connect_keeps_the_accrual_backoff() {
    let b = reconnecting(vec![ep(1, 1), ep(2, 1)], config(consecutive(1), 0));
    fail_once(&b, 1, Outcome::Failure);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut probe = pick_port(&b, 1);
    assert!(probe.is_probe());
    assert!(
        !probe.connect_failed(),
        "no reconnect: its next probe decides"
    );
    drop(probe);
    // Out for the next backoff (2 s), then probed again.
    tokio::time::sleep(Duration::from_millis(1900)).await;
    for _ in 0..100 {
        assert_eq!(request(&b, |_| Outcome::Success), Some(2), "still out");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut probe = pick_port(&b, 1);
    assert!(probe.is_probe());
    probe.complete(Outcome::Success);
    assert_eq!(b.endpoint_counts().ready, 2);
}

#[tokio::test(start_paused = true)]
async fn a_probe_resolves_probation_after_the_policy_dropped_accrual() {
    let b = reconnecting(vec![ep(1, 1), ep(2, 1)], config(consecutive(1), 0));
    fail_once(&b, 1, Outcome::Failure);
    b.reconfigure(config(Accrual::None, 0));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut probe = pick_port(&b, 1);
    // A failed answer cannot eject without accrual: the endpoint is back, not stuck on probation.
    probe.complete(Outcome::Failure);
    drop(probe);
    assert_eq!(b.endpoint_counts().ready, 2);
}
