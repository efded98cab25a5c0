//! Sidecar injection on Kubernetes: pure functions from a pod template (or a Pod: both are
//! `{metadata, spec}`) and its Namespace's annotations to the injected template, and back. The
//! admission webhook (`weft control --webhook-addr`, [`webhook`]) and `weft inject`/`uninject`
//! share them.
//!
//! What goes in the pod, by default (Linkerd's native-sidecar layout):
//! ```text
//! initContainers: weft-init (weft init: iptables, NET_ADMIN/NET_RAW; left out with CNI)
//!                 weft-proxy (restartPolicy: Always, startupProbe on admin /ready: the
//!                             kubelet starts the app only once the proxy is ready)
//!                 ...the pod's own init containers
//! containers:     ...the pod's own
//! volumes:        weft-identity-token (projected ServiceAccount token, audience identity.l5d.io)
//! ```
//! Classic mode (`config.beta.linkerd.io/proxy-enable-native-sidecar: "false"`) puts the proxy
//! first among the containers instead, with a postStart hook that waits for `/ready` (proxy-await).
//!
//! The proxy's `WEFT_PROXY_*` variables and `weft init`'s flags belong to the `weft` binary,
//! which links the proxy's constants: it hands them in through [`Sidecar`], so this crate
//! stays free of the data plane.

pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::resource::{parse_port_list, Defaults};

/// Linkerd's injection switch, on a Namespace or a pod template: `enabled` or `disabled`.
pub const INJECT_ANNOTATION: &str = "linkerd.io/inject";
/// What was injected (the proxy version), set on an injected template: the marker that makes
/// injection idempotent and tells `uninject` what to remove.
pub const PROXY_VERSION_ANNOTATION: &str = "linkerd.io/proxy-version";
/// The label naming the control plane's namespace on injected pods (Linkerd's).
pub const CONTROL_PLANE_NS_LABEL: &str = "linkerd.io/control-plane-ns";

pub const PROXY_IMAGE_ANNOTATION: &str = "config.linkerd.io/proxy-image";
pub const PROXY_VERSION_CONFIG_ANNOTATION: &str = "config.linkerd.io/proxy-version";
pub const INIT_IMAGE_ANNOTATION: &str = "config.linkerd.io/init-image";
pub const INIT_IMAGE_VERSION_ANNOTATION: &str = "config.linkerd.io/init-image-version";
pub const IMAGE_PULL_POLICY_ANNOTATION: &str = "config.linkerd.io/image-pull-policy";
pub const LOG_LEVEL_ANNOTATION: &str = "config.linkerd.io/proxy-log-level";
pub const SKIP_INBOUND_PORTS_ANNOTATION: &str = "config.linkerd.io/skip-inbound-ports";
pub const SKIP_OUTBOUND_PORTS_ANNOTATION: &str = "config.linkerd.io/skip-outbound-ports";
pub use crate::resource::OPAQUE_PORTS_ANNOTATION;
pub const PROXY_AWAIT_ANNOTATION: &str = "config.linkerd.io/proxy-await";
/// Linkerd's: the pod is a multicluster gateway (its proxy forwards what linked clusters send
/// to the services they name), `"true"` or `"false"`.
pub const ENABLE_GATEWAY_ANNOTATION: &str = "config.linkerd.io/enable-gateway";
pub const PROXY_UID_ANNOTATION: &str = "config.linkerd.io/proxy-uid";
/// Native sidecars on (`"true"`, Weft's default) or off; the alpha name is Linkerd's older one.
pub const NATIVE_SIDECAR_ANNOTATION: &str = "config.beta.linkerd.io/proxy-enable-native-sidecar";
pub const NATIVE_SIDECAR_ALPHA_ANNOTATION: &str =
    "config.alpha.linkerd.io/proxy-enable-native-sidecar";
/// Resource requests and limits of the proxy container: annotation → (requests|limits, resource).
pub const RESOURCE_ANNOTATIONS: [(&str, &str, &str); 6] = [
    ("config.linkerd.io/proxy-cpu-request", "requests", "cpu"),
    ("config.linkerd.io/proxy-cpu-limit", "limits", "cpu"),
    (
        "config.linkerd.io/proxy-memory-request",
        "requests",
        "memory",
    ),
    ("config.linkerd.io/proxy-memory-limit", "limits", "memory"),
    (
        "config.linkerd.io/proxy-ephemeral-storage-request",
        "requests",
        "ephemeral-storage",
    ),
    (
        "config.linkerd.io/proxy-ephemeral-storage-limit",
        "limits",
        "ephemeral-storage",
    ),
];

