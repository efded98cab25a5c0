use super::*;
use crate::{config::RetryBudget, connect::ConnectError, http::BoxError};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex,
};

fn status(code: u16) -> Response<Body> {
    let mut rsp = Response::new(http::empty());
    *rsp.status_mut() = StatusCode::from_u16(code).unwrap();
    rsp
}

fn grpc(code: u32) -> Response<Body> {
    let mut rsp = status(200);
    rsp.headers_mut()
        .insert("grpc-status", code.to_string().parse().unwrap());
    rsp
}

fn http_policy(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        conditions: Conditions::Http(vec![500..=599]),
        timeout: None,
        backoff: None,
    }
}

fn get() -> Request<Body> {
    Request::new(http::empty())
}

fn budget() -> Budget {
    Budget::new(RetryBudget::default())
}

fn chunks(n: usize, size: usize, trailers: Option<HeaderMap>) -> Body {
    let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = (0..n)
        .map(|i| Ok(Frame::data(Bytes::from(vec![i as u8; size]))))
        .collect();
    if let Some(t) = trailers {
        frames.push(Ok(Frame::trailers(t)));
    }
    http::boxed(StreamBody::new(futures_util::stream::iter(frames)))
}

#[test]
fn http_and_grpc_policies_from_the_proto() {
    use api::http_route::retry::{conditions::StatusRange, Conditions as HttpConditions};
    let ms = |n: i32| prost_types::Duration {
        seconds: 0,
        nanos: n * 1_000_000,
    };
    let http = api::http_route::Retry {
        max_retries: 3,
        max_request_bytes: 0,
        conditions: Some(HttpConditions {
            status_ranges: vec![
                StatusRange {
                    start: 502,
                    end: 504,
                },
                StatusRange {
                    start: 500,
                    end: 500,
                },
            ],
        }),
        timeout: Some(ms(300)),
        backoff: Some(api::ExponentialBackoff {
            min_backoff: Some(ms(25)),
            max_backoff: Some(ms(250)),
            jitter_ratio: 0.5,
            respect_retry_after_hint: false,
        }),
    };
    let p = RetryPolicy::from_http_proto(&http).expect("valid");
    assert_eq!(p.max_retries, 3);
    assert_eq!(p.max_request_bytes, 64 * 1024, "0 means Linkerd's 64 KiB");
    assert_eq!(p.conditions, Conditions::Http(vec![502..=504, 500..=500]));
    assert_eq!(p.timeout, Some(Duration::from_millis(300)));
    assert_eq!(
        p.backoff.map(|b| (b.min, b.max)),
        Some((Duration::from_millis(25), Duration::from_millis(250)))
    );

    let mut bad = http.clone();
    bad.conditions = Some(HttpConditions {
        status_ranges: vec![StatusRange {
            start: 504,
            end: 502,
        }],
    });
    assert_eq!(
        RetryPolicy::from_http_proto(&bad),
        Err(Error::StatusRange {
            start: 504,
            end: 502
        })
    );
    // No conditions: Linkerd's default, every 5xx.
    bad.conditions = None;
    assert_eq!(
        RetryPolicy::from_http_proto(&bad).unwrap().conditions,
        Conditions::Http(vec![500..=599])
    );
    let mut no_ranges = http.clone();
    no_ranges.conditions = Some(HttpConditions::default());
    assert_eq!(
        RetryPolicy::from_http_proto(&no_ranges).unwrap().conditions,
        Conditions::Http(vec![500..=599]),
        "no range: 5xx"
    );
    let mut bad_backoff = http;
    bad_backoff.backoff.as_mut().unwrap().max_backoff = None;
    assert!(matches!(
        RetryPolicy::from_http_proto(&bad_backoff),
        Err(Error::Backoff(_))
    ));

    let grpc = api::grpc_route::Retry {
        max_retries: 2,
        max_request_bytes: 1000,
        conditions: Some(api::grpc_route::retry::Conditions {
            cancelled: false,
            deadine_exceeded: true,
            resource_exhausted: false,
            internal: true,
            unavailable: true,
        }),
        timeout: Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        }),
        backoff: None,
    };
    assert_eq!(
        RetryPolicy::from_grpc_proto(&grpc),
        Err(Error::NegativeTimeout)
    );
    let grpc = api::grpc_route::Retry {
        timeout: None,
        ..grpc
    };
    let p = RetryPolicy::from_grpc_proto(&grpc).expect("valid");
    assert_eq!(p.max_request_bytes, 1000);
    let Conditions::Grpc(codes) = p.conditions else {
        panic!("grpc conditions");
    };
    let retried: Vec<u32> = (0..17).filter(|c| codes.contains(*c)).collect();
    assert_eq!(retried, vec![4, 13, 14]);
}

