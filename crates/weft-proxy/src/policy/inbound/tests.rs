//! Inbound policy: conversion of every default encoding of the contract, routes and audit; the
//! authorization decision table; inbound route matching (404 included); and the client against
//! a scripted in-process `InboundServerPolicies` (sharing, idle close, keeping the last policy,
//! the default until the first answer).

use super::client::{Defaults, Settings};
use super::*;
use http::Request;
use linkerd2_proxy_api::{
    grpc_route as gr, http_route as hr,
    inbound::{
        self as inb, authn,
        inbound_server_policies_server::{InboundServerPolicies, InboundServerPoliciesServer},
        proxy_protocol,
    },
    meta as m,
    net::IpNetwork,
};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
};
use tokio::{net::TcpListener, sync::watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::Status;

pub(crate) const WEB: &str = "web.default.serviceaccount.identity.weft.cluster.local";
const OTHER_NS: &str = "api.prod.serviceaccount.identity.weft.cluster.local";
const CLUSTER: &str =
    "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,198.18.0.0/15,fd00::/8";

// === proto builders (shared with the inbound end-to-end tests) ===

pub(crate) fn ipnet(cidr: &str) -> IpNetwork {
    let (ip, len) = cidr.split_once('/').expect("cidr");
    let ip: IpAddr = ip.parse().expect("ip");
    IpNetwork::from((ip, len.parse::<u8>().expect("len")))
}

pub(crate) fn network(cidr: &str, except: &[&str]) -> inb::Network {
    inb::Network {
        net: Some(ipnet(cidr)),
        except: except.iter().map(|e| ipnet(e)).collect(),
    }
}

pub(crate) fn all() -> Vec<inb::Network> {
    vec![network("0.0.0.0/0", &[]), network("::/0", &[])]
}

fn cluster_nets() -> Vec<inb::Network> {
    CLUSTER.split(',').map(|c| network(c, &[])).collect()
}

pub(crate) fn unauthenticated() -> inb::Authn {
    inb::Authn {
        permit: Some(authn::Permit::Unauthenticated(
            authn::PermitUnauthenticated {},
        )),
    }
}

pub(crate) fn mesh(identities: &[&str], suffixes: &[&[&str]]) -> inb::Authn {
    inb::Authn {
        permit: Some(authn::Permit::MeshTls(authn::PermitMeshTls {
            clients: Some(authn::permit_mesh_tls::Clients::Identities(
                authn::permit_mesh_tls::PermitClientIdentities {
                    identities: identities
                        .iter()
                        .map(|i| inb::Identity { name: (*i).into() })
                        .collect(),
                    suffixes: suffixes
                        .iter()
                        .map(|p| inb::IdentitySuffix {
                            parts: p.iter().map(|s| (*s).to_string()).collect(),
                        })
                        .collect(),
                },
            )),
        })),
    }
}

pub(crate) fn default_meta(name: &str) -> Option<m::Metadata> {
    Some(m::Metadata {
        kind: Some(m::metadata::Kind::Default(name.into())),
    })
}

pub(crate) fn resource(group: &str, kind: &str, name: &str) -> Option<m::Metadata> {
    Some(m::Metadata {
        kind: Some(m::metadata::Kind::Resource(m::Resource {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
            namespace: "default".into(),
            section: String::new(),
            port: 0,
        })),
    })
}

pub(crate) fn authz(
    meta: Option<m::Metadata>,
    networks: Vec<inb::Network>,
    authn: inb::Authn,
) -> inb::Authz {
    inb::Authz {
        networks,
        authentication: Some(authn),
        labels: HashMap::new(),
        metadata: meta,
    }
}

pub(crate) fn prefix(p: &str) -> hr::HttpRouteMatch {
    hr::HttpRouteMatch {
        path: Some(hr::PathMatch {
            kind: Some(hr::path_match::Kind::Prefix(p.into())),
        }),
        ..Default::default()
    }
}

pub(crate) fn http_route(
    meta: Option<m::Metadata>,
    hosts: &[&str],
    matches: Vec<hr::HttpRouteMatch>,
    authorizations: Vec<inb::Authz>,
) -> inb::HttpRoute {
    inb::HttpRoute {
        metadata: meta,
        hosts: hosts
            .iter()
            .map(|h| hr::HostMatch {
                r#match: Some(hr::host_match::Match::Exact((*h).into())),
            })
            .collect(),
        authorizations,
        rules: vec![inb::http_route::Rule {
            matches,
            filters: Vec::new(),
        }],
    }
}

fn labels(group: &str, kind: &str, name: &str) -> HashMap<String, String> {
    HashMap::from([
        ("group".to_string(), group.to_string()),
        ("kind".to_string(), kind.to_string()),
        ("name".to_string(), name.to_string()),
    ])
}

/// A server detecting HTTP, with `routes` (one default route taking `authzs` when empty).
pub(crate) fn detect_server(
    labels_: (&str, &str, &str),
    authzs: Vec<inb::Authz>,
    routes: Vec<inb::HttpRoute>,
) -> inb::Server {
    let routes = if routes.is_empty() {
        vec![http_route(
            default_meta("default"),
            &[],
            vec![prefix("/")],
            authzs.clone(),
        )]
    } else {
        routes
    };
    inb::Server {
        protocol: Some(inb::ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Detect(proxy_protocol::Detect {
                timeout: Some(prost_types::Duration {
                    seconds: 10,
                    nanos: 0,
                }),
                http_routes: routes,
                http_local_rate_limit: None,
            })),
        }),
        server_ips: Vec::new(),
        authorizations: authzs,
        labels: labels(labels_.0, labels_.1, labels_.2),
    }
}

