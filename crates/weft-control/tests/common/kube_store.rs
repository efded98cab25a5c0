//! What the tests of `--store kubernetes` share: the stand-in API server (`kube_api`) set up
//! strict with the recorded lists or with empty ones, the collection path of each watched kind,
//! a control plane on it, and Destination answers awaited as sets of addresses.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use linkerd2_proxy_api::destination::{
    protocol_hint::Protocol, update::Update as U, Update, WeightedAddrSet,
};
use serde_json::{json, Value};
use tonic::Streaming;
use weft_control::k8s::{Kind, KINDS};
use weft_control::store::Location;

use super::kube_api::{fixture_json, FakeApi};

/// Bound on waiting for an expected state (the tests wait on events; this stops a hung test).
pub const SETTLE: Duration = Duration::from_secs(20);

pub const NAMESPACES: &str = "/api/v1/namespaces";
pub const SERVICES: &str = "/api/v1/services";
pub const PODS: &str = "/api/v1/pods";
pub const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
pub const ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";

/// Where the API server serves the objects the store watches of `kind`: of every namespace,
/// or of the one its row names.
pub fn collection(kind: &Kind) -> String {
    let scope = match kind.row.watch_namespace {
        Some(ns) => format!("namespaces/{ns}/"),
        None => String::new(),
    };
    match kind.group {
        "" => format!("/api/{}/{scope}{}", kind.version, kind.plural),
        g => format!("/apis/{g}/{}/{scope}{}", kind.version, kind.plural),
    }
}

/// The watched kind of `apiVersion` and `kind` (as a document names them).
pub fn kind_of(api_version: &str, kind: &str) -> &'static Kind {
    KINDS
        .iter()
        .find(|k| k.kind == kind && k.api_resource().api_version == api_version)
        .unwrap_or_else(|| panic!("{api_version} {kind} is not a watched kind"))
}

/// A strict stand-in: the lists in `lists` by collection, every other watched kind not served
/// (its CRD not installed), and the recorded TokenReview answers.
pub async fn api_with(lists: Vec<(String, Value)>) -> FakeApi {
    let api = FakeApi::start().await;
    api.strict();
    for (path, list) in lists {
        api.set_list(&path, list);
    }
    for kind in KINDS.iter() {
        let path = collection(kind);
        if !api.has_list(&path) {
            api.not_served(&path);
        }
        if let Some(fields) = kind.row.field_selector {
            api.require_fields(&path, fields);
        }
    }
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

/// The recorded lists (`tests/fixtures/kubernetes/`) by collection.
pub fn recorded() -> Vec<(String, Value)> {
    [
        (NAMESPACES, "namespaces.json"),
        (SERVICES, "services.json"),
        (PODS, "pods.json"),
        (SLICES, "endpointslices.json"),
        (ROUTES, "httproutes.json"),
    ]
    .into_iter()
    .map(|(path, file)| (path.to_string(), fixture_json(file)))
    .collect()
}

/// An empty list of `kind` (installed, no objects yet), by its collection.
pub fn empty_list(kind: &Kind) -> (String, Value) {
    let list = json!({"kind": format!("{}List", kind.kind),
                      "apiVersion": kind.api_resource().api_version,
                      "metadata": {"resourceVersion": "1000"}, "items": []});
    (collection(kind), list)
}

/// The stand-in with the recorded lists.
pub async fn api() -> FakeApi {
    api_with(recorded()).await
}

/// The stand-in with every watched kind installed and no objects yet.
pub async fn empty_api() -> FakeApi {
    api_with(KINDS.iter().map(empty_list).collect()).await
}

/// A running pod as the API server lists it (the recorded web pod's shape: managed fields,
/// volumes, conditions): its IP, labels, ServiceAccount (`None`: the field left out) and
/// container ports, Ready.
pub fn pod(
    namespace: &str,
    name: &str,
    ip: &str,
    labels: Value,
    service_account: Option<&str>,
    ports: &[(&str, u16)],
) -> Value {
    let mut pod = fixture_json("pods.json")["items"][0].clone();
    let meta = &mut pod["metadata"];
    meta["namespace"] = json!(namespace);
    meta["name"] = json!(name);
    meta["labels"] = labels;
    for field in ["uid", "resourceVersion", "generateName", "ownerReferences"] {
        meta.as_object_mut().unwrap().remove(field);
    }
    let spec = pod["spec"].as_object_mut().unwrap();
    match service_account {
        Some(sa) => {
            spec.insert("serviceAccountName".into(), json!(sa));
            spec.insert("serviceAccount".into(), json!(sa));
        }
        None => {
            spec.remove("serviceAccountName");
            spec.remove("serviceAccount");
        }
    }
    pod["spec"]["containers"][0]["ports"] = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "containerPort": p, "protocol": "TCP"}))
        .collect();
    pod["status"]["podIP"] = json!(ip);
    pod["status"]["podIPs"] = json!([{"ip": ip}]);
    pod
}

