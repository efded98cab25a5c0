//! What the Kubernetes store keeps of an object, and the document it becomes.
//!
//! Each watched object is cut down as it arrives ([`project`]) to what its document needs, so
//! memory stays bounded by the index's needs, not by the objects' size (managed fields,
//! last-applied annotations, container specs and statuses are dropped at once). The store then
//! renders documents ([`Rendered`]) of the same shape the file store reads, and the same
//! validation checks them:
//! - a Service → a `Service` of its TCP ports (selector-less and `ExternalName` Services are
//!   not served: their endpoints are not pods; an `appProtocol` Weft does not know is dropped);
//! - a Namespace → a `Namespace` (its annotations: the default inbound policy);
//! - a Pod with an IP, not finished → an `ExternalWorkload`: its IPs, labels, container ports,
//!   identity from its ServiceAccount (`<sa>.<ns>.serviceaccount.identity.<control-ns>.<td>`),
//!   and a `Ready` condition from the EndpointSlices that list it (serving and not terminating
//!   → `True`; listed but not serving, or terminating → `False`; listed nowhere → the pod's
//!   own `Ready` condition);
//! - a custom resource → itself, without its `status` (except an ExternalWorkload's).
//!
//! `config.linkerd.io/*` and `config.alpha.linkerd.io/*` annotations of a Namespace apply to its
//! Services and Pods that do not set them themselves, as in Linkerd. A pod's opaque ports may
//! name its container ports (Linkerd's reading): the document carries their numbers; what an
//! inherited annotation names that an object cannot read is left out for that object.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::DynamicObject;
use serde_json::{json, Map, Value};

use super::{Kind, Shape};
use crate::resource::{
    parse_port_list, Defaults, APP_PROTOCOLS, OPAQUE_PORTS_ANNOTATION, WORKLOAD_API_VERSION,
};

/// What is kept of one object.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// A Service, a Namespace or a custom resource: its document, already trimmed.
    Document(Value),
    Pod(Pod),
    /// An EndpointSlice: the pods it lists, with their conditions.
    Slice(Vec<SliceEndpoint>),
    /// An object that gives no document (a selector-less Service, a finished pod).
    Nothing,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pod {
    pub labels: Map<String, Value>,
    /// Only the annotations Weft reads.
    pub annotations: Map<String, Value>,
    pub service_account: String,
    pub ips: Vec<String>,
    /// (name, containerPort) of every container.
    pub ports: Vec<(Option<String>, u16)>,
    /// The pod's own `Ready` condition.
    pub ready: bool,
}

/// One endpoint of an EndpointSlice that names a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub namespace: String,
    pub pod: String,
    /// The pod's readiness: `conditions.serving`, which the endpoint-slice controller sets
    /// from the pod alone — `ready` is forced true in the slices of a Service with
    /// `publishNotReadyAddresses`, and a pod is one workload for every Service. Without
    /// `serving` (older writers), `ready`; neither: ready, as Kubernetes says to read them.
    /// (Terminating endpoints are left out by [`SliceEndpoint::terminating`].)
    pub ready: bool,
    pub terminating: bool,
}

/// Whether Weft reads this annotation (config, policy, retry, timeout, balancer, inject).
fn kept_annotation(key: &str) -> bool {
    key.contains("linkerd.io/")
}

/// Annotations a Namespace passes down to its Services and Pods.
fn inherited_annotation(key: &str) -> bool {
    key.starts_with("config.linkerd.io/") || key.starts_with("config.alpha.linkerd.io/")
}

fn annotations(obj: &DynamicObject) -> Map<String, Value> {
    obj.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| kept_annotation(k))
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect()
}

fn labels(obj: &DynamicObject) -> Map<String, Value> {
    obj.metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect()
}

