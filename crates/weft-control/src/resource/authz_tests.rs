//! Validation of the inbound authorization resources: values out, or errors naming the field.

use super::*;
use crate::documents::parse_one as parse;

fn errors(text: &str) -> Vec<String> {
    parse(text).expect_err("invalid")
}

#[test]
fn server_v1beta3_with_every_field() {
    let r = parse(
        "apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: web-http, namespace: shop, creationTimestamp: '2024-05-01T12:00:00Z'}
spec:
  podSelector:
    matchLabels: {app: web}
    matchExpressions:
    - {key: tier, operator: In, values: [front, edge]}
    - {key: canary, operator: DoesNotExist}
  port: http
  proxyProtocol: HTTP/2
  accessPolicy: cluster-authenticated
",
    )
    .unwrap();
    let Resource::Server(s) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        (s.namespace.as_str(), s.name.as_str()),
        ("shop", "web-http")
    );
    assert_eq!(s.created, Some(1714564800));
    assert_eq!(s.port, ServerPort::Name("http".into()));
    assert_eq!(s.protocol, ProxyProtocol::Http2);
    assert_eq!(s.access_policy, DefaultPolicy::ClusterAuthenticated);
    assert_eq!(s.selector.match_expressions.len(), 2);
}

#[test]
fn server_defaults_and_older_versions() {
    let r = parse(
        "apiVersion: policy.linkerd.io/v1beta1
kind: Server
metadata: {name: all}
spec: {externalWorkloadSelector: {}, port: 8080}
",
    )
    .unwrap();
    let Resource::Server(s) = r else {
        panic!("{r:?}")
    };
    assert_eq!(s.namespace, "default");
    assert_eq!(s.selector, LabelSelector::default());
    assert_eq!(s.port, ServerPort::Number(8080));
    assert_eq!(s.protocol, ProxyProtocol::Unknown);
    assert_eq!(s.access_policy, DefaultPolicy::Deny);
    let e = errors(
        "apiVersion: policy.linkerd.io/v1beta2
kind: Server
metadata: {name: all}
spec: {podSelector: {}, port: 8080, accessPolicy: audit}
",
    );
    assert_eq!(
        e,
        ["a.yaml: document 0: spec.accessPolicy: requires apiVersion policy.linkerd.io/v1beta3"]
    );
}

#[test]
fn server_errors_name_their_field() {
    let e = errors(
        "apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: bad}
spec:
  podSelector: {matchExpressions: [{key: a, operator: Maybe}, {key: b, operator: In}, {key: c, operator: Exists, values: [x]}]}
  externalWorkloadSelector: {}
  port: 70000
  proxyProtocol: http
  accessPolicy: allow
",
    );
    assert_eq!(
        e,
        [
            "a.yaml: document 0: spec.externalWorkloadSelector: cannot be set together with spec.podSelector (set exactly one)",
            "a.yaml: document 0: spec.port: must be 1..65535 or a port name, got 70000",
            "a.yaml: document 0: spec.proxyProtocol: must be one of unknown, HTTP/1, HTTP/2, gRPC, opaque, TLS; got \"http\"",
            "a.yaml: document 0: spec.accessPolicy: must be one of all-unauthenticated, all-authenticated, cluster-unauthenticated, cluster-authenticated, deny, audit, got \"allow\"",
        ]
    );
    let e = errors(
        "apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: bad}
spec:
  podSelector: {matchExpressions: [{key: a, operator: Maybe}, {key: b, operator: In}, {key: c, operator: Exists, values: [x]}]}
  port: Not_A_Name
",
    );
    assert_eq!(e.len(), 4, "{e:?}");
    assert_eq!(e[0], "a.yaml: document 0: spec.podSelector.matchExpressions[0].operator: must be one of In, NotIn, Exists, DoesNotExist; got \"Maybe\"");
    assert_eq!(e[1], "a.yaml: document 0: spec.podSelector.matchExpressions[1].values: must list at least one value for operator In or NotIn");
    assert_eq!(e[2], "a.yaml: document 0: spec.podSelector.matchExpressions[2].values: must be empty for operator Exists or DoesNotExist");
    assert!(
        e[3].starts_with("a.yaml: document 0: spec.port: must be a port name"),
        "{e:?}"
    );
    let e = errors("apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {name: bad}\nspec: {port: 80}\n");
    assert_eq!(
        e,
        ["a.yaml: document 0: spec.podSelector: required (or spec.externalWorkloadSelector)"]
    );
}

