//! The CRDs of `weft install --crds`: every schema is structural (the API server refuses a
//! `apiextensions.k8s.io/v1` CRD whose schema is not), each kind is served at exactly the API
//! versions the control plane accepts, and every example of these kinds in `docs/` and in the
//! tests' YAML that the control plane accepts also validates against our schema with unknown
//! fields refused (so a CRD never rejects or prunes what Weft reads).

#[path = "k8s/mod.rs"]
mod k8s;

use std::process::Command;

use k8s::{parse_docs, repo_root, weft_stdout};
use serde_json::{json, Value};
use weft_control::documents::parse_yaml_documents;
use weft_control::resource::Defaults;

fn crds() -> Vec<Value> {
    parse_docs(&weft_stdout(&["install", "--crds"]))
}

/// The rules of a structural schema, from the Kubernetes documentation ("Specifying a
/// structural schema", tasks/extend-kubernetes/custom-resources/custom-resource-definitions) and
/// the apiextensions v1 validation (`apiextensions-apiserver` `validation.go`):
///
/// 1. every node has a non-empty `type`, except one with `x-kubernetes-int-or-string: true` or
///    `x-kubernetes-preserve-unknown-fields: true`; the root is an `object`;
/// 2. a field or item named inside `allOf`/`anyOf`/`oneOf`/`not` is also specified outside;
/// 3. inside those junctors: no `description`, `type`, `default`, `additionalProperties`,
///    `nullable` (nor `x-kubernetes-*`);
/// 4. under `metadata` only `name` and `generateName` may be restricted;
/// 5. v1 CRDs: `properties` and `additionalProperties` are exclusive, `additionalProperties`
///    is never `false`, `uniqueItems` is never `true`, and `$ref`, `definitions`,
///    `dependencies`, `patternProperties`, `additionalItems`, `id`, `$schema`, `title`... are
///    refused; `x-kubernetes-int-or-string` carries no `type`.
///
/// Returns every violation as `path: rule`.
fn structural_errors(root: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    if root["type"] != "object" {
        errors.push("(root): rule 1: the root must be of type object".into());
    }
    node(root, "", false, &mut errors);
    if let Some(meta) = root["properties"].get("metadata") {
        let extra: Vec<&String> = meta
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| {
                p.keys()
                    .filter(|k| *k != "name" && *k != "generateName")
                    .collect()
            })
            .unwrap_or_default();
        if !extra.is_empty()
            || meta
                .as_object()
                .is_some_and(|m| m.keys().any(|k| k != "type" && k != "properties"))
        {
            errors.push(format!(
                "metadata: rule 4: only name and generateName may be restricted, got {meta}"
            ));
        }
    }
    errors
}

const FORBIDDEN: &[&str] = &[
    "$ref",
    "$schema",
    "definitions",
    "dependencies",
    "patternProperties",
    "additionalItems",
    "id",
    "title",
    "readOnly",
    "discriminator",
    "xml",
    "deprecated",
];
const JUNCTORS: &[&str] = &["allOf", "anyOf", "oneOf", "not"];

