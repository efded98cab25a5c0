//! Which EgressNetwork answers a client, what it answers, and that watches follow it.

use crate::documents::state_of;
use crate::index::{self, Index, Outbound, Target};
use crate::resource::egress::TrafficPolicy;
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
