//! The Kubernetes store (`--store kubernetes`): the same [`Core`] the file and etcd stores
//! feed, fed from the API server. One watch task per kind ([`crate::k8s::watch`]) hands on
//! objects already cut down to what their documents need; this task keeps them, renders each
//! as one named text (`Kind/namespace/name`, so an error names the object) and lets the core
//! validate and apply them exactly as it does files. Unchanged texts are not parsed again.
//!
//! Changes go through the Kubernetes API (kubectl), not through weft: registrations and
//! `weft apply`/`delete` are refused with a word saying so. Pods are the workloads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{Command, Core, Scanned, StoreError, StoreHandle};
use crate::documents::ParsedFile;
use crate::k8s::objects::{Object, Readiness, Rendered};
use crate::k8s::watch::{Change, Key};
use crate::k8s::{Shape, KINDS};
use crate::resource::Defaults;

/// How long the control plane waits at start for the first list of every kind.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What `weft` answers a change it cannot make on this store.
const READ_ONLY: &str = "the Kubernetes store takes changes through the Kubernetes API \
    (kubectl apply/delete); workloads are pods";

/// Starts one watch per kind, waits (up to `start_timeout`) for each kind's first list, applies
/// them, and spawns the task that keeps applying changes until `shutdown` changes.
pub async fn start(
    client: kube::Client,
    defaults: Defaults,
    start_timeout: Duration,
    shutdown: watch::Receiver<bool>,
) -> Result<(StoreHandle, tokio::task::JoinHandle<()>), StoreError> {
    let (tx, mut changes) = mpsc::channel(256);
    let mut watches = Vec::new();
    for index in 0..KINDS.len() {
        watches.push(tokio::spawn(crate::k8s::watch::run(
            client.clone(),
            index,
            tx.clone(),
            shutdown.clone(),
        )));
    }
    drop(tx);
    let mut store = Store {
        core: Core::new(defaults),
        objects: vec![BTreeMap::new(); KINDS.len()],
        heard: vec![false; KINDS.len()],
        texts: HashMap::new(),
    };
    let deadline = tokio::time::Instant::now() + start_timeout;
    while store.heard.iter().any(|h| !h) {
        match tokio::time::timeout_at(deadline, changes.recv()).await {
            Ok(Some(change)) => store.take(change),
            Ok(None) => return Err(StoreError::Stopped),
            Err(_) => {
                let missing: Vec<&str> = KINDS
                    .iter()
                    .zip(&store.heard)
                    .filter(|(_, h)| !**h)
                    .map(|(k, _)| k.plural)
                    .collect();
                for w in &watches {
                    w.abort();
                }
                return Err(StoreError::KubernetesStart {
                    waited: start_timeout,
                    missing: missing.join(", "),
                });
            }
        }
    }
    store.render();
    let (commands, rx) = mpsc::channel(16);
    let handle = store.core.handle(commands);
    let task = tokio::spawn(async move {
        store.run(rx, changes, shutdown).await;
        for w in watches {
            let _ = w.await;
        }
    });
    Ok((handle, task))
}

struct Store {
    core: Core,
    /// Per kind (index in [`KINDS`]), what is kept of each object.
    objects: Vec<BTreeMap<Key, Object>>,
    /// Per kind, whether its first list (or word that it is not served) came in.
    heard: Vec<bool>,
    /// The hash and parse of the last text rendered for each name (the text itself is not
    /// kept).
    texts: HashMap<String, (u64, Arc<ParsedFile>)>,
}

impl Store {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut changes: mpsc::Receiver<Change>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Some(c) => {
                        self.take(c);
                        // A burst (a list, a rollout) is rendered once.
                        while let Ok(c) = changes.try_recv() {
                            self.take(c);
                        }
                        self.render();
                    }
                    None => return,
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::Register(_, reply)) | Some(Command::Deregister(_, _, reply)) => {
                        let _ = reply.send(Err(StoreError::ReadOnly(READ_ONLY)));
                    }
                    Some(Command::Apply(_, _, reply)) => {
                        let _ = reply.send(Err(StoreError::ReadOnly(READ_ONLY)));
                    }
                    Some(Command::Delete(_, reply)) => {
                        let _ = reply.send(Err(StoreError::ReadOnly(READ_ONLY)));
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

    fn take(&mut self, change: Change) {
        match change {
            Change::Listed(kind, objects) => {
                self.objects[kind] = objects.into_iter().collect();
                self.heard[kind] = true;
            }
            Change::Applied(kind, key, object) => {
                self.objects[kind].insert(key, object);
            }
            Change::Deleted(kind, key) => {
                self.objects[kind].remove(&key);
            }
            Change::Unserved(kind) => {
                self.objects[kind].clear();
                self.heard[kind] = true;
            }
        }
    }

    /// Renders every object's document and applies those that changed.
    fn render(&mut self) {
        let shapes = || KINDS.iter().zip(&self.objects);
        let mut rendered = Rendered {
            defaults: self.core.defaults(),
            namespaces: BTreeMap::new(),
            readiness: Readiness::of(shapes().flat_map(|(_, objects)| {
                objects.values().filter_map(|o| match o {
                    Object::Slice(endpoints) => Some(endpoints.as_slice()),
                    _ => None,
                })
            })),
        };
        for (kind, objects) in shapes() {
            if kind.shape != Shape::Namespace {
                continue;
            }
            for ((_, name), o) in objects {
                if let Object::Document(doc) = o {
                    rendered
                        .namespaces
                        .insert(name.clone(), Rendered::inherited(doc));
                }
            }
        }
        let mut texts = Vec::new();
        let mut kept = HashMap::new();
        for (kind, objects) in shapes() {
            for ((namespace, name), object) in objects {
                let Some(doc) = rendered.document(kind.shape, namespace, name, object) else {
                    continue;
                };
                let text_name = kind.text_name(namespace, name);
                let text = doc.to_string();
                let (hash, parsed) = match self.texts.remove(&text_name) {
                    Some((hash, parsed)) if hash == super::text_hash(&text) => (hash, parsed),
                    _ => self.core.parse(&text_name, &text),
                };
                texts.push((text_name.clone(), hash, parsed.clone()));
                kept.insert(text_name, (hash, parsed));
            }
        }
        self.texts = kept;
        texts.sort_by(|a: &Scanned, b: &Scanned| a.0.cmp(&b.0));
        self.core.apply(&texts);
    }
}
