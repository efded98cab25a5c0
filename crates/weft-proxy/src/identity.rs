//! This proxy's identity: its private key, its certificate, and the task that keeps the
//! certificate fresh through `Identity.Certify`.
//!
//! At start the proxy generates an ECDSA P-256 key in memory (it is never written anywhere nor
//! sent) and one CSR for `WEFT_PROXY_IDENTITY_LOCAL_NAME`. A background task then:
//! certify → publish the certificate on a watch channel → sleep until ~70% of its lifetime
//! (clamped to `MIN_REFRESH..=MAX_REFRESH`, never past 90%) → certify again. A failed attempt
//! is retried with exponential backoff (`CONTROL_BACKOFF_MIN` doubling to `_MAX`, with jitter)
//! while the current certificate stays in use, so an unreachable CA does not stop traffic until
//! the certificate actually expires. Every received certificate is checked before use: it must
//! be for our key, chain to the trust anchors and carry exactly our identity.
//!
//! With `WEFT_PROXY_IDENTITY_TRUST_ANCHORS_FILE`, the file is read again every
//! [`TRUST_ANCHORS_POLL_INTERVAL`]: new anchors (a trust-anchor rotation distributing old + new,
//! then only new) are published with the current certificate, so the data path builds new TLS
//! configurations for new handshakes while established connections carry on. A file that does not
//! parse keeps the anchors in force (an error log and `identity_trust_anchors_reload_total
//! {result="failure"}`, once per bad content). If the current certificate no longer chains to the
//! new anchors, it is renewed at once.
//!
//! Without any identity variable the proxy has no [`Identity`] at all (transitional mode).
//! The data path builds its rustls configs from [`Identity::current`] with [`tls`].

pub mod tls;

use std::{
    future::Future,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use linkerd2_proxy_api::identity::{
    identity_client::IdentityClient, CertifyRequest, CertifyResponse,
};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer},
    sign::CertifiedKey,
    RootCertStore,
};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::backoff::Backoff;
use crate::metrics::Metrics;

pub use crate::config::IdentityConfig;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("reading the token file {}: {source}", path.display())]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Identity.Certify failed: {}: {}", .0.code(), .0.message())]
    Certify(tonic::Status),
    #[error("the control plane returned an unusable certificate: {0}")]
    BadCertificate(String),
    #[error("creating the key or the CSR: {0}")]
    Csr(#[from] rcgen::Error),
    #[error("loading the private key: {0}")]
    Key(rustls::Error),
    #[error("invalid trust anchors: {0}")]
    TrustAnchors(String),
    #[error("invalid identity service address {0:?}")]
    Address(String),
}

/// How often `WEFT_PROXY_IDENTITY_TRUST_ANCHORS_FILE` is read again for new anchors.
pub const TRUST_ANCHORS_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// A changed anchors file is read a second time after this pause and used only if both reads
/// agree, so a file written in place (not renamed) is not taken half-written.
const TRUST_ANCHORS_SETTLE: Duration = Duration::from_millis(100);

/// A certificate this proxy holds, with what is needed to build TLS configs from it.
#[derive(Debug)]
pub struct Certified {
    /// Our DNS-like identity (the certificate's only DNS SAN).
    pub name: String,
    /// Leaf + intermediates and the in-memory private key.
    pub key: Arc<CertifiedKey>,
    /// The trust anchors peers must chain to.
    pub roots: Arc<RootCertStore>,
    /// When the leaf expires.
    pub valid_until: SystemTime,
}

/// Something that answers `Identity.Certify` (the gRPC client; a fake in tests).
pub trait Certifier: Send + 'static {
    fn certify(
        &mut self,
        req: CertifyRequest,
    ) -> impl Future<Output = Result<CertifyResponse, tonic::Status>> + Send;
}

impl Certifier for IdentityClient<Channel> {
    async fn certify(&mut self, req: CertifyRequest) -> Result<CertifyResponse, tonic::Status> {
        IdentityClient::<Channel>::certify(self, req)
            .await
            .map(|r| r.into_inner())
    }
}

