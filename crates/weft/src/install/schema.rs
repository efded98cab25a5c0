//! A small builder for the OpenAPI v3 schemas of our CustomResourceDefinitions, so each CRD
//! reads as its fields. Every node it makes is structural (Kubernetes' rules: every node has a
//! `type`, objects list their `properties`, junctors carry no types): the install tests check it.

use serde_json::{json, Map, Value};

/// An object with these properties (none required).
pub fn obj(props: &[(&str, Value)]) -> Value {
    let properties: Map<String, Value> = props
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect();
    json!({"type": "object", "properties": properties})
}

/// An object with these properties, `required` naming the ones that must be present.
pub fn obj_req(props: &[(&str, Value)], required: &[&str]) -> Value {
    let mut o = obj(props);
    o["required"] = json!(required);
    o
}

pub fn string() -> Value {
    json!({"type": "string"})
}

/// A string of at most `max` characters (Gateway API names, hostnames, values).
pub fn string_max(min: u32, max: u32) -> Value {
    json!({"type": "string", "minLength": min, "maxLength": max})
}

pub fn string_enum(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}

pub fn int32(min: i64, max: i64) -> Value {
    json!({"type": "integer", "format": "int32", "minimum": min, "maximum": max})
}

/// `schema` with a `default` the API server fills in when the field is absent (only where the
/// control plane assumes the same value for an absent field).
pub fn with_default(mut schema: Value, default: impl Into<Value>) -> Value {
    schema["default"] = default.into();
    schema
}

/// A port number or a port name (`x-kubernetes-int-or-string`: the one node with no `type`).
pub fn int_or_string() -> Value {
    json!({"x-kubernetes-int-or-string": true})
}

pub fn array(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

pub fn array_max(items: Value, max: u32) -> Value {
    json!({"type": "array", "items": items, "maxItems": max})
}

/// A map of string values (labels, annotations, `matchLabels`).
pub fn string_map() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}})
}

/// A Kubernetes `metav1.LabelSelector`.
pub fn label_selector() -> Value {
    obj(&[
        ("matchLabels", string_map()),
        (
            "matchExpressions",
            array(obj_req(
                &[
                    ("key", string()),
                    (
                        "operator",
                        string_enum(&["In", "NotIn", "Exists", "DoesNotExist"]),
                    ),
                    ("values", array(string())),
                ],
                &["key", "operator"],
            )),
        ),
    ])
}

/// A DNS-1123 subdomain or empty (an API group).
pub const GROUP_PATTERN: &str =
    r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A kind (`Service`, `HTTPRoute`).
pub const KIND_PATTERN: &str = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$";
/// A DNS-1123 label (a namespace).
pub const LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A string matching `pattern`, of `min..=max` characters.
pub fn string_pattern(pattern: &str, min: u32, max: u32) -> Value {
    let mut s = string_max(min, max);
    s["pattern"] = json!(pattern);
    s
}

/// A `metav1.Condition`'s fields (shared by both condition shapes).
fn condition_fields() -> Vec<(&'static str, Value)> {
    vec![
        (
            "type",
            string_pattern(
                r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
                0,
                316,
            ),
        ),
        ("status", string_enum(&["True", "False", "Unknown"])),
        (
            "lastTransitionTime",
            json!({"type": "string", "format": "date-time"}),
        ),
        (
            "reason",
            string_pattern(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", 1, 1024),
        ),
        ("message", string_max(0, 32768)),
    ]
}

/// A `metav1.Condition` as the Gateway API's route status has it (every field required).
pub fn condition() -> Value {
    let mut fields = condition_fields();
    fields.push((
        "observedGeneration",
        json!({"type": "integer", "format": "int64", "minimum": 0}),
    ));
    obj_req(
        &fields,
        &["type", "status", "lastTransitionTime", "reason", "message"],
    )
}

/// `status: {conditions: [...]}` as Linkerd's CRDs write it (EgressNetwork, ExternalWorkload,
/// HTTPLocalRateLimitPolicy): only `type` and `status` required; `lastProbeTime` as well.
pub fn conditions_status() -> Value {
    let mut fields = condition_fields();
    fields.push((
        "lastProbeTime",
        json!({"type": "string", "format": "date-time"}),
    ));
    obj(&[("conditions", array(obj_req(&fields, &["status", "type"])))])
}

/// Adds `oneOf` alternatives that only name required fields (structural: a junctor sets no
/// type, Kubernetes' rule 3).
pub fn one_of_required(mut schema: Value, alternatives: &[&[&str]]) -> Value {
    let alts: Vec<Value> = alternatives
        .iter()
        .map(|req| json!({"required": req}))
        .collect();
    schema["oneOf"] = Value::Array(alts);
    schema
}
