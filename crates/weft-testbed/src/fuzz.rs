//! Replaying the committed fuzz inputs on stable: every file of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` (the crash inputs, kept after their fix) goes through the same
//! harness the fuzz target calls, so CI, which has no cargo-fuzz, still runs them all.

use std::path::{Path, PathBuf};

/// The repository's `fuzz/` directory.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Runs `harness` on every corpus and regression input of `target` and returns how many it ran.
/// Panics naming every input that made the harness panic, and when the corpus is missing or
/// empty (a replay of nothing cannot fail); a target without crashes has no regressions.
pub fn replay(target: &str, harness: fn(&[u8])) -> usize {
    let corpus = fuzz_dir().join("corpus").join(target);
    let mut inputs = files(&corpus);
    assert!(
        !inputs.is_empty(),
        "no corpus for fuzz target {target} in {}",
        corpus.display()
    );
    inputs.extend(files(&fuzz_dir().join("regressions").join(target)));
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data =
                std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            std::panic::catch_unwind(|| harness(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: the harness panicked on {failed:#?}"
    );
    inputs.len()
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}
