//! End-to-end tests of the control plane over real sockets on 127.0.0.1: the gRPC services
//! with the linkerd2-proxy-api tonic clients, the HTTP API with plain HTTP/1.1 requests.

mod common;

use common::{get, http_json, next, LIMIT};
use linkerd2_proxy_api::destination::update::Update as U;
use linkerd2_proxy_api::inbound::{
    inbound_server_policies_client::InboundServerPoliciesClient, proxy_protocol as ipp, PortSpec,
};
use linkerd2_proxy_api::outbound::{
    backend, outbound_policies_client::OutboundPoliciesClient, proxy_protocol as opp, traffic_spec,
    TrafficSpec,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  clusterIP: 198.18.0.10
  ports:
  - {name: http, port: 8080, targetPort: http}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: web-1, namespace: default, labels: {app: web}}
spec:
  workloadIPs: [{ip: 127.0.0.1}]
  ports: [{name: http, port: 18080}]
";

fn temp_store(test: &str) -> PathBuf {
    let dir = common::temp_dir(test);
    std::fs::write(dir.join("services.yaml"), SERVICES).unwrap();
    dir
}

async fn start(dir: &Path) -> weft_control::Running {
    common::start(common::config(dir)).await
}

fn added(u: &U) -> Vec<String> {
    match u {
        U::Add(set) => set
            .addrs
            .iter()
            .map(|a| SocketAddr::try_from(a.addr.unwrap()).unwrap().to_string())
            .collect(),
        other => panic!("expected add, got {other:?}"),
    }
}

fn removed(u: &U) -> Vec<String> {
    match u {
        U::Remove(set) => set
            .addrs
            .iter()
            .map(|a| SocketAddr::try_from(*a).unwrap().to_string())
            .collect(),
        other => panic!("expected remove, got {other:?}"),
    }
}

const WEB2: &str = r#"{"apiVersion":"workload.linkerd.io/v1beta1","kind":"ExternalWorkload",
  "metadata":{"name":"ignored","labels":{"app":"web"}},
  "spec":{"workloadIPs":[{"ip":"127.0.0.2"}],"ports":[{"name":"http","port":18081}]}}"#;

#[tokio::test]
async fn registration_sends_add_and_remove_diffs() {
    let dir = temp_store("register");
    let cp = start(&dir).await;
    assert_eq!(http_json(cp.api_addr, "GET", "/ready", "").await.0, 200);

    let mut updates = get(cp.grpc_addr, "web.default.svc.cluster.local:8080")
        .await
        .unwrap();
    let first = next(&mut updates).await;
    assert_eq!(added(&first), vec!["127.0.0.1:18080"]);
    let U::Add(set) = &first else { unreachable!() };
    assert_eq!(set.metric_labels["service"], "web");
    assert_eq!(set.addrs[0].weight, 10000);
    assert_eq!(set.addrs[0].metric_labels["external_workload"], "web-1");
    // A local endpoint: no multicluster label (`target_cluster_name` is for linked clusters').
    assert_eq!(set.addrs[0].metric_labels.len(), 1, "{set:?}");
    let tls = set.addrs[0].tls_identity.clone().unwrap();
    assert_eq!(
        tls.server_name.unwrap().name,
        "web-1.default.serviceaccount.identity.weft.cluster.local"
    );

    let (status, body) = http_json(cp.api_addr, "PUT", "/v1/workloads/default/web-2", WEB2).await;
    assert_eq!((status, &body["ok"]), (200, &serde_json::json!(true)));
    // Registration also returns the workload's identity and its Certify token.
    assert_eq!(
        body["identity"],
        "web-2.default.serviceaccount.identity.weft.cluster.local"
    );
    assert!(body["token"]
        .as_str()
        .is_some_and(|t| t.starts_with("weft-")));
    assert_eq!(added(&next(&mut updates).await), vec!["127.0.0.2:18081"]);
    assert!(dir.join(".registered/default.web-2.yaml").exists());

    let (status, services) = http_json(cp.api_addr, "GET", "/v1/services", "").await;
    assert_eq!(status, 200);
    assert_eq!(services[0]["metadata"]["name"], "web");
    assert_eq!(services[0]["spec"]["clusterIP"], "198.18.0.10");

    let (status, list) = http_json(cp.api_addr, "GET", "/v1/workloads", "").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["web-1", "web-2"],
        "the path name overrides the body"
    );

    // A cluster-IP lookup sees the same endpoints.
    let mut by_ip = get(cp.grpc_addr, "198.18.0.10:8080").await.unwrap();
    assert_eq!(
        added(&next(&mut by_ip).await),
        vec!["127.0.0.1:18080", "127.0.0.2:18081"]
    );

    assert_eq!(
        http_json(cp.api_addr, "DELETE", "/v1/workloads/default/web-2", "")
            .await
            .0,
        200
    );
    assert_eq!(removed(&next(&mut updates).await), vec!["127.0.0.2:18081"]);
    assert!(!dir.join(".registered/default.web-2.yaml").exists());
    assert_eq!(
        http_json(cp.api_addr, "DELETE", "/v1/workloads/default/web-2", "")
            .await
            .0,
        404
    );

    let bad = WEB2.replace("18081", "70000");
    let (status, body) = http_json(cp.api_addr, "PUT", "/v1/workloads/default/web-3", &bad).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "request body: spec.ports[0].port: must be 1..65535, got 70000"
    );

    // A registration that conflicts with a file-defined workload is undone and reported.
    let (status, body) = http_json(cp.api_addr, "PUT", "/v1/workloads/default/web-1", WEB2).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("duplicate ExternalWorkload default/web-1"),
        "{body}"
    );
    assert!(!dir.join(".registered/default.web-1.yaml").exists());
    let (_, store) = http_json(cp.api_addr, "GET", "/v1/store", "").await;
    assert_eq!(store["errors"], serde_json::json!([]));
    cp.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 200 means served: right after each registration (and deregistration) answers, a new
