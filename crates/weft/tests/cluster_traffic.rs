//! Outbound traffic policy end to end on a two-node testbed cluster (root only; skipped locally
//! without root, failing under `CI=true`): route documents written into the control plane's store
//! steer real requests between `weft run` pods. The backends and the client are sockets of the
//! test process made inside the pods' namespaces (`support::pods`), so the test can make a backend
//! fail or slow down and count exactly what it received; everything between them — iptables,
//! both sidecars, mTLS, the control plane — is the real thing.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use support::eventually;
use support::pod_mesh::{assert_all_ok, write_doc, Mesh};
use support::pods::{get, grpc, PodClient, PodNet, Tally};
use weft_testbed::mesh::{metric_sum, Workload};
use weft_testbed::{require_root, serial};

const BOOKS_IP: [u8; 4] = [198, 19, 0, 20];

fn books() -> SocketAddr {
    SocketAddr::from((BOOKS_IP, 80))
}

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: books, namespace: default}
spec:
  selector: {app: books}
  clusterIP: 198.19.0.20
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: books-canary, namespace: default}
spec:
  selector: {app: books-canary}
  clusterIP: 198.19.0.21
  ports: [{name: http, port: 80, targetPort: http}]
";

fn share(t: &Tally, backend: &str) -> f64 {
    t.count(|a| a.backend == backend) as f64 / t.total() as f64
}

const SPLIT_90_10: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: books-canary, namespace: default}
spec:
  parentRefs: [{group: core, kind: Service, name: books, port: 80}]
  rules:
  - matches: [{headers: [{name: x-canary, value: 'true'}]}]
    backendRefs: [{name: books-canary, port: 80}]
  - backendRefs:
    - {name: books, port: 80, weight: 90}
    - {name: books-canary, port: 80, weight: 10}
";