#[test]
fn grpc_conditions_read_trailers_only_answers() {
    let policy = RetryPolicy {
        conditions: Conditions::Grpc(GrpcCodes {
            unavailable: true,
            internal: true,
            ..GrpcCodes::default()
        }),
        ..http_policy(1)
    };
    let wants = |rsp: Response<Body>| policy.wants_retry(&Ok(rsp));
    assert!(wants(grpc(14)));
    assert!(wants(grpc(13)));
    assert!(!wants(grpc(0)), "OK");
    assert!(!wants(grpc(2)), "UNKNOWN is not listed");
    assert!(!wants(grpc(4)), "DEADLINE_EXCEEDED is not listed");
    assert!(wants(status(503)), "503 without grpc-status is UNAVAILABLE");
    assert!(wants(status(429)), "429 without grpc-status is UNAVAILABLE");
    assert!(!wants(status(500)), "500 without grpc-status is UNKNOWN");
    assert!(
        !wants(status(200)),
        "grpc-status in the trailers: not retried"
    );

    let without_unavailable = RetryPolicy {
        conditions: Conditions::Grpc(GrpcCodes {
            internal: true,
            ..GrpcCodes::default()
        }),
        ..http_policy(1)
    };
    assert!(!without_unavailable.wants_retry(&Ok(status(503))));
    // An error that never reached the application is retried under any conditions.
    let refused = crate::http::Error::from(ConnectError::Refused {
        addr: "127.0.0.1:9".parse().unwrap(),
    });
    assert!(without_unavailable.wants_retry(&Err(refused.into())));
}

