//! The tap server over real sockets: a proxy with identity (certified by a scripted
//! `Identity.Certify` signing with an rcgen CA), an application on 127.0.0.1, and tap clients
//! speaking `io.linkerd.proxy.tap.Tap/Observe` over mTLS with certificates from the same CA.
//! Requests go through the proxy's inbound (a forward port) and outbound (explicit mode) sides.

mod common;

use common::ca::{Ca, Certifier};

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use linkerd2_proxy_api::{
    destination::{
        self as dst,
        destination_server::{Destination, DestinationServer},
    },
    identity::identity_server::IdentityServer,
    tap::{
        observe_request::{
            self, extract,
            r#match::{self as m, http::string_match},
        },
        tap_client::TapClient,
        tap_event::{self, http::Event, ProxyDirection},
        ObserveRequest, TapEvent,
    },
};
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::{identity::tls as id_tls, runtime};

const NAME: &str = "web-1.default.serviceaccount.identity.weft.cluster.local";
const TAP_NAME: &str = "tap.weft.serviceaccount.identity.weft.cluster.local";
const TOKEN: &str = "weft-tap-test-token";

/// Destination answers "not in the mesh" for every name: outbound requests pass through to
/// the address they name.
struct NoMesh;

type NoStream<T> = Pin<Box<dyn futures_util::Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl Destination for NoMesh {
    type GetStream = NoStream<dst::Update>;
    type GetProfileStream = NoStream<dst::DestinationProfile>;

    async fn get(
        &self,
        _: tonic::Request<dst::GetDestination>,
    ) -> Result<tonic::Response<Self::GetStream>, tonic::Status> {
        Err(tonic::Status::invalid_argument("not meshed"))
    }

    async fn get_profile(
        &self,
        _: tonic::Request<dst::GetDestination>,
    ) -> Result<tonic::Response<Self::GetProfileStream>, tonic::Status> {
        Err(tonic::Status::invalid_argument("not meshed"))
    }
}

/// An application answering `hello` (5 bytes) to every request.
async fn app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                TokioIo::new(s),
                hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"hello",
                    ))))
                }),
            ));
        }
    });
    addr
}

