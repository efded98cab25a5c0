//! Outbound routes in the index, in memory: attachment, precedence, resolution, statuses, and
//! which keys a change recomputes.

use super::*;
use crate::index::lookup::Lookup;
use crate::index::{Index, Outbound, Target};
use crate::resource::policy::Timeouts;
use crate::resource::route::Route;
use crate::resource::{validate_one, Defaults, Resource, Service, State};
use std::sync::Arc;
use std::time::Duration;

const DOMAIN: &str = "cluster.local";

fn doc(yaml: &str) -> Resource {
    let value: serde_json::Value = yaml_serde::from_str(yaml).expect("YAML");
    let defaults = Defaults {
        trust_domain: DOMAIN.into(),
        control_namespace: "weft".into(),
    };
    validate_one(&value, "test", &defaults).unwrap_or_else(|e| panic!("{e:?}"))
}

fn service(name: &str, ports: &[u16], annotations: &str) -> Service {
    let ports: Vec<String> = ports.iter().map(|p| format!("{{port: {p}}}")).collect();
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, annotations: {{{annotations}}}}}\nspec: {{selector: {{app: {name}}}, clusterIP: 198.18.0.{}, ports: [{}]}}\n",
        name.len() + 10 * ports.len(),
        ports.join(", ")
    );
    match doc(&yaml) {
        Resource::Service(s) => s,
        other => panic!("{other:?}"),
    }
}

/// A Gateway API route of `kind` named `name`, created at `created`.
fn route(kind: &str, name: &str, created: i64, body: &str) -> Route {
    let version = match kind {
        "TLSRoute" | "TCPRoute" => "v1alpha2",
        _ => "v1",
    };
    let yaml = format!(
        "apiVersion: gateway.networking.k8s.io/{version}\nkind: {kind}\nmetadata: {{name: {name}}}\n{body}"
    );
    match doc(&yaml) {
        Resource::Route(mut r) => {
            r.created = Some(created);
            r
        }
        other => panic!("{other:?}"),
    }
}

fn state(services: Vec<Service>, routes: Vec<Route>) -> State {
    State {
        services: services
            .into_iter()
            .map(|s| ((s.namespace.clone(), s.name.clone()), s))
            .collect(),
        routes: routes.into_iter().map(|r| (r.key(), r)).collect(),
        ..Default::default()
    }
}

fn policy_of(s: &State, name: &str, port: u16) -> Policy {
    let svc = &s.services[&("default".to_string(), name.to_string())];
    policy(s, &Lookup::new(s), svc, port, DOMAIN)
}

fn names(p: &Policy) -> Vec<&str> {
    p.routes.iter().map(|r| r.name.as_str()).collect()
}

fn status<'a>(statuses: &'a [RouteStatus], name: &str) -> &'a ParentStatus {
    &statuses
        .iter()
        .find(|s| s.name == name)
        .expect("a status")
        .parents[0]
}

const TO_WEB: &str = "spec:\n  parentRefs: [{group: core, kind: Service, name: web}]\n";

#[test]
fn routes_attach_oldest_first_then_by_name() {
    let s = state(
        vec![service("web", &[80], "")],
        vec![
            route("HTTPRoute", "zeta", 100, TO_WEB),
            route("HTTPRoute", "alpha", 200, TO_WEB),
            route("HTTPRoute", "beta", 100, TO_WEB),
        ],
    );
    let p = policy_of(&s, "web", 80);
    assert_eq!(names(&p), ["beta", "zeta", "alpha"]);
    assert_eq!(p.protocol, RouteProtocol::Http);
    // No backendRefs: the parent itself, at the target port.
    let b = &p.routes[0].rules[0].backends[0];
    assert_eq!(
        (b.authority.as_str(), b.weight, &b.error),
        ("web.default.svc.cluster.local:80", 1, &None)
    );
}

#[test]
fn backends_resolve_or_fail_with_a_reason() {
    let body = "spec:\n  parentRefs: [{group: core, kind: Service, name: web}]\n  rules:\n  - backendRefs:\n    - {name: v1, port: 8080, weight: 90}\n    - {name: v2, port: 8080, weight: 10}\n    - {name: v1, port: 9999, weight: 0}\n";
    let s = state(
        vec![service("web", &[80], ""), service("v1", &[8080], "")],
        vec![route("HTTPRoute", "split", 1, body)],
    );
    let p = policy_of(&s, "web", 80);
    let backends = &p.routes[0].rules[0].backends;
    let view: Vec<_> = backends
        .iter()
        .map(|b| (b.authority.as_str(), b.weight, b.error.as_deref()))
        .collect();
    assert_eq!(
        view,
        [
            ("v1.default.svc.cluster.local:8080", 90, None),
            (
                "v2.default.svc.cluster.local:8080",
                10,
                Some("backend Service default/v2 not found")
            ),
            (
                "v1.default.svc.cluster.local:9999",
                0,
                Some("backend Service default/v1 has no port 9999")
            ),
        ]
    );
    let st = statuses(&s);
    let conds = &status(&st, "split").conditions;
    assert_eq!((conds[0].kind, conds[0].status), ("Accepted", "True"));
    assert_eq!(
        (conds[1].kind, conds[1].status, conds[1].reason),
        ("ResolvedRefs", "False", "BackendNotFound")
    );
    assert_eq!(
        conds[1].message,
        "backend Service default/v2 not found; backend Service default/v1 has no port 9999"
    );
}

