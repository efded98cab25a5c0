//! Workload tokens: the proof a proxy presents to `Identity.Certify` on one machine.
//!
//! Every successful `PUT /v1/workloads/{ns}/{name}` issues a fresh random token for that
//! workload (replacing the previous one) and returns it once; a status update
//! (`PUT /v1/workloads/{ns}/{name}/status`) leaves it alone, so a sidecar keeps its token while
//! its workload turns ready. Only a SHA-256 digest is kept, in
//! memory and in `<store>/.registered/<ns>.<name>.token` (beside the registration, so a restart
//! keeps tokens valid); `DELETE` revokes it. The store only reads `*.yaml`, so these files are
//! not resources.
//!
//! A token grants exactly the identity of the workload it was issued for, looked up at Certify
//! time (so it follows `meshTLS.serverName`). Kubernetes ServiceAccount tokens (TokenReview)
//! would be a second kind of [`Grant`] source.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::store::REGISTERED_DIR;

/// Whose token it is: a registered workload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Grant {
    pub namespace: String,
    pub name: String,
}

type Digest = [u8; 32];

/// The token table. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Tokens {
    dir: PathBuf,
    inner: Arc<RwLock<HashMap<Digest, Grant>>>,
}

fn digest(token: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Digest> {
    let s = s.trim().strip_prefix("sha256:")?;
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Tokens {
    /// Loads every `<ns>.<name>.token` under `<store>/.registered/`. Unreadable or malformed
    /// files are skipped with a warning (that workload must re-register to get a token).
    pub fn load(store_dir: &Path) -> Tokens {
        let dir = store_dir.join(REGISTERED_DIR);
        let mut map = HashMap::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().to_string();
                let Some(stem) = file.strip_suffix(".token") else {
                    continue;
                };
                let Some((ns, name)) = stem.split_once('.') else {
                    continue;
                };
                match std::fs::read_to_string(entry.path())
                    .ok()
                    .as_deref()
                    .and_then(unhex)
                {
                    Some(d) => {
                        map.insert(
                            d,
                            Grant {
                                namespace: ns.into(),
                                name: name.into(),
                            },
                        );
                    }
                    None => {
                        tracing::warn!(file = %entry.path().display(), "ignoring a malformed token file")
                    }
                }
            }
        }
        Tokens {
            dir,
            inner: Arc::new(RwLock::new(map)),
        }
    }

    fn path(&self, ns: &str, name: &str) -> PathBuf {
        self.dir.join(format!("{ns}.{name}.token"))
    }

    /// Issues a new token for a workload, revoking its previous one. Returns the token text.
    pub fn issue(&self, namespace: &str, name: &str) -> std::io::Result<String> {
        let mut raw = [0u8; 32];
        crate::ca::fill_random(&mut raw);
        let token = format!("weft-{}", hex(&raw));
        let d = digest(token.as_bytes());
        let path = self.path(namespace, name);
        let text = format!("sha256:{}\n", hex(&d));
        crate::files::write_atomic(&path, text.as_bytes(), false).map_err(|e| e.source)?;
        let grant = Grant {
            namespace: namespace.into(),
            name: name.into(),
        };
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, g| *g != grant);
        map.insert(d, grant);
        Ok(token)
    }

    /// Forgets a workload's token (deregistration).
    pub fn revoke(&self, namespace: &str, name: &str) {
        let grant = Grant {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, g| *g != grant);
        let _ = std::fs::remove_file(self.path(namespace, name));
    }

    /// Whether a workload holds a token, i.e. was registered through the API (a workload from
    /// the store's files holds none).
    pub fn issued(&self, namespace: &str, name: &str) -> bool {
        let grant = Grant {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|g| *g == grant)
    }

    /// The workload a presented token belongs to. Surrounding whitespace is ignored (token
    /// files usually end with a newline).
    pub fn lookup(&self, token: &[u8]) -> Option<Grant> {
        let d = digest(token.trim_ascii());
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&d)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(tag: &str) -> PathBuf {
        let dir = crate::test_dir(&format!("tokens-{tag}"));
        std::fs::create_dir_all(dir.join(REGISTERED_DIR)).expect("mkdir");
        dir
    }

    #[test]
    fn issue_lookup_reissue_revoke_and_reload() {
        let store = temp_store("cycle");
        let tokens = Tokens::load(&store);
        let first = tokens.issue("default", "web").expect("issue");
        let grant = tokens.lookup(first.as_bytes()).expect("granted");
        assert_eq!(
            (grant.namespace.as_str(), grant.name.as_str()),
            ("default", "web")
        );
        assert!(tokens.lookup(format!("{first}\n").as_bytes()).is_some());
        assert!(tokens.lookup(b"weft-nope").is_none());

        // Re-registration rotates the token; the old one stops working.
        let second = tokens.issue("default", "web").expect("reissue");
        assert_ne!(first, second);
        assert!(tokens.lookup(first.as_bytes()).is_none());

        // A restart keeps the current token valid; the file holds only a digest.
        let file = std::fs::read_to_string(store.join(REGISTERED_DIR).join("default.web.token"))
            .expect("token file");
        assert!(
            !file.contains(&second[5..]),
            "the token itself must not be stored"
        );
        let reloaded = Tokens::load(&store);
        assert!(reloaded.lookup(second.as_bytes()).is_some());
        assert!(reloaded.issued("default", "web") && !reloaded.issued("default", "db"));

        reloaded.revoke("default", "web");
        assert!(reloaded.lookup(second.as_bytes()).is_none());
        assert!(!reloaded.issued("default", "web"));
        assert!(Tokens::load(&store).lookup(second.as_bytes()).is_none());
        let _ = std::fs::remove_dir_all(&store);
    }
}
