//! Replacing files in the control plane's directories (store registrations, token digests, CA
//! and rotation files, ledgers) so that a concurrent reader sees the old or the new content,
//! never a mix: write a temporary file beside the target, sync it, rename it over the target.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct WriteError {
    /// The file that could not be written (the temporary file or the target).
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Replaces `path` with `bytes`. `secret` files get mode 0600, others 0644.
pub fn write_atomic(path: &Path, bytes: &[u8], secret: bool) -> Result<(), WriteError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError { path, source }
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(at(&tmp))?;
    f.write_all(bytes).map_err(at(&tmp))?;
    f.sync_all().map_err(at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(at(path))
}
