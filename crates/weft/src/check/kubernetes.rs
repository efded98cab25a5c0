//! `weft check --pre` and `weft check --proxy`: what a client sees of a Kubernetes cluster
//! through its API server (Linkerd's `linkerd check --pre` and `--proxy`), in `weft check`'s
//! shape (`Check`s grouped by section).
//!
//! `--pre`, before `weft install`: the kubeconfig loads, the API server answers and is new
//! enough for native sidecars, the user may create every object `weft install` prints (one
//! `SelfSubjectAccessReview` per kind and namespace, derived from the install code itself), the
//! control plane's namespace is not there yet, and whether the Gateway API CRDs already are.
//!
//! `--proxy`, after: the control plane's pods are ready, the injector's webhook configuration
//! trusts the mesh's trust anchors, and every pod of the injected namespaces (or `-n`) has a
//! ready `weft-proxy` of the control plane's version.

use std::collections::BTreeSet;
use std::path::PathBuf;

use base64::Engine as _;
use serde_json::{json, Value};
use weft_control::api::check::{self as api, Check, Status};
use weft_control::inject::{
    INJECT_ANNOTATION, PROXY_CONTAINER, PROXY_VERSION_ANNOTATION, TRUST_ROOTS_CONFIGMAP,
    TRUST_ROOTS_KEY,
};

use crate::install::{self, control_plane as cp};

pub const SECTION_API: &str = "kubernetes-api";
pub const SECTION_VERSION: &str = "kubernetes-version";
pub const SECTION_SETUP: &str = "pre-kubernetes-setup";
pub const SECTION_CONTROL_PLANE: &str = "weft-control-plane";
pub const SECTION_WEBHOOK: &str = "weft-webhook";
pub const SECTION_DATA_PLANE: &str = api::SECTION_DATA_PLANE;

/// The first Kubernetes release with native sidecars on by default (`restartPolicy: Always`
/// init containers, KEP-753: beta and default in 1.29).
pub const NATIVE_SIDECAR_MINOR: u64 = 29;

/// Which cluster: kubectl's `--kubeconfig` and `--context`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KubeArgs {
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config), for --pre/--proxy.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context), for --pre/--proxy.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

fn check(id: &str, section: &str, description: &str) -> Check {
    let mut c = Check::new(id, section, description);
    c.docs = api::DOCS.into();
    c
}

fn with_hint(mut c: Check, hint: &str) -> Check {
    if c.status != Status::Ok {
        c.hint = Some(hint.into());
    }
    c
}

/// The API server, as this client reaches it.
struct Kube {
    client: kube::Client,
}

/// An answer the API server gave: the object, not there (404), or another error in words.
enum Got {
    Found(Value),
    Missing,
}

impl Kube {
    /// The client `weft control --store kubernetes` builds; with `--context`, that context of
    /// the kubeconfig (which `weft_control::k8s::client` does not choose).
    async fn connect(args: &KubeArgs) -> anyhow::Result<Kube> {
        let Some(context) = &args.context else {
            let client = weft_control::k8s::client(args.kubeconfig.as_deref()).await?;
            return Ok(Kube { client });
        };
        let options = kube::config::KubeConfigOptions {
            context: Some(context.clone()),
            ..Default::default()
        };
        let config = match &args.kubeconfig {
            Some(path) => {
                let bad = |e: &dyn std::fmt::Display| {
                    anyhow::anyhow!("kubeconfig {}: {e}", path.display())
                };
                let file = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(&e))?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| bad(&e))?
            }
            None => kube::Config::from_kubeconfig(&options).await?,
        };
        Ok(Kube {
            client: kube::Client::try_from(config)?,
        })
    }

    async fn send(&self, request: http::Request<Vec<u8>>) -> Result<Got, String> {
        let what = format!("{} {}", request.method(), request.uri());
        match self.client.request::<Value>(request).await {
            Ok(v) => Ok(Got::Found(v)),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(Got::Missing),
            Err(kube::Error::Api(e)) => Err(format!("{what}: {} ({})", e.message, e.code)),
            Err(e) => Err(format!("{what}: {e}")),
        }
    }

    async fn get(&self, path: &str) -> Result<Got, String> {
        let request = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| format!("GET {path}: {e}"))?;
        self.send(request).await
    }

    /// `GET path` of an object that must be there.
    async fn must_get(&self, path: &str) -> Result<Value, String> {
        match self.get(path).await? {
            Got::Found(v) => Ok(v),
            Got::Missing => Err(format!("GET {path}: not found")),
        }
    }

    /// Whether the user may `create` `resource` of `group` in `namespace` (cluster-wide: "").
    async fn may_create(&self, access: &Access) -> Result<(bool, String), String> {
        let review = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {
                "namespace": access.namespace,
                "verb": "create",
                "group": access.group,
                "resource": access.resource,
            }},
        });
        let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
        let request = http::Request::post(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(review.to_string().into_bytes())
            .map_err(|e| format!("POST {path}: {e}"))?;
        match self.send(request).await? {
            Got::Found(v) => Ok((
                v["status"]["allowed"].as_bool().unwrap_or(false),
                v["status"]["reason"].as_str().unwrap_or("").to_string(),
            )),
            Got::Missing => Err(format!("POST {path}: not found")),
        }
    }
}

