//! Trust-anchor rotation and CA outages, end to end: real `weft control` (with a CA directory)
//! and `weft-proxy` processes whose anchors come from the directory's `trust-anchors.pem`.
//!
//! - a full rotation (`weft identity rotate --stage bundle`, `issue`, `retire`) under steady
//!   HTTP load plus a fresh opaque mTLS connection every few ms, with 4 s leaves: zero failed
//!   requests; afterwards both proxies trust only the new anchor and a TLS probe of each inbound
//!   port is accepted with only the new anchor trusted (and refused with only the old one);
//! - `retire` is refused while a certificate from the old anchor lives, and `weft identity
//!   status --json` / `GET /v1/identity/status` show the live leaves per anchor;
//! - the control plane gone for several renewal periods: traffic continues, renewal failures
//!   are counted, and renewal resumes once it is back.

#[path = "support/mtls_mesh.rs"]
mod mtls_mesh;
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mtls_mesh::{identity_of, ControlOpts, IdentitySource};
use support::apps::{tcp_echo, AbortOnDrop, EchoServer};
use support::clients::tcp_roundtrip;
use support::load::{Load, LoadReport};
use support::{
    authority, eventually, http_get, metric_sum, opaque_service, service, weft_bin, write_docs,
    Control, Proxy, ProxySpec, TempDir, SOON,
};
use tokio::net::TcpStream;
use weft_proxy::config;

const SERVER: &str = "backend-1";
const CLIENT: &str = "client";

/// A control plane over a CA directory, an echo server (HTTP + opaque TCP) and a client, both
/// proxies reading their anchors from the directory's bundle.
struct Mesh {
    control: Control,
    store: std::path::PathBuf,
    ca_dir: std::path::PathBuf,
    server: Proxy,
    client: Proxy,
    _echo: EchoServer,
    _tcp: AbortOnDrop,
    tmp: TempDir,
}

async fn mesh(test: &str, cert_lifetime: &str, extra: &[(&str, &str)]) -> Mesh {
    let tmp = TempDir::new(test);
    let store = tmp.subdir("store");
    let ca_dir = tmp.path().join("ca");
    mtls_mesh::init_ca(&ca_dir).await;
    write_docs(
        &store,
        "services.yaml",
        &[
            service("echo", "backend", 8080, "http"),
            opaque_service("tcp", "backend", 7000, "tcp"),
        ],
    );
    let control = mtls_mesh::start_control(
        &store,
        tmp.path(),
        ControlOpts {
            cert_lifetime: Some(cert_lifetime),
            identity_dir: Some(&ca_dir),
            ..Default::default()
        },
    )
    .await;
    let id = IdentitySource {
        certify: control.grpc,
        anchors_pem: "",
    };
    let bundle = ca_dir.join("trust-anchors.pem").display().to_string();
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let from_file = |spec: ProxySpec| {
        let mut spec = spec
            .env(config::ENV_IDENTITY_TRUST_ANCHORS, "")
            .env(config::ENV_IDENTITY_TRUST_ANCHORS_FILE, &bundle);
        for (k, v) in &extra {
            spec = spec.env(k, v);
        }
        spec
    };
    let echo = EchoServer::start(SERVER).await;
    let (tcp_app, tcp_task) = tcp_echo().await;
    let server = mtls_mesh::server(
        &control,
        &id,
        tmp.path(),
        SERVER,
        "backend",
        &[("http", echo.port()), ("tcp", tcp_app.port())],
        from_file,
    )
    .await;
    let client = mtls_mesh::client_with(
        &control,
        &id,
        tmp.path(),
        CLIENT,
        &[authority("echo", 8080), authority("tcp", 7000)],
        from_file,
    )
    .await;
    Mesh {
        control,
        store,
        ca_dir,
        server,
        client,
        _echo: echo,
        _tcp: tcp_task,
        tmp,
    }
}

