//! Inbound policy from validated documents, in memory: which Server decides a port, default
//! policy precedence, authorizations resolved (or left out), inbound routes, statuses, watches.

use super::*;
use crate::documents::state_of;
use crate::index::{routes, Index, Outbound, Target};
use crate::resource::authz::ServerPort;
use std::sync::Arc;

const WORKLOADS: &str = "
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: web, namespace: shop, labels: {app: web}, annotations: {config.linkerd.io/opaque-ports: '6379'}}
spec:
  workloadIPs: [{ip: 127.0.0.1}]
  ports: [{name: http, port: 8080}, {name: admin, port: 9990}]
---
apiVersion: workload.linkerd.io/v1beta1
kind: ExternalWorkload
metadata: {name: api, namespace: shop, labels: {app: api}}
spec:
  workloadIPs: [{ip: 127.0.0.2}]
  ports: [{name: http, port: 8081}]
";

fn key(workload: &str, port: u16) -> InboundKey {
    InboundKey {
        namespace: "shop".into(),
        workload: workload.into(),
        port,
    }
}

fn get(s: &State, workload: &str, port: u16) -> Inbound {
    inbound(s, &InboundDefaults::default(), &key(workload, port))
}

fn server(name: &str, created: &str, selector: &str, port: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {{name: {name}, namespace: shop, creationTimestamp: '{created}'}}\nspec: {{podSelector: {selector}, port: {port}{extra}}}\n"
    )
}

fn policy(name: &str, target: &str, refs: &str) -> String {
    format!(
        "---\napiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{targetRef: {target}, requiredAuthenticationRefs: {refs}}}\n"
    )
}

const SERVER_REF: &str = "{group: policy.linkerd.io, kind: Server, name: web-http}";
const MESH_TLS: &str = "---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: clients, namespace: shop}
spec: {identities: ['api.shop.serviceaccount.identity.weft.cluster.local', '*.ops.serviceaccount.identity.weft.cluster.local']}
";
const NETWORK: &str = "---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: lan, namespace: shop}
spec: {networks: [{cidr: 10.0.0.0/8, except: [10.9.0.0/16]}]}
";

fn origins(authz: &[Authz]) -> Vec<String> {
    authz
        .iter()
        .map(|a| match &a.origin {
            AuthzOrigin::Policy { name, .. } => name.clone(),
            AuthzOrigin::Default(p) => format!("default:{p}"),
        })
        .collect()
}

#[test]
fn server_selects_port_by_number_or_name_with_either_selector() {
    let text = format!(
        "{WORKLOADS}{}{}",
        server("web-http", "2024-01-01T00:00:00Z", "{matchLabels: {app: web}}", "http", ", proxyProtocol: HTTP/1"),
        "---\napiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {name: all-admin, namespace: shop}\nspec: {externalWorkloadSelector: {}, port: 9990}\n",
    );
    let s = state_of(&text);
    let web = get(&s, "web", 8080);
    assert_eq!(web.server, ServerRef::Server("web-http".into()));
    assert_eq!(web.protocol, ProxyProtocol::Http1);
    // No policy and the default accessPolicy (deny): nothing is authorized.
    assert!(web.authorizations.is_empty());
    assert_eq!(
        get(&s, "web", 9990).server,
        ServerRef::Server("all-admin".into())
    );
    // The empty selector selects every workload of the namespace, by number even where the
    // workload does not declare the port.
    assert_eq!(
        get(&s, "api", 9990).server,
        ServerRef::Server("all-admin".into())
    );
    // api's `http` is 8081, which web-http does not select (app: web only).
    assert_eq!(
        get(&s, "api", 8081).server,
        ServerRef::Default(DefaultPolicy::AllUnauthenticated)
    );
    // A port no Server selects keeps the opaque flag.
    let redis = get(&s, "web", 6379);
    assert_eq!(
        redis.server,
        ServerRef::Default(DefaultPolicy::AllUnauthenticated)
    );
    assert_eq!(redis.protocol, ProxyProtocol::Opaque);
    assert!(s.servers[&("shop".into(), "web-http".into())].port == ServerPort::Name("http".into()));
}