pub const PROXY_CONTAINER: &str = "weft-proxy";
pub const INIT_CONTAINER: &str = "weft-init";
pub const TOKEN_VOLUME: &str = "weft-identity-token";
/// Where the projected token is mounted in the proxy container (the file is `TOKEN_VOLUME`).
pub const TOKEN_DIR: &str = "/var/run/secrets/tokens";
/// The projected token's audience: Linkerd's, which the control plane's TokenReview asks for.
pub const TOKEN_AUDIENCE: &str = "identity.l5d.io";
pub const TOKEN_EXPIRATION_SECONDS: u64 = 86400;
/// The ConfigMap holding the trust anchors, which a pod injected without the anchors at hand
/// (`weft inject` without `--trust-anchors`) refers to; a `configMapKeyRef` names a ConfigMap of
/// the pod's own namespace.
pub const TRUST_ROOTS_CONFIGMAP: &str = "weft-identity-trust-roots";
pub const TRUST_ROOTS_KEY: &str = "ca-bundle.crt";
/// The Service of the control plane's gRPC port (Destination, policy and identity).
pub const DESTINATION_SERVICE: &str = "weft-dst";
pub const DESTINATION_PORT: u16 = 8086;

/// The proxy's ports in a pod (the `weft run` pod layout's, Linkerd's numbers).
pub const INBOUND_PORT: u16 = 4143;
pub const OUTBOUND_PORT: u16 = 4140;
pub const ADMIN_PORT: u16 = 4191;
pub const TAP_PORT: u16 = 4190;
/// Linkerd's proxy uid.
pub const DEFAULT_PROXY_UID: u32 = 2102;

/// Downward-API variables the proxy's own variables refer to as `$(NAME)`.
pub const POD_NAME_VAR: &str = "_pod_name";
pub const POD_NS_VAR: &str = "_pod_ns";
pub const POD_SA_VAR: &str = "_pod_sa";

/// Where the images come from: `<registry>/weft-proxy:<version>` and `<registry>/weft:<version>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    pub registry: String,
    pub version: String,
}

