//! Validation of `Link` and the credentials `Secret`: values out, or errors naming the field.

use super::*;
use crate::documents::{parse_one as parse, state_of};

fn link(spec: &str) -> String {
    format!(
        "apiVersion: multicluster.linkerd.io/v1alpha2\nkind: Link\nmetadata: {{name: west, namespace: weft-multicluster}}\nspec: {spec}\n"
    )
}

fn secret(kind: &str, kubeconfig: &str) -> String {
    let data = base64::engine::general_purpose::STANDARD.encode(kubeconfig);
    format!(
        "apiVersion: v1\nkind: Secret\ntype: {kind}\nmetadata: {{name: cluster-credentials-west, namespace: weft-multicluster}}\ndata: {{kubeconfig: {data}}}\n"
    )
}

#[test]
fn a_link_as_linkerd_writes_it() {
    let r = parse(&link(
        r#"{targetClusterName: west, targetClusterDomain: west.local, targetClusterLinkerdNamespace: linkerd,
            clusterCredentialsSecret: cluster-credentials-west, gatewayAddress: 10.1.0.5, gatewayPort: "4143",
            gatewayIdentity: linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.west.local,
            probeSpec: {path: /ready, port: "4191", period: 3s, failureThreshold: "5", timeout: 1s},
            selector: {matchLabels: {mirror.linkerd.io/exported: "true"}},
            remoteDiscoverySelector: {matchExpressions: [{key: tier, operator: In, values: [web]}]}}"#,
    ))
    .unwrap();
    let Resource::Link(l) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        (l.namespace.as_str(), l.name.as_str()),
        ("weft-multicluster", "west")
    );
    assert_eq!(l.target_cluster_domain, "west.local");
    assert_eq!(l.target_cluster_namespace, "linkerd");
    assert_eq!(l.credentials_secret, "cluster-credentials-west");
    let g = l.gateway.expect("gateway");
    assert_eq!(
        (g.address, g.port),
        ("10.1.0.5".parse::<IpAddr>().unwrap(), 4143)
    );
    assert_eq!(
        l.probe,
        ProbeSpec {
            path: "/ready".into(),
            port: 4191,
            period: Duration::from_secs(3),
            failure_threshold: 5,
            timeout: Duration::from_secs(1),
        }
    );
    let labels = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    assert!(l.selector.matches(&labels(EXPORTED_LABEL, "true")));
    assert!(l.remote_discovery_selector.matches(&labels("tier", "web")));
    assert!(!l
        .remote_discovery_selector
        .matches(&labels(EXPORTED_LABEL, "remote-discovery")));
    // Not written: Linkerd's default.
    assert!(l
        .federated_selector
        .matches(&labels(FEDERATED_LABEL, "member")));
}

#[test]
fn a_minimal_link_takes_the_defaults() {
    for version in [
        "multicluster.linkerd.io/v1alpha1",
        "multicluster.linkerd.io/v1alpha2",
        "multicluster.linkerd.io/v1alpha3",
    ] {
        let text = link("{targetClusterName: west, clusterCredentialsSecret: creds}")
            .replace("multicluster.linkerd.io/v1alpha2", version);
        let Resource::Link(l) = parse(&text).unwrap() else {
            panic!()
        };
        assert_eq!(l.target_cluster_domain, "cluster.local");
        assert_eq!(l.target_cluster_namespace, "weft");
        assert_eq!(l.gateway, None, "no gateway: remote discovery only");
        assert_eq!(l.probe, ProbeSpec::default());
        assert_eq!(
            [
                l.selector,
                l.remote_discovery_selector,
                l.federated_selector
            ],
            default_selectors()
        );
    }
}

