//! Identity tests: configuration, the renewal schedule under tokio's paused clock with an
//! in-memory CA, and TLS handshakes over 127.0.0.1 with certificates minted here.

use super::tls::{self, PeerRejection};
use super::*;
use crate::config;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::net::{TcpListener, TcpStream};

const A: &str = "a.default.serviceaccount.identity.weft.cluster.local";
const B: &str = "b.default.serviceaccount.identity.weft.cluster.local";

/// A CA minted for one test: anchor + issuer, able to sign leaves and CSRs. Shared with the
/// mTLS data-path tests (`mtls_tests.rs`).
pub(crate) struct TestCa {
    pub(crate) anchor_pem: String,
    anchor_der: Vec<u8>,
    issuer_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

fn ts(t: SystemTime) -> time::OffsetDateTime {
    let secs = t.duration_since(UNIX_EPOCH).expect("after epoch").as_secs() as i64;
    time::OffsetDateTime::from_unix_timestamp(secs).expect("timestamp")
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    p.not_before = ts(now - Duration::from_secs(3600));
    p.not_after = ts(now + Duration::from_secs(365 * 24 * 3600));
    p
}

impl TestCa {
    pub(crate) fn new() -> TestCa {
        // Same names as every Weft CA: a foreign CA differs only by its keys.
        let anchor_key = KeyPair::generate().expect("key");
        let anchor_params = ca_params("root.weft.cluster.local");
        let anchor = anchor_params.self_signed(&anchor_key).expect("anchor");
        let issuer_key = KeyPair::generate().expect("key");
        let issuer_params = ca_params("identity.weft.cluster.local");
        let issuer_cert = issuer_params
            .signed_by(
                &issuer_key,
                &Issuer::from_params(&anchor_params, &anchor_key),
            )
            .expect("issuer");
        TestCa {
            anchor_pem: anchor.pem(),
            anchor_der: anchor.der().to_vec(),
            issuer_der: issuer_cert.der().to_vec(),
            issuer: Issuer::new(issuer_params, issuer_key),
        }
    }

    fn leaf_params(
        names: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.subject_alt_names = names
            .iter()
            .map(|n| SanType::DnsName((*n).try_into().expect("ia5")))
            .collect();
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = ts(not_before);
        p.not_after = ts(not_after);
        p
    }

    /// A `Certified` for `names`, valid in the given window, trusting `trust` (usually this CA).
    fn certified(
        &self,
        names: &[&str],
        window: (SystemTime, SystemTime),
        trust: &str,
    ) -> Certified {
        let key = KeyPair::generate().expect("key");
        let leaf = Self::leaf_params(names, window.0, window.1)
            .signed_by(&key, &self.issuer)
            .expect("leaf");
        let chain = vec![
            leaf.der().clone(),
            CertificateDer::from(self.issuer_der.clone()),
        ];
        let signing = tls::provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key.serialize_der().into()))
            .expect("key loads");
        Certified {
            name: names[0].to_string(),
            key: Arc::new(CertifiedKey::new(chain, signing)),
            roots: Arc::new(tls::roots_from_pem(trust.as_bytes()).expect("roots")),
            valid_until: window.1,
        }
    }

    pub(crate) fn valid(&self, names: &[&str]) -> Certified {
        let now = SystemTime::now();
        self.certified(
            names,
            (
                now - Duration::from_secs(60),
                now + Duration::from_secs(3600),
            ),
            &self.anchor_pem,
        )
    }

    /// Answers a Certify request: signs its CSR for `req.identity`, valid until `valid_until`.
    pub(crate) fn sign_csr(
        &self,
        req: &CertifyRequest,
        valid_until: SystemTime,
    ) -> Result<CertifyResponse, tonic::Status> {
        let csr = CertificateSigningRequestParams::from_der(
            &req.certificate_signing_request.clone().into(),
        )
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let not_before = SystemTime::now() - Duration::from_secs(10);
        let leaf = Self::leaf_params(&[&req.identity], not_before, valid_until)
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(CertifyResponse {
            leaf_certificate: leaf.der().to_vec(),
            intermediate_certificates: vec![self.issuer_der.clone()],
            valid_until: Some(prost_types::Timestamp::from(valid_until)),
        })
    }
}

