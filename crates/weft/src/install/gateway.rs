//! The `spec` schemas of the route kinds (Gateway API's HTTPRoute, GRPCRoute, TLSRoute,
//! TCPRoute; Linkerd's `policy.linkerd.io` HTTPRoute shares HTTPRoute's), with the upstream
//! fields (gateway-api `apis/v1/httproute_types.go`, `grpcroute_types.go`,
//! `apis/v1alpha2/tlsroute_types.go`, `tcproute_types.go`, `shared_types.go`).

use serde_json::Value;

use weft_control::resource::route::GATEWAY_GROUP;

use super::schema::{
    array_max, condition, int32, obj, obj_req, string, string_enum, string_max, string_pattern,
    with_default, GROUP_PATTERN, KIND_PATTERN, LABEL_PATTERN,
};

fn group() -> Value {
    string_pattern(GROUP_PATTERN, 0, 253)
}

fn kind() -> Value {
    string_pattern(KIND_PATTERN, 1, 63)
}

fn namespace() -> Value {
    string_pattern(LABEL_PATTERN, 1, 63)
}

/// A `Hostname`: a DNS name, optionally with a leading `*.` label.
fn hostname() -> Value {
    string_pattern(
        r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        1,
        253,
    )
}

fn name() -> Value {
    string_max(1, 253)
}

fn port() -> Value {
    int32(1, 65535)
}

/// `ParentReference` (shared_types.go).
fn parent_ref() -> Value {
    obj_req(
        &[
            ("group", with_default(group(), GATEWAY_GROUP)),
            ("kind", with_default(kind(), "Gateway")),
            ("namespace", namespace()),
            ("name", name()),
            (
                "sectionName",
                string_pattern(
                    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
                    1,
                    253,
                ),
            ),
            ("port", port()),
        ],
        &["name"],
    )
}

/// `BackendObjectReference` (+ `weight` for `BackendRef`).
fn backend_ref_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("group", with_default(group(), "")),
        ("kind", with_default(kind(), "Service")),
        ("name", name()),
        ("namespace", namespace()),
        ("port", port()),
        ("weight", with_default(int32(0, 1_000_000), 1)),
    ]
}

fn backend_ref() -> Value {
    obj_req(&backend_ref_fields(), &["name"])
}

fn header_value() -> Value {
    obj_req(
        &[("name", string_max(1, 256)), ("value", string_max(1, 4096))],
        &["name", "value"],
    )
}

/// `HTTPHeaderFilter`: set/add/remove.
fn header_modifier() -> Value {
    obj(&[
        ("set", array_max(header_value(), 16)),
        ("add", array_max(header_value(), 16)),
        ("remove", array_max(string(), 16)),
    ])
}

fn path_modifier() -> Value {
    obj_req(
        &[
            (
                "type",
                string_enum(&["ReplaceFullPath", "ReplacePrefixMatch"]),
            ),
            ("replaceFullPath", string_max(0, 1024)),
            ("replacePrefixMatch", string_max(0, 1024)),
        ],
        &["type"],
    )
}

fn request_mirror() -> Value {
    obj_req(
        &[
            (
                "backendRef",
                obj_req(
                    &backend_ref_fields()
                        .into_iter()
                        .filter(|(k, _)| *k != "weight")
                        .collect::<Vec<_>>(),
                    &["name"],
                ),
            ),
            ("percent", int32(0, 100)),
            (
                "fraction",
                obj_req(
                    &[
                        ("numerator", int32(0, i32::MAX as i64)),
                        ("denominator", int32(1, i32::MAX as i64)),
                    ],
                    &["numerator"],
                ),
            ),
        ],
        &["backendRef"],
    )
}

fn extension_ref() -> Value {
    obj_req(
        &[("group", group()), ("kind", kind()), ("name", name())],
        &["group", "kind", "name"],
    )
}

/// `HTTPRouteFilter`.
fn http_filter() -> Value {
    obj_req(
        &[
            (
                "type",
                string_enum(&[
                    "RequestHeaderModifier",
                    "ResponseHeaderModifier",
                    "RequestMirror",
                    "RequestRedirect",
                    "URLRewrite",
                    "ExtensionRef",
                ]),
            ),
            ("requestHeaderModifier", header_modifier()),
            ("responseHeaderModifier", header_modifier()),
            ("requestMirror", request_mirror()),
            (
                "requestRedirect",
                obj(&[
                    ("scheme", string_enum(&["http", "https"])),
                    ("hostname", hostname()),
                    ("path", path_modifier()),
                    ("port", port()),
                    ("statusCode", json_enum_int(&[301, 302, 303, 307, 308])),
                ]),
            ),
            (
                "urlRewrite",
                obj(&[("hostname", hostname()), ("path", path_modifier())]),
            ),
            ("extensionRef", extension_ref()),
        ],
        &["type"],
    )
}

