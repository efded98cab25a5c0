//! `POST`/`DELETE`/`GET /v1/resources` (what `weft apply -f`, `weft delete` and `weft get` ask)
//! against a real control plane on each store: the file store and a real etcd. The same
//! requests get the same answers from both, a change is served as soon as its answer came,
//! and in the file store an applied document replaces its version inside a user's file.

mod common;

use common::etcd::Etcd;
use common::http_json;
use serde_json::Value;
use std::net::SocketAddr;
use weft_control::store::Location;

fn service(name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{selector: {{app: {name}}}, ports: [{{name: http, port: {port}}}]}}\n"
    )
}

/// An HTTPRoute splitting `web`'s traffic between web and web-v2 by `v1`/`v2`.
fn route(v1: i64, v2: i64) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: web, namespace: default}}\n\
         spec:\n  parentRefs: [{{group: core, kind: Service, name: web, port: 80}}]\n  \
         rules:\n  - backendRefs:\n    - {{name: web, port: 80, weight: {v1}}}\n    \
         - {{name: web-v2, port: 80, weight: {v2}}}\n"
    )
}

const SERVER: &str = "\
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: web-http, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  port: http
  proxyProtocol: HTTP/1
";

const POLICY: &str = "\
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-authz, namespace: default}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: web-http}
  requiredAuthenticationRefs: [{kind: ServiceAccount, name: client}]
";

/// The multi-document file of the walk-through, with `web` on `port` and the route's weights.
fn app(port: u16, v1: i64, v2: i64) -> String {
    [
        service("web", port),
        service("web-v2", 80),
        route(v1, v2),
        SERVER.into(),
        POLICY.into(),
    ]
    .join("---\n")
}

/// The `result` (or `error`) of each document of an apply/delete answer, in order.
fn results(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {body}"))
        .iter()
        .map(|r| match (r["result"].as_str(), r["error"].as_str()) {
            (Some(result), _) => format!("{} {result}", r["ref"].as_str().unwrap_or("?")),
            (_, Some(e)) => format!("error: {e}"),
            _ => panic!("neither result nor error: {r}"),
        })
        .collect()
}

fn weights(route: &Value) -> Vec<i64> {
    route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .expect("backendRefs")
        .iter()
        .map(|b| b["weight"].as_i64().expect("weight"))
        .collect()
}

/// The port of Service `name` the index serves now (`GET /v1/services`).
async fn served_port(api: SocketAddr, name: &str) -> Option<i64> {
    let (status, body) = http_json(api, "GET", "/v1/services", "").await;
    assert_eq!(status, 200, "{body}");
    body.as_array()?
        .iter()
        .find(|s| s["metadata"]["name"] == name)
        .and_then(|s| s["spec"]["ports"][0]["port"].as_i64())
}

