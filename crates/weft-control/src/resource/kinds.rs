//! Every kind Weft knows, in one table ([`KINDS`]): what `weft get` calls it
//! (`api::resources`), what the Kubernetes store watches (`k8s`), which CustomResourceDefinitions
//! `weft install --crds` prints and in which versions (the schemas stay with the CRDs, keyed by
//! kind), whose status the leader writes (`store::status`, `k8s::status`). The versions each
//! document validator accepts are checked against this table by `kinds_tests.rs`.
//!
//! Adding a kind is adding a row here (and its validator and CRD schema); adding a version is
//! adding it to its row's `versions` (the validators check `apiVersion` against the row:
//! [`Kind::check_api_version`], `RouteKind::of`).

use super::authz::{
    AUTHORIZATION_POLICY_KIND, MESH_TLS_KIND, NAMESPACE_KIND, NETWORK_KIND, SERVER_KIND,
};
use super::egress::EGRESS_NETWORK_KIND;
use super::multicluster::{DEFAULT_LINK_NAMESPACE, LINK_KIND, MULTICLUSTER_GROUP, SECRET_KIND};
use super::ratelimit::RATE_LIMIT_KIND;
use super::route::{FAULT_INJECTION_KIND, GATEWAY_GROUP, POLICY_GROUP, WEFT_EXTENSIONS_GROUP};

/// Kubernetes' core API group.
pub const CORE_GROUP: &str = "";
pub const DISCOVERY_GROUP: &str = "discovery.k8s.io";
/// Linkerd's `ExternalWorkload`.
pub const WORKLOAD_GROUP: &str = "workload.linkerd.io";

/// The only Secrets the Kubernetes store lists: a Link's credentials (`type` is
/// `CREDENTIALS_SECRET_TYPE`, which `kinds_tests.rs` checks).
pub const SECRET_FIELD_SELECTOR: &str = "type=mirror.linkerd.io/remote-kubeconfig";

/// Whose kind it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Kubernetes' own: the API server serves it, no CRD.
    Kubernetes,
    /// Defined by a CustomResourceDefinition `weft install --crds` prints (Gateway API's,
    /// Linkerd's or Weft's).
    Custom,
}

/// One kind.
#[derive(Debug)]
pub struct Kind {
    pub kind: &'static str,
    /// API group; `""` for the core group.
    pub group: &'static str,
    /// The versions a document's `apiVersion` may name, the one error messages suggest first.
    /// Empty: never a document, only watched (Pods, EndpointSlices).
    pub versions: &'static [&'static str],
    /// The version the CRD stores (listed first in it) and the Kubernetes store watches; the
    /// API server converts every other.
    pub stored: &'static str,
    pub plural: &'static str,
    /// kubectl's short names (a CRD's `shortNames`).
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Whether the leader writes the `status` of this kind's objects (route `parents`, policy
    /// `conditions`); the RBAC of `weft install` grants exactly these `*/status`.
    pub writes_status: bool,
    pub origin: Origin,
    /// How the store names the kind (`DocKey::kind`): the kind, qualified by its group for
    /// route kinds (two groups define an `HTTPRoute`).
    pub key: &'static str,
    /// The one namespace the Kubernetes store watches this kind in (`None`: cluster-wide), as
    /// Linkerd's service mirror reads Links and their Secrets in the Link's namespace only.
    pub watch_namespace: Option<&'static str>,
    /// The field selector of the Kubernetes store's list and watch of this kind, so objects
    /// outside it are never listed (the credentials Secrets' `type`).
    pub field_selector: Option<&'static str>,
}

impl Kind {
    /// Whether documents of this kind are accepted (the file and etcd stores, `weft apply`).
    pub fn is_document(&self) -> bool {
        !self.versions.is_empty()
    }

    /// kubectl's singular name: the kind in lower case.
    pub fn singular(&self) -> String {
        self.kind.to_ascii_lowercase()
    }

    /// The `apiVersion` of `version` of this kind: `v1`, `policy.linkerd.io/v1beta3`.
    pub fn api_version(&self, version: &str) -> String {
        match self.group {
            CORE_GROUP => version.to_string(),
            group => format!("{group}/{version}"),
        }
    }

    /// Checks a document's `apiVersion` against [`Kind::versions`]: `Err` is the message of the
    /// `apiVersion` field's error.
    pub fn check_api_version(&self, api_version: &str) -> Result<(), String> {
        if self
            .versions
            .iter()
            .any(|v| self.api_version(v) == api_version)
        {
            return Ok(());
        }
        let expected: Vec<String> = self.versions.iter().map(|v| self.api_version(v)).collect();
        Err(format!(
            "must be {} for kind {}, got {api_version:?}",
            expected.join(" or "),
            self.kind
        ))
    }

