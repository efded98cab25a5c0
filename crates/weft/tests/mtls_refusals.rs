//! Mutual TLS refusals, end to end: real `weft control` and `weft-proxy` processes with identity
//! (the traffic that does cross the mesh in mTLS is in `tests/mtls.rs`).
//!
//! - refused with a precise `l5d-proxy-error` and a metric: a peer certificate from another CA,
//!   an expired one, one for another identity;
//! - on a port that requires identity, plaintext HTTP gets 403 and plaintext opaque TCP is
//!   closed, while a meshed client is let in.

#[path = "support/mtls_mesh.rs"]
mod mtls_mesh;
mod support;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mtls_mesh::{identity_of, ControlOpts, IdentitySource};
use support::apps::{tcp_echo, EchoServer};
use support::clients::{empty, proxy_request, tcp_roundtrip, Reply, H1};
use support::{
    authority, metric_sum, opaque_service, service, workload_doc, write_docs, Proxy, TempDir,
};
use weft_proxy::config;

const SERVER: &str = "backend-1";
const CLIENT: &str = "client";

/// A store with the `echo` service (port 8080 → `http` of pods `app=backend`), and `extra`.
fn echo_store(tmp: &TempDir, extra: &[String]) -> PathBuf {
    let store = tmp.subdir("store");
    let mut docs = vec![service("echo", "backend", 8080, "http")];
    docs.extend_from_slice(extra);
    write_docs(&store, "services.yaml", &docs);
    store
}

/// A client (and its control plane) asking for the `echo` service, whose one endpoint is
/// `server_port` with identity `expected`, to show what the client does with the peer.
async fn request_echo(client: &Proxy) -> Reply {
    let mut h1 = H1::connect(client.outbound).await.expect("connect");
    let req = proxy_request("GET", &authority("echo", 8080), "/", empty());
    Reply::read(h1.send(req).await.expect("request"))
        .await
        .expect("body")
}

fn assert_refused(reply: &Reply, expected: &str) {
    assert_eq!(reply.status, 502, "{}", reply.describe());
    let error = reply.header("l5d-proxy-error");
    assert!(error.contains(expected), "l5d-proxy-error {error:?}");
}

