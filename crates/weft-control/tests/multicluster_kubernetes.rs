//! East on the Kubernetes store: a Link and its credentials Secret served by the stand-in API
//! server (in weft-multicluster, the Secrets only by their type), a real west control plane
//! (file store) minting the credential, east mirroring west's exported `web` as
//! tests/multicluster.rs asserts for the file store, and the mirror gone with the Link.
//! West on the Kubernetes store: link tokens are ServiceAccount tokens (TokenRequest, checked by
//! TokenReview), minted again or revoked through the ServiceAccount, and an east on the file
//! store linked to it by the documents `weft multicluster link` writes mirrors its `web`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::kube_store::{
    collection, control_plane, empty_api, kind_of, pod, service, PODS, SERVICES, SETTLE,
};
use common::multicluster::{gateway_mirror_answers, mint, probe_server, west_store, GATEWAY_ID};
use common::{http_json, next};
use linkerd2_proxy_api::destination::update::Update as U;
use serde_json::{json, Value};
use weft_control::resource::multicluster::{
    credentials_secret_document, kubeconfig, link_documents, DEFAULT_LINK_NAMESPACE,
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

/// `GET /v1/multicluster/exports` with `token`: the status, and the first line (the snapshot)
/// when it is 200, else the body.
async fn exports(api: SocketAddr, token: &str) -> (u16, Value) {
    let (status, first, _) = exports_stream(api, token).await;
    (status, first)
}

/// [`exports`], and the rest of the stream.
async fn exports_stream(api: SocketAddr, token: &str) -> (u16, Value, hyper::body::Incoming) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(api).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/v1/multicluster/exports")
        .header("host", api.to_string())
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let rsp = sender.send_request(req).await.unwrap();
    let status = rsp.status().as_u16();
    let mut body = rsp.into_body();
    let mut buf = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("body").into_data() {
                buf.extend_from_slice(&data);
            }
            if status == 200 && buf.contains(&b'\n') {
                break;
            }
        }
    };
    tokio::time::timeout(SETTLE, read)
        .await
        .expect("exports answer");
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    (
        status,
        serde_json::from_slice(line).unwrap_or(Value::Null),
        body,
    )
}

