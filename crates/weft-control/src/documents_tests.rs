//! Which version of each document is in force: documents in, state and precise errors out.

use super::*;

fn svc(name: &str, port: u32) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{selector: {{app: {name}}}, ports: [{{port: {port}}}]}}\n")
}

fn svc_ip(name: &str, ip: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{selector: {{app: {name}}}, clusterIP: {ip}, ports: [{{port: 80}}]}}\n")
}

/// The store as (file, text) pairs, applied over `previous`.
fn apply(files: &[(&str, String)], previous: &InForce) -> (InForce, Vec<String>) {
    let parsed: Vec<(&str, ParsedFile)> = files
        .iter()
        .map(|(f, text)| (*f, parse_yaml_documents(f, text, &Defaults::default())))
        .collect();
    let refs: Vec<(&str, &ParsedFile)> = parsed.iter().map(|(f, p)| (*f, p)).collect();
    in_force(&refs, previous)
}

/// The port of service `name` in force, if any.
fn port(in_force: &InForce, name: &str) -> Option<u16> {
    state(in_force)
        .services
        .get(&("default".to_string(), name.to_string()))
        .map(|s| s.ports[0].port)
}

#[test]
fn a_good_and_a_bad_document_in_one_file() {
    let text = format!("{}---\n{}", svc("web", 80), svc("api", 70000));
    let (now, errors) = apply(&[("s.yaml", text)], &InForce::new());
    assert_eq!(port(&now, "web"), Some(80));
    assert_eq!(
        port(&now, "api"),
        None,
        "a document that never was valid applies nothing"
    );
    assert_eq!(
        errors,
        vec!["s.yaml: document 1: spec.ports[0].port: must be 1..65535, got 70000"]
    );
}

#[test]
fn a_document_that_becomes_bad_keeps_its_last_good_version_until_fixed() {
    let good = format!("{}---\n{}", svc("web", 80), svc("api", 81));
    let (v1, errors) = apply(&[("s.yaml", good)], &InForce::new());
    assert!(errors.is_empty(), "{errors:?}");

    // api breaks while web changes: web's new version applies, api keeps version 1.
    let broken = format!("{}---\n{}", svc("web", 90), svc("api", 70000));
    let (v2, errors) = apply(&[("s.yaml", broken.clone())], &v1);
    assert_eq!(port(&v2, "web"), Some(90));
    assert_eq!(port(&v2, "api"), Some(81));
    assert_eq!(
        errors,
        vec!["s.yaml: document 1: spec.ports[0].port: must be 1..65535, got 70000"]
    );
    // Still broken on the next load: still version 1.
    let (v3, _) = apply(&[("s.yaml", broken)], &v2);
    assert_eq!(port(&v3, "api"), Some(81));

    let fixed = format!("{}---\n{}", svc("web", 90), svc("api", 82));
    let (v4, errors) = apply(&[("s.yaml", fixed)], &v3);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(port(&v4, "api"), Some(82));
}

#[test]
fn removing_a_file_removes_its_documents() {
    let files = [("a.yaml", svc("web", 80)), ("b.yaml", svc("api", 81))];
    let (v1, _) = apply(&files, &InForce::new());
    let (v2, errors) = apply(&files[1..], &v1);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(port(&v2, "web"), None);
    assert_eq!(port(&v2, "api"), Some(81));
}

#[test]
fn an_unknown_kind_holds_nothing_back() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n".to_string();
    let (now, errors) = apply(
        &[("a.yaml", pod), ("b.yaml", svc("web", 80))],
        &InForce::new(),
    );
    assert_eq!(port(&now, "web"), Some(80));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("a.yaml: document 0: kind: unknown kind \"Pod\""));
}

#[test]
fn a_document_without_identity_keeps_its_files_previous_documents() {
    let good = format!("{}---\n{}", svc("web", 80), svc("api", 81));
    let (v1, _) = apply(&[("s.yaml", good)], &InForce::new());
    // The second document's name is no longer valid: it may be api being edited, so api stays;
    // web is still defined validly and takes its new version.
    let text = format!("{}---\n{}", svc("web", 90), svc("Api", 82));
    let (v2, errors) = apply(&[("s.yaml", text)], &v1);
    assert_eq!(port(&v2, "web"), Some(90));
    assert_eq!(port(&v2, "api"), Some(81));
    assert!(errors[0].starts_with("s.yaml: document 1: metadata.name: must be a DNS label"));

    // Invalid YAML hides every document from the error on: the file's others stay too.
    let (v3, errors) = apply(&[("s.yaml", "kind: [".to_string())], &v2);
    assert_eq!((port(&v3, "web"), port(&v3, "api")), (Some(90), Some(81)));
    assert!(
        errors[0].starts_with("s.yaml: document 0: invalid YAML: "),
        "{errors:?}"
    );
    // ... but not those another file now defines.
    let files = [
        ("s.yaml", "kind: [".to_string()),
        ("t.yaml", svc("web", 70)),
    ];
    let (v4, _) = apply(&files, &v3);
    assert_eq!((port(&v4, "web"), port(&v4, "api")), (Some(70), Some(81)));
}