/// Destination stream's first answer already has (or no longer has) the workload — the API
/// waits for the index, not only the store (the index follows the store through two tasks).
#[tokio::test]
async fn a_200_means_destination_already_serves_the_change() {
    let dir = temp_store("served");
    let cp = start(&dir).await;
    let target = "web.default.svc.cluster.local:8080";
    for i in 2..12u16 {
        let doc = WEB2.replace("18081", &(18080 + i).to_string());
        let path = format!("/v1/workloads/default/web-{i}");
        assert_eq!(http_json(cp.api_addr, "PUT", &path, &doc).await.0, 200);
        let mut updates = get(cp.grpc_addr, target).await.unwrap();
        let addrs = added(&next(&mut updates).await);
        assert!(
            addrs.contains(&format!("127.0.0.2:{}", 18080 + i)),
            "web-{i} not served after its 200: {addrs:?}"
        );
    }
    for i in 2..12u16 {
        let path = format!("/v1/workloads/default/web-{i}");
        assert_eq!(http_json(cp.api_addr, "DELETE", &path, "").await.0, 200);
        let mut updates = get(cp.grpc_addr, target).await.unwrap();
        let addrs = added(&next(&mut updates).await);
        assert!(
            !addrs.contains(&format!("127.0.0.2:{}", 18080 + i)),
            "web-{i} still served after its DELETE answered 200: {addrs:?}"
        );
    }
    cp.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_document_keeps_the_last_good_state() {
    let dir = temp_store("bad-yaml");
    let cp = start(&dir).await;
    let (_, mut status) = http_json(cp.api_addr, "GET", "/v1/store", "").await;
    // The file store: this control plane is its own leader.
    let leader = status
        .as_object_mut()
        .unwrap()
        .remove("leader")
        .expect("leader");
    assert_eq!(leader["this_replica"], true, "{leader}");
    assert!(
        leader["leader"].as_str().unwrap().starts_with("cp-"),
        "{leader}"
    );
    assert_eq!(
        status,
        serde_json::json!({"generation": 1, "services": 1, "workloads": 1, "routes": [], "policies": [], "errors": []})
    );

    let bad = format!("{SERVICES}---\napiVersion: v1\nkind: Service\nmetadata: {{name: api}}\nspec:\n  selector: {{app: api}}\n  ports: [{{port: 70000}}]\n");
    std::fs::write(dir.join("services.yaml"), bad).unwrap();
    let want = "services.yaml: document 2: spec.ports[0].port: must be 1..65535, got 70000";
    let deadline = tokio::time::Instant::now() + LIMIT;
    let status = loop {
        let (_, status) = http_json(cp.api_addr, "GET", "/v1/store", "").await;
        if !status["errors"].as_array().unwrap().is_empty()
            || tokio::time::Instant::now() > deadline
        {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status["errors"], serde_json::json!([want]));
    assert_eq!(status["generation"], 1);

    // Still served from the last good state.
    let mut updates = get(cp.grpc_addr, "web.default.svc.cluster.local:8080")
        .await
        .unwrap();
    assert_eq!(added(&next(&mut updates).await), vec!["127.0.0.1:18080"]);
    cp.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn invalid_and_unknown_destinations() {
    let dir = temp_store("unknown");
    let cp = start(&dir).await;
    for path in [
        "example.com:80",
        "web.default.svc.other.domain:80",
        "10.9.9.9:80",
    ] {
        let err = get(cp.grpc_addr, path).await.expect_err(path);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{path}");
    }
    let mut updates = get(cp.grpc_addr, "nope.default.svc.cluster.local.:80")
        .await
        .unwrap();
    assert!(matches!(next(&mut updates).await, U::NoEndpoints(n) if !n.exists));

    // The stream stays open: the service may appear.
    let nope = "apiVersion: v1\nkind: Service\nmetadata: {name: nope}\nspec: {selector: {app: nope}, ports: [{port: 80}]}\n";
    std::fs::write(dir.join("nope.yaml"), nope).unwrap();
    assert!(matches!(next(&mut updates).await, U::NoEndpoints(n) if n.exists));
    cp.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn policies_and_restart_persistence() {
    let dir = temp_store("policy");
    let cp = start(&dir).await;
    let endpoint = format!("http://{}", cp.grpc_addr);

    let mut outbound = OutboundPoliciesClient::connect(endpoint.clone())
        .await
        .unwrap();
    let spec = TrafficSpec {
        source_workload: "default:client".into(),
        target: Some(traffic_spec::Target::Authority(
            "web.default.svc.cluster.local:8080".into(),
        )),
    };
    let policy = outbound
        .watch(spec)
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let Some(opp::Kind::Detect(detect)) = policy.protocol.unwrap().kind else {
        panic!("expected detect")
    };
    let route = &detect.http1.unwrap().routes[0];
    let dist = route.rules[0].backends.clone().unwrap().kind.unwrap();
    let linkerd2_proxy_api::outbound::http_route::distribution::Kind::FirstAvailable(fa) = dist
    else {
        panic!()
    };
    let be = fa.backends[0].backend.clone().unwrap();
    assert_eq!(be.queue.unwrap().capacity, 100);
    let Some(backend::Kind::Balancer(b)) = be.kind else {
        panic!("expected a balancer")
    };
    let Some(backend::endpoint_discovery::Kind::Dst(dst)) = b.discovery.unwrap().kind else {
        panic!()
    };
    assert_eq!(dst.path, "web.default.svc.cluster.local:8080");

    let spec = TrafficSpec {
        source_workload: String::new(),
        target: Some(traffic_spec::Target::Addr(
            "10.9.9.9:80".parse::<SocketAddr>().unwrap().into(),
        )),
    };
    assert_eq!(
        outbound.get(spec).await.unwrap_err().code(),
        tonic::Code::NotFound
    );

    let mut inbound = InboundServerPoliciesClient::connect(endpoint)
        .await
        .unwrap();
    for workload in [
        "default:web-1",
        r#"{"ns":"default","external_workload":"web-1"}"#,
    ] {
        let server = inbound
            .get_port(PortSpec {
                workload: workload.into(),
                port: 18080,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            matches!(server.protocol.unwrap().kind, Some(ipp::Kind::Detect(_))),
            "{workload}"
        );
        assert_eq!(server.authorizations.len(), 1);
    }
    let err = inbound
        .get_port(PortSpec {
            workload: "web-1".into(),
            port: 18080,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Registered workloads survive a restart.
    assert_eq!(
        http_json(cp.api_addr, "PUT", "/v1/workloads/default/web-2", WEB2)
            .await
            .0,
        200
    );
    cp.shutdown().await.unwrap();
    let cp = start(&dir).await;
    let mut updates = get(cp.grpc_addr, "web.default.svc.cluster.local:8080")
        .await
        .unwrap();
    assert_eq!(
        added(&next(&mut updates).await),
        vec!["127.0.0.1:18080", "127.0.0.2:18081"]
    );
    cp.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// An opaque service port whose workloads register over the API: one names its sidecar's
/// inbound port (transport header to 4143), one does not (explicit mode: its port is the
/// sidecar's forward port, no header).
#[tokio::test]
async fn opaque_endpoints_carry_the_peer_inbound_port() {
    let dir = common::temp_dir("opaque-transport");
    std::fs::write(
        dir.join("services.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: default}\n\
         spec:\n  selector: {app: db}\n  ports:\n  - {name: pg, port: 5432, targetPort: pg, appProtocol: opaque}\n",
    )
    .unwrap();
    let cp = start(&dir).await;
    let workload = |ip: &str, annotations: &str| {
        format!(
            r#"{{"apiVersion":"workload.linkerd.io/v1beta1","kind":"ExternalWorkload",
              "metadata":{{"labels":{{"app":"db"}},"annotations":{{{annotations}}}}},
              "spec":{{"workloadIPs":[{{"ip":"{ip}"}}],"ports":[{{"name":"pg","port":5432}}]}}}}"#
        )
    };
    let pod = workload("198.18.0.21", r#""config.linkerd.io/inbound-port":"4143""#);
    let explicit = workload("127.0.0.1", "");
    for (name, doc) in [("db-1", &pod), ("db-2", &explicit)] {
        let path = format!("/v1/workloads/default/{name}");
        let (status, body) = http_json(cp.api_addr, "PUT", &path, doc).await;
        assert_eq!(status, 200, "{name}: {body}");
    }

    let mut updates = get(cp.grpc_addr, "db.default.svc.cluster.local:5432")
        .await
        .unwrap();
    // The two registrations may reach the index separately: gather adds until both are in.
    let mut hints = std::collections::BTreeMap::new();
    while hints.len() < 2 {
        let U::Add(set) = next(&mut updates).await else {
            panic!("expected add")
        };
        for a in &set.addrs {
            let hint = a.protocol_hint.unwrap();
            let opaque = matches!(
                hint.protocol,
                Some(linkerd2_proxy_api::destination::protocol_hint::Protocol::Opaque(_))
            );
            let addr = SocketAddr::try_from(a.addr.unwrap()).unwrap().to_string();
            hints.insert(
                addr,
                (hint.opaque_transport.map(|t| t.inbound_port), opaque),
            );
        }
    }
    let hints: Vec<(String, Option<u32>, bool)> =
        hints.into_iter().map(|(a, (t, o))| (a, t, o)).collect();
    assert_eq!(
        hints,
        vec![
            ("127.0.0.1:5432".to_string(), None, true),
            ("198.18.0.21:5432".to_string(), Some(4143), true),
        ]
    );

    // A bad value is refused with the field named, and nothing is registered.
    let bad = workload("198.18.0.22", r#""config.linkerd.io/inbound-port":"0""#);
    let (status, body) = http_json(cp.api_addr, "PUT", "/v1/workloads/default/db-3", &bad).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "request body: metadata.annotations[\"config.linkerd.io/inbound-port\"]: \"0\" is not a port 1..65535"
    );
    cp.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A timing harness, not a test: run by hand with
/// `cargo test -p weft-control --test control_plane first_answer_latency -- --ignored --nocapture`.
/// Prints how long the first `Destination.Get` answer takes on a fresh connection and on a new
/// stream of a connection already in use (the client sets TCP_NODELAY, as the proxy does, so
/// only the server's side of the socket is measured).
#[tokio::test]
#[ignore = "timing harness: prints numbers, asserts nothing"]
async fn first_answer_latency() {
    use linkerd2_proxy_api::destination::{destination_client::DestinationClient, GetDestination};
    const N: usize = 40;
    let dir = temp_store("latency");
    let cp = start(&dir).await;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", cp.grpc_addr))
        .unwrap()
        .tcp_nodelay(true);
    let req = || GetDestination {
        path: "web.default.svc.cluster.local:8080".into(),
        ..Default::default()
    };
    let summary = |what: &str, mut ms: Vec<f64>| {
        ms.sort_by(f64::total_cmp);
        let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
        println!(
            "{what}: n={} min={:.2}ms median={:.2}ms p90={:.2}ms max={:.2}ms",
            ms.len(),
            q(0.0),
            q(0.5),
            q(0.9),
            q(1.0)
        );
    };
    let mut fresh = Vec::new();
    for _ in 0..N {
        let started = std::time::Instant::now();
        let mut client = DestinationClient::new(endpoint.connect().await.unwrap());
        let mut stream = client.get(req()).await.unwrap().into_inner();
        stream.message().await.unwrap().unwrap();
        fresh.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let mut client = DestinationClient::new(endpoint.connect().await.unwrap());
    let mut reused = Vec::new();
    let mut open = Vec::new();
    for _ in 0..N {
        let started = std::time::Instant::now();
        let mut stream = client.get(req()).await.unwrap().into_inner();
        stream.message().await.unwrap().unwrap();
        reused.push(started.elapsed().as_secs_f64() * 1e3);
        open.push(stream);
    }
    summary("fresh connection + Get, first answer", fresh);
    summary("new Get on a connection in use, first answer", reused);
    cp.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
