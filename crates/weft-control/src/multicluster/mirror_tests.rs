//! The documents a Link's exports generate: what they are, and that the store takes them.

use super::*;
use crate::documents::{in_force, parse_yaml_documents, state, InForce, ParsedFile};
use crate::multicluster::export::{ExportedEndpoint, ExportedPort};
use crate::resource::multicluster::{default_selectors, Gateway, ProbeSpec};
use crate::resource::Defaults;

fn link(gateway: bool) -> Link {
    let [selector, remote_discovery_selector, federated_selector] = default_selectors();
    Link {
        name: "west".into(),
        namespace: "weft-multicluster".into(),
        target_cluster_name: "west".into(),
        target_cluster_domain: "west.local".into(),
        target_cluster_namespace: "weft".into(),
        credentials_secret: "creds".into(),
        gateway: gateway.then(|| Gateway {
            address: "10.1.0.1".parse().unwrap(),
            port: 4143,
            identity: "gw.west".into(),
        }),
        probe: ProbeSpec::default(),
        selector,
        remote_discovery_selector,
        federated_selector,
    }
}

fn exported(name: &str, mode: Option<ExportMode>, federated: bool, label: &str) -> ExportedService {
    let mut labels = BTreeMap::new();
    if let Some(v) = label.split_once('=') {
        labels.insert(v.0.to_string(), v.1.to_string());
    }
    ExportedService {
        namespace: "default".into(),
        name: name.into(),
        mode,
        federated,
        labels,
        ports: vec![ExportedPort {
            name: Some("http".into()),
            port: 80,
            protocol: "TCP".into(),
            app_protocol: None,
        }],
        opaque_ports: Vec::new(),
        endpoints: vec![ExportedEndpoint {
            address: "10.1.0.21".parse().unwrap(),
            ports: BTreeMap::from([("80".to_string(), 8080)]),
            identity: format!("spiffe://west.local/ns/default/sa/{name}-1"),
            server_name: format!("{name}-1.default.serviceaccount.identity.weft.west.local"),
            opaque_transport_port: Some(4143),
            workload: format!("{name}-1"),
        }],
    }
}

/// The generated documents, as the store core takes them: every one valid.
fn applied(m: &Mirror) -> State {
    let texts: Vec<(String, ParsedFile)> = m
        .texts
        .iter()
        .map(|(name, docs)| {
            let text = docs
                .iter()
                .map(|d| yaml_serde::to_string(d).unwrap())
                .collect::<Vec<_>>()
                .join("---\n");
            let parsed = parse_yaml_documents(name, &text, &Defaults::default());
            assert!(parsed.bad.is_empty(), "{:?}", parsed.bad);
            (name.clone(), parsed)
        })
        .collect();
    let files: Vec<(&str, &ParsedFile)> = texts.iter().map(|(n, p)| (n.as_str(), p)).collect();
    let (docs, errors) = in_force(&files, &InForce::new());
    assert!(errors.is_empty(), "{errors:?}");
    state(&docs)
}

#[test]
fn gateway_and_remote_discovery_mirrors() {
    let l = link(true);
    let services = [
        exported(
            "web",
            Some(ExportMode::Gateway),
            false,
            "mirror.linkerd.io/exported=true",
        ),
        exported(
            "api",
            Some(ExportMode::RemoteDiscovery),
            false,
            "mirror.linkerd.io/exported=remote-discovery",
        ),
    ];
    let remote = Remote {
        link: &l,
        services: Some(&services),
        gateway_alive: false,
    };
    let m = mirror(&[remote], &State::default());
    assert_eq!(
        m.counts[&("weft-multicluster".into(), "west".into())],
        (2, 0)
    );
    let s = applied(&m);
    let key = |n: &str| ("default".to_string(), n.to_string());
    let web = &s.services[&key("web-west")];
    assert_eq!(
        web.annotations[REMOTE_SVC_FQ_NAME_ANNOTATION],
        "web.default.svc.west.local"
    );
    assert_eq!(
        web.annotations[REMOTE_GATEWAY_IDENTITY_ANNOTATION],
        "gw.west"
    );
    assert_eq!(web.labels[CLUSTER_NAME_LABEL], "west");
    assert_eq!(web.ports[0].target_port, TargetPort::Number(4143));
    let gw = &s.workloads[&key("west-gateway")];
    assert!(!gw.ready(), "the probe failed: the gateway is no endpoint");
    assert_eq!(
        (gw.server_name.as_str(), gw.inbound_port),
        ("gw.west", Some(4143))
    );
    let api = &s.services[&key("api-west")];
    assert!(!api
        .annotations
        .contains_key(REMOTE_GATEWAY_IDENTITY_ANNOTATION));
    let eps = crate::index::service_endpoints(&s, api, 80);
    let ep = eps.values().next().expect("west's pod");
    assert_eq!(ep.addr.to_string(), "10.1.0.21:8080");
    assert_eq!(
        ep.server_name,
        "api-1.default.serviceaccount.identity.weft.west.local"
    );
}

