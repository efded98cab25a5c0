//! `--store kubernetes` against a stand-in API server that replays recorded API-server answers
//! (`tests/fixtures/kubernetes/`, served by `common::kube_api`): the same outcomes as the file
//! store's tests — Destination.Get of a Service returns its pods, a pod turning not-ready drops
//! out, opaque ports from annotations show, a bad custom resource is reported by name while the
//! rest applies — plus what only a watch has: bookmarks move the resumed version on, and after
//! `410 Gone` the store lists again and converges. Certify with ServiceAccount tokens checked by
//! TokenReview, and the Lease electing one leader. What the leader does: prune spent issuance
//! records (each replica's is a ConfigMap, counted by every replica) and patch route status
//! only when it changed; followers do neither. The CA follows a Secret mount's link swap.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::kube_api::{fixture_json, FakeApi};
use common::kube_store::{
    api, control_plane, endpoints_until, first_add, opaque, PODS, ROUTES, SETTLE, SLICES,
};
use common::{get, http_json};
use weft_control::store::Location;

const WEB: &str = "web.default.svc.cluster.local:80";
const WEB_SA_ID: &str = "web.default.serviceaccount.identity.weft.cluster.local";

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

    // kube-dns scaled to zero: its slice lists `endpoints: null`, `ports: null`.
    let mut dns = get(cp.grpc_addr, "kube-dns.kube-system.svc.cluster.local:53")
        .await
        .unwrap();
    let none = common::next(&mut dns).await;
    assert!(
        matches!(
            none,
            linkerd2_proxy_api::destination::update::Update::NoEndpoints(_)
        ),
        "{none:?}"
    );

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
    // web, db, cache and kube-dns (its TCP ports: a UDP twin of a TCP port is no duplicate);
    // not the selector-less `kubernetes`.
    assert_eq!(store["services"], 4, "{store}");

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
    api.assert_known();
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
    api.assert_known();
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
    api.assert_known();
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
    api.assert_known();
}

const CONFIGMAPS: &str = "/api/v1/namespaces/weft/configmaps";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/weft/leases/weft-control-leader";

/// A CA laid out as the kubelet mounts a Secret: the files are links through `..data`, a link
/// to a timestamped directory that an update replaces by renaming a new link over it.
fn secret_mount(dir: &std::path::Path) -> std::path::PathBuf {
    let mount = dir.join("identity");
    std::fs::create_dir_all(&mount).unwrap();
    swap_secret(&mount, "..2026_12_01_10_00_00.1");
    use weft_control::ca;
    for name in [
        ca::TRUST_ANCHORS_FILE,
        ca::ISSUER_CERT_FILE,
        ca::ISSUER_KEY_FILE,
    ] {
        std::os::unix::fs::symlink(format!("..data/{name}"), mount.join(name)).unwrap();
    }
    mount
}

/// Writes a new CA into `version` and points `..data` at it, as the kubelet updates a Secret.
fn swap_secret(mount: &std::path::Path, version: &str) {
    use weft_control::ca;
    let g = ca::generate("cluster.local", "weft").unwrap();
    let dir = mount.join(version);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(ca::TRUST_ANCHORS_FILE), &g.anchor_cert_pem).unwrap();
    std::fs::write(dir.join(ca::ISSUER_CERT_FILE), &g.issuer_cert_pem).unwrap();
    std::fs::write(dir.join(ca::ISSUER_KEY_FILE), &g.issuer_key_pem).unwrap();
    let tmp = mount.join("..data_tmp");
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, mount.join("..data")).unwrap();
}

/// A control plane on `api` (one of its listeners) issuing from the CA mounted at `identity`.
async fn replica(api: &FakeApi, test: &str, identity: &std::path::Path) -> weft_control::Running {
    let dir = common::temp_dir(test);
    let mut config = common::config(&dir);
    config.store = Location::Kubernetes(Some(api.kubeconfig(&dir)));
    config.identity_dir = Some(identity.to_path_buf());
    config.scrape_interval = Duration::ZERO;
    common::start(config).await
}

