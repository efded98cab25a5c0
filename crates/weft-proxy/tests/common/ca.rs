//! A test CA for proxies with identity: an rcgen anchor that signs leaves, and a scripted
//! `Identity.Certify` that signs a proxy's CSR when it presents the expected token.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use linkerd2_proxy_api::identity::{identity_server::Identity, CertifyRequest, CertifyResponse};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The test CA: signs the proxy's CSR (through `Certify`) and the tap clients' certificates.
pub struct Ca {
    pub issuer: Issuer<'static, KeyPair>,
    pub anchor_pem: String,
    pub anchor_der: CertificateDer<'static>,
}

impl Ca {
    pub fn new() -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "root.weft.cluster.local");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let anchor = p.self_signed(&key).unwrap();
        Ca {
            anchor_pem: anchor.pem(),
            anchor_der: anchor.der().clone(),
            issuer: Issuer::new(p, key),
        }
    }

    pub fn leaf_params(name: &str) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::DnsName(name.try_into().unwrap())];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(1);
        p.not_after = now + time::Duration::hours(1);
        p
    }

    /// A client certificate and key for `name`.
    pub fn client(&self, name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let cert = Ca::leaf_params(name).signed_by(&key, &self.issuer).unwrap();
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }
}

/// `Identity.Certify` signing with [`Ca`] for the one token it was given.
pub struct Certifier {
    ca: Arc<Ca>,
    token: String,
}

impl Certifier {
    pub fn new(ca: Arc<Ca>, token: &str) -> Certifier {
        Certifier {
            ca,
            token: token.into(),
        }
    }
}

#[tonic::async_trait]
impl Identity for Certifier {
    async fn certify(
        &self,
        req: tonic::Request<CertifyRequest>,
    ) -> Result<tonic::Response<CertifyResponse>, tonic::Status> {
        let req = req.into_inner();
        if req.token.trim_ascii() != self.token.as_bytes() {
            return Err(tonic::Status::unauthenticated("bad token"));
        }
        let csr =
            CertificateSigningRequestParams::from_der(&req.certificate_signing_request.into())
                .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let leaf = Ca::leaf_params(&req.identity)
            .signed_by(&csr.public_key, &self.ca.issuer)
            .unwrap();
        Ok(tonic::Response::new(CertifyResponse {
            leaf_certificate: leaf.der().to_vec(),
            intermediate_certificates: vec![],
            valid_until: Some(prost_types::Timestamp::from(
                SystemTime::now() + Duration::from_secs(3600),
            )),
        }))
    }
}
