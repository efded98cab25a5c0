//! List+watch of one kind, as Kubernetes clients do it: list (the whole set and its
//! `resourceVersion`), then watch from that version with bookmarks (which move the version on
//! without objects), re-watch from the last version when a watch ends (the server closes them
//! every few minutes), and list again when the version is too old (`410 Gone`, as an error
//! status or an `ERROR` event). Objects are cut down ([`super::objects::project`]) before they
//! leave this task. A kind is watched cluster-wide or in its row's one namespace, and by its
//! row's field selector when it has one (`resource::kinds`). While the API server is unreachable the last state stays in force, and
//! the loop retries with a growing pause.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::core::DynamicObject;
use tokio::sync::{mpsc, watch};

use super::objects::{project, Object};
use super::Kind;

/// (namespace, name); the namespace is empty for cluster-wide kinds.
pub type Key = (String, String);

/// What one kind's watch hands the store, with the kind's index in [`super::KINDS`].
#[derive(Debug)]
pub enum Change {
    /// The whole set (a first list, or a list after `410 Gone`).
    Listed(usize, Vec<(Key, Object)>),
    Applied(usize, Key, Object),
    Deleted(usize, Key),
    /// The kind is not served (its CRD is not installed): nothing of it, asked again later.
    Unserved(usize),
}

/// How long a watch may stay open on the server's side (it closes it then; we re-watch).
const WATCH_TIMEOUT_SECS: u32 = 290;
/// Pause after a failed call, doubled up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const MAX_PAUSE: Duration = Duration::from_secs(10);
/// How often a kind that is not served is asked for again.
const UNSERVED_RETRY: Duration = Duration::from_secs(30);

fn key(obj: &DynamicObject) -> Key {
    (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

fn gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(r) if r.code == 410)
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(r) if r.code == 404)
}

/// Watches kind `index` of [`super::KINDS`] until `shutdown` changes or the store is gone.
pub async fn run(
    client: kube::Client,
    index: usize,
    changes: mpsc::Sender<Change>,
    mut shutdown: watch::Receiver<bool>,
) {
    let kind = super::KINDS[index];
    let api: Api<DynamicObject> = match kind.row.watch_namespace {
        Some(ns) => Api::namespaced_with(client, ns, &kind.api_resource()),
        None => Api::all_with(client, &kind.api_resource()),
    };
    tokio::select! {
        _ = lists(&api, kind, index, &changes) => {}
        _ = shutdown.changed() => {}
    }
}

async fn lists(api: &Api<DynamicObject>, kind: Kind, index: usize, changes: &mpsc::Sender<Change>) {
    let mut pause = FIRST_PAUSE;
    loop {
        let mut params = ListParams::default();
        if let Some(fields) = kind.row.field_selector {
            params = params.fields(fields);
        }
        let list = match api.list(&params).await {
            Ok(list) => list,
            Err(e) if not_found(&e) => {
                tracing::info!(kind = %kind.api_resource().api_version, plural = kind.plural, "not served by the API server (CRD not installed?); asking again later");
                if changes.send(Change::Unserved(index)).await.is_err() {
                    return;
                }
                tokio::time::sleep(UNSERVED_RETRY).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(kind = kind.plural, error = %e, "list failed; the last state stays in force");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
                continue;
            }
        };
        pause = FIRST_PAUSE;
        let mut version = list.metadata.resource_version.clone().unwrap_or_default();
        let objects = list
            .items
            .iter()
            .map(|o| (key(o), project(&kind, o)))
            .collect();
        if changes.send(Change::Listed(index, objects)).await.is_err() {
            return;
        }
        // Watch from `version` until it is too old (then list again).
        loop {
            let started = tokio::time::Instant::now();
            match watch_once(api, kind, index, &mut version, changes).await {
                // A server (or a proxy in front of it) that ends every watch at once must not
                // be asked again in a tight loop.
                Ok(Watched::Ended) if started.elapsed() < Duration::from_secs(1) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                Ok(Watched::Ended) => pause = FIRST_PAUSE,
                Ok(Watched::Gone) => break,
                Ok(Watched::StoreGone) => return,
                Err(e) if gone(&e) => break,
                Err(e) => {
                    tracing::warn!(kind = kind.plural, error = %e, "watch failed; watching again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
        tracing::info!(
            kind = kind.plural,
            "resource version too old (410 Gone); listing again"
        );
    }
}

enum Watched {
    /// The server closed the watch: watch again from the last version.
    Ended,
    /// The version is too old: list again.
    Gone,
    StoreGone,
}

async fn watch_once(
    api: &Api<DynamicObject>,
    kind: Kind,
    index: usize,
    version: &mut String,
    changes: &mpsc::Sender<Change>,
) -> Result<Watched, kube::Error> {
    let mut params = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
    if let Some(fields) = kind.row.field_selector {
        params = params.fields(fields);
    }
    let stream = api.watch(&params, version).await?;
    let mut stream = std::pin::pin!(stream.boxed());
    while let Some(event) = stream.try_next().await? {
        let change = match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                if let Some(v) = &o.metadata.resource_version {
                    version.clone_from(v);
                }
                Change::Applied(index, key(&o), project(&kind, &o))
            }
            WatchEvent::Deleted(o) => {
                if let Some(v) = &o.metadata.resource_version {
                    version.clone_from(v);
                }
                Change::Deleted(index, key(&o))
            }
            WatchEvent::Bookmark(b) => {
                version.clone_from(&b.metadata.resource_version);
                continue;
            }
            WatchEvent::Error(e) if e.code == 410 => return Ok(Watched::Gone),
            WatchEvent::Error(e) => return Err(kube::Error::Api(e)),
        };
        if changes.send(change).await.is_err() {
            return Ok(Watched::StoreGone);
        }
    }
    Ok(Watched::Ended)
}
