//! mTLS data-path tests over 127.0.0.1 with a CA minted here: ClientHello parsing, the transport
//! header, an outbound handshake refusing a certificate for another identity, and the inbound
//! path terminating TLS (transport header, client identity, a port that requires identity).

use super::*;
use crate::{
    accept::Accepted,
    config::PortSet,
    connect::{connect, ConnectError, Dial},
    discovery::{Endpoint, EndpointSet, ProtocolHint, Resolution, Target},
    http,
    identity::{
        tests::{test_config, token_file, TestCa},
        Certifier,
    },
    inbound::{self, Inbound},
    metrics::{self as m, Direction, Labels, Metrics, TlsLabel},
    outbound::{self, Origin, Outbound, OwnAddrs, Resolve},
};
use futures_util::future::BoxFuture;
use linkerd2_proxy_api::identity::{CertifyRequest, CertifyResponse};
use rustls::pki_types::ServerName;
use std::{collections::BTreeMap, future::Future, net::SocketAddr, time::SystemTime};
use tokio::net::{TcpListener, TcpStream};

pub(crate) const PROXY: &str = "web.default.serviceaccount.identity.weft.cluster.local";
pub(crate) const CLIENT: &str = "client.default.serviceaccount.identity.weft.cluster.local";
pub(crate) const OTHER: &str = "other.default.serviceaccount.identity.weft.cluster.local";

/// `Identity.Certify` answered by the CA in memory.
#[derive(Clone)]
struct Fake(Arc<TestCa>);

impl Certifier for Fake {
    fn certify(
        &mut self,
        req: CertifyRequest,
    ) -> impl Future<Output = Result<CertifyResponse, tonic::Status>> + Send {
        let ca = self.0.clone();
        async move { ca.sign_csr(&req, SystemTime::now() + Duration::from_secs(3600)) }
    }
}

/// This proxy's identity `PROXY`, certified by `ca`.
pub(crate) async fn identity(ca: &Arc<TestCa>, metrics: Metrics) -> Identity {
    let (cfg, schedule) = test_config(PROXY, &ca.anchor_pem, None, token_file("mtls"));
    let id = Identity::start_with(&cfg, schedule, metrics, Fake(ca.clone())).expect("identity");
    tokio::time::timeout(Duration::from_secs(5), id.wait_ready())
        .await
        .expect("first certificate");
    id
}

/// The bytes a rustls client sends first, to this proxy's name.
fn client_hello(alpn: &[&[u8]]) -> Vec<u8> {
    client_hello_to(PROXY, alpn)
}

/// The bytes a rustls client sends first when it connects to `sni`.
pub(crate) fn client_hello_to(sni: &str, alpn: &[&[u8]]) -> Vec<u8> {
    let ca = Arc::new(TestCa::new());
    let mut config = id_tls::client_config(&ca.valid(&[CLIENT]), PROXY).expect("config");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(sni.to_string()).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("hello");
    out
}

#[test]
fn client_hello_gives_sni_and_alpn_once_complete() {
    let hello = client_hello(&[TRANSPORT_ALPN, b"h2"]);
    let expected = Peeked::Hello(ClientHello {
        sni: Some(PROXY.to_string()),
        alpn: vec![TRANSPORT_ALPN.to_vec(), b"h2".to_vec()],
    });
    assert_eq!(parse_client_hello(&hello), Some(expected.clone()));
    for n in 1..hello.len() {
        assert_eq!(parse_client_hello(&hello[..n]), None, "prefix of {n} bytes");
    }

    // The same handshake message split across two records.
    let body = &hello[5..];
    let (a, b) = body.split_at(body.len() / 2);
    let mut split = Vec::new();
    for part in [a, b] {
        split.extend_from_slice(&[0x16, 0x03, 0x01]);
        split.extend_from_slice(&(part.len() as u16).to_be_bytes());
        split.extend_from_slice(part);
    }
    assert_eq!(parse_client_hello(&split), Some(expected));

    assert_eq!(
        parse_client_hello(b"GET / HTTP/1.1\r\n"),
        Some(Peeked::NotTls)
    );
    assert_eq!(parse_client_hello(b"\x16\x01"), Some(Peeked::NotTls));
    let no_alpn = client_hello(&[]);
    assert!(matches!(
        parse_client_hello(&no_alpn),
        Some(Peeked::Hello(ClientHello { alpn, .. })) if alpn.is_empty()
    ));
}