fn json_enum_int(values: &[i64]) -> Value {
    serde_json::json!({"type": "integer", "enum": values})
}

/// `HTTPHeaderMatch` / `HTTPQueryParamMatch` / `GRPCHeaderMatch`.
fn value_match() -> Value {
    obj_req(
        &[
            ("type", string_enum(&["Exact", "RegularExpression"])),
            ("name", string_max(1, 256)),
            ("value", string_max(1, 4096)),
        ],
        &["name", "value"],
    )
}

fn http_match() -> Value {
    obj(&[
        (
            "path",
            obj(&[
                (
                    "type",
                    with_default(
                        string_enum(&["Exact", "PathPrefix", "RegularExpression"]),
                        "PathPrefix",
                    ),
                ),
                ("value", with_default(string_max(0, 1024), "/")),
            ]),
        ),
        ("headers", array_max(value_match(), 16)),
        ("queryParams", array_max(value_match(), 16)),
        (
            "method",
            string_enum(&[
                "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
            ]),
        ),
    ])
}

fn route_name() -> Value {
    string_max(1, 253)
}

fn common_spec(rules: Value, hostnames: bool) -> Vec<(&'static str, Value)> {
    let mut fields = vec![("parentRefs", array_max(parent_ref(), 32))];
    if hostnames {
        fields.push(("hostnames", array_max(hostname(), 16)));
    }
    fields.push(("rules", array_max(rules, 16)));
    fields
}

/// `HTTPRoute.spec` (Gateway API v1; Linkerd's policy.linkerd.io HTTPRoute has the same).
pub fn http_route_spec() -> Value {
    let mut backend = backend_ref_fields();
    backend.push(("filters", array_max(http_filter(), 16)));
    let rule = obj(&[
        ("name", route_name()),
        ("matches", array_max(http_match(), 64)),
        ("filters", array_max(http_filter(), 16)),
        ("backendRefs", array_max(obj_req(&backend, &["name"]), 16)),
        (
            "timeouts",
            obj(&[("request", string()), ("backendRequest", string())]),
        ),
    ]);
    obj(&common_spec(rule, true))
}

/// `GRPCRoute.spec` (Gateway API v1).
pub fn grpc_route_spec() -> Value {
    let filter = obj_req(
        &[
            (
                "type",
                string_enum(&[
                    "ResponseHeaderModifier",
                    "RequestHeaderModifier",
                    "RequestMirror",
                    "ExtensionRef",
                ]),
            ),
            ("requestHeaderModifier", header_modifier()),
            ("responseHeaderModifier", header_modifier()),
            ("requestMirror", request_mirror()),
            ("extensionRef", extension_ref()),
        ],
        &["type"],
    );
    let mut backend = backend_ref_fields();
    backend.push(("filters", array_max(filter.clone(), 16)));
    let grpc_match = obj(&[
        (
            "method",
            obj(&[
                ("type", string_enum(&["Exact", "RegularExpression"])),
                ("service", string_max(0, 1024)),
                ("method", string_max(0, 1024)),
            ]),
        ),
        ("headers", array_max(value_match(), 16)),
    ]);
    let rule = obj(&[
        ("name", route_name()),
        ("matches", array_max(grpc_match, 64)),
        ("filters", array_max(filter, 16)),
        ("backendRefs", array_max(obj_req(&backend, &["name"]), 16)),
    ]);
    obj(&common_spec(rule, true))
}

/// `TLSRoute.spec` (v1alpha2/v1alpha3: v1alpha3 requires `hostnames`; the control plane checks).
pub fn tls_route_spec() -> Value {
    let rule = obj(&[
        ("name", route_name()),
        ("backendRefs", array_max(backend_ref(), 16)),
    ]);
    obj(&common_spec(rule, true))
}

/// `TCPRoute.spec` (v1alpha2).
pub fn tcp_route_spec() -> Value {
    let rule = obj(&[
        ("name", route_name()),
        ("backendRefs", array_max(backend_ref(), 16)),
    ]);
    obj(&common_spec(rule, false))
}

/// `RouteStatus`: one entry per parent the route attaches to.
pub fn route_status() -> Value {
    obj(&[(
        "parents",
        array_max(
            obj_req(
                &[
                    ("parentRef", parent_ref()),
                    ("controllerName", string_max(1, 253)),
                    ("conditions", array_max(condition(), 8)),
                ],
                &["parentRef", "controllerName"],
            ),
            32,
        ),
    )])
}