impl Default for Images {
    fn default() -> Self {
        Images {
            registry: "ghcr.io/weft-mesh".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// One pod's resolved injection settings: the injector's defaults overridden by the Namespace's
/// `config.linkerd.io/*` annotations, those by the template's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The proxy as a native sidecar (an init container with `restartPolicy: Always`).
    pub native: bool,
    /// The app containers start only once the proxy is ready.
    pub proxy_await: bool,
    /// A multicluster gateway's proxy ([`ENABLE_GATEWAY_ANNOTATION`]).
    pub gateway: bool,
    /// No `weft-init` container: a CNI plugin installs the redirect rules.
    pub cni: bool,
    pub proxy_image: String,
    pub proxy_version: String,
    pub init_image: String,
    pub init_version: String,
    pub pull_policy: String,
    pub proxy_uid: u32,
    /// The proxy's log filter, when the annotation sets one.
    pub log_level: Option<String>,
    /// Port lists as written in the annotations (validated), empty when unset.
    pub opaque_ports: String,
    pub skip_inbound_ports: String,
    pub skip_outbound_ports: String,
    /// `{requests: {...}, limits: {...}}`, only what annotations set.
    pub resources: Map<String, Value>,
    pub defaults: Defaults,
    /// `<cluster-domain>`, for the control plane's Service address.
    pub cluster_domain: String,
    /// The trust anchors (PEM) to give the proxy inline; `None`: from [`TRUST_ROOTS_CONFIGMAP`].
    pub trust_anchors: Option<String>,
}

impl Settings {
    /// `host:port` of the control plane's gRPC Service.
    pub fn destination_addr(&self) -> String {
        format!(
            "{DESTINATION_SERVICE}.{}.svc.{}:{DESTINATION_PORT}",
            self.defaults.control_namespace, self.cluster_domain
        )
    }

    /// The proxy's identity, built by the kubelet from the downward-API variables.
    pub fn local_name(&self) -> String {
        format!(
            "$({POD_SA_VAR}).$({POD_NS_VAR}).serviceaccount.identity.{}.{}",
            self.defaults.control_namespace, self.defaults.trust_domain
        )
    }
}

/// What only the `weft` binary knows: the proxy's variables and `weft init`'s command line.
pub trait Sidecar: Send + Sync {
    /// The proxy container's `env` entries after the downward-API ones ([`POD_NAME_VAR`], ...):
    /// Kubernetes `EnvVar` objects (use [`env`], [`env_from_configmap`]).
    fn proxy_env(&self, settings: &Settings) -> Vec<Value>;
    /// The `weft-init` container's args (after the `weft` binary: `init ...`).
    fn init_args(&self, settings: &Settings) -> Vec<String>;
}

/// A Kubernetes `EnvVar` with a value.
pub fn env(name: &str, value: impl Into<String>) -> Value {
    json!({"name": name, "value": value.into()})
}

/// A Kubernetes `EnvVar` from the downward API.
pub fn env_from_field(name: &str, field: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": field}}})
}

/// A Kubernetes `EnvVar` from a ConfigMap key.
pub fn env_from_configmap(name: &str, configmap: &str, key: &str) -> Value {
    json!({"name": name, "valueFrom": {"configMapKeyRef": {"name": configmap, "key": key}}})
}

/// The injector: defaults and the [`Sidecar`] the binary supplies.
#[derive(Clone)]
pub struct Injector {
    pub images: Images,
    pub defaults: Defaults,
    pub cluster_domain: String,
    /// No `weft-init` container (a CNI plugin installs the rules): Linkerd's install-time
    /// `cniEnabled`, which has no per-pod annotation.
    pub cni: bool,
    /// The trust anchors (PEM) to inline in the proxy's variables: the webhook's, from the CA
    /// in force (a pod may live in any namespace, a ConfigMap reference only reaches its own).
    pub trust_anchors: Option<String>,
    pub sidecar: Arc<dyn Sidecar>,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector")
            .field("images", &self.images)
            .field("defaults", &self.defaults)
            .field("cluster_domain", &self.cluster_domain)
            .field("cni", &self.cni)
            .finish_non_exhaustive()
    }
}

/// Why a template was not injected (the webhook logs it and admits the pod as it is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// Every bad annotation, in the order they are read.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Annotations(Vec<BadAnnotation>),
    #[error("{0}")]
    Shape(String),
}

/// One annotation whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}: {message}")]
pub struct BadAnnotation {
    pub annotation: &'static str,
    pub message: String,
}

/// What [`Injector::inject`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// The template already carries the proxy (re-injection changes nothing).
    AlreadyInjected,
    /// Neither the template nor the Namespace asks for injection.
    NotEnabled,
}

/// The string annotations of `meta` (`metadata.annotations`), empty when absent.
pub fn annotations(meta: Option<&Value>) -> BTreeMap<String, String> {
    meta.and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the template (first) or its Namespace asks for injection.
pub fn enabled(template: &BTreeMap<String, String>, namespace: &BTreeMap<String, String>) -> bool {
    match template.get(INJECT_ANNOTATION) {
        Some(v) => v == "enabled",
        None => namespace.get(INJECT_ANNOTATION).map(String::as_str) == Some("enabled"),
    }
}

/// Whether `template` (`{metadata, spec}`) already carries the proxy.
pub fn is_injected(template: &Value) -> bool {
    annotations(template.get("metadata")).contains_key(PROXY_VERSION_ANNOTATION)
        || ["initContainers", "containers"].iter().any(|list| {
            template["spec"][list]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["name"] == PROXY_CONTAINER))
        })
}