/// Counts attempts; answers with `answer(n)` for the n-th (0-based).
fn counting(
    calls: Arc<AtomicUsize>,
    answer: impl Fn(usize) -> Response<Body> + Send + Sync + 'static,
) -> impl FnMut(Request<Body>) -> BoxFuture<'static, Result<Response<Body>, crate::http::Error>> {
    let answer = Arc::new(answer);
    move |req: Request<Body>| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        Box::pin(async move {
            // Read the body as a server would before answering.
            let _ = req.into_body().collect().await;
            Ok(answer(n))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn retries_until_success_and_counts_it() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counters = RetryCounters::default();
    let (answer, outcome) = send(
        &http_policy(3),
        &budget(),
        &counters,
        None,
        get(),
        counting(calls.clone(), |n| status(if n < 2 { 503 } else { 200 })),
    )
    .await;
    assert_eq!(answer.unwrap().status(), 200);
    assert_eq!(
        outcome,
        RetryOutcome {
            retries: 2,
            stop: Stop::Answered
        }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        counters.counts(),
        RetryCounts {
            requests: 2,
            successes: 1,
            ..RetryCounts::default()
        }
    );

    // A 4xx is not in the conditions: returned at once.
    let calls = Arc::new(AtomicUsize::new(0));
    let (answer, outcome) = send(
        &http_policy(3),
        &budget(),
        &counters,
        None,
        get(),
        counting(calls.clone(), |_| status(404)),
    )
    .await;
    assert_eq!(answer.unwrap().status(), 404);
    assert_eq!(outcome.stop, Stop::Answered);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Always failing: 1 + max_retries attempts, the last answer returned.
    let calls = Arc::new(AtomicUsize::new(0));
    let (answer, outcome) = send(
        &http_policy(2),
        &budget(),
        &counters,
        None,
        get(),
        counting(calls.clone(), |n| status(if n == 2 { 504 } else { 503 })),
    )
    .await;
    assert_eq!(answer.unwrap().status(), 504, "the last answer");
    assert_eq!(outcome.stop, Stop::LimitExceeded);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(counters.counts().limit_exceeded, 1);
}

/// The body each attempt received: data and trailers.
type Seen = Arc<Mutex<Vec<(Bytes, Option<HeaderMap>)>>>;

fn recording(
    seen: Seen,
    read_chunks: Option<usize>,
    answer: fn(usize) -> u16,
) -> impl FnMut(Request<Body>) -> BoxFuture<'static, Result<Response<Body>, crate::http::Error>> {
    move |req: Request<Body>| {
        let seen = seen.clone();
        Box::pin(async move {
            let mut body = req.into_body();
            let mut data = Vec::new();
            let mut trailers = None;
            let mut frames = 0;
            while read_chunks.is_none_or(|n| frames < n) {
                match body.frame().await {
                    Some(Ok(f)) => {
                        frames += 1;
                        match f.into_data() {
                            Ok(d) => data.extend_from_slice(&d),
                            Err(f) => trailers = f.into_trailers().ok(),
                        }
                    }
                    Some(Err(e)) => panic!("body error: {e}"),
                    None => break,
                }
            }
            let mut seen = seen.lock().unwrap();
            let n = seen.len();
            seen.push((Bytes::from(data), trailers));
            Ok(status(answer(n)))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_replays_the_whole_body_and_its_trailers() {
    let mut trailers = HeaderMap::new();
    trailers.insert("checksum", "abc".parse().unwrap());
    let seen: Seen = Arc::default();
    let req = Request::post("/").body(chunks(4, 1000, Some(trailers.clone())));
    let (answer, outcome) = send(
        &http_policy(2),
        &budget(),
        &RetryCounters::default(),
        None,
        req.unwrap(),
        recording(seen.clone(), None, |n| if n == 0 { 503 } else { 200 }),
    )
    .await;
    assert_eq!(answer.unwrap().status(), 200);
    assert_eq!(outcome.retries, 1);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0.len(), 4000);
    assert_eq!(
        seen[0], seen[1],
        "the retry carried the same bytes and trailers"
    );
    assert_eq!(seen[1].1.as_ref(), Some(&trailers));
}

#[tokio::test(start_paused = true)]
async fn an_answer_before_the_body_was_read_still_replays_all_of_it() {
    let seen: Seen = Arc::default();
    let req = Request::post("/").body(chunks(5, 100, None)).unwrap();
    // The first attempt answers 503 after reading 2 of 5 chunks; the second reads everything.
    let mut reads = [Some(2), None].into_iter();
    let inner = seen.clone();
    let attempt = move |req| {
        recording(inner.clone(), reads.next().flatten(), |n| {
            if n == 0 {
                503
            } else {
                200
            }
        })(req)
    };
    let (answer, _) = send(
        &http_policy(1),
        &budget(),
        &RetryCounters::default(),
        None,
        req,
        attempt,
    )
    .await;
    assert_eq!(answer.unwrap().status(), 200);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0.len(), 200);
    assert_eq!(seen[1].0.len(), 500, "kept part replayed, the rest read on");
    assert_eq!(&seen[1].0[..200], &seen[0].0[..]);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_bound_is_sent_exactly_once() {
    let counters = RetryCounters::default();
    // Declared: a 1 MiB POST with content-length.
    let calls = Arc::new(AtomicUsize::new(0));
    let big = Bytes::from(vec![7u8; 1024 * 1024]);
    let req = Request::post("/")
        .header(header::CONTENT_LENGTH, big.len())
        .body(http::boxed(Full::new(big)))
        .unwrap();
    let (answer, outcome) = send(
        &http_policy(3),
        &budget(),
        &counters,
        None,
        req,
        counting(calls.clone(), |_| status(503)),
    )
    .await;
    assert_eq!(answer.unwrap().status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(outcome.stop, Stop::BodyNotReplayable);

    // Streamed without a length: found to be too large while the first attempt sends it.
    let seen: Seen = Arc::default();
    let req = Request::post("/")
        .body(chunks(16, 64 * 1024, None))
        .unwrap();
    let (answer, outcome) = send(
        &http_policy(3),
        &budget(),
        &counters,
        None,
        req,
        recording(seen.clone(), None, |_| 503),
    )
    .await;
    assert_eq!(answer.unwrap().status(), 503);
    assert_eq!(outcome.stop, Stop::BodyNotReplayable);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "sent once");
    assert_eq!(seen[0].0.len(), 1024 * 1024, "and whole");
    assert_eq!(counters.counts().overflow, 2);
    assert_eq!(counters.counts().requests, 0);
}

/// Answers 503, noting when each attempt started.
fn failing_at(
    start: Instant,
    times: Arc<Mutex<Vec<Duration>>>,
) -> impl FnMut(Request<Body>) -> BoxFuture<'static, Result<Response<Body>, crate::http::Error>> {
    move |_req| {
        times.lock().unwrap().push(start.elapsed());
        Box::pin(async { Ok(status(503)) })
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_between_attempts_and_never_past_the_deadline() {
    let policy = RetryPolicy {
        backoff: Some(BackoffConfig {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
            jitter_ratio: 0.0,
        }),
        ..http_policy(3)
    };
    let start = Instant::now();
    let times = Arc::new(Mutex::new(Vec::new()));
    let attempt = failing_at(start, times.clone());
    let (_, outcome) = send(
        &policy,
        &budget(),
        &RetryCounters::default(),
        None,
        get(),
        attempt,
    )
    .await;
    assert_eq!(outcome.stop, Stop::LimitExceeded);
    assert_eq!(
        *times.lock().unwrap(),
        [0, 100, 300, 700].map(Duration::from_millis).to_vec()
    );

    // A deadline 250 ms away: the second wait (200 ms, due at 300 ms) would pass it.
    let start = Instant::now();
    let times = Arc::new(Mutex::new(Vec::new()));
    let attempt = failing_at(start, times.clone());
    let (answer, outcome) = send(
        &policy,
        &budget(),
        &RetryCounters::default(),
        Some(start + Duration::from_millis(250)),
        get(),
        attempt,
    )
    .await;
    assert_eq!(answer.unwrap().status(), 503);
    assert_eq!(outcome.stop, Stop::Deadline);
    assert_eq!(
        *times.lock().unwrap(),
        [0, 100].map(Duration::from_millis).to_vec()
    );
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(100),
        "returned at once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_attempt_times_out_and_is_retried() {
    let policy = RetryPolicy {
        timeout: Some(Duration::from_secs(1)),
        ..http_policy(1)
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let attempt = {
        let calls = calls.clone();
        move |_req| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n == 0 {
                    std::future::pending::<()>().await;
                }
                Ok(status(200))
            }) as BoxFuture<'static, _>
        }
    };
    let start = Instant::now();
    let (answer, outcome) = send(
        &policy,
        &budget(),
        &RetryCounters::default(),
        None,
        get(),
        attempt,
    )
    .await;
    assert_eq!(answer.unwrap().status(), 200);
    assert_eq!(outcome.retries, 1);
    assert_eq!(start.elapsed(), Duration::from_secs(1));

    // Both hang: the timeout is the answer.
    let (answer, outcome) = send(
        &policy,
        &budget(),
        &RetryCounters::default(),
        None,
        get(),
        |_req| Box::pin(std::future::pending()) as BoxFuture<'static, _>,
    )
    .await;
    assert!(matches!(answer, Err(Failure::Timeout(t)) if t == Duration::from_secs(1)));
    assert_eq!(outcome.stop, Stop::LimitExceeded);
}

/// Every attempt fails for a minute at 50 requests per second, each allowed 3 retries: the
/// budget keeps retries to `ratio × requests + min_per_second × seconds` (plus one window).
#[tokio::test(start_paused = true)]
async fn the_budget_bounds_amplification_under_total_failure() {
    let settings = RetryBudget::default();
    let budget = budget();
    let counters = RetryCounters::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (rate, secs) = (50u64, 60u64);
    for _ in 0..rate * secs {
        let _ = send(
            &http_policy(3),
            &budget,
            &counters,
            None,
            get(),
            counting(calls.clone(), |_| status(503)),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1000 / rate)).await;
    }
    let requests = (rate * secs) as f64;
    let retries = counters.counts().requests as f64;
    let bound = settings.ratio * requests
        + f64::from(settings.min_per_second) * (secs as f64 + settings.ttl.as_secs_f64());
    assert!(
        retries <= bound,
        "{retries} retries over a bound of {bound}"
    );
    assert!(
        retries >= settings.ratio * requests,
        "the budget was used: {retries}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst) as f64,
        requests + retries,
        "every retry counted was sent"
    );
    assert!(counters.counts().overflow > 0);
}

/// 30 % of answers fail at random (independently): each retry fails again 30 % of the time, so
/// `n` retries leave `0.3^(n+1)` of requests failed: 4 retries are what ≥ 99.5 % takes
/// (3 retries give 99.19 % on average). The bursts stay under the budget's floor.
#[tokio::test(start_paused = true)]
async fn retries_turn_30_percent_failures_into_over_99_5_percent_success() {
    let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(0x5eed)));
    let calls = Arc::new(AtomicUsize::new(0));
    let budget = budget();
    let counters = RetryCounters::default();
    let requests = 2000;
    let mut ok = 0;
    for _ in 0..requests {
        let attempt = {
            let rng = rng.clone();
            let calls = calls.clone();
            move |_req| {
                calls.fetch_add(1, Ordering::SeqCst);
                let fail = rng.lock().unwrap().f64() < 0.3;
                Box::pin(async move { Ok(status(if fail { 500 } else { 200 })) })
                    as BoxFuture<'static, _>
            }
        };
        let (answer, _) = send(&http_policy(4), &budget, &counters, None, get(), attempt).await;
        if answer.unwrap().status() == 200 {
            ok += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let success = f64::from(ok) / f64::from(requests);
    let amplification = calls.load(Ordering::SeqCst) as f64 / f64::from(requests);
    assert!(success >= 0.995, "success {success}");
    assert!(amplification <= 1.5, "amplification {amplification}");
    assert_eq!(counters.counts().overflow, 0, "the budget never ran out");
}
