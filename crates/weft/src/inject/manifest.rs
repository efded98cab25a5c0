//! Walking a multi-document YAML manifest for `weft inject`/`uninject`: each document between
//! `---` lines is parsed on its own; one holding a pod template (Deployment, StatefulSet,
//! DaemonSet, ReplicaSet, Job, CronJob, Pod, or a List of them) is rewritten, keeping its keys
//! in their original order and the comment lines heading it; every other document keeps its
//! bytes, comments included. A rewritten document loses the comments inside it and its quoting
//! and flow styles (YAML's serializer writes block style), and anchors are expanded.

use serde_json::Value;
use weft_control::inject::{self as core, Injector, Outcome};
use weft_control::store::edit::split;
use yaml_serde::Value as Yaml;

/// The rewritten text, what could not be done and what was left alone on purpose (one line
/// each).
pub struct Output {
    pub text: String,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

/// What happens to each pod template: `Ok(true)` when it changed.
type Edit<'a> = dyn FnMut(&mut Value) -> Result<bool, String> + 'a;

pub fn inject(text: &str, injector: &Injector, annotate_only: bool) -> Output {
    let no_namespace = Default::default();
    let mut skipped = Vec::new();
    let mut out = rewrite(text, &mut |template| {
        let annotations = core::annotations(template.get("metadata"));
        if annotations.get(core::INJECT_ANNOTATION).map(String::as_str) == Some("disabled") {
            skipped.push(());
            return Ok(false);
        }
        let mut changed = false;
        if !annotations.contains_key(core::INJECT_ANNOTATION) {
            let meta = object(template, "metadata");
            object(meta, "annotations")
                .as_object_mut()
                .expect("an object")
                .insert(core::INJECT_ANNOTATION.into(), "enabled".into());
            changed = true;
        }
        if annotate_only {
            return Ok(changed);
        }
        match injector.inject(template, &no_namespace) {
            Ok(Outcome::Injected) => Ok(true),
            Ok(_) => Ok(changed),
            Err(e) => Err(e.to_string()),
        }
    });
    if !skipped.is_empty() {
        out.notes.push(format!(
            "{} pod template(s) with {}: disabled left as they were",
            skipped.len(),
            core::INJECT_ANNOTATION
        ));
    }
    out
}

pub fn uninject(text: &str) -> Output {
    rewrite(text, &mut |template| {
        let mut changed = core::uninject(template);
        if let Some(meta) = template.get_mut("metadata").and_then(Value::as_object_mut) {
            let inject = meta.get("annotations").map(|a| &a[core::INJECT_ANNOTATION]);
            if inject.is_some_and(|v| v == "enabled") {
                changed |= core::remove_key(meta, "annotations", core::INJECT_ANNOTATION);
            }
        }
        // A template without metadata got one from `weft inject`.
        if changed
            && template["metadata"]
                .as_object()
                .is_some_and(|m| m.is_empty())
        {
            template.as_object_mut().map(|t| t.remove("metadata"));
        }
        Ok(changed)
    })
}

/// `value[key]`, made an object if it is missing or not one.
fn object<'a>(value: &'a mut Value, key: &str) -> &'a mut Value {
    let v = &mut value[key];
    if !v.is_object() {
        *v = Value::Object(Default::default());
    }
    v
}

fn rewrite(text: &str, edit: &mut Edit<'_>) -> Output {
    let mut problems = Vec::new();
    let mut out = String::with_capacity(text.len() * 2);
    let mut copied = 0;
    for (n, range) in split(text).into_iter().enumerate() {
        let piece = &text[range.clone()];
        let Ok(yaml) = yaml_serde::from_str::<Yaml>(piece) else {
            // Not one YAML document: kubectl will say what is wrong with it.
            problems.push(format!("document {}: not valid YAML, left as it is", n + 1));
            continue;
        };
        let Ok(mut doc) = serde_json::to_value(&yaml) else {
            continue;
        };
        let mut changed = false;
        walk(&mut doc, edit, &mut changed, &mut |what, e| {
            problems.push(format!("document {} ({what}): {e}", n + 1))
        });
        if !changed {
            continue;
        }
        match yaml_serde::to_string(&ordered(&doc, Some(&yaml))) {
            Ok(s) => {
                out.push_str(&text[copied..range.start]);
                out.push_str(heading_comments(piece));
                out.push_str(&s);
                copied = range.end;
            }
            Err(e) => problems.push(format!("document {}: writing YAML: {e}", n + 1)),
        }
    }
    out.push_str(&text[copied..]);
    Output {
        text: out,
        problems,
        notes: Vec::new(),
    }
}

