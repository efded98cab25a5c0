//! `GET /v1/tap/...` against a fake tap server: a tonic `Tap` service behind rustls with a
//! workload certificate from the control plane's CA, requiring a client certificate for the tap
//! identity (as the proxy's tap server does). Proves mutual TLS both ways, the NDJSON stream
//! written event by event, the tap cancelled when the client goes away, and the errors.

mod common;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use common::LIMIT;
use linkerd2_proxy_api::http_types;
use linkerd2_proxy_api::net::TcpAddress;
use linkerd2_proxy_api::tap::tap_event::http::{
    Event as HttpEvent, RequestInit, ResponseEnd, ResponseInit, StreamId,
};
use linkerd2_proxy_api::tap::tap_event::{self, EndpointMeta, Http, ProxyDirection};
use linkerd2_proxy_api::tap::tap_server::{Tap, TapServer};
use linkerd2_proxy_api::tap::{Eos, ObserveRequest, TapEvent};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use weft_control::ca::Ca;
use weft_control::resource::{tap_identity, Defaults};
use weft_control::tap::OwnCert;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

type Events = mpsc::Sender<Result<TapEvent, Status>>;

/// What the fake tells the test: each Observe's request and the sender of its events.
struct Fake {
    observed: mpsc::UnboundedSender<(ObserveRequest, Events)>,
}

#[tonic::async_trait]
impl Tap for Fake {
    type ObserveStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<TapEvent, Status>> + Send + 'static>>;

    async fn observe(
        &self,
        req: Request<ObserveRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let _ = self.observed.send((req.into_inner(), tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// A TLS connection for tonic's server (which wants `Connected`).
struct Conn(tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

fn dns_names(der: &[u8]) -> Vec<String> {
    let Ok((_, c)) = X509Certificate::from_der(der) else {
        return vec![];
    };
    let mut out = vec![];
    for ext in c.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for n in &san.general_names {
                if let GeneralName::DNSName(d) = n {
                    out.push(d.to_string());
                }
            }
        }
    }
    out
}

struct FakeServer {
    addr: SocketAddr,
    observed: mpsc::UnboundedReceiver<(ObserveRequest, Events)>,
    /// The DNS names of each client certificate it refused.
    refused: Arc<Mutex<Vec<Vec<String>>>>,
}

/// The fake tap server, presenting `cert`, accepting only clients chaining to the CA's anchors
/// whose certificate is for `allowed`.
async fn fake_server(ca: &Ca, cert: &OwnCert, allowed: String) -> FakeServer {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for a in weft_control::ca::pem_certificates(ca.trust_anchors_pem().as_bytes()).unwrap() {
        roots.add(CertificateDer::from(a)).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain = cert
        .chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let key = PrivateKeyDer::try_from(cert.key.clone()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (conns_tx, conns_rx) = mpsc::channel::<std::io::Result<Conn>>(4);
    let refused = Arc::new(Mutex::new(Vec::new()));
    let refused2 = refused.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let names = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| dns_names(c))
                .unwrap_or_default();
            if names != [allowed.clone()] {
                refused2.lock().unwrap().push(names);
                continue; // dropped: the connection closes
            }
            if conns_tx.send(Ok(Conn(tls))).await.is_err() {
                return;
            }
        }
    });
    let (observed_tx, observed) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TapServer::new(Fake {
                observed: observed_tx,
            }))
            .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(conns_rx)),
    );
    FakeServer {
        addr,
        observed,
        refused,
    }
}

fn event(e: HttpEvent) -> TapEvent {
    TapEvent {
        source: Some(TcpAddress::from(
            "127.0.0.1:40000".parse::<SocketAddr>().unwrap(),
        )),
        destination: Some(TcpAddress::from(
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap(),
        )),
        source_meta: Some(EndpointMeta {
            labels: [("tls".to_string(), "true".to_string())].into(),
        }),
        destination_meta: None,
        route_meta: None,
        proxy_direction: ProxyDirection::Inbound as i32,
        event: Some(tap_event::Event::Http(Http { event: Some(e) })),
    }
}

fn id(stream: u64) -> Option<StreamId> {
    Some(StreamId { base: 1, stream })
}

fn request(stream: u64) -> TapEvent {
    event(HttpEvent::RequestInit(RequestInit {
        id: id(stream),
        method: Some(http::Method::GET.into()),
        scheme: Some(http_types::Scheme::from("http")),
        authority: "books:8080".into(),
        path: "/books".into(),
        headers: None,
    }))
}

