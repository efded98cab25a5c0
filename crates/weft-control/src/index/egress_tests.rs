//! Which EgressNetwork answers a client, what it answers, and that watches follow it.

use crate::documents::state_of;
use crate::index::{self, Index, Outbound, Target};
use crate::resource::egress::TrafficPolicy;
use crate::resource::route::RouteProtocol;
use crate::resource::State;
use std::sync::Arc;

const DOMAIN: &str = "cluster.local";

fn net(ns: &str, name: &str, created: &str, policy: &str, networks: &str) -> String {
    format!(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: EgressNetwork\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: '{created}'}}\nspec: {{trafficPolicy: {policy}{networks}}}\n---\n"
    )
}

const WEB: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {selector: {app: web}, clusterIP: 198.18.0.10, ports: [{port: 80}]}\n---\n";

fn addr(a: &str) -> Target {
    Target::Addr(a.parse().unwrap())
}

/// (namespace, name, policy) of the EgressNetwork answering a client of `ns` for `a`.
fn answer(s: &State, ns: &str, a: &str) -> Option<(String, String, TrafficPolicy)> {
    match index::outbound_from(s, DOMAIN, &addr(a), Some(ns)) {
        Outbound::Egress(e) => Some((e.namespace.clone(), e.name.clone(), e.traffic_policy)),
        Outbound::NotFound => None,
        other => panic!("{other:?}"),
    }
}

#[test]
fn own_namespace_first_then_the_egress_namespace_oldest_first() {
    let s = state_of(&format!(
        "{}{}{}{}{WEB}",
        net("weft-egress", "global", "2024-01-01T00:00:00Z", "Deny", ""),
        net("shop", "newer", "2024-03-01T00:00:00Z", "Allow", ""),
        net("shop", "older", "2024-02-01T00:00:00Z", "Deny", ""),
        net(
            "shop",
            "aws",
            "2023-01-01T00:00:00Z",
            "Allow",
            ", networks: [{cidr: 52.0.0.0/8}]"
        ),
    ));
    let shop = |n: &str, p| Some(("shop".to_string(), n.to_string(), p));
    // The oldest of the client's namespace containing the address.
    assert_eq!(
        answer(&s, "shop", "1.1.1.1:443"),
        shop("older", TrafficPolicy::Deny)
    );
    assert_eq!(
        answer(&s, "shop", "52.1.1.1:443"),
        shop("aws", TrafficPolicy::Allow)
    );
    // Other namespaces get the egress namespace's.
    assert_eq!(
        answer(&s, "other", "1.1.1.1:443"),
        Some(("weft-egress".into(), "global".into(), TrafficPolicy::Deny))
    );
    // Without a namespace, or inside the cluster networks: NotFound, as before EgressNetworks.
    assert_eq!(
        index::outbound_from(&s, DOMAIN, &addr("1.1.1.1:443"), None),
        Outbound::NotFound
    );
    assert_eq!(answer(&s, "shop", "10.1.2.3:80"), None);
    // A Service cluster IP is the Service whatever the namespace.
    assert!(matches!(
        index::outbound_from(&s, DOMAIN, &addr("198.18.0.10:80"), Some("shop")),
        Outbound::Service { .. }
    ));
}

#[test]
fn same_age_ties_break_by_name() {
    let s = state_of(&format!(
        "{}{}",
        net("shop", "b", "2024-01-01T00:00:00Z", "Allow", ""),
        net("shop", "a", "2024-01-01T00:00:00Z", "Deny", ""),
    ));
    assert_eq!(answer(&s, "shop", "1.1.1.1:80").unwrap().1, "a");
}

#[test]
fn an_address_no_network_contains_is_not_found() {
    let s = state_of(&net(
        "weft-egress",
        "aws",
        "2024-01-01T00:00:00Z",
        "Allow",
        ", networks: [{cidr: 52.0.0.0/8, except: [52.1.0.0/16]}]",
    ));
    assert_eq!(answer(&s, "shop", "8.8.8.8:53"), None);
    assert_eq!(answer(&s, "shop", "52.1.2.3:443"), None);
    assert!(answer(&s, "shop", "52.2.2.3:443").is_some());
}

