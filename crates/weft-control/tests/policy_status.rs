//! The status of HTTPLocalRateLimitPolicy and EgressNetwork, as Linkerd's policy controller
//! writes it (an `Accepted` condition with its reasons, and a rate-limit policy's `targetRef`),
//! on every store: shown by `GET /v1/resources` (`weft get -o yaml`) with the file store,
//! written to `PREFIX/status/<kind>/<ns>/<name>` by the leader with the etcd store, and
//! PATCHed onto the objects' `status` subresource by the leader with the Kubernetes store.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::etcd::Etcd;
use common::kube_api::FakeApi;
use common::{http_json, temp_dir};
use serde_json::{json, Value};
use weft_control::store::Location;

/// Bound on waiting for the leader's writes.
const SETTLE: Duration = Duration::from_secs(30);

/// One object of `default`, created at `created`.
fn object(api_version: &str, kind: &str, name: &str, created: &str, spec: Value) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
        "spec": spec,
    })
}

fn server() -> Value {
    object(
        "policy.linkerd.io/v1beta3",
        "Server",
        "web-http",
        "2026-01-01T00:00:00Z",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "port": 8080,
               "proxyProtocol": "HTTP/1"}),
    )
}

fn rate_limit(name: &str, created: &str, server: &str) -> Value {
    object(
        "policy.linkerd.io/v1alpha1",
        "HTTPLocalRateLimitPolicy",
        name,
        created,
        json!({"targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": server},
               "total": {"requestsPerSecond": 100}}),
    )
}

fn rate_limits() -> Vec<Value> {
    vec![
        rate_limit("rl-first", "2026-02-01T00:00:00Z", "web-http"),
        // Its Server is limited by the older one.
        rate_limit("rl-second", "2026-03-01T00:00:00Z", "web-http"),
        rate_limit("rl-ghost", "2026-02-01T00:00:00Z", "ghost"),
    ]
}

fn egress_network() -> Value {
    object(
        "policy.linkerd.io/v1alpha1",
        "EgressNetwork",
        "internet",
        "2026-01-01T00:00:00Z",
        json!({"trafficPolicy": "Allow"}),
    )
}

/// Every document, as one YAML file (JSON is YAML).
fn documents() -> String {
    let mut docs = vec![server()];
    docs.extend(rate_limits());
    docs.push(egress_network());
    docs.iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// What each object's status says: (kind, name, `Accepted` status, reason, target Server).
const EXPECTED: &[(&str, &str, &str, &str, Option<&str>)] = &[
    (
        "HTTPLocalRateLimitPolicy",
        "rl-first",
        "True",
        "Accepted",
        Some("web-http"),
    ),
    (
        "HTTPLocalRateLimitPolicy",
        "rl-second",
        "False",
        "RateLimitReasonAlreadyExists",
        Some("web-http"),
    ),
    (
        "HTTPLocalRateLimitPolicy",
        "rl-ghost",
        "False",
        "NoMatchingTarget",
        Some("ghost"),
    ),
    ("EgressNetwork", "internet", "True", "Accepted", None),
];

/// Checks one object's `status` (its `conditions` and `targetRef`) against [`EXPECTED`].
fn assert_status(store: &str, kind: &str, name: &str, status: &Value) {
    let &(_, _, accepted, reason, target) = EXPECTED
        .iter()
        .find(|e| e.0 == kind && e.1 == name)
        .expect("an expected object");
    let conditions = status["conditions"].as_array();
    assert_eq!(
        conditions.map(Vec::len),
        Some(1),
        "{store} {name}: {status}"
    );
    let c = &status["conditions"][0];
    assert_eq!(c["type"], "Accepted", "{store} {name}: {status}");
    assert_eq!(c["status"], accepted, "{store} {name}: {status}");
    assert_eq!(c["reason"], reason, "{store} {name}: {status}");
    match target {
        Some(server) => assert_eq!(
            status["targetRef"],
            json!({"group": "policy.linkerd.io", "kind": "Server", "name": server}),
            "{store} {name}: {status}"
        ),
        None => assert!(
            status.get("targetRef").is_none(),
            "{store} {name}: {status}"
        ),
    }
}

/// Applies every document through `POST /v1/resources`.
async fn apply(api: SocketAddr) {
    let (status, body) =
        http_json(api, "POST", "/v1/resources?file=policy.yaml", &documents()).await;
    assert_eq!(status, 200, "{body}");
}

/// Polls `f` until it returns `Some` (bounded by [`SETTLE`]).
async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_file_store_shows_rate_limit_and_egress_status_as_linkerd_writes_it() {
    let cp = common::start(common::config(&temp_dir("policy-status-files"))).await;
    apply(cp.api_addr).await;
    for (kind, name, ..) in EXPECTED {
        let path = format!("/v1/resources/{kind}/default/{name}");
        let (status, doc) = http_json(cp.api_addr, "GET", &path, "").await;
        assert_eq!(status, 200, "{path}: {doc}");
        assert_eq!(doc["spec"], documents_spec(kind, name), "{doc}");
        assert_status("files", kind, name, &doc["status"]);
    }
    // A Server's status is Weft's own (GET /v1/store), shown as well; Linkerd writes none.
    let (_, srv) = http_json(cp.api_addr, "GET", "/v1/resources/srv/default/web-http", "").await;
    assert_eq!(
        srv["status"]["conditions"][0]["reason"], "Accepted",
        "{srv}"
    );
    assert!(srv["status"].get("targetRef").is_none(), "{srv}");
}

/// The `spec` of the document `name` of `kind`, as applied.
fn documents_spec(kind: &str, name: &str) -> Value {
    let mut all = rate_limits();
    all.push(egress_network());
    all.into_iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .map(|d| d["spec"].clone())
        .expect("a document")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_leader_writes_rate_limit_and_egress_status_keys() {
    let Some(etcd) = Etcd::start("policy-status").await else {
        return;
    };
    let cp = common::start(weft_control::Config {
        store: etcd.store("weft"),
        ..common::config(&temp_dir("policy-status-etcd"))
    })
    .await;
    apply(cp.api_addr).await;
    let client = etcd.client();
    for (kind, name, ..) in EXPECTED {
        let key = format!("/weft/status/{}/default/{name}", kind.to_ascii_lowercase());
        let written: Value = until(&key, async || {
            let kv = client.get(key.as_bytes()).await.expect("get")?;
            serde_json::from_slice(&kv.value).ok()
        })
        .await;
        assert_eq!(
            (&written["kind"], &written["name"]),
            (&json!(kind), &json!(name)),
            "{written}"
        );
        assert_status("etcd", kind, name, &written);
    }
    cp.shutdown().await.unwrap();
}

/// The collection path of `kind` (v1alpha1 of policy.linkerd.io, Server's v1beta3).
fn collection(kind: &str) -> &'static str {
    match kind {
        "Server" => "/apis/policy.linkerd.io/v1beta3/servers",
        "HTTPLocalRateLimitPolicy" => "/apis/policy.linkerd.io/v1alpha1/httplocalratelimitpolicies",
        "EgressNetwork" => "/apis/policy.linkerd.io/v1alpha1/egressnetworks",
        other => panic!("no collection for {other}"),
    }
}

/// `items` as the API server lists them: each with a uid and resourceVersion.
fn list(kind: &str, items: Vec<Value>) -> Value {
    let items: Vec<Value> = items
        .into_iter()
        .enumerate()
        .map(|(i, mut o)| {
            o["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{i:012}"));
            o["metadata"]["resourceVersion"] = json!(format!("{}", 500 + i));
            o["metadata"]["generation"] = json!(1);
            o
        })
        .collect();
    let api_version = items[0]["apiVersion"].clone();
    json!({"apiVersion": api_version, "kind": format!("{kind}List"),
           "metadata": {"resourceVersion": "600"}, "items": items})
}

