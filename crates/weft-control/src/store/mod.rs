//! The store: where resources and registrations live, and the one rule that turns them into the
//! state in force. Three sources feed the same [`Core`]: [`files`] (a directory, polled; the
//! default), [`etcd`] (keys under a prefix, watched) and [`kubernetes`] (the API server's
//! objects, watched; read-only here). Each source hands the core its named
//! texts ("files": a path or a key, each holding YAML documents); the core validates each
//! document ([`crate::documents`]), keeps the last good version of a bad one, publishes the
//! state in force on a `watch` channel and records errors in [`StoreStatus`].
//!
//! One task owns a source, so registrations and reloads never interleave; [`StoreHandle`] is
//! how the rest of the control plane reaches it.

pub mod edit;
pub mod etcd;
pub mod files;
pub mod kubernetes;
pub mod status;

use crate::documents::{self, DocKey, InForce, Located, ParsedFile};
use crate::index::{PolicyStatus, RouteStatus};
use crate::resource::{Defaults, ExternalWorkload, State};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

pub use files::REGISTERED_DIR;

mod resources;

/// Where the store lives: `--store DIR`, `--store etcd://HOST:PORT[,...]/PREFIX` or
/// `--store kubernetes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Dir(PathBuf),
    Etcd(crate::etcd::Target),
    /// The Kubernetes API server, with the kubeconfig to reach it by (`None`, what
    /// `--store kubernetes` gives: `KUBECONFIG`, `~/.kube/config`, else the pod's service account).
    Kubernetes(Option<PathBuf>),
}

/// The `--store` value that selects the Kubernetes store.
pub const KUBERNETES: &str = "kubernetes";

impl std::str::FromStr for Location {
    type Err = crate::etcd::Error;
    fn from_str(s: &str) -> Result<Location, Self::Err> {
        if s == KUBERNETES {
            Ok(Location::Kubernetes(None))
        } else if s.starts_with(crate::etcd::SCHEME) {
            crate::etcd::Target::parse(s).map(Location::Etcd)
        } else {
            Ok(Location::Dir(PathBuf::from(s)))
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Dir(d) => write!(f, "{}", d.display()),
            Location::Etcd(t) => write!(f, "{t}"),
            Location::Kubernetes(None) => f.write_str(KUBERNETES),
            Location::Kubernetes(Some(k)) => write!(f, "{KUBERNETES} ({})", k.display()),
        }
    }
}

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
    /// The status of every `Server`, `AuthorizationPolicy`, `HTTPLocalRateLimitPolicy` and
    /// `EgressNetwork` in force: one `Accepted` condition each (a Server loses to an older one
    /// on a shared port: `Conflicted`; an AuthorizationPolicy whose target or authentication is
    /// missing applies nothing: `TargetNotFound`, `AuthenticationNotFound`; a rate-limit
    /// policy, with its `targetRef`, in Linkerd's words: `NoMatchingTarget`,
    /// `RateLimitReasonAlreadyExists`).
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
    /// `weft apply`/`weft delete` of a document that is not there to change.
    #[error("{0} not found")]
    NotFound(DocKey),
    /// `weft apply`/`weft delete` of a workload the registration API owns.
    #[error(
        "{0} is a registered workload: `weft run` and the registration API \
         (PUT/DELETE /v1/workloads/NAMESPACE/NAME) own it"
    )]
    Registered(DocKey),
    /// The text holding the document cannot be edited (`store::edit`).
    #[error("{name}: {message}")]
    Uneditable { name: String, message: String },
    #[error("the store has stopped")]
    Stopped,
    /// Stored, but the index had not served the change within this long (the control plane
    /// is overloaded or stopping); asking again is safe.
    #[error("stored, but not applied by the index within {0:?}; try again")]
    NotApplied(std::time::Duration),
    #[error(transparent)]
    Etcd(#[from] crate::etcd::Error),
    /// A change `weft` cannot make on this store (the Kubernetes store: kubectl makes them).
    #[error("{0}")]
    ReadOnly(&'static str),
    #[error(transparent)]
    Kubernetes(#[from] crate::k8s::Error),
    /// The API server did not answer the first list of these kinds within the start deadline.
    #[error("the Kubernetes API server did not list {missing} within {waited:?} (is it reachable, and may this service account list them?)")]
    KubernetesStart {
        waited: std::time::Duration,
        missing: String,
    },
    /// etcd did not answer the first list within the start deadline.
    #[error("{target}: not reachable within {waited:?}: {last}")]
    EtcdStart {
        target: String,
        waited: std::time::Duration,
        /// The last attempt's error (not a `source`: the message already says it).
        last: crate::etcd::Error,
    },
}

/// (name of the file or key, content hash, parsed documents) of one source text.
pub type Scanned = (String, u64, Arc<ParsedFile>);

enum Command {
    Register(ExternalWorkload, oneshot::Sender<Result<(), StoreError>>),
    Deregister(String, String, oneshot::Sender<Result<(), StoreError>>),
    /// A document (and its text as written) from `POST /v1/resources`.
    Apply(
        Box<Located>,
        String,
        oneshot::Sender<Result<Applied, StoreError>>,
    ),
    Delete(DocKey, oneshot::Sender<Result<(), StoreError>>),
    /// The multicluster mirror's generated texts (name, YAML), replacing its previous ones.
    Mirror(Vec<(String, String)>),
}

/// What `weft apply` did to one document (kubectl's words).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Applied {
    Created,
    Configured,
    Unchanged,
}

/// What a store writes for an apply or a delete: the text named `name` becomes `text`
/// (`None`: the text is removed, it holds no document any more).
pub struct Write {
    pub name: String,
    pub text: Option<String>,
}

/// A cheap handle to the store task.
#[derive(Clone)]
pub struct StoreHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<StoreStatus>,
    states: watch::Receiver<Arc<State>>,
    in_force: watch::Receiver<Arc<InForce>>,
}

