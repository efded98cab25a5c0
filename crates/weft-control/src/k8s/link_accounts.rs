//! Link credentials when this control plane's store is Kubernetes (it keeps no token digests
//! there: `tokens::Tokens::none`). Linkerd's way: a linked cluster's credential is a
//! ServiceAccount's token. `POST /v1/multicluster/credentials` with `{"name": "east"}` creates
//! the ServiceAccount `weft-link-east` in the control namespace (replacing one that exists, so
//! every token minted before stops working: a ServiceAccount token is bound to the account's
//! uid) and mints its token with the TokenRequest API for the audience [`LINK_AUDIENCE`];
//! `GET /v1/multicluster/exports` accepts a bearer token whose `TokenReview` for that audience
//! says it is such a ServiceAccount; `DELETE` deletes the account. Every replica agrees with no
//! storage of ours, and the account needs no RBAC: it is only ever shown to this control plane,
//! never used against the API server.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use super::token_review::{ReviewError, Reviewer};

/// The audience of link tokens: the API server authenticates them for nothing else, and a
/// pod's identity token (audience `identity.l5d.io`) is no link token.
pub const LINK_AUDIENCE: &str = "multicluster.weft.io";
/// The prefix of a link's ServiceAccount (`weft-link-<east's name>`).
pub const ACCOUNT_PREFIX: &str = "weft-link-";
/// The label naming the linked cluster on its ServiceAccount.
pub const LINK_LABEL: &str = "multicluster.weft.io/link";
/// The lifetime asked for (a year; the API server may cap it, `--service-account-max-token-expiration`).
pub const TOKEN_LIFETIME_SECONDS: i64 = 365 * 24 * 3600;

/// Why a presented token is not a link credential.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Not a link's token (unauthenticated, another account, a user): answer 401.
    #[error("{0}")]
    NotALink(String),
    /// The API server could not be asked: answer 503.
    #[error("asking the Kubernetes API server: {0}")]
    Api(kube::Error),
}

/// The links' ServiceAccounts in the control namespace. Cheap to clone.
#[derive(Clone)]
pub struct LinkAccounts {
    accounts: Api<ServiceAccount>,
    namespace: String,
    reviewer: Reviewer,
}

impl LinkAccounts {
    pub fn new(client: kube::Client, control_namespace: &str) -> LinkAccounts {
        LinkAccounts {
            accounts: Api::namespaced(client.clone(), control_namespace),
            namespace: control_namespace.to_string(),
            reviewer: Reviewer::new(client),
        }
    }

    /// Mints the link token of the cluster `name`: a new `weft-link-<name>` (the old one, and
    /// so its tokens, deleted first) and a token for it. Errors name the step that failed.
    pub async fn issue(&self, name: &str) -> Result<String, String> {
        let account = format!("{ACCOUNT_PREFIX}{name}");
        let ns = &self.namespace;
        self.delete(&account)
            .await
            .map_err(|e| format!("deleting the ServiceAccount {ns}/{account}: {e}"))?;
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(account.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some([(LINK_LABEL.to_string(), name.to_string())].into()),
                ..Default::default()
            },
            // Nothing to mount: its token is for this control plane, not for pods.
            automount_service_account_token: Some(false),
            ..Default::default()
        };
        self.accounts
            .create(&PostParams::default(), &sa)
            .await
            .map_err(|e| format!("creating the ServiceAccount {ns}/{account}: {e}"))?;
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![LINK_AUDIENCE.to_string()],
                expiration_seconds: Some(TOKEN_LIFETIME_SECONDS),
                bound_object_ref: None,
            },
            ..Default::default()
        };
        let answer = self
            .accounts
            .create_token_request(&account, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("requesting a token of {ns}/{account}: {e}"))?;
        let status = answer
            .status
            .filter(|s| !s.token.is_empty())
            .ok_or_else(|| {
                format!("the TokenRequest of {ns}/{account} was answered without a token")
            })?;
        tracing::info!(link = %name, %account, expires = ?status.expiration_timestamp,
            "multicluster: minted a link token");
        Ok(status.token)
    }

    /// Revokes the link token of the cluster `name` (deletes its ServiceAccount; none is fine).
    pub async fn revoke(&self, name: &str) -> Result<(), kube::Error> {
        self.delete(&format!("{ACCOUNT_PREFIX}{name}")).await
    }

    async fn delete(&self, account: &str) -> Result<(), kube::Error> {
        match self
            .accounts
            .delete(account, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The linked cluster `token` is the credential of.
    pub async fn link_of(&self, token: &str) -> Result<String, Refused> {
        let sa = match self.reviewer.review_for(token, LINK_AUDIENCE).await {
            Ok(sa) => sa,
            Err(ReviewError::Api(e)) => return Err(Refused::Api(e)),
            Err(e) => {
                return Err(Refused::NotALink(format!(
                    "not a link token of this control plane (or revoked): {e}"
                )))
            }
        };
        match sa.name.strip_prefix(ACCOUNT_PREFIX) {
            Some(link) if sa.namespace == self.namespace && !link.is_empty() => {
                Ok(link.to_string())
            }
            _ => Err(Refused::NotALink(format!(
                "the token is the ServiceAccount {}/{}'s, not a link's ({}/{ACCOUNT_PREFIX}NAME)",
                sa.namespace, sa.name, self.namespace
            ))),
        }
    }
}