#[test]
fn oldest_server_wins_and_the_loser_is_reported() {
    let text = format!(
        "{WORKLOADS}{}{}{}",
        server(
            "newer",
            "2024-06-01T00:00:00Z",
            "{matchLabels: {app: web}}",
            "8080",
            ""
        ),
        server("older", "2024-01-01T00:00:00Z", "{}", "http", ""),
        server(
            "unrelated",
            "2023-01-01T00:00:00Z",
            "{matchLabels: {app: none}}",
            "8080",
            ""
        ),
    );
    let s = state_of(&text);
    assert_eq!(
        get(&s, "web", 8080).server,
        ServerRef::Server("older".into())
    );
    let st = statuses(&s);
    let cond = |name: &str| {
        let p = st.iter().find(|p| p.name == name).unwrap();
        (p.conditions[0].reason, p.conditions[0].message.clone())
    };
    assert_eq!(cond("older"), ("Accepted", String::new()));
    assert_eq!(cond("unrelated"), ("Accepted", String::new()));
    let (reason, message) = cond("newer");
    assert_eq!(reason, "Conflicted");
    assert_eq!(
        message,
        "workload shop/web port 8080 is decided by Server shop/older (older, or same age and first by name)"
    );
    let json = serde_json::to_value(&st[0]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"group": "policy.linkerd.io", "kind": "Server", "namespace": "shop",
            "name": "newer", "conditions": [{"type": "Accepted", "status": "False",
            "reason": "Conflicted", "message": message}]})
    );
}

#[test]
fn default_policy_precedence_workload_namespace_control_plane() {
    let ns = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop, annotations: {config.linkerd.io/default-inbound-policy: cluster-authenticated}}\n";
    let annotated = WORKLOADS.replace(
        "annotations: {config.linkerd.io/opaque-ports: '6379'}",
        "annotations: {config.linkerd.io/default-inbound-policy: deny}",
    );
    let cp = InboundDefaults {
        default_policy: DefaultPolicy::Audit,
        ..InboundDefaults::default()
    };
    let s = state_of(&format!("{annotated}{ns}"));
    let at = |s: &State, w: &str| inbound(s, &cp, &key(w, 8080));
    assert_eq!(
        at(&s, "web").server,
        ServerRef::Default(DefaultPolicy::Deny)
    );
    assert!(at(&s, "web").authorizations.is_empty());
    let api = at(&s, "api");
    assert_eq!(
        api.server,
        ServerRef::Default(DefaultPolicy::ClusterAuthenticated)
    );
    assert_eq!(
        api.authorizations[0].networks.len(),
        6,
        "the cluster networks"
    );
    // Unknown workloads of the namespace get the namespace's default too.
    assert_eq!(
        at(&s, "ghost").server,
        ServerRef::Default(DefaultPolicy::ClusterAuthenticated)
    );
    assert!(!at(&s, "ghost").known);
    let s = state_of(WORKLOADS);
    assert_eq!(
        at(&s, "api").server,
        ServerRef::Default(DefaultPolicy::Audit)
    );
    assert_eq!(origins(&at(&s, "api").authorizations), ["default:audit"]);
}

#[test]
fn policies_on_server_namespace_and_route_are_resolved() {
    let route = "---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: admin-route, namespace: shop}
spec:
  parentRefs: [{group: policy.linkerd.io, kind: Server, name: web-http}]
  hostnames: [web.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /admin}}]
    backendRefs: [{name: nowhere, port: 80}]
