//! The sidecar's identity in a pod: what `weft run` (and `weft demo --cluster`, which starts its
//! workloads with the same code) hands the proxy so it can obtain its certificate and speak mTLS.
//!
//! Each pod gets a state directory, `$TMPDIR/<pod namespace>` (mode 0700, owned by the proxy
//! uid), holding
//! - `trust-anchors.pem`: fetched from the control plane API (`GET /v1/identity/trust-anchors`)
//!   before the proxy starts, then every [`ANCHORS_REFRESH`]; the proxy re-reads the file every
//!   2 s, so a trust-anchor rotation reaches it without a restart;
//! - `token`: the Certify token from the registration answer, written once registration is done
//!   (the proxy retries Certify until the file appears).
//!
//! Both files are written atomically (a staging file, chowned to the proxy uid, renamed into
//! place), mode 0600. The directory goes away with the pod ([`super::pod::remove`]), also when a
//! killed `weft run` is swept.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};

use super::RunArgs;
use crate::demo::http;

/// How often the trust anchors are fetched again (matches the proxy's re-read interval).
pub(crate) const ANCHORS_REFRESH: Duration = Duration::from_secs(2);
const ANCHORS_PATH: &str = "/v1/identity/trust-anchors";

/// The pod's state directory: `$TMPDIR/<pod namespace>` (so the namespace name, which carries
/// the pid of its `weft run`, also names what to sweep).
pub(crate) fn state_dir(netns: &str) -> PathBuf {
    std::env::temp_dir().join(netns)
}

/// A state directory removed when dropped (explicit mode; a pod's goes with the pod).
pub(crate) struct StateDir(pub(crate) PathBuf);

impl Drop for StateDir {
    fn drop(&mut self) {
        if self.0.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.0) {
                say!("weft run: cleanup: removing {}: {e}", self.0.display());
            }
        }
    }
}

/// The DNS-like identity the control plane derives for a workload without a `meshTLS`
/// override: `<name>.<ns>.serviceaccount.identity.<control-ns>.<trust-domain>`.
pub(crate) fn local_name(args: &RunArgs) -> String {
    format!(
        "{}.{}.serviceaccount.identity.{}.{}",
        args.name, args.namespace, args.control_namespace, args.trust_domain
    )
}

/// One sidecar's identity files.
pub(crate) struct SidecarIdentity {
    /// The proxy's uid (owner of the directory and files); `None` = ours (explicit mode).
    uid: Option<u32>,
    token_file: PathBuf,
    anchors_file: PathBuf,
    local_name: String,
    api: SocketAddr,
    anchors: String,
}

impl SidecarIdentity {
    /// Creates the state directory `dir` and fetches the trust anchors into it. `Ok(None)` when
    /// the control plane has no identity API (an older one): the proxy then runs without
    /// identity, as before.
    pub(crate) async fn prepare(
        args: &RunArgs,
        dir: &Path,
        uid: Option<u32>,
    ) -> anyhow::Result<Option<SidecarIdentity>> {
        let api = args.api();
        let Some(anchors) = fetch_anchors(api).await? else {
            say!(
                "weft run: the control plane at {api} serves no trust anchors \
                 ({ANCHORS_PATH}); the sidecar runs without identity (no mTLS)"
            );
            return Ok(None);
        };
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
        if let Some(uid) = uid {
            std::os::unix::fs::chown(dir, Some(uid), Some(uid))
                .with_context(|| format!("giving {} to uid {uid}", dir.display()))?;
        }
        let identity = SidecarIdentity {
            uid,
            token_file: dir.join("token"),
            anchors_file: dir.join("trust-anchors.pem"),
            local_name: local_name(args),
            api,
            anchors,
        };
        identity.write(&identity.anchors_file, &identity.anchors)?;
        Ok(Some(identity))
    }

    /// The proxy's identity variables.
    pub(crate) fn proxy_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                weft_proxy::config::ENV_IDENTITY_TOKEN_FILE,
                self.token_file.display().to_string(),
            ),
            (
                weft_proxy::config::ENV_IDENTITY_LOCAL_NAME,
                self.local_name.clone(),
            ),
            (
                weft_proxy::config::ENV_IDENTITY_TRUST_ANCHORS_FILE,
                self.anchors_file.display().to_string(),
            ),
        ]
    }

    /// Hands the registration answer's token to the proxy. Refuses an answer granting another
    /// identity than the proxy asks for (its Certify calls would all be refused).
    pub(crate) fn hand_over(&self, answer: &serde_json::Value) -> anyhow::Result<()> {
        if let Some(granted) = answer["identity"].as_str() {
            if granted != self.local_name {
                bail!(
                    "the control plane grants identity {granted:?}, but the sidecar would ask for \
                     {:?}: pass the control plane's --trust-domain and --control-namespace",
                    self.local_name
                );
            }
        }
        match answer["token"].as_str() {
            Some(token) => self.write(&self.token_file, token),
            None => {
                say!("weft run: the registration answer carries no identity token");
                Ok(())
            }
        }
    }

    /// Fetches the trust anchors every [`ANCHORS_REFRESH`] and rewrites the file when they
    /// change; runs until aborted. A failed fetch keeps the anchors in force.
    pub(crate) async fn keep_anchors_fresh(mut self) {
        loop {
            tokio::time::sleep(ANCHORS_REFRESH).await;
            match fetch_anchors(self.api).await {
                Ok(Some(now)) if now != self.anchors => {
                    match self.write(&self.anchors_file, &now) {
                        Ok(()) => self.anchors = now,
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "updating trust anchors")
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %format!("{e:#}"), "fetching trust anchors"),
            }
        }
    }

    /// Writes `contents` to `path`, mode 0600, owned by the proxy uid, complete before it
    /// appears under its name.
    fn write(&self, path: &Path, contents: &str) -> anyhow::Result<()> {
        write_atomically(path, contents, self.uid)
    }
}

/// The control plane's trust anchors (PEM); `None` if it has no such endpoint.
async fn fetch_anchors(api: SocketAddr) -> anyhow::Result<Option<String>> {
    let response = http::get(api, ANCHORS_PATH).await.with_context(|| {
        format!("fetching the trust anchors from the control plane API at {api}")
    })?;
    if response.status() == hyper::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status().is_success() {
        bail!(
            "fetching the trust anchors from {api}: {}",
            response.status()
        );
    }
    let pem = String::from_utf8_lossy(response.body()).into_owned();
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        bail!("the trust anchors from {api} hold no PEM certificate");
    }
    Ok(Some(pem))
}

/// Staging file (mode 0600, chowned to `uid`) renamed over `path`.
pub(crate) fn write_atomically(
    path: &Path,
    contents: &str,
    uid: Option<u32>,
) -> anyhow::Result<()> {
    let staging = path.with_extension("staging");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&staging)
        .with_context(|| format!("writing {}", staging.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", staging.display()))?;
    drop(file);
    if let Some(uid) = uid {
        std::os::unix::fs::chown(&staging, Some(uid), Some(uid))
            .with_context(|| format!("giving {} to uid {uid}", staging.display()))?;
    }
    std::fs::rename(&staging, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_written_whole_and_private() {
        let dir =
            std::env::temp_dir().join(format!("weft-run-identity-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("token");
        write_atomically(&path, "weft-1", None).expect("write");
        write_atomically(&path, "weft-2", None).expect("rewrite");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "weft-2");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!path.with_extension("staging").exists());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
