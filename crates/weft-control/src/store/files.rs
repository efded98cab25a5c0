//! The file store: owns the store directory. It reads every `*.yaml`/`*.yml` file under it
//! (including `.registered/`, where the registration API persists workloads), polls for changes
//! and hands the texts to the [`Core`], which decides what is in force.
//!
//! Each file's parsed documents are cached with its text, so a change re-parses only the files
//! that changed (a one-workload registration does not re-parse a megabyte of YAML); the
//! cross-file checks still see the whole set. Loads run on the blocking pool, off the async
//! workers that serve the streams.

use super::resources::text_name;
use super::{Applied, Command, Core, Scanned, StoreError, StoreHandle, Write};
use crate::documents::{DocKey, Located, ParsedFile};
use crate::resource::{Defaults, ExternalWorkload};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

/// How long after its mtime a file counts as racy (see [`Cached::racy`]).
const RACY: Duration = Duration::from_secs(2);

/// Whether a file modified at `mtime` must be read again by the next scan (unknown or future
/// mtimes included).
fn is_racy(mtime: Option<SystemTime>, now: SystemTime) -> bool {
    mtime.is_none_or(|m| !now.duration_since(m).is_ok_and(|age| age >= RACY))
}

/// Subdirectory of the store where registered workloads are persisted.
pub const REGISTERED_DIR: &str = ".registered";

/// Loads the store once (so callers start from a known state), then spawns the task that polls
/// it and serves registrations until `shutdown` changes.
pub fn start(
    dir: PathBuf,
    defaults: Defaults,
    poll_interval: Duration,
    shutdown: watch::Receiver<bool>,
) -> Result<(StoreHandle, tokio::task::JoinHandle<()>), StoreError> {
    let reg = dir.join(REGISTERED_DIR);
    std::fs::create_dir_all(&reg).map_err(|source| StoreError::Io { path: reg, source })?;
    let mut store = Store {
        dir,
        core: Core::new(defaults),
        cache: HashMap::new(),
        unsettled: HashMap::new(),
    };
    store.load();
    let (commands, rx) = mpsc::channel(16);
    let handle = store.core.handle(commands);
    let task = tokio::spawn(store.run(rx, poll_interval, shutdown));
    Ok((handle, task))
}

struct Store {
    dir: PathBuf,
    core: Core,
    /// A file is re-read only when its size or mtime changed, and re-parsed only when its
    /// text changed.
    cache: HashMap<PathBuf, Cached>,
    /// Files a poll found changed, with the text it read: such a file may be half written
    /// (`>` truncates, then writes), so a poll applies it only once the next poll reads the
    /// same text. Our own writes (registrations, `weft apply`) are atomic and read at once.
    unsettled: HashMap<PathBuf, String>,
}

/// One store file as last read.
struct Cached {
    len: u64,
    mtime: Option<SystemTime>,
    /// Modified so recently that a write in the same timestamp tick, of the same length, would
    /// leave `len` and `mtime` as they are (file systems stamp with a coarse clock): such a
    /// file is read again by the next scan, whatever its metadata says.
    racy: bool,
    text: Arc<str>,
    /// Hash of `text`, for the fingerprint.
    hash: u64,
    /// `documents::parse_yaml_documents` of `text`.
    parsed: Arc<ParsedFile>,
}

