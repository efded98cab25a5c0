//! `weft multicluster install` and `uninstall`: the multicluster gateway's objects, as Linkerd's
//! `linkerd multicluster install` prints them (its `linkerd-gateway`): a ServiceAccount, a
//! Deployment whose pod is a `weft-proxy` in gateway mode beside a pause container, and a
//! Service (LoadBalancer by default) with the ports `mc-gateway` and `mc-probe`.
//!
//! The pod template is printed already injected (by `weft_control::inject`, as `weft inject`
//! does, with `config.linkerd.io/enable-gateway: "true"`, which gives the proxy the variables of
//! `weft run --multicluster-gateway`), since the namespace `weft-multicluster` is never injected
//! by the webhook. The trust anchors are given inline (there is no trust-roots ConfigMap in
//! that namespace). No remote-access RBAC: a linked cluster's credential is minted by this
//! cluster's control plane (`POST /v1/multicluster/credentials`), whose RBAC `weft install`
//! grants.

use serde_json::{json, Value};
use weft_control::inject::{
    Images, DEFAULT_PROXY_UID, ENABLE_GATEWAY_ANNOTATION, INBOUND_PORT, INJECT_ANNOTATION,
};
use weft_control::resource::authz::DEFAULT_INBOUND_POLICY_ANNOTATION;
use weft_control::resource::multicluster::{
    DEFAULT_GATEWAY_PORT, DEFAULT_LINK_NAMESPACE, DEFAULT_PROBE_PORT, GATEWAY_COMPONENT_LABEL,
    GATEWAY_EXTENSION_LABEL, GATEWAY_NAME, GATEWAY_PORT_NAME, PROBE_PORT_NAME,
};

use super::control_plane;

/// The gateway's app container: it only has to exist (Linkerd's gateway runs a pause image too).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// The proxy's admin port, where `/ready` answers (the probe's target).
const ADMIN_PORT: u16 = weft_control::inject::ADMIN_PORT;

/// What `weft multicluster install` prints.
pub struct Options<'a> {
    /// Print the gateway (Linkerd's `--gateway`); without it, only the namespace if it is not
    /// `weft install`'s.
    pub gateway: bool,
    /// The Service's ports (the pod's stay 4143 and 4191).
    pub gateway_port: u16,
    pub probe_port: u16,
    pub service_type: &'a str,
    pub namespace: &'a str,
    pub images: Images,
    /// The trust anchors (PEM) the gateway's proxy verifies peers with.
    pub trust_anchors: &'a str,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            gateway: true,
            gateway_port: DEFAULT_GATEWAY_PORT,
            probe_port: DEFAULT_PROBE_PORT,
            service_type: "LoadBalancer",
            namespace: DEFAULT_LINK_NAMESPACE,
            images: Images::default(),
            trust_anchors: "",
        }
    }
}

/// Linkerd's multicluster label, on every object.
fn labels() -> Value {
    let (k, v) = GATEWAY_EXTENSION_LABEL;
    json!({ k: v })
}

/// The gateway pod's labels: its app, and the two the export API finds gateways by.
fn pod_labels() -> Value {
    let (ek, ev) = GATEWAY_EXTENSION_LABEL;
    let (ck, cv) = GATEWAY_COMPONENT_LABEL;
    json!({"app": GATEWAY_NAME, ek: ev, ck: cv})
}

fn meta(name: &str, namespace: &str) -> Value {
    json!({"name": name, "namespace": namespace, "labels": labels()})
}

/// The objects, in the order `kubectl apply` should create them. `Err`: the pod template could
/// not be injected (a bug, or bad anchors).
pub fn objects(opts: &Options<'_>) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    if opts.namespace != DEFAULT_LINK_NAMESPACE {
        // `weft install` creates weft-multicluster; another namespace is created here, never
        // injected either (the pod comes injected).
        out.push(control_plane::namespace_of(opts.namespace));
    }
    if !opts.gateway {
        return Ok(out);
    }
    let ns = opts.namespace;
    out.push(
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(GATEWAY_NAME, ns)}),
    );
    out.push(deployment(opts)?);
    out.push(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(GATEWAY_NAME, ns),
        "spec": {
            "type": opts.service_type,
            "selector": {"app": GATEWAY_NAME},
            "ports": [
                {"name": GATEWAY_PORT_NAME, "port": opts.gateway_port, "protocol": "TCP",
                 "targetPort": INBOUND_PORT},
                {"name": PROBE_PORT_NAME, "port": opts.probe_port, "protocol": "TCP",
                 "targetPort": ADMIN_PORT},
            ],
        },
    }));
    Ok(out)
}

/// The objects `uninstall` prints for `kubectl delete -f -`: the same kinds and names (the
/// namespace `weft install` made is left alone).
pub fn uninstall_objects(namespace: &str) -> Vec<Value> {
    let mut out = vec![
        json!({"apiVersion": "v1", "kind": "Service", "metadata": meta(GATEWAY_NAME, namespace)}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(GATEWAY_NAME, namespace)}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(GATEWAY_NAME, namespace)}),
    ];
    if namespace != DEFAULT_LINK_NAMESPACE {
        out.push(control_plane::namespace_of(namespace));
    }
    out
}

fn deployment(opts: &Options<'_>) -> anyhow::Result<Value> {
    let mut template = json!({
        "metadata": {
            "labels": pod_labels(),
            "annotations": {
                INJECT_ANNOTATION: "enabled",
                ENABLE_GATEWAY_ANNOTATION: "true",
                // Only meshed peers (east's proxies, with mTLS) reach what it forwards.
                DEFAULT_INBOUND_POLICY_ANNOTATION: "all-authenticated",
            },
        },
        // The pod declares no `mc-gateway`/`mc-probe` ports: its proxy's inbound (4143) and
        // admin (4191) ports are the defaults the export API reads when they are not named.
        "spec": {
            "serviceAccountName": GATEWAY_NAME,
            "containers": [{
                "name": "pause",
                "image": PAUSE_IMAGE,
                "securityContext": {
                    "runAsUser": DEFAULT_PROXY_UID + 1,
                    "runAsNonRoot": true,
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    });
    let mut injector = crate::inject::injector(opts.images.clone(), false);
    injector.trust_anchors = Some(opts.trust_anchors.to_string());
    injector
        .inject(&mut template, &Default::default())
        .map_err(|e| anyhow::anyhow!("injecting the gateway's proxy: {e}"))?;
    Ok(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(GATEWAY_NAME, opts.namespace),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": GATEWAY_NAME}},
            "template": template,
        },
    }))
}