impl StoreHandle {
    pub fn status(&self) -> StoreStatus {
        self.status.borrow().clone()
    }

    pub fn states(&self) -> watch::Receiver<Arc<State>> {
        self.states.clone()
    }

    /// [`StoreHandle::status`], as it changes.
    pub fn statuses(&self) -> watch::Receiver<StoreStatus> {
        self.status.clone()
    }

    /// Persists a workload (a file under `.registered/`, a key under `PREFIX/registered/`)
    /// and applies it before returning.
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

    /// The documents in force, each with its source text (`GET /v1/resources`).
    pub fn in_force(&self) -> Arc<InForce> {
        self.in_force.borrow().clone()
    }

    /// Stores one document of `POST /v1/resources` (`text`: the document as written) where
    /// its key lives, or in a text of its own, and applies it before returning.
    pub async fn apply(&self, doc: Located, text: String) -> Result<Applied, StoreError> {
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Apply(Box::new(doc), text, tx);
        self.commands
            .send(cmd)
            .await
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Replaces the texts the multicluster mirror generated (`crate::multicluster`): their
    /// documents are in force beside the store's own, and never written into it.
    pub async fn set_mirror(&self, texts: Vec<(String, String)>) -> Result<(), StoreError> {
        self.commands
            .send(Command::Mirror(texts))
            .await
            .map_err(|_| StoreError::Stopped)
    }

    /// Removes the document `key` from the text holding it and applies that before returning.
    pub async fn delete(&self, key: DocKey) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Delete(key, tx))
            .await
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }
}