impl Injector {
    /// The settings for a template with `template` annotations in a Namespace with `namespace`
    /// annotations; every bad annotation is reported at once, each naming itself and its value.
    pub fn settings(
        &self,
        template: &BTreeMap<String, String>,
        namespace: &BTreeMap<String, String>,
    ) -> Result<Settings, InjectError> {
        let problems = std::cell::RefCell::new(Vec::new());
        let get = |name: &str| template.get(name).or_else(|| namespace.get(name));
        let bad = |annotation: &'static str, message: String| {
            problems.borrow_mut().push(BadAnnotation {
                annotation,
                message,
            });
        };
        let text = |annotation: &'static str| match get(annotation) {
            Some(v) if v.is_empty() || v.chars().any(char::is_whitespace) => {
                bad(
                    annotation,
                    format!("must be non-empty without spaces, got {v:?}"),
                );
                None
            }
            v => v.cloned(),
        };
        let ports = |annotation: &'static str| match get(annotation) {
            None => String::new(),
            Some(v) => match parse_port_list(v) {
                Ok(_) => v.split(',').map(str::trim).collect::<Vec<_>>().join(","),
                Err(e) => {
                    bad(annotation, e);
                    String::new()
                }
            },
        };
        let switch = |annotation: &'static str, on: &str, off: &str| match get(annotation) {
            None => None,
            Some(v) if v == on => Some(true),
            Some(v) if v == off => Some(false),
            Some(v) => {
                bad(annotation, format!("must be {on:?} or {off:?}, got {v:?}"));
                None
            }
        };
        let native_beta = switch(NATIVE_SIDECAR_ANNOTATION, "true", "false");
        let native_alpha = switch(NATIVE_SIDECAR_ALPHA_ANNOTATION, "true", "false");
        let pull_policy = match get(IMAGE_PULL_POLICY_ANNOTATION).map(String::as_str) {
            Some(p @ ("Always" | "IfNotPresent" | "Never")) => p.to_string(),
            None => "IfNotPresent".to_string(),
            Some(p) => {
                bad(
                    IMAGE_PULL_POLICY_ANNOTATION,
                    format!("must be Always, IfNotPresent or Never, got {p:?}"),
                );
                String::new()
            }
        };
        let proxy_uid = match get(PROXY_UID_ANNOTATION) {
            None => DEFAULT_PROXY_UID,
            Some(v) => v.parse::<u32>().ok().filter(|u| *u > 0).unwrap_or_else(|| {
                bad(
                    PROXY_UID_ANNOTATION,
                    format!("must be a non-root uid, got {v:?}"),
                );
                DEFAULT_PROXY_UID
            }),
        };
        let mut resources = Map::new();
        for (annotation, kind, resource) in RESOURCE_ANNOTATIONS {
            let Some(v) = get(annotation) else { continue };
            if !is_quantity(v) {
                bad(
                    annotation,
                    format!("must be a Kubernetes quantity (e.g. 100m, 64Mi), got {v:?}"),
                );
                continue;
            }
            resources
                .entry(kind)
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("an object")
                .insert(resource.into(), Value::String(v.clone()));
        }
        let registry = &self.images.registry;
        let settings = Settings {
            native: native_beta.or(native_alpha).unwrap_or(true),
            proxy_await: switch(PROXY_AWAIT_ANNOTATION, "enabled", "disabled").unwrap_or(true),
            gateway: switch(ENABLE_GATEWAY_ANNOTATION, "true", "false").unwrap_or(false),
            cni: self.cni,
            proxy_image: text(PROXY_IMAGE_ANNOTATION)
                .unwrap_or_else(|| format!("{registry}/weft-proxy")),
            proxy_version: text(PROXY_VERSION_CONFIG_ANNOTATION)
                .unwrap_or_else(|| self.images.version.clone()),
            init_image: text(INIT_IMAGE_ANNOTATION).unwrap_or_else(|| format!("{registry}/weft")),
            init_version: text(INIT_IMAGE_VERSION_ANNOTATION)
                .unwrap_or_else(|| self.images.version.clone()),
            pull_policy,
            proxy_uid,
            log_level: text(LOG_LEVEL_ANNOTATION),
            opaque_ports: ports(OPAQUE_PORTS_ANNOTATION),
            skip_inbound_ports: ports(SKIP_INBOUND_PORTS_ANNOTATION),
            skip_outbound_ports: ports(SKIP_OUTBOUND_PORTS_ANNOTATION),
            resources,
            defaults: self.defaults.clone(),
            cluster_domain: self.cluster_domain.clone(),
            trust_anchors: self.trust_anchors.clone(),
        };
        let problems = problems.into_inner();
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(InjectError::Annotations(problems))
        }
    }

    /// Injects the proxy into `template` (`{metadata, spec}`: a pod template or a Pod) when it
    /// or its Namespace (`namespace`: that Namespace's annotations) asks for it and it has no
    /// proxy yet. On error `template` is unchanged.
    pub fn inject(
        &self,
        template: &mut Value,
        namespace: &BTreeMap<String, String>,
    ) -> Result<Outcome, InjectError> {
        if !template.is_object() || !template["spec"].is_object() {
            return Err(InjectError::Shape("no pod spec (spec) to inject".into()));
        }
        if template["spec"]["hostNetwork"] == true {
            // The redirect rules would capture the node's traffic (Linkerd skips these too).
            return Err(InjectError::Shape(
                "hostNetwork pods cannot be injected".into(),
            ));
        }
        if is_injected(template) {
            return Ok(Outcome::AlreadyInjected);
        }
        let own = annotations(template.get("metadata"));
        if !enabled(&own, namespace) {
            return Ok(Outcome::NotEnabled);
        }
        let settings = self.settings(&own, namespace)?;
        for list in ["initContainers", "containers", "volumes"] {
            let v = &template["spec"][list];
            if !v.is_null() && !v.is_array() {
                return Err(InjectError::Shape(format!("spec.{list} is not a list")));
            }
        }
        let proxy = proxy_container(&settings, self.sidecar.proxy_env(&settings));
        let init = (!settings.cni).then(|| init_container(&settings, &*self.sidecar));
        let spec = template["spec"].as_object_mut().expect("checked above");
        let mut inits: Vec<Value> = init.into_iter().collect();
        if settings.native {
            inits.push(proxy);
        } else {
            let containers = list(spec, "containers");
            // With proxy-await the kubelet runs the proxy's postStart hook (waiting for ready)
            // before it starts the next container, so the proxy goes first; without, last.
            if settings.proxy_await {
                containers.insert(0, proxy);
            } else {
                containers.push(proxy);
            }
        }
        if !inits.is_empty() {
            let existing = list(spec, "initContainers");
            existing.splice(0..0, inits);
        }
        list(spec, "volumes").push(token_volume());
        let meta = template
            .as_object_mut()
            .expect("checked above")
            .entry("metadata")
            .or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        let meta = meta.as_object_mut().expect("an object");
        submap(meta, "annotations").insert(
            PROXY_VERSION_ANNOTATION.into(),
            Value::String(settings.proxy_version.clone()),
        );
        submap(meta, "labels").insert(
            CONTROL_PLANE_NS_LABEL.into(),
            Value::String(settings.defaults.control_namespace.clone()),
        );
        Ok(Outcome::Injected)
    }
}