fn node(s: &Value, path: &str, in_junctor: bool, errors: &mut Vec<String>) {
    let Some(m) = s.as_object() else {
        errors.push(format!("{path}: not a schema object: {s}"));
        return;
    };
    let at = if path.is_empty() { "(root)" } else { path };
    let int_or_string = m.get("x-kubernetes-int-or-string") == Some(&json!(true));
    let preserve = m.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if in_junctor {
        for k in [
            "description",
            "type",
            "default",
            "additionalProperties",
            "nullable",
        ] {
            if m.contains_key(k) {
                errors.push(format!("{at}: rule 3: `{k}` inside a junctor"));
            }
        }
        if m.keys().any(|k| k.starts_with("x-kubernetes-")) {
            errors.push(format!("{at}: rule 3: x-kubernetes-* inside a junctor"));
        }
    } else if int_or_string {
        if m.contains_key("type") {
            errors.push(format!(
                "{at}: rule 5: x-kubernetes-int-or-string with a type"
            ));
        }
    } else if !preserve
        && m.get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        errors.push(format!("{at}: rule 1: no type"));
    }
    for k in FORBIDDEN {
        if m.contains_key(*k) {
            errors.push(format!("{at}: rule 5: `{k}` is not allowed"));
        }
    }
    if m.get("uniqueItems") == Some(&json!(true)) {
        errors.push(format!("{at}: rule 5: uniqueItems: true"));
    }
    if m.get("additionalProperties") == Some(&json!(false)) {
        errors.push(format!("{at}: rule 5: additionalProperties: false"));
    }
    if m.contains_key("properties") && m.contains_key("additionalProperties") {
        errors.push(format!(
            "{at}: rule 5: both properties and additionalProperties"
        ));
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            node(v, &format!("{path}.{k}"), in_junctor, errors);
        }
    }
    if let Some(items) = m.get("items") {
        node(items, &format!("{path}[]"), in_junctor, errors);
    }
    if let Some(extra) = m.get("additionalProperties").filter(|v| v.is_object()) {
        node(extra, &format!("{path}.*"), in_junctor, errors);
    }
    for j in JUNCTORS {
        let alternatives = match m.get(*j) {
            Some(Value::Array(a)) => a.clone(),
            Some(one) => vec![one.clone()],
            None => continue,
        };
        for (i, alt) in alternatives.iter().enumerate() {
            let here = format!("{path}.{j}[{i}]");
            node(alt, &here, true, errors);
            // Rule 2: what a junctor names is specified outside it.
            for (field, outside) in [("properties", "properties"), ("items", "items")] {
                if let Some(inner) = alt.get(field) {
                    let declared = m.get(outside);
                    let missing = match (inner, declared) {
                        (Value::Object(inner), Some(Value::Object(d))) if field == "properties" => {
                            inner.keys().any(|k| !d.contains_key(k))
                        }
                        (_, Some(_)) => false,
                        (_, None) => true,
                    };
                    if missing {
                        errors.push(format!(
                            "{here}: rule 2: `{field}` not specified outside the junctor"
                        ));
                    }
                }
            }
            if let Some(req) = alt.get("required").and_then(Value::as_array) {
                for r in req {
                    let name = r.as_str().unwrap_or("");
                    if m.get("properties").is_none_or(|p| p.get(name).is_none()) {
                        errors.push(format!("{here}: rule 2: required {r} is not a property"));
                    }
                }
            }
        }
    }
}

#[test]
fn the_structural_checker_finds_each_kind_of_violation() {
    let bad = [
        (
            json!({"type": "object", "properties": {"a": {"description": "no type"}}}),
            "rule 1",
        ),
        (json!({"type": "string"}), "rule 1"),
        (
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "oneOf": [{"required": ["b"]}]}),
            "rule 2",
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "anyOf": [{"properties": {"b": {}}}]}),
            "rule 2",
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "anyOf": [{"type": "object"}]}),
            "rule 3",
        ),
        (
            json!({"type": "object", "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}}),
            "rule 4",
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}}),
            "rule 5",
        ),
        (
            json!({"type": "object", "additionalProperties": false}),
            "rule 5",
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}, "uniqueItems": true}}}),
            "rule 5",
        ),
        (
            json!({"type": "object", "properties": {"a": {"$ref": "#/definitions/x"}}}),
            "rule 5",
        ),
        (
            json!({"type": "object", "properties": {"p": {"type": "integer", "x-kubernetes-int-or-string": true}}}),
            "rule 5",
        ),
    ];
    for (schema, rule) in bad {
        let errors = structural_errors(&schema);
        assert!(
            errors.iter().any(|e| e.contains(rule)),
            "{schema} should break {rule}: {errors:?}"
        );
    }
    let good = json!({"type": "object", "properties": {
        "metadata": {"type": "object"},
        "p": {"x-kubernetes-int-or-string": true},
        "m": {"type": "object", "additionalProperties": {"type": "string"}},
        "s": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
              "oneOf": [{"required": ["a"]}, {"required": ["b"]}]},
    }});
    assert_eq!(structural_errors(&good), Vec::<String>::new());
}