/// The content hash of a source text: what tells a changed text from an unchanged one.
pub fn text_hash(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// What both sources share: the documents in force and the channels they are published on.
pub struct Core {
    defaults: Defaults,
    states_tx: watch::Sender<Arc<State>>,
    status_tx: watch::Sender<StoreStatus>,
    /// Hash of the (name, content hash) list of the last load.
    fingerprint: Option<u64>,
    /// The version of each document in force: what a bad document falls back to.
    in_force: Arc<InForce>,
    /// When each document in force was first seen (Unix seconds): the age of a route without
    /// a `metadata.creationTimestamp`, for precedence. Not persisted: after a restart such
    /// routes are all as old as the first load, and namespace/name breaks the tie.
    first_seen: HashMap<DocKey, i64>,
    /// `in_force`, published for `GET /v1/resources`.
    in_force_tx: watch::Sender<Arc<InForce>>,
    /// The texts of the last load: what an apply is validated against.
    texts: Vec<Scanned>,
    /// The multicluster mirror's texts, in force after the source's own (never written).
    mirror: Vec<Scanned>,
}

impl Core {
    pub fn new(defaults: Defaults) -> Core {
        Core {
            defaults,
            states_tx: watch::channel(Arc::new(State::default())).0,
            status_tx: watch::channel(StoreStatus::default()).0,
            fingerprint: None,
            in_force: Arc::new(InForce::new()),
            first_seen: HashMap::new(),
            in_force_tx: watch::channel(Arc::new(InForce::new())).0,
            texts: Vec::new(),
            mirror: Vec::new(),
        }
    }

    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    /// A handle that reaches the source's task through `commands`.
    fn handle(&self, commands: mpsc::Sender<Command>) -> StoreHandle {
        StoreHandle {
            commands,
            status: self.status_tx.subscribe(),
            states: self.states_tx.subscribe(),
            in_force: self.in_force_tx.subscribe(),
        }
    }

    /// Parses one named text into its documents, with its content hash ([`text_hash`]).
    pub fn parse(&self, name: &str, text: &str) -> (u64, Arc<ParsedFile>) {
        let parsed = documents::parse_yaml_documents(name, text, &self.defaults);
        (text_hash(text), Arc::new(parsed))
    }

    /// If the texts changed since the last call, validates each document and applies what is
    /// in force. `texts` is sorted by name. Returns the errors of this load (empty when
    /// nothing changed or every document is valid).
    pub fn apply(&mut self, texts: &[Scanned]) -> Vec<String> {
        let mut h = DefaultHasher::new();
        for (name, hash, _) in texts.iter().chain(&self.mirror) {
            (name, hash).hash(&mut h);
        }
        let fp = h.finish();
        if self.fingerprint == Some(fp) {
            return Vec::new();
        }
        self.fingerprint = Some(fp);
        self.texts = texts.to_vec();
        let parsed: Vec<(&str, &ParsedFile)> = texts
            .iter()
            .chain(&self.mirror)
            .map(|(name, _, parsed)| (name.as_str(), &**parsed))
            .collect();
        let (in_force, errors) = documents::in_force(&parsed, &self.in_force);
        let now = crate::clock::unix_now();
        self.first_seen.retain(|key, _| in_force.contains_key(key));
        for key in in_force.keys() {
            self.first_seen.entry(key.clone()).or_insert(now);
        }
        let state = documents::state_seen(&in_force, &self.first_seen);
        self.in_force = Arc::new(in_force);
        self.in_force_tx.send_replace(self.in_force.clone());
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

    /// Replaces the mirror's texts and applies them with the source's last texts.
    pub fn set_mirror(&mut self, texts: Vec<(String, String)>) -> Vec<String> {
        self.mirror = texts
            .into_iter()
            .map(|(name, text)| {
                let (hash, parsed) = self.parse(&name, &text);
                (name, hash, parsed)
            })
            .collect();
        let source = self.texts.clone();
        self.apply(&source)
    }

    /// Records this load's errors (the documents they name keep their last good version).
    pub fn report(&mut self, errors: Vec<String>) -> Vec<String> {
        for e in &errors {
            tracing::warn!("store document rejected, its last good version stays in force: {e}");
        }
        self.status_tx.send_modify(|s| {
            s.errors = errors.clone();
            s.loaded = true;
        });
        errors
    }

    /// After a registration was stored as `name` and loaded: `Ok` when this very workload is
    /// in force, else the errors to answer with (the caller undoes the write). Only errors of
    /// this document count: unrelated bad files are reported by `/v1/store` and never block
    /// a registration.
    pub fn registered(&self, name: &str, w: &ExternalWorkload) -> Result<(), Vec<String>> {
        let place = format!("{name}: document");
        let errors: Vec<String> = self
            .status_tx
            .borrow()
            .errors
            .iter()
            .filter(|e| e.contains(&place))
            .cloned()
            .collect();
        let key = (w.namespace.clone(), w.name.clone());
        let applied = self.states_tx.borrow().workloads.get(&key) == Some(w);
        match (errors.is_empty(), applied) {
            (true, true) => Ok(()),
            (true, false) => Err(vec![format!(
                "{name}: workload {}/{} was not applied",
                w.namespace, w.name
            )]),
            (false, _) => Err(errors),
        }
    }

    /// The document text a registration is stored as.
    pub fn registration_yaml(w: &ExternalWorkload) -> Result<String, StoreError> {
        yaml_serde::to_string(&w.to_document())
            .map_err(|e| StoreError::Rejected(vec![e.to_string()]))
    }
}
