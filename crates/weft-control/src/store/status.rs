//! With the etcd store, the leader ([`crate::leader`]) writes the status of every route and
//! policy in force into the store, as Kubernetes controllers write `status`: one key per
//! resource, `PREFIX/status/<kind>/<namespace>/<name>`, whose value is the JSON `GET /v1/store`
//! shows for it. Only what changed is written; keys of resources no longer in force are
//! deleted. Every replica computes the same status from the same documents, so what the store
//! holds is what any replica answers; the keys are for tools that read etcd directly.
//!
//! The loop ([`run`]: desired against written, while leading) is shared with the Kubernetes
//! store, whose [`Sink`] patches the objects' `status` subresource (`k8s::status`).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;

use super::StoreStatus;
use crate::etcd::{Client, Error, Target};
use crate::leader::Leadership;

/// The status keys, under the prefix.
pub const STATUS: &str = "status/";
/// Pause after a failed write before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// Where the leader writes status: keys and their values, as [`run`] keeps them.
pub trait Sink {
    type Key: Ord + Clone + Send + Sync;
    type Error: std::fmt::Display;
    /// What `status` calls for.
    fn desired(&self, status: &StoreStatus) -> BTreeMap<Self::Key, Vec<u8>>;
    /// What is written now (on becoming leader, and after a failed write).
    fn read(
        &self,
    ) -> impl std::future::Future<Output = Result<BTreeMap<Self::Key, Vec<u8>>, Self::Error>> + Send;
    fn put(
        &self,
        key: &Self::Key,
        value: &[u8],
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send;
    /// `key`'s resource is no longer in force.
    fn delete(
        &self,
        key: &Self::Key,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send;
}

/// The etcd store's status keys.
pub struct Etcd {
    pub client: Client,
    pub target: Target,
}

impl Sink for Etcd {
    type Key = Vec<u8>;
    type Error = Error;

    fn desired(&self, status: &StoreStatus) -> BTreeMap<Vec<u8>, Vec<u8>> {
        desired(&self.target, status)
    }

    async fn read(&self) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, Error> {
        let (kvs, _) = self.client.list(&self.target.key(STATUS)).await?;
        Ok(kvs.into_iter().map(|kv| (kv.key, kv.value)).collect())
    }

    async fn put(&self, key: &Vec<u8>, value: &[u8]) -> Result<(), Error> {
        self.client.put(key, value).await.map(drop)
    }

    async fn delete(&self, key: &Vec<u8>) -> Result<(), Error> {
        self.client.delete(key).await.map(drop)
    }
}

/// The status keys and values `status` calls for.
pub fn desired(target: &Target, status: &StoreStatus) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let key = |kind: &str, ns: &str, name: &str| {
        target.key(&format!(
            "{STATUS}{}/{ns}/{name}",
            kind.to_ascii_lowercase()
        ))
    };
    let routes = status.routes.iter().map(|r| {
        let value = serde_json::to_vec(r).unwrap_or_default();
        (key(r.kind, &r.namespace, &r.name), value)
    });
    let policies = status.policies.iter().map(|p| {
        let value = serde_json::to_vec(p).unwrap_or_default();
        (key(p.kind, &p.namespace, &p.name), value)
    });
    routes.chain(policies).collect()
}

/// Keeps what `sink` holds equal to what the status calls for while this replica leads,
/// until `shutdown`.
pub async fn run<S: Sink>(
    sink: S,
    mut status: watch::Receiver<StoreStatus>,
    mut leader: watch::Receiver<Leadership>,
    mut shutdown: watch::Receiver<bool>,
) {
    // What the sink holds, as far as this replica knows (`None`: read it first).
    let mut written: Option<BTreeMap<S::Key, Vec<u8>>> = None;
    loop {
        let mut failed = false;
        if leader.borrow_and_update().this_replica {
            let want = sink.desired(&status.borrow_and_update());
            if let Err(e) = sync(&sink, &mut written, want).await {
                tracing::debug!(error = %e, "cannot write resource status; retrying");
                written = None;
                failed = true;
            }
        } else {
            written = None;
        }
        tokio::select! {
            Ok(()) = status.changed() => {}
            Ok(()) = leader.changed() => {}
            _ = tokio::time::sleep(RETRY), if failed => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn sync<S: Sink>(
    sink: &S,
    written: &mut Option<BTreeMap<S::Key, Vec<u8>>>,
    want: BTreeMap<S::Key, Vec<u8>>,
) -> Result<(), S::Error> {
    let have = match written {
        Some(have) => have,
        None => written.insert(sink.read().await?),
    };
    for (key, value) in &want {
        if have.get(key) != Some(value) {
            sink.put(key, value).await?;
            have.insert(key.clone(), value.clone());
        }
    }
    let stale: Vec<S::Key> = have
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect();
    for key in stale {
        sink.delete(&key).await?;
        have.remove(&key);
    }
    Ok(())
}
