//! The file store: owns the store directory. It reads every `*.yaml`/`*.yml` file under it
//! (including `.registered/`, where the registration API persists workloads), polls for changes,
//! validates each document and publishes the state in force on a `watch` channel. Validation is
//! per document ([`crate::documents`]): a bad document keeps its last good version in force and
//! holds nothing else back; its errors are logged and kept in [`StoreStatus`].
//!
//! One task owns the directory, so registrations and reloads never interleave. Each file's
//! parsed documents are cached with its text, so a change re-parses only the files that changed
//! (a one-workload registration does not re-parse a megabyte of YAML); the cross-file checks
//! (`documents::in_force`) still see the whole set. Loads run on the blocking pool, off the
//! async workers that serve the streams.

use crate::documents::{self, DocKey, InForce, ParsedFile};
use crate::index::{PolicyStatus, RouteStatus};
use crate::resource::{Defaults, ExternalWorkload, State};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};

/// Subdirectory of the store where registered workloads are persisted.
pub const REGISTERED_DIR: &str = ".registered";

/// What `GET /v1/store` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStatus {
    /// Number of states applied so far: 1 after the first load, then one more each time what
    /// is in force changes.
    pub generation: u64,
    pub services: usize,
    pub workloads: usize,
    /// The status of every route in force: per parentRef, `Accepted` and `ResolvedRefs`
    /// conditions as in Gateway API `status.parents` (see `docs/traffic.md`).
    pub routes: Vec<RouteStatus>,
    /// The status of every `Server`, `AuthorizationPolicy` and `HTTPLocalRateLimitPolicy` in
    /// force: one `Accepted` condition each (a Server loses to an older one on a shared port,
    /// a rate-limit policy to an older one of its Server: `Conflicted`; a policy whose target
    /// or authentication is missing applies nothing: `TargetNotFound`,
    /// `AuthenticationNotFound`).
    pub policies: Vec<PolicyStatus>,
    /// Errors of the documents in the store now (each such document keeps its last good
    /// version in force); empty when every document is valid.
    pub errors: Vec<String>,
    /// Whether the first load happened (good or not).
    #[serde(skip)]
    pub loaded: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .0.join("; "))]
    Rejected(Vec<String>),
    #[error("workload {0}/{1} is not registered")]
    NotRegistered(String, String),
    #[error("the store has stopped")]
    Stopped,
    /// Stored, but the index had not served the change within this long (the control plane
    /// is overloaded or stopping); asking again is safe.
    #[error("stored, but not applied by the index within {0:?}; try again")]
    NotApplied(std::time::Duration),
}

/// (path relative to the store, content hash, parsed documents) of one file.
type Scanned = (String, u64, Arc<ParsedFile>);

enum Command {
    Register(ExternalWorkload, oneshot::Sender<Result<(), StoreError>>),
    Deregister(String, String, oneshot::Sender<Result<(), StoreError>>),
}

/// A cheap handle to the store task.
#[derive(Clone)]
pub struct StoreHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<StoreStatus>,
    states: watch::Receiver<Arc<State>>,
}

impl StoreHandle {
    pub fn status(&self) -> StoreStatus {
        self.status.borrow().clone()
    }

    pub fn states(&self) -> watch::Receiver<Arc<State>> {
        self.states.clone()
    }

    /// Persists a workload under `.registered/` and applies it before returning.
    pub async fn register(&self, w: ExternalWorkload) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Register(w, tx))
            .await
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Deletes a registered workload and applies the change before returning.
    pub async fn deregister(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Deregister(namespace.to_string(), name.to_string(), tx);
        self.commands
            .send(cmd)
            .await
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }
}

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
    let (states_tx, states) = watch::channel(Arc::new(State::default()));
    let (status_tx, status) = watch::channel(StoreStatus::default());
    let mut store = Store {
        dir,
        defaults,
        states_tx,
        status_tx,
        cache: HashMap::new(),
        fingerprint: None,
        in_force: InForce::new(),
        first_seen: HashMap::new(),
    };
    store.load();
    let (commands, rx) = mpsc::channel(16);
    let task = tokio::spawn(store.run(rx, poll_interval, shutdown));
    Ok((
        StoreHandle {
            commands,
            status,
            states,
        },
        task,
    ))
}

struct Store {
    dir: PathBuf,
    defaults: Defaults,
    states_tx: watch::Sender<Arc<State>>,
    status_tx: watch::Sender<StoreStatus>,
    /// A file is re-read only when its size or mtime changed, and re-parsed only when its
    /// text changed.
    cache: HashMap<PathBuf, Cached>,
    /// Hash of the (file, content hash) list of the last load.
    fingerprint: Option<u64>,
    /// The version of each document in force: what a bad document falls back to.
    in_force: InForce,
    /// When each document in force was first seen (Unix seconds): the age of a route without
    /// a `metadata.creationTimestamp`, for precedence. Not persisted: after a restart such
    /// routes are all as old as the first load, and namespace/name breaks the tie.
    first_seen: HashMap<DocKey, i64>,
}

