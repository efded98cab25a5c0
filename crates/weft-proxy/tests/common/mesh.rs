//! Proxies with identity on 127.0.0.1 and their control plane: `Identity.Certify` from the test
//! CA, a Destination whose answers the test scripts per name and an `InboundServerPolicies`
//! whose answers it scripts per port, so several proxies (client, gateway, target) can be
//! chained over real sockets with mTLS everywhere.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use linkerd2_proxy_api::destination::{
    self as dst,
    destination_server::{Destination, DestinationServer},
    protocol_hint,
    update::Update as U,
};
use linkerd2_proxy_api::http_route as hr;
use linkerd2_proxy_api::identity::identity_server::IdentityServer;
use linkerd2_proxy_api::inbound::{
    self as inb, authn,
    inbound_server_policies_server::{InboundServerPolicies, InboundServerPoliciesServer},
    proxy_protocol,
};
use linkerd2_proxy_api::{meta, net::IpNetwork};
use tokio::net::TcpListener;
use weft_proxy::runtime;

use super::ca::{Ca, Certifier};

/// The token every proxy of these tests presents to `Certify`.
pub const TOKEN: &str = "weft-mesh-test-token";

type Stream<T> = Pin<Box<dyn futures_util::Stream<Item = Result<T, tonic::Status>> + Send>>;

/// Destination answers: `host:port` → endpoints; any other name is not a mesh name
/// (InvalidArgument, as the control plane answers).
#[derive(Clone, Default)]
pub struct Scripted(pub Arc<HashMap<String, Vec<dst::WeightedAddr>>>);

impl Scripted {
    pub fn new(names: impl IntoIterator<Item = (String, Vec<dst::WeightedAddr>)>) -> Scripted {
        Scripted(Arc::new(names.into_iter().collect()))
    }
}

#[tonic::async_trait]
impl Destination for Scripted {
    type GetStream = Stream<dst::Update>;
    type GetProfileStream = Stream<dst::DestinationProfile>;

    async fn get(
        &self,
        req: tonic::Request<dst::GetDestination>,
    ) -> Result<tonic::Response<Self::GetStream>, tonic::Status> {
        let path = req.into_inner().path;
        let Some(addrs) = self.0.get(&path).cloned() else {
            return Err(tonic::Status::invalid_argument(format!(
                "{path} is not scripted"
            )));
        };
        let add = U::Add(dst::WeightedAddrSet {
            addrs,
            metric_labels: Default::default(),
        });
        let first =
            futures_util::stream::once(async move { Ok(dst::Update { update: Some(add) }) });
        use futures_util::StreamExt as _;
        // The stream stays open, as the control plane's do.
        Ok(tonic::Response::new(Box::pin(
            first.chain(futures_util::stream::pending()),
        )))
    }

    async fn get_profile(
        &self,
        _: tonic::Request<dst::GetDestination>,
    ) -> Result<tonic::Response<Self::GetProfileStream>, tonic::Status> {
        Err(tonic::Status::invalid_argument("no profiles here"))
    }
}

/// How an endpoint wants to be spoken to.
#[derive(Clone, Copy, Debug)]
pub enum Hint {
    H2,
    Opaque,
}

/// A meshed endpoint at `addr` with TLS identity `identity`; `opaque_transport`: its proxy's
/// opaque-transport port; `authority_override`: the name a gateway endpoint forwards to.
pub fn endpoint(
    addr: SocketAddr,
    identity: &str,
    hint: Hint,
    opaque_transport: Option<u16>,
    authority_override: Option<&str>,
) -> dst::WeightedAddr {
    dst::WeightedAddr {
        addr: Some(addr.into()),
        weight: 10000,
        tls_identity: Some(dst::TlsIdentity {
            strategy: Some(dst::tls_identity::Strategy::DnsLikeIdentity(
                dst::tls_identity::DnsLikeIdentity {
                    name: identity.into(),
                },
            )),
            server_name: None,
        }),
        protocol_hint: Some(dst::ProtocolHint {
            protocol: Some(match hint {
                Hint::H2 => protocol_hint::Protocol::H2(protocol_hint::H2 {}),
                Hint::Opaque => protocol_hint::Protocol::Opaque(protocol_hint::Opaque {}),
            }),
            opaque_transport: opaque_transport.map(|p| protocol_hint::OpaqueTransport {
                inbound_port: p.into(),
            }),
        }),
        authority_override: authority_override.map(|a| dst::AuthorityOverride {
            authority_override: a.into(),
        }),
        ..Default::default()
    }
}

/// Inbound policy answers: port → its Server, port 0 for every port not listed; any other port
/// is not answered (unimplemented: the proxy's default policy applies).
#[derive(Clone, Default)]
pub struct Policies(pub Arc<HashMap<u16, inb::Server>>);

impl Policies {
    pub fn new(ports: impl IntoIterator<Item = (u16, inb::Server)>) -> Policies {
        Policies(Arc::new(ports.into_iter().collect()))
    }
}

#[tonic::async_trait]
impl InboundServerPolicies for Policies {
    type WatchPortStream = Stream<inb::Server>;

    async fn get_port(
        &self,
        _: tonic::Request<inb::PortSpec>,
    ) -> Result<tonic::Response<inb::Server>, tonic::Status> {
        Err(tonic::Status::unimplemented("watch only"))
    }

