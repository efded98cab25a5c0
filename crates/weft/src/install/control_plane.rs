//! The control plane's objects in the cluster: its namespace, RBAC, identity Secret and trust
//! roots, Deployment, Services and the injector's MutatingWebhookConfiguration. Names and ports
//! are the contracts of `docs/kubernetes.md`.

use serde_json::{json, Value};

use super::crds::CRDS;
use super::Identity;

/// The control plane's namespace (`resource::Defaults.control_namespace`'s default).
pub const NAMESPACE: &str = "weft";
/// Its ServiceAccount, Deployment, ClusterRole(Binding) and Role(Binding) name.
pub const CONTROL: &str = "weft-control";
/// The Secret holding the identity issuer (mounted at [`IDENTITY_DIR`]).
pub const IDENTITY_SECRET: &str = "weft-identity-issuer";
/// Where the control-plane container reads the identity (`weft control --identity-dir`).
pub const IDENTITY_DIR: &str = "/var/run/weft/identity";
/// The ConfigMap of trust anchors proxies read, and its key (the injector's names).
pub use weft_control::inject::{TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY};
/// Destination, policy and identity gRPC (one port), where injected proxies dial.
pub const DST_SERVICE: &str = weft_control::inject::DESTINATION_SERVICE;
pub const GRPC_PORT: u16 = weft_control::inject::DESTINATION_PORT;
/// The HTTP API (`/ready`, `/live`, `/v1/...`).
pub const API_SERVICE: &str = "weft-api";
pub const API_PORT: u16 = 8085;
/// The injector webhook: Service port 443 to the container's 8443.
pub const INJECTOR_SERVICE: &str = weft_control::inject::webhook::SERVICE;
pub const WEBHOOK_PORT: u16 = 8443;
pub const WEBHOOK_CONFIG: &str = "weft-proxy-injector-webhook-config";
pub const WEBHOOK_NAME: &str = "weft-proxy-injector.weft.io";
/// Where Links and their credentials Secrets live, the only namespace whose Secrets the control
/// plane reads besides its own (`resource::kinds`: the rows' `watch_namespace`).
pub const LINK_NAMESPACE: &str = weft_control::resource::multicluster::DEFAULT_LINK_NAMESPACE;
/// The Role(Binding) in [`LINK_NAMESPACE`]: reading Links' credentials Secrets.
pub const LINK_READER: &str = "weft-control-links";
/// Namespaces labelled so are never injected (Linkerd's label); the control plane's is.
pub const WEBHOOKS_LABEL: &str = "config.linkerd.io/admission-webhooks";
/// Linkerd's injection annotation.
pub use weft_control::inject::INJECT_ANNOTATION;
/// Labels on every object `weft install` prints, so `kubectl apply --prune -l` finds them.
pub const CONTROL_PLANE_NS_LABEL: &str = "weft.io/control-plane-ns";
/// Selects the control-plane pods.
pub const COMPONENT_LABEL: &str = "weft.io/control-plane-component";
const COMPONENT: &str = "control";
/// The non-root user the control plane runs as (Linkerd's controllers' UID).
const RUN_AS_USER: u64 = 2103;

/// What differs between a plain and an HA install.
pub struct Options<'a> {
    pub ha: bool,
    pub image: &'a str,
}

pub fn labels() -> Value {
    json!({CONTROL_PLANE_NS_LABEL: NAMESPACE})
}

fn pod_labels() -> Value {
    json!({CONTROL_PLANE_NS_LABEL: NAMESPACE, COMPONENT_LABEL: COMPONENT})
}

fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": NAMESPACE, "labels": labels()})
}

fn link_meta(name: &str) -> Value {
    json!({"name": name, "namespace": LINK_NAMESPACE, "labels": labels()})
}

fn cluster_meta(name: &str) -> Value {
    json!({"name": name, "labels": labels()})
}

