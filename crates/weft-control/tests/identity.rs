//! Identity over real sockets: register a workload (which returns its token), certify a CSR made
//! with rcgen through the linkerd2-proxy-api Identity client, and check the leaf, the chain, the
//! refusals, that tokens survive a restart, and that control planes sharing an etcd store
//! share tokens.

mod common;

use common::identity::{certify, csr_for, register, SERVICES, WEB_ID};
use common::{get, http, next, temp_dir};
use linkerd2_proxy_api::destination::{tls_identity, update::Update as U};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use x509_parser::prelude::{FromDer, X509Certificate};

async fn start(store: &Path, identity_dir: Option<&Path>) -> weft_control::Running {
    std::fs::write(store.join("services.yaml"), SERVICES).unwrap();
    common::start(weft_control::Config {
        identity_dir: identity_dir.map(Path::to_path_buf),
        ..common::config(store)
    })
    .await
}

fn anchors(pem: &str) -> Vec<Vec<u8>> {
    weft_control::ca::pem_certificates(pem.as_bytes()).expect("anchors")
}

#[tokio::test]
async fn certify_issues_a_chained_leaf_for_the_registered_workload() {
    let store = temp_dir("certify");
    let cp = start(&store, None).await;
    let (identity, token) = register(cp.api_addr, "web-1").await;
    assert_eq!(identity, WEB_ID);

    // The anchors over HTTP are those of the running CA.
    let (status, pem) = http(cp.api_addr, "GET", "/v1/identity/trust-anchors", "").await;
    assert_eq!(status, 200);
    assert_eq!(pem, cp.trust_anchors_pem);

    let rsp = certify(
        cp.grpc_addr,
        &identity,
        &format!("{token}\n"),
        csr_for(&identity),
    )
    .await
    .expect("certified");
    let (_, leaf) = X509Certificate::from_der(&rsp.leaf_certificate).expect("DER leaf");
    let names: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .expect("SANs")
        .value
        .general_names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect();
    assert_eq!(
        names,
        vec![
            format!("DNSName({WEB_ID:?})"),
            "URI(\"spiffe://cluster.local/ns/default/sa/web-1\")".to_string()
        ]
    );
    let (_, issuer) = X509Certificate::from_der(&rsp.intermediate_certificates[0]).unwrap();
    leaf.verify_signature(Some(issuer.public_key()))
        .expect("leaf <- issuer");
    let anchor_der = &anchors(&cp.trust_anchors_pem)[0];
    let (_, anchor) = X509Certificate::from_der(anchor_der).unwrap();
    issuer
        .verify_signature(Some(anchor.public_key()))
        .expect("issuer <- anchor");
    let valid_until = rsp.valid_until.expect("valid_until");
    assert_eq!(valid_until.seconds, leaf.validity().not_after.timestamp());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let life = valid_until.seconds - now;
    assert!(
        (24 * 3600 - 60..=24 * 3600).contains(&life),
        "24h default, got {life}s"
    );

    // Destination announces exactly the identity Certify issued.
    let mut stream = get(cp.grpc_addr, "web.default.svc.cluster.local:8080")
        .await
        .unwrap();
    let update = next(&mut stream).await;
    let U::Add(set) = update else {
        panic!("expected add, got {update:?}")
    };
    let tls = set.addrs[0].tls_identity.clone().expect("tls identity");
    match tls.strategy {
        Some(tls_identity::Strategy::DnsLikeIdentity(d)) => assert_eq!(d.name, identity),
        other => panic!("expected a DNS-like identity, got {other:?}"),
    }
    cp.shutdown().await.unwrap();
}

