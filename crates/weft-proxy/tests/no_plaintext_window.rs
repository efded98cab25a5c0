//! No plaintext window, over real sockets: a client proxy with identity configured but no
//! certificate yet (its token file is not there) asks for a meshed peer — another proxy with
//! identity in front of an application — that Destination announces with its TLS identity.
//!
//! - the request waits for the client's first certificate and then succeeds over mTLS: the
//!   server proxy counts it as `tls="true"` from the client's identity, and never counted a
//!   request without TLS;
//! - when the certificate never comes, the request fails after the fail-fast timeout with 503 and
//!   `l5d-proxy-error`, and the peer was never called.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::ca::Ca;
use common::mesh::{self, TOKEN};
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::runtime;

const SERVER: &str = "web-1.default.serviceaccount.identity.weft.cluster.local";
const CLIENT: &str = "client.default.serviceaccount.identity.weft.cluster.local";
const WEB: &str = "web.default.svc.cluster.local:8080";
/// Bound for waits on events (a certificate, a response); not a timing assertion.
const LIMIT: Duration = Duration::from_secs(20);

/// A control plane on 127.0.0.1 (`common::mesh`): `Certify` for [`TOKEN`], and Destination
/// answering [`WEB`] with the one meshed endpoint `peer`, identity [`SERVER`].
async fn control_plane(ca: &Arc<Ca>, peer: SocketAddr) -> String {
    let web = mesh::endpoint(peer, SERVER, mesh::Hint::H2, None, None);
    mesh::control_plane(ca, mesh::Scripted::new([(WEB.to_string(), vec![web])])).await
}

/// An application answering `hello` to every request.
async fn app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                TokioIo::new(s),
                hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(Bytes::from_static(b"hello")),
                    ))
                }),
            ));
        }
    });
    addr
}

