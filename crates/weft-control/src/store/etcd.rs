//! The etcd store: the same documents as the file store, kept as keys under a prefix. Each key
//! under `PREFIX/resources/` is like one file (its value is YAML text, possibly several
//! documents, and errors name the key); registrations are `PREFIX/registered/<ns>/<name>`.
//!
//! One task owns the keys: it applies the changes [`crate::etcd::watch::mirror`] hands on (a
//! key is re-parsed only when its `mod_revision` changed) and serves registrations. A
//! registration writes its key and then waits until the watch has brought that revision back
//! and the core has applied it, so its answer reflects what every replica watching the prefix
//! will see. While etcd is unreachable the last state stays in force.
//!
//! Unlike the file store, validation runs on the task itself, not on the blocking pool: the
//! watch hands on only the keys that changed, and a registration must observe its own change.

use super::resources::text_name;
use super::{Applied, Command, Core, Scanned, StoreError, StoreHandle, Write};
use crate::documents::{BadDocument, DocKey, Located, ParsedFile};
use crate::etcd::proto::{KeyValue, EVENT_DELETE};
use crate::etcd::watch::{mirror, Update};
use crate::etcd::{Client, Target};
use crate::resource::{Defaults, ExternalWorkload};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long the control plane waits at start for etcd to answer the first list.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a registration waits for its own write to come back through the watch.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The key (under the prefix) of the resources and of the registrations.
pub const RESOURCES: &str = "resources/";
pub const REGISTERED: &str = "registered/";

/// Lists the prefix (retrying until `start_timeout`), applies it, then spawns the task that
/// watches it and serves registrations until `shutdown` changes.
pub async fn start(
    client: Client,
    target: &Target,
    defaults: Defaults,
    start_timeout: Duration,
    shutdown: watch::Receiver<bool>,
) -> Result<(StoreHandle, tokio::task::JoinHandle<()>), StoreError> {
    let prefix = target.key("");
    let (kvs, revision) = list_within(&client, target, &prefix, start_timeout).await?;
    let mut store = Store {
        client: client.clone(),
        core: Core::new(defaults),
        target: target.clone(),
        texts: BTreeMap::new(),
        revision: 0,
    };
    store.absorb(Update::Reset { kvs, revision });
    let (updates, mirror_task) = mirror(client, prefix, revision, shutdown.clone());
    let (commands, rx) = mpsc::channel(16);
    let handle = store.core.handle(commands);
    let task = tokio::spawn(async move {
        store.run(rx, updates, shutdown).await;
        let _ = mirror_task.await;
    });
    Ok((handle, task))
}

