//! The `inbound::Server` encoding of inbound snapshots, field by field as the wire contract
//! fixes it: default policies, a Server without routes, a Server with routes, rate limits.

use super::*;
use crate::index::inbound::InboundDefaults;
use crate::resource::authz::DefaultPolicy;
use crate::resource::{validate_one, Defaults, Resource, State};
use inb::authn::permit_mesh_tls::Clients;
use inb::authn::Permit;
use inb::proxy_protocol::Kind;
use linkerd2_proxy_api::http_route as hr;

fn state(docs: &[&str]) -> State {
    let defaults = Defaults {
        trust_domain: "cluster.local".into(),
        control_namespace: "weft".into(),
    };
    let mut s = State::default();
    for d in docs {
        let v: serde_json::Value = yaml_serde::from_str(d).unwrap();
        match validate_one(&v, "test", &defaults).unwrap_or_else(|e| panic!("{e:?}")) {
            Resource::Workload(x) => {
                s.workloads.insert((x.namespace.clone(), x.name.clone()), x);
            }
            Resource::Server(mut x) => {
                x.created.get_or_insert(0);
                s.servers.insert((x.namespace.clone(), x.name.clone()), x);
            }
            Resource::AuthorizationPolicy(x) => {
                s.authorization_policies
                    .insert((x.namespace.clone(), x.name.clone()), x);
            }
            Resource::MeshTls(x) => {
                s.mesh_tls_authentications
                    .insert((x.namespace.clone(), x.name.clone()), x);
            }
            Resource::NetworkAuthentication(x) => {
                s.network_authentications
                    .insert((x.namespace.clone(), x.name.clone()), x);
            }
            Resource::Route(mut r) => {
                r.created.get_or_insert(0);
                s.routes.insert(r.key(), r);
            }
            Resource::RateLimit(mut x) => {
                x.created.get_or_insert(0);
                s.rate_limit_policies
                    .insert((x.namespace.clone(), x.name.clone()), x);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    s
}

const WEB: &str = "apiVersion: workload.linkerd.io/v1beta1\nkind: ExternalWorkload\nmetadata: {name: web, labels: {app: web}, annotations: {config.linkerd.io/opaque-ports: '6379'}}\nspec: {workloadIPs: [{ip: 127.0.0.1}], ports: [{name: http, port: 8080}]}\n";

fn encode(s: &State, d: &InboundDefaults, port: u16) -> inb::Server {
    let key = InboundKey {
        namespace: "default".into(),
        workload: "web".into(),
        port,
    };
    server(&index::inbound(s, d, &key))
}

fn labels(group: &str, kind: &str, name: &str) -> HashMap<String, String> {
    super::labels(group, kind, name)
}

fn net(s: &str) -> Option<net::IpNetwork> {
    let c: Cidr = s.parse().unwrap();
    Some(net::IpNetwork::from((c.addr(), c.prefix())))
}

fn networks(a: &inb::Authz) -> Vec<Option<net::IpNetwork>> {
    a.networks.iter().map(|n| n.net).collect()
}

fn everywhere() -> Vec<Option<net::IpNetwork>> {
    vec![net("0.0.0.0/0"), net("::/0")]
}

fn permit(a: &inb::Authz) -> Permit {
    a.authentication.clone().unwrap().permit.unwrap()
}

fn mesh_tls(identities: &[&str], suffixes: &[&[&str]]) -> Permit {
    Permit::MeshTls(inb::authn::PermitMeshTls {
        clients: Some(Clients::Identities(
            inb::authn::permit_mesh_tls::PermitClientIdentities {
                identities: identities
                    .iter()
                    .map(|n| inb::Identity {
                        name: n.to_string(),
                    })
                    .collect(),
                suffixes: suffixes
                    .iter()
                    .map(|p| inb::IdentitySuffix {
                        parts: p.iter().map(|s| s.to_string()).collect(),
                    })
                    .collect(),
            },
        )),
    })
}

fn unauthenticated() -> Permit {
    Permit::Unauthenticated(inb::authn::PermitUnauthenticated {})
}

fn detect_routes(s: &inb::Server) -> Vec<inb::HttpRoute> {
    match s.protocol.clone().unwrap().kind.unwrap() {
        Kind::Detect(d) => {
            assert_eq!(d.timeout, duration(DETECT_TIMEOUT));
            d.http_routes
        }
        other => panic!("expected detect, got {other:?}"),
    }
}

#[test]
fn every_default_policy() {
    let s = state(&[WEB]);
    let cluster = InboundDefaults {
        cluster_networks: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
        ..InboundDefaults::default()
    };
    for p in DefaultPolicy::ALL {
        let d = InboundDefaults {
            default_policy: p,
            ..cluster.clone()
        };
        let srv = encode(&s, &d, 8080);
        assert_eq!(srv.labels, labels("", "default", p.name()), "{p}");
        assert!(srv.server_ips.is_empty());
        let want: Vec<(Vec<Option<net::IpNetwork>>, Permit)> = match p {
            DefaultPolicy::AllUnauthenticated | DefaultPolicy::Audit => {
                vec![(everywhere(), unauthenticated())]
            }
            DefaultPolicy::AllAuthenticated => vec![(everywhere(), mesh_tls(&[], &[&[]]))],
            DefaultPolicy::ClusterUnauthenticated => {
                vec![(vec![net("10.0.0.0/8"), net("fd00::/8")], unauthenticated())]
            }
            DefaultPolicy::ClusterAuthenticated => {
                vec![(
                    vec![net("10.0.0.0/8"), net("fd00::/8")],
                    mesh_tls(&[], &[&[]]),
                )]
            }
            DefaultPolicy::Deny => vec![],
        };
        let got: Vec<_> = srv
            .authorizations
            .iter()
            .map(|a| (networks(a), permit(a)))
            .collect();
        assert_eq!(got, want, "{p}");
        for a in &srv.authorizations {
            assert_eq!(a.metadata, Some(default_meta(p.name())));
            assert_eq!(a.labels, labels("", "default", p.name()));
        }
        // One default route, match-all, carrying the server's authorizations.
        let routes = detect_routes(&srv);
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].metadata, Some(default_meta("default")));
        assert_eq!(routes[0].rules[0].matches, vec![match_all()]);
        assert_eq!(routes[0].authorizations, srv.authorizations);
        // The workload's opaque port.
        let opaque = encode(&s, &d, 6379);
        assert_eq!(
            opaque.protocol.unwrap().kind,
            Some(Kind::Opaque(inb::proxy_protocol::Opaque {}))
        );
        assert_eq!(opaque.authorizations, srv.authorizations);
    }
}

const SERVER: &str = "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {name: web-http}\nspec: {podSelector: {matchLabels: {app: web}}, port: http, proxyProtocol: HTTP/2, accessPolicy: all-authenticated}\n";
const POLICY: &str = "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: ap}\nspec:\n  targetRef: {group: policy.linkerd.io, kind: Server, name: web-http}\n  requiredAuthenticationRefs:\n  - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: m}\n  - {group: policy.linkerd.io, kind: NetworkAuthentication, name: n}\n";
const MESH_TLS: &str = "apiVersion: policy.linkerd.io/v1alpha1\nkind: MeshTLSAuthentication\nmetadata: {name: m}\nspec: {identityRefs: [{kind: ServiceAccount, name: api}, {kind: Namespace, name: ops}]}\n";
const NETWORK: &str = "apiVersion: policy.linkerd.io/v1alpha1\nkind: NetworkAuthentication\nmetadata: {name: n}\nspec: {networks: [{cidr: 10.0.0.0/8, except: [10.9.0.0/16]}]}\n";

#[test]
fn server_without_routes_gets_the_default_route_with_server_authorizations() {
    let s = state(&[WEB, SERVER, POLICY, MESH_TLS, NETWORK]);
    let srv = encode(&s, &InboundDefaults::default(), 8080);
    assert_eq!(
        srv.labels,
        labels("policy.linkerd.io", "server", "web-http")
    );
    let Some(Kind::Http2(h2)) = srv.protocol.clone().unwrap().kind else {
        panic!("{srv:?}")
    };
    assert_eq!(srv.authorizations.len(), 2);
    let ap = &srv.authorizations[0];
    assert_eq!(
        ap.labels,
        labels("policy.linkerd.io", "authorizationpolicy", "ap")
    );
    assert_eq!(
        ap.metadata,
        Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                group: "policy.linkerd.io".into(),
                kind: "authorizationpolicy".into(),
                name: "ap".into(),
                namespace: "default".into(),
                section: String::new(),
                port: 0,
            })),
        })
    );
    assert_eq!(
        ap.networks,
        vec![inb::Network {
            net: net("10.0.0.0/8"),
            except: vec![net("10.9.0.0/16").unwrap()],
        }]
    );
    assert_eq!(
        permit(ap),
        mesh_tls(
            &["api.default.serviceaccount.identity.weft.cluster.local"],
            &[&[
                "ops",
                "serviceaccount",
                "identity",
                "weft",
                "cluster",
                "local"
            ]]
        )
    );
    // The accessPolicy's authorization comes last.
    let access = &srv.authorizations[1];
    assert_eq!(access.metadata, Some(default_meta("all-authenticated")));
    assert_eq!(permit(access), mesh_tls(&[], &[&[]]));
    assert_eq!(h2.routes.len(), 1);
    assert_eq!(h2.routes[0].metadata, Some(default_meta("default")));
    assert_eq!(h2.routes[0].authorizations, srv.authorizations);
}