#[test]
fn parent_ports_and_kinds() {
    let s = state(
        vec![service("web", &[80, 81], "")],
        vec![
            route(
                "HTTPRoute",
                "on-80",
                1,
                "spec:\n  parentRefs: [{group: core, kind: Service, name: web, port: 80}]\n",
            ),
            route(
                "HTTPRoute",
                "on-82",
                1,
                "spec:\n  parentRefs: [{group: core, kind: Service, name: web, port: 82}]\n",
            ),
            route(
                "HTTPRoute",
                "inbound",
                1,
                "spec:\n  parentRefs: [{group: policy.linkerd.io, kind: Server, name: web}]\n",
            ),
            route(
                "HTTPRoute",
                "nowhere",
                1,
                "spec:\n  parentRefs: [{group: core, kind: Service, name: ghost}]\n",
            ),
        ],
    );
    assert_eq!(names(&policy_of(&s, "web", 80)), ["on-80"]);
    assert!(policy_of(&s, "web", 81).routes.is_empty());
    let st = statuses(&s);
    let accepted = |name| {
        let c = &status(&st, name).conditions[0];
        (c.status, c.reason, c.message.clone())
    };
    assert_eq!(accepted("on-80").0, "True");
    assert_eq!(
        accepted("on-82"),
        (
            "False",
            "NoMatchingParent",
            "Service default/web has no port 82".into()
        )
    );
    // An inbound route: its Server parent does not exist (it never reaches outbound policy).
    assert_eq!(
        accepted("inbound"),
        ("False", "NoMatchingParent", "no Server default/web".into())
    );
    assert_eq!(
        accepted("nowhere"),
        (
            "False",
            "NoMatchingParent",
            "no Service default/ghost".into()
        )
    );
}

#[test]
fn grpc_routes_win_over_http_routes() {
    let s = state(
        vec![service("api", &[9000], "")],
        vec![
            route(
                "HTTPRoute",
                "http",
                1,
                "spec:\n  parentRefs: [{group: core, kind: Service, name: api}]\n",
            ),
            route(
                "GRPCRoute",
                "grpc",
                2,
                "spec:\n  parentRefs: [{group: core, kind: Service, name: api, port: 9000}]\n",
            ),
        ],
    );
    let p = policy_of(&s, "api", 9000);
    assert_eq!(p.protocol, RouteProtocol::Grpc);
    assert_eq!(names(&p), ["grpc"]);
    let st = statuses(&s);
    let c = &status(&st, "http").conditions[0];
    assert_eq!((c.status, c.reason), ("False", "Conflicted"));
    assert!(
        c.message
            .starts_with("GRPCRoute default/grpc also attaches to Service default/api"),
        "{}",
        c.message
    );
    assert_eq!(status(&st, "grpc").conditions[0].status, "True");
}

#[test]
fn annotations_merge_route_over_service() {
    let svc = service(
        "web",
        &[80],
        "retry.linkerd.io/http: 5xx, timeout.linkerd.io/request: 5s, balancer.linkerd.io/failure-accrual: consecutive",
    );
    let with_timeout = "metadata: {name: t, annotations: {timeout.linkerd.io/response: 1s}}\n";
    let mut r = route(
        "HTTPRoute",
        "r",
        1,
        &format!("{TO_WEB}  rules:\n  - timeouts: {{request: 3s, backendRequest: 2s}}\n"),
    );
    // The route's own response timeout replaces all of the Service's timeouts (Linkerd).
    r.timeouts = match doc(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n{with_timeout}spec: {{}}\n"
    )) {
        Resource::Route(t) => t.timeouts,
        _ => unreachable!(),
    };
    let s = state(vec![svc], vec![r]);
    let p = policy_of(&s, "web", 80);
    assert!(p.failure_accrual.is_some());
    let rule = &p.routes[0].rules[0];
    assert_eq!(
        rule.policy.timeouts,
        Timeouts {
            request: Some(Duration::from_secs(3)),
            response: Some(Duration::from_secs(1)),
            idle: None,
        }
    );
    assert_eq!(
        rule.policy.retry,
        Some(RetryPolicy {
            limit: 1,
            timeout: Some(Duration::from_secs(2)),
            conditions: RetryConditions::Http(vec![(500, 599)]),
        })
    );
    // Without routes the Service's own policy is the default route's.
    let s = state(
        vec![service("web", &[80], "timeout.linkerd.io/request: 5s")],
        vec![],
    );
    let p = policy_of(&s, "web", 80);
    assert!(p.routes.is_empty());
    assert_eq!(
        p.default_rule.timeouts.request,
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        (p.default_rule.retry.as_ref(), p.failure_accrual.as_ref()),
        (None, None)
    );
}

