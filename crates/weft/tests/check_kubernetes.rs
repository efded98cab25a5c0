//! `weft check --pre` and `weft check --proxy` (the real binary) against a stand-in API server
//! replaying recorded answers (weft-control's `tests/common/kube_api.rs` and its fixtures): a
//! healthy cluster passes every check; each failure (a forbidden SelfSubjectAccessReview, an old
//! Kubernetes, a pod without its proxy, a proxy not ready, version skew, a webhook caBundle that
//! is not the trust roots) is reported with its mark, its detail and the exit code.
//! Runs as any user.

#[path = "../../weft-control/tests/common/kube_api.rs"]
#[allow(dead_code)] // weft-control's store tests use the rest
mod kube_api;
#[path = "../../weft-control/tests/common/kube_objects.rs"]
#[allow(dead_code)] // shared with weft-control's tests
mod kube_objects;
mod support;

use kube_api::{fixture_json, FakeApi};
use serde_json::Value;
use support::{weft_bin, TempDir};
use tokio::process::Command;

/// `weft check ARGS --kubeconfig (the fake's) -o json`: exit code and the report.
async fn weft_check(api: &FakeApi, dir: &TempDir, args: &[&str]) -> (i32, Value) {
    let kubeconfig = api.kubeconfig(dir.path());
    let out = Command::new(weft_bin())
        .arg("check")
        .args(args)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["-o", "json"])
        .output()
        .await
        .expect("weft check runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    let doc = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}\n{err}"));
    (out.status.code().unwrap_or(-1), doc)
}

/// `weft check ARGS --kubeconfig (the fake's)` as text: exit code and stdout.
async fn weft_check_text(api: &FakeApi, dir: &TempDir, args: &[&str]) -> (i32, String) {
    let out = Command::new(weft_bin())
        .arg("check")
        .args(args)
        .arg("--kubeconfig")
        .arg(api.kubeconfig(dir.path()))
        .output()
        .await
        .expect("weft check runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), text)
}

/// `(id, status)` of every check, in order.
fn marks(doc: &Value) -> Vec<(String, String)> {
    (doc["sections"].as_array().into_iter().flatten())
        .flat_map(|s| s["checks"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or("").to_string();
            (text("id"), text("status"))
        })
        .collect()
}

fn check<'a>(doc: &'a Value, id: &str) -> &'a Value {
    (doc["sections"].as_array().into_iter().flatten())
        .flat_map(|s| s["checks"].as_array().into_iter().flatten())
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id}: {doc:#}"))
}

