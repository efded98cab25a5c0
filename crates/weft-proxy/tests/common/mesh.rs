//! Proxies with identity on 127.0.0.1 and their control plane: `Identity.Certify` from the test
//! CA and a Destination whose answers the test scripts per name, so several proxies (client,
//! gateway, target) can be chained over real sockets with mTLS everywhere.

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
use linkerd2_proxy_api::identity::identity_server::IdentityServer;
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

/// A control plane on 127.0.0.1: `Certify` for [`TOKEN`] and `names` for Destination (policies
/// unimplemented: the proxies' defaults apply). Returns its address.
pub async fn control_plane(ca: &Arc<Ca>, names: Scripted) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IdentityServer::new(Certifier::new(ca.clone(), TOKEN)))
            .add_service(DestinationServer::new(names))
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
