//! Validation of `HTTPLocalRateLimitPolicy`: values out, or errors naming the field.

use super::*;
use crate::documents::parse_one as parse;

fn errors(text: &str) -> Vec<String> {
    parse(text).expect_err("invalid")
}

/// A policy of namespace `shop` with this `spec` (flow mapping).
fn policy(spec: &str) -> String {
    format!(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: HTTPLocalRateLimitPolicy\nmetadata: {{name: web-rl, namespace: shop}}\nspec: {spec}\n"
    )
}

const TARGET: &str = "targetRef: {group: policy.linkerd.io, kind: Server, name: web-http}";

#[test]
fn rate_limit_policy_with_every_field() {
    let r = parse(
        "apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: {name: web-rl, namespace: shop, creationTimestamp: '2024-05-01T12:00:00Z'}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: web-http}
  total: {requestsPerSecond: 100}
  identity: {requestsPerSecond: 20}
  overrides:
  - requestsPerSecond: 25
    clientRefs: [{kind: ServiceAccount, name: special}, {kind: ServiceAccount, name: ops, namespace: infra}]
",
    )
    .unwrap();
    assert_eq!(
        r,
        Resource::RateLimit(RateLimitPolicy {
            name: "web-rl".into(),
            namespace: "shop".into(),
            created: Some(1714564800),
            server: "web-http".into(),
            total: Some(100),
            identity: Some(20),
            overrides: vec![Override {
                requests_per_second: 25,
                identities: vec![
                    "special.shop.serviceaccount.identity.weft.cluster.local".into(),
                    "ops.infra.serviceaccount.identity.weft.cluster.local".into(),
                ],
            }],
        })
    );
}

#[test]
fn rate_limit_policy_limits_are_each_optional() {
    let r = parse(&policy(&format!("{{{TARGET}}}"))).unwrap();
    let Resource::RateLimit(p) = r else {
        panic!("{r:?}")
    };
    assert_eq!((p.total, p.identity, p.overrides.len()), (None, None, 0));
    // Without a total, identity and overrides are not bounded by it.
    let r = parse(&policy(&format!(
        "{{{TARGET}, identity: {{requestsPerSecond: 500}}, overrides: [{{requestsPerSecond: 900, clientRefs: [{{kind: ServiceAccount, name: a}}]}}]}}"
    )))
    .unwrap();
    let Resource::RateLimit(p) = r else {
        panic!("{r:?}")
    };
    assert_eq!((p.total, p.identity), (None, Some(500)));
    assert_eq!(p.overrides[0].requests_per_second, 900);
}

#[test]
fn rate_limit_rps_must_be_at_least_one() {
    let e = errors(&policy(&format!(
        "{{{TARGET}, total: {{requestsPerSecond: 0}}, identity: {{requestsPerSecond: -3}}, overrides: [{{requestsPerSecond: 1.5, clientRefs: [{{kind: ServiceAccount, name: a}}]}}, {{clientRefs: [{{kind: ServiceAccount, name: b}}]}}]}}"
    )));
    assert_eq!(
        e,
        [
            "a.yaml: document 0: spec.total.requestsPerSecond: must be an integer 1..4294967295, got 0",
            "a.yaml: document 0: spec.identity.requestsPerSecond: must be an integer 1..4294967295, got -3",
            "a.yaml: document 0: spec.overrides[0].requestsPerSecond: must be an integer 1..4294967295, got 1.5",
            "a.yaml: document 0: spec.overrides[1].requestsPerSecond: required",
        ]
    );
    let e = errors(&policy(&format!(
        "{{{TARGET}, total: {{requestsPerSecond: '10'}}, identity: 5}}"
    )));
    assert_eq!(
        e,
        [
            "a.yaml: document 0: spec.total.requestsPerSecond: must be an integer 1..4294967295, got a string",
            "a.yaml: document 0: spec.identity: expected a mapping, got a number",
        ]
    );
}

#[test]
fn rate_limit_identity_and_overrides_at_most_total() {
    let e = errors(&policy(&format!(
        "{{{TARGET}, total: {{requestsPerSecond: 100}}, identity: {{requestsPerSecond: 101}}, overrides: [{{requestsPerSecond: 100, clientRefs: [{{kind: ServiceAccount, name: a}}]}}, {{requestsPerSecond: 250, clientRefs: [{{kind: ServiceAccount, name: b}}]}}]}}"
    )));
    assert_eq!(
        e,
        [
            "a.yaml: document 0: spec.identity.requestsPerSecond: must not exceed spec.total.requestsPerSecond (100), got 101",
            "a.yaml: document 0: spec.overrides[1].requestsPerSecond: must not exceed spec.total.requestsPerSecond (100), got 250",
        ]
    );
}