#[test]
fn every_bad_link_field_is_named() {
    let e = parse(&link(
        r#"{targetClusterName: West_1, targetClusterDomain: "a..b", clusterCredentialsSecret: "",
            gatewayAddress: gw.example, gatewayPort: "70000",
            probeSpec: {path: ready, port: x, period: soon, failureThreshold: "0"},
            selector: {matchExpressions: [{key: a, operator: Maybe}]}}"#,
    ))
    .unwrap_err();
    let p = "a.yaml: document 0: ";
    let expected = [
        format!("{p}spec.targetClusterName: must be a DNS label (1-63 characters a-z, 0-9, '-', starting and ending with a letter or digit), got \"West_1\""),
        format!("{p}spec.targetClusterDomain: must be a DNS name, got \"a..b\""),
        format!("{p}spec.clusterCredentialsSecret: expected a non-empty string, got \"\""),
        format!("{p}spec.gatewayPort: must be a port 1..65535, got \"70000\""),
        format!("{p}spec.gatewayAddress: must be an IP address (Weft does not resolve gateway host names), got \"gw.example\""),
        format!("{p}spec.probeSpec.path: must start with '/', got \"ready\""),
        format!("{p}spec.probeSpec.port: must be a port 1..65535, got \"x\""),
    ];
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(&e[i], want, "{e:#?}");
    }
    assert!(
        e[7].starts_with(&format!("{p}spec.probeSpec.period: ")),
        "{e:#?}"
    );
    assert_eq!(
        e[8],
        format!(
            "{p}spec.probeSpec.failureThreshold: must be a whole number of at least 1, got \"0\""
        )
    );
    assert_eq!(e[9], format!("{p}spec.selector.matchExpressions[0].operator: must be one of In, NotIn, Exists, DoesNotExist; got \"Maybe\""));
    assert_eq!(e.len(), 10, "{e:#?}");

    let e = parse(&link(
        "{targetClusterName: west, clusterCredentialsSecret: c, gatewayAddress: 10.0.0.1}",
    ))
    .unwrap_err();
    assert_eq!(e, [format!("{p}spec.gatewayIdentity: required with spec.gatewayAddress (the identity the gateway's TLS proves)")]);
    let e = parse(&link("{clusterCredentialsSecret: c}").replace("v1alpha2", "v2")).unwrap_err();
    assert_eq!(e, [
        format!("{p}apiVersion: must be multicluster.linkerd.io/v1alpha2 or multicluster.linkerd.io/v1alpha1 or multicluster.linkerd.io/v1alpha3 for kind Link, got \"multicluster.linkerd.io/v2\""),
        format!("{p}spec.targetClusterName: required"),
    ]);
}

#[test]
fn credentials_secret_reads_the_current_context() {
    let cfg = kubeconfig("west", "link-east", "http://10.1.0.1:8085", "weft-link-abc");
    let Resource::Secret(s) = parse(&secret(CREDENTIALS_SECRET_TYPE, &cfg)).unwrap() else {
        panic!()
    };
    assert_eq!(
        (s.name.as_str(), s.server.as_str(), s.token.as_str()),
        (
            "cluster-credentials-west",
            "http://10.1.0.1:8085",
            "weft-link-abc"
        )
    );
    assert_eq!(s.user, "link-east", "the credential's name at west");
    // The document `weft multicluster link` writes reads back the same.
    let doc = credentials_secret_document("cluster-credentials-west", "weft-multicluster", &cfg);
    let again = crate::resource::validate_one(&doc, "x", &Default::default()).unwrap();
    assert_eq!(again, Resource::Secret(s));
}

