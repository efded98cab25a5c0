//! The CustomResourceDefinitions of every custom kind of the table of kinds
//! (`weft_control::resource::kinds`): the Gateway API routes, Linkerd's `policy.linkerd.io` and
//! `workload.linkerd.io` kinds, the multicluster extension's `Link`, and Weft's own `FaultInjection`, each served at exactly the
//! API versions the control plane accepts, with the upstream fields. Names, versions and scope
//! come from the table; the schemas are here, keyed by kind ([`SCHEMAS`]).

use std::sync::LazyLock;

use serde_json::{json, Value};
use weft_control::resource::kinds::{self, Origin};
use weft_control::resource::multicluster::{LINK_KIND, MULTICLUSTER_GROUP};
use weft_control::resource::route::{
    FAULT_INJECTION_KIND, GATEWAY_GROUP, POLICY_GROUP, WEFT_EXTENSIONS_GROUP,
};

use super::gateway;
use super::schema::{
    array, conditions_status, int32, int_or_string, label_selector, obj, obj_req, one_of_required,
    string, string_enum, string_max, string_pattern, with_default, GROUP_PATTERN, KIND_PATTERN,
    LABEL_PATTERN,
};

/// Annotation the API server requires on a CRD of a `*.k8s.io` group (KEP-1111); the Gateway
/// API's own CRDs carry this value.
const API_APPROVED: (&str, &str) = (
    "api-approved.kubernetes.io",
    "https://github.com/kubernetes-sigs/gateway-api/pull/2997",
);

/// A custom kind's schemas: its `spec` (per version: the versions share one schema apart from
/// fields a version added) and its `status`, when the CRD has a status subresource.
pub struct Schema {
    pub group: &'static str,
    pub kind: &'static str,
    spec: fn(&str) -> Value,
    status: Option<fn() -> Value>,
}

/// One custom resource kind: its row of the table and its schemas.
pub struct Crd {
    pub group: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    /// Served, the stored one first.
    pub versions: Vec<&'static str>,
    row: &'static kinds::Kind,
    schema: &'static Schema,
}

impl Crd {
    pub fn is_gateway_api(&self) -> bool {
        self.group == GATEWAY_GROUP
    }

    /// Whether the control plane writes this kind's `status` (and so needs RBAC for it).
    pub fn writes_status(&self) -> bool {
        self.row.writes_status
    }

    /// The CustomResourceDefinition document.
    pub fn document(&self, labels: &Value) -> Value {
        let versions: Vec<Value> = self
            .versions
            .iter()
            .enumerate()
            .map(|(i, version)| {
                let mut props = json!({
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object"},
                    "spec": (self.schema.spec)(version),
                });
                let mut v = json!({"name": version, "served": true, "storage": i == 0});
                if let Some(status) = self.schema.status {
                    props["status"] = status();
                    v["subresources"] = json!({"status": {}});
                }
                v["schema"] = json!({"openAPIV3Schema": {
                    "type": "object",
                    "properties": props,
                    "required": ["spec"],
                }});
                v
            })
            .collect();
        let mut meta = json!({"name": format!("{}.{}", self.plural, self.group), "labels": labels});
        if self.group.ends_with(".k8s.io") {
            meta["annotations"] = json!({API_APPROVED.0: API_APPROVED.1});
        }
        let category = match self.group {
            GATEWAY_GROUP => "gateway-api",
            MULTICLUSTER_GROUP => "multicluster",
            _ => "policy",
        };
        let mut names = json!({
            "kind": self.kind,
            "listKind": format!("{}List", self.kind),
            "plural": self.plural,
            "singular": self.row.singular(),
            "categories": [category],
        });
        if !self.row.short_names.is_empty() {
            names["shortNames"] = json!(self.row.short_names);
        }
        let scope = if self.row.namespaced {
            "Namespaced"
        } else {
            "Cluster"
        };
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": meta,
            "spec": {
                "group": self.group,
                "names": names,
                "scope": scope,
                "versions": versions,
            },
        })
    }
}

/// Every custom kind of the table, in its order (the order `weft install --crds` prints them).
pub static CRDS: LazyLock<Vec<Crd>> = LazyLock::new(|| {
    kinds::KINDS
        .iter()
        .filter(|row| row.origin == Origin::Custom)
        .map(|row| Crd {
            group: row.group,
            kind: row.kind,
            plural: row.plural,
            versions: row.crd_versions(),
            row,
            schema: SCHEMAS
                .iter()
                .find(|s| s.group == row.group && s.kind == row.kind)
                .unwrap_or_else(|| panic!("no CRD schema for {}.{}", row.kind, row.group)),
        })
        .collect()
});