/// `weft run`'s order: register `Ready=False` (the token comes back, Destination hands out no
/// endpoint), certify, then turn ready with a status update: the endpoint appears and the same
/// token still certifies (a status update issues none and revokes none).
#[tokio::test]
async fn a_workload_registered_not_ready_turns_ready_and_keeps_its_token() {
    let store = temp_dir("ready");
    let cp = start(&store, None).await;
    let doc = serde_json::json!({
        "apiVersion": "workload.linkerd.io/v1beta1",
        "kind": "ExternalWorkload",
        "metadata": {"labels": {"app": "web"}},
        "spec": {"workloadIPs": [{"ip": "127.0.0.1"}], "ports": [{"name": "http", "port": 18080}]},
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Starting"}]},
    });
    let (status, body) = http(
        cp.api_addr,
        "PUT",
        "/v1/workloads/default/web-1",
        &doc.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = answer["token"].as_str().expect("token").to_string();
    certify(cp.grpc_addr, WEB_ID, &token, csr_for(WEB_ID))
        .await
        .expect("a workload that is not ready yet is certified");

    // Registered but not ready: the Service has no endpoint.
    let mut stream = get(cp.grpc_addr, "web.default.svc.cluster.local:8080")
        .await
        .unwrap();
    let first = next(&mut stream).await;
    assert!(
        matches!(&first, U::NoEndpoints(n) if n.exists),
        "expected no endpoints, got {first:?}"
    );

    let ready = r#"{"status": {"conditions": [{"type": "Ready", "status": "True",
        "lastTransitionTime": "2026-01-01T00:00:00Z", "reason": "PortsAccept"}]}}"#;
    let (status, body) = http(
        cp.api_addr,
        "PUT",
        "/v1/workloads/default/web-1/status",
        ready,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""ready":true"#), "{body}");
    let update = next(&mut stream).await;
    let U::Add(set) = update else {
        panic!("expected the endpoint once ready, got {update:?}")
    };
    assert_eq!(set.addrs.len(), 1);
    certify(cp.grpc_addr, WEB_ID, &token, csr_for(WEB_ID))
        .await
        .expect("the token survives the status update");
    // The listing shows the status; the spec is untouched.
    let (_, listed) = http(cp.api_addr, "GET", "/v1/workloads", "").await;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["status"]["conditions"][0]["status"], "True");
    assert_eq!(listed[0]["spec"]["ports"][0]["port"], 18080);

    // Precise refusals: a bad status, an unknown workload, one from the store's files.
    let (status, body) = http(
        cp.api_addr,
        "PUT",
        "/v1/workloads/default/web-1/status",
        r#"{"status": {"conditions": [{"type": "Ready", "status": "yes"}]}}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("status.conditions[0].status"), "{body}");
    let (status, body) = http(
        cp.api_addr,
        "PUT",
        "/v1/workloads/default/web-9/status",
        ready,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    std::fs::write(
        store.join("web-2.yaml"),
        "apiVersion: workload.linkerd.io/v1beta1\nkind: ExternalWorkload\n\
         metadata: {name: web-2, namespace: default, labels: {app: web}}\n\
         spec: {workloadIPs: [{ip: 127.0.0.2}]}\n",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + common::LIMIT;
    let (status, body) = loop {
        let (status, body) = http(
            cp.api_addr,
            "PUT",
            "/v1/workloads/default/web-2/status",
            ready,
        )
        .await;
        // 404 until the store has read the file.
        if status != 404 || std::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("store's files"), "{body}");
    cp.shutdown().await.unwrap();
}

#[tokio::test]
async fn certify_refuses_foreign_tokens_other_identities_and_bad_csrs() {
    let store = temp_dir("refuse");
    let cp = start(&store, None).await;
    let (web_id, web_token) = register(cp.api_addr, "web-1").await;
    let (other_id, other_token) = register(cp.api_addr, "web-2").await;
    assert_ne!(web_id, other_id);

    // A token for another workload does not grant web-1's identity.
    let e = certify(cp.grpc_addr, &web_id, &other_token, csr_for(&web_id))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("grants identity"), "{}", e.message());

    // A token nobody issued.
    let e = certify(cp.grpc_addr, &web_id, "weft-forged", csr_for(&web_id))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    // Garbage, and a CSR naming another identity, with a good token.
    let e = certify(cp.grpc_addr, &web_id, &web_token, b"garbage".to_vec())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("malformed CSR"), "{}", e.message());
    let e = certify(cp.grpc_addr, &web_id, &web_token, csr_for(&other_id))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // Re-registration rotates the token; deregistration revokes it.
    let (_, rotated) = register(cp.api_addr, "web-1").await;
    let e = certify(cp.grpc_addr, &web_id, &web_token, csr_for(&web_id))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    certify(cp.grpc_addr, &web_id, &rotated, csr_for(&web_id))
        .await
        .expect("rotated token works");
    let (status, _) = http(cp.api_addr, "DELETE", "/v1/workloads/default/web-1", "").await;
    assert_eq!(status, 200);
    let e = certify(cp.grpc_addr, &web_id, &rotated, csr_for(&web_id))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    cp.shutdown().await.unwrap();
}

