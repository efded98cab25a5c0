//! The stores under one table (`tests/etcd_store.rs`): a directory, etcd, or the stand-in
//! Kubernetes API server, written to as each is (files, keys, objects through watches), and
//! what a control plane on any of them serves, put in a form the three can be compared by.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::{json, Value};
use weft_control::store::Location;

use super::etcd::Etcd;
use super::http_json;
use super::kube_api::FakeApi;
use super::kube_store::{collection, kind_of};

/// One store under test: where its "files" live and how to name them.
pub enum Backend {
    Dir(PathBuf),
    Etcd {
        client: weft_control::etcd::Client,
        prefix: String,
    },
    /// The stand-in API server: each file's documents are objects, kept by file as
    /// (collection, namespace, name, the store's name for it).
    Kube {
        api: FakeApi,
        kubeconfig: PathBuf,
        files: Mutex<HashMap<String, Vec<KubeObject>>>,
        /// The cluster IP given to each Service (namespace/name), kept as the API server does.
        cluster_ips: Mutex<HashMap<String, String>>,
    },
}

/// (collection, namespace, name, `Kind/ns/name` as the Kubernetes store names the object).
pub type KubeObject = (String, String, String, String);

/// A document as the API server stores it once created: the defaults it fills in for a
/// Service (type, cluster IP, each port's protocol and target port).
fn as_stored(mut doc: Value, cluster_ip: &str) -> Value {
    if doc["kind"] == "Service" && doc["apiVersion"] == "v1" {
        let spec = &mut doc["spec"];
        spec["type"] = json!("ClusterIP");
        spec["clusterIP"] = json!(cluster_ip);
        spec["clusterIPs"] = json!([cluster_ip]);
        for port in spec["ports"].as_array_mut().into_iter().flatten() {
            port["protocol"] = json!("TCP");
            if port["targetPort"].is_null() {
                port["targetPort"] = port["port"].clone();
            }
        }
    }
    doc
}

impl Backend {
    pub fn location(&self, etcd: &Etcd) -> Location {
        match self {
            Backend::Dir(d) => Location::Dir(d.clone()),
            Backend::Etcd { prefix, .. } => etcd.store(prefix.trim_start_matches('/')),
            Backend::Kube { kubeconfig, .. } => Location::Kubernetes(Some(kubeconfig.clone())),
        }
    }

    /// Whether this store can hold `text` at all (the API server takes objects, not text: a
    /// text that is not YAML never reaches the Kubernetes store).
    pub fn holds(&self, text: Option<&str>) -> bool {
        let Backend::Kube { .. } = self else {
            return true;
        };
        text.is_none_or(|t| {
            yaml_serde::Deserializer::from_str(t).all(|d| {
                use serde::Deserialize;
                Value::deserialize(d).is_ok()
            })
        })
    }

    /// Writes (or with `None` removes) one resource file / key.
    pub async fn write(&self, file: &str, text: Option<&str>) {
        match (self, text) {
            (
                Backend::Kube {
                    api,
                    files,
                    cluster_ips,
                    ..
                },
                text,
            ) => {
                use serde::Deserialize;
                let docs: Vec<Value> = text
                    .into_iter()
                    .flat_map(yaml_serde::Deserializer::from_str)
                    .map(|d| Value::deserialize(d).expect("YAML"))
                    .collect();
                let mut files = files.lock().unwrap();
                let held = files.remove(file).unwrap_or_default();
                let mut now = Vec::new();
                for doc in docs {
                    let kind = kind_of(
                        doc["apiVersion"].as_str().unwrap(),
                        doc["kind"].as_str().unwrap(),
                    );
                    let (ns, name) = (
                        doc["metadata"]["namespace"].as_str().unwrap().to_string(),
                        doc["metadata"]["name"].as_str().unwrap().to_string(),
                    );
                    let path = collection(kind);
                    let ip = {
                        let mut ips = cluster_ips.lock().unwrap();
                        let next = format!("10.96.0.{}", 10 + ips.len());
                        ips.entry(format!("{ns}/{name}")).or_insert(next).clone()
                    };
                    api.apply(&path, as_stored(doc, &ip));
                    now.push((path, ns.clone(), name.clone(), kind.text_name(&ns, &name)));
                }
                for (path, ns, name, _) in &held {
                    if !now.iter().any(|o| (&o.0, &o.1, &o.2) == (path, ns, name)) {
                        api.delete(path, ns, name);
                    }
                }
                files.insert(file.to_string(), now);
            }
            (Backend::Dir(d), Some(t)) => std::fs::write(d.join(file), t).expect("write"),
            (Backend::Dir(d), None) => std::fs::remove_file(d.join(file)).expect("remove"),
            (Backend::Etcd { client, prefix }, text) => {
                let key = format!("{prefix}/resources/{file}");
                match text {
                    Some(t) => client.put(key.as_bytes(), t.as_bytes()).await.map(drop),
                    None => client.delete(key.as_bytes()).await.map(drop),
                }
                .expect("etcd write");
            }
        }
    }