#[test]
fn label_selector_semantics() {
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let req = |key: &str, operator, values: &[&str]| Requirement {
        key: key.into(),
        operator,
        values: values.iter().map(|v| v.to_string()).collect(),
    };
    let web = labels(&[("app", "web"), ("tier", "front")]);
    let bare = labels(&[]);
    assert!(LabelSelector::default().matches(&web) && LabelSelector::default().matches(&bare));
    let sel = LabelSelector {
        match_labels: labels(&[("app", "web")]),
        match_expressions: vec![req("tier", Operator::In, &["front", "edge"])],
    };
    assert!(sel.matches(&web) && !sel.matches(&bare));
    let not_in = LabelSelector {
        match_labels: BTreeMap::new(),
        match_expressions: vec![req("tier", Operator::NotIn, &["front"])],
    };
    assert!(
        !not_in.matches(&web) && not_in.matches(&bare),
        "NotIn matches a missing label"
    );
    let exists = |op| LabelSelector {
        match_labels: BTreeMap::new(),
        match_expressions: vec![req("tier", op, &[])],
    };
    assert!(exists(Operator::Exists).matches(&web) && !exists(Operator::Exists).matches(&bare));
    assert!(!exists(Operator::DoesNotExist).matches(&web));
    assert!(exists(Operator::DoesNotExist).matches(&bare));
}

#[test]
fn authorization_policy_targets_and_refs() {
    let r = parse(
        "apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: shop}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: GRPCRoute, name: rpc}
  requiredAuthenticationRefs:
  - {group: policy.linkerd.io, kind: NetworkAuthentication, name: cluster, namespace: infra}
  - {kind: ServiceAccount, name: client}
",
    )
    .unwrap();
    let Resource::AuthorizationPolicy(p) = r else {
        panic!("{r:?}")
    };
    assert_eq!(p.target, PolicyTarget::Route(RouteKind::Grpc, "rpc".into()));
    assert_eq!(
        p.authentications,
        [
            AuthnRef::Network {
                namespace: "infra".into(),
                name: "cluster".into()
            },
            AuthnRef::ServiceAccount {
                namespace: "shop".into(),
                name: "client".into(),
                identity: "client.shop.serviceaccount.identity.weft.cluster.local".into()
            }
        ]
    );
    let r = parse(
        "apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: shop}
spec:
  targetRef: {kind: Namespace, name: shop}
",
    )
    .unwrap();
    let Resource::AuthorizationPolicy(p) = r else {
        panic!("{r:?}")
    };
    assert_eq!(p.target, PolicyTarget::Namespace);
    assert!(p.authentications.is_empty());
}

#[test]
fn authorization_policy_errors_name_their_field() {
    let e = errors(
        "apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ap}
spec:
  targetRef: {group: core, kind: Namespace, name: other}
  requiredAuthenticationRefs:
  - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: a}
  - {group: apps, kind: Deployment, name: b}
  - {kind: ServiceAccount, name: c}
  - {group: policy.linkerd.io, kind: NetworkAuthentication, name: d}
  - {group: policy.linkerd.io, kind: NetworkAuthentication, name: e}
",
    );
    assert_eq!(
        e,
        [
            "a.yaml: document 0: spec.targetRef.name: a Namespace target must be the policy's own namespace \"default\", got \"other\"",
            "a.yaml: document 0: spec.requiredAuthenticationRefs[1].kind: must be policy.linkerd.io MeshTLSAuthentication or NetworkAuthentication, or a core ServiceAccount; got apps/Deployment",
            "a.yaml: document 0: spec.requiredAuthenticationRefs[2]: at most one MeshTLSAuthentication or ServiceAccount reference is allowed (the first is spec.requiredAuthenticationRefs[0])",
            "a.yaml: document 0: spec.requiredAuthenticationRefs[4]: at most one NetworkAuthentication reference is allowed (the first is spec.requiredAuthenticationRefs[3])",
        ]
    );
    let e = errors(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: ap}\nspec: {targetRef: {group: core, kind: Service, name: web}}\n",
    );
    assert_eq!(e, ["a.yaml: document 0: spec.targetRef: must be policy.linkerd.io/Server, an HTTPRoute (policy.linkerd.io or gateway.networking.k8s.io), a gateway.networking.k8s.io/GRPCRoute or a core Namespace; got core/Service"]);
    let e = errors("apiVersion: policy.linkerd.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: ap}\nspec: {}\n");
    assert_eq!(
        e,
        [
            "a.yaml: document 0: apiVersion: must be policy.linkerd.io/v1alpha1 for kind AuthorizationPolicy, got \"policy.linkerd.io/v1beta1\"",
            "a.yaml: document 0: spec.targetRef: required",
        ]
    );
}

