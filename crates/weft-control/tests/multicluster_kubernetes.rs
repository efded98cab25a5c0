//! East on the Kubernetes store: a Link and its credentials Secret served by the stand-in API
//! server (in weft-multicluster, the Secrets only by their type), a real west control plane
//! (file store) minting the credential, east mirroring west's exported `web` as
//! tests/multicluster.rs asserts for the file store, and the mirror gone with the Link.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::kube_store::{collection, control_plane, empty_api, kind_of, SETTLE};
use common::multicluster::{gateway_mirror_answers, mint, probe_server, west_store, GATEWAY_ID};
use common::{http_json, next};
use linkerd2_proxy_api::destination::update::Update as U;
use serde_json::{json, Value};
use weft_control::resource::multicluster::{
    credentials_secret_document, kubeconfig, DEFAULT_LINK_NAMESPACE,
};

/// The Link as `kubectl apply` leaves it (the stand-in adds uid, version, creation time).
fn link(name: &str, probe: SocketAddr) -> Value {
    json!({
        "apiVersion": "multicluster.linkerd.io/v1alpha2",
        "kind": "Link",
        "metadata": {"name": name, "namespace": DEFAULT_LINK_NAMESPACE, "generation": 1,
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {
            "targetClusterName": "west",
            "clusterCredentialsSecret": "cluster-credentials-west",
            "gatewayAddress": "127.0.0.1",
            "gatewayPort": "4143",
            "gatewayIdentity": GATEWAY_ID,
            "probeSpec": {"path": "/ready", "port": probe.port().to_string(), "period": "100ms",
                          "failureThreshold": "1", "timeout": "2s"},
        },
    })
}

/// `GET /v1/store` once `done` holds (bounded).
async fn store_until(api: SocketAddr, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let (_, store) = http_json(api, "GET", "/v1/store", "").await;
        if done(&store) {
            return store;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {store}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn east_on_kubernetes_follows_a_link_and_its_secret() {
    let west_dir = common::temp_dir("mck8s-w");
    west_store(&west_dir, true, true, false);
    let west = common::start(common::config(&west_dir)).await;
    let probe = probe_server(Arc::new(AtomicBool::new(true))).await;
    let creds = mint(west.api_addr, "east").await;
    let token = creds["token"].as_str().unwrap();

    let api = empty_api().await;
    let links = collection(kind_of("multicluster.linkerd.io/v1alpha2", "Link"));
    let secrets = collection(kind_of("v1", "Secret"));
    assert_eq!(
        links,
        "/apis/multicluster.linkerd.io/v1alpha2/namespaces/weft-multicluster/links"
    );
    assert_eq!(secrets, "/api/v1/namespaces/weft-multicluster/secrets");
    let kubeconfig = kubeconfig("west", "east", &format!("http://{}", west.api_addr), token);
    let mut secret = credentials_secret_document(
        "cluster-credentials-west",
        DEFAULT_LINK_NAMESPACE,
        &kubeconfig,
    );
    secret["metadata"]["labels"] = json!({"multicluster.linkerd.io/cluster-name": "west"});
    api.apply(&secrets, secret);
    api.apply(&links, link("west", probe));
    // Invalid: named as kubectl names it, through the same validator as a file's.
    let mut broken = link("broken", probe);
    broken["spec"]
        .as_object_mut()
        .unwrap()
        .remove("targetClusterName");
    api.apply(&links, broken);

    let east = control_plane(&api, "mck8s-e").await;

    // Gateway mode, as for the file store: west's gateway, the remote authority, its identity.
    let (mut web, _) = gateway_mirror_answers(east.grpc_addr).await;

    let store = store_until(east.api_addr, "the broken Link's error", |s| {
        s.to_string()
            .contains("Link.multicluster.linkerd.io/weft-multicluster/broken")
    })
    .await;
    assert!(
        store.to_string().contains("targetClusterName"),
        "the error names the field: {store}"
    );

    // Only Secrets of the credentials type were ever asked for: every list and watch carried
    // the field selector (the strict stand-in fails any other), none cluster-wide.
    let asked = api.requests(&format!("GET {secrets}"));
    assert!(!asked.is_empty());
    for r in &asked {
        assert!(
            r.contains("fieldSelector=type%3Dmirror.linkerd.io%2Fremote-kubeconfig"),
            "{r}"
        );
    }
    assert!(api.requests("GET /api/v1/secrets").is_empty());
    assert!(api
        .requests("GET /apis/multicluster.linkerd.io/v1alpha2/links")
        .is_empty());

    // The Link deleted (a watch DELETED event): the mirror goes.
    api.delete(&links, DEFAULT_LINK_NAMESPACE, "west");
    match next(&mut web).await {
        U::Remove(_) | U::NoEndpoints(_) => {}
        U::Add(set) => panic!("expected the mirror to go, got an add of {set:?}"),
    }
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let (status, v) = http_json(east.api_addr, "GET", "/v1/multicluster/links", "").await;
        assert_eq!(status, 200);
        if v.as_array().is_some_and(|l| l.is_empty()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "links after delete: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, services) = http_json(east.api_addr, "GET", "/v1/services", "").await;
    assert!(
        !services.to_string().contains("web-west"),
        "no mirror left: {services}"
    );
    api.assert_known();

    east.shutdown().await.unwrap();
    west.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&west_dir);
}
