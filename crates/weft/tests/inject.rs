//! `weft inject` / `weft uninject` on real-world manifests, against golden files, and every
//! injected manifest validated offline against the Kubernetes OpenAPI schemas
//! (`kubernetes-validate --strict`, PyPI; under CI=true its absence fails the test).
//!
//! Inputs: `tests/inject/*.yml`; expected outputs: `tests/inject/golden/NAME.injected.yml` and
//! `NAME.uninjected.yml`. After an intended change, regenerate them with
//! `WEFT_UPDATE_GOLDEN=1 cargo test -p weft --test inject` and review the diff.
//!
//! Also `weft-proxy await`, the classic sidecar's postStart hook, against a real listener.

mod support;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::{proxy_bin, weft_bin};

const UPDATE: &str = "WEFT_UPDATE_GOLDEN";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inject")
}

fn inputs() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("tests/inject")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    out.sort();
    assert!(out.len() >= 5, "inputs missing: {out:?}");
    out
}

fn weft(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(weft_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weft starts");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("writing stdin");
    drop(input);
    child.wait_with_output().expect("weft runs")
}

fn stdout(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8")
}

/// Compares `actual` with the golden file `name`, or rewrites it under `WEFT_UPDATE_GOLDEN`.
fn golden(name: &str, actual: &str) {
    let path = dir().join("golden").join(name);
    if std::env::var_os(UPDATE).is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("golden dir");
        std::fs::write(&path, actual).expect("writing golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (generate it with {UPDATE}=1)", path.display()));
    assert!(
        expected == actual,
        "{} differs from weft's output (regenerate with {UPDATE}=1 if intended):\n{actual}",
        path.display()
    );
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .expect("stem")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn inject_matches_the_golden_files_and_is_idempotent() {
    for input in inputs() {
        let name = stem(&input);
        let path = input.to_string_lossy().into_owned();
        let injected = stdout(&weft(&["inject", &path], None), &name);
        golden(&format!("{name}.injected.yml"), &injected);
        assert!(
            injected.contains("name: weft-proxy"),
            "{name}: nothing injected"
        );
        // From stdin, the same; injecting the output again changes nothing.
        let from_stdin = stdout(
            &weft(
                &["inject", "-"],
                Some(&std::fs::read_to_string(&input).unwrap()),
            ),
            &name,
        );
        assert_eq!(from_stdin, injected, "{name}: stdin");
        let again = stdout(&weft(&["inject", "-"], Some(&injected)), &name);
        assert_eq!(again, injected, "{name}: re-injection changed the output");
    }
}

#[test]
fn uninject_removes_every_trace_and_keeps_the_rest() {
    for input in inputs() {
        let name = stem(&input);
        let original = std::fs::read_to_string(&input).unwrap();
        let injected = stdout(&weft(&["inject", "-"], Some(&original)), &name);
        let uninjected = stdout(&weft(&["uninject", "-"], Some(&injected)), &name);
        golden(&format!("{name}.uninjected.yml"), &uninjected);
        for trace in [
            "name: weft-proxy",
            "name: weft-init",
            "weft-identity-token",
            " linkerd.io/proxy-version:",
            " linkerd.io/control-plane-ns:",
        ] {
            assert!(
                !uninjected.contains(trace),
                "{name}: {trace} left:\n{uninjected}"
            );
        }
        // The same documents as the input, by value (formatting aside).
        let docs = |text: &str| -> Vec<serde_json::Value> {
            text.split("\n---")
                .filter_map(|d| yaml_serde::from_str::<serde_json::Value>(d).ok())
                .filter(|v| !v.is_null())
                .collect()
        };
        let mut expected = docs(&original);
        // `weft inject` adds linkerd.io/inject: enabled where no value was set; uninject takes
        // it away again: the round trip restores the input.
        assert_eq!(docs(&uninjected), std::mem::take(&mut expected), "{name}");
        // Documents uninject has nothing to do with keep their bytes.
        assert_eq!(
            stdout(&weft(&["uninject", "-"], Some(&original)), &name),
            original,
            "{name}"
        );
    }
}

#[test]
fn every_injected_manifest_validates_against_the_kubernetes_schemas() {
    let Some(validate) = weft_testbed::which("kubernetes-validate") else {
        weft_testbed::skip_or_fail(
            "`kubernetes-validate` is not installed (pip install kubernetes-validate)",
        );
        return;
    };
    let tmp = support::TempDir::new("inject-validate");
    for input in inputs() {
        let name = stem(&input);
        let injected = stdout(&weft(&["inject", &input.to_string_lossy()], None), &name);
        let file = tmp.path().join(format!("{name}.yml"));
        std::fs::write(&file, flatten_lists(&injected)).unwrap();
        let out = Command::new(&validate)
            .args(["--strict", "--kubernetes-version", "1.33.0"])
            .arg(&file)
            .output()
            .expect("kubernetes-validate runs");
        let report = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}:\n{report}");
        assert!(
            report.contains("passed"),
            "{name}: nothing validated:\n{report}"
        );
        assert!(!report.contains("ERROR"), "{name}:\n{report}");
    }
    // A broken document does not pass: the check can fail.
    let bad = tmp.path().join("bad.yml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  initContainers:\n  - name: weft-proxy\n    image: x\n    restartPolicy: Sometimes\n    bogus: 1\n  containers: []\n",
    )
    .unwrap();
    let out = Command::new(&validate)
        .arg("--strict")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success(), "an invalid pod validated");
}