/// Polls `GET path` on `addr` until `done` holds for its JSON (bounded by [`SETTLE`]).
async fn api_until(
    addr: SocketAddr,
    path: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let (status, body) = http_json(addr, "GET", path, "").await;
        if status == 200 && done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: GET {path} answers {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Which of two replicas leads, once both agree: (leader, follower), as indexes into `cps`.
async fn leader_of(cps: [&weft_control::Running; 2]) -> (usize, usize) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let mut leads = Vec::new();
        for cp in cps {
            let (_, store) = http_json(cp.api_addr, "GET", "/v1/store", "").await;
            leads.push((
                store["leader"]["this_replica"] == true,
                store["leader"]["leader"].clone(),
            ));
        }
        if leads[0].1 == leads[1].1 && leads[0].0 != leads[1].0 {
            return if leads[0].0 { (0, 1) } else { (1, 0) };
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no agreed leader: {leads:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An issuance record as another control plane instance left it.
fn record(instance: &str, anchor: &str, expiry: i64) -> serde_json::Value {
    let ledger = serde_json::json!({
        "instance": instance, "issuing_anchor": anchor, "updated": 1_800_000_000,
        "anchors": {anchor: [[expiry, 2]]},
    });
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("weft-issued-{instance}"), "namespace": "weft",
                     "labels": {"weft.io/record": "issuance"}},
        "data": {"ledger.json": ledger.to_string()},
    })
}

#[tokio::test]
async fn replicas_keep_ledgers_in_configmaps_and_only_the_leader_prunes_spent_ones() {
    use common::identity::{certify, csr_for};
    let api = api().await;
    let api_b = api.listener("b").await;
    let dir = common::temp_dir("k8s-records");
    let identity = secret_mount(&dir);
    let anchor = {
        let pem = std::fs::read(identity.join(weft_control::ca::TRUST_ANCHORS_FILE)).unwrap();
        let der = weft_control::ca::pem_certificates(&pem).unwrap().remove(0);
        weft_control::ca::fingerprint(&der)
    };
    // Two instances gone: one whose leaves have all expired, one whose leaves still live.
    let spent = format!("{CONFIGMAPS}/weft-issued-cp-gone-1");
    let live = format!("{CONFIGMAPS}/weft-issued-cp-gone-2");
    let far = weft_control::clock::unix_now() + 3600;
    api.put_object(&spent, record("cp-gone-1", &anchor, 1_000_000));
    api.put_object(&live, record("cp-gone-2", &anchor, far));
    // A replica elsewhere leads at first: neither of these two may prune.
    let lease = |holder: &str| {
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "weft-control-leader", "namespace": "weft"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "renewTime": "2026-12-01T10:00:00.000000Z"},
        })
    };
    api.put_object(LEASE, lease("cp-elsewhere"));

    let a = replica(&api, "k8s-records-a", &identity).await;
    let b = replica(&api_b, "k8s-records-b", &identity).await;
    for cp in [&a, &b] {
        certify(cp.grpc_addr, WEB_SA_ID, "token-web", csr_for(WEB_SA_ID))
            .await
            .expect("web's token certifies web's identity");
    }
    // Each replica counts every replica's leaves: its own, the other's (from its ConfigMap),
    // and the gone instance's live ones.
    for cp in [&a, &b] {
        api_until(cp.api_addr, "/v1/identity/status", "4 live leaves", |s| {
            s["anchors"][0]["fingerprint"] == anchor.as_str() && s["anchors"][0]["live_leaves"] == 4
        })
        .await;
    }
    // Both have written their records with a leaf (so each has decided at least once whether
    // to prune): while neither leads, the spent record stays.
    assert!(api.object_at(&spent).is_some(), "pruned by a follower");

    // The other leader gives the Lease up: one of the two takes it and prunes at once.
    api.put_object(LEASE, lease(""));
    let (leader, follower) = leader_of([&a, &b]).await;
    let tags = ["main", "b"];
    let deadline = tokio::time::Instant::now() + SETTLE;
    while api.object_at(&spent).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the spent record is still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        api.object_at(&live).is_some(),
        "a record with live leaves is kept"
    );
    // (A replica's record written before it issued anything holds no live leaf either: the
    // leader may prune it too, and the replica writes it again with its first leaf.)
    let deletes = api.requests_via(tags[leader], &format!("DELETE {CONFIGMAPS}/"));
    assert!(
        deletes.contains(&format!("DELETE {spent}?")),
        "{deletes:#?}"
    );
    assert!(
        !deletes.contains(&format!("DELETE {live}?")),
        "{deletes:#?}"
    );
    let others = api.requests_via(tags[follower], "DELETE ");
    assert!(others.is_empty(), "the follower deleted: {others:#?}");

    // Each replica's record is its own ConfigMap, labelled and holding its ledger.
    let records = api.objects_in(CONFIGMAPS);
    assert_eq!(records.len(), 3, "{records:#?}");
    for cp in [&a, &b] {
        let (_, status) = http_json(cp.api_addr, "GET", "/v1/identity/status", "").await;
        let instances: Vec<String> = status["control_planes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["instance"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(instances.len(), 3, "{instances:?}");
        for instance in instances.iter().filter(|i| !i.starts_with("cp-gone")) {
            let cm = api
                .object_at(&format!(
                    "{CONFIGMAPS}/weft-issued-{}",
                    instance.to_lowercase()
                ))
                .unwrap_or_else(|| panic!("no ConfigMap for {instance}: {records:#?}"));
            assert_eq!(cm["metadata"]["labels"]["weft.io/record"], "issuance");
            let ledger: serde_json::Value =
                serde_json::from_str(cm["data"]["ledger.json"].as_str().unwrap()).unwrap();
            assert_eq!(ledger["instance"], instance.as_str(), "{ledger}");
            assert_eq!(ledger["anchors"][&anchor][0][1], 1, "{ledger}");
        }
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    api.assert_known();
}

#[tokio::test]
async fn the_ca_follows_a_secret_update_through_the_mounts_symlinks() {
    let api = api().await;
    let dir = common::temp_dir("k8s-secret");
    let identity = secret_mount(&dir);
    let cp = replica(&api, "k8s-secret", &identity).await;
    let (_, before) = http_json(cp.api_addr, "GET", "/v1/identity/status", "").await;
    let before = before["issuer"]["fingerprint"].clone();
    assert!(before.is_string(), "{before}");

    swap_secret(&identity, "..2026_12_02_10_00_00.2");
    let pem = std::fs::read(identity.join(weft_control::ca::ISSUER_CERT_FILE)).unwrap();
    let der = weft_control::ca::pem_certificates(&pem).unwrap().remove(0);
    let new = weft_control::ca::fingerprint(&der);
    assert_ne!(before, new.as_str());
    api_until(cp.api_addr, "/v1/identity/status", "the new issuer", |s| {
        s["issuer"]["fingerprint"] == new.as_str()
    })
    .await;
    cp.shutdown().await.unwrap();
    api.assert_known();
}

/// `parents` without the times the writer adds.
fn without_times(mut parents: serde_json::Value) -> serde_json::Value {
    for p in parents.as_array_mut().into_iter().flatten() {
        for c in p["conditions"].as_array_mut().into_iter().flatten() {
            let time = c.as_object_mut().unwrap().remove("lastTransitionTime");
            assert!(time.is_some_and(|t| t.is_string()), "{c}");
        }
    }
    parents
}

#[tokio::test]
async fn the_leader_patches_route_status_when_it_changes_and_a_follower_never() {
    let api = api().await;
    // A Gateway's controller has its own entry in web-split's status: it must stay.
    let gateway = serde_json::json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
        "controllerName": "example.net/gateway-controller",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                        "lastTransitionTime": "2026-12-01T10:07:01Z"}],
    });
    let mut routes = fixture_json("httproutes.json");
    routes["items"][0]["status"]["parents"] = serde_json::json!([gateway.clone()]);
    api.set_list(ROUTES, routes.clone());
    let api_b = api.listener("b").await;
    let a = control_plane(&api, "k8s-status-a").await;
    let b = control_plane(&api_b, "k8s-status-b").await;
    let (leader, follower) = leader_of([&a, &b]).await;
    let tags = ["main", "b"];
    let cps = [&a, &b];
    let path = |name: &str| {
        format!("/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/{name}/status")
    };
    let patches_of = |name: &str| -> Vec<serde_json::Value> {
        api.status_patches()
            .into_iter()
            .filter(|(p, _)| *p == path(name))
            .map(|(_, body)| body)
            .collect()
    };
    let patched = |name: &str| {
        let deadline = tokio::time::Instant::now() + SETTLE;
        let name = name.to_string();
        let patches_of = &patches_of;
        async move {
            while patches_of(&name).is_empty() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name}'s status not patched"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let route_in_store = |store: &serde_json::Value, name: &str| {
        store["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {store}"))
    };

    // The route in force gets its status as GET /v1/store shows it.
    patched("web-split").await;
    let (_, store) = http_json(cps[leader].api_addr, "GET", "/v1/store", "").await;
    let want = route_in_store(&store, "web-split")["parents"].clone();
    let body = patches_of("web-split").remove(0);
    // Written at the version read, the other controller's entry first, as it was.
    assert_eq!(body["metadata"]["resourceVersion"], "47700", "{body}");
    assert_eq!(body["status"]["parents"][0], gateway, "{body}");
    let parents: serde_json::Value = body["status"]["parents"].as_array().unwrap()[1..].into();
    assert_eq!(without_times(parents.clone()), want, "{body}");
    let types: Vec<&str> = parents[0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Accepted", "ResolvedRefs"], "{body}");
    assert_eq!(parents[0]["conditions"][0]["status"], "True", "{body}");
    assert!(parents[0]["controllerName"].is_string(), "{body}");
    // The bad route is not in force: nothing to say for it.
    assert!(patches_of("broken").is_empty());

    // A change that leaves every route's status as it was writes nothing; a new route's
    // status is written (after the change before it was looked at: one loop, in order).
    let generation = store["generation"].as_u64().unwrap();
    api.push(SLICES, &fixture_json("watch-endpointslice-not-ready.json"))
        .await;
    api_until(cps[leader].api_addr, "/v1/store", "the slice change", |s| {
        s["generation"].as_u64() > Some(generation)
    })
    .await;
    // The API server holds the new route (its status is read from there), and says so.
    let added = fixture_json("watch-httproute-added.json");
    routes["items"]
        .as_array_mut()
        .unwrap()
        .push(added["object"].clone());
    api.set_list(ROUTES, routes);
    api.push(ROUTES, &added).await;
    patched("web-canary").await;
    let (_, store) = http_json(cps[leader].api_addr, "GET", "/v1/store", "").await;
    let canary = patches_of("web-canary").remove(0);
    assert_eq!(
        without_times(canary["status"]["parents"].clone()),
        route_in_store(&store, "web-canary")["parents"],
        "{canary}"
    );
    assert_eq!(
        canary["status"]["parents"][0]["conditions"][1]["status"], "False",
        "the canary backend does not exist: {canary}"
    );
    assert_eq!(
        patches_of("web-split").len(),
        1,
        "{:#?}",
        api.status_patches()
    );
    assert_eq!(
        patches_of("web-canary").len(),
        1,
        "{:#?}",
        api.status_patches()
    );
    let by_follower = api.requests_via(tags[follower], "PATCH ");
    assert!(
        by_follower.is_empty(),
        "the follower patched: {by_follower:#?}"
    );
    assert_eq!(api.requests_via(tags[leader], "PATCH ").len(), 2);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    api.assert_known();
}