/// Removes what [`Injector::inject`] added: the proxy and init containers, the token volume,
/// the marker annotation and label (and lists or maps left empty). Whether anything was removed.
pub fn uninject(template: &mut Value) -> bool {
    let mut changed = false;
    if let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) {
        for (key, names) in [
            ("initContainers", &[PROXY_CONTAINER, INIT_CONTAINER][..]),
            ("containers", &[PROXY_CONTAINER][..]),
            ("volumes", &[TOKEN_VOLUME][..]),
        ] {
            changed |= remove_named(spec, key, names);
        }
    }
    if let Some(meta) = template.get_mut("metadata").and_then(Value::as_object_mut) {
        for (key, name) in [
            ("annotations", PROXY_VERSION_ANNOTATION),
            ("labels", CONTROL_PLANE_NS_LABEL),
        ] {
            changed |= remove_key(meta, key, name);
        }
    }
    changed
}

/// Removes `name` from the map `meta[key]`, and the map if that empties it.
pub fn remove_key(meta: &mut Map<String, Value>, key: &str, name: &str) -> bool {
    let Some(map) = meta.get_mut(key).and_then(Value::as_object_mut) else {
        return false;
    };
    let removed = map.remove(name).is_some();
    if removed && map.is_empty() {
        meta.remove(key);
    }
    removed
}