#[test]
fn server_with_routes_gets_one_route_each_with_only_route_authorizations() {
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: admin}\nspec:\n  parentRefs: [{group: policy.linkerd.io, kind: Server, name: web-http}]\n  hostnames: ['*.example.com']\n  rules: [{matches: [{path: {type: Exact, value: /admin}, method: POST}]}]\n";
    let route_policy = "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: admins}\nspec:\n  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: admin}\n  requiredAuthenticationRefs: [{kind: ServiceAccount, name: ops}]\n";
    let deny_server = SERVER
        .replace(", accessPolicy: all-authenticated", "")
        .replace("HTTP/2", "unknown");
    let s = state(&[
        WEB,
        &deny_server,
        POLICY,
        MESH_TLS,
        NETWORK,
        route,
        route_policy,
    ]);
    let srv = encode(&s, &InboundDefaults::default(), 8080);
    // Server-level: only `ap` (deny adds nothing); it does not reach the route.
    assert_eq!(srv.authorizations.len(), 1);
    let routes = detect_routes(&srv);
    assert_eq!(routes.len(), 1);
    let r = &routes[0];
    assert_eq!(
        r.metadata,
        Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                group: "gateway.networking.k8s.io".into(),
                kind: "HTTPRoute".into(),
                name: "admin".into(),
                namespace: "default".into(),
                section: String::new(),
                port: 0,
            })),
        })
    );
    assert_eq!(r.hosts, vec![host_match("*.example.com")]);
    assert_eq!(r.rules.len(), 1);
    let m = &r.rules[0].matches[0];
    assert_eq!(
        m.path.clone().unwrap().kind,
        Some(hr::path_match::Kind::Exact("/admin".into()))
    );
    assert!(m.method.is_some());
    assert_eq!(r.authorizations.len(), 1);
    assert_eq!(
        r.authorizations[0].labels,
        labels("policy.linkerd.io", "authorizationpolicy", "admins")
    );
    assert_eq!(networks(&r.authorizations[0]), everywhere());
    assert_eq!(
        permit(&r.authorizations[0]),
        mesh_tls(
            &["ops.default.serviceaccount.identity.weft.cluster.local"],
            &[]
        )
    );
}