/// One kind `weft install` creates, and where.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    pub group: String,
    pub resource: String,
    pub namespace: String,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let resource = match self.group.as_str() {
            "" => self.resource.clone(),
            g => format!("{}.{g}", self.resource),
        };
        match self.namespace.as_str() {
            "" => write!(f, "{resource}"),
            ns => write!(f, "{resource} in namespace {ns}"),
        }
    }
}

/// What `weft install --crds` and `weft install --ha` (the most objects) create: each kind's
/// group, resource and namespace, from the documents themselves.
pub fn install_access() -> Vec<Access> {
    let identity = install::Identity {
        trust_anchors_pem: "",
        issuer_cert_pem: "",
        issuer_key_pem: "",
    };
    let options = cp::Options {
        ha: true,
        image: "",
    };
    let mut docs = install::crd_documents(false);
    docs.extend(cp::objects(&identity, &options));
    let set: BTreeSet<Access> = docs
        .iter()
        .map(|d| {
            let api_version = d["apiVersion"].as_str().unwrap_or("");
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            // Every kind install prints has the regular plural (lowercase, plus "s").
            let kind = d["kind"].as_str().unwrap_or("");
            Access {
                group: group.into(),
                resource: format!("{}s", kind.to_ascii_lowercase()),
                namespace: d["metadata"]["namespace"].as_str().unwrap_or("").into(),
            }
        })
        .collect();
    set.into_iter().collect()
}

/// `weft check --pre`.
pub async fn pre(args: &KubeArgs) -> Vec<Check> {
    let mut checks = Vec::new();
    let Some(kube) = connected(args, &mut checks).await else {
        return checks;
    };

    let Some(version) = answers(&kube, &mut checks).await else {
        return checks;
    };
    checks.push(version_check(&version));

    // The user may create what `weft install` creates.
    let mut may = check(
        "pre-kubernetes-create",
        SECTION_SETUP,
        "can create the objects `weft install` creates",
    );
    for access in install_access() {
        match kube.may_create(&access).await {
            Ok((true, _)) => {}
            Ok((false, reason)) => {
                let reason = match reason.as_str() {
                    "" => String::new(),
                    r => format!(": {r}"),
                };
                may.found(Status::Error, format!("may not create {access}{reason}"));
            }
            Err(why) => may.found(Status::Error, why),
        }
    }
    checks.push(with_hint(
        may,
        "`weft install | kubectl apply -f -` needs cluster-admin-like rights (it creates \
         namespaces, CRDs, cluster roles and a webhook configuration); ask the cluster's admin",
    ));

    // The control plane's namespace is not there yet.
    let mut absent = check(
        "pre-kubernetes-namespace",
        SECTION_SETUP,
        &format!("control plane namespace {} does not exist", cp::NAMESPACE),
    );
    match kube
        .get(&format!("/api/v1/namespaces/{}", cp::NAMESPACE))
        .await
    {
        Ok(Got::Missing) => {}
        Ok(Got::Found(_)) => absent.found(
            Status::Warning,
            format!("namespace {} exists: already installed?", cp::NAMESPACE),
        ),
        Err(why) => absent.found(Status::Error, why),
    }
    checks.push(with_hint(
        absent,
        "`weft check --proxy` checks an installed mesh; `weft upgrade` upgrades it",
    ));

    // The Gateway API's CRDs, when already there, are not weft install's to own.
    let mut gateway = check(
        "pre-kubernetes-gateway-api",
        SECTION_SETUP,
        "Gateway API CRDs are not installed yet",
    );
    for crd in install::crds::CRDS.iter().filter(|c| c.is_gateway_api()) {
        let name = format!("{}.{}", crd.plural, crd.group);
        let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}");
        match kube.get(&path).await {
            Ok(Got::Missing) => {}
            Ok(Got::Found(_)) => {
                gateway.found(Status::Warning, format!("CRD {name} is already installed"))
            }
            Err(why) => gateway.found(Status::Error, why),
        }
    }
    checks.push(with_hint(
        gateway,
        "keep the cluster's own Gateway API CRDs: `weft install --crds --skip-gateway-api`",
    ));
    checks
}

