//! Multicluster with real control planes in one process: west's export API (link tokens, the
//! NDJSON exports stream) and east's mirror following it (Destination answers for mirrored,
//! remote-discovery and federated services; link loss, expiry and the gateway probe).

mod common;

use common::multicluster::{gateway_mirror_answers, mint, probe_server, west_store, GATEWAY_ID};
use common::{get, http, http_json, next, LIMIT};
use linkerd2_proxy_api::destination::update::Update as U;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One streamed GET: the response status, then its body's lines as they come.
struct Lines {
    status: u16,
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl Lines {
    async fn open(api: SocketAddr, token: Option<&str>) -> Lines {
        use hyper_util::rt::TokioIo;
        let stream = tokio::net::TcpStream::connect(api).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req =
            http::Request::get("/v1/multicluster/exports").header("host", api.to_string());
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let rsp = sender.send_request(req).await.unwrap();
        Lines {
            status: rsp.status().as_u16(),
            body: rsp.into_body(),
            buf: Vec::new(),
        }
    }

    /// The next line as JSON, within [`LIMIT`].
    async fn next(&mut self) -> Value {
        use http_body_util::BodyExt;
        loop {
            if let Some(at) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=at).collect();
                return serde_json::from_slice(&line).expect("a JSON line");
            }
            let frame = tokio::time::timeout(LIMIT, self.body.frame())
                .await
                .expect("a line in time")
                .expect("the stream is open")
                .expect("a frame");
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    /// The next snapshot (heartbeats skipped).
    async fn snapshot(&mut self) -> Value {
        loop {
            let v = self.next().await;
            if v.get("heartbeat").is_none() {
                return v;
            }
        }
    }

    async fn body_text(self) -> String {
        use http_body_util::BodyExt;
        let b = self.body.collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&b).into_owned()
    }
}

fn service<'a>(snapshot: &'a Value, name: &str) -> Option<&'a Value> {
    snapshot["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
}

