//! Workload tokens: the proof a proxy presents to `Identity.Certify` on one machine.
//!
//! Every successful `PUT /v1/workloads/{ns}/{name}` issues a fresh random token for that
//! workload (replacing the previous one) and returns it once; a status update
//! (`PUT /v1/workloads/{ns}/{name}/status`) leaves it alone, so a sidecar keeps its token while
//! its workload turns ready. Only a SHA-256 digest is kept, in
//! memory and beside the registration, so a restart keeps tokens valid: with the file store in
//! `<store>/.registered/<ns>.<name>.token` (the store only reads `*.yaml`, so these files are
//! not resources), with the etcd store in `PREFIX/tokens/<ns>/<name>`, watched, so every
//! replica accepts a token any replica issued and sees a revocation made on any. `DELETE`
//! revokes it.
//!
//! A token grants exactly the identity of the workload it was issued for, looked up at Certify
//! time (so it follows `meshTLS.serverName`). With the Kubernetes store there is no
//! registration and no such token ([`Tokens::none`]): proxies present their pod's
//! ServiceAccount token instead, which `Identity.Certify` checks with a TokenReview
//! (`k8s::token_review`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::etcd::proto::{KeyValue, EVENT_DELETE};
use crate::etcd::watch::Update;
use crate::etcd::{Client, Target};
use crate::store::REGISTERED_DIR;

/// The keys (under the etcd store's prefix) of the token digests.
pub const ETCD_TOKENS: &str = "tokens/";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Etcd(#[from] crate::etcd::Error),
}

/// The namespace of link grants (`<store>/.registered/_link.<name>.token`,
/// `PREFIX/tokens/_link/<name>`).
pub const LINK_GRANT: &str = "_link";

/// Whose token it is: a registered workload, or (namespace [`LINK_GRANT`]) a linked cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Grant {
    pub namespace: String,
    pub name: String,
}

impl Grant {
    /// The linked cluster's name, for a link token.
    pub fn link(&self) -> Option<&str> {
        (self.namespace == LINK_GRANT).then_some(self.name.as_str())
    }
}

type Digest = [u8; 32];

/// The token table. Cheap to clone.
#[derive(Clone)]
pub struct Tokens {
    backing: Backing,
    inner: Arc<RwLock<Table>>,
}

/// Digests by grant, and when each grant last changed.
#[derive(Default)]
struct Table {
    by_digest: HashMap<Digest, Grant>,
    /// The etcd revision of each grant's last change applied (0 with the file store): a watch
    /// event older than a change this replica made itself is stale and ignored, so a rotated-out
    /// token is never accepted again here while the watch catches up.
    revisions: HashMap<Grant, i64>,
}

impl Table {
    /// Sets (`Some`) or removes a grant's digest as of `revision`, unless a newer change is in.
    fn set(&mut self, grant: Grant, digest: Option<Digest>, revision: i64) {
        if self.revisions.get(&grant).is_some_and(|&r| r > revision) {
            return;
        }
        self.by_digest.retain(|_, g| *g != grant);
        if let Some(d) = digest {
            self.by_digest.insert(d, grant.clone());
        }
        self.revisions.insert(grant, revision);
    }
}

