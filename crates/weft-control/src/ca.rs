//! The identity CA: a trust anchor (root) and an issuer (intermediate), ECDSA P-256, and the
//! rules that turn a certificate signing request into a leaf certificate.
//!
//! On disk (`weft identity init --dir DIR`, `weft control --identity-dir DIR`):
//! - `trust-anchors.pem`: one or more anchor certificates (PEM); what proxies trust.
//! - `issuer.crt` / `issuer.key`: the intermediate that signs leaves, and its PKCS#8 key.
//! - `trust-anchor.key`: written by `init` for signing future issuers; the control plane never
//!   reads it (move it offline).
//!
//! Leaves carry the DNS-like identity as their only DNS SAN and the workload's SPIFFE URI
//! (`spiffe://TD/ns/NS/sa/SA`) as URI SAN, are valid for serverAuth and clientAuth, and never
//! outlive the issuer.

use crate::clock::{from_unix, unix};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

pub const TRUST_ANCHORS_FILE: &str = "trust-anchors.pem";
pub const ISSUER_CERT_FILE: &str = "issuer.crt";
pub const ISSUER_KEY_FILE: &str = "issuer.key";
pub const TRUST_ANCHOR_KEY_FILE: &str = "trust-anchor.key";

/// Default leaf lifetime.
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Lifetimes of what `init` creates: anchors are long-lived, issuers are rotated yearly.
const ANCHOR_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const ISSUER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Leaves are backdated a little so a peer whose clock runs slightly behind accepts them.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    // `error` is not a `#[source]`: the message already says it, and chains would repeat it.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("{}: already exists (remove it first; init never overwrites a CA)", .0.display())]
    Exists(PathBuf),
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Why a CSR was refused or a leaf could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    /// The request itself is wrong (gRPC `InvalidArgument`).
    #[error("{0}")]
    InvalidCsr(String),
    /// Signing failed (gRPC `Internal`).
    #[error("signing the certificate: {0}")]
    Sign(#[from] rcgen::Error),
}

/// A leaf issued for a CSR.
#[derive(Clone, Debug)]
pub struct Issued {
    /// DER.
    pub leaf: Vec<u8>,
    /// DER, leaf's issuer first.
    pub intermediates: Vec<Vec<u8>>,
    pub valid_until: SystemTime,
}

/// PEM text of a freshly generated anchor + issuer (what `weft identity init` writes).
pub struct Generated {
    pub anchor_cert_pem: String,
    pub anchor_key_pem: String,
    pub issuer_cert_pem: String,
    pub issuer_key_pem: String,
}

/// What `weft identity status` shows of a certificate.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertInfo {
    /// The subject, e.g. `CN=root.weft.cluster.local`.
    pub subject: String,
    /// `sha256:` + lowercase hex of the DER: how anchors are named everywhere in rotation.
    pub fingerprint: String,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

/// SHA-256 fingerprint of a DER certificate, `sha256:<hex>`.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Subject, fingerprint and expiry of a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, String> {
    let (_, c) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(CertInfo {
        subject: c.subject().to_string(),
        fingerprint: fingerprint(der),
        not_after: c.validity().not_after.timestamp(),
    })
}

/// The subject's common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, c) = X509Certificate::from_der(der).ok()?;
    let cn = c.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// A loaded CA, ready to sign.