/// One HTTP/1.1 request on a new connection to `via`; returns the status.
async fn get(via: SocketAddr, uri: &str) -> u16 {
    let s = TcpStream::connect(via).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(uri)
        .header("host", "web.default.svc.cluster.local")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

/// Dials the tap server over mTLS, verifying it as `NAME`.
#[derive(Clone)]
struct Dial {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

impl tonic::codegen::Service<http::Uri> for Dial {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(this.addr).await?;
            let tls = tokio_rustls::TlsConnector::from(this.config)
                .connect(ServerName::try_from(NAME).unwrap(), tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A tap client whose certificate says `name` (`None`: no client certificate).
async fn tap_client(
    tap: SocketAddr,
    anchors: &str,
    ca: &Ca,
    name: Option<&str>,
) -> Result<TapClient<tonic::transport::Channel>, tonic::transport::Error> {
    let roots = Arc::new(id_tls::roots_from_pem(anchors.as_bytes()).unwrap());
    let builder = rustls::ClientConfig::builder_with_provider(id_tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(id_tls::server_verifier(roots, NAME).unwrap());
    let mut config = match name {
        Some(name) => {
            let (cert, key) = ca.client(name);
            builder.with_client_auth_cert(vec![cert], key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let channel = tonic::transport::Endpoint::from_static("http://tap.test")
        .connect_with_connector(Dial {
            addr: tap,
            config: Arc::new(config),
        })
        .await?;
    Ok(TapClient::new(channel))
}

fn path_prefix(prefix: &str) -> Option<observe_request::Match> {
    Some(observe_request::Match {
        r#match: Some(m::Match::Http(m::Http {
            r#match: Some(m::http::Match::Path(m::http::StringMatch {
                r#match: Some(string_match::Match::Prefix(prefix.into())),
            })),
        })),
    })
}

fn http_event(ev: &TapEvent) -> &Event {
    match &ev.event {
        Some(tap_event::Event::Http(tap_event::Http { event: Some(e) })) => e,
        other => panic!("not an HTTP event: {other:?}"),
    }
}

/// The next event, within 10 s.
async fn next(stream: &mut tonic::Streaming<TapEvent>) -> Option<TapEvent> {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .expect("stream ok")
}

/// Reads one tapped request's three events and checks them; returns (direction, path).
async fn exchange(stream: &mut tonic::Streaming<TapEvent>) -> (i32, String, TapEvent) {
    let init = next(stream).await.expect("RequestInit");
    let Event::RequestInit(req) = http_event(&init) else {
        panic!("expected RequestInit, got {init:?}")
    };
    let (id, path) = (req.id, req.path.clone());
    assert_eq!(
        req.method,
        Some(linkerd2_proxy_api::http_types::HttpMethod::from(
            http::Method::GET
        ))
    );
    let rsp = next(stream).await.expect("ResponseInit");
    let Event::ResponseInit(r) = http_event(&rsp) else {
        panic!("expected ResponseInit, got {rsp:?}")
    };
    assert_eq!((r.id, r.http_status), (id, 200));
    assert!(r.since_request_init.is_some());
    let end = next(stream).await.expect("ResponseEnd");
    let Event::ResponseEnd(e) = http_event(&end) else {
        panic!("expected ResponseEnd, got {end:?}")
    };
    assert_eq!((e.id, e.response_bytes), (id, 5));
    assert_eq!(e.eos, None);
    (init.proxy_direction, path, init)
}

/// A proxy with identity and a tap server (its control plane certifies with `ca` once the token
/// file holds the token), forwarding a port to `app`. Returns it and the token file.
async fn proxy(ca: &Arc<Ca>, app: SocketAddr, token: bool) -> (runtime::Running, PathBuf) {
    // The control plane: Certify, and Destination refusing every name (policies are
    // unimplemented, so the defaults and passthrough apply).
    let cp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp_addr = cp.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IdentityServer::new(Certifier::new(ca.clone(), TOKEN)))
            .add_service(DestinationServer::new(NoMesh))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(cp)),
    );
    let token_file = std::env::temp_dir().join(format!(
        "weft-tap-it-{}-{}",
        std::process::id(),
        cp_addr.replace([':', '.'], "-")
    ));
    if token {
        std::fs::write(&token_file, TOKEN).unwrap();
    }
    let token_s = token_file.display().to_string();
    let forward = format!("{}=0", app.port());
    let config = common::config(&[
        ("WEFT_PROXY_DESTINATION_SVC_ADDR", cp_addr.as_str()),
        ("WEFT_PROXY_IDENTITY_TOKEN_FILE", token_s.as_str()),
        ("WEFT_PROXY_IDENTITY_LOCAL_NAME", NAME),
        ("WEFT_PROXY_IDENTITY_TRUST_ANCHORS", ca.anchor_pem.as_str()),
        ("WEFT_PROXY_INBOUND_FORWARD_PORTS", forward.as_str()),
        ("WEFT_PROXY_INBOUND_FAILFAST_TIMEOUT", "100ms"),
        ("WEFT_PROXY_TAP_LISTEN_ADDR", "127.0.0.1:0"),
        ("WEFT_PROXY_TAP_SVC_NAME", TAP_NAME),
    ]);
    (runtime::start(config).await.expect("start"), token_file)
}

/// Whether `metrics` has a `tap_refused_total{reason="REASON"}` sample.
async fn refused_counted(admin: SocketAddr, reason: &str) -> bool {
    let (_, metrics) = common::admin(admin, "GET", "/metrics").await;
    let line = format!("tap_refused_total{{reason=\"{reason}\"}} ");
    metrics.lines().any(|l| l.starts_with(&line))
}

#[tokio::test]
async fn before_its_certificate_the_tap_server_refuses() {
    let ca = Arc::new(Ca::new());
    let (running, token_file) = proxy(&ca, app().await, false).await;
    let tap = running.listening.tap.expect("the tap server runs");
    let refused = match tap_client(tap, &ca.anchor_pem, &ca, Some(TAP_NAME)).await {
        Err(_) => true,
        Ok(mut c) => c.observe(ObserveRequest::default()).await.is_err(),
    };
    assert!(refused, "no certificate yet: no tap");
    assert!(refused_counted(running.listening.admin, "no_certificate_yet").await);
    running.shutdown();
    running.wait().await;
    let _ = std::fs::remove_file(&token_file);
}