/// The client from the kubeconfig, or the failed check that says why not.
async fn connected(args: &KubeArgs, checks: &mut Vec<Check>) -> Option<Kube> {
    let mut config = check(
        "kubernetes-api-config",
        SECTION_API,
        "can initialize the client (kubeconfig)",
    );
    match Kube::connect(args).await {
        Ok(kube) => {
            checks.push(config);
            Some(kube)
        }
        Err(why) => {
            config.found(Status::Error, format!("{why:#}"));
            checks.push(with_hint(
                config,
                "point --kubeconfig (or $KUBECONFIG) at a kubeconfig, and --context at one of \
                 its contexts",
            ));
            None
        }
    }
}

/// The API server answers `/version` (its answer), or the failed check that says so.
async fn answers(kube: &Kube, checks: &mut Vec<Check>) -> Option<Value> {
    let mut answers = check(
        "kubernetes-api-answers",
        SECTION_API,
        "can query the Kubernetes API",
    );
    match kube.must_get("/version").await {
        Ok(version) => {
            checks.push(answers);
            Some(version)
        }
        Err(why) => {
            answers.found(Status::Error, why);
            checks.push(with_hint(
                answers,
                "is the cluster up and the kubeconfig's server address right? `kubectl version` \
                 asks the same",
            ));
            None
        }
    }
}

/// The API server's `/version` against the first release with native sidecars.
fn version_check(version: &Value) -> Check {
    let mut c = check(
        "kubernetes-version",
        SECTION_VERSION,
        &format!("is running Kubernetes 1.{NATIVE_SIDECAR_MINOR} or newer (native sidecars)"),
    );
    let text = version["gitVersion"].as_str().unwrap_or("?");
    // Managed clusters say "27+" for a minor.
    let number = |key: &str| {
        let s = version[key].as_str().unwrap_or("");
        let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse::<u64>().ok()
    };
    match (number("major"), number("minor")) {
        (Some(major), Some(minor)) if major > 1 || minor >= NATIVE_SIDECAR_MINOR => {}
        (Some(_), Some(_)) => {
            c.found(
                Status::Warning,
                format!("the API server runs {text}: no native sidecars"),
            );
            c.hint = Some(format!(
                "below 1.{NATIVE_SIDECAR_MINOR} inject in classic mode (the proxy as a regular \
                 container): annotate config.beta.linkerd.io/proxy-enable-native-sidecar: \"false\""
            ));
        }
        _ => {
            c.found(
                Status::Error,
                format!("the API server's /version names no version: {version}"),
            );
            c.hint = Some("is the kubeconfig's server a Kubernetes API server?".into());
        }
    }
    c
}