#[test]
fn every_crd_schema_is_structural() {
    let crds = crds();
    assert!(!crds.is_empty());
    for crd in &crds {
        let name = crd["metadata"]["name"].as_str().unwrap();
        let group = crd["spec"]["group"].as_str().unwrap();
        if group.ends_with(".k8s.io") {
            // The API server refuses a CRD of a protected group without this (KEP-1111).
            assert!(
                crd["metadata"]["annotations"]["api-approved.kubernetes.io"].is_string(),
                "{name}: api-approved.kubernetes.io"
            );
        }
        let versions = crd["spec"]["versions"].as_array().unwrap();
        assert_eq!(
            versions.iter().filter(|v| v["storage"] == true).count(),
            1,
            "{name}: one storage version"
        );
        for v in versions {
            let schema = &v["schema"]["openAPIV3Schema"];
            let errors = structural_errors(schema);
            assert!(
                errors.is_empty(),
                "{name} {}: not structural:\n{}",
                v["name"],
                errors.join("\n")
            );
            assert!(
                schema["properties"]["spec"]["properties"].is_object(),
                "{name}: spec has fields"
            );
        }
    }
}

/// Each CRD serves a version exactly when the control plane accepts documents of that version.
#[test]
fn crds_serve_exactly_the_versions_the_control_plane_accepts() {
    const CANDIDATES: &[&str] = &[
        "v1alpha1", "v1alpha2", "v1alpha3", "v1beta1", "v1beta2", "v1beta3", "v1",
    ];
    for crd in crds() {
        let group = crd["spec"]["group"].as_str().unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
        let served: Vec<&str> = crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["served"] == true)
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        for version in CANDIDATES {
            let doc = format!(
                "apiVersion: {group}/{version}\nkind: {kind}\nmetadata: {{name: x}}\nspec: {{}}\n"
            );
            let parsed = parse_yaml_documents("probe.yaml", &doc, &Defaults::default());
            let accepted = !parsed.errors().any(|e| e.contains("apiVersion"));
            assert_eq!(
                accepted,
                served.contains(version),
                "{kind}.{group}/{version}: control plane accepts: {accepted}, CRD serves: {served:?}"
            );
        }
    }
}

/// ```yaml blocks of Markdown.
fn markdown_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```yaml\n").or_else(|| rest.find("```yml\n")) {
        let body = &rest[start..];
        let body = &body[body.find('\n').unwrap() + 1..];
        let Some(end) = body.find("```") else { break };
        out.push(body[..end].to_string());
        rest = &body[end + 3..];
    }
    out
}

/// Raw string literals (`r#"..."#`) of Rust sources that look like documents.
fn raw_strings(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("r#\"") {
        let body = &rest[start + 3..];
        let Some(end) = body.find("\"#") else { break };
        if body[..end].contains("apiVersion") {
            out.push(body[..end].to_string());
        }
        rest = &body[end + 2..];
    }
    out
}

