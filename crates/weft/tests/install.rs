//! `weft install` and `weft upgrade` as a user runs them: the printed manifests parsed, every
//! object checked for the names and ports other parts rely on (`docs/kubernetes.md`), and the
//! whole output validated offline against the Kubernetes OpenAPI schemas
//! (`kubernetes-validate --strict`). The default output is compared with a golden file:
//! regenerate it with `WEFT_UPDATE_GOLDEN=1 cargo test -p weft --test install`. The shared
//! helpers (identity directory, validation, golden files) are in `k8s/mod.rs`.

#[path = "k8s/mod.rs"]
mod k8s;

use std::path::Path;

use base64::Engine as _;
use k8s::{
    assert_golden, find, parse_docs, selects_labels, validate, weft, weft_stdout, IdentityDir,
};
use serde_json::{json, Value};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const GOLDEN: &str = "tests/golden/install.yaml";

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