fn token_file(tag: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("weft-no-plaintext-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// A proxy with identity `name` whose control plane is `cp`, reading its token from `token`;
/// `vars` add to its environment.
async fn proxy(
    ca: &Ca,
    cp: &str,
    name: &str,
    token: &std::path::Path,
    vars: &[(&str, &str)],
) -> runtime::Running {
    let token = token.display().to_string();
    let mut env = vec![
        ("WEFT_PROXY_DESTINATION_SVC_ADDR", cp),
        ("WEFT_PROXY_CONTROL_BACKOFF_MAX", "200ms"),
        ("WEFT_PROXY_IDENTITY_TOKEN_FILE", token.as_str()),
        ("WEFT_PROXY_IDENTITY_LOCAL_NAME", name),
        ("WEFT_PROXY_IDENTITY_TRUST_ANCHORS", ca.anchor_pem.as_str()),
    ];
    env.extend_from_slice(vars);
    runtime::start(common::config(&env)).await.expect("start")
}

/// `GET http://web.default.svc.cluster.local:8080/` through an outbound listener (explicit
/// mode, absolute form); (status, `l5d-proxy-error`, body).
async fn get_web(outbound: SocketAddr) -> (u16, Option<String>, Bytes) {
    let s = TcpStream::connect(outbound).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{WEB}/"))
        .header("host", WEB)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let why = resp
        .headers()
        .get("l5d-proxy-error")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, why, body)
}

/// The server proxy's inbound request count with `tls` = `tls` (and `client_id` if given).
async fn inbound_requests(admin: SocketAddr, tls: &str, client_id: Option<&str>) -> u64 {
    let (_, metrics) = common::admin(admin, "GET", "/metrics").await;
    metrics
        .lines()
        .filter(|l| l.starts_with("request_total{") && l.contains(r#"direction="inbound""#))
        .filter(|l| l.contains(&format!(r#"tls="{tls}""#)))
        .filter(|l| client_id.is_none_or(|id| l.contains(&format!(r#"client_id="{id}""#))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_before_the_first_certificate_waits_for_it_and_goes_out_in_mtls() {
    let ca = Arc::new(Ca::new());
    // The server: a proxy with its certificate, forwarding a port to the application; that
    // forward port is the endpoint Destination announces.
    let app = app().await;
    let forward = format!("{}=0", app.port());
    let server_token = token_file("server");
    std::fs::write(&server_token, TOKEN).unwrap();
    // Its own control plane answers no names it asks for (it makes no outbound requests).
    let server_cp = control_plane(&ca, "127.0.0.1:1".parse().unwrap()).await;
    let server = proxy(
        &ca,
        &server_cp,
        SERVER,
        &server_token,
        &[("WEFT_PROXY_INBOUND_FORWARD_PORTS", forward.as_str())],
    )
    .await;
    let server_identity = server.identity.clone().expect("identity");
    tokio::time::timeout(LIMIT, server_identity.wait_ready())
        .await
        .expect("the server's certificate");
    let peer = server.listening.forward[0].1;

    // The client: identity configured, no token yet, a generous fail-fast timeout.
    let cp = control_plane(&ca, peer).await;
    let client_token = token_file("client");
    let client = proxy(
        &ca,
        &cp,
        CLIENT,
        &client_token,
        &[("WEFT_PROXY_OUTBOUND_FAILFAST_TIMEOUT", "60s")],
    )
    .await;
    let client_identity = client.identity.clone().expect("identity");
    client.discovery.wait_ready().await;
    assert!(
        client_identity.current().is_none(),
        "no token, no certificate"
    );

    let request = tokio::spawn(get_web(client.listening.outbound));
    // Connected to Destination, no certificate: the request must still be waiting (had it gone
    // out in plaintext, the server would have answered or refused it by now).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!request.is_finished(), "answered before the certificate");
    assert_eq!(
        inbound_requests(server.listening.admin, "true", None).await,
        0
    );

    std::fs::write(&client_token, TOKEN).unwrap();
    let (status, why, body) = tokio::time::timeout(LIMIT, request)
        .await
        .expect("an answer once the certificate arrives")
        .expect("request task");
    assert_eq!((status, why), (200, None));
    assert_eq!(&body[..], b"hello");
    assert!(client_identity.current().is_some());
    assert_eq!(
        inbound_requests(server.listening.admin, "true", Some(CLIENT)).await,
        1,
        "the request did not arrive over mTLS from {CLIENT}"
    );
    let (_, metrics) = common::admin(server.listening.admin, "GET", "/metrics").await;
    let plain: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("request_total{") && l.contains(r#"direction="inbound""#))
        .filter(|l| !l.contains(r#"tls="true""#))
        .collect();
    assert!(plain.is_empty(), "requests without mTLS: {plain:?}");

    for running in [client, server] {
        running.shutdown();
        running.wait().await;
    }
    let _ = std::fs::remove_file(&client_token);
    let _ = std::fs::remove_file(&server_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_certificate_the_request_fails_fast_and_the_peer_is_never_called() {
    let ca = Arc::new(Ca::new());
    // The peer records connections: it must see none.
    let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let cp = control_plane(&ca, peer_addr).await;
    let token = token_file("never");
    let client = proxy(
        &ca,
        &cp,
        CLIENT,
        &token,
        &[("WEFT_PROXY_OUTBOUND_FAILFAST_TIMEOUT", "500ms")],
    )
    .await;
    client.discovery.wait_ready().await;

    let (status, why, _) = tokio::time::timeout(LIMIT, get_web(client.listening.outbound))
        .await
        .expect("an answer after the fail-fast timeout");
    assert_eq!(status, 503);
    let why = why.expect("l5d-proxy-error");
    assert!(
        why.starts_with("no certificate for this proxy yet") && why.contains(SERVER),
        "{why}"
    );
    let accepted = tokio::time::timeout(Duration::from_millis(200), peer.accept()).await;
    assert!(accepted.is_err(), "the peer was called: {accepted:?}");

    client.shutdown();
    client.wait().await;
}
