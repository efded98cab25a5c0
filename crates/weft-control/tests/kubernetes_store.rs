//! `--store kubernetes` against a stand-in API server that replays recorded API-server answers
//! (`tests/fixtures/kubernetes/`, served by `common::kube_api`): the same outcomes as the file
//! store's tests — Destination.Get of a Service returns its pods, a pod turning not-ready drops
//! out, opaque ports from annotations show, a bad custom resource is reported by name while the
//! rest applies — plus what only a watch has: bookmarks move the resumed version on, and after
//! `410 Gone` the store lists again and converges. Certify with ServiceAccount tokens checked by
//! TokenReview, and the Lease electing one leader.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use common::kube_api::{fixture_json, FakeApi};
use common::{get, http_json, next};
use linkerd2_proxy_api::destination::{protocol_hint::Protocol, update::Update as U, Update};
use tonic::Streaming;
use weft_control::store::Location;

/// Bound on waiting for an expected state (the tests wait on events; this stops a hung test).
const SETTLE: Duration = Duration::from_secs(20);

const PODS: &str = "/api/v1/pods";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const WEB: &str = "web.default.svc.cluster.local:80";
const WEB_SA_ID: &str = "web.default.serviceaccount.identity.weft.cluster.local";

/// The stand-in API server with the recorded lists.
async fn api() -> FakeApi {
    let api = FakeApi::start().await;
    api.set_list("/api/v1/namespaces", fixture_json("namespaces.json"));
    api.set_list("/api/v1/services", fixture_json("services.json"));
    api.set_list(PODS, fixture_json("pods.json"));
    api.set_list(SLICES, fixture_json("endpointslices.json"));
    api.set_list(
        "/apis/gateway.networking.k8s.io/v1/httproutes",
        fixture_json("httproutes.json"),
    );
    let reviews = HashMap::from([
        (
            "token-web".to_string(),
            fixture_json("tokenreview-web.json"),
        ),
        (
            "token-admin".to_string(),
            fixture_json("tokenreview-user.json"),
        ),
    ]);
    api.set_reviews(reviews, fixture_json("tokenreview-unauthenticated.json"));
    api
}

async fn control_plane(api: &FakeApi, test: &str) -> weft_control::Running {
    let dir = common::temp_dir(test);
    let mut config = common::config(&dir);
    config.store = Location::Kubernetes(Some(api.kubeconfig(&dir)));
    // Nothing answers on the pods' addresses.
    config.scrape_interval = Duration::ZERO;
    common::start(config).await
}

/// Applies Destination updates to a set of addresses until it equals `want`.
async fn endpoints_until(
    stream: &mut Streaming<Update>,
    seen: &mut BTreeSet<String>,
    want: &[&str],
) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let deadline = tokio::time::Instant::now() + SETTLE;
    while *seen != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "endpoints {seen:?}, waiting for {want:?}"
        );
        let addr = |a: &linkerd2_proxy_api::destination::WeightedAddr| {
            SocketAddr::try_from(a.addr.unwrap()).unwrap().to_string()
        };
        match next(stream).await {
            U::Add(set) => seen.extend(set.addrs.iter().map(addr)),
            U::Remove(set) => {
                for a in &set.addrs {
                    seen.remove(&SocketAddr::try_from(*a).unwrap().to_string());
                }
            }
            U::NoEndpoints(_) => seen.clear(),
        }
    }
}

async fn first_add(
    grpc: SocketAddr,
    path: &str,
) -> linkerd2_proxy_api::destination::WeightedAddrSet {
    let mut stream = get(grpc, path).await.expect("Destination.Get");
    match next(&mut stream).await {
        U::Add(set) => set,
        other => panic!("{path}: expected endpoints, got {other:?}"),
    }
}

fn opaque(set: &linkerd2_proxy_api::destination::WeightedAddrSet) -> bool {
    set.addrs.iter().all(|a| {
        matches!(
            a.protocol_hint.as_ref().and_then(|h| h.protocol.as_ref()),
            Some(Protocol::Opaque(_))
        )
    })
}