/// A weighted 90/10 split lands within ±2 % over 10,000 requests; a header match sends only
/// matching requests to the canary; new weights apply within 1 s with no failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_header_match_and_weight_change() {
    let _serial = serial();
    let Some(root) = require_root(&[]) else {
        return;
    };
    let mut mesh = Mesh::start("traffic-split", root, SERVICES).await;
    mesh.backend("books-v1", "books").await;
    mesh.backend("books-canary", "books-canary").await;
    let authority = "books.default.svc.cluster.local";
    mesh.until(
        &mesh.client,
        books(),
        "books answers through the mesh",
        || get(authority, "/"),
        |a| a.status == 200 && a.backend == "books-v1",
    )
    .await;

    write_doc(&mesh.store, "routes.yaml", SPLIT_90_10);
    let canary = move || {
        let mut r = get(authority, "/");
        r.headers_mut().insert("x-canary", "true".parse().unwrap());
        r
    };
    mesh.until(
        &mesh.client,
        books(),
        "the header route is in force",
        canary,
        |a| a.backend == "books-canary",
    )
    .await;

    // 1. 10,000 requests without the header: 90/10 within ±2 %.
    let t = mesh
        .client
        .run(books(), 16, 10_000, move |_| get(authority, "/"))
        .await;
    assert_all_ok(&t, "split", &mesh);
    let c = share(&t, "books-canary");
    assert!(
        (0.08..=0.12).contains(&c),
        "canary got {:.2} % of 10,000 requests: {:?}",
        c * 100.0,
        t.by_backend()
    );

    // 2. With the header: the canary only.
    let t = mesh.client.run(books(), 4, 500, move |_| canary()).await;
    assert_all_ok(&t, "header match", &mesh);
    assert_eq!(
        t.by_backend().get("books-canary"),
        Some(&500),
        "{:?}",
        t.by_backend()
    );

    // 3. New weights under load: all traffic to the canary within 1 s, nothing fails.
    let load = {
        let client = PodClient::new(PodNet::open(&mesh.client_pod.netns().unwrap()));
        tokio::spawn(async move {
            client
                .run_paced(books(), 3_000, 500, move |_| get(authority, "/"))
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written = write_doc(
        &mesh.store,
        "routes.yaml",
        &SPLIT_90_10
            .replace("weight: 90", "weight: 0")
            .replace("weight: 10", "weight: 100"),
    );
    let t = load.await.expect("load");
    assert_all_ok(&t, "weight change", &mesh);
    // The answers are in send order: the last one from books-v1 marks when the change applied.
    let last_v1 = t
        .answers
        .iter()
        .rposition(|a| a.backend == "books-v1")
        .expect("books-v1 answered before the change");
    let applied_after = t.answers[last_v1].sent.saturating_duration_since(written);
    assert!(
        applied_after <= Duration::from_secs(1),
        "books-v1 still answered a request sent {applied_after:?} after the new weights were written"
    );
    assert!(
        t.answers[last_v1 + 1..]
            .iter()
            .all(|a| a.backend == "books-canary"),
        "{:?}",
        t.by_backend()
    );
}

/// Retries recover a backend that fails 30 % of requests at ≤ 1.5× its load; with every answer
/// failing the retry budget bounds the amplification; a 1 MiB POST is never replayed; a request
/// timeout answers 504 in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_budget_and_timeouts() {
    let _serial = serial();
    let Some(root) = require_root(&[]) else {
        return;
    };
    let mut mesh = Mesh::start("traffic-retries", root, SERVICES).await;
    let v1 = mesh.backend("books-v1", "books").await;
    let authority = "books.default.svc.cluster.local";
    mesh.until(
        &mesh.client,
        books(),
        "books answers through the mesh",
        || get(authority, "/"),
        |a| a.status == 200,
    )
    .await;
    write_doc(
        &mesh.store,
        "routes.yaml",
        "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: books
  namespace: default
  annotations:
    retry.linkerd.io/http: 5xx
    retry.linkerd.io/limit: '3'
spec:
  parentRefs: [{group: core, kind: Service, name: books, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /sleep}}]
    timeouts: {request: 200ms}
  - matches: [{path: {type: PathPrefix, value: /}}]
",
    );
    mesh.until(
        &mesh.client,
        books(),
        "the timeout route is in force",
        || get(authority, "/sleep/1000"),
        |a| a.status == 504,
    )
    .await;

    // 1. A request timeout answers 504 with l5d-proxy-error within 200 ms ± 50 ms.
    for _ in 0..5 {
        let a = mesh
            .client
            .send(books(), get(authority, "/sleep/1000"))
            .await;
        assert_eq!(a.status, 504, "{a:?}");
        assert!(!a.proxy_error.is_empty(), "{a:?}");
        assert!(
            (Duration::from_millis(150)..=Duration::from_millis(250)).contains(&a.elapsed),
            "timed out after {:?}",
            a.elapsed
        );
    }

    // 2. 30 % of answers are 500: the client sees ≥ 99.5 % success, the backend ≤ 1.5× the load.
    mesh.b(v1).knobs.fail_percent.store(30, Ordering::SeqCst);
    let before = mesh.b(v1).received();
    let t = mesh
        .client
        .run_paced(books(), 1_000, 50, move |_| get(authority, "/"))
        .await;
    let ok = t.count(|a| a.status == 200);
    let seen = mesh.b(v1).received() - before;
    assert!(
        ok * 1000 >= 995 * t.total(),
        "{ok} of {} succeeded",
        t.total()
    );
    assert!(
        seen * 2 <= 3 * t.total() as u64,
        "backend saw {seen} for {} requests",
        t.total()
    );
    // The client's proxy counted them as the route's retries.
    let m = mesh.client_pod.metrics().await.expect("client metrics");
    let retried = metric_sum(
        &m,
        "outbound_http_route_retry_requests_total",
        &[("route_name", "books")],
    );
    assert!(retried > 0.0, "no retries counted for route books:\n{m}");

    // 3. A POST with a 1 MiB body that fails is answered with the failure, and never replayed.
    mesh.b(v1).knobs.fail_percent.store(100, Ordering::SeqCst);
    let bodies = mesh.b(v1).bodies();
    let big = Request::post("/")
        .header(hyper::header::HOST, authority)
        .body(Full::new(Bytes::from(vec![7u8; 1 << 20])))
        .unwrap();
    let a = mesh.client.send(books(), big).await;
    assert_eq!(a.status, 500, "{a:?}");
    assert_eq!(
        mesh.b(v1).bodies() - bodies,
        1,
        "the 1 MiB POST was replayed"
    );

    // 4. Every answer fails: retries stay within the budget (20 % of requests + 10/s, over the
    // budget's 10 s window), far below the 4× the retry limit alone would allow.
    let before = mesh.b(v1).received();
    let started = Instant::now();
    let t = mesh
        .client
        .run_paced(books(), 1_000, 100, move |_| get(authority, "/"))
        .await;
    let secs = started.elapsed().as_secs_f64();
    let seen = (mesh.b(v1).received() - before) as f64;
    let originals = t.total() as f64;
    let bound = originals * 1.2 + 10.0 * (secs + 10.0);
    assert!(
        seen <= bound,
        "backend saw {seen} requests for {originals} in {secs:.1} s (budget bound {bound:.0})"
    );
    assert!(seen > originals, "no retry at all: {seen} for {originals}");
}

