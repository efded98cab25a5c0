//! `weft apply -f`, `weft get KIND [NAME] -o yaml` and `weft delete` against a real
//! `weft control` (file store): kubectl's lines on stdout, errors on stderr, exit 1 when a
//! document failed, and what `get` prints is what was applied. Runs as any user.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use support::{Control, TempDir};
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

/// `weft ARGS --api-addr API`, with `stdin` fed in: exit code, stdout, stderr.
async fn weft(api: SocketAddr, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(support::weft_bin())
        .args(args)
        .args(["--api-addr", &api.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weft runs");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let out = child.wait_with_output().await.expect("weft ends");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn route(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: web, namespace: default}}\n\
         spec:\n  parentRefs: [{{group: core, kind: Service, name: web, port: 80}}]\n  \
         rules:\n  - backendRefs:\n    - {{name: web, port: 80, weight: {v1}}}\n    \
         - {{name: web-v2, port: 80, weight: {v2}}}\n"
    )
}

fn service(name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{selector: {{app: {name}}}, ports: [{{name: http, port: {port}}}]}}\n"
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_and_delete_like_kubectl() {
    let tmp = TempDir::new("resources-cli");
    let store = tmp.subdir("store");
    let control = Control::start(&store, tmp.path()).await;
    let api = control.api;
    let files = tmp.subdir("files");

    // apply -f: one line per document.
    let app = write(
        &files,
        "app.yaml",
        &format!("{}---\n{}", service("web", 80), route(90, 10)),
    );
    let (code, out, err) = weft(api, &["apply", "-f", &app], "").await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "service/web created\nhttproute.gateway.networking.k8s.io/web created\n"
    );

    // get -o yaml: the route as applied, with its status.
    let (code, out, err) = weft(api, &["get", "HTTPRoute", "web", "-o", "yaml"], "").await;
    assert_eq!(code, 0, "{out}{err}");
    let doc: serde_json::Value = yaml_serde::from_str(&out).expect("YAML");
    let weights = &doc["spec"]["rules"][0]["backendRefs"];
    assert_eq!(
        (&weights[0]["weight"], &weights[1]["weight"]),
        (&90.into(), &10.into()),
        "{out}"
    );
    assert_eq!(
        doc["status"]["parents"][0]["conditions"][0]["type"], "Accepted",
        "{out}"
    );
    // The table, and the services table with its allocated cluster IP.
    let (code, out, _) = weft(api, &["get", "httproutes"], "").await;
    assert_eq!(code, 0);
    assert!(out.starts_with("NAME "), "{out}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["web", "HTTPRoute", "True"]),
        "{out}"
    );
    let (code, out, _) = weft(api, &["get", "svc"], "").await;
    assert_eq!(code, 0);
    assert!(
        out.contains("CLUSTER-IP") && out.contains("198.19."),
        "{out}"
    );

    // apply -f - (stdin): a change is configured, the same again unchanged.
    let (code, out, err) = weft(api, &["apply", "-f", "-"], &route(50, 50)).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "httproute.gateway.networking.k8s.io/web configured\n"),
        "{err}"
    );
    let (code, out, _) = weft(api, &["apply", "-f", "-"], &route(50, 50)).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "httproute.gateway.networking.k8s.io/web unchanged\n")
    );

    // One bad document: exit 1, its precise error on stderr, the good one applied.
    let bad = write(
        &files,
        "bad.yaml",
        &format!("{}---\n{}", route(50, 70_000_000), service("api", 81)),
    );
    let (code, out, err) = weft(api, &["apply", "-f", &bad], "").await;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out, "service/api created\n");
    assert!(
        err.contains("error: bad.yaml: document 0: spec.rules[0].backendRefs[1].weight"),
        "{err}"
    );
    let (_, out, _) = weft(api, &["get", "httproute", "web", "-o", "json"], "").await;
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        doc["spec"]["rules"][0]["backendRefs"][1]["weight"], 50,
        "the last good version stays"
    );

    // delete -f, then get is a NotFound (exit 1); delete KIND NAME.
    let (code, out, err) = weft(api, &["delete", "-f", &app], "").await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "service/web deleted\nhttproute.gateway.networking.k8s.io/web deleted\n"
    );
    let (code, _, err) = weft(api, &["get", "httproute", "web"], "").await;
    assert_eq!(code, 1);
    assert!(err.contains("httproute default/web not found"), "{err}");
    let (code, out, err) = weft(api, &["delete", "svc", "api", "-n", "default"], "").await;
    assert_eq!((code, out.as_str()), (0, "service/api deleted\n"), "{err}");
    let (code, _, err) = weft(api, &["delete", "svc", "api"], "").await;
    assert_eq!(code, 1);
    assert!(err.contains("service default/api not found"), "{err}");
    let (code, _, err) = weft(api, &["get", "httproutes"], "").await;
    assert_eq!(code, 0);
    assert!(
        err.contains("No resources found in default namespace."),
        "{err}"
    );
}
