//! The control plane's own identities: certificates it issues itself from the mesh CA, with the
//! key in memory, renewed before they expire or when the CA changes. The tap client presents
//! one ([`crate::tap`]); the gRPC server presents another to the proxies ([`crate::grpc::tls`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use tokio::sync::watch;

use crate::ca::Ca;

/// A control-plane identity's current certificate.
pub struct OwnCert {
    /// DER, leaf first, then the issuer.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 DER; never written anywhere.
    pub key: Vec<u8>,
    pub valid_until: SystemTime,
}

impl std::fmt::Debug for OwnCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnCert")
            .field("valid_until", &self.valid_until)
            .finish_non_exhaustive()
    }
}

/// A control-plane identity and its certificate as renewed by [`start`].
#[derive(Clone)]
pub struct OwnIdentity {
    pub name: String,
    cert: watch::Receiver<Option<Arc<OwnCert>>>,
}

impl OwnIdentity {
    /// The certificate in force, if one could be issued.
    pub fn cert(&self) -> Option<Arc<OwnCert>> {
        self.cert.borrow().clone()
    }

    /// Follows the certificate as it is renewed.
    pub fn watch(&self) -> watch::Receiver<Option<Arc<OwnCert>>> {
        self.cert.clone()
    }
}

/// Issues a leaf for `identity` from `ca` to a fresh P-256 key.
pub fn issue(ca: &Ca, identity: &str, spiffe: &str, now: SystemTime) -> Result<OwnCert, String> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, identity);
    p.distinguished_name = dn;
    let dns = identity
        .try_into()
        .map_err(|e: rcgen::Error| e.to_string())?;
    p.subject_alt_names = vec![SanType::DnsName(dns)];
    let csr = p.serialize_request(&key).map_err(|e| e.to_string())?;
    let issued = ca
        .certify(csr.der(), identity, Some(spiffe), now)
        .map_err(|e| e.to_string())?;
    let mut chain = vec![issued.leaf];
    chain.extend(issued.intermediates);
    Ok(OwnCert {
        chain,
        key: key.serialize_der(),
        valid_until: issued.valid_until,
    })
}

/// When a certificate issued at `issued` and valid until `until` is renewed: at 70 % of its
/// life, as proxies renew theirs, and never sooner than a second from now.
pub fn renew_after(issued: SystemTime, until: SystemTime) -> Duration {
    let life = until.duration_since(issued).unwrap_or_default();
    life.mul_f64(0.7).max(Duration::from_secs(1))
}

/// Issues the first certificate for `name` (DNS SAN; `spiffe`: its URI SAN) now and returns the
/// identity with the task that renews it (before expiry, and whenever the CA in force changes)
/// until `shutdown` changes. `what` names it in the log.
pub fn start(
    name: String,
    spiffe: String,
    what: &'static str,
    mut ca: watch::Receiver<Arc<Ca>>,
    mut shutdown: watch::Receiver<bool>,
) -> (OwnIdentity, impl std::future::Future<Output = ()>) {
    let issue_now = {
        let (name, spiffe) = (name.clone(), spiffe.clone());
        move |ca: &Ca| {
            let now = SystemTime::now();
            match issue(ca, &name, &spiffe, now) {
                Ok(c) => {
                    tracing::debug!(identity = %name, "{what}: certificate issued");
                    (Some(Arc::new(c)), now)
                }
                Err(e) => {
                    tracing::warn!(identity = %name, "{what}: cannot issue a certificate: {e}");
                    (None, now)
                }
            }
        }
    };
    let (first, mut issued_at) = issue_now(&ca.borrow_and_update());
    let mut until = first.as_ref().map(|c| c.valid_until);
    let (tx, rx) = watch::channel(first);
    let task = async move {
        // Without an identity directory the CA's sender is gone: only expiry renews.
        let mut ca_open = true;
        loop {
            let wait = match until {
                Some(u) => renew_after(issued_at, u),
                // Nothing could be issued: try again shortly.
                None => Duration::from_secs(5),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = ca.changed(), if ca_open => if changed.is_err() {
                    ca_open = false;
                    continue;
                },
                _ = shutdown.changed() => return,
            }
            let (cert, at) = issue_now(&ca.borrow_and_update());
            issued_at = at;
            until = cert.as_ref().map(|c| c.valid_until);
            if cert.is_some() {
                tx.send_replace(cert);
            }
        }
    };
    (OwnIdentity { name, cert: rx }, task)
}