#[test]
fn other_secrets_and_bad_kubeconfigs_are_refused_precisely() {
    let p = "a.yaml: document 0: ";
    let e = parse(&secret("Opaque", "x")).unwrap_err();
    assert_eq!(e, [format!("{p}type: must be \"mirror.linkerd.io/remote-kubeconfig\" (the store keeps no other Secrets), got \"Opaque\"")]);
    let e = parse(
        "apiVersion: v1\nkind: Secret\ntype: mirror.linkerd.io/remote-kubeconfig\nmetadata: {name: c}\ndata: {kubeconfig: '!!'}\n",
    )
    .unwrap_err();
    assert!(
        e[0].starts_with(&format!("{p}data.kubeconfig: not base64: ")),
        "{e:?}"
    );
    let e = parse(&secret(
        CREDENTIALS_SECRET_TYPE,
        "current-context: west\ncontexts: []\n",
    ))
    .unwrap_err();
    assert_eq!(
        e,
        [format!(
            "{p}data.kubeconfig: contexts: no context named \"west\""
        )]
    );
    let cfg = kubeconfig("west", "west", "10.1.0.1:8085", "");
    let e = parse(&secret(CREDENTIALS_SECRET_TYPE, &cfg)).unwrap_err();
    assert_eq!(e, [
        format!("{p}data.kubeconfig: clusters[\"west\"].cluster.server: must be an http:// URL of the remote control plane's API, got \"10.1.0.1:8085\""),
        format!("{p}data.kubeconfig: users[\"west\"].user.token: required (the link token the remote control plane minted)"),
    ]);
}

#[test]
fn links_secrets_and_service_labels_are_in_the_state() {
    let cfg = kubeconfig("west", "west", "http://10.1.0.1:8085", "t");
    let text = format!(
        "{}---\n{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, labels: {{mirror.linkerd.io/exported: remote-discovery}}}}\nspec: {{selector: {{app: web}}, ports: [{{port: 80}}]}}\n",
        link("{targetClusterName: west, clusterCredentialsSecret: cluster-credentials-west}"),
        secret(CREDENTIALS_SECRET_TYPE, &cfg)
    );
    let s = state_of(&text);
    let key = ("weft-multicluster".to_string(), "west".to_string());
    assert_eq!(s.links[&key].credentials_secret, "cluster-credentials-west");
    let key = (
        "weft-multicluster".to_string(),
        "cluster-credentials-west".to_string(),
    );
    assert_eq!(s.secrets[&key].token, "t");
    let web = &s.services[&("default".to_string(), "web".to_string())];
    assert_eq!(export_mode(&web.labels), Some(ExportMode::RemoteDiscovery));
    assert!(!is_federated(&web.labels));
}

#[test]
fn link_documents_from_credentials_are_valid_and_read_back() {
    let creds = serde_json::json!({
        "token": "weft-link", "cluster": {"name": "west", "domain": "west.local", "controlNamespace": "weft"},
        "gateways": [{"address": "10.1.0.1", "port": 4143, "identity": "gw.west", "probePort": 4191, "probePath": "/ready"}],
        "trustAnchorsPem": "",
    });
    let [link, secret] = link_documents(
        "west",
        DEFAULT_LINK_NAMESPACE,
        "http://10.1.0.2:8085",
        "link-east",
        &creds,
    )
    .unwrap();
    let d = Default::default();
    let Resource::Link(l) = crate::resource::validate_one(&link, "link", &d).unwrap() else {
        panic!()
    };
    assert_eq!(l.target_cluster_domain, "west.local");
    assert_eq!(l.credentials_secret, "cluster-credentials-west");
    assert_eq!(l.gateway.unwrap().identity, "gw.west");
    assert_eq!(l.probe, ProbeSpec::default());
    let Resource::Secret(s) = crate::resource::validate_one(&secret, "secret", &d).unwrap() else {
        panic!()
    };
    assert_eq!(
        (s.server.as_str(), s.token.as_str(), s.user.as_str()),
        ("http://10.1.0.2:8085", "weft-link", "link-east")
    );
    // Without a gateway: a link for remote discovery only.
    let bare = serde_json::json!({"token": "t", "cluster": {}, "gateways": []});
    let [link, _] = link_documents("west", "x", "http://h:1", "c", &bare).unwrap();
    let Resource::Link(l) = crate::resource::validate_one(&link, "link", &d).unwrap() else {
        panic!()
    };
    assert_eq!(l.gateway, None);
    assert!(link_documents("west", "x", "http://h:1", "c", &serde_json::json!({})).is_err());
}
