//! A mirrored service's endpoint is a gateway: Destination gives it an `authority_override` and
//! an opaque-transport port. Over real sockets, a client proxy with identity reaches a stand-in
//! gateway (a TLS server with the test CA's certificate for the gateway identity) that records
//! what arrives: the first bytes are a ClientHello for the gateway identity offering only ALPN
//! `transport.l5d.io/v1`; inside the TLS, the transport header (decoded with the proxy's own
//! `TransportHeader::read`) names the override, with session protocol HTTP/2 for HTTP traffic
//! (an HTTP/1 request travels as HTTP/2 with `l5d-orig-proto`, its authority the override) and
//! none for opaque traffic; the client's certificate carries the client proxy's identity.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::ca::Ca;
use common::mesh::{self, Hint, Scripted};
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use weft_proxy::mtls::{self, Peeked, SessionProtocol, TransportHeader};

const CLIENT: &str = "client.east.serviceaccount.identity.weft.cluster.local";
const GATEWAY: &str = "linkerd-gateway.weft-multicluster.serviceaccount.identity.west.local";
/// The mirror in this cluster and the service it stands for in the linked one.
const MIRROR_HTTP: &str = "web-west.default.svc.cluster.local:8080";
const REMOTE_HTTP: &str = "web.default.svc.west.local:8080";
const MIRROR_TCP: &str = "db-west.default.svc.cluster.local:5432";
const REMOTE_TCP: &str = "db.default.svc.west.local:5432";
/// Bound for waits on events; not a timing assertion.
const LIMIT: Duration = Duration::from_secs(20);

/// What the stand-in gateway saw on one connection.
#[derive(Debug)]
struct Seen {
    hello: Peeked,
    client_id: Option<String>,
    header: TransportHeader,
}

/// A TLS server as `GATEWAY` that verifies client certificates against `ca`, records each
/// connection's ClientHello, client identity and transport header, then serves HTTP/2 (its
/// answer: the request's version, authority, `Host` and `l5d-orig-proto`) when the header says
/// HTTP/2, or echoes bytes prefixed with `got:` when it names no protocol.
async fn stand_in_gateway(ca: &Ca) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let provider = weft_proxy::identity::tls::provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.anchor_der.clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let (cert, key) = ca.client(GATEWAY);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![mtls::TRANSPORT_ALPN.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let (hello, buf) = mtls::peek_client_hello(&mut s, LIMIT).await.unwrap();
                let replayed = weft_proxy::detect::Prefixed::new(buf, s);
                let mut tls = acceptor.accept(replayed).await.expect("handshake");
                let client_id = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(weft_proxy::identity::tls::peer_identity);
                let header = TransportHeader::read(&mut tls).await.expect("header");
                let protocol = header.protocol;
                tx.send(Seen {
                    hello,
                    client_id,
                    header,
                })
                .unwrap();
                match protocol {
                    Some(SessionProtocol::Http2) => {
                        let svc = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                            let h = |n: &str| {
                                req.headers()
                                    .get(n)
                                    .map_or("-", |v| v.to_str().unwrap())
                                    .to_string()
                            };
                            let text = format!(
                                "{:?} {} {} {}",
                                req.version(),
                                req.uri().authority().map_or("-", |a| a.as_str()),
                                h("host"),
                                h("l5d-orig-proto"),
                            );
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(Bytes::from(text)),
                            ))
                        });
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    }
                    _ => {
                        let mut got = Vec::new();
                        tls.read_to_end(&mut got).await.unwrap();
                        tls.write_all(b"got:").await.unwrap();
                        tls.write_all(&got).await.unwrap();
                        tls.shutdown().await.unwrap();
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// The client proxy, whose Destination answers both mirrors with the stand-in gateway as their
/// one endpoint (its address and port is the opaque-transport port, as a mirror's is); the
/// database mirror is reached through an upstream listener.
async fn client(ca: &Arc<Ca>, gateway: SocketAddr) -> weft_proxy::runtime::Running {
    let ep = |hint, authority| {
        vec![mesh::endpoint(
            gateway,
            GATEWAY,
            hint,
            Some(gateway.port()),
            Some(authority),
        )]
    };
    let names = Scripted::new([
        (MIRROR_HTTP.to_string(), ep(Hint::H2, REMOTE_HTTP)),
        (MIRROR_TCP.to_string(), ep(Hint::Opaque, REMOTE_TCP)),
    ]);
    let cp = mesh::control_plane(ca, names).await;
    let upstream = format!("{MIRROR_TCP}=0");
    mesh::proxy(
        ca,
        &cp,
        CLIENT,
        &[("WEFT_PROXY_OUTBOUND_UPSTREAMS", upstream.as_str())],
    )
    .await
}

fn assert_reached_the_gateway(
    seen: &Seen,
    name: &str,
    port: u16,
    protocol: Option<SessionProtocol>,
) {
    let Peeked::Hello(hello) = &seen.hello else {
        panic!(
            "the connection did not start with a ClientHello: {:?}",
            seen.hello
        );
    };
    assert_eq!(hello.sni.as_deref(), Some(GATEWAY));
    assert_eq!(hello.alpn, vec![mtls::TRANSPORT_ALPN.to_vec()]);
    assert_eq!(seen.client_id.as_deref(), Some(CLIENT));
    assert_eq!(
        seen.header,
        TransportHeader {
            port,
            name: Some(name.to_string()),
            protocol,
            // An application's own client names no caller.
            client_id: None,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_a_gateway_endpoint_names_the_override_in_the_transport_header() {
    let ca = Arc::new(Ca::new());
    let (gateway, mut seen) = stand_in_gateway(&ca).await;
    let client = client(&ca, gateway).await;

    // An HTTP/1 request in explicit mode, absolute form.
    let s = TcpStream::connect(client.listening.outbound).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{MIRROR_HTTP}/hello"))
        .header("host", MIRROR_HTTP)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(LIMIT, send.send_request(req))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "{:?}",
        resp.headers().get("l5d-proxy-error")
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    // HTTP/2 on the wire, the override as authority and Host, the original protocol marked.
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        format!("HTTP/2.0 {REMOTE_HTTP} {REMOTE_HTTP} HTTP/1.1")
    );
    let seen = tokio::time::timeout(LIMIT, seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_reached_the_gateway(
        &seen,
        "web.default.svc.west.local",
        8080,
        Some(SessionProtocol::Http2),
    );

    client.shutdown();
    client.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_to_a_gateway_endpoint_names_the_override_without_a_protocol() {
    let ca = Arc::new(Ca::new());
    let (gateway, mut seen) = stand_in_gateway(&ca).await;
    let client = client(&ca, gateway).await;
    let upstream = client.listening.upstreams[0].1;

    let mut s = TcpStream::connect(upstream).await.unwrap();
    s.write_all(b"select 1").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut back))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(back, b"got:select 1");
    let seen = tokio::time::timeout(LIMIT, seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_reached_the_gateway(&seen, "db.default.svc.west.local", 5432, None);

    client.shutdown();
    client.wait().await;
}