";
    let text = format!(
        "{WORKLOADS}{MESH_TLS}{NETWORK}{route}{}{}{}{}",
        server("web-http", "2024-01-01T00:00:00Z", "{matchLabels: {app: web}}", "http", ", accessPolicy: audit"),
        policy("on-server", SERVER_REF, "[{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: clients}, {group: policy.linkerd.io, kind: NetworkAuthentication, name: lan}]"),
        policy("on-namespace", "{kind: Namespace, name: shop}", "[]"),
        policy("on-route", "{group: policy.linkerd.io, kind: HTTPRoute, name: admin-route}", "[{kind: ServiceAccount, name: api}]"),
    );
    let s = state_of(&text);
    let web = get(&s, "web", 8080);
    assert_eq!(
        origins(&web.authorizations),
        ["on-namespace", "on-server", "default:audit"]
    );
    let on_server = &web.authorizations[1];
    assert_eq!(
        on_server.authentication,
        Authentication::MeshTls {
            identities: vec!["api.shop.serviceaccount.identity.weft.cluster.local".into()],
            suffixes: vec!["ops.serviceaccount.identity.weft.cluster.local".into()],
        }
    );
    assert_eq!(on_server.networks[0].net.to_string(), "10.0.0.0/8");
    assert_eq!(on_server.networks[0].except[0].to_string(), "10.9.0.0/16");
    assert_eq!(
        web.authorizations[0].authentication,
        Authentication::Unauthenticated
    );
    assert_eq!(
        web.authorizations[0].networks.len(),
        2,
        "everywhere: v4 and v6"
    );
    // The route carries only its own policies (and the access policy).
    assert_eq!(web.http_routes.len(), 1);
    assert!(web.grpc_routes.is_empty());
    let r = &web.http_routes[0];
    assert_eq!(r.hostnames, ["web.example.com"]);
    assert_eq!(origins(&r.authorizations), ["on-route", "default:audit"]);
    assert_eq!(
        r.authorizations[0].authentication,
        Authentication::MeshTls {
            identities: vec!["api.shop.serviceaccount.identity.weft.cluster.local".into()],
            suffixes: vec![],
        }
    );
    // Statuses: the route's Server parent is accepted, and its backends (ignored inbound)
    // are not checked; every policy is accepted.
    let rs = routes::statuses(&s);
    let conds: Vec<_> = rs[0].parents[0]
        .conditions
        .iter()
        .map(|c| (c.kind, c.status))
        .collect();
    assert_eq!(conds, [("Accepted", "True"), ("ResolvedRefs", "True")]);
    assert!(statuses(&s)
        .iter()
        .all(|p| p.conditions[0].reason == "Accepted"));
}

#[test]
fn policies_with_missing_refs_authorize_nothing_and_say_why() {
    let text = format!(
        "{WORKLOADS}{}{}{}{}",
        server("web-http", "2024-01-01T00:00:00Z", "{matchLabels: {app: web}}", "http", ""),
        policy("no-server", "{group: policy.linkerd.io, kind: Server, name: ghost}", "[]"),
        policy("no-authn", SERVER_REF, "[{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: ghost}, {group: policy.linkerd.io, kind: NetworkAuthentication, name: gone, namespace: infra}]"),
        policy("no-route", "{group: gateway.networking.k8s.io, kind: GRPCRoute, name: ghost}", "[]"),
    );
    let s = state_of(&text);
    let web = get(&s, "web", 8080);
    assert!(web.authorizations.is_empty(), "{:?}", web.authorizations);
    let st: Vec<_> = statuses(&s)
        .into_iter()
        .filter(|p| p.kind == "AuthorizationPolicy")
        .map(|p| {
            (
                p.name,
                p.conditions[0].reason,
                p.conditions[0].message.clone(),
            )
        })
        .collect();
    assert_eq!(
        st,
        [
            (
                "no-authn".to_string(),
                "AuthenticationNotFound",
                "MeshTLSAuthentication shop/ghost not found; NetworkAuthentication infra/gone not found".to_string()
            ),
            (
                "no-route".to_string(),
                "TargetNotFound",
                "GRPCRoute.gateway.networking.k8s.io shop/ghost not found".to_string()
            ),
            (
                "no-server".to_string(),
                "TargetNotFound",
                "Server shop/ghost not found".to_string()
            ),
        ]
    );
}