// ---------------------------------------------------------------- configuration

fn env(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
    pairs.iter().copied().collect()
}

#[test]
fn no_identity_variables_means_transitional_mode() {
    assert_eq!(
        IdentityConfig::from_env(&env(&[]), "127.0.0.1:8086", &None),
        Ok(None)
    );
}

#[test]
fn identity_config_requires_token_name_and_anchors_and_reports_all() {
    let errors = IdentityConfig::from_env(
        &env(&[(config::ENV_IDENTITY_MIN_REFRESH, "soon")]),
        "127.0.0.1:8086",
        &None,
    )
    .expect("no identity variable among these");
    assert_eq!(errors, None, "MIN_REFRESH alone does not enable identity");

    let errors = IdentityConfig::from_env(
        &env(&[
            (config::ENV_IDENTITY_TOKEN_FILE, "/t"),
            (config::ENV_IDENTITY_MAX_REFRESH, "soon"),
        ]),
        "127.0.0.1:8086",
        &None,
    )
    .expect_err("incomplete");
    let names: Vec<&str> = errors.iter().map(|e| e.name).collect();
    assert_eq!(
        names,
        vec![
            config::ENV_IDENTITY_LOCAL_NAME,
            config::ENV_IDENTITY_TRUST_ANCHORS,
            config::ENV_IDENTITY_MAX_REFRESH
        ]
    );
}

#[test]
fn identity_config_defaults_and_bad_anchors() {
    let ca = TestCa::new();
    let pem: &'static str = Box::leak(ca.anchor_pem.clone().into_boxed_str());
    let cfg = IdentityConfig::from_env(
        &env(&[
            (config::ENV_IDENTITY_TOKEN_FILE, "/run/token"),
            (
                config::ENV_IDENTITY_LOCAL_NAME,
                "A.default.serviceaccount.identity.weft.cluster.local.",
            ),
            (config::ENV_IDENTITY_TRUST_ANCHORS, pem),
        ]),
        "127.0.0.1:8086",
        &None,
    )
    .expect("valid")
    .expect("enabled");
    assert_eq!(cfg.svc_addr, "127.0.0.1:8086");
    assert_eq!(cfg.local_name, A);
    assert_eq!(cfg.min_refresh, Duration::from_secs(10));
    assert_eq!(cfg.max_refresh, Duration::from_secs(24 * 3600));

    let errors = IdentityConfig::from_env(
        &env(&[
            (config::ENV_IDENTITY_TOKEN_FILE, "/run/token"),
            (config::ENV_IDENTITY_LOCAL_NAME, A),
            (config::ENV_IDENTITY_TRUST_ANCHORS, "not pem"),
        ]),
        "127.0.0.1:8086",
        &None,
    )
    .expect_err("bad anchors");
    assert_eq!(errors[0].name, config::ENV_IDENTITY_TRUST_ANCHORS);
    assert!(
        errors[0].reason.contains("no CERTIFICATE"),
        "{}",
        errors[0].reason
    );
}

#[test]
fn refresh_delay_is_seventy_percent_clamped_and_never_past_ninety() {
    let min = Duration::from_secs(10);
    let max = Duration::from_secs(24 * 3600);
    let h = |n: u64| Duration::from_secs(n * 3600);
    assert_eq!(refresh_delay(h(24), min, max), h(24).mul_f64(0.7));
    assert_eq!(refresh_delay(h(100), min, max), max);
    assert_eq!(
        refresh_delay(Duration::from_secs(20), min, max),
        Duration::from_secs(14)
    );
    // 70% of 5 s is below MIN_REFRESH, but waiting 10 s would outlive the certificate.
    assert_eq!(
        refresh_delay(Duration::from_secs(5), min, max),
        Duration::from_millis(4500)
    );
}

// ---------------------------------------------------------------- renewal (paused clock)

/// An in-memory Identity service: signs CSRs with a TestCa for a fixed lifetime, or fails while
/// `down` is set. Records when (in tokio time) each call happened.
#[derive(Clone)]
struct FakeCa {
    ca: Arc<TestCa>,
    lifetime: Duration,
    down: Arc<std::sync::atomic::AtomicBool>,
    calls: Arc<Mutex<Vec<(tokio::time::Instant, bool)>>>,
    called: Arc<tokio::sync::Notify>,
}