#[test]
fn routes_attach_by_parent_and_port_in_precedence_order() {
    let route = |name: &str, created: &str, port: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: shop, creationTimestamp: '{created}'}}\nspec:\n  parentRefs: [{{group: policy.linkerd.io, kind: EgressNetwork, name: internet{port}}}]\n  hostnames: [example.org]\n  rules: [{{backendRefs: [{{name: ignored, port: 80}}]}}]\n---\n"
        )
    };
    let s = state_of(&format!(
        "{}{}{}{}",
        net("shop", "internet", "2024-01-01T00:00:00Z", "Deny", ""),
        route("late", "2024-02-01T00:00:00Z", ""),
        route("early", "2024-01-15T00:00:00Z", ""),
        route("tls-only", "2024-01-01T00:00:00Z", ", port: 443"),
    ));
    let names = |a: &str| match index::outbound_from(&s, DOMAIN, &addr(a), Some("shop")) {
        Outbound::Egress(e) => {
            assert!(e.routes.iter().all(|r| r.rules[0].backends.is_empty()));
            e.routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(names("1.1.1.1:80"), ["early", "late"]);
    assert_eq!(names("1.1.1.1:443"), ["tls-only", "early", "late"]);

    let statuses = index::route_statuses(&s);
    assert!(statuses
        .iter()
        .all(|r| r.parents[0].conditions[0].reason == "Accepted"));
    let policies = index::policy_statuses(&s);
    assert_eq!(policies.len(), 1);
    assert_eq!(
        (policies[0].kind, policies[0].conditions[0].reason),
        ("EgressNetwork", "Accepted")
    );
    // Without the network the routes have no parent and nothing answers.
    let mut s = s.clone();
    s.egress_networks.clear();
    let statuses = index::route_statuses(&s);
    assert!(statuses
        .iter()
        .all(|r| r.parents[0].conditions[0].reason == "NoMatchingParent"));
    assert_eq!(answer(&s, "shop", "1.1.1.1:80"), None);
}

#[tokio::test]
async fn a_watch_follows_the_traffic_policy_and_services_keep_one_key() {
    let index = Index::new(DOMAIN);
    index.apply(Arc::new(state_of(&format!(
        "{}{WEB}",
        net("shop", "internet", "2024-01-01T00:00:00Z", "Allow", "")
    ))));
    let mut rx = index.outbound_from(&addr("1.1.1.1:443"), Some("shop"));
    let policy = |o: &Outbound| match o {
        Outbound::Egress(e) => Some(e.traffic_policy),
        _ => None,
    };
    assert_eq!(policy(&rx.borrow_and_update()), Some(TrafficPolicy::Allow));
    // Service targets share one key whatever the client's namespace.
    let before = index.key_count();
    let _a = index.outbound_from(&addr("198.18.0.10:80"), Some("shop"));
    let _b = index.outbound_from(&addr("198.18.0.10:80"), Some("other"));
    let _c = index.outbound(&addr("198.18.0.10:80"));
    assert_eq!(index.key_count(), before + 1);

    index.apply(Arc::new(state_of(&format!(
        "{}{WEB}",
        net("shop", "internet", "2024-01-01T00:00:00Z", "Deny", "")
    ))));
    assert!(rx.has_changed().unwrap());
    assert_eq!(policy(&rx.borrow_and_update()), Some(TrafficPolicy::Deny));

    index.apply(Arc::new(state_of(WEB)));
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), Outbound::NotFound);
}

/// A route of `kind` (TLSRoute and TCPRoute with their one rule) in namespace `shop` with the
/// EgressNetwork `internet` as parent, on `port` if given.
fn egress_route(kind: &str, name: &str, created: &str, port: Option<u16>) -> String {
    let (av, extra) = match kind {
        "TLSRoute" => (
            "v1alpha2",
            "  hostnames: [api.example.com]\n  rules: [{}]\n",
        ),
        "TCPRoute" => ("v1alpha2", "  rules: [{}]\n"),
        _ => ("v1", ""),
    };
    let port = port.map(|p| format!(", port: {p}")).unwrap_or_default();
    format!(
        "apiVersion: gateway.networking.k8s.io/{av}\nkind: {kind}\nmetadata: {{name: {name}, namespace: shop, creationTimestamp: '{created}'}}\nspec:\n  parentRefs: [{{group: policy.linkerd.io, kind: EgressNetwork, name: internet{port}}}]\n{extra}---\n"
    )
}

