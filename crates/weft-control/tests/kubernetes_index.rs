//! What the Kubernetes store makes of Pods, EndpointSlices, Services and Namespaces — the kinds
//! the file store does not have (it has ExternalWorkloads) — each change arriving as a watch
//! event of the stand-in API server (`common::kube_api`), answered through Destination.Get,
//! InboundServerPolicies and `/v1/store` as the file store's tests answer them: endpoints from
//! several slices and their ready/serving/terminating conditions, a deleted pod's endpoint gone,
//! a pod's identity from its ServiceAccount, a named targetPort through the pod's container
//! ports, a headless Service, opaque ports from a Namespace, Service or Pod annotation, per-port
//! Server policy, a bad object keeping its last good version, a missing backend, a deleted
//! namespace. And that the stand-in stays honest: a watch from a compacted version gets `410`,
//! a request it does not know fails the test.

mod common;

use std::collections::BTreeSet;

use common::kube_api::fixture_json;
use common::kube_store::{
    api, api_with, collection, control_plane, empty_list, endpoints_until, first_add, kind_of,
    opaque, pod, recorded, service, slice, NAMESPACES, PODS, ROUTES, SERVICES, SETTLE, SLICES,
};
use common::{get, http_json};
use linkerd2_proxy_api::inbound::{
    inbound_server_policies_client::InboundServerPoliciesClient, proxy_protocol as ipp, PortSpec,
};
use serde_json::{json, Value};

const WEB: &str = "web.default.svc.cluster.local:80";
const WEB_1: &str = "web-6d4cf56db6-4xkqz";
const WEB_2: &str = "web-6d4cf56db6-9ptzr";

fn ready() -> Value {
    json!({"ready": true, "serving": true, "terminating": false})
}

/// The inbound policy of a pod's port: its protocol, and the Server's name (`all-...`: a
/// default).
async fn inbound(grpc: std::net::SocketAddr, pod: &str, port: u32) -> (ipp::Kind, String) {
    let mut client = InboundServerPoliciesClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect to InboundServerPolicies");
    let (ns, name) = pod.split_once('/').unwrap();
    let server = client
        .get_port(PortSpec {
            workload: format!("{{\"ns\":\"{ns}\",\"pod\":\"{name}\"}}"),
            port,
        })
        .await
        .unwrap_or_else(|e| panic!("{pod}:{port}: {e}"))
        .into_inner();
    let name = server.labels.get("name").cloned().unwrap_or_default();
    (server.protocol.unwrap().kind.unwrap(), name)
}