#[tokio::test]
async fn west_exports_to_link_tokens_only() {
    let dir = common::temp_dir("mc-west");
    west_store(&dir, true, true, false);
    let west = common::start(common::config(&dir)).await;
    let creds = mint(west.api_addr, "east").await;
    assert_eq!(creds["cluster"]["domain"], "cluster.local");
    assert_eq!(creds["cluster"]["controlNamespace"], "weft");
    assert_eq!(
        creds["gateways"],
        json!([{"address": "10.1.0.1", "port": 4143,
                "identity": "gateway.weft-multicluster.serviceaccount.identity.weft.cluster.local",
                "probePort": 4191, "probePath": "/ready"}])
    );
    assert!(creds["trustAnchorsPem"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    let token = creds["token"].as_str().unwrap().to_string();

    // No token, a workload's token, a made-up one: 401 with a JSON error.
    let (_, workload_token) = common::identity::register(west.api_addr, "web-9").await;
    for t in [None, Some(workload_token.as_str()), Some("weft-nope")] {
        let lines = Lines::open(west.api_addr, t).await;
        assert_eq!(lines.status, 401, "{t:?}");
        let body: Value = serde_json::from_str(&lines.body_text().await).unwrap();
        assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
    }

    let mut lines = Lines::open(west.api_addr, Some(&token)).await;
    assert_eq!(lines.status, 200);
    let first = lines.snapshot().await;
    assert_eq!(first["revision"], 1);
    let names: Vec<&str> = first["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["api", "db", "web"],
        "plain is not exported: {first}"
    );
    let web = service(&first, "web").unwrap();
    assert_eq!(web["mode"], "gateway");
    assert_eq!(
        web["endpoints"],
        json!([]),
        "gateway mode sends no endpoints"
    );
    assert_eq!(
        web["ports"],
        json!([{"name": "http", "port": 80, "protocol": "TCP", "appProtocol": null}])
    );
    let api = service(&first, "api").unwrap();
    assert_eq!(api["mode"], "remote-discovery");
    assert_eq!(api["opaquePorts"], json!([9000]));
    assert_eq!(
        api["endpoints"],
        json!([{"address": "10.1.0.21", "ports": {"80": 8080, "9000": 9000},
                "identity": "spiffe://cluster.local/ns/default/sa/api-1",
                "serverName": "api-1.default.serviceaccount.identity.weft.cluster.local",
                "opaqueTransportPort": 4143, "workload": "api-1"}]),
        "only the ready api-1"
    );
    let db = service(&first, "db").unwrap();
    assert_eq!(
        (db["mode"].clone(), db["federated"].clone()),
        (Value::Null, json!(true))
    );
    assert_eq!(db["endpoints"][0]["address"], "10.1.0.31");

    // api-1 turns not ready and web is unexported: a new line says so.
    west_store(&dir, false, false, false);
    let change = loop {
        let s = lines.snapshot().await;
        if service(&s, "web").is_none() && service(&s, "api").unwrap()["endpoints"] == json!([]) {
            break s;
        }
    };
    assert!(change["revision"].as_u64().unwrap() > 1);

    // Revoked: refused from then on.
    let (status, _) = http(
        west.api_addr,
        "DELETE",
        "/v1/multicluster/credentials/east",
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(Lines::open(west.api_addr, Some(&token)).await.status, 401);
    west.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// East's store: a Link to west (gateway 127.0.0.1:4143, probed on `probe`), its credentials,
/// and a local federated member `db`.
fn east_store(dir: &Path, west_api: SocketAddr, token: &str, probe: SocketAddr) {
    let kubeconfig = weft_control::resource::multicluster::kubeconfig(
        "west",
        "east",
        &format!("http://{west_api}"),
        token,
    );
    let secret = weft_control::resource::multicluster::credentials_secret_document(
        "cluster-credentials-west",
        "weft-multicluster",
        &kubeconfig,
    );
    let text = format!(
        r#"apiVersion: multicluster.linkerd.io/v1alpha2
kind: Link
metadata: {{name: west, namespace: weft-multicluster}}
spec:
  targetClusterName: west
  clusterCredentialsSecret: cluster-credentials-west
  gatewayAddress: 127.0.0.1
  gatewayPort: "4143"
  gatewayIdentity: {GATEWAY_ID}
  probeSpec: {{path: /ready, port: "{}", period: 100ms, failureThreshold: "1", timeout: 2s}}
---
{}
---
apiVersion: v1
kind: Service
metadata: {{name: db, labels: {{mirror.linkerd.io/federated: member}}}}
spec: {{selector: {{app: db}}, ports: [{{port: 5432}}]}}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {{name: db-east, labels: {{app: db}}}}
spec: {{workloadIPs: [{{ip: 10.2.0.31}}]}}
"#,
        probe.port(),
        serde_json::to_string(&secret).unwrap()
    );
    std::fs::write(dir.join("east.yaml"), text).unwrap();
}

/// Addresses a Destination update adds (panics on another update).
fn added(u: &U) -> BTreeSet<String> {
    match u {
        U::Add(set) => set
            .addrs
            .iter()
            .map(|a| SocketAddr::try_from(a.addr.unwrap()).unwrap().to_string())
            .collect(),
        other => panic!("expected add, got {other:?}"),
    }
}

/// The next update takes the endpoints away (a Remove of the last, or NoEndpoints).
async fn until_empty(stream: &mut tonic::Streaming<linkerd2_proxy_api::destination::Update>) {
    match next(stream).await {
        U::Remove(_) | U::NoEndpoints(_) => {}
        U::Add(set) => panic!("expected the endpoints to go, got an add of {set:?}"),
    }
}

/// East's link status as `GET /v1/multicluster/links` reports it, once `ok` holds (bounded).
async fn link_status(east: SocketAddr, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let (status, v) = http_json(east, "GET", "/v1/multicluster/links", "").await;
        assert_eq!(status, 200);
        if let Some(l) = v.as_array().and_then(|a| a.first()).filter(|l| ok(l)) {
            return l.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "link status never as expected: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn east_mirrors_west_and_follows_it() {
    let west_dir = common::temp_dir("mc-w");
    west_store(&west_dir, true, true, false);
    let west = common::start(common::config(&west_dir)).await;
    let alive = Arc::new(AtomicBool::new(true));
    let probe = probe_server(alive.clone()).await;
    // Two easts: one keeps a lost link's mirrors forever, the other for 1 s.
    let mut easts = Vec::new();
    for (tag, expiry) in [("keep", Duration::ZERO), ("expire", Duration::from_secs(1))] {
        let dir = common::temp_dir(&format!("mc-e-{tag}"));
        let creds = mint(west.api_addr, &format!("east-{tag}")).await;
        east_store(&dir, west.api_addr, creds["token"].as_str().unwrap(), probe);
        let config = weft_control::Config {
            link_expiry: expiry,
            ..common::config(&dir)
        };
        easts.push((common::start(config).await, dir));
    }
    let east = easts[0].0.grpc_addr;
    let east_api = easts[0].0.api_addr;

    // Gateway mode: the gateway, with the remote authority and opaque transport on its port.
    let (mut web, first) = gateway_mirror_answers(east).await;
    assert_eq!(
        first.addrs[0].metric_labels["external_workload"],
        "west-gateway"
    );

    // Remote discovery: west's ready pod itself.
    let mut api = get(east, "api-west.default.svc.cluster.local:80")
        .await
        .unwrap();
    let set = first_add(&mut api).await;
    assert_eq!(
        added(&U::Add(set.clone())),
        BTreeSet::from(["10.1.0.21:8080".to_string()])
    );
    assert_eq!(
        set.addrs[0]
            .tls_identity
            .as_ref()
            .unwrap()
            .server_name
            .as_ref()
            .unwrap()
            .name,
        "api-1.default.serviceaccount.identity.weft.cluster.local"
    );
    assert!(set.addrs[0].authority_override.is_none());
    assert_eq!(set.metric_labels["service"], "api-west");
    assert_eq!(set.addrs[0].metric_labels["target_cluster_name"], "west");
    // The opaque port carries west's pod's opaque transport port.
    let mut api_opaque = get(east, "api-west.default.svc.cluster.local:9000")
        .await
        .unwrap();
    let set = first_add(&mut api_opaque).await;
    let hint = set.addrs[0].protocol_hint.as_ref().unwrap();
    assert_eq!(hint.opaque_transport.as_ref().unwrap().inbound_port, 4143);

    // Federated: west's member and the local one.
    let mut db = get(east, "db-federated.default.svc.cluster.local:5432")
        .await
        .unwrap();
    let mut seen = BTreeSet::new();
    while seen.len() < 2 {
        if let U::Add(set) = next(&mut db).await {
            // West's member is labelled with its cluster; the local one keeps the local labels.
            for a in &set.addrs {
                let addr = SocketAddr::try_from(a.addr.unwrap()).unwrap().to_string();
                let cluster = a
                    .metric_labels
                    .get("target_cluster_name")
                    .map(String::as_str);
                let expected = (addr == "10.1.0.31:5432").then_some("west");
                assert_eq!(cluster, expected, "{addr}");
            }
            seen.extend(added(&U::Add(set)));
        }
    }
    assert_eq!(
        seen,
        BTreeSet::from(["10.1.0.31:5432".to_string(), "10.2.0.31:5432".to_string()])
    );

    // Shown like any service, with Linkerd's labels and annotation.
    let (_, services) = http_json(east_api, "GET", "/v1/services", "").await;
    let mirror = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["metadata"]["name"] == "web-west")
        .expect("web-west listed");
    assert_eq!(
        mirror["metadata"]["labels"]["mirror.linkerd.io/mirrored-service"],
        "true"
    );
    assert_eq!(
        mirror["metadata"]["labels"]["mirror.linkerd.io/cluster-name"],
        "west"
    );
    assert_eq!(
        mirror["metadata"]["annotations"]["mirror.linkerd.io/remote-svc-fq-name"],
        "web.default.svc.cluster.local"
    );
    // ... and by `weft get` (the documents in force), though never written into the store.
    let (status, doc) = http_json(
        east_api,
        "GET",
        "/v1/resources/service/default/web-west",
        "",
    )
    .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(
        doc["metadata"]["labels"]["mirror.linkerd.io/cluster-name"],
        "west"
    );
    let written = std::fs::read_dir(&easts[0].1)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect::<Vec<_>>();
    assert_eq!(
        written,
        ["east.yaml"],
        "the mirror writes nothing into the store"
    );
    let status = link_status(east_api, |l| l["probeLatencyMs"].is_number()).await;
    assert_eq!(status["name"], "west");
    assert_eq!(status["targetCluster"], "west");
    assert_eq!(status["connected"], true);
    assert_eq!(status["mirroredServices"], 2);
    assert_eq!(status["federatedServices"], 1);
    assert_eq!(status["gatewayAlive"], true);

    // West scales api: east follows (the bounded wait is LIMIT; the contract's 1 s is the
    // 100 ms coalescing plus the store's poll, not asserted here).
    west_store(&west_dir, true, true, true);
    assert_eq!(first_add(&mut api).await.addrs.len(), 1);

    // The gateway dies: its mirrors answer no endpoints; alive again: restored.
    alive.store(false, Ordering::SeqCst);
    until_empty(&mut web).await;
    link_status(east_api, |l| l["gatewayAlive"] == false).await;
    alive.store(true, Ordering::SeqCst);
    assert_eq!(
        added(&U::Add(first_add(&mut web).await)),
        BTreeSet::from(["127.0.0.1:4143".to_string()])
    );

    // Unexported in west: the mirror goes at once.
    west_store(&west_dir, false, true, true);
    until_empty(&mut web).await;

    // West goes away: the link is down; east-keep keeps api-west's endpoints, east-expire drops
    // them after its expiry.
    let mut api_expire = get(
        easts[1].0.grpc_addr,
        "api-west.default.svc.cluster.local:80",
    )
    .await
    .unwrap();
    // Both endpoints there first (that control plane may still be taking the scale-up).
    let mut seen = BTreeSet::new();
    while seen.len() < 2 {
        seen.extend(added(&U::Add(first_add(&mut api_expire).await)));
    }
    west.shutdown().await.unwrap();
    link_status(east_api, |l| {
        l["connected"] == false && l["lastError"].is_string()
    })
    .await;
    let mut again = get(east, "api-west.default.svc.cluster.local:80")
        .await
        .unwrap();
    assert_eq!(
        added(&U::Add(first_add(&mut again).await)),
        BTreeSet::from(["10.1.0.21:8080".to_string(), "10.1.0.22:8080".to_string()])
    );
    until_empty(&mut api_expire).await;
    link_status(easts[1].0.api_addr, |l| l["expired"] == true).await;

    for (e, dir) in easts {
        e.shutdown().await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = std::fs::remove_dir_all(&west_dir);
}

/// The first Add on a stream (NoEndpoints skipped).
async fn first_add(
    stream: &mut tonic::Streaming<linkerd2_proxy_api::destination::Update>,
) -> linkerd2_proxy_api::destination::WeightedAddrSet {
    loop {
        match next(stream).await {
            U::Add(set) => return set,
            U::NoEndpoints(_) => continue,
            U::Remove(set) => panic!("expected endpoints, got a remove of {set:?}"),
        }
    }
}

/// Prometheus' own reader (`promtool check metrics`, from Debian's prometheus package) parses
/// `text`; its only complaints are the two naming lints Linkerd's names draw.
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let Some(promtool) = weft_testbed::which("promtool") else {
        weft_testbed::skip_or_fail("needs promtool (Debian package prometheus)");
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Linkerd's `gateway_probes` (a counter without `_total`) and `gateway_probe_latency_ms`.
    let linkerds = [
        "gateway_probes counter metrics should have \"_total\" suffix",
        "gateway_probe_latency_ms metric names should not contain abbreviated units",
    ];
    let other: Vec<&str> = said
        .lines()
        .filter(|l| !l.trim().is_empty() && !linkerds.contains(&l.trim()))
        .collect();
    assert!(other.is_empty(), "promtool on /metrics: {said}\n{text}");
    assert!(
        out.status.success() || said.lines().any(|l| linkerds.contains(&l.trim())),
        "promtool failed without saying why: {said}"
    );
}

/// East's `GET /metrics` once `ok` holds of its samples (bounded).
async fn metrics_until(east: SocketAddr, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let (status, text) = http(east, "GET", "/metrics", "").await;
        assert_eq!(status, 200, "{text}");
        if ok(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/metrics never showed {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn east_metrics_say_how_the_link_and_its_gateway_are() {
    use weft_sys::prometheus::{parse, sum};
    let west_dir = common::temp_dir("mc-mw");
    west_store(&west_dir, true, true, false);
    let west = common::start(common::config(&west_dir)).await;
    let alive = Arc::new(AtomicBool::new(true));
    let probe = probe_server(alive.clone()).await;
    let dir = common::temp_dir("mc-me");
    let creds = mint(west.api_addr, "east").await;
    east_store(&dir, west.api_addr, creds["token"].as_str().unwrap(), probe);
    let east = common::start(common::config(&dir)).await;
    let api = east.api_addr;

    // Linkerd's labels: the gateway (from its identity) and the target cluster.
    let g = [
        ("gateway_name", "gateway"),
        ("gateway_namespace", "weft-multicluster"),
        ("target_cluster_name", "west"),
    ];
    let count = |text: &str| sum(text, "gateway_probe_latency_ms_count", &g);
    let link = [
        ("link", "west"),
        ("link_namespace", "weft-multicluster"),
        ("target_cluster_name", "west"),
    ];
    let text = metrics_until(api, "a synced link and a probed gateway", |t| {
        count(t) >= 1.0 && sum(t, "multicluster_link_mirrored_services", &link) == 2.0
    })
    .await;
    let samples = parse(&text);
    let alive_samples: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "gateway_alive")
        .collect();
    assert_eq!(alive_samples.len(), 1, "{text}");
    assert!(alive_samples[0].has_labels(&g), "{text}");
    assert_eq!(alive_samples[0].value, 1.0);
    assert_eq!(sum(&text, "multicluster_link_connected", &link), 1.0);
    assert_eq!(
        sum(&text, "multicluster_link_federated_services", &link),
        1.0
    );
    let age = samples
        .iter()
        .find(|s| s.name == "multicluster_link_last_sync_age_seconds")
        .expect("a last sync age");
    assert!(
        age.value >= 0.0 && age.value < LIMIT.as_secs_f64(),
        "{text}"
    );
    promtool_accepts(&text);
    // Every successful probe lands in Linkerd's buckets (the 100 ms period: it grows).
    let first = count(&text);
    let mut inf = g.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(sum(&text, "gateway_probe_latency_ms_bucket", &inf), first);
    metrics_until(api, "more probes", |t| count(t) >= first + 2.0).await;

    // The probe answers 503: dead (failureThreshold 1), the failures counted; then alive again.
    alive.store(false, Ordering::SeqCst);
    let text = metrics_until(api, "gateway_alive 0", |t| {
        parse(t)
            .iter()
            .any(|s| s.name == "gateway_alive" && s.has_labels(&g) && s.value == 0.0)
    })
    .await;
    let mut failed = g.to_vec();
    failed.push(("probe_successful", "false"));
    assert!(sum(&text, "gateway_probes", &failed) >= 1.0, "{text}");
    let dead_count = count(&text);
    alive.store(true, Ordering::SeqCst);
    let text = metrics_until(api, "gateway_alive 1 again", |t| {
        sum(t, "gateway_alive", &g) == 1.0
    })
    .await;
    assert!(count(&text) > dead_count, "{text}");

    // West goes away: the link is down.
    west.shutdown().await.unwrap();
    metrics_until(api, "the link down", |t| {
        parse(t).iter().any(|s| {
            s.name == "multicluster_link_connected" && s.has_labels(&link) && s.value == 0.0
        })
    })
    .await;
    east.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&west_dir);
}