#[test]
fn every_route_kind_attaches_and_per_port_the_first_kind_wins() {
    let s = state_of(&format!(
        "{}{}{}{}{}{}{}{}",
        net("shop", "internet", "2024-01-01T00:00:00Z", "Deny", ""),
        egress_route("HTTPRoute", "http", "2024-01-02T00:00:00Z", Some(80)),
        egress_route("GRPCRoute", "grpc", "2024-01-02T00:00:00Z", Some(50051)),
        egress_route("TLSRoute", "tls", "2024-01-02T00:00:00Z", Some(443)),
        egress_route("TLSRoute", "tls-older", "2024-01-01T00:00:00Z", Some(443)),
        egress_route("TCPRoute", "tcp", "2024-01-02T00:00:00Z", Some(5432)),
        // Its one port is the HTTPRoute's: outranked.
        egress_route("TLSRoute", "tls-on-80", "2024-01-01T00:00:00Z", Some(80)),
        // Every port: used where no other kind is.
        egress_route("TCPRoute", "tcp-any", "2024-01-01T00:00:00Z", None),
    ));
    let at = |port: u16| {
        let a = format!("1.1.1.1:{port}");
        match index::outbound_from(&s, DOMAIN, &addr(&a), Some("shop")) {
            Outbound::Egress(e) => {
                let names: Vec<String> = e.routes.iter().map(|r| r.name.clone()).collect();
                (e.protocol, names)
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(at(80), (RouteProtocol::Http, vec!["http".into()]));
    assert_eq!(at(50051), (RouteProtocol::Grpc, vec!["grpc".into()]));
    assert_eq!(
        at(443),
        (RouteProtocol::Tls, vec!["tls-older".into(), "tls".into()]),
        "oldest first"
    );
    assert_eq!(
        at(5432),
        (RouteProtocol::Tcp, vec!["tcp-any".into(), "tcp".into()])
    );
    assert_eq!(at(8080), (RouteProtocol::Tcp, vec!["tcp-any".into()]));

    let statuses = index::route_statuses(&s);
    let accepted = |name: &str| {
        let st = statuses.iter().find(|r| r.name == name).unwrap();
        let c = &st.parents[0].conditions[0];
        (c.reason, c.message.clone())
    };
    for name in ["http", "grpc", "tls", "tls-older", "tcp", "tcp-any"] {
        assert_eq!(accepted(name), ("Accepted", String::new()), "{name}");
    }
    assert_eq!(
        accepted("tls-on-80"),
        (
            "Conflicted",
            "HTTPRoute shop/http also attaches to EgressNetwork shop/internet: each port serves one route kind, and HTTPRoute wins over TLSRoute (GEP-1426; as in Linkerd: GRPCRoute > HTTPRoute > TLSRoute > TCPRoute)".into()
        )
    );

    // Without routes on a port: Detect, as before routes.
    let s = state_of(&format!(
        "{}{}",
        net("shop", "internet", "2024-01-01T00:00:00Z", "Deny", ""),
        egress_route("TCPRoute", "tcp", "2024-01-02T00:00:00Z", Some(5432)),
    ));
    match index::outbound_from(&s, DOMAIN, &addr("1.1.1.1:8080"), Some("shop")) {
        Outbound::Egress(e) => assert_eq!((e.protocol, e.routes.len()), (RouteProtocol::Http, 0)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn connection_routes_do_not_attach_to_a_server() {
    let s = state_of(
        "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {name: db, namespace: shop}\nspec: {podSelector: {matchLabels: {app: db}}, port: 5432}\n---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: db, namespace: shop}\nspec:\n  parentRefs: [{group: policy.linkerd.io, kind: Server, name: db}]\n  rules: [{}]\n",
    );
    let statuses = index::route_statuses(&s);
    let c = &statuses[0].parents[0].conditions[0];
    assert_eq!((c.status, c.reason), ("False", "NotAllowedByParent"));
    assert_eq!(
        c.message,
        "Server shop/db: only HTTPRoutes and GRPCRoutes attach to a Server (TCPRoutes are outbound only)"
    );
}
