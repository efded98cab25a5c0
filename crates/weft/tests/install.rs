//! `weft install` and `weft upgrade` as a user runs them: the printed manifests parsed, every
//! object checked for the names and ports other parts rely on (`docs/kubernetes.md`), and the
//! whole output validated offline against the Kubernetes OpenAPI schemas
//! (`kubernetes-validate --strict`). The default output is compared with a golden file:
//! regenerate it with `WEFT_UPDATE_GOLDEN=1 cargo test -p weft --test install`.

#[path = "k8s/mod.rs"]
mod k8s;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use k8s::{find, parse_docs, weft, weft_stdout};
use serde_json::{json, Value};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const GOLDEN: &str = "tests/golden/install.yaml";

/// A CA made by `weft identity init` in a fresh temp directory, removed on drop.
struct IdentityDir(PathBuf);

impl IdentityDir {
    fn new(name: &str) -> IdentityDir {
        let dir = std::env::temp_dir().join(format!("weft-install-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        weft_stdout(&["identity", "init", "--dir", dir.to_str().unwrap()]);
        IdentityDir(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.0.join(file)).expect("identity file")
    }
}

impl Drop for IdentityDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Validates `yaml` against the Kubernetes schemas, and checks that kubectl's YAML 1.1 reads
/// the values we meant.
fn validate(name: &str, yaml: &str) {
    if let Some(result) = k8s::same_in_yaml_1_1(yaml) {
        result.unwrap_or_else(|diff| panic!("{name} reads differently in YAML 1.1:\n{diff}"));
    }
    if let Some(result) = k8s::kubernetes_validate(name, yaml) {
        result.unwrap_or_else(|report| panic!("{name} does not validate:\n{report}"));
    }
}

/// Whether a namespaceSelector/objectSelector of only `matchExpressions` selects `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector["matchExpressions"]
        .as_array()
        .expect("matchExpressions")
        .iter()
        .all(|e| {
            let value = labels.get(e["key"].as_str().unwrap());
            let listed = |v: &Value| e["values"].as_array().unwrap().contains(v);
            match e["operator"].as_str().unwrap() {
                "NotIn" => !value.is_some_and(listed),
                "In" => value.is_some_and(listed),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                op => panic!("operator {op}"),
            }
        })
}

/// Whether an RBAC role's rules grant `verb` on `resource` of `group`.
fn allows(role: &Value, group: &str, resource: &str, verb: &str) -> bool {
    role["rules"].as_array().unwrap().iter().any(|r| {
        let has = |field: &str, v: &str| r[field].as_array().unwrap().iter().any(|x| x == v);
        has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
    })
}

/// The checks every control-plane output passes, plain or HA, installed or upgraded; returns
/// the Deployment's pod template for the caller's own checks.
fn check_control_plane(docs: &[Value], anchors: &str) -> Value {
    let ns = find(docs, "Namespace", "weft");
    assert_eq!(
        ns["metadata"]["labels"]["config.linkerd.io/admission-webhooks"],
        "disabled"
    );
    assert_eq!(
        ns["metadata"]["annotations"]["linkerd.io/inject"],
        "disabled"
    );
    assert_eq!(
        find(docs, "ServiceAccount", "weft-control")["metadata"]["namespace"],
        "weft"
    );

    // RBAC: what the Kubernetes store watches and writes.
    let role = find(docs, "ClusterRole", "weft-control");
    for resource in ["services", "pods", "namespaces"] {
        for verb in ["get", "list", "watch"] {
            assert!(allows(role, "", resource, verb), "{verb} {resource}");
        }
    }
    // Nothing reads a ServiceAccount object (the pod names its own).
    assert!(!allows(role, "", "serviceaccounts", "list"));
    assert!(allows(role, "discovery.k8s.io", "endpointslices", "watch"));
    assert!(allows(
        role,
        "authentication.k8s.io",
        "tokenreviews",
        "create"
    ));
    for verb in ["get", "create", "update"] {
        assert!(
            allows(role, "coordination.k8s.io", "leases", verb),
            "{verb} leases"
        );
    }
    let crds = parse_docs(&weft_stdout(&["install", "--crds"]));
    for crd in &crds {
        let (group, plural) = (
            crd["spec"]["group"].as_str().unwrap(),
            crd["spec"]["names"]["plural"].as_str().unwrap(),
        );
        for verb in ["get", "list", "watch"] {
            assert!(allows(role, group, plural, verb), "{verb} {plural}.{group}");
        }
    }
    for (group, plural) in [
        ("gateway.networking.k8s.io", "httproutes"),
        ("gateway.networking.k8s.io", "grpcroutes"),
        ("gateway.networking.k8s.io", "tlsroutes"),
        ("gateway.networking.k8s.io", "tcproutes"),
        ("policy.linkerd.io", "httproutes"),
        ("policy.linkerd.io", "httplocalratelimitpolicies"),
        ("policy.linkerd.io", "egressnetworks"),
    ] {
        assert!(
            allows(role, group, &format!("{plural}/status"), "update"),
            "{plural} status"
        );
    }
    // The workload's conditions are its own to write.
    assert!(!allows(
        role,
        "workload.linkerd.io",
        "externalworkloads/status",
        "update"
    ));
    assert!(
        !allows(role, "", "secrets", "get"),
        "Secrets only through the namespaced Role"
    );
    let binding = find(docs, "ClusterRoleBinding", "weft-control");
    assert_eq!(binding["roleRef"]["name"], "weft-control");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "weft-control", "namespace": "weft"}])
    );
    let secrets = find(docs, "Role", "weft-control");
    assert_eq!(secrets["metadata"]["namespace"], "weft");
    for verb in ["get", "create", "update"] {
        assert!(allows(secrets, "", "secrets", verb));
    }
    // Link credentials (docs/multicluster.md): a ServiceAccount per linked cluster and its
    // token, in `weft` only; never reading another account.
    assert!(allows(secrets, "", "serviceaccounts", "create"));
    assert!(allows(secrets, "", "serviceaccounts", "delete"));
    assert!(allows(secrets, "", "serviceaccounts/token", "create"));
    assert!(!allows(secrets, "", "serviceaccounts", "get"));
    assert_eq!(
        find(docs, "RoleBinding", "weft-control")["roleRef"]["kind"],
        "Role"
    );
    // Links (cluster-wide read) and their credentials Secrets, read only in weft-multicluster.
    assert!(allows(role, "multicluster.linkerd.io", "links", "watch"));
    let mc = find(docs, "Namespace", "weft-multicluster");
    assert_eq!(
        mc["metadata"]["labels"]["config.linkerd.io/admission-webhooks"],
        "disabled"
    );
    let link_secrets = find(docs, "Role", "weft-control-links");
    assert_eq!(link_secrets["metadata"]["namespace"], "weft-multicluster");
    for verb in ["get", "list", "watch"] {
        assert!(allows(link_secrets, "", "secrets", verb));
    }
    assert!(!allows(link_secrets, "", "secrets", "create"));
    let link_binding = find(docs, "RoleBinding", "weft-control-links");
    assert_eq!(link_binding["metadata"]["namespace"], "weft-multicluster");
    assert_eq!(link_binding["roleRef"]["name"], "weft-control-links");
    assert_eq!(
        find(docs, "RoleBinding", "weft-control-links")["subjects"],
        json!([{"kind": "ServiceAccount", "name": "weft-control", "namespace": "weft"}])
    );

    // Identity: the three files the control plane reads, and the anchors for proxies.
    let secret = find(docs, "Secret", "weft-identity-issuer");
    assert_eq!(secret["metadata"]["namespace"], "weft");
    let files = secret["stringData"].as_object().expect("stringData");
    let keys: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["issuer.crt", "issuer.key", "trust-anchors.pem"],
        "never the anchor key"
    );
    assert_eq!(files["trust-anchors.pem"], anchors);
    let roots = find(docs, "ConfigMap", "weft-identity-trust-roots");
    assert_eq!(roots["data"], json!({"ca-bundle.crt": anchors}));

    // The control plane's Deployment.
    let deployment = find(docs, "Deployment", "weft-control");
    assert_eq!(deployment["metadata"]["namespace"], "weft");
    let pod = deployment["spec"]["template"].clone();
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        pod["metadata"]["labels"]
    );
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], "weft-control");
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["image"], format!("ghcr.io/weft-mesh/weft:{VERSION}"));
    assert_eq!(
        c["args"],
        json!([
            "control",
            "--store",
            "kubernetes",
            "--identity-dir",
            "/var/run/weft/identity",
            "--grpc-addr",
            "0.0.0.0:8086",
            "--api-addr",
            "0.0.0.0:8085",
            "--webhook-addr",
            "0.0.0.0:8443"
        ])
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/ready", "port": 8085})
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/live", "port": 8085})
    );
    let mount = &c["volumeMounts"][0];
    assert_eq!(mount["mountPath"], "/var/run/weft/identity");
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], "weft-identity-issuer");

    // Services reach the pods on the contract's ports.
    for (name, port, target) in [
        ("weft-dst", 8086, 8086),
        ("weft-api", 8085, 8085),
        ("weft-proxy-injector", 443, 8443),
    ] {
        let svc = find(docs, "Service", name);
        assert_eq!(svc["metadata"]["namespace"], "weft");
        assert!(
            selects_labels(&svc["spec"]["selector"], &pod["metadata"]["labels"]),
            "{name} selects the pods"
        );
        let ports = svc["spec"]["ports"].as_array().unwrap();
        assert_eq!(
            (ports.len(), &ports[0]["port"], &ports[0]["targetPort"]),
            (1, &json!(port), &json!(target)),
            "{name}"
        );
        assert!(
            c["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["containerPort"] == target),
            "{name}: container listens on {target}"
        );
    }

    // The injector webhook: served by the control plane with a mesh-CA certificate.
    let hook_config = find(
        docs,
        "MutatingWebhookConfiguration",
        "weft-proxy-injector-webhook-config",
    );
    let hooks = hook_config["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(hook["name"], "weft-proxy-injector.weft.io");
    assert_eq!(
        hook["clientConfig"]["service"],
        json!({"name": "weft-proxy-injector", "namespace": "weft", "path": "/inject", "port": 443})
    );
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(hook["clientConfig"]["caBundle"].as_str().unwrap())
        .expect("base64 caBundle");
    assert_eq!(String::from_utf8(bundle).unwrap(), anchors);
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(hook["rules"][0]["operations"], json!(["CREATE"]));
    assert_eq!(hook["rules"][0]["resources"], json!(["pods"]));
    let mut ns_labels = ns["metadata"]["labels"].clone();
    ns_labels["kubernetes.io/metadata.name"] = json!("weft");
    assert!(
        !selects(&hook["namespaceSelector"], &ns_labels),
        "the control plane is never injected"
    );
    assert!(selects(
        &hook["namespaceSelector"],
        &json!({"kubernetes.io/metadata.name": "shop"})
    ));
    pod
}

fn selects_labels(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn install_prints_a_valid_control_plane_with_a_fresh_identity() {
    let out = weft(&["install"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("trust anchor's private key is not printed"),
        "stderr: {stderr}"
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let docs = parse_docs(&yaml);
    let secret = find(&docs, "Secret", "weft-identity-issuer")["stringData"].clone();
    let text = |k: &str| secret[k].as_str().unwrap().to_string();
    // The generated identity is a usable CA: the issuer chains to the anchor and fits its key.
    weft_control::ca::Ca::from_pem(
        (Path::new("trust-anchors.pem"), text("trust-anchors.pem")),
        (Path::new("issuer.crt"), &text("issuer.crt")),
        (Path::new("issuer.key"), &text("issuer.key")),
        weft_control::ca::DEFAULT_CERT_LIFETIME,
    )
    .expect("generated identity");
    assert_eq!(
        yaml.matches("PRIVATE KEY-----\n").count(),
        2,
        "only the issuer's key (BEGIN/END)"
    );
    let pod = check_control_plane(&docs, &text("trust-anchors.pem"));
    let deployment = find(&docs, "Deployment", "weft-control");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert!(pod["spec"].get("affinity").is_none());
    assert!(!docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"));
    validate("install", &yaml);
}

#[test]
fn install_ha_spreads_three_replicas_with_a_disruption_budget() {
    let yaml = weft_stdout(&["install", "--ha"]);
    let docs = parse_docs(&yaml);
    let anchors = find(&docs, "ConfigMap", "weft-identity-trust-roots")["data"]["ca-bundle.crt"]
        .as_str()
        .unwrap()
        .to_string();
    let pod = check_control_plane(&docs, &anchors);
    assert_eq!(
        find(&docs, "Deployment", "weft-control")["spec"]["replicas"],
        3
    );
    let anti = &pod["spec"]["affinity"]["podAntiAffinity"];
    let required = &anti["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(required["topologyKey"], "kubernetes.io/hostname");
    assert!(selects_labels(
        &required["labelSelector"]["matchLabels"],
        &pod["metadata"]["labels"]
    ));
    let resources = &pod["spec"]["containers"][0]["resources"];
    assert!(
        resources["requests"]["cpu"].is_string() && resources["requests"]["memory"].is_string()
    );
    let pdb = find(&docs, "PodDisruptionBudget", "weft-control");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(selects_labels(
        &pdb["spec"]["selector"]["matchLabels"],
        &pod["metadata"]["labels"]
    ));
    validate("install-ha", &yaml);
}

#[test]
fn install_crds_validate_and_can_leave_out_the_gateway_api() {
    let yaml = weft_stdout(&["install", "--crds"]);
    let docs = parse_docs(&yaml);
    assert!(docs.iter().all(|d| d["kind"] == "CustomResourceDefinition"));
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "httproutes.gateway.networking.k8s.io",
            "grpcroutes.gateway.networking.k8s.io",
            "tlsroutes.gateway.networking.k8s.io",
            "tcproutes.gateway.networking.k8s.io",
            "servers.policy.linkerd.io",
            "authorizationpolicies.policy.linkerd.io",
            "meshtlsauthentications.policy.linkerd.io",
            "networkauthentications.policy.linkerd.io",
            "httproutes.policy.linkerd.io",
            "httplocalratelimitpolicies.policy.linkerd.io",
            "egressnetworks.policy.linkerd.io",
            "externalworkloads.workload.linkerd.io",
            "faultinjections.extensions.weft.dev",
            "links.multicluster.linkerd.io",
        ]
    );
    let without = parse_docs(&weft_stdout(&["install", "--crds", "--skip-gateway-api"]));
    assert_eq!(without.len(), docs.len() - 4);
    assert!(without
        .iter()
        .all(|d| d["spec"]["group"] != "gateway.networking.k8s.io"));
    assert_eq!(
        weft_stdout(&["upgrade", "--crds"]),
        yaml,
        "upgrade --crds prints the same CRDs"
    );
    // Client-side `kubectl apply` keeps each object in an annotation, and annotations are
    // limited to 256 KiB in all (upstream's Gateway API CRDs need server-side apply for that).
    for d in &docs {
        let size = serde_json::to_string(d).unwrap().len();
        assert!(size < 200 * 1024, "{}: {size} bytes", d["metadata"]["name"]);
    }
    validate("crds", &yaml);
}

#[test]
fn upgrade_without_the_identity_refuses() {
    let out = weft(&["upgrade"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing to apply");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--identity-dir DIR"), "stderr: {stderr}");
    assert!(
        stderr.contains("never generates new trust anchors"),
        "stderr: {stderr}"
    );
}

#[test]
fn upgrade_keeps_exactly_the_given_identity() {
    let id = IdentityDir::new("upgrade");
    let yaml = weft_stdout(&["upgrade", "--ha", "--identity-dir", id.path()]);
    let docs = parse_docs(&yaml);
    let anchors = id.read("trust-anchors.pem");
    check_control_plane(&docs, &anchors);
    assert_eq!(
        find(&docs, "Secret", "weft-identity-issuer")["stringData"],
        json!({
            "trust-anchors.pem": anchors,
            "issuer.crt": id.read("issuer.crt"),
            "issuer.key": id.read("issuer.key"),
        })
    );
    let anchor_key = id.read("trust-anchor.key");
    let anchor_key_body = anchor_key.lines().nth(1).unwrap();
    assert!(
        !yaml.contains(anchor_key_body),
        "the anchor key stays out of the cluster"
    );
    assert_eq!(
        find(&docs, "Deployment", "weft-control")["spec"]["replicas"],
        3
    );
    validate("upgrade", &yaml);
}

#[test]
fn a_bad_identity_dir_is_refused_precisely() {
    let id = IdentityDir::new("bad");
    let other = IdentityDir::new("other");
    // An issuer from another CA: it does not chain to these anchors.
    std::fs::copy(other.0.join("issuer.crt"), id.0.join("issuer.crt")).unwrap();
    std::fs::copy(other.0.join("issuer.key"), id.0.join("issuer.key")).unwrap();
    let out = weft(&["install", "--identity-dir", id.path()]);
    assert!(!out.status.success() && out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("the identity in {} is not usable", id.path())),
        "{stderr}"
    );
    std::fs::remove_file(other.0.join("issuer.key")).unwrap();
    let out = weft(&["upgrade", "--identity-dir", other.path()]);
    assert!(!out.status.success() && out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}/issuer.key", other.path())),
        "{stderr}"
    );
}

#[test]
fn image_registry_is_configurable() {
    let id = IdentityDir::new("registry");
    let docs = parse_docs(&weft_stdout(&[
        "install",
        "--identity-dir",
        id.path(),
        "--image-registry",
        "registry.example/mesh/",
    ]));
    let image = &find(&docs, "Deployment", "weft-control")["spec"]["template"]["spec"]
        ["containers"][0]["image"];
    assert_eq!(
        image,
        &json!(format!("registry.example/mesh/weft:{VERSION}"))
    );
}

/// The golden file: the default output with the identity's texts and the version replaced by
/// placeholders (both differ from run to run and release to release).
#[test]
fn install_output_matches_the_golden_file() {
    let id = IdentityDir::new("golden");
    let docs = parse_docs(&weft_stdout(&["install", "--identity-dir", id.path()]));
    let anchors = id.read("trust-anchors.pem");
    let replacements = [
        (anchors.clone(), "<trust-anchors.pem>".to_string()),
        (id.read("issuer.crt"), "<issuer.crt>".to_string()),
        (id.read("issuer.key"), "<issuer.key>".to_string()),
        (
            base64::engine::general_purpose::STANDARD.encode(&anchors),
            "<base64 trust-anchors.pem>".to_string(),
        ),
    ];
    assert_golden("weft install", GOLDEN, docs, &replacements);
}

/// `docs`, normalized, equal to the golden file `golden` (`WEFT_UPDATE_GOLDEN=1` rewrites it).
fn assert_golden(what: &str, golden: &str, docs: Vec<Value>, replacements: &[(String, String)]) {
    let mut text = String::new();
    for mut doc in docs {
        normalize(&mut doc, replacements);
        text.push_str("---\n");
        text.push_str(&yaml_serde::to_string(&doc).unwrap());
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(golden);
    if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (WEFT_UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        want == text,
        "`{what}` differs from {golden}; if intended, regenerate with \
         WEFT_UPDATE_GOLDEN=1 cargo test -p weft --test install, and review the diff.\n{}",
        first_difference(&want, &text)
    );
}

/// The gateway's proxy container (a native sidecar) of a pod template.
fn gateway_proxy(pod: &Value) -> &Value {
    pod["spec"]["initContainers"]
        .as_array()
        .expect("initContainers")
        .iter()
        .find(|c| c["name"] == "weft-proxy")
        .expect("the proxy is injected")
}

fn env_of<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| &e["value"])
}

#[test]
fn multicluster_install_prints_the_gateway() {
    let id = IdentityDir::new("mc-gateway");
    let anchors_file = id.0.join("trust-anchors.pem");
    let anchors = id.read("trust-anchors.pem");
    let text = weft_stdout(&[
        "multicluster",
        "install",
        "--trust-anchors",
        anchors_file.to_str().unwrap(),
    ]);
    validate("multicluster-install", &text);
    let docs = parse_docs(&text);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    // weft-multicluster is `weft install`'s: not printed again.
    assert_eq!(kinds, ["ServiceAccount", "Deployment", "Service"]);
    for d in &docs {
        assert_eq!(d["metadata"]["name"], "weft-gateway");
        assert_eq!(d["metadata"]["namespace"], "weft-multicluster");
        assert_eq!(
            d["metadata"]["labels"]["linkerd.io/extension"],
            "multicluster"
        );
    }
    let deployment = find(&docs, "Deployment", "weft-gateway");
    let pod = &deployment["spec"]["template"];
    // What the export API finds a gateway by, and the identity every sidecar trusts.
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["linkerd.io/extension"], "multicluster");
    assert_eq!(labels["component"], "gateway");
    assert!(selects_labels(
        &deployment["spec"]["selector"]["matchLabels"],
        labels
    ));
    assert_eq!(pod["spec"]["serviceAccountName"], "weft-gateway");
    let proxy = gateway_proxy(pod);
    // The variable `weft run --multicluster-gateway` sets, and the anchors inline.
    assert_eq!(
        env_of(proxy, "WEFT_PROXY_INBOUND_GATEWAY_SUFFIXES"),
        Some(&json!("svc.cluster.local."))
    );
    assert_eq!(
        env_of(proxy, "WEFT_PROXY_IDENTITY_TRUST_ANCHORS"),
        Some(&json!(anchors))
    );
    assert_eq!(
        env_of(proxy, "WEFT_PROXY_IDENTITY_LOCAL_NAME"),
        Some(&json!(
            "$(_pod_sa).$(_pod_ns).serviceaccount.identity.weft.cluster.local"
        ))
    );
    // The proxy listens where the export API looks for a gateway whose ports are not named
    // mc-gateway/mc-probe (4143 and 4191), and the Service sends there.
    let ports: Vec<u64> = proxy["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert!(ports.contains(&4143) && ports.contains(&4191), "{ports:?}");
    let service = find(&docs, "Service", "weft-gateway");
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert!(selects_labels(&service["spec"]["selector"], labels));
    assert_eq!(
        service["spec"]["ports"],
        json!([
            {"name": "mc-gateway", "port": 4143, "protocol": "TCP", "targetPort": 4143},
            {"name": "mc-probe", "port": 4191, "protocol": "TCP", "targetPort": 4191},
        ])
    );
    assert_golden(
        "weft multicluster install",
        "tests/golden/multicluster-install.yaml",
        docs,
        &[(anchors, "<trust-anchors.pem>".to_string())],
    );

    // Linkerd's flags: the Service's ports and type; the pod's ports stay.
    let text = weft_stdout(&[
        "multicluster",
        "install",
        "--trust-anchors",
        anchors_file.to_str().unwrap(),
        "--gateway-port",
        "5143",
        "--gateway-probe-port",
        "5191",
        "--gateway-service-type",
        "NodePort",
        "--namespace",
        "edge",
    ]);
    validate("multicluster-install-flags", &text);
    let docs = parse_docs(&text);
    let ns = find(&docs, "Namespace", "edge");
    assert_eq!(
        ns["metadata"]["annotations"]["linkerd.io/inject"],
        "disabled"
    );
    let service = find(&docs, "Service", "weft-gateway");
    assert_eq!(service["metadata"]["namespace"], "edge");
    assert_eq!(service["spec"]["type"], "NodePort");
    assert_eq!(service["spec"]["ports"][0]["port"], 5143);
    assert_eq!(service["spec"]["ports"][1]["port"], 5191);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 4143);
    let no_gateway = weft_stdout(&[
        "multicluster",
        "install",
        "--trust-anchors",
        anchors_file.to_str().unwrap(),
        "--gateway=false",
    ]);
    assert!(parse_docs(&no_gateway).is_empty(), "{no_gateway}");

    // Uninstall: the same objects by kind and name, for kubectl delete -f -.
    let gone = parse_docs(&weft_stdout(&["multicluster", "uninstall"]));
    let names = |docs: &[Value]| -> Vec<String> {
        let mut v: Vec<String> = docs
            .iter()
            .map(|d| {
                format!(
                    "{}/{}/{}",
                    d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]
                )
            })
            .collect();
        v.sort();
        v
    };
    let installed = parse_docs(&weft_stdout(&[
        "multicluster",
        "install",
        "--trust-anchors",
        anchors_file.to_str().unwrap(),
    ]));
    assert_eq!(names(&gone), names(&installed));
}