    /// A status or error text with this store's names made neutral: a resource file or key
    /// becomes `FILE`, a registration file or key `REGISTERED/NS/NAME`.
    pub fn normalise(&self, text: &str) -> String {
        match self {
            Backend::Dir(_) => replace_each(text, ".registered/", |rest| {
                // `default.web-2.yaml` -> `REGISTERED/default/web-2`
                let end = rest.find(".yaml").unwrap_or(rest.len());
                let (ns, name) = rest[..end].split_once('.').unwrap_or(("", &rest[..end]));
                (format!("REGISTERED/{ns}/{name}"), end + ".yaml".len())
            }),
            Backend::Etcd { prefix, .. } => text
                .replace(&format!("{prefix}/registered/"), "REGISTERED/")
                .replace(&format!("{prefix}/resources/"), ""),
            // Objects are named by kind, namespace and name: here, by the file they came from.
            Backend::Kube { files, .. } => {
                let files = files.lock().unwrap();
                let mut text = text.to_string();
                for (file, objects) in files.iter() {
                    for (_, _, _, name) in objects {
                        text = text.replace(&format!("\"{name}: "), &format!("\"{file}: "));
                    }
                }
                text
            }
        }
    }
}

/// Replaces every `marker<rest>` in `text` by what `f(rest)` returns (text, bytes of rest used).
fn replace_each(text: &str, marker: &str, f: impl Fn(&str) -> (String, usize)) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(marker) {
        out.push_str(&rest[..i]);
        let after = &rest[i + marker.len()..];
        let (replacement, used) = f(after);
        out.push_str(&replacement);
        rest = &after[used.min(after.len())..];
    }
    out.push_str(rest);
    out
}

/// What the control plane serves (see [`served_once`]) once the index has caught up with the
/// store: the store's status (`GET /v1/store`) changes before the index task has recomputed
/// the answers, so two reads 200 ms apart must agree (nothing changes the store meanwhile).
pub async fn served(cp: &weft_control::Running) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut last = served_once(cp).await;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let now = served_once(cp).await;
        if now == last || tokio::time::Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// What the control plane serves of web and its policy, besides `/v1/store`: Destination.Get
/// and OutboundPolicies of `web:80`, InboundServerPolicies of web-1's port, and the routes and
/// Servers as `GET /v1/resources` shows them (spec and status: the API server adds metadata).
async fn served_once(cp: &weft_control::Running) -> String {
    use linkerd2_proxy_api::inbound::{
        inbound_server_policies_client::InboundServerPoliciesClient, PortSpec,
    };
    use linkerd2_proxy_api::outbound::{
        outbound_policies_client::OutboundPoliciesClient, traffic_spec, TrafficSpec,
    };
    let grpc = format!("http://{}", cp.grpc_addr);
    let destination = match super::get(cp.grpc_addr, "web.default.svc.cluster.local:80").await {
        Ok(mut stream) => format!("{:?}", super::next(&mut stream).await),
        Err(e) => format!("{:?}", e.code()),
    };
    let mut outbound = OutboundPoliciesClient::connect(grpc.clone()).await.unwrap();
    let spec = TrafficSpec {
        source_workload: "default:client".into(),
        target: Some(traffic_spec::Target::Authority(
            "web.default.svc.cluster.local:80".into(),
        )),
    };
    let outbound = match outbound.get(spec).await {
        Ok(policy) => format!("{:?}", policy.into_inner()),
        Err(e) => format!("{:?}", e.code()),
    };
    let mut inbound = InboundServerPoliciesClient::connect(grpc).await.unwrap();
    let port = PortSpec {
        workload: "default:web-1".into(),
        port: 18080,
    };
    let inbound = match inbound.get_port(port).await {
        Ok(server) => format!("{:?}", server.into_inner()),
        Err(e) => format!("{:?}", e.code()),
    };
    let mut resources = Vec::new();
    for kind in ["httproutes", "servers"] {
        let path = format!("/v1/resources/{kind}");
        let (status, docs) = http_json(cp.api_addr, "GET", &path, "").await;
        assert_eq!(status, 200, "{path}: {docs}");
        for doc in docs.as_array().unwrap() {
            resources.push(json!([doc["metadata"]["name"], doc["spec"], doc["status"]]));
        }
    }
    let text = format!(
        "{destination}\n{outbound}\n{inbound}\n{}",
        Value::from(resources)
    );
    sorted_maps(&text)
}

/// `text` (protos' `Debug`) with each map of strings (`{"k": "v", ...}`, a `HashMap` of labels)
/// in key order, so that equal answers print equally.
fn sorted_maps(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("{\"") {
        out.push_str(&rest[..i + 1]);
        let after = &rest[i + 1..];
        let entries: Option<Vec<&str>> = after.find('}').map(|j| after[..j].split(", ").collect());
        match entries {
            Some(mut kvs)
                if kvs
                    .iter()
                    .all(|kv| kv.starts_with('"') && kv.contains("\": \"")) =>
            {
                let len = kvs.iter().map(|kv| kv.len() + 2).sum::<usize>() - 2;
                kvs.sort();
                out.push_str(&kvs.join(", "));
                rest = &after[len..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}
