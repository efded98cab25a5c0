//! Validation of `EgressNetwork`: values out, or errors naming the field.

use super::*;
use crate::documents::parse_one as parse;

fn network(spec: &str) -> String {
    format!(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: EgressNetwork\nmetadata: {{name: internet, namespace: shop}}\nspec: {spec}\n"
    )
}

#[test]
fn egress_network_with_networks() {
    let r = parse(&network(
        "{trafficPolicy: Deny, networks: [{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}]}",
    ))
    .unwrap();
    let Resource::EgressNetwork(n) = r else {
        panic!("{r:?}")
    };
    assert_eq!(n.traffic_policy, TrafficPolicy::Deny);
    assert_eq!(
        (n.namespace.as_str(), n.name.as_str()),
        ("shop", "internet")
    );
    let cluster = crate::resource::authz::parse_cidr_list("10.0.0.0/8").unwrap();
    assert!(n.contains("1.2.3.4".parse().unwrap(), &cluster));
    assert!(!n.contains("10.1.2.3".parse().unwrap(), &cluster));
    assert!(!n.contains("::1".parse().unwrap(), &cluster), "v4 only");
}

#[test]
fn egress_network_without_networks_is_outside_the_cluster() {
    let Resource::EgressNetwork(n) = parse(&network("{trafficPolicy: Allow}")).unwrap() else {
        panic!()
    };
    assert_eq!(n.traffic_policy, TrafficPolicy::Allow);
    assert!(n.networks.is_empty());
    let cluster = crate::resource::authz::parse_cidr_list("10.0.0.0/8").unwrap();
    assert!(n.contains("8.8.8.8".parse().unwrap(), &cluster));
    assert!(!n.contains("10.0.0.1".parse().unwrap(), &cluster));
}

#[test]
fn egress_network_errors_name_the_field() {
    let e = parse(&network("{}")).unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].ends_with("spec.trafficPolicy: required (Allow or Deny)"),
        "{e:?}"
    );
    let e = parse(&network(
        "{trafficPolicy: allow, networks: [{cidr: 1.2.3.0/33}, {except: [10.0.0.0/8]}, {cidr: 10.0.0.0/8, except: [11.0.0.0/8]}]}",
    ))
    .unwrap_err();
    let fields: Vec<&str> = e.iter().map(|m| m.split(": ").nth(2).unwrap()).collect();
    assert_eq!(
        fields,
        [
            "spec.trafficPolicy",
            "spec.networks[0].cidr",
            "spec.networks[1].cidr",
            "spec.networks[2].except[0]",
        ],
        "{e:?}"
    );
    assert!(
        e[0].contains("must be Allow or Deny, got \"allow\""),
        "{e:?}"
    );
    let e = parse(&network("{trafficPolicy: Deny, networks: 10.0.0.0/8}")).unwrap_err();
    assert!(
        e[0].ends_with("spec.networks: expected a list, got a string"),
        "{e:?}"
    );
    let e = parse(
        "apiVersion: policy.linkerd.io/v1beta1\nkind: EgressNetwork\nmetadata: {name: x}\nspec: {trafficPolicy: Allow}\n",
    )
    .unwrap_err();
    assert!(
        e[0].contains("apiVersion: must be policy.linkerd.io/v1alpha1"),
        "{e:?}"
    );
}