fn remove_named(spec: &mut Map<String, Value>, key: &str, names: &[&str]) -> bool {
    let Some(items) = spec.get_mut(key).and_then(Value::as_array_mut) else {
        return false;
    };
    let before = items.len();
    items.retain(|c| !names.iter().any(|n| c["name"] == *n));
    let removed = items.len() != before;
    if removed && items.is_empty() {
        spec.remove(key);
    }
    removed
}

fn list<'a>(spec: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let v = spec.entry(key).or_insert_with(|| json!([]));
    if !v.is_array() {
        *v = json!([]);
    }
    v.as_array_mut().expect("an array")
}

fn submap<'a>(meta: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = meta.entry(key).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("an object")
}

/// A Kubernetes resource quantity: a decimal number with an optional SI/binary suffix or
/// exponent (`100m`, `0.5`, `64Mi`, `1e3`).
fn is_quantity(s: &str) -> bool {
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number != "."
        && number.matches('.').count() <= 1
        && number.bytes().any(|b| b.is_ascii_digit());
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()));
    number_ok && suffix_ok
}

fn http_get(path: &str) -> Value {
    json!({"path": path, "port": ADMIN_PORT})
}

/// The proxy container; `env`: the [`Sidecar`]'s variables.
fn proxy_container(s: &Settings, env: Vec<Value>) -> Value {
    let mut vars = vec![
        env_from_field(POD_NAME_VAR, "metadata.name"),
        env_from_field(POD_NS_VAR, "metadata.namespace"),
        env_from_field(POD_SA_VAR, "spec.serviceAccountName"),
    ];
    vars.extend(env);
    let mut c = json!({
        "name": PROXY_CONTAINER,
        "image": format!("{}:{}", s.proxy_image, s.proxy_version),
        "imagePullPolicy": s.pull_policy,
        "env": vars,
        "ports": [
            {"name": "linkerd-proxy", "containerPort": INBOUND_PORT},
            {"name": crate::resource::ADMIN_PORT_NAME, "containerPort": ADMIN_PORT},
            {"name": crate::resource::TAP_PORT_NAME, "containerPort": TAP_PORT},
        ],
        "readinessProbe": {"httpGet": http_get("/ready"), "initialDelaySeconds": 2, "timeoutSeconds": 1},
        "livenessProbe": {"httpGet": http_get("/live"), "initialDelaySeconds": 10, "timeoutSeconds": 1},
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": s.proxy_uid,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}],
    });
    let obj = c.as_object_mut().expect("an object");
    if !s.resources.is_empty() {
        obj.insert("resources".into(), Value::Object(s.resources.clone()));
    }
    if s.native {
        obj.insert("restartPolicy".into(), json!("Always"));
        if s.proxy_await {
            // The kubelet starts the next container once a native sidecar's startup probe
            // passes: the app never runs before its proxy is ready (two minutes at most).
            obj.insert(
                "startupProbe".into(),
                json!({"httpGet": http_get("/ready"), "periodSeconds": 1, "failureThreshold": 120, "timeoutSeconds": 1}),
            );
        }
    } else if s.proxy_await {
        // Classic mode: the kubelet starts the next container only once the postStart hook
        // returns; the proxy binary waits for its own /ready (two minutes at most).
        obj.insert(
            "lifecycle".into(),
            json!({"postStart": {"exec": {"command": ["weft-proxy", "await", "--timeout=2m"]}}}),
        );
    }
    c
}

fn init_container(s: &Settings, sidecar: &dyn Sidecar) -> Value {
    let mut args = vec!["init".to_string()];
    args.extend(sidecar.init_args(s));
    json!({
        "name": INIT_CONTAINER,
        "image": format!("{}:{}", s.init_image, s.init_version),
        "imagePullPolicy": s.pull_policy,
        "args": args,
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "privileged": false,
            "runAsNonRoot": false,
            "runAsUser": 0,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    })
}

fn token_volume() -> Value {
    json!({
        "name": TOKEN_VOLUME,
        "projected": {"sources": [{"serviceAccountToken": {
            "audience": TOKEN_AUDIENCE,
            "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
            "path": TOKEN_VOLUME,
        }}]},
    })
}

#[cfg(test)]
#[path = "inject_tests.rs"]
mod tests;