/// `weft check --proxy [-n NAMESPACE]`.
pub async fn proxy(args: &KubeArgs, namespace: Option<&str>) -> Vec<Check> {
    let mut checks = Vec::new();
    let Some(kube) = connected(args, &mut checks).await else {
        return checks;
    };
    if answers(&kube, &mut checks).await.is_none() {
        return checks;
    }
    let (pods_check, version) = control_plane_pods(&kube).await;
    checks.push(pods_check);
    checks.push(webhook(&kube).await);
    checks.extend(data_plane(&kube, namespace, version.as_deref()).await);
    checks
}

/// The image tag of `image` (`registry/name:tag`), if it has one.
fn image_tag(image: &str) -> Option<&str> {
    let (_, last) = image.rsplit_once('/').unwrap_or(("", image));
    last.split_once(':').map(|(_, tag)| tag)
}

/// Whether a pod's `Ready` condition is true.
fn pod_ready(pod: &Value) -> bool {
    (pod["status"]["conditions"].as_array().into_iter().flatten())
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn name_of(pod: &Value) -> String {
    format!(
        "{}/{}",
        pod["metadata"]["namespace"].as_str().unwrap_or(""),
        pod["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The control plane's pods are ready; the version they run (their image's tag).
async fn control_plane_pods(kube: &Kube) -> (Check, Option<String>) {
    let mut c = check(
        "control-plane-pods-ready",
        SECTION_CONTROL_PLANE,
        "control plane pods are ready",
    );
    let path = format!(
        "/api/v1/namespaces/{}/pods?labelSelector={}%3D{}",
        cp::NAMESPACE,
        cp::COMPONENT_LABEL,
        "control"
    );
    let pods = match kube.must_get(&path).await {
        Ok(list) => items(&list),
        Err(why) => {
            c.found(Status::Error, why);
            return (
                with_hint(
                    c,
                    "can this user list pods in the control plane's namespace?",
                ),
                None,
            );
        }
    };
    if pods.is_empty() {
        c.found(
            Status::Error,
            format!("no control plane pod in namespace {}", cp::NAMESPACE),
        );
    }
    let mut version = None;
    for pod in &pods {
        if !pod_ready(pod) {
            let phase = pod["status"]["phase"].as_str().unwrap_or("?");
            c.found(
                Status::Error,
                format!("pod {} is not ready (phase {phase})", name_of(pod)),
            );
        }
        let containers = pod["spec"]["containers"].as_array().into_iter().flatten();
        for image in containers.filter_map(|k| k["image"].as_str()) {
            version = version.or(image_tag(image).map(String::from));
        }
    }
    let hint = "`weft install | kubectl apply -f -` installs it; `kubectl -n weft describe pods` \
                and `kubectl -n weft logs deploy/weft-control` say what holds it back";
    (with_hint(c, hint), version)
}

/// The webhook configuration exists and its `caBundle` is the trust roots ConfigMap's bundle.
async fn webhook(kube: &Kube) -> Check {
    let mut c = check(
        "webhook-ca-bundle",
        SECTION_WEBHOOK,
        "proxy injector webhook trusts the mesh's trust anchors",
    );
    let hint = "re-apply `weft upgrade --identity-dir DIR | kubectl apply -f -` with the \
                identity the control plane runs with: it writes both from the same anchors";
    let config = format!(
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{}",
        cp::WEBHOOK_CONFIG
    );
    let roots = format!(
        "/api/v1/namespaces/{}/configmaps/{TRUST_ROOTS_CONFIGMAP}",
        cp::NAMESPACE
    );
    let (config, roots) = match (kube.must_get(&config).await, kube.must_get(&roots).await) {
        (Ok(config), Ok(roots)) => (config, roots),
        (config, roots) => {
            for why in [config.err(), roots.err()].into_iter().flatten() {
                c.found(Status::Error, why);
            }
            return with_hint(c, hint);
        }
    };
    let anchors = roots["data"][TRUST_ROOTS_KEY].as_str().unwrap_or("");
    let hooks = config["webhooks"].as_array().cloned().unwrap_or_default();
    let Some(hook) = hooks.iter().find(|h| h["name"] == cp::WEBHOOK_NAME) else {
        c.found(
            Status::Error,
            format!("{} has no webhook {}", cp::WEBHOOK_CONFIG, cp::WEBHOOK_NAME),
        );
        return with_hint(c, hint);
    };
    let bundle = hook["clientConfig"]["caBundle"].as_str().unwrap_or("");
    let decoded = base64::engine::general_purpose::STANDARD.decode(bundle);
    if anchors.is_empty() || decoded.as_deref() != Ok(anchors.as_bytes()) {
        c.found(
            Status::Error,
            format!(
                "the caBundle of {} is not the {TRUST_ROOTS_KEY} of ConfigMap {}/{TRUST_ROOTS_CONFIGMAP}: \
                 the API server will not trust the injector",
                cp::WEBHOOK_CONFIG,
                cp::NAMESPACE
            ),
        );
    }
    with_hint(c, hint)
}

/// When the namespace got `linkerd.io/inject` (the time of the managed-fields entry that set
/// it), as RFC 3339 text.
fn annotated_at(namespace: &Value) -> Option<String> {
    let key = format!("f:{INJECT_ANNOTATION}");
    (namespace["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten())
    .filter(|m| !m["fieldsV1"]["f:metadata"]["f:annotations"][&key].is_null())
    .filter_map(|m| m["time"].as_str().map(String::from))
    .max()
}

/// The `weft-proxy` container of a pod (a native sidecar or a regular container), and its
/// status.
fn proxy_container(pod: &Value) -> Option<(Value, Value)> {
    for (list, statuses) in [
        ("initContainers", "initContainerStatuses"),
        ("containers", "containerStatuses"),
    ] {
        let found = (pod["spec"][list].as_array().into_iter().flatten())
            .find(|k| k["name"] == PROXY_CONTAINER);
        if let Some(container) = found {
            let status = (pod["status"][statuses].as_array().into_iter().flatten())
                .find(|k| k["name"] == PROXY_CONTAINER)
                .cloned()
                .unwrap_or(Value::Null);
            return Some((container.clone(), status));
        }
    }
    None
}

/// Every pod of the injected namespaces (or `only`): injected, proxy ready, proxy version.
async fn data_plane(kube: &Kube, only: Option<&str>, version: Option<&str>) -> Vec<Check> {
    let mut listed = check(
        "data-plane-namespaces",
        SECTION_DATA_PLANE,
        "can list the meshed namespaces and their pods",
    );
    let mut injected = check(
        "data-plane-injected",
        SECTION_DATA_PLANE,
        "data plane pods have the weft-proxy container",
    );
    let mut ready = check(
        "data-plane-proxies-ready",
        SECTION_DATA_PLANE,
        "data plane proxies are ready",
    );
    let want = version.unwrap_or(env!("CARGO_PKG_VERSION"));
    let mut versions = check(
        "data-plane-version",
        SECTION_DATA_PLANE,
        &format!("data plane proxies run the control plane's version ({want})"),
    );
    let namespaces = match only {
        Some(ns) => match kube.get(&format!("/api/v1/namespaces/{ns}")).await {
            Ok(Got::Found(n)) => vec![n],
            Ok(Got::Missing) => {
                listed.found(Status::Error, format!("namespace {ns} does not exist"));
                vec![]
            }
            Err(why) => {
                listed.found(Status::Error, why);
                vec![]
            }
        },
        None => match kube.must_get("/api/v1/namespaces").await {
            Ok(list) => items(&list)
                .into_iter()
                .filter(|n| n["metadata"]["annotations"][INJECT_ANNOTATION] == "enabled")
                .collect(),
            Err(why) => {
                listed.found(Status::Error, why);
                vec![]
            }
        },
    };
    if listed.status == Status::Error {
        return vec![with_hint(
            listed,
            "can this user get and list namespaces and pods? (`kubectl auth can-i list pods -A`)",
        )];
    }
    if namespaces.is_empty() {
        listed.found(
            Status::Warning,
            format!("no namespace is annotated {INJECT_ANNOTATION}: enabled"),
        );
    }
    for ns in &namespaces {
        let name = ns["metadata"]["name"].as_str().unwrap_or("");
        let pods = match kube
            .must_get(&format!("/api/v1/namespaces/{name}/pods"))
            .await
        {
            Ok(list) => items(&list),
            Err(why) => {
                listed.found(Status::Error, why);
                continue;
            }
        };
        let since = annotated_at(ns);
        for pod in pods {
            let annotations = &pod["metadata"]["annotations"];
            if annotations[INJECT_ANNOTATION] == "disabled" || pod["status"]["phase"] == "Succeeded"
            {
                continue;
            }
            let pod_name = name_of(&pod);
            let Some((container, status)) = proxy_container(&pod) else {
                let created = pod["metadata"]["creationTimestamp"].as_str().unwrap_or("");
                // RFC 3339 times in UTC ("...Z") compare as text.
                match &since {
                    Some(at) if created < at.as_str() => injected.found(
                        Status::Warning,
                        format!(
                            "pod {pod_name} was created at {created}, before its namespace \
                             was annotated ({at}): restart it \
                             (`kubectl -n {name} rollout restart deploy/...`)"
                        ),
                    ),
                    _ => injected.found(
                        Status::Error,
                        format!("pod {pod_name} has no {PROXY_CONTAINER} container"),
                    ),
                }
                continue;
            };
            if status["ready"] != true {
                let why = (status["state"].as_object().into_iter().flatten())
                    .next()
                    .map(|(state, detail)| match detail["reason"].as_str() {
                        Some(reason) => format!("{state}: {reason}"),
                        None => state.clone(),
                    })
                    .unwrap_or_else(|| "no status yet".into());
                ready.found(
                    Status::Error,
                    format!("pod {pod_name}: {PROXY_CONTAINER} is not ready ({why})"),
                );
            }
            let running = annotations[PROXY_VERSION_ANNOTATION]
                .as_str()
                .or_else(|| image_tag(container["image"].as_str().unwrap_or("")));
            match running {
                Some(v) if v == want => {}
                other => versions.found(
                    Status::Warning,
                    format!(
                        "pod {pod_name} runs proxy version {}",
                        other.unwrap_or("(unknown)")
                    ),
                ),
            }
        }
    }
    vec![
        with_hint(
            listed,
            "annotate a namespace `linkerd.io/inject: enabled` (or name one with -n)",
        ),
        with_hint(
            injected,
            "pods are injected when created: restart those made before their namespace was \
             annotated; for newer ones, is the webhook reachable (`kubectl get events`)? \
             Its failurePolicy is Ignore",
        ),
        with_hint(
            ready,
            "`kubectl logs POD -c weft-proxy` says what holds the proxy back (identity, the \
             control plane's address)",
        ),
        with_hint(
            versions,
            "restart the pods after `weft upgrade` to get the control plane's proxy version",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_access_follows_the_install_documents() {
        let all = install_access();
        let has = |group: &str, resource: &str, namespace: &str| {
            all.contains(&Access {
                group: group.into(),
                resource: resource.into(),
                namespace: namespace.into(),
            })
        };
        assert!(has("", "namespaces", ""), "{all:#?}");
        assert!(has("apiextensions.k8s.io", "customresourcedefinitions", ""));
        assert!(has("rbac.authorization.k8s.io", "clusterroles", ""));
        assert!(has(
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            ""
        ));
        assert!(has("apps", "deployments", "weft"));
        assert!(has("", "secrets", "weft"));
        assert!(has("policy", "poddisruptionbudgets", "weft"));
        // One review per kind and namespace, not per object.
        let services = all.iter().filter(|a| a.resource == "services").count();
        assert_eq!(services, 1);
    }

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("ghcr.io/weft-mesh/weft:0.1.0"), Some("0.1.0"));
        assert_eq!(image_tag("localhost:5000/weft"), None);
        assert_eq!(image_tag("weft:1"), Some("1"));
    }
}