#[test]
fn grpc_server_default_route_matches_every_rpc() {
    let grpc = SERVER.replace("HTTP/2", "gRPC");
    let s = state(&[WEB, &grpc]);
    let srv = encode(&s, &InboundDefaults::default(), 8080);
    let Some(Kind::Grpc(g)) = srv.protocol.clone().unwrap().kind else {
        panic!("{srv:?}")
    };
    assert_eq!(g.routes.len(), 1);
    assert_eq!(g.routes[0].metadata, Some(default_meta("default")));
    assert_eq!(
        g.routes[0].rules[0].matches,
        vec![grpc_route::GrpcRouteMatch::default()]
    );
    assert_eq!(g.routes[0].authorizations, srv.authorizations);
    let tls = SERVER.replace("HTTP/2", "TLS");
    let srv = encode(&state(&[WEB, &tls]), &InboundDefaults::default(), 8080);
    assert_eq!(
        srv.protocol.unwrap().kind,
        Some(Kind::Tls(inb::proxy_protocol::Tls {}))
    );
}

const RATE_LIMIT: &str = "apiVersion: policy.linkerd.io/v1alpha1\nkind: HTTPLocalRateLimitPolicy\nmetadata: {name: web-rl}\nspec:\n  targetRef: {group: policy.linkerd.io, kind: Server, name: web-http}\n  total: {requestsPerSecond: 100}\n  overrides: [{requestsPerSecond: 25, clientRefs: [{kind: ServiceAccount, name: special}, {kind: ServiceAccount, name: ops, namespace: infra}]}]\n";