#[tokio::test]
async fn transport_header_roundtrips_and_rejects_garbage() {
    for (protocol, client_id) in [
        (None, None),
        (
            None,
            Some("frontend.east.serviceaccount.identity.weft.cluster.local"),
        ),
        (Some(SessionProtocol::Http1), None),
        (Some(SessionProtocol::Http2), Some("a.b")),
    ] {
        let header = TransportHeader {
            port: 8080,
            name: Some("web.default.svc.cluster.local".into()),
            protocol,
            client_id: client_id.map(str::to_owned),
        };
        let mut bytes = header.encode();
        bytes.extend_from_slice(b"after");
        let mut reader = &bytes[..];
        assert_eq!(
            TransportHeader::read(&mut reader).await.expect("read"),
            header
        );
        assert_eq!(reader, b"after", "reads exactly the header");
    }
    let mut garbage = &b"transport.l5d.io/v2\r\n\r\n\0\0\0\0"[..];
    assert!(matches!(
        TransportHeader::read(&mut garbage).await,
        Err(HeaderError::Preface)
    ));
}

/// The client identity field is wire-compatible with Linkerd's header: Linkerd's message (tags
/// 1 to 3) reads ours with the field skipped, and ours reads Linkerd's without it.
#[tokio::test]
async fn the_client_identity_field_is_skipped_by_linkerds_header() {
    use prost::Message;
    #[derive(Clone, PartialEq, prost::Message)]
    struct LinkerdHeader {
        #[prost(int32, tag = "1")]
        port: i32,
        #[prost(string, tag = "2")]
        name: String,
    }
    let ours = TransportHeader {
        port: 5432,
        name: Some("db.default.svc.cluster.local".into()),
        protocol: None,
        client_id: Some("frontend.east.serviceaccount.identity.weft.cluster.local".into()),
    }
    .encode();
    let body = &ours[TRANSPORT_PREFACE.len() + 4..];
    let linkerd = LinkerdHeader::decode(body).expect("Linkerd's message reads ours");
    assert_eq!(
        (linkerd.port, linkerd.name.as_str()),
        (5432, "db.default.svc.cluster.local")
    );
    let body = LinkerdHeader {
        port: 5432,
        name: String::new(),
    }
    .encode_to_vec();
    let mut theirs = TRANSPORT_PREFACE.to_vec();
    theirs.extend_from_slice(&(body.len() as u32).to_be_bytes());
    theirs.extend_from_slice(&body);
    let read = TransportHeader::read(&mut &theirs[..]).await.expect("read");
    assert_eq!((read.port, read.client_id), (5432, None));
}

fn outbound_labels(addr: SocketAddr) -> Labels {
    Labels {
        direction: Direction::Outbound,
        authority: None,
        target_addr: addr,
        tls: TlsLabel::Established {
            peer_id: Some(PROXY.into()),
        },
        dst: Arc::new(BTreeMap::new()),
    }
}

/// A TLS server (any SNI) presenting `cert`.
async fn tls_server(cert: Certified) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(id_tls::server_config(&cert).expect("config")));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let _ = tls.write_all(b"hi").await;
                }
            });
        }
    });
    addr
}