impl Certifier for FakeCa {
    fn certify(
        &mut self,
        req: CertifyRequest,
    ) -> impl Future<Output = Result<CertifyResponse, tonic::Status>> + Send {
        let this = self.clone();
        async move {
            let down = this.down.load(std::sync::atomic::Ordering::SeqCst);
            this.calls
                .lock()
                .expect("lock")
                .push((tokio::time::Instant::now(), !down));
            this.called.notify_one();
            if down {
                return Err(tonic::Status::unavailable("CA down"));
            }
            assert_eq!(req.token, b"tok\n", "the token file is sent as-is");
            this.ca.sign_csr(&req, SystemTime::now() + this.lifetime)
        }
    }
}

/// A token file holding `tok\n`, unique to this call.
pub(crate) fn token_file(tag: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "weft-proxy-token-{tag}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::write(&path, "tok\n").expect("token");
    path
}

/// A test identity `local_name` whose Certify is faked (the control-plane address is never
/// dialled), trusting `anchors_pem` (and watching `anchors_file` when given): refresh between
/// 1 s and 24 h, retries after 100 ms to 5 s.
pub(crate) fn test_config(
    local_name: &str,
    anchors_pem: &str,
    anchors_file: Option<PathBuf>,
    token_file: PathBuf,
) -> (IdentityConfig, Schedule) {
    let cfg = IdentityConfig {
        svc_addr: "127.0.0.1:1".into(),
        svc_name: None,
        trust_anchors_pem: anchors_pem.to_string(),
        trust_anchors_file: anchors_file,
        token_file,
        local_name: local_name.into(),
        min_refresh: Duration::from_secs(1),
        max_refresh: Duration::from_secs(24 * 3600),
    };
    let schedule = Schedule {
        min_refresh: cfg.min_refresh,
        max_refresh: cfg.max_refresh,
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(5),
    };
    (cfg, schedule)
}

/// Starts an identity whose Certify answers come from `ca`, trusting `trust_pem`.
fn start_fake_with(
    ca: Arc<TestCa>,
    trust_pem: &str,
    token_file: PathBuf,
    lifetime: Duration,
) -> (Identity, FakeCa, Metrics) {
    let fake = FakeCa {
        ca,
        lifetime,
        down: Arc::default(),
        calls: Arc::default(),
        called: Arc::default(),
    };
    let (cfg, schedule) = test_config(A, trust_pem, None, token_file);
    let metrics = Metrics::new();
    let identity =
        Identity::start_with(&cfg, schedule, metrics.clone(), fake.clone()).expect("start");
    (identity, fake, metrics)
}

fn start_fake(tag: &str, lifetime: Duration) -> (Identity, FakeCa, Metrics) {
    let ca = Arc::new(TestCa::new());
    let pem = ca.anchor_pem.clone();
    start_fake_with(ca, &pem, token_file(tag), lifetime)
}

/// `sha256:HEX` of the anchor's DER, computed here rather than by the code under test.
fn fingerprint(ca: &TestCa) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, &ca.anchor_der);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The fingerprints `identity_trust_anchor_info` reports, in its order.
fn anchor_info(metrics: &Metrics) -> Vec<String> {
    metrics
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("identity_trust_anchor_info{fingerprint=\""))
        .map(|l| l.split('"').next().unwrap_or_default().to_string())
        .collect()
}

