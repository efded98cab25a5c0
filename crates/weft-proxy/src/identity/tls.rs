//! rustls configurations built from this proxy's certificate, and the checks on peers'.
//!
//! - [`server_config`]: TLS 1.3 only, serves our certificate, asks for a client certificate and
//!   verifies it against the trust anchors when presented (optional: unmeshed clients and
//!   clients without identity still connect; the data path decides what their policy allows).
//!   After the handshake, [`peer_identity`] gives the verified client identity.
//! - [`client_config`]: TLS 1.3 only, presents our certificate, and accepts a server only if its
//!   chain reaches a trust anchor AND its certificate carries exactly the expected identity.
//! - [`PeerRejection`]: why a handshake failed, in the words `l5d-proxy-error` and the metrics use.
//!
//! Only the ring provider is used (no aws-lc-rs); the `tls12` feature is off.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    client::WebPkiServerVerifier,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::WebPkiClientVerifier,
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::Certified;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no CERTIFICATE block in the trust anchors")]
    NoAnchors,
    #[error("{0}")]
    Pem(String),
    #[error("trust anchor rejected: {0}")]
    Anchor(rustls::Error),
    #[error("{0:?} is not a valid DNS name for TLS")]
    Name(String),
    #[error("building the verifier: {0}")]
    Verifier(String),
    #[error("building the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The ring crypto provider, shared.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Parses PEM trust anchors (CERTIFICATE blocks only).
/// `sha256:HEX` of each certificate of a PEM bundle (the anchors' fingerprints, as
/// `openssl x509 -fingerprint -sha256` and the control plane's `weft check` write them, in
/// lower case without colons); blocks that do not parse are skipped.
pub fn pem_fingerprints(pem: &[u8]) -> Vec<String> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .filter_map(Result::ok)
        .filter(|block| block.label == "CERTIFICATE")
        .map(|block| {
            let d = ring::digest::digest(&ring::digest::SHA256, &block.contents);
            let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        })
        .collect()
}

pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| TlsError::Pem(format!("invalid PEM: {e}")))?;
        if block.label != "CERTIFICATE" {
            return Err(TlsError::Pem(format!(
                "unexpected PEM block {:?} (only CERTIFICATE is allowed)",
                block.label
            )));
        }
        roots
            .add(CertificateDer::from(block.contents))
            .map_err(TlsError::Anchor)?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoAnchors);
    }
    Ok(roots)
}

/// A certificate as DER; PEM (what the proto comments describe) is accepted too.
pub fn der_or_pem(bytes: Vec<u8>) -> Result<CertificateDer<'static>, String> {
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes)
            .map_err(|e| format!("invalid PEM certificate: {e}"))?;
        return Ok(CertificateDer::from(pem.contents));
    }
    X509Certificate::from_der(&bytes).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(CertificateDer::from(bytes))
}

/// The DNS SANs of a certificate.
pub fn dns_sans(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, c) =
        X509Certificate::from_der(cert).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let sans = c
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?;
    Ok(sans
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// When a certificate expires.
pub fn not_after(cert: &CertificateDer<'_>) -> Result<SystemTime, String> {
    let (_, c) =
        X509Certificate::from_der(cert).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let secs = c.validity().not_after.timestamp();
    Ok(UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
}

/// The identity of a verified peer: the single DNS SAN of its leaf (`None` without a
/// certificate, or when the leaf has no or several DNS SANs).
pub fn peer_identity(certs: &[CertificateDer<'_>]) -> Option<String> {
    let leaf = certs.first()?;
    match dns_sans(leaf).ok()?.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Checks a chain against the anchors and requires exactly `expected` as the leaf's DNS SANs.
pub fn verify_identity(
    roots: &Arc<RootCertStore>,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    expected: &str,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let verifier = IdentityVerifier::new(roots.clone(), expected)
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    verifier
        .verify_server_cert(leaf, intermediates, &verifier.expected, &[], now)
        .map(|_| ())
}

/// Server side of a meshed connection: our certificate, optional verified client certificates.
/// The data path sets `alpn_protocols` before wrapping it in an `Arc`.
pub fn server_config(c: &Certified) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let clients = WebPkiClientVerifier::builder_with_provider(c.roots.clone(), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    Ok(ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(clients)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
            c.key.clone(),
        ))))
}

/// Client side of a meshed connection to a peer that must be `expected_identity`. Use the same
/// name as SNI (`ServerName::try_from(expected_identity)`); the verifier checks the expected
/// identity whatever SNI is sent.
pub fn client_config(c: &Certified, expected_identity: &str) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = IdentityVerifier::new(c.roots.clone(), expected_identity)?;
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
            c.key.clone(),
        ))))
}

