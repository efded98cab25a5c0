//! `weft check` against a real `weft control` and a real meshed workload (`weft run
//! --explicit`: the demo's ratings service behind a `weft-proxy` sidecar): every check passes;
//! a bad store document fails the store check with its file, document and field, a hint and a
//! non-zero exit; and a control plane whose CA was replaced under a running proxy (a bare
//! `weft-proxy` given its anchors inline, so nothing updates them) reports that proxy as not on
//! its trust anchors (its certificate, issued by the old CA, still serves).
//! Runs as any user.

#[path = "support/mtls_mesh.rs"]
mod mtls_mesh;
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use mtls_mesh::{ControlOpts, IdentitySource};
use serde_json::Value;
use support::apps::EchoServer;
use support::{
    eventually, free_port, http_get, service, set_pdeathsig, weft_bin, workload_doc, write_docs,
    ChildProc, Control, ProxySpec, TempDir, SOON,
};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

/// `weft check --api-addr API ARGS`: exit code, stdout, stderr.
async fn weft_check(api: SocketAddr, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(weft_bin())
        .arg("check")
        .args(["--api-addr", &api.to_string()])
        .args(args)
        .output()
        .await
        .expect("weft check runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `weft check -o json`, parsed.
async fn check_json(api: SocketAddr) -> (i32, Value) {
    let (code, out, err) = weft_check(api, &["-o", "json"]).await;
    let doc = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, doc)
}

/// Every check of a JSON report, flattened.
fn checks(doc: &Value) -> Vec<Value> {
    (doc["sections"].as_array().into_iter().flatten())
        .flat_map(|s| s["checks"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn check<'a>(all: &'a [Value], id: &str) -> &'a Value {
    all.iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id}: {all:#?}"))
}

/// `weft run --explicit` of the demo's ratings service; returns it and its proxy's admin
/// address once that proxy is ready (it holds its certificate).
async fn meshed_ratings(control: &Control, dir: &Path) -> (ChildProc, SocketAddr) {
    let port = free_port();
    let weft = weft_bin();
    let mut cmd = Command::new(&weft);
    cmd.args(["run", "--explicit", "--name", "ratings"])
        .args(["--port", &format!("http={port}")])
        .args(["--control", &control.grpc.to_string()])
        .args(["--control-api", &control.api.to_string(), "--"])
        .arg(&weft)
        .args([
            "demo-service",
            "ratings",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ]);
    set_pdeathsig(&mut cmd);
    let run = ChildProc::spawn("run-ratings", cmd, dir);
    // `weft run` names its proxy's admin address on stderr (`...; admin ADDR`).
    let admin: SocketAddr = eventually("the proxy's admin address", SOON, || {
        let tail = run.stderr_tail(8000);
        async move {
            let (_, rest) = tail.split_once("; admin ")?;
            rest.split_whitespace().next()?.parse().ok()
        }
    })
    .await;
    eventually("the proxy is ready (certificate issued)", SOON, || async {
        matches!(http_get(admin, "/ready").await, Ok((200, _))).then_some(())
    })
    .await;
    (run, admin)
}

/// The fingerprints of the control plane's trust anchors.
async fn anchor_fingerprints(control: &Control) -> Vec<String> {
    let (code, pem) = http_get(control.api, "/v1/identity/trust-anchors")
        .await
        .expect("trust anchors");
    assert_eq!(code, 200, "{pem}");
    let ders = weft_control::ca::pem_certificates(pem.as_bytes()).expect("PEM");
    ders.iter()
        .map(|d| weft_control::ca::fingerprint(d))
        .collect()
}

/// `weft check -o json` once the control plane reports the proxy of `default/NAME` probed.
async fn report_with(api: SocketAddr, name: &str) -> (i32, Value) {
    eventually(
        &format!("the control plane probes default/{name}"),
        SOON,
        || async {
            let (code, doc) = check_json(api).await;
            let probed = (doc["proxies"].as_array().into_iter().flatten()).any(|p| {
                p["name"] == name && (p["chains_to"].is_string() || p["chain_error"].is_string())
            });
            probed.then_some((code, doc))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_passes_on_a_healthy_mesh_and_a_bad_document_fails_with_a_hint() {
    let tmp = TempDir::new("check");
    let store = tmp.subdir("store");
    write_docs(
        &store,
        "services.yaml",
        &[service("ratings", "ratings", 80, "http")],
    );
    let control = Control::start(&store, tmp.path()).await;
    let (_ratings, admin) = meshed_ratings(&control, tmp.path()).await;

    // 1. Healthy: every check passes, exit 0, and the facts behind them are the real ones.
    let (code, doc) = report_with(control.api, "ratings").await;
    let all = checks(&doc);
    let not_ok: Vec<_> = all.iter().filter(|c| c["status"] != "ok").collect();
    assert!(not_ok.is_empty(), "checks not ok: {not_ok:#?}");
    assert_eq!((code, &doc["success"]), (0, &Value::Bool(true)), "{doc}");
    assert_eq!(all.len(), 15, "{all:#?}");
    let proxy = &doc["proxies"][0];
    assert_eq!(proxy["admin"], admin.to_string(), "{proxy}");
    assert_eq!(proxy["identity"], true, "{proxy}");
    assert_eq!(proxy["trust_anchors"], 1, "{proxy}");
    assert_eq!(
        proxy["chains_to"].as_str(),
        anchor_fingerprints(&control)
            .await
            .first()
            .map(String::as_str),
        "the proxy's certificate leads to the control plane's anchor: {proxy}"
    );
    assert!(proxy["clock_skew_secs"].as_f64().is_some(), "{proxy}");

    let (code, out, _) = weft_check(control.api, &[]).await;
    assert_eq!(code, 0, "{out}");
    for line in [
        "weft-control-plane\n------------------\n",
        &format!("✔ control plane API answers at {}\n", control.api),
        &format!(
            "✔ control plane gRPC port accepts connections at {}\n",
            control.grpc
        ),
        "weft-store\n----------\n✔ every document of the store is applied\n",
        "✔ issuer certificate is signed by a trust anchor\n",
        "✔ data plane proxies are ready (1 meshed)\n",
        "✔ data plane proxies are on the control plane's trust anchors (1 of 1 probed)\n",
        "Status check results are ✔\n",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }

    // 2. A bad document: × with its file, document and field, the hint, the docs; exit 1.
    write_docs(
        &store,
        "bad.yaml",
        &[
            "apiVersion: v1\nkind: Service\nmetadata: {name: books, namespace: default}\n\
           spec:\n  selector: {app: books}\n  ports: [{name: http, port: 0}]\n"
                .to_string(),
        ],
    );
    let (code, out, err) = eventually("the store check fails", SOON, || async {
        let (code, out, err) = weft_check(control.api, &[]).await;
        out.contains("× every document").then_some((code, out, err))
    })
    .await;
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains(
            "× every document of the store is applied\n    \
             bad.yaml: document 0: spec.ports[0].port: must be 1..65535, got 0\n    \
             hint: each document listed keeps its last good version in force"
        ),
        "{out}"
    );
    assert!(
        out.contains("    see docs/observability.md#weft-check for hints\n"),
        "{out}"
    );
    assert!(out.ends_with("Status check results are ×\n"), "{out}");
    assert!(err.contains("weft: check: 1 of 15 checks failed"), "{err}");
    // Everything else still passes: one bad document holds nothing else back.
    let (code, doc) = check_json(control.api).await;
    assert_eq!((code, &doc["success"]), (1, &Value::Bool(false)));
    let failing: Vec<_> = (checks(&doc).into_iter())
        .filter(|c| c["status"] != "ok")
        .map(|c| c["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(failing, vec!["store-valid"], "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_holding_a_certificate_of_a_replaced_ca_is_not_on_the_anchors() {
    let tmp = TempDir::new("check-anchors");
    let store = tmp.subdir("store");
    let ca_dir = tmp.path().join("ca");
    mtls_mesh::init_ca(&ca_dir).await;
    let control = mtls_mesh::start_control(
        &store,
        tmp.path(),
        ControlOpts {
            identity_dir: Some(&ca_dir),
            ..ControlOpts::default()
        },
    )
    .await;
    // A sidecar given the anchors inline (no file to follow): it keeps its certificate and
    // anchors until its renewal, whatever the control plane does meanwhile. Its workload names
    // its forward port and its admin server, as `weft run --explicit` registers them.
    let anchors = mtls_mesh::trust_anchors(&control).await;
    let id = IdentitySource::new(&control, &anchors);
    let echo = EchoServer::start("echo").await;
    let spec = ProxySpec::new("web", control.grpc).forward(&[echo.port()]);
    let spec = mtls_mesh::with_identity(spec, "web", tmp.path(), &id);
    let proxy = mtls_mesh::spawn_unready(spec, "web", tmp.path()).await;
    let doc = workload_doc(
        "default",
        "web",
        &[("app", "web")],
        "127.0.0.1",
        &[
            ("http", proxy.forward_addr(echo.port()).port()),
            ("linkerd-admin", proxy.admin.port()),
        ],
    );
    let token = mtls_mesh::register(&control, "web", &doc).await;
    mtls_mesh::write_token(tmp.path(), "web", &token);
    proxy.wait_ready().await;
    let (code, doc) = report_with(control.api, "web").await;
    assert_eq!(code, 0, "{doc}");
    let old = anchor_fingerprints(&control).await;
    assert_eq!(
        doc["proxies"][0]["chains_to"].as_str(),
        old.first().map(String::as_str)
    );

    // Another CA replaces the directory's files; the control plane issues from it within
    // seconds, while the proxy keeps serving the certificate the old one issued.
    let other = tmp.path().join("other-ca");
    mtls_mesh::init_ca(&other).await;
    for f in [
        "trust-anchors.pem",
        "issuer.crt",
        "issuer.key",
        "trust-anchor.key",
    ] {
        std::fs::copy(other.join(f), ca_dir.join(f)).expect("replace the CA");
    }
    eventually("the control plane uses the new CA", SOON, || async {
        let now = anchor_fingerprints(&control).await;
        (now != old).then_some(())
    })
    .await;

    let (code, out, _) = weft_check(control.api, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("× data plane proxies are on the control plane's trust anchors (1 of 1 probed)\n    default/web: its certificate chain ends at "),
        "{out}"
    );
    let (code, doc) = check_json(control.api).await;
    assert_eq!(code, 1, "{doc}");
    let all = checks(&doc);
    let on_anchors = check(&all, "proxies-trust-anchors");
    assert_eq!(on_anchors["status"], "error", "{on_anchors}");
    let detail = on_anchors["details"][0].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("default/web: its certificate chain ends at ")
            && detail.ends_with("signed by none of the control plane's 1 trust anchor(s)"),
        "{detail}"
    );
    assert!(on_anchors["hint"].as_str().is_some(), "{on_anchors}");
    assert_eq!(doc["proxies"][0]["chains_to"], Value::Null, "{doc}");
    // Its bundle, compared by fingerprint: it holds the old anchor only, not the new one.
    let fingerprints = &doc["proxies"][0]["trust_anchor_fingerprints"];
    assert_eq!(fingerprints.as_array().map(Vec::len), Some(1), "{doc}");
    let details: Vec<&str> = (on_anchors["details"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d
                .starts_with("default/web: does not trust the control plane's anchor(s) sha256:")),
        "{details:?}"
    );
    assert!(
        details.iter().any(
            |d| d.ends_with(fingerprints[0].as_str().unwrap_or("(no fingerprint)"))
                && d.contains("also trusts anchor(s) the control plane does not")
        ),
        "{details:?}"
    );
    // The control plane's own CA is fine, and the proxy is otherwise healthy: only this fails.
    let failing: Vec<_> = (all.iter())
        .filter(|c| c["status"] != "ok")
        .map(|c| c["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(failing, vec!["proxies-trust-anchors"], "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_retries_until_the_control_plane_is_up() {
    let tmp = TempDir::new("check-wait");
    let store = tmp.subdir("store");
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");

    // Without --wait, nothing there yet is one failed check and exit 1.
    let (code, out, _) = weft_check(api, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("× control plane API answers at {api}\n")),
        "{out}"
    );

    // With --wait, `weft check` keeps asking: the control plane starts once it says it waits.
    let mut waiting = Command::new(weft_bin());
    waiting
        .args(["check", "--wait", "60s", "--api-addr", &api.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut waiting = waiting.spawn().expect("weft check --wait starts");
    let mut stderr = BufReader::new(waiting.stderr.take().expect("stderr")).lines();
    let said = tokio::time::timeout(SOON, stderr.next_line())
        .await
        .expect("weft check says it waits")
        .expect("stderr")
        .unwrap_or_default();
    assert!(
        said.starts_with("weft check: waiting up to ")
            && said.contains("s for the control plane (GET http://"),
        "{said}"
    );
    let mut cmd = Command::new(weft_bin());
    cmd.arg("control").arg("--store").arg(&store).args([
        "--grpc-addr",
        "127.0.0.1:0",
        "--api-addr",
        &api.to_string(),
    ]);
    set_pdeathsig(&mut cmd);
    let _control = ChildProc::spawn("control", cmd, tmp.path());
    let out = tokio::time::timeout(Duration::from_secs(60), waiting.wait_with_output()).await;
    let out = out
        .expect("weft check --wait ended")
        .expect("weft check --wait ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("✔ control plane API answers at {api}\n"))
            && stdout.ends_with("Status check results are ✔\n"),
        "{stdout}"
    );
}