fn rust_test_sources() -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![repo_root().join("crates")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                dirs.push(path);
            } else if name.ends_with(".rs")
                && (name.ends_with("_tests.rs") || path.parent().unwrap().ends_with("tests"))
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn examples_the_control_plane_accepts_validate_against_the_crds() {
    let Some(python) = k8s::python_with_jsonschema() else {
        return;
    };
    let defaults = Defaults::default();
    let mut accepted = String::new();
    let mut add = |source: &str, text: &str, must_accept: bool| {
        let parsed = parse_yaml_documents(source, text, &defaults);
        if must_accept {
            // Docs show only valid documents (a fragment without a kind is no document).
            let errors: Vec<&String> = parsed.errors().filter(|e| !e.contains("kind")).collect();
            assert!(
                errors.is_empty(),
                "{source}: the control plane rejects a documented example: {errors:?}"
            );
        }
        for doc in &parsed.docs {
            // The one known difference: the control plane lowercases hostnames
            // (`route_tests` checks `*.Example.org`), the Gateway API's pattern refuses upper
            // case. Docs must show upstream-valid names, so this applies to tests only.
            let upper_host = doc.source["spec"]["hostnames"].as_array().is_some_and(|h| {
                h.iter().any(|n| {
                    n.as_str()
                        .is_some_and(|s| s.chars().any(|c| c.is_ascii_uppercase()))
                })
            });
            if upper_host && !must_accept {
                continue;
            }
            // As JSON (valid YAML): a YAML 1.2 emitter leaves `yes` unquoted, which a YAML 1.1
            // reader (PyYAML, as kubectl's) takes for a boolean.
            accepted.push_str("---\n");
            accepted.push_str(&serde_json::to_string(&*doc.source).unwrap());
            accepted.push('\n');
        }
    };
    let docs_dir = repo_root().join("docs");
    let mut md: Vec<_> = std::fs::read_dir(&docs_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    md.sort();
    for path in md
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
    {
        for (i, block) in markdown_blocks(&std::fs::read_to_string(path).unwrap())
            .iter()
            .enumerate()
        {
            add(&format!("{} block {i}", path.display()), block, true);
        }
    }
    for path in rust_test_sources() {
        for (i, s) in raw_strings(&std::fs::read_to_string(&path).unwrap())
            .iter()
            .enumerate()
        {
            // Tests also hold documents that must be refused: only the accepted ones count.
            add(&format!("{} string {i}", path.display()), s, false);
        }
    }
    let dir = std::env::temp_dir().join(format!("weft-crd-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (crd_file, examples, bad) = (
        dir.join("crds.yaml"),
        dir.join("examples.yaml"),
        dir.join("bad.yaml"),
    );
    std::fs::write(&crd_file, weft_stdout(&["install", "--crds"])).unwrap();
    std::fs::write(&examples, &accepted).unwrap();
    // Negative control: an unknown field, a wrong type and a bad enum value must each fail.
    std::fs::write(
        &bad,
        "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {name: s}\n\
         spec: {podSelector: {matchExpressions: [{key: app, operator: Near}]}, port: [80], colour: red}\n",
    )
    .unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/k8s/validate_crs.py");
    let run_with = |crds: &std::path::Path, file: &std::path::Path| {
        let out = Command::new(python)
            .arg(&script)
            .arg(crds)
            .arg(file)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let run = |file: &std::path::Path| run_with(&crd_file, file);
    let (ok, report) = run(&bad);
    assert!(!ok, "the bad Server validated: {report}");
    // And a CRD whose default does not fit its own schema is refused.
    let mut broken = crds();
    let server = broken
        .iter_mut()
        .find(|c| c["metadata"]["name"] == "servers.policy.linkerd.io")
        .unwrap();
    server["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["accessPolicy"]["default"] = json!(7);
    let broken_file = dir.join("broken-crds.yaml");
    let broken_text: String = broken.iter().map(|c| format!("---\n{c}\n")).collect();
    std::fs::write(&broken_file, broken_text).unwrap();
    let (broken_ok, broken_report) = run_with(&broken_file, &examples);
    assert!(
        !broken_ok && broken_report.contains("spec.accessPolicy: default 7"),
        "a bad default passed: {broken_report}"
    );
    for needle in [
        "spec.port",
        "spec.podSelector.matchExpressions.0.operator",
        "'colour' was unexpected",
    ] {
        assert!(report.contains(needle), "no error for {needle}: {report}");
    }
    let (ok, report) = run(&examples);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        ok,
        "examples the control plane accepts fail our CRDs:\n{report}"
    );
    let summary: Value = serde_json::from_str(report.lines().last().unwrap()).unwrap();
    let checked = summary["checked"].as_object().unwrap();
    // Every kind the docs show was checked at least once.
    for kind in [
        "HTTPRoute.gateway.networking.k8s.io/v1",
        "GRPCRoute.gateway.networking.k8s.io/v1",
        "TLSRoute.gateway.networking.k8s.io/v1alpha3",
        "TCPRoute.gateway.networking.k8s.io/v1alpha2",
        "Server.policy.linkerd.io/v1beta3",
        "AuthorizationPolicy.policy.linkerd.io/v1alpha1",
        "MeshTLSAuthentication.policy.linkerd.io/v1alpha1",
        "HTTPLocalRateLimitPolicy.policy.linkerd.io/v1alpha1",
        "EgressNetwork.policy.linkerd.io/v1alpha1",
        "ExternalWorkload.workload.linkerd.io/v1beta1",
        "FaultInjection.extensions.weft.dev/v1alpha1",
    ] {
        assert!(
            checked.get(kind).is_some_and(|n| n.as_u64() >= Some(1)),
            "no {kind} example checked: {summary}"
        );
    }
}