/// Handle to the identity task. Cheap to clone; the task stops when the last clone drops.
#[derive(Clone)]
pub struct Identity {
    name: String,
    current: watch::Receiver<Option<Arc<Certified>>>,
    /// The anchors in force (for TLS to the control plane).
    roots: watch::Receiver<Arc<RootCertStore>>,
    _task: Arc<AbortOnDrop>,
    _anchors_task: Option<Arc<AbortOnDrop>>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// When to certify again.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub min_refresh: Duration,
    pub max_refresh: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// What the renewal task needs, fixed for the process's life.
struct Local {
    name: String,
    csr: Vec<u8>,
    key: Arc<dyn rustls::sign::SigningKey>,
    /// The anchors in force (changed by the anchors-file watcher).
    roots: watch::Receiver<Arc<RootCertStore>>,
    token_file: PathBuf,
}

/// An identity set up but not yet renewing: what the control-plane connection of
/// `Identity.Certify` itself needs (the anchors and the certificate to come) exists first.
struct Parts {
    local: Local,
    tx: watch::Sender<Option<Arc<Certified>>>,
    current: watch::Receiver<Option<Arc<Certified>>>,
    anchors_task: Option<Arc<AbortOnDrop>>,
}

impl Parts {
    fn new(cfg: &IdentityConfig, metrics: &Metrics) -> Result<Parts, IdentityError> {
        let roots = Arc::new(
            tls::roots_from_pem(cfg.trust_anchors_pem.as_bytes())
                .map_err(|e| IdentityError::TrustAnchors(e.to_string()))?,
        );
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names =
            vec![rcgen::SanType::DnsName(cfg.local_name.as_str().try_into()?)];
        let csr = params.serialize_request(&key)?.der().to_vec();
        let signing_key = tls::provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key.serialize_der().into()))
            .map_err(IdentityError::Key)?;
        drop(key);
        metrics.identity_enabled();
        metrics.identity_trust_anchors(&tls::pem_fingerprints(cfg.trust_anchors_pem.as_bytes()));
        let (roots_tx, roots_rx) = watch::channel(roots);
        let anchors_task = cfg.trust_anchors_file.clone().map(|path| {
            let initial = cfg.trust_anchors_pem.clone().into_bytes();
            let task = tokio::spawn(watch_anchors(path, initial, roots_tx, metrics.clone()));
            Arc::new(AbortOnDrop(task))
        });
        let (tx, current) = watch::channel(None);
        Ok(Parts {
            local: Local {
                name: cfg.local_name.clone(),
                csr,
                key: signing_key,
                roots: roots_rx,
                token_file: cfg.token_file.clone(),
            },
            tx,
            current,
            anchors_task,
        })
    }

    /// TLS for `Identity.Certify`: the first call has no certificate to present yet.
    fn control_tls(&self, name: &str) -> crate::control::ControlTls {
        crate::control::ControlTls {
            name: name.to_string(),
            roots: self.local.roots.clone(),
            cert: self.current.clone(),
            mutual_only: false,
        }
    }

    fn spawn<C: Certifier>(self, schedule: Schedule, metrics: Metrics, certifier: C) -> Identity {
        let name = self.local.name.clone();
        let roots = self.local.roots.clone();
        let task = tokio::spawn(renew(certifier, self.local, self.tx, metrics, schedule));
        Identity {
            name,
            current: self.current,
            roots,
            _task: Arc::new(AbortOnDrop(task)),
            _anchors_task: self.anchors_task,
        }
    }
}

impl Identity {
    /// Generates the key and CSR and starts renewing against the configured control plane
    /// (over TLS as the control plane's identity when `WEFT_PROXY_IDENTITY_SVC_NAME` names it:
    /// the connection follows this identity's own anchors and, once it has one, certificate).
    /// Call inside a Tokio runtime.
    pub fn start(
        cfg: &IdentityConfig,
        backoff: (Duration, Duration),
        metrics: Metrics,
    ) -> Result<Identity, IdentityError> {
        let parts = Parts::new(cfg, &metrics)?;
        let tls = cfg.svc_name.as_ref().map(|name| parts.control_tls(name));
        let endpoint = crate::control::endpoint(&cfg.svc_addr, tls, backoff.1)
            .map_err(|_| IdentityError::Address(cfg.svc_addr.clone()))?
            .request_timeout(Duration::from_secs(10));
        let client = IdentityClient::new(endpoint.connect_lazy());
        let schedule = Schedule {
            min_refresh: cfg.min_refresh,
            max_refresh: cfg.max_refresh,
            backoff_min: backoff.0,
            backoff_max: backoff.1,
        };
        Ok(parts.spawn(schedule, metrics, client))
    }

    /// [`Identity::start`] with any [`Certifier`] (tests use an in-memory CA).
    pub fn start_with<C: Certifier>(
        cfg: &IdentityConfig,
        schedule: Schedule,
        metrics: Metrics,
        certifier: C,
    ) -> Result<Identity, IdentityError> {
        Ok(Parts::new(cfg, &metrics)?.spawn(schedule, metrics, certifier))
    }

