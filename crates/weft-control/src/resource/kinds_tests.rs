use super::*;
use crate::documents::parse_yaml_documents;
use crate::resource::Defaults;
use std::collections::BTreeSet;

/// Versions a document might name, beyond the table's.
const CANDIDATE_VERSIONS: &[&str] = &[
    "v1", "v1alpha1", "v1alpha2", "v1alpha3", "v1beta1", "v1beta2", "v1beta3", "v2",
];

/// Kinds a document might name: the table's and their neighbours upstream.
const CANDIDATE_KINDS: &[&str] = &[
    "Namespace",
    "Service",
    "Pod",
    "EndpointSlice",
    "Endpoints",
    "ServiceAccount",
    "Deployment",
    "ConfigMap",
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
    "TLSRoute",
    "TCPRoute",
    "UDPRoute",
    "Server",
    "ServerAuthorization",
    "AuthorizationPolicy",
    "MeshTLSAuthentication",
    "NetworkAuthentication",
    "HTTPLocalRateLimitPolicy",
    "EgressNetwork",
    "ExternalWorkload",
    "ExternalGroup",
    "FaultInjection",
    "ServiceProfile",
    "Link",
    "Secret",
];

/// The errors of one document of `kind` at `api_version`, named `web` (in `default` when
/// namespaced), with an empty spec.
fn errors(kind: &str, api_version: &str) -> (Option<String>, Vec<String>) {
    let text = format!(
        "apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: web, namespace: default}}\nspec: {{}}\n"
    );
    let parsed = parse_yaml_documents("t.yaml", &text, &Defaults::default());
    match (parsed.docs.first(), parsed.bad.first()) {
        (Some(doc), _) => (Some(doc.key().kind.to_string()), Vec::new()),
        (None, Some(bad)) => (
            bad.key.as_ref().map(|k| k.kind.to_string()),
            bad.errors.clone(),
        ),
        (None, None) => panic!("{text}: neither valid nor invalid"),
    }
}

fn names_api_version(errors: &[String]) -> bool {
    errors.iter().any(|e| e.contains(": apiVersion: "))
}

#[test]
fn every_version_the_table_lists_is_accepted_and_no_other() {
    for row in KINDS.iter().filter(|k| k.is_document()) {
        for version in CANDIDATE_VERSIONS.iter().chain(row.versions) {
            let api_version = row.api_version(version);
            let (key, errs) = errors(row.kind, &api_version);
            if row.versions.contains(version) {
                assert!(
                    !names_api_version(&errs),
                    "{api_version} {}: {errs:?}",
                    row.kind
                );
                assert_eq!(key.as_deref(), Some(row.key), "{api_version} {}", row.kind);
            } else {
                assert!(
                    names_api_version(&errs),
                    "{api_version} {}: {errs:?}",
                    row.kind
                );
            }
        }
        assert!(row.versions.contains(&row.stored), "{}", row.key);
    }
}

#[test]
fn every_kind_documents_accept_is_in_the_table_and_no_other() {
    let table: BTreeSet<&str> = KINDS
        .iter()
        .filter(|k| k.is_document())
        .map(|k| k.kind)
        .collect();
    for kind in CANDIDATE_KINDS {
        // Any version: an unknown kind is refused before its version is read.
        let (_, errs) = errors(kind, "v1");
        let unknown = errs.iter().any(|e| e.contains("unknown kind"));
        assert_eq!(unknown, !table.contains(kind), "{kind}: {errs:?}");
    }
    for kind in &table {
        assert!(CANDIDATE_KINDS.contains(kind), "{kind}");
    }
    // Pods and EndpointSlices are watched, never documents.
    for row in KINDS.iter().filter(|k| !k.is_document()) {
        assert_eq!(row.origin, Origin::Kubernetes, "{}", row.kind);
    }
}

#[test]
fn rows_are_unique_and_consistent() {
    let mut keys = BTreeSet::new();
    let mut resources = BTreeSet::new();
    for row in KINDS {
        assert!(keys.insert(row.key), "{} twice", row.key);
        assert!(
            resources.insert((row.group, row.plural)),
            "{}.{} twice",
            row.plural,
            row.group
        );
        assert_eq!(find(row.group, row.kind).map(|k| k.key), Some(row.key));
        if row.is_document() {
            assert_eq!(by_key(row.key).map(|k| k.group), Some(row.group));
        }
        let crd = row.crd_versions();
        assert_eq!(crd[0], row.stored);
        assert_eq!(crd.len(), row.versions.len().max(1), "{}", row.key);
    }
    let tls = find(GATEWAY_GROUP, "TLSRoute").unwrap();
    assert_eq!(tls.crd_versions(), ["v1alpha2", "v1alpha3"]);
    assert_eq!(
        tls.text_name("shop", "web"),
        "TLSRoute.gateway.networking.k8s.io/shop/web"
    );
    let ns = find(CORE_GROUP, "Namespace").unwrap();
    assert_eq!(ns.text_name("", "shop"), "Namespace/shop");
    assert_eq!(ns.api_version("v1"), "v1");
}

#[test]
fn secrets_are_watched_by_their_type_only() {
    let secret = find(CORE_GROUP, super::super::multicluster::SECRET_KIND).unwrap();
    let selector = format!(
        "type={}",
        super::super::multicluster::CREDENTIALS_SECRET_TYPE
    );
    assert_eq!(secret.field_selector, Some(selector.as_str()));
    assert_eq!(SECRET_FIELD_SELECTOR, selector);
    assert_eq!(
        secret.watch_namespace,
        Some(super::super::multicluster::DEFAULT_LINK_NAMESPACE)
    );
}