fn details(c: &Value) -> String {
    (c["details"].as_array().into_iter().flatten())
        .filter_map(|d| d.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn pre_passes_on_a_fresh_cluster_with_rights() {
    let api = FakeApi::start().await;
    let dir = TempDir::new("check-pre-ok");
    api.set_list("/version", fixture_json("version.json"));
    let (code, doc) = weft_check(&api, &dir, &["--pre"]).await;
    assert_eq!(
        marks(&doc),
        pairs(&[
            ("kubernetes-api-config", "ok"),
            ("kubernetes-api-answers", "ok"),
            ("kubernetes-version", "ok"),
            ("pre-kubernetes-create", "ok"),
            ("pre-kubernetes-namespace", "ok"),
            ("pre-kubernetes-gateway-api", "ok"),
        ]),
        "{doc:#}"
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["success"], true);
    // One review per kind and namespace `weft install` creates (13 kinds today).
    let reviews = api.requests("POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews");
    assert!(reviews.len() >= 12, "{reviews:#?}");
}

#[tokio::test]
async fn pre_reports_forbidden_kinds_old_versions_and_an_earlier_install() {
    let api = FakeApi::start().await;
    let dir = TempDir::new("check-pre-bad");
    api.set_list("/version", fixture_json("version-1.28.json"));
    api.deny("apiextensions.k8s.io", "customresourcedefinitions", "");
    api.deny("", "secrets", "weft");
    api.set_list(
        "/api/v1/namespaces/weft",
        fixture_json("check-namespaces.json")["items"][2].clone(),
    );
    api.set_list(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/httproutes.gateway.networking.k8s.io",
        fixture_json("crd-httproutes.json"),
    );
    let (code, doc) = weft_check(&api, &dir, &["--pre"]).await;
    assert_eq!(
        marks(&doc),
        pairs(&[
            ("kubernetes-api-config", "ok"),
            ("kubernetes-api-answers", "ok"),
            ("kubernetes-version", "warning"),
            ("pre-kubernetes-create", "error"),
            ("pre-kubernetes-namespace", "warning"),
            ("pre-kubernetes-gateway-api", "warning"),
        ]),
        "{doc:#}"
    );
    assert_eq!(code, 1, "a × fails the run: {doc:#}");
    assert_eq!(doc["success"], false);
    let version = check(&doc, "kubernetes-version");
    assert!(details(version).contains("v1.28.15"), "{version:#}");
    assert!(version["hint"].as_str().unwrap().contains("classic"));
    let create = details(check(&doc, "pre-kubernetes-create"));
    assert_eq!(
        create,
        "may not create secrets in namespace weft\n\
         may not create customresourcedefinitions.apiextensions.k8s.io",
    );
    assert!(details(check(&doc, "pre-kubernetes-namespace")).contains("already installed?"));
    let gateway = check(&doc, "pre-kubernetes-gateway-api");
    assert!(details(gateway).contains("httproutes.gateway.networking.k8s.io"));
    assert!(gateway["hint"]
        .as_str()
        .unwrap()
        .contains("--skip-gateway-api"));
}

#[tokio::test]
async fn pre_without_an_api_server_fails_at_the_first_check() {
    let api = FakeApi::start().await;
    let dir = TempDir::new("check-pre-none");
    // The fake answers 404 to /version: not a Kubernetes API server.
    let (code, doc) = weft_check(&api, &dir, &["--pre"]).await;
    assert_eq!(
        marks(&doc),
        pairs(&[
            ("kubernetes-api-config", "ok"),
            ("kubernetes-api-answers", "error"),
        ]),
        "{doc:#}"
    );
    assert_eq!(code, 1);

    // A kubeconfig that does not parse.
    let bad = dir.path().join("bad-kubeconfig");
    std::fs::write(&bad, "clusters: [").unwrap();
    let out = Command::new(weft_bin())
        .args(["check", "--pre", "--kubeconfig"])
        .arg(&bad)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("× can initialize the client (kubeconfig)"),
        "{text}"
    );
    assert!(text.contains("bad-kubeconfig"), "{text}");
    assert!(text.contains("hint: point --kubeconfig"), "{text}");
}

/// A cluster with the control plane installed and emojivoto injected.
fn installed(api: &FakeApi, pods: &str, webhook: &str) {
    api.set_list("/version", fixture_json("version.json"));
    api.set_list("/api/v1/namespaces", fixture_json("check-namespaces.json"));
    api.set_list(
        "/api/v1/namespaces/weft/pods",
        fixture_json("check-control-pods.json"),
    );
    api.set_list(
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/weft-proxy-injector-webhook-config",
        fixture_json(webhook),
    );
    api.set_list(
        "/api/v1/namespaces/weft/configmaps/weft-identity-trust-roots",
        fixture_json("check-trust-roots.json"),
    );
    api.set_list("/api/v1/namespaces/emojivoto/pods", fixture_json(pods));
}

#[tokio::test]
async fn proxy_passes_on_a_healthy_mesh() {
    let api = FakeApi::start().await;
    let dir = TempDir::new("check-proxy-ok");
    installed(
        &api,
        "check-pods-emojivoto.json",
        "check-webhook-config.json",
    );
    let (code, doc) = weft_check(&api, &dir, &["--proxy"]).await;
    assert_eq!(
        marks(&doc),
        pairs(&[
            ("kubernetes-api-config", "ok"),
            ("kubernetes-api-answers", "ok"),
            ("control-plane-pods-ready", "ok"),
            ("webhook-ca-bundle", "ok"),
            ("data-plane-namespaces", "ok"),
            ("data-plane-injected", "ok"),
            ("data-plane-proxies-ready", "ok"),
            ("data-plane-version", "ok"),
        ]),
        "{doc:#}"
    );
    assert_eq!(code, 0, "{doc:#}");
    // Only the annotated namespace's pods were read (not default's).
    assert!(api.requests("GET /api/v1/namespaces/default").is_empty());
    assert_eq!(
        api.requests("GET /api/v1/namespaces/emojivoto/pods").len(),
        1
    );
}

#[tokio::test]
async fn proxy_reports_missing_unready_and_skewed_proxies_and_a_foreign_ca_bundle() {
    let api = FakeApi::start().await;
    let dir = TempDir::new("check-proxy-bad");
    installed(
        &api,
        "check-pods-emojivoto-broken.json",
        "check-webhook-config-other-ca.json",
    );
    let (code, doc) = weft_check(&api, &dir, &["--proxy"]).await;
    assert_eq!(
        marks(&doc),
        pairs(&[
            ("kubernetes-api-config", "ok"),
            ("kubernetes-api-answers", "ok"),
            ("control-plane-pods-ready", "ok"),
            ("webhook-ca-bundle", "error"),
            ("data-plane-namespaces", "ok"),
            ("data-plane-injected", "error"),
            ("data-plane-proxies-ready", "error"),
            ("data-plane-version", "warning"),
        ]),
        "{doc:#}"
    );
    assert_eq!(code, 1, "{doc:#}");
    assert!(details(check(&doc, "webhook-ca-bundle")).contains("caBundle"));
    assert_eq!(
        details(check(&doc, "data-plane-injected")),
        "pod emojivoto/emoji-5d6c8b9f7-a1b2c was created at 2026-11-25T09:00:00Z, before its \
         namespace was annotated (2026-12-01T10:00:00Z): restart it \
         (`kubectl -n emojivoto rollout restart deploy/...`)\n\
         pod emojivoto/vote-bot-8c9d7e6f5-z9y8x has no weft-proxy container"
    );
    assert_eq!(
        details(check(&doc, "data-plane-proxies-ready")),
        "pod emojivoto/voting-6f8b9c7d4-h5j6k: weft-proxy is not ready (waiting: CrashLoopBackOff)"
    );
    let version = check(&doc, "data-plane-version");
    assert_eq!(
        details(version),
        "pod emojivoto/web-7b9c4d6f5-q3w4e runs proxy version 0.0.9"
    );
    assert!(version["description"].as_str().unwrap().contains("(0.1.0)"));

    // The same as text: marks, details and hints under each check that did not pass.
    let (code, text) = weft_check_text(&api, &dir, &["--proxy"]).await;
    assert_eq!(code, 1, "{text}");
    for line in [
        "weft-webhook\n------------\n× proxy injector webhook trusts the mesh's trust anchors\n",
        "✔ control plane pods are ready\n",
        "× data plane pods have the weft-proxy container\n",
        "‼ data plane proxies run the control plane's version (0.1.0)\n    \
         pod emojivoto/web-7b9c4d6f5-q3w4e runs proxy version 0.0.9\n    \
         hint: restart the pods after `weft upgrade`",
        "\nStatus check results are ×\n",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
}

#[tokio::test]
async fn proxy_with_a_namespace_checks_only_it_and_only_restart_warns() {
    let api = FakeApi::start().await;
    let dir = TempDir::new("check-proxy-ns");
    installed(
        &api,
        "check-pods-emojivoto.json",
        "check-webhook-config.json",
    );
    // emojivoto's list is the namespace only (as `GET /api/v1/namespaces/emojivoto` answers).
    api.set_list(
        "/api/v1/namespaces/emojivoto",
        fixture_json("check-namespaces.json")["items"][1].clone(),
    );
    let mut pods = fixture_json("check-pods-emojivoto.json");
    let old = fixture_json("check-pods-emojivoto-broken.json")["items"][0].clone();
    pods["items"].as_array_mut().unwrap().push(old);
    api.set_list("/api/v1/namespaces/emojivoto/pods", pods);
    let (code, doc) = weft_check(&api, &dir, &["--proxy", "-n", "emojivoto"]).await;
    assert_eq!(
        check(&doc, "data-plane-injected")["status"],
        "warning",
        "{doc:#}"
    );
    assert_eq!(code, 0, "warnings do not fail the run: {doc:#}");
    assert!(api.requests("GET /api/v1/namespaces?").is_empty());

    // A namespace that does not exist.
    let (code, doc) = weft_check(&api, &dir, &["--proxy", "-n", "nope"]).await;
    assert_eq!(code, 1);
    let listed = check(&doc, "data-plane-namespaces");
    assert_eq!(listed["status"], "error");
    assert!(details(listed).contains("namespace nope does not exist"));
}

#[tokio::test]
async fn context_picks_the_kubeconfigs_context() {
    let api = FakeApi::start().await;
    let dir = TempDir::new("check-context");
    api.set_list("/version", fixture_json("version.json"));
    let kubeconfig = api.kubeconfig(dir.path());
    let run = |context: &'static str| {
        let kubeconfig = kubeconfig.clone();
        async move {
            Command::new(weft_bin())
                .args(["check", "--pre", "--context", context, "--kubeconfig"])
                .arg(&kubeconfig)
                .output()
                .await
                .unwrap()
        }
    };
    // The kubeconfig's one context, by name: the fake answers.
    let out = run("fake").await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("✔ can query the Kubernetes API"), "{text}");
    // A context it does not have.
    let out = run("elsewhere").await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("× can initialize the client (kubeconfig)") && text.contains("elsewhere"),
        "{text}"
    );
}