/// The first list, retried until etcd answers or `within` is over.
pub async fn list_within(
    client: &Client,
    target: &Target,
    prefix: &[u8],
    within: Duration,
) -> Result<(Vec<KeyValue>, i64), StoreError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match client.list(prefix).await {
            Ok(listed) => return Ok(listed),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(StoreError::EtcdStart {
                    target: target.to_string(),
                    waited: within,
                    last: e,
                })
            }
            Err(e) => {
                tracing::info!(%target, "etcd not reachable yet, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

struct Store {
    client: Client,
    core: Core,
    target: Target,
    /// Every document key as last applied, by name (the key as text).
    texts: BTreeMap<String, Text>,
    /// The revision of the last update applied.
    revision: i64,
}

struct Text {
    mod_revision: i64,
    hash: u64,
    parsed: Arc<ParsedFile>,
}

impl Store {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut updates: mpsc::Receiver<Update>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                update = updates.recv() => match update {
                    Some(u) => self.absorb(u),
                    None => return,
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::Register(w, reply)) => {
                        let _ = reply.send(self.register(w, &mut updates).await);
                    }
                    Some(Command::Deregister(ns, name, reply)) => {
                        let _ = reply.send(self.deregister(&ns, &name, &mut updates).await);
                    }
                    Some(Command::Apply(doc, text, reply)) => {
                        let _ = reply.send(self.apply(&doc, &text, &mut updates).await);
                    }
                    Some(Command::Delete(key, reply)) => {
                        let _ = reply.send(self.delete(&key, &mut updates).await);
                    }
                    Some(Command::Mirror(texts)) => {
                        self.core.set_mirror(texts);
                    }
                    None => return,
                },
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The name of a document key (the key itself), or `None` for keys that are not
    /// documents (tokens, allocations).
    fn name(&self, key: &[u8]) -> Option<String> {
        let key = String::from_utf8_lossy(key);
        let rest = key.strip_prefix(&self.target.prefix)?.strip_prefix('/')?;
        (rest.starts_with(RESOURCES) || rest.starts_with(REGISTERED)).then(|| key.to_string())
    }

    fn text(&self, name: &str, kv: &KeyValue) -> Text {
        let (hash, parsed) = match std::str::from_utf8(&kv.value) {
            Ok(text) => self.core.parse(name, text),
            Err(_) => {
                // Like a file that cannot be read: its documents keep their last good versions.
                let bad = ParsedFile {
                    docs: Vec::new(),
                    bad: vec![BadDocument {
                        index: 0,
                        key: None,
                        errors: vec![format!("{name}: not UTF-8 text")],
                    }],
                };
                (kv.mod_revision as u64, Arc::new(bad))
            }
        };
        Text {
            mod_revision: kv.mod_revision,
            hash,
            parsed,
        }
    }

    /// Applies a batch of changes from the watch (or a whole new list).
    fn absorb(&mut self, update: Update) {
        match update {
            Update::Reset { kvs, revision } => {
                let mut old = std::mem::take(&mut self.texts);
                for kv in kvs {
                    let Some(name) = self.name(&kv.key) else {
                        continue;
                    };
                    let text = match old.remove(&name) {
                        Some(t) if t.mod_revision == kv.mod_revision => t,
                        _ => self.text(&name, &kv),
                    };
                    self.texts.insert(name, text);
                }
                self.revision = revision;
            }
            Update::Events { events, revision } => {
                for e in events {
                    let Some(kv) = e.kv else { continue };
                    let Some(name) = self.name(&kv.key) else {
                        continue;
                    };
                    if e.r#type == EVENT_DELETE {
                        self.texts.remove(&name);
                    } else {
                        let text = self.text(&name, &kv);
                        self.texts.insert(name, text);
                    }
                }
                self.revision = revision;
            }
        }
        let texts: Vec<Scanned> = self
            .texts
            .iter()
            .map(|(name, t)| (name.clone(), t.hash, t.parsed.clone()))
            .collect();
        self.core.apply(&texts);
    }

    /// Applies updates until the one at `revision` (a write of ours) is in.
    async fn catch_up(
        &mut self,
        revision: i64,
        updates: &mut mpsc::Receiver<Update>,
    ) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + APPLY_TIMEOUT;
        while self.revision < revision {
            match tokio::time::timeout_at(deadline, updates.recv()).await {
                Ok(Some(u)) => self.absorb(u),
                Ok(None) => return Err(StoreError::Stopped),
                Err(_) => return Err(StoreError::NotApplied(APPLY_TIMEOUT)),
            }
        }
        Ok(())
    }

    fn registered_key(&self, namespace: &str, name: &str) -> Vec<u8> {
        self.target.key(&format!("{REGISTERED}{namespace}/{name}"))
    }

    async fn register(
        &mut self,
        w: ExternalWorkload,
        updates: &mut mpsc::Receiver<Update>,
    ) -> Result<(), StoreError> {
        let key = self.registered_key(&w.namespace, &w.name);
        let yaml = Core::registration_yaml(&w)?;
        let previous = self.client.get(&key).await?;
        let written = self.client.put(&key, yaml.as_bytes()).await?;
        self.catch_up(written, updates).await?;
        let name = String::from_utf8_lossy(&key).into_owned();
        if let Err(errors) = self.core.registered(&name, &w) {
            // Undone only if nobody wrote the key since: a later write is someone else's.
            let undone = self
                .client
                .swap(
                    &key,
                    written,
                    previous.as_ref().map(|kv| kv.value.as_slice()),
                )
                .await?;
            if let Some(revision) = undone {
                self.catch_up(revision, updates).await?;
            }
            return Err(StoreError::Rejected(errors));
        }
        Ok(())
    }

    async fn deregister(
        &mut self,
        namespace: &str,
        name: &str,
        updates: &mut mpsc::Receiver<Update>,
    ) -> Result<(), StoreError> {
        let key = self.registered_key(namespace, name);
        let (existed, revision) = self.client.delete(&key).await?;
        if !existed {
            return Err(StoreError::NotRegistered(
                namespace.to_string(),
                name.to_string(),
            ));
        }
        self.catch_up(revision, updates).await
    }
}