#[tokio::test]
async fn observe_inbound_and_outbound_requests_over_mtls() {
    let ca = Arc::new(Ca::new());
    let anchors = ca.anchor_pem.clone();
    let app = app().await;
    let (running, token_file) = proxy(&ca, app, true).await;
    let tap = running.listening.tap.expect("the tap server runs");
    assert!(running
        .listening
        .json_line()
        .contains(&format!(r#""tap":"{tap}""#)));
    let identity = running.identity.clone().expect("identity");
    tokio::time::timeout(Duration::from_secs(10), identity.wait_ready())
        .await
        .expect("certificate");
    let inbound = running.listening.forward[0].1;
    let outbound = running.listening.outbound;
    assert!(!running.taps.is_active());

    // 1. A tap on paths under /api, with headers: /health is not tapped; inbound and
    //    outbound requests under /api are, each with RequestInit, ResponseInit, ResponseEnd.
    let mut client = tap_client(tap, &anchors, &ca, Some(TAP_NAME))
        .await
        .expect("the tap identity connects");
    let mut stream = client
        .observe(ObserveRequest {
            limit: 0,
            r#match: path_prefix("/api"),
            extract: Some(observe_request::Extract {
                extract: Some(extract::Extract::Http(extract::Http {
                    extract: Some(extract::http::Extract::Headers(extract::http::Headers {})),
                })),
            }),
        })
        .await
        .expect("observe")
        .into_inner();
    assert!(running.taps.is_active());
    assert_eq!(get(inbound, "/health").await, 200);
    assert_eq!(get(inbound, "/api/items").await, 200);
    let (dir, path, init) = exchange(&mut stream).await;
    assert_eq!(
        (dir, path.as_str()),
        (ProxyDirection::Inbound as i32, "/api/items")
    );
    let dst: SocketAddr = init.destination.unwrap().try_into().unwrap();
    assert_eq!(dst.port(), app.port(), "inbound destination: the app port");
    let src: SocketAddr = init.source.unwrap().try_into().unwrap();
    assert!(src.ip().is_loopback());
    assert_eq!(
        init.source_meta
            .as_ref()
            .unwrap()
            .labels
            .get("tls")
            .map(String::as_str),
        Some("no_tls_from_remote"),
        "{init:?}"
    );
    let Event::RequestInit(req) = http_event(&init) else {
        unreachable!()
    };
    let headers = req.headers.as_ref().expect("headers were asked for");
    assert!(headers.headers.iter().any(|h| h.name == "host"));

    let out_uri = format!("http://{app}/api/out");
    assert_eq!(get(outbound, &out_uri).await, 200);
    let (dir, path, init) = exchange(&mut stream).await;
    assert_eq!(
        (dir, path.as_str()),
        (ProxyDirection::Outbound as i32, "/api/out")
    );
    let dst: SocketAddr = init.destination.unwrap().try_into().unwrap();
    assert_eq!(dst, app, "outbound destination: the endpoint");
    drop(stream);

    // 2. `limit`: two requests, then the stream ends.
    let mut limited = client
        .observe(ObserveRequest {
            limit: 2,
            r#match: None,
            extract: None,
        })
        .await
        .expect("observe")
        .into_inner();
    for i in 0..3 {
        assert_eq!(get(inbound, &format!("/n/{i}")).await, 200);
    }
    let (_, first, init) = exchange(&mut limited).await;
    let (_, second, _) = exchange(&mut limited).await;
    assert_eq!((first.as_str(), second.as_str()), ("/n/0", "/n/1"));
    let Event::RequestInit(req) = http_event(&init) else {
        unreachable!()
    };
    assert!(req.headers.is_none(), "no headers unless asked");
    assert!(
        next(&mut limited).await.is_none(),
        "the limit ends the stream"
    );

    // 3. Another identity, or none, is refused and counted.
    for (name, reason) in [
        (
            Some("web-2.default.serviceaccount.identity.weft.cluster.local"),
            "wrong_identity",
        ),
        (None, "no_certificate"),
    ] {
        let refused = match tap_client(tap, &anchors, &ca, name).await {
            Err(_) => true,
            Ok(mut c) => c.observe(ObserveRequest::default()).await.is_err(),
        };
        assert!(refused, "{name:?} must not tap");
        assert!(
            refused_counted(running.listening.admin, reason).await,
            "tap_refused_total{{reason={reason:?}}} missing"
        );
    }

    running.shutdown();
    running.wait().await;
    let _ = std::fs::remove_file(&token_file);
}
