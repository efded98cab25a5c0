//! Keeps a prefix mirrored: after the caller's first list, one task watches the prefix and
//! hands every change on, in order. When the stream breaks (a member killed, a network cut) it
//! retries with a growing delay and resumes from the last revision it passed on, so nothing is
//! missed or repeated; when that revision has been compacted away it lists the prefix again
//! and hands on the whole of it. Callers keep serving what they have meanwhile.

use super::proto::{Event, KeyValue};
use super::{Client, Error};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The first and the longest delay between attempts while etcd is unreachable.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A change to the mirrored prefix.
#[derive(Debug)]
pub enum Update {
    /// Everything under the prefix at `revision` (after a compaction: replace what you have).
    Reset { kvs: Vec<KeyValue>, revision: i64 },
    /// Changes, in order, up to and including `revision`.
    Events { events: Vec<Event>, revision: i64 },
}

/// Watches `prefix` from just after `listed` (the revision of the caller's own list) until
/// `shutdown` changes or the receiver is dropped.
pub fn mirror(
    client: Client,
    prefix: Vec<u8>,
    listed: i64,
    mut shutdown: watch::Receiver<bool>,
) -> (mpsc::Receiver<Update>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = follow(client, prefix, listed, tx) => {}
            _ = shutdown.changed() => {}
        }
    });
    (rx, task)
}

async fn follow(client: Client, prefix: Vec<u8>, listed: i64, tx: mpsc::Sender<Update>) {
    let name = String::from_utf8_lossy(&prefix).into_owned();
    let mut revision = listed;
    let mut relist = false;
    let mut delay = RETRY_MIN;
    // Whether the last attempt failed: recovery is logged once, failures each time.
    let mut down = false;
    loop {
        if relist {
            match client.list(&prefix).await {
                Ok((kvs, r)) => {
                    revision = r;
                    relist = false;
                    if tx.send(Update::Reset { kvs, revision }).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(prefix = %name, "etcd: cannot list, serving the last state; retrying in {delay:?}: {e}");
                    down = true;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                    continue;
                }
            }
        }
        let mut stream = match client.watch(&prefix, revision + 1).await {
            Ok(s) => s,
            Err(Error::Compacted(c)) => {
                tracing::warn!(prefix = %name, revision, compacted = c, "etcd: the watch's revision is compacted; listing again");
                relist = true;
                continue;
            }
            Err(e) => {
                tracing::warn!(prefix = %name, "etcd: cannot watch, serving the last state; retrying in {delay:?}: {e}");
                down = true;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
                continue;
            }
        };
        if down {
            tracing::info!(prefix = %name, revision, "etcd: watching again, resuming after the last revision applied");
            down = false;
        }
        delay = RETRY_MIN;
        loop {
            match stream.next().await {
                Ok(resp) => {
                    let Some(last) = resp
                        .events
                        .iter()
                        .filter_map(|e| e.kv.as_ref())
                        .map(|kv| kv.mod_revision)
                        .max()
                    else {
                        // A progress notification: nothing changed.
                        continue;
                    };
                    revision = last;
                    let update = Update::Events {
                        events: resp.events,
                        revision,
                    };
                    if tx.send(update).await.is_err() {
                        return;
                    }
                }
                Err(Error::Compacted(c)) => {
                    tracing::warn!(prefix = %name, revision, compacted = c, "etcd: the watch fell behind compaction; listing again");
                    relist = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(prefix = %name, revision, "etcd: watch lost, serving the last state and reconnecting: {e}");
                    down = true;
                    break;
                }
            }
        }
    }
}
