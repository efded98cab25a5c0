//! Tap: the control plane's side of Linkerd's `Tap/Observe` API. It owns the tap identity's
//! certificate (issued by this control plane's own CA at start, key in memory, renewed before it
//! expires or when the CA changes), the client that dials a workload's tap server with it
//! ([`client`]), and the translation between `GET /v1/tap/...` and the proxy's messages
//! ([`event`]: the query, the `ObserveRequest`, the NDJSON events, the `max_rps` limiter).

pub mod client;
pub mod event;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use tokio::sync::watch;

use crate::ca::Ca;
use crate::resource::{self, Defaults};

/// The tap identity's current certificate.
pub struct TapCert {
    /// DER, leaf first, then the issuer.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 DER; never written anywhere.
    pub key: Vec<u8>,
    pub valid_until: SystemTime,
}

impl std::fmt::Debug for TapCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapCert")
            .field("valid_until", &self.valid_until)
            .finish_non_exhaustive()
    }
}

/// The tap identity and its certificate as renewed by [`run`].
#[derive(Clone)]
pub struct TapIdentity {
    pub name: String,
    cert: watch::Receiver<Option<Arc<TapCert>>>,
}

impl TapIdentity {
    /// The certificate in force, if one could be issued.
    pub fn cert(&self) -> Option<Arc<TapCert>> {
        self.cert.borrow().clone()
    }
}

/// Issues a leaf for `identity` from `ca` to a fresh P-256 key.
pub fn issue(ca: &Ca, identity: &str, spiffe: &str, now: SystemTime) -> Result<TapCert, String> {
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
    Ok(TapCert {
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

/// Issues the first certificate now and returns the identity with the task that renews it
/// (before expiry, and whenever the CA in force changes) until `shutdown` changes.
pub fn start(
    defaults: &Defaults,
    mut ca: watch::Receiver<Arc<Ca>>,
    mut shutdown: watch::Receiver<bool>,
) -> (TapIdentity, impl std::future::Future<Output = ()>) {
    let name = resource::tap_identity(defaults);
    let spiffe = format!(
        "spiffe://{}/ns/{}/sa/tap",
        defaults.trust_domain, defaults.control_namespace
    );
    let issue_now = {
        let (name, spiffe) = (name.clone(), spiffe.clone());
        move |ca: &Ca| {
            let now = SystemTime::now();
            match issue(ca, &name, &spiffe, now) {
                Ok(c) => {
                    tracing::debug!(identity = %name, "tap: certificate issued");
                    (Some(Arc::new(c)), now)
                }
                Err(e) => {
                    tracing::warn!(identity = %name, "tap: cannot issue a certificate: {e}");
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
    (TapIdentity { name, cert: rx }, task)
}

#[cfg(test)]
#[path = "tap_tests.rs"]
mod tests;