async fn assert_handshake_error(client: &Proxy, reason: &str, server_id: &str) {
    mtls_mesh::metrics_until(
        client,
        &format!("tls_handshake_errors_total {reason}"),
        |m| {
            metric_sum(
                m,
                "tls_handshake_errors_total",
                &[
                    ("direction", "outbound"),
                    ("reason", reason),
                    ("server_id", server_id),
                ],
            ) >= 1.0
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_certified_by_another_ca_is_refused() {
    let tmp = TempDir::new("mtls-other-ca");
    let store = echo_store(&tmp, &[]);
    let ours = mtls_mesh::start_control(&store, tmp.path(), ControlOpts::default()).await;
    let theirs = mtls_mesh::start_control(
        &tmp.subdir("other-store"),
        tmp.path(),
        ControlOpts {
            name: "other",
            ..Default::default()
        },
    )
    .await;
    let our_anchors = mtls_mesh::trust_anchors(&ours).await;
    let their_anchors = mtls_mesh::trust_anchors(&theirs).await;
    assert_ne!(our_anchors, their_anchors);

    // The server is discovered through our control plane but certified by the other CA.
    let echo = EchoServer::start(SERVER).await;
    let foreign = IdentitySource::new(&theirs, &their_anchors);
    let _server = mtls_mesh::server_certified_by(
        &ours,
        &theirs,
        &foreign,
        tmp.path(),
        SERVER,
        "backend",
        &[("http", echo.port())],
    )
    .await;

    let id = IdentitySource::new(&ours, &our_anchors);
    let client = mtls_mesh::client(&ours, &id, tmp.path(), CLIENT, &[]).await;
    let reply = request_echo(&client).await;
    assert_refused(&reply, "peer certificate is not signed by a trusted anchor");
    assert_handshake_error(&client, "unknown_ca", &identity_of(SERVER)).await;
    assert_eq!(echo.requests.get(), 0);
}

/// Discovery says the endpoint is `impostor`, but the sidecar there is `backend-1`. A Weft
/// proxy only terminates TLS for its own name, so it relays the handshake (SNI `impostor`) to
/// its app as opaque bytes, and the client reports that the peer did not answer with TLS. (A
/// peer that does terminate with a certificate for another identity is refused as
/// `wrong_identity`: `weft-proxy` unit test `mtls::tests::outbound_refuses_a_certificate_for_another_identity`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_is_not_the_discovered_identity_is_refused() {
    let tmp = TempDir::new("mtls-wrong-id");
    let store = echo_store(&tmp, &[]);
    let control = mtls_mesh::start_control(&store, tmp.path(), ControlOpts::default()).await;
    let anchors = mtls_mesh::trust_anchors(&control).await;
    let id = IdentitySource::new(&control, &anchors);
    let echo = EchoServer::start(SERVER).await;
    // backend-1's sidecar (a valid certificate for backend-1) is not what `echo` selects ...
    let server = mtls_mesh::server(
        &control,
        &id,
        tmp.path(),
        SERVER,
        "not-echo",
        &[("http", echo.port())],
        |spec| spec,
    )
    .await;
    // ... `impostor` is, and discovery says its endpoint (the same port) is `impostor`.
    let doc = workload_doc(
        "default",
        "impostor",
        &[("app", "backend")],
        "127.0.0.1",
        &[("http", server.forward_addr(echo.port()).port())],
    );
    mtls_mesh::register(&control, "impostor", &doc).await;

    let client = mtls_mesh::client(&control, &id, tmp.path(), CLIENT, &[]).await;
    let reply = request_echo(&client).await;
    assert_refused(&reply, "the peer did not answer with TLS");
    assert!(
        reply
            .header("l5d-proxy-error")
            .contains(&identity_of("impostor")),
        "{}",
        reply.describe()
    );
    assert_handshake_error(&client, "not_tls", &identity_of("impostor")).await;
    // The relayed handshake reached the app as opaque bytes (`tls="opaque"`), never a request.
    assert_eq!(echo.requests.get(), 0);
    mtls_mesh::metrics_until(&server, "passthrough TLS", |m| {
        metric_sum(
            m,
            "tcp_open_total",
            &[("direction", "inbound"), ("tls", "opaque")],
        ) >= 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_peer_certificate_is_refused() {
    let tmp = TempDir::new("mtls-expired");
    let ca = tmp.subdir("ca");
    mtls_mesh::init_ca(&ca).await;
    let store = echo_store(&tmp, &[]);
    let control = mtls_mesh::start_control(
        &store,
        tmp.path(),
        ControlOpts {
            identity_dir: Some(&ca),
            ..Default::default()
        },
    )
    .await;
    // Same CA, 2-second leaves: the server's certificate expires soon after this goes away.
    let mut short = mtls_mesh::start_control(
        &tmp.subdir("short-store"),
        tmp.path(),
        ControlOpts {
            identity_dir: Some(&ca),
            cert_lifetime: Some("2s"),
            name: "short",
            ..Default::default()
        },
    )
    .await;
    let anchors = mtls_mesh::trust_anchors(&control).await;
    assert_eq!(anchors, mtls_mesh::trust_anchors(&short).await);

    let echo = EchoServer::start(SERVER).await;
    let short_lived = IdentitySource::new(&short, &anchors);
    let server = mtls_mesh::server_certified_by(
        &control,
        &short,
        &short_lived,
        tmp.path(),
        SERVER,
        "backend",
        &[("http", echo.port())],
    )
    .await;

    // The CA goes away: the server keeps its certificate until it expires.
    short.kill().await;
    let expires = server
        .metric_sum("identity_cert_expiration_timestamp_seconds", &[])
        .await;
    let id = IdentitySource::new(&control, &anchors);
    let client = mtls_mesh::client(&control, &id, tmp.path(), CLIENT, &[]).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    // Expiry has one-second resolution: one more second and it is certainly past.
    tokio::time::sleep(Duration::from_secs_f64((expires - now).max(0.0) + 1.0)).await;

    let reply = request_echo(&client).await;
    assert_refused(&reply, "peer certificate has expired");
    assert_handshake_error(&client, "expired", &identity_of(SERVER)).await;
    assert_eq!(echo.requests.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_that_require_identity_refuse_unauthenticated_clients() {
    let tmp = TempDir::new("mtls-require");
    let store = echo_store(&tmp, &[opaque_service("tcp", "backend", 7000, "tcp")]);
    let control = mtls_mesh::start_control(&store, tmp.path(), ControlOpts::default()).await;
    let anchors = mtls_mesh::trust_anchors(&control).await;
    let id = IdentitySource::new(&control, &anchors);
    let echo = EchoServer::start(SERVER).await;
    let (tcp_app, _tcp_task) = tcp_echo().await;
    let required = format!("{},{}", echo.port(), tcp_app.port());
    let server = mtls_mesh::server(
        &control,
        &id,
        tmp.path(),
        SERVER,
        "backend",
        &[("http", echo.port()), ("tcp", tcp_app.port())],
        |spec| {
            spec.env(config::ENV_INBOUND_PORTS_REQUIRE_IDENTITY, &required)
                .env(
                    config::ENV_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION,
                    &tcp_app.port().to_string(),
                )
        },
    )
    .await;
    let tcp = authority("tcp", 7000);
    let client = mtls_mesh::client(
        &control,
        &id,
        tmp.path(),
        CLIENT,
        std::slice::from_ref(&tcp),
    )
    .await;

    // A meshed client (mTLS with its certificate) is let in, over HTTP and opaque TCP.
    let reply = request_echo(&client).await;
    assert_eq!(reply.status, 200, "{}", reply.describe());
    let back = tcp_roundtrip(client.upstream_addr(&tcp), b"meshed bytes")
        .await
        .expect("meshed tcp");
    assert_eq!(back, b"meshed bytes");

    // Plaintext HTTP straight to the server's port: 403 with the reason.
    let (status, body) = support::http_get(server.forward_addr(echo.port()), "/plain")
        .await
        .expect("plain http");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("requires a client identity"), "{body}");
    assert!(body.contains("not TLS"), "{body}");

    // Plaintext opaque TCP: the connection is closed, nothing reaches the app.
    let refused = tcp_roundtrip(server.forward_addr(tcp_app.port()), b"plain bytes").await;
    assert!(
        refused.as_ref().is_ok_and(|b| b.is_empty()) || refused.is_err(),
        "plaintext TCP was let through: {refused:?}"
    );

    let metrics = mtls_mesh::metrics_until(&server, "authorization denials", |m| {
        metric_sum(
            m,
            "inbound_http_authz_deny_total",
            &[("tls", "no_identity")],
        ) >= 1.0
            && metric_sum(m, "inbound_tcp_authz_deny_total", &[("tls", "no_identity")]) >= 1.0
    })
    .await;
    assert_eq!(
        metric_sum(
            &metrics,
            "inbound_http_authz_deny_total",
            &[("tls", "true")]
        ),
        0.0,
        "{metrics}"
    );
    assert_eq!(echo.requests.get(), 1);
}
