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
                    ("operator", string()),
                    ("values", array(string())),
                ],
                &["key", "operator"],
            )),
        ),
    ])
}

/// A `metav1.Condition` (status conditions).
pub fn condition() -> Value {
    obj_req(
        &[
            ("type", string_max(1, 316)),
            ("status", string_enum(&["True", "False", "Unknown"])),
            (
                "observedGeneration",
                json!({"type": "integer", "format": "int64", "minimum": 0}),
            ),
            (
                "lastTransitionTime",
                json!({"type": "string", "format": "date-time"}),
            ),
            ("reason", string_max(1, 1024)),
            ("message", string_max(0, 32768)),
        ],
        &["type", "status", "lastTransitionTime", "reason", "message"],
    )
}

/// `status: {conditions: [...]}`, as Linkerd's EgressNetwork and ExternalWorkload have.
pub fn conditions_status() -> Value {
    obj(&[("conditions", array(condition()))])
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