#[tokio::test]
async fn the_kubernetes_leader_patches_rate_limit_and_egress_status() {
    let api = FakeApi::start().await;
    api.set_list(collection("Server"), list("Server", vec![server()]));
    api.set_list(
        collection("HTTPLocalRateLimitPolicy"),
        list("HTTPLocalRateLimitPolicy", rate_limits()),
    );
    api.set_list(
        collection("EgressNetwork"),
        list("EgressNetwork", vec![egress_network()]),
    );
    let dir = temp_dir("policy-status-kubernetes");
    let mut config = common::config(&dir);
    config.store = Location::Kubernetes(Some(api.kubeconfig(&dir)));
    config.scrape_interval = Duration::ZERO;
    let cp = common::start(config).await;

    let path = |kind: &str, name: &str| format!("{}/status", item(kind, name));
    for (kind, name, ..) in EXPECTED {
        let at = path(kind, name);
        let body = until(&format!("PATCH {at}"), async || {
            api.status_patches()
                .into_iter()
                .find(|(p, _)| *p == at)
                .map(|(_, body)| body)
        })
        .await;
        // The whole status, Weft's alone: no version to write at, every condition timed.
        assert!(body["metadata"].is_null(), "{body}");
        let time = &body["status"]["conditions"][0]["lastTransitionTime"];
        assert!(time.is_string(), "{body}");
        assert_status("kubernetes", kind, name, &body["status"]);
    }
    // The API server took each patch: the object shows its status.
    let (status, ghost) = http_json(
        api.addr,
        "GET",
        &path("HTTPLocalRateLimitPolicy", "rl-ghost"),
        "",
    )
    .await;
    assert_eq!(status, 200, "{ghost}");
    assert_eq!(
        ghost["status"]["conditions"][0]["reason"], "NoMatchingTarget",
        "{ghost}"
    );
    // Linkerd writes no Server status; neither does Weft.
    let server_patches: Vec<String> = api
        .status_patches()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.contains("/servers/"))
        .collect();
    assert!(server_patches.is_empty(), "{server_patches:?}");
    // Each written once: nothing changed since.
    for (kind, name, ..) in EXPECTED {
        let at = path(kind, name);
        let n = api
            .status_patches()
            .iter()
            .filter(|(p, _)| *p == at)
            .count();
        assert_eq!(n, 1, "{at}: {:#?}", api.status_patches());
    }
    cp.shutdown().await.unwrap();
}

/// The path of the object `name` of `kind` in `default`.
fn item(kind: &str, name: &str) -> String {
    let (prefix, plural) = collection(kind).rsplit_once('/').unwrap();
    format!("{prefix}/namespaces/default/{plural}/{name}")
}
