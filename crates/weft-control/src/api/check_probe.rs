//! Gathers one meshed proxy's facts for `GET /v1/check`: `GET /ready` of its admin server (its
//! `Date` header gives its clock), `GET /metrics` (the `identity_*` gauges), and a TLS handshake
//! with its inbound side under its own identity (SNI), whose presented chain says which trust
//! anchor its certificate was issued under. The proxy verifies every certificate it receives
//! against its own anchors before using it, so a chain leading to one of ours also says it
//! trusts that anchor. Each step has [`scrape::TIMEOUT`]; nothing is sent after the handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::{chain_anchor, dns_names, parse_http_date, skew_from_date, ProxyFacts};
use crate::resource::{ExternalWorkload, ADMIN_PORT_NAME, TAP_PORT_NAME};
use crate::telemetry::scrape;

pub(super) async fn proxy(w: ExternalWorkload, anchors: Arc<Vec<Vec<u8>>>) -> ProxyFacts {
    let admin = w.admin_addr();
    let mut facts = ProxyFacts {
        namespace: w.namespace.clone(),
        name: w.name.clone(),
        admin,
        ..ProxyFacts::default()
    };
    let Some(admin) = admin else { return facts };

    // 1. Ready, and its clock.
    let sent = SystemTime::now();
    match scrape::get(admin, "/ready").await {
        Ok(rsp) => {
            let received = SystemTime::now();
            if !rsp.status().is_success() {
                facts.not_ready = Some(format!(
                    "GET http://{admin}/ready answered {}",
                    rsp.status()
                ));
            }
            let date = rsp.headers().get(http::header::DATE);
            if let Some(date) = date.and_then(|d| parse_http_date(d.to_str().ok()?)) {
                let (skew, within) = skew_from_date(date, sent, received);
                facts.clock_skew_secs = Some(skew);
                facts.clock_skew_uncertainty_secs = Some(within);
            }
        }
        Err(e) => facts.not_ready = Some(e.to_string()),
    }

    // 2. Its certificate's expiry and anchors (count and fingerprints), as its metrics say.
    match scrape::metrics(admin).await {
        Ok(text) => {
            let samples = weft_sys::prometheus::parse(&text);
            let gauge = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
            let expiry = gauge("identity_cert_expiration_timestamp_seconds");
            facts.identity = expiry.is_some();
            facts.cert_not_after = expiry.filter(|t| *t > 0.0).map(|t| t as i64);
            facts.trust_anchors = gauge("identity_trust_anchors").map(|n| n as u64);
            let fingerprints: Vec<String> = samples
                .iter()
                .filter(|s| s.name == "identity_trust_anchor_info")
                .filter_map(|s| s.label("fingerprint").map(str::to_string))
                .collect();
            facts.trust_anchor_fingerprints = (!fingerprints.is_empty()).then_some(fingerprints);
        }
        Err(e) => facts.metrics_error = Some(e.to_string()),
    }

    // 3. The chain its inbound side presents for its own identity: on the inbound port when the
    // workload names one, else on its first port (explicit mode: a forward port of the proxy).
    if facts.cert_not_after.is_none() {
        return facts;
    }
    let port = w.inbound_port.or_else(|| {
        (w.ports.iter())
            .find(|p| !matches!(p.name.as_deref(), Some(ADMIN_PORT_NAME | TAP_PORT_NAME)))
            .map(|p| p.port)
    });
    let Some(port) = port else { return facts };
    let addr = SocketAddr::new(w.ip(), port);
    facts.tls_probe = Some(addr);
    let chain = tokio::time::timeout(scrape::TIMEOUT, presented_chain(addr, &w.server_name))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no TLS handshake with {addr} within {:?}",
                scrape::TIMEOUT
            ))
        });
    let verdict = chain.and_then(|chain| {
        let names = chain
            .first()
            .map(|leaf| dns_names(leaf))
            .unwrap_or_default();
        if !names.contains(&w.server_name) {
            return Err(format!(
                "{addr} presented a certificate for {names:?}, not for {}",
                w.server_name
            ));
        }
        chain_anchor(&chain, &anchors)
    });
    match verdict {
        Ok(fp) => facts.chains_to = Some(fp),
        Err(e) => facts.chain_error = Some(e),
    }
    facts
}

/// The certificates `addr` presents to a TLS 1.3 client asking for `server_name`, leaf first.
/// Whatever they are, the handshake completes (they are judged by the caller) and the
/// connection is closed without a byte of application data.
async fn presented_chain(addr: SocketAddr, server_name: &str) -> Result<Vec<Vec<u8>>, String> {
    let provider = crate::tls::provider();
    let config = crate::tls::client_builder(provider.clone())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyChain(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("identity {server_name}: {e}"))?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr} as {server_name}: {e}"))?;
    let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
    Ok(certs.iter().map(|c| c.to_vec()).collect())
}

/// Accepts any chain (the handshake's signatures are still verified): the probe only reads it.
#[derive(Debug)]
struct AnyChain(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyChain {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