#[test]
fn mesh_tls_identities_and_refs() {
    let r = parse(
        "apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: m, namespace: shop}
spec: {identities: ['*', '*.shop.serviceaccount.identity.weft.cluster.local', 'web.shop.serviceaccount.identity.weft.cluster.local']}
",
    )
    .unwrap();
    let Resource::MeshTls(m) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        m.identities,
        ["web.shop.serviceaccount.identity.weft.cluster.local"]
    );
    assert_eq!(
        m.suffixes,
        ["", "shop.serviceaccount.identity.weft.cluster.local"]
    );
    let r = parse(
        "apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: m, namespace: shop}
spec:
  identityRefs:
  - {kind: ServiceAccount, name: web}
  - {kind: ServiceAccount, name: '*', namespace: infra}
  - {kind: Namespace, name: ops}
",
    )
    .unwrap();
    let Resource::MeshTls(m) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        m.identities,
        ["web.shop.serviceaccount.identity.weft.cluster.local"]
    );
    assert_eq!(
        m.suffixes,
        [
            "infra.serviceaccount.identity.weft.cluster.local",
            "ops.serviceaccount.identity.weft.cluster.local"
        ]
    );
    let e = errors(
        "apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: m}
spec: {identities: [a, 'b*c', ''], identityRefs: [{kind: Pod, name: x}]}
",
    );
    assert_eq!(
        e,
        ["a.yaml: document 0: spec.identityRefs: cannot be set together with spec.identities (set exactly one)"]
    );
    let e = errors(
        "apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: m}
spec: {identities: [a, 'b*c']}
",
    );
    assert_eq!(
        e,
        ["a.yaml: document 0: spec.identities[1]: must be an identity, \"*\" (any) or \"*.SUFFIX\"; got \"b*c\""]
    );
    let e = errors(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: MeshTLSAuthentication\nmetadata: {name: m}\nspec: {identityRefs: [{kind: Pod, name: x}, {group: apps, kind: ServiceAccount, name: y}]}\n",
    );
    assert_eq!(
        e,
        [
            "a.yaml: document 0: spec.identityRefs[0].kind: must be ServiceAccount or Namespace, got \"Pod\"",
            "a.yaml: document 0: spec.identityRefs[1].group: must be empty or core (ServiceAccount, Namespace), got \"apps\"",
        ]
    );
}

#[test]
fn network_authentication_cidrs() {
    let r = parse(
        "apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: n}
spec:
  networks:
  - {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.2.3.4]}
  - {cidr: 'fd00::/8'}
",
    )
    .unwrap();
    let Resource::NetworkAuthentication(n) = r else {
        panic!("{r:?}")
    };
    assert_eq!(n.networks.len(), 2);
    assert_eq!(n.networks[0].except[1].to_string(), "10.2.3.4/32");
    assert_eq!(n.networks[1].net.to_string(), "fd00::/8");
    let e = errors(
        "apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: n}
spec:
  networks:
  - {cidr: 10.0.0.0/33}
  - {cidr: 10.0.0.0/8, except: [192.168.0.0/16, '::/0']}
  - {except: []}
",
    );
    assert_eq!(
        e,
        [
            "a.yaml: document 0: spec.networks[0].cidr: not a CIDR (like 10.0.0.0/8 or fd00::/8): \"10.0.0.0/33\"",
            "a.yaml: document 0: spec.networks[1].except[0]: 192.168.0.0/16 does not lie inside cidr 10.0.0.0/8",
            "a.yaml: document 0: spec.networks[1].except[1]: ::/0 does not lie inside cidr 10.0.0.0/8",
            "a.yaml: document 0: spec.networks[2].cidr: required",
        ]
    );
}