/// One opaque exchange on a fresh connection (so a fresh mTLS handshake between the proxies),
/// all bytes echoed.
async fn opaque_echo(addr: SocketAddr, payload: &[u8]) -> Result<(), String> {
    let back = tcp_roundtrip(addr, payload).await?;
    if back == payload {
        Ok(())
    } else {
        Err(format!("echoed {} of {} bytes", back.len(), payload.len()))
    }
}

/// A fresh opaque connection every 20 ms until dropped; counts successes and failures.
struct OpaqueLoad {
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    _task: AbortOnDrop,
}

impl OpaqueLoad {
    fn start(addr: SocketAddr) -> OpaqueLoad {
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (ok2, failures2) = (ok.clone(), failures.clone());
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                n += 1;
                let payload = format!("opaque connection {n}");
                match opaque_echo(addr, payload.as_bytes()).await {
                    Ok(()) => {
                        ok2.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures2
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("connection {n}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        OpaqueLoad {
            ok,
            failures,
            _task: AbortOnDrop(task),
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    fn failures(&self) -> Vec<String> {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Stops the HTTP load and asserts no HTTP request and no opaque connection failed, and over 200
/// HTTP requests were made.
async fn stop_without_failures(http: Load, opaque: &OpaqueLoad) -> LoadReport {
    let report = http.stop().await;
    let opaque_failures = opaque.failures();
    assert!(
        report.failures.is_empty(),
        "HTTP failed: {:?}",
        report.failures
    );
    assert!(
        opaque_failures.is_empty(),
        "opaque failed: {opaque_failures:?}"
    );
    assert!(report.ok > 200, "only {} HTTP requests", report.ok);
    report
}

/// Runs `weft identity ARGS...`; returns (success, stdout, stderr).
async fn weft_identity(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(weft_bin())
        .arg("identity")
        .args(args)
        .output()
        .await
        .expect("run weft identity");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

async fn rotate(dir: &Path, stage: &str) -> serde_json::Value {
    let dir = dir.display().to_string();
    let (ok, stdout, stderr) = weft_identity(&["rotate", "--dir", &dir, "--stage", stage]).await;
    assert!(ok, "rotate --stage {stage} failed: {stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("rotate output {stdout:?}: {e}"))
}

async fn status_json(dir: &Path) -> serde_json::Value {
    let dir = dir.display().to_string();
    let (ok, stdout, stderr) = weft_identity(&["status", "--dir", &dir, "--json"]).await;
    assert!(ok, "status failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("status output {stdout:?}: {e}"))
}

/// The control plane's `GET /v1/identity/status`.
async fn api_status(control: &Control) -> serde_json::Value {
    let (code, body) = http_get(control.api, "/v1/identity/status")
        .await
        .expect("GET /v1/identity/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status JSON")
}

/// Waits until the proxy has `n` trust anchors in force.
async fn anchors_in_force(proxy: &Proxy, n: f64) {
    mtls_mesh::metrics_until(proxy, &format!("{n} trust anchors"), |m| {
        metric_sum(m, "identity_trust_anchors", &[]) == n
    })
    .await;
}

fn pem_of_anchor(dir: &Path, fingerprint: &str) -> String {
    // The anchors as they are in the bundle (or, once retired, in its archived copy).
    let mut texts = vec![std::fs::read_to_string(dir.join("trust-anchors.pem")).expect("bundle")];
    if let Ok(entries) = std::fs::read_dir(dir.join("retired")) {
        for e in entries.flatten() {
            for f in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                if let Ok(t) = std::fs::read_to_string(f.path()) {
                    texts.push(t);
                }
            }
        }
    }
    for text in texts {
        for block in text.split_inclusive("-----END CERTIFICATE-----") {
            let Some(start) = block.find("-----BEGIN CERTIFICATE-----") else {
                continue;
            };
            let pem = format!("{}\n", &block[start..]);
            let der = weft_control::ca::pem_certificates(pem.as_bytes()).expect("pem");
            if der
                .first()
                .is_some_and(|d| weft_control::ca::fingerprint(d) == fingerprint)
            {
                return pem;
            }
        }
    }
    panic!("anchor {fingerprint} not found under {}", dir.display())
}

/// A TLS 1.3 handshake with the proxy's inbound port (SNI = its identity) that trusts only
/// `anchor_pem`: Ok means the presented chain reaches that anchor and names exactly `identity`.
async fn probe(addr: SocketAddr, identity: &str, anchor_pem: &str) -> Result<(), String> {
    use weft_proxy::identity::tls as id_tls;
    let roots = id_tls::roots_from_pem(anchor_pem.as_bytes()).map_err(|e| e.to_string())?;
    let verifier = id_tls::server_verifier(Arc::new(roots), identity).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(id_tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name =
        rustls::pki_types::ServerName::try_from(identity.to_string()).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let chain = tls.get_ref().1.peer_certificates().map_or(0, |c| c.len());
    if chain < 2 {
        return Err(format!(
            "presented {chain} certificate(s), expected leaf + issuer"
        ));
    }
    Ok(())
}

fn refreshes(text: &str, result: &str) -> f64 {
    metric_sum(text, "identity_cert_refresh_total", &[("result", result)])
}

fn expiry(text: &str) -> f64 {
    metric_sum(text, "identity_cert_expiration_timestamp_seconds", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_anchor_rotation_under_steady_load_fails_no_request() {
    let mesh = mesh("rotation", "4s", &[]).await;
    let (server_id, client_id) = (identity_of(SERVER), identity_of(CLIENT));
    anchors_in_force(&mesh.server, 1.0).await;
    let before = (
        expiry(&mesh.server.metrics().await),
        expiry(&mesh.client.metrics().await),
    );
    let echo = authority("echo", 8080);
    let http = Load::through(&mesh.client, &echo, Duration::from_secs(90));
    let opaque = OpaqueLoad::start(mesh.client.upstream_addr(&authority("tcp", 7000)));
    let started = Instant::now();

    // (a) bundle: both proxies trust old + new; issuance unchanged.
    let a = rotate(&mesh.ca_dir, "bundle").await;
    let new_anchor = a["new_anchor"].as_str().expect("new_anchor").to_string();
    let old_anchor = a["old_anchors"][0].as_str().expect("old").to_string();
    anchors_in_force(&mesh.server, 2.0).await;
    anchors_in_force(&mesh.client, 2.0).await;
    let s = status_json(&mesh.ca_dir).await;
    assert_eq!(s["stage"], "bundle", "{s}");
    assert_eq!(s["issuer_anchor"], old_anchor.as_str(), "{s}");

    // (b) issue: the running control plane switches without a restart; new leaves chain to the
    // new anchor, which the probes see on both inbound ports.
    rotate(&mesh.ca_dir, "issue").await;
    // Retire is refused at once (the old anchor's 4 s leaves still live, and the settling time
    // runs): checked here, before the waits below could outlast both.
    {
        let dir = mesh.ca_dir.display().to_string();
        let (ok, _, stderr) = weft_identity(&["rotate", "--dir", &dir, "--stage", "retire"]).await;
        assert!(!ok, "retire right after issue must be refused");
        assert!(stderr.contains("refused"), "{stderr}");
    }
    eventually(
        "the control plane issues from the new anchor",
        SOON,
        || async {
            (api_status(&mesh.control).await["issuer_anchor"] == new_anchor.as_str()).then_some(())
        },
    )
    .await;
    let new_pem = pem_of_anchor(&mesh.ca_dir, &new_anchor);
    let old_pem = pem_of_anchor(&mesh.ca_dir, &old_anchor);
    for (proxy, id) in [(&mesh.server, &server_id), (&mesh.client, &client_id)] {
        eventually(
            &format!("{id} presents a chain to the new anchor"),
            SOON,
            || async { probe(proxy.inbound, id, &new_pem).await.ok() },
        )
        .await;
    }

    // (c) retire (refused right after `issue`, above): accepted once the old leaves are gone;
    // then both proxies trust only the new anchor.
    let dir = mesh.ca_dir.display().to_string();
    eventually("retire is accepted", Duration::from_secs(30), || async {
        let (ok, _, _) = weft_identity(&["rotate", "--dir", &dir, "--stage", "retire"]).await;
        if !ok {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        ok.then_some(())
    })
    .await;
    anchors_in_force(&mesh.server, 1.0).await;
    anchors_in_force(&mesh.client, 1.0).await;
    let s = status_json(&mesh.ca_dir).await;
    assert_eq!(s["stage"], "complete", "{s}");
    assert_eq!(s["anchors"].as_array().map(Vec::len), Some(1), "{s}");
    assert_eq!(s["anchors"][0]["fingerprint"], new_anchor.as_str(), "{s}");

    // Traffic keeps flowing on the new anchor alone (renewals included) for a while.
    let opaque_at_retire = opaque.ok();
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(5) || opaque.ok() < opaque_at_retire + 20 {
        assert!(settle.elapsed() < SOON, "opaque load stalled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (proxy, id) in [(&mesh.server, &server_id), (&mesh.client, &client_id)] {
        probe(proxy.inbound, id, &new_pem)
            .await
            .unwrap_or_else(|e| panic!("{id}: probe trusting the new anchor: {e}"));
        let refused = probe(proxy.inbound, id, &old_pem).await;
        assert!(
            refused.is_err(),
            "{id} still presents a chain to the old anchor"
        );
    }
    let report = stop_without_failures(http, &opaque).await;
    assert!(opaque.ok() > 100, "only {} opaque connections", opaque.ok());
    let after = (
        expiry(&mesh.server.metrics().await),
        expiry(&mesh.client.metrics().await),
    );
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "{before:?} -> {after:?}"
    );
    eprintln!(
        "rotation took {:?}: {} HTTP requests, {} opaque connections, no failure",
        started.elapsed(),
        report.ok,
        opaque.ok()
    );
    let _ = (&mesh.store, &mesh.tmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retire_is_refused_while_certificates_from_the_old_anchor_live() {
    let mesh = mesh("rotation-refused", "1h", &[]).await;
    let dir = mesh.ca_dir.display().to_string();
    let a = rotate(&mesh.ca_dir, "bundle").await;
    let old_anchor = a["old_anchors"][0].as_str().expect("old").to_string();
    rotate(&mesh.ca_dir, "issue").await;

    // Two proxies hold an hour-long leaf from the old anchor: the ledger says so.
    let s = eventually("the ledger records the old leaves", SOON, || async {
        let s = status_json(&mesh.ca_dir).await;
        let old = s["anchors"]
            .as_array()?
            .iter()
            .find(|a| a["fingerprint"] == old_anchor.as_str())?
            .clone();
        (old["live_leaves"].as_u64() >= Some(2)).then_some(s)
    })
    .await;
    assert_eq!(s["stage"], "issue", "{s}");
    let api = api_status(&mesh.control).await;
    let api_old = api["anchors"]
        .as_array()
        .and_then(|v| v.iter().find(|a| a["fingerprint"] == old_anchor.as_str()))
        .cloned()
        .expect("old anchor in the API status");
    assert!(api_old["live_leaves"].as_u64() >= Some(2), "{api}");
    assert!(api_old["latest_leaf_expiry"].as_i64() > Some(0), "{api}");
    assert_eq!(api_old["role"], "old", "{api}");

    let (ok, _, stderr) = weft_identity(&["rotate", "--dir", &dir, "--stage", "retire"]).await;
    assert!(!ok, "retire must be refused");
    assert!(stderr.contains("still live"), "{stderr}");
    let (_, text, _) = weft_identity(&["status", "--dir", &dir]).await;
    assert!(text.contains("rotation stage: issue"), "{text}");
    assert!(text.contains("[old]") && text.contains("[new]"), "{text}");
    // The bundle still holds both anchors.
    let s = status_json(&mesh.ca_dir).await;
    assert_eq!(s["anchors"].as_array().map(Vec::len), Some(2), "{s}");
    let _ = (&mesh.store, &mesh.tmp, &mesh.server, &mesh.client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_unreachable_longer_than_a_renewal_period_keeps_traffic_and_renewal_resumes() {
    // 30 s leaves renewed every 2 s (MAX_REFRESH): an outage of several renewal periods is far
    // shorter than the leaves' life.
    let mut mesh = mesh(
        "ca-outage",
        "30s",
        &[
            (config::ENV_IDENTITY_MIN_REFRESH, "1s"),
            (config::ENV_IDENTITY_MAX_REFRESH, "2s"),
        ],
    )
    .await;
    let echo = authority("echo", 8080);
    let http = Load::through(&mesh.client, &echo, Duration::from_secs(90));
    let opaque = OpaqueLoad::start(mesh.client.upstream_addr(&authority("tcp", 7000)));
    // Renewing normally first.
    for p in [&mesh.server, &mesh.client] {
        mtls_mesh::metrics_until(p, "a renewal", |m| refreshes(m, "success") >= 2.0).await;
    }

    let grpc = mesh.control.grpc;
    mesh.control.kill().await;
    let down = Instant::now();
    let successes: Vec<f64> = vec![
        refreshes(&mesh.server.metrics().await, "success"),
        refreshes(&mesh.client.metrics().await, "success"),
    ];
    // Down for three renewal periods, and until both proxies counted failed renewals.
    for p in [&mesh.server, &mesh.client] {
        mtls_mesh::metrics_until(p, "failed renewals", |m| refreshes(m, "failure") >= 2.0).await;
    }
    let opaque_at_down = opaque.ok();
    while down.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        opaque.ok() > opaque_at_down + 20,
        "opaque traffic stalled while the CA was down"
    );
    for (p, before) in [&mesh.server, &mesh.client].iter().zip(&successes) {
        let m = p.metrics().await;
        assert_eq!(refreshes(&m, "success"), *before, "renewed with no CA?");
    }

    // Back (same address, same CA directory and store, so the tokens still hold).
    mesh.control = mtls_mesh::start_control(
        &mesh.store,
        mesh.tmp.path(),
        ControlOpts {
            cert_lifetime: Some("30s"),
            identity_dir: Some(&mesh.ca_dir),
            name: "restarted",
            grpc_addr: Some(grpc),
            ..Default::default()
        },
    )
    .await;
    for (p, before) in [&mesh.server, &mesh.client].iter().zip(&successes) {
        mtls_mesh::metrics_until(p, "renewal resumed", |m| {
            refreshes(m, "success") >= before + 2.0
        })
        .await;
    }
    stop_without_failures(http, &opaque).await;
}

/// `weft identity init --anchor-dir`: a second cluster's CA has its own issuer under the first
/// one's anchor, and never receives the anchor's key.
#[tokio::test]
async fn init_with_an_anchor_dir_makes_an_issuer_under_that_anchor() {
    let tmp = TempDir::new("identity-second-cluster");
    let (west, east) = (tmp.path().join("west"), tmp.path().join("east"));
    let (w, e) = (west.display().to_string(), east.display().to_string());
    let (ok, _, stderr) = weft_identity(&["init", "--dir", &w]).await;
    assert!(ok, "init west: {stderr}");
    let (ok, stdout, stderr) = weft_identity(&["init", "--dir", &e, "--anchor-dir", &w]).await;
    assert!(ok, "init east: {stderr}");
    assert!(stdout.contains("identity-initialized"), "{stdout}");
    assert!(!east.join("trust-anchor.key").exists());

    let (west_status, east_status) = (status_json(&west).await, status_json(&east).await);
    assert_eq!(west_status["anchors"], east_status["anchors"]);
    assert_eq!(west_status["issuer_anchor"], east_status["issuer_anchor"]);
    assert_ne!(
        west_status["issuer"]["fingerprint"], east_status["issuer"]["fingerprint"],
        "east must have an issuer of its own"
    );

    // An anchor directory without the anchor's key is refused, naming the file.
    let third = tmp.path().join("third").display().to_string();
    let (ok, _, stderr) = weft_identity(&["init", "--dir", &third, "--anchor-dir", &e]).await;
    assert!(!ok);
    assert!(stderr.contains("trust-anchor.key"), "{stderr}");
}