#[test]
fn inbound_routes_do_not_touch_outbound_policy() {
    let svc = "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {selector: {app: web}, ports: [{port: 80, targetPort: http}]}\n";
    let route = "---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc, namespace: shop}
spec:
  parentRefs: [{group: policy.linkerd.io, kind: Server, name: web-grpc}, {group: policy.linkerd.io, kind: Server, name: ghost}]
  rules: [{matches: [{method: {service: shop.Cart}}]}]
";
    let text = format!(
        "{WORKLOADS}{svc}{route}{}",
        server(
            "web-grpc",
            "2024-01-01T00:00:00Z",
            "{}",
            "8080",
            ", proxyProtocol: gRPC"
        ),
    );
    let s = state_of(&text);
    let target = Target::Name {
        name: "web".into(),
        namespace: "shop".into(),
        port: 80,
    };
    let Outbound::Service { policy, .. } = crate::index::outbound(&s, "cluster.local", &target)
    else {
        panic!()
    };
    assert!(
        policy.routes.is_empty() && policy.protocol == crate::resource::route::RouteProtocol::Http
    );
    let web = get(&s, "web", 8080);
    assert_eq!(web.grpc_routes.len(), 1);
    assert!(
        web.grpc_routes[0].authorizations.is_empty(),
        "deny: no policy"
    );
    let rs = routes::statuses(&s);
    let accepted: Vec<_> = rs[0]
        .parents
        .iter()
        .map(|p| (p.conditions[0].reason, p.conditions[0].message.clone()))
        .collect();
    assert_eq!(
        accepted,
        [
            ("Accepted", String::new()),
            ("NoMatchingParent", "no Server shop/ghost".to_string())
        ]
    );
}

#[tokio::test]
async fn policy_changes_update_a_subscribed_inbound_watch() {
    let index = Index::new("cluster.local");
    let base = format!(
        "{WORKLOADS}{}",
        server(
            "web-http",
            "2024-01-01T00:00:00Z",
            "{matchLabels: {app: web}}",
            "http",
            ""
        )
    );
    index.apply(Arc::new(state_of(&base)));
    let mut rx = index.inbound(&key("web", 8080));
    assert!(rx.borrow_and_update().authorizations.is_empty());
    let mut api = index.inbound(&key("api", 8081));
    api.borrow_and_update();

    // A policy for the Server: the watch is sent the new authorization.
    let with_policy = format!("{base}{}", policy("open", SERVER_REF, "[]"));
    index.apply(Arc::new(state_of(&with_policy)));
    assert!(rx.has_changed().unwrap());
    assert_eq!(origins(&rx.borrow_and_update().authorizations), ["open"]);
    assert!(
        !api.has_changed().unwrap(),
        "recomputed, unchanged, not sent"
    );

    // Requiring a MeshTLSAuthentication that does not exist: fail closed.
    let missing = format!(
        "{base}{}",
        policy(
            "open",
            SERVER_REF,
            "[{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: clients}]"
        )
    );
    index.apply(Arc::new(state_of(&missing)));
    assert!(rx.borrow_and_update().authorizations.is_empty());
    // ... and once it exists, it applies.
    index.apply(Arc::new(state_of(&format!("{missing}{MESH_TLS}"))));
    assert!(rx.has_changed().unwrap());
    assert!(matches!(
        rx.borrow_and_update().authorizations[0].authentication,
        Authentication::MeshTls { .. }
    ));

    // A Namespace annotation reaches the default server of api.
    let ns = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop, annotations: {config.linkerd.io/default-inbound-policy: deny}}\n";
    index.apply(Arc::new(state_of(&format!("{missing}{MESH_TLS}{ns}"))));
    assert!(api.has_changed().unwrap());
    assert_eq!(
        api.borrow_and_update().server,
        ServerRef::Default(DefaultPolicy::Deny)
    );
}