/// Every control-plane object, in the order `kubectl apply` should create them.
pub fn objects(identity: &Identity, opts: &Options<'_>) -> Vec<Value> {
    let mut out = vec![
        namespace(),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(CONTROL)}),
        cluster_role(),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": cluster_meta(CONTROL),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CONTROL},
            "subjects": [{"kind": "ServiceAccount", "name": CONTROL, "namespace": NAMESPACE}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(CONTROL),
            "rules": [{
                "apiGroups": [""],
                "resources": ["secrets"],
                "verbs": ["get", "list", "watch", "create", "update", "patch"],
            }, {
                // Each replica's ledger of issued leaves; the leader deletes spent ones.
                "apiGroups": [""],
                "resources": ["configmaps"],
                "verbs": ["get", "list", "watch", "create", "update", "delete"],
            }, {
                // Link credentials minted to linked clusters: a ServiceAccount `weft-link-NAME`
                // each, its token (TokenRequest); deleting it revokes them (docs/multicluster.md).
                "apiGroups": [""],
                "resources": ["serviceaccounts"],
                "verbs": ["create", "delete"],
            }, {
                "apiGroups": [""],
                "resources": ["serviceaccounts/token"],
                "verbs": ["create"],
            }],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(CONTROL),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CONTROL},
            "subjects": [{"kind": "ServiceAccount", "name": CONTROL, "namespace": NAMESPACE}],
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta(IDENTITY_SECRET),
            "type": "Opaque",
            "stringData": {
                weft_control::ca::TRUST_ANCHORS_FILE: identity.trust_anchors_pem,
                weft_control::ca::ISSUER_CERT_FILE: identity.issuer_cert_pem,
                weft_control::ca::ISSUER_KEY_FILE: identity.issuer_key_pem,
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(TRUST_ROOTS_CONFIGMAP),
            "data": {TRUST_ROOTS_KEY: identity.trust_anchors_pem},
        }),
        namespace_of(LINK_NAMESPACE),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": link_meta(LINK_READER),
            // Links' credentials: the store lists only their type (a field selector), but RBAC
            // cannot say so; reading no other namespace's Secrets is what this Role bounds.
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": link_meta(LINK_READER),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": LINK_READER},
            "subjects": [{"kind": "ServiceAccount", "name": CONTROL, "namespace": NAMESPACE}],
        }),
        deployment(opts),
    ];
    if opts.ha {
        out.push(json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": meta(CONTROL),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": pod_labels()}},
        }));
    }
    out.push(service(DST_SERVICE, "grpc", GRPC_PORT, GRPC_PORT));
    out.push(service(API_SERVICE, "http", API_PORT, API_PORT));
    out.push(service(INJECTOR_SERVICE, "https", 443, WEBHOOK_PORT));
    out.push(webhook(identity));
    out
}

fn namespace() -> Value {
    namespace_of(NAMESPACE)
}

/// A namespace of the control plane's, never injected.
pub(crate) fn namespace_of(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {CONTROL_PLANE_NS_LABEL: NAMESPACE, WEBHOOKS_LABEL: "disabled"},
            "annotations": {INJECT_ANNOTATION: "disabled"},
        },
    })
}