/// Cuts an object of `kind` down to what the store needs.
pub fn project(kind: &Kind, obj: &DynamicObject) -> Object {
    let data = &obj.data;
    match kind.shape {
        Shape::Namespace => Object::Document(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": obj.metadata.name, "annotations": annotations(obj)},
        })),
        Shape::Service => service(obj),
        Shape::Pod => pod(obj),
        Shape::EndpointSlice => Object::Slice(
            data.get("endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    let target = e.get("targetRef")?;
                    if target.get("kind").and_then(Value::as_str) != Some("Pod") {
                        return None;
                    }
                    let cond = |c: &str| e.pointer(&format!("/conditions/{c}"))?.as_bool();
                    Some(SliceEndpoint {
                        namespace: target
                            .get("namespace")
                            .and_then(Value::as_str)
                            .or(obj.metadata.namespace.as_deref())?
                            .to_string(),
                        pod: target.get("name")?.as_str()?.to_string(),
                        ready: cond("serving").or(cond("ready")).unwrap_or(true),
                        terminating: cond("terminating").unwrap_or(false),
                    })
                })
                .collect(),
        ),
        Shape::Custom => {
            let mut doc = data.clone();
            if let Some(m) = doc.as_object_mut() {
                if kind.kind != "ExternalWorkload" {
                    m.remove("status");
                }
                // Items of a list carry no kind; the version asked for is the one answered.
                m.insert("apiVersion".into(), json!(kind.api_resource().api_version));
                m.insert("kind".into(), json!(kind.kind));
                let mut meta =
                    json!({"name": obj.metadata.name, "namespace": obj.metadata.namespace});
                let labels = labels(obj);
                if !labels.is_empty() {
                    meta["labels"] = Value::Object(labels);
                }
                let mut notes: Map<String, Value> = obj
                    .metadata
                    .annotations
                    .iter()
                    .flatten()
                    .filter(|(k, _)| *k != "kubectl.kubernetes.io/last-applied-configuration")
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                if !notes.is_empty() {
                    meta["annotations"] = Value::Object(std::mem::take(&mut notes));
                }
                if let Some(t) = &obj.metadata.creation_timestamp {
                    meta["creationTimestamp"] = json!(t.0);
                }
                m.insert("metadata".into(), meta);
            }
            Object::Document(doc)
        }
    }
}

/// Whether a Service or container port is TCP (the default when `protocol` is absent).
fn tcp(port: &Value) -> bool {
    port.get("protocol")
        .and_then(Value::as_str)
        .is_none_or(|p| p == "TCP")
}

fn service(obj: &DynamicObject) -> Object {
    let spec = obj.data.get("spec").cloned().unwrap_or(Value::Null);
    let selector = spec
        .get("selector")
        .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()));
    let external = spec.get("type").and_then(Value::as_str) == Some("ExternalName");
    let Some(selector) = selector.filter(|_| !external) else {
        return Object::Nothing;
    };
    // Only TCP ports are proxied (a UDP twin of a TCP port, as kube-dns has, is no duplicate);
    // an `appProtocol` Weft does not act on (Kubernetes allows any) is left out, not refused.
    let ports: Vec<Value> = spec
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| tcp(p))
        .map(|p| {
            let mut port = Map::new();
            for field in ["name", "port", "targetPort", "appProtocol"] {
                if let Some(v) = p.get(field).filter(|v| !v.is_null()) {
                    port.insert(field.into(), v.clone());
                }
            }
            // The API server fills a missing targetPort in with the port: the same as none
            // (a bad port is then reported once, as the file store reports it).
            if port.get("targetPort").is_some() && port.get("targetPort") == port.get("port") {
                port.remove("targetPort");
            }
            if let Some(proto) = port.get("appProtocol").and_then(Value::as_str) {
                if !APP_PROTOCOLS.contains(&proto) {
                    port.remove("appProtocol");
                }
            }
            Value::Object(port)
        })
        .collect();
    if ports.is_empty() {
        return Object::Nothing;
    }
    let mut out_spec = json!({"selector": selector, "ports": ports});
    if let Some(ip) = spec.get("clusterIP").filter(|v| !v.is_null()) {
        out_spec["clusterIP"] = ip.clone();
    }
    let mut doc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": obj.metadata.name,
            "namespace": obj.metadata.namespace,
            "annotations": annotations(obj),
        },
        "spec": out_spec,
    });
    // Labels say what a west exports (`mirror.linkerd.io/exported`, `.../federated`).
    let labels = labels(obj);
    if !labels.is_empty() {
        doc["metadata"]["labels"] = Value::Object(labels);
    }
    Object::Document(doc)
}

