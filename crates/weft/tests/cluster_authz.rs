//! Inbound authorization end to end on a two-node testbed cluster (root only; skipped locally
//! without root, failing under `CI=true`): `Server`, `AuthorizationPolicy`,
//! `MeshTLSAuthentication`, `NetworkAuthentication`, inbound `HTTPRoute`s, the default inbound
//! policy and `HTTPLocalRateLimitPolicy`, written into the control plane's store, decide which
//! real clients reach a backend. Meshed clients are `weft run` pods with their own identities (a
//! workload's name is its service account); the unmeshed client is a socket in a node's own
//! namespace, whose connections arrive in plaintext. The backend's proxy learns its policy over
//! `InboundServerPolicies.WatchPort` and its `/metrics` must count every decision.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::eventually;
use support::pod_mesh::{assert_all_ok, write_doc, Mesh};
use support::pods::{get, Answer, PodClient};
use weft_testbed::mesh::metric_sum;
use weft_testbed::{require_root, serial};

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: books, namespace: default}
spec:
  selector: {app: books}
  clusterIP: 198.19.0.30
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: shelf, namespace: default}
spec:
  selector: {app: shelf}
  clusterIP: 198.19.0.31
  ports: [{name: http, port: 80, targetPort: http}]
";

const BOOKS: &str = "books.default.svc.cluster.local";
const SHELF: &str = "shelf.default.svc.cluster.local";

fn books() -> SocketAddr {
    SocketAddr::from(([198, 19, 0, 30], 80))
}

fn shelf() -> SocketAddr {
    SocketAddr::from(([198, 19, 0, 31], 80))
}

fn identity(sa: &str) -> String {
    format!("{sa}.default.serviceaccount.identity.weft.cluster.local")
}

/// The `books-http` Server: the books workloads' port `http`, HTTP/1.
const BOOKS_SERVER: &str = "\
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: books-http, namespace: default}
spec:
  podSelector: {matchLabels: {app: books}}
  port: http
  proxyProtocol: HTTP/1
";

/// `books-http` open to the mesh identities of the service accounts `sas` only.
fn only_service_accounts(sas: &[&str]) -> String {
    let refs: Vec<String> = sas
        .iter()
        .map(|sa| format!("{{kind: ServiceAccount, name: {sa}}}"))
        .collect();
    format!(
        "{BOOKS_SERVER}---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {{name: books-clients, namespace: default}}
spec:
  identityRefs: [{}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: books-authz, namespace: default}}
spec:
  targetRef: {{group: policy.linkerd.io, kind: Server, name: books-http}}
  requiredAuthenticationRefs:
  - {{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: books-clients}}
",
        refs.join(", ")
    )
}

/// `books-http` open to clients in `cidr` only (meshed or not).
fn only_network(cidr: &str) -> String {
    format!(
        "{BOOKS_SERVER}---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {{name: books-net, namespace: default}}
spec:
  networks: [{{cidr: '{cidr}'}}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: books-authz, namespace: default}}
spec:
  targetRef: {{group: policy.linkerd.io, kind: Server, name: books-http}}
  requiredAuthenticationRefs:
  - {{group: policy.linkerd.io, kind: NetworkAuthentication, name: books-net}}
"
    )
}

fn denied(a: &Answer) -> bool {
    a.status == 403 && !a.proxy_error.is_empty()
}

/// Sends `n` requests one after another and returns their statuses (with the first failure's
/// error, for messages).
async fn statuses(client: &PodClient, addr: SocketAddr, n: usize, path: &str) -> Vec<Answer> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(client.send(addr, get(BOOKS, path)).await);
    }
    out
}