/// Waits until `GET /v1/store` satisfies `done`.
async fn store_until(
    api: std::net::SocketAddr,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
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
async fn endpoints_follow_every_slice_its_conditions_and_the_pods() {
    let api = api().await;
    let cp = control_plane(&api, "k8s-slices").await;
    let mut web = get(cp.grpc_addr, WEB).await.unwrap();
    let mut seen = BTreeSet::new();
    endpoints_until(&mut web, &mut seen, &["10.244.1.5:8080", "10.244.2.7:8080"]).await;

    // A third pod, listed by a second slice of the same Service.
    let web_3 = "web-6d4cf56db6-x7m2q";
    api.apply(
        PODS,
        pod(
            "default",
            web_3,
            "10.244.3.9",
            json!({"app": "web"}),
            Some("web"),
            &[("http", 8080)],
        ),
    );
    let second = |conditions: Value| {
        slice(
            "default",
            "web-p9r4t",
            "web",
            ("http", 8080),
            &[(web_3, "10.244.3.9", conditions)],
        )
    };
    api.apply(SLICES, second(ready()));
    let all = ["10.244.1.5:8080", "10.244.2.7:8080", "10.244.3.9:8080"];
    endpoints_until(&mut web, &mut seen, &all).await;

    // Terminating (still serving, no longer ready): not an endpoint.
    api.apply(
        SLICES,
        second(json!({"ready": false, "serving": true, "terminating": true})),
    );
    endpoints_until(&mut web, &mut seen, &all[..2]).await;
    // Conditions left out: ready, as Kubernetes says to read them.
    api.apply(SLICES, second(json!({})));
    endpoints_until(&mut web, &mut seen, &all).await;

    // The pod deleted (its slice not yet updated): its endpoint is gone.
    api.delete(PODS, "default", web_3);
    endpoints_until(&mut web, &mut seen, &all[..2]).await;
    api.delete(SLICES, "default", "web-p9r4t");
    // One of the first slice's pods turns not-ready, then the slice goes: the pods fall back
    // to their own Ready condition.
    api.push(SLICES, &fixture_json("watch-endpointslice-not-ready.json"))
        .await;
    endpoints_until(&mut web, &mut seen, &all[..1]).await;
    // A headless Service with publishNotReadyAddresses lists the same pods: its slice says
    // `ready: true` for the not-ready pod (the controller forces it), `serving: false`. That
    // does not make the pod an endpoint of web.
    let peers = [
        (WEB_1, "10.244.1.5", ready()),
        (
            WEB_2,
            "10.244.2.7",
            json!({"ready": true, "serving": false, "terminating": false}),
        ),
    ];
    api.apply(
        SLICES,
        slice(
            "default",
            "web-peers-h2m8x",
            "web-peers",
            ("http", 8080),
            &peers,
        ),
    );
    // (db-0 turning not-ready after it, in the same watch: once db has no endpoint, the
    // peers' slice was taken too.)
    let mut db = get(cp.grpc_addr, "db.default.svc.cluster.local:5432")
        .await
        .unwrap();
    let mut db_seen = BTreeSet::new();
    endpoints_until(&mut db, &mut db_seen, &["10.244.1.9:5432"]).await;
    let not_ready = json!({"ready": false, "serving": false, "terminating": false});
    api.apply(
        SLICES,
        slice(
            "default",
            "db-7hq4m",
            "db",
            ("pg", 5432),
            &[("db-0", "10.244.1.9", not_ready)],
        ),
    );
    endpoints_until(&mut db, &mut db_seen, &[]).await;
    let now = first_add(cp.grpc_addr, WEB).await;
    assert_eq!(now.addrs.len(), 1, "the not-ready pod is back: {now:?}");
    api.delete(SLICES, "default", "web-peers-h2m8x");
    api.delete(SLICES, "default", "web-k8x2p");
    endpoints_until(&mut web, &mut seen, &all[..2]).await;

    // A Pod bookmark as the API server sends it (an empty Pod: `containers: null`) moves the
    // version on; the next watch resumes from it, and nothing is replayed twice.
    api.push(PODS, &fixture_json("watch-pod-bookmark.json"))
        .await;
    api.end_watches(PODS);
    api.watching(PODS).await;
    let watches = api.requests(&format!("GET {PODS}?"));
    let last = watches.last().unwrap();
    assert!(last.contains("resourceVersion=49120"), "{watches:#?}");
    let (_, store) = http_json(cp.api_addr, "GET", "/v1/store", "").await;
    // web's two pods, db-0 and cache-0 (not the finished Job's pod, not the deleted one).
    assert_eq!(store["workloads"], 4, "{store}");
    cp.shutdown().await.unwrap();
    api.assert_known();
}

#[tokio::test]
async fn identity_target_ports_and_headless_services_come_from_the_pods() {
    let api = api().await;
    let cp = control_plane(&api, "k8s-identity").await;

    // A Service whose named targetPort is 9090 in its pods; one pod runs as ServiceAccount
    // `api`, one names none (so runs as `default`).
    let ports = json!([{"name": "grpc", "port": 80, "protocol": "TCP", "targetPort": "grpc"}]);
    api.apply(
        SERVICES,
        service(
            "default",
            "api",
            "10.96.41.40",
            json!({"app": "api"}),
            ports.clone(),
        ),
    );
    api.apply(
        SERVICES,
        service(
            "default",
            "api-headless",
            "None",
            json!({"app": "api"}),
            ports,
        ),
    );
    for (name, ip, sa) in [
        ("api-0", "10.244.4.1", Some("api")),
        ("api-1", "10.244.4.2", None),
    ] {
        api.apply(
            PODS,
            pod(
                "default",
                name,
                ip,
                json!({"app": "api"}),
                sa,
                &[("grpc", 9090)],
            ),
        );
    }
    let endpoints = [
        ("api-0", "10.244.4.1", ready()),
        ("api-1", "10.244.4.2", ready()),
    ];
    api.apply(
        SLICES,
        slice("default", "api-abcde", "api", ("grpc", 9090), &endpoints),
    );
    api.apply(
        SLICES,
        slice(
            "default",
            "api-headless-fghij",
            "api-headless",
            ("grpc", 9090),
            &endpoints,
        ),
    );

    for authority in [
        "api.default.svc.cluster.local:80",
        "api-headless.default.svc.cluster.local:80",
    ] {
        let mut stream = get(cp.grpc_addr, authority).await.unwrap();
        let mut seen = BTreeSet::new();
        endpoints_until(
            &mut stream,
            &mut seen,
            &["10.244.4.1:9090", "10.244.4.2:9090"],
        )
        .await;
        let set = first_add(cp.grpc_addr, authority).await;
        let mut names: Vec<String> = set
            .addrs
            .iter()
            .map(|a| a.tls_identity.clone().unwrap().server_name.unwrap().name)
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "api.default.serviceaccount.identity.weft.cluster.local",
                "default.default.serviceaccount.identity.weft.cluster.local",
            ],
            "{authority}"
        );
    }
    // A pod that declares no container ports (most do not): a numeric targetPort reaches it.
    let plain_ports = json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8000}]);
    api.apply(
        SERVICES,
        service(
            "default",
            "plain",
            "10.96.41.41",
            json!({"app": "plain"}),
            plain_ports,
        ),
    );
    api.apply(
        PODS,
        pod(
            "default",
            "plain-0",
            "10.244.4.3",
            json!({"app": "plain"}),
            None,
            &[],
        ),
    );
    let mut plain = get(cp.grpc_addr, "plain.default.svc.cluster.local:80")
        .await
        .unwrap();
    endpoints_until(&mut plain, &mut BTreeSet::new(), &["10.244.4.3:8000"]).await;

    // The Service with a cluster IP answers by that IP too; the headless one has none.
    let by_ip = first_add(cp.grpc_addr, "10.96.41.40:80").await;
    assert_eq!(by_ip.addrs.len(), 2, "{by_ip:?}");
    let (_, services) = http_json(cp.api_addr, "GET", "/v1/services", "").await;
    // The API server's addresses; the headless Service gets none (none is allocated).
    let ip_of = |name: &str| {
        let all = services.as_array().unwrap();
        let svc = all.iter().find(|s| s["metadata"]["name"] == name);
        svc.unwrap_or_else(|| panic!("no {name}: {services}"))["spec"]["clusterIP"].clone()
    };
    assert_eq!(ip_of("api"), "10.96.41.40");
    assert_eq!(ip_of("api-headless"), Value::Null, "{services}");
    let (_, store) = http_json(cp.api_addr, "GET", "/v1/store", "").await;
    assert_eq!(
        store["errors"].as_array().unwrap().len(),
        2,
        "only the recorded bad route: {store}"
    );
    cp.shutdown().await.unwrap();
    api.assert_known();
}

