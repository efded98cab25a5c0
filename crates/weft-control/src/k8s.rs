//! The Kubernetes API, as the control plane uses it with `--store kubernetes`: the client (the
//! in-cluster service account or `KUBECONFIG`), the kinds the store watches ([`KINDS`]), and
//! the three conversations held with the API server — list+watch of each kind ([`watch`]),
//! `TokenReview` of a proxy's ServiceAccount token ([`token_review`]) and a `Lease` for the
//! leader's work ([`lease`]), which is writing route status ([`status`]) and pruning the
//! issuance records every replica keeps in a ConfigMap ([`records`]). What an object becomes
//! in the store is in [`objects`].
//!
//! Only kube's client is used, not kube-runtime: the watch loop it would give (`watcher`) is a
//! few dozen lines here, and kube-runtime adds 31 crates to the build (`docs/kubernetes.md`).

pub mod lease;
pub mod objects;
pub mod records;
pub mod status;
pub mod token_review;
pub mod watch;

use std::path::Path;

use kube::core::ApiResource;

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

/// One watched kind.
#[derive(Clone, Copy, Debug)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub shape: Shape,
}

impl Kind {
    pub fn api_resource(&self) -> ApiResource {
        let api_version = match self.group {
            "" => self.version.to_string(),
            g => format!("{g}/{}", self.version),
        };
        ApiResource {
            group: self.group.into(),
            version: self.version.into(),
            api_version,
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }

    /// How an object of this kind is named in the store (and in its errors):
    /// `Kind/namespace/name`, with the group after the kind for custom resources
    /// (`HTTPRoute.gateway.networking.k8s.io/default/web`), as kubectl names them.
    pub fn text_name(&self, namespace: &str, name: &str) -> String {
        let kind = match self.group {
            "" | "discovery.k8s.io" => self.kind.to_string(),
            g => format!("{}.{g}", self.kind),
        };
        match namespace {
            "" => format!("{kind}/{name}"),
            ns => format!("{kind}/{ns}/{name}"),
        }
    }
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    shape: Shape,
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
        shape,
    }
}

/// Every kind the store watches, cluster-wide. Custom resources are asked for in the version
/// the resource layer reads first; the API server converts stored objects to it.
pub const KINDS: &[Kind] = &[
    kind("", "v1", "Namespace", "namespaces", Shape::Namespace),
    kind("", "v1", "Service", "services", Shape::Service),
    kind("", "v1", "Pod", "pods", Shape::Pod),
    kind(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        Shape::EndpointSlice,
    ),
    kind(
        "workload.linkerd.io",
        "v1beta1",
        "ExternalWorkload",
        "externalworkloads",
        Shape::Custom,
    ),
    kind(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
        "httproutes",
        Shape::Custom,
    ),
    kind(
        "gateway.networking.k8s.io",
        "v1",
        "GRPCRoute",
        "grpcroutes",
        Shape::Custom,
    ),
    kind(
        "gateway.networking.k8s.io",
        "v1alpha2",
        "TLSRoute",
        "tlsroutes",
        Shape::Custom,
    ),
    kind(
        "gateway.networking.k8s.io",
        "v1alpha2",
        "TCPRoute",
        "tcproutes",
        Shape::Custom,
    ),
    kind(
        "policy.linkerd.io",
        "v1beta3",
        "HTTPRoute",
        "httproutes",
        Shape::Custom,
    ),
    kind(
        "policy.linkerd.io",
        "v1beta3",
        "Server",
        "servers",
        Shape::Custom,
    ),
    kind(
        "policy.linkerd.io",
        "v1alpha1",
        "AuthorizationPolicy",
        "authorizationpolicies",
        Shape::Custom,
    ),
    kind(
        "policy.linkerd.io",
        "v1alpha1",
        "MeshTLSAuthentication",
        "meshtlsauthentications",
        Shape::Custom,
    ),
    kind(
        "policy.linkerd.io",
        "v1alpha1",
        "NetworkAuthentication",
        "networkauthentications",
        Shape::Custom,
    ),
    kind(
        "policy.linkerd.io",
        "v1alpha1",
        "HTTPLocalRateLimitPolicy",
        "httplocalratelimitpolicies",
        Shape::Custom,
    ),
    kind(
        "policy.linkerd.io",
        "v1alpha1",
        "EgressNetwork",
        "egressnetworks",
        Shape::Custom,
    ),
    kind(
        "extensions.weft.dev",
        "v1alpha1",
        "FaultInjection",
        "faultinjections",
        Shape::Custom,
    ),
];