/// An identity outside a MeshTLSAuthentication is denied (403 with `l5d-proxy-error`), one
/// inside is allowed, a forged `l5d-client-id` changes nothing, an unmeshed client is denied;
/// then a NetworkAuthentication admits one node's pod subnet and refuses the other's. The
/// backend's proxy counts each decision under the Server's and the policy's names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_tls_identities_and_networks() {
    let _serial = serial();
    let Some(root) = require_root(&[]) else {
        return;
    };
    let mut mesh = Mesh::start("authz-identity", root, SERVICES).await;
    mesh.backend("books-v1", "books").await;
    // `client` runs on node 0, `intruder` on node 1 (the backend's node).
    let intruder = mesh.client_pod("intruder", 1).await;
    mesh.until(
        &mesh.client,
        books(),
        "books answers",
        || get(BOOKS, "/"),
        |a| a.status == 200,
    )
    .await;
    mesh.until(
        &intruder,
        books(),
        "books answers the intruder",
        || get(BOOKS, "/"),
        |a| a.status == 200,
    )
    .await;

    write_doc(
        &mesh.store,
        "policy.yaml",
        &only_service_accounts(&["client"]),
    );
    mesh.until(
        &intruder,
        books(),
        "the intruder is denied",
        || get(BOOKS, "/"),
        denied,
    )
    .await;
    let a = intruder.send(books(), get(BOOKS, "/")).await;
    assert!(
        a.proxy_error.contains("books-http") && a.proxy_error.contains(&identity("intruder")),
        "the error names the server and the client: {:?}",
        a.proxy_error
    );
    let before = mesh.b(0).received();
    let t = mesh.client.run(books(), 2, 200, |_| get(BOOKS, "/")).await;
    assert_all_ok(&t, "the allowed identity", &mesh);

    // A forged header is not an identity.
    let mut forged = get(BOOKS, "/");
    let client_id = identity("client");
    forged
        .headers_mut()
        .insert("l5d-client-id", client_id.parse().unwrap());
    let a = intruder.send(books(), forged).await;
    assert!(denied(&a), "a forged l5d-client-id must not pass: {a:?}");

    // Plaintext from outside the mesh, straight to the pod.
    let pod = SocketAddr::from((mesh.backends[0].0.ip, 8080));
    let unmeshed = mesh.unmeshed_client(0);
    let a = unmeshed.send(pod, get(BOOKS, "/")).await;
    assert!(
        denied(&a),
        "an unauthenticated client must be denied: {a:?}"
    );
    assert_eq!(
        mesh.b(0).received(),
        before + 200,
        "denied requests never reach the application"
    );

    let m = mesh.backends[0].0.metrics().await.expect("books metrics");
    let allowed = metric_sum(
        &m,
        "inbound_http_authz_allow_total",
        &[
            ("srv_kind", "server"),
            ("srv_name", "books-http"),
            ("authz_kind", "authorizationpolicy"),
            ("authz_name", "books-authz"),
            ("client_id", &client_id),
        ],
    );
    assert!(allowed >= 200.0, "allowed requests counted: {allowed}\n{m}");
    let denials = metric_sum(
        &m,
        "inbound_http_authz_deny_total",
        &[("srv_name", "books-http")],
    );
    assert!(denials >= 3.0, "denials counted: {denials}\n{m}");

    // Networks: node 1's pods in, node 0's out.
    let node1 = mesh.cluster.node(1).pod_subnet();
    write_doc(&mesh.store, "policy.yaml", &only_network(&node1));
    mesh.until(
        &intruder,
        books(),
        "node 1's subnet is admitted",
        || get(BOOKS, "/"),
        |a| a.status == 200,
    )
    .await;
    mesh.until(
        &mesh.client,
        books(),
        "node 0's subnet is refused",
        || get(BOOKS, "/"),
        denied,
    )
    .await;
    for a in statuses(&intruder, books(), 20, "/").await {
        assert_eq!(a.status, 200, "node 1 stays admitted: {a:?}");
    }
}

const ROUTES: &str = "
---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: books-healthz, namespace: default}
spec:
  parentRefs: [{group: policy.linkerd.io, kind: Server, name: books-http}]
  rules: [{matches: [{path: {type: Exact, value: /healthz}}]}]
---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: books-all, namespace: default}
spec:
  parentRefs: [{group: policy.linkerd.io, kind: Server, name: books-http}]
  rules: [{matches: [{path: {type: PathPrefix, value: /}}]}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: everyone, namespace: default}
spec:
  networks: [{cidr: 0.0.0.0/0}, {cidr: '::/0'}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: healthz-open, namespace: default}
spec:
  targetRef: {group: policy.linkerd.io, kind: HTTPRoute, name: books-healthz}
  requiredAuthenticationRefs: [{group: policy.linkerd.io, kind: NetworkAuthentication, name: everyone}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: any-mesh-client, namespace: default}
spec:
  identities: ['*']
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: books-mtls, namespace: default}
spec:
  targetRef: {group: policy.linkerd.io, kind: HTTPRoute, name: books-all}
  requiredAuthenticationRefs: [{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: any-mesh-client}]
";

fn namespace_default_policy(policy: &str) -> String {
    format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: default
  annotations: {{config.linkerd.io/default-inbound-policy: {policy}}}
"
    )
}