pub struct Ca {
    trust_anchors_pem: String,
    anchors: Vec<CertInfo>,
    issuer_info: CertInfo,
    /// Fingerprint of the anchor that signed the issuer: every leaf depends on it.
    issuer_anchor: String,
    issuer_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    issuer_not_after: SystemTime,
    lifetime: Duration,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("issuer_not_after", &self.issuer_not_after)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// `root.<control-ns>.<trust-domain>` and `identity.<control-ns>.<trust-domain>`, as Linkerd names them.
fn ca_names(trust_domain: &str, control_namespace: &str) -> (String, String) {
    (
        format!("root.{control_namespace}.{trust_domain}"),
        format!("identity.{control_namespace}.{trust_domain}"),
    )
}

fn ca_params(common_name: &str, lifetime: Duration, path_len: Option<u8>) -> CertificateParams {
    let now = SystemTime::now();
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = to_offset(now - CLOCK_SKEW_ALLOWANCE);
    p.not_after = to_offset(now + lifetime);
    p.serial_number = Some(random_serial());
    p.use_authority_key_identifier_extension = true;
    p
}

/// Generates a new anchor and an issuer signed by it.
pub fn generate(trust_domain: &str, control_namespace: &str) -> Result<Generated, CaError> {
    let (root_cn, issuer_cn) = ca_names(trust_domain, control_namespace);
    generate_named(&root_cn, &issuer_cn)
}

/// [`generate`] with explicit common names (rotation keeps the names of the CA it replaces).
pub fn generate_named(root_cn: &str, issuer_cn: &str) -> Result<Generated, CaError> {
    let anchor_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let anchor_params = ca_params(root_cn, ANCHOR_LIFETIME, None);
    let anchor_cert = anchor_params.self_signed(&anchor_key)?;
    let issuer_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let issuer_params = ca_params(issuer_cn, ISSUER_LIFETIME, Some(0));
    let anchor = Issuer::from_params(&anchor_params, &anchor_key);
    let issuer_cert = issuer_params.signed_by(&issuer_key, &anchor)?;
    Ok(Generated {
        anchor_cert_pem: anchor_cert.pem(),
        anchor_key_pem: anchor_key.serialize_pem(),
        issuer_cert_pem: issuer_cert.pem(),
        issuer_key_pem: issuer_key.serialize_pem(),
    })
}

/// A new issuer signed by an existing anchor (`anchor_pem` is the anchor bundle; the anchor used
/// is the one `anchor_key_pem` belongs to): what a second cluster linked to the first needs, so
/// both clusters' leaves chain to one trust root. The bundle is kept whole, so a cluster in the
/// middle of a rotation stays trusted. `anchor_key_pem` is returned in `Generated` only so the
/// caller can decide whether to write it (`write_dir` skips an empty key).
pub fn generate_issuer_for(
    anchor_pem: &str,
    anchor_key_pem: &str,
    issuer_cn: &str,
) -> Result<Generated, CaError> {
    let anchor_key = KeyPair::from_pem(anchor_key_pem)?;
    let public = anchor_key.public_key_raw().to_vec();
    let anchors = pem_certificates(anchor_pem.as_bytes()).map_err(|reason| CaError::Invalid {
        path: TRUST_ANCHORS_FILE.into(),
        reason,
    })?;
    let anchor_der = anchors
        .into_iter()
        .find(|der| {
            x509_parser::parse_x509_certificate(der)
                .is_ok_and(|(_, c)| *c.public_key().subject_public_key.data == *public)
        })
        .ok_or_else(|| CaError::Invalid {
            path: TRUST_ANCHORS_FILE.into(),
            reason: "no anchor in the bundle belongs to the anchor key".into(),
        })?;
    let anchor = Issuer::from_ca_cert_der(&anchor_der.into(), anchor_key)?;
    let issuer_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let issuer_cert =
        ca_params(issuer_cn, ISSUER_LIFETIME, Some(0)).signed_by(&issuer_key, &anchor)?;
    Ok(Generated {
        anchor_cert_pem: anchor_pem.to_string(),
        anchor_key_pem: String::new(),
        issuer_cert_pem: issuer_cert.pem(),
        issuer_key_pem: issuer_key.serialize_pem(),
    })
}

/// The issuer's common name for a trust domain and control namespace (`identity.<ns>.<td>`).
pub fn issuer_name(trust_domain: &str, control_namespace: &str) -> String {
    ca_names(trust_domain, control_namespace).1
}

/// Writes a generated CA into `dir` (created if missing). An empty anchor key (a CA whose
/// anchor lives elsewhere: [`generate_issuer_for`]) is not written. Refuses to overwrite any file.
/// Keys are written with mode 0600.
pub fn write_dir(dir: &Path, g: &Generated) -> Result<(), CaError> {
    std::fs::create_dir_all(dir).map_err(|error| CaError::Io {
        path: dir.to_path_buf(),
        error,
    })?;
    let files = [
        (TRUST_ANCHORS_FILE, &g.anchor_cert_pem, false),
        (ISSUER_CERT_FILE, &g.issuer_cert_pem, false),
        (ISSUER_KEY_FILE, &g.issuer_key_pem, true),
        (TRUST_ANCHOR_KEY_FILE, &g.anchor_key_pem, true),
    ];
    let files: Vec<_> = files
        .into_iter()
        .filter(|(_, t, _)| !t.is_empty())
        .collect();
    for (name, _, _) in &files {
        let path = dir.join(name);
        if path.exists() {
            return Err(CaError::Exists(path));
        }
    }
    for (name, text, secret) in files {
        let path = dir.join(name);
        write_new(&path, text.as_bytes(), secret).map_err(|error| CaError::Io { path, error })?;
    }
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)?;
    f.write_all(bytes)
}