/// The contract's encoding of a default policy.
pub(crate) fn default_server(policy: DefaultPolicy) -> inb::Server {
    let meta = default_meta(policy.name());
    let authzs = match policy {
        DefaultPolicy::Deny => Vec::new(),
        DefaultPolicy::AllUnauthenticated | DefaultPolicy::Audit => {
            vec![authz(meta, all(), unauthenticated())]
        }
        DefaultPolicy::AllAuthenticated => vec![authz(meta, all(), mesh(&[], &[&[]]))],
        DefaultPolicy::ClusterUnauthenticated => {
            vec![authz(meta, cluster_nets(), unauthenticated())]
        }
        DefaultPolicy::ClusterAuthenticated => vec![authz(meta, cluster_nets(), mesh(&[], &[&[]]))],
    };
    detect_server(("", "default", policy.name()), authzs, Vec::new())
}

fn client(ip: &str, tls: ClientTls<'static>) -> ClientRef<'static> {
    ClientRef {
        ip: ip.parse().expect("ip"),
        tls,
    }
}

fn mtls(id: &'static str) -> ClientTls<'static> {
    ClientTls::Terminated { id: Some(id) }
}

fn get(uri: &str) -> Request<()> {
    Request::get(uri).body(()).expect("request")
}

/// The name of the authorization admitting `c` on the default route, `None` if denied.
fn decide(p: &ServerPolicy, c: &ClientRef<'_>) -> Option<String> {
    let req = get("http://web:8080/anything");
    let route = p.route(&RequestHead::of(&req)).expect("default route");
    let http =
        authorize(route.authorizations, c).map(|i| route.authorizations[i].meta.name.clone());
    // The server-level authorizations (opaque connections) decide the same.
    let tcp = authorize(&p.authorizations, c).map(|i| p.authorizations[i].meta.name.clone());
    assert_eq!(http, tcp);
    http
}

#[test]
fn each_default_policy_encoding_converts_and_decides_like_the_env_default() {
    let cluster: Vec<Cidr> = crate::config::parse_networks(CLUSTER).expect("nets");
    let in_cluster_plain = client("198.18.0.5", ClientTls::None);
    let outside_plain = client("8.8.8.8", ClientTls::None);
    let in_cluster_mtls = client("10.1.2.3", mtls(WEB));
    let outside_mtls = client("8.8.8.8", mtls(WEB));
    let tls_no_cert = client("10.1.2.3", ClientTls::Terminated { id: None });
    use DefaultPolicy::*;
    // (policy, admits: plain in cluster, plain outside, mTLS in cluster, mTLS outside, TLS no cert)
    let table = [
        (AllUnauthenticated, [true, true, true, true, true]),
        (AllAuthenticated, [false, false, true, true, false]),
        (ClusterUnauthenticated, [true, false, true, false, true]),
        (ClusterAuthenticated, [false, false, true, false, false]),
        (Deny, [false; 5]),
        (Audit, [true; 5]),
    ];
    for (policy, want) in table {
        let from_proto = proto::server(default_server(policy)).expect("converts");
        let from_env = ServerPolicy::default_for(policy, &cluster, false);
        for p in [&from_proto, &from_env] {
            assert_eq!(*p.meta, Meta::default_named(policy.name()), "{policy}");
            assert!(matches!(p.protocol, ServerProtocol::Detect { .. }));
            let clients = [
                &in_cluster_plain,
                &outside_plain,
                &in_cluster_mtls,
                &outside_mtls,
                &tls_no_cert,
            ];
            for (c, want) in clients.into_iter().zip(want) {
                let got = decide(p, c);
                assert_eq!(got.is_some(), want, "{policy} for {c:?}");
                if let Some(name) = got {
                    assert_eq!(name, policy.name());
                }
            }
        }
        let audit = from_proto
            .authorizations
            .first()
            .is_some_and(Authz::is_audit);
        assert_eq!(audit, policy == Audit, "{policy}");
    }
    // Opaque ports get an opaque default.
    assert!(ServerPolicy::default_for(Deny, &cluster, true).is_opaque());
}

#[test]
fn the_authorization_decision_table() {
    let a = |networks, authn| {
        proto::authz(authz(
            resource("policy.linkerd.io", "authorizationpolicy", "p"),
            networks,
            authn,
        ))
        .expect("authz")
    };
    let net = vec![network("10.0.0.0/8", &["10.9.0.0/16"])];
    let exact = a(net.clone(), mesh(&[WEB], &[]));
    let suffix = a(
        all(),
        mesh(
            &[],
            &[&[
                "default",
                "serviceaccount",
                "identity",
                "weft",
                "cluster",
                "local",
            ]],
        ),
    );
    let any_id = a(all(), mesh(&[], &[&[]]));
    let open = a(net.clone(), unauthenticated());
    let tls_only = proto::authz(authz(
        None,
        all(),
        inb::Authn {
            permit: Some(authn::Permit::MeshTls(authn::PermitMeshTls {
                clients: Some(authn::permit_mesh_tls::Clients::Unauthenticated(
                    authn::PermitUnauthenticated {},
                )),
            })),
        },
    ))
    .expect("authz");

    let cases: [(&Authz, ClientRef<'static>, bool); 16] = [
        // Networks and their exceptions.
        (&open, client("10.1.0.1", ClientTls::None), true),
        (&open, client("10.9.0.1", ClientTls::None), false),
        (&open, client("11.0.0.1", ClientTls::None), false),
        (&open, client("::ffff:10.1.0.1", ClientTls::None), true),
        // Exact identity.
        (&exact, client("10.1.0.1", mtls(WEB)), true),
        (&exact, client("10.1.0.1", mtls(OTHER_NS)), false),
        (&exact, client("10.9.0.1", mtls(WEB)), false),
        (&exact, client("10.1.0.1", ClientTls::None), false),
        // Suffix: the namespace's identities only.
        (&suffix, client("8.8.8.8", mtls(WEB)), true),
        (&suffix, client("8.8.8.8", mtls(OTHER_NS)), false),
        // Any identity, but an identity.
        (&any_id, client("8.8.8.8", mtls(OTHER_NS)), true),
        (
            &any_id,
            client("8.8.8.8", ClientTls::Terminated { id: None }),
            false,
        ),
        (&any_id, client("8.8.8.8", ClientTls::None), false),
        // TLS terminated here, identity optional; plaintext (or relayed TLS) is not.
        (
            &tls_only,
            client("8.8.8.8", ClientTls::Terminated { id: None }),
            true,
        ),
        (&tls_only, client("8.8.8.8", mtls(WEB)), true),
        (&tls_only, client("8.8.8.8", ClientTls::None), false),
    ];
    for (i, (authz, c, want)) in cases.iter().enumerate() {
        assert_eq!(authz.admits(c), *want, "case {i}: {c:?}");
    }
    // `authorize`: any admitting authorization; audit only when nothing else admits.
    let audit =
        proto::authz(authz(default_meta("audit"), all(), unauthenticated())).expect("authz");
    let list = [audit.clone(), exact.clone()];
    assert_eq!(authorize(&list, &client("10.1.0.1", mtls(WEB))), Some(1));
    assert_eq!(
        authorize(&list, &client("10.1.0.1", ClientTls::None)),
        Some(0)
    );
    assert_eq!(
        authorize(&[exact], &client("10.1.0.1", ClientTls::None)),
        None
    );
    assert_eq!(authorize(&[], &client("10.1.0.1", mtls(WEB))), None);
}

#[test]
fn routes_convert_with_hosts_matches_metadata_and_their_own_authorizations() {
    let admin = http_route(
        resource("policy.linkerd.io", "HTTPRoute", "admin"),
        &["web.example.com"],
        vec![prefix("/admin")],
        vec![authz(
            resource("policy.linkerd.io", "authorizationpolicy", "admins"),
            all(),
            mesh(&[WEB], &[]),
        )],
    );
    let public = http_route(
        resource("gateway.networking.k8s.io", "HTTPRoute", "public"),
        &[],
        vec![prefix("/public")],
        vec![authz(
            resource("policy.linkerd.io", "authorizationpolicy", "everyone"),
            all(),
            unauthenticated(),
        )],
    );
    let server = detect_server(
        ("policy.linkerd.io", "server", "web-http"),
        // Server-level: not applied to the routes' requests.
        vec![authz(
            default_meta("all-unauthenticated"),
            all(),
            unauthenticated(),
        )],
        vec![admin, public],
    );
    let p = proto::server(server).expect("converts");
    assert_eq!(
        (
            p.meta.group.as_str(),
            p.meta.kind.as_str(),
            p.meta.name.as_str()
        ),
        ("policy.linkerd.io", "server", "web-http")
    );
    let route_of = |uri: &str| {
        let req = get(uri);
        p.route(&RequestHead::of(&req)).map(|r| {
            let names: Vec<String> = r
                .authorizations
                .iter()
                .map(|a| a.meta.name.clone())
                .collect();
            (r.meta.name.clone(), r.meta.kind.clone(), names)
        })
    };
    assert_eq!(
        route_of("http://web.example.com/admin/users"),
        Some(("admin".into(), "HTTPRoute".into(), vec!["admins".into()]))
    );
    assert_eq!(
        route_of("http://other:8080/public/x"),
        Some(("public".into(), "HTTPRoute".into(), vec!["everyone".into()]))
    );
    // The admin route is for its host only; nothing else matches anything: 404.
    assert_eq!(route_of("http://other:8080/admin"), None);
    assert_eq!(route_of("http://web.example.com/"), None);

    // gRPC routes.
    let grpc = inb::Server {
        protocol: Some(inb::ProxyProtocol {
            kind: Some(proxy_protocol::Kind::Grpc(proxy_protocol::Grpc {
                routes: vec![inb::GrpcRoute {
                    metadata: resource("gateway.networking.k8s.io", "GRPCRoute", "greeter"),
                    hosts: Vec::new(),
                    authorizations: vec![authz(
                        default_meta("all-authenticated"),
                        all(),
                        mesh(&[], &[&[]]),
                    )],
                    rules: vec![inb::grpc_route::Rule {
                        matches: vec![gr::GrpcRouteMatch {
                            rpc: Some(gr::GrpcRpcMatch {
                                service: "hello.Greeter".into(),
                                method: String::new(),
                            }),
                            headers: Vec::new(),
                        }],
                        filters: Vec::new(),
                    }],
                }],
            })),
        }),
        server_ips: Vec::new(),
        authorizations: Vec::new(),
        labels: labels("policy.linkerd.io", "server", "greeter"),
    };
    let p = proto::server(grpc).expect("converts");
    let post = |path: &str| {
        Request::post(format!("http://web:8080{path}"))
            .body(())
            .expect("req")
    };
    let req = post("/hello.Greeter/SayHello");
    let r = p.route(&RequestHead::of(&req)).expect("route");
    assert_eq!(r.meta.name, "greeter");
    let req = post("/other.Service/Call");
    assert!(p.route(&RequestHead::of(&req)).is_none());

    // Opaque and TLS servers have no routes.
    for kind in [
        proxy_protocol::Kind::Opaque(proxy_protocol::Opaque {}),
        proxy_protocol::Kind::Tls(proxy_protocol::Tls {}),
    ] {
        let s = inb::Server {
            protocol: Some(inb::ProxyProtocol { kind: Some(kind) }),
            ..default_server(DefaultPolicy::Deny)
        };
        let p = proto::server(s).expect("converts");
        assert!(p.is_opaque());
        assert!(p.route(&RequestHead::of(&get("http://web/"))).is_none());
    }
}

#[test]
fn unusable_parts_fail_closed_and_a_server_without_protocol_is_refused() {
    let s = inb::Server {
        protocol: None,
        ..default_server(DefaultPolicy::AllUnauthenticated)
    };
    assert_eq!(proto::server(s).err(), Some(proto::Error::NoProtocol));
    // An authorization with a bad network or no authentication is dropped: it admits nobody.
    let bad_net = inb::Authz {
        networks: vec![inb::Network {
            net: Some(IpNetwork {
                ip: Some(IpAddr::from([10, 0, 0, 0]).into()),
                prefix_len: 40,
            }),
            except: Vec::new(),
        }],
        ..authz(default_meta("x"), Vec::new(), unauthenticated())
    };
    let no_authn = inb::Authz {
        authentication: None,
        ..authz(default_meta("y"), all(), unauthenticated())
    };
    let p = proto::server(detect_server(
        ("", "default", "x"),
        vec![bad_net, no_authn],
        Vec::new(),
    ))
    .expect("converts");
    assert!(p.authorizations.is_empty());
}

// === the client against a scripted control plane ===

/// A scripted `InboundServerPolicies`: one policy for every port (`None`: the stream stays
/// silent), counting streams; `kill` makes streams fail and the server stop.
#[derive(Clone)]
pub(crate) struct Ctl {
    pub policy: watch::Sender<Option<inb::Server>>,
    pub watches: Arc<AtomicUsize>,
    pub open: Arc<AtomicUsize>,
    pub kill: watch::Sender<bool>,
    pub ports: Arc<std::sync::Mutex<Vec<(String, u32)>>>,
}

#[tonic::async_trait]
impl InboundServerPolicies for Ctl {
    type WatchPortStream = ReceiverStream<Result<inb::Server, Status>>;

    async fn get_port(
        &self,
        _req: tonic::Request<inb::PortSpec>,
    ) -> Result<tonic::Response<inb::Server>, Status> {
        Err(Status::unimplemented("watch only"))
    }

    async fn watch_port(
        &self,
        req: tonic::Request<inb::PortSpec>,
    ) -> Result<tonic::Response<Self::WatchPortStream>, Status> {
        let spec = req.into_inner();
        self.ports.lock().unwrap().push((spec.workload, spec.port));
        self.watches.fetch_add(1, Ordering::SeqCst);
        let mut policy = self.policy.subscribe();
        let mut kill = self.kill.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let open = self.open.clone();
        open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            loop {
                let current = policy.borrow_and_update().clone();
                if let Some(p) = current {
                    if tx.send(Ok(p)).await.is_err() {
                        break;
                    }
                }
                tokio::select! {
                    r = policy.changed() => if r.is_err() { break },
                    _ = tx.closed() => break,
                    _ = kill.changed() => {
                        let _ = tx.send(Err(Status::unavailable("going away"))).await;
                        break;
                    }
                }
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

pub(crate) async fn control_plane(policy: Option<inb::Server>) -> (SocketAddr, Ctl) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ctl = Ctl {
        policy: watch::Sender::new(policy),
        watches: Arc::default(),
        open: Arc::default(),
        kill: watch::Sender::new(false),
        ports: Arc::default(),
    };
    let mut killed = ctl.kill.subscribe();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(InboundServerPoliciesServer::new(ctl.clone()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = killed.wait_for(|k| *k).await;
            }),
    );
    (addr, ctl)
}

pub(crate) fn settings(addr: SocketAddr, defaults: Defaults) -> Settings {
    Settings {
        addr: Some(addr.to_string()),
        tls: None,
        workload: "default:web-1".into(),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        failfast: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(200),
        defaults,
    }
}

fn name(p: &PortPolicy) -> String {
    p.current().meta.name.clone()
}

#[tokio::test]
async fn port_streams_are_shared_and_close_when_idle() {
    let (cp, ctl) = control_plane(Some(default_server(DefaultPolicy::Deny))).await;
    let client = InboundPolicies::new(settings(cp, Defaults::default()));
    let a = client.port(8080).await;
    let b = client.port(8080).await;
    assert_eq!(name(&a), "deny");
    assert_eq!(ctl.watches.load(Ordering::SeqCst), 1, "one stream per port");
    assert_eq!(
        ctl.ports.lock().unwrap()[0],
        ("default:web-1".to_string(), 8080)
    );
    let _c = client.port(9090).await;
    assert_eq!(ctl.watches.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(client.active(), 2, "in use: must stay");
    drop((a, b));
    let start = tokio::time::Instant::now();
    while client.active() > 1 || ctl.open.load(Ordering::SeqCst) > 1 {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the idle stream stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(start.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn the_last_policy_is_kept_while_the_control_plane_is_away_and_updates_apply() {
    let (cp, ctl) = control_plane(Some(default_server(DefaultPolicy::Deny))).await;
    let client = InboundPolicies::new(settings(cp, Defaults::default()));
    let port = client.port(8080).await;
    assert_eq!(name(&port), "deny");
    // A live update reaches the holder.
    ctl.policy
        .send_replace(Some(default_server(DefaultPolicy::ClusterAuthenticated)));
    let start = tokio::time::Instant::now();
    while name(&port) != "cluster-authenticated" {
        assert!(start.elapsed() < Duration::from_secs(2), "no update");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // An unusable update is ignored.
    ctl.policy.send_replace(Some(inb::Server {
        protocol: None,
        ..default_server(DefaultPolicy::Audit)
    }));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(name(&port), "cluster-authenticated");
    // The control plane goes away: the last policy stays, also for new connections.
    ctl.kill.send_replace(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(name(&port), "cluster-authenticated");
    assert_eq!(name(&client.port(8080).await), "cluster-authenticated");
}

#[tokio::test]
async fn without_an_answer_the_env_default_applies() {
    let defaults = Defaults {
        policy: DefaultPolicy::ClusterUnauthenticated,
        require_identity: crate::config::PortSet(vec![9443..=9443]),
        ..Defaults::default()
    };
    // No policy address.
    let none = InboundPolicies::defaults_only(defaults.clone());
    assert_eq!(name(&none.port(8080).await), "cluster-unauthenticated");
    // A port requiring identity gets the authenticated form.
    assert_eq!(name(&none.port(9443).await), "cluster-authenticated");

    // Unreachable: the default at once (no fail-fast wait).
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let unreachable = InboundPolicies::new(settings(addr, defaults.clone()));
    let start = tokio::time::Instant::now();
    assert_eq!(
        name(&unreachable.port(8080).await),
        "cluster-unauthenticated"
    );
    assert!(start.elapsed() < Duration::from_millis(450));

    // Connected but silent: the default after the fail-fast timeout, then the answer applies.
    let (cp, ctl) = control_plane(None).await;
    let silent = InboundPolicies::new(settings(cp, defaults));
    let start = tokio::time::Instant::now();
    let port = silent.port(8080).await;
    assert!(start.elapsed() >= Duration::from_millis(450));
    assert_eq!(name(&port), "cluster-unauthenticated");
    ctl.policy
        .send_replace(Some(default_server(DefaultPolicy::Deny)));
    let start = tokio::time::Instant::now();
    while name(&port) != "deny" {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the late answer never applied"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
