//! What the multicluster tests share: west's store (exports and its gateway), its link tokens,
//! and a gateway's probe port.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const GATEWAY_ID: &str = "gateway.weft-multicluster.serviceaccount.identity.weft.cluster.local";

fn ready(r: bool) -> &'static str {
    if r {
        "status: {conditions: [{type: Ready, status: \"True\"}]}"
    } else {
        "status: {conditions: [{type: Ready, status: \"False\"}]}"
    }
}

/// West's store: `web` exported through the gateway, `api` for remote discovery (api-1 ready or
/// not, api-2 ready or not), `db` a federated member, `plain` not exported, and the gateway.
pub fn west_store(dir: &Path, web_exported: bool, api1: bool, api2: bool) {
    let web_labels = if web_exported {
        "{mirror.linkerd.io/exported: \"true\"}"
    } else {
        "{}"
    };
    let text = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web, labels: {web_labels}}}
spec: {{selector: {{app: web}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: api, labels: {{mirror.linkerd.io/exported: remote-discovery}}, annotations: {{config.linkerd.io/opaque-ports: "9000"}}}}
spec: {{selector: {{app: api}}, ports: [{{port: 80, targetPort: 8080}}, {{port: 9000}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: db, labels: {{mirror.linkerd.io/federated: member}}}}
spec: {{selector: {{app: db}}, ports: [{{port: 5432}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: plain}}
spec: {{selector: {{app: web}}, ports: [{{port: 80}}]}}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {{name: web-1, labels: {{app: web}}}}
spec: {{workloadIPs: [{{ip: 10.1.0.11}}]}}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {{name: api-1, labels: {{app: api}}, annotations: {{config.linkerd.io/inbound-port: "4143"}}}}
spec: {{workloadIPs: [{{ip: 10.1.0.21}}]}}
{}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {{name: api-2, labels: {{app: api}}}}
spec: {{workloadIPs: [{{ip: 10.1.0.22}}]}}
{}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {{name: db-1, labels: {{app: db}}}}
spec: {{workloadIPs: [{{ip: 10.1.0.31}}]}}
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {{name: gateway, namespace: weft-multicluster, labels: {{linkerd.io/extension: multicluster, component: gateway}}}}
spec: {{workloadIPs: [{{ip: 10.1.0.1}}], ports: [{{name: mc-gateway, port: 4143}}, {{name: mc-probe, port: 4191}}]}}
"#,
        ready(api1),
        ready(api2)
    );
    // Written whole then renamed: the poller never reads half a file.
    let tmp = dir.join(".west.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("west.yaml")).unwrap();
}

pub async fn mint(west: SocketAddr, name: &str) -> Value {
    let (status, v) = super::http_json(
        west,
        "POST",
        "/v1/multicluster/credentials",
        &json!({ "name": name }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v
}

/// A gateway's probe port: `/ready` answers 200 while `alive`, else 503.
pub async fn probe_server(alive: Arc<AtomicBool>) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let alive = alive.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let status = if alive.load(Ordering::SeqCst) {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let rsp =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = s.write_all(rsp.as_bytes()).await;
            });
        }
    });
    addr
}

/// East's Destination answer for `web-west` (gateway mode), once it has endpoints, checked for
/// what every store must answer: west's gateway (`127.0.0.1:4143` in these tests) as the one
/// endpoint, with the remote authority, opaque transport on the gateway's port, the gateway's
/// identity and the mirror's metric labels. The stream is returned for what follows.
pub async fn gateway_mirror_answers(
    east: SocketAddr,
) -> (
    tonic::Streaming<linkerd2_proxy_api::destination::Update>,
    linkerd2_proxy_api::destination::WeightedAddrSet,
) {
    use linkerd2_proxy_api::destination::update::Update as U;
    let mut web = super::get(east, "web-west.default.svc.cluster.local:80")
        .await
        .expect("Destination.Get web-west");
    let first = loop {
        match super::next(&mut web).await {
            U::Add(set) => break set,
            U::NoEndpoints(_) | U::Remove(_) => continue,
        }
    };
    assert_eq!(first.addrs.len(), 1, "{first:?}");
    let a = &first.addrs[0];
    assert_eq!(
        SocketAddr::try_from(a.addr.expect("addr"))
            .expect("ip")
            .to_string(),
        "127.0.0.1:4143"
    );
    assert_eq!(
        a.authority_override
            .as_ref()
            .expect("override")
            .authority_override,
        "web.default.svc.cluster.local:80"
    );
    let hint = a.protocol_hint.as_ref().expect("hint");
    assert_eq!(
        hint.opaque_transport
            .as_ref()
            .expect("opaque transport")
            .inbound_port,
        4143
    );
    let id = a
        .tls_identity
        .as_ref()
        .and_then(|t| t.server_name.as_ref())
        .expect("identity");
    assert_eq!(id.name, GATEWAY_ID);
    // Metric labels (the proxy's `dst_*`): the mirror Service, and the linked cluster.
    assert_eq!(first.metric_labels["service"], "web-west");
    assert_eq!(a.metric_labels["target_cluster_name"], "west");
    (web, first)
}