    /// Mutual TLS towards a control-plane service that must prove `name`, following this
    /// identity's anchors and certificate (connections wait for the first certificate).
    pub fn control_tls(&self, name: &str) -> crate::control::ControlTls {
        crate::control::ControlTls {
            name: name.to_string(),
            roots: self.roots.clone(),
            cert: self.current.clone(),
            mutual_only: true,
        }
    }

    /// The DNS-like identity this proxy serves.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True once the first certificate arrived (it stays true: an expired certificate is
    /// still reported by the metrics, and peers refuse it with a precise error).
    pub fn is_ready(&self) -> bool {
        self.current.borrow().is_some()
    }

    /// The current certificate, if any.
    pub fn current(&self) -> Option<Arc<Certified>> {
        self.current.borrow().clone()
    }

    /// Follows certificate changes (the data path rebuilds its TLS configs on each).
    pub fn watch(&self) -> watch::Receiver<Option<Arc<Certified>>> {
        self.current.clone()
    }

    /// The current certificate, waiting for the first one until `deadline`: the data path
    /// waits rather than fall back to plaintext (outbound) or close a peer's handshake (inbound).
    pub async fn certificate_by(&self, deadline: tokio::time::Instant) -> Option<Arc<Certified>> {
        if let Some(cert) = self.current() {
            return Some(cert);
        }
        let mut rx = self.current.clone();
        let first = async {
            rx.wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|c| c.clone())
        };
        tokio::time::timeout_at(deadline, first)
            .await
            .ok()
            .flatten()
    }

    /// Resolves once the first certificate arrived.
    pub async fn wait_ready(&self) {
        let mut rx = self.current.clone();
        let _ = rx.wait_for(Option::is_some).await;
    }
}

/// How long to wait before renewing a certificate that has `remaining` life left: 70% of it,
/// clamped to `min..=max`, but never past 90% of it (an expired certificate is an outage, so
/// `min` does not win over that).
pub fn refresh_delay(remaining: Duration, min: Duration, max: Duration) -> Duration {
    remaining
        .mul_f64(0.7)
        .clamp(min, max.max(min))
        .min(remaining.mul_f64(0.9))
}

/// Follows the anchors file: every [`TRUST_ANCHORS_POLL_INTERVAL`], a content that differs from
/// the anchors in force, reads the same twice and parses is published on `tx`. Runs until aborted.
async fn watch_anchors(
    path: PathBuf,
    mut in_force: Vec<u8>,
    tx: watch::Sender<Arc<RootCertStore>>,
    metrics: Metrics,
) {
    // The last bad content (or read error) reported, so a bad file is logged and counted once.
    let mut reported: Option<Vec<u8>> = None;
    loop {
        tokio::time::sleep(TRUST_ANCHORS_POLL_INTERVAL).await;
        let bytes = match std::fs::read(&path) {
            Ok(b) if b == in_force => {
                reported = None;
                continue;
            }
            Ok(b) => b,
            Err(e) => {
                let key = format!("read error: {}", e.kind()).into_bytes();
                if reported.as_ref() != Some(&key) {
                    tracing::error!(path = %path.display(), error = %e, "cannot read the trust anchors file; keeping the current anchors");
                    metrics.identity_trust_anchors_reload(false);
                    reported = Some(key);
                }
                continue;
            }
        };
        tokio::time::sleep(TRUST_ANCHORS_SETTLE).await;
        if std::fs::read(&path).ok().as_ref() != Some(&bytes) {
            continue; // still being written: the next poll sees the final content
        }
        match tls::roots_from_pem(&bytes) {
            Ok(roots) => {
                tracing::info!(path = %path.display(), anchors = roots.len(), "trust anchors reloaded");
                metrics.identity_trust_anchors_reload(true);
                metrics.identity_trust_anchors(&tls::pem_fingerprints(&bytes));
                tx.send_replace(Arc::new(roots));
                in_force = bytes;
                reported = None;
            }
            Err(e) => {
                if reported.as_ref() != Some(&bytes) {
                    tracing::error!(path = %path.display(), error = %e, "the trust anchors file is invalid; keeping the current anchors");
                    metrics.identity_trust_anchors_reload(false);
                    reported = Some(bytes);
                }
            }
        }
    }
}

/// New anchors arrived: the current certificate (if any) is published again with them, so new
/// handshakes verify peers against the new set. Returns false when the current certificate does
/// not chain to the new anchors (it must be renewed now).
fn apply_roots(
    tx: &watch::Sender<Option<Arc<Certified>>>,
    local: &Local,
    roots: Arc<RootCertStore>,
) -> bool {
    let Some(current) = tx.borrow().clone() else {
        return true;
    };
    let chains = tls::verify_identity(
        &roots,
        &current.key.cert[0],
        &current.key.cert[1..],
        &local.name,
        rustls::pki_types::UnixTime::now(),
    );
    tx.send_replace(Some(Arc::new(Certified {
        name: current.name.clone(),
        key: current.key.clone(),
        roots,
        valid_until: current.valid_until,
    })));
    match chains {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "the current certificate does not chain to the new trust anchors; renewing now");
            false
        }
    }
}