#[tokio::test]
async fn west_on_kubernetes_mints_link_tokens_as_service_accounts() {
    const ACCOUNT: &str = "/api/v1/namespaces/weft/serviceaccounts/weft-link-east";
    let api = empty_api().await;
    let probe = probe_server(Arc::new(AtomicBool::new(true))).await;
    let mut web = service(
        "default",
        "web",
        "10.96.0.80",
        json!({"app": "web"}),
        json!([{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]),
    );
    web["metadata"]["labels"] = json!({"mirror.linkerd.io/exported": "true"});
    api.apply(SERVICES, web);
    // West's gateway as `weft multicluster install` runs it: Linkerd's labels, its ports by name.
    let labels = json!({"app": "weft-gateway", "linkerd.io/extension": "multicluster",
                        "component": "gateway"});
    let ports = [("mc-gateway", 4143), ("mc-probe", probe.port())];
    let gateway = pod(
        DEFAULT_LINK_NAMESPACE,
        "weft-gateway-5d8f7c9b4-x2xkq",
        "127.0.0.1",
        labels,
        Some("gateway"),
        &ports,
    );
    api.apply(PODS, gateway);

    let west_dir = common::temp_dir("mck8s-kw");
    let mut config = common::config(&west_dir);
    config.store = weft_control::store::Location::Kubernetes(Some(api.kubeconfig(&west_dir)));
    config.scrape_interval = std::time::Duration::ZERO;
    config.cluster_name = Some("west".into());
    let west = common::start(config).await;

    let creds = mint(west.api_addr, "east").await;
    let first = creds["token"].as_str().unwrap().to_string();
    assert_eq!(creds["cluster"]["name"], "west");
    let gateway = &creds["gateways"][0];
    assert_eq!(
        (&gateway["address"], &gateway["port"], &gateway["identity"]),
        (&json!("127.0.0.1"), &json!(4143), &json!(GATEWAY_ID)),
        "{creds}"
    );
    // The credential is a ServiceAccount of the control namespace, labelled with the link,
    // whose token was asked for the link audience.
    let account = api.object_at(ACCOUNT).expect("the link's ServiceAccount");
    assert_eq!(
        account["metadata"]["labels"]["multicluster.weft.io/link"],
        "east"
    );
    assert_eq!(account["automountServiceAccountToken"], false);
    assert_eq!(api.requests(&format!("POST {ACCOUNT}/token")).len(), 1);

    let (status, snapshot) = exports(west.api_addr, &first).await;
    assert_eq!(status, 200, "{snapshot}");
    let names: Vec<&str> = snapshot["services"]
        .as_array()
        .expect("a snapshot")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["web"], "{snapshot}");
    // The link token is no proxy's credential: its audience is not Linkerd's identity one.
    let id = "weft-link-east.weft.serviceaccount.identity.weft.cluster.local";
    let refused =
        common::identity::certify(west.grpc_addr, id, &first, common::identity::csr_for(id))
            .await
            .expect_err("a link token certifies nothing");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    // A pod's identity token (authenticated, but for Linkerd's identity audience), a token the
    // API server does not know: refused.
    for token in ["token-web", "token-nobody"] {
        let (status, body) = exports(west.api_addr, token).await;
        assert_eq!(status, 401, "{token}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }

    // East on the file store, linked by the documents `weft multicluster link` writes.
    let east_dir = common::temp_dir("mck8s-ke");
    let server = format!("http://{}", west.api_addr);
    let docs = link_documents("west", DEFAULT_LINK_NAMESPACE, &server, "east", &creds).unwrap();
    let text: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
    std::fs::write(east_dir.join("link.yaml"), text.join("\n---\n")).unwrap();
    let east = common::start(common::config(&east_dir)).await;
    let (_stream, _) = gateway_mirror_answers(east.grpc_addr).await;

    // Minted again: a new ServiceAccount (a new uid), so the first token is refused.
    let again = mint(west.api_addr, "east").await;
    let second = again["token"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    assert_eq!(api.requests(&format!("DELETE {ACCOUNT}")).len(), 2);
    let (status, body) = exports(west.api_addr, &first).await;
    assert_eq!(status, 401, "the replaced token: {body}");
    assert_eq!(exports(west.api_addr, &second).await.0, 200);

    // East's stream, on the replaced token, ends at its next review (every heartbeat) and is
    // refused when it reconnects: the link says why (what `weft multicluster check` reads).
    let (status, links) = http_json(east.api_addr, "GET", "/v1/multicluster/links", "").await;
    assert_eq!(status, 200);
    let deadline = tokio::time::Instant::now() + SETTLE;
    let mut links = links;
    while !(links[0]["connected"] == false
        && links[0]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("401")))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "east's link: {links}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        links = http_json(east.api_addr, "GET", "/v1/multicluster/links", "")
            .await
            .1;
    }

    // Revoked: the ServiceAccount is deleted, its token refused, an open stream ended.
    let (status, _, mut open) = exports_stream(west.api_addr, &second).await;
    assert_eq!(status, 200);
    let (status, body) = http_json(
        west.api_addr,
        "DELETE",
        "/v1/multicluster/credentials/east",
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(api.object_at(ACCOUNT).is_none());
    assert_eq!(exports(west.api_addr, &second).await.0, 401);
    let ended = async {
        use http_body_util::BodyExt;
        while let Some(frame) = open.frame().await {
            if frame.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(SETTLE, ended)
        .await
        .expect("the revoked token's stream ends");
    api.assert_known();

    east.shutdown().await.unwrap();
    west.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&west_dir);
    let _ = std::fs::remove_dir_all(&east_dir);
}

/// The pod of the Deployment `weft multicluster install` prints (its golden output), as the API
/// server lists it once scheduled and ready at `ip`.
fn installed_gateway_pod(ip: &str) -> Value {
    use serde::Deserialize as _;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../weft/tests/golden/multicluster-install.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let deployment = yaml_serde::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .find(|d| d["kind"] == "Deployment")
        .expect("the gateway Deployment");
    let template = &deployment["spec"]["template"];
    let namespace = deployment["metadata"]["namespace"].as_str().unwrap();
    let sa = template["spec"]["serviceAccountName"].as_str().unwrap();
    let name = "weft-gateway-7c9d5b8f6-q4zjm";
    let mut p = pod(
        namespace,
        name,
        ip,
        template["metadata"]["labels"].clone(),
        Some(sa),
        &[],
    );
    p["metadata"]["annotations"] = template["metadata"]["annotations"].clone();
    for list in ["containers", "initContainers"] {
        p["spec"][list] = template["spec"][list].clone();
    }
    p
}

#[tokio::test]
async fn the_installed_gateway_is_what_west_offers_to_link_to() {
    let api = empty_api().await;
    api.apply(PODS, installed_gateway_pod("10.244.9.7"));
    let dir = common::temp_dir("mck8s-gw");
    let mut config = common::config(&dir);
    config.store = weft_control::store::Location::Kubernetes(Some(api.kubeconfig(&dir)));
    config.scrape_interval = std::time::Duration::ZERO;
    let west = common::start(config).await;
    let creds = mint(west.api_addr, "east").await;
    assert_eq!(
        creds["gateways"],
        json!([{"address": "10.244.9.7", "port": 4143,
                "identity": "weft-gateway.weft-multicluster.serviceaccount.identity.weft.cluster.local",
                "probePort": 4191, "probePath": "/ready"}]),
        "{creds}"
    );
    api.assert_known();
    west.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