impl Ca {
    /// Loads `trust-anchors.pem`, `issuer.crt` and `issuer.key` from `dir` and checks that the
    /// issuer is a CA signed by one of the anchors, is currently valid, and matches its key.
    pub fn load(dir: &Path, lifetime: Duration) -> Result<Ca, CaError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map(|text| (path.clone(), text))
                .map_err(|error| CaError::Io { path, error })
        };
        let (anchors_path, anchors_pem) = read(TRUST_ANCHORS_FILE)?;
        let (issuer_path, issuer_pem) = read(ISSUER_CERT_FILE)?;
        let (key_path, key_pem) = read(ISSUER_KEY_FILE)?;
        Self::from_pem(
            (&anchors_path, anchors_pem),
            (&issuer_path, &issuer_pem),
            (&key_path, &key_pem),
            lifetime,
        )
    }

    /// [`Ca::load`] from texts already read; each comes with the path its errors name.
    pub fn from_pem(
        (anchors_path, anchors_pem): (&Path, String),
        (issuer_path, issuer_pem): (&Path, &str),
        (key_path, key_pem): (&Path, &str),
        lifetime: Duration,
    ) -> Result<Ca, CaError> {
        let invalid = |path: &Path, reason: String| CaError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let anchors =
            pem_certificates(anchors_pem.as_bytes()).map_err(|e| invalid(anchors_path, e))?;
        if anchors.is_empty() {
            return Err(invalid(anchors_path, "no CERTIFICATE block".into()));
        }
        let issuer_der = pem_certificates(issuer_pem.as_bytes())
            .map_err(|e| invalid(issuer_path, e))?
            .into_iter()
            .next()
            .ok_or_else(|| invalid(issuer_path, "no CERTIFICATE block".into()))?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| invalid(key_path, format!("not a PKCS#8 private key: {e}")))?;
        Self::from_parts(anchors_pem, &anchors, issuer_der, key, lifetime)
            .map_err(|reason| invalid(issuer_path, reason))
    }

    /// A CA that lives only in memory (no `--identity-dir`): fine for demos and tests, but every
    /// proxy must get the anchors from this process (`Running::trust_anchors_pem`).
    pub fn ephemeral(
        trust_domain: &str,
        control_namespace: &str,
        lifetime: Duration,
    ) -> Result<Ca, CaError> {
        let g = generate(trust_domain, control_namespace)?;
        let anchors =
            pem_certificates(g.anchor_cert_pem.as_bytes()).map_err(|reason| CaError::Invalid {
                path: "<generated>".into(),
                reason,
            })?;
        let issuer_der = pem_certificates(g.issuer_cert_pem.as_bytes())
            .ok()
            .and_then(|v| v.into_iter().next())
            .unwrap_or_default();
        let key = KeyPair::from_pem(&g.issuer_key_pem)?;
        Self::from_parts(g.anchor_cert_pem, &anchors, issuer_der, key, lifetime).map_err(|reason| {
            CaError::Invalid {
                path: "<generated>".into(),
                reason,
            }
        })
    }

    fn from_parts(
        trust_anchors_pem: String,
        anchors: &[Vec<u8>],
        issuer_der: Vec<u8>,
        key: KeyPair,
        lifetime: Duration,
    ) -> Result<Ca, String> {
        let (_, cert) = X509Certificate::from_der(&issuer_der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        if !cert.is_ca() {
            return Err("the issuer certificate is not a CA (basicConstraints CA:TRUE)".into());
        }
        let signed_by = anchors.iter().find(|a| {
            X509Certificate::from_der(a)
                .map(|(_, anchor)| cert.verify_signature(Some(anchor.public_key())).is_ok())
                .unwrap_or(false)
        });
        let Some(issuer_anchor) = signed_by.map(|a| fingerprint(a)) else {
            return Err(format!(
                "the issuer is not signed by any certificate in {TRUST_ANCHORS_FILE}"
            ));
        };
        let anchor_infos = anchors
            .iter()
            .map(|a| cert_info(a))
            .collect::<Result<Vec<_>, _>>()?;
        let issuer_info = cert_info(&issuer_der)?;
        let not_after = from_unix(cert.validity().not_after.timestamp());
        if !cert.validity().is_valid() {
            return Err(format!(
                "the issuer certificate is not valid now (valid {} to {})",
                cert.validity().not_before,
                cert.validity().not_after
            ));
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(format!(
                "{ISSUER_KEY_FILE} is not the key of this issuer certificate"
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&issuer_der.clone().into(), key)
            .map_err(|e| format!("cannot use the issuer certificate: {e}"))?;
        Ok(Ca {
            trust_anchors_pem,
            anchors: anchor_infos,
            issuer_info,
            issuer_anchor,
            issuer_der,
            issuer,
            issuer_not_after: not_after,
            lifetime,
        })
    }

    /// The PEM bundle proxies must trust.
    pub fn trust_anchors_pem(&self) -> &str {
        &self.trust_anchors_pem
    }

    pub fn issuer_not_after(&self) -> SystemTime {
        self.issuer_not_after
    }

    /// The anchors of the bundle, in file order.
    pub fn anchors(&self) -> &[CertInfo] {
        &self.anchors
    }

    /// The issuer that signs leaves.
    pub fn issuer(&self) -> &CertInfo {
        &self.issuer_info
    }

    /// The issuer certificate, DER (what `weft check` verifies against the anchors).
    pub fn issuer_der(&self) -> &[u8] {
        &self.issuer_der
    }

    /// Fingerprint of the anchor every leaf issued now chains to.
    pub fn issuer_anchor(&self) -> &str {
        &self.issuer_anchor
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Checks a CSR (DER or PEM) for `identity` and signs a leaf for it. `spiffe` is the URI SAN
    /// to add (the workload's `meshTLS.identity`), if any.
    pub fn certify(
        &self,
        csr: &[u8],
        identity: &str,
        spiffe: Option<&str>,
        now: SystemTime,
    ) -> Result<Issued, CertifyError> {
        let public_key = check_csr(csr, identity)?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity);
        p.distinguished_name = dn;
        let dns = identity
            .try_into()
            .map_err(|_| CertifyError::InvalidCsr(format!("identity {identity:?} is not ASCII")))?;
        p.subject_alt_names = vec![SanType::DnsName(dns)];
        if let Some(uri) = spiffe.and_then(|u| u.try_into().ok()) {
            p.subject_alt_names.push(SanType::URI(uri));
        }
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(random_serial());
        let valid_until = (now + self.lifetime).min(self.issuer_not_after);
        p.not_before = to_offset(now - CLOCK_SKEW_ALLOWANCE);
        p.not_after = to_offset(valid_until);
        let leaf = p.signed_by(&public_key, &self.issuer)?;
        Ok(Issued {
            leaf: leaf.der().to_vec(),
            intermediates: vec![self.issuer_der.clone()],
            // Whole seconds, as encoded in the certificate.
            valid_until: from_unix(unix(valid_until)),
        })
    }
}

/// The largest CSR accepted: a P-256 request is about 300 bytes; anything near this is not one.
pub const MAX_CSR: usize = 16 * 1024;

/// The Certify CSR rules: at most [`MAX_CSR`] bytes, parses (DER, or PEM "CERTIFICATE
/// REQUEST"), a supported key ([`supported_key`]), checks the signature, and requires exactly one
/// DNS SAN equal to `identity` and no IP, URI, email or other SANs. Returns the public key to
/// certify.
pub fn check_csr(csr: &[u8], identity: &str) -> Result<rcgen::SubjectPublicKeyInfo, CertifyError> {
    use x509_parser::certification_request::X509CertificationRequest;
    let bad = |m: String| CertifyError::InvalidCsr(m);
    if csr.len() > MAX_CSR {
        return Err(bad(format!(
            "CSR is {} bytes; at most {MAX_CSR} are accepted",
            csr.len()
        )));
    }
    let der = if csr.trim_ascii_start().starts_with(b"-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(csr)
            .map_err(|e| bad(format!("malformed CSR: invalid PEM: {e}")))?;
        if pem.label != "CERTIFICATE REQUEST" && pem.label != "NEW CERTIFICATE REQUEST" {
            return Err(bad(format!(
                "malformed CSR: PEM block is {:?}, expected CERTIFICATE REQUEST",
                pem.label
            )));
        }
        pem.contents
    } else {
        csr.to_vec()
    };
    let (rest, req) =
        X509CertificationRequest::from_der(&der).map_err(|e| bad(format!("malformed CSR: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("malformed CSR: trailing bytes after the request".into()));
    }
    supported_key(&req.certification_request_info.subject_pki)?;
    req.verify_signature()
        .map_err(|e| bad(format!("CSR signature does not verify: {e}")))?;
    let mut dns = Vec::new();
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => dns.push(d.to_string()),
                    GeneralName::IPAddress(_) => {
                        return Err(bad("CSR must not carry IP address SANs".into()))
                    }
                    GeneralName::URI(u) => {
                        return Err(bad(format!("CSR must not carry URI SANs (got {u:?})")))
                    }
                    GeneralName::RFC822Name(_) => {
                        return Err(bad("CSR must not carry email SANs".into()))
                    }
                    other => {
                        return Err(bad(format!(
                            "CSR must carry only a DNS SAN (got {other:?})"
                        )))
                    }
                }
            }
        }
    }
    match dns.as_slice() {
        [one] if one.eq_ignore_ascii_case(identity) => {}
        [] => {
            return Err(bad(format!(
                "CSR has no DNS SAN; expected exactly one: {identity:?}"
            )))
        }
        [one] => {
            return Err(bad(format!(
                "CSR DNS SAN {one:?} does not match the requested identity {identity:?}"
            )))
        }
        many => {
            return Err(bad(format!(
                "CSR has {} DNS SANs; expected exactly one: {identity:?}",
                many.len()
            )))
        }
    }
    rcgen::SubjectPublicKeyInfo::from_der(req.certification_request_info.subject_pki.raw)
        .map_err(|e| bad(format!("unsupported CSR public key: {e}")))
}