fn rate_limit(name: &str, created: &str, server: &str, limits: &str) -> String {
    format!(
        "---\napiVersion: policy.linkerd.io/v1alpha1\nkind: HTTPLocalRateLimitPolicy\nmetadata: {{name: {name}, namespace: shop, creationTimestamp: '{created}'}}\nspec: {{targetRef: {{group: policy.linkerd.io, kind: Server, name: {server}}}{limits}}}\n"
    )
}

fn rate_limit_statuses(s: &State) -> Vec<(String, &'static str, String)> {
    statuses(s)
        .into_iter()
        .filter(|p| p.kind == "HTTPLocalRateLimitPolicy")
        .map(|p| {
            (
                p.name,
                p.conditions[0].reason,
                p.conditions[0].message.clone(),
            )
        })
        .collect()
}

#[test]
fn oldest_rate_limit_policy_of_a_server_wins_and_the_others_say_why() {
    let text = format!(
        "{WORKLOADS}{}{}{}{}{}{}",
        server("web-http", "2024-01-01T00:00:00Z", "{matchLabels: {app: web}}", "http", ""),
        server("web-admin", "2024-01-01T00:00:00Z", "{matchLabels: {app: web}}", "admin", ", proxyProtocol: opaque"),
        rate_limit("newer", "2024-06-01T00:00:00Z", "web-http", ", total: {requestsPerSecond: 5}"),
        rate_limit(
            "older",
            "2024-02-01T00:00:00Z",
            "web-http",
            ", total: {requestsPerSecond: 100}, identity: {requestsPerSecond: 20}, overrides: [{requestsPerSecond: 25, clientRefs: [{kind: ServiceAccount, name: api}, {kind: ServiceAccount, name: ops, namespace: infra}]}]",
        ),
        rate_limit("on-opaque", "2024-02-01T00:00:00Z", "web-admin", ", total: {requestsPerSecond: 1}"),
        rate_limit("no-server", "2024-02-01T00:00:00Z", "ghost", ", total: {requestsPerSecond: 1}"),
    );
    let s = state_of(&text);
    assert_eq!(
        get(&s, "web", 8080).rate_limit,
        Some(RateLimit {
            namespace: "shop".into(),
            name: "older".into(),
            total: Some(100),
            identity: Some(20),
            overrides: vec![RateLimitOverride {
                requests_per_second: 25,
                identities: vec![
                    "api.shop.serviceaccount.identity.weft.cluster.local".into(),
                    "ops.infra.serviceaccount.identity.weft.cluster.local".into(),
                ],
            }],
        })
    );
    // An opaque Server has no HTTP requests to limit; a default server has no policy at all.
    assert_eq!(get(&s, "web", 9990).rate_limit, None);
    assert_eq!(get(&s, "api", 8081).rate_limit, None);
    assert_eq!(
        rate_limit_statuses(&s),
        [
            (
                "newer".to_string(),
                "RateLimitReasonAlreadyExists",
                "Server shop/web-http is limited by HTTPLocalRateLimitPolicy shop/older (older, or same age and first by name)".to_string()
            ),
            (
                "no-server".to_string(),
                "NoMatchingTarget",
                "Server shop/ghost not found".to_string()
            ),
            ("older".to_string(), "Accepted", String::new()),
            ("on-opaque".to_string(), "Accepted", String::new()),
        ]
    );
    let json = serde_json::to_value(statuses(&s).last().unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"group": "policy.linkerd.io", "kind": "HTTPLocalRateLimitPolicy",
            "namespace": "shop", "name": "on-opaque", "conditions": [{"type": "Accepted",
            "status": "True", "reason": "Accepted", "message": ""}],
            "targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "web-admin"}})
    );
    // Same age: the first by name wins.
    let tie = format!(
        "{WORKLOADS}{}{}{}",
        server(
            "web-http",
            "2024-01-01T00:00:00Z",
            "{matchLabels: {app: web}}",
            "http",
            ""
        ),
        rate_limit("b", "2024-02-01T00:00:00Z", "web-http", ""),
        rate_limit("a", "2024-02-01T00:00:00Z", "web-http", ""),
    );
    let s = state_of(&tie);
    assert_eq!(get(&s, "web", 8080).rate_limit.unwrap().name, "a");
    let st = rate_limit_statuses(&s);
    assert_eq!(
        (st[0].1, st[1].1),
        ("Accepted", "RateLimitReasonAlreadyExists")
    );
}