/// A peer with a valid certificate (our CA) for another identity than discovery announced.
#[tokio::test]
async fn outbound_refuses_a_certificate_for_another_identity() {
    let ca = Arc::new(TestCa::new());
    let addr = tls_server(ca.valid(&[OTHER])).await;
    let metrics = Metrics::new();
    let config = id_tls::client_config(&ca.valid(&[CLIENT]), PROXY).expect("config");
    let tls = ClientTls {
        identity: PROXY.into(),
        config: Arc::new(config),
    };
    let dial = |addr| Dial {
        addr,
        tls: Some(&tls),
        header: None,
    };
    let err = connect(
        dial(addr),
        Duration::from_secs(5),
        &metrics,
        &outbound_labels(addr),
    )
    .await
    .err()
    .expect("refused");
    assert!(
        matches!(
            &err,
            ConnectError::PeerRejected {
                rejection: id_tls::PeerRejection::WrongIdentity,
                ..
            }
        ),
        "{err}"
    );
    let resp = http::Error::from(err).into_response();
    assert_eq!(resp.status(), 502);
    let reason = resp.headers()[http::L5D_PROXY_ERROR]
        .to_str()
        .expect("ascii");
    assert!(
        reason.contains("does not match the expected identity") && reason.contains(PROXY),
        "{reason}"
    );
    assert_eq!(
        metrics.counter_sum(
            m::TLS_HANDSHAKE_ERRORS,
            &[("reason", "wrong_identity"), ("server_id", PROXY)]
        ),
        1
    );

    // The right identity from the same CA is accepted.
    let addr = tls_server(ca.valid(&[PROXY])).await;
    let mut io = connect(
        dial(addr),
        Duration::from_secs(5),
        &metrics,
        &outbound_labels(addr),
    )
    .await
    .expect("accepted");
    let mut hi = [0u8; 2];
    io.read_exact(&mut hi).await.expect("read");
    assert_eq!(&hi, b"hi");
}

/// A TCP app answering `got:` + what it read, until EOF.
pub(crate) async fn tcp_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let _ = stream.read_to_end(&mut got).await;
                let _ = stream.write_all(b"got:").await;
                let _ = stream.write_all(&got).await;
            });
        }
    });
    addr
}

/// An inbound with identity `id` and default settings (no opaque or require-identity ports).
fn tls_inbound(metrics: Metrics, id: Identity) -> Arc<Inbound> {
    Inbound::with_identity(
        inbound::Settings {
            detect_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            opaque_ports: PortSet::default(),
            pool: Default::default(),
        },
        metrics,
        Some(id),
        PortSet::default(),
    )
}

/// An inbound listener handing every connection to `inbound::handle_any(.., port)`.
pub(crate) async fn inbound_listener(ib: Arc<Inbound>, port: Option<u16>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (_drain_tx, drain) = tokio::sync::watch::channel(false);
        while let Ok((stream, peer)) = listener.accept().await {
            let conn = Accepted {
                local: stream.local_addr().expect("local"),
                stream,
                peer,
                orig_dst: None,
                drain: drain.clone(),
            };
            tokio::spawn(inbound::handle_any(ib.clone(), conn, port));
        }
    });
    addr
}

/// TLS to `addr` with SNI `PROXY`; a client certificate when `client` is given.
pub(crate) async fn tls_client(
    addr: SocketAddr,
    ca: &TestCa,
    client: Option<&str>,
    alpn: bool,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut config = match client {
        Some(name) => id_tls::client_config(&ca.valid(&[name]), PROXY).expect("config"),
        None => {
            let roots = Arc::new(id_tls::roots_from_pem(ca.anchor_pem.as_bytes()).expect("roots"));
            rustls::ClientConfig::builder_with_provider(id_tls::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("tls13")
                .dangerous()
                .with_custom_certificate_verifier(
                    id_tls::server_verifier(roots, PROXY).expect("verifier"),
                )
                .with_no_client_auth()
        }
    };
    if alpn {
        config.alpn_protocols = vec![TRANSPORT_ALPN.to_vec()];
    }
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(PROXY.to_string()).expect("name"), tcp)
        .await
        .expect("handshake")
}

/// Sends the transport header naming `port`, then `payload`, half-closes and returns what came
/// back.
async fn through_header(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
    port: u16,
    payload: &[u8],
) -> Vec<u8> {
    TransportHeader {
        port,
        name: None,
        protocol: None,
        client_id: None,
    }
    .write(tls)
    .await
    .expect("header");
    tls.write_all(payload).await.expect("write");
    tls.shutdown().await.expect("half-close");
    let mut back = Vec::new();
    tls.read_to_end(&mut back).await.expect("read");
    back
}