#[test]
fn fault_filters_resolve_or_fail() {
    let body = format!("{TO_WEB}  rules:\n  - filters: [{{type: ExtensionRef, extensionRef: {{group: extensions.weft.dev, kind: FaultInjection, name: flaky}}}}]\n");
    let mut s = state(
        vec![service("web", &[80], "")],
        vec![route("HTTPRoute", "r", 1, &body)],
    );
    let filters = |s: &State| policy_of(s, "web", 80).routes[0].rules[0].filters.clone();
    assert_eq!(
        filters(&s),
        [OutFilter::Unresolved(
            "FaultInjection default/flaky not found".into()
        )]
    );
    let st = statuses(&s);
    assert_eq!(status(&st, "r").conditions[1].reason, "FilterNotFound");
    let Resource::Fault(f) = doc("apiVersion: extensions.weft.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: flaky}\nspec: {ratio: {numerator: 1}}\n") else {
        panic!()
    };
    s.faults
        .insert(("default".into(), "flaky".into()), f.clone());
    assert_eq!(filters(&s), [OutFilter::Fault(f)]);
    assert_eq!(statuses(&s)[0].parents[0].conditions[1].status, "True");
}

fn outbound_policy(rx: &tokio::sync::watch::Receiver<Outbound>) -> Arc<Policy> {
    match &*rx.borrow() {
        Outbound::Service { policy, .. } => policy.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn changes_recompute_exactly_the_affected_keys() {
    let services = || {
        vec![
            service("web", &[80], ""),
            service("other", &[80], ""),
            service("v1", &[80], ""),
        ]
    };
    let split = "spec:\n  parentRefs: [{group: core, kind: Service, name: web}]\n  rules:\n  - backendRefs: [{name: v1, port: 80}, {name: v2, port: 80}]\n";
    let index = Index::new(DOMAIN);
    index.apply(Arc::new(state(services(), vec![])));
    let web = index.outbound(&Target::Name {
        name: "web".into(),
        namespace: "default".into(),
        port: 80,
    });
    let web_ip = index.outbound(&Target::Addr("198.18.0.13:80".parse().unwrap()));
    let other = index.outbound(&Target::Name {
        name: "other".into(),
        namespace: "default".into(),
        port: 80,
    });
    assert!(outbound_policy(&web).routes.is_empty());

    // A route to web: web's keys (by name and by address) only.
    let applied = index.apply(Arc::new(state(
        services(),
        vec![route("HTTPRoute", "split", 1, split)],
    )));
    assert_eq!((applied.recomputed, applied.sent), (2, 2));
    assert_eq!(names(&outbound_policy(&web)), ["split"]);
    assert_eq!(names(&outbound_policy(&web_ip)), ["split"]);
    assert!(outbound_policy(&other).routes.is_empty());
    let missing = |rx| {
        outbound_policy(rx).routes[0].rules[0].backends[1]
            .error
            .clone()
    };
    assert_eq!(
        missing(&web),
        Some("backend Service default/v2 not found".into())
    );

    // The missing backend appears: the keys of the routes' parents are recomputed (the address
    // key too: a Service changed, and cluster IPs may move), and other's policy is untouched.
    let mut with_v2 = services();
    with_v2.push(service("v2", &[80], ""));
    let applied = index.apply(Arc::new(state(
        with_v2,
        vec![route("HTTPRoute", "split", 1, split)],
    )));
    assert_eq!(missing(&web), None);
    assert_eq!(applied.sent, 2, "web by name and by address");
    assert!(applied.recomputed >= 2);

    // A change to a Service nobody routes to does not touch web's name key.
    let mut s = state(services(), vec![route("HTTPRoute", "split", 1, split)]);
    s.services
        .insert(("default".into(), "v2".into()), service("v2", &[80], ""));
    s.services
        .get_mut(&("default".to_string(), "other".to_string()))
        .unwrap()
        .annotations
        .insert("timeout.linkerd.io/request".into(), "1s".into());
    let before = outbound_policy(&web);
    let applied = index.apply(Arc::new(s));
    assert_eq!(applied.sent, 1, "only other's policy changed");
    assert!(
        Arc::ptr_eq(&before, &outbound_policy(&web)),
        "web's name key was not recomputed"
    );
    assert_eq!(
        outbound_policy(&other).default_rule.timeouts.request,
        Some(Duration::from_secs(1))
    );
}

#[test]
fn a_fault_injection_change_recomputes_the_parents_of_routes_naming_it() {
    let body = format!("{TO_WEB}  rules:\n  - filters: [{{type: ExtensionRef, extensionRef: {{group: extensions.weft.dev, kind: FaultInjection, name: flaky}}}}]\n");
    let mk = |status: Option<u16>| {
        let mut s = state(
            vec![service("web", &[80], ""), service("other", &[80], "")],
            vec![route("HTTPRoute", "r", 1, &body)],
        );
        if let Some(status) = status {
            let Resource::Fault(mut f) = doc("apiVersion: extensions.weft.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: flaky}\nspec: {}\n") else {
                panic!()
            };
            f.status = status;
            s.faults.insert(("default".into(), "flaky".into()), f);
        }
        Arc::new(s)
    };
    let index = Index::new(DOMAIN);
    index.apply(mk(None));
    let web = index.outbound(&Target::Name {
        name: "web".into(),
        namespace: "default".into(),
        port: 80,
    });
    let other = index.outbound(&Target::Name {
        name: "other".into(),
        namespace: "default".into(),
        port: 80,
    });
    let filter = |rx: &tokio::sync::watch::Receiver<Outbound>| {
        outbound_policy(rx).routes[0].rules[0].filters[0].clone()
    };
    assert!(matches!(filter(&web), OutFilter::Unresolved(_)));
    let applied = index.apply(mk(Some(503)));
    assert_eq!(
        (applied.recomputed, applied.sent),
        (1, 1),
        "web only, not other"
    );
    assert!(matches!(filter(&web), OutFilter::Fault(f) if f.status == 503));
    assert!(outbound_policy(&other).routes.is_empty());
}

#[test]
fn tls_and_tcp_routes_of_a_service() {
    let rule =
        "  rules: [{backendRefs: [{name: v1, port: 8080, weight: 3}, {name: ghost, port: 1}]}]\n";
    let s = state(
        vec![service("db", &[5432, 5433], ""), service("v1", &[8080], "")],
        vec![
            route(
                "TCPRoute",
                "tcp",
                1,
                &format!("spec:\n  parentRefs: [{{group: core, kind: Service, name: db}}]\n{rule}"),
            ),
            route(
                "TLSRoute",
                "tls",
                2,
                &format!("spec:\n  parentRefs: [{{group: core, kind: Service, name: db, port: 5433}}]\n  hostnames: [db.example.com]\n{rule}"),
            ),
            route(
                "HTTPRoute",
                "http",
                3,
                "spec:\n  parentRefs: [{group: core, kind: Service, name: db, port: 5433}]\n",
            ),
        ],
    );
    // 5432: the TCPRoute alone; its backends resolve as an HTTPRoute's do.
    let p = policy_of(&s, "db", 5432);
    assert_eq!((p.protocol, names(&p)), (RouteProtocol::Tcp, vec!["tcp"]));
    let view: Vec<_> = p.routes[0].rules[0]
        .backends
        .iter()
        .map(|b| (b.authority.as_str(), b.weight, b.error.as_deref()))
        .collect();
    assert_eq!(
        view,
        [
            ("v1.default.svc.cluster.local:8080", 3, None),
            (
                "ghost.default.svc.cluster.local:1",
                1,
                Some("backend Service default/ghost not found")
            ),
        ]
    );
    // 5433: the HTTPRoute wins over the TLSRoute, which is Conflicted (its one port), and over
    // the TCPRoute, which stays accepted (it has 5432).
    let p = policy_of(&s, "db", 5433);
    assert_eq!((p.protocol, names(&p)), (RouteProtocol::Http, vec!["http"]));
    let st = statuses(&s);
    let accepted = |name| {
        let c = &status(&st, name).conditions[0];
        (c.status, c.reason, c.message.clone())
    };
    assert_eq!(accepted("http").0, "True");
    let (tls_status, reason, message) = accepted("tls");
    assert_eq!((tls_status, reason), ("False", "Conflicted"));
    assert!(
        message.starts_with("HTTPRoute default/http also attaches to Service default/db: each port serves one route kind, and HTTPRoute wins over TLSRoute"),
        "{message}"
    );
    assert_eq!(accepted("tcp").0, "True");
    assert_eq!(
        status(&st, "tcp").conditions[1].reason,
        "BackendNotFound",
        "ResolvedRefs as for an HTTPRoute"
    );
}
