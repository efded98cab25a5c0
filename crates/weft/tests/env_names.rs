//! `WEFT_PROXY_*` names have one source: the constants of `weft_proxy::config`. Rust code uses
//! them (a rename then fails to compile instead of shipping a `weft run` or demo that sets a
//! variable nobody reads); what cannot import them (docs, bench scripts) is checked here against
//! their values, and so are stray string literals in the code around the proxy.
//!
//! One name with that prefix is not the proxy's: `WEFT_PROXY_BIN`, `weft`'s own variable naming
//! the proxy binary, defined once as a constant in crates/weft/src.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const PREFIX: &str = "WEFT_PROXY_";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `path` relative to the workspace, for messages.
fn shown(path: &Path) -> String {
    path.strip_prefix(workspace())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Files under `dir` (recursively) whose name ends with one of `suffixes`, sorted.
fn files(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path, suffixes));
        } else if suffixes.iter().any(|s| path.to_string_lossy().ends_with(s)) {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", shown(path)))
}

/// Every `const IDENT: &str = "WEFT_PROXY_..."` in `text` (the value may be on the next line),
/// as identifier → value.
fn string_constants(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some(at) = rest.find("const ") {
        rest = &rest[at + "const ".len()..];
        let Some((ident, after)) = rest.split_once(':') else {
            break;
        };
        let ident = ident.trim();
        if !ident
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            continue;
        }
        let Some(value) = after
            .trim_start()
            .strip_prefix("&str")
            .and_then(|v| v.trim_start().strip_prefix('='))
            .and_then(|v| v.trim_start().strip_prefix('"'))
            .and_then(|v| v.split_once('"'))
            .map(|(value, _)| value)
        else {
            continue;
        };
        if value.starts_with(PREFIX) {
            out.insert(ident.to_string(), value.to_string());
        }
    }
    out
}

/// The proxy's variables: the `ENV_*` constants of its `config` module (`config.rs` or a
/// `config/` directory), identifier → name.
fn proxy_constants() -> BTreeMap<String, String> {
    let src = workspace().join("crates/weft-proxy/src");
    let mut sources = vec![src.join("config.rs")];
    sources.extend(files(&src.join("config"), &[".rs"]));
    let mut out = BTreeMap::new();
    for path in sources.iter().filter(|p| p.is_file()) {
        out.extend(
            string_constants(&read(path))
                .into_iter()
                .filter(|(ident, _)| ident.starts_with("ENV_")),
        );
    }
    out
}

/// `weft`'s own variables that carry the prefix: string constants with a `WEFT_PROXY_` value in
/// crates/weft/src.
fn weft_constants() -> BTreeMap<String, String> {
    files(&workspace().join("crates/weft/src"), &[".rs"])
        .iter()
        .flat_map(|path| string_constants(&read(path)))
        .collect()
}

/// The parse above reads source text: make sure it sees what the compiler sees.
#[test]
fn the_source_scan_finds_the_compiled_constants() {
    use weft_proxy::config;
    let proxy = proxy_constants();
    for (ident, value) in [
        ("ENV_DESTINATION_SVC_ADDR", config::ENV_DESTINATION_SVC_ADDR),
        (
            "ENV_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
            config::ENV_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION,
        ),
        (
            "ENV_IDENTITY_TRUST_ANCHORS_FILE",
            config::ENV_IDENTITY_TRUST_ANCHORS_FILE,
        ),
        ("ENV_CORES", config::ENV_CORES),
        ("ENV_LOG", config::ENV_LOG),
    ] {
        assert_eq!(proxy.get(ident).map(String::as_str), Some(value), "{ident}");
    }
    assert!(
        proxy.len() >= 30,
        "only {} proxy constants found",
        proxy.len()
    );
    let weft: BTreeSet<String> = weft_constants().into_values().collect();
    assert!(
        weft.contains(weft_testbed::mesh::ENV_WEFT_PROXY_BIN),
        "the test bed's {} is not a variable weft defines ({weft:?})",
        weft_testbed::mesh::ENV_WEFT_PROXY_BIN
    );
}

#[test]
fn weft_defines_no_second_spelling_of_a_proxy_variable() {
    let proxy: BTreeSet<String> = proxy_constants().into_values().collect();
    let doubled: Vec<_> = weft_constants()
        .into_iter()
        .filter(|(_, value)| proxy.contains(value))
        .collect();
    assert!(
        doubled.is_empty(),
        "crates/weft/src redefines proxy variables; use weft_proxy::config's constants: {doubled:?}"
    );
}