/// The comment and blank lines a document starts with.
fn heading_comments(piece: &str) -> &str {
    let mut end = 0;
    for line in piece.split_inclusive('\n') {
        let t = line.trim();
        if !(t.is_empty() || t.starts_with('#')) {
            break;
        }
        end += line.len();
    }
    &piece[..end]
}

/// Applies `edit` to the pod templates of `doc` (a List's items too).
fn walk(
    doc: &mut Value,
    edit: &mut Edit<'_>,
    changed: &mut bool,
    report: &mut dyn FnMut(String, String),
) {
    let kind = doc["kind"].as_str().unwrap_or("").to_string();
    let name = doc["metadata"]["name"].as_str().unwrap_or("").to_string();
    let template = match kind.as_str() {
        "List" => {
            if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
                for item in items {
                    walk(item, edit, changed, report);
                }
            }
            return;
        }
        "Pod" => Some(doc),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            doc.pointer_mut("/spec/template")
        }
        "CronJob" => doc.pointer_mut("/spec/jobTemplate/spec/template"),
        _ => return,
    };
    let what = format!("{kind} {name:?}");
    match template {
        None => report(what, "no pod template".into()),
        Some(t) => match edit(t) {
            Ok(c) => *changed |= c,
            Err(e) => report(what, e),
        },
    }
}

/// `new` as YAML, with mapping keys in `old`'s order (new keys after them, `name` first), list
/// items matched by `name` (else by position), and `old`'s scalars where the value is the same.
fn ordered(new: &Value, old: Option<&Yaml>) -> Yaml {
    match new {
        Value::Object(map) => {
            let old_map = old.and_then(Yaml::as_mapping);
            let mut keys: Vec<&String> = Vec::with_capacity(map.len());
            if let Some(o) = old_map {
                keys.extend(
                    o.iter()
                        .filter_map(|(k, _)| k.as_str())
                        .filter_map(|k| map.get_key_value(k).map(|(k, _)| k)),
                );
            }
            let fresh = |k: &&String| old_map.is_none_or(|o| o.get(k.as_str()).is_none());
            keys.extend(map.keys().filter(|k| *k == "name" && fresh(k)));
            keys.extend(map.keys().filter(|k| *k != "name" && fresh(k)));
            let mut out = yaml_serde::Mapping::with_capacity(map.len());
            for k in keys {
                let child = old_map.and_then(|o| o.get(k.as_str()));
                out.insert(Yaml::String(k.clone()), ordered(&map[k], child));
            }
            Yaml::Mapping(out)
        }
        Value::Array(items) => {
            let old_items = old.and_then(Yaml::as_sequence);
            Yaml::Sequence(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let counterpart = old_items.and_then(|o| match item["name"].as_str() {
                            Some(name) => o
                                .iter()
                                .find(|x| x.get("name").and_then(Yaml::as_str) == Some(name)),
                            None => o.get(i),
                        });
                        ordered(item, counterpart)
                    })
                    .collect(),
            )
        }
        scalar => match old {
            Some(o) if serde_json::to_value(o).ok().as_ref() == Some(scalar) => o.clone(),
            _ => yaml_serde::to_value(scalar).unwrap_or(Yaml::Null),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_documents_keep_their_bytes_and_keys_keep_their_order() {
        let text = "# a comment\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {x: \"1\"}\n---\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: a\n    image: b\n";
        let out = uninject(text);
        assert_eq!(out.text, text, "nothing to uninject: unchanged");
        let mut touched = 0;
        let out = rewrite(text, &mut |t| {
            touched += 1;
            t["spec"]["containers"][0]["image"] = "c".into();
            Ok(true)
        });
        assert_eq!(touched, 1);
        assert!(out.text.starts_with("# a comment\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {x: \"1\"}\n---\n"), "{}", out.text);
        assert!(out.text.ends_with("kind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: a\n    image: c\n"), "{}", out.text);
    }
}