/// Client side of a connection to the control plane, which must be `expected_identity`: the
/// anchors in force now, this proxy's certificate once it has one (before its first one the
/// control plane sees a client without a certificate: `Identity.Certify` is how it gets one),
/// ALPN `h2` (gRPC).
pub fn control_client_config(
    roots: Arc<RootCertStore>,
    cert: Option<&Certified>,
    expected_identity: &str,
) -> Result<ClientConfig, TlsError> {
    let verifier = IdentityVerifier::new(roots, expected_identity)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match cert {
        Some(c) => builder.with_client_cert_resolver(Arc::new(
            rustls::sign::SingleCertAndKey::from(c.key.clone()),
        )),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The verifier [`client_config`] uses: chain to `roots`, exactly `expected`.
pub fn server_verifier(
    roots: Arc<RootCertStore>,
    expected: &str,
) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    Ok(Arc::new(IdentityVerifier::new(roots, expected)?))
}

/// WebPKI chain validation plus an exact identity check.
#[derive(Debug)]
struct IdentityVerifier {
    inner: Arc<WebPkiServerVerifier>,
    expected: ServerName<'static>,
    expected_name: String,
}

impl IdentityVerifier {
    fn new(roots: Arc<RootCertStore>, expected: &str) -> Result<Self, TlsError> {
        let expected_name = expected.trim_end_matches('.').to_ascii_lowercase();
        let name = ServerName::try_from(expected_name.clone())
            .map_err(|_| TlsError::Name(expected.to_string()))?;
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        Ok(IdentityVerifier {
            inner,
            expected: name,
            expected_name,
        })
    }
}

impl ServerCertVerifier for IdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _sni: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Chain to an anchor, validity period, EKU, and that `expected` is among the names.
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            &self.expected,
            ocsp_response,
            now,
        )?;
        // And nothing else: a certificate naming several identities is not "exactly" ours.
        let sans = dns_sans(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if sans != [self.expected_name.as_str()] {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Why a peer's certificate was refused (by our side of the handshake).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRejection {
    /// The chain does not reach a current trust anchor (another CA, or a bad signature).
    UnknownCa,
    Expired,
    NotYetValid,
    /// Valid chain, but not (exactly) the identity discovery announced.
    WrongIdentity,
    /// The peer sent no certificate where one is needed.
    NoCertificate,
    /// Anything else wrong with the certificate.
    BadCertificate,
}

impl PeerRejection {
    /// Classifies a rustls error raised while verifying the peer. `None` for errors that are not
    /// about the peer's certificate (I/O, protocol, alerts the peer sent).
    pub fn from_error(e: &rustls::Error) -> Option<PeerRejection> {
        use CertificateError as C;
        Some(match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer | C::BadSignature => PeerRejection::UnknownCa,
                C::Expired | C::ExpiredContext { .. } => PeerRejection::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => PeerRejection::NotYetValid,
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    PeerRejection::WrongIdentity
                }
                _ => PeerRejection::BadCertificate,
            },
            rustls::Error::NoCertificatesPresented => PeerRejection::NoCertificate,
            _ => return None,
        })
    }

    /// The same, for the `io::Error` tokio-rustls returns from a failed handshake.
    pub fn from_io(e: &std::io::Error) -> Option<PeerRejection> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .and_then(PeerRejection::from_error)
    }

    /// Short reason for `l5d-proxy-error` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerRejection::UnknownCa => "peer certificate is not signed by a trusted anchor",
            PeerRejection::Expired => "peer certificate has expired",
            PeerRejection::NotYetValid => "peer certificate is not yet valid",
            PeerRejection::WrongIdentity => "peer certificate does not match the expected identity",
            PeerRejection::NoCertificate => "peer presented no certificate",
            PeerRejection::BadCertificate => "peer certificate is invalid",
        }
    }
}

impl std::fmt::Display for PeerRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