#[test]
fn detect_server_carries_its_rate_limit() {
    let detect = SERVER.replace("HTTP/2", "unknown");
    let s = state(&[WEB, &detect, RATE_LIMIT]);
    let srv = encode(&s, &InboundDefaults::default(), 8080);
    let Some(Kind::Detect(d)) = srv.protocol.clone().unwrap().kind else {
        panic!("{srv:?}")
    };
    use inb::http_local_rate_limit::{r#override::ClientIdentities, Limit, Override};
    let identity = |name: &str| inb::Identity { name: name.into() };
    assert_eq!(
        d.http_local_rate_limit,
        Some(inb::HttpLocalRateLimit {
            metadata: Some(meta::Metadata {
                kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                    group: "policy.linkerd.io".into(),
                    kind: "httplocalratelimitpolicy".into(),
                    name: "web-rl".into(),
                    namespace: "default".into(),
                    section: String::new(),
                    port: 0,
                })),
            }),
            total: Some(Limit {
                requests_per_second: 100
            }),
            identity: None,
            overrides: vec![Override {
                limit: Some(Limit {
                    requests_per_second: 25
                }),
                clients: Some(ClientIdentities {
                    identities: vec![
                        identity("special.default.serviceaccount.identity.weft.cluster.local"),
                        identity("ops.infra.serviceaccount.identity.weft.cluster.local"),
                    ],
                }),
            }],
        })
    );
    // Without a policy, no limit; HTTP/1 and HTTP/2 Servers carry it in `local_rate_limit`.
    let srv = encode(&state(&[WEB, &detect]), &InboundDefaults::default(), 8080);
    let Some(Kind::Detect(d)) = srv.protocol.unwrap().kind else {
        panic!()
    };
    assert_eq!(d.http_local_rate_limit, None);
    let http1 = SERVER.replace("HTTP/2", "HTTP/1");
    let srv = encode(
        &state(&[WEB, &http1, RATE_LIMIT]),
        &InboundDefaults::default(),
        8080,
    );
    let Some(Kind::Http1(h1)) = srv.protocol.unwrap().kind else {
        panic!()
    };
    assert_eq!(
        h1.local_rate_limit
            .unwrap()
            .total
            .unwrap()
            .requests_per_second,
        100
    );
    let srv = encode(
        &state(&[WEB, SERVER, RATE_LIMIT]),
        &InboundDefaults::default(),
        8080,
    );
    let Some(Kind::Http2(h2)) = srv.protocol.unwrap().kind else {
        panic!()
    };
    assert_eq!(h2.local_rate_limit.unwrap().overrides.len(), 1);
}

#[test]
fn grpc_opaque_and_default_servers_send_no_rate_limit() {
    // linkerd2-proxy-api's `Grpc` message has no field for a limit: the index leaves it out
    // (so `weft authz` does not show a limit that is not in force) and the encoding is the
    // routes alone.
    let grpc = SERVER.replace("HTTP/2", "gRPC");
    let s = state(&[WEB, &grpc, RATE_LIMIT]);
    let key = InboundKey {
        namespace: "default".into(),
        workload: "web".into(),
        port: 8080,
    };
    let snapshot = index::inbound(&s, &InboundDefaults::default(), &key);
    assert_eq!(snapshot.rate_limit, None);
    let Some(Kind::Grpc(g)) = server(&snapshot).protocol.unwrap().kind else {
        panic!()
    };
    // Written out in full so that a proto release adding the field breaks this build and
    // gets it wired.
    assert_eq!(
        g,
        inb::proxy_protocol::Grpc {
            routes: g.routes.clone()
        }
    );
    for protocol in ["opaque", "TLS"] {
        let srv = SERVER.replace("HTTP/2", protocol);
        let snapshot = index::inbound(
            &state(&[WEB, &srv, RATE_LIMIT]),
            &InboundDefaults::default(),
            &key,
        );
        assert_eq!(snapshot.rate_limit, None, "{protocol}");
        assert!(matches!(
            server(&snapshot).protocol.unwrap().kind,
            Some(Kind::Opaque(_) | Kind::Tls(_))
        ));
    }
    // A port no Server selects: the default policy, never limited.
    let srv = encode(
        &state(&[WEB, RATE_LIMIT]),
        &InboundDefaults::default(),
        8080,
    );
    let Some(Kind::Detect(d)) = srv.protocol.unwrap().kind else {
        panic!()
    };
    assert_eq!(d.http_local_rate_limit, None);
}
