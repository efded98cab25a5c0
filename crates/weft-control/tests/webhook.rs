//! The sidecar-injection admission webhook over real HTTPS: a rustls client that trusts only the
//! mesh's trust anchors and verifies the name `weft-proxy-injector.weft.svc` posts
//! `AdmissionReview` v1 requests shaped as the API server sends them for the pods of each
//! workload kind; the returned JSONPatch is applied and the pod checked (and validated against
//! the Kubernetes schemas with `kubernetes-validate` when it is installed; under CI=true it must
//! be). Namespace annotations come from the store's Namespace documents.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use weft_control::inject::{self, env, Settings};

/// Stand-in variables: the real ones are the `weft` binary's (its golden files check them).
struct TestSidecar;

impl inject::Sidecar for TestSidecar {
    fn proxy_env(&self, s: &Settings) -> Vec<Value> {
        let mut vars = vec![
            env("CONTROL", s.destination_addr()),
            env("ANCHORS", s.trust_anchors.clone().unwrap_or_default()),
        ];
        if let Some(level) = &s.log_level {
            vars.push(env("LOG", level.clone()));
        }
        vars
    }

    fn init_args(&self, s: &Settings) -> Vec<String> {
        vec![format!("--proxy-uid={}", s.proxy_uid)]
    }
}

const NAMESPACES: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  annotations:
    linkerd.io/inject: enabled
    config.linkerd.io/proxy-log-level: debug
---
apiVersion: v1
kind: Namespace
metadata:
  name: plain
";

struct Webhook {
    cp: weft_control::Running,
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
}

async fn start() -> Webhook {
    let store = common::temp_dir("webhook");
    std::fs::write(store.join("namespaces.yaml"), NAMESPACES).unwrap();
    let mut config = common::config(&store);
    config.webhook = Some(inject::webhook::WebhookConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        injector: inject::Injector {
            images: inject::Images::default(),
            // The control plane's own replace these.
            defaults: Default::default(),
            cluster_domain: "unused.example".into(),
            cni: false,
            trust_anchors: None,
            sidecar: Arc::new(TestSidecar),
        },
    });
    let cp = common::start(config).await;
    let addr = cp.webhook_addr.expect("the webhook listens");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile(&cp.trust_anchors_pem) {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Webhook {
        cp,
        addr,
        tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
    }
}

fn rustls_pemfile(pem: &str) -> Vec<CertificateDer<'static>> {
    weft_control::ca::pem_certificates(pem.as_bytes())
        .expect("PEM anchors")
        .into_iter()
        .map(CertificateDer::from)
        .collect()
}

impl Webhook {
    /// One HTTPS request to the webhook as `name`; (status, body).
    async fn post(&self, name: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let server = ServerName::try_from(name.to_string()).unwrap();
        let mut tls = tokio::time::timeout(common::LIMIT, self.tls.connect(server, tcp))
            .await
            .expect("handshake in time")?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nhost: {name}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        // The server closes after the answer; a TLS close_notify may be missing on shutdown.
        let _ = tokio::time::timeout(common::LIMIT, tls.read_to_end(&mut buf))
            .await
            .expect("answer in time");
        let text = String::from_utf8(buf).expect("UTF-8");
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        Ok((status, text.split_once("\r\n\r\n").unwrap().1.to_string()))
    }

    async fn review(&self, request: Value) -> Value {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": request,
        });
        let (status, body) = self
            .post(
                &inject::webhook::dns_name("weft"),
                "/inject",
                &review.to_string(),
            )
            .await
            .expect("the webhook answers");
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).expect("JSON answer");
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(
            answer["response"]["uid"], review["request"]["uid"],
            "uid echoed"
        );
        assert_eq!(answer["response"]["allowed"], true, "never denies");
        answer["response"].clone()
    }
}

/// A pod as the API server hands it to mutating webhooks: defaults applied, the
/// ServiceAccount's token volume added, no name yet for a controller's pods.
fn pod(namespace: &str, owner: Option<(&str, &str)>, annotations: Value, restart: &str) -> Value {
    let mut meta =
        json!({"namespace": namespace, "labels": {"app": "web"}, "annotations": annotations});
    match owner {
        Some((kind, name)) => {
            meta["generateName"] = json!(format!("{name}-"));
            meta["ownerReferences"] = json!([{
                "apiVersion": if kind == "Job" { "batch/v1" } else { "apps/v1" },
                "kind": kind, "name": name, "uid": "0b9a1c9e-42f4-4c5e-9a4b-2f0c7f1d3e11",
                "controller": true, "blockOwnerDeletion": true,
            }]);
        }
        None => meta["name"] = json!("debug"),
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "containers": [{
                "name": "web",
                "image": "docker.l5d.io/buoyantio/emojivoto-web:v11",
                "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
                "volumeMounts": [{
                    "name": "kube-api-access-7xk2p",
                    "readOnly": true,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                }],
            }],
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "web",
            "serviceAccount": "web",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "volumes": [{
                "name": "kube-api-access-7xk2p",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                    ],
                    "defaultMode": 420,
                },
            }],
        },
        "status": {},
    })
}