/// An EndpointSlice of `service` as the endpoint-slice controller writes it (the recorded
/// shape), listing (pod, IP, conditions) on one port.
pub fn slice(
    namespace: &str,
    name: &str,
    service: &str,
    port: (&str, u16),
    endpoints: &[(&str, &str, Value)],
) -> Value {
    let mut slice = fixture_json("endpointslices.json")["items"][0].clone();
    let meta = &mut slice["metadata"];
    meta["namespace"] = json!(namespace);
    meta["name"] = json!(name);
    meta["labels"]["kubernetes.io/service-name"] = json!(service);
    meta["ownerReferences"][0]["name"] = json!(service);
    for field in ["uid", "resourceVersion"] {
        meta.as_object_mut().unwrap().remove(field);
    }
    slice["endpoints"] = endpoints
        .iter()
        .map(|(pod, ip, conditions)| {
            json!({"addresses": [ip], "conditions": conditions,
                   "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod},
                   "nodeName": "node-1"})
        })
        .collect();
    slice["ports"] = json!([{"name": port.0, "protocol": "TCP", "port": port.1}]);
    slice
}

/// A Service as the API server lists it (the recorded shape), selecting `selector`.
pub fn service(
    namespace: &str,
    name: &str,
    cluster_ip: &str,
    selector: Value,
    ports: Value,
) -> Value {
    let mut svc = fixture_json("services.json")["items"][1].clone();
    let meta = &mut svc["metadata"];
    meta["namespace"] = json!(namespace);
    meta["name"] = json!(name);
    meta["labels"] = json!({});
    for field in ["uid", "resourceVersion"] {
        meta.as_object_mut().unwrap().remove(field);
    }
    svc["spec"]["clusterIP"] = json!(cluster_ip);
    svc["spec"]["clusterIPs"] = json!([cluster_ip]);
    svc["spec"]["selector"] = selector;
    svc["spec"]["ports"] = ports;
    svc
}

pub async fn control_plane(api: &FakeApi, test: &str) -> weft_control::Running {
    let dir = super::temp_dir(test);
    let mut config = super::config(&dir);
    config.store = Location::Kubernetes(Some(api.kubeconfig(&dir)));
    // Nothing answers on the pods' addresses.
    config.scrape_interval = Duration::ZERO;
    super::start(config).await
}

/// Applies Destination updates to a set of addresses until it equals `want`.
pub async fn endpoints_until(
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
        match super::next(stream).await {
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

/// The first answer of `Destination.Get` for `path`, which must be endpoints.
pub async fn first_add(grpc: SocketAddr, path: &str) -> WeightedAddrSet {
    let mut stream = super::get(grpc, path).await.expect("Destination.Get");
    match super::next(&mut stream).await {
        U::Add(set) => set,
        other => panic!("{path}: expected endpoints, got {other:?}"),
    }
}

pub fn opaque(set: &WeightedAddrSet) -> bool {
    set.addrs.iter().all(|a| {
        matches!(
            a.protocol_hint.as_ref().and_then(|h| h.protocol.as_ref()),
            Some(Protocol::Opaque(_))
        )
    })
}
