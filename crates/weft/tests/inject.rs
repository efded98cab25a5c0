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