fn metric(metrics: &Metrics, line_prefix: &str) -> String {
    metrics
        .render()
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn renews_at_seventy_percent_and_keeps_the_certificate_while_the_ca_is_down() {
    let (identity, fake, metrics) = start_fake("renew", Duration::from_secs(100));
    assert!(
        !identity.is_ready(),
        "not ready before the first certificate"
    );
    identity.wait_ready().await;
    let first = identity.current().expect("certificate");
    assert_eq!(first.name, A);
    assert_eq!(tls::peer_identity(&first.key.cert), Some(A.to_string()));
    let t0 = fake.calls.lock().expect("lock")[0].0;
    assert_eq!(
        metric(&metrics, "identity_cert_refresh_total{result=\"success\"}"),
        "1"
    );
    let expiry: u64 = metric(&metrics, "identity_cert_expiration_timestamp_seconds ")
        .parse()
        .expect("gauge");
    assert_eq!(expiry, unix(first.valid_until));

    // The second certificate is asked for at 70% of the 100 s lifetime.
    let mut rx = identity.watch();
    rx.borrow_and_update();
    rx.changed().await.expect("renewed");
    let t1 = fake.calls.lock().expect("lock")[1].0;
    let waited = t1 - t0;
    assert!(
        (Duration::from_secs(69)..=Duration::from_secs(70)).contains(&waited),
        "renewed after {waited:?}"
    );
    let second = identity.current().expect("certificate");
    assert!(!Arc::ptr_eq(&first, &second));

    // The CA goes away at the next renewal: retries back off, the certificate stays.
    fake.down.store(true, std::sync::atomic::Ordering::SeqCst);
    // `notify_one` may have left a permit from an earlier call: count the calls instead.
    while fake.calls.lock().expect("lock").len() < 2 + 5 {
        fake.called.notified().await;
    }
    tokio::task::yield_now().await;
    let calls = fake.calls.lock().expect("lock").clone();
    let failures: Vec<_> = calls[2..].iter().map(|(t, _)| *t).collect();
    assert!(calls[2..].iter().all(|(_, ok)| !ok));
    let gaps: Vec<Duration> = failures.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().enumerate() {
        let base = Duration::from_millis(100) * (1 << i);
        assert!(
            *gap >= base && *gap <= base.mul_f64(1.5),
            "retry {i} after {gap:?}, expected {base:?}..1.5x"
        );
    }
    assert!(Arc::ptr_eq(&second, &identity.current().expect("kept")));
    assert!(identity.is_ready());
    assert_eq!(
        metric(&metrics, "identity_cert_refresh_total{result=\"failure\"}"),
        "5"
    );

    // The CA comes back: the next retry succeeds and publishes a new certificate.
    fake.down.store(false, std::sync::atomic::Ordering::SeqCst);
    rx.borrow_and_update();
    rx.changed().await.expect("renewed after the outage");
    assert_eq!(
        metric(&metrics, "identity_cert_refresh_total{result=\"success\"}"),
        "3"
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_token_file_is_a_retried_failure_not_a_crash() {
    let path =
        std::env::temp_dir().join(format!("weft-proxy-token-missing-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let ca = Arc::new(TestCa::new());
    let pem = ca.anchor_pem.clone();
    let (identity, fake, metrics) =
        start_fake_with(ca, &pem, path.clone(), Duration::from_secs(100));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!identity.is_ready());
    assert!(
        fake.calls.lock().expect("lock").is_empty(),
        "no Certify without a token"
    );
    let failures: u64 = metric(&metrics, "identity_cert_refresh_total{result=\"failure\"}")
        .parse()
        .expect("counter");
    assert!(failures >= 3, "{failures} failures");

    // The token appears (the workload registered): the next retry gets a certificate.
    std::fs::write(&path, "tok\n").expect("token");
    identity.wait_ready().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(start_paused = true)]
async fn a_certificate_from_another_ca_is_not_used() {
    // The CA answers, but the proxy trusts another anchor: every answer is refused.
    let ca = Arc::new(TestCa::new());
    let other = TestCa::new();
    let (identity, fake, metrics) = start_fake_with(
        ca,
        &other.anchor_pem,
        token_file("foreign"),
        Duration::from_secs(100),
    );
    while fake.calls.lock().expect("lock").len() < 3 {
        fake.called.notified().await;
    }
    assert!(!identity.is_ready());
    assert!(fake
        .calls
        .lock()
        .expect("lock")
        .iter()
        .all(|(_, answered)| *answered));
    tokio::task::yield_now().await;
    let failures: u64 = metric(&metrics, "identity_cert_refresh_total{result=\"failure\"}")
        .parse()
        .expect("counter");
    assert!(failures >= 2, "{failures}");
}

fn write_file_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[tokio::test(start_paused = true)]
async fn a_changed_trust_anchors_file_is_applied_and_a_bad_one_keeps_the_anchors() {
    let (ca1, ca2) = (Arc::new(TestCa::new()), TestCa::new());
    let anchors_file = std::env::temp_dir().join(format!(
        "weft-proxy-anchors-{}-{}.pem",
        std::process::id(),
        fastrand::u64(..)
    ));
    write_file_atomically(&anchors_file, &ca1.anchor_pem);
    let fake = FakeCa {
        ca: ca1.clone(),
        lifetime: Duration::from_secs(1000),
        down: Arc::default(),
        calls: Arc::default(),
        called: Arc::default(),
    };
    let (cfg, schedule) = test_config(
        A,
        &ca1.anchor_pem,
        Some(anchors_file.clone()),
        token_file("anchors"),
    );
    let metrics = Metrics::new();
    let identity =
        Identity::start_with(&cfg, schedule, metrics.clone(), fake.clone()).expect("start");
    identity.wait_ready().await;
    let first = identity.current().expect("certificate");
    assert_eq!(first.roots.len(), 1);
    assert_eq!(metric(&metrics, "identity_trust_anchors "), "1");
    assert_eq!(anchor_info(&metrics), vec![fingerprint(&ca1)]);

    // Old + new: published with the same certificate, no Certify call.
    write_file_atomically(
        &anchors_file,
        &format!("{}{}", ca1.anchor_pem, ca2.anchor_pem),
    );
    let mut rx = identity.watch();
    rx.borrow_and_update();
    rx.changed().await.expect("new anchors published");
    let second = identity.current().expect("certificate");
    assert_eq!(second.roots.len(), 2);
    assert!(Arc::ptr_eq(&first.key, &second.key), "same certificate");
    assert_eq!(fake.calls.lock().expect("lock").len(), 1);
    assert_eq!(metric(&metrics, "identity_trust_anchors "), "2");
    assert_eq!(
        anchor_info(&metrics),
        vec![fingerprint(&ca1), fingerprint(&ca2)]
    );
    assert_eq!(
        metric(
            &metrics,
            "identity_trust_anchors_reload_total{result=\"success\"}"
        ),
        "1"
    );

    // A bad file: the anchors stay, one error counted however long it stays bad.
    write_file_atomically(&anchors_file, "not a PEM file");
    tokio::time::sleep(TRUST_ANCHORS_POLL_INTERVAL * 4).await;
    assert_eq!(identity.current().expect("certificate").roots.len(), 2);
    assert_eq!(
        metric(
            &metrics,
            "identity_trust_anchors_reload_total{result=\"failure\"}"
        ),
        "1"
    );
    assert_eq!(metric(&metrics, "identity_trust_anchors "), "2");

    // Only an anchor our certificate does not chain to: applied, and renewal is tried at once.
    write_file_atomically(&anchors_file, &ca2.anchor_pem);
    while fake.calls.lock().expect("lock").len() < 2 {
        fake.called.notified().await;
    }
    assert_eq!(identity.current().expect("certificate").roots.len(), 1);
    assert_eq!(metric(&metrics, "identity_trust_anchors "), "1");
    assert_eq!(anchor_info(&metrics), vec![fingerprint(&ca2)]);
    let _ = std::fs::remove_file(&anchors_file);
}

// ---------------------------------------------------------------- TLS handshakes

/// One handshake over 127.0.0.1: the client expects `expected`. Returns the client's result and
/// the server's (with the verified client identity).
async fn handshake(
    server: &Certified,
    client: &Certified,
    expected: &str,
    present_client_cert: bool,
) -> (
    Result<(), std::io::Error>,
    Result<Option<String>, std::io::Error>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        tls::server_config(server).expect("server config"),
    ));
    let mut cc = tls::client_config(client, expected).expect("client config");
    if !present_client_cert {
        let no_cert = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(
                tls::server_verifier(client.roots.clone(), expected).expect("verifier"),
            )
            .with_no_client_auth();
        cc = no_cert;
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cc));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server_side = async {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut tls = acceptor.accept(tcp).await?;
        let (_, conn) = tls.get_ref();
        assert_eq!(
            conn.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        let id = conn.peer_certificates().and_then(tls::peer_identity);
        // Finish the exchange so the client sees the server's verdict on its certificate.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await?;
        tls.write_all(b"k").await?;
        tls.shutdown().await.ok();
        Ok(id)
    };
    let client_side = async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let sni = rustls::pki_types::ServerName::try_from(expected.to_string()).expect("sni");
        let mut tls = connector.connect(sni, tcp).await?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tls.write_all(b"p").await?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await?;
        Ok(())
    };
    let (c, s) = tokio::join!(client_side, server_side);
    (c, s)
}

fn rejection(r: &Result<(), std::io::Error>) -> Option<PeerRejection> {
    r.as_ref().err().and_then(PeerRejection::from_io)
}

#[tokio::test]
async fn mutual_tls_succeeds_and_the_server_sees_the_client_identity() {
    let ca = TestCa::new();
    let (c, s) = handshake(&ca.valid(&[B]), &ca.valid(&[A]), B, true).await;
    c.expect("client handshake");
    assert_eq!(s.expect("server handshake"), Some(A.to_string()));
}

#[tokio::test]
async fn a_client_without_a_certificate_is_accepted_without_identity() {
    let ca = TestCa::new();
    let (c, s) = handshake(&ca.valid(&[B]), &ca.valid(&[A]), B, false).await;
    c.expect("client handshake");
    assert_eq!(s.expect("server handshake"), None);
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_as_unknown_ca() {
    let ca = TestCa::new();
    let foreign = TestCa::new();
    let server = foreign.valid(&[B]);
    let (c, _) = handshake(&server, &ca.valid(&[A]), B, true).await;
    assert_eq!(rejection(&c), Some(PeerRejection::UnknownCa), "{c:?}");
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused_as_expired() {
    let ca = TestCa::new();
    let now = SystemTime::now();
    let expired = ca.certified(
        &[B],
        (
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        ),
        &ca.anchor_pem,
    );
    let (c, _) = handshake(&expired, &ca.valid(&[A]), B, true).await;
    assert_eq!(rejection(&c), Some(PeerRejection::Expired), "{c:?}");
}

#[tokio::test]
async fn a_server_with_another_identity_is_refused_as_wrong_identity() {
    let ca = TestCa::new();
    let (c, _) = handshake(&ca.valid(&[A]), &ca.valid(&[A]), B, true).await;
    assert_eq!(rejection(&c), Some(PeerRejection::WrongIdentity), "{c:?}");
    // A certificate naming the expected identity AND another one is not "exactly" it.
    let (c, _) = handshake(&ca.valid(&[B, A]), &ca.valid(&[A]), B, true).await;
    assert_eq!(rejection(&c), Some(PeerRejection::WrongIdentity), "{c:?}");
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_by_the_server() {
    let ca = TestCa::new();
    let foreign = TestCa::new();
    // The foreign client trusts our CA (so it accepts the server) but its own chain is foreign.
    let client = foreign.certified(
        &[A],
        (
            SystemTime::now() - Duration::from_secs(60),
            SystemTime::now() + Duration::from_secs(3600),
        ),
        &ca.anchor_pem,
    );
    let (_, s) = handshake(&ca.valid(&[B]), &client, B, true).await;
    let err = s.expect_err("server refuses the client certificate");
    assert_eq!(
        PeerRejection::from_io(&err),
        Some(PeerRejection::UnknownCa),
        "{err:?}"
    );
}

/// `Identity.Certify` that answers only once `open` turns true: a proxy whose workload is not
/// registered yet, or whose control plane is not reachable yet (shared with the data-path tests).
pub(crate) struct Gated {
    pub(crate) ca: Arc<TestCa>,
    pub(crate) open: tokio::sync::watch::Receiver<bool>,
}

impl Certifier for Gated {
    fn certify(
        &mut self,
        req: CertifyRequest,
    ) -> impl std::future::Future<Output = Result<CertifyResponse, tonic::Status>> + Send {
        let (ca, mut open) = (self.ca.clone(), self.open.clone());
        async move {
            let _ = open.wait_for(|o| *o).await;
            ca.sign_csr(&req, SystemTime::now() + Duration::from_secs(3600))
        }
    }
}
