//! Offline Kubernetes checks shared by the tests of `weft install` (and any manifest Weft
//! prints): running `weft` for its stdout, multi-document YAML, and validation against the
//! Kubernetes OpenAPI schemas with PyPI's `kubernetes-validate` (`.ci/run` installs it; a test
//! that needs it skips locally without it and fails under `CI=true`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// The repository's root (for `docs/` and the tests' sources).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `weft ARGS`; the output whatever the exit status.
pub fn weft(args: &[&str]) -> Output {
    Command::new(WEFT)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {WEFT}: {e}"))
}

/// Runs `weft ARGS`, which must succeed; its stdout.
pub fn weft_stdout(args: &[&str]) -> String {
    let out = weft(args);
    assert!(
        out.status.success(),
        "weft {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 stdout")
}

/// The documents of a multi-document YAML text (empty documents skipped).
pub fn parse_docs(text: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    yaml_serde::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The one document of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind} {name} expected");
    found[0]
}

/// `kubernetes-validate --strict` on `yaml` (unknown fields are errors). `None` when the tool
/// is missing and this is not CI (the caller returns: skipped).
pub fn kubernetes_validate(name: &str, yaml: &str) -> Option<Result<(), String>> {
    if weft_testbed::which("kubernetes-validate").is_none() {
        weft_testbed::skip_or_fail(
            "`kubernetes-validate` is not installed (pip install kubernetes-validate)",
        );
        return None;
    }
    let dir = std::env::temp_dir().join(format!("weft-k8s-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).expect("write manifest");
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .arg(&file)
        .output()
        .expect("run kubernetes-validate");
    let _ = std::fs::remove_dir_all(&dir);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(if out.status.success() && !report.contains("ERROR") {
        Ok(())
    } else {
        Err(report)
    })
}

/// Python with `jsonschema` and `yaml` (both come with `kubernetes-validate`), or `None` after
/// skip_or_fail.
pub fn python_with_jsonschema() -> Option<&'static str> {
    let ok = Command::new("python3")
        .args(["-c", "import jsonschema, yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        weft_testbed::skip_or_fail(
            "python3 with the `jsonschema` and `yaml` modules is missing (pip install kubernetes-validate)",
        );
        return None;
    }
    Some("python3")
}

/// Checks that a YAML 1.1 reader (PyYAML, like kubectl's go-yaml) reads `yaml` as the same
/// values as ours: a YAML 1.2 emitter leaves `yes`, `on` or `2001-01-01` unquoted, which 1.1
/// reads as a boolean or a date. `None` after skip_or_fail when python3 lacks `yaml`.
pub fn same_in_yaml_1_1(yaml: &str) -> Option<Result<(), String>> {
    use std::io::Write as _;
    let python = python_with_jsonschema()?;
    let mut child = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]\n\
             print(json.dumps(docs, default=lambda v: f'<{type(v).__name__} {v}>'))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "PyYAML could not read the output");
    let theirs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON from python");
    let ours = parse_docs(yaml);
    Some(match ours.iter().zip(&theirs).position(|(a, b)| a != b) {
        None if ours.len() == theirs.len() => Ok(()),
        None => Err(format!(
            "{} documents, YAML 1.1 reads {}",
            ours.len(),
            theirs.len()
        )),
        Some(i) => Err(format!(
            "document {i}: ours {}\nYAML 1.1 {}",
            ours[i], theirs[i]
        )),
    })
}

/// The release, which golden files show as `<version>`.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A CA made by `weft identity init` in a fresh temp directory, removed on drop.
pub struct IdentityDir(pub PathBuf);

impl IdentityDir {
    pub fn new(name: &str) -> IdentityDir {
        let dir = std::env::temp_dir().join(format!("weft-install-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        weft_stdout(&["identity", "init", "--dir", dir.to_str().unwrap()]);
        IdentityDir(dir)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.0.join(file)).expect("identity file")
    }
}

impl Drop for IdentityDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Validates `yaml` against the Kubernetes schemas, and checks that kubectl's YAML 1.1 reads
/// the values we meant.
pub fn validate(name: &str, yaml: &str) {
    if let Some(result) = same_in_yaml_1_1(yaml) {
        result.unwrap_or_else(|diff| panic!("{name} reads differently in YAML 1.1:\n{diff}"));
    }
    if let Some(result) = kubernetes_validate(name, yaml) {
        result.unwrap_or_else(|report| panic!("{name} does not validate:\n{report}"));
    }
}

/// Whether `selector` (matchLabels) selects `labels`.
pub fn selects_labels(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

/// `docs`, normalized, equal to the golden file `golden` (`WEFT_UPDATE_GOLDEN=1` rewrites it).
pub fn assert_golden(
    what: &str,
    golden: &str,
    docs: Vec<Value>,
    replacements: &[(String, String)],
) {
    let mut text = String::new();
    for mut doc in docs {
        normalize(&mut doc, replacements);
        text.push_str("---\n");
        text.push_str(&yaml_serde::to_string(&doc).unwrap());
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(golden);
    if std::env::var_os("WEFT_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (WEFT_UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        want == text,
        "`{what}` differs from {golden}; if intended, regenerate with \
         WEFT_UPDATE_GOLDEN=1 cargo test -p weft --test <this test>, and review the diff.\n{}",
        first_difference(&want, &text)
    );
}

pub fn normalize(v: &mut Value, replacements: &[(String, String)]) {
    match v {
        Value::String(s) => {
            if let Some((_, to)) = replacements.iter().find(|(from, _)| from == s) {
                *s = to.clone();
            } else if s.contains(VERSION) {
                *s = s.replace(VERSION, "<version>");
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| normalize(i, replacements)),
        Value::Object(map) => map.values_mut().for_each(|i| normalize(i, replacements)),
        _ => {}
    }
}

pub fn first_difference(want: &str, got: &str) -> String {
    let line = want.lines().zip(got.lines()).position(|(a, b)| a != b);
    match line {
        Some(i) => format!(
            "line {}: golden {:?}, output {:?}",
            i + 1,
            want.lines().nth(i).unwrap(),
            got.lines().nth(i).unwrap()
        ),
        None => format!(
            "lengths differ: golden {} lines, output {}",
            want.lines().count(),
            got.lines().count()
        ),
    }
}