#[test]
fn duplicates_are_both_reported_and_the_previous_version_stays() {
    let (v1, _) = apply(&[("a.yaml", svc("web", 80))], &InForce::new());
    let files = [("a.yaml", svc("web", 80)), ("b.yaml", svc("web", 90))];
    let (v2, errors) = apply(&files, &v1);
    assert_eq!(port(&v2, "web"), Some(80));
    assert_eq!(
        errors,
        vec![
            "a.yaml: document 0: metadata.name: duplicate Service default/web (also defined in b.yaml: document 0)",
            "b.yaml: document 0: metadata.name: duplicate Service default/web (first defined in a.yaml: document 0)",
        ]
    );
    // A duplicate that never had a good version applies nothing.
    let (v3, _) = apply(&files, &InForce::new());
    assert_eq!(port(&v3, "web"), None);
}

#[test]
fn a_cluster_ip_stays_with_its_holder() {
    let text = format!(
        "{}---\n{}",
        svc_ip("web", "10.0.0.1"),
        svc_ip("web2", "10.0.0.1")
    );
    let (v1, errors) = apply(&[("s.yaml", text)], &InForce::new());
    assert_eq!(
        errors,
        vec!["s.yaml: document 1: spec.clusterIP: 10.0.0.1 is already used by Service default/web"]
    );
    assert_eq!(port(&v1, "web2"), None);

    // web2 had 10.0.0.2; its new version takes web's IP: web2 keeps its previous version.
    let text = format!(
        "{}---\n{}",
        svc_ip("web", "10.0.0.1"),
        svc_ip("web2", "10.0.0.2")
    );
    let (v2, _) = apply(&[("s.yaml", text)], &v1);
    let text = format!(
        "{}---\n{}",
        svc_ip("web", "10.0.0.1"),
        svc_ip("web2", "10.0.0.1")
    );
    let (v3, errors) = apply(&[("s.yaml", text)], &v2);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let ip = |v: &InForce, n: &str| {
        state(v).services[&("default".to_string(), n.to_string())]
            .cluster_ip
            .map(|ip| ip.to_string())
    };
    assert_eq!(ip(&v3, "web").as_deref(), Some("10.0.0.1"));
    assert_eq!(ip(&v3, "web2").as_deref(), Some("10.0.0.2"));
}

#[test]
fn invalid_yaml_names_the_line_and_column() {
    // Lines count from the top of the file, not of the document.
    let text = format!(
        "{}---\nkind: Service\nmetadata: {{name: [web}}\n",
        svc("api", 80)
    );
    let parsed = parse_yaml_documents("s.yaml", &text, &Defaults::default());
    assert_eq!(parsed.docs.len(), 1);
    let errors: Vec<&String> = parsed.errors().collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("s.yaml: document 1: invalid YAML: ")
            && errors[0].contains("at line 7 column 22"),
        "{errors:?}"
    );
}

fn http_route(group_version: &str, name: &str, weight: &str) -> String {
    format!("apiVersion: {group_version}\nkind: HTTPRoute\nmetadata: {{name: {name}}}\nspec:\n  parentRefs: [{{group: core, kind: Service, name: web}}]\n  rules: [{{backendRefs: [{{name: web, port: 80, weight: {weight}}}]}}]\n")
}

#[test]
fn routes_are_documents_like_the_others() {
    // The two HTTPRoute kinds are different resources, even with one name.
    let gw = http_route("gateway.networking.k8s.io/v1", "r", "1");
    let l5d = http_route("policy.linkerd.io/v1beta3", "r", "1");
    let (good, errors) = apply(&[("r.yaml", format!("{gw}---\n{l5d}"))], &InForce::new());
    assert!(errors.is_empty(), "{errors:?}");
    let s = state_seen(
        &good,
        &HashMap::from([(good.keys().next().unwrap().clone(), 42)]),
    );
    assert_eq!(s.routes.len(), 2);
    let created: Vec<Option<i64>> = s.routes.values().map(|r| r.created).collect();
    assert!(
        created.contains(&Some(42)) && created.contains(&None),
        "{created:?}"
    );

    // A bad version keeps the last good one in force, with a precise error.
    let (after, errors) = apply(
        &[(
            "r.yaml",
            format!(
                "{}---\n{l5d}",
                http_route("gateway.networking.k8s.io/v1", "r", "-1")
            ),
        )],
        &good,
    );
    assert_eq!(
        errors,
        ["r.yaml: document 0: spec.rules[0].backendRefs[0].weight: must be 0..1000000, got -1"]
    );
    assert_eq!(after, good);

    // Two versions of one route are both reported; the route keeps its previous version.
    let (after, errors) = apply(&[("a.yaml", gw.clone()), ("b.yaml", gw)], &good);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("duplicate HTTPRoute.gateway.networking.k8s.io default/r"));
    assert_eq!(state(&after).routes.len(), 1);
}

#[test]
fn tls_and_tcp_routes_are_documents_too() {
    let tls = |hostname: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1alpha3\nkind: TLSRoute\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{group: policy.linkerd.io, kind: EgressNetwork, name: internet}}]\n  hostnames: [{hostname}]\n  rules: [{{}}]\n")
    };
    let tcp = "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{group: policy.linkerd.io, kind: EgressNetwork, name: internet}]\n  rules: [{}]\n";
    let (good, errors) = apply(
        &[("r.yaml", format!("{}---\n{tcp}", tls("api.example.com")))],
        &InForce::new(),
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(state(&good).routes.len(), 2, "two kinds, two resources");
    // A bad version keeps the last good one in force.
    let (after, errors) = apply(
        &[("r.yaml", format!("{}---\n{tcp}", tls("1.2.3.4")))],
        &good,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("r.yaml: document 0: spec.hostnames[0]: must be a DNS name"));
    assert_eq!(after, good);
}