    /// The versions a CRD serves, the stored one first, then the others in table order.
    pub fn crd_versions(&self) -> Vec<&'static str> {
        let others = self.versions.iter().filter(|v| **v != self.stored);
        std::iter::once(self.stored)
            .chain(others.copied())
            .collect()
    }

    /// How an object of this kind is named in the Kubernetes store (and in its errors):
    /// `Kind/namespace/name`, with the group after the kind for custom resources
    /// (`HTTPRoute.gateway.networking.k8s.io/default/web`), as kubectl names them.
    pub fn text_name(&self, namespace: &str, name: &str) -> String {
        let kind = match (self.origin, self.group) {
            (Origin::Kubernetes, _) | (_, CORE_GROUP) => self.kind.to_string(),
            (Origin::Custom, group) => format!("{}.{group}", self.kind),
        };
        match namespace {
            "" => format!("{kind}/{name}"),
            ns => format!("{kind}/{ns}/{name}"),
        }
    }
}

/// The row of the store's kind `key` (`DocKey::kind`).
pub fn by_key(key: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.is_document() && k.key == key)
}

/// The row of `kind` in `group`.
pub fn find(group: &str, kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.group == group && k.kind == kind)
}

/// Kubernetes' own kinds first, then the custom ones in the order `weft install --crds` prints
/// them.
pub const KINDS: &[Kind] = &[
    Kind {
        kind: NAMESPACE_KIND,
        group: CORE_GROUP,
        versions: &["v1"],
        stored: "v1",
        plural: "namespaces",
        short_names: &["ns"],
        namespaced: false,
        writes_status: false,
        origin: Origin::Kubernetes,
        key: NAMESPACE_KIND,
        watch_namespace: None,
        field_selector: None,
    },
    Kind {
        kind: "Service",
        group: CORE_GROUP,
        versions: &["v1"],
        stored: "v1",
        plural: "services",
        short_names: &["svc"],
        namespaced: true,
        writes_status: false,
        origin: Origin::Kubernetes,
        key: "Service",
        watch_namespace: None,
        field_selector: None,
    },
    Kind {
        kind: "Pod",
        group: CORE_GROUP,
        versions: &[],
        stored: "v1",
        plural: "pods",
        short_names: &["po"],
        namespaced: true,
        writes_status: false,
        origin: Origin::Kubernetes,
        key: "Pod",
        watch_namespace: None,
        field_selector: None,
    },
    Kind {
        kind: "EndpointSlice",
        group: DISCOVERY_GROUP,
        versions: &[],
        stored: "v1",
        plural: "endpointslices",
        short_names: &[],
        namespaced: true,
        writes_status: false,
        origin: Origin::Kubernetes,
        key: "EndpointSlice",
        watch_namespace: None,
        field_selector: None,
    },
    Kind {
        kind: "HTTPRoute",
        group: GATEWAY_GROUP,
        versions: &["v1", "v1beta1"],
        stored: "v1",
        plural: "httproutes",
        short_names: &[],
        namespaced: true,
        writes_status: true,
        origin: Origin::Custom,
        key: "HTTPRoute.gateway.networking.k8s.io",
        watch_namespace: None,
        field_selector: None,
    },
    Kind {
        kind: "GRPCRoute",
        group: GATEWAY_GROUP,
        versions: &["v1", "v1alpha2"],
        stored: "v1",
        plural: "grpcroutes",
        short_names: &[],
        namespaced: true,
        writes_status: true,
        origin: Origin::Custom,
        key: "GRPCRoute.gateway.networking.k8s.io",
        watch_namespace: None,
        field_selector: None,
    },
    Kind {
        kind: "TLSRoute",
        group: GATEWAY_GROUP,
        versions: &["v1alpha3", "v1alpha2"],
        stored: "v1alpha2",
        plural: "tlsroutes",
        short_names: &[],
        namespaced: true,
        writes_status: true,
        origin: Origin::Custom,
        key: "TLSRoute.gateway.networking.k8s.io",
        watch_namespace: None,
        field_selector: None,
    },
    Kind {
        kind: "TCPRoute",
        group: GATEWAY_GROUP,
        versions: &["v1alpha2"],
        stored: "v1alpha2",
        plural: "tcproutes",
        short_names: &[],
        namespaced: true,
        writes_status: true,
        origin: Origin::Custom,
        key: "TCPRoute.gateway.networking.k8s.io",
        watch_namespace: None,
        field_selector: None,
    },
    Kind {
        kind: SERVER_KIND,
        group: POLICY_GROUP,
        versions: &["v1beta3", "v1beta2", "v1beta1"],
        stored: "v1beta3",
        plural: "servers",
        short_names: &["srv"],
        namespaced: true,
        // Linkerd writes none either.
        writes_status: false,
        origin: Origin::Custom,
        key: SERVER_KIND,
        watch_namespace: None,
        field_selector: None,
    },
    Kind {
        kind: AUTHORIZATION_POLICY_KIND,
        group: POLICY_GROUP,
        versions: &["v1alpha1"],
        stored: "v1alpha1",
        plural: "authorizationpolicies",
        short_names: &["authzpolicy"],
        namespaced: true,
        writes_status: false,
        origin: Origin::Custom,
        key: AUTHORIZATION_POLICY_KIND,
        watch_namespace: None,
        field_selector: None,
    },
    Kind {
        kind: MESH_TLS_KIND,
        group: POLICY_GROUP,
        versions: &["v1alpha1"],
        stored: "v1alpha1",
        plural: "meshtlsauthentications",
        short_names: &["meshtlsauthn"],
        namespaced: true,
        writes_status: false,
        origin: Origin::Custom,
        key: MESH_TLS_KIND,
        watch_namespace: None,
        field_selector: None,
    },
    Kind {
        kind: NETWORK_KIND,
        group: POLICY_GROUP,
        versions: &["v1alpha1"],
        stored: "v1alpha1",
        plural: "networkauthentications",
        short_names: &["netauthn", "networkauthn"],
        namespaced: true,
        writes_status: false,
        origin: Origin::Custom,
        key: NETWORK_KIND,
        watch_namespace: None,
        field_selector: None,
    },
    Kind {
        kind: "HTTPRoute",
        group: POLICY_GROUP,
        versions: &["v1beta3", "v1beta2", "v1beta1"],
        stored: "v1beta3",
        plural: "httproutes",
        short_names: &[],
        namespaced: true,
        writes_status: true,
        origin: Origin::Custom,
        key: "HTTPRoute.policy.linkerd.io",
        watch_namespace: None,
        field_selector: None,
    },
    Kind {
        kind: RATE_LIMIT_KIND,
        group: POLICY_GROUP,
        versions: &["v1alpha1"],
        stored: "v1alpha1",
        plural: "httplocalratelimitpolicies",
        short_names: &[],
        namespaced: true,
        writes_status: true,
        origin: Origin::Custom,
        key: RATE_LIMIT_KIND,
        watch_namespace: None,
        field_selector: None,
    },
    Kind {
        kind: EGRESS_NETWORK_KIND,
        group: POLICY_GROUP,
        versions: &["v1alpha1"],
        stored: "v1alpha1",
        plural: "egressnetworks",
        short_names: &[],
        namespaced: true,
        writes_status: true,
        origin: Origin::Custom,
        key: EGRESS_NETWORK_KIND,
        watch_namespace: None,
        field_selector: None,
    },
    Kind {
        kind: "ExternalWorkload",
        group: WORKLOAD_GROUP,
        versions: &["v1beta1"],
        stored: "v1beta1",
        plural: "externalworkloads",
        short_names: &[],
        namespaced: true,
        // Its conditions are the workload's own (or its agent's) to write; Weft reads them.
        writes_status: false,
        origin: Origin::Custom,
        key: "ExternalWorkload",
        watch_namespace: None,
        field_selector: None,
    },
    Kind {
        kind: FAULT_INJECTION_KIND,
        group: WEFT_EXTENSIONS_GROUP,
        versions: &["v1alpha1"],
        stored: "v1alpha1",
        plural: "faultinjections",
        short_names: &[],
        namespaced: true,
        writes_status: false,
        origin: Origin::Custom,
        key: FAULT_INJECTION_KIND,
        watch_namespace: None,
        field_selector: None,
    },
    Kind {
        kind: LINK_KIND,
        group: MULTICLUSTER_GROUP,
        // The fields Weft reads are the same in each version Linkerd has served.
        versions: &["v1alpha2", "v1alpha1", "v1alpha3"],
        stored: "v1alpha2",
        plural: "links",
        short_names: &[],
        namespaced: true,
        writes_status: false,
        origin: Origin::Custom,
        key: LINK_KIND,
        watch_namespace: Some(DEFAULT_LINK_NAMESPACE),
        field_selector: None,
    },
    Kind {
        kind: SECRET_KIND,
        group: CORE_GROUP,
        versions: &["v1"],
        stored: "v1",
        plural: "secrets",
        short_names: &[],
        namespaced: true,
        writes_status: false,
        origin: Origin::Kubernetes,
        key: SECRET_KIND,
        watch_namespace: Some(DEFAULT_LINK_NAMESPACE),
        field_selector: Some(SECRET_FIELD_SELECTOR),
    },
];

#[cfg(test)]
#[path = "kinds_tests.rs"]
mod tests;