/// The schemas have no `List` kind (kubectl unpacks it client-side): its items as documents.
fn flatten_lists(text: &str) -> String {
    let mut out = String::new();
    for doc in yaml_serde::Deserializer::from_str(text) {
        let value = <yaml_serde::Value as serde::Deserialize>::deserialize(doc).expect("YAML");
        let items = match value.get("kind").and_then(|k| k.as_str()) {
            Some("List") => value["items"].as_sequence().expect("items").clone(),
            _ => vec![value],
        };
        for item in items.iter().filter(|i| !i.is_null()) {
            out.push_str("---\n");
            out.push_str(&yaml_serde::to_string(item).expect("YAML"));
        }
    }
    out
}

#[test]
fn a_bad_annotation_is_reported_and_its_document_left_alone() {
    let text = "\
apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations:
    config.linkerd.io/proxy-memory-limit: lots
spec:
  containers:
  - name: app
    image: app:1
---
apiVersion: v1
kind: Pod
metadata:
  name: q
spec:
  containers:
  - name: app
    image: app:1
";
    let out = weft(&["inject", "-"], Some(text));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("document 1 (Pod \"p\")")
            && stderr.contains("config.linkerd.io/proxy-memory-limit")
            && stderr.contains("\"lots\""),
        "{stderr}"
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let (first, second) = printed.split_once("\n---\n").expect("two documents");
    assert!(
        text.starts_with(first),
        "the bad document changed:\n{first}"
    );
    assert!(
        second.contains("name: weft-proxy"),
        "the good one was not injected"
    );
}

#[test]
fn missing_file_is_an_error() {
    let out = weft(&["inject", "/nonexistent/manifest.yml"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/manifest.yml"));
}

/// A stand-in admin server: `503` to the first `not_ready` requests for `/ready`, then `200`.
fn admin_server(not_ready: usize) -> (u16, std::thread::JoinHandle<usize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut served = 0;
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 512];
            let n = stream.read(&mut buf).unwrap_or(0);
            assert!(buf[..n].starts_with(b"GET /ready HTTP/1.1\r\n"));
            served += 1;
            let status = if served > not_ready {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            if served > not_ready {
                return served;
            }
        }
        served
    });
    (port, handle)
}

#[test]
fn proxy_await_waits_for_ready_and_gives_up_at_its_timeout() {
    let (port, server) = admin_server(3);
    let status = Command::new(proxy_bin())
        .args(["await", "--timeout=60s"])
        .env(
            weft_proxy::config::ENV_ADMIN_LISTEN_ADDR,
            format!("0.0.0.0:{port}"),
        )
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(server.join().unwrap(), 4, "three 503s, then the 200");

    // Nothing listens on this port any more: not ready, exit 1 once the timeout passes.
    let status = Command::new(proxy_bin())
        .args(["await", "--timeout=1s"])
        .env(
            weft_proxy::config::ENV_ADMIN_LISTEN_ADDR,
            format!("127.0.0.1:{port}"),
        )
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let out = Command::new(proxy_bin())
        .args(["await", "--timeout=soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--timeout"));
}

const NAMESPACE_DOC: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  annotations:
    linkerd.io/inject: enabled
";

