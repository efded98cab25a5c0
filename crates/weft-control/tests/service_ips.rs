//! Cluster IPs the control plane allocates, over its real API and gRPC on 127.0.0.1: a Service
//! written without `clusterIP` gets one, keeps it across a restart and store edits, answers
//! `Destination.Get` by that address, and gives it up to a user who sets it on another Service.

mod common;

use common::{get, http_json, next, LIMIT};
use linkerd2_proxy_api::destination::update::Update as U;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

/// Services as Kubernetes users write them: selector and port, no clusterIP.
const PLAIN: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: web-1, namespace: default, labels: {app: web}}
spec:
  workloadIPs: [{ip: 127.0.0.1}]
  ports: [{name: http, port: 18080}]
";

fn db(cluster_ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: db, namespace: default}}\nspec:\n  \
         selector: {{app: db}}\n  clusterIP: {cluster_ip}\n  ports: [{{port: 5432}}]\n"
    )
}

/// `name`'s clusterIP as `GET /v1/services` shows it.
async fn cluster_ip(api: SocketAddr, name: &str) -> Option<String> {
    let (status, services) = http_json(api, "GET", "/v1/services", "").await;
    assert_eq!(status, 200, "{services}");
    services
        .as_array()
        .expect("a list")
        .iter()
        .find(|s| s["metadata"]["name"] == name)
        .and_then(|s| s["spec"]["clusterIP"].as_str().map(str::to_string))
}

/// Polls until `name`'s clusterIP satisfies `ok` (store edits apply on the next poll).
async fn wait_ip(
    api: SocketAddr,
    name: &str,
    ok: impl Fn(&Option<String>) -> bool,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let ip = cluster_ip(api, name).await;
        if ok(&ip) {
            return ip;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: clusterIP stays {ip:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn start(store: &Path) -> weft_control::Running {
    common::start(common::config(store)).await
}

#[tokio::test]
async fn a_service_without_cluster_ip_gets_a_stable_one_that_a_user_can_take() {
    let store = common::temp_dir("service-ips");
    std::fs::write(store.join("services.yaml"), PLAIN).unwrap();
    let cp = start(&store).await;

    // 1. Allocated from the default range and shown by the API.
    let web = cluster_ip(cp.api_addr, "web")
        .await
        .expect("web has a clusterIP");
    let v4: Ipv4Addr = web.parse().expect("an IPv4 address");
    assert_eq!(&v4.octets()[..2], &[198, 19], "{web}");
    assert!(v4.octets()[2] >= 128, "in 198.19.128.0/17: {web}");

    // 2. Discovery by that address finds web's endpoint, as a pod's proxy asks after iptables.
    let mut stream = get(cp.grpc_addr, &format!("{web}:8080"))
        .await
        .expect("Get");
    match next(&mut stream).await {
        U::Add(set) => assert_eq!(set.addrs.len(), 1, "{set:?}"),
        other => panic!("expected web's endpoint, got {other:?}"),
    }
    drop(stream);

    // 3. Persisted with the store, and the same after a restart.
    let file = store.join(".allocations/service-ips.json");
    let text = std::fs::read_to_string(&file).expect("allocations persisted");
    assert!(
        text.contains(&format!("\"default/web\": \"{web}\"")),
        "{text}"
    );
    cp.shutdown().await.unwrap();
    let cp = start(&store).await;
    assert_eq!(
        cluster_ip(cp.api_addr, "web").await.as_deref(),
        Some(web.as_str())
    );

    // 4. A user sets web's address on another Service: theirs wins, web moves, and keeps its new
    //    address across a restart (the file now differs from where the name hashes).
    std::fs::write(store.join("db.yaml"), db(&web)).unwrap();
    let moved = wait_ip(cp.api_addr, "web", |ip| ip.as_deref() != Some(web.as_str()))
        .await
        .expect("web gets another address");
    assert_eq!(
        cluster_ip(cp.api_addr, "db").await.as_deref(),
        Some(web.as_str())
    );
    cp.shutdown().await.unwrap();
    let cp = start(&store).await;
    assert_eq!(cluster_ip(cp.api_addr, "web").await, Some(moved.clone()));

    // 5. A user-set clusterIP on web itself wins over the allocation; deleting web frees it.
    let with_ip = PLAIN.replace(
        "  ports: [{name: http",
        "  clusterIP: 198.19.0.77\n  ports: [{name: http",
    );
    std::fs::write(store.join("services.yaml"), with_ip).unwrap();
    wait_ip(cp.api_addr, "web", |ip| {
        ip.as_deref() == Some("198.19.0.77")
    })
    .await;
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains("default/web"),
        "a user-set address is no allocation: {text}"
    );
    cp.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&store);
}