fn pod(obj: &DynamicObject) -> Object {
    let data = &obj.data;
    let phase = data.pointer("/status/phase").and_then(Value::as_str);
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Object::Nothing;
    }
    let mut ips: Vec<String> = data
        .pointer("/status/podIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|ip| Some(ip.get("ip")?.as_str()?.to_string()))
        .collect();
    if ips.is_empty() {
        if let Some(ip) = data.pointer("/status/podIP").and_then(Value::as_str) {
            ips.push(ip.to_string());
        }
    }
    if ips.is_empty() {
        return Object::Nothing;
    }
    let containers = ["containers", "initContainers"]
        .into_iter()
        .filter_map(|c| data.pointer(&format!("/spec/{c}"))?.as_array())
        .flatten();
    let mut ports = Vec::new();
    for c in containers {
        for p in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| tcp(p))
        {
            let Some(port) = p.get("containerPort").and_then(Value::as_u64) else {
                continue;
            };
            let name = p.get("name").and_then(Value::as_str).map(str::to_string);
            if let Ok(port) = u16::try_from(port) {
                ports.push((name, port));
            }
        }
    }
    let ready = data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c.get("type") == Some(&json!("Ready")) && c.get("status") == Some(&json!("True")));
    Object::Pod(Pod {
        labels: labels(obj),
        annotations: annotations(obj),
        service_account: data
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string(),
        ips,
        ports,
        ready,
    })
}