#[test]
fn rate_limit_policy_waits_for_its_server() {
    let text = format!(
        "{WORKLOADS}{}",
        rate_limit(
            "web-rl",
            "2024-02-01T00:00:00Z",
            "web-http",
            ", total: {requestsPerSecond: 10}"
        ),
    );
    let s = state_of(&text);
    assert_eq!(get(&s, "web", 8080).rate_limit, None);
    assert_eq!(
        rate_limit_statuses(&s),
        [(
            "web-rl".to_string(),
            "NoMatchingTarget",
            "Server shop/web-http not found".to_string()
        )]
    );
    // Once the Server exists the policy applies.
    let s = state_of(&format!(
        "{text}{}",
        server(
            "web-http",
            "2024-03-01T00:00:00Z",
            "{matchLabels: {app: web}}",
            "http",
            ", proxyProtocol: HTTP/2"
        )
    ));
    assert_eq!(get(&s, "web", 8080).rate_limit.unwrap().total, Some(10));
    assert_eq!(rate_limit_statuses(&s)[0].1, "Accepted");
}

#[tokio::test]
async fn rate_limit_changes_update_a_subscribed_inbound_watch() {
    let index = Index::new("cluster.local");
    let base = format!(
        "{WORKLOADS}{}",
        server(
            "web-http",
            "2024-01-01T00:00:00Z",
            "{matchLabels: {app: web}}",
            "http",
            ""
        )
    );
    index.apply(Arc::new(state_of(&base)));
    let mut rx = index.inbound(&key("web", 8080));
    assert_eq!(rx.borrow_and_update().rate_limit, None);
    let mut api = index.inbound(&key("api", 8081));
    api.borrow_and_update();

    // A policy for the Server: the watch is sent the limit.
    let limited = |rps: u32| {
        format!(
            "{base}{}",
            rate_limit(
                "web-rl",
                "2024-02-01T00:00:00Z",
                "web-http",
                &format!(", total: {{requestsPerSecond: {rps}}}")
            )
        )
    };
    index.apply(Arc::new(state_of(&limited(100))));
    assert!(rx.has_changed().unwrap());
    assert_eq!(
        rx.borrow_and_update().rate_limit.as_ref().unwrap().total,
        Some(100)
    );
    assert!(
        !api.has_changed().unwrap(),
        "recomputed, unchanged, not sent"
    );

    // Changing the limit changes the snapshot.
    index.apply(Arc::new(state_of(&limited(7))));
    assert!(rx.has_changed().unwrap());
    assert_eq!(
        rx.borrow_and_update().rate_limit.as_ref().unwrap().total,
        Some(7)
    );

    // A newer policy for the same Server changes nothing the proxy sees.
    let conflicting = format!(
        "{}{}",
        limited(7),
        rate_limit(
            "late",
            "2024-09-01T00:00:00Z",
            "web-http",
            ", total: {requestsPerSecond: 1}"
        )
    );
    let applied = index.apply(Arc::new(state_of(&conflicting)));
    assert!(applied.recomputed > 0);
    assert!(!rx.has_changed().unwrap());

    // Deleting the winner hands the Server to the other policy; deleting both lifts the limit.
    let late_only = format!(
        "{base}{}",
        rate_limit(
            "late",
            "2024-09-01T00:00:00Z",
            "web-http",
            ", total: {requestsPerSecond: 1}"
        )
    );
    index.apply(Arc::new(state_of(&late_only)));
    assert_eq!(
        rx.borrow_and_update().rate_limit.as_ref().unwrap().name,
        "late"
    );
    index.apply(Arc::new(state_of(&base)));
    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow_and_update().rate_limit, None);
}