/// A route-level policy opens `/healthz` to plaintext while `/` stays mTLS-only (and `weft
/// authz` shows each route's authorization); the `deny`
/// default (a Namespace annotation) blocks a workload no Server selects, and `audit` lets its
/// requests through and counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_policy_and_default_policies() {
    let _serial = serial();
    let Some(root) = require_root(&[]) else {
        return;
    };
    let mut mesh = Mesh::start("authz-routes", root, SERVICES).await;
    mesh.backend("books-v1", "books").await;
    mesh.backend("shelf-v1", "shelf").await;
    mesh.until(
        &mesh.client,
        books(),
        "books answers",
        || get(BOOKS, "/"),
        |a| a.status == 200,
    )
    .await;
    mesh.until(
        &mesh.client,
        shelf(),
        "shelf answers",
        || get(SHELF, "/"),
        |a| a.status == 200,
    )
    .await;

    write_doc(
        &mesh.store,
        "policy.yaml",
        &format!("{BOOKS_SERVER}{ROUTES}"),
    );
    let pod = SocketAddr::from((mesh.backends[0].0.ip, 8080));
    let unmeshed = mesh.unmeshed_client(0);
    mesh.until(
        &unmeshed,
        pod,
        "`/` refuses plaintext",
        || get(BOOKS, "/"),
        denied,
    )
    .await;
    let a = unmeshed.send(pod, get(BOOKS, "/healthz")).await;
    assert_eq!(
        a.status,
        200,
        "`/healthz` is open to plaintext: {a:?}\n{}",
        mesh.logs()
    );
    let a = mesh.client.send(books(), get(BOOKS, "/")).await;
    assert_eq!(a.status, 200, "a meshed client passes `/`: {a:?}");
    let a = mesh.client.send(books(), get(BOOKS, "/healthz")).await;
    assert_eq!(a.status, 200, "and `/healthz`: {a:?}");
    let m = mesh.backends[0].0.metrics().await.expect("books metrics");
    let route_allow = metric_sum(
        &m,
        "inbound_http_authz_allow_total",
        &[
            ("route_name", "books-healthz"),
            ("authz_name", "healthz-open"),
        ],
    );
    assert!(
        route_allow >= 2.0,
        "route-level allows counted: {route_allow}\n{m}"
    );
    let route_deny = metric_sum(
        &m,
        "inbound_http_authz_deny_total",
        &[("route_name", "books-all"), ("srv_name", "books-http")],
    );
    assert!(
        route_deny >= 1.0,
        "route-level denials counted: {route_deny}\n{m}"
    );

    // `weft authz` shows why: per route, who is admitted.
    let api = mesh.control.api.to_string();
    let shown = mesh
        .control
        .pod
        .netns()
        .exec(&[
            support::cluster::WEFT,
            "authz",
            "default/books-v1",
            "--api-addr",
            &api,
        ])
        .expect("weft authz");
    let row = |route: &str| {
        shown
            .lines()
            .find(|l| l.contains(route))
            .unwrap_or_default()
    };
    assert!(
        row("HTTPRoute books-healthz").contains("AuthorizationPolicy healthz-open")
            && row("HTTPRoute books-healthz").contains("any (plaintext too)"),
        "weft authz:\n{shown}"
    );
    assert!(
        row("HTTPRoute books-all").contains("AuthorizationPolicy books-mtls")
            && row("HTTPRoute books-all").contains("mTLS: *"),
        "weft authz:\n{shown}"
    );

    // No Server selects shelf: the namespace's default decides.
    write_doc(
        &mesh.store,
        "namespace.yaml",
        &namespace_default_policy("deny"),
    );
    mesh.until(
        &mesh.client,
        shelf(),
        "`deny` blocks shelf",
        || get(SHELF, "/"),
        denied,
    )
    .await;
    let a = mesh.client.send(books(), get(BOOKS, "/")).await;
    assert_eq!(a.status, 200, "books has its own Server: {a:?}");

    write_doc(
        &mesh.store,
        "namespace.yaml",
        &namespace_default_policy("audit"),
    );
    mesh.until(
        &mesh.client,
        shelf(),
        "`audit` lets shelf through",
        || get(SHELF, "/"),
        |a| a.status == 200,
    )
    .await;
    let t = mesh.client.run(shelf(), 1, 20, |_| get(SHELF, "/")).await;
    assert_all_ok(&t, "audit", &mesh);
    let m = mesh.backends[1].0.metrics().await.expect("shelf metrics");
    let audited = metric_sum(
        &m,
        "inbound_http_authz_allow_total",
        &[("authz_kind", "default"), ("authz_name", "audit")],
    );
    assert!(audited >= 20.0, "audited requests counted: {audited}\n{m}");
}