/// An opaque-ports annotation with the names `named` knows replaced by their port numbers, as
/// Linkerd reads a pod's (`http,9000-9001` → `8080,9000-9001`; a name first, since `123-456`
/// may be one). Any other entry stays, so a bad one of the object's own annotation is reported
/// naming it — unless the annotation is `inherited` from the Namespace: then an entry this
/// object cannot read (a port name it does not have) is left out, as Linkerd skips it, and does
/// not make every object of the namespace without that port invalid.
fn port_numbers(annotation: &str, named: impl Fn(&str) -> Option<u16>, inherited: bool) -> String {
    annotation
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .filter_map(|part| match named(part) {
            Some(number) => Some(number.to_string()),
            None if inherited && parse_port_list(part).is_err() => None,
            None => Some(part.to_string()),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Readiness of pods as the EndpointSlices say, by (namespace, pod).
#[derive(Default)]
pub struct Readiness(BTreeMap<(String, String), (bool, bool)>);

impl Readiness {
    /// Folds every slice's endpoints: a pod is ready when any slice lists it ready and not
    /// terminating.
    pub fn of<'a>(slices: impl Iterator<Item = &'a [SliceEndpoint]>) -> Readiness {
        let mut out = BTreeMap::new();
        for e in slices.flatten() {
            let entry = out
                .entry((e.namespace.clone(), e.pod.clone()))
                .or_insert((false, false));
            entry.0 |= e.ready && !e.terminating;
            entry.1 |= e.terminating;
        }
        Readiness(out)
    }
}

/// Renders the documents of the objects kept.
pub struct Rendered<'a> {
    pub defaults: &'a Defaults,
    /// Each namespace's inherited annotations.
    pub namespaces: BTreeMap<String, Map<String, Value>>,
    pub readiness: Readiness,
}

impl<'a> Rendered<'a> {
    /// The namespace annotations that `namespace`'s objects inherit, from its document.
    pub fn inherited(namespace_doc: &Value) -> Map<String, Value> {
        namespace_doc
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(k, _)| inherited_annotation(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn inherit(&self, namespace: &str, annotations: &mut Map<String, Value>) {
        for (k, v) in self.namespaces.get(namespace).into_iter().flatten() {
            annotations.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }

    /// The document of one object (`None`: it gives none).
    pub fn document(
        &self,
        shape: Shape,
        namespace: &str,
        name: &str,
        obj: &Object,
    ) -> Option<Value> {
        match obj {
            Object::Document(doc) if shape == Shape::Service => {
                let mut doc = doc.clone();
                if let Some(a) = doc
                    .pointer_mut("/metadata/annotations")
                    .and_then(Value::as_object_mut)
                {
                    let own = a.contains_key(OPAQUE_PORTS_ANNOTATION);
                    self.inherit(namespace, a);
                    if let Some(Value::String(ports)) = a.get_mut(OPAQUE_PORTS_ANNOTATION) {
                        if !own {
                            // A Service's opaque ports are numbers: the names in its
                            // Namespace's annotation are its pods'.
                            *ports = port_numbers(ports, |_| None, true);
                        }
                    }
                }
                Some(doc)
            }
            // What it names for its pods is theirs to read: its own document keeps the numbers.
            Object::Document(doc) if shape == Shape::Namespace => {
                let mut doc = doc.clone();
                let ports = doc.pointer_mut(&format!(
                    "/metadata/annotations/{}",
                    OPAQUE_PORTS_ANNOTATION.replace('/', "~1")
                ));
                if let Some(Value::String(ports)) = ports {
                    *ports = port_numbers(ports, |_| None, true);
                }
                Some(doc)
            }
            Object::Document(doc) => Some(doc.clone()),
            Object::Pod(pod) => Some(self.workload(namespace, name, pod)),
            Object::Slice(_) | Object::Nothing => None,
        }
    }

    fn workload(&self, namespace: &str, name: &str, pod: &Pod) -> Value {
        let d = self.defaults;
        let sa = &pod.service_account;
        let mut annotations = pod.annotations.clone();
        let own = annotations.contains_key(OPAQUE_PORTS_ANNOTATION);
        self.inherit(namespace, &mut annotations);
        if let Some(Value::String(ports)) = annotations.get_mut(OPAQUE_PORTS_ANNOTATION) {
            let named = |name: &str| {
                let port = pod.ports.iter().find(|(n, _)| n.as_deref() == Some(name));
                port.map(|(_, number)| *number)
            };
            *ports = port_numbers(ports, named, !own);
        }
        let (ready, reason) = match self
            .readiness
            .0
            .get(&(namespace.to_string(), name.to_string()))
        {
            Some((true, _)) => (true, "EndpointReady"),
            Some((false, true)) => (false, "Terminating"),
            Some((false, false)) => (false, "EndpointNotReady"),
            None if pod.ready => (true, "PodReady"),
            None => (false, "PodNotReady"),
        };
        let mut seen = BTreeSet::new();
        let ports: Vec<Value> = pod
            .ports
            .iter()
            .filter(|(_, port)| seen.insert(*port))
            .map(|(n, port)| match n {
                Some(n) => json!({"name": n, "port": port}),
                None => json!({"port": port}),
            })
            .collect();
        json!({
            "apiVersion": WORKLOAD_API_VERSION,
            "kind": "ExternalWorkload",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": pod.labels,
                "annotations": annotations,
            },
            "spec": {
                "meshTLS": {
                    "identity": format!("spiffe://{}/ns/{namespace}/sa/{sa}", d.trust_domain),
                    "serverName": format!(
                        "{sa}.{namespace}.serviceaccount.identity.{}.{}",
                        d.control_namespace, d.trust_domain
                    ),
                },
                "workloadIPs": pod.ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
                "ports": ports,
            },
            "status": {"conditions": [{
                "type": "Ready",
                "status": if ready { "True" } else { "False" },
                "reason": reason,
            }]},
        })
    }
}

#[cfg(test)]
#[path = "objects_tests.rs"]
mod tests;