/// The renewal task: runs until aborted.
async fn renew<C: Certifier>(
    mut certifier: C,
    mut local: Local,
    tx: watch::Sender<Option<Arc<Certified>>>,
    metrics: Metrics,
    schedule: Schedule,
) {
    let mut backoff = Backoff::new(schedule.backoff_min, schedule.backoff_max);
    loop {
        let delay = match certify_once(&mut certifier, &local).await {
            Ok(certified) => {
                backoff.reset();
                let remaining = certified
                    .valid_until
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                let delay = refresh_delay(remaining, schedule.min_refresh, schedule.max_refresh);
                metrics.identity_refreshed(unix(certified.valid_until));
                tracing::info!(identity = %local.name, valid_until = %rfc3339(certified.valid_until), refresh_in_s = delay.as_secs(), "certificate obtained");
                tx.send_replace(Some(Arc::new(certified)));
                delay
            }
            Err(error) => {
                metrics.identity_refresh_failed();
                let delay = backoff.next_delay();
                let current = tx.borrow().as_ref().map(|c| c.valid_until);
                let waiting_for_token = matches!(&error, IdentityError::TokenFile { source, .. } if source.kind() == std::io::ErrorKind::NotFound);
                match current {
                    Some(valid_until) => {
                        tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, valid_until = %rfc3339(valid_until), "certificate renewal failed; keeping the current certificate")
                    }
                    // A sidecar usually starts before its workload is registered and its token
                    // written: that is the normal start-up order, not a problem worth a warning.
                    None if waiting_for_token => {
                        tracing::info!(%error, retry_in_ms = delay.as_millis() as u64, "waiting for the token file")
                    }
                    None => {
                        tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot obtain a certificate yet")
                    }
                }
                delay
            }
        };
        // Sleep until the renewal (or retry) is due, applying new trust anchors meanwhile.
        let due = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => break,
                changed = local.roots.changed() => {
                    if changed.is_err() {
                        // No watcher (inline anchors): nothing else can change.
                        tokio::time::sleep_until(due).await;
                        break;
                    }
                    let roots = local.roots.borrow_and_update().clone();
                    if !apply_roots(&tx, &local, roots) {
                        backoff.reset();
                        break;
                    }
                }
            }
        }
    }
}

async fn certify_once<C: Certifier>(
    certifier: &mut C,
    local: &Local,
) -> Result<Certified, IdentityError> {
    // A small file read once per renewal: a plain read keeps the task simple (and keeps
    // tokio's paused clock deterministic in tests).
    let token = std::fs::read(&local.token_file).map_err(|source| IdentityError::TokenFile {
        path: local.token_file.clone(),
        source,
    })?;
    let rsp = certifier
        .certify(CertifyRequest {
            identity: local.name.clone(),
            token,
            certificate_signing_request: local.csr.clone(),
        })
        .await
        .map_err(IdentityError::Certify)?;

    let bad = IdentityError::BadCertificate;
    let mut chain = vec![tls::der_or_pem(rsp.leaf_certificate).map_err(bad)?];
    for c in rsp.intermediate_certificates {
        chain.push(tls::der_or_pem(c).map_err(bad)?);
    }
    let key = CertifiedKey::new(chain, local.key.clone());
    key.keys_match()
        .map_err(|e| bad(format!("it is not for this proxy's key: {e}")))?;
    let leaf: &CertificateDer<'_> = &key.cert[0];
    let roots = local.roots.borrow().clone();
    tls::verify_identity(
        &roots,
        leaf,
        &key.cert[1..],
        &local.name,
        rustls::pki_types::UnixTime::now(),
    )
    .map_err(|e| bad(e.to_string()))?;
    let not_after = tls::not_after(leaf).map_err(bad)?;
    let valid_until = rsp
        .valid_until
        .and_then(|t| SystemTime::try_from(t).ok())
        .map_or(not_after, |t| t.min(not_after));
    Ok(Certified {
        name: local.name.clone(),
        key: Arc::new(key),
        roots,
        valid_until,
    })
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
pub(crate) mod tests;

/// A time as RFC 3339 to the second (`2026-12-05T16:00:00Z`), for log fields.
fn rfc3339(t: SystemTime) -> String {
    let secs = unix(t) as i64;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}