#[tokio::test]
async fn inbound_terminates_tls_and_follows_the_transport_header() {
    let ca = Arc::new(TestCa::new());
    let metrics = Metrics::new();
    let id = identity(&ca, metrics.clone()).await;
    let app = tcp_app().await;
    let ib = tls_inbound(metrics.clone(), id);
    // The main inbound listener: no original destination, so only the header can name a port.
    let listener = inbound_listener(ib, None).await;
    let mut tls = tls_client(listener, &ca, Some(CLIENT), true).await;
    assert_eq!(
        through_header(&mut tls, app.port(), b"opaque bytes").await,
        b"got:opaque bytes"
    );

    let text = metrics.render();
    let want = format!(
        "tcp_open_total{{direction=\"inbound\",target_addr=\"127.0.0.1:{}\",tls=\"true\",client_id=\"{CLIENT}\",peer=\"src\"}} 1",
        app.port()
    );
    assert!(text.contains(&want), "{want} not in:\n{text}");
}

#[tokio::test]
async fn a_port_that_requires_identity_refuses_tls_without_a_client_certificate() {
    let ca = Arc::new(TestCa::new());
    let metrics = Metrics::new();
    let id = identity(&ca, metrics.clone()).await;
    let app = tcp_app().await;
    let ib = Inbound::with_identity(
        inbound::Settings {
            detect_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            // Opaque: no detection wait before the policy applies.
            opaque_ports: PortSet(vec![app.port()..=app.port()]),
            pool: Default::default(),
        },
        metrics.clone(),
        Some(id),
        PortSet(vec![app.port()..=app.port()]),
    );
    let listener = inbound_listener(ib, Some(app.port())).await;

    // Without a client certificate: closed, nothing relayed.
    let mut tls = tls_client(listener, &ca, None, false).await;
    let _ = tls.write_all(b"anonymous").await;
    let _ = tls.shutdown().await;
    let mut back = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut back))
        .await
        .expect("closed in time");
    assert!(back.is_empty(), "relayed: {back:?}");
    assert_eq!(
        metrics.counter_sum(m::INBOUND_TCP_AUTHZ_DENY, &[("tls", "true")]),
        1
    );

    // With one: through.
    let mut tls = tls_client(listener, &ca, Some(CLIENT), false).await;
    tls.write_all(b"authenticated").await.expect("write");
    tls.shutdown().await.expect("half-close");
    let mut back = Vec::new();
    tls.read_to_end(&mut back).await.expect("read");
    assert_eq!(back, b"got:authenticated");
}

/// Discovery's answer for every target: one endpoint.
struct OneEndpoint(Endpoint);

impl Resolve for OneEndpoint {
    fn resolve<'a>(&'a self, _target: &'a Target) -> BoxFuture<'a, Resolution> {
        let set = EndpointSet {
            resolved: true,
            exists: true,
            endpoints: vec![self.0.clone()],
            ..Default::default()
        };
        let (tx, rx) = tokio::sync::watch::channel(set);
        // Keep the sender: a closed channel would read as discovery gone.
        std::mem::forget(tx);
        Box::pin(async move { Resolution::Endpoints(rx) })
    }
    fn canonicalize(&self, _host: &str, _port: u16) -> Option<Target> {
        None
    }
}

