//! The proxy's identity over real sockets: a scripted `Identity.Certify` server (tonic, signing
//! with an rcgen CA) on 127.0.0.1. `/ready` stays 503 until the first certificate, a missing
//! token only delays it, and the metrics report the certificate.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use common::admin;
use linkerd2_proxy_api::identity::{
    identity_server::{Identity, IdentityServer},
    CertifyRequest, CertifyResponse,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use weft_proxy::runtime;

const NAME: &str = "web-1.default.serviceaccount.identity.weft.cluster.local";
const TOKEN: &str = "weft-test-token";

struct TestIdentity {
    issuer: Issuer<'static, KeyPair>,
    issuer_der: Vec<u8>,
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Identity for TestIdentity {
    async fn certify(
        &self,
        req: tonic::Request<CertifyRequest>,
    ) -> Result<tonic::Response<CertifyResponse>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let req = req.into_inner();
        if req.token.trim_ascii() != TOKEN.as_bytes() {
            return Err(tonic::Status::unauthenticated("bad token"));
        }
        let csr =
            CertificateSigningRequestParams::from_der(&req.certificate_signing_request.into())
                .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::DnsName(req.identity.as_str().try_into().unwrap())];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(1);
        p.not_after = now + time::Duration::hours(1);
        let leaf = p.signed_by(&csr.public_key, &self.issuer).unwrap();
        Ok(tonic::Response::new(CertifyResponse {
            leaf_certificate: leaf.der().to_vec(),
            intermediate_certificates: vec![self.issuer_der.clone()],
            valid_until: Some(prost_types::Timestamp::from(
                SystemTime::now() + Duration::from_secs(3600),
            )),
        }))
    }
}

/// Starts the scripted Identity service; returns (address, anchors PEM, call counter).
async fn identity_server() -> (SocketAddr, String, Arc<AtomicUsize>) {
    let ca = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p
    };
    let anchor_key = KeyPair::generate().unwrap();
    let anchor_params = ca("root.weft.cluster.local");
    let anchor = anchor_params.self_signed(&anchor_key).unwrap();
    let issuer_key = KeyPair::generate().unwrap();
    let issuer_params = ca("identity.weft.cluster.local");
    let issuer_cert = issuer_params
        .signed_by(
            &issuer_key,
            &Issuer::from_params(&anchor_params, &anchor_key),
        )
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = TestIdentity {
        issuer: Issuer::new(issuer_params, issuer_key),
        issuer_der: issuer_cert.der().to_vec(),
        calls: calls.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IdentityServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, anchor.pem(), calls)
}

fn metric(body: &str, prefix: &str) -> Option<u64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn ready_waits_for_the_first_certificate_and_metrics_report_it() {
    let (addr, anchors, calls) = identity_server().await;
    let token_file =
        std::env::temp_dir().join(format!("weft-proxy-it-token-{}", std::process::id()));
    let _ = std::fs::remove_file(&token_file);
    let addr_s = addr.to_string();
    let token_s = token_file.display().to_string();
    let config = common::config(&[
        // The same server answers Destination connects (readiness) and Certify.
        ("WEFT_PROXY_DESTINATION_SVC_ADDR", addr_s.as_str()),
        ("WEFT_PROXY_CONTROL_BACKOFF_MAX", "200ms"),
        ("WEFT_PROXY_IDENTITY_TOKEN_FILE", token_s.as_str()),
        ("WEFT_PROXY_IDENTITY_LOCAL_NAME", NAME),
        ("WEFT_PROXY_IDENTITY_TRUST_ANCHORS", anchors.as_str()),
    ]);
    let running = runtime::start(config).await.expect("start");
    let admin_addr = running.listening.admin;
    let identity = running.identity.clone().expect("identity on");
    running.discovery.wait_ready().await;

    // The control plane is there, but without a token there is no certificate: not ready.
    assert_eq!(admin(admin_addr, "GET", "/ready").await.0, 503);
    let (_, body) = admin(admin_addr, "GET", "/metrics").await;
    assert_eq!(
        metric(&body, "identity_cert_expiration_timestamp_seconds "),
        Some(0)
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no Certify without a token"
    );

    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    tokio::time::timeout(Duration::from_secs(10), identity.wait_ready())
        .await
        .expect("certificate within the backoff");
    assert_eq!(admin(admin_addr, "GET", "/ready").await.0, 200);
    let (_, body) = admin(admin_addr, "GET", "/metrics").await;
    let expiry = metric(&body, "identity_cert_expiration_timestamp_seconds ").expect("gauge");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 3500..=now + 3600).contains(&expiry),
        "expiry {expiry}, now {now}"
    );
    assert_eq!(
        metric(&body, "identity_cert_refresh_total{result=\"success\"}"),
        Some(1)
    );
    assert!(metric(&body, "identity_cert_refresh_total{result=\"failure\"}").unwrap_or(0) >= 1);
    let cert = identity.current().expect("certificate");
    assert_eq!(
        weft_proxy::identity::tls::peer_identity(&cert.key.cert),
        Some(NAME.to_string())
    );

    running.shutdown();
    running.wait().await;
    let _ = std::fs::remove_file(&token_file);
}

#[tokio::test]
async fn without_identity_variables_the_proxy_runs_as_before() {
    let running = runtime::start(common::config(&[])).await.expect("start");
    assert!(running.identity.is_none());
    let (_, body) = admin(running.listening.admin, "GET", "/metrics").await;
    assert!(
        !body.contains("identity_cert"),
        "no identity metrics in transitional mode"
    );
    running.shutdown();
    running.wait().await;
}