/// One store file as last read.
struct Cached {
    len: u64,
    mtime: Option<SystemTime>,
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
                self.load();
            }
            Some(Command::Register(w, reply)) => {
                let _ = reply.send(self.register(w));
            }
            Some(Command::Deregister(ns, name, reply)) => {
                let _ = reply.send(self.deregister(&ns, &name));
            }
        }
    }

    /// Scans, and if anything changed, validates each document and applies what is in force.
    /// Returns the errors of this load (empty when nothing changed or every document is valid).
    fn load(&mut self) -> Vec<String> {
        let files = match self.scan() {
            Ok(f) => f,
            Err(e) => return self.report(vec![e]),
        };
        let mut h = DefaultHasher::new();
        for (rel, hash, _) in &files {
            (rel, hash).hash(&mut h);
        }
        let fp = h.finish();
        if self.fingerprint == Some(fp) {
            return Vec::new();
        }
        self.fingerprint = Some(fp);
        let parsed: Vec<(&str, &ParsedFile)> = files
            .iter()
            .map(|(rel, _, parsed)| (rel.as_str(), &**parsed))
            .collect();
        let (in_force, errors) = documents::in_force(&parsed, &self.in_force);
        let now = crate::clock::unix_now();
        self.first_seen.retain(|key, _| in_force.contains_key(key));
        for key in in_force.keys() {
            self.first_seen.entry(key.clone()).or_insert(now);
        }
        let state = documents::state_seen(&in_force, &self.first_seen);
        self.in_force = in_force;
        let first = !self.status_tx.borrow().loaded;
        if first || **self.states_tx.borrow() != state {
            let (services, workloads) = (state.services.len(), state.workloads.len());
            let routes = crate::index::route_statuses(&state);
            let policies = crate::index::policy_statuses(&state);
            self.states_tx.send_replace(Arc::new(state));
            self.status_tx.send_modify(|s| {
                s.generation += 1;
                s.services = services;
                s.workloads = workloads;
                s.routes = routes;
                s.policies = policies;
            });
            tracing::info!(services, workloads, "store loaded");
        }
        self.report(errors)
    }

    /// Records this load's errors (the documents they name keep their last good version).
    fn report(&mut self, errors: Vec<String>) -> Vec<String> {
        for e in &errors {
            tracing::warn!("store document rejected, its last good version stays in force: {e}");
        }
        self.status_tx.send_modify(|s| {
            s.errors = errors.clone();
            s.loaded = true;
        });
        errors
    }

    /// Every YAML file under the store, sorted, as (path relative to the store, content hash,
    /// parsed documents). Hidden files and directories are skipped, except `.registered/`.
    fn scan(&mut self) -> Result<Vec<Scanned>, String> {
        let mut paths = Vec::new();
        collect(&self.dir, true, &mut paths)
            .map_err(|e| format!("{}: cannot read: {e}", self.dir.display()))?;
        paths.sort();
        let mut out = Vec::new();
        let mut cache = HashMap::new();
        for path in paths {
            let rel = path
                .strip_prefix(&self.dir)
                .unwrap_or(&path)
                .display()
                .to_string();
            let meta = std::fs::metadata(&path).map_err(|e| format!("{rel}: cannot read: {e}"))?;
            let (len, mtime) = (meta.len(), meta.modified().ok());
            let entry = match self.cache.remove(&path) {
                Some(c) if (c.len, c.mtime) == (len, mtime) => c,
                old => {
                    let bytes =
                        std::fs::read(&path).map_err(|e| format!("{rel}: cannot read: {e}"))?;
                    let text =
                        String::from_utf8(bytes).map_err(|_| format!("{rel}: not UTF-8 text"))?;
                    match old {
                        // Touched but not changed: keep the parse.
                        Some(c) if *c.text == *text => Cached { len, mtime, ..c },
                        _ => {
                            let parsed =
                                documents::parse_yaml_documents(&rel, &text, &self.defaults);
                            let mut h = DefaultHasher::new();
                            text.hash(&mut h);
                            Cached {
                                len,
                                mtime,
                                text: Arc::from(text),
                                hash: h.finish(),
                                parsed: Arc::new(parsed),
                            }
                        }
                    }
                }
            };
            out.push((rel, entry.hash, entry.parsed.clone()));
            cache.insert(path, entry);
        }
        self.cache = cache;
        Ok(out)
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
        let yaml = yaml_serde::to_string(&w.to_document())
            .map_err(|e| StoreError::Rejected(vec![e.to_string()]))?;
        write_atomic(&path, yaml.as_bytes())?;
        self.load();
        let rel = path
            .strip_prefix(&self.dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        // A 200 means this very workload is in force. Only errors of this document undo it
        // (unrelated bad files are reported by /v1/store and never block a registration).
        let place = format!("{rel}: document");
        let errors: Vec<String> = self
            .status_tx
            .borrow()
            .errors
            .iter()
            .filter(|e| e.contains(&place))
            .cloned()
            .collect();
        let key = (w.namespace.clone(), w.name.clone());
        let applied = self.states_tx.borrow().workloads.get(&key) == Some(&w);
        if !errors.is_empty() || !applied {
            match previous {
                Some(bytes) => write_atomic(&path, &bytes)?,
                None => remove(&path)?,
            }
            self.load();
            if errors.is_empty() {
                return Err(StoreError::Rejected(vec![format!(
                    "{rel}: workload {}/{} was not applied",
                    w.namespace, w.name
                )]));
            }
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
#[path = "store_tests.rs"]
mod tests;