impl Store {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        poll: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // `None`: a poll.
            let job = tokio::select! {
                _ = tick.tick() => None,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => Some(cmd),
                    None => return,
                },
                _ = shutdown.changed() => return,
            };
            // File I/O, parsing and validation are blocking work that grows with the store:
            // the store (with its cache) moves to the blocking pool for it and comes back.
            let done = tokio::task::spawn_blocking(move || {
                self.handle(job);
                self
            });
            self = match done.await {
                Ok(store) => store,
                Err(e) => {
                    tracing::error!("store task failed, no further changes are applied: {e}");
                    return;
                }
            };
        }
    }

    fn handle(&mut self, job: Option<Command>) {
        match job {
            None => {
                self.poll();
            }
            Some(Command::Register(w, reply)) => {
                let _ = reply.send(self.register(w));
            }
            Some(Command::Deregister(ns, name, reply)) => {
                let _ = reply.send(self.deregister(&ns, &name));
            }
            Some(Command::Apply(doc, text, reply)) => {
                let _ = reply.send(self.apply(&doc, &text));
            }
            Some(Command::Delete(key, reply)) => {
                let _ = reply.send(self.delete(&key));
            }
            Some(Command::Mirror(texts)) => {
                self.core.set_mirror(texts);
            }
        }
    }

    /// Scans, and if anything changed, applies it. Returns the errors of this load.
    fn load(&mut self) -> Vec<String> {
        self.scan_and_apply(false)
    }

    /// [`Store::load`] for the periodic poll: a file changed since the last poll waits for the
    /// next one (see [`Store::unsettled`]).
    fn poll(&mut self) -> Vec<String> {
        self.scan_and_apply(true)
    }

    fn scan_and_apply(&mut self, settle: bool) -> Vec<String> {
        match self.scan(settle) {
            Ok(files) => self.core.apply(&files),
            Err(e) => self.core.report(vec![e]),
        }
    }

    /// Every YAML file under the store, sorted, as (path relative to the store, content hash,
    /// parsed documents). Hidden files and directories are skipped, except `.registered/`.
    fn scan(&mut self, settle: bool) -> Result<Vec<Scanned>, String> {
        let mut paths = Vec::new();
        collect(&self.dir, true, &mut paths)
            .map_err(|e| format!("{}: cannot read: {e}", self.dir.display()))?;
        paths.sort();
        let mut out = Vec::new();
        let mut cache = HashMap::new();
        let mut unsettled = HashMap::new();
        let now = SystemTime::now();
        for path in paths {
            let rel = self.relative(&path);
            let meta = std::fs::metadata(&path).map_err(|e| format!("{rel}: cannot read: {e}"))?;
            let (len, mtime) = (meta.len(), meta.modified().ok());
            let racy = is_racy(mtime, now);
            let old = self.cache.remove(&path);
            let entry = match old {
                Some(c) if !c.racy && (c.len, c.mtime) == (len, mtime) => c,
                old => {
                    let bytes =
                        std::fs::read(&path).map_err(|e| format!("{rel}: cannot read: {e}"))?;
                    let text =
                        String::from_utf8(bytes).map_err(|_| format!("{rel}: not UTF-8 text"))?;
                    match old {
                        // Touched but not changed: keep the parse.
                        Some(c) if *c.text == *text => Cached {
                            len,
                            mtime,
                            racy,
                            ..c
                        },
                        old if settle && self.unsettled.get(&path) != Some(&text) => {
                            // Changed, and not read like this before: keep what is in force
                            // (if anything) until a poll reads the same text again.
                            unsettled.insert(path.clone(), text);
                            if let Some(c) = old {
                                out.push((rel, c.hash, c.parsed.clone()));
                                cache.insert(path, c);
                            }
                            continue;
                        }
                        _ => {
                            let (hash, parsed) = self.core.parse(&rel, &text);
                            Cached {
                                len,
                                mtime,
                                racy,
                                text: Arc::from(text),
                                hash,
                                parsed,
                            }
                        }
                    }
                }
            };
            out.push((rel, entry.hash, entry.parsed.clone()));
            cache.insert(path, entry);
        }
        self.cache = cache;
        self.unsettled = unsettled;
        Ok(out)
    }

    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.dir)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    fn registered_path(&self, namespace: &str, name: &str) -> PathBuf {
        // Namespaces and names are DNS labels (no dots), so this file name is unambiguous.
        self.dir
            .join(REGISTERED_DIR)
            .join(format!("{namespace}.{name}.yaml"))
    }

    fn register(&mut self, w: ExternalWorkload) -> Result<(), StoreError> {
        let path = self.registered_path(&w.namespace, &w.name);
        let previous = std::fs::read(&path).ok();
        let yaml = Core::registration_yaml(&w)?;
        write_atomic(&path, yaml.as_bytes())?;
        self.load();
        if let Err(errors) = self.core.registered(&self.relative(&path), &w) {
            match previous {
                Some(bytes) => write_atomic(&path, &bytes)?,
                None => remove(&path)?,
            }
            self.load();
            return Err(StoreError::Rejected(errors));
        }
        Ok(())
    }

    fn deregister(&mut self, namespace: &str, name: &str) -> Result<(), StoreError> {
        let path = self.registered_path(namespace, name);
        if !path.exists() {
            return Err(StoreError::NotRegistered(
                namespace.to_string(),
                name.to_string(),
            ));
        }
        remove(&path)?;
        self.load();
        Ok(())
    }
}

/// `weft apply` and `weft delete` (see `store/resources.rs` for what is written where).
impl Store {
    fn apply(&mut self, doc: &Located, text: &str) -> Result<Applied, StoreError> {
        // Decide from the files as they are now, not as of the last poll.
        self.load();
        let key = doc.key();
        let holder = self.holder(&key)?;
        let new = format!("{}.yaml", text_name(&key, "."));
        let existing = read(&self.dir.join(&new))?;
        let (write, applied) = self.core.plan_apply(doc, text, holder, (new, existing))?;
        if let Some(write) = write {
            self.write(write)?;
            self.load();
            self.core.confirm(&key, Some(doc))?;
        }
        Ok(applied)
    }

    fn delete(&mut self, key: &DocKey) -> Result<(), StoreError> {
        self.load();
        let holder = match self.holder(key)? {
            Some(holder) if self.core.is_in_force(key) => holder,
            _ => return Err(StoreError::NotFound(key.clone())),
        };
        let write = self.core.plan_delete(key, holder)?;
        self.write(write)?;
        self.load();
        self.core.confirm(key, None)
    }

    /// The file defining `key` (relative name, text); a registered workload is refused.
    fn holder(&self, key: &DocKey) -> Result<Option<(String, String)>, StoreError> {
        let Some(name) = self.core.holder(key) else {
            return Ok(None);
        };
        if Path::new(&name).starts_with(REGISTERED_DIR) {
            return Err(StoreError::Registered(key.clone()));
        }
        let text = read(&self.dir.join(&name))?.unwrap_or_default();
        Ok(Some((name, text)))
    }

    fn write(&self, write: Write) -> Result<(), StoreError> {
        let path = self.dir.join(&write.name);
        match write.text {
            Some(text) => write_atomic(&path, text.as_bytes()),
            None => remove(&path),
        }
    }
}

/// A store file's text, `None` if it does not exist.
fn read(path: &Path) -> Result<Option<String>, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn collect(dir: &Path, top: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        let ty = entry.file_type()?;
        if ty.is_dir() {
            if !name.starts_with('.') || (top && name == REGISTERED_DIR) {
                collect(&path, false, out)?;
            }
        } else if !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml")) {
            out.push(path);
        }
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    crate::files::write_atomic(path, bytes, false).map_err(|e| StoreError::Io {
        path: e.path,
        source: e.source,
    })
}

fn remove(path: &Path) -> Result<(), StoreError> {
    std::fs::remove_file(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