#[test]
fn link_selectors_and_a_missing_gateway_limit_what_is_mirrored() {
    let mut l = link(false);
    let services = [
        exported(
            "web",
            Some(ExportMode::Gateway),
            false,
            "mirror.linkerd.io/exported=true",
        ),
        exported("api", Some(ExportMode::RemoteDiscovery), false, "tier=db"),
    ];
    l.remote_discovery_selector = crate::resource::authz::LabelSelector {
        match_labels: BTreeMap::from([("tier".to_string(), "web".to_string())]),
        match_expressions: Vec::new(),
    };
    let remote = Remote {
        link: &l,
        services: Some(&services),
        gateway_alive: true,
    };
    let m = mirror(&[remote], &State::default());
    let s = applied(&m);
    assert!(
        s.services.is_empty(),
        "no gateway, no matching selector: {:?}",
        s.services.keys()
    );
    assert!(s.workloads.is_empty());
}

#[test]
fn federated_members_of_links_and_the_local_one() {
    let l = link(false);
    let services = [exported(
        "db",
        None,
        true,
        "mirror.linkerd.io/federated=member",
    )];
    let local = crate::documents::state_of(
        "apiVersion: v1\nkind: Service\nmetadata: {name: db, labels: {mirror.linkerd.io/federated: member}, annotations: {balancer.linkerd.io/failure-accrual: consecutive, retry.linkerd.io/http: 5xx, config.linkerd.io/opaque-ports: '6000'}}\nspec: {selector: {app: db}, ports: [{port: 80, targetPort: 6000}]}\n",
    );
    let remote = Remote {
        link: &l,
        services: Some(&services),
        gateway_alive: true,
    };
    let m = mirror(&[remote], &local);
    assert_eq!(
        m.counts[&("weft-multicluster".into(), "west".into())],
        (0, 1)
    );
    let s = applied(&m);
    let fed = &s.services[&("default".to_string(), "db-federated".to_string())];
    assert_eq!(fed.annotations[LOCAL_DISCOVERY_ANNOTATION], "db");
    assert_eq!(fed.annotations[REMOTE_DISCOVERY_ANNOTATION], "db@west");
    // The local member's client policy is the federated Service's; nothing else of it is.
    assert_eq!(
        fed.annotations["balancer.linkerd.io/failure-accrual"],
        "consecutive"
    );
    assert_eq!(fed.annotations["retry.linkerd.io/http"], "5xx");
    assert!(!fed
        .annotations
        .contains_key("config.linkerd.io/opaque-ports"));
    let eps = crate::index::service_endpoints(&s, fed, 80);
    assert_eq!(
        eps.keys().map(|a| a.to_string()).collect::<Vec<_>>(),
        ["10.1.0.21:8080"]
    );

    // Expired (no exports): the local member alone still makes the federated Service.
    let remote = Remote {
        link: &l,
        services: None,
        gateway_alive: true,
    };
    let s = applied(&mirror(&[remote], &local));
    let fed = &s.services[&("default".to_string(), "db-federated".to_string())];
    assert!(!fed.annotations.contains_key(REMOTE_DISCOVERY_ANNOTATION));
    // No Link at all: nothing is generated.
    assert!(mirror(&[], &local).texts.is_empty());
}

#[test]
fn long_names_are_shortened_to_unique_dns_labels() {
    let long = "a".repeat(40);
    let (x, y) = (
        generated_name(&[&long, "west", "workload-1"]),
        generated_name(&[&long, "west", "workload-2"]),
    );
    assert!(x.len() <= 63 && dns_label(&x).is_ok(), "{x}");
    assert_ne!(x, y);
    assert_eq!(generated_name(&["web", "west"]), "web-west");
}