const CHAOS_TRY_TIMEOUT_AND_GRPC: &str = "\
apiVersion: extensions.weft.dev/v1alpha1
kind: FaultInjection
metadata: {name: ten-percent, namespace: default}
spec:
  status: 503
  message: chaos
  ratio: {numerator: 10, denominator: 100}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: books-chaos, namespace: default}
spec:
  parentRefs: [{group: core, kind: Service, name: books, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /chaos}}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: extensions.weft.dev, kind: FaultInjection, name: ten-percent}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: books
  namespace: default
  annotations:
    retry.linkerd.io/http: 5xx
    retry.linkerd.io/limit: '2'
    retry.linkerd.io/timeout: 100ms
spec:
  parentRefs: [{group: core, kind: Service, name: books, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: books-rpc
  namespace: default
  annotations: {timeout.linkerd.io/idle: 400ms}
spec:
  parentRefs: [{group: core, kind: Service, name: books-canary, port: 80}]
  rules:
  - backendRefs: [{name: books-canary, port: 80}]
";

/// A hung endpoint is passed over by the per-try timeout; fault injection at 10 % fails 10 % ±
/// 2 % of requests, marked, and those never reach a backend; a gRPC call's `grpc-timeout` ends
/// it with `DEADLINE_EXCEEDED` in time, counted in the gRPC route metrics, and so does the
/// route's idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeout_fault_injection_and_grpc_deadline() {
    let _serial = serial();
    let Some(root) = require_root(&[]) else {
        return;
    };
    let mut mesh = Mesh::start("traffic-faults", root, SERVICES).await;
    let fast = mesh.backend("books-1", "books").await;
    let hung = mesh.backend("books-2", "books").await;
    let canary = mesh.backend("books-canary", "books-canary").await;
    let authority = "books.default.svc.cluster.local";
    let canary_addr = SocketAddr::from(([198, 19, 0, 21], 80));
    let canary_authority = "books-canary.default.svc.cluster.local";
    write_doc(&mesh.store, "routes.yaml", CHAOS_TRY_TIMEOUT_AND_GRPC);
    mesh.until(
        &mesh.client,
        books(),
        "the fault injection route is in force",
        || get(authority, "/chaos"),
        |a| a.proxy_error.contains("chaos"),
    )
    .await;

    // 1. books-2 hangs: each try on it is cut at 100 ms and retried on books-1.
    mesh.b(hung).knobs.delay_ms.store(5_000, Ordering::SeqCst);
    let t = mesh
        .client
        .run(books(), 4, 200, move |_| get(authority, "/"))
        .await;
    assert_all_ok(&t, "with books-2 hung", &mesh);
    assert_eq!(share(&t, "books-1"), 1.0, "{:?}", t.by_backend());
    let slowest = t
        .answers
        .iter()
        .map(|a| a.elapsed)
        .max()
        .unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(1),
        "slowest answer {slowest:?}"
    );
    assert!(
        mesh.b(hung).received() > 0,
        "the hung endpoint was never tried"
    );
    mesh.b(hung).knobs.delay_ms.store(0, Ordering::SeqCst);

    // 2. Fault injection: 10 % ± 2 % injected (503, marked), and those never reach a backend.
    let received = |mesh: &Mesh| mesh.b(fast).received() + mesh.b(hung).received();
    let before = received(&mesh);
    let t = mesh
        .client
        .run(books(), 8, 5_000, move |_| get(authority, "/chaos"))
        .await;
    let injected =
        t.count(|a| a.status == 503 && a.proxy_error.contains("injected failure: chaos"));
    let ok = t.count(|a| a.status == 200 && !a.backend.is_empty());
    assert_eq!(
        injected + ok,
        t.total(),
        "answers other than 200 or injected: {:?}",
        t.failures()
    );
    let ratio = injected as f64 / t.total() as f64;
    assert!(
        (0.08..=0.12).contains(&ratio),
        "injected {:.2} %",
        ratio * 100.0
    );
    assert_eq!(
        received(&mesh) - before,
        ok as u64,
        "injected requests reached a backend"
    );

    // 3. gRPC: the route is gRPC (its metrics count the call); a grpc-timeout of 200 ms on a
    // call the server holds for 2 s ends in DEADLINE_EXCEEDED after 200 ms ± 50 ms.
    eventually(
        "the gRPC route counts a call",
        Duration::from_secs(20),
        || async {
            let a = mesh
                .client
                .send_h2(
                    canary_addr,
                    grpc(canary_authority, "/weft.Books/Get", Some("2S")),
                )
                .await;
            let m = mesh.client_pod.metrics().await.ok()?;
            let counted = metric_sum(
                &m,
                "outbound_grpc_route_request_statuses_total",
                &[("route_name", "books-rpc")],
            );
            (a.status == 200 && a.backend == "books-canary" && counted > 0.0).then_some(())
        },
    )
    .await;
    // A call the server holds for 2 s ends after `after` ± 50 ms with DEADLINE_EXCEEDED.
    let held = |grpc_timeout: &'static str, after: u64, why: &'static str| {
        let client = &mesh.client;
        async move {
            let mut req = grpc(canary_authority, "/weft.Books/Get", Some(grpc_timeout));
            req.headers_mut().insert(
                "x-delay-ms",
                hyper::header::HeaderValue::from_static("2000"),
            );
            let a = client.send_h2(canary_addr, req).await;
            assert_eq!(
                (a.status, a.grpc_status.as_str()),
                (200, "4"),
                "{why}: {a:?}"
            );
            let bound = Duration::from_millis(after - 50)..=Duration::from_millis(after + 50);
            assert!(bound.contains(&a.elapsed), "{why}: after {:?}", a.elapsed);
        }
    };
    for _ in 0..5 {
        held("200m", 200, "grpc-timeout").await;
    }
    // The route's idle timeout (400 ms): no frame either way for that long ends the call too.
    for _ in 0..3 {
        held("5S", 400, "idle timeout").await;
    }
    assert!(mesh.b(canary).received() >= 9);
}