/// The names a text mentions, as patterns: `WEFT_PROXY_{OUT,IN}BOUND_X` is expanded to both
/// names, and `*` stands for any run of characters (`WEFT_PROXY_IDENTITY_*`). With line numbers.
fn mentions(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find(PREFIX) {
            let tail = &rest[at + PREFIX.len()..];
            let mut len = 0;
            let mut in_braces = false;
            for c in tail.chars() {
                match c {
                    'A'..='Z' | '0'..='9' | '_' | '*' => {}
                    '{' if !in_braces => in_braces = true,
                    '}' if in_braces => in_braces = false,
                    ',' if in_braces => {}
                    _ => break,
                }
                len += c.len_utf8();
            }
            let mut pattern = format!("{PREFIX}{}", &tail[..len]);
            // A bare prefix (`WEFT_PROXY_` in prose) mentions the family, not a name.
            if pattern.ends_with('_') {
                pattern.push('*');
            }
            out.extend(expand_braces(&pattern).into_iter().map(|p| (n + 1, p)));
            rest = &tail[len..];
        }
    }
    out
}

fn expand_braces(pattern: &str) -> Vec<String> {
    let Some(open) = pattern.find('{') else {
        return vec![pattern.to_string()];
    };
    let Some(close) = pattern[open..].find('}').map(|i| open + i) else {
        return vec![pattern.to_string()];
    };
    pattern[open + 1..close]
        .split(',')
        .flat_map(|alt| {
            expand_braces(&format!(
                "{}{alt}{}",
                &pattern[..open],
                &pattern[close + 1..]
            ))
        })
        .collect()
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head) && (head.len()..=name.len()).any(|i| glob(tail, &name[i..]))
        }
    }
}

#[test]
fn mention_patterns_expand_and_match() {
    let found: Vec<String> = mentions(
        "set `WEFT_PROXY_{OUT,IN}BOUND_X` or WEFT_PROXY_*_Y, not WEFT_PROXY_ alone\n\"WEFT_PROXY_Z\"",
    )
    .into_iter()
    .map(|(line, p)| format!("{line}:{p}"))
    .collect();
    assert_eq!(
        found,
        [
            "1:WEFT_PROXY_OUTBOUND_X",
            "1:WEFT_PROXY_INBOUND_X",
            "1:WEFT_PROXY_*_Y",
            "1:WEFT_PROXY_*",
            "2:WEFT_PROXY_Z",
        ]
    );
    assert!(glob(
        "WEFT_PROXY_*_DETECT_TIMEOUT",
        "WEFT_PROXY_INBOUND_DETECT_TIMEOUT"
    ));
    assert!(!glob(
        "WEFT_PROXY_*_DETECT_TIMEOUT",
        "WEFT_PROXY_INBOUND_DETECT"
    ));
    assert!(!glob("WEFT_PROXY_LOG", "WEFT_PROXY_LOGS"));
}

/// Docs and bench scripts cannot import the constants: every name they mention must be one.
#[test]
fn docs_and_bench_name_only_real_variables() {
    let known: BTreeSet<String> = proxy_constants()
        .into_values()
        .chain(weft_constants().into_values())
        .collect();
    let root = workspace();
    let mut texts = files(&root.join("docs"), &[".md"]);
    texts.extend(files(&root.join("bench"), &[".py", ".md", ".sh"]));
    texts.extend(["README.md", "ARCHITECTURE.md"].map(|f| root.join(f)));
    let mut checked = 0;
    let mut unknown = Vec::new();
    for path in texts.iter().filter(|p| p.is_file()) {
        for (line, pattern) in mentions(&read(path)) {
            checked += 1;
            if !known.iter().any(|name| glob(&pattern, name)) {
                unknown.push(format!("{}:{line}: {pattern}", shown(path)));
            }
        }
    }
    // The docs name dozens of variables; finding none means this scan broke, not that all is well.
    assert!(checked > 50, "only {checked} mentions found");
    assert!(
        unknown.is_empty(),
        "not a constant of weft_proxy::config (nor weft's own variable):\n{}",
        unknown.join("\n")
    );
}

/// Rust around the proxy spells no proxy variable as a string literal (they would survive a
/// rename); only the bare prefix and `weft`'s own variables may appear as literals.
#[test]
fn code_outside_the_proxy_uses_the_constants() {
    let own: BTreeSet<String> = weft_constants().into_values().collect();
    let root = workspace();
    let this_file = Path::new(file!()).file_name().expect("file name");
    let mut offenders = Vec::new();
    for dir in [
        "crates/weft/src",
        "crates/weft/tests",
        "crates/weft-testbed/src",
        "crates/weft-testbed/tests",
        "crates/weft-control/src",
        "bench/src",
    ] {
        for path in files(&root.join(dir), &[".rs"]) {
            if path.file_name() == Some(this_file) {
                continue;
            }
            let text = read(&path);
            for (n, line) in text.lines().enumerate() {
                let mut rest = line;
                while let Some(at) = rest.find(&format!("\"{PREFIX}")) {
                    let tail = &rest[at + 1..];
                    let end = tail
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(tail.len());
                    let name = &tail[..end];
                    if name != PREFIX && !own.contains(name) {
                        offenders.push(format!("{}:{}: {name}", shown(&path), n + 1));
                    }
                    rest = &tail[end..];
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "use weft_proxy::config::ENV_* instead of these literals (or define weft's own \
         variable as a constant in crates/weft/src):\n{}",
        offenders.join("\n")
    );
}
