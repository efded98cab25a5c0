//! The control plane's TLS clients: TLS 1.3 only, ring as the provider. `weft check`'s probe
//! (`api/check_probe`) reads whatever chain a proxy presents; the tap client (`tap::client`)
//! verifies it against the trust anchors and presents the tap identity's certificate.

use std::sync::Arc;

use rustls::client::WantsClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, ConfigBuilder, RootCertStore, WantsVerifier};

/// The crypto provider every control-plane TLS client uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS 1.3 client configuration builder over `provider`, waiting for its verifier.
pub fn client_builder(
    provider: Arc<CryptoProvider>,
) -> Result<ConfigBuilder<ClientConfig, WantsVerifier>, String> {
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())
}

/// A client that accepts only servers chaining to `anchors` (DER) whose certificate carries the
/// name it dials (the workload's DNS-like identity), waiting for its client certificate.
pub fn verifying(
    anchors: &[Vec<u8>],
) -> Result<ConfigBuilder<ClientConfig, WantsClientCert>, String> {
    let mut roots = RootCertStore::empty();
    for a in anchors {
        roots
            .add(CertificateDer::from(a.clone()))
            .map_err(|e| format!("trust anchor: {e}"))?;
    }
    Ok(client_builder(provider())?.with_root_certificates(roots))
}

/// [`verifying`], presenting `chain` (leaf first) with `key` (PKCS#8 DER).
pub fn mutual(anchors: &[Vec<u8>], chain: &[Vec<u8>], key: &[u8]) -> Result<ClientConfig, String> {
    let chain = chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let key = PrivateKeyDer::try_from(key.to_vec()).map_err(|e| format!("client key: {e}"))?;
    verifying(anchors)?
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("client certificate: {e}"))
}