/// Under a steady load from an allowed client, a policy change (admitting a second identity,
/// then removing it again) takes effect within 1 s, and not one of the allowed client's
/// requests fails meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_applies_within_a_second_under_load() {
    let _serial = serial();
    let Some(root) = require_root(&[]) else {
        return;
    };
    let mut mesh = Mesh::start("authz-change", root, SERVICES).await;
    mesh.backend("books-v1", "books").await;
    let other = mesh.client_pod("other", 0).await;
    write_doc(
        &mesh.store,
        "policy.yaml",
        &only_service_accounts(&["client"]),
    );
    mesh.until(
        &other,
        books(),
        "`other` is denied",
        || get(BOOKS, "/"),
        denied,
    )
    .await;
    mesh.until(
        &mesh.client,
        books(),
        "`client` is allowed",
        || get(BOOKS, "/"),
        |a| a.status == 200,
    )
    .await;

    // 100 req/s for 4 s over one keep-alive connection, while the policy changes twice.
    let load = mesh
        .client
        .run_paced(books(), 400, 100, |_| get(BOOKS, "/"));
    let changes = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let written = write_doc(
            &mesh.store,
            "policy.yaml",
            &only_service_accounts(&["client", "other"]),
        );
        let admitted = until_status(&other, 200).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let written_again = write_doc(
            &mesh.store,
            "policy.yaml",
            &only_service_accounts(&["client"]),
        );
        let refused = until_status(&other, 403).await;
        (admitted - written, refused - written_again)
    };
    let (t, (admit, refuse)) = tokio::join!(load, changes);
    assert_all_ok(&t, "the allowed client during policy changes", &mesh);
    assert_eq!(t.total(), 400);
    assert!(admit < Duration::from_secs(1), "admitting took {admit:?}");
    assert!(refuse < Duration::from_secs(1), "refusing took {refuse:?}");
}

/// Polls `client` every 20 ms (for at most 10 s) until books answers `status`; when it did.
async fn until_status(client: &PodClient, status: u16) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = client.send(books(), get(BOOKS, "/")).await;
        if a.status == status {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "never answered {status}: last {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `books-http` open to everyone, limited to 100 requests per second in total.
const RATE_LIMITED: &str = "\
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: books-http, namespace: default}
spec:
  podSelector: {matchLabels: {app: books}}
  port: http
  proxyProtocol: HTTP/1
  accessPolicy: all-unauthenticated
---
apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: {name: books-rl, namespace: default}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: books-http}
  total: {requestsPerSecond: 100}
";

/// A 100 req/s limit under 5–10× overload (1,000 req/s offered over 8 connections for 4 s) admits
/// 100 ± 10 req/s once its one-second burst is spent, and answers the rest 429 with
/// `l5d-proxy-error`; the backend's proxy counts every refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_admits_its_rate_under_overload() {
    let _serial = serial();
    let Some(root) = require_root(&[]) else {
        return;
    };
    let mut mesh = Mesh::start("authz-ratelimit", root, SERVICES).await;
    mesh.backend("books-v1", "books").await;
    write_doc(&mesh.store, "policy.yaml", RATE_LIMITED);
    // In force once a quick burst gets refusals.
    eventually(
        "the rate limit is in force",
        Duration::from_secs(20),
        || async {
            let t = mesh.client.run(books(), 4, 400, |_| get(BOOKS, "/")).await;
            (t.count(|a| a.status == 429) > 0).then_some(())
        },
    )
    .await;
    // Let the bucket refill completely.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    let loads = (0..8).map(|_| {
        mesh.client
            .run_paced(books(), 500, 125, |_| get(BOOKS, "/"))
    });
    let tallies = futures_util::future::join_all(loads).await;
    let answers: Vec<&Answer> = tallies.iter().flat_map(|t| &t.answers).collect();
    let ended = answers.iter().map(|a| a.sent).max().expect("answers");
    let offered = answers.len() as f64 / (ended - started).as_secs_f64();
    // Each connection is paced and sends its next request once the last is answered, so on a
    // busy machine (slower answers) it offers less than 1,000 req/s (799 once in CI, with other
    // builds beside it): at least 5× the limit is still the overload this test is about.
    assert!(
        offered >= 500.0,
        "the load must be well over the limit (5× at least): {offered:.0} req/s"
    );
    let odd: Vec<&&Answer> = answers
        .iter()
        .filter(|a| !(a.status == 200 || a.status == 429 && !a.proxy_error.is_empty()))
        .collect();
    assert!(
        odd.is_empty(),
        "only 200 or a marked 429: {:?}",
        &odd[..odd.len().min(5)]
    );
    // After the first second (the burst), the admitted rate is the limit.
    let steady = started + Duration::from_secs(1);
    let admitted = answers
        .iter()
        .filter(|a| a.sent >= steady && a.status == 200)
        .count() as f64
        / (ended - steady).as_secs_f64();
    eprintln!(
        "rate limit: offered {offered:.0} req/s, admitted {admitted:.1} req/s after the burst"
    );
    assert!(
        (90.0..=110.0).contains(&admitted),
        "admitted {admitted:.1} req/s, offered {offered:.0} req/s"
    );
    let limited = answers.iter().filter(|a| a.status == 429).count() as f64;
    let m = mesh.backends[0].0.metrics().await.expect("books metrics");
    let counted = metric_sum(
        &m,
        "inbound_http_local_ratelimit_rate_limited_total",
        &[("srv_name", "books-http"), ("ratelimit_name", "books-rl")],
    );
    assert!(
        counted >= limited,
        "every 429 is counted: {counted} < {limited}\n{m}"
    );
}