/// A key's text and `mod_revision` (0: no such key), for a write that only succeeds if nobody
/// changed the key since it was read.
struct Read {
    text: Option<String>,
    mod_revision: i64,
}

/// `weft apply` and `weft delete` (see `store/resources.rs` for what is written where). Writes
/// are compare-and-swap on the key's revision: another control plane's write in between makes
/// this one fail ("try again") instead of being lost.
impl Store {
    async fn apply(
        &mut self,
        doc: &Located,
        text: &str,
        updates: &mut mpsc::Receiver<Update>,
    ) -> Result<Applied, StoreError> {
        let key = doc.key();
        let holder = self.holder(&key).await?;
        let new = self
            .target
            .key(&format!("{RESOURCES}{}", text_name(&key, "/")));
        let new = String::from_utf8_lossy(&new).into_owned();
        let existing = self.read(&new).await?;
        let mut revisions = vec![(new.clone(), existing.mod_revision)];
        let holder = holder.map(|(name, read)| {
            revisions.push((name.clone(), read.mod_revision));
            (name, read.text.unwrap_or_default())
        });
        let (write, applied) = self
            .core
            .plan_apply(doc, text, holder, (new, existing.text))?;
        if let Some(write) = write {
            let expected = revisions
                .iter()
                .rev()
                .find(|(name, _)| *name == write.name)
                .map_or(0, |(_, r)| *r);
            let revision = self.write(write, expected).await?;
            self.catch_up(revision, updates).await?;
            self.core.confirm(&key, Some(doc))?;
        }
        Ok(applied)
    }

    async fn delete(
        &mut self,
        key: &DocKey,
        updates: &mut mpsc::Receiver<Update>,
    ) -> Result<(), StoreError> {
        let (name, read) = match self.holder(key).await? {
            Some(holder) if self.core.is_in_force(key) => holder,
            _ => return Err(StoreError::NotFound(key.clone())),
        };
        let expected = read.mod_revision;
        let write = self
            .core
            .plan_delete(key, (name, read.text.unwrap_or_default()))?;
        let revision = self.write(write, expected).await?;
        self.catch_up(revision, updates).await?;
        self.core.confirm(key, None)
    }

    /// The key defining `key` (its name, its text); a registered workload is refused.
    async fn holder(&self, key: &DocKey) -> Result<Option<(String, Read)>, StoreError> {
        let Some(name) = self.core.holder(key) else {
            return Ok(None);
        };
        let rest = name
            .strip_prefix(&self.target.prefix)
            .and_then(|r| r.strip_prefix('/'));
        if rest.is_some_and(|r| r.starts_with(REGISTERED)) {
            return Err(StoreError::Registered(key.clone()));
        }
        let read = self.read(&name).await?;
        Ok(Some((name, read)))
    }

    async fn read(&self, name: &str) -> Result<Read, StoreError> {
        Ok(match self.client.get(name.as_bytes()).await? {
            Some(kv) => Read {
                text: Some(String::from_utf8_lossy(&kv.value).into_owned()),
                mod_revision: kv.mod_revision,
            },
            None => Read {
                text: None,
                mod_revision: 0,
            },
        })
    }

    /// Writes (or removes) a key if it is still at revision `expected`; the write's revision.
    async fn write(&self, write: Write, expected: i64) -> Result<i64, StoreError> {
        let value = write.text.as_deref().map(str::as_bytes);
        match self
            .client
            .swap(write.name.as_bytes(), expected, value)
            .await?
        {
            Some(revision) => Ok(revision),
            None => Err(StoreError::Uneditable {
                name: write.name,
                message: "changed by someone else while it was being edited; try again".into(),
            }),
        }
    }
}