/// `GET` on the API; the body.
async fn api_get(api: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(api).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: {api}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    buf.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// One AdmissionReview through the webhook's TLS, trusting only `anchors` and verifying the
/// injector's Service name; the response part.
async fn admission_review(
    addr: std::net::SocketAddr,
    anchors: &str,
    review: &str,
) -> serde_json::Value {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut roots = rustls::RootCertStore::empty();
    for cert in weft_control::ca::pem_certificates(anchors.as_bytes()).unwrap() {
        roots
            .add(rustls::pki_types::CertificateDer::from(cert))
            .unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("weft-proxy-injector.weft.svc").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS as weft-proxy-injector.weft.svc");
    let req = format!(
        "POST /inject HTTP/1.1\r\nhost: weft-proxy-injector.weft.svc\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{review}",
        review.len()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    let text = String::from_utf8(buf).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body: serde_json::Value =
        serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    body["response"].clone()
}

/// `weft control --webhook-addr` and `weft inject --trust-anchors` give a pod the same proxy,
/// init container and volumes: one injection, two ways in.
#[tokio::test]
async fn the_webhook_of_weft_control_injects_what_weft_inject_does() {
    use base64::Engine as _;
    let tmp = support::TempDir::new("inject-webhook");
    let store = tmp.subdir("store");
    std::fs::write(store.join("ns.yaml"), NAMESPACE_DOC).unwrap();
    let mut cmd = tokio::process::Command::new(weft_bin());
    cmd.args(["control", "--store"])
        .arg(&store)
        .args(["--grpc-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"])
        .args(["--webhook-addr", "127.0.0.1:0"]);
    support::set_pdeathsig(&mut cmd);
    let mut control = support::ChildProc::spawn("control", cmd, tmp.path());
    let line = control
        .listening_line(std::time::Duration::from_secs(30))
        .await
        .expect("weft control starts");
    let addr = |key: &str| -> std::net::SocketAddr {
        line[key]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {line}"))
    };
    let anchors = api_get(addr("api"), "/v1/identity/trust-anchors").await;
    assert!(anchors.contains("BEGIN CERTIFICATE"), "{anchors}");

    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"serviceAccountName": "web", "containers": [{"name": "web", "image": "nginx:1.27"}]},
    });
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "e2e-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "namespace": "shop", "operation": "CREATE", "object": pod},
    });
    let response = admission_review(addr("webhook"), &anchors, &review.to_string()).await;
    assert_eq!(response["uid"], "e2e-1");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .unwrap();
    let patch: serde_json::Value = serde_json::from_slice(&patch).unwrap();
    let op = |path: &str| {
        patch
            .as_array()
            .unwrap()
            .iter()
            .find(|op| op["path"] == path)
            .unwrap_or_else(|| panic!("no {path} in {patch}"))["value"]
            .clone()
    };

    let anchors_file = tmp.path().join("anchors.pem");
    std::fs::write(&anchors_file, &anchors).unwrap();
    let offline = stdout(
        &weft(
            &[
                "inject",
                "--trust-anchors",
                &anchors_file.to_string_lossy(),
                "-",
            ],
            Some(&serde_json::to_string(&pod).unwrap()),
        ),
        "inject",
    );
    let offline: serde_json::Value = yaml_serde::from_str(&offline).unwrap();
    assert_eq!(
        op("/spec/initContainers"),
        offline["spec"]["initContainers"]
    );
    assert_eq!(op("/spec/volumes"), offline["spec"]["volumes"]);
    let proxy = &offline["spec"]["initContainers"][1];
    let anchors_var = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == weft_proxy::config::ENV_IDENTITY_TRUST_ANCHORS)
        .expect("the anchors variable");
    assert_eq!(anchors_var["value"].as_str(), Some(anchors.as_str()));
    control.kill().await;
}

#[test]
fn annotate_only_adds_the_annotation_and_nothing_else() {
    let input = dir().join("emojivoto.yml");
    let text = std::fs::read_to_string(&input).unwrap();
    let out = stdout(
        &weft(&["inject", "--annotate-only", "-"], Some(&text)),
        "annotate",
    );
    assert!(!out.contains("name: weft-proxy"), "{out}");
    // Every Deployment's template got it (four), the other documents kept their bytes.
    assert_eq!(
        out.matches("linkerd.io/inject: enabled").count(),
        4,
        "{out}"
    );
    assert!(out.contains("---\napiVersion: v1\nkind: Service\nmetadata:\n  name: emoji-svc\n"));
    let again = stdout(
        &weft(&["inject", "--annotate-only", "-"], Some(&out)),
        "again",
    );
    assert_eq!(again, out, "annotating twice changed the output");
    // The webhook (here: a full inject) then injects those templates.
    let injected = stdout(&weft(&["inject", "-"], Some(&out)), "inject");
    assert_eq!(injected.matches("name: weft-proxy").count(), 4);
}
