//! `weft multicluster install` and `uninstall` as a user runs them: the gateway's manifests
//! parsed and checked for what the export API and the sidecars rely on (`docs/multicluster.md`,
//! "The gateway on Kubernetes"), validated offline (`kubernetes-validate --strict`) and compared
//! with a golden file: regenerate it with
//! `WEFT_UPDATE_GOLDEN=1 cargo test -p weft --test multicluster_install`.

#[path = "k8s/mod.rs"]
mod k8s;

use k8s::{
    assert_golden, find, parse_docs, selects_labels, validate, weft, weft_stdout, IdentityDir,
};
use serde_json::{json, Value};

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
        env_of(proxy, weft_proxy::config::ENV_INBOUND_GATEWAY_SUFFIXES),
        Some(&json!("svc.cluster.local."))
    );
    assert_eq!(
        env_of(proxy, weft_proxy::config::ENV_IDENTITY_TRUST_ANCHORS),
        Some(&json!(anchors))
    );
    assert_eq!(
        env_of(proxy, weft_proxy::config::ENV_IDENTITY_LOCAL_NAME),
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