#[test]
fn multicluster_install_refuses_bad_input_precisely() {
    let out = weft(&["multicluster", "install"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--trust-anchors"));
    let not_pem = std::env::temp_dir().join(format!("weft-mc-not-pem-{}", std::process::id()));
    std::fs::write(&not_pem, "hello").unwrap();
    let out = weft(&[
        "multicluster",
        "install",
        "--trust-anchors",
        not_pem.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&not_pem);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no PEM certificate"), "{stderr}");
    let out = weft(&[
        "multicluster",
        "install",
        "--trust-anchors",
        "/nonexistent.pem",
        "--gateway-service-type",
        "External",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("LoadBalancer"),
        "{stderr}"
    );
    let out = weft(&["multicluster", "uninstall", "--namespace", "Not_A_Label"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--namespace"),
        "{stderr}"
    );
}

fn normalize(v: &mut Value, replacements: &[(String, String)]) {
    match v {
        Value::String(s) => {
            if let Some((_, to)) = replacements.iter().find(|(from, _)| from == s) {
                *s = to.clone();
            } else if s.contains(VERSION) {
                *s = s.replace(VERSION, "<version>");
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| normalize(i, replacements)),
        Value::Object(map) => map.values_mut().for_each(|i| normalize(i, replacements)),
        _ => {}
    }
}

fn first_difference(want: &str, got: &str) -> String {
    let line = want.lines().zip(got.lines()).position(|(a, b)| a != b);
    match line {
        Some(i) => format!(
            "line {}: golden {:?}, output {:?}",
            i + 1,
            want.lines().nth(i).unwrap(),
            got.lines().nth(i).unwrap()
        ),
        None => format!(
            "lengths differ: golden {} lines, output {}",
            want.lines().count(),
            got.lines().count()
        ),
    }
}

#[test]
fn help_shows_the_two_step_install() {
    let help = weft_stdout(&["install", "--help"]);
    let crds = help
        .find("weft install --crds | kubectl apply -f -")
        .expect("CRD step");
    let cp = help
        .find("weft install | kubectl apply -f -")
        .expect("control-plane step");
    assert!(crds < cp, "CRDs first:\n{help}");
    let help = weft_stdout(&["upgrade", "--help"]);
    assert!(help.contains("--identity-dir"), "{help}");
}