/// The whole scenario against one control plane; returns the answers, to compare stores.
async fn scenario(store: &str, api: SocketAddr) -> Vec<String> {
    let mut log = Vec::new();
    let post = |path: &'static str, body: String| async move {
        let (status, body) = http_json(api, "POST", path, &body).await;
        (status, results(&body))
    };

    // 1. Created: every document of a multi-document file.
    let (status, got) = post("/v1/resources?file=app.yaml", app(80, 90, 10)).await;
    assert_eq!(status, 200, "{store}: {got:?}");
    assert_eq!(
        got,
        [
            "service/web created",
            "service/web-v2 created",
            "httproute.gateway.networking.k8s.io/web created",
            "server.policy.linkerd.io/web-http created",
            "authorizationpolicy.policy.linkerd.io/web-authz created",
        ],
        "{store}"
    );
    log.extend(got);
    // 200 means served: the index has it now, no waiting.
    assert_eq!(served_port(api, "web").await, Some(80), "{store}");

    // 2. Each comes back as applied, routes and policies with their status.
    let (status, web) = http_json(api, "GET", "/v1/resources/svc/default/web", "").await;
    assert_eq!(
        (status, &web["metadata"]["name"]),
        (200, &Value::from("web")),
        "{store}: {web}"
    );
    assert_eq!(web["spec"]["ports"][0]["port"], 80, "{store}: {web}");
    let (status, r) = http_json(api, "GET", "/v1/resources/HTTPRoutes/default/web", "").await;
    assert_eq!(status, 200, "{store}: {r}");
    assert_eq!(weights(&r), [90, 10], "{store}: {r}");
    let accepted = &r["status"]["parents"][0]["conditions"][0];
    assert_eq!(accepted["type"], "Accepted", "{store}: {r}");
    let (status, srv) = http_json(api, "GET", "/v1/resources/server/default/web-http", "").await;
    assert_eq!(status, 200, "{store}: {srv}");
    assert_eq!(
        srv["status"]["conditions"][0]["status"], "True",
        "{store}: {srv}"
    );
    let (status, list) = http_json(api, "GET", "/v1/resources/authorizationpolicies", "").await;
    assert_eq!(status, 200, "{store}: {list}");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{store}: {list}");
    assert_eq!(
        list[0]["spec"]["targetRef"]["name"], "web-http",
        "{store}: {list}"
    );
    let (status, e) = http_json(api, "GET", "/v1/resources/deployments", "").await;
    assert_eq!(status, 400, "{store}: {e}");
    assert!(e["error"].as_str().unwrap().contains("unknown kind"), "{e}");

    // 3. Configured: a changed route and Service are in force once answered.
    let (status, got) = post("/v1/resources?file=app.yaml", app(8080, 50, 50)).await;
    assert_eq!(status, 200, "{store}: {got:?}");
    assert_eq!(
        got,
        [
            "service/web configured",
            "service/web-v2 unchanged",
            "httproute.gateway.networking.k8s.io/web configured",
            "server.policy.linkerd.io/web-http unchanged",
            "authorizationpolicy.policy.linkerd.io/web-authz unchanged",
        ],
        "{store}"
    );
    log.extend(got);
    assert_eq!(served_port(api, "web").await, Some(8080), "{store}");
    let (_, r) = http_json(api, "GET", "/v1/resources/httproute/default/web", "").await;
    assert_eq!(weights(&r), [50, 50], "{store}: {r}");

    // 4. Unchanged: the same file again.
    let (status, got) = post("/v1/resources?file=app.yaml", app(8080, 50, 50)).await;
    assert_eq!(status, 200, "{store}: {got:?}");
    assert!(
        got.iter().all(|g| g.ends_with(" unchanged")),
        "{store}: {got:?}"
    );
    log.extend(got);

    // 5. One bad document, one good: the good one is applied, the bad one reported as the
    // store reports it, and the route keeps its last good version.
    let mixed = format!("{}---\n{}", route(-1, 50), service("api", 81));
    let (status, got) = post("/v1/resources?file=mixed.yaml", mixed).await;
    assert_eq!(status, 422, "{store}: {got:?}");
    assert_eq!(got.len(), 2, "{store}: {got:?}");
    assert!(
        got[0].starts_with("error: mixed.yaml: document 0: spec.rules[0].backendRefs[0].weight"),
        "{store}: {got:?}"
    );
    assert_eq!(got[1], "service/api created", "{store}");
    log.extend(got);
    let (_, r) = http_json(api, "GET", "/v1/resources/httproute/default/web", "").await;
    assert_eq!(weights(&r), [50, 50], "{store}: {r}");
    assert_eq!(served_port(api, "api").await, Some(81), "{store}");
    let (_, status) = http_json(api, "GET", "/v1/store", "").await;
    assert_eq!(status["errors"], Value::Array(vec![]), "{store}: {status}");

    // 6. A registered workload belongs to the registration API.
    let workload = "apiVersion: workload.linkerd.io/v1beta1\nkind: ExternalWorkload\n\
        metadata: {name: reg-1, namespace: default, labels: {app: web}}\n\
        spec: {workloadIPs: [{ip: 127.0.0.2}]}\n";
    let (status, body) = http_json(api, "PUT", "/v1/workloads/default/reg-1", workload).await;
    assert_eq!(status, 200, "{store}: {body}");
    let (status, got) = post("/v1/resources", workload.to_string()).await;
    assert_eq!(status, 422, "{store}: {got:?}");
    assert!(
        got[0].contains("is a registered workload: `weft run`"),
        "{store}: {got:?}"
    );
    log.extend(got);
    let (status, list) = http_json(api, "GET", "/v1/resources/externalworkloads", "").await;
    assert_eq!(status, 200, "{store}: {list}");
    assert_eq!(list[0]["metadata"]["name"], "reg-1", "{store}: {list}");

    // 7. delete -f, then the documents are gone: 404, and a second delete is a 404 too.
    let (status, body) = http_json(api, "DELETE", "/v1/resources", &app(8080, 50, 50)).await;
    let got = results(&body);
    assert_eq!(status, 200, "{store}: {got:?}");
    assert!(
        got.iter().all(|g| g.ends_with(" deleted")),
        "{store}: {got:?}"
    );
    log.extend(got);
    assert_eq!(served_port(api, "web").await, None, "{store}");
    for path in [
        "/v1/resources/httproute/default/web",
        "/v1/resources/svc/default/web",
        "/v1/resources/server/default/web-http",
    ] {
        let (status, body) = http_json(api, "GET", path, "").await;
        assert_eq!(status, 404, "{store}: {path}: {body}");
    }
    let (status, body) = http_json(api, "DELETE", "/v1/resources/svc/default/web", "").await;
    assert_eq!(status, 404, "{store}: {body}");
    log.push(body["error"].to_string());
    let (status, body) = http_json(api, "DELETE", "/v1/resources/svc/default/api", "").await;
    assert_eq!(status, 200, "{store}: {body}");
    log.extend(results(&body));
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_and_delete_answer_the_same_on_both_stores() {
    let Some(etcd) = Etcd::start("resources-api").await else {
        return;
    };
    let dir = common::temp_dir("resources-api");
    let stores = [
        ("files", Location::Dir(dir.clone())),
        ("etcd", etcd.store("weft")),
    ];
    let mut answers = Vec::new();
    for (name, store) in stores {
        let config = weft_control::Config {
            store,
            ..common::config(&common::temp_dir("unused"))
        };
        let cp = common::start(config).await;
        answers.push(scenario(name, cp.api_addr).await);
    }
    assert_eq!(answers[0], answers[1], "the stores answer differently");
    // Every document the scenario created was deleted again: their files are gone.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("the store")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| !n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_keeps_a_new_document_under_its_own_key() {
    let Some(etcd) = Etcd::start("resources-key").await else {
        return;
    };
    let config = weft_control::Config {
        store: etcd.store("weft"),
        ..common::config(&common::temp_dir("unused"))
    };
    let cp = common::start(config).await;
    let (status, body) = http_json(cp.api_addr, "POST", "/v1/resources", &route(1, 1)).await;
    assert_eq!(status, 200, "{body}");
    let kv = etcd
        .client()
        .get(b"/weft/resources/httproute.gateway.networking.k8s.io/default/web")
        .await
        .expect("etcd get")
        .expect("the route's own key");
    assert_eq!(String::from_utf8_lossy(&kv.value), route(1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_replaces_the_document_inside_a_users_file() {
    let dir = common::temp_dir("resources-in-place");
    let head = "# shared services, kept by hand\n";
    let mine = |b_port| {
        format!(
            "{head}{}---\n# b is the one that changes\n{}--- # c\n{}",
            service("a", 80),
            service("b", b_port),
            service("c", 82)
        )
    };
    std::fs::write(dir.join("mine.yaml"), mine(81)).expect("write");
    let cp = common::start(common::config(&dir)).await;
    let api = cp.api_addr;
    assert_eq!(served_port(api, "b").await, Some(81));

    let (status, body) = http_json(api, "POST", "/v1/resources", &service("b", 9090)).await;
    assert_eq!(
        (status, results(&body)),
        (200, vec!["service/b configured".to_string()])
    );
    // Only b's document changed (its comment went with it: it was part of that document).
    let want = format!(
        "{head}{}---\n{}--- # c\n{}",
        service("a", 80),
        service("b", 9090),
        service("c", 82)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("mine.yaml")).unwrap(),
        want
    );
    assert!(!dir.join("service.default.b.yaml").exists());
    assert_eq!(served_port(api, "b").await, Some(9090));

    // A new document gets a file of its own, written whole.
    let (status, body) = http_json(api, "POST", "/v1/resources", &service("d", 84)).await;
    assert_eq!(
        (status, results(&body)),
        (200, vec!["service/d created".to_string()])
    );
    let own = std::fs::read_to_string(dir.join("service.default.d.yaml")).expect("d's file");
    assert_eq!(own, service("d", 84));

    // Deleting takes b and its marker out of the user's file, and d's file away.
    for path in [
        "/v1/resources/service/default/b",
        "/v1/resources/svc/default/d",
    ] {
        let (status, body) = http_json(api, "DELETE", path, "").await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let want = format!("{head}{}--- # c\n{}", service("a", 80), service("c", 82));
    assert_eq!(
        std::fs::read_to_string(dir.join("mine.yaml")).unwrap(),
        want
    );
    assert!(!dir.join("service.default.d.yaml").exists());
    assert_eq!(served_port(api, "b").await, None);
    assert_eq!(served_port(api, "a").await, Some(80));
}