#[tokio::test]
async fn opaque_ports_and_servers_apply_per_port_and_per_pod() {
    let server_kind = kind_of("policy.linkerd.io/v1beta3", "Server");
    let mut lists = recorded();
    lists.push(empty_list(server_kind));
    let api = api_with(lists).await;
    let cp = control_plane(&api, "k8s-inbound").await;
    let web_1 = format!("default/{WEB_1}");

    // No Server, no annotation: the default policy, detecting the protocol.
    let (kind, name) = inbound(cp.grpc_addr, &web_1, 8080).await;
    assert!(matches!(kind, ipp::Kind::Detect(_)), "{kind:?}");
    assert!(name.starts_with("all-"), "a default server: {name}");
    // The shop namespace's opaque-ports annotation reaches its pod's inbound port, and its
    // Service's endpoints (Destination).
    let (kind, _) = inbound(cp.grpc_addr, "shop/cache-0", 6379).await;
    assert!(matches!(kind, ipp::Kind::Opaque(_)), "{kind:?}");

    // A pod's own annotation: opaque on that port of that pod only. A pod's annotation may
    // name its container ports, as Linkerd's does.
    let mut annotated = fixture_json("pods.json")["items"][1].clone();
    annotated["metadata"]["annotations"]["config.linkerd.io/opaque-ports"] =
        json!("http,9000-9001");
    api.apply(PODS, annotated);
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let (kind, _) = inbound(cp.grpc_addr, &format!("default/{WEB_2}"), 8080).await;
        if matches!(kind, ipp::Kind::Opaque(_)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{WEB_2}'s annotation: {kind:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (kind, _) = inbound(cp.grpc_addr, &format!("default/{WEB_2}"), 9001).await;
    assert!(matches!(kind, ipp::Kind::Opaque(_)), "a range: {kind:?}");
    let (kind, _) = inbound(cp.grpc_addr, &web_1, 8080).await;
    assert!(
        matches!(kind, ipp::Kind::Detect(_)),
        "the other pod: {kind:?}"
    );
    let (_, store) = http_json(cp.api_addr, "GET", "/v1/store", "").await;
    assert!(!store["errors"].to_string().contains(WEB_2), "{store}");

    // A Server on the web pods' `http` port: that port is HTTP/1 under it, another port not.
    api.apply(
        &collection(server_kind),
        json!({"apiVersion": "policy.linkerd.io/v1beta3", "kind": "Server",
               "metadata": {"name": "web-http", "namespace": "default"},
               "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "port": "http",
                        "proxyProtocol": "HTTP/1"}}),
    );
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let (kind, name) = inbound(cp.grpc_addr, &web_1, 8080).await;
        if name == "web-http" {
            assert!(matches!(kind, ipp::Kind::Http1(_)), "{kind:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Server: {kind:?} {name}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, name) = inbound(cp.grpc_addr, &web_1, 9999).await;
    assert!(
        name.starts_with("all-"),
        "another port keeps the default: {name}"
    );
    let store = store_until(cp.api_addr, "the Server's status", |s| {
        s["policies"].to_string().contains("web-http")
    })
    .await;
    assert!(
        store["policies"].to_string().contains("Accepted"),
        "{store}"
    );
    cp.shutdown().await.unwrap();
    api.assert_known();
}

#[tokio::test]
async fn bad_edits_missing_backends_and_a_deleted_namespace() {
    let api = api().await;
    let cp = control_plane(&api, "k8s-edits").await;
    let route_named = |s: &Value, name: &str| -> Option<Value> {
        s["routes"]
            .as_array()?
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
    };

    // A bad edit of a good route: reported by name, the last good version stays in force.
    let mut split = fixture_json("httproutes.json")["items"][0].clone();
    split["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(-1);
    api.apply(ROUTES, split.clone());
    let store = store_until(cp.api_addr, "the bad edit", |s| {
        s["errors"]
            .to_string()
            .contains("HTTPRoute.gateway.networking.k8s.io/default/web-split: ")
    })
    .await;
    assert!(
        route_named(&store, "web-split").is_some(),
        "kept in force: {store}"
    );
    let path = "/v1/resources/httproutes/default/web-split";
    let (_, kept) = http_json(cp.api_addr, "GET", path, "").await;
    assert_eq!(
        kept["spec"]["rules"][0]["backendRefs"][0]["weight"], 1,
        "{kept}"
    );

    // A route to a backend that does not exist: in force, ResolvedRefs False.
    split["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(1);
    split["spec"]["rules"][0]["backendRefs"][0]["name"] = json!("nowhere");
    api.apply(ROUTES, split);
    let store = store_until(cp.api_addr, "the missing backend", |s| {
        route_named(s, "web-split").is_some_and(|r| r.to_string().contains("BackendNotFound"))
    })
    .await;
    let route = route_named(&store, "web-split").unwrap();
    let resolved = &route["parents"][0]["conditions"][1];
    assert_eq!(resolved["type"], "ResolvedRefs", "{route}");
    assert_eq!(resolved["status"], "False", "{route}");
    assert!(
        !store["errors"].to_string().contains("web-split"),
        "{store}"
    );

    // The shop namespace goes: first its annotation no longer applies, then (as the API server
    // deletes what was in it) its Service and pod.
    let cache = "cache.shop.svc.cluster.local:6379";
    assert!(opaque(&first_add(cp.grpc_addr, cache).await));

    // The namespace's annotation names a container port its pods do not have: left out for
    // them and for the Service, not an error on every object of the namespace. (Its default
    // policy changes too: what shows the edit was applied.)
    let mut shop = fixture_json("namespaces.json")["items"][1].clone();
    let notes = &mut shop["metadata"]["annotations"];
    notes["config.linkerd.io/opaque-ports"] = json!("mysql,6379");
    notes["config.linkerd.io/default-inbound-policy"] = json!("all-authenticated");
    api.apply(NAMESPACES, shop);
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let (kind, name) = inbound(cp.grpc_addr, "shop/cache-0", 6379).await;
        if name == "all-authenticated" {
            assert!(matches!(kind, ipp::Kind::Opaque(_)), "{kind:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "shop's edit: {name}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(opaque(&first_add(cp.grpc_addr, cache).await));
    let (_, store) = http_json(cp.api_addr, "GET", "/v1/store", "").await;
    assert!(!store["errors"].to_string().contains("shop"), "{store}");
    api.delete(NAMESPACES, "", "shop");
    let deadline = tokio::time::Instant::now() + SETTLE;
    while opaque(&first_add(cp.grpc_addr, cache).await) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shop's annotation still applies"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    api.delete(SLICES, "shop", "cache-2vd9s");
    api.delete(PODS, "shop", "cache-0");
    api.delete(SERVICES, "shop", "cache");
    store_until(cp.api_addr, "shop's objects gone", |s| s["services"] == 3).await;
    for kind in ["namespaces", "services", "externalworkloads"] {
        let path = format!("/v1/resources/{kind}");
        let (status, resources) = http_json(cp.api_addr, "GET", &path, "").await;
        assert_eq!(status, 200, "{path}: {resources}");
        assert!(
            !resources.to_string().contains("\"shop\""),
            "{path}: {resources}"
        );
    }
    let gone = get(cp.grpc_addr, cache).await;
    assert!(
        gone.is_err()
            || matches!(
                common::next(&mut gone.unwrap()).await,
                linkerd2_proxy_api::destination::update::Update::NoEndpoints(_)
            ),
        "shop's Service still answers"
    );
    cp.shutdown().await.unwrap();
    api.assert_known();
}

#[tokio::test]
async fn the_stand_in_answers_old_versions_410_and_fails_what_it_does_not_know() {
    use futures_util::{StreamExt, TryStreamExt};
    use kube::api::{Api, WatchParams};
    use kube::core::DynamicObject;
    let api = api().await;
    let dir = common::temp_dir("k8s-stand-in");
    let client = weft_control::k8s::client(Some(&api.kubeconfig(&dir)))
        .await
        .unwrap();
    let pods: Api<DynamicObject> =
        Api::all_with(client.clone(), &kind_of("v1", "Pod").api_resource());

    // A watch from before the list the server holds: 410, the recorded Status.
    // (kube opens the stream first and reports the answer's status as its first item.)
    let old = match pods.watch(&WatchParams::default(), "47000").await {
        Ok(stream) => {
            let mut stream = std::pin::pin!(stream.boxed());
            stream.try_next().await.map(|_| ())
        }
        Err(e) => Err(e),
    };
    match old {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (410, "Expired"),
                "{status:?}"
            )
        }
        Err(e) => panic!("expected 410, got {e}"),
        Ok(()) => panic!("expected 410, got a watch"),
    }
    // From a version the server has: the events since are sent first.
    let mut added = pod(
        "default",
        "late",
        "10.244.9.9",
        json!({"app": "late"}),
        None,
        &[],
    );
    added = api.apply(PODS, added);
    let version = added["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(version.parse::<u64>().unwrap() > 48211, "{version}");
    let stream = pods.watch(&WatchParams::default(), "48211").await.unwrap();
    let mut stream = std::pin::pin!(stream.boxed());
    match stream.try_next().await.unwrap() {
        Some(kube::api::WatchEvent::Added(o)) => {
            assert_eq!(o.metadata.name.as_deref(), Some("late"));
            assert_eq!(
                o.metadata.resource_version.as_deref(),
                Some(version.as_str())
            );
        }
        other => panic!("expected the ADDED event, got {other:?}"),
    }

    // Paging is not something it knows (the store does not ask for it): a request for it, or
    // for a path it was not given, fails the test.
    let secrets: Api<DynamicObject> = Api::all_with(
        client,
        &kube::core::ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "Secret".into(),
            plural: "secrets".into(),
        },
    );
    assert!(secrets.list(&Default::default()).await.is_err());
    assert!(pods
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .is_err());
    let unknown = std::panic::catch_unwind(|| api.assert_known()).unwrap_err();
    let message = unknown.downcast_ref::<String>().unwrap();
    assert!(message.contains("GET /api/v1/secrets?"), "{message}");
    assert!(message.contains("limit=1"), "{message}");
}

/// The pod templates `weft inject` writes (its golden files: every workload kind, every
/// annotation it sets) as the pods the API server then lists.
fn injected_pods() -> Vec<Value> {
    use serde::Deserialize;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../weft/tests/inject/golden");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".injected.yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for doc in yaml_serde::Deserializer::from_str(&text) {
            let doc = Value::deserialize(doc).unwrap();
            match doc["items"].as_array() {
                Some(items) => docs.extend(items.iter().cloned()),
                None => docs.push(doc),
            }
        }
    }
    let mut pods = Vec::new();
    for doc in docs {
        let template = match doc["kind"].as_str() {
            Some("Pod") => doc.clone(),
            Some("CronJob") => doc["spec"]["jobTemplate"]["spec"]["template"].clone(),
            _ => doc["spec"]["template"].clone(),
        };
        let injected = template["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(
                template["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten(),
            )
            .any(|c| c["name"] == "weft-proxy");
        if !injected {
            continue;
        }
        let name = format!("{}-0", doc["metadata"]["name"].as_str().unwrap());
        let ip = format!("10.244.8.{}", pods.len() + 1);
        let mut pod = pod("default", &name, &ip, json!({}), None, &[]);
        pod["metadata"]["labels"] = template["metadata"]["labels"].clone();
        pod["metadata"]["annotations"] = template["metadata"]["annotations"].clone();
        let status = pod["status"].clone();
        pod["spec"] = template["spec"].clone();
        pod["status"] = status;
        pods.push(pod);
    }
    pods
}

#[tokio::test]
async fn pods_weft_inject_writes_and_static_pods_are_workloads_without_errors() {
    let api = api().await;
    let cp = control_plane(&api, "k8s-injected").await;
    let (_, before) = http_json(cp.api_addr, "GET", "/v1/store", "").await;
    let mut pods = injected_pods();
    assert!(pods.len() >= 6, "{} injected pods", pods.len());
    // And what every cluster has beside them: a static pod's mirror, named after its node
    // (dots and all), on the node's network.
    let node = "ip-10-0-1-5.ec2.internal";
    let mut mirror = pod(
        "kube-system",
        &format!("kube-apiserver-{node}"),
        "10.0.1.5",
        json!({"component": "kube-apiserver", "tier": "control-plane"}),
        None,
        &[],
    );
    mirror["metadata"]["annotations"] = json!({
        "kubernetes.io/config.mirror": "9b3b8f2a6c1d4e5f",
        "kubernetes.io/config.source": "file",
        "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint": "10.0.1.5:6443",
    });
    mirror["spec"]["hostNetwork"] = json!(true);
    mirror["spec"]["nodeName"] = json!(node);
    pods.push(mirror);
    for pod in &pods {
        api.apply(PODS, pod.clone());
    }
    let want = before["workloads"].as_u64().unwrap() + pods.len() as u64;
    let store = store_until(cp.api_addr, "the injected pods", |s| s["workloads"] == want).await;
    assert_eq!(store["errors"], before["errors"], "{store}");
    // Their annotations as written: the statefulset's opaque port is opaque on its pod.
    let db = pods
        .iter()
        .find(|p| p["metadata"]["annotations"]["config.linkerd.io/opaque-ports"] == "5432")
        .expect("the statefulset's pod");
    let name = format!("default/{}", db["metadata"]["name"].as_str().unwrap());
    // (The index follows the store's state a moment later.)
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let (kind, _) = inbound(cp.grpc_addr, &name, 5432).await;
        if matches!(kind, ipp::Kind::Opaque(_)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name}: {kind:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    cp.shutdown().await.unwrap();
    api.assert_known();
}