fn response(stream: u64) -> TapEvent {
    event(HttpEvent::ResponseInit(ResponseInit {
        id: id(stream),
        since_request_init: Some(prost_types::Duration {
            seconds: 0,
            nanos: 2_000_000,
        }),
        http_status: 200,
        headers: None,
    }))
}

fn end(stream: u64) -> TapEvent {
    event(HttpEvent::ResponseEnd(ResponseEnd {
        id: id(stream),
        since_request_init: Some(prost_types::Duration {
            seconds: 0,
            nanos: 3_000_000,
        }),
        since_response_init: None,
        response_bytes: 10,
        eos: Some(Eos::from_grpc_status(0)),
        trailers: None,
    }))
}

struct Setup {
    cp: weft_control::Running,
    ca: Ca,
    fake: FakeServer,
    /// The identity the workload `demo/books` is registered with, which the fake presents.
    books: String,
}

async fn setup(test: &str, fake_identity: Option<&str>) -> Setup {
    let dir = common::temp_dir(test);
    let ca_dir = dir.join("ca");
    let generated = weft_control::ca::generate("cluster.local", "weft").unwrap();
    weft_control::ca::write_dir(&ca_dir, &generated).unwrap();
    let mut config = common::config(&dir.join("store"));
    config.identity_dir = Some(ca_dir.clone());
    let cp = common::start(config).await;
    let ca = Ca::load(&ca_dir, Duration::from_secs(3600)).unwrap();
    let books = "books.demo.serviceaccount.identity.weft.cluster.local".to_string();
    let presented = fake_identity.unwrap_or(&books);
    let cert = weft_control::tap::issue(&ca, presented, "spiffe://x/y", SystemTime::now()).unwrap();
    let fake = fake_server(&ca, &cert, tap_identity(&Defaults::default())).await;
    let doc = serde_json::json!({
        "apiVersion": "workload.linkerd.io/v1beta1", "kind": "ExternalWorkload",
        "metadata": {"labels": {"app": "books"}},
        "spec": {
            "meshTLS": {"serverName": books},
            "workloadIPs": [{"ip": "127.0.0.1"}],
            "ports": [{"port": 8080}, {"name": "linkerd-tap", "port": fake.addr.port()}],
        }
    });
    let (status, body) = common::http(
        cp.api_addr,
        "PUT",
        "/v1/workloads/demo/books",
        &doc.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let unmeshed = serde_json::json!({
        "apiVersion": "workload.linkerd.io/v1beta1", "kind": "ExternalWorkload",
        "spec": {"workloadIPs": [{"ip": "127.0.0.1"}], "ports": [{"port": 9090}]}
    });
    let (status, body) = common::http(
        cp.api_addr,
        "PUT",
        "/v1/workloads/demo/plain",
        &unmeshed.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    Setup {
        cp,
        ca,
        fake,
        books,
    }
}

/// Reads the response head, then returns the connection positioned at the (chunked) body.
async fn open_tap(api: SocketAddr, path: &str) -> (String, TcpStream) {
    let mut s = TcpStream::connect(api).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: {api}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(LIMIT, s.read(&mut b))
            .await
            .expect("head in time")
            .unwrap();
        assert_eq!(
            n,
            1,
            "connection closed in the head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    (String::from_utf8(head).unwrap(), s)
}

/// The next chunk of a chunked body (one event line: the API writes one frame per event).
async fn next_chunk(s: &mut TcpStream) -> String {
    let mut size_line = Vec::new();
    while !size_line.ends_with(b"\r\n") {
        let mut b = [0u8; 1];
        tokio::time::timeout(LIMIT, s.read_exact(&mut b))
            .await
            .expect("chunk in time")
            .unwrap();
        size_line.push(b[0]);
    }
    let size = usize::from_str_radix(std::str::from_utf8(&size_line).unwrap().trim(), 16).unwrap();
    let mut data = vec![0u8; size + 2];
    tokio::time::timeout(LIMIT, s.read_exact(&mut data))
        .await
        .expect("chunk in time")
        .unwrap();
    data.truncate(size);
    String::from_utf8(data).unwrap()
}

#[tokio::test]
async fn a_tap_streams_the_proxys_events_over_mutual_tls_until_the_client_goes_away() {
    let mut t = setup("tap-stream", None).await;
    let (head, mut conn) = open_tap(
        t.cp.api_addr,
        "/v1/tap/demo/books?to=demo/authors&path=/books&limit=7&headers=true",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/x-ndjson"), "{head}");
    let (req, events) = tokio::time::timeout(LIMIT, t.fake.observed.recv())
        .await
        .expect("the fake was asked")
        .expect("observed");
    assert_eq!(req.limit, 7);
    assert!(req.r#match.is_some() && req.extract.is_some(), "{req:?}");

    // Each event reaches the client while the tap is still open.
    events.send(Ok(request(1))).await.unwrap();
    let line: serde_json::Value = serde_json::from_str(next_chunk(&mut conn).await.trim()).unwrap();
    assert_eq!(line["type"], "request_init");
    assert_eq!(line["id"], "1:1");
    assert_eq!(line["direction"], "inbound");
    assert_eq!(line["path"], "/books");
    assert_eq!(line["source_meta"]["tls"], "true");
    events.send(Ok(response(1))).await.unwrap();
    let line: serde_json::Value = serde_json::from_str(next_chunk(&mut conn).await.trim()).unwrap();
    assert_eq!(
        (line["type"].as_str(), line["status"].as_u64()),
        (Some("response_init"), Some(200))
    );
    assert_eq!(line["latency_us"], 2000);
    events.send(Ok(end(1))).await.unwrap();
    let line: serde_json::Value = serde_json::from_str(next_chunk(&mut conn).await.trim()).unwrap();
    assert_eq!(
        (line["type"].as_str(), line["grpc_status"].as_u64()),
        (Some("response_end"), Some(0))
    );
    assert!(
        t.fake.refused.lock().unwrap().is_empty(),
        "the control plane's identity was accepted"
    );

    // The client goes away: the tap on the proxy is cancelled.
    drop(conn);
    tokio::time::timeout(LIMIT, events.closed())
        .await
        .expect("the tap stream was cancelled");
}

#[tokio::test]
async fn a_client_without_the_tap_identity_is_refused_by_the_tap_server() {
    let t = setup("tap-refused", None).await;
    let anchors = weft_control::ca::pem_certificates(t.ca.trust_anchors_pem().as_bytes()).unwrap();
    let other = "books.demo.serviceaccount.identity.weft.cluster.local";
    let wrong = weft_control::tap::issue(&t.ca, other, "spiffe://x/y", SystemTime::now()).unwrap();
    let res = weft_control::tap::client::observe(
        t.fake.addr,
        &t.books,
        &anchors,
        Some(Arc::new(wrong)),
        ObserveRequest::default(),
    )
    .await;
    assert!(res.is_err(), "a workload identity must not be able to tap");
    assert_eq!(
        t.fake.refused.lock().unwrap().as_slice(),
        [vec![other.to_string()]]
    );
}

#[tokio::test]
async fn a_tap_server_with_another_identity_is_a_bad_gateway() {
    let t = setup(
        "tap-wrong-server",
        Some("evil.demo.serviceaccount.identity.weft.cluster.local"),
    )
    .await;
    let (status, body) = common::http_json(t.cp.api_addr, "GET", "/v1/tap/demo/books", "").await;
    assert_eq!(status, 502, "{body}");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(msg.contains("TLS") && msg.contains(&t.books), "{msg}");
}

#[tokio::test]
async fn bad_queries_unknown_and_unmeshed_workloads_are_refused() {
    let t = setup("tap-errors", None).await;
    let api = t.cp.api_addr;
    let (status, body) = common::http_json(api, "GET", "/v1/tap/demo/books?max_rps=x", "").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = common::http_json(api, "GET", "/v1/tap/demo/nobody", "").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = common::http_json(api, "GET", "/v1/tap/demo/plain", "").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("linkerd-tap"),
        "{body}"
    );
    let (status, _) = common::http_json(api, "POST", "/v1/tap/demo/books", "").await;
    assert_eq!(status, 405);
    // Nothing listening on the tap port: 502 saying why.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let doc = serde_json::json!({
        "apiVersion": "workload.linkerd.io/v1beta1", "kind": "ExternalWorkload",
        "spec": {"workloadIPs": [{"ip": "127.0.0.1"}], "ports": [{"name": "linkerd-tap", "port": port}]}
    });
    let (status, _) = common::http(api, "PUT", "/v1/workloads/demo/gone", &doc.to_string()).await;
    assert_eq!(status, 200);
    let (status, body) = common::http_json(api, "GET", "/v1/tap/demo/gone", "").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("connecting"),
        "{body}"
    );
}