fn request(uid: &str, namespace: &str, object: Value) -> Value {
    json!({
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": namespace,
        "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts", "system:authenticated"]},
        "object": object,
        "oldObject": null,
        "dryRun": false,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
    })
}

/// RFC 6901 pointer → (parent pointer, last segment unescaped).
fn split(path: &str) -> (&str, String) {
    let (parent, last) = path.rsplit_once('/').expect("a pointer");
    (parent, last.replace("~1", "/").replace("~0", "~"))
}

/// Applies an RFC 6902 patch (the operations a webhook may send: add, remove, replace).
fn apply(doc: &mut Value, patch: &Value) {
    for op in patch.as_array().expect("a JSON array of operations") {
        let path = op["path"].as_str().expect("path");
        let (parent, key) = split(path);
        let target = doc
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("no {parent}"));
        match (op["op"].as_str().expect("op"), target) {
            ("add" | "replace", Value::Object(map)) => {
                map.insert(key, op["value"].clone());
            }
            ("add", Value::Array(items)) if key == "-" => items.push(op["value"].clone()),
            ("add", Value::Array(items)) => items.insert(key.parse().unwrap(), op["value"].clone()),
            ("replace", Value::Array(items)) => {
                items[key.parse::<usize>().unwrap()] = op["value"].clone()
            }
            ("remove", Value::Object(map)) => {
                map.remove(&key).expect("removing a member that exists");
            }
            ("remove", Value::Array(items)) => {
                items.remove(key.parse().unwrap());
            }
            (other, _) => panic!("unexpected operation {other} at {path}"),
        }
    }
}