/// The schemas of every custom kind.
pub const SCHEMAS: &[Schema] = &[
    Schema {
        group: GATEWAY_GROUP,
        kind: "HTTPRoute",
        spec: |_| gateway::http_route_spec(),
        status: Some(gateway::route_status),
    },
    Schema {
        group: GATEWAY_GROUP,
        kind: "GRPCRoute",
        spec: |_| gateway::grpc_route_spec(),
        status: Some(gateway::route_status),
    },
    Schema {
        group: GATEWAY_GROUP,
        kind: "TLSRoute",
        spec: tls_route_spec,
        status: Some(gateway::route_status),
    },
    Schema {
        group: GATEWAY_GROUP,
        kind: "TCPRoute",
        spec: |_| gateway::tcp_route_spec(),
        status: Some(gateway::route_status),
    },
    Schema {
        group: POLICY_GROUP,
        kind: "Server",
        spec: server_spec,
        status: None,
    },
    Schema {
        group: POLICY_GROUP,
        kind: "AuthorizationPolicy",
        spec: |_| authorization_policy_spec(),
        status: None,
    },
    Schema {
        group: POLICY_GROUP,
        kind: "MeshTLSAuthentication",
        spec: |_| mesh_tls_spec(),
        status: None,
    },
    Schema {
        group: POLICY_GROUP,
        kind: "NetworkAuthentication",
        spec: |_| obj_req(&[("networks", array(network()))], &["networks"]),
        status: None,
    },
    Schema {
        group: POLICY_GROUP,
        kind: "HTTPRoute",
        spec: |_| gateway::http_route_spec(),
        status: Some(gateway::route_status),
    },
    Schema {
        group: POLICY_GROUP,
        kind: "HTTPLocalRateLimitPolicy",
        spec: |_| rate_limit_spec(),
        status: Some(rate_limit_status),
    },
    Schema {
        group: POLICY_GROUP,
        kind: "EgressNetwork",
        spec: |_| {
            obj_req(
                &[
                    ("networks", array(network())),
                    ("trafficPolicy", string_enum(&["Allow", "Deny"])),
                ],
                &["trafficPolicy"],
            )
        },
        status: Some(conditions_status),
    },
    Schema {
        group: kinds::WORKLOAD_GROUP,
        kind: "ExternalWorkload",
        spec: |_| external_workload_spec(),
        status: Some(conditions_status),
    },
    Schema {
        group: WEFT_EXTENSIONS_GROUP,
        kind: FAULT_INJECTION_KIND,
        spec: |_| fault_injection_spec(),
        status: None,
    },
    Schema {
        group: MULTICLUSTER_GROUP,
        kind: LINK_KIND,
        spec: link_spec,
        status: None,
    },
];

/// Linkerd's `Link` fields (ports are strings there); v1alpha3 added the federated services'
/// selector and the probe's `failureThreshold` and `timeout`.
fn link_spec(version: &str) -> Value {
    let mut probe = vec![("path", string()), ("port", string()), ("period", string())];
    let mut fields = vec![
        ("targetClusterName", string()),
        ("targetClusterDomain", string()),
        ("targetClusterLinkerdNamespace", string()),
        ("clusterCredentialsSecret", string()),
        ("gatewayAddress", string()),
        ("gatewayPort", string()),
        ("gatewayIdentity", string()),
        ("selector", label_selector()),
        ("remoteDiscoverySelector", label_selector()),
    ];
    if version == "v1alpha3" {
        probe.push(("failureThreshold", string()));
        probe.push(("timeout", string()));
        fields.push(("federatedServiceSelector", label_selector()));
    }
    fields.push(("probeSpec", obj(&probe)));
    obj(&fields)
}

/// v1alpha3 made `hostnames` required (at least one SNI name).
fn tls_route_spec(version: &str) -> Value {
    let mut spec = gateway::tls_route_spec();
    if version == "v1alpha3" {
        spec["required"] = json!(["hostnames", "rules"]);
        spec["properties"]["hostnames"]["minItems"] = json!(1);
    }
    spec
}

/// `Server.spec`: v1beta2 added `externalWorkloadSelector` (one of the two selectors),
/// v1beta3 `accessPolicy`.
fn server_spec(version: &str) -> Value {
    let mut fields = vec![
        ("podSelector", label_selector()),
        ("port", int_or_string()),
        ("proxyProtocol", with_default(string(), "unknown")),
    ];
    if version == "v1beta1" {
        return obj_req(&fields, &["podSelector", "port"]);
    }
    fields.push(("externalWorkloadSelector", label_selector()));
    if version == "v1beta3" {
        fields.push(("accessPolicy", with_default(string(), "deny")));
    }
    one_of_required(
        obj_req(&fields, &["port"]),
        &[&["podSelector"], &["externalWorkloadSelector"]],
    )
}