/// Read access to what the store watches, TokenReviews for proxy identity, Leases for what one
/// replica does, and status updates of the kinds whose status the leader writes. No
/// ServiceAccounts: a pod's identity is its `spec.serviceAccountName` (`docs/kubernetes.md`).
fn cluster_role() -> Value {
    let read = ["get", "list", "watch"];
    let mut rules = vec![
        json!({"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": read}),
        json!({"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read}),
        json!({"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}),
        json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch", "create", "update", "patch"]}),
    ];
    let mut groups: Vec<&str> = CRDS.iter().map(|c| c.group).collect();
    groups.dedup();
    for group in groups {
        let of_group = || CRDS.iter().filter(move |c| c.group == group);
        let resources: Vec<&str> = of_group().map(|c| c.plural).collect();
        rules.push(json!({"apiGroups": [group], "resources": resources, "verbs": read}));
        let status: Vec<String> = of_group()
            .filter(|c| c.writes_status())
            .map(|c| format!("{}/status", c.plural))
            .collect();
        if !status.is_empty() {
            rules.push(json!({"apiGroups": [group], "resources": status, "verbs": ["get", "update", "patch"]}));
        }
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": cluster_meta(CONTROL),
        "rules": rules,
    })
}

fn deployment(opts: &Options<'_>) -> Value {
    // Ready once the store is loaded; live while the API answers.
    let probe = |path: &str| json!({"httpGet": {"path": path, "port": API_PORT}, "periodSeconds": 10, "failureThreshold": 3});
    let mut liveness = probe("/live");
    liveness["initialDelaySeconds"] = json!(10);
    let mut container = json!({
        "name": "control",
        "image": opts.image,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "control",
            "--store", "kubernetes",
            "--identity-dir", IDENTITY_DIR,
            "--grpc-addr", format!("0.0.0.0:{GRPC_PORT}"),
            "--api-addr", format!("0.0.0.0:{API_PORT}"),
            "--webhook-addr", format!("0.0.0.0:{WEBHOOK_PORT}"),
        ],
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT},
            {"name": "http", "containerPort": API_PORT},
            {"name": "webhook", "containerPort": WEBHOOK_PORT},
        ],
        "readinessProbe": probe("/ready"),
        "livenessProbe": liveness,
        "volumeMounts": [{"name": "identity", "mountPath": IDENTITY_DIR, "readOnly": true}],
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    });
    let mut pod_spec = json!({
        "serviceAccountName": CONTROL,
        "containers": [],
        "volumes": [{"name": "identity", "secret": {"secretName": IDENTITY_SECRET}}],
    });
    let mut spec = json!({
        "replicas": 1,
        "selector": {"matchLabels": pod_labels()},
    });
    if opts.ha {
        // Linkerd's values-ha.yaml: 3 replicas, required anti-affinity per node and preferred
        // per zone, requests for CPU and memory and a memory limit.
        spec["replicas"] = json!(3);
        spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}});
        container["resources"] = json!({
            "requests": {"cpu": "100m", "memory": "50Mi"},
            "limits": {"memory": "250Mi"},
        });
        let term = |topology: &str| json!({"labelSelector": {"matchLabels": pod_labels()}, "topologyKey": topology});
        pod_spec["affinity"] = json!({"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [term("kubernetes.io/hostname")],
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": term("topology.kubernetes.io/zone")},
            ],
        }});
    }
    pod_spec["containers"] = json!([container]);
    spec["template"] = json!({"metadata": {"labels": pod_labels()}, "spec": pod_spec});
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(CONTROL),
        "spec": spec,
    })
}

fn service(name: &str, port_name: &str, port: u16, target: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name),
        "spec": {
            "type": "ClusterIP",
            "selector": pod_labels(),
            "ports": [{"name": port_name, "port": port, "targetPort": target, "protocol": "TCP"}],
        },
    })
}

/// The injector's webhook: the control plane serves it with a certificate from the mesh CA,
/// so the `caBundle` is the trust anchors.
fn webhook(identity: &Identity) -> Value {
    use base64::Engine as _;
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(identity.trust_anchors_pem);
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": cluster_meta(WEBHOOK_CONFIG),
        "webhooks": [{
            "name": WEBHOOK_NAME,
            "clientConfig": {
                "service": {"name": INJECTOR_SERVICE, "namespace": NAMESPACE, "path": weft_control::inject::webhook::PATH, "port": 443},
                "caBundle": ca_bundle,
            },
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "reinvocationPolicy": "Never",
            "timeoutSeconds": 10,
            "namespaceSelector": {"matchExpressions": [
                {"key": WEBHOOKS_LABEL, "operator": "NotIn", "values": ["disabled"]},
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]},
            ]},
            "objectSelector": {"matchExpressions": [
                {"key": WEBHOOKS_LABEL, "operator": "NotIn", "values": ["disabled"]},
            ]},
            "rules": [{
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_control::resource::{control_identity, Defaults};

    /// The names here are the ones the control plane derives its own identity from.
    #[test]
    fn names_agree_with_the_control_planes_defaults() {
        let d = Defaults::default();
        assert_eq!(NAMESPACE, d.control_namespace);
        assert_eq!(
            control_identity(&d),
            format!(
                "{CONTROL}.{NAMESPACE}.serviceaccount.identity.{NAMESPACE}.{}",
                d.trust_domain
            )
        );
    }
}