#[test]
fn rate_limit_client_refs_are_service_accounts() {
    let e = errors(&policy(&format!(
        "{{{TARGET}, overrides: [{{requestsPerSecond: 5, clientRefs: [{{kind: Namespace, name: shop}}, {{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: m}}, {{kind: ServiceAccount, name: '*'}}, {{kind: ServiceAccount, name: ok, namespace: Bad_NS}}]}}, {{requestsPerSecond: 5, clientRefs: []}}, {{requestsPerSecond: 5}}]}}"
    )));
    assert_eq!(e.len(), 6, "{e:?}");
    assert_eq!(
        e[0],
        "a.yaml: document 0: spec.overrides[0].clientRefs[0].kind: must be a core ServiceAccount, got core/Namespace"
    );
    assert_eq!(
        e[1],
        "a.yaml: document 0: spec.overrides[0].clientRefs[1].kind: must be a core ServiceAccount, got policy.linkerd.io/MeshTLSAuthentication"
    );
    assert!(
        e[2].starts_with(
            "a.yaml: document 0: spec.overrides[0].clientRefs[2].name: must be a DNS label"
        ),
        "{e:?}"
    );
    assert!(
        e[3].starts_with(
            "a.yaml: document 0: spec.overrides[0].clientRefs[3].namespace: must be a DNS label"
        ),
        "{e:?}"
    );
    assert_eq!(
        e[4],
        "a.yaml: document 0: spec.overrides[1].clientRefs: must list at least one client"
    );
    assert_eq!(
        e[5],
        "a.yaml: document 0: spec.overrides[2].clientRefs: must list at least one client"
    );
}

#[test]
fn rate_limit_target_must_be_a_server() {
    let e = errors(&policy(
        "{targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: web}}",
    ));
    assert_eq!(
        e,
        ["a.yaml: document 0: spec.targetRef: must be a policy.linkerd.io/Server, got gateway.networking.k8s.io/HTTPRoute"]
    );
    let e = errors(&policy("{targetRef: {kind: Namespace, name: shop}}"));
    assert_eq!(
        e,
        ["a.yaml: document 0: spec.targetRef: must be a policy.linkerd.io/Server, got core/Namespace"]
    );
    let e = errors(&policy(
        "{targetRef: {group: policy.linkerd.io, kind: Server}}",
    ));
    assert_eq!(e, ["a.yaml: document 0: spec.targetRef.name: required"]);
    let e = errors(&policy("{total: {requestsPerSecond: 10}}"));
    assert_eq!(e, ["a.yaml: document 0: spec.targetRef: required"]);
    let e = errors(&policy(&format!("{{{TARGET}}}")).replace("v1alpha1", "v1beta1"));
    assert_eq!(
        e,
        ["a.yaml: document 0: apiVersion: must be policy.linkerd.io/v1alpha1 for kind HTTPLocalRateLimitPolicy, got \"policy.linkerd.io/v1beta1\""]
    );
}

#[test]
fn rate_limit_policy_is_keyed_and_aged_like_a_server() {
    use crate::documents::{in_force, parse_yaml_documents, state_seen, DocKey, InForce};
    use std::collections::HashMap;
    let good = policy(&format!("{{{TARGET}, total: {{requestsPerSecond: 10}}}}"));
    let parsed = parse_yaml_documents("a.yaml", &good, &Defaults::default());
    let (docs, errors) = in_force(&[("a.yaml", &parsed)], &InForce::new());
    assert!(errors.is_empty(), "{errors:?}");
    let key = DocKey {
        kind: RATE_LIMIT_KIND,
        namespace: "shop".into(),
        name: "web-rl".into(),
    };
    assert_eq!(docs.keys().collect::<Vec<_>>(), [&key]);
    // Without a creationTimestamp, the time the store first saw it is its age.
    let s = state_seen(&docs, &HashMap::from([(key.clone(), 42)]));
    let p = &s.rate_limit_policies[&("shop".to_string(), "web-rl".to_string())];
    assert_eq!((p.created, p.total), (Some(42), Some(10)));
    // An invalid new version is known by its identity and keeps the good one in force.
    let bad = good.replace("10}", "0}");
    let parsed = parse_yaml_documents("a.yaml", &bad, &Defaults::default());
    assert_eq!(parsed.bad[0].key, Some(key.clone()));
    let (after, errors) = in_force(&[("a.yaml", &parsed)], &docs);
    assert_eq!(after, docs);
    assert_eq!(
        errors,
        ["a.yaml: document 0: spec.total.requestsPerSecond: must be an integer 1..4294967295, got 0"]
    );
}
