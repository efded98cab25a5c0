//! The Kubernetes API, as the control plane uses it with `--store kubernetes`: the client (the
//! in-cluster service account or `KUBECONFIG`), the kinds the store watches ([`KINDS`]: every
//! row of the table of kinds, `resource::kinds`), and the three conversations held with the API
//! server — list+watch of each kind ([`watch`]), `TokenReview` of a proxy's ServiceAccount token
//! ([`token_review`]; a linked cluster's ServiceAccount token too, [`link_accounts`]) and a `Lease` for the leader's work ([`lease`]), which is writing the
//! status of routes and policies ([`status`]) and pruning the issuance records every replica
//! keeps in a ConfigMap ([`records`]). What an object becomes in the store is in [`objects`].
//!
//! Only kube's client is used, not kube-runtime: the watch loop it would give (`watcher`) is a
//! few dozen lines here, and kube-runtime adds 31 crates to the build (`docs/kubernetes.md`).

pub mod lease;
pub mod link_accounts;
pub mod objects;
pub mod records;
pub mod status;
pub mod token_review;
pub mod watch;

use std::path::Path;
use std::sync::LazyLock;

use kube::core::ApiResource;

use crate::resource::kinds;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no Kubernetes configuration (neither in a pod nor KUBECONFIG/~/.kube/config): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client for the API server: from `kubeconfig` when given (tests), else inferred as kubectl
/// and in-cluster clients do (`KUBECONFIG`, `~/.kube/config`, then the pod's service account).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, Error> {
    let config = match kubeconfig {
        None => kube::Config::infer().await?,
        Some(path) => {
            let bad = |message: String| Error::Kubeconfig {
                path: path.display().to_string(),
                message,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|e| bad(e.to_string()))?
        }
    };
    Ok(kube::Client::try_from(config)?)
}

/// What the store makes of a kind's objects ([`objects`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Service,
    Namespace,
    Pod,
    EndpointSlice,
    /// A custom resource Weft validates as it is (routes, policy, ExternalWorkload).
    Custom,
}

/// One watched kind: a row of the table of kinds, asked for in its stored version.
#[derive(Clone, Copy, Debug)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub shape: Shape,
    pub row: &'static kinds::Kind,
}

impl Kind {
    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.into(),
            version: self.version.into(),
            api_version: self.row.api_version(self.version),
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }

    /// How an object of this kind is named in the store (and in its errors):
    /// [`kinds::Kind::text_name`].
    pub fn text_name(&self, namespace: &str, name: &str) -> String {
        self.row.text_name(namespace, name)
    }
}

/// What the store makes of a row's objects: Kubernetes' kinds each their own way, every custom
/// kind as the document it is.
fn shape(row: &kinds::Kind) -> Shape {
    match (row.group, row.kind) {
        (kinds::CORE_GROUP, "Namespace") => Shape::Namespace,
        (kinds::CORE_GROUP, "Service") => Shape::Service,
        (kinds::CORE_GROUP, "Pod") => Shape::Pod,
        (kinds::DISCOVERY_GROUP, "EndpointSlice") => Shape::EndpointSlice,
        _ => Shape::Custom,
    }
}

/// Every kind the store watches: every row of [`kinds::KINDS`], cluster-wide or in the row's
/// `watch_namespace` (multicluster's `Link` and its credentials `Secret`, those by the row's
/// `field_selector`), custom resources in the version their CRD stores (the API server converts
/// stored objects to it).
pub static KINDS: LazyLock<Vec<Kind>> = LazyLock::new(|| {
    kinds::KINDS
        .iter()
        .map(|row| Kind {
            group: row.group,
            version: row.stored,
            kind: row.kind,
            plural: row.plural,
            shape: shape(row),
            row,
        })
        .collect()
});
