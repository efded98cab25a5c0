//! Validator tests: documents in, values or precise errors out.

use super::*;
use crate::documents::parse_yaml_file;

#[test]
fn valid_documents_and_defaults() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web, annotations: {config.linkerd.io/opaque-ports: '6379'}}\nspec:\n  selector: {app: web}\n  clusterIP: 198.18.0.10\n  ports: [{port: 8080, targetPort: http}]\n---\n---\napiVersion: workload.linkerd.io/v1beta1\nkind: ExternalWorkload\nmetadata: {name: web-1, labels: {app: web}}\nspec:\n  workloadIPs: [{ip: 127.0.0.1}]\n  ports: [{name: http, port: 18080}]\n";
    let (docs, errors) = parse_yaml_file("a.yaml", text, &Defaults::default());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(docs.len(), 2);
    let Resource::Workload(w) = &docs[1].resource else {
        panic!("not a workload")
    };
    assert_eq!(docs[1].index, 2);
    assert_eq!(w.namespace, "default");
    assert_eq!(
        w.server_name,
        "web-1.default.serviceaccount.identity.weft.cluster.local"
    );
    assert_eq!(w.identity, "spiffe://cluster.local/ns/default/sa/web-1");
    let Resource::Service(s) = &docs[0].resource else {
        panic!("not a service")
    };
    assert!(s.is_opaque(6379));
    assert!(!s.is_opaque(8080));
    assert_eq!(s.ports[0].target_port, TargetPort::Name("http".into()));
}

#[test]
fn precise_errors() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: Web}\nspec:\n  selector: {app: web}\n  ports: [{port: 70000}]\n---\nkind: Pod\napiVersion: v1\nmetadata: {name: x}\n";
    let (docs, errors) = parse_yaml_file("services.yaml", text, &Defaults::default());
    assert!(docs.is_empty());
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].starts_with("services.yaml: document 0: metadata.name: must be a DNS label"));
    assert_eq!(
        errors[1],
        "services.yaml: document 0: spec.ports[0].port: must be 1..65535, got 70000"
    );
    assert!(errors[2].starts_with("services.yaml: document 1: kind: unknown kind \"Pod\""));
}

#[test]
fn a_workload_may_be_named_as_a_pod_a_service_not() {
    let doc = |kind: &str, api: &str, name: &str, spec: &str| {
        format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name}}}\nspec: {spec}\n")
    };
    let workload = |name: &str| {
        let spec = "{workloadIPs: [{ip: 10.0.1.5}]}";
        doc(
            "ExternalWorkload",
            "workload.linkerd.io/v1beta1",
            name,
            spec,
        )
    };
    let d = Defaults::default();
    let (docs, errors) = parse_yaml_file("a.yaml", &workload("etcd-ip-10-0-1-5.ec2.internal"), &d);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(docs.len(), 1);
    for bad in ["etcd..internal", "Etcd.internal", &"a".repeat(254)] {
        let (_, errors) = parse_yaml_file("a.yaml", &workload(bad), &d);
        assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
        assert!(
            errors[0].contains("metadata.name: must be a DNS subdomain"),
            "{errors:?}"
        );
    }
    let service = doc(
        "Service",
        "v1",
        "web.internal",
        "{selector: {app: web}, ports: [{port: 80}]}",
    );
    let (_, errors) = parse_yaml_file("a.yaml", &service, &d);
    assert!(
        errors[0].contains("metadata.name: must be a DNS label"),
        "{errors:?}"
    );
}

#[test]
fn port_lists() {
    assert_eq!(
        parse_port_list("25, 5432-5433").unwrap(),
        BTreeSet::from([25, 5432, 5433])
    );
    assert!(parse_port_list("0").is_err());
    assert!(parse_port_list("9-3").is_err());
}

#[test]
fn inbound_port_annotation() {
    let doc = |value: &str| {
        format!(
            "apiVersion: workload.linkerd.io/v1beta1\nkind: ExternalWorkload\nmetadata: {{name: db-1, annotations: {{config.linkerd.io/inbound-port: '{value}'}}}}\nspec:\n  workloadIPs: [{{ip: 198.18.0.4}}]\n  ports: [{{port: 5432}}]\n"
        )
    };
    let (docs, errors) = parse_yaml_file("w.yaml", &doc("4143"), &Defaults::default());
    assert!(errors.is_empty(), "{errors:?}");
    let Resource::Workload(w) = &docs[0].resource else {
        panic!("not a workload")
    };
    assert_eq!(w.inbound_port, Some(4143));
    for bad in ["0", "70000", "http"] {
        let (docs, errors) = parse_yaml_file("w.yaml", &doc(bad), &Defaults::default());
        assert!(docs.is_empty(), "{bad}: accepted");
        assert_eq!(
            errors,
            vec![format!(
                "w.yaml: document 0: metadata.annotations[\"config.linkerd.io/inbound-port\"]: \"{bad}\" is not a port 1..65535"
            )]
        );
    }
}

#[test]
fn the_admin_address_is_the_first_ip_and_the_linkerd_admin_port() {
    let text = "apiVersion: workload.linkerd.io/v1beta1\nkind: ExternalWorkload\nmetadata: {name: web-1}\nspec:\n  workloadIPs: [{ip: 198.18.2.10}, {ip: 198.18.2.11}]\n  ports: [{name: http, port: 8080}, {name: linkerd-admin, port: 4191}]\n---\napiVersion: workload.linkerd.io/v1beta1\nkind: ExternalWorkload\nmetadata: {name: web-2}\nspec:\n  workloadIPs: [{ip: 198.18.2.12}]\n  ports: [{name: http, port: 8080}, {port: 4191}]\n";
    let (docs, errors) = parse_yaml_file("a.yaml", text, &Defaults::default());
    assert!(errors.is_empty(), "{errors:?}");
    let admin = |i: usize| match &docs[i].resource {
        Resource::Workload(w) => w.admin_addr(),
        _ => panic!("not a workload"),
    };
    assert_eq!(admin(0), Some("198.18.2.10:4191".parse().expect("addr")));
    // Only the name says which port is the proxy's admin.
    assert_eq!(admin(1), None);
}
