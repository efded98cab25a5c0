//! The leader's route status with the Kubernetes store: each route's `status.parents` (Gateway
//! API's shape, one entry per parentRef under Weft's controllerName, `Accepted` and
//! `ResolvedRefs` conditions) is written with a merge patch of its `status` subresource, as
//! Linkerd's policy controller writes HTTPRoute status: the route's status is read first and
//! other controllers' entries (a Gateway's) are kept, the patch carrying the `resourceVersion`
//! read so a concurrent write makes it fail (`409`) and it is tried again. Only routes get
//! status: Linkerd writes
//! none for Server or AuthorizationPolicy, and Weft does not yet compute the `targetRef` an
//! HTTPLocalRateLimitPolicy's status requires.
//!
//! Which routes to patch (only changed ones, only while leading) is `store::status::run`'s;
//! this is the [`Sink`] it writes to. What was written before this replica led is not read
//! back (objects are cut down as they arrive): a new leader patches every route once.

use std::collections::BTreeMap;

use k8s_openapi::chrono::{SecondsFormat, Utc};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{json, Value};

use super::KINDS;
use crate::index::routes::CONTROLLER_NAME;
use crate::store::status::Sink;
use crate::store::StoreStatus;

/// A route: (group, kind, namespace, name).
pub type Key = (&'static str, &'static str, String, String);

/// The routes' `status` subresources.
pub struct Objects {
    client: kube::Client,
}

impl Objects {
    pub fn new(client: kube::Client) -> Objects {
        Objects { client }
    }
}

impl Sink for Objects {
    type Key = Key;
    type Error = kube::Error;

    /// Each route's `parents`, without times (so an unchanged status compares equal).
    fn desired(&self, status: &StoreStatus) -> BTreeMap<Key, Vec<u8>> {
        status
            .routes
            .iter()
            .map(|r| {
                let key = (r.group, r.kind, r.namespace.clone(), r.name.clone());
                (key, serde_json::to_vec(&r.parents).unwrap_or_default())
            })
            .collect()
    }

    async fn read(&self) -> Result<BTreeMap<Key, Vec<u8>>, kube::Error> {
        Ok(BTreeMap::new())
    }

    async fn put(&self, key: &Key, value: &[u8]) -> Result<(), kube::Error> {
        let (group, kind, namespace, name) = key;
        let Some(k) = KINDS.iter().find(|k| k.group == *group && k.kind == *kind) else {
            return Ok(());
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &k.api_resource());
        let result = async {
            let current = api.get_status(name).await?;
            let mut parents: Vec<Value> = current.data["status"]["parents"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["controllerName"] != CONTROLLER_NAME)
                .cloned()
                .collect();
            parents.extend(with_times(value));
            let patch = json!({
                "metadata": {"resourceVersion": current.metadata.resource_version},
                "status": {"parents": parents},
            });
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        };
        match result.await {
            // Deleted meanwhile: its status goes with it.
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            other => other.map(drop),
        }
    }

    /// A route no longer in force is gone from the cluster (or its last good version still
    /// is): nothing to write.
    async fn delete(&self, _key: &Key) -> Result<(), kube::Error> {
        Ok(())
    }
}

/// The parents with `lastTransitionTime` (which the condition schema requires) set to now:
/// a route's status is written when it changed.
fn with_times(parents: &[u8]) -> Vec<Value> {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut parents: Vec<Value> = serde_json::from_slice(parents).unwrap_or_default();
    for parent in &mut parents {
        for c in parent["conditions"].as_array_mut().into_iter().flatten() {
            c["lastTransitionTime"] = json!(now);
        }
    }
    parents
}
