//! TLS on the proxy API, end to end with real `weft control` and `weft-proxy` processes:
//!
//! - a sidecar that names the control plane's identity (`WEFT_PROXY_*_SVC_NAME`) reaches
//!   Destination, the policy APIs and `Identity.Certify` over TLS (mutual once it has its
//!   certificate, as the control plane's log of each connection's client shows): a packet
//!   capture (tshark) of
//!   the gRPC port shows the control plane's name in the ClientHello and never the token, while a
//!   sidecar left in plaintext on loopback (development) shows its token in the same capture (so
//!   the capture would see one);
//! - a sidecar expecting another identity than the control plane proves gets no certificate;
//! - plaintext from a peer off loopback is refused by the control plane (`tests/cluster_mesh.rs`
//!   runs every sidecar over TLS from pods on other nodes).

#[path = "support/mtls_mesh.rs"]
mod mtls_mesh;
mod support;

use mtls_mesh::{control_identity, ControlOpts, IdentitySource};
use support::capture::{contains, Capture};
use support::{TempDir, SOON};
use weft_proxy::config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certify_crosses_in_tls_and_a_capture_shows_no_token() {
    let Some(tshark) = support::which("tshark") else {
        support::skip_or_fail("tshark is not installed (apt-get install tshark)");
        return;
    };
    let tmp = TempDir::new("control-tls-capture");
    let store = tmp.subdir("store");
    let control = mtls_mesh::start_control(
        &store,
        tmp.path(),
        ControlOpts {
            log: Some("info,weft_control::grpc::transport=debug"),
            ..Default::default()
        },
    )
    .await;
    let anchors = mtls_mesh::trust_anchors(&control).await;
    let id = IdentitySource::new(&control, &anchors);
    let grpc_port = control.grpc.port();

    let capture = Capture::start(
        &tshark,
        &format!("tcp port {grpc_port}"),
        tmp.path(),
        "grpc.pcap",
        control.grpc,
    )
    .await;

    // Every control-plane connection of this one is TLS.
    let secure = mtls_mesh::client_with(&control, &id, tmp.path(), "secure", &[], |spec| {
        spec.env(config::ENV_DESTINATION_SVC_NAME, &control_identity())
    })
    .await;
    // This one is left in plaintext (allowed: loopback).
    let plain = mtls_mesh::client_with(&control, &id, tmp.path(), "plain", &[], |spec| {
        spec.env(config::ENV_IDENTITY_SVC_NAME, "")
    })
    .await;
    let token = |name: &str| {
        std::fs::read_to_string(mtls_mesh::token_path(tmp.path(), name)).expect("token file")
    };
    let (secure_token, plain_token) = (token("secure"), token("plain"));
    assert!(secure_token.len() >= 16 && plain_token.len() >= 16);

    let raw = capture.stop().await;
    let contains = |needle: &str| contains(&raw, needle.as_bytes());
    assert!(
        contains(plain_token.trim()),
        "the capture missed the plaintext sidecar's Certify call (it would miss a token)"
    );
    assert!(
        !contains(secure_token.trim()),
        "the TLS sidecar's token crossed the wire in the clear"
    );
    // The ClientHello's SNI (the one part of a TLS 1.3 handshake in the clear) names the
    // control plane's identity.
    assert!(
        contains(&control_identity()),
        "no ClientHello naming {} in the capture",
        control_identity()
    );
    // Mutual TLS once it has its certificate: its Destination and policy connections (opened
    // only then) present it; only Certify came without one.
    let secure_id = mtls_mesh::identity_of("secure");
    support::eventually(
        "the control plane sees the sidecar's identity",
        SOON,
        || async {
            control
                .proc
                .stderr_tail(200_000)
                .lines()
                .any(|l| l.contains("gRPC: TLS connection") && l.contains(&secure_id))
                .then_some(())
        },
    )
    .await;
    drop((secure, plain));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_expecting_another_control_plane_identity_gets_no_certificate() {
    let tmp = TempDir::new("control-tls-wrong-name");
    let store = tmp.subdir("store");
    let control = mtls_mesh::start_control(&store, tmp.path(), ControlOpts::default()).await;
    let anchors = mtls_mesh::trust_anchors(&control).await;
    let id = IdentitySource::new(&control, &anchors);
    let name = "misled";
    let doc = support::workload_doc("default", name, &[("app", name)], "127.0.0.1", &[]);
    let token = mtls_mesh::register(&control, name, &doc).await;
    mtls_mesh::write_token(tmp.path(), name, &token);
    let spec = mtls_mesh::with_identity(
        support::ProxySpec::new(name, control.grpc),
        name,
        tmp.path(),
        &id,
    )
    .env(
        config::ENV_IDENTITY_SVC_NAME,
        "weft-control.elsewhere.serviceaccount.identity.elsewhere.cluster.local",
    );
    let proxy = mtls_mesh::spawn_unready(spec, name, tmp.path()).await;
    // It keeps trying (and saying so), and never holds a certificate.
    support::eventually("the sidecar reports it cannot certify", SOON, || async {
        proxy
            .proc
            .stderr_tail(20_000)
            .contains("cannot obtain a certificate yet")
            .then_some(())
    })
    .await;
    let (status, _) = support::http_get(proxy.admin, "/ready")
        .await
        .expect("admin");
    assert_eq!(status, 503, "ready without a certificate it could trust");
}