fn patched(pod: &Value, response: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a base64 patch"))
        .expect("base64");
    let patch: Value = serde_json::from_slice(&patch).expect("a JSON patch");
    let mut pod = pod.clone();
    apply(&mut pod, &patch);
    pod
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|l| l.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn pods_of_every_workload_kind_are_injected_in_an_enabled_namespace() {
    let w = start().await;
    let anchors = w.cp.trust_anchors_pem.clone();
    let kinds = [
        (
            "ReplicaSet",
            Some(("ReplicaSet", "web-7d4b9c6f8d")),
            "Always",
        ),
        ("StatefulSet", Some(("StatefulSet", "db")), "Always"),
        ("DaemonSet", Some(("DaemonSet", "node-agent")), "Always"),
        ("Job", Some(("Job", "migrate")), "Never"),
        ("CronJob", Some(("Job", "report-28712345")), "OnFailure"),
        ("Pod", None, "Always"),
    ];
    let mut injected = Vec::new();
    for (i, (what, owner, restart)) in kinds.into_iter().enumerate() {
        let original = pod("shop", owner, json!({}), restart);
        let uid = format!("7f8c1a2e-0000-4000-8000-00000000000{i}");
        let response = w.review(request(&uid, "shop", original.clone())).await;
        let pod = patched(&original, &response);
        let spec = &pod["spec"];
        assert_eq!(
            names(&spec["initContainers"]),
            [inject::INIT_CONTAINER, inject::PROXY_CONTAINER],
            "{what}"
        );
        assert_eq!(
            spec["containers"], original["spec"]["containers"],
            "{what}: app untouched"
        );
        let proxy = &spec["initContainers"][1];
        assert_eq!(proxy["restartPolicy"], "Always", "{what}: a native sidecar");
        let env = |name: &str| {
            proxy["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .map(|e| e["value"].clone())
        };
        assert_eq!(
            env("LOG"),
            Some(json!("debug")),
            "{what}: the Namespace's annotation"
        );
        assert_eq!(
            env("ANCHORS"),
            Some(json!(anchors)),
            "{what}: the CA's anchors inline"
        );
        assert_eq!(
            env("CONTROL"),
            Some(json!("weft-dst.weft.svc.cluster.local:8086"))
        );
        assert_eq!(
            names(&spec["volumes"]),
            ["kube-api-access-7xk2p", inject::TOKEN_VOLUME],
            "{what}"
        );
        assert_eq!(
            pod["metadata"]["annotations"][inject::PROXY_VERSION_ANNOTATION],
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(
            pod["metadata"]["ownerReferences"],
            original["metadata"]["ownerReferences"]
        );
        // The API server sends the patched pod through the webhook again when another webhook
        // changed it (reinvocation): nothing more happens.
        let again = w
            .review(request(&format!("{uid}-again"), "shop", pod.clone()))
            .await;
        assert!(again.get("patch").is_none(), "{what}: re-injected: {again}");
        injected.push((what, pod));
    }
    validate(&injected);
    w.cp.shutdown().await.unwrap();
}

#[tokio::test]
async fn pods_the_namespace_or_annotations_leave_out_come_back_without_a_patch() {
    let w = start().await;
    // A namespace without the annotation, one with no Namespace document at all.
    for ns in ["plain", "elsewhere"] {
        let response = w
            .review(request("a1", ns, pod(ns, None, json!({}), "Always")))
            .await;
        assert!(response.get("patch").is_none(), "{ns}: {response}");
        assert!(response.get("patchType").is_none(), "{ns}: {response}");
    }
    // The control plane's own namespace, even for a pod asking for injection.
    {
        let ns = "weft";
        let asking = pod(ns, None, json!({"linkerd.io/inject": "enabled"}), "Always");
        let response = w.review(request("a0", ns, asking)).await;
        assert!(response.get("patch").is_none(), "{ns}: {response}");
    }
    // The pod opts out in an enabled namespace; another opts in in a plain one.
    let off = pod(
        "shop",
        None,
        json!({"linkerd.io/inject": "disabled"}),
        "Always",
    );
    assert!(w
        .review(request("a2", "shop", off))
        .await
        .get("patch")
        .is_none());
    let on = pod(
        "plain",
        None,
        json!({"linkerd.io/inject": "enabled"}),
        "Always",
    );
    let response = w.review(request("a3", "plain", on.clone())).await;
    let on = patched(&on, &response);
    assert_eq!(names(&on["spec"]["initContainers"]).len(), 2);
    // Classic mode through the pod's annotation.
    let classic = pod(
        "shop",
        None,
        json!({"config.beta.linkerd.io/proxy-enable-native-sidecar": "false"}),
        "Always",
    );
    let response = w.review(request("a4", "shop", classic.clone())).await;
    let classic = patched(&classic, &response);
    assert_eq!(
        names(&classic["spec"]["containers"]),
        [inject::PROXY_CONTAINER, "web"]
    );
    assert_eq!(
        names(&classic["spec"]["initContainers"]),
        [inject::INIT_CONTAINER]
    );
    w.cp.shutdown().await.unwrap();
}

#[tokio::test]
async fn injection_problems_admit_the_pod_with_a_warning() {
    let w = start().await;
    let bad = pod(
        "shop",
        None,
        json!({"config.linkerd.io/proxy-cpu-limit": "a lot"}),
        "Always",
    );
    let response = w.review(request("b1", "shop", bad)).await;
    assert!(response.get("patch").is_none(), "{response}");
    let warning = response["warnings"][0].as_str().expect("a warning");
    assert!(
        warning.contains("config.linkerd.io/proxy-cpu-limit") && warning.contains("a lot"),
        "{warning}"
    );
    w.cp.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_reviews_and_other_paths_are_refused_and_the_name_is_verified() {
    let w = start().await;
    let name = inject::webhook::dns_name("weft");
    let (status, body) = w.post(&name, "/inject", "{\"request\": {}}").await.unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("request.uid"), "{body}");
    let (status, _) = w.post(&name, "/inject", "not json").await.unwrap();
    assert_eq!(status, 400);
    let (status, _) = w.post(&name, "/other", "{}").await.unwrap();
    assert_eq!(status, 404);
    // The certificate names the injector's Service, nothing else.
    let err = w
        .post("weft-dst.weft.svc", "/inject", "{}")
        .await
        .expect_err("a certificate for another name");
    assert!(err.to_string().contains("certificate"), "{err}");
    w.cp.shutdown().await.unwrap();
}

/// Every patched pod against the Kubernetes OpenAPI schemas (`kubernetes-validate --strict`).
fn validate(pods: &[(&str, Value)]) {
    let Some(validate) = weft_testbed::which("kubernetes-validate") else {
        weft_testbed::skip_or_fail(
            "`kubernetes-validate` is not installed (pip install kubernetes-validate)",
        );
        return;
    };
    let dir = common::temp_dir("webhook-validate");
    for (what, pod) in pods {
        let mut pod = pod.clone();
        // A pod in a manifest needs a name; the API server gives it one after admission.
        pod["metadata"]["name"] = json!(format!("{}-x", what.to_lowercase()));
        let file = dir.join(format!("{what}.json"));
        std::fs::write(&file, pod.to_string()).unwrap();
        let out = std::process::Command::new(&validate)
            .args(["--strict", "--kubernetes-version", "1.33.0"])
            .arg(&file)
            .output()
            .expect("kubernetes-validate runs");
        let report = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && report.contains("passed"),
            "{what}:\n{report}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