#[tokio::test]
async fn services_serve_their_ready_pods_and_annotations_apply() {
    let api = api().await;
    let cp = control_plane(&api, "k8s-serve").await;

    // The Service's pods from the EndpointSlices, on the named targetPort; the finished Job pod
    // that carries the same label is no endpoint.
    let mut web = get(cp.grpc_addr, WEB).await.unwrap();
    let mut seen = BTreeSet::new();
    endpoints_until(&mut web, &mut seen, &["10.244.1.5:8080", "10.244.2.7:8080"]).await;
    let set = first_add(cp.grpc_addr, WEB).await;
    let tls = set.addrs[0].tls_identity.clone().expect("a TLS identity");
    assert_eq!(tls.server_name.unwrap().name, WEB_SA_ID);
    assert!(!opaque(&set), "web is HTTP");

    // Opaque ports: the Service's own annotation, and the namespace's for a Service without one.
    let db = first_add(cp.grpc_addr, "db.default.svc.cluster.local:5432").await;
    assert!(opaque(&db), "db's opaque-ports annotation: {db:?}");
    let cache = first_add(cp.grpc_addr, "cache.shop.svc.cluster.local:6379").await;
    assert!(opaque(&cache), "shop's opaque-ports annotation: {cache:?}");

    // The bad route is reported by its name; the good one applies beside it.
    let (status, store) = http_json(cp.api_addr, "GET", "/v1/store", "").await;
    assert_eq!(status, 200);
    let errors: Vec<&str> = store["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        !errors.is_empty()
            && errors
                .iter()
                .all(|e| e.starts_with("HTTPRoute.gateway.networking.k8s.io/default/broken: "))
            && errors.iter().any(|e| e.contains("70000")),
        "{errors:?}"
    );
    let routes = store["routes"].to_string();
    assert!(routes.contains("web-split"), "{routes}");
    assert_eq!(store["services"], 3, "{store}");

    // A pod turning not-ready leaves the Service's endpoints.
    api.push(SLICES, &fixture_json("watch-endpointslice-not-ready.json"))
        .await;
    endpoints_until(&mut web, &mut seen, &["10.244.1.5:8080"]).await;

    // A bookmark moves the version on: the next watch resumes from it.
    api.push(SLICES, &fixture_json("watch-endpointslice-bookmark.json"))
        .await;
    // The server ends the watch after the bookmark (the client reads up to the end first).
    api.end_watches(SLICES);
    api.watching(SLICES).await;
    let watches = api.requests(&format!("GET {SLICES}?"));
    let last = watches.last().expect("a watch");
    assert!(
        last.contains("watch=true") && last.contains("resourceVersion=48390"),
        "{watches:#?}"
    );
    assert!(last.contains("allowWatchBookmarks=true"), "{last}");

    // Changes go through kubectl, not the registration API.
    let (status, body) = http_json(
        cp.api_addr,
        "PUT",
        "/v1/workloads/default/web-9",
        r#"{"apiVersion":"workload.linkerd.io/v1beta1","kind":"ExternalWorkload","spec":{"workloadIPs":[{"ip":"10.0.0.9"}]}}"#,
    )
    .await;
    assert_eq!(status, 405, "{body}");
    assert!(body.to_string().contains("kubectl"), "{body}");
    cp.shutdown().await.unwrap();
}

#[tokio::test]
async fn after_410_gone_the_store_lists_again_and_converges() {
    let api = api().await;
    let cp = control_plane(&api, "k8s-gone").await;
    let mut web = get(cp.grpc_addr, WEB).await.unwrap();
    let mut seen = BTreeSet::new();
    endpoints_until(&mut web, &mut seen, &["10.244.1.5:8080", "10.244.2.7:8080"]).await;
    api.watching(PODS).await;
    assert_eq!(
        api.requests(&format!("GET {PODS}?")).len(),
        2,
        "one list, one watch"
    );

    // Meanwhile one web pod was replaced; the watches' versions were compacted away.
    api.set_list(PODS, fixture_json("pods-after-gone.json"));
    api.set_list(SLICES, fixture_json("endpointslices-after-gone.json"));
    // The pods' watch gets an ERROR event; the slices' watch ends and the next one is
    // answered 410: both ways say "list again".
    api.push(PODS, &fixture_json("watch-gone.json")).await;
    api.expire(SLICES);
    endpoints_until(&mut web, &mut seen, &["10.244.1.5:8080", "10.244.3.4:8080"]).await;

    let lists: Vec<String> = api
        .requests(&format!("GET {PODS}?"))
        .into_iter()
        .filter(|r| !r.contains("watch=true"))
        .collect();
    assert_eq!(lists.len(), 2, "listed again after 410: {lists:#?}");
    // The pods' list alone can converge the endpoints (a pod no slice lists falls back to its
    // own Ready condition): wait for the slices' list too.
    let slice_lists = || {
        api.requests(&format!("GET {SLICES}?"))
            .into_iter()
            .filter(|r| !r.contains("watch=true"))
            .count()
    };
    let deadline = tokio::time::Instant::now() + SETTLE;
    while slice_lists() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slices not listed again after a 410 answer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The new watch starts from the new list's version.
    api.watching(PODS).await;
    let watches = api.requests(&format!("GET {PODS}?"));
    assert!(
        watches.last().unwrap().contains("resourceVersion=48960"),
        "{watches:#?}"
    );
    cp.shutdown().await.unwrap();
}