/// The keys a leaf may certify: ECDSA on P-256 (what proxies make) or P-384, and Ed25519 — what
/// the mesh's TLS verifies. RSA and anything else is refused by name before its signature is
/// checked.
fn supported_key(spki: &x509_parser::x509::SubjectPublicKeyInfo) -> Result<(), CertifyError> {
    use x509_parser::oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
        OID_SIG_ED25519,
    };
    let alg = &spki.algorithm;
    if alg.algorithm == OID_SIG_ED25519 {
        return Ok(());
    }
    let key = if alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = alg.parameters.as_ref().and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 || c == OID_NIST_EC_P384 => return Ok(()),
            Some(c) => format!("ECDSA on curve {}", c.to_id_string()),
            None => "ECDSA without a named curve".to_string(),
        }
    } else if alg.algorithm == OID_PKCS1_RSAENCRYPTION {
        "RSA".to_string()
    } else {
        format!("algorithm {}", alg.algorithm.to_id_string())
    };
    Err(CertifyError::InvalidCsr(format!(
        "unsupported CSR public key: {key}; expected ECDSA (P-256 or P-384) or Ed25519"
    )))
}

/// Every CERTIFICATE block of a PEM text, as DER. Other blocks are an error (a key in the
/// anchors file is a mistake worth reporting).
pub fn pem_certificates(text: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(text) {
        let pem = pem.map_err(|e| format!("invalid PEM: {e}"))?;
        if pem.label != "CERTIFICATE" {
            return Err(format!(
                "unexpected PEM block {:?} (only CERTIFICATE is allowed)",
                pem.label
            ));
        }
        X509Certificate::from_der(&pem.contents)
            .map_err(|e| format!("a CERTIFICATE block is not an X.509 certificate: {e}"))?;
        out.push(pem.contents);
    }
    Ok(out)
}

/// 16 random bytes with the top bit cleared (serials must be positive).
fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    fill_random(&mut b);
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

/// Cryptographically secure random bytes (ring's system RNG).
pub fn fill_random(buf: &mut [u8]) {
    use ring::rand::SecureRandom as _;
    // The system RNG failing means the OS cannot give randomness at all; nothing safe remains.
    ring::rand::SystemRandom::new()
        .fill(buf)
        .expect("the system random number generator failed");
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix(t)).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
#[path = "ca_tests.rs"]
mod tests;