/// Where the digests are kept.
#[derive(Clone)]
enum Backing {
    /// `<store>/.registered/`.
    Dir(PathBuf),
    Etcd {
        client: Client,
        target: Target,
    },
    /// No registrations (the Kubernetes store): nothing is ever issued.
    None,
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
            backing: Backing::Dir(dir),
            inner: Arc::new(RwLock::new(Table {
                by_digest: map,
                revisions: HashMap::new(),
            })),
        }
    }

    /// An empty table that issues nothing (the Kubernetes store refuses registrations).
    pub fn none() -> Tokens {
        Tokens {
            backing: Backing::None,
            inner: Arc::new(RwLock::new(Table::default())),
        }
    }

    /// Lists `PREFIX/tokens/` (the store's first list has already proven etcd reachable), then
    /// keeps the table in step with it until `shutdown` changes.
    pub async fn etcd(
        client: Client,
        target: &Target,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(Tokens, tokio::task::JoinHandle<()>), Error> {
        let prefix = target.key(ETCD_TOKENS);
        let (kvs, revision) = client.list(&prefix).await?;
        let tokens = Tokens {
            backing: Backing::Etcd {
                client: client.clone(),
                target: target.clone(),
            },
            inner: Arc::new(RwLock::new(Table::default())),
        };
        tokens.absorb(Update::Reset { kvs, revision });
        let (mut updates, mirror) = crate::etcd::watch::mirror(client, prefix, revision, shutdown);
        let table = tokens.clone();
        let task = tokio::spawn(async move {
            while let Some(u) = updates.recv().await {
                table.absorb(u);
            }
            let _ = mirror.await;
        });
        Ok((tokens, task))
    }

    /// Applies changes to `PREFIX/tokens/` (from any replica, this one included).
    fn absorb(&self, update: Update) {
        let Backing::Etcd { target, .. } = &self.backing else {
            return;
        };
        let prefix = String::from_utf8_lossy(&target.key(ETCD_TOKENS)).into_owned();
        let grant_of = |kv: &KeyValue| {
            let key = String::from_utf8_lossy(&kv.key);
            let (ns, name) = key.strip_prefix(&prefix)?.split_once('/')?;
            Some(Grant {
                namespace: ns.into(),
                name: name.into(),
            })
        };
        let digest_of = |kv: &KeyValue| {
            let d = std::str::from_utf8(&kv.value).ok().and_then(unhex);
            if d.is_none() {
                tracing::warn!(key = %String::from_utf8_lossy(&kv.key), "ignoring a malformed token digest");
            }
            d
        };
        let mut table = self.table();
        match update {
            Update::Reset { kvs, .. } => {
                *table = Table::default();
                for kv in &kvs {
                    if let Some(grant) = grant_of(kv) {
                        table.set(grant, digest_of(kv), kv.mod_revision);
                    }
                }
            }
            Update::Events { events, .. } => {
                for e in events {
                    let Some(kv) = e.kv else { continue };
                    let Some(grant) = grant_of(&kv) else { continue };
                    let digest = if e.r#type == EVENT_DELETE {
                        None
                    } else {
                        digest_of(&kv)
                    };
                    table.set(grant, digest, kv.mod_revision);
                }
            }
        }
    }

    fn table(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues a new token for a workload, revoking its previous one. Returns the token text.
    pub async fn issue(&self, namespace: &str, name: &str) -> Result<String, Error> {
        let mut raw = [0u8; 32];
        crate::ca::fill_random(&mut raw);
        let token = format!("weft-{}", hex(&raw));
        let d = digest(token.as_bytes());
        let text = format!("sha256:{}\n", hex(&d));
        let revision = match &self.backing {
            Backing::Dir(dir) => {
                let path = dir.join(format!("{namespace}.{name}.token"));
                crate::files::write_atomic(&path, text.as_bytes(), false).map_err(|e| e.source)?;
                0
            }
            Backing::Etcd { client, target } => {
                let key = target.key(&format!("{ETCD_TOKENS}{namespace}/{name}"));
                client.put(&key, text.as_bytes()).await?
            }
            Backing::None => {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "this store issues no workload tokens",
                )))
            }
        };
        // In force here at once; the other replicas take it from the watch.
        let grant = Grant {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.table().set(grant, Some(d), revision);
        Ok(token)
    }

    /// Mints the link token of the cluster `name` (east's name for itself), revoking its previous one.
    pub async fn issue_link(&self, name: &str) -> Result<String, Error> {
        self.issue(LINK_GRANT, name).await
    }

    /// Revokes the link token of the cluster `name`.
    pub async fn revoke_link(&self, name: &str) -> Result<(), Error> {
        self.revoke(LINK_GRANT, name).await
    }

    /// Forgets a workload's token (deregistration).
    pub async fn revoke(&self, namespace: &str, name: &str) -> Result<(), Error> {
        let grant = Grant {
            namespace: namespace.into(),
            name: name.into(),
        };
        // Refused here at once, even if the store cannot be written.
        self.table().by_digest.retain(|_, g| *g != grant);
        let revision = match &self.backing {
            Backing::Dir(dir) => {
                let _ = std::fs::remove_file(dir.join(format!("{namespace}.{name}.token")));
                0
            }
            Backing::Etcd { client, target } => {
                let key = target.key(&format!("{ETCD_TOKENS}{namespace}/{name}"));
                client.delete(&key).await?.1
            }
            Backing::None => 0,
        };
        self.table().set(grant, None, revision);
        Ok(())
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
            .by_digest
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
            .by_digest
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
    fn a_stale_watch_event_never_brings_a_rotated_token_back() {
        let web = Grant {
            namespace: "default".into(),
            name: "web".into(),
        };
        let (old, new) = (digest(b"weft-old"), digest(b"weft-new"));
        let mut t = Table::default();
        // Rotated here at revision 12; the watch then delivers the write of revision 10.
        t.set(web.clone(), Some(new), 12);
        t.set(web.clone(), Some(old), 10);
        assert_eq!(t.by_digest.get(&new), Some(&web));
        assert_eq!(t.by_digest.get(&old), None);
        // Revoked at 14: the echo of 12 does not revive it; a re-issue at 15 does apply.
        t.set(web.clone(), None, 14);
        t.set(web.clone(), Some(new), 12);
        assert!(t.by_digest.is_empty());
        t.set(web.clone(), Some(old), 15);
        assert_eq!(t.by_digest.get(&old), Some(&web));
    }

    #[tokio::test]
    async fn issue_lookup_reissue_revoke_and_reload() {
        let store = temp_store("cycle");
        let tokens = Tokens::load(&store);
        let first = tokens.issue("default", "web").await.expect("issue");
        let grant = tokens.lookup(first.as_bytes()).expect("granted");
        assert_eq!(
            (grant.namespace.as_str(), grant.name.as_str()),
            ("default", "web")
        );
        assert!(tokens.lookup(format!("{first}\n").as_bytes()).is_some());
        assert!(tokens.lookup(b"weft-nope").is_none());

        // Re-registration rotates the token; the old one stops working.
        let second = tokens.issue("default", "web").await.expect("reissue");
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

        reloaded.revoke("default", "web").await.expect("revoke");
        assert!(reloaded.lookup(second.as_bytes()).is_none());
        assert!(!reloaded.issued("default", "web"));
        assert!(Tokens::load(&store).lookup(second.as_bytes()).is_none());
        let _ = std::fs::remove_dir_all(&store);
    }

    #[tokio::test]
    async fn link_tokens_are_their_own_grants() {
        let store = temp_store("link");
        let tokens = Tokens::load(&store);
        let workload = tokens.issue("east", "web").await.expect("issue");
        let link = tokens.issue_link("east").await.expect("link");
        assert_eq!(tokens.lookup(workload.as_bytes()).unwrap().link(), None);
        let reloaded = Tokens::load(&store);
        assert_eq!(
            reloaded.lookup(link.as_bytes()).unwrap().link(),
            Some("east")
        );
        reloaded.revoke_link("east").await.expect("revoke");
        assert!(reloaded.lookup(link.as_bytes()).is_none());
        assert!(reloaded.lookup(workload.as_bytes()).is_some(), "untouched");
        let _ = std::fs::remove_dir_all(&store);
    }
}