/// A reference as Linkerd's policy CRDs spell it: `group`, `kind`, `name`, and `namespace`
/// when `namespace` is `Some(schema)`.
fn linkerd_ref(namespace: Option<Value>, required: &[&str]) -> Value {
    let mut fields = vec![
        ("group", string_pattern(GROUP_PATTERN, 0, 253)),
        ("kind", string_pattern(KIND_PATTERN, 1, 63)),
        ("name", string_max(1, 253)),
    ];
    if let Some(ns) = namespace {
        fields.push(("namespace", ns));
    }
    obj_req(&fields, required)
}

fn authorization_policy_spec() -> Value {
    obj_req(
        &[
            ("targetRef", linkerd_ref(None, &["kind", "name"])),
            (
                "requiredAuthenticationRefs",
                array(linkerd_ref(Some(string_max(0, 253)), &["kind", "name"])),
            ),
        ],
        &["targetRef", "requiredAuthenticationRefs"],
    )
}

fn mesh_tls_spec() -> Value {
    let identity = json!({
        "type": "string",
        "pattern": r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    });
    one_of_required(
        obj(&[
            ("identities", array(identity)),
            (
                "identityRefs",
                array(linkerd_ref(Some(string_max(0, 253)), &["kind"])),
            ),
        ]),
        &[&["identities"], &["identityRefs"]],
    )
}

fn network() -> Value {
    obj_req(
        &[("cidr", string()), ("except", array(string()))],
        &["cidr"],
    )
}

fn requests_per_second() -> Value {
    json!({"type": "integer", "format": "int64"})
}

fn rate_limit_spec() -> Value {
    let limit = || {
        obj_req(
            &[("requestsPerSecond", requests_per_second())],
            &["requestsPerSecond"],
        )
    };
    let client = linkerd_ref(
        Some(string_pattern(LABEL_PATTERN, 1, 63)),
        &["kind", "name"],
    );
    obj_req(
        &[
            ("targetRef", linkerd_ref(None, &["kind", "name"])),
            ("total", limit()),
            ("identity", limit()),
            (
                "overrides",
                array(obj_req(
                    &[
                        ("requestsPerSecond", requests_per_second()),
                        ("clientRefs", array(client)),
                    ],
                    &["requestsPerSecond", "clientRefs"],
                )),
            ),
        ],
        &["targetRef"],
    )
}

/// Linkerd's status: conditions and the target the policy was accepted for.
fn rate_limit_status() -> Value {
    let mut status = conditions_status();
    let mut target = linkerd_ref(None, &["name"]);
    target["properties"]["group"]["default"] = json!(POLICY_GROUP);
    target["properties"]["kind"]["default"] = json!("Server");
    status["properties"]["targetRef"] = target;
    status["required"] = json!(["targetRef"]);
    status
}

/// Upstream requires `meshTLS` with `identity` and `serverName`; Weft's control plane derives
/// each from the name when absent (`resource::validate_one`), so the CRD accepts what the
/// control plane accepts.
fn external_workload_spec() -> Value {
    obj(&[
        (
            "meshTLS",
            obj(&[
                ("identity", string_max(1, 253)),
                ("serverName", string_max(1, 253)),
            ]),
        ),
        (
            "ports",
            array(obj_req(
                &[
                    ("name", string()),
                    ("port", int32(1, 65535)),
                    ("protocol", string()),
                ],
                &["port"],
            )),
        ),
        (
            "workloadIPs",
            json!({"type": "array", "maxItems": 1, "items": obj(&[("ip", string())])}),
        ),
    ])
}

/// Weft's own filter (`docs/traffic.md`), referenced from a route's `ExtensionRef`.
fn fault_injection_spec() -> Value {
    obj(&[
        ("status", int32(100, 599)),
        ("grpcCode", int32(1, 16)),
        ("message", string()),
        (
            "ratio",
            obj_req(
                &[
                    ("numerator", int32(0, i32::MAX as i64)),
                    ("denominator", int32(1, i32::MAX as i64)),
                ],
                &["numerator"],
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_custom_kind_has_one_schema_and_every_schema_a_kind() {
        assert_eq!(CRDS.len(), SCHEMAS.len());
        for schema in SCHEMAS {
            let row = kinds::find(schema.group, schema.kind);
            assert_eq!(
                row.map(|r| r.origin),
                Some(Origin::Custom),
                "{}.{}",
                schema.kind,
                schema.group
            );
        }
    }
}
