//! `Identity.Certify`: checks that the token grants the requested identity, then lets the CA
//! check the CSR and sign a leaf.
//!
//! Two kinds of token are accepted: a workload token the registration API issued
//! ([`Tokens`]), and with the Kubernetes store a pod's ServiceAccount token, which a
//! `TokenReview` turns into `<sa>.<ns>.serviceaccount.identity.<control-ns>.<td>`
//! ([`crate::k8s::token_review`]).
//!
//! Statuses: `InvalidArgument` for an empty identity or a bad CSR, `Unauthenticated` for a
//! token nobody issued (or the API server does not authenticate), `Unavailable` when the
//! TokenReview cannot be made, `PermissionDenied` for a valid token that grants another identity (or
//! whose workload is gone), `Internal` if signing fails.
//!
//! The CA is read from a `watch` channel for every request, so a rotation's new issuer
//! (`ca_reload`) is used from the next request on; every leaf is recorded in the [`Ledger`] under
//! the anchor it chains to.
//!
//! Certificates travel as DER (what Linkerd's controller and proxy exchange), although the proto
//! comments say PEM; a PEM CSR is accepted too.

use crate::ca::{Ca, CertifyError};
use crate::ca_reload::Ledger;
use crate::k8s::token_review::{ReviewError, Reviewer};
use crate::resource::{Defaults, State};
use crate::tokens::Tokens;
use linkerd2_proxy_api::identity::{identity_server::Identity, CertifyRequest, CertifyResponse};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

pub struct IdentityService {
    ca: watch::Receiver<Arc<Ca>>,
    ledger: Ledger,
    tokens: Tokens,
    /// The store's states, not the index's: a registration answers once the store applied it,
    /// and the proxy certifies with its token right then, before the index (fed from the same
    /// channel on a blocking task) may have caught up.
    states: watch::Receiver<Arc<State>>,
    /// With the Kubernetes store: who checks ServiceAccount tokens, and the defaults that
    /// name the identity they grant.
    reviewer: Option<(Reviewer, Defaults)>,
}

impl IdentityService {
    pub fn new(
        ca: watch::Receiver<Arc<Ca>>,
        ledger: Ledger,
        tokens: Tokens,
        states: watch::Receiver<Arc<State>>,
    ) -> Self {
        Self {
            ca,
            ledger,
            tokens,
            states,
            reviewer: None,
        }
    }

    /// Also accepts ServiceAccount tokens, checked by `reviewer` (the Kubernetes store).
    pub fn with_token_review(mut self, reviewer: Reviewer, defaults: Defaults) -> Self {
        self.reviewer = Some((reviewer, defaults));
        self
    }

    /// The identity a token grants: a registered workload's, else (with a reviewer) a
    /// ServiceAccount's.
    async fn grant(&self, token: &[u8]) -> Result<(String, Option<String>), Status> {
        let Some((reviewer, d)) = &self.reviewer else {
            return self.granted(token);
        };
        if self.tokens.lookup(token).is_some() {
            return self.granted(token);
        }
        let token = std::str::from_utf8(token)
            .map_err(|_| Status::unauthenticated("the token is not text"))?;
        let sa = reviewer.review(token).await.map_err(|e| match e {
            ReviewError::Unauthenticated(_) => Status::unauthenticated(e.to_string()),
            ReviewError::NotServiceAccount(..) => Status::permission_denied(e.to_string()),
            ReviewError::Api(_) => Status::unavailable(e.to_string()),
        })?;
        let (ns, name) = (&sa.namespace, &sa.name);
        Ok((
            format!(
                "{name}.{ns}.serviceaccount.identity.{}.{}",
                d.control_namespace, d.trust_domain
            ),
            Some(format!("spiffe://{}/ns/{ns}/sa/{name}", d.trust_domain)),
        ))
    }

    /// The identity a token grants and the SPIFFE URI to put beside it.
    fn granted(&self, token: &[u8]) -> Result<(String, Option<String>), Status> {
        let grant = self.tokens.lookup(token).ok_or_else(|| {
            Status::unauthenticated(
                "the token was not issued by this control plane (or was revoked)",
            )
        })?;
        if let Some(link) = grant.link() {
            return Err(Status::permission_denied(format!(
                "the token is cluster {link}'s link token: it grants only the multicluster exports"
            )));
        }
        let state = self.states.borrow().clone();
        let workload = state
            .workloads
            .get(&(grant.namespace.clone(), grant.name.clone()))
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "the token's workload {}/{} is not registered",
                    grant.namespace, grant.name
                ))
            })?;
        let spiffe = workload
            .identity
            .starts_with("spiffe://")
            .then(|| workload.identity.clone());
        Ok((workload.server_name.clone(), spiffe))
    }
}

/// The identity a Certify request asks for, as compared with the one its token grants: DNS
/// names are case-insensitive and a trailing dot names the same one.
pub(crate) fn requested_identity(identity: &str) -> String {
    identity.trim_end_matches('.').to_ascii_lowercase()
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let req = request.into_inner();
        let requested = requested_identity(&req.identity);
        if requested.is_empty() {
            return Err(Status::invalid_argument("identity is required"));
        }
        let (granted, spiffe) = self.grant(&req.token).await?;
        if !granted.eq_ignore_ascii_case(&requested) {
            return Err(Status::permission_denied(format!(
                "the token grants identity {granted:?}, not {requested:?}"
            )));
        }
        let ca = self.ca.borrow().clone();
        let issued = ca
            .certify(
                &req.certificate_signing_request,
                &granted,
                spiffe.as_deref(),
                SystemTime::now(),
            )
            .map_err(|e| match e {
                CertifyError::InvalidCsr(m) => Status::invalid_argument(m),
                e @ CertifyError::Sign(_) => Status::internal(e.to_string()),
            })?;
        self.ledger.record(ca.issuer_anchor(), issued.valid_until);
        tracing::info!(identity = %granted, valid_until = %crate::clock::Rfc3339(issued.valid_until), anchor = %ca.issuer_anchor(), "certified");
        Ok(Response::new(CertifyResponse {
            leaf_certificate: issued.leaf,
            intermediate_certificates: issued.intermediates,
            valid_until: Some(prost_types::Timestamp::from(issued.valid_until)),
        }))
    }
}