const BOOKS_FAILURE_ACCRUAL: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: books
  namespace: default
  annotations:
    balancer.linkerd.io/failure-accrual: consecutive
    balancer.linkerd.io/failure-accrual-consecutive-max-failures: '3'
    balancer.linkerd.io/failure-accrual-consecutive-min-penalty: 1s
    balancer.linkerd.io/failure-accrual-consecutive-max-penalty: 2s
    retry.linkerd.io/http: 5xx
spec:
  selector: {app: books}
  clusterIP: 198.19.0.20
  ports: [{name: http, port: 80, targetPort: http}]
";

/// Peak-EWMA: an endpoint 50 ms slower than the other two gets ≤ 10 % of a steady load. Failure
/// accrual: a killed endpoint is ejected (requests stop failing while it is down) and admitted
/// again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_aware_balancing_and_failure_accrual() {
    let _serial = serial();
    let Some(root) = require_root(&[]) else {
        return;
    };
    let mut mesh = Mesh::start("traffic-balance", root, SERVICES).await;
    std::fs::write(mesh.store.join("services.yaml"), BOOKS_FAILURE_ACCRUAL).expect("store");
    let fast1 = mesh.backend("books-1", "books").await;
    let fast2 = mesh.backend("books-2", "books").await;
    let slow = mesh.backend("books-3", "books").await;
    let authority = "books.default.svc.cluster.local";
    // Load until each endpoint has answered: a new endpoint starts at the default RTT (30 ms)
    // against the first one's measured ~1 ms, so it is tried once its estimate has decayed.
    eventually(
        "all three endpoints answer",
        Duration::from_secs(60),
        || async {
            mesh.client
                .run(books(), 8, 400, move |_| get(authority, "/"))
                .await;
            (mesh.b(fast1).received() > 0
                && mesh.b(fast2).received() > 0
                && mesh.b(slow).received() > 0)
                .then_some(())
        },
    )
    .await;

    // 1. Steady load; books-3 answers 50 ms later than the others.
    mesh.b(slow).knobs.delay_ms.store(50, Ordering::SeqCst);
    let before = mesh.b(slow).received();
    let t = mesh
        .client
        .run(books(), 8, 3_000, move |_| get(authority, "/"))
        .await;
    assert_all_ok(&t, "steady load", &mesh);
    let on_slow = share(&t, "books-3");
    assert!(
        on_slow <= 0.10,
        "the slow endpoint got {:.1} % of requests ({} received): {:?}",
        on_slow * 100.0,
        mesh.b(slow).received() - before,
        t.by_backend()
    );
    mesh.b(slow).knobs.delay_ms.store(0, Ordering::SeqCst);

    // 2. books-1 dies: it is ejected (the balancer shows it pending), and with retries on the
    // service no request fails meanwhile, probes to it included.
    mesh.kill(fast1);
    let t = mesh
        .client
        .run_paced(books(), 500, 100, move |_| get(authority, "/"))
        .await;
    assert_all_ok(&t, "with books-1 down", &mesh);
    eventually("books-1 is ejected", Duration::from_secs(10), || async {
        let pending = balancer_endpoints(&mesh.client_pod, "pending").await?;
        let ready = balancer_endpoints(&mesh.client_pod, "ready").await?;
        (pending == 1.0 && ready == 2.0).then_some(())
    })
    .await;

    // 3. books-1 comes back: a probe finds it healthy and it takes requests again.
    mesh.restart(fast1);
    eventually(
        "books-1 is admitted again",
        Duration::from_secs(15),
        || async {
            mesh.client.send(books(), get(authority, "/")).await;
            (mesh.b(fast1).received() > 5).then_some(())
        },
    )
    .await;
    eventually(
        "no endpoint is pending",
        Duration::from_secs(10),
        || async { (balancer_endpoints(&mesh.client_pod, "pending").await? == 0.0).then_some(()) },
    )
    .await;
}

/// The client proxy's `outbound_http_balancer_endpoints` of the `books` backend in `state`.
async fn balancer_endpoints(pod: &Workload, state: &str) -> Option<f64> {
    let m = pod.metrics().await.ok()?;
    Some(metric_sum(
        &m,
        "outbound_http_balancer_endpoints",
        &[("endpoint_state", state), ("backend_name", "books")],
    ))
}