#[tokio::test]
async fn certify_accepts_service_account_tokens_the_api_server_authenticates() {
    use common::identity::{certify, csr_for};
    let api = api().await;
    let cp = control_plane(&api, "k8s-certify").await;

    let leaf = certify(cp.grpc_addr, WEB_SA_ID, "token-web\n", csr_for(WEB_SA_ID))
        .await
        .expect("web's token certifies web's identity");
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf.leaf_certificate).unwrap();
    let names: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .expect("SANs")
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert!(
        names.contains(&format!("DNSName({WEB_SA_ID})")),
        "{names:?}"
    );
    assert!(
        names.contains(&"URI(spiffe://cluster.local/ns/default/sa/web)".to_string()),
        "{names:?}"
    );

    let expired = certify(cp.grpc_addr, WEB_SA_ID, "token-expired", csr_for(WEB_SA_ID))
        .await
        .expect_err("an expired token");
    assert_eq!(expired.code(), tonic::Code::Unauthenticated, "{expired:?}");
    assert!(
        expired
            .message()
            .contains("service account token has expired"),
        "{expired:?}"
    );

    let db = "default.default.serviceaccount.identity.weft.cluster.local";
    let other = certify(cp.grpc_addr, db, "token-web", csr_for(db))
        .await
        .expect_err("web's token for another identity");
    assert_eq!(other.code(), tonic::Code::PermissionDenied, "{other:?}");
    assert!(other.message().contains(WEB_SA_ID), "{other:?}");

    // The CSR must name the identity asked for.
    let mismatch = certify(cp.grpc_addr, WEB_SA_ID, "token-web", csr_for(db))
        .await
        .expect_err("a CSR for another identity");
    assert_eq!(
        mismatch.code(),
        tonic::Code::InvalidArgument,
        "{mismatch:?}"
    );

    let user = certify(cp.grpc_addr, WEB_SA_ID, "token-admin", csr_for(WEB_SA_ID))
        .await
        .expect_err("a user's token");
    assert_eq!(user.code(), tonic::Code::PermissionDenied, "{user:?}");
    assert_eq!(
        api.requests("POST /apis/authentication.k8s.io/v1/tokenreviews")
            .len(),
        5
    );
    cp.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_replica_holds_the_lease_and_hands_it_over_on_shutdown() {
    use weft_control::k8s;
    let api = api().await;
    let dir = common::temp_dir("k8s-lease");
    let kubeconfig = api.kubeconfig(&dir);
    let client = k8s::client(Some(&kubeconfig)).await.unwrap();
    let (stop_a, rx_a) = tokio::sync::watch::channel(false);
    let (stop_b, rx_b) = tokio::sync::watch::channel(false);
    let (mut a, task_a) = k8s::lease::start(client.clone(), "weft", "a".into(), rx_a);
    let (mut b, task_b) = k8s::lease::start(client, "weft", "b".into(), rx_b);
    let deadline = tokio::time::Instant::now() + SETTLE;
    // Both agree on one leader.
    let leader = loop {
        let (la, lb) = (a.borrow().clone(), b.borrow().clone());
        if !la.leader.is_empty() && la.leader == lb.leader {
            assert_ne!(la.this_replica, lb.this_replica, "{la:?} {lb:?}");
            break la.leader;
        }
        assert!(tokio::time::Instant::now() < deadline, "{la:?} {lb:?}");
        tokio::select! {
            _ = a.changed() => {}
            _ = b.changed() => {}
        }
    };
    let path = "/apis/coordination.k8s.io/v1/namespaces/weft/leases/weft-control-leader";
    let lease = api.lease_at(path).expect("the Lease");
    assert_eq!(lease["spec"]["holderIdentity"], leader.as_str(), "{lease}");

    // The leader stops: it gives the Lease up and the other takes it. (Both senders stay
    // alive: a dropped one would stop its replica too.)
    let (stop, task, mut other, next) = if leader == "a" {
        (&stop_a, task_a, b, "b")
    } else {
        (&stop_b, task_b, a, "a")
    };
    stop.send_replace(true);
    task.await.unwrap();
    tokio::time::timeout(SETTLE, other.wait_for(|l| l.this_replica))
        .await
        .expect("the other replica leads in time")
        .unwrap();
    let lease = api.lease_at(path).expect("the Lease");
    assert_eq!(lease["spec"]["holderIdentity"], next, "{lease}");
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
    drop((stop_a, stop_b));
}