/// Discovery gives a meshed endpoint `127.0.0.1:APP` with `opaque_transport.inbound_port` = the
/// peer proxy's inbound listener. An opaque connection goes to that listener (mTLS, ALPN
/// `transport.l5d.io/v1`, a header naming APP), and the inbound forwards it to the app. The app
/// port itself speaks no TLS, so the bytes only come back if the outbound dialled the inbound
/// port; the inbound's metrics show the connection arrived there, authenticated.
#[tokio::test]
async fn outbound_opaque_uses_the_opaque_transport_port_and_header() {
    let ca = Arc::new(TestCa::new());
    let server_metrics = Metrics::new();
    let server_id = identity(&ca, server_metrics.clone()).await;
    let app = tcp_app().await;
    let ib = tls_inbound(server_metrics.clone(), server_id);
    // The main inbound listener: no original destination, only the header names the port.
    let inbound_port = inbound_listener(ib, None).await.port();

    let client_metrics = Metrics::new();
    let client_id = identity(&ca, client_metrics.clone()).await;
    let endpoint = Endpoint {
        addr: app,
        weight: 1,
        hint: ProtocolHint::Opaque,
        identity: Some(PROXY.into()),
        opaque_transport_port: Some(inbound_port),
        authority_override: None,
        labels: Arc::new(BTreeMap::new()),
    };
    let ob = Outbound::with_identity(
        outbound::Settings {
            detect_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            failfast_timeout: Duration::from_secs(5),
            opaque_ports: PortSet(vec![app.port()..=app.port()]),
            pool: Default::default(),
            own: OwnAddrs::default(),
            retry_budget: Default::default(),
            connect_backoff: crate::balance::DEFAULT_CONNECT_BACKOFF,
            balancer_idle_timeout: Duration::from_secs(60),
        },
        Box::new(OneEndpoint(endpoint)),
        client_metrics.clone(),
        Some(client_id),
    );

    // The application's connection, as iptables would hand it over (original destination: APP).
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let local = listener.local_addr().expect("addr");
    let (client, accepted) = tokio::join!(TcpStream::connect(local), listener.accept());
    let (mut client, (stream, peer)) = (client.expect("connect"), accepted.expect("accept"));
    let (_drain_tx, drain) = tokio::sync::watch::channel(false);
    let conn = Accepted {
        stream,
        peer,
        local,
        orig_dst: Some(app),
        drain,
    };
    tokio::spawn(outbound::handle(ob, conn, Origin::Transparent(app)));

    client.write_all(b"opaque bytes").await.expect("write");
    client.shutdown().await.expect("half-close");
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut back))
        .await
        .expect("answer in time")
        .expect("read");
    assert_eq!(back, b"got:opaque bytes");

    let text = server_metrics.render();
    let want = format!(
        "tcp_open_total{{direction=\"inbound\",target_addr=\"127.0.0.1:{}\",tls=\"true\",client_id=\"{PROXY}\",peer=\"src\"}} 1",
        app.port()
    );
    assert!(text.contains(&want), "{want} not in:\n{text}");
    let text = client_metrics.render();
    let want = format!("target_addr=\"127.0.0.1:{inbound_port}\"");
    assert!(
        text.lines()
            .any(|l| l.starts_with("tcp_open_total{direction=\"outbound\"")
                && l.contains(&want)
                && l.contains("peer=\"dst\"")),
        "no outbound connection to the inbound port {inbound_port} in:\n{text}"
    );
}

/// A peer that reaches this proxy before its first certificate (its endpoint is published as
/// soon as the workload registers, the certificate follows) waits for it: the handshake
/// completes once the certificate arrives, instead of the connection being closed.
#[tokio::test]
async fn inbound_tls_before_the_first_certificate_waits_for_it() {
    use crate::identity::tests::Gated;
    let ca = Arc::new(TestCa::new());
    let (gate, open) = tokio::sync::watch::channel(false);
    let (cfg, schedule) = test_config(PROXY, &ca.anchor_pem, None, token_file("gated-inbound"));
    let metrics = Metrics::new();
    let id = Identity::start_with(
        &cfg,
        schedule,
        metrics.clone(),
        Gated {
            ca: ca.clone(),
            open,
        },
    )
    .expect("identity");
    let app = tcp_app().await;
    let listener = inbound_listener(tls_inbound(metrics, id), None).await;
    let opener = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        gate.send_replace(true);
    });
    let mut tls = tokio::time::timeout(
        Duration::from_secs(10),
        tls_client(listener, &ca, Some(CLIENT), true),
    )
    .await
    .expect("handshake in time");
    opener.await.expect("opener");
    assert_eq!(
        through_header(&mut tls, app.port(), b"early").await,
        b"got:early"
    );
}