    async fn watch_port(
        &self,
        req: tonic::Request<inb::PortSpec>,
    ) -> Result<tonic::Response<Self::WatchPortStream>, tonic::Status> {
        let port = req.into_inner().port;
        let listed = u16::try_from(port).ok().and_then(|p| self.0.get(&p));
        let Some(server) = listed.or_else(|| self.0.get(&0)).cloned() else {
            return Err(tonic::Status::unimplemented(format!("port {port}")));
        };
        use futures_util::StreamExt as _;
        let first = futures_util::stream::once(async move { Ok(server) });
        Ok(tonic::Response::new(Box::pin(
            first.chain(futures_util::stream::pending()),
        )))
    }
}

/// A `Server` resource `name` admitting only the mTLS clients `identities`, from any network,
/// with its `AuthorizationPolicy` `NAME-authz`: opaque, or detecting HTTP with one match-all
/// route taking the same authorization.
pub fn server(name: &str, opaque: bool, identities: &[&str]) -> inb::Server {
    let resource = |group: &str, kind: &str, name: &str| {
        Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                group: group.into(),
                kind: kind.into(),
                name: name.into(),
                namespace: "default".into(),
                section: String::new(),
                port: 0,
            })),
        })
    };
    let any = |ip: std::net::IpAddr| inb::Network {
        net: Some(IpNetwork::from((ip, 0))),
        except: Vec::new(),
    };
    let authz = inb::Authz {
        networks: vec![
            any(std::net::Ipv4Addr::UNSPECIFIED.into()),
            any(std::net::Ipv6Addr::UNSPECIFIED.into()),
        ],
        authentication: Some(inb::Authn {
            permit: Some(authn::Permit::MeshTls(authn::PermitMeshTls {
                clients: Some(authn::permit_mesh_tls::Clients::Identities(
                    authn::permit_mesh_tls::PermitClientIdentities {
                        identities: identities
                            .iter()
                            .map(|i| inb::Identity { name: (*i).into() })
                            .collect(),
                        suffixes: Vec::new(),
                    },
                )),
            })),
        }),
        labels: HashMap::new(),
        metadata: resource(
            "policy.linkerd.io",
            "authorizationpolicy",
            &format!("{name}-authz"),
        ),
    };
    let kind = if opaque {
        proxy_protocol::Kind::Opaque(proxy_protocol::Opaque {})
    } else {
        let route = inb::HttpRoute {
            metadata: Some(meta::Metadata {
                kind: Some(meta::metadata::Kind::Default("default".into())),
            }),
            hosts: Vec::new(),
            authorizations: vec![authz.clone()],
            rules: vec![inb::http_route::Rule {
                matches: vec![hr::HttpRouteMatch {
                    path: Some(hr::PathMatch {
                        kind: Some(hr::path_match::Kind::Prefix("/".into())),
                    }),
                    ..Default::default()
                }],
                filters: Vec::new(),
            }],
        };
        proxy_protocol::Kind::Detect(proxy_protocol::Detect {
            timeout: Some(prost_types::Duration {
                seconds: 10,
                nanos: 0,
            }),
            http_routes: vec![route],
            http_local_rate_limit: None,
        })
    };
    inb::Server {
        protocol: Some(inb::ProxyProtocol { kind: Some(kind) }),
        server_ips: Vec::new(),
        authorizations: vec![authz],
        labels: HashMap::from(
            [
                ("group", "policy.linkerd.io"),
                ("kind", "server"),
                ("name", name),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        ),
    }
}

/// A control plane on 127.0.0.1: `Certify` for [`TOKEN`] and `names` for Destination (no
/// inbound policies: the proxies' defaults apply). Returns its address.
pub async fn control_plane(ca: &Arc<Ca>, names: Scripted) -> String {
    control_plane_with(ca, names, Policies::default()).await
}

/// [`control_plane`] answering `policies` for inbound ports too.
pub async fn control_plane_with(ca: &Arc<Ca>, names: Scripted, policies: Policies) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IdentityServer::new(Certifier::new(ca.clone(), TOKEN)))
            .add_service(DestinationServer::new(names))
            .add_service(InboundServerPoliciesServer::new(policies))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

/// A file holding [`TOKEN`], unique to this process and `tag`.
pub fn token_file(tag: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("weft-mesh-{tag}-{}", std::process::id()));
    std::fs::write(&path, TOKEN).unwrap();
    path
}

/// A proxy with identity `name` (certified before this returns) whose control plane is `cp`;
/// `vars` add to its environment.
pub async fn proxy(ca: &Ca, cp: &str, name: &str, vars: &[(&str, &str)]) -> runtime::Running {
    let token = token_file(name).display().to_string();
    let mut env = vec![
        ("WEFT_PROXY_DESTINATION_SVC_ADDR", cp),
        ("WEFT_PROXY_CONTROL_BACKOFF_MAX", "200ms"),
        ("WEFT_PROXY_IDENTITY_TOKEN_FILE", token.as_str()),
        ("WEFT_PROXY_IDENTITY_LOCAL_NAME", name),
        ("WEFT_PROXY_IDENTITY_TRUST_ANCHORS", ca.anchor_pem.as_str()),
    ];
    env.extend_from_slice(vars);
    let running = runtime::start(super::config(&env)).await.expect("start");
    let identity = running.identity.clone().expect("identity");
    tokio::time::timeout(std::time::Duration::from_secs(20), identity.wait_ready())
        .await
        .expect("the proxy's certificate");
    running
}
