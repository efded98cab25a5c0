//! With the etcd store, the leader ([`crate::leader`]) writes the status of every route and
//! policy in force into the store, as Kubernetes controllers write `status`: one key per
//! resource, `PREFIX/status/<kind>/<namespace>/<name>`, whose value is the JSON `GET /v1/store`
//! shows for it. Only what changed is written; keys of resources no longer in force are
//! deleted. Every replica computes the same status from the same documents, so what the store
//! holds is what any replica answers; the keys are for tools that read etcd directly.

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

/// Keeps the status keys equal to [`desired`] while this replica leads, until `shutdown`.
pub async fn run(
    client: Client,
    target: Target,
    mut status: watch::Receiver<StoreStatus>,
    mut leader: watch::Receiver<Leadership>,
    mut shutdown: watch::Receiver<bool>,
) {
    // What the store holds, as far as this replica knows (`None`: read it first).
    let mut written: Option<BTreeMap<Vec<u8>, Vec<u8>>> = None;
    loop {
        let mut failed = false;
        if leader.borrow_and_update().this_replica {
            let want = desired(&target, &status.borrow_and_update());
            if let Err(e) = sync(&client, &target, &mut written, want).await {
                tracing::debug!(error = %e, "cannot write resource status to etcd; retrying");
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

async fn sync(
    client: &Client,
    target: &Target,
    written: &mut Option<BTreeMap<Vec<u8>, Vec<u8>>>,
    want: BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<(), Error> {
    let have = match written {
        Some(have) => have,
        None => {
            let (kvs, _) = client.list(&target.key(STATUS)).await?;
            written.insert(kvs.into_iter().map(|kv| (kv.key, kv.value)).collect())
        }
    };
    for (key, value) in &want {
        if have.get(key) != Some(value) {
            client.put(key, value).await?;
            have.insert(key.clone(), value.clone());
        }
    }
    let stale: Vec<Vec<u8>> = have
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect();
    for key in stale {
        client.delete(&key).await?;
        have.remove(&key);
    }
    Ok(())
}