/// Certifies until `accepted(result)` (bounded: another replica learns through its watch).
async fn certify_until(
    grpc: SocketAddr,
    identity: &str,
    token: &str,
    what: &str,
    accepted: impl Fn(&Result<linkerd2_proxy_api::identity::CertifyResponse, tonic::Status>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let result = certify(grpc, identity, token, csr_for(identity)).await;
        if accepted(&result) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still {result:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_etcd_share_tokens_and_revocations() {
    let Some(etcd) = common::etcd::Etcd::start("tokens").await else {
        return;
    };
    etcd.client()
        .put(b"/weft/resources/services.yaml", SERVICES.as_bytes())
        .await
        .expect("put");
    let unused = temp_dir("tokens-unused");
    let replica = || {
        common::start(weft_control::Config {
            store: etcd.store("weft"),
            ..common::config(&unused)
        })
    };
    let (a, b) = (replica().await, replica().await);

    // Issued through A, accepted by B.
    let (identity, token) = register(a.api_addr, "web-1").await;
    assert_eq!(identity, WEB_ID);
    certify_until(b.grpc_addr, &identity, &token, "B accepts A's token", |r| {
        r.is_ok()
    })
    .await;
    let e = certify(b.grpc_addr, &identity, "weft-forged", csr_for(&identity))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    // Rotated through B (the workload stays registered): A refuses the old token, takes the
    // new one.
    let refused = |r: &Result<_, tonic::Status>| matches!(r, Err(e) if e.code() == tonic::Code::Unauthenticated);
    let (_, rotated) = register(b.api_addr, "web-1").await;
    certify_until(
        a.grpc_addr,
        &identity,
        &token,
        "A refuses the rotated-out token",
        refused,
    )
    .await;
    certify_until(
        a.grpc_addr,
        &identity,
        &rotated,
        "A accepts B's new token",
        |r| r.is_ok(),
    )
    .await;

    // Revoked through B (deregistration), refused by A.
    let (status, body) = http(b.api_addr, "DELETE", "/v1/workloads/default/web-1", "").await;
    assert_eq!(status, 200, "{body}");
    certify_until(
        a.grpc_addr,
        &identity,
        &rotated,
        "A refuses the revoked token",
        refused,
    )
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn tokens_and_the_ca_survive_a_restart() {
    let store = temp_dir("restart");
    let ca_dir = temp_dir("restart-ca").join("ca");
    let generated = weft_control::ca::generate("cluster.local", "weft").unwrap();
    weft_control::ca::write_dir(&ca_dir, &generated).unwrap();

    let cp = start(&store, Some(&ca_dir)).await;
    assert_eq!(cp.trust_anchors_pem, generated.anchor_cert_pem);
    let (identity, token) = register(cp.api_addr, "web-1").await;
    cp.shutdown().await.unwrap();

    let cp = start(&store, Some(&ca_dir)).await;
    let rsp = certify(cp.grpc_addr, &identity, &token, csr_for(&identity))
        .await
        .expect("the token survives a restart");
    let (_, issuer) = X509Certificate::from_der(&rsp.intermediate_certificates[0]).unwrap();
    let anchor_der = anchors(&generated.anchor_cert_pem).remove(0);
    let (_, anchor) = X509Certificate::from_der(&anchor_der).unwrap();
    issuer
        .verify_signature(Some(anchor.public_key()))
        .expect("issued from the loaded CA");
    cp.shutdown().await.unwrap();

    // A configured directory without a CA is an error, not a silent ephemeral CA.
    let empty = temp_dir("restart-empty");
    let err = weft_control::start(weft_control::Config {
        identity_dir: Some(empty.clone()),
        ..common::config(&store)
    })
    .await
    .err()
    .expect("missing CA files are an error");
    assert!(err.to_string().contains("trust-anchors.pem"), "{err}");
}

/// A registration answered 200 is in force, whatever else the store holds: with a file of an
/// unknown kind present from start-up, the workload is applied and its proxy gets a
/// certificate (this used to be refused forever: the whole store stayed rejected).
#[tokio::test]
async fn a_bad_file_from_start_up_does_not_block_registration_or_certify() {
    let store = temp_dir("bad-file");
    std::fs::write(
        store.join("later.yaml"),
        "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {name: web-http}\nspec: {port: http}\n",
    )
    .unwrap();
    let cp = start(&store, None).await;
    let (_, status) = http(cp.api_addr, "GET", "/v1/store", "").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["errors"],
        serde_json::json!([
            "later.yaml: document 0: spec.podSelector: required (or spec.externalWorkloadSelector)"
        ])
    );
    assert_eq!(status["services"], 1, "the valid file applies: {status}");

    let (identity, token) = register(cp.api_addr, "web-1").await;
    let rsp = certify(cp.grpc_addr, &identity, &token, csr_for(&identity))
        .await
        .expect("certified despite an unrelated bad file");
    let (_, leaf) = X509Certificate::from_der(&rsp.leaf_certificate).expect("DER leaf");
    let dns: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .expect("SANs")
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(dns, vec![WEB_ID.to_string()]);

    // And the index serves it: the service has the registered endpoint.
    let mut updates = get(cp.grpc_addr, "web.default.svc.cluster.local:8080")
        .await
        .unwrap();
    let U::Add(set) = next(&mut updates).await else {
        panic!("expected the registered endpoint")
    };
    assert_eq!(set.addrs.len(), 1);
    cp.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&store);
}

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The "certified" log line carries plain values: the leaf's expiry as RFC 3339, not
/// `SystemTime { tv_sec: .., tv_nsec: .. }`.
#[tokio::test]
async fn certify_logs_the_expiry_as_rfc3339() {
    let logs = Captured::default();
    let sink = logs.clone();
    // tracing caches each callsite's interest process-wide, computed by the first thread that
    // reaches it: a sibling test running the same code with no subscriber would cache "never"
    // and this test's scoped subscriber would see nothing (CI saw exactly that). A global
    // subscriber that records nothing makes every thread's answer "always"; installing it also
    // re-evaluates the callsites already cached.
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    // The test runtime is single-threaded, so the server's tasks log through this default.
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish(),
    );
    let store = temp_dir("certify-log");
    let cp = start(&store, None).await;
    let (identity, token) = register(cp.api_addr, "web-1").await;
    let rsp = certify(cp.grpc_addr, &identity, &token, csr_for(&identity))
        .await
        .expect("certified");
    let secs = rsp.valid_until.expect("valid_until").seconds;
    let want = time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    cp.shutdown().await.unwrap();
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("certified"))
        .unwrap_or_else(|| panic!("no certified line in:\n{text}"));
    assert!(line.contains(&format!("valid_until={want}")), "{line}");
    assert!(!text.contains("SystemTime {"), "{text}");
    let _ = std::fs::remove_dir_all(&store);
}
