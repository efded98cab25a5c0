//! Who a proxy is on Kubernetes: its pod's projected ServiceAccount token (audience
//! [`AUDIENCE`]), checked by the API server with a `TokenReview`
//! (`authentication.k8s.io/v1`). An authenticated `system:serviceaccount:<ns>:<sa>` is the
//! second source of [`crate::tokens::Grant`]-like proof `Identity.Certify` accepts; it grants
//! exactly `<sa>.<ns>.serviceaccount.identity.<control-ns>.<trust-domain>`. The same review,
//! for another audience, authenticates a linked cluster's credential (`k8s::link_accounts`).

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

/// The audience of the tokens proxies present: Linkerd's, so a Linkerd-injected pod's token
/// volume works unchanged.
pub const AUDIENCE: &str = "identity.l5d.io";

/// The prefix of a ServiceAccount's user name.
const SA_PREFIX: &str = "system:serviceaccount:";

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The API server did not authenticate the token (its words, when it gave any).
    #[error("the Kubernetes API server did not authenticate the token: {0}")]
    Unauthenticated(String),
    /// Authenticated, but not as a ServiceAccount (a user's token, or the wrong audience):
    /// who it is, and the audience asked for.
    #[error("the token authenticates {0}, not a ServiceAccount with audience {1}")]
    NotServiceAccount(String, &'static str),
    #[error("TokenReview failed: {0}")]
    Api(#[from] kube::Error),
}

/// A ServiceAccount a token was issued for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

/// Asks the API server whose token this is. Cheap to clone.
#[derive(Clone)]
pub struct Reviewer {
    api: Api<TokenReview>,
}

impl Reviewer {
    pub fn new(client: kube::Client) -> Reviewer {
        Reviewer {
            api: Api::all(client),
        }
    }

    /// The ServiceAccount `token` authenticates, for [`AUDIENCE`].
    pub async fn review(&self, token: &str) -> Result<ServiceAccount, ReviewError> {
        self.review_for(token, AUDIENCE).await
    }

    /// The ServiceAccount `token` authenticates, for `audience`.
    pub async fn review_for(
        &self,
        token: &str,
        audience: &'static str,
    ) -> Result<ServiceAccount, ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.trim().to_string()),
                audiences: Some(vec![audience.to_string()]),
            },
            ..Default::default()
        };
        let answer = self.api.create(&PostParams::default(), &review).await?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "no reason given".into());
            return Err(ReviewError::Unauthenticated(why));
        }
        let user = status.user.and_then(|u| u.username).unwrap_or_default();
        // The API server answers with the audiences the token is good for among those asked.
        let audience_ok = status
            .audiences
            .as_ref()
            .is_none_or(|a| a.iter().any(|a| a == audience));
        match user.strip_prefix(SA_PREFIX).and_then(|r| r.split_once(':')) {
            Some((ns, sa)) if audience_ok && !ns.is_empty() && !sa.is_empty() => {
                Ok(ServiceAccount {
                    namespace: ns.to_string(),
                    name: sa.to_string(),
                })
            }
            _ => Err(ReviewError::NotServiceAccount(
                format!("{user:?}"),
                audience,
            )),
        }
    }
}