#[test]
fn default_policy_annotations_on_namespaces_and_workloads() {
    let r = parse(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, annotations: {config.linkerd.io/default-inbound-policy: deny}}\n",
    )
    .unwrap();
    let Resource::Namespace(n) = &r else {
        panic!("{r:?}")
    };
    assert_eq!(n.default_policy(), Some(DefaultPolicy::Deny));
    assert_eq!(r.key().to_string(), "Namespace shop");
    let e = errors(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, annotations: {config.linkerd.io/default-inbound-policy: open}}\n",
    );
    assert_eq!(e, ["a.yaml: document 0: metadata.annotations[\"config.linkerd.io/default-inbound-policy\"]: must be one of all-unauthenticated, all-authenticated, cluster-unauthenticated, cluster-authenticated, deny, audit, got \"open\""]);
    let e = errors(
        "apiVersion: workload.linkerd.io/v1beta1\nkind: ExternalWorkload\nmetadata: {name: w, annotations: {config.linkerd.io/default-inbound-policy: everyone}}\nspec: {workloadIPs: [{ip: 127.0.0.1}]}\n",
    );
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("a.yaml: document 0: metadata.annotations[\"config.linkerd.io/default-inbound-policy\"]: must be one of"));
}

#[test]
fn default_policy_and_cidr_parsing() {
    for p in DefaultPolicy::ALL {
        assert_eq!(p.to_string().parse::<DefaultPolicy>(), Ok(p));
    }
    assert!("allow".parse::<DefaultPolicy>().is_err());
    let nets = parse_cidr_list(DEFAULT_CLUSTER_NETWORKS).unwrap();
    assert_eq!(nets.len(), 6);
    assert!(nets[4].contains("198.18.0.7".parse().unwrap()));
    assert!(!nets[4].contains("198.20.0.1".parse().unwrap()));
    assert_eq!(
        parse_cidr_list("10.1.2.3/8, ::1").unwrap(),
        [
            "10.0.0.0/8".parse::<Cidr>().unwrap(),
            "::1/128".parse().unwrap()
        ]
    );
    assert_eq!(
        parse_cidr_list("10.0.0.0/8,nope,1.2.3.4/40").unwrap_err(),
        "not a CIDR (like 10.0.0.0/8 or fd00::/8): \"nope\"; not a CIDR (like 10.0.0.0/8 or fd00::/8): \"1.2.3.4/40\""
    );
    assert!(parse_cidr_list(" ").is_err());
}

#[test]
fn a_bad_version_keeps_the_last_good_one_alone() {
    use crate::documents::{in_force, parse_yaml_documents, InForce};
    let server = |port: &str| {
        format!("apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {{name: s}}\nspec: {{podSelector: {{}}, port: {port}}}\n")
    };
    let ap = "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: ap}\nspec: {targetRef: {group: policy.linkerd.io, kind: Server, name: s}}\n";
    let good = parse_yaml_documents(
        "a.yaml",
        &format!("{}---\n{ap}", server("80")),
        &Defaults::default(),
    );
    let (first, errors) = in_force(&[("a.yaml", &good)], &InForce::new());
    assert!(errors.is_empty(), "{errors:?}");
    let ap2 = ap.replace("name: ap}", "name: ap2}");
    let bad = parse_yaml_documents(
        "a.yaml",
        &format!("{}---\n{ap2}", server("0")),
        &Defaults::default(),
    );
    let (second, errors) = in_force(&[("a.yaml", &bad)], &first);
    assert_eq!(
        errors,
        ["a.yaml: document 0: spec.port: must be 1..65535 or a port name, got 0"]
    );
    let s = crate::documents::state(&second);
    assert_eq!(
        s.servers[&("default".into(), "s".into())].port,
        ServerPort::Number(80)
    );
    // The other document of the file applies: `ap` went away, `ap2` came.
    let names: Vec<_> = s
        .authorization_policies
        .keys()
        .map(|(_, n)| n.as_str())
        .collect();
    assert_eq!(names, ["ap2"]);
}
